//! Stopping a manager: by a client (allowed or not) and gracefully with blocked clients.

use std::sync::mpsc;
use std::thread;

use depot::{Client, Error, ErrorCode};

use crate::harness::{spawn, wait_until};
use crate::{builder, client, start, stat, KEY, SOON};

/// With remote shutdown allowed, a client's request stops the manager; later connects are
/// refused.
pub fn remote_shutdown_allowed() {
    let m = builder()
        .raw_queue("q", 4)
        .allow_remote_shutdown(true)
        .start()
        .unwrap();
    let addr = m.address();
    let (tx, rx) = mpsc::channel();
    let joiner = thread::spawn(move || {
        let _ = tx.send(m.join());
    });
    let mut close = spawn("close", &["--addr", &addr.to_string(), "--authkey", KEY]);
    close.success(SOON);
    rx.recv_timeout(SOON)
        .expect("the manager stops after a remote shutdown")
        .expect("join succeeds");
    joiner.join().unwrap();
    match Client::connect(addr, KEY) {
        Err(e @ Error::Refused { .. }) => {
            assert!(e.to_string().contains(&addr.to_string()), "{e}")
        }
        Err(e) => panic!("expected Refused, got {e:?}"),
        Ok(_) => panic!("the manager still accepts connections"),
    }
}

/// Without permission the request fails with `NotAllowed` and the manager keeps serving.
pub fn remote_shutdown_refused() {
    let m = start(&[("q", 4)]);
    let c = client(&m);
    assert!(matches!(
        c.shutdown_manager(),
        Err(Error::Request {
            code: ErrorCode::NotAllowed,
            ..
        })
    ));
    let mut close = spawn(
        "close",
        &["--addr", &m.address().to_string(), "--authkey", KEY],
    );
    let (status, _) = close.wait(SOON);
    assert!(!status.success());
    assert_eq!(
        close.stderr().trim_end(),
        format!(
            "close: {}",
            Error::Request {
                code: ErrorCode::NotAllowed,
                object: "close".to_owned(),
            }
        )
    );
    let q = c.raw_queue("q").unwrap();
    q.put(b"still here").unwrap();
    assert_eq!(q.get().unwrap(), b"still here");
    m.shutdown().unwrap();
}

/// `shutdown()` with getters and putters blocked (in this process and in children): each is
/// answered `ShuttingDown`, and shutdown returns.
pub fn graceful_shutdown_with_blocked_clients() {
    let m = start(&[("empty", 4), ("full", 1)]);
    let addr = m.address();
    let c = client(&m);
    c.raw_queue("full").unwrap().put(b"x").unwrap();
    let a = addr.to_string();
    let common = ["--addr", a.as_str(), "--authkey", KEY];
    let mut getter = spawn("get-one", &[&common[..], &["--queue", "empty"]].concat());
    let mut putter = spawn(
        "put-one",
        &[&common[..], &["--queue", "full", "--value", "y"]].concat(),
    );
    let (tx, rx) = mpsc::channel();
    let local = thread::spawn(move || {
        let c = Client::connect(addr, KEY).unwrap();
        let r = c.raw_queue("empty").unwrap().get();
        let _ = tx.send(r);
    });
    wait_until(SOON, "all three are parked", || {
        stat(&c, "empty").getters == 2 && stat(&c, "full").putters == 1
    });

    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(m.shutdown());
    });
    done_rx
        .recv_timeout(SOON)
        .expect("shutdown returns")
        .expect("shutdown succeeds");
    match rx.recv_timeout(SOON).expect("the blocked get is answered") {
        Err(Error::Request {
            code: ErrorCode::ShuttingDown,
            ..
        }) => {}
        other => panic!("expected ShuttingDown, got {other:?}"),
    }
    local.join().unwrap();
    let expected = Error::Request {
        code: ErrorCode::ShuttingDown,
        object: String::new(),
    }
    .to_string();
    for child in [&mut getter, &mut putter] {
        let (status, _) = child.wait(SOON);
        assert!(!status.success());
        assert_eq!(child.stderr().trim_end(), expected);
    }
    assert!(matches!(
        Client::connect(addr, KEY),
        Err(Error::Refused { .. })
    ));
}
