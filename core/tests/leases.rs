//! Acknowledged gets (`GetLeased`, `Ack`, `Nack`) on the in-memory harness: leases end by ack,
//! nack, expiry or a closed connection; returned items keep their order and count their
//! deliveries; dead-letter queues; bounded lease storage; and a model check that nothing is
//! lost or duplicated beyond counted redeliveries.

mod harness;

use std::collections::BTreeMap;

use depot_core::wire::{ErrorCode, Handle, Op, QueueSpec, Wait};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

fn leased(handle: Handle, max_items: u32, lease_ms: u32, wait: Wait) -> Op<'static> {
    Op::GetLeased {
        handle,
        max_items,
        max_bytes: 4096,
        lease_ms,
        wait,
    }
}

/// `(lease, deliveries, items)` of a `Leased` reply.
fn unpack(reply: Owned) -> (u64, Vec<u8>, Vec<Vec<u8>>) {
    match reply {
        Owned::Leased {
            lease,
            deliveries,
            items,
        } => (lease, deliveries, items),
        other => panic!("expected a leased reply, got {other:?}"),
    }
}

fn put_all(p: &mut Pair, c: usize, q: Handle, items: &[&[u8]]) {
    for item in items {
        let reply = p.call(
            c,
            Op::Put {
                handle: q,
                item,
                wait: Wait::NoWait,
            },
        );
        assert_eq!(reply, Owned::Done);
    }
}

fn get_now(p: &mut Pair, c: usize, q: Handle) -> Owned {
    p.call(
        c,
        Op::Get {
            handle: q,
            wait: Wait::NoWait,
        },
    )
}

/// A leased item is hidden from other consumers until acked; the ack removes it for good.
#[test]
fn ack_removes_and_hides_meanwhile() {
    let mut p = Pair::with_default();
    let (a, b) = (p.connect(), p.connect());
    let q = p.open(a, "task_queue");
    put_all(&mut p, a, q, &[b"one", b"two"]);
    let (lease, deliveries, items) = unpack(p.call(b, leased(q, 1, 10_000, Wait::NoWait)));
    assert_eq!((deliveries, items), (vec![1], vec![b"one".to_vec()]));
    assert_eq!(get_now(&mut p, a, q), Owned::Item(b"two".to_vec()));
    assert_eq!(get_now(&mut p, a, q), Owned::Error(ErrorCode::Empty));
    assert_eq!(p.m.leases().leased(), 1);
    // Only the holder may ack.
    assert_eq!(
        p.call(a, Op::Ack { lease }),
        Owned::Error(ErrorCode::NoSuchLease)
    );
    assert_eq!(p.call(b, Op::Ack { lease }), Owned::Done);
    assert_eq!(
        p.call(b, Op::Ack { lease }),
        Owned::Error(ErrorCode::NoSuchLease)
    );
    assert_eq!(p.m.leases().leased(), 0);
    p.advance(60_000);
    assert_eq!(get_now(&mut p, a, q), Owned::Error(ErrorCode::Empty));
}

/// An ack sent unanswered (id `UNANSWERED_ID`) gets no reply when it succeeds, and an error
/// when it fails.
#[test]
fn an_unanswered_ack_hears_back_only_when_it_fails() {
    let mut p = Pair::with_default();
    let (a, b) = (p.connect(), p.connect());
    let q = p.open(a, "task_queue");
    put_all(&mut p, a, q, &[b"one"]);
    let (lease, _, _) = unpack(p.call(b, leased(q, 1, 10_000, Wait::NoWait)));
    // What the manager sends back for an unanswered ack, bytes moved by hand.
    let answer_to_ack = |p: &mut Pair| {
        let conn = p.peers[b].conn.expect("connected");
        let peer = &mut p.peers[b];
        peer.client.send_unanswered(Op::Ack { lease }).unwrap();
        let out = peer.client.poll_transmit().to_vec();
        let n = p.m.handle_input(conn, p.now, &out);
        peer.client.handle_transmitted(n);
        assert_eq!(n, out.len());
        p.m.poll_transmit(conn).len()
    };
    assert_eq!(answer_to_ack(&mut p), 0, "a Done was sent");
    assert_eq!(p.m.leases().leased(), 0);
    assert!(answer_to_ack(&mut p) > 0, "NoSuchLease was not sent");
    p.pump();
    assert!(p.peers[b].closed.is_none());
    assert_eq!(get_now(&mut p, a, q), Owned::Error(ErrorCode::Empty));
}

/// A nack puts the items back at the head, in their order, ahead of items never delivered,
/// with their delivery counts raised.
#[test]
fn nack_returns_to_head_in_order() {
    let mut p = Pair::with_default();
    let c = p.connect();
    let q = p.open(c, "task_queue");
    put_all(&mut p, c, q, &[b"1", b"2", b"3", b"4"]);
    let (lease, d, items) = unpack(p.call(c, leased(q, 2, 10_000, Wait::NoWait)));
    assert_eq!((d, items), (vec![1, 1], vec![b"1".to_vec(), b"2".to_vec()]));
    assert_eq!(p.call(c, Op::Nack { lease }), Owned::Done);
    let (lease, d, items) = unpack(p.call(c, leased(q, 3, 10_000, Wait::NoWait)));
    let want: Vec<Vec<u8>> = vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()];
    assert_eq!((d, items), (vec![2, 2, 1], want));
    assert_eq!(p.call(c, Op::Nack { lease }), Owned::Done);
    // A plain get sees them too, in order.
    for n in [b"1", b"2", b"3", b"4"] {
        assert_eq!(get_now(&mut p, c, q), Owned::Item(n.to_vec()));
    }
    let s = p.stat(0);
    assert_eq!((s.len, s.total_put, s.total_got), (0, 4, 4));
}

/// A lease that runs out returns its item; an ack after that is refused.
#[test]
fn expiry_redelivers() {
    let mut p = Pair::with_default();
    let (a, b) = (p.connect(), p.connect());
    let q = p.open(a, "task_queue");
    put_all(&mut p, a, q, &[b"x"]);
    let (lease, _, _) = unpack(p.call(a, leased(q, 1, 500, Wait::NoWait)));
    p.advance(499);
    assert_eq!(get_now(&mut p, b, q), Owned::Error(ErrorCode::Empty));
    p.advance(1);
    let (_, d, items) = unpack(p.call(b, leased(q, 1, 500, Wait::NoWait)));
    assert_eq!((d, items), (vec![2], vec![b"x".to_vec()]));
    assert_eq!(
        p.call(a, Op::Ack { lease }),
        Owned::Error(ErrorCode::NoSuchLease)
    );
}

/// A consumer whose connection dies loses its leases: a blocked consumer gets them at once.
#[test]
fn closed_connection_redelivers_to_a_waiting_consumer() {
    let mut p = Pair::with_default();
    let (a, b) = (p.connect(), p.connect());
    let q = p.open(a, "task_queue");
    put_all(&mut p, a, q, &[b"p", b"q"]);
    unpack(p.call(a, leased(q, 2, 60_000, Wait::NoWait)));
    let waiting = p.send(b, leased(q, 8, 60_000, Wait::Forever));
    p.pump();
    assert_eq!(p.take(b, waiting), None);
    p.disconnect(a);
    let (_, d, items) = unpack(p.take(b, waiting).expect("redelivered"));
    assert_eq!((d, items), (vec![2, 2], vec![b"p".to_vec(), b"q".to_vec()]));
}

/// Several leases that come back together stand at the head in the order they were taken.
#[test]
fn leases_returned_together_keep_their_order() {
    let mut p = Pair::with_default();
    let (a, b) = (p.connect(), p.connect());
    let q = p.open(a, "task_queue");
    put_all(&mut p, a, q, &[b"1", b"2", b"3", b"4", b"5"]);
    for _ in 0..2 {
        unpack(p.call(a, leased(q, 1, 60_000, Wait::NoWait)));
        unpack(p.call(b, leased(q, 1, 1_000, Wait::NoWait)));
    }
    // b's two leases expire together, then a's connection closes.
    p.advance(1_000);
    p.disconnect(a);
    let (_, d, items) = unpack(p.call(b, leased(q, 8, 1_000, Wait::NoWait)));
    let want: Vec<Vec<u8>> = [b"1", b"3", b"2", b"4", b"5"].map(|i| i.to_vec()).into();
    assert_eq!((d, items), (vec![2, 2, 2, 2, 1], want));
}

/// After `max` deliveries an unacknowledged item goes to the dead-letter queue.
#[test]
fn dead_letter_after_max_deliveries() {
    let spec = QueueSpec {
        capacity: 16,
        max_item: 256,
        mode: QueueMode::Raw,
    };
    let mut setup = Setup::default();
    setup.queues.push(("dead".into(), spec, 4096));
    let mut p = Pair::new(setup);
    let c = p.connect();
    let q = p.open(c, "task_queue");
    let dead = p.open(c, "dead");
    assert_eq!(p.m.set_dead_letter(q, q, 2), Err(ErrorCode::InvalidSpec));
    p.m.set_dead_letter(q, dead, 2).unwrap();
    put_all(&mut p, c, q, &[b"poison", b"fine"]);
    for round in 1..=2u8 {
        let (lease, d, _) = unpack(p.call(c, leased(q, 1, 1000, Wait::NoWait)));
        assert_eq!(d, vec![round]);
        assert_eq!(p.call(c, Op::Nack { lease }), Owned::Done);
    }
    assert_eq!(get_now(&mut p, c, dead), Owned::Item(b"poison".to_vec()));
    assert_eq!(get_now(&mut p, c, q), Owned::Item(b"fine".to_vec()));
}

/// Lease storage is bounded: a get takes no more than there is room for, and with none left it
/// fails with `LeaseLimit` and the items stay queued.
#[test]
fn lease_storage_is_bounded() {
    let mut p = Pair::new(Setup {
        lease_slots: 2,
        ..Setup::default()
    });
    let c = p.connect();
    let q = p.open(c, "task_queue");
    put_all(&mut p, c, q, &[b"1", b"2", b"3"]);
    let (first, _, items) = unpack(p.call(c, leased(q, 3, 1000, Wait::NoWait)));
    assert_eq!(items.len(), 2);
    assert_eq!(
        p.call(c, leased(q, 1, 1000, Wait::NoWait)),
        Owned::Error(ErrorCode::LeaseLimit)
    );
    assert_eq!(p.stat(0).len, 1);
    assert_eq!(p.call(c, Op::Ack { lease: first }), Owned::Done);
    let (_, _, items) = unpack(p.call(c, leased(q, 1, 1000, Wait::NoWait)));
    assert_eq!(items, vec![b"3".to_vec()]);
}

/// A manager without lease storage refuses leased gets and keeps the items.
#[test]
fn no_lease_store_refuses() {
    let mut p = Pair::new(Setup {
        lease_slots: 0,
        ..Setup::default()
    });
    let c = p.connect();
    let q = p.open(c, "task_queue");
    put_all(&mut p, c, q, &[b"1"]);
    assert_eq!(
        p.call(c, leased(q, 1, 1000, Wait::NoWait)),
        Owned::Error(ErrorCode::LeaseLimit)
    );
    assert_eq!(get_now(&mut p, c, q), Owned::Item(b"1".to_vec()));
}

/// A client that abandons a leased get it sent hands any items it brings back at once.
#[test]
fn abandoned_leased_get_is_nacked() {
    let mut p = Pair::with_default();
    let (a, b) = (p.connect(), p.connect());
    let q = p.open(a, "task_queue");
    let id = p.send(a, leased(q, 1, 60_000, Wait::Forever));
    p.pump();
    // The put answers the get while the client gives up on it (before reading its reply).
    let put = p.put(b, q, b"z", Wait::NoWait);
    p.peers[a].reading = false;
    p.pump();
    assert_eq!(p.take(b, put), Some(Owned::Done));
    p.peers[a].client.abandon(id);
    p.peers[a].reading = true;
    p.pump();
    assert_eq!(p.take(a, id), None);
    let (_, d, items) = unpack(p.call(b, leased(q, 1, 1000, Wait::NoWait)));
    assert_eq!((d, items), (vec![2], vec![b"z".to_vec()]));
}

/// A version-2 client (which knows no leases) is refused with `VersionMismatch`.
#[test]
fn a_version_2_hello_is_refused() {
    let mut p = Pair::new(Setup::default());
    let conn = p.m.accept(p.now, [1; 32], &[]).unwrap();
    let mut body = b"dpot\x02\x02".to_vec();
    body.extend_from_slice(&[3; 32]);
    body.extend_from_slice(&[0x80, 0x08]);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let now = p.now;
    p.m.handle_input(conn, now, &frame);
    let out = p.m.poll_transmit(conn).to_vec();
    // Reject (1) with VersionMismatch (1).
    assert_eq!(&out[4..], &[1, 1]);
    assert_eq!(
        p.m.close_reason(conn),
        Some(depot_core::wire::CloseReason::VersionMismatch)
    );
}

#[derive(Debug, Clone)]
enum Step {
    Put,
    Get,
    Lease(u32, u32),
    Ack(usize),
    Nack(usize),
    Advance(u64),
    Drop,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Put),
        1 => Just(Step::Get),
        3 => (1u32..4, prop_oneof![Just(50u32), Just(5_000)]).prop_map(|(n, ms)| Step::Lease(n, ms)),
        2 => any::<usize>().prop_map(Step::Ack),
        1 => any::<usize>().prop_map(Step::Nack),
        1 => (1u64..200).prop_map(Step::Advance),
        1 => Just(Step::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 128 }))]

    /// Whatever the consumers do, every item put is finally acked or got exactly once, and an
    /// item seen more than once was seen under a lease each earlier time, with delivery counts
    /// 1, 2, 3, … in order.
    #[test]
    fn nothing_lost_or_duplicated(steps in prop::collection::vec(step(), 1..80)) {
        let mut p = Pair::new(Setup {
            lease_slots: 8,
            ..Setup::default()
        });
        let producer = p.connect();
        let mut consumer = p.connect();
        let q = p.open(producer, "task_queue");
        let mut next = 0u32;
        // Per item: deliveries seen under a lease, and whether it was taken for good.
        let mut seen: BTreeMap<u32, (Vec<u8>, u32)> = BTreeMap::new();
        let mut held: Vec<(u64, Vec<u32>)> = Vec::new();
        let take = |seen: &mut BTreeMap<u32, (Vec<u8>, u32)>, item: &[u8]| {
            let n = u32::from_le_bytes(item.try_into().unwrap());
            seen.entry(n).or_default().1 += 1;
        };
        for s in steps {
            match s {
                Step::Put => {
                    let item = next.to_le_bytes();
                    let reply = p.call(producer, Op::Put { handle: q, item: &item, wait: Wait::NoWait });
                    if reply == Owned::Done {
                        next += 1;
                    }
                }
                Step::Get => {
                    if let Owned::Item(item) = get_now(&mut p, consumer, q) {
                        take(&mut seen, &item);
                    }
                }
                Step::Lease(n, ms) => {
                    if let Owned::Leased { lease, deliveries, items } =
                        p.call(consumer, leased(q, n, ms, Wait::NoWait))
                    {
                        let mut ids = Vec::new();
                        for (item, d) in items.iter().zip(deliveries) {
                            let id = u32::from_le_bytes(item[..].try_into().unwrap());
                            let entry = seen.entry(id).or_default();
                            prop_assert_eq!(entry.1, 0, "item {} delivered after it was taken", id);
                            entry.0.push(d);
                            ids.push(id);
                        }
                        held.push((lease, ids));
                    }
                }
                Step::Ack(k) | Step::Nack(k) if !held.is_empty() => {
                    let (lease, ids) = held.remove(k % held.len());
                    let op = match s {
                        Step::Ack(_) => Op::Ack { lease },
                        _ => Op::Nack { lease },
                    };
                    // A lease that expired meanwhile is refused; its items came back.
                    if p.call(consumer, op) == Owned::Done {
                        if let Step::Ack(_) = s {
                            for id in ids {
                                seen.entry(id).or_default().1 += 1;
                            }
                        }
                    }
                }
                Step::Ack(_) | Step::Nack(_) => {}
                Step::Advance(ms) => p.advance(ms),
                Step::Drop => {
                    p.disconnect(consumer);
                    held.clear();
                    consumer = p.connect();
                }
            }
        }
        // Drain: ack what is still held, then take the rest plainly.
        for (lease, ids) in held {
            if p.call(consumer, Op::Ack { lease }) == Owned::Done {
                for id in ids {
                    seen.entry(id).or_default().1 += 1;
                }
            }
        }
        while let Owned::Item(item) = get_now(&mut p, consumer, q) {
            take(&mut seen, &item);
        }
        prop_assert_eq!(p.m.leases().leased(), 0);
        prop_assert_eq!(seen.len() as u32, next);
        for (id, (deliveries, taken)) in &seen {
            prop_assert_eq!(*taken, 1, "item {} taken {} times", id, taken);
            let expect: Vec<u8> = (1..=deliveries.len() as u8).collect();
            prop_assert_eq!(deliveries, &expect, "item {}", id);
        }
    }
}
