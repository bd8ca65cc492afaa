//! Owned handles over real sockets: proxies moved into threads, one client cloned across
//! threads, and the consumer iterator.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use depot_std::{Client, Error, ErrorCode, Manager, ManagerHandle};

const KEY: &[u8] = b"producer";

fn start(capacity: u32) -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("q", capacity)
        .start()
        .expect("manager starts")
}

#[test]
fn a_queue_moves_into_a_thread() {
    let m = start(100);
    let client = Client::connect(m.address(), KEY).unwrap();
    let queue = client.queue::<String>("q").unwrap();
    // The proxy outlives the client handle it came from: it holds its own clone.
    drop(client);
    let producer = {
        let queue = queue.clone();
        thread::spawn(move || {
            for i in 0..10 {
                queue.put(&format!("item {i}")).unwrap();
            }
        })
    };
    let consumer = thread::spawn(move || (0..10).map(|_| queue.get().unwrap()).collect());
    producer.join().unwrap();
    let got: Vec<String> = consumer.join().unwrap();
    let want: Vec<String> = (0..10).map(|i| format!("item {i}")).collect();
    assert_eq!(got, want);
    m.shutdown().unwrap();
}

#[test]
fn clones_of_one_client_on_8_threads_deliver_every_item_once() {
    const ITEMS: u64 = 100_000;
    const PRODUCERS: u64 = 4;
    const CONSUMERS: u64 = 4;
    let m = start(1_000);
    let client = Client::connect(m.address(), KEY).unwrap();
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let client = client.clone();
        threads.push(thread::spawn(move || {
            let q = client.queue::<u64>("q").unwrap();
            for i in (p..ITEMS).step_by(PRODUCERS as usize) {
                q.put(&i).unwrap();
            }
            Vec::new()
        }));
    }
    for _ in 0..CONSUMERS {
        let client = client.clone();
        threads.push(thread::spawn(move || {
            let q = client.queue::<u64>("q").unwrap();
            (0..ITEMS / CONSUMERS)
                .map(|_| q.get().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let got: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(got.len() as u64, ITEMS);
    assert_eq!(got.iter().sum::<u64>(), ITEMS * (ITEMS - 1) / 2);
    let mut seen = vec![false; ITEMS as usize];
    for i in got {
        assert!(!std::mem::replace(&mut seen[i as usize], true), "{i} twice");
    }
    // One connection served all eight threads.
    assert_eq!(client.status().unwrap().connections, 1);
    assert_eq!(client.raw_queue("q").unwrap().qsize().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn iter_ends_with_the_error_when_the_manager_stops() {
    let m = start(100);
    let client = Client::connect(m.address(), KEY).unwrap();
    let queue = client.queue::<u32>("q").unwrap();
    let (tx, rx) = mpsc::channel();
    let consumer = {
        let queue = queue.clone();
        thread::spawn(move || {
            let mut seen = Vec::new();
            for item in queue.iter() {
                let stop = item.is_err();
                seen.push(item);
                if !stop {
                    let _ = tx.send(());
                }
            }
            seen
        })
    };
    for i in 1..=3 {
        queue.put(&i).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    // The consumer is now blocked in its fourth get.
    m.stop().unwrap();
    m.join().unwrap();
    let seen = consumer.join().unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let ok: Vec<u32> = seen[..3].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(ok, [1, 2, 3]);
    let last = seen[3].as_ref().unwrap_err();
    assert!(last.is_connection_lost(), "{last:?}");
    assert!(
        matches!(
            last,
            Error::Request {
                code: ErrorCode::ShuttingDown,
                ..
            } | Error::Disconnected { .. }
        ),
        "{last:?}"
    );
    // Later calls on the same client fail alike rather than hang.
    assert!(queue.get().unwrap_err().is_connection_lost());
}

#[test]
fn request_errors_name_their_queue() {
    let m = start(1);
    let client = Client::connect(m.address(), KEY).unwrap();
    let e = client.raw_queue("nope").unwrap_err();
    assert!(matches!(
        &e,
        Error::Request { code: ErrorCode::NoSuchObject, object } if object == "nope"
    ));
    assert_eq!(e.to_string(), "queue 'nope' does not exist");
    assert_eq!(e.code(), Some(ErrorCode::NoSuchObject));
    assert!(!e.is_connection_lost());
    let q = client.raw_queue("q").unwrap();
    q.put(b"x").unwrap();
    let full = q.put_nowait(b"y").unwrap_err();
    assert_eq!(full.to_string(), "queue 'q' is full");
    assert_eq!(q.get().unwrap(), b"x");
    let empty = q.get_nowait().unwrap_err();
    assert_eq!(empty.code(), Some(ErrorCode::Empty));
    assert_eq!(empty.to_string(), "queue 'q' is empty");
    m.shutdown().unwrap();
}

#[test]
fn a_full_registry_is_a_typed_request_error() {
    let opts = depot_std::QueueOptions::new(4);
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("q", 1)
        .allow_create(1, opts)
        .start()
        .unwrap();
    let client = Client::connect(m.address(), KEY).unwrap();
    client.create_queue("one", 4, 64).unwrap();
    let e = client.create_queue("two", 4, 64).unwrap_err();
    assert!(matches!(
        &e,
        Error::Request { code: ErrorCode::ObjectLimit, object } if object == "two"
    ));
    assert_eq!(
        e.to_string(),
        "the manager has no room for another queue (creating queue 'two')"
    );
    // The connection is still usable.
    assert_eq!(client.raw_queue("one").unwrap().qsize().unwrap(), 0);
    m.shutdown().unwrap();
}
