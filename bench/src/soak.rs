//! `--soak SECS`: a long mixed workload against one depot manager process, checking that
//! nothing is lost or delivered twice and that the manager's memory stays flat. Not a
//! benchmark: it prints figures over time and fails on a lost or duplicated item, or on
//! memory that keeps growing.
//!
//! Producers and consumers (threads, `--soak-clients N` of each) connect over TCP, do a random
//! number of operations, and hang up, over and over; some producers put in batches, some
//! consumers wait, some poll, and every other consumer uses the async client and gives up on
//! most of its `get`s after a few milliseconds (the client cancels them and gives back an item
//! that arrives anyway). Meanwhile other connections are abandoned mid-handshake. Every
//! item carries its producer and sequence number. At the end the consumers drain the queue;
//! every put the manager acknowledged must have been got exactly once, and the manager's
//! own totals (`stat`) must agree.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use depot::{Client, ErrorCode};

use crate::os;
use crate::systems::depot::{ManagerProcess, Spec, AUTHKEY, QUEUE};

/// Producers and consumers each, unless `--soak-clients` says otherwise.
pub const DEFAULT_CLIENTS: usize = 8;
/// The manager's resident memory may grow this much past its level after warm-up (allocator
/// noise, buffers grown to their working size), and no more.
const RSS_SLACK: u64 = 16 << 20;

/// What the threads count together.
#[derive(Default)]
struct Totals {
    acked: AtomicU64,
    got: AtomicU64,
    connects: AtomicU64,
    abandoned: AtomicU64,
    dropped_gets: AtomicU64,
}

/// A small xorshift generator: the workload needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Item `seq` of producer `p`: 8 bytes of identity, then up to 200 bytes of filler.
fn item(p: u64, seq: u64, rng: &mut Rng) -> Vec<u8> {
    let mut item = ((p << 40) | seq).to_be_bytes().to_vec();
    item.resize(8 + rng.below(200) as usize, 0x5A);
    item
}

fn identity(item: &[u8]) -> Result<u64> {
    let head = item.get(..8).context("an item shorter than its identity")?;
    Ok(u64::from_be_bytes(head.try_into()?))
}

/// Puts until `stop`, reconnecting after a random number of operations; returns the
/// sequence numbers the manager acknowledged.
fn produce(addr: &str, p: u64, stop: &AtomicBool, totals: &Totals) -> Result<Vec<u64>> {
    let mut rng = Rng::new(p + 1);
    let mut acked = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let client = Client::connect(addr, AUTHKEY)?;
        totals.connects.fetch_add(1, Ordering::Relaxed);
        let q = client.raw_queue(QUEUE)?;
        for _ in 0..1 + rng.below(200) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if rng.below(4) == 0 {
                let n = 1 + rng.below(32);
                let items: Vec<Vec<u8>> = (seq..seq + n).map(|s| item(p, s, &mut rng)).collect();
                let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
                q.put_many(&refs)?;
                acked.extend(seq..seq + n);
                seq += n;
                totals.acked.fetch_add(n, Ordering::Relaxed);
            } else {
                // A bounded wait: the queue may be full for a while.
                match q.put_timeout(&item(p, seq, &mut rng), Duration::from_millis(500)) {
                    Ok(()) => {
                        acked.push(seq);
                        totals.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.code() == Some(ErrorCode::Timeout) => {}
                    Err(e) => return Err(e.into()),
                }
                seq += 1;
            }
        }
    }
    Ok(acked)
}

/// Gets until `stop` and then until the queue is empty, reconnecting after a random number of
/// operations; returns the identities of the items got.
fn consume(addr: &str, c: u64, stop: &AtomicBool, totals: &Totals) -> Result<Vec<u64>> {
    let mut rng = Rng::new(1000 + c);
    let mut got = Vec::new();
    loop {
        let client = Client::connect(addr, AUTHKEY)?;
        totals.connects.fetch_add(1, Ordering::Relaxed);
        let q = client.raw_queue(QUEUE)?;
        for _ in 0..1 + rng.below(200) {
            let outcome = if rng.below(3) == 0 {
                q.get_nowait()
            } else {
                q.get_timeout(Duration::from_millis(1 + rng.below(100)))
            };
            match outcome {
                Ok(item) => {
                    got.push(identity(&item)?);
                    totals.got.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if matches!(e.code(), Some(ErrorCode::Empty | ErrorCode::Timeout)) => {
                    if stop.load(Ordering::Relaxed) {
                        // Empty once the producers are done: only items parked behind a
                        // full queue could still come, and `stat` shows none wait.
                        let stat = client.stat()?;
                        let line = stat.iter().find(|s| s.name == QUEUE);
                        if line.is_some_and(|s| s.len == 0 && s.putters == 0) {
                            return Ok(got);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// As [`consume`] on the async client, dropping most `get`s after 0–4 ms.
fn consume_async(addr: &str, c: u64, stop: &AtomicBool, totals: &Totals) -> Result<Vec<u64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut rng = Rng::new(2000 + c);
        let mut got = Vec::new();
        loop {
            let client = depot::tokio::Client::connect(addr, AUTHKEY).await?;
            totals.connects.fetch_add(1, Ordering::Relaxed);
            let q = client.raw_queue(QUEUE).await?;
            for _ in 0..1 + rng.below(200) {
                let limit = Duration::from_millis(rng.below(5));
                match tokio::time::timeout(limit, q.get()).await {
                    Ok(item) => {
                        got.push(identity(&item?)?);
                        totals.got.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        totals.dropped_gets.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) && drained(&q).await? {
                            return Ok(got);
                        }
                    }
                }
            }
            // One more round trip before hanging up: every item given back is back.
            q.qsize().await?;
        }
    })
}

/// Whether the queue is empty with no put waiting (once the producers are done).
async fn drained(q: &depot::tokio::RawQueue) -> Result<bool> {
    let size = q.qsize().await?;
    Ok(size == 0)
}

/// Connects and hangs up before or during the handshake.
fn abandon(addr: &str, stop: &AtomicBool, totals: &Totals) {
    let mut rng = Rng::new(77);
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut s) = TcpStream::connect(addr) {
            if rng.below(2) == 0 {
                // The start of a hello.
                let _ = s.write_all(&[0, 0, 0, 44, b'd', b'p']);
            }
            totals.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        thread::sleep(Duration::from_millis(rng.below(20)));
    }
}

/// Runs the soak for `secs` seconds with `clients` producers and as many consumers.
pub fn run(duration: Duration, clients: usize) -> Result<bool> {
    let secs = duration.as_secs_f64();
    let manager = ManagerProcess::start(&Spec {
        capacity: 1000,
        max_item: 256,
        storage: None,
        max_connections: Some(4 * clients + 64),
        durable: None,
        busy_poll_us: None,
    })?;
    let addr = manager.addr.clone();
    let pid = manager.pid();
    let totals = Arc::new(Totals::default());
    let stop_producing = Arc::new(AtomicBool::new(false));
    let spawn = |n: usize, f: fn(&str, u64, &AtomicBool, &Totals) -> Result<Vec<u64>>| {
        (0..n)
            .map(|i| {
                let (addr, stop, totals) = (addr.clone(), stop_producing.clone(), totals.clone());
                thread::spawn(move || f(&addr, i as u64, &stop, &totals))
            })
            .collect::<Vec<_>>()
    };
    let producers = spawn(clients, produce);
    let mut consumers = spawn(clients.div_ceil(2), consume);
    consumers.extend(spawn(clients / 2, consume_async));
    let abandoner = {
        let (addr, stop, totals) = (addr.clone(), stop_producing.clone(), totals.clone());
        thread::spawn(move || abandon(&addr, &stop, &totals))
    };

    let start = Instant::now();
    let report_every = (duration / 10).max(Duration::from_secs(1));
    let mut next_report = Duration::ZERO;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    println!("soak: {clients} producers, {clients} consumers, {secs} s, manager pid {pid}");
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "time s", "RSS KiB", "puts acked", "gets", "gets dropped", "connects", "abandoned"
    );
    while start.elapsed() < duration {
        thread::sleep(Duration::from_millis(250));
        let rss = os::rss_bytes(pid)?;
        let t = start.elapsed();
        samples.push((t.as_secs_f64(), rss));
        if t >= next_report {
            next_report += report_every;
            println!(
                "{:>8.1} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}",
                t.as_secs_f64(),
                rss / 1024,
                totals.acked.load(Ordering::Relaxed),
                totals.got.load(Ordering::Relaxed),
                totals.dropped_gets.load(Ordering::Relaxed),
                totals.connects.load(Ordering::Relaxed),
                totals.abandoned.load(Ordering::Relaxed),
            );
        }
    }
    stop_producing.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for (p, handle) in producers.into_iter().enumerate() {
        let seqs = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a producer panicked"))??;
        acked.extend(seqs.into_iter().map(|s| ((p as u64) << 40) | s));
    }
    let mut got = Vec::new();
    for handle in consumers {
        got.extend(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a consumer panicked"))??,
        );
    }
    abandoner
        .join()
        .map_err(|_| anyhow::anyhow!("the abandoner panicked"))?;
    let rss_end = os::rss_bytes(pid)?;

    // An item given back just as its consumer stopped is still queued: it counts as got.
    let client = Client::connect(&addr, AUTHKEY)?;
    let q = client.raw_queue(QUEUE)?;
    let mut late = 0;
    loop {
        match q.get_nowait() {
            Ok(item) => {
                got.push(identity(&item)?);
                late += 1;
            }
            Err(e) if e.code() == Some(ErrorCode::Empty) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let stat = client
        .stat()?
        .into_iter()
        .find(|s| s.name == QUEUE)
        .context("the queue is gone")?;
    got.sort_unstable();
    let got_count = got.len();
    got.dedup();
    let twice = got_count - got.len();
    acked.sort_unstable();
    let lost = acked
        .iter()
        .filter(|id| got.binary_search(id).is_err())
        .count();
    // Puts whose reply a reconnect cut off may have been queued without an acknowledgement.
    let unacked_got = got
        .iter()
        .filter(|id| acked.binary_search(id).is_err())
        .count();
    // RSS after warm-up (a tenth of the run) against the end.
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= secs / 10.0)
        .or(samples.first())
        .map_or(rss_end, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(rss_end);
    println!(
        "soak done: {} puts acknowledged, {got_count} items got ({late} at the final drain, \
         {unacked_got} from puts cut off before their reply), {} gets dropped, {lost} lost, \
         {twice} twice; manager totals put {} got {} queued {}; RSS after warm-up {} KiB, peak \
         {} KiB, end {} KiB",
        acked.len(),
        totals.dropped_gets.load(Ordering::Relaxed),
        stat.total_put,
        stat.total_got,
        stat.len,
        warm / 1024,
        peak / 1024,
        rss_end / 1024,
    );
    let mut ok = true;
    if lost > 0 || twice > 0 {
        eprintln!("soak: FAILED: {lost} items lost, {twice} delivered twice");
        ok = false;
    }
    if stat.total_got != got_count as u64 || stat.total_put != stat.total_got + u64::from(stat.len)
    {
        eprintln!("soak: FAILED: the manager's totals disagree with what the clients saw");
        ok = false;
    }
    if peak > warm + RSS_SLACK.max(warm / 5) {
        eprintln!("soak: FAILED: the manager's memory grew from {warm} to {peak} bytes");
        ok = false;
    }
    if acked.is_empty() {
        bail!("no put was acknowledged: the soak did not run");
    }
    Ok(ok)
}
