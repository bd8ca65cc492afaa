//! The proxy's faults over real sockets: a small echo server upstream, a client through the
//! proxy. Times are only bounded from below (a fault can only make things slower).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use faultproxy::{FaultProxy, Faults};

/// An upstream that echoes what it reads and reports, per connection, when its input ended.
fn echo_server() -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (eof_tx, eof_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let eof_tx = eof_tx.clone();
            thread::spawn(move || {
                let mut buf = [0; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            let _ = eof_tx.send(());
                            return;
                        }
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    (addr, eof_rx)
}

fn proxy(faults: Faults) -> (FaultProxy, std::sync::mpsc::Receiver<()>) {
    let (upstream, eof) = echo_server();
    (
        FaultProxy::start("127.0.0.1:0", upstream, faults).unwrap(),
        eof,
    )
}

fn round_trip(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).unwrap();
    let mut back = vec![0; data.len()];
    s.read_exact(&mut back).unwrap();
    back
}

#[test]
fn forwards_both_ways() {
    let (p, _) = proxy(Faults::default());
    let mut s = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(round_trip(&mut s, b"hello"), b"hello");
    assert_eq!(p.stats().accepted, 1);
}

#[test]
fn latency_delays_each_way() {
    let (p, _) = proxy(Faults {
        latency: Duration::from_millis(100),
        ..Faults::default()
    });
    let mut s = TcpStream::connect(p.addr()).unwrap();
    let t = Instant::now();
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn bandwidth_is_capped() {
    let (p, _) = proxy(Faults {
        bandwidth: Some(100_000),
        ..Faults::default()
    });
    let mut s = TcpStream::connect(p.addr()).unwrap();
    let data = vec![7u8; 50_000];
    let t = Instant::now();
    assert_eq!(round_trip(&mut s, &data), data);
    // 50 kB at 100 kB/s goes in tenth-of-a-second slices: the fifth leaves after 0.4 s (the
    // echo overlaps the two directions).
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn reset_is_a_reset_and_drop_is_an_end() {
    let (p, _) = proxy(Faults::default());
    let mut reset = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(round_trip(&mut reset, b"a"), b"a");
    p.reset_all();
    let mut buf = [0; 8];
    let e = reset.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);

    let mut dropped = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(round_trip(&mut dropped, b"b"), b"b");
    p.drop_all();
    assert_eq!(dropped.read(&mut buf).unwrap(), 0);
    assert_eq!(p.stats().cut, 2);
}

#[test]
fn half_close_ends_only_the_upstreams_input() {
    let (p, eof) = proxy(Faults::default());
    let mut s = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(round_trip(&mut s, b"a"), b"a");
    p.half_close_all();
    eof.recv_timeout(Duration::from_secs(5))
        .expect("the upstream saw its input end");
    // The echo server then closes; the client learns of it only now.
    let mut buf = [0; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}

#[test]
fn a_pause_holds_everything_back() {
    let (p, _) = proxy(Faults::default());
    let mut s = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(round_trip(&mut s, b"a"), b"a");
    p.pause(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(round_trip(&mut s, b"b"), b"b");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn faults_at_intervals_keep_cutting() {
    let (p, _) = proxy(Faults {
        reset_every: Some(Duration::from_millis(50)),
        ..Faults::default()
    });
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0; 8];
        // Cut within a few intervals, whatever it was doing.
        let _ = s.write_all(b"x");
        loop {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    assert_ne!(e.kind(), ErrorKind::WouldBlock, "not cut in 5 s");
                    break;
                }
            }
        }
    }
    assert!(p.stats().cut >= 3);
}

#[test]
fn the_command_explains_itself() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultproxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--listen",
        "--upstream",
        "--latency",
        "--bandwidth",
        "--reset-every",
        "--half-close-every",
        "--pause-every",
    ] {
        assert!(text.contains(option), "--help mentions {option}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_faultproxy"))
        .arg("--listen")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("needs a value"));
}
