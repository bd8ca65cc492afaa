//! Exactly-once puts across manager crashes: a real `depot serve --data-dir --fsync always`
//! process is killed with SIGKILL at random moments and restarted on the same directory and
//! address, while producers with reconnecting clients (`ConnectOptions::reconnect`, so each
//! has a session and numbers its puts) put unique items, one at a time or in batches. A crash
//! that lands after a put was logged and before its reply left the manager makes the client
//! send it again to the restarted manager, which must know from the log that the put was
//! applied. In the end the queue holds every item put exactly once, each producer's in order.
//! The seed is printed; `DEPOT_CRASH_SEED` repeats a run.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use depot_std::{Client, ConnectOptions, Reconnect};

mod serve;
use serve::{free_port, Rng};

const KEY: &str = "exactly-once-key";
const KILLS: usize = 12;
const PRODUCERS: usize = 4;
const BATCH: usize = 8;

fn serve(addr: SocketAddr, dir: &Path) -> Child {
    let addr = addr.to_string();
    let args = [
        "--listen",
        &addr,
        "--queue",
        "jobs:1000000:raw",
        "--fsync",
        "always",
    ];
    let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    args.extend([OsStr::new("--data-dir"), dir.as_os_str()]);
    serve::serve(
        &args,
        KEY,
        Duration::from_secs(20),
        Duration::from_millis(20),
    )
}

fn item(p: usize, i: usize) -> Vec<u8> {
    format!("{p}:{i}").into_bytes()
}

/// Puts items until told to stop, single puts or batches of [`BATCH`]; every put must succeed
/// (the client reconnects and sends it again). Returns how many items it put.
fn producer(p: usize, addr: SocketAddr, stop: Arc<AtomicBool>) -> usize {
    let policy = Reconnect {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        give_up: Some(Duration::from_secs(30)),
        connect_timeout: Duration::from_secs(2),
    };
    let client =
        Client::connect_with(addr, KEY, &ConnectOptions::new().reconnect(policy)).expect("connect");
    let q = client.raw_queue("jobs").expect("open");
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) {
        if p.is_multiple_of(2) {
            q.put(&item(p, next))
                .unwrap_or_else(|e| panic!("put {p}:{next}: {e}"));
            next += 1;
        } else {
            let items: Vec<Vec<u8>> = (next..next + BATCH).map(|i| item(p, i)).collect();
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            q.put_many(&refs)
                .unwrap_or_else(|e| panic!("put_many {p}:{next}: {e}"));
            next += BATCH;
        }
    }
    next
}

#[test]
fn numbered_puts_are_applied_once_across_kill_9s() {
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
    let dir = std::env::temp_dir().join(format!("depot-exactly-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut server = serve(addr, &dir);
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let stop = stop.clone();
            thread::spawn(move || producer(p, addr, stop))
        })
        .collect();
    for _ in 0..KILLS {
        thread::sleep(Duration::from_millis(100 + rng.next() % 300));
        server.kill().unwrap();
        server.wait().unwrap();
        server = serve(addr, &dir);
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let put: Vec<usize> = producers.into_iter().map(|t| t.join().unwrap()).collect();

    let c = Client::connect(addr, KEY).unwrap();
    let q = c.raw_queue("jobs").unwrap();
    let queued = q.qsize().unwrap() as usize;
    let got = if queued > 0 {
        q.get_many(queued).unwrap()
    } else {
        Vec::new()
    };
    drop(c);
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for i in &got {
        *seen.entry(i.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(i, n)| (String::from_utf8_lossy(i).into_owned(), *n))
        .collect();
    let missing: Vec<String> = (0..PRODUCERS)
        .flat_map(|p| (0..put[p]).map(move |i| (p, i)))
        .filter(|&(p, i)| !seen.contains_key(&item(p, i)))
        .map(|(p, i)| format!("{p}:{i}"))
        .collect();
    println!(
        "{KILLS} kills: {} items put ({put:?} per producer), {} queued, {} twice, {} missing",
        put.iter().sum::<usize>(),
        got.len(),
        twice.len(),
        missing.len()
    );
    assert!(put.iter().sum::<usize>() > 100, "too little traffic");
    assert!(twice.is_empty(), "applied more than once: {twice:?}");
    assert!(missing.is_empty(), "never applied: {missing:?}");
    assert_eq!(got.len(), put.iter().sum::<usize>());
    for (p, &n) in put.iter().enumerate() {
        let mine = got
            .iter()
            .filter(|i| i.starts_with(format!("{p}:").as_bytes()));
        assert!(
            mine.eq((0..n).map(|i| item(p, i)).collect::<Vec<_>>().iter()),
            "producer {p}'s items in order"
        );
    }
}
