//! A started manager's handle: stopping it from any thread, watching it end, and reading its
//! metrics, over real sockets on 127.0.0.1.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode, Manager, ManagerHandle, Metrics};

const KEY: &[u8] = b"lifecycle";
const SOON: Duration = Duration::from_secs(10);

fn start(max_connections: usize) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("jobs", 8)
        .raw_queue("idle", 4)
        .max_connections(max_connections)
        .start()
        .expect("manager starts")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ManagerHandle>();
    check::<Arc<ManagerHandle>>();
}

#[test]
fn stop_from_another_thread_answers_blocked_getters() {
    let m = Arc::new(start(64));
    let addr = m.address();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            // One connection each, so every get is really parked in the manager.
            let c = Client::connect(addr, KEY).unwrap();
            thread::spawn(move || c.raw_queue("idle").unwrap().get())
        })
        .collect();
    let watcher = Client::connect(addr, KEY).unwrap();
    watcher
        .raw_queue("jobs")
        .unwrap()
        .put(b"left behind")
        .unwrap();
    wait_until("three getters are parked", || {
        watcher.status().unwrap().waiters == 3
    });
    assert!(!m.is_finished());

    let stopper = {
        let m = m.clone();
        thread::spawn(move || m.stop())
    };
    stopper.join().unwrap().expect("stop succeeds");
    for g in getters {
        match g.join().unwrap() {
            Err(Error::Request {
                code: ErrorCode::ShuttingDown,
                ..
            }) => {}
            other => panic!("a blocked get ended with {other:?}, not ShuttingDown"),
        }
    }
    m.join().expect("the manager ends well");
    assert!(m.is_finished());
    // Joining or stopping again is harmless and tells the same.
    m.join().expect("a second join");
    m.stop().expect("a late stop");
    assert!(matches!(
        Client::connect(addr, KEY),
        Err(Error::Refused { .. })
    ));
    // The final snapshot: nothing open, the item still counted as queued.
    let last = m.metrics().expect("the final snapshot");
    assert!(last.shutting_down);
    assert_eq!(last.connections, 0);
    assert_eq!(last.waiters, 0);
    assert_eq!(last.queued_items(), 1);
}

#[test]
fn concurrent_joins_after_a_remote_shutdown() {
    let m = Arc::new(
        Manager::builder()
            .listen("127.0.0.1:0")
            .authkey(KEY)
            .queue("q", 1)
            .allow_remote_shutdown(true)
            .start()
            .unwrap(),
    );
    let joiners: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            thread::spawn(move || m.join())
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    assert!(!m.is_finished());
    Client::connect(m.address(), KEY)
        .unwrap()
        .shutdown_manager()
        .unwrap();
    for j in joiners {
        j.join().unwrap().expect("every joiner sees a clean end");
    }
    assert!(m.is_finished());
}

fn metrics_when(m: &ManagerHandle, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = None;
    wait_until(what, || {
        let now = m.metrics().unwrap();
        let ok = cond(&now);
        last = Some(now);
        ok
    });
    last.unwrap()
}

#[test]
fn metrics_follow_the_manager() {
    let m = start(3);
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.raw_queue("jobs").unwrap();
    for i in 0..5u8 {
        jobs.put(&[i; 10]).unwrap();
    }
    jobs.get().unwrap();

    let before = m.metrics().unwrap();
    assert_eq!(
        before.queues,
        c.stat().unwrap(),
        "the same numbers as a client's stat"
    );
    let status = c.status().unwrap();
    assert_eq!(before.connections, status.connections);
    assert_eq!(before.max_connections, 3);
    let jobs_now = &before.queues[0];
    assert_eq!(
        (jobs_now.len, jobs_now.total_put, jobs_now.total_got),
        (4, 5, 1)
    );
    assert_eq!(before.queued_items(), 4);
    assert_eq!(before.counters.accepted, 1);
    assert!(before.counters.bytes_in > 50 && before.counters.bytes_out > 10);
    assert!(!before.shutting_down);

    // A wrong key is counted once the manager closes that connection.
    assert!(matches!(
        Client::connect(m.address(), b"wrong"),
        Err(Error::AuthFailed { .. })
    ));
    metrics_when(&m, "the auth failure is counted", |x| {
        x.counters.auth_failures == 1 && x.connections == 1
    });

    // Every slot taken: the next connection is refused and counted.
    let _second = Client::connect(m.address(), KEY).unwrap();
    let _third = Client::connect(m.address(), KEY).unwrap();
    assert!(Client::connect_timeout(m.address(), KEY, SOON).is_err());
    let after = metrics_when(&m, "the refusal is counted", |x| {
        x.counters.refused_busy == 1
    });
    assert_eq!(after.connections, 3);
    assert_eq!(after.counters.accepted, 4);
    assert!(after.counters.bytes_in > before.counters.bytes_in);
    assert!(after.counters.bytes_out > before.counters.bytes_out);
    m.shutdown().unwrap();
}
