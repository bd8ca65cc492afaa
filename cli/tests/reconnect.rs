//! A client that reconnects by itself across a real `depot serve` restart (memory only: the
//! queue starts empty again, and the client carries on), and `depot put --reconnect` through
//! connection resets and through a graceful restart (SIGTERM) with its data directory.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use depot_std::{Client, ConnectOptions, Reconnect};

const KEY: &str = "reconnect-key";

/// `depot serve` on `addr`, once it listens.
fn serve(addr: SocketAddr) -> Child {
    serve_with(addr, &["--queue", "q:10000:raw"])
}

/// `depot serve` on `addr` with `args`, once it listens.
fn serve_with(addr: SocketAddr, args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(args)
        .env("DEPOT_AUTHKEY", KEY)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("depot serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "serve printed {line:?}");
    child
}

#[test]
fn a_client_carries_on_across_a_manager_restart() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = serve(addr);
    let policy = Reconnect {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
        give_up: Some(Duration::from_secs(30)),
        connect_timeout: Duration::from_secs(2),
    };
    let options = ConnectOptions::new().reconnect(policy);
    let client = Client::connect_with(addr, KEY, &options).expect("connect");
    let q = client.raw_queue("q").unwrap();
    const N: usize = 2_000;
    let done = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (q, done) = (q.clone(), done.clone());
        thread::spawn(move || {
            for i in 0..N {
                q.put(format!("{i}").as_bytes())
                    .unwrap_or_else(|e| panic!("put {i}: {e}"));
                done.store(i + 1, Ordering::Relaxed);
                thread::sleep(Duration::from_micros(500));
            }
        })
    };
    while done.load(Ordering::Relaxed) < N / 4 {
        thread::sleep(Duration::from_millis(5));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let before = done.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(300));
    let mut server = serve(addr);
    producer.join().expect("every put succeeded");

    // The restarted manager holds a run of the latest items, each once.
    let got = q.get_many(q.qsize().unwrap() as usize).unwrap();
    let numbers: Vec<usize> = got
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
        .collect();
    let unique: HashSet<_> = numbers.iter().collect();
    assert_eq!(unique.len(), numbers.len(), "no item twice");
    let first = numbers[0];
    // The put in flight at the kill was sent again to the new manager (or had just been
    // answered by the old one).
    assert!(
        (before..=before + 1).contains(&first),
        "items from {first} on; {before} puts had returned before the kill"
    );
    assert_eq!(numbers, (first..N).collect::<Vec<_>>());
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `depot put --reconnect` keeps a session: puts in flight when a proxy resets its connection
/// are sent again on the next one, and the manager applies each once.
#[test]
fn depot_put_reconnect_sends_puts_again_and_each_is_applied_once() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = serve(addr);
    // Faithful until the client is in, so that its first connection (tried once) stands.
    let proxy =
        faultproxy::FaultProxy::start("127.0.0.1:0", addr, faultproxy::Faults::default()).unwrap();
    const N: usize = 3_000;
    let mut put = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["put", "--reconnect", "--raw", "--queue", "q", "--connect"])
        .arg(proxy.addr().to_string())
        .env("DEPOT_AUTHKEY", KEY)
        .env("RUST_LOG", "depot_std=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("depot put starts");
    let lines: String = (0..N).map(|i| format!("{i}\n")).collect();
    let mut stdin = put.stdin.take().unwrap();
    let writer = thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let mut stderr = BufReader::new(put.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("session open") {
        if stderr.read_line(&mut log).unwrap() == 0 {
            break;
        }
    }
    proxy.set_faults(faultproxy::Faults {
        reset_every: Some(Duration::from_millis(100)),
        ..faultproxy::Faults::default()
    });
    stderr.read_to_string(&mut log).unwrap();
    writer.join().unwrap().unwrap();
    let status = put.wait().unwrap();
    assert!(
        status.success(),
        "depot put --reconnect: {status}; log:\n{log}"
    );
    assert!(proxy.stats().cut > 0, "the proxy cut no connection");
    assert!(
        log.contains("connection lost during this call"),
        "no put was in flight at a reset; log:\n{log}"
    );
    assert!(
        log.contains("session open resumed=true"),
        "the session was never resumed; log:\n{log}"
    );

    let client = Client::connect(addr, KEY).unwrap();
    let q = client.raw_queue("q").unwrap();
    let got = q.get_many(q.qsize().unwrap() as usize).unwrap();
    let numbers: Vec<usize> = got
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..N).collect::<Vec<_>>(),
        "each item once, in order"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `depot put --reconnect` blocked on a full queue while `depot serve --data-dir` stops on
/// SIGTERM: the stopping manager refuses the waiting put (`ShuttingDown`), and the client makes
/// it again on the manager started after it, where it completes once a consumer makes room.
#[test]
fn depot_put_reconnect_rides_a_graceful_restart() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("depot-cli-graceful-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap();
    let args = [
        "--queue",
        "q:4:raw",
        "--data-dir",
        dir_arg,
        "--fsync",
        "always",
    ];
    let server = serve_with(addr, &args);
    let mut put = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["put", "--reconnect", "--raw", "--queue", "q", "--connect"])
        .arg(addr.to_string())
        .args(["1", "2", "3", "4", "5", "6"])
        .env("DEPOT_AUTHKEY", KEY)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("depot put starts");
    // Four in, the fifth waiting for room.
    let client = Client::connect(addr, KEY).unwrap();
    let start = std::time::Instant::now();
    while !client
        .stat()
        .unwrap()
        .iter()
        .any(|s| s.len == 4 && s.putters == 1)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the put never blocked"
        );
        thread::sleep(Duration::from_millis(10));
    }
    drop(client);
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut server = server;
    assert!(
        server.wait().unwrap().success(),
        "depot serve stops cleanly on SIGTERM"
    );
    let mut server = serve_with(addr, &args);
    let client = Client::connect(addr, KEY).unwrap();
    let q = client.raw_queue("q").unwrap();
    let got: Vec<Vec<u8>> = (0..6)
        .map(|_| q.get_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    let status = put.wait().unwrap();
    let mut log = String::new();
    put.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(status.success(), "depot put --reconnect: {status}; {log}");
    let want: Vec<Vec<u8>> = (1..=6).map(|i| i.to_string().into_bytes()).collect();
    assert_eq!(got, want, "each item once, in order");
    assert_eq!(q.qsize().unwrap(), 0);
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
