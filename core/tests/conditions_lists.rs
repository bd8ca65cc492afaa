//! Conditions and lists (PROTOCOL.md §15.3), in protocol terms: a condition's waiters give
//! its lock up and take it back, and a list answers like a `Vec` within its bounds.
#![cfg(feature = "objects")]

mod harness;

use depot_core::wire::{Action, ErrorCode, ObjectKind, Op, QueueMode, QueueSpec, Wait};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

fn pair(name: &str, kind: ObjectKind, capacity: u32, storage: u32) -> Pair {
    let spec = QueueSpec {
        capacity,
        max_item: storage,
        mode: QueueMode::Value,
    };
    Pair::new(Setup {
        queues: Vec::new(),
        objects: vec![(name.into(), kind, spec, storage as usize)],
        ..Setup::default()
    })
}

fn act(p: &mut Pair, c: usize, handle: Handle, action: Action) -> Owned {
    p.call(c, Op::Act { handle, action })
}

fn send(p: &mut Pair, c: usize, handle: Handle, action: Action) -> u32 {
    p.send(c, Op::Act { handle, action })
}

const NOW: Action = Action::Acquire { wait: Wait::NoWait };
const FOREVER: Action = Action::Acquire {
    wait: Wait::Forever,
};

#[test]
fn a_condition_wait_gives_the_lock_up_until_notified_and_returns_holding_it() {
    let mut p = pair("cv", ObjectKind::Condition, 0, 0);
    let (a, b, c) = (p.connect(), p.connect(), p.connect());
    let h = p.open(a, "cv");
    let wait = Action::Wait {
        wait: Wait::Forever,
    };
    // Waiting or notifying needs the lock.
    assert_eq!(act(&mut p, a, h, wait), Owned::Error(ErrorCode::NotOwner));
    let notify = Action::Notify { n: 1 };
    assert_eq!(act(&mut p, a, h, notify), Owned::Error(ErrorCode::NotOwner));
    // Reentrant: taken twice, and both levels come back after the wait.
    assert_eq!(act(&mut p, a, h, NOW), Owned::Flag(true));
    assert_eq!(act(&mut p, a, h, NOW), Owned::Flag(true));
    let wa = send(&mut p, a, h, wait);
    p.pump();
    assert_eq!(p.take(a, wa), None);
    // The lock is free while a waits; b takes it, and c queues for it.
    assert_eq!(act(&mut p, b, h, NOW), Owned::Flag(true));
    let wc = send(&mut p, c, h, FOREVER);
    p.pump();
    assert_eq!(act(&mut p, b, h, notify), Owned::Done);
    p.pump();
    assert_eq!(p.take(a, wa), None, "notified, but b holds the lock");
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    // a waited before c asked: a has it, at both levels.
    assert_eq!(p.take(a, wa), Some(Owned::Flag(true)));
    assert_eq!(p.take(c, wc), None);
    assert_eq!(act(&mut p, a, h, Action::Release), Owned::Done);
    assert_eq!(p.take(c, wc), None, "one level still held");
    assert_eq!(act(&mut p, a, h, Action::Release), Owned::Done);
    assert_eq!(p.take(c, wc), Some(Owned::Flag(true)));
    assert_eq!(
        act(&mut p, a, h, Action::Release),
        Owned::Error(ErrorCode::NotOwner)
    );
}

#[test]
fn a_condition_wait_that_times_out_answers_false_once_it_has_the_lock() {
    let mut p = pair("cv", ObjectKind::Condition, 0, 0);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "cv");
    assert_eq!(act(&mut p, a, h, NOW), Owned::Flag(true));
    let wa = send(
        &mut p,
        a,
        h,
        Action::Wait {
            wait: Wait::Millis(50),
        },
    );
    p.pump();
    assert_eq!(act(&mut p, b, h, NOW), Owned::Flag(true));
    p.advance(60);
    assert_eq!(p.take(a, wa), None, "timed out, but b holds the lock");
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    assert_eq!(p.take(a, wa), Some(Owned::Flag(false)));
    assert_eq!(act(&mut p, b, h, NOW), Owned::Error(ErrorCode::Timeout));
    // A wait that may not block answers false at once, still holding the lock.
    let now = Action::Wait { wait: Wait::NoWait };
    assert_eq!(act(&mut p, a, h, now), Owned::Flag(false));
    assert_eq!(act(&mut p, a, h, Action::Release), Owned::Done);
}

#[test]
fn notify_wakes_as_many_as_asked_and_a_departed_waiter_is_skipped() {
    let mut p = pair("cv", ObjectKind::Condition, 0, 0);
    let (a, b, c, d) = (p.connect(), p.connect(), p.connect(), p.connect());
    let h = p.open(a, "cv");
    let mut ids = Vec::new();
    for w in [a, b, c] {
        assert_eq!(act(&mut p, w, h, NOW), Owned::Flag(true));
        ids.push(send(
            &mut p,
            w,
            h,
            Action::Wait {
                wait: Wait::Forever,
            },
        ));
        p.pump();
    }
    p.disconnect(a);
    assert_eq!(act(&mut p, d, h, NOW), Owned::Flag(true));
    assert_eq!(act(&mut p, d, h, Action::Notify { n: 1 }), Owned::Done);
    assert_eq!(act(&mut p, d, h, Action::Release), Owned::Done);
    assert_eq!(p.take(b, ids[1]), Some(Owned::Flag(true)));
    assert_eq!(p.take(c, ids[2]), None, "only one notified");
    assert_eq!(
        act(&mut p, b, h, Action::Notify { n: u32::MAX }),
        Owned::Done
    );
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    assert_eq!(p.take(c, ids[2]), Some(Owned::Flag(true)));
    assert_eq!(act(&mut p, c, h, Action::Release), Owned::Done);
    assert_eq!(p.m.status().waiters, 0);
}

/// One step against a list of small CBOR integers.
#[derive(Debug, Clone, Copy)]
enum ListStep {
    Append(u8),
    Insert(i8, u8),
    Replace(i8, u8),
    Pop(i8),
    At(i8),
    Find(u8),
    Count(u8),
    Remove(u8),
    Reverse,
}

fn list_step() -> impl Strategy<Value = ListStep> {
    let v = || 20u8..30;
    let i = || -8i8..8;
    prop_oneof![
        v().prop_map(ListStep::Append),
        (i(), v()).prop_map(|(i, v)| ListStep::Insert(i, v)),
        (i(), v()).prop_map(|(i, v)| ListStep::Replace(i, v)),
        i().prop_map(ListStep::Pop),
        i().prop_map(ListStep::At),
        v().prop_map(ListStep::Find),
        v().prop_map(ListStep::Count),
        v().prop_map(ListStep::Remove),
        Just(ListStep::Reverse),
    ]
}

/// The CBOR encoding of a small unsigned integer (1 byte below 24, else 2).
fn uint(v: u8) -> Vec<u8> {
    if v < 24 {
        vec![v]
    } else {
        vec![0x18, v]
    }
}

/// Python's position for `index` in a list of `len`.
fn position(index: i8, len: usize) -> Option<usize> {
    let at = if index < 0 {
        len as i64 + i64::from(index)
    } else {
        i64::from(index)
    };
    (0..len as i64).contains(&at).then_some(at as usize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    /// Against a `Vec`: a list of at most 6 values in 16 bytes answers every step alike and
    /// holds the same values.
    #[test]
    fn a_list_matches_a_model(steps in prop::collection::vec(list_step(), 1..80)) {
        let mut p = pair("l", ObjectKind::List, 6, 16);
        let c = p.connect();
        let h = p.open(c, "l");
        let mut model: Vec<Vec<u8>> = Vec::new();
        let packed = |m: &Vec<Vec<u8>>| -> usize { m.iter().map(|v| 1 + v.len()).sum() };
        let fits = |m: &Vec<Vec<u8>>| m.len() <= 6 && packed(m) <= 16;
        let done_if = |ok: bool| if ok { Owned::Done } else { Owned::Error(ErrorCode::Full) };
        for s in steps {
            let (got, expect) = match s {
                ListStep::Append(v) => {
                    let v = uint(v);
                    let got = act(&mut p, c, h, Action::Append { value: &v });
                    let mut next = model.clone();
                    next.push(v);
                    let ok = fits(&next);
                    if ok { model = next; }
                    (got, done_if(ok))
                }
                ListStep::Insert(i, v) => {
                    let v = uint(v);
                    let got = act(&mut p, c, h, Action::InsertAt { index: i.into(), value: &v });
                    let len = model.len() as i64;
                    let at = if i < 0 { (len + i64::from(i)).max(0) } else { i64::from(i).min(len) };
                    let mut next = model.clone();
                    next.insert(at as usize, v);
                    let ok = fits(&next);
                    if ok { model = next; }
                    (got, done_if(ok))
                }
                ListStep::Replace(i, v) => {
                    let v = uint(v);
                    let got = act(&mut p, c, h, Action::Replace { index: i.into(), value: &v });
                    let expect = match position(i, model.len()) {
                        None => Owned::Error(ErrorCode::NoSuchKey),
                        Some(at) => {
                            let mut next = model.clone();
                            next[at] = v;
                            let ok = fits(&next);
                            if ok { model = next; }
                            done_if(ok)
                        }
                    };
                    (got, expect)
                }
                ListStep::Pop(i) => {
                    let got = act(&mut p, c, h, Action::PopAt { index: i.into() });
                    let expect = match position(i, model.len()) {
                        Some(at) => Owned::Value(model.remove(at)),
                        None => Owned::Error(ErrorCode::NoSuchKey),
                    };
                    (got, expect)
                }
                ListStep::At(i) => {
                    let got = act(&mut p, c, h, Action::At { index: i.into() });
                    let expect = match position(i, model.len()) {
                        Some(at) => Owned::Value(model[at].clone()),
                        None => Owned::Error(ErrorCode::NoSuchKey),
                    };
                    (got, expect)
                }
                ListStep::Find(v) => {
                    let v = uint(v);
                    let got = act(&mut p, c, h, Action::Find { value: &v });
                    let expect = match model.iter().position(|m| *m == v) {
                        Some(at) => Owned::Count(at as u32),
                        None => Owned::Error(ErrorCode::NoSuchKey),
                    };
                    (got, expect)
                }
                ListStep::Count(v) => {
                    let v = uint(v);
                    let got = act(&mut p, c, h, Action::CountOf { value: &v });
                    (got, Owned::Count(model.iter().filter(|m| **m == v).count() as u32))
                }
                ListStep::Remove(v) => {
                    let v = uint(v);
                    let got = act(&mut p, c, h, Action::RemoveValue { value: &v });
                    let expect = match model.iter().position(|m| *m == v) {
                        Some(at) => {
                            model.remove(at);
                            Owned::Done
                        }
                        None => Owned::Error(ErrorCode::NoSuchKey),
                    };
                    (got, expect)
                }
                ListStep::Reverse => {
                    model.reverse();
                    (act(&mut p, c, h, Action::Reverse), Owned::Done)
                }
            };
            prop_assert_eq!(got, expect, "{:?}", s);
            prop_assert_eq!(act(&mut p, c, h, Action::Entries), Owned::Values(model.clone()));
            prop_assert_eq!(act(&mut p, c, h, Action::Count), Owned::Count(model.len() as u32));
            prop_assert_eq!(p.stat(0).bytes as usize, packed(&model));
        }
    }
}

#[test]
fn a_list_refuses_what_is_not_a_value_and_other_kinds_actions() {
    let mut p = pair("l", ObjectKind::List, 4, 64);
    let c = p.connect();
    let h = p.open(c, "l");
    // 0x1C is no CBOR value.
    assert_eq!(
        act(&mut p, c, h, Action::Append { value: &[0x1C] }),
        Owned::Error(ErrorCode::InvalidValue)
    );
    assert_eq!(
        act(&mut p, c, h, Action::Set),
        Owned::Error(ErrorCode::WrongKind)
    );
    assert_eq!(
        act(&mut p, c, h, Action::Lookup { key: &[1] }),
        Owned::Error(ErrorCode::WrongKind)
    );
    assert_eq!(act(&mut p, c, h, Action::Entries), Owned::Values(vec![]));
}

/// One step of a client against a condition (only steps a client not waiting may take; a
/// waiting client can only leave).
#[derive(Debug, Clone, Copy)]
enum CondStep {
    Acquire(usize),
    Release(usize),
    Wait(usize),
    Notify(usize, u32),
    Leave(usize),
}

fn cond_step() -> impl Strategy<Value = CondStep> {
    let c = || 0usize..4;
    // Weighted so that waits pile up and several notified waiters compete for the lock.
    prop_oneof![
        4 => c().prop_map(CondStep::Acquire),
        3 => c().prop_map(CondStep::Release),
        4 => c().prop_map(CondStep::Wait),
        2 => (c(), prop_oneof![Just(1u32), Just(2), Just(u32::MAX)])
            .prop_map(|(c, n)| CondStep::Notify(c, n)),
        1 => c().prop_map(CondStep::Leave),
    ]
}

/// The model of a condition: its reentrant lock's owner and levels, the clients waiting to be
/// notified, and those notified and waiting for the lock back (each with the levels it gave
/// up and its request id), both first come first served.
#[derive(Default)]
struct CondModel {
    owner: Option<(usize, u32)>,
    waiting: Vec<(usize, u32, u32)>,
    notified: Vec<(usize, u32, u32)>,
    /// Waits answered: (client, request id), to be found answered `true` on the wire.
    woken: Vec<(usize, u32)>,
}

impl CondModel {
    fn is_waiting(&self, c: usize) -> bool {
        self.waiting.iter().chain(&self.notified).any(|w| w.0 == c)
    }

    /// The lock is free: the first notified waiter takes it back at its levels.
    fn hand_on(&mut self) {
        if self.owner.is_none() && !self.notified.is_empty() {
            let (c, levels, id) = self.notified.remove(0);
            self.owner = Some((c, levels));
            self.woken.push((c, id));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    /// Against a model: the lock is never held by two clients, a wait gives every level up and
    /// is answered only once it holds them again, `notify(n)` wakes at most `n` waiters in the
    /// order they waited, waiting or notifying without the lock is `NotOwner`, and a client
    /// that leaves gives up the lock and its place among the waiters.
    #[test]
    fn a_condition_matches_a_model(steps in prop::collection::vec(cond_step(), 1..120)) {
        let mut p = pair("cv", ObjectKind::Condition, 0, 0);
        let mut clients: Vec<usize> = (0..4).map(|_| p.connect()).collect();
        let h = p.open(clients[0], "cv");
        let mut m = CondModel::default();
        for s in steps {
            let client = match s {
                CondStep::Acquire(c) | CondStep::Release(c) | CondStep::Wait(c) => c,
                CondStep::Notify(c, _) | CondStep::Leave(c) => c,
            };
            if m.is_waiting(client) && !matches!(s, CondStep::Leave(_)) {
                continue;
            }
            let conn = clients[client];
            let owns = m.owner.is_some_and(|(o, _)| o == client);
            match s {
                CondStep::Acquire(_) => {
                    let expect = match m.owner {
                        None => {
                            m.owner = Some((client, 1));
                            Owned::Flag(true)
                        }
                        Some((o, n)) if o == client => {
                            m.owner = Some((o, n + 1));
                            Owned::Flag(true)
                        }
                        Some(_) => Owned::Error(ErrorCode::Timeout),
                    };
                    prop_assert_eq!(act(&mut p, conn, h, NOW), expect);
                }
                CondStep::Release(_) => {
                    let expect = match m.owner {
                        Some((o, n)) if o == client => {
                            m.owner = (n > 1).then_some((o, n - 1));
                            m.hand_on();
                            Owned::Done
                        }
                        _ => Owned::Error(ErrorCode::NotOwner),
                    };
                    prop_assert_eq!(act(&mut p, conn, h, Action::Release), expect);
                }
                CondStep::Wait(_) => {
                    let wait = Action::Wait { wait: Wait::Forever };
                    if owns {
                        let id = send(&mut p, conn, h, wait);
                        let (_, levels) = m.owner.take().unwrap();
                        m.waiting.push((client, levels, id));
                        m.hand_on();
                    } else {
                        prop_assert_eq!(act(&mut p, conn, h, wait), Owned::Error(ErrorCode::NotOwner));
                    }
                }
                CondStep::Notify(_, n) => {
                    let expect = if owns {
                        let k = (n as usize).min(m.waiting.len());
                        let woken: Vec<_> = m.waiting.drain(..k).collect();
                        m.notified.extend(woken);
                        Owned::Done
                    } else {
                        Owned::Error(ErrorCode::NotOwner)
                    };
                    prop_assert_eq!(act(&mut p, conn, h, Action::Notify { n }), expect);
                }
                CondStep::Leave(_) => {
                    p.disconnect(conn);
                    clients[client] = p.connect();
                    if owns {
                        m.owner = None;
                    }
                    m.waiting.retain(|w| w.0 != client);
                    m.notified.retain(|w| w.0 != client);
                    m.woken.retain(|w| w.0 != client);
                    m.hand_on();
                }
            }
            p.pump();
            // Every wait the model answered is answered, holding the lock; no other is.
            for (c, id) in m.woken.drain(..) {
                prop_assert_eq!(p.take(clients[c], id), Some(Owned::Flag(true)));
            }
            for &(c, _, id) in m.waiting.iter().chain(&m.notified) {
                prop_assert_eq!(p.take(clients[c], id), None);
            }
            let free = act(&mut p, clients[0], h, Action::Count);
            prop_assert_eq!(free, Owned::Count(u32::from(m.owner.is_none())));
        }
    }
}
