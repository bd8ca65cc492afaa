//! The adversarial suite: attackers (threads of this process) against a real `depot serve`
//! (its own process), while a real client checks that it still gets in within a second and that
//! its round trips stay short; the manager's memory (from /proc) and its log stay bounded.
//!
//! Each attack runs `DEPOT_ADVERSARIAL_SECS` seconds (default 3). The figures are printed:
//! `cargo test -p depot-cli --test adversarial -- --nocapture --test-threads 1`.
//! `DEPOT_TEST_LOG=debug` sets the manager's log filter and prints its log at the end.
//!
//! Peers that misbehave after authenticating (stop reading, flood blocked puts) are played by
//! the core's client state machine driven by hand ([`Raw`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use depot_core::wire::{Op, Reply};
use depot_core::{Event, Wait};
use depot_std::{Client, Error, ErrorCode};

mod handshake;

const KEY: &str = "adversarial-key";
/// What the probe must manage under every attack: connect and get an answer well before the
/// 10 s a locked-out client used to wait, with room for a debug build on a busy machine (one
/// SYN the kernel drops under a flood is retried only after a second).
const GET_IN: Duration = Duration::from_secs(3);
/// Attacks run one after another: they would disturb each other's figures.
static SERIAL: Mutex<()> = Mutex::new(());

fn attack_time() -> Duration {
    let secs = std::env::var("DEPOT_ADVERSARIAL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// A `depot serve` process, its log in a file.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// `depot serve` with `args`, under `ulimit -n nofile` when given.
    fn start(name: &str, args: &[&str], nofile: Option<u32>) -> Server {
        let log = std::env::temp_dir().join(format!(
            "depot-adversarial-{}-{name}.log",
            std::process::id()
        ));
        let exe = env!("CARGO_BIN_EXE_depot");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--queue",
            "probe:1000:raw",
        ])
        .args(args)
        .env("DEPOT_AUTHKEY", KEY)
        .env(
            "RUST_LOG",
            std::env::var("DEPOT_TEST_LOG").unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("depot serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
            .parse()
            .unwrap();
        Server { child, addr, log }
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the manager is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("DEPOT_TEST_LOG").is_some() {
            eprintln!("{}", self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// What the probing client saw.
#[derive(Default, Debug)]
struct Probe {
    tries: u32,
    failures: Vec<String>,
    slowest_connect: Duration,
    round_trips: Vec<Duration>,
}

/// Connects, opens the queue and does 10 put/get round trips, every 100 ms until `stop`.
fn probe(addr: SocketAddr, stop: &AtomicBool) -> Probe {
    let mut p = Probe::default();
    while !stop.load(Ordering::Relaxed) {
        p.tries += 1;
        let t = Instant::now();
        match Client::connect_timeout(addr, KEY, GET_IN) {
            Ok(client) => {
                p.slowest_connect = p.slowest_connect.max(t.elapsed());
                let q = client.raw_queue("probe").unwrap();
                for _ in 0..10 {
                    let t = Instant::now();
                    q.put(b"ping").unwrap();
                    assert_eq!(q.get().unwrap(), b"ping");
                    p.round_trips.push(t.elapsed());
                }
            }
            Err(e) => p.failures.push(format!("after {:?}: {e}", t.elapsed())),
        }
        thread::sleep(Duration::from_millis(100));
    }
    p
}

/// An attack: `threads` threads running `attacker` until told to stop; each counts what it did.
type Attacker = fn(SocketAddr, &AtomicBool, &Stats);

#[derive(Default)]
struct Stats {
    /// Connections opened.
    connects: AtomicU64,
    /// The longest time, in ms, the manager took to close a connection it should close.
    slowest_close_ms: AtomicU64,
    /// The longest a connection that should be closed stayed open, in ms.
    longest_life_ms: AtomicU64,
}

impl Stats {
    fn close_took(&self, d: Duration) {
        self.slowest_close_ms
            .fetch_max(d.as_millis() as u64, Ordering::Relaxed);
    }
}

/// Figures of one attack.
struct Figures {
    name: &'static str,
    stats: Stats,
    probe: Probe,
    rss_before: u64,
    rss_max: u64,
    log_growth: u64,
    secs: f64,
}

impl Figures {
    fn print(&self) {
        let mut rt = self.probe.round_trips.clone();
        rt.sort();
        let pct = |p: usize| rt.get(rt.len() * p / 100).copied().unwrap_or_default();
        println!(
            "{:<16} {:>7} connects ({:>6.0}/s) | probe {}/{} in, slowest connect {:>6.1} ms, \
             round trip p50 {:>6.0} us p99 {:>6.0} us | slowest close {:>5} ms, longest life {:>5} ms \
             | RSS {} -> max {} KiB | log +{} B",
            self.name,
            self.stats.connects.load(Ordering::Relaxed),
            self.stats.connects.load(Ordering::Relaxed) as f64 / self.secs,
            self.probe.tries as usize - self.probe.failures.len(),
            self.probe.tries,
            self.probe.slowest_connect.as_secs_f64() * 1e3,
            pct(50).as_secs_f64() * 1e6,
            pct(99).as_secs_f64() * 1e6,
            self.stats.slowest_close_ms.load(Ordering::Relaxed),
            self.stats.longest_life_ms.load(Ordering::Relaxed),
            self.rss_before,
            self.rss_max,
            self.log_growth,
        );
    }

    /// What must hold under every attack.
    fn check(&self) {
        assert!(
            self.probe.failures.is_empty(),
            "{}: the client was kept out: {:?}",
            self.name,
            self.probe.failures
        );
        assert!(self.probe.tries >= 3, "{}: too few probes", self.name);
        assert!(self.probe.slowest_connect < GET_IN);
        assert!(
            self.rss_max < self.rss_before + 64 * 1024,
            "{}: memory grew from {} to {} KiB",
            self.name,
            self.rss_before,
            self.rss_max
        );
        // A summary line every 5 s at most, a few hundred bytes each.
        let bound = 1024 * (2 + (self.secs / 5.0).ceil() as u64);
        assert!(
            self.log_growth < bound,
            "{}: log grew {} bytes (bound {bound})",
            self.name,
            self.log_growth
        );
    }
}

/// Runs `attacker` on `threads` threads against `server` for the attack time, with the probe.
fn attack(server: &Server, name: &'static str, threads: usize, attacker: Attacker) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let rss_before = server.rss_kib();
    let log_before = server.log_bytes();
    let time = attack_time();
    let attackers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, stats, addr) = (stop.clone(), stats.clone(), server.addr);
            thread::spawn(move || attacker(addr, &stop, &stats))
        })
        .collect();
    // Let the attack take hold before probing.
    thread::sleep(Duration::from_millis(300));
    let probe_stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, addr) = (probe_stop.clone(), server.addr);
        thread::spawn(move || probe(addr, &stop))
    };
    let start = Instant::now();
    let mut rss_max = rss_before;
    while start.elapsed() < time {
        rss_max = rss_max.max(server.rss_kib());
        thread::sleep(Duration::from_millis(50));
    }
    probe_stop.store(true, Ordering::Relaxed);
    let probe = prober.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64() + 0.3;
    let stats = Arc::try_unwrap(stats).ok().unwrap();
    let f = Figures {
        name,
        stats,
        probe,
        rss_before,
        rss_max,
        log_growth: server.log_bytes() - log_before,
        secs,
    };
    f.print();
    f
}

/// Whether the manager has closed `s` (read end or error); reads and drops anything it sent.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn connect_nonblocking(addr: SocketAddr, stats: &Stats) -> Option<TcpStream> {
    let s = TcpStream::connect(addr).ok()?;
    stats.connects.fetch_add(1, Ordering::Relaxed);
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Holds 64 silent connections, opening a new one for each the manager drops.
fn idle_flood(addr: SocketAddr, stop: &AtomicBool, stats: &Stats) {
    let mut socks: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        socks.retain_mut(|s| !closed(s));
        while socks.len() < 64 {
            match connect_nonblocking(addr, stats) {
                Some(s) => socks.push(s),
                None => break,
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Connects and hangs up, as fast as it can.
fn reconnect_flood(addr: SocketAddr, stop: &AtomicBool, stats: &Stats) {
    while !stop.load(Ordering::Relaxed) {
        if TcpStream::connect(addr).is_ok() {
            stats.connects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends a hello one byte every 200 ms on 16 connections; records how long each lived.
fn slowloris(addr: SocketAddr, stop: &AtomicBool, stats: &Stats) {
    // A frame header announcing a 44-byte hello, then its first bytes.
    const DRIP: &[u8] = &[0, 0, 0, 44, b'd', b'p', b'o', b't', 2, 2];
    let mut socks: Vec<(TcpStream, Instant, usize)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        socks.retain_mut(|(s, born, _)| {
            let gone = closed(s);
            if gone {
                stats
                    .longest_life_ms
                    .fetch_max(born.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            !gone
        });
        while socks.len() < 16 {
            match connect_nonblocking(addr, stats) {
                Some(s) => socks.push((s, Instant::now(), 0)),
                None => break,
            }
        }
        for (s, _, sent) in &mut socks {
            if *sent < DRIP.len() && s.write(&DRIP[*sent..*sent + 1]).is_ok() {
                *sent += 1;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Non-depot bytes: HTTP, a TLS ClientHello, a 4 GiB frame header, an oversize hello, noise.
/// Measures how long the manager takes to close each.
fn garbage(addr: SocketAddr, stop: &AtomicBool, stats: &Stats) {
    let tls = [
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ];
    let mut oversize = vec![0, 0, 0x10, 0];
    oversize.extend_from_slice(&[b'x'; 512]);
    let mut noise = [0u8; 64];
    let inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: depot\r\n\r\n",
        &tls,
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
        &oversize,
    ];
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        n += 1;
        for (i, b) in noise.iter_mut().enumerate() {
            *b = (n.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8;
        }
        let bytes = inputs.get(n % 5).copied().unwrap_or(&noise);
        let t = Instant::now();
        if s.write_all(bytes).is_err() {
            continue;
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        stats.close_took(t.elapsed());
    }
}

/// Full handshakes with the wrong key, from another address (127.0.0.2): the manager slows
/// that address down and then refuses it, which must not touch the probing clients'.
fn wrong_key(addr: SocketAddr, stop: &AtomicBool, stats: &Stats) {
    let addr = addr.to_string();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let stream = handshake::connect_from([127, 0, 0, 2], &addr);
        match handshake::handshake(stream, "", b"not-the-key") {
            // A verdict, or refused while the address is locked out.
            Ok(false) | Err(_) => {}
            Ok(true) => panic!("a wrong key got in"),
        }
        stats.connects.fetch_add(1, Ordering::Relaxed);
        stats.close_took(t.elapsed());
    }
}

/// Every attack, one after another, against one manager with 100 connection slots.
#[test]
fn attacks_do_not_keep_clients_out() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start("attacks", &["--max-connections", "100"], None);
    println!("manager pid {} at {}", server.child.id(), server.addr);
    let attacks: [(&'static str, usize, Attacker); 5] = [
        ("idle flood", 4, idle_flood),
        ("reconnect flood", 4, reconnect_flood),
        ("slowloris", 2, slowloris),
        ("garbage", 4, garbage),
        ("wrong key", 2, wrong_key),
    ];
    let mut all = Vec::new();
    for (name, threads, attacker) in attacks {
        all.push(attack(&server, name, threads, attacker));
    }
    for f in &all {
        f.check();
    }
    let find = |name| all.iter().find(|f| f.name == name).unwrap();
    // Bad bytes are closed at once, slow ones at the handshake deadline (2 s).
    let garbage = find("garbage");
    assert!(garbage.stats.connects.load(Ordering::Relaxed) > 100);
    assert!(garbage.stats.slowest_close_ms.load(Ordering::Relaxed) < 1000);
    let slow = find("slowloris");
    let life = slow.stats.longest_life_ms.load(Ordering::Relaxed);
    if attack_time() > Duration::from_millis(2500) {
        assert!(
            life >= 1800,
            "slowloris closed after {life} ms, before the deadline"
        );
    }
    assert!(life < 2000 + 1500, "slowloris lived {life} ms");
    let idle = find("idle flood");
    assert!(idle.stats.connects.load(Ordering::Relaxed) > 256);
    println!("manager log:\n{}", server.log_text());
}

/// Connects `n` clients at once and keeps those that got in: `(in, refused, slowest answer)`.
fn crowd(addr: SocketAddr, n: usize) -> (Vec<Client>, usize, Duration) {
    let mut kept = Vec::new();
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        match Client::connect_timeout(addr, KEY, Duration::from_secs(5)) {
            Ok(c) => kept.push(c),
            Err(Error::Disconnected { reason }) if reason.contains("no room") => refused += 1,
            Err(e) => panic!("connect: {e} after {:?}", t.elapsed()),
        }
        slowest = slowest.max(t.elapsed());
    }
    (kept, refused, slowest)
}

/// Under `ulimit -n 128` the default connection limit follows the descriptor limit: clients
/// beyond it are told "busy" at once, and the log stays short.
#[test]
fn descriptor_limit_sets_the_connection_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start("ulimit", &[], Some(128));
    let (kept, refused, slowest) = crowd(server.addr, 150);
    println!(
        "ulimit -n 128: {} clients in, {refused} refused, slowest answer {slowest:?}, log {} B",
        kept.len(),
        server.log_bytes()
    );
    assert_eq!(
        kept.len(),
        128 - 32,
        "the limit leaves 32 descriptors spare"
    );
    assert_eq!(refused, 150 - kept.len());
    assert!(slowest < GET_IN, "slowest answer {slowest:?}");
    assert!(server.log_bytes() < 2048, "{}", server.log_text());
}

/// Descriptors run out below the connection limit (the limit was lowered while serving): the
/// manager tells clients "busy" at once instead of leaving them waiting, without spinning.
#[test]
fn out_of_descriptors_clients_are_told_busy() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start("emfile", &["--max-connections", "500"], None);
    let pid = server.child.id().to_string();
    let lowered = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=64:64"])
        .status()
        .expect("prlimit runs");
    assert!(lowered.success());
    let (kept, refused, slowest) = crowd(server.addr, 100);
    // Idle, clients refused: the accept loop must not spin.
    let cpu = |pid: &str| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu(&pid);
    thread::sleep(Duration::from_secs(1));
    let ticks = cpu(&pid) - before;
    println!(
        "nofile lowered to 64: {} clients in, {refused} told busy, slowest answer {slowest:?}, \
         {ticks} CPU ticks in 1 s idle, log {} B",
        kept.len(),
        server.log_bytes()
    );
    assert!(kept.len() >= 40 && kept.len() < 64, "{} in", kept.len());
    assert_eq!(refused, 100 - kept.len());
    assert!(slowest < GET_IN, "slowest answer {slowest:?}");
    assert!(ticks < 20, "{ticks} ticks of CPU while idle");
    let log = server.log_text();
    assert!(log.contains("accept_errors="), "{log}");
    assert!(server.log_bytes() < 2048, "{log}");
}

/// A depot client driven by hand over a blocking socket (the core's client state machine), so
/// a test decides when it reads, if ever.
struct Raw {
    core: depot_core::Client<'static>,
    sock: TcpStream,
    buf: Vec<u8>,
    pending: Vec<u8>,
}

/// A reply, owned: the items it carried, or its error code.
#[derive(Debug)]
enum Answer {
    Items(Vec<Vec<u8>>),
    Opened(depot_core::Handle),
    Done,
    Failed(ErrorCode),
    Other,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        use std::hash::{BuildHasher, RandomState};
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        let mut nonce = [0u8; depot_core::wire::NONCE_LEN];
        for (i, chunk) in nonce.chunks_mut(8).enumerate() {
            let r = RandomState::new().hash_one(i).to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        let config = depot_core::client::ClientConfig {
            handshake_timeout_ms: 5_000,
            reply_timeout_ms: 600_000,
            ..Default::default()
        };
        let core = depot_core::Client::owned(
            config,
            KEY.as_bytes(),
            nonce,
            depot_core::Instant::ZERO,
            4 << 20,
            4 << 20,
            4096,
        );
        let mut raw = Raw {
            core,
            sock,
            buf: vec![0; 64 << 10],
            pending: Vec::new(),
        };
        loop {
            match raw.core.poll_event() {
                Some(Event::Connected) => return raw,
                Some(Event::Closed(e)) => panic!("handshake: {e}"),
                Some(_) => {}
                None => {
                    // The hello, then the proof that decoding the challenge produced.
                    raw.flush();
                    assert!(raw.read_some(), "closed in the handshake");
                }
            }
        }
    }

    fn flush(&mut self) {
        loop {
            let out = self.core.poll_transmit();
            let n = out.len();
            if n == 0 {
                return;
            }
            self.sock.write_all(out).unwrap();
            self.core.handle_transmitted(n);
        }
    }

    /// Feeds the core input it has not taken yet (it takes none while an event it decoded
    /// waits to be polled), or else more from the socket; `false` at the socket's end.
    fn read_some(&mut self) -> bool {
        let taken = self.core.handle_input(&self.pending);
        self.pending.drain(..taken);
        if taken > 0 {
            return true;
        }
        match self.sock.read(&mut self.buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&self.buf[..n]);
                let taken = self.core.handle_input(&self.pending);
                self.pending.drain(..taken);
                true
            }
        }
    }

    fn send(&mut self, op: Op<'_>) -> u32 {
        let id = self.core.send(depot_core::Instant::ZERO, op).unwrap();
        self.flush();
        id
    }

    /// The next reply, reading as needed; `None` once the connection is over.
    fn next(&mut self) -> Option<(u32, Answer)> {
        loop {
            if let Some(event) = self.core.poll_event() {
                return match event {
                    Event::Reply { id, reply } => Some((id, Answer::of(reply))),
                    Event::Closed(_) => None,
                    _ => continue,
                };
            }
            if !self.read_some() {
                return None;
            }
        }
    }

    fn open(&mut self, name: &str) -> depot_core::Handle {
        let id = self.send(Op::Open { name });
        match self.next() {
            Some((got, Answer::Opened(handle))) if got == id => handle,
            other => panic!("open {name}: {other:?}"),
        }
    }
}

impl Answer {
    fn of(reply: Reply<'_>) -> Answer {
        match reply {
            Reply::Item { item, .. } => Answer::Items(vec![item.to_vec()]),
            Reply::Items { items, .. } => Answer::Items(items.iter().map(<[u8]>::to_vec).collect()),
            Reply::Opened(info) => Answer::Opened(info.handle),
            Reply::Error(code) => Answer::Failed(code),
            Reply::Done => Answer::Done,
            _ => Answer::Other,
        }
    }
}

/// The numbered item `n` of `size` bytes: its number, then filler.
fn numbered(n: u32, size: usize) -> Vec<u8> {
    let mut item = vec![0xA5; size.max(4)];
    item[..4].copy_from_slice(&n.to_be_bytes());
    item
}

fn number(item: &[u8]) -> u32 {
    u32::from_be_bytes(item[..4].try_into().unwrap())
}

fn queue_stat(client: &Client, name: &str) -> depot_std::QueueStat {
    client
        .stat()
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

/// Clients that ask for items and never read their socket while the replies pile up: the
/// manager stops reading them, drops them at the write-stall deadline with memory flat, other
/// clients go on unaffected, and no item is lost: every item is either still queued (the
/// replies never handed to the socket are given back, counted by `stat`) or in the dropped
/// client's socket, which it can still read.
#[test]
fn non_reading_clients_lose_no_items() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const ITEMS: u32 = 40_000;
    const SIZE: usize = 1024;
    const READERS: usize = 3;
    let stall = Duration::from_secs(2);
    let server = Server::start(
        "non-reading",
        &[
            "--queue",
            "work:50000:raw",
            "--write-stall-timeout",
            "2",
            "--max-connections",
            "100",
        ],
        None,
    );
    let client = Client::connect(server.addr, KEY).unwrap();
    let work = client.raw_queue("work").unwrap();
    let items: Vec<Vec<u8>> = (0..ITEMS).map(|n| numbered(n, SIZE)).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    work.put_many(&refs).unwrap();
    let put_before = queue_stat(&client, "work");
    assert_eq!(put_before.len, ITEMS);
    let rss_before = server.rss_kib();

    // Each asks for 64 items 300 times over (more than the queue holds), reads nothing.
    let mut readers: Vec<Raw> = (0..READERS).map(|_| Raw::connect(server.addr)).collect();
    for raw in &mut readers {
        let handle = raw.open("work");
        for _ in 0..300 {
            raw.send(Op::GetMany {
                handle,
                max_items: 64,
                max_bytes: 64 << 10,
                wait: Wait::NoWait,
            });
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, addr) = (stop.clone(), server.addr);
        thread::spawn(move || probe(addr, &stop))
    };
    // Until the readers are stuck: the queue stops shrinking.
    let mut stuck_len = queue_stat(&client, "work").len;
    let mut rss_max = rss_before;
    let start = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(100));
        rss_max = rss_max.max(server.rss_kib());
        let len = queue_stat(&client, "work").len;
        if len == stuck_len {
            break;
        }
        stuck_len = len;
        assert!(start.elapsed() < stall, "the queue kept shrinking");
    }
    // Past the deadline the manager has dropped them.
    while start.elapsed() < stall + Duration::from_millis(1500) {
        rss_max = rss_max.max(server.rss_kib());
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let probe = prober.join().unwrap();
    let after_drop = queue_stat(&client, "work");
    let given_back = after_drop.len - stuck_len;

    // What reached each dropped client is still in its socket.
    let mut seen = vec![0u8; ITEMS as usize];
    let mut in_sockets = Vec::new();
    for mut raw in readers {
        raw.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Not necessarily in order: items given back by a reader dropped earlier go to the head
        // of the queue, where a reader dropped later may still take them.
        let mut count = 0u32;
        while let Some((_, answer)) = raw.next() {
            if let Answer::Items(items) = answer {
                for item in items {
                    assert_eq!(item.len(), SIZE);
                    seen[number(&item) as usize] += 1;
                    count += 1;
                }
            }
        }
        in_sockets.push(count);
    }
    // The rest is queued.
    let drained = work.qsize().unwrap();
    for item in work.get_many(drained as usize).unwrap() {
        seen[number(&item) as usize] += 1;
    }
    let end = queue_stat(&client, "work");
    let p = &probe;
    println!(
        "non-reading: {ITEMS} items of {SIZE} B; {READERS} clients that stopped reading took \
         {in_sockets:?} into their sockets, {given_back} given back when dropped, {drained} \
         drained after | probe {}/{} in | RSS {rss_before} -> max {rss_max} KiB",
        p.tries as usize - p.failures.len(),
        p.tries,
    );
    assert!(p.failures.is_empty(), "{:?}", p.failures);
    assert!(
        given_back > 0,
        "nothing was waiting to be sent when they were dropped"
    );
    assert_eq!(end.len, 0);
    let lost: Vec<usize> = (0..seen.len()).filter(|&n| seen[n] == 0).collect();
    let twice: Vec<usize> = (0..seen.len()).filter(|&n| seen[n] > 1).collect();
    assert!(
        lost.is_empty(),
        "{} items lost, first {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        twice.is_empty(),
        "{} items twice, first {:?}",
        twice.len(),
        twice.first()
    );
    assert!(
        rss_max < rss_before + 32 * 1024,
        "memory grew from {rss_before} to {rss_max} KiB"
    );
    let status = client.status().unwrap();
    assert_eq!(status.connections, 1, "the dropped clients are gone");
}

/// Many producers on many connections blocked on a full queue while consumers drain it: every
/// item arrives exactly once, each producer's in order; beyond the manager's budget for blocked
/// puts' items, a put is refused at once with a typed error (`WaiterLimit`), and never hangs.
#[test]
fn blocked_puts_under_pressure() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CONNECTIONS: usize = 48;
    const THREADS: usize = 2;
    const EACH: u32 = 50;
    let server = Server::start(
        "blocked-puts",
        &["--queue", "narrow:8:raw", "--max-connections", "100"],
        None,
    );
    let client = Client::connect(server.addr, KEY).unwrap();
    let rss_before = server.rss_kib();
    let producers: Vec<_> = (0..CONNECTIONS)
        .flat_map(|c| {
            let producer = Client::connect(server.addr, KEY).unwrap();
            (0..THREADS).map(move |t| {
                let q = producer.raw_queue("narrow").unwrap();
                let id = (c * THREADS + t) as u32;
                thread::spawn(move || {
                    for seq in 0..EACH {
                        q.put(&numbered((id << 16) | seq, 16)).unwrap();
                    }
                })
            })
        })
        .collect();
    let total = (CONNECTIONS * THREADS) as u32 * EACH;
    // Wait until (nearly) every producer is blocked.
    let start = Instant::now();
    let mut most_putters = 0;
    while start.elapsed() < Duration::from_secs(10) {
        most_putters = most_putters.max(queue_stat(&client, "narrow").putters);
        if most_putters as usize >= CONNECTIONS * THREADS - 8 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let rss_blocked = server.rss_kib();
    let received = Arc::new(Mutex::new(Vec::new()));
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let q = Client::connect(server.addr, KEY)
                .unwrap()
                .raw_queue("narrow")
                .unwrap();
            let received = received.clone();
            thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    match q.get_timeout(Duration::from_secs(2)) {
                        Ok(item) => mine.push(number(&item)),
                        Err(e) if e.code() == Some(ErrorCode::Timeout) => break,
                        Err(e) => panic!("get: {e}"),
                    }
                }
                received.lock().unwrap().push(mine);
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    for c in consumers {
        c.join().unwrap();
    }
    let received = Arc::try_unwrap(received).unwrap().into_inner().unwrap();
    let mut next = vec![0u32; CONNECTIONS * THREADS];
    // Each consumer sees every producer's items in order (FIFO): merged by arrival within a
    // consumer, interleaved across consumers.
    for mine in &received {
        let mut last = vec![None; CONNECTIONS * THREADS];
        for &n in mine {
            let (id, seq) = ((n >> 16) as usize, n & 0xFFFF);
            assert!(
                last[id] < Some(seq),
                "producer {id}: {seq} after {:?}",
                last[id]
            );
            last[id] = Some(seq);
            next[id] += 1;
        }
    }
    let mut all: Vec<u32> = received.iter().flatten().copied().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "an item arrived twice");
    assert_eq!(all.len() as u32, total, "items lost");
    let stat = queue_stat(&client, "narrow");
    assert_eq!(
        (stat.len, stat.putters, stat.total_got),
        (0, 0, u64::from(total))
    );
    println!(
        "blocked puts: {} producers on {CONNECTIONS} connections, {most_putters} blocked at once; \
         {total} items each got once, in order | RSS {rss_before} -> {rss_blocked} KiB",
        CONNECTIONS * THREADS
    );
    drop(client);

    // The park budget (64 MiB of blocked puts' items) is what a flood of large blocked puts
    // meets: beyond it each put is refused at once.
    let server = Server::start(
        "park-budget",
        &["--queue", "big:1:raw", "--max-item", "1048576"],
        None,
    );
    let client = Client::connect(server.addr, KEY).unwrap();
    let big = client.raw_queue("big").unwrap();
    big.put(&numbered(u32::MAX, 1000)).unwrap();
    let rss_before = server.rss_kib();
    let mut floods: Vec<Raw> = (0..2).map(|_| Raw::connect(server.addr)).collect();
    let mut parked = 0u32;
    let mut parked_on = [0u32; 2];
    let mut refused = 0u32;
    let mut slowest_refusal = Duration::ZERO;
    for (c, raw) in floods.iter_mut().enumerate() {
        let handle = raw.open("big");
        for seq in 0..40u32 {
            let item = numbered(((c as u32) << 16) | seq, 1 << 20);
            let t = Instant::now();
            let id = raw.send(Op::Put {
                handle,
                item: &item,
                wait: Wait::Forever,
            });
            // A parked put is not answered yet; ask for the size behind it to see which.
            let probe_id = raw.send(Op::Size { handle });
            match raw.next() {
                Some((got, Answer::Failed(ErrorCode::WaiterLimit))) if got == id => {
                    refused += 1;
                    slowest_refusal = slowest_refusal.max(t.elapsed());
                    assert!(matches!(raw.next(), Some((got, _)) if got == probe_id));
                }
                Some((got, Answer::Other)) if got == probe_id => {
                    parked += 1;
                    parked_on[c] += 1;
                }
                other => panic!("put {seq}: {other:?}"),
            }
        }
    }
    let rss_parked = server.rss_kib();
    let blocked = queue_stat(&client, "big").putters;
    // Draining completes every parked put, in order per connection; refused ones changed
    // nothing.
    let mut got = vec![number(&big.get().unwrap())];
    for _ in 0..parked {
        got.push(number(&big.get_timeout(Duration::from_secs(10)).unwrap()));
    }
    for (raw, n) in floods.iter_mut().zip(parked_on) {
        for _ in 0..n {
            assert!(matches!(raw.next(), Some((_, Answer::Done))));
        }
    }
    assert_eq!(big.get_nowait().unwrap_err().code(), Some(ErrorCode::Empty));
    println!(
        "park budget: 80 blocked puts of 1 MiB: {parked} parked, {refused} refused WaiterLimit \
         (slowest {slowest_refusal:?}) | RSS {rss_before} -> {rss_parked} KiB"
    );
    assert_eq!(got[0], u32::MAX);
    for pair in got[1..].windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a >> 16 != b >> 16 || a < b, "{b:#x} after {a:#x}");
    }
    assert_eq!(blocked, parked);
    assert!(
        refused > 0 && parked > 0,
        "parked {parked}, refused {refused}"
    );
    assert_eq!(parked + refused, 80);
    assert!(slowest_refusal < GET_IN);
    assert!(rss_parked < rss_before + 96 * 1024, "RSS {rss_parked} KiB");
}
