//! A real `depot serve --data-dir` process killed with SIGKILL at random moments, ten times,
//! and restarted each time, while 4 producers and 4 consumers (threads of this process, each
//! with its own TCP connection) put and get through it and reconnect when it goes away. The
//! restarts cycle through every `--fsync` policy on the same directory.
//!
//! Consumers take items under leases (`get_leased`) and ack each once recorded; a crash ends
//! their connections and so their leases. The guarantee checked, exactly (at least once):
//! - every acknowledged put is delivered, even one whose leased get or ack a crash cut off (the
//!   lease was logged before the reply, so recovery gives its items back);
//! - nothing is delivered that no producer tried to put;
//! - an item delivered more than once is a counted redelivery: its deliveries carry distinct
//!   delivery counts, and only one of them can be the first (count 1).
//!
//! A put that failed may or may not have been applied; its item is never put again, so it may
//! show up once or not at all. The seed is printed; `DEPOT_CRASH_SEED` repeats a run.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode};

mod serve;
use serve::{free_port, Rng};

const KEY: &str = "crash-loop-key";
const KILLS: usize = 10;
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;

fn serve(addr: SocketAddr, dir: &Path, fsync: &str) -> Child {
    let (addr, queue) = (addr.to_string(), "jobs:1000000:raw");
    let args = [
        "--listen",
        &addr,
        "--queue",
        queue,
        "--fsync",
        fsync,
        "--data-dir",
    ];
    let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    args.push(dir.as_os_str());
    serve::serve(
        &args,
        KEY,
        Duration::from_secs(20),
        Duration::from_millis(50),
    )
}

fn connect(addr: SocketAddr, stop: &AtomicBool) -> Option<Client> {
    while !stop.load(Ordering::SeqCst) {
        if let Ok(c) = Client::connect(addr, KEY) {
            return Some(c);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Puts `p:seq` items until told to stop: (acknowledged, tried).
fn producer(p: usize, addr: SocketAddr, stop: Arc<AtomicBool>) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut tried) = (Vec::new(), Vec::new());
    let mut seq = 0u64;
    'connect: while let Some(c) = connect(addr, &stop) {
        let Ok(q) = c.raw_queue("jobs") else {
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let item = format!("{p}:{seq}");
            seq += 1;
            tried.push(item.clone());
            match q.put(item.as_bytes()) {
                Ok(()) => acked.push(item),
                // Never put again: it may be queued or not.
                Err(_) => continue 'connect,
            }
        }
        break;
    }
    (acked, tried)
}

/// Gets items under leases until told to stop, pausing while `hold` is set, and acks each
/// once it is recorded: (each item delivered with its delivery count, leased gets or acks that
/// failed because the manager went away).
fn consumer(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
) -> (Vec<(String, u8)>, usize) {
    let (mut got, mut failed) = (Vec::new(), 0);
    'connect: while let Some(c) = connect(addr, &stop) {
        let Ok(q) = c.raw_queue("jobs") else {
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            if hold.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            // Long enough never to run out here: only a crash gives a lease back.
            let lease = Duration::from_secs(60);
            match q.get_leased_timeout(lease, Duration::from_millis(100)) {
                Ok(mut leased) => {
                    let deliveries = leased.deliveries()[0];
                    let item = leased.take_items().pop().expect("one item");
                    got.push((
                        String::from_utf8(item).expect("an item put here"),
                        deliveries,
                    ));
                    if leased.ack().is_err() {
                        failed += 1;
                        continue 'connect;
                    }
                }
                Err(Error::Request {
                    code: ErrorCode::Timeout | ErrorCode::Empty,
                    ..
                }) => {}
                Err(_) => {
                    failed += 1;
                    continue 'connect;
                }
            }
        }
        break;
    }
    (got, failed)
}

#[test]
fn every_acknowledged_put_survives_ten_kill_9s() {
    let seed = std::env::var("DEPOT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("DEPOT_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("depot-crash-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A free port for every run of the manager (clients come back to the same address).
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let policies = ["always", "interval=20", "never"];
    let mut server = serve(addr, &dir, policies[0]);

    let producing = Arc::new(AtomicBool::new(false));
    let consuming = Arc::new(AtomicBool::new(false));
    // Consumers pause for two runs in three, so that crashes find a backlog to recover.
    let hold = Arc::new(AtomicBool::new(true));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let stop = producing.clone();
            thread::spawn(move || producer(p, addr, stop))
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let (stop, hold) = (consuming.clone(), hold.clone());
            thread::spawn(move || consumer(addr, stop, hold))
        })
        .collect();

    let mut most_queued = 0;
    for kill in 0..KILLS {
        hold.store(kill % 3 != 2, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(150 + rng.next() % 400));
        server.kill().unwrap();
        server.wait().unwrap();
        server = serve(addr, &dir, policies[(kill + 1) % policies.len()]);
        let c = Client::connect(addr, KEY).unwrap();
        most_queued = most_queued.max(c.raw_queue("jobs").unwrap().qsize().unwrap());
    }
    // Let the last run work a moment, then stop producing and drain the queue.
    thread::sleep(Duration::from_millis(300));
    producing.store(true, Ordering::SeqCst);
    hold.store(false, Ordering::SeqCst);
    let mut acked = HashSet::new();
    let mut tried = HashSet::new();
    for p in producers {
        let (a, t) = p.join().unwrap();
        acked.extend(a);
        tried.extend(t);
    }
    let probe = Client::connect(addr, KEY).unwrap();
    let q = probe.raw_queue("jobs").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.qsize().unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "the consumers did not drain the queue"
        );
        thread::sleep(Duration::from_millis(20));
    }
    consuming.store(true, Ordering::SeqCst);
    let mut deliveries: HashMap<String, Vec<u8>> = HashMap::new();
    let mut failed_calls = 0;
    for c in consumers {
        let (got, failed) = c.join().unwrap();
        failed_calls += failed;
        for (item, count) in got {
            deliveries.entry(item).or_default().push(count);
        }
    }
    let delivered: HashSet<String> = deliveries.keys().cloned().collect();
    let redelivered = deliveries.values().filter(|d| d.len() > 1).count();
    // Uncounted duplicates: an item delivered twice with the same count (or first twice).
    let uncounted: Vec<_> = deliveries
        .iter()
        .filter(|(_, d)| {
            let mut counts = (*d).clone();
            counts.sort_unstable();
            counts.dedup();
            counts.len() != d.len()
        })
        .take(20)
        .collect();
    drop(probe);
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let lost: Vec<_> = acked.difference(&delivered).collect();
    let invented: Vec<_> = delivered.difference(&tried).collect();
    println!(
        "{} kills: {} puts acknowledged of {} tried, {} delivered ({} of them more than \
         once), {} leased gets or acks cut by a crash; up to {} items queued across a restart",
        KILLS,
        acked.len(),
        tried.len(),
        delivered.len(),
        redelivered,
        failed_calls,
        most_queued
    );
    assert!(most_queued > 100, "no backlog crossed a restart");
    assert!(acked.len() > 100, "too little traffic to mean anything");
    assert!(invented.is_empty(), "delivered but never put: {invented:?}");
    assert!(
        uncounted.is_empty(),
        "delivered again without a higher delivery count: {uncounted:?}"
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged puts never delivered: {:?}",
        lost.len(),
        lost.iter().take(20).collect::<Vec<_>>()
    );
}
