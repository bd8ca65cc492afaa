//! The adversarial suite: attackers (threads of this process) against a real `depot serve`
//! (its own process), while a real client checks that it still gets in within a second and that
//! its round trips stay short; the manager's memory (from /proc) and its log stay bounded.
//!
//! Each attack runs `DEPOT_ADVERSARIAL_SECS` seconds (default 3). The figures are printed:
//! `cargo test -p depot-cli --test adversarial -- --nocapture --test-threads 1`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error};

mod handshake;

const KEY: &str = "adversarial-key";
/// What the probe must manage under every attack.
const GET_IN: Duration = Duration::from_secs(1);
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
        .env_remove("RUST_LOG")
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
