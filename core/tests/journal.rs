//! The journal hears every change of queue contents: replaying what it heard on the state the
//! manager started from gives the state it has now, whatever mix of puts, batches, blocked
//! calls, gets, returns and dropped connections ran; and a manager restored from that state
//! serves the same items in the same order.

mod harness;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use depot_core::journal::{Journal, RestoreError};
use depot_core::wire::{ErrorCode, Items, Op, QueueSpec, Wait};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Created(Handle, String, QueueSpec),
    Appended(Handle, Vec<u8>),
    Removed(Handle, u32),
    Returned(Handle, Vec<u8>),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Rec>>>);

impl Journal for Recorder {
    fn created(&mut self, handle: Handle, name: &str, spec: QueueSpec) {
        let rec = Rec::Created(handle, name.into(), spec);
        self.0.lock().unwrap().push(rec);
    }
    fn appended(&mut self, handle: Handle, item: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push(Rec::Appended(handle, item.to_vec()));
    }
    fn removed(&mut self, handle: Handle, count: u32) {
        self.0.lock().unwrap().push(Rec::Removed(handle, count));
    }
    fn returned(&mut self, handle: Handle, item: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push(Rec::Returned(handle, item.to_vec()));
    }
}

/// Every queue's items by handle, as the journal says.
fn replay(records: &[Rec], queues: usize) -> Vec<VecDeque<Vec<u8>>> {
    let mut model = vec![VecDeque::new(); queues];
    for rec in records {
        match rec {
            Rec::Created(h, ..) => assert!(model[usize::from(h.to_raw())].is_empty()),
            Rec::Appended(h, item) => model[usize::from(h.to_raw())].push_back(item.clone()),
            Rec::Removed(h, n) => {
                for _ in 0..*n {
                    model[usize::from(h.to_raw())]
                        .pop_front()
                        .expect("removed from an empty queue");
                }
            }
            Rec::Returned(h, item) => model[usize::from(h.to_raw())].push_front(item.clone()),
        }
    }
    model
}

fn contents(m: &Manager, handle: Handle) -> VecDeque<Vec<u8>> {
    m.queue_items(handle)
        .expect("a queue")
        .map(|(a, b)| [a, b].concat())
        .collect()
}

fn packed(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let at = out.len();
        out.resize(at + Items::packed_len(item.len()), 0);
        Items::push(&mut out, at, item).expect("room");
    }
    out
}

#[derive(Debug, Clone)]
enum Step {
    Put(usize, u8, bool),
    PutMany(usize, u8, u8),
    Get(usize, bool),
    GetMany(usize, u8),
    Return(usize, u8),
    /// The client stops reading: replies pile up unsent.
    Deaf(usize),
    /// The client's connection drops; a new client takes its place.
    Drop(usize),
    Advance,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, any::<u8>(), any::<bool>()).prop_map(|(c, x, w)| Step::Put(c, x, w)),
        (0..3usize, any::<u8>(), 1..6u8).prop_map(|(c, x, n)| Step::PutMany(c, x, n)),
        (0..3usize, any::<bool>()).prop_map(|(c, w)| Step::Get(c, w)),
        (0..3usize, 1..5u8).prop_map(|(c, n)| Step::GetMany(c, n)),
        (0..3usize, any::<u8>()).prop_map(|(c, x)| Step::Return(c, x)),
        (0..3usize).prop_map(Step::Deaf),
        (0..3usize).prop_map(Step::Drop),
        Just(Step::Advance),
    ]
}

/// Items of a few sizes, so the ring wraps and storage runs out before the count does.
fn item(x: u8, k: u8) -> Vec<u8> {
    vec![x ^ k; 1 + (x as usize + k as usize) % 12]
}

/// Sends a request unless the client has too many in flight (a client that stopped reading
/// piles them up): that limit is the client's, not what this test is about.
fn send(p: &mut Pair, c: usize, op: Op) {
    let now = p.now;
    let _ = p.peers[c].client.send(now, op);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_journal_gives_the_queue_contents(steps in prop::collection::vec(step(), 1..60)) {
        let mut p = Pair::new(Setup::queue("q", 6, 16, 64));
        let journal = Recorder::default();
        p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
        let mut clients: Vec<usize> = (0..3).map(|_| p.connect()).collect();
        let h = p.open(clients[0], "q");
        let waits = |w: bool| if w { Wait::Millis(50) } else { Wait::NoWait };
        for (n, s) in steps.iter().enumerate() {
            let k = n as u8;
            match *s {
                Step::Put(c, x, w) => {
                    let it = item(x, k);
                    send(&mut p, clients[c], Op::Put { handle: h, item: &it, wait: waits(w) });
                }
                Step::PutMany(c, x, count) => {
                    let list: Vec<_> = (0..count).map(|j| item(x, k.wrapping_add(j))).collect();
                    let list = packed(&list);
                    send(&mut p, clients[c], Op::PutMany { handle: h, items: Items(&list), wait: Wait::Millis(30) });
                }
                Step::Get(c, w) => {
                    send(&mut p, clients[c], Op::Get { handle: h, wait: waits(w) });
                }
                Step::GetMany(c, max) => {
                    send(&mut p, clients[c], Op::GetMany { handle: h, max_items: max.into(), max_bytes: 64, wait: Wait::Millis(40) });
                }
                Step::Return(c, x) => {
                    let it = item(x, k);
                    send(&mut p, clients[c], Op::Return { handle: h, item: &it });
                }
                Step::Deaf(c) => p.peers[clients[c]].reading = false,
                Step::Drop(c) => {
                    p.disconnect(clients[c]);
                    clients[c] = p.connect();
                }
                Step::Advance => p.advance(25),
            }
            p.pump();
            let records = journal.0.lock().unwrap().clone();
            prop_assert_eq!(&replay(&records, 1)[0], &contents(&p.m, h), "after {:?}", s);
        }
    }
}

/// A manager restored from what the journal heard holds the same items, serves them in order,
/// and journals only what happens after the restore.
#[test]
fn a_restored_manager_serves_the_recovered_items_in_order() {
    let mut p = Pair::new(Setup::queue("q", 100, 16, 4096));
    let journal = Recorder::default();
    p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
    let c = p.connect();
    let h = p.open(c, "q");
    for i in 0..50u32 {
        p.put(c, h, &i.to_le_bytes(), Wait::NoWait);
        p.pump();
    }
    for _ in 0..20 {
        p.get(c, h, Wait::NoWait);
        p.pump();
    }
    let model = replay(&journal.0.lock().unwrap(), 1);
    assert_eq!(model[0].len(), 30);

    let mut q = Pair::new(Setup::queue("q", 100, 16, 4096));
    let restored =
        q.m.restore_queue(
            "q",
            QueueSpec {
                capacity: 100,
                max_item: 16,
                mode: QueueMode::Raw,
            },
        )
        .expect("the declared queue");
    for it in &model[0] {
        q.m.restore_item(restored, it).expect("room");
    }
    let after = Recorder::default();
    q.m.set_journal(Box::new(after.clone()) as Box<dyn Journal>);
    assert!(
        after.0.lock().unwrap().is_empty(),
        "restoring is not journaled"
    );
    let c = q.connect();
    let h = q.open(c, "q");
    for i in 20..50u32 {
        assert_eq!(
            q.call(
                c,
                Op::Get {
                    handle: h,
                    wait: Wait::NoWait
                }
            ),
            Owned::Item(i.to_le_bytes().to_vec())
        );
    }
    assert_eq!(
        q.call(
            c,
            Op::Get {
                handle: h,
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::Empty)
    );
    assert_eq!(*after.0.lock().unwrap(), vec![Rec::Removed(h, 1); 30]);
}

/// Restoring reports what does not fit: a queue declared smaller than what it held, or a
/// recovered item over its `max_item`; a queue that is neither declared nor creatable is named.
#[test]
fn restoring_more_than_fits_is_a_typed_error() {
    // Storage for two one-byte items (a length prefix each), not three.
    let mut setup = Setup::queue("q", 2, 8, 12);
    setup.spares = vec![256];
    let mut p = Pair::new(setup);
    let spec = QueueSpec {
        capacity: 2,
        max_item: 8,
        mode: QueueMode::Raw,
    };
    let h = p.m.restore_queue("q", spec).unwrap();
    assert_eq!(p.m.restore_item(h, &[0; 9]), Err(RestoreError::TooLarge));
    p.m.restore_item(h, b"a").unwrap();
    p.m.restore_item(h, b"b").unwrap();
    assert_eq!(p.m.restore_item(h, b"c"), Err(RestoreError::Full));
    assert_eq!(
        p.m.restore_item(Handle::from_raw(9), b"c"),
        Err(RestoreError::NoSuchQueue)
    );
    // Created in the spare slot although clients may not create queues.
    let made = p.m.restore_queue("made", spec).unwrap();
    assert_ne!(made, h);
    p.m.restore_item(made, b"x").unwrap();
    assert_eq!(
        p.m.restore_queue("third", spec),
        Err(ErrorCode::ObjectLimit)
    );
    let c = p.connect();
    let opened = p.open(c, "made");
    assert_eq!(
        p.call(
            c,
            Op::Get {
                handle: opened,
                wait: Wait::NoWait
            }
        ),
        Owned::Item(b"x".to_vec())
    );
}

/// A queue a client creates is journaled with its name and limits.
#[test]
fn a_created_queue_is_journaled() {
    // Storage for two one-byte items (a length prefix each), not three.
    let mut setup = Setup::queue("q", 2, 8, 12);
    setup.spares = vec![256];
    setup.config.allow_create = true;
    let mut p = Pair::new(setup);
    let journal = Recorder::default();
    p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
    let c = p.connect();
    let spec = QueueSpec {
        capacity: 3,
        max_item: 8,
        mode: QueueMode::Raw,
    };
    let h = match p.call(
        c,
        Op::Create {
            name: "new",
            spec,
            exist_ok: false,
        },
    ) {
        Owned::Opened(info) => info.handle,
        other => panic!("create: {other:?}"),
    };
    p.put(c, h, b"one", Wait::NoWait);
    p.pump();
    assert_eq!(
        *journal.0.lock().unwrap(),
        vec![
            Rec::Created(h, "new".into(), spec),
            Rec::Appended(h, b"one".to_vec())
        ]
    );
}

/// Leased gets keep the journal true to the queue: a lease is journaled as a removal, an ack
/// changes nothing more, and items that come back (nack, expiry, a dropped connection) are
/// journaled as returned.
#[test]
fn leases_keep_the_journal_true_to_the_queue() {
    let mut p = Pair::new(Setup::queue("q", 16, 16, 1024));
    let journal = Recorder::default();
    p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
    let a = p.connect();
    let b = p.connect();
    let h = p.open(a, "q");
    for i in 0..8u8 {
        p.put(a, h, &[i], Wait::NoWait);
        p.pump();
    }
    let leased = |p: &mut Pair, c: usize, n: u32, ms: u32| -> u64 {
        let op = Op::GetLeased {
            handle: h,
            max_items: n,
            max_bytes: 64,
            lease_ms: ms,
            wait: Wait::NoWait,
        };
        match p.call(c, op) {
            Owned::Leased { lease, .. } => lease,
            other => panic!("leased get: {other:?}"),
        }
    };
    let check = |p: &Pair, what: &str| {
        let records = journal.0.lock().unwrap().clone();
        assert_eq!(replay(&records, 1)[0], contents(&p.m, h), "after {what}");
    };
    let acked = leased(&mut p, a, 2, 10_000);
    check(&p, "a lease of two");
    assert_eq!(p.call(a, Op::Ack { lease: acked }), Owned::Done);
    check(&p, "an ack");
    let nacked = leased(&mut p, a, 2, 10_000);
    assert_eq!(p.call(a, Op::Nack { lease: nacked }), Owned::Done);
    check(&p, "a nack");
    leased(&mut p, a, 1, 50);
    p.advance(100);
    check(&p, "an expiry");
    leased(&mut p, b, 3, 10_000);
    check(&p, "a lease held by a connection about to drop");
    p.disconnect(b);
    check(&p, "a dropped connection's leases");
    assert_eq!(contents(&p.m, h).len(), 6);
}
