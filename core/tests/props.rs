//! Property tests: the queue and the manager against models, decoding in every split, garbage.
#![allow(clippy::field_reassign_with_default)]

mod harness;

use std::collections::{BTreeMap, VecDeque};

use depot_core::queue::{PushError, Queue, TaskDoneTooMany};
use depot_core::wire::{ErrorCode, Handle, Items, Op, QueueSize, QueueSpec, Wait};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

/// `cases` cases, a handful under Miri (it runs each some thousand times slower).
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(if cfg!(miri) { 2 } else { cases });
    if cfg!(miri) {
        // Miri's isolation has no file system to keep failures in.
        config.failure_persistence = None;
    }
    config
}

// ---------------------------------------------------------------------------------------------
// The queue against `VecDeque`.

#[derive(Debug, Clone)]
enum QOp {
    Put(usize, u8),
    Get,
    /// Pop into a buffer of this many bytes (too small leaves the queue unchanged).
    GetInto(usize),
    TaskDone,
}

fn qop(max_item: usize) -> impl Strategy<Value = QOp> {
    prop_oneof![
        4 => (0..=max_item + 3, any::<u8>()).prop_map(|(n, b)| QOp::Put(n, b)),
        3 => Just(QOp::Get),
        1 => (0..=max_item).prop_map(QOp::GetInto),
        2 => Just(QOp::TaskDone),
    ]
}

/// The queue's rules, stated plainly.
struct QModel {
    items: VecDeque<Vec<u8>>,
    capacity: usize,
    max_item: usize,
    storage: usize,
    unfinished: u32,
    put: u64,
    got: u64,
}

impl QModel {
    fn used(&self) -> usize {
        self.items.iter().map(|i| i.len() + 4).sum()
    }
    fn room(&self, len: usize) -> bool {
        self.items.len() < self.capacity && self.used() + 4 + len <= self.storage
    }
    fn check(&self, q: &Queue<'_>) {
        assert_eq!(q.len() as usize, self.items.len());
        assert_eq!(q.is_empty(), self.items.is_empty());
        assert_eq!(q.bytes(), self.items.iter().map(Vec::len).sum::<usize>());
        assert_eq!(q.is_full(), !self.room(0));
        assert_eq!(q.unfinished(), self.unfinished);
        assert_eq!((q.total_put(), q.total_got()), (self.put, self.got));
        assert_eq!(
            q.size(),
            QueueSize {
                len: self.items.len() as u32,
                capacity: self.capacity as u32,
                full: !self.room(0),
            }
        );
        assert_eq!(q.front_len(), self.items.front().map(Vec::len));
        let front = q.front().map(|(a, b)| [a, b].concat());
        assert_eq!(front.as_ref(), self.items.front());
        for len in [0, 1, self.max_item] {
            assert_eq!(q.has_room_for(len), self.room(len));
        }
    }
}

fn queue_case() -> impl Strategy<Value = (u32, usize, usize, Vec<QOp>)> {
    (1u32..8, 0usize..40)
        .prop_flat_map(|(capacity, max_item)| {
            (
                Just(capacity),
                Just(max_item),
                max_item + 4..max_item * 4 + 64,
                prop::collection::vec(qop(max_item), 1..120),
            )
        })
        .prop_map(|(c, m, s, ops)| (c, m, s, ops))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn queue_matches_vecdeque((capacity, max_item, storage_len, ops) in queue_case()) {
        let mut storage = vec![0u8; storage_len];
        let spec = QueueSpec { capacity, max_item: max_item as u32, mode: depot_core::QueueMode::Raw };
        let mut q = Queue::new(spec, &mut storage[..]).unwrap();
        let mut m = QModel {
            items: VecDeque::new(),
            capacity: capacity as usize,
            max_item,
            storage: storage_len,
            unfinished: 0,
            put: 0,
            got: 0,
        };
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                QOp::Put(len, seed) => {
                    let item: Vec<u8> = (0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(31))).collect();
                    let want = if len > max_item {
                        Err(PushError::TooLarge)
                    } else if !m.room(len) {
                        Err(PushError::Full)
                    } else {
                        m.items.push_back(item.clone());
                        m.unfinished += 1;
                        m.put += 1;
                        Ok(())
                    };
                    prop_assert_eq!(q.push(&item), want, "step {}", step);
                }
                QOp::Get => {
                    let mut out = vec![0u8; max_item + 1];
                    let got = q.pop_into(&mut out).map(|n| out[..n].to_vec());
                    let want = m.items.pop_front();
                    if want.is_some() {
                        m.got += 1;
                    }
                    prop_assert_eq!(got, want, "step {}", step);
                }
                QOp::GetInto(n) => {
                    let mut out = vec![0u8; n];
                    let got = q.pop_into(&mut out).map(|k| out[..k].to_vec());
                    let want = match m.items.front() {
                        Some(front) if front.len() <= n => {
                            m.got += 1;
                            m.items.pop_front()
                        }
                        _ => None,
                    };
                    prop_assert_eq!(got, want, "step {}", step);
                }
                QOp::TaskDone => {
                    let want = if m.unfinished == 0 {
                        Err(TaskDoneTooMany)
                    } else {
                        m.unfinished -= 1;
                        Ok(())
                    };
                    prop_assert_eq!(q.task_done(), want, "step {}", step);
                }
            }
            m.check(&q);
        }
    }
}

#[test]
fn queue_rejects_impossible_specs() {
    use depot_core::queue::SpecError;
    let mut s = [0u8; 10];
    let spec = |capacity, max_item| QueueSpec {
        capacity,
        max_item,
        mode: depot_core::QueueMode::Raw,
    };
    assert_eq!(
        Queue::new(spec(0, 1), &mut s).err(),
        Some(SpecError::ZeroCapacity)
    );
    assert_eq!(
        Queue::new(spec(1, 7), &mut s).err(),
        Some(SpecError::StorageTooSmall)
    );
    assert!(Queue::new(spec(1, 6), &mut s).is_ok());
    assert_eq!(
        Queue::new(spec(1, u32::MAX), &mut s).err(),
        Some(SpecError::StorageTooSmall)
    );
}

// ---------------------------------------------------------------------------------------------
// The manager against a model of the same rules, through the harness.

#[derive(Debug, Clone)]
enum MOp {
    Put {
        client: usize,
        len: usize,
        seed: u8,
        block: bool,
    },
    Get {
        client: usize,
        block: bool,
    },
    TaskDone {
        client: usize,
    },
    Join {
        client: usize,
        block: bool,
    },
    Size {
        client: usize,
    },
    /// The client's socket closes; a new client takes its place.
    Reconnect {
        client: usize,
    },
}

const CLIENTS: usize = 3;

fn mop(max_item: usize) -> impl Strategy<Value = MOp> {
    let c = 0..CLIENTS;
    prop_oneof![
        5 => (c.clone(), 0..=max_item + 2, any::<u8>(), any::<bool>())
            .prop_map(|(client, len, seed, block)| MOp::Put { client, len, seed, block }),
        4 => (c.clone(), any::<bool>()).prop_map(|(client, block)| MOp::Get { client, block }),
        2 => c.clone().prop_map(|client| MOp::TaskDone { client }),
        1 => (c.clone(), any::<bool>()).prop_map(|(client, block)| MOp::Join { client, block }),
        1 => c.clone().prop_map(|client| MOp::Size { client }),
        1 => c.prop_map(|client| MOp::Reconnect { client }),
    ]
}

/// What the manager promises, without any of its machinery.
struct MModel {
    q: QModel,
    /// (peer, request id) in arrival order.
    getters: VecDeque<(usize, u32)>,
    putters: VecDeque<(usize, u32, Vec<u8>)>,
    joiners: VecDeque<(usize, u32)>,
    /// Replies the manager owes now.
    expect: BTreeMap<(usize, u32), Owned>,
}

impl MModel {
    fn push(&mut self, item: Vec<u8>) {
        self.q.items.push_back(item);
        self.q.unfinished += 1;
        self.q.put += 1;
    }

    fn settle(&mut self) {
        loop {
            if let Some((_, _, item)) = self.putters.front() {
                if self.q.room(item.len()) {
                    let (peer, id, item) = self.putters.pop_front().unwrap();
                    self.push(item);
                    self.expect.insert((peer, id), Owned::Done);
                    continue;
                }
            }
            if !self.q.items.is_empty() {
                if let Some((peer, id)) = self.getters.pop_front() {
                    let item = self.q.items.pop_front().unwrap();
                    self.q.got += 1;
                    self.expect.insert((peer, id), Owned::Item(item));
                    continue;
                }
            }
            return;
        }
    }

    fn blocked(&self, peer: usize) -> bool {
        self.getters.iter().any(|w| w.0 == peer)
            || self.putters.iter().any(|w| w.0 == peer)
            || self.joiners.iter().any(|w| w.0 == peer)
    }
}

fn manager_case() -> impl Strategy<Value = (u32, usize, usize, Vec<MOp>)> {
    (1u32..6, 1usize..48)
        .prop_flat_map(|(capacity, max_item)| {
            (
                Just(capacity),
                Just(max_item),
                max_item + 4..max_item * 3 + 40,
                prop::collection::vec(mop(max_item), 1..60),
            )
        })
        .prop_map(|(c, m, s, ops)| (c, m, s, ops))
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn manager_matches_model((capacity, max_item, storage, ops) in manager_case()) {
        let mut setup = Setup::queue("q", capacity, max_item as u32, storage);
        setup.conns = CLIENTS + 1;
        setup.conn_park = 64;
        let mut p = Pair::new(setup);
        let mut peer_of: Vec<usize> = (0..CLIENTS).map(|_| p.connect()).collect();
        let h = Handle::from_raw(0);
        let mut m = MModel {
            q: QModel {
                items: VecDeque::new(),
                capacity: capacity as usize,
                max_item,
                storage,
                unfinished: 0,
                put: 0,
                got: 0,
            },
            getters: VecDeque::new(),
            putters: VecDeque::new(),
            joiners: VecDeque::new(),
            expect: BTreeMap::new(),
        };
        for (step, op) in ops.into_iter().enumerate() {
            let client = match op {
                MOp::Put { client, .. } | MOp::Get { client, .. } | MOp::TaskDone { client }
                | MOp::Join { client, .. } | MOp::Size { client } | MOp::Reconnect { client } => client,
            };
            let peer = peer_of[client];
            // A client with a blocked request waits for it (its next request could queue
            // behind a parked put); it may still hang up.
            if m.blocked(peer) && !matches!(op, MOp::Reconnect { .. }) {
                continue;
            }
            match op {
                MOp::Put { len, seed, block, .. } => {
                    let item: Vec<u8> = (0..len).map(|i| seed ^ i as u8).collect();
                    let wait = if block { Wait::Forever } else { Wait::NoWait };
                    let id = p.put(peer, h, &item, wait);
                    if len > max_item {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::TooLarge));
                    } else if m.putters.is_empty() && m.q.room(len) {
                        m.push(item);
                        m.expect.insert((peer, id), Owned::Done);
                        m.settle();
                    } else if block {
                        m.putters.push_back((peer, id, item));
                    } else {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::Full));
                    }
                }
                MOp::Get { block, .. } => {
                    let wait = if block { Wait::Forever } else { Wait::NoWait };
                    let id = p.get(peer, h, wait);
                    if let Some(item) = m.q.items.pop_front() {
                        m.q.got += 1;
                        m.expect.insert((peer, id), Owned::Item(item));
                        m.settle();
                    } else if block {
                        m.getters.push_back((peer, id));
                    } else {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::Empty));
                    }
                }
                MOp::TaskDone { .. } => {
                    let id = p.send(peer, Op::TaskDone { handle: h });
                    if m.q.unfinished == 0 {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::TaskDoneTooMany));
                    } else {
                        m.q.unfinished -= 1;
                        m.expect.insert((peer, id), Owned::Done);
                        if m.q.unfinished == 0 {
                            for w in m.joiners.drain(..) {
                                m.expect.insert(w, Owned::Done);
                            }
                        }
                    }
                }
                MOp::Join { block, .. } => {
                    let wait = if block { Wait::Forever } else { Wait::NoWait };
                    let id = p.send(peer, Op::Join { handle: h, wait });
                    if m.q.unfinished == 0 {
                        m.expect.insert((peer, id), Owned::Done);
                    } else if block {
                        m.joiners.push_back((peer, id));
                    } else {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::Timeout));
                    }
                }
                MOp::Size { .. } => {
                    let id = p.send(peer, Op::Size { handle: h });
                    m.expect.insert((peer, id), Owned::Size(QueueSize {
                        len: m.q.items.len() as u32,
                        capacity,
                        full: !m.q.room(0),
                    }));
                }
                MOp::Reconnect { .. } => {
                    p.disconnect(peer);
                    m.getters.retain(|w| w.0 != peer);
                    m.joiners.retain(|w| w.0 != peer);
                    let had_put = m.putters.iter().any(|w| w.0 == peer);
                    m.putters.retain(|w| w.0 != peer);
                    if had_put {
                        m.settle();
                    }
                    peer_of[client] = p.connect();
                }
            }
            p.pump();
            let mut got = BTreeMap::new();
            for (k, peer) in p.peers.iter_mut().enumerate() {
                for (id, reply) in std::mem::take(&mut peer.replies) {
                    got.insert((k, id), reply);
                }
                prop_assert!(peer.closed.is_none() || peer.conn.is_none());
            }
            prop_assert_eq!(&got, &m.expect, "step {}: {:?}", step, op);
            m.expect.clear();
            let s = p.stat(0);
            prop_assert_eq!(s.len as usize, m.q.items.len());
            prop_assert_eq!(s.unfinished, m.q.unfinished);
            prop_assert_eq!((s.getters as usize, s.putters as usize, s.joiners as usize),
                (m.getters.len(), m.putters.len(), m.joiners.len()));
            prop_assert_eq!((s.total_put, s.total_got), (m.q.put, m.q.got));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding any input split at every byte gives the same result.

/// The requests of the recorded session, sent in these batches (one frame each).
fn batches() -> Vec<Vec<Op<'static>>> {
    let h = Handle::from_raw(0);
    vec![
        vec![Op::Open { name: "task_queue" }],
        vec![
            Op::Get {
                handle: h,
                wait: Wait::Forever,
            },
            Op::Put {
                handle: h,
                item: b"alpha",
                wait: Wait::NoWait,
            },
            Op::Put {
                handle: h,
                item: &[0xFF; 200],
                wait: Wait::NoWait,
            },
        ],
        vec![Op::Size { handle: h }, Op::Stat { index: 0 }],
        vec![
            Op::Get {
                handle: h,
                wait: Wait::NoWait,
            },
            Op::TaskDone { handle: h },
            Op::Join {
                handle: h,
                wait: Wait::NoWait,
            },
            Op::Get {
                handle: h,
                wait: Wait::NoWait,
            },
        ],
        vec![Op::Status, Op::Open { name: "nothing" }],
    ]
}

fn split_setup() -> Setup {
    let mut setup = Setup::default();
    setup.conns = 1;
    setup
}

const M_NONCE: [u8; 32] = [0x4D; 32];
const C_NONCE: [u8; 32] = [0x43; 32];

fn fresh_client() -> Client<'static> {
    let leak = |n| Box::leak(vec![0u8; n].into_boxed_slice());
    Client::new(
        Default::default(),
        KEY,
        C_NONCE,
        Instant::ZERO,
        leak(4096),
        leak(8192),
        Box::leak(vec![RequestSlot::FREE; 16].into_boxed_slice()),
    )
}

/// A real session: the client's byte stream, the manager's byte stream, and the client's
/// events when each arrives whole.
fn record() -> (Vec<u8>, Vec<u8>, Vec<Seen>) {
    let mut p = Pair::new(split_setup());
    let conn = p.m.accept(Instant::ZERO, M_NONCE, &[]).unwrap();
    let mut c = fresh_client();
    let (mut up, mut down, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    let mut pending = batches().into_iter();
    for _ in 0..100 {
        let out = c.poll_transmit().to_vec();
        c.handle_transmitted(out.len());
        assert_eq!(p.m.handle_input(conn, Instant::ZERO, &out), out.len());
        up.extend_from_slice(&out);
        let back = p.m.poll_transmit(conn).to_vec();
        p.m.handle_transmitted(conn, Instant::ZERO, back.len());
        assert_eq!(c.handle_input(&back), back.len());
        down.extend_from_slice(&back);
        let events = drain_events(&mut c);
        seen.extend(events);
        if c.is_ready() && c.in_flight() == 0 {
            match pending.next() {
                Some(batch) => {
                    for op in batch {
                        c.send(Instant::ZERO, op).unwrap();
                    }
                }
                None if out.is_empty() && back.is_empty() => break,
                None => {}
            }
        }
    }
    assert!(pending.next().is_none());
    // The blocked get was answered by the put in the same frame, and so on: 12 replies.
    assert_eq!(
        seen.iter().filter(|s| matches!(s, Seen::Reply(..))).count(),
        12
    );
    assert!(!seen.iter().any(|s| matches!(s, Seen::Closed(_))));
    (up, down, seen)
}

/// The manager's output for the client stream fed in `chunks`, decoded by a client.
fn manager_fed(chunks: &[&[u8]]) -> Vec<Seen> {
    let mut p = Pair::new(split_setup());
    let conn = p.m.accept(Instant::ZERO, M_NONCE, &[]).unwrap();
    for chunk in chunks {
        assert_eq!(p.m.handle_input(conn, Instant::ZERO, chunk), chunk.len());
    }
    assert!(p.m.close_reason(conn).is_none());
    let out = p.m.poll_transmit(conn).to_vec();
    client_fed(&[&out])
}

fn drain_one(c: &mut Client<'_>) -> Option<Seen> {
    Some(match c.poll_event()? {
        Event::Connected => Seen::Connected,
        Event::Reply { id, reply } => Seen::Reply(id, Owned::from_reply(&reply)),
        Event::Closed(e) => Seen::Closed(e),
        other => panic!("an unknown event: {other:?}"),
    })
}

/// A client that sends the recorded requests, fed the manager's stream in `chunks`.
fn client_fed(chunks: &[&[u8]]) -> Vec<Seen> {
    let mut c = fresh_client();
    let mut seen = Vec::new();
    let mut sent = false;
    for chunk in chunks {
        assert_eq!(c.handle_input(chunk), chunk.len());
        // One event at a time: the requests must be in flight before their replies are read.
        while let Some(s) = drain_one(&mut c) {
            if s == Seen::Connected && !sent {
                // The ids depend only on the order of sends (16 slots, 12 requests).
                for op in batches().into_iter().flatten() {
                    c.send(Instant::ZERO, op).unwrap();
                }
                sent = true;
            }
            seen.push(s);
        }
        let out = c.poll_transmit().len();
        c.handle_transmitted(out);
    }
    seen
}

#[test]
fn manager_decodes_every_split_alike() {
    let (up, _, seen) = record();
    let whole = manager_fed(&[&up]);
    assert_eq!(whole, seen);
    for at in 0..=up.len() {
        assert_eq!(manager_fed(&[&up[..at], &up[at..]]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = up.chunks(1).collect();
    assert_eq!(manager_fed(&bytes), whole, "one byte at a time");
}

#[test]
fn client_decodes_every_split_alike() {
    let (_, down, seen) = record();
    let whole = client_fed(&[&down]);
    assert_eq!(whole, seen);
    for at in 0..=down.len() {
        assert_eq!(
            client_fed(&[&down[..at], &down[at..]]),
            whole,
            "split at {at}"
        );
    }
    let bytes: Vec<&[u8]> = down.chunks(1).collect();
    assert_eq!(client_fed(&bytes), whole, "one byte at a time");
}

proptest! {
    #![proptest_config(config(64))]

    /// Any chunking at all, on both sides.
    #[test]
    fn any_chunking_decodes_alike(cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let (up, down, seen) = record();
        let chunked = |bytes: &[u8]| {
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort();
            at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect::<Vec<_>>()
        };
        let up_chunks = chunked(&up);
        let refs: Vec<&[u8]> = up_chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(&manager_fed(&refs), &seen);
        let down_chunks = chunked(&down);
        let refs: Vec<&[u8]> = down_chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(&client_fed(&refs), &seen);
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage into the manager never panics and never affects another connection.

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // At least a byte: an authenticated peer that sends nothing is idle, not garbage, and
        // rightly stays connected.
        prop::collection::vec(any::<u8>(), 1..300),
        // Plausible headers in front of random bodies reach deeper.
        (0u32..200, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(len, body)| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend(body);
            v
        }),
        // A valid hello prefix, then noise.
        prop::collection::vec(any::<u8>(), 0..80).prop_map(|tail| {
            let mut v = vec![0, 0, 0, 43];
            v.extend_from_slice(b"dpot\x01\x01");
            v.extend(tail);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn garbage_never_panics_nor_spreads(
        junk in garbage(),
        after_handshake in any::<bool>(),
        chunk in 1usize..64,
    ) {
        let mut p = Pair::with_default();
        let control = p.connect();
        let q = p.open(control, "task_queue");
        let g = p.get(control, q, Wait::Forever);
        p.pump();
        let victim_peer = after_handshake.then(|| {
            let v = p.connect();
            p.peers[v].writing = false;
            v
        });
        let victim_conn = match victim_peer {
            Some(v) => p.peers[v].conn.unwrap(),
            None => p.m.accept(p.now, [0x99; 32], &[]).unwrap(),
        };
        for piece in junk.chunks(chunk) {
            p.m.handle_input(victim_conn, p.now, piece);
            let _ = p.m.poll_transmit(victim_conn);
            p.pump();
        }
        p.advance(60_000);
        // The control connection is untouched and its blocked get still works.
        prop_assert_eq!(p.take(control, g), None);
        prop_assert_eq!(p.call(control, Op::Put { handle: q, item: b"woken", wait: Wait::NoWait }), Owned::Done);
        prop_assert_eq!(p.take(control, g), Some(Owned::Item(b"woken".to_vec())));
        prop_assert_eq!(p.call(control, Op::Put { handle: q, item: b"after", wait: Wait::NoWait }), Owned::Done);
        prop_assert_eq!(p.call(control, Op::Get { handle: q, wait: Wait::NoWait }), Owned::Item(b"after".to_vec()));
        prop_assert!(p.closed(control).is_none());
        // Garbage never ran anything: the only puts are the control's.
        prop_assert_eq!(p.stat(0).total_put, 2);
        // And the garbage connection is closed by now (rejected, or timed out): a peer's socket
        // is gone; a bare connection waits, closing, for the transport to close it.
        match victim_peer {
            Some(v) => prop_assert!(p.peers[v].conn.is_none(), "victim still connected"),
            None => prop_assert!(p.m.close_reason(victim_conn).is_some(), "victim not closing"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Version 2 against a model: any mix of blocked calls per connection, batches, cancels and
// abandoned calls. The model is exact, so no item is lost, duplicated or reordered.

#[derive(Debug, Clone)]
enum VOp {
    Put {
        client: usize,
        len: usize,
        seed: u8,
        block: bool,
    },
    Get {
        client: usize,
        block: bool,
    },
    PutMany {
        client: usize,
        lens: Vec<usize>,
        seed: u8,
        block: bool,
    },
    GetMany {
        client: usize,
        max: u32,
        block: bool,
    },
    /// Withdraw one of the client's blocked calls with `Cancel`.
    Cancel {
        client: usize,
        pick: usize,
    },
    /// The client gives up on one of its blocked calls (`Client::abandon`).
    Abandon {
        client: usize,
        pick: usize,
    },
    Reconnect {
        client: usize,
    },
}

impl VOp {
    fn client(&self) -> usize {
        match *self {
            VOp::Put { client, .. }
            | VOp::Get { client, .. }
            | VOp::PutMany { client, .. }
            | VOp::GetMany { client, .. }
            | VOp::Cancel { client, .. }
            | VOp::Abandon { client, .. }
            | VOp::Reconnect { client } => client,
        }
    }
}

fn vop(max_item: usize) -> impl Strategy<Value = VOp> {
    let c = 0..CLIENTS;
    prop_oneof![
        4 => (c.clone(), 0..=max_item + 1, any::<u8>(), any::<bool>())
            .prop_map(|(client, len, seed, block)| VOp::Put { client, len, seed, block }),
        3 => (c.clone(), any::<bool>()).prop_map(|(client, block)| VOp::Get { client, block }),
        3 => (c.clone(), prop::collection::vec(0..=max_item + 1, 0..6), any::<u8>(), any::<bool>())
            .prop_map(|(client, lens, seed, block)| VOp::PutMany { client, lens, seed, block }),
        3 => (c.clone(), 1u32..6, any::<bool>())
            .prop_map(|(client, max, block)| VOp::GetMany { client, max, block }),
        2 => (c.clone(), any::<usize>()).prop_map(|(client, pick)| VOp::Cancel { client, pick }),
        2 => (c.clone(), any::<usize>()).prop_map(|(client, pick)| VOp::Abandon { client, pick }),
        1 => c.prop_map(|client| VOp::Reconnect { client }),
    ]
}

/// A blocked call in the model.
#[derive(Debug)]
enum VWait {
    Put {
        item: Vec<u8>,
    },
    PutMany {
        rest: VecDeque<Vec<u8>>,
        accepted: u32,
    },
    Get,
    GetMany {
        max: u32,
    },
}

struct VModel {
    q: QModel,
    /// (peer, request id, call) in arrival order.
    putters: VecDeque<(usize, u32, VWait)>,
    getters: VecDeque<(usize, u32, VWait)>,
    expect: BTreeMap<(usize, u32), Owned>,
}

impl VModel {
    fn push(&mut self, item: Vec<u8>) {
        self.q.items.push_back(item);
        self.q.unfinished += 1;
        self.q.put += 1;
    }

    fn take(&mut self, max: u32) -> Vec<Vec<u8>> {
        let n = (max as usize).min(self.q.items.len());
        self.q.got += n as u64;
        self.q.items.drain(..n).collect()
    }

    /// Puts the items of a batch while they fit: `Some(error)` when it is over.
    fn put_batch(&mut self, rest: &mut VecDeque<Vec<u8>>, accepted: &mut u32) -> Option<Owned> {
        while let Some(item) = rest.front() {
            if item.len() > self.q.max_item {
                return Some(Owned::Accepted(*accepted, Some(ErrorCode::TooLarge)));
            }
            if !self.q.room(item.len()) {
                return None;
            }
            let item = rest.pop_front().unwrap();
            self.push(item);
            *accepted += 1;
        }
        Some(Owned::Accepted(*accepted, None))
    }

    fn settle(&mut self) {
        loop {
            if let Some((peer, id, mut wait)) = self.putters.pop_front() {
                let done = match &mut wait {
                    VWait::Put { item } if self.q.room(item.len()) => {
                        let item = std::mem::take(item);
                        self.push(item);
                        Some(Owned::Done)
                    }
                    VWait::PutMany { rest, accepted } => {
                        let (mut r, mut a) = (std::mem::take(rest), *accepted);
                        let done = self.put_batch(&mut r, &mut a);
                        (*rest, *accepted) = (r, a);
                        done
                    }
                    _ => None,
                };
                match done {
                    Some(reply) => {
                        self.expect.insert((peer, id), reply);
                        continue;
                    }
                    None => self.putters.push_front((peer, id, wait)),
                }
            }
            if !self.q.items.is_empty() {
                if let Some((peer, id, wait)) = self.getters.pop_front() {
                    let reply = match wait {
                        VWait::GetMany { max } => Owned::Items(self.take(max)),
                        _ => Owned::Item(self.take(1).remove(0)),
                    };
                    self.expect.insert((peer, id), reply);
                    continue;
                }
            }
            return;
        }
    }

    /// The `pick`-th blocked call of `peer`, taken out of its list.
    fn withdraw(&mut self, peer: usize, pick: usize) -> Option<(u32, VWait)> {
        let mine: Vec<(bool, usize)> = self
            .putters
            .iter()
            .enumerate()
            .filter(|(_, w)| w.0 == peer)
            .map(|(i, _)| (true, i))
            .chain(
                self.getters
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.0 == peer)
                    .map(|(i, _)| (false, i)),
            )
            .collect();
        let &(put, at) = mine.get(pick % mine.len().max(1))?;
        let (_, id, wait) = if put {
            self.putters.remove(at)?
        } else {
            self.getters.remove(at)?
        };
        Some((id, wait))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn manager_v2_matches_model((capacity, max_item, storage, ops) in
        (1u32..5, 1usize..24).prop_flat_map(|(capacity, max_item)| (
            Just(capacity),
            Just(max_item),
            max_item + 4..max_item * 3 + 40,
            prop::collection::vec(vop(max_item), 1..80),
        ))
    ) {
        let mut setup = Setup::queue("q", capacity, max_item as u32, storage);
        setup.conns = CLIENTS + 1;
        // Limits far above what a case reaches: the model leaves them out.
        setup.waiters = 1024;
        setup.conn_park = 256;
        setup.park_slots = 512;
        setup.conn_tx = 1 << 16;
        setup.client_slots = 512;
        let mut p = Pair::new(setup);
        let mut peer_of: Vec<usize> = (0..CLIENTS).map(|_| p.connect()).collect();
        let h = Handle::from_raw(0);
        let mut m = VModel {
            q: QModel {
                items: VecDeque::new(),
                capacity: capacity as usize,
                max_item,
                storage,
                unfinished: 0,
                put: 0,
                got: 0,
            },
            putters: VecDeque::new(),
            getters: VecDeque::new(),
            expect: BTreeMap::new(),
        };
        let item = |len: usize, seed: u8| -> Vec<u8> { (0..len).map(|i| seed ^ i as u8).collect() };
        for (step, op) in ops.into_iter().enumerate() {
            let peer = peer_of[op.client()];
            match op {
                VOp::Put { len, seed, block, .. } => {
                    let item = item(len, seed);
                    let wait = if block { Wait::Forever } else { Wait::NoWait };
                    let id = p.put(peer, h, &item, wait);
                    if len > max_item {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::TooLarge));
                    } else if m.putters.is_empty() && m.q.room(len) {
                        m.push(item);
                        m.expect.insert((peer, id), Owned::Done);
                        m.settle();
                    } else if block {
                        m.putters.push_back((peer, id, VWait::Put { item }));
                    } else {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::Full));
                    }
                }
                VOp::PutMany { ref lens, seed, block, .. } => {
                    let items: Vec<Vec<u8>> = lens.iter().enumerate()
                        .map(|(k, &len)| item(len, seed.wrapping_add(k as u8))).collect();
                    let mut packed = Vec::new();
                    for it in &items {
                        let at = packed.len();
                        packed.resize(at + Items::packed_len(it.len()), 0);
                        Items::push(&mut packed, at, it).unwrap();
                    }
                    let wait = if block { Wait::Forever } else { Wait::NoWait };
                    let id = p.send(peer, Op::PutMany { handle: h, items: Items(&packed), wait });
                    let mut rest: VecDeque<Vec<u8>> = items.into();
                    let mut accepted = 0;
                    // An empty batch is done at once, blocked puts or not.
                    let done = if m.putters.is_empty() || rest.is_empty() {
                        m.put_batch(&mut rest, &mut accepted)
                    } else {
                        None
                    };
                    match done {
                        Some(reply) => {
                            m.expect.insert((peer, id), reply);
                            m.settle();
                        }
                        None if block => {
                            m.putters.push_back((peer, id, VWait::PutMany { rest, accepted }));
                            m.settle();
                        }
                        None => {
                            m.expect.insert((peer, id), Owned::Accepted(accepted, Some(ErrorCode::Full)));
                            m.settle();
                        }
                    }
                }
                VOp::Get { block, .. } | VOp::GetMany { block, .. } => {
                    let wait = if block { Wait::Forever } else { Wait::NoWait };
                    let (id, call) = match op {
                        VOp::GetMany { max, .. } => (p.send(peer, Op::GetMany {
                            handle: h, max_items: max, max_bytes: 1 << 16, wait,
                        }), VWait::GetMany { max }),
                        _ => (p.get(peer, h, wait), VWait::Get),
                    };
                    if !m.q.items.is_empty() {
                        let reply = match call {
                            VWait::GetMany { max } => Owned::Items(m.take(max)),
                            _ => Owned::Item(m.take(1).remove(0)),
                        };
                        m.expect.insert((peer, id), reply);
                        m.settle();
                    } else if block {
                        m.getters.push_back((peer, id, call));
                    } else {
                        m.expect.insert((peer, id), Owned::Error(ErrorCode::Empty));
                    }
                }
                VOp::Cancel { pick, .. } => {
                    let Some((target, wait)) = m.withdraw(peer, pick) else { continue };
                    let id = p.send(peer, Op::Cancel { target });
                    let reply = match wait {
                        VWait::PutMany { accepted, .. } => {
                            Owned::Accepted(accepted, Some(ErrorCode::Cancelled))
                        }
                        _ => Owned::Error(ErrorCode::Cancelled),
                    };
                    m.expect.insert((peer, target), reply);
                    m.expect.insert((peer, id), Owned::Done);
                    m.settle();
                }
                VOp::Abandon { pick, .. } => {
                    let Some((target, _)) = m.withdraw(peer, pick) else { continue };
                    p.peers[peer].client.abandon(target);
                    m.settle();
                }
                VOp::Reconnect { .. } => {
                    p.disconnect(peer);
                    m.getters.retain(|w| w.0 != peer);
                    m.putters.retain(|w| w.0 != peer);
                    m.settle();
                    peer_of[op.client()] = p.connect();
                }
            }
            p.pump();
            let mut got = BTreeMap::new();
            for (k, peer) in p.peers.iter_mut().enumerate() {
                for (id, reply) in std::mem::take(&mut peer.replies) {
                    got.insert((k, id), reply);
                }
                prop_assert!(peer.closed.is_none() || peer.conn.is_none());
            }
            prop_assert_eq!(&got, &m.expect, "step {}: {:?}", step, op);
            m.expect.clear();
            let s = p.stat(0);
            prop_assert_eq!(s.len as usize, m.q.items.len());
            prop_assert_eq!((s.getters as usize, s.putters as usize),
                (m.getters.len(), m.putters.len()));
            prop_assert_eq!((s.total_put, s.total_got), (m.q.put, m.q.got));
        }
    }
}
