//! The seed scenario and the manager's behaviour, re-enacted on the in-memory harness.
#![allow(clippy::field_reassign_with_default)]

mod harness;

use depot_core::client::{ClientConfig, SendError};
use depot_core::manager::encode_busy;
use depot_core::wire::{CloseReason, ErrorCode, Op, QueueSpec, Wait};
use depot_core::*;
use harness::*;

fn item(n: u32) -> Vec<u8> {
    format!("item-{n}").into_bytes()
}

/// Producer puts, consumer gets; a blocked `get` is woken by a `put`.
#[test]
fn producer_consumer_blocking_get() {
    let mut p = Pair::with_default();
    let producer = p.connect();
    let consumer = p.connect();
    let q = p.open(producer, "task_queue");
    assert_eq!(p.open(consumer, "task_queue"), q);

    // The consumer blocks: no reply until something is put.
    let g = p.get(consumer, q, Wait::Forever);
    p.pump();
    assert_eq!(p.take(consumer, g), None);
    assert_eq!(p.stat(0).getters, 1);
    // A long time passes: a Forever get does not time out.
    p.advance(3_600_000);
    assert_eq!(p.take(consumer, g), None);

    let put = p.put(producer, q, b"7", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(producer, put), Some(Owned::Done));
    assert_eq!(p.take(consumer, g), Some(Owned::Item(b"7".to_vec())));
    assert_eq!(p.stat(0).getters, 0);

    // The seed loop: the producer puts 1..10, the consumer gets them in order.
    for n in 1..=10 {
        let id = p.put(producer, q, &item(n), Wait::Forever);
        p.pump();
        assert_eq!(p.take(producer, id), Some(Owned::Done));
    }
    for n in 1..=10 {
        assert_eq!(
            p.call(
                consumer,
                Op::Get {
                    handle: q,
                    wait: Wait::Forever
                }
            ),
            Owned::Item(item(n))
        );
    }
    let s = p.stat(0);
    assert_eq!((s.len, s.total_put, s.total_got), (0, 11, 11));
}

/// A `get` with a timeout expires on the clock's first tick past its time (the request came
/// part-way through the tick it arrived in), and not a millisecond before.
#[test]
fn get_timeout_expires_on_the_clock() {
    let mut p = Pair::with_default();
    let c = p.connect();
    let q = p.open(c, "task_queue");
    let g = p.get(c, q, Wait::Millis(500));
    p.pump();
    p.advance(500);
    assert_eq!(p.take(c, g), None, "timed out early");
    p.advance(1);
    assert_eq!(p.take(c, g), Some(Owned::Error(ErrorCode::Timeout)));
    assert_eq!(p.stat(0).getters, 0);
    assert_eq!(p.m.status().waiters, 0);
    // Wait::Millis(0) and NoWait answer at once.
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: q,
                wait: Wait::Millis(0)
            }
        ),
        Owned::Error(ErrorCode::Timeout)
    );
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Empty)
    );
    // A timed get that an item reaches in time gets the item.
    let g = p.get(c, q, Wait::Millis(1000));
    p.advance(999);
    let producer = p.connect();
    let put = p.put(producer, q, b"just in time", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(producer, put), Some(Owned::Done));
    assert_eq!(p.take(c, g), Some(Owned::Item(b"just in time".to_vec())));
    p.advance(10_000);
    assert!(p.closed(c).is_none());
}

/// A consumer that disconnects while blocked loses its waiter and nothing else: the item put
/// later goes to the next consumer.
#[test]
fn disconnect_while_blocked_cancels_waiter() {
    let mut p = Pair::with_default();
    let producer = p.connect();
    let gone = p.connect();
    let stays = p.connect();
    let q = p.open(producer, "task_queue");
    let g1 = p.get(gone, q, Wait::Forever);
    p.pump();
    let g2 = p.get(stays, q, Wait::Forever);
    p.pump();
    assert_eq!(p.stat(0).getters, 2);
    p.disconnect(gone);
    assert_eq!(p.closed(gone), Some(Error::Disconnected));
    assert_eq!(p.stat(0).getters, 1);
    assert_eq!(p.m.connections(), 2);

    let put = p.put(producer, q, b"precious", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(producer, put), Some(Owned::Done));
    assert_eq!(p.take(stays, g2), Some(Owned::Item(b"precious".to_vec())));
    assert_eq!(p.take(gone, g1), None);
    let s = p.stat(0);
    assert_eq!((s.len, s.total_put, s.total_got, s.getters), (0, 1, 1, 0));
}

/// A producer blocked in `put` on a full queue disconnects: its parked item is dropped, not
/// half-put, and the queue keeps working.
#[test]
fn disconnect_while_blocked_in_put() {
    let mut p = Pair::new(Setup::queue("task_queue", 1, 64, 1024));
    let a = p.connect();
    let b = p.connect();
    let q = p.open(a, "task_queue");
    assert_eq!(
        p.call(
            a,
            Op::Put {
                handle: q,
                item: b"first",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let blocked = p.put(b, q, b"parked", Wait::Forever);
    p.pump();
    assert_eq!(p.take(b, blocked), None);
    assert_eq!(p.stat(0).putters, 1);
    p.disconnect(b);
    assert_eq!(p.stat(0).putters, 0);
    assert_eq!(
        p.call(
            a,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"first".to_vec())
    );
    assert_eq!(
        p.call(
            a,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Empty)
    );
}

/// Remote shutdown, allowed: `Done`, then `Closing(Shutdown)` to everyone; blocked callers get
/// `ShuttingDown` first.
#[test]
fn remote_shutdown_allowed() {
    let mut setup = Setup::default();
    setup.config.allow_remote_shutdown = true;
    let mut p = Pair::new(setup);
    let closer = p.connect();
    let consumer = p.connect();
    let idle = p.connect();
    let q = p.open(consumer, "task_queue");
    let g = p.get(consumer, q, Wait::Forever);
    p.pump();
    let s = p.send(closer, Op::Shutdown);
    p.pump();
    assert_eq!(p.take(closer, s), Some(Owned::Done));
    assert_eq!(
        p.take(consumer, g),
        Some(Owned::Error(ErrorCode::ShuttingDown))
    );
    assert!(p.m.is_shutting_down());
    for c in [closer, consumer, idle] {
        assert_eq!(
            p.closed(c),
            Some(Error::Closed(CloseReason::Shutdown)),
            "client {c}"
        );
        assert_eq!(p.peers[c].manager_reason, Some(CloseReason::Shutdown));
        // Nothing after Closing.
        assert!(matches!(p.peers[c].log.last(), Some(Seen::Closed(_))));
    }
    assert_eq!(p.m.connections(), 0);
    assert_eq!(
        p.m.accept(p.now, [9; 32], &[]),
        Err(AcceptError::ShuttingDown)
    );
}

/// Blocked joiners also get `ShuttingDown`.
#[test]
fn shutdown_answers_blocked_join_and_put() {
    let mut setup = Setup::queue("task_queue", 1, 64, 1024);
    setup.config.allow_remote_shutdown = true;
    let mut p = Pair::new(setup);
    let a = p.connect();
    let b = p.connect();
    let q = p.open(a, "task_queue");
    assert_eq!(
        p.call(
            a,
            Op::Put {
                handle: q,
                item: b"x",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let j = p.send(
        a,
        Op::Join {
            handle: q,
            wait: Wait::Forever,
        },
    );
    let put = p.put(b, q, b"y", Wait::Forever);
    p.pump();
    assert_eq!((p.take(a, j), p.take(b, put)), (None, None));
    p.m.shutdown(p.now);
    p.pump();
    assert_eq!(p.take(a, j), Some(Owned::Error(ErrorCode::ShuttingDown)));
    assert_eq!(p.take(b, put), Some(Owned::Error(ErrorCode::ShuttingDown)));
    assert_eq!(p.closed(a), Some(Error::Closed(CloseReason::Shutdown)));
    assert_eq!(p.closed(b), Some(Error::Closed(CloseReason::Shutdown)));
}

#[test]
fn remote_shutdown_refused() {
    let mut p = Pair::with_default();
    let c = p.connect();
    assert_eq!(p.call(c, Op::Shutdown), Owned::Error(ErrorCode::NotAllowed));
    assert!(!p.m.is_shutting_down());
    let q = p.open(c, "task_queue");
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: q,
                item: b"still here",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert!(p.closed(c).is_none());
}

/// A put blocked on a full queue is woken by a get; the parked item arrives intact and in
/// FIFO order.
#[test]
fn blocked_put_woken_by_get() {
    let mut p = Pair::new(Setup::queue("task_queue", 2, 200, 1024));
    let producer = p.connect();
    let consumer = p.connect();
    let q = p.open(producer, "task_queue");
    let big: Vec<u8> = (0..200u8).collect();
    assert_eq!(
        p.call(
            producer,
            Op::Put {
                handle: q,
                item: b"one",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.call(
            producer,
            Op::Put {
                handle: q,
                item: b"two",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.call(
            producer,
            Op::Put {
                handle: q,
                item: b"x",
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Full)
    );
    let blocked = p.put(producer, q, &big, Wait::Forever);
    p.pump();
    assert_eq!(p.take(producer, blocked), None);
    // A timed put also waits, behind the first.
    let second = p.put(consumer, q, b"four", Wait::Millis(5_000));
    p.pump();
    assert_eq!(p.stat(0).putters, 2);
    // Nobody overtakes blocked putters, not even a non-blocking put.
    let other = p.connect();
    assert_eq!(
        p.call(
            other,
            Op::Put {
                handle: q,
                item: b"z",
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Full)
    );

    assert_eq!(
        p.call(
            consumer,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"one".to_vec())
    );
    assert_eq!(p.take(producer, blocked), Some(Owned::Done));
    assert_eq!(p.take(consumer, second), None);
    assert_eq!(
        p.call(
            consumer,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"two".to_vec())
    );
    assert_eq!(p.take(consumer, second), Some(Owned::Done));
    assert_eq!(
        p.call(
            consumer,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(big)
    );
    assert_eq!(
        p.call(
            consumer,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"four".to_vec())
    );
    assert_eq!(p.stat(0).putters, 0);
}

/// A put that waits with a timeout gives up on the clock; the item is not put.
#[test]
fn blocked_put_times_out() {
    let mut p = Pair::new(Setup::queue("task_queue", 1, 64, 1024));
    let c = p.connect();
    let q = p.open(c, "task_queue");
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: q,
                item: b"a",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let put = p.put(c, q, b"b", Wait::Millis(100));
    p.advance(100);
    assert_eq!(p.take(c, put), None);
    p.advance(1);
    assert_eq!(p.take(c, put), Some(Owned::Error(ErrorCode::Timeout)));
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"a".to_vec())
    );
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Empty)
    );
}

/// Blocked getters are served first come, first served.
#[test]
fn blocked_getters_are_fifo() {
    let mut p = Pair::with_default();
    let producer = p.connect();
    let consumers: Vec<usize> = (0..5).map(|_| p.connect()).collect();
    let q = p.open(producer, "task_queue");
    // Park them in a scrambled connection order.
    let order = [3, 0, 4, 1, 2];
    let mut gets = Vec::new();
    for &k in &order {
        let id = p.get(consumers[k], q, Wait::Forever);
        p.pump();
        gets.push((consumers[k], id));
    }
    for n in 0..5 {
        let put = p.put(producer, q, &item(n), Wait::NoWait);
        p.pump();
        assert_eq!(p.take(producer, put), Some(Owned::Done));
    }
    for (n, (c, id)) in gets.into_iter().enumerate() {
        assert_eq!(
            p.take(c, id),
            Some(Owned::Item(item(n as u32))),
            "getter {n}"
        );
    }
}

/// `join` waits until every item put has been marked done; too many `task_done`s is an error.
#[test]
fn join_and_task_done() {
    let mut p = Pair::with_default();
    let producer = p.connect();
    let worker = p.connect();
    let q = p.open(producer, "task_queue");
    assert_eq!(
        p.call(
            producer,
            Op::Join {
                handle: q,
                wait: Wait::Forever
            }
        ),
        Owned::Done
    );
    for n in 0..3 {
        assert_eq!(
            p.call(
                producer,
                Op::Put {
                    handle: q,
                    item: &item(n),
                    wait: Wait::NoWait
                }
            ),
            Owned::Done
        );
    }
    let j = p.send(
        producer,
        Op::Join {
            handle: q,
            wait: Wait::Forever,
        },
    );
    let jt = p.send(
        producer,
        Op::Join {
            handle: q,
            wait: Wait::Millis(50),
        },
    );
    p.pump();
    assert_eq!(p.stat(0).joiners, 2);
    p.advance(51);
    assert_eq!(p.take(producer, jt), Some(Owned::Error(ErrorCode::Timeout)));
    assert_eq!(
        p.call(
            producer,
            Op::Join {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Timeout)
    );
    for n in 0..3 {
        assert_eq!(
            p.call(
                worker,
                Op::Get {
                    handle: q,
                    wait: Wait::NoWait
                }
            ),
            Owned::Item(item(n))
        );
        assert_eq!(p.stat(0).unfinished, 3 - n);
        assert_eq!(p.take(producer, j), None, "join finished early");
        assert_eq!(p.call(worker, Op::TaskDone { handle: q }), Owned::Done);
    }
    assert_eq!(p.take(producer, j), Some(Owned::Done));
    assert_eq!(p.stat(0).joiners, 0);
    assert_eq!(
        p.call(worker, Op::TaskDone { handle: q }),
        Owned::Error(ErrorCode::TaskDoneTooMany)
    );
    assert_eq!(p.stat(0).unfinished, 0);
}

#[test]
fn create_within_limits() {
    let mut setup = Setup::default();
    setup.config.allow_create = true;
    setup.spares = vec![1024, 64];
    let mut p = Pair::new(setup);
    let c = p.connect();
    let spec = QueueSpec {
        capacity: 4,
        max_item: 100,
        mode: depot_core::QueueMode::Raw,
    };
    let info = match p.call(
        c,
        Op::Create {
            name: "results",
            spec,
            exist_ok: false,
        },
    ) {
        Owned::Opened(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.spec, spec);
    assert_eq!(p.open(c, "results"), info.handle);
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "results",
                spec,
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::AlreadyExists)
    );
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "results",
                spec,
                exist_ok: true
            }
        ),
        Owned::Opened(info)
    );
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "",
                spec,
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::InvalidName)
    );
    let long = "x".repeat(33);
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: &long,
                spec,
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::InvalidName)
    );
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "zero",
                spec: QueueSpec {
                    capacity: 0,
                    max_item: 1,
                    mode: depot_core::QueueMode::Raw
                },
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::InvalidSpec)
    );
    // The remaining spare has 64 bytes: too small for 100-byte items.
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "big",
                spec,
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::InvalidSpec)
    );
    let small = QueueSpec {
        capacity: 2,
        max_item: 16,
        mode: depot_core::QueueMode::Raw,
    };
    assert!(matches!(
        p.call(
            c,
            Op::Create {
                name: "small",
                spec: small,
                exist_ok: false
            }
        ),
        Owned::Opened(_)
    ));
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "more",
                spec: small,
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::ObjectLimit)
    );
    // The created queue works like a declared one.
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: info.handle,
                item: b"r",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: info.handle,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"r".to_vec())
    );
    assert_eq!(p.m.status().objects, 3);
}

#[test]
fn create_not_allowed() {
    let mut setup = Setup::default();
    setup.spares = vec![1024];
    let mut p = Pair::new(setup);
    let c = p.connect();
    let spec = QueueSpec {
        capacity: 4,
        max_item: 100,
        mode: depot_core::QueueMode::Raw,
    };
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "results",
                spec,
                exist_ok: false
            }
        ),
        Owned::Error(ErrorCode::NotAllowed)
    );
    assert_eq!(
        p.call(
            c,
            Op::Create {
                name: "task_queue",
                spec,
                exist_ok: true
            }
        ),
        Owned::Error(ErrorCode::NotAllowed)
    );
    assert_eq!(
        p.call(c, Op::Open { name: "results" }),
        Owned::Error(ErrorCode::NoSuchObject)
    );
}

#[test]
fn open_errors_and_bad_handles() {
    let mut p = Pair::with_default();
    let c = p.connect();
    assert_eq!(
        p.call(c, Op::Open { name: "nope" }),
        Owned::Error(ErrorCode::NoSuchObject)
    );
    assert_eq!(
        p.call(c, Op::Open { name: "" }),
        Owned::Error(ErrorCode::InvalidName)
    );
    let bad = wire::Handle::from_raw(77);
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: bad,
                wait: Wait::Forever
            }
        ),
        Owned::Error(ErrorCode::NoSuchObject)
    );
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: bad,
                item: b"x",
                wait: Wait::Forever
            }
        ),
        Owned::Error(ErrorCode::NoSuchObject)
    );
    assert_eq!(
        p.call(c, Op::Size { handle: bad }),
        Owned::Error(ErrorCode::NoSuchObject)
    );
    assert_eq!(
        p.call(c, Op::TaskDone { handle: bad }),
        Owned::Error(ErrorCode::NoSuchObject)
    );
    assert_eq!(
        p.call(
            c,
            Op::Join {
                handle: bad,
                wait: Wait::Forever
            }
        ),
        Owned::Error(ErrorCode::NoSuchObject)
    );
    let q = p.open(c, "task_queue");
    let big = vec![0u8; 257];
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: q,
                item: &big,
                wait: Wait::Forever
            }
        ),
        Owned::Error(ErrorCode::TooLarge)
    );
    assert!(p.closed(c).is_none());
}

#[test]
fn stat_listing_and_status() {
    let mut setup = Setup::default();
    setup.queues.push((
        "results".into(),
        QueueSpec {
            capacity: 3,
            max_item: 8,
            mode: depot_core::QueueMode::Raw,
        },
        64,
    ));
    setup.spares = vec![128];
    let mut p = Pair::new(setup);
    let a = p.connect();
    let b = p.connect();
    let q = p.open(a, "task_queue");
    for n in 0..3 {
        assert_eq!(
            p.call(
                a,
                Op::Put {
                    handle: q,
                    item: &item(n),
                    wait: Wait::NoWait
                }
            ),
            Owned::Done
        );
    }
    assert_eq!(
        p.call(
            b,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(item(0))
    );
    let r = p.open(b, "results");
    let blocked = p.get(b, r, Wait::Forever);
    p.pump();
    let Owned::Stat(Some(s0)) = p.call(a, Op::Stat { index: 0 }) else {
        panic!()
    };
    assert_eq!(s0.name, "task_queue");
    assert_eq!(s0.info.handle, q);
    assert_eq!((s0.len, s0.bytes, s0.storage), (2, 12, 4096));
    assert_eq!(
        (s0.getters, s0.putters, s0.joiners, s0.unfinished),
        (0, 0, 0, 3)
    );
    assert_eq!((s0.total_put, s0.total_got), (3, 1));
    let Owned::Stat(Some(s1)) = p.call(a, Op::Stat { index: 1 }) else {
        panic!()
    };
    assert_eq!(s1.name, "results");
    assert_eq!(
        s1.info.spec,
        QueueSpec {
            capacity: 3,
            max_item: 8,
            mode: depot_core::QueueMode::Raw
        }
    );
    assert_eq!(s1.getters, 1);
    // The spare slot is not an object.
    assert_eq!(p.call(a, Op::Stat { index: 2 }), Owned::Stat(None));
    assert_eq!(p.call(a, Op::Stat { index: u16::MAX }), Owned::Stat(None));
    let Owned::Status(st) = p.call(a, Op::Status) else {
        panic!()
    };
    assert_eq!(st.connections, 2);
    assert_eq!(st.max_connections, 8);
    assert_eq!(st.objects, 2);
    assert_eq!(st.waiters, 1);
    let Owned::Size(size) = p.call(a, Op::Size { handle: q }) else {
        panic!()
    };
    assert_eq!((size.len, size.capacity, size.full), (2, 16, false));
    assert_eq!(p.take(b, blocked), None);
}

/// Many requests in one frame; replies matched by id.
#[test]
fn pipelining_many_requests_in_one_frame() {
    let mut p = Pair::with_default();
    let c = p.connect();
    let q = p.open(c, "task_queue");
    let mut puts = Vec::new();
    for n in 0..8 {
        puts.push(p.put(c, q, &item(n), Wait::NoWait));
    }
    let mut gets = Vec::new();
    for _ in 0..8 {
        gets.push(p.get(c, q, Wait::NoWait));
    }
    assert_eq!(p.peers[c].client.in_flight(), 16);
    // All sixteen requests leave as one frame.
    let frame = p.peers[c].client.poll_transmit().to_vec();
    assert_eq!(
        wire::peek_body_len(&frame).map(|l| l as usize + wire::HEADER_LEN),
        Some(frame.len())
    );
    p.pump();
    for (n, id) in puts.into_iter().enumerate() {
        assert_eq!(p.take(c, id), Some(Owned::Done), "put {n}");
    }
    for (n, id) in gets.into_iter().enumerate() {
        assert_eq!(p.take(c, id), Some(Owned::Item(item(n as u32))), "get {n}");
    }
    assert_eq!(p.peers[c].client.in_flight(), 0);
    // The client refuses more in flight than it has slots.
    for _ in 0..16 {
        p.send(c, Op::Size { handle: q });
    }
    assert_eq!(
        p.peers[c].client.send(p.now, Op::Status),
        Err(SendError::InFlightLimit)
    );
    p.pump();
    assert_eq!(p.peers[c].replies.len(), 16);
}

/// A client that stops reading: the manager's output for it stays bounded (its input pauses),
/// and after `write_stall_timeout` it is dropped with `WriteStalled`; others keep working.
#[test]
fn stalled_reader_is_bounded_then_dropped() {
    let mut setup = Setup::default();
    setup.conn_tx = 1024;
    setup.client_slots = 1000;
    setup.client_tx = 1 << 16;
    setup.config.write_stall_timeout_ms = 5_000;
    let mut p = Pair::new(setup);
    let slow = p.connect();
    let other = p.connect();
    let q = p.open(slow, "task_queue");
    let oq = p.open(other, "task_queue");
    // Let the handshake timer pass so the stall clock must be armed by the output itself.
    p.advance(20_000);
    p.peers[slow].reading = false;
    // Requests keep coming; replies pile up in the manager.
    for _ in 0..300 {
        p.send(slow, Op::Status);
    }
    p.pump();
    let pending = p.m.poll_transmit(p.peers[slow].conn.unwrap()).len();
    assert!(pending <= 1024, "output {pending} exceeds the buffer");
    // Meanwhile the other client is served.
    assert_eq!(
        p.call(
            other,
            Op::Put {
                handle: oq,
                item: b"ok",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let _ = q;
    p.advance(4_999);
    assert!(
        p.peers[slow].conn.is_some(),
        "dropped before the stall timeout"
    );
    assert_eq!(
        p.call(
            other,
            Op::Get {
                handle: oq,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"ok".to_vec())
    );
    p.advance(1);
    assert!(
        p.peers[slow].conn.is_none(),
        "not dropped after the stall timeout"
    );
    assert_eq!(
        p.peers[slow].manager_reason,
        Some(CloseReason::WriteStalled)
    );
    assert_eq!(p.m.connections(), 1);
    assert_eq!(
        p.call(other, Op::Status),
        Owned::Status(wire::ManagerStatus {
            connections: 1,
            max_connections: 8,
            objects: 1,
            waiters: 0
        })
    );
}

/// A client that floods requests without reading: the manager stops reading it (input pauses)
/// rather than buffering without bound.
#[test]
fn stalled_reader_input_pauses() {
    let mut setup = Setup::default();
    setup.conn_tx = 600;
    setup.conn_rx = 512;
    setup.client_slots = 1000;
    setup.client_tx = 1 << 16;
    let mut p = Pair::new(setup);
    let slow = p.connect();
    let q = p.open(slow, "task_queue");
    p.peers[slow].reading = false;
    for _ in 0..500 {
        p.send(slow, Op::Size { handle: q });
    }
    p.pump();
    let conn = p.peers[slow].conn.unwrap();
    assert!(p.m.poll_transmit(conn).len() <= 600);
    // The client still holds most of its requests: the manager is not reading them.
    assert!(!p.peers[slow].client.poll_transmit().is_empty());
    assert!(p.m.rx_space(conn).is_empty());
    // Reading again drains everything in order.
    p.peers[slow].reading = true;
    p.pump();
    assert_eq!(p.peers[slow].replies.len(), 500);
    assert!(p.peers[slow]
        .replies
        .values()
        .all(|r| matches!(r, Owned::Size(_))));
}

#[test]
fn handshake_timeout() {
    let mut p = Pair::with_default();
    let conn = p.m.accept(p.now, [5; 32], &[]).unwrap();
    p.m.handle_input(conn, p.now, &[0, 0]);
    // Also a client that never writes.
    let c = p.add_client_with_key(KEY);
    p.peers[c].writing = false;
    p.advance(9_999);
    assert!(!p.m.wants_close(conn));
    assert!(p.peers[c].conn.is_some());
    p.advance(1);
    assert!(p.m.wants_close(conn));
    assert_eq!(p.m.close_reason(conn), Some(CloseReason::HandshakeTimeout));
    assert_eq!(
        p.peers[c].manager_reason,
        Some(CloseReason::HandshakeTimeout)
    );
    // The manager said nothing to either: no session, no Closing message.
    assert!(p.m.poll_transmit(conn).is_empty());
    p.m.handle_close(conn, p.now);
    assert_eq!(p.m.connections(), 0);
}

/// The client side of a handshake that never finishes.
#[test]
fn client_handshake_timeout() {
    let mut p = Pair::with_default();
    let c = p.add_client_with_key(KEY);
    p.peers[c].reading = false;
    p.advance(10_000);
    assert!(matches!(
        p.closed(c),
        Some(Error::Timeout) | Some(Error::Closed(CloseReason::HandshakeTimeout))
    ));
}

/// A frame whose bytes trickle in too slowly is dropped with `FrameTimeout`.
#[test]
fn slow_partial_frame() {
    let mut setup = Setup::default();
    setup.config.frame_timeout_ms = 1_000;
    let mut p = Pair::new(setup);
    let c = p.connect();
    let other = p.connect();
    p.peers[c].writing = false;
    p.send(c, Op::Status);
    let frame = p.peers[c].client.poll_transmit().to_vec();
    let conn = p.peers[c].conn.unwrap();
    // Half of the frame now, one more byte later: the deadline runs from the first byte.
    let half = frame.len() / 2;
    assert_eq!(p.m.handle_input(conn, p.now, &frame[..half]), half);
    p.advance(600);
    assert_eq!(p.m.handle_input(conn, p.now, &frame[half..half + 1]), 1);
    p.advance(399);
    assert!(p.peers[c].conn.is_some());
    p.advance(1);
    assert_eq!(p.peers[c].manager_reason, Some(CloseReason::FrameTimeout));
    assert_eq!(p.closed(c), Some(Error::Closed(CloseReason::FrameTimeout)));
    assert_eq!(
        p.call(other, Op::Open { name: "task_queue" }),
        Owned::Opened(wire::ObjectInfo {
            handle: wire::Handle::from_raw(0),
            kind: wire::ObjectKind::Queue,
            spec: QueueSpec {
                capacity: 16,
                max_item: 256,
                mode: depot_core::QueueMode::Raw
            }
        })
    );
}

/// A whole frame that arrives slowly but within the deadline is fine, as is a connection idle
/// between frames for far longer than the frame timeout.
#[test]
fn slow_but_timely_frames_and_idle_connections() {
    let mut setup = Setup::default();
    setup.config.frame_timeout_ms = 1_000;
    let mut p = Pair::new(setup);
    let c = p.connect();
    p.advance(60_000);
    p.peers[c].writing = false;
    let id = p.send(c, Op::Status);
    let frame = p.peers[c].client.poll_transmit().to_vec();
    p.peers[c].client.handle_transmitted(frame.len());
    let conn = p.peers[c].conn.unwrap();
    for b in &frame {
        p.m.handle_input(conn, p.now, std::slice::from_ref(b));
        p.advance(10);
    }
    assert!(matches!(p.take(c, id), Some(Owned::Status(_))));
    assert!(p.closed(c).is_none());
}

/// No free slot: `Busy`, and `encode_busy` tells a client so.
#[test]
fn connection_limit_busy() {
    let mut setup = Setup::default();
    setup.conns = 2;
    let mut p = Pair::new(setup);
    let a = p.connect();
    let _b = p.connect();
    assert_eq!(p.m.accept(p.now, [3; 32], &[]), Err(AcceptError::Busy));
    let mut buf = [0u8; 16];
    let bytes = encode_busy(&mut buf).to_vec();
    let (mut rx, mut tx, mut slots) = (vec![0u8; 1024], vec![0u8; 1024], [RequestSlot::FREE; 2]);
    let mut client = Client::new(
        ClientConfig::default(),
        KEY,
        [4; 32],
        p.now,
        &mut rx[..],
        &mut tx[..],
        &mut slots,
    );
    assert_eq!(client.handle_input(&bytes), bytes.len());
    assert_eq!(
        drain_events(&mut client),
        vec![Seen::Closed(Error::Closed(CloseReason::Busy))]
    );
    // A slot freed is a slot reused.
    p.disconnect(a);
    let c = p.connect();
    let q = p.open(c, "task_queue");
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: q,
                item: b"x",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
}

/// Per-connection and global waiter limits answer `WaiterLimit`, and the connection goes on.
#[test]
fn waiter_limits() {
    let mut setup = Setup::default();
    setup.config.max_waiters_per_connection = 2;
    setup.waiters = 3;
    let mut p = Pair::new(setup);
    let a = p.connect();
    let b = p.connect();
    let q = p.open(a, "task_queue");
    let g1 = p.get(a, q, Wait::Forever);
    let g2 = p.get(a, q, Wait::Forever);
    let g3 = p.get(a, q, Wait::Forever);
    p.pump();
    assert_eq!(p.take(a, g3), Some(Owned::Error(ErrorCode::WaiterLimit)));
    let g4 = p.get(b, q, Wait::Forever);
    let g5 = p.get(b, q, Wait::Forever);
    p.pump();
    assert_eq!(p.take(b, g5), Some(Owned::Error(ErrorCode::WaiterLimit)));
    for n in 0..3 {
        assert_eq!(
            p.call(
                b,
                Op::Put {
                    handle: q,
                    item: &item(n),
                    wait: Wait::NoWait
                }
            ),
            Owned::Done
        );
    }
    assert_eq!(p.take(a, g1), Some(Owned::Item(item(0))));
    assert_eq!(p.take(a, g2), Some(Owned::Item(item(1))));
    assert_eq!(p.take(b, g4), Some(Owned::Item(item(2))));
    assert_eq!(p.m.status().waiters, 0);
}

/// The manager's `poll_ready` keeps naming connections whose blocked requests were answered
/// by someone else, even after another ready connection closed before it was polled.
#[test]
fn poll_ready_survives_a_close() {
    let mut p = Pair::with_default();
    let producer = p.connect();
    let a = p.connect();
    let b = p.connect();
    let q = p.open(producer, "task_queue");
    let ga = p.get(a, q, Wait::Forever);
    p.pump();
    let gb = p.get(b, q, Wait::Forever);
    p.pump();
    let (ca, cb) = (p.peers[a].conn.unwrap(), p.peers[b].conn.unwrap());
    // Two puts in one frame: both blocked getters are answered, a's then b's connection
    // becomes ready. Before the transport looks, a's socket dies.
    p.put(producer, q, b"1", Wait::NoWait);
    p.put(producer, q, b"2", Wait::NoWait);
    let frame = p.peers[producer].client.poll_transmit().to_vec();
    p.peers[producer].client.handle_transmitted(frame.len());
    let pc = p.peers[producer].conn.unwrap();
    p.m.handle_input(pc, p.now, &frame);
    p.m.handle_close(ca, p.now);
    p.peers[a].conn = None;
    let mut ready = Vec::new();
    while let Some(id) = p.m.poll_ready() {
        ready.push(id);
        assert!(ready.len() < 100, "poll_ready loops");
    }
    assert!(
        ready.contains(&cb),
        "b's connection not reported ready: {ready:?}"
    );
    assert!(
        !ready.contains(&ca),
        "a closed connection reported ready: {ready:?}"
    );
    // a never got its item: it went back to the head of the queue, for the next get.
    let d = p.connect();
    let back = p.get(d, q, Wait::Forever);
    p.pump();
    assert_eq!(p.take(d, back), Some(Owned::Item(b"1".to_vec())));
    // And the freed slot, once reused, is reported properly too.
    let gd = p.get(d, q, Wait::Forever);
    p.pump();
    while p.m.poll_ready().is_some() {}
    let put = p.put(producer, q, b"3", Wait::NoWait);
    let frame = p.peers[producer].client.poll_transmit().to_vec();
    p.peers[producer].client.handle_transmitted(frame.len());
    p.m.handle_input(pc, p.now, &frame);
    let dc = p.peers[d].conn.unwrap();
    let mut ready = Vec::new();
    while let Some(id) = p.m.poll_ready() {
        ready.push(id);
        assert!(ready.len() < 100, "poll_ready loops");
    }
    assert!(ready.contains(&dc), "reused slot not reported: {ready:?}");
    p.pump();
    assert_eq!(p.take(b, gb), Some(Owned::Item(b"2".to_vec())));
    assert_eq!(p.take(d, gd), Some(Owned::Item(b"3".to_vec())));
    assert_eq!(p.take(producer, put), Some(Owned::Done));
    assert_eq!(p.take(a, ga), None);
}

/// Items as large as a queue allows, through buffers only just large enough.
#[test]
fn largest_items_round_trip() {
    let mut setup = Setup::queue("big", 2, 3000, 6100);
    setup.conn_park = 3000;
    let mut p = Pair::new(setup);
    let a = p.connect();
    let b = p.connect();
    let q = p.open(a, "big");
    let x: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let y: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    let z: Vec<u8> = (0..2999u32).map(|i| (i * 3) as u8).collect();
    assert_eq!(
        p.call(
            a,
            Op::Put {
                handle: q,
                item: &x,
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.call(
            a,
            Op::Put {
                handle: q,
                item: &y,
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let blocked = p.put(a, q, &z, Wait::Forever);
    p.pump();
    assert_eq!(
        p.call(
            b,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(x)
    );
    assert_eq!(p.take(a, blocked), Some(Owned::Done));
    assert_eq!(
        p.call(
            b,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(y)
    );
    // This one wraps around the queue's storage.
    assert_eq!(
        p.call(
            b,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(z)
    );
}

/// A connection closing for another reason (here shutdown) whose peer never reads its last
/// frame is still dropped after the write-stall timeout, so its slot comes back.
#[test]
fn closing_connection_that_never_reads_is_dropped() {
    let mut setup = Setup::default();
    setup.config.write_stall_timeout_ms = 2_000;
    let mut p = Pair::new(setup);
    let deaf = p.connect();
    let fine = p.connect();
    p.advance(30_000);
    assert!(matches!(p.call(fine, Op::Status), Owned::Status(_)));
    p.peers[deaf].reading = false;
    p.m.shutdown(p.now);
    p.pump();
    assert_eq!(p.closed(fine), Some(Error::Closed(CloseReason::Shutdown)));
    assert!(p.peers[deaf].conn.is_some());
    p.advance(1_999);
    assert!(p.peers[deaf].conn.is_some());
    p.advance(1);
    assert!(p.peers[deaf].conn.is_none(), "never dropped");
    assert_eq!(p.peers[deaf].manager_reason, Some(CloseReason::Shutdown));
    assert_eq!(p.m.connections(), 0);
}

/// A connection whose blocked `get`s reserve most of its output room must still be answered
/// at once for a non-blocking `get` (and anything after it), not paused until some other
/// client happens to put.
#[test]
fn reservations_never_pause_a_connection_for_good() {
    let mut setup = Setup::queue("big", 8, 350, 8192);
    setup.conn_tx = 1024;
    let mut p = Pair::new(setup);
    let c = p.connect();
    let q = p.open(c, "big");
    let g1 = p.get(c, q, Wait::Forever);
    let g2 = p.get(c, q, Wait::Forever);
    p.pump();
    assert_eq!((p.take(c, g1), p.take(c, g2)), (None, None));
    let now_get = p.get(c, q, Wait::NoWait);
    let put = p.put(c, q, b"for g1", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, now_get), Some(Owned::Error(ErrorCode::Empty)));
    assert_eq!(p.take(c, put), Some(Owned::Done));
    assert_eq!(p.take(c, g1), Some(Owned::Item(b"for g1".to_vec())));
}

/// A client whose frames cannot carry an item gets `TooLarge`; the item stays for others.
#[test]
fn item_too_large_for_a_connection_stays_queued() {
    let mut setup = Setup::queue("big", 4, 1000, 8192);
    setup.conn_park = 1000;
    let mut p = Pair::new(setup.clone());
    let big = p.connect();
    setup.client_rx = 300;
    p.setup = setup;
    let small = p.connect();
    let q = p.open(big, "big");
    let blocked = p.get(small, q, Wait::Forever);
    p.pump();
    let later = p.get(big, q, Wait::Forever);
    p.pump();
    let item = vec![7u8; 600];

    assert_eq!(
        p.call(
            big,
            Op::Put {
                handle: q,
                item: &item,
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.take(small, blocked),
        Some(Owned::Error(ErrorCode::TooLarge))
    );
    assert_eq!(p.take(big, later), Some(Owned::Item(item)));
    assert_eq!(
        p.call(
            small,
            Op::Put {
                handle: q,
                item: b"tiny",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.call(
            small,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"tiny".to_vec())
    );
}

/// Two blocking puts pipelined on one connection both park at once, in order, and the
/// connection goes on answering other requests meanwhile (no head-of-line blocking).
#[test]
fn several_blocked_puts_on_one_connection() {
    let mut p = Pair::new(Setup::queue("task_queue", 1, 64, 1024));
    let a = p.connect();
    let b = p.connect();
    let q = p.open(a, "task_queue");
    assert_eq!(
        p.call(
            a,
            Op::Put {
                handle: q,
                item: b"0",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let p1 = p.put(a, q, b"1", Wait::Millis(100));
    let p2 = p.put(a, q, b"2", Wait::Forever);
    let st = p.send(a, Op::Status);
    p.pump();
    assert_eq!((p.take(a, p1), p.take(a, p2)), (None, None));
    match p.take(a, st) {
        Some(Owned::Status(status)) => assert_eq!(status.waiters, 2),
        other => panic!("status not answered while puts are blocked: {other:?}"),
    }
    // The first times out; the second stays parked.
    p.advance(101);
    assert_eq!(p.take(a, p1), Some(Owned::Error(ErrorCode::Timeout)));
    assert_eq!(p.take(a, p2), None);
    assert_eq!(
        p.call(
            b,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"0".to_vec())
    );
    assert_eq!(p.take(a, p2), Some(Owned::Done));
    assert_eq!(
        p.call(
            b,
            Op::Get {
                handle: q,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"2".to_vec())
    );
}

#[test]
fn a_value_queue_refuses_what_is_not_one_value_and_changes_nothing() {
    let mut setup = Setup::queue("q", 4, 64, 1024);
    setup.queues[0].1.mode = depot_core::QueueMode::Value;
    let mut p = Pair::new(setup);
    let c = p.connect();
    let h = p.open(c, "q");
    for garbage in [
        &b""[..],
        b"hello",
        b"\x82\x01",
        b"\x01\x02",
        b"\xc2\x41\x01",
    ] {
        let id = p.put(c, h, garbage, Wait::NoWait);
        p.pump();
        assert_eq!(p.take(c, id), Some(Owned::Error(ErrorCode::InvalidValue)));
    }
    let stat = p.stat(0);
    assert_eq!((stat.len, stat.total_put), (0, 0));
    assert_eq!(stat.info.spec.mode, depot_core::QueueMode::Value);
    // 42 as a value is taken.
    let mut item = [0u8; 16];
    let n = depot_core::value::to_slice(&42u32, &mut item).unwrap();
    let id = p.put(c, h, &item[..n], Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Done));
    let id = p.get(c, h, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Item(vec![0x18, 42])));
}
