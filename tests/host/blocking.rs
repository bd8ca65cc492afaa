//! Blocking calls across processes: wake-ups, timeouts, join/task_done.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use depot::{Client, Error, ErrorCode};

use crate::harness::{spawn, wait_until};
use crate::{client, start, stat, KEY, SOON};

/// A `get` blocked in one process is answered by a `put` from another.
pub fn get_in_one_process_woken_by_put_from_another() {
    let m = start(&[("q", 8)]);
    let addr = m.address().to_string();
    let c = client(&m);
    let mut getter = spawn(
        "get-one",
        &["--addr", &addr, "--authkey", KEY, "--queue", "q"],
    );
    assert_eq!(getter.line(SOON), "ready");
    wait_until(SOON, "the get is parked", || stat(&c, "q").getters == 1);

    let mut putter = spawn(
        "put-one",
        &[
            "--addr",
            &addr,
            "--authkey",
            KEY,
            "--queue",
            "q",
            "--value",
            "wake up",
        ],
    );
    let woke = Instant::now();
    assert_eq!(putter.success(SOON), ["put"]);
    assert_eq!(getter.success(SOON), ["got wake up"]);
    assert!(woke.elapsed() < SOON);
    let s = stat(&c, "q");
    assert_eq!((s.len, s.getters, s.total_put, s.total_got), (0, 0, 1, 1));
    m.shutdown().unwrap();
}

fn assert_took(t0: Instant, at_least: Duration) {
    let took = t0.elapsed();
    assert!(
        took >= at_least,
        "returned after {took:?}, before its {at_least:?} timeout"
    );
    assert!(
        took < at_least + Duration::from_secs(3),
        "returned {took:?} after a {at_least:?} timeout"
    );
}

/// get/put with a timeout fail with `Timeout` when it runs out, and not before; the waiters
/// are gone afterwards; non-blocking calls fail with `Empty` / `Full`.
pub fn get_and_put_timeouts() {
    let m = start(&[("q", 1)]);
    let c = client(&m);
    let q = c.raw_queue("q").unwrap();
    let wait = Duration::from_millis(300);

    let t0 = Instant::now();
    assert!(matches!(
        q.get_timeout(wait),
        Err(Error::Request {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    assert_took(t0, wait);
    assert!(matches!(
        q.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));

    q.put(b"one").unwrap();
    let t0 = Instant::now();
    assert!(matches!(
        q.put_timeout(b"two", wait),
        Err(Error::Request {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    assert_took(t0, wait);
    assert!(matches!(
        q.put_nowait(b"two"),
        Err(Error::Request {
            code: ErrorCode::Full,
            ..
        })
    ));
    assert!(q.full().unwrap());

    let s = stat(&c, "q");
    assert_eq!(
        (s.len, s.getters, s.putters),
        (1, 0, 0),
        "waiters left behind"
    );

    // A get with a timeout that an item beats.
    let addr = m.address();
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        let c = Client::connect(addr, KEY).unwrap();
        c.raw_queue("q").unwrap().put(b"late").unwrap();
    });
    assert_eq!(q.get_timeout(SOON).unwrap(), b"one");
    let t0 = Instant::now();
    assert_eq!(q.get_timeout(SOON).unwrap(), b"late");
    assert!(t0.elapsed() < SOON);
    late.join().unwrap();
    assert_eq!(
        q.get_timeout(Duration::from_millis(1))
            .unwrap_err()
            .to_string(),
        "timed out waiting on queue 'q'"
    );
    m.shutdown().unwrap();
}

/// A child's timed get: fails with a clear message when the time runs out, succeeds when an
/// item arrives in time.
pub fn timeout_in_a_child_process() {
    let m = start(&[("q", 4)]);
    let addr = m.address().to_string();
    let args = [
        "--addr",
        &addr,
        "--authkey",
        KEY,
        "--queue",
        "q",
        "--timeout-ms",
    ];

    let mut short = spawn("get-one", &[&args[..], &["200"]].concat());
    let (status, out) = short.wait(SOON);
    assert!(!status.success());
    assert_eq!(out, ["ready"]);
    assert_eq!(
        short.stderr().trim_end(),
        Error::Request {
            code: ErrorCode::Timeout,
            object: "q".into()
        }
        .to_string()
    );

    let c = client(&m);
    let mut long = spawn("get-one", &[&args[..], &["10000"]].concat());
    assert_eq!(long.line(SOON), "ready");
    wait_until(SOON, "the get is parked", || stat(&c, "q").getters == 1);
    c.raw_queue("q").unwrap().put(b"in time").unwrap();
    assert_eq!(long.success(SOON), ["got in time"]);
    m.shutdown().unwrap();
}

/// `join` in this process waits for `task_done` calls from another process.
pub fn join_and_task_done_across_processes() {
    let m = start(&[("jobs", 16)]);
    let addr = m.address();
    let c = client(&m);
    let q = c.raw_queue("jobs").unwrap();
    q.join()
        .expect("join with nothing unfinished returns at once");
    for job in ["a", "b", "c"] {
        q.put(job.as_bytes()).unwrap();
    }
    let addr_s = addr.to_string();
    let mut worker = spawn(
        "worker",
        &[
            "--addr",
            &addr_s,
            "--authkey",
            KEY,
            "--queue",
            "jobs",
            "--count",
            "3",
        ],
    );
    assert_eq!(worker.line(SOON), "got 3");
    let s = stat(&c, "jobs");
    assert_eq!((s.len, s.unfinished), (0, 3));

    let (tx, rx) = mpsc::channel();
    let joiner = thread::spawn(move || {
        let c = Client::connect(addr, KEY).unwrap();
        let r = c.raw_queue("jobs").unwrap().join();
        let _ = tx.send(r);
    });
    wait_until(SOON, "join is parked", || stat(&c, "jobs").joiners == 1);
    assert!(rx.try_recv().is_err(), "join returned before task_done");

    worker.send_line("go");
    assert_eq!(worker.success(SOON), ["done"]);
    rx.recv_timeout(SOON)
        .expect("join returns after the last task_done")
        .expect("join succeeds");
    joiner.join().unwrap();
    let s = stat(&c, "jobs");
    assert_eq!((s.unfinished, s.joiners), (0, 0));
    assert!(matches!(
        q.task_done(),
        Err(Error::Request {
            code: ErrorCode::TaskDoneTooMany,
            ..
        })
    ));
    m.shutdown().unwrap();
}
