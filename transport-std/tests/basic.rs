//! The library over real sockets on 127.0.0.1, port 0.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, ConnectOptions, Error, ErrorCode, Manager, ManagerHandle, QueueOptions};
use serde::{Deserialize, Serialize};

const KEY: &[u8] = b"producer";

fn start() -> ManagerHandle {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 100)
        .queue_with(
            "small",
            QueueOptions {
                capacity: 2,
                max_item: 64,
                storage_bytes: None,
                mode: depot_std::QueueMode::Raw,
            },
        )
        .max_connections(64)
        .start()
        .expect("manager starts")
}

#[test]
fn connect_put_get() {
    let m = start();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("task_queue").unwrap();
    assert_eq!(q.name(), "task_queue");
    assert_eq!(q.capacity(), 100);
    assert!(q.empty().unwrap());
    q.put(b"hello").unwrap();
    q.put_nowait(b"world").unwrap();
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get().unwrap(), b"hello");
    assert_eq!(q.get_nowait().unwrap(), b"world");
    assert!(matches!(
        q.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));
    assert_eq!(c.peer_addr(), m.address());
    m.shutdown().unwrap();
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Task {
    id: u32,
    name: String,
    weights: Vec<f32>,
}

#[test]
fn typed_round_trip() {
    let m = start();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.queue::<Task>("task_queue").unwrap();
    let task = Task {
        id: 7,
        name: "seven".into(),
        weights: vec![0.5, 1.5],
    };
    q.put(&task).unwrap();
    assert_eq!(q.get().unwrap(), task);
    let ints = c.queue::<u64>("task_queue").unwrap();
    ints.put_many(&[1, 2, 3]).unwrap();
    let got: Vec<u64> = ints
        .get_many(3)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    // Bytes that are not a value (the queue is raw) are a decode error holding the item.
    c.raw_queue("task_queue").unwrap().put(&[0xff; 3]).unwrap();
    match q.get() {
        Err(Error::Decode { item, error }) => {
            assert_eq!(item, [0xff; 3]);
            assert_eq!(*error, depot_core::value::ValueError::Malformed);
        }
        other => panic!("{other:?}"),
    }
    // A value of another type says what it found.
    ints.put(&5).unwrap();
    let err = q.get().unwrap_err().to_string();
    assert!(err.contains("invalid type: integer `5`"), "{err}");
    // In a typed batch the item that is not a value is an error holding its bytes; the
    // items around it decode.
    let raw = c.raw_queue("task_queue").unwrap();
    raw.put_many(&[&[0x01], &[0xff, 0xfe], &[0x02]]).unwrap();
    let got = ints.get_many(3).unwrap();
    assert!(matches!(got[0], Ok(1)), "{got:?}");
    assert!(matches!(&got[1], Err(Error::Decode { item, .. }) if item == &[0xff, 0xfe]));
    assert!(matches!(got[2], Ok(2)), "{got:?}");
    m.shutdown().unwrap();
}

#[test]
fn blocking_get_woken_by_put_from_another_client() {
    let m = start();
    let addr = m.address();
    let getter = thread::spawn(move || {
        let c = Client::connect(addr, KEY).unwrap();
        let q = c.raw_queue("task_queue").unwrap();
        q.get().unwrap()
    });
    thread::sleep(Duration::from_millis(100));
    let c = Client::connect(addr, KEY).unwrap();
    let q = c.raw_queue("task_queue").unwrap();
    q.put(b"wake up").unwrap();
    assert_eq!(getter.join().unwrap(), b"wake up");
    m.shutdown().unwrap();
}

#[test]
fn timeouts() {
    let m = start();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("small").unwrap();
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(150)),
        Err(Error::Request {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(140), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    q.put(b"1").unwrap();
    q.put(b"2").unwrap();
    assert!(q.full().unwrap());
    assert!(matches!(
        q.put_nowait(b"3"),
        Err(Error::Request {
            code: ErrorCode::Full,
            ..
        })
    ));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(b"3", Duration::from_millis(150)),
        Err(Error::Request {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    assert!(t.elapsed() >= Duration::from_millis(140));
    // A timed get that is answered in time.
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), b"1");
    m.shutdown().unwrap();
}

#[test]
fn user_facing_errors() {
    let m = start();
    let addr = m.address();
    let e = Client::connect(addr, b"wrong key").unwrap_err();
    assert!(matches!(e, Error::AuthFailed { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("authentication failed: wrong authkey for {addr}")
    );
    let c = Client::connect(addr, KEY).unwrap();
    let e = c.raw_queue("x").unwrap_err();
    assert_eq!(e.to_string(), "queue 'x' does not exist");
    let q = c.raw_queue("small").unwrap();
    let e = q.put(&[0; 65]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { size: 65, max: 64 }), "{e:?}");
    assert!(matches!(
        q.task_done(),
        Err(Error::Request {
            code: ErrorCode::TaskDoneTooMany,
            ..
        })
    ));
    assert!(matches!(
        c.create_queue("new", 1, 1),
        Err(Error::Request {
            code: ErrorCode::NotAllowed,
            ..
        })
    ));
    m.shutdown().unwrap();
    // Nothing listens there any more.
    let e = Client::connect(addr, KEY).unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("connection refused: nothing is listening on {addr}")
    );
}

#[test]
fn threads_share_one_client() {
    let m = start();
    // Producers share one client and consumers another (tests/shared.rs has them share one).
    let producers = Arc::new(Client::connect(m.address(), KEY).unwrap());
    let c = Arc::new(Client::connect(m.address(), KEY).unwrap());
    let per_thread = 500;
    let mut handles = Vec::new();
    for t in 0..4u32 {
        let c = producers.clone();
        handles.push(thread::spawn(move || {
            let q = c.raw_queue("task_queue").unwrap();
            for i in 0..per_thread {
                q.put(&(t * 100_000 + i).to_le_bytes()).unwrap();
            }
        }));
    }
    let mut got = Vec::new();
    let getters: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || {
                let q = c.raw_queue("task_queue").unwrap();
                (0..per_thread)
                    .map(|_| u32::from_le_bytes(q.get().unwrap().try_into().unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for g in getters {
        got.extend(g.join().unwrap());
    }
    got.sort();
    let mut want: Vec<u32> = (0..4)
        .flat_map(|t| (0..per_thread).map(move |i| t * 100_000 + i))
        .collect();
    want.sort();
    assert_eq!(got, want);
    m.shutdown().unwrap();
}

#[test]
fn shutdown_answers_blocked_getter() {
    let m = start();
    let addr = m.address();
    let getter = thread::spawn(move || {
        let c = Client::connect(addr, KEY).unwrap();
        let q = c.raw_queue("task_queue").unwrap();
        let first = q.get();
        (first, q.get_nowait())
    });
    thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    m.shutdown().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    let (first, second) = getter.join().unwrap();
    assert!(
        matches!(
            first,
            Err(Error::Request {
                code: ErrorCode::ShuttingDown,
                ..
            } | Error::Disconnected { .. })
        ),
        "{first:?}"
    );
    assert!(second.is_err());
}

#[test]
fn remote_shutdown() {
    let refused = start();
    let c = Client::connect(refused.address(), KEY).unwrap();
    assert!(matches!(
        c.shutdown_manager(),
        Err(Error::Request {
            code: ErrorCode::NotAllowed,
            ..
        })
    ));
    // Still serving.
    c.raw_queue("task_queue").unwrap().put(b"x").unwrap();
    refused.shutdown().unwrap();

    let allowed = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 10)
        .allow_remote_shutdown(true)
        .max_connections(8)
        .start()
        .unwrap();
    let addr = allowed.address();
    let c = Client::connect(addr, KEY).unwrap();
    let idle = Client::connect(addr, KEY).unwrap();
    c.shutdown_manager().unwrap();
    let t = Instant::now();
    allowed.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(idle.status().is_err());
    assert!(Client::connect(addr, KEY).is_err());
}

/// Items of 1 KiB: a `GetMany` reply carries about 60 of them, so `get_many` keeps several
/// requests in flight; the items still come out in queue order, each exactly once.
#[test]
fn get_many_of_large_items_keeps_order() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue_with(
            "large",
            QueueOptions {
                capacity: 5000,
                max_item: 1024,
                storage_bytes: None,
                mode: depot_std::QueueMode::Raw,
            },
        )
        .max_connections(16)
        .start()
        .unwrap();
    let addr = m.address();
    let n = 3000u32;
    let item = |i: u32| {
        let mut bytes = vec![(i % 251) as u8; 1024];
        bytes[..4].copy_from_slice(&i.to_le_bytes());
        bytes
    };
    let producer = thread::spawn(move || {
        let c = Client::connect(addr, KEY).unwrap();
        let q = c.raw_queue("large").unwrap();
        // In several calls, so the consumer also finds the queue empty at times.
        for chunk in (0..n).collect::<Vec<_>>().chunks(700) {
            let items: Vec<Vec<u8>> = chunk.iter().map(|&i| item(i)).collect();
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            q.put_many(&refs).unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    });
    let c = Client::connect(addr, KEY).unwrap();
    let q = c.raw_queue("large").unwrap();
    let mut got = Vec::new();
    while got.len() < n as usize {
        let want = (n as usize - got.len()).min(1000);
        got.extend(q.get_many(want).unwrap());
    }
    producer.join().unwrap();
    assert_eq!(got.len(), n as usize);
    for (i, bytes) in got.iter().enumerate() {
        assert_eq!(bytes, &item(i as u32), "item {i}");
    }
    assert!(matches!(
        q.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));
}

/// `get_batch` and `get_many` take the same items in the same order, whatever their sizes
/// (lengths on both sides of a one-byte varint, empty items, a reply's worth and more).
#[test]
fn get_batch_takes_what_get_many_takes() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue_with(
            "mixed",
            QueueOptions {
                capacity: 4000,
                max_item: 2048,
                storage_bytes: None,
                mode: depot_std::QueueMode::Raw,
            },
        )
        .start()
        .unwrap();
    let item = |i: usize| -> Vec<u8> {
        let len = [0, 1, 127, 128, 300, 2048][i % 6];
        (0..len).map(|j| (i + j) as u8).collect()
    };
    let n = 3000;
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("mixed").unwrap();
    let items: Vec<Vec<u8>> = (0..n).map(item).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    q.put_many(&refs).unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut calls = 0;
    while got.len() < n {
        let want = (n - got.len()).min(700);
        if calls % 2 == 0 {
            let batch = q.get_batch(want).unwrap();
            assert_eq!(batch.len(), batch.iter().count());
            got.extend(batch.iter().map(<[u8]>::to_vec));
        } else {
            got.extend(q.get_many(want).unwrap());
        }
        calls += 1;
    }
    assert_eq!(got, items);
    assert!(matches!(
        q.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));
}

#[test]
fn put_many_get_many_exactly_once() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue_with(
            "bulk",
            QueueOptions {
                capacity: 1000,
                max_item: 64,
                storage_bytes: None,
                mode: depot_std::QueueMode::Raw,
            },
        )
        .max_connections(16)
        .start()
        .unwrap();
    let addr = m.address();
    let n = 10_000u32;
    let producer = thread::spawn(move || {
        let c = Client::connect(addr, KEY).unwrap();
        let q = c.raw_queue("bulk").unwrap();
        let items: Vec<[u8; 4]> = (0..n).map(u32::to_le_bytes).collect();
        let refs: Vec<&[u8]> = items.iter().map(|i| &i[..]).collect();
        q.put_many(&refs).unwrap();
    });
    let c = Client::connect(addr, KEY).unwrap();
    let q = c.raw_queue("bulk").unwrap();
    let got = q.get_many(n as usize).unwrap();
    producer.join().unwrap();
    let got: Vec<u32> = got
        .iter()
        .map(|b| u32::from_le_bytes(b[..].try_into().unwrap()))
        .collect();
    // One producer: FIFO order, every item exactly once.
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert!(matches!(
        q.get_nowait(),
        Err(Error::Request {
            code: ErrorCode::Empty,
            ..
        })
    ));
    let stat = c.stat().unwrap();
    assert_eq!(stat.len(), 1);
    assert_eq!(stat[0].total_put, u64::from(n));
    assert_eq!(stat[0].total_got, u64::from(n));
    m.shutdown().unwrap();
}

/// Busy polling is a matter of speed only: a manager and clients that sleep at once serve
/// the same calls, and a client that busy-polls far longer than a reply takes still gets a
/// reply that comes after its polling gave up (from its blocking read).
#[test]
fn busy_poll_on_or_off_serves_the_same() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .raw_queue("task_queue", 100)
        .busy_poll(Duration::ZERO)
        .start()
        .unwrap();
    let sleeping = ConnectOptions::new().busy_poll(Duration::ZERO);
    let polling = ConnectOptions::new().busy_poll(Duration::from_millis(20));
    let producer = Client::connect_with(m.address(), KEY, &sleeping).unwrap();
    let consumer = Client::connect_with(m.address(), KEY, &polling).unwrap();
    let pq = producer.raw_queue("task_queue").unwrap();
    let cq = consumer.raw_queue("task_queue").unwrap();
    for i in 0..100u32 {
        pq.put(&i.to_le_bytes()).unwrap();
        assert_eq!(cq.get().unwrap(), i.to_le_bytes());
    }
    // The get blocks well past the consumer's 20 ms of polling before the put comes.
    let waiting = thread::spawn(move || cq.get().unwrap());
    thread::sleep(Duration::from_millis(200));
    pq.put(b"late").unwrap();
    assert_eq!(waiting.join().unwrap(), b"late");
}
