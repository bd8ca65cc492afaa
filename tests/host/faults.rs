//! Misbehaving peers: wrong keys, killed clients, hostile bytes, slow and greedy clients. The
//! offender is dropped; everyone else is served and nothing queued is lost.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use depot::core::wire::{Op, Wait};
use depot::{Client, Error, ErrorCode, ManagerHandle};

use crate::harness::{spawn, wait_until};
use crate::raw::{closed_within, hello_frame, Session};
use crate::{builder, client, connections, start, stat, KEY, SOON};

/// A put and a get on `q` through `c` take little time: the manager is serving.
fn still_served(c: &Client, q: &str, quick: Duration) {
    let q = c.raw_queue(q).unwrap();
    let t0 = Instant::now();
    let before = q.qsize().unwrap();
    q.put(b"probe").unwrap();
    assert_eq!(q.qsize().unwrap(), before + 1);
    // The probe is the newest item; take the queue round to it so nothing else moves.
    let mut items: Vec<Vec<u8>> = (0..=before).map(|_| q.get().unwrap()).collect();
    assert_eq!(items.pop().unwrap(), b"probe");
    for item in items {
        q.put(&item).unwrap();
    }
    let took = t0.elapsed();
    assert!(took < quick, "serving took {took:?}");
}

/// The wrong key gets a clear error, in-process, in a child and on the raw wire; the manager
/// serves the others all along.
pub fn wrong_authkey_is_clear_and_others_are_served() {
    let m = start(&[("q", 8), ("task_queue", 8)]);
    let addr = m.address();
    let good = client(&m);
    good.raw_queue("q").unwrap().put(b"before").unwrap();

    match Client::connect(addr, "wrong") {
        Err(e @ Error::AuthFailed { .. }) => {
            let text = e.to_string();
            assert!(text.contains("authentication failed"), "{text}");
            assert!(text.contains(&addr.to_string()), "{text}");
        }
        Err(e) => panic!("expected AuthFailed, got {e:?}"),
        Ok(_) => panic!("a wrong authkey was accepted"),
    }

    let mut child = spawn(
        "consumer",
        &["--addr", &addr.to_string(), "--authkey", "also wrong"],
    );
    let (status, _) = child.wait(SOON);
    assert!(!status.success());
    let err = child.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("consumer: authentication failed"), "{err}");

    let raw = Session::connect(addr, b"wrong on the wire");
    assert_eq!(raw.err().as_deref(), Some("auth failed"));

    still_served(&good, "q", SOON);
    assert_eq!(
        good.raw_queue("q").unwrap().get_nowait().unwrap(),
        b"before"
    );
    wait_until(SOON, "the failed connections are closed", || {
        connections(&good) == 1
    });
    m.shutdown().unwrap();
}

/// A client SIGKILLed with half a frame sent: dropped, its half put never applied, every
/// queued item kept in order.
pub fn client_killed_mid_frame() {
    let m = start(&[("q", 8)]);
    let c = client(&m);
    let q = c.raw_queue("q").unwrap();
    for item in ["a", "b", "c"] {
        q.put(item.as_bytes()).unwrap();
    }
    let addr = m.address().to_string();
    let mut child = spawn(
        "half-frame",
        &["--addr", &addr, "--authkey", KEY, "--queue", "q"],
    );
    assert_eq!(child.line(SOON), "ready");
    wait_until(SOON, "the child is connected", || connections(&c) == 2);
    child.kill();
    wait_until(SOON, "the killed client is dropped", || {
        connections(&c) == 1
    });

    let s = stat(&c, "q");
    assert_eq!((s.len, s.total_put), (3, 3));
    for item in ["a", "b", "c"] {
        assert_eq!(q.get_nowait().unwrap(), item.as_bytes());
    }
    let other = client(&m);
    still_served(&other, "q", SOON);
    m.shutdown().unwrap();
}

/// Clients SIGKILLed while blocked in get and in put: their waiters go, nothing else does.
pub fn client_killed_while_blocked() {
    let m = start(&[("empty", 8), ("full", 1)]);
    let c = client(&m);
    c.raw_queue("full").unwrap().put(b"kept").unwrap();
    let addr = m.address().to_string();
    let common = ["--addr", addr.as_str(), "--authkey", KEY];

    let mut getter = spawn("get-one", &[&common[..], &["--queue", "empty"]].concat());
    let mut putter = spawn(
        "put-one",
        &[&common[..], &["--queue", "full", "--value", "lost"]].concat(),
    );
    assert_eq!(getter.line(SOON), "ready");
    wait_until(SOON, "both are parked", || {
        stat(&c, "empty").getters == 1 && stat(&c, "full").putters == 1
    });
    getter.kill();
    putter.kill();
    wait_until(SOON, "the killed clients' waiters are gone", || {
        stat(&c, "empty").getters == 0 && stat(&c, "full").putters == 0 && connections(&c) == 1
    });

    // The dead getter does not swallow the next item; the dead putter's item never lands.
    let empty = c.raw_queue("empty").unwrap();
    empty.put(b"for the living").unwrap();
    assert_eq!(empty.get_nowait().unwrap(), b"for the living");
    let full = c.raw_queue("full").unwrap();
    assert_eq!(full.qsize().unwrap(), 1);
    assert_eq!(full.get_nowait().unwrap(), b"kept");
    assert!(matches!(
        full.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));
    m.shutdown().unwrap();
}

/// Connects a raw socket to `m`.
fn raw(m: &ManagerHandle) -> TcpStream {
    let s = TcpStream::connect(m.address()).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Bytes that are not depot, before and after the handshake: the connection is closed at once
/// (long before any timeout), the others are served.
pub fn garbage_bytes_are_dropped() {
    let m = start(&[("q", 8)]);
    let good = client(&m);
    let prompt = Duration::from_secs(3); // the timeouts are 10 s

    // An HTTP request.
    let mut s = raw(&m);
    s.write_all(b"GET / HTTP/1.1\r\nHost: depot\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut s, prompt), "HTTP request not dropped");

    // A small frame of junk instead of a hello.
    let mut s = raw(&m);
    let mut junk = 40u32.to_be_bytes().to_vec();
    junk.extend((0..40u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    s.write_all(&junk).unwrap();
    assert!(closed_within(&mut s, prompt), "junk hello not dropped");

    // A well-formed hello with trailing bytes in its frame.
    let mut s = raw(&m);
    let (hello, _) = hello_frame();
    let mut padded = ((hello.len() - 4 + 3) as u32).to_be_bytes().to_vec();
    padded.extend_from_slice(&hello[4..]);
    padded.extend_from_slice(b"xyz");
    s.write_all(&padded).unwrap();
    assert!(
        closed_within(&mut s, prompt),
        "hello with trailing bytes not dropped"
    );

    // After the handshake: a frame whose tag is wrong.
    let mut session = Session::connect(m.address(), KEY.as_bytes()).unwrap();
    let mut msgs = Vec::new();
    session.encode_request(Op::Status, &mut msgs);
    let mut frame = session.frame(&msgs);
    *frame.last_mut().unwrap() ^= 1;
    session.stream.write_all(&frame).unwrap();
    assert!(
        closed_within(&mut session.stream, prompt),
        "bad MAC not dropped"
    );

    // After the handshake: junk with a valid tag (undecodable messages).
    let mut session = Session::connect(m.address(), KEY.as_bytes()).unwrap();
    let frame = session.frame(&[0xff; 24]);
    session.stream.write_all(&frame).unwrap();
    assert!(
        closed_within(&mut session.stream, prompt),
        "junk messages not dropped"
    );

    still_served(&good, "q", SOON);
    wait_until(SOON, "only the good client is left", || {
        connections(&good) == 1
    });
    m.shutdown().unwrap();
}

/// A length prefix above the limit is refused before any body is read.
pub fn oversized_length_prefix_is_dropped() {
    let m = start(&[("q", 8)]);
    let good = client(&m);
    let prompt = Duration::from_secs(3);

    let mut s = raw(&m);
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert!(
        closed_within(&mut s, prompt),
        "huge hello length not dropped"
    );

    let mut s = raw(&m);
    s.write_all(&129u32.to_be_bytes()).unwrap();
    assert!(
        closed_within(&mut s, prompt),
        "hello over 128 bytes not dropped"
    );

    let mut session = Session::connect(m.address(), KEY.as_bytes()).unwrap();
    let too_big = session.server_max_frame + 1;
    session.stream.write_all(&too_big.to_be_bytes()).unwrap();
    assert!(
        closed_within(&mut session.stream, prompt),
        "oversized frame not dropped"
    );

    // The real client refuses an item over the queue's limit, and stays usable.
    let q = good.raw_queue("q").unwrap();
    let big = vec![7u8; q.max_item() + 1];
    match q.put(&big) {
        Err(e @ Error::TooLarge { .. }) => assert!(!e.to_string().is_empty()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    still_served(&good, "q", SOON);
    wait_until(SOON, "only the good client is left", || {
        connections(&good) == 1
    });
    m.shutdown().unwrap();
}

/// Writes `bytes` one a second on a thread, until the peer is gone.
fn dribble(mut s: TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for b in bytes {
            if s.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_secs(1));
        }
    })
}

/// A client that says nothing, one that dribbles its hello a byte a second, one that
/// dribbles a request a byte a second after the handshake: each dropped by its timeout.
pub fn slow_clients_are_dropped() {
    let handshake = Duration::from_millis(1500);
    let frame = Duration::from_millis(500);
    let m = builder()
        .raw_queue("q", 8)
        .timeouts(handshake, frame, Duration::from_secs(5))
        .start()
        .unwrap();
    let good = client(&m);

    // Each offender is watched on its own thread: when did the manager close it?
    let t0 = Instant::now();
    let bound = Duration::from_secs(8);
    let watch = |mut s: TcpStream| {
        thread::spawn(move || closed_within(&mut s, bound).then(|| t0.elapsed()))
    };
    let silent = watch(raw(&m));
    let slow_hello = raw(&m);
    let (hello, _) = hello_frame();
    let w1 = dribble(slow_hello.try_clone().unwrap(), hello);
    let slow_hello = watch(slow_hello);
    let mut session = Session::connect(m.address(), KEY.as_bytes()).unwrap();
    let mut msgs = Vec::new();
    session.encode_request(Op::Status, &mut msgs);
    let request = session.frame(&msgs);
    let w2 = dribble(session.stream.try_clone().unwrap(), request);
    let slow_frame = watch(session.stream);

    // Meanwhile the good client is served at full speed.
    for _ in 0..5 {
        still_served(&good, "q", Duration::from_millis(400));
        thread::sleep(Duration::from_millis(100));
    }
    let slack = Duration::from_millis(50);
    let silent = silent.join().unwrap().expect("silent client not dropped");
    assert!(
        silent + slack >= handshake,
        "silent client dropped after {silent:?}"
    );
    let slow_hello = slow_hello.join().unwrap().expect("slow hello not dropped");
    assert!(
        slow_hello + slack >= frame,
        "slow hello dropped after {slow_hello:?}"
    );
    let slow_frame = slow_frame.join().unwrap().expect("slow frame not dropped");
    assert!(
        slow_frame + slack >= frame,
        "slow frame dropped after {slow_frame:?}"
    );
    w1.join().unwrap();
    w2.join().unwrap();

    // An idle but healthy client is not dropped by any of these timeouts.
    still_served(&good, "q", SOON);
    wait_until(SOON, "only the good client is left", || {
        connections(&good) == 1
    });
    m.shutdown().unwrap();
}

/// A client that floods requests and never reads a reply is dropped once the manager's
/// output to it has stalled; others are served all along.
pub fn client_that_never_reads_is_dropped() {
    let m = builder()
        .raw_queue("q", 8)
        .timeouts(SOON, SOON, Duration::from_millis(500))
        .start()
        .unwrap();
    let good = client(&m);
    let mut session = Session::connect(m.address(), KEY.as_bytes()).unwrap();
    let handle = session.open("q");

    // Frames packed with requests, each asking for a reply (and none of them ever read).
    let per_frame = 2000;
    let mut msgs = Vec::new();
    for i in 0..per_frame {
        if i % 2 == 0 {
            session.encode_request(Op::Status, &mut msgs);
        } else {
            session.encode_request(
                Op::Get {
                    handle,
                    wait: Wait::NoWait,
                },
                &mut msgs,
            );
        }
    }
    assert!(msgs.len() + 16 < session.server_max_frame as usize);
    session
        .stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(20);
    let mut probes = 0;
    let dropped = loop {
        if Instant::now() > deadline {
            break false;
        }
        let frame = session.frame(&msgs);
        // Write the whole frame, retrying after write timeouts (the manager stopped reading).
        let mut sent = 0;
        let mut failed = false;
        while sent < frame.len() && Instant::now() < deadline {
            match session.stream.write(&frame[sent..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if probes < 20 {
                        // The manager still serves others while it is stuck with us.
                        still_served(&good, "q", Duration::from_secs(2));
                        probes += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break true;
        }
    };
    assert!(dropped, "the flooding client was not dropped within 20 s");
    assert!(probes > 0, "the flood never filled the buffers");
    wait_until(SOON, "only the good client is left", || {
        connections(&good) == 1
    });
    still_served(&good, "q", SOON);
    m.shutdown().unwrap();
}
