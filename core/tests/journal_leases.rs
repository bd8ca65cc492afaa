//! The journal hears leases: replaying what it heard (items taken under a lease, leases ended,
//! items given back with their delivery counts) gives the queue contents and the leases held at
//! every step; giving the outstanding leases back gives what the manager does when their holders
//! go away; and a manager restored from that state redelivers them with their counts, under
//! lease ids above the journal's.

mod harness;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use depot_core::journal::Journal;
use depot_core::wire::{Op, QueueSpec, Wait};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

type Item = (Vec<u8>, u8);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Created(Handle),
    Appended(Handle, Vec<u8>),
    Removed(Handle, u32),
    Returned(Handle, Vec<u8>, u8),
    Leased(u64, Handle, Vec<u8>, u8),
    Ended(u64),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Rec>>>);

impl Recorder {
    fn push(&self, rec: Rec) {
        self.0.lock().unwrap().push(rec);
    }
}

impl Journal for Recorder {
    fn created(&mut self, handle: Handle, _: &str, _: QueueSpec) {
        self.push(Rec::Created(handle));
    }
    fn appended(&mut self, handle: Handle, item: &[u8]) {
        self.push(Rec::Appended(handle, item.to_vec()));
    }
    fn removed(&mut self, handle: Handle, count: u32) {
        self.push(Rec::Removed(handle, count));
    }
    fn returned(&mut self, handle: Handle, item: &[u8]) {
        self.push(Rec::Returned(handle, item.to_vec(), 0));
    }
    fn leased(&mut self, lease: u64, handle: Handle, item: &[u8], deliveries: u8) {
        self.push(Rec::Leased(lease, handle, item.to_vec(), deliveries));
    }
    fn lease_ended(&mut self, lease: u64) {
        self.push(Rec::Ended(lease));
    }
    fn returned_leased(&mut self, handle: Handle, item: &[u8], deliveries: u8) {
        self.push(Rec::Returned(handle, item.to_vec(), deliveries));
    }
}

/// What the journal says: queue 0's items with counts, and the leases outstanding by id.
#[derive(Debug, Default)]
struct Model {
    queue: VecDeque<Item>,
    leases: BTreeMap<u64, Vec<Item>>,
}

fn replay(records: &[Rec]) -> Model {
    let mut m = Model::default();
    for rec in records {
        match rec {
            Rec::Created(_) => {}
            Rec::Appended(_, item) => m.queue.push_back((item.clone(), 0)),
            Rec::Removed(_, n) => {
                for _ in 0..*n {
                    m.queue.pop_front().expect("removed from an empty queue");
                }
            }
            Rec::Returned(_, item, d) => m.queue.push_front((item.clone(), *d)),
            Rec::Leased(lease, _, item, d) => {
                m.leases.entry(*lease).or_default().push((item.clone(), *d));
            }
            Rec::Ended(lease) => {
                assert!(m.leases.remove(lease).is_some(), "an unknown lease ended");
            }
        }
    }
    m
}

/// The queue as recovery leaves it: outstanding leases back at the head, the oldest first.
fn recovered(m: &Model) -> VecDeque<Item> {
    let mut queue = m.queue.clone();
    for items in m.leases.values().rev() {
        for item in items.iter().rev() {
            queue.push_front(item.clone());
        }
    }
    queue
}

fn contents(m: &Manager, h: Handle) -> VecDeque<Item> {
    let counts = m.queue_deliveries(h).expect("a queue");
    m.queue_items(h)
        .expect("a queue")
        .map(|(a, b)| [a, b].concat())
        .zip(counts)
        .collect()
}

#[derive(Debug, Clone)]
enum Step {
    Put(usize, u8),
    Lease(usize, u8, bool),
    Ack(usize),
    Nack(usize),
    Get(usize),
    Drop(usize),
    Advance,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, any::<u8>()).prop_map(|(c, x)| Step::Put(c, x)),
        3 => (0..3usize, 1..4u8, any::<bool>()).prop_map(|(c, n, short)| Step::Lease(c, n, short)),
        2 => (0..3usize).prop_map(Step::Ack),
        1 => (0..3usize).prop_map(Step::Nack),
        1 => (0..3usize).prop_map(Step::Get),
        1 => (0..3usize).prop_map(Step::Drop),
        1 => Just(Step::Advance),
    ]
}

fn leased_get(h: Handle, n: u32, lease_ms: u32) -> Op<'static> {
    Op::GetLeased {
        handle: h,
        max_items: n,
        max_bytes: 256,
        lease_ms,
        wait: Wait::NoWait,
    }
}

const LONG: u32 = 60_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_journal_with_leases_gives_the_manager_state(
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut p = Pair::new(Setup::queue("q", 12, 16, 256));
        let journal = Recorder::default();
        p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
        let mut clients: Vec<usize> = (0..3).map(|_| p.connect()).collect();
        let mut held: Vec<Vec<u64>> = vec![Vec::new(); 3];
        let h = p.open(clients[0], "q");
        for (n, s) in steps.iter().enumerate() {
            match *s {
                Step::Put(c, x) => {
                    let it = vec![x, n as u8];
                    p.call(clients[c], Op::Put { handle: h, item: &it, wait: Wait::NoWait });
                }
                Step::Lease(c, count, short) => {
                    let ms = if short { 40 } else { LONG };
                    if let Owned::Leased { lease, .. } = p.call(clients[c], leased_get(h, count.into(), ms)) {
                        held[c].push(lease);
                    }
                }
                Step::Ack(c) => {
                    if let Some(lease) = held[c].pop() {
                        p.call(clients[c], Op::Ack { lease });
                    }
                }
                Step::Nack(c) => {
                    if let Some(lease) = held[c].pop() {
                        p.call(clients[c], Op::Nack { lease });
                    }
                }
                Step::Get(c) => {
                    p.call(clients[c], Op::Get { handle: h, wait: Wait::NoWait });
                }
                Step::Drop(c) => {
                    p.disconnect(clients[c]);
                    clients[c] = p.connect();
                    held[c].clear();
                }
                Step::Advance => p.advance(25),
            }
            p.pump();
            let model = replay(&journal.0.lock().unwrap());
            prop_assert_eq!(&model.queue, &contents(&p.m, h), "after {:?}", s);
            let outstanding: Vec<u64> = model.leases.keys().copied().collect();
            let mut live: Vec<u64> = p.m.leases().held().map(|(l, _)| l).collect();
            live.sort_unstable();
            prop_assert_eq!(outstanding, live, "after {:?}", s);
        }
        // Recovery's answer equals what the manager does when every lease ends unacknowledged
        // at once (every holder gone in the same instant: the clock jumps past every deadline).
        let model = replay(&journal.0.lock().unwrap());
        let expected = recovered(&model);
        p.now = p.now.add_millis(u64::from(LONG) + 1000);
        let now = p.now;
        p.m.handle_timeout(now);
        p.pump();
        prop_assert_eq!(&expected, &contents(&p.m, h));
        prop_assert_eq!(p.m.leases().leased(), 0);
        // And the journal still agrees after those returns.
        let model = replay(&journal.0.lock().unwrap());
        prop_assert_eq!(&model.queue, &expected);
        prop_assert!(model.leases.is_empty());
    }
}

/// One consumer holds two leases and acks a third; its connection drops. Recovery from the
/// journal taken before the drop equals the manager's state after it, and a manager restored
/// from it redelivers the unacknowledged items, counts + 1, under new lease ids.
#[test]
fn a_restored_manager_redelivers_unacknowledged_leases_with_their_counts() {
    let mut p = Pair::new(Setup::queue("q", 16, 16, 1024));
    let journal = Recorder::default();
    p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
    let a = p.connect();
    let h = p.open(a, "q");
    for i in 0..6u8 {
        p.put(a, h, &[i], Wait::NoWait);
        p.pump();
    }
    let take = |p: &mut Pair, n: u32| match p.call(a, leased_get(h, n, LONG)) {
        Owned::Leased { lease, items, .. } => (lease, items),
        other => panic!("leased get: {other:?}"),
    };
    let (first, items) = take(&mut p, 2);
    assert_eq!(items, [vec![0], vec![1]]);
    assert_eq!(p.call(a, Op::Nack { lease: first }), Owned::Done);
    let (first, _) = take(&mut p, 1); // [0], its second delivery
    let (acked, _) = take(&mut p, 1);
    assert_eq!(p.call(a, Op::Ack { lease: acked }), Owned::Done);
    let (last, _) = take(&mut p, 2);
    let records = journal.0.lock().unwrap().clone();
    let model = replay(&records);
    assert_eq!(
        model.leases.keys().copied().collect::<Vec<_>>(),
        [first, last]
    );
    let expected = recovered(&model);
    assert_eq!(
        expected,
        [
            (vec![0], 2),
            (vec![2], 1),
            (vec![3], 1),
            (vec![4], 0),
            (vec![5], 0)
        ]
    );
    p.disconnect(a);
    p.pump();
    assert_eq!(contents(&p.m, h), expected, "the holder went away");

    // A new manager restored from the journal.
    let mut q = Pair::new(Setup::queue("q", 16, 16, 1024));
    let spec = QueueSpec {
        capacity: 16,
        max_item: 16,
        mode: QueueMode::Raw,
    };
    let restored = q.m.restore_queue("q", spec).unwrap();
    for (item, d) in &expected {
        q.m.restore_item_delivered(restored, item, *d).unwrap();
    }
    let floor = last + 1;
    q.m.restore_lease_ids(floor);
    let c = q.connect();
    let h = q.open(c, "q");
    match q.call(c, leased_get(h, 5, LONG)) {
        Owned::Leased {
            lease,
            deliveries,
            items,
        } => {
            assert!(lease >= floor, "a new id: {lease} < {floor}");
            assert_eq!(items, [vec![0], vec![2], vec![3], vec![4], vec![5]]);
            assert_eq!(deliveries, [3, 2, 2, 1, 1]);
        }
        other => panic!("leased get: {other:?}"),
    }
}
