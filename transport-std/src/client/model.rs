//! Model checking of the shared client's threads with shuttle (`--cfg shuttle`; tests/all runs
//! them). Threads share one [`Client`] over an in-memory socket (`crate::sync::pipe`) whose far
//! end is served by the real core manager on a thread of its own; shuttle runs each scenario
//! under many schedules of those threads, and fails on a deadlock (some caller never woken), a
//! panic or a wrong answer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use depot_core::wire::{ErrorCode, QueueMode, QueueSpec, NONCE_LEN};
use depot_core::{
    Connection, Instant, Manager, ManagerConfig, ObjectSlot, ParkStore, Resources, Waiter,
};
use shuttle::thread;

use super::{conn, Backend, Client};
use crate::sync::pipe::{self, Stream};
use crate::Error;

const KEY: &[u8] = b"model";
/// Schedules explored per scenario, by each of the two schedulers (about a minute in all).
const SCHEDULES: usize = 1500;

fn manager() -> Manager<'static> {
    let spec = QueueSpec {
        capacity: 4,
        max_item: 64,
        mode: QueueMode::Raw,
    };
    let queue = |name| ObjectSlot::queue(name, spec, vec![0u8; 512]).unwrap();
    let resources = Resources {
        objects: vec![queue("a"), queue("b")].into(),
        connections: vec![Connection::owned(16 << 10, 16 << 10)].into(),
        waiters: vec![Waiter::EMPTY; 16].into(),
        parked: ParkStore::heap(4096),
    };
    Manager::new(ManagerConfig::default(), KEY, resources)
}

/// Serves one connection as the host event loop does, until either side ends it. With
/// `stop_at`, the manager shuts down (as `ManagerHandle::stop` asks it to) once that many
/// requests are blocked.
fn serve(mut m: Manager<'static>, mut end: Stream, stop_at: Option<u32>) {
    let now = Instant::ZERO;
    let id = m.accept(now, [7; NONCE_LEN], &[]).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        loop {
            let out = m.poll_transmit(id);
            let n = out.len();
            if n == 0 {
                break;
            }
            if end.write_all(out).is_err() {
                m.handle_close(id, now);
                return;
            }
            m.handle_transmitted(id, now, n);
        }
        if m.wants_close(id) {
            let _ = end.shutdown(Shutdown::Both);
            m.handle_close(id, now);
            return;
        }
        let n = end.read(&mut buf).unwrap_or(0);
        if n == 0 {
            m.handle_close(id, now);
            return;
        }
        let taken = m.handle_input(id, now, &buf[..n]);
        // The scenarios' requests are tiny: the core always has room for them.
        assert_eq!(taken, n);
        if stop_at.is_some_and(|k| m.status().waiters >= k) && !m.is_shutting_down() {
            m.shutdown(now);
        }
    }
}

/// A manager on its own thread and a client connected to it.
fn start(stop_at: Option<u32>) -> (Client, Stream, thread::JoinHandle<()>) {
    let (near, far) = pipe::pair();
    let far2 = far.try_clone().unwrap();
    let server = thread::spawn(move || serve(manager(), far, stop_at));
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 5000));
    let conn = conn::Conn::over(
        near,
        peer,
        depot_core::KeyName::DEFAULT,
        KEY,
        Duration::from_secs(600),
        std::time::Instant::now(),
        // The model is about the client's threads; sealing (slow in a debug build) changes
        // nothing in how they meet.
        depot_core::Encryption::Off,
    )
    .unwrap();
    let client = Client {
        conn: Arc::new(Backend::Depot(conn)),
    };
    (client, far2, server)
}

/// Runs `scenario` under the random and the PCT scheduler.
fn check(scenario: fn()) {
    use shuttle::scheduler::{PctScheduler, RandomScheduler};
    // The core's client and manager keep their session state inline: more stack than
    // shuttle's default.
    let config = || {
        let mut config = shuttle::Config::new();
        config.stack_size = 256 << 10;
        config
    };
    shuttle::Runner::new(RandomScheduler::new(SCHEDULES), config()).run(scenario);
    shuttle::Runner::new(PctScheduler::new(3, SCHEDULES), config()).run(scenario);
}

fn is_shutdown(e: &Error) -> bool {
    e.is_connection_lost() || e.code() == Some(ErrorCode::ShuttingDown)
}

/// Callers on three threads pipeline requests on one connection: each gets its own reply,
/// a blocked get is woken by another thread's put, and the connection ends once the last
/// clone is dropped.
#[test]
fn threads_get_their_own_replies() {
    check(|| {
        let (client, _, server) = start(None);
        let a = client.raw_queue("a").unwrap();
        let b = client.raw_queue("b").unwrap();
        let producer = {
            let a = a.clone();
            thread::spawn(move || {
                a.put(b"a1").unwrap();
                a.put(b"a2").unwrap();
            })
        };
        let other = {
            let b = b.clone();
            let client = client.clone();
            thread::spawn(move || {
                b.put(b"b1").unwrap();
                let len = b.qsize().unwrap();
                (len, client.status().unwrap().waiters)
            })
        };
        assert_eq!(a.get().unwrap(), b"a1");
        assert_eq!(a.get().unwrap(), b"a2");
        producer.join().unwrap();
        let (len, waiters) = other.join().unwrap();
        assert_eq!(len, 1);
        assert!(waiters <= 1);
        assert_eq!(b.get_nowait().unwrap(), b"b1");
        assert_eq!(a.get_nowait().unwrap_err().code(), Some(ErrorCode::Empty));
        drop((a, b, client));
        server.join().unwrap();
    });
}

/// The manager stops while two callers are blocked and a third is mid-put: every caller is
/// answered (none waits for ever), and later calls fail at once.
#[test]
fn stop_answers_every_blocked_caller() {
    check(|| {
        let (client, _, server) = start(Some(2));
        let a = client.raw_queue("a").unwrap();
        let b = client.raw_queue("b").unwrap();
        let getters: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                thread::spawn(move || a.get())
            })
            .collect();
        let putter = thread::spawn(move || b.put(b"x"));
        for g in getters {
            let e = g.join().unwrap().unwrap_err();
            assert!(is_shutdown(&e), "{e:?}");
        }
        if let Err(e) = putter.join().unwrap() {
            assert!(is_shutdown(&e), "{e:?}");
        }
        assert!(is_shutdown(&a.get_nowait().unwrap_err()));
        server.join().unwrap();
    });
}

/// The connection is lost at any point while callers read, write and wait: each returns,
/// an item got is the one put, and later calls fail at once.
#[test]
fn lost_connection_wakes_every_caller() {
    check(|| {
        let (client, far, server) = start(None);
        let a = client.raw_queue("a").unwrap();
        let getter = {
            let a = a.clone();
            thread::spawn(move || a.get())
        };
        let putter = {
            let a = a.clone();
            thread::spawn(move || a.put(b"x"))
        };
        let cut = thread::spawn(move || far.shutdown(Shutdown::Both).unwrap());
        cut.join().unwrap();
        match getter.join().unwrap() {
            Ok(item) => assert_eq!(item, b"x"),
            Err(e) => assert!(e.is_connection_lost(), "{e:?}"),
        }
        if let Err(e) = putter.join().unwrap() {
            assert!(e.is_connection_lost(), "{e:?}");
        }
        assert!(a.get_nowait().unwrap_err().is_connection_lost());
        server.join().unwrap();
    });
}
