//! depot: the manager (`depot_std::Manager`, one `mio` event-loop thread) runs in a process of
//! its own — this binary re-executed with the hidden `__depot-manager` subcommand — started
//! fresh for every run; clients are `depot_std::Client`s on threads of the harness, one
//! connection each, authenticated with the authkey (mutual HMAC handshake), every frame sealed
//! with ChaCha20-Poly1305 (the default). [`DepotMac`] runs the same transfers with the clients'
//! encryption off (a MAC on every frame, no encryption), to show what sealing costs.
//!
//! The child prints its address, serves until a line (or end of file) arrives on its stdin, then
//! shuts down; the harness reads its `VmRSS` for (f) and (g).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use depot::{Client, ConnectOptions, Encryption, Manager, QueueOptions, RawQueue};

use super::redis::TempDir;
use crate::child::LineChild;
use crate::holder;
use crate::os;
use crate::system::{Measurement, Outcome, Persistence, System, Transfer};
use crate::threaded::{self, QueueClient};

/// Subcommand name of the manager process in this binary.
pub const SUBCOMMAND: &str = "__depot-manager";

pub(crate) const AUTHKEY: &str = "depot-bench-key";
pub(crate) const QUEUE: &str = "bench";
/// Items per `get_batch` call in the pipelined transfer and per `put_many` call in the (g) fill.
pub(crate) const BATCH: usize = 4096;
/// Idle connections one holder process keeps (two descriptors each, see `idle_connections`).
const HELD_PER_HOLDER: usize = 4000;
/// Queue capacity for (a) and (b).
const SMALL_CAPACITY: u32 = 1024;
/// Largest item of the queues of (a), (b) and (f).
const SMALL_MAX_ITEM: u32 = 64;

/// The depot system.
pub struct Depot;

impl System for Depot {
    fn name(&self) -> &'static str {
        "depot"
    }

    fn clients(&self) -> &'static str {
        "manager: its own process (1 event-loop thread); clients: threads of the harness, one Client (connection) each; frames sealed (AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305)"
    }

    fn connect_auth(&mut self, samples: usize) -> Outcome {
        let manager = ManagerProcess::start(&Spec::small())?;
        let m = threaded::time_connects(samples, || {
            Client::connect(&manager.addr, AUTHKEY)?;
            Ok(())
        })?;
        Ok(Some(m.with_note(
            "TCP connect + mutual HMAC handshake (Client::connect)",
        )))
    }

    fn round_trips(&mut self, count: usize) -> Outcome {
        let manager = ManagerProcess::start(&Spec::small())?;
        let client = Client::connect(&manager.addr, AUTHKEY)?;
        let queue = client.raw_queue(QUEUE)?;
        queue.qsize()?;
        let start = Instant::now();
        for _ in 0..count {
            queue.qsize()?;
        }
        Ok(Some(
            Measurement::rate(count, start.elapsed())
                .with_note("qsize(): request + reply, frames sealed"),
        ))
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        let manager = ManagerProcess::start(&Spec::small())?;
        let mut client = DepotQueue::connect(&manager.addr, Encryption::default())?;
        let m = threaded::put_get_pairs(&mut client, pairs, item_size)?;
        Ok(Some(
            m.with_note("RawQueue put + get, 2 round trips per pair"),
        ))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        transfer(shape, Encryption::default())
    }

    fn idle_connections(&mut self, connections: usize) -> Outcome {
        let spec = Spec {
            max_connections: Some(
                connections + holder::WARM_CONNECTIONS * connections.div_ceil(HELD_PER_HOLDER) + 16,
            ),
            durable: None,
            ..Spec::small()
        };
        // The manager reserves a slot per connection it may serve when it starts, so the growth
        // while connecting misses that part: it is the difference to a manager with few slots.
        let few = ManagerProcess::start(&Spec {
            max_connections: Some(holder::WARM_CONNECTIONS + 16),
            durable: None,
            ..Spec::small()
        })?;
        let few_rss = os::settled_rss_bytes(few.pid())?;
        drop(few);
        let manager = ManagerProcess::start(&spec)?;
        let reserved = os::settled_rss_bytes(manager.pid())?.saturating_sub(few_rss);
        // A client holds two descriptors (its socket and the reader's clone), so one holder
        // under `ulimit -n` 20000 cannot keep 10,000: split them over several holders.
        let holders = connections.div_ceil(HELD_PER_HOLDER).max(1);
        let mut children = Vec::with_capacity(holders);
        for index in 0..holders {
            let count = connections / holders + usize::from(index < connections % holders);
            let command = holder::holder_command("depot", &manager.addr, AUTHKEY, count)?;
            children.push(LineChild::spawn(command, "connection holder")?);
        }
        for child in &mut children {
            child.expect("WARM")?;
        }
        let before = os::settled_rss_bytes(manager.pid())?;
        for child in &mut children {
            child.send("go")?;
        }
        for child in &mut children {
            child.expect("READY")?;
        }
        let after = os::settled_rss_bytes(manager.pid())?;
        for mut child in children {
            child.send("quit")?;
            child.finish()?;
        }
        let grown = Measurement::bytes_per(before, after, connections).value;
        let slots = Measurement::bytes_per(0, reserved, connections).value;
        Ok(Some(
            Measurement::bytes_per(before, after + reserved, connections).with_note(format!(
                "{grown:.0} B grown while connecting + {slots:.0} B reserved at start (max_connections {}); Client::connect each, {holders} holder process(es)",
                spec.max_connections.unwrap_or_default()
            )),
        ))
    }

    fn durable_puts(
        &mut self,
        persistence: Persistence,
        producers: usize,
        items: usize,
    ) -> Outcome {
        durable_puts(persistence, producers, items, Encryption::default())
    }

    fn queued_items(&mut self, items: usize, item_size: usize) -> Outcome {
        let spec = Spec {
            capacity: items,
            max_item: item_size.max(1),
            storage: None,
            max_connections: None,
            durable: None,
            busy_poll_us: sleep_us(),
        };
        let manager = ManagerProcess::start(&spec)?;
        let client = Client::connect(&manager.addr, AUTHKEY)?;
        let queue = client.raw_queue(QUEUE)?;
        let before = os::settled_rss_bytes(manager.pid())?;
        let values: Vec<Vec<u8>> = (0..items).map(|i| distinct_item(i, item_size)).collect();
        for batch in values.chunks(BATCH) {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            queue.put_many(&refs)?;
        }
        let after = os::settled_rss_bytes(manager.pid())?;
        let queued = queue.qsize()? as usize;
        if queued != items {
            bail!("qsize answered {queued}, put {items}");
        }
        Ok(Some(
            Measurement::bytes_per(before, after, items).with_note(format!(
                "distinct values, put_many of {BATCH}; capacity {items}, max_item {}",
                item_size.max(1)
            )),
        ))
    }
}

/// depot with the clients' encryption off: frames carry their MAC only. (b), transfers and (h).
pub struct DepotMac;

impl System for DepotMac {
    fn name(&self) -> &'static str {
        "depot-mac"
    }

    fn clients(&self) -> &'static str {
        "as depot, with Encryption::Off on the clients: a MAC on every frame, no encryption"
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        let manager = ManagerProcess::start(&Spec::small())?;
        let mut client = DepotQueue::connect(&manager.addr, Encryption::Off)?;
        let m = threaded::put_get_pairs(&mut client, pairs, item_size)?;
        Ok(Some(m.with_note(
            "RawQueue put + get, 2 round trips per pair, frames MACed",
        )))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        transfer(shape, Encryption::Off)
    }

    fn durable_puts(
        &mut self,
        persistence: Persistence,
        producers: usize,
        items: usize,
    ) -> Outcome {
        durable_puts(persistence, producers, items, Encryption::Off)
    }
}

/// depot with busy polling off on the clients and the manager: every wait for input sleeps
/// in the kernel at once. (b), transfers and (h), to show what looking for input before
/// sleeping gives.
pub struct DepotSleep;

/// Set while [`DepotSleep`] runs: the depot systems' clients and managers it starts get a
/// busy poll of zero.
static SLEEPING: AtomicBool = AtomicBool::new(false);

/// The busy poll to ask for, in microseconds (`None`: depot's default).
fn sleep_us() -> Option<usize> {
    SLEEPING.load(Ordering::Relaxed).then_some(0)
}

/// Runs `f` as [`DepotSleep`].
fn sleeping<R>(f: impl FnOnce() -> R) -> R {
    SLEEPING.store(true, Ordering::Relaxed);
    let r = f();
    SLEEPING.store(false, Ordering::Relaxed);
    r
}

impl System for DepotSleep {
    fn name(&self) -> &'static str {
        "depot-sleep"
    }

    fn clients(&self) -> &'static str {
        "as depot, with busy_poll(0) on the clients and the manager: each wait sleeps at once"
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        sleeping(|| Depot.put_get_pairs(pairs, item_size))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        sleeping(|| Depot.transfer(shape))
    }

    fn durable_puts(
        &mut self,
        persistence: Persistence,
        producers: usize,
        items: usize,
    ) -> Outcome {
        sleeping(|| Depot.durable_puts(persistence, producers, items))
    }
}

/// (h) against a fresh manager, with a data directory unless `persistence` is memory only.
fn durable_puts(
    persistence: Persistence,
    producers: usize,
    items: usize,
    encryption: Encryption,
) -> Outcome {
    let fsync = match persistence {
        Persistence::Memory => None,
        Persistence::Always => Some("always"),
        Persistence::EverySecond => Some("interval=1000"),
        Persistence::Interval100 => Some("interval=100"),
        Persistence::Never => Some("never"),
    };
    let dir = TempDir::new("depot")?;
    let spec = Spec {
        capacity: items,
        max_item: 8,
        storage: None,
        max_connections: None,
        durable: fsync.map(|f| (dir.0.display().to_string(), f.to_owned())),
        busy_poll_us: sleep_us(),
    };
    let manager = ManagerProcess::start(&spec)?;
    let m = threaded::puts(producers, items, 8, || {
        DepotQueue::connect(&manager.addr, encryption)
    })?;
    let note = match fsync {
        Some(f) => format!("RawQueue put; --data-dir on this disk, --fsync {f}"),
        None => "RawQueue put; memory only".to_owned(),
    };
    drop(manager);
    Ok(Some(m.with_note(note)))
}

/// (c), (d) and (e) against a fresh manager, the clients' frames sealed or not.
fn transfer(shape: &Transfer, encryption: Encryption) -> Outcome {
    let manager = ManagerProcess::start(&Spec::transfer(shape))?;
    if shape.pipelined {
        if shape.producers != 1 || shape.consumers != 1 {
            return Ok(None);
        }
        return pipelined(&manager.addr, shape, encryption).map(Some);
    }
    let m = threaded::transfer(shape, || DepotQueue::connect(&manager.addr, encryption))?;
    Ok(Some(m.with_note("RawQueue put / blocking get")))
}

fn connect(addr: &str, encryption: Encryption) -> Result<Client, depot::Error> {
    let mut options = ConnectOptions::new().encryption(encryption);
    if let Some(us) = sleep_us() {
        options = options.busy_poll(Duration::from_micros(us as u64));
    }
    Client::connect_with(addr, AUTHKEY, &options)
}

/// (e) one producer `put_many`s its items in batches while one consumer `get_batch`es them; the
/// consumer knows the count, so no sentinel. Items per second from the barrier to the last batch.
pub(crate) fn pipelined(
    addr: &str,
    shape: &Transfer,
    encryption: Encryption,
) -> Result<Measurement> {
    let ready = Barrier::new(3);
    let go = Barrier::new(3);
    let item = threaded::item(shape.item_size);
    let (start, last) = thread::scope(|scope| {
        let producer = scope.spawn(|| -> Result<()> {
            let client = connect(addr, encryption);
            ready.wait();
            go.wait();
            let client = client?;
            let queue = client.raw_queue(QUEUE)?;
            // One call for every item: the client packs them into `PutMany` requests and keeps
            // several in flight, which a call per 4,096 items would cut to one.
            let refs: Vec<&[u8]> = vec![item.as_slice(); shape.items];
            queue.put_many(&refs)?;
            Ok(())
        });
        let consumer = scope.spawn(|| -> Result<Instant> {
            let client = connect(addr, encryption);
            ready.wait();
            go.wait();
            let client = client?;
            let queue = client.raw_queue(QUEUE)?;
            let mut left = shape.items;
            while left > 0 {
                let got = queue.get_batch(left.min(BATCH))?;
                if got.iter().any(|g| g.len() != item.len()) {
                    bail!("got an item of the wrong size");
                }
                left -= got.len();
            }
            Ok(Instant::now())
        });
        crate::threaded::release_pair(&ready, &go, producer, consumer)
    })?;
    Ok(
        Measurement::rate(shape.items, last - start).with_note(format!(
            "one put_many of all items (PutMany ≤ 60 KiB, 4 in flight); get_batch of {BATCH} (GetMany ≤ 60 KiB, up to 4 in flight)"
        )),
    )
}

/// Item `i` of `size` bytes, distinct from the others (little-endian index, zero padded).
fn distinct_item(i: usize, size: usize) -> Vec<u8> {
    let mut item = vec![0u8; size.max(1)];
    let bytes = (i as u64).to_le_bytes();
    let n = bytes.len().min(item.len());
    item[..n].copy_from_slice(&bytes[..n]);
    item
}

/// A client's proxy of the bench queue (it holds the connection).
struct DepotQueue(RawQueue);

impl DepotQueue {
    fn connect(addr: &str, encryption: Encryption) -> Result<Self> {
        let client = connect(addr, encryption).with_context(|| format!("connecting to {addr}"))?;
        Ok(DepotQueue(client.raw_queue(QUEUE)?))
    }
}

impl QueueClient for DepotQueue {
    fn put(&mut self, item: &[u8]) -> Result<()> {
        Ok(self.0.put(item)?)
    }

    fn get(&mut self) -> Result<Vec<u8>> {
        Ok(self.0.get()?)
    }
}

/// What the manager process serves: one queue named [`QUEUE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub(crate) capacity: usize,
    pub(crate) max_item: usize,
    pub(crate) storage: Option<usize>,
    pub(crate) max_connections: Option<usize>,
    /// A data directory and an fsync policy (`--fsync`'s text); `None`: memory only.
    pub(crate) durable: Option<(String, String)>,
    /// The event loop's busy poll in microseconds; `None`: the default.
    pub(crate) busy_poll_us: Option<usize>,
}

impl Spec {
    /// A queue that holds every item of `shape` (and the sentinels).
    pub(crate) fn transfer(shape: &Transfer) -> Self {
        let capacity = shape.items + shape.consumers;
        Spec {
            capacity,
            max_item: shape.item_size.max(1),
            storage: Some(capacity * (shape.item_size.max(1) + 4)),
            max_connections: None,
            durable: None,
            busy_poll_us: sleep_us(),
        }
    }

    fn small() -> Self {
        Spec {
            capacity: SMALL_CAPACITY as usize,
            max_item: SMALL_MAX_ITEM as usize,
            storage: None,
            max_connections: None,
            durable: None,
            busy_poll_us: sleep_us(),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--capacity".to_owned(),
            self.capacity.to_string(),
            "--max-item".to_owned(),
            self.max_item.to_string(),
        ];
        if let Some(storage) = self.storage {
            args.extend(["--storage".to_owned(), storage.to_string()]);
        }
        if let Some(n) = self.max_connections {
            args.extend(["--max-connections".to_owned(), n.to_string()]);
        }
        if let Some((dir, fsync)) = &self.durable {
            args.extend(["--data-dir".to_owned(), dir.clone()]);
            args.extend(["--fsync".to_owned(), fsync.clone()]);
        }
        if let Some(us) = self.busy_poll_us {
            args.extend(["--busy-poll-us".to_owned(), us.to_string()]);
        }
        args
    }

    fn parse(args: &[String]) -> Result<Self> {
        let mut spec = Spec::small();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let text = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--data-dir" => {
                    let fsync = spec.durable.take().map(|d| d.1).unwrap_or_default();
                    spec.durable = Some((text.clone(), fsync));
                    continue;
                }
                "--fsync" => {
                    let dir = spec.durable.take().map(|d| d.0).unwrap_or_default();
                    spec.durable = Some((dir, text.clone()));
                    continue;
                }
                _ => {}
            }
            let value: usize = text
                .parse()
                .with_context(|| format!("{flag} takes a number"))?;
            match flag.as_str() {
                "--capacity" => spec.capacity = value,
                "--max-item" => spec.max_item = value,
                "--storage" => spec.storage = Some(value),
                "--max-connections" => spec.max_connections = Some(value),
                "--busy-poll-us" => spec.busy_poll_us = Some(value),
                other => bail!("unknown manager argument {other:?}"),
            }
        }
        Ok(spec)
    }
}

/// A manager process; killed on drop if it has not stopped.
pub(crate) struct ManagerProcess {
    child: LineChild,
    pub(crate) addr: String,
}

impl ManagerProcess {
    pub(crate) fn start(spec: &Spec) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut command = Command::new(exe);
        command.arg(SUBCOMMAND).args(spec.args());
        let mut child = LineChild::spawn(command, "depot manager")?;
        let addr = child.read_line()?;
        os::watch_server(child.pid());
        Ok(ManagerProcess { child, addr })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// A manager serving one queue named [`QUEUE`] of `capacity` items of at most `max_item`
    /// bytes each, to clients of other systems (Python's, on the same port).
    pub(crate) fn for_clients(capacity: usize, max_item: usize) -> Result<Self> {
        ManagerProcess::start(&Spec {
            capacity,
            max_item,
            storage: Some(capacity.max(1) * (max_item + 4)),
            max_connections: None,
            durable: None,
            busy_poll_us: sleep_us(),
        })
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> Result<u16> {
        let port = self.addr.rsplit(':').next().unwrap_or_default();
        port.parse()
            .with_context(|| format!("no port in the manager's address {:?}", self.addr))
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        os::unwatch_server(self.child.pid());
        // Ask for a graceful stop; LineChild's drop kills it if it is still running after.
        if self.child.send("quit").is_ok() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !self.child.exited() {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The `__depot-manager` subcommand: runs in the child process. Prints the address, serves
/// until a line or end of file on stdin, then shuts the manager down.
pub fn run_manager(args: &[String]) -> Result<()> {
    let spec = Spec::parse(args)?;
    let to_u32 = |n: usize, what: &str| {
        u32::try_from(n).with_context(|| format!("{what} {n} does not fit in 32 bits"))
    };
    let opts = QueueOptions {
        capacity: to_u32(spec.capacity, "capacity")?,
        max_item: to_u32(spec.max_item, "max_item")?,
        storage_bytes: spec.storage,
        // The benchmarks move opaque byte items.
        mode: depot::QueueMode::Raw,
    };
    let mut builder = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(AUTHKEY)
        .queue_with(QUEUE, opts);
    if let Some(n) = spec.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(us) = spec.busy_poll_us {
        builder = builder.busy_poll(Duration::from_micros(us as u64));
    }
    if let Some((dir, fsync)) = &spec.durable {
        let policy: depot::Fsync = fsync.parse().map_err(|e: String| anyhow!(e))?;
        builder = builder.data_dir(dir).fsync(policy);
    }
    let manager = builder.start().context("starting the depot manager")?;
    println!("{}", manager.address());
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    manager.shutdown()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_arguments() {
        let spec = Spec {
            capacity: 10,
            max_item: 8,
            storage: Some(120),
            max_connections: Some(50),
            durable: Some(("/tmp/d".into(), "interval=100".into())),
            busy_poll_us: Some(0),
        };
        assert_eq!(Spec::parse(&spec.args()).unwrap(), spec);
        assert_eq!(Spec::parse(&[]).unwrap(), Spec::small());
        assert!(Spec::parse(&["--bogus".to_owned(), "1".to_owned()]).is_err());
    }
}
