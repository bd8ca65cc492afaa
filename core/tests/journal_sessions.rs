//! Sessions and items given back to a full queue in the journal: a manager restored from what
//! its journal heard (queue items, items held outside the queue, sessions' windows) applies
//! each numbered put once however often the client retries it, across any number of restarts,
//! and loses no item given back while the queue was full.

mod harness;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use depot_core::client::SendError;
use depot_core::journal::{Journal, RestoreError};
use depot_core::session::WINDOW;
use depot_core::wire::{ErrorCode, Items, Op, QueueSpec, Wait, SESSION_ID_LEN};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

const ID: [u8; SESSION_ID_LEN] = [5; SESSION_ID_LEN];
const CAPACITY: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Appended(Vec<u8>),
    Removed(u32),
    Returned(Vec<u8>),
    Held(Vec<u8>),
    HeldEntered(Vec<u8>),
    Applied([u8; SESSION_ID_LEN], u64, u32),
    /// A session's whole window, as a snapshot keeps it.
    Window([u8; SESSION_ID_LEN], u64, BTreeMap<u64, u32>),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Rec>>>);

impl Recorder {
    fn push(&self, rec: Rec) {
        self.0.lock().unwrap().push(rec);
    }
}

impl Journal for Recorder {
    fn created(&mut self, _: Handle, _: &str, _: QueueSpec) {}
    fn appended(&mut self, _: Handle, item: &[u8]) {
        self.push(Rec::Appended(item.to_vec()));
    }
    fn removed(&mut self, _: Handle, count: u32) {
        self.push(Rec::Removed(count));
    }
    fn returned(&mut self, _: Handle, item: &[u8]) {
        self.push(Rec::Returned(item.to_vec()));
    }
    fn held(&mut self, _: Handle, item: &[u8]) {
        self.push(Rec::Held(item.to_vec()));
    }
    fn held_entered(&mut self, _: Handle, item: &[u8]) {
        self.push(Rec::HeldEntered(item.to_vec()));
    }
    fn session_applied(&mut self, session: &[u8; SESSION_ID_LEN], seq: u64, applied: u32) {
        self.push(Rec::Applied(*session, seq, applied));
    }
}

/// What the journal says the manager holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct State {
    items: VecDeque<Vec<u8>>,
    /// Held outside the queue, the next to enter first.
    held: VecDeque<Vec<u8>>,
    /// Per session: numbers below this fell out of the window; number to items applied.
    sessions: BTreeMap<[u8; SESSION_ID_LEN], (u64, BTreeMap<u64, u32>)>,
}

fn replay(records: &[Rec]) -> State {
    let mut s = State::default();
    for rec in records {
        match rec {
            Rec::Appended(i) => s.items.push_back(i.clone()),
            Rec::Removed(n) => {
                for _ in 0..*n {
                    s.items.pop_front().expect("removed from an empty queue");
                }
            }
            Rec::Returned(i) => s.items.push_front(i.clone()),
            Rec::Held(i) => s.held.push_front(i.clone()),
            Rec::HeldEntered(i) => {
                assert_eq!(s.held.pop_front().as_ref(), Some(i), "the front held item");
                s.items.push_back(i.clone());
            }
            Rec::Applied(id, seq, applied) => {
                let (expired, puts) = s.sessions.entry(*id).or_default();
                let n = puts.entry(*seq).or_default();
                assert!(*applied > *n, "reported only when the count grows");
                *n = *applied;
                while puts.len() > WINDOW {
                    let (oldest, _) = puts.pop_first().unwrap();
                    *expired = (*expired).max(oldest + 1);
                }
            }
            Rec::Window(id, expired, puts) => {
                s.sessions.insert(*id, (*expired, puts.clone()));
            }
        }
    }
    s
}

fn setup() -> Setup {
    // Room for about five small items: give-backs fill the storage and wait outside.
    let mut s = Setup::queue("q", CAPACITY, 16, 44);
    s.park_slots = 8;
    s
}

/// A manager restored from `records`; `journal` starts again from a snapshot of what it
/// holds (as a log starts a new segment after recovery) and hears it from now on.
fn restored(records: &[Rec], journal: &Recorder) -> (Pair, Handle) {
    let mut p = Pair::new(setup());
    p.m.serve_sessions(vec![SessionSlot::EMPTY; 2]);
    let state = replay(records);
    let spec = QueueSpec {
        capacity: CAPACITY,
        max_item: 16,
        mode: QueueMode::Raw,
    };
    let h = p.m.restore_queue("q", spec).unwrap();
    for i in &state.items {
        p.m.restore_item(h, i).unwrap();
    }
    for i in state.held.iter().rev() {
        p.m.restore_held(h, i).unwrap();
    }
    for (id, (expired, puts)) in state.sessions {
        p.m.restore_session(id, expired, puts).unwrap();
    }
    let mut snapshot: Vec<Rec> =
        p.m.queue_items(h)
            .unwrap()
            .map(|(a, b)| Rec::Appended([a, b].concat()))
            .collect();
    let held: Vec<&[u8]> = p.m.queue_held(h).collect();
    snapshot.extend(held.into_iter().rev().map(|i| Rec::Held(i.to_vec())));
    snapshot.extend(
        p.m.session_windows()
            .map(|w| Rec::Window(*w.id(), w.expired_below(), w.puts().collect())),
    );
    *journal.0.lock().unwrap() = snapshot;
    p.m.set_journal(Box::new(journal.clone()) as Box<dyn Journal>);
    (p, h)
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
    /// A new numbered put of this many items, waiting a little or not at all.
    Put(u8, bool),
    /// An unanswered put sent again.
    Retry(usize),
    /// The consumer takes up to this many items.
    Get(u8),
    /// The consumer gives its last item back.
    Return,
    /// The producer's replies are lost and its connection drops; it resumes its session.
    Drop,
    /// The manager stops (every connection and reply is lost) and starts from its journal.
    Restart,
    Advance,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1..4u8, any::<bool>()).prop_map(|(n, w)| Step::Put(n, w)),
        2 => any::<usize>().prop_map(Step::Retry),
        2 => (1..4u8).prop_map(Step::Get),
        2 => Just(Step::Return),
        1 => Just(Step::Drop),
        1 => Just(Step::Restart),
        1 => Just(Step::Advance),
    ]
}

/// The producer and consumer and what they know.
struct World {
    p: Pair,
    h: Handle,
    journal: Recorder,
    producer: usize,
    consumer: usize,
    /// Puts not answered yet: number to items.
    open: BTreeMap<u64, Vec<Vec<u8>>>,
    /// Requests of the producer's connection: id to number.
    sent: HashMap<u32, u64>,
    next_seq: u64,
    got: Vec<Vec<u8>>,
}

impl World {
    fn new() -> World {
        let journal = Recorder::default();
        let (p, h) = restored(&[], &journal);
        let mut w = World {
            p,
            h,
            journal,
            producer: 0,
            consumer: 0,
            open: BTreeMap::new(),
            sent: HashMap::new(),
            next_seq: 1,
            got: Vec::new(),
        };
        w.connect();
        w
    }

    fn connect(&mut self) {
        self.producer = self.p.connect();
        let opened = self.p.call(self.producer, Op::Session { id: ID });
        assert!(matches!(opened, Owned::Session(_)), "{opened:?}");
        self.consumer = self.p.connect();
        self.sent.clear();
    }

    /// Sends put `seq`, unless the client has as many requests in flight as it can track
    /// (blocked puts on a full queue) or its transmit buffer is full: the put stays open and is
    /// sent again later.
    fn send(&mut self, seq: u64, wait: Wait) {
        let items = &self.open[&seq];
        let h = self.h;
        let list = packed(items);
        let op = if items.len() == 1 {
            Op::PutSeq {
                seq,
                handle: h,
                item: &items[0],
                wait,
            }
        } else {
            Op::PutManySeq {
                seq,
                handle: h,
                items: Items(&list),
                wait,
            }
        };
        match self.p.try_send(self.producer, op) {
            Ok(id) => {
                self.sent.insert(id, seq);
            }
            Err(SendError::InFlightLimit | SendError::WouldBlock) => {}
            Err(e) => panic!("put {seq}: send failed: {e}"),
        }
    }

    /// Answered puts leave `open`.
    fn collect(&mut self) {
        let ids: Vec<u32> = self.sent.keys().copied().collect();
        for id in ids {
            let Some(reply) = self.p.take(self.producer, id) else {
                continue;
            };
            let seq = self.sent.remove(&id).unwrap();
            let Some(items) = self.open.get(&seq) else {
                continue;
            };
            match reply {
                Owned::Done => assert_eq!(items.len(), 1),
                Owned::Accepted(n, None) => assert_eq!(n as usize, items.len()),
                // Not all in: tried again later.
                Owned::Accepted(_, Some(_)) | Owned::Error(ErrorCode::Full) => continue,
                Owned::Error(ErrorCode::Timeout | ErrorCode::WaiterLimit) => continue,
                other => panic!("put {seq}: {other:?}"),
            }
            self.open.remove(&seq);
        }
    }

    fn get(&mut self, max: u8) {
        for _ in 0..max {
            let op = Op::Get {
                handle: self.h,
                wait: Wait::NoWait,
            };
            match self.p.call(self.consumer, op) {
                Owned::Item(i) => self.got.push(i),
                Owned::Error(ErrorCode::Empty) => break,
                other => panic!("get: {other:?}"),
            }
        }
    }

    fn run(&mut self, s: &Step) {
        match *s {
            Step::Put(n, waits) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let items = (0..n).map(|j| format!("{seq}.{j}").into_bytes()).collect();
                self.open.insert(seq, items);
                let wait = if waits {
                    Wait::Millis(30)
                } else {
                    Wait::NoWait
                };
                self.send(seq, wait);
            }
            Step::Retry(k) => {
                if let Some(&seq) = self.open.keys().nth(k % self.open.len().max(1)) {
                    self.send(seq, Wait::NoWait);
                }
            }
            Step::Get(n) => self.get(n),
            Step::Return => {
                if let Some(item) = self.got.pop() {
                    let op = Op::Return {
                        handle: self.h,
                        item: &item,
                    };
                    match self.p.call(self.consumer, op) {
                        Owned::Done => {}
                        Owned::Error(ErrorCode::WaiterLimit) => self.got.push(item),
                        other => panic!("return: {other:?}"),
                    }
                }
            }
            Step::Drop => {
                self.p.peers[self.producer].reading = false;
                self.p.pump();
                self.p.disconnect(self.producer);
                self.producer = self.p.connect();
                let resumed = self.p.call(self.producer, Op::Session { id: ID });
                assert_eq!(resumed, Owned::Session(true));
                self.sent.clear();
            }
            Step::Restart => {
                let records = self.journal.0.lock().unwrap().clone();
                let (p, h) = restored(&records, &self.journal);
                self.p = p;
                self.h = h;
                self.connect();
            }
            Step::Advance => self.p.advance(20),
        }
        self.p.pump();
        self.collect();
    }

    /// The journal's account of the queue is the manager's.
    fn check(&self, after: &Step) -> Result<(), TestCaseError> {
        let state = replay(&self.journal.0.lock().unwrap());
        let items: VecDeque<Vec<u8>> = self
            .p
            .m
            .queue_items(self.h)
            .unwrap()
            .map(|(a, b)| [a, b].concat())
            .collect();
        let held: VecDeque<Vec<u8>> = self.p.m.queue_held(self.h).map(<[u8]>::to_vec).collect();
        prop_assert_eq!(&state.items, &items, "items after {:?}", after);
        prop_assert_eq!(&state.held, &held, "held items after {:?}", after);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any mix of numbered puts, retries, gets, give-backs, dropped connections and restarts
    /// from the journal; then every unanswered put is retried until answered while the queue is
    /// drained. Each item of each put is delivered exactly once.
    #[test]
    fn restarts_from_the_journal_apply_each_numbered_put_once(
        steps in prop::collection::vec(step(), 1..50)
    ) {
        each_numbered_put_applied_once(&steps)?;
    }
}

/// More puts refused `Full` than the client has request slots: retried in rounds, each applied
/// once (a case the property test found).
#[test]
fn more_refused_puts_than_request_slots_are_each_applied_once() {
    let steps = vec![Step::Put(1, false); 49];
    each_numbered_put_applied_once(&steps).unwrap();
}

fn each_numbered_put_applied_once(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut w = World::new();
    for s in steps {
        w.run(s);
        w.check(s)?;
    }
    let mut rounds = 0;
    while !w.open.is_empty() {
        rounds += 1;
        prop_assert!(rounds < 200, "puts never answered: {:?}", w.open);
        w.get(u8::MAX);
        let open: Vec<u64> = w.open.keys().copied().collect();
        for seq in open {
            w.send(seq, Wait::NoWait);
        }
        w.p.pump();
        w.collect();
    }
    w.get(u8::MAX);
    prop_assert_eq!(w.p.m.queue_held(w.h).count(), 0);
    let mut got = w.got.clone();
    got.sort();
    let mut expected: Vec<Vec<u8>> = (1..w.next_seq)
        .flat_map(|seq| {
            let n = steps
                .iter()
                .filter_map(|s| match s {
                    Step::Put(n, _) => Some(*n),
                    _ => None,
                })
                .nth(seq as usize - 1)
                .unwrap();
            (0..n).map(move |j| format!("{seq}.{j}").into_bytes())
        })
        .collect();
    expected.sort();
    prop_assert_eq!(got, expected);
    Ok(())
}

/// A numbered put applied before a restart is answered `Done` after it and not applied again;
/// a batch cut short by a full queue gets only its rest applied. Without the session records
/// (a journal that ignores them) the same retry is applied a second time.
#[test]
fn a_retry_after_a_restart_is_applied_once_or_only_its_rest() {
    let journal = Recorder::default();
    let (mut p, h) = restored(&[], &journal);
    let c = p.connect();
    assert_eq!(p.call(c, Op::Session { id: ID }), Owned::Session(false));
    let one = Op::PutSeq {
        seq: 1,
        handle: h,
        item: b"one",
        wait: Wait::NoWait,
    };
    assert_eq!(p.call(c, one), Owned::Done);
    let batch_items = [b"aaaa", b"bbbb", b"cccc", b"dddd", b"eeee"].map(|i| i.to_vec());
    let list = packed(&batch_items);
    let batch = Op::PutManySeq {
        seq: 2,
        handle: h,
        items: Items(&list),
        wait: Wait::NoWait,
    };
    // Storage for four of the five: "eeee" is refused.
    assert_eq!(p.call(c, batch), Owned::Accepted(4, Some(ErrorCode::Full)));
    let records = journal.0.lock().unwrap().clone();
    assert!(records.contains(&Rec::Applied(ID, 1, 1)));
    assert!(records.contains(&Rec::Applied(ID, 2, 4)));

    let (mut q, h) = restored(&records, &journal);
    let c = q.connect();
    assert_eq!(q.call(c, Op::Session { id: ID }), Owned::Session(true));
    assert_eq!(q.call(c, one), Owned::Done);
    let g = q.connect();
    let get = Op::Get {
        handle: h,
        wait: Wait::NoWait,
    };
    assert_eq!(q.call(g, get), Owned::Item(b"one".to_vec()));
    assert_eq!(q.call(c, batch), Owned::Accepted(5, None));
    let mut rest = Vec::new();
    while let Owned::Item(i) = q.call(g, get) {
        rest.push(i);
    }
    assert_eq!(rest, batch_items);

    // The same log without its session records: the retry is a new put.
    let forgetful: Vec<Rec> = records
        .into_iter()
        .filter(|r| !matches!(r, Rec::Applied(..)))
        .collect();
    let (mut q, h) = restored(&forgetful, &Recorder::default());
    let c = q.connect();
    assert_eq!(q.call(c, Op::Session { id: ID }), Owned::Session(false));
    let g = q.connect();
    let get = Op::Get {
        handle: h,
        wait: Wait::NoWait,
    };
    assert_eq!(q.call(g, get), Owned::Item(b"one".to_vec()));
    assert_eq!(q.call(c, one), Owned::Done);
    assert_eq!(q.stat(0).len, 5, "applied twice");
}

/// An item given back while its queue is full waits outside it; a manager restored from the
/// journal holds it there too, and it enters the queue when there is room.
#[test]
fn an_item_given_back_to_a_full_queue_survives_a_restart() {
    let journal = Recorder::default();
    let (mut p, h) = restored(&[], &journal);
    let c = p.connect();
    // Three items of eight bytes and one of four (and a length prefix each) fill the storage.
    let filling: Vec<Vec<u8>> = vec![vec![0; 8], vec![1; 8], vec![2; 8], vec![3; 4]];
    for it in &filling {
        p.put(c, h, it, Wait::NoWait);
    }
    p.pump();
    for back in [b"x", b"y"] {
        let op = Op::Return {
            handle: h,
            item: back,
        };
        assert_eq!(p.call(c, op), Owned::Done);
    }
    // Given back last, "y" is at the front of those held.
    let held: Vec<&[u8]> = p.m.queue_held(h).collect();
    assert_eq!(held, [&b"y"[..], b"x"]);
    let records = journal.0.lock().unwrap().clone();
    let (mut q, h) = restored(&records, &journal);
    let held: Vec<&[u8]> = q.m.queue_held(h).collect();
    assert_eq!(held, [&b"y"[..], b"x"]);
    let c = q.connect();
    let get = Op::Get {
        handle: h,
        wait: Wait::NoWait,
    };
    let mut all = Vec::new();
    while let Owned::Item(i) = q.call(c, get) {
        all.push(i);
    }
    let mut expected = filling.clone();
    expected.extend([b"y".to_vec(), b"x".to_vec()]);
    assert_eq!(all, expected);
    assert_eq!(
        replay(&journal.0.lock().unwrap()),
        State {
            sessions: BTreeMap::new(),
            ..State::default()
        }
    );
}

/// Restoring a session where none are served, or more sessions than slots, says so.
#[test]
fn restoring_sessions_reports_what_does_not_fit() {
    let mut p = Pair::new(setup());
    assert_eq!(
        p.m.restore_session(ID, 0, [(1, 1)]),
        Err(RestoreError::NoSessions)
    );
    p.m.serve_sessions(vec![SessionSlot::EMPTY; 1]);
    p.m.restore_session([1; 16], 3, [(4, 2), (5, 1)]).unwrap();
    // A second session takes the only slot (no connection holds the first).
    p.m.restore_session([2; 16], 0, [(1, 1)]).unwrap();
    let windows: Vec<_> =
        p.m.session_windows()
            .map(|w| (*w.id(), w.expired_below(), w.puts().collect::<Vec<_>>()))
            .collect();
    assert_eq!(windows, [([2; 16], 0, vec![(1, 1)])]);
    // More puts than the window keeps: the oldest fall out.
    p.m.restore_session([3; 16], 0, (0..WINDOW as u64 + 3).map(|s| (s, 1)))
        .unwrap();
    let w = p.m.session_windows().next().unwrap();
    assert_eq!(w.expired_below(), 3);
    assert_eq!(w.puts().count(), WINDOW);
    assert!(w.puts().all(|(s, _)| s >= 3));
}
