//! Objects beside queues (protocol version 3), in protocol terms: events, locks, semaphores,
//! values, barriers and dicts, with their waiters and what a departed client leaves behind.
#![cfg(feature = "objects")]

mod harness;

use depot_core::wire::{Action, ErrorCode, ObjectKind, Op, QueueMode, QueueSpec, Wait};
use depot_core::*;
use harness::*;
use proptest::prelude::*;

fn spec(capacity: u32, max_item: u32) -> QueueSpec {
    QueueSpec {
        capacity,
        max_item,
        mode: QueueMode::Value,
    }
}

/// A manager with one object `name` of `kind` and the default everything else.
fn pair(name: &str, kind: ObjectKind, capacity: u32, storage: u32) -> Pair {
    Pair::new(Setup {
        queues: Vec::new(),
        objects: vec![(name.into(), kind, spec(capacity, storage), storage as usize)],
        ..Setup::default()
    })
}

fn act(p: &mut Pair, c: usize, handle: Handle, action: Action) -> Owned {
    p.call(c, Op::Act { handle, action })
}

fn send(p: &mut Pair, c: usize, handle: Handle, action: Action) -> u32 {
    p.send(c, Op::Act { handle, action })
}

const FOREVER: Wait = Wait::Forever;

#[test]
fn an_event_wakes_every_waiter_when_set() {
    let mut p = pair("ready", ObjectKind::Event, 0, 0);
    let (a, b, c) = (p.connect(), p.connect(), p.connect());
    let h = p.open(a, "ready");
    assert_eq!(act(&mut p, a, h, Action::IsSet), Owned::Flag(false));
    let wa = send(&mut p, a, h, Action::Wait { wait: FOREVER });
    let wb = send(&mut p, b, h, Action::Wait { wait: FOREVER });
    p.pump();
    assert_eq!((p.take(a, wa), p.take(b, wb)), (None, None));
    assert_eq!(p.stat(0).getters, 2);
    assert_eq!(act(&mut p, c, h, Action::Set), Owned::Done);
    assert_eq!(p.take(a, wa), Some(Owned::Flag(true)));
    assert_eq!(p.take(b, wb), Some(Owned::Flag(true)));
    // Set: a wait returns at once; cleared: it times out on the manager's clock.
    let wait = Action::Wait {
        wait: Wait::Millis(50),
    };
    assert_eq!(act(&mut p, a, h, wait), Owned::Flag(true));
    assert_eq!(act(&mut p, a, h, Action::Clear), Owned::Done);
    assert_eq!(act(&mut p, a, h, Action::IsSet), Owned::Flag(false));
    let id = send(&mut p, a, h, wait);
    p.advance(50);
    assert_eq!(p.take(a, id), None);
    p.advance(1);
    assert_eq!(p.take(a, id), Some(Owned::Error(ErrorCode::Timeout)));
    assert_eq!(p.stat(0).getters, 0);
    // A queue action on an event is the wrong kind, and the reverse.
    let get = Op::Get {
        handle: h,
        wait: Wait::NoWait,
    };
    assert_eq!(p.call(a, get), Owned::Error(ErrorCode::WrongKind));
    assert_eq!(
        act(&mut p, a, h, Action::Get),
        Owned::Error(ErrorCode::WrongKind)
    );
}

#[test]
fn a_lock_held_by_a_departed_client_goes_to_the_next_waiter() {
    let mut p = pair("lk", ObjectKind::Lock, 0, 0);
    let (a, b, c) = (p.connect(), p.connect(), p.connect());
    let h = p.open(a, "lk");
    let acquire = |wait| Action::Acquire { wait };
    assert_eq!(act(&mut p, a, h, acquire(FOREVER)), Owned::Flag(true));
    // Not reentrant: its own holder cannot take it again.
    assert_eq!(
        act(&mut p, a, h, acquire(Wait::NoWait)),
        Owned::Error(ErrorCode::Timeout)
    );
    assert_eq!(
        act(&mut p, c, h, Action::Release),
        Owned::Error(ErrorCode::NotOwner)
    );
    let wb = send(&mut p, b, h, acquire(FOREVER));
    let wc = send(&mut p, c, h, acquire(FOREVER));
    p.pump();
    assert_eq!(p.take(b, wb), None);
    assert_eq!(act(&mut p, a, h, Action::Count), Owned::Count(0));
    p.disconnect(a);
    // FIFO: the oldest waiter gets it; the next still waits.
    assert_eq!(p.take(b, wb), Some(Owned::Flag(true)));
    assert_eq!(p.take(c, wc), None);
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    assert_eq!(p.take(c, wc), Some(Owned::Flag(true)));
    assert_eq!(p.m.status().waiters, 1, "c's holding only");
    assert_eq!(act(&mut p, c, h, Action::Release), Owned::Done);
    assert_eq!(act(&mut p, c, h, Action::Count), Owned::Count(1));
    assert_eq!(p.m.status().waiters, 0);
}

#[test]
fn a_client_blocked_on_a_lock_it_holds_frees_it_when_it_goes() {
    let mut p = pair("lk", ObjectKind::Lock, 0, 0);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "lk");
    assert_eq!(
        act(&mut p, a, h, Action::Acquire { wait: FOREVER }),
        Owned::Flag(true)
    );
    send(&mut p, a, h, Action::Acquire { wait: FOREVER });
    let wb = send(&mut p, b, h, Action::Acquire { wait: FOREVER });
    p.pump();
    p.disconnect(a);
    assert_eq!(p.take(b, wb), Some(Owned::Flag(true)));
    assert_eq!(p.stat(0).putters, 1, "one holder record: b's");
}

#[test]
fn an_rlock_is_released_after_as_many_releases() {
    let mut p = pair("rl", ObjectKind::RLock, 0, 0);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "rl");
    let now = Action::Acquire { wait: Wait::NoWait };
    assert_eq!(act(&mut p, a, h, now), Owned::Flag(true));
    assert_eq!(act(&mut p, a, h, now), Owned::Flag(true));
    assert_eq!(act(&mut p, a, h, Action::Release), Owned::Done);
    assert_eq!(
        act(&mut p, b, h, now),
        Owned::Error(ErrorCode::Timeout),
        "still held once"
    );
    let wb = send(&mut p, b, h, Action::Acquire { wait: FOREVER });
    assert_eq!(act(&mut p, a, h, Action::Release), Owned::Done);
    assert_eq!(p.take(b, wb), Some(Owned::Flag(true)));
    assert_eq!(
        act(&mut p, a, h, Action::Release),
        Owned::Error(ErrorCode::NotOwner)
    );
}

#[test]
fn semaphore_permits_of_a_departed_holder_come_back() {
    let mut p = pair("sem", ObjectKind::Semaphore, 2, 0);
    let (a, b, c) = (p.connect(), p.connect(), p.connect());
    let h = p.open(a, "sem");
    let acquire = Action::Acquire { wait: FOREVER };
    assert_eq!(act(&mut p, a, h, acquire), Owned::Flag(true));
    assert_eq!(act(&mut p, a, h, acquire), Owned::Flag(true));
    assert_eq!(act(&mut p, b, h, Action::Count), Owned::Count(0));
    let wb = send(&mut p, b, h, acquire);
    let wc = send(&mut p, c, h, acquire);
    p.pump();
    assert_eq!((p.take(b, wb), p.take(c, wc)), (None, None));
    p.disconnect(a);
    assert_eq!(p.take(b, wb), Some(Owned::Flag(true)));
    assert_eq!(p.take(c, wc), Some(Owned::Flag(true)));
    assert_eq!(act(&mut p, b, h, Action::Count), Owned::Count(0));
    // An unbounded semaphore takes releases beyond its start.
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    assert_eq!(act(&mut p, b, h, Action::Count), Owned::Count(3));
}

#[test]
fn a_bounded_semaphore_refuses_a_release_beyond_its_bound() {
    let mut p = pair("bs", ObjectKind::BoundedSemaphore, 1, 0);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "bs");
    assert_eq!(
        act(&mut p, a, h, Action::Release),
        Owned::Error(ErrorCode::Overflow)
    );
    let acquire = Action::Acquire { wait: FOREVER };
    assert_eq!(act(&mut p, a, h, acquire), Owned::Flag(true));
    // Released by another client on a's behalf: a's departure then returns nothing more.
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    p.disconnect(a);
    assert_eq!(act(&mut p, b, h, Action::Count), Owned::Count(1));
    assert_eq!(
        act(&mut p, b, h, Action::Release),
        Owned::Error(ErrorCode::Overflow)
    );
}

#[test]
fn a_value_is_got_set_and_compared_and_set() {
    let mut p = pair("v", ObjectKind::Value, 0, 8);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "v");
    assert_eq!(act(&mut p, a, h, Action::Get), Owned::Value(vec![0xF6]));
    assert_eq!(act(&mut p, a, h, Action::Put { value: &[1] }), Owned::Done);
    assert_eq!(act(&mut p, b, h, Action::Get), Owned::Value(vec![1]));
    let cas = |expected, value| Action::CompareAndSet { expected, value };
    assert_eq!(act(&mut p, b, h, cas(&[2], &[3])), Owned::Flag(false));
    assert_eq!(act(&mut p, b, h, cas(&[1], &[2])), Owned::Flag(true));
    assert_eq!(act(&mut p, a, h, Action::Get), Owned::Value(vec![2]));
    // Not a value, too large: refused, the value unchanged.
    assert_eq!(
        act(&mut p, a, h, Action::Put { value: &[0xFF] }),
        Owned::Error(ErrorCode::InvalidValue)
    );
    let long = b"\x68abcdefgh";
    assert_eq!(
        act(&mut p, a, h, Action::Put { value: long }),
        Owned::Error(ErrorCode::TooLarge)
    );
    assert_eq!(act(&mut p, a, h, Action::Get), Owned::Value(vec![2]));
    assert_eq!(p.stat(0).bytes, 1);
}

#[test]
fn a_barrier_releases_every_party_with_its_arrival_index() {
    let mut p = pair("b", ObjectKind::Barrier, 3, 0);
    let (a, b, c) = (p.connect(), p.connect(), p.connect());
    let h = p.open(a, "b");
    let wait = Action::Wait { wait: FOREVER };
    let wa = send(&mut p, a, h, wait);
    let wb = send(&mut p, b, h, wait);
    p.pump();
    assert_eq!(act(&mut p, c, h, Action::Count), Owned::Count(2));
    assert_eq!(act(&mut p, c, h, wait), Owned::Count(2));
    assert_eq!(p.take(a, wa), Some(Owned::Count(0)));
    assert_eq!(p.take(b, wb), Some(Owned::Count(1)));
    // And again, the next round.
    let wa = send(&mut p, a, h, wait);
    let wc = send(&mut p, c, h, wait);
    p.pump();
    assert_eq!(act(&mut p, b, h, wait), Owned::Count(2));
    assert_eq!(p.take(a, wa), Some(Owned::Count(0)));
    assert_eq!(p.take(c, wc), Some(Owned::Count(1)));
}

#[test]
fn a_barrier_breaks_when_a_party_goes_away_or_times_out() {
    let mut p = pair("b", ObjectKind::Barrier, 3, 0);
    let (a, b, c) = (p.connect(), p.connect(), p.connect());
    let h = p.open(a, "b");
    let wait = Action::Wait { wait: FOREVER };
    let wa = send(&mut p, a, h, wait);
    send(&mut p, b, h, wait);
    p.pump();
    p.disconnect(b);
    assert_eq!(p.take(a, wa), Some(Owned::Error(ErrorCode::Broken)));
    assert_eq!(act(&mut p, c, h, wait), Owned::Error(ErrorCode::Broken));
    assert_eq!(act(&mut p, c, h, Action::Reset), Owned::Done);
    // Mended; now a party's time runs out and the others learn it is broken.
    let wa = send(&mut p, a, h, wait);
    let wc = send(
        &mut p,
        c,
        h,
        Action::Wait {
            wait: Wait::Millis(20),
        },
    );
    p.advance(21);
    assert_eq!(p.take(c, wc), Some(Owned::Error(ErrorCode::Timeout)));
    assert_eq!(p.take(a, wa), Some(Owned::Error(ErrorCode::Broken)));
    assert_eq!(act(&mut p, a, h, Action::Reset), Owned::Done);
    let wa = send(&mut p, a, h, wait);
    assert_eq!(act(&mut p, c, h, Action::Abort), Owned::Done);
    assert_eq!(p.take(a, wa), Some(Owned::Error(ErrorCode::Broken)));
}

#[test]
fn a_dict_keeps_bounded_entries_and_wakes_key_waiters() {
    // Keys and values: CBOR text "a", "b", "c" and integers.
    let (ka, kb, kc): (&[u8], &[u8], &[u8]) = (b"\x61a", b"\x61b", b"\x61c");
    let mut p = pair("d", ObjectKind::Dict, 2, 64);
    let (x, y) = (p.connect(), p.connect());
    let h = p.open(x, "d");
    let waiting = send(
        &mut p,
        y,
        h,
        Action::WaitKey {
            key: kb,
            wait: FOREVER,
        },
    );
    assert_eq!(
        act(&mut p, x, h, Action::Lookup { key: ka }),
        Owned::Error(ErrorCode::NoSuchKey)
    );
    let insert = |key, value| Action::Insert { key, value };
    assert_eq!(act(&mut p, x, h, insert(ka, &[1])), Owned::Done);
    assert_eq!(p.take(y, waiting), None);
    assert_eq!(act(&mut p, x, h, insert(kb, &[2])), Owned::Done);
    assert_eq!(p.take(y, waiting), Some(Owned::Value(vec![2])));
    assert_eq!(
        act(&mut p, x, h, insert(kc, &[3])),
        Owned::Error(ErrorCode::Full)
    );
    // Replacing keeps the entry's place.
    assert_eq!(act(&mut p, x, h, insert(ka, &[0x18, 100])), Owned::Done);
    assert_eq!(
        act(&mut p, y, h, Action::Entries),
        Owned::Values(vec![ka.to_vec(), vec![0x18, 100], kb.to_vec(), vec![2]])
    );
    assert_eq!(
        act(&mut p, y, h, Action::Keys),
        Owned::Values(vec![ka.to_vec(), kb.to_vec()])
    );
    assert_eq!(act(&mut p, y, h, Action::Count), Owned::Count(2));
    assert_eq!(
        act(&mut p, y, h, Action::Remove { key: ka }),
        Owned::Value(vec![0x18, 100])
    );
    assert_eq!(
        act(&mut p, y, h, Action::Remove { key: ka }),
        Owned::Error(ErrorCode::NoSuchKey)
    );
    assert_eq!(act(&mut p, x, h, insert(kc, &[3])), Owned::Done);
    assert_eq!(
        act(&mut p, y, h, Action::Entries),
        Owned::Values(vec![kb.to_vec(), vec![2], kc.to_vec(), vec![3]])
    );
    assert_eq!(
        act(
            &mut p,
            y,
            h,
            Action::WaitKey {
                key: kc,
                wait: FOREVER
            }
        ),
        Owned::Value(vec![3])
    );
    assert_eq!(
        act(&mut p, y, h, insert(&[0xFF], &[3])),
        Owned::Error(ErrorCode::InvalidValue)
    );
    // Bytes bound the dict too.
    let big = [0x58, 60]
        .iter()
        .copied()
        .chain([7; 60])
        .collect::<Vec<u8>>();
    assert_eq!(
        act(&mut p, y, h, Action::Put { value: &big }),
        Owned::Error(ErrorCode::WrongKind)
    );
    assert_eq!(
        act(&mut p, y, h, Action::Remove { key: kb }),
        Owned::Value(vec![2])
    );
    assert_eq!(
        act(&mut p, y, h, insert(ka, &big)),
        Owned::Error(ErrorCode::Full)
    );
    assert_eq!(p.stat(0).len, 1);
}

#[test]
fn clients_create_objects_in_spare_slots() {
    let mut setup = Setup {
        queues: Vec::new(),
        spares: vec![0, 32],
        ..Setup::default()
    };
    setup.config.allow_create = true;
    let mut p = Pair::new(setup);
    let a = p.connect();
    let create = |name, kind, spec, exist_ok| Op::CreateObject {
        name,
        kind,
        spec,
        exist_ok,
    };
    // A dict needs the slot with storage.
    let Owned::Opened(info) = p.call(a, create("d", ObjectKind::Dict, spec(4, 32), false)) else {
        panic!("dict not created");
    };
    assert_eq!(info.kind, ObjectKind::Dict);
    assert_eq!(
        p.call(a, create("d", ObjectKind::Dict, spec(4, 32), false)),
        Owned::Error(ErrorCode::AlreadyExists)
    );
    assert_eq!(
        p.call(a, create("d", ObjectKind::Event, spec(0, 0), true)),
        Owned::Error(ErrorCode::WrongKind)
    );
    assert_eq!(
        p.call(a, create("b", ObjectKind::Barrier, spec(0, 0), false)),
        Owned::Error(ErrorCode::InvalidSpec)
    );
    let Owned::Opened(ev) = p.call(a, create("e", ObjectKind::Event, spec(0, 0), false)) else {
        panic!("event not created");
    };
    assert_eq!(
        p.call(a, create("e", ObjectKind::Event, spec(0, 0), true)),
        Owned::Opened(ev)
    );
    assert_eq!(
        p.call(a, create("f", ObjectKind::Event, spec(0, 0), false)),
        Owned::Error(ErrorCode::ObjectLimit)
    );
    // Listed in slot order: the event took the slot without storage.
    assert_eq!(p.stat(0).info.kind, ObjectKind::Event);
    assert_eq!(p.stat(1).info.kind, ObjectKind::Dict);
}

/// One step of a client against a lock and a bounded semaphore of 2.
#[derive(Debug, Clone, Copy)]
enum Step {
    Acquire { client: usize, lock: bool },
    Release { client: usize, lock: bool },
    Leave { client: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3, any::<bool>()).prop_map(|(client, lock)| Step::Acquire { client, lock }),
        (0usize..3, any::<bool>()).prop_map(|(client, lock)| Step::Release { client, lock }),
        (0usize..3).prop_map(|client| Step::Leave { client }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    /// Against a model: a lock is never held twice, a bounded semaphore's free permits stay
    /// within 0..=2 and add up with what its holders have, and leaving gives back what a
    /// client held.
    #[test]
    fn locks_and_semaphores_match_a_model(steps in prop::collection::vec(step(), 1..40)) {
        let mut p = Pair::new(Setup {
            queues: Vec::new(),
            objects: vec![
                ("lk".into(), ObjectKind::Lock, spec(0, 0), 0),
                ("sem".into(), ObjectKind::BoundedSemaphore, spec(2, 0), 0),
            ],
            ..Setup::default()
        });
        let mut clients: Vec<usize> = (0..3).map(|_| p.connect()).collect();
        let lk = p.open(clients[0], "lk");
        let sem = p.open(clients[0], "sem");
        // Model: who holds the lock; semaphore permits per client.
        let mut owner: Option<usize> = None;
        let mut held = [0u32; 3];
        // Clients holding permits, by when they took their first (the manager's holder order).
        let mut order: Vec<usize> = Vec::new();
        let now = Action::Acquire { wait: Wait::NoWait };
        for s in steps {
            match s {
                Step::Acquire { client, lock: true } => {
                    let got = act(&mut p, clients[client], lk, now);
                    let expect = if owner.is_none() {
                        owner = Some(client);
                        Owned::Flag(true)
                    } else {
                        Owned::Error(ErrorCode::Timeout)
                    };
                    prop_assert_eq!(got, expect);
                }
                Step::Acquire { client, lock: false } => {
                    let got = act(&mut p, clients[client], sem, now);
                    let expect = if held.iter().sum::<u32>() < 2 {
                        if held[client] == 0 {
                            order.push(client);
                        }
                        held[client] += 1;
                        Owned::Flag(true)
                    } else {
                        Owned::Error(ErrorCode::Timeout)
                    };
                    prop_assert_eq!(got, expect);
                }
                Step::Release { client, lock: true } => {
                    let got = act(&mut p, clients[client], lk, Action::Release);
                    let expect = if owner == Some(client) {
                        owner = None;
                        Owned::Done
                    } else {
                        Owned::Error(ErrorCode::NotOwner)
                    };
                    prop_assert_eq!(got, expect);
                }
                Step::Release { client, lock: false } => {
                    let got = act(&mut p, clients[client], sem, Action::Release);
                    // A release by a non-holder gives back the oldest holder's permit.
                    let from = if held[client] > 0 {
                        Some(client)
                    } else {
                        order.first().copied()
                    };
                    let expect = match from {
                        Some(k) => {
                            held[k] -= 1;
                            if held[k] == 0 {
                                order.retain(|&o| o != k);
                            }
                            Owned::Done
                        }
                        None => Owned::Error(ErrorCode::Overflow),
                    };
                    prop_assert_eq!(got, expect);
                }
                Step::Leave { client } => {
                    p.disconnect(clients[client]);
                    clients[client] = p.connect();
                    if owner == Some(client) {
                        owner = None;
                    }
                    held[client] = 0;
                    order.retain(|&o| o != client);
                }
            }
            let c = clients[0];
            let free = act(&mut p, c, lk, Action::Count);
            prop_assert_eq!(free, Owned::Count(u32::from(owner.is_none())));
            let free = act(&mut p, c, sem, Action::Count);
            prop_assert_eq!(free, Owned::Count(2 - held.iter().sum::<u32>()));
        }
    }
}

/// One step against a dict: keys and values are small CBOR integers.
#[derive(Debug, Clone, Copy)]
enum DictStep {
    Insert(u8, u8),
    Remove(u8),
    Lookup(u8),
}

fn dict_step() -> impl Strategy<Value = DictStep> {
    prop_oneof![
        (0u8..8, any::<u8>()).prop_map(|(k, v)| DictStep::Insert(k, v)),
        (0u8..8).prop_map(DictStep::Remove),
        (0u8..8).prop_map(DictStep::Lookup),
    ]
}

/// The CBOR encoding of a small unsigned integer (1 or 2 bytes).
fn uint(v: u8) -> Vec<u8> {
    if v < 24 {
        vec![v]
    } else {
        vec![0x18, v]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    /// Against a model (entries in insertion order): a dict of at most 5 entries in 16 bytes
    /// answers every insert, remove and lookup alike, and lists the same entries.
    #[test]
    fn a_dict_matches_a_model(steps in prop::collection::vec(dict_step(), 1..60)) {
        let mut p = pair("d", ObjectKind::Dict, 5, 16);
        let c = p.connect();
        let h = p.open(c, "d");
        let mut model: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let packed = |m: &Vec<(Vec<u8>, Vec<u8>)>| -> usize {
            m.iter().map(|(k, v)| 2 + k.len() + v.len()).sum()
        };
        for s in steps {
            match s {
                DictStep::Insert(k, v) => {
                    let (k, v) = (uint(k), uint(v));
                    let got = act(&mut p, c, h, Action::Insert { key: &k, value: &v });
                    let mut next = model.clone();
                    match next.iter_mut().find(|(mk, _)| *mk == k) {
                        Some(entry) => entry.1 = v,
                        None => next.push((k, v)),
                    }
                    let expect = if next.len() > 5 || packed(&next) > 16 {
                        Owned::Error(ErrorCode::Full)
                    } else {
                        model = next;
                        Owned::Done
                    };
                    prop_assert_eq!(got, expect);
                }
                DictStep::Remove(k) => {
                    let k = uint(k);
                    let got = act(&mut p, c, h, Action::Remove { key: &k });
                    let expect = match model.iter().position(|(mk, _)| *mk == k) {
                        Some(at) => Owned::Value(model.remove(at).1),
                        None => Owned::Error(ErrorCode::NoSuchKey),
                    };
                    prop_assert_eq!(got, expect);
                }
                DictStep::Lookup(k) => {
                    let k = uint(k);
                    let got = act(&mut p, c, h, Action::Lookup { key: &k });
                    let expect = match model.iter().find(|(mk, _)| *mk == k) {
                        Some((_, v)) => Owned::Value(v.clone()),
                        None => Owned::Error(ErrorCode::NoSuchKey),
                    };
                    prop_assert_eq!(got, expect);
                }
            }
            let flat: Vec<Vec<u8>> = model
                .iter()
                .flat_map(|(k, v)| [k.clone(), v.clone()])
                .collect();
            prop_assert_eq!(act(&mut p, c, h, Action::Entries), Owned::Values(flat));
            let keys: Vec<Vec<u8>> = model.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(act(&mut p, c, h, Action::Keys), Owned::Values(keys));
            prop_assert_eq!(p.stat(0).bytes as usize, packed(&model));
        }
    }
}

#[test]
fn registered_calls_run_in_the_application_within_their_bound() {
    let mut p = pair("resize", ObjectKind::Call, 1, 16);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "resize");
    let call = |request, wait| Action::Call { request, wait };
    assert!(p.m.poll_call().is_none());
    let ca = send(&mut p, a, h, call(&[1], FOREVER));
    let cb = send(&mut p, b, h, call(&[2], FOREVER));
    p.pump();
    let first = p.m.poll_call().expect("a call to run");
    assert_eq!((first.name, first.request), ("resize", &[1u8][..]));
    let first = first.id;
    assert!(p.m.poll_call().is_none(), "one at a time");
    assert_eq!(p.stat(0).len, 1, "one running");
    let now = p.now;
    p.m.handle_call_done(first, now, Ok(&[0x18, 100]));
    p.pump();
    assert_eq!(p.take(a, ca), Some(Owned::Value(vec![0x18, 100])));
    // Answered once only.
    p.m.handle_call_done(first, now, Ok(&[9]));
    let second = p.m.poll_call().expect("the next call").id;
    p.m.handle_call_done(second, now, Err("no such size"));
    p.pump();
    assert_eq!(p.take(b, cb), Some(Owned::Failed("no such size".into())));
    // A response that is not a value is refused; a request that is not one too.
    let id = send(&mut p, a, h, call(&[3], FOREVER));
    p.pump();
    let third = p.m.poll_call().unwrap().id;
    p.m.handle_call_done(third, now, Ok(&[0xFF]));
    p.pump();
    assert_eq!(p.take(a, id), Some(Owned::Error(ErrorCode::InvalidValue)));
    assert_eq!(
        act(&mut p, a, h, call(&[0xFF], FOREVER)),
        Owned::Error(ErrorCode::InvalidValue)
    );
    // A caller that gives up frees its place; its late answer goes nowhere.
    let id = send(&mut p, a, h, call(&[4], Wait::Millis(30)));
    p.pump();
    let late = p.m.poll_call().unwrap().id;
    p.advance(31);
    assert_eq!(p.take(a, id), Some(Owned::Error(ErrorCode::Timeout)));
    let cb = send(&mut p, b, h, call(&[5], FOREVER));
    p.pump();
    let fifth = p.m.poll_call().expect("room again").id;
    let now = p.now;
    p.m.handle_call_done(late, now, Ok(&[4]));
    // A caller that goes away frees its place too.
    p.disconnect(b);
    assert_eq!(p.stat(0).len, 0);
    p.m.handle_call_done(fifth, now, Ok(&[5]));
    p.pump();
    assert_eq!(p.take(b, cb), None);
    assert_eq!(p.m.status().waiters, 0);
}

#[test]
fn a_key_needs_get_to_look_and_put_to_change_an_object() {
    use depot_core::keyring::{Grant, Key, Keyring, Rights};
    const WATCHER: &[u8] = b"watcher key, 32 bytes of secret!";
    const WORKER: &[u8] = b"worker key, 32 bytes of secret!!";
    let mut p = Pair::new(Setup {
        queues: Vec::new(),
        objects: vec![
            ("ready".into(), ObjectKind::Event, spec(0, 0), 0),
            ("lk".into(), ObjectKind::Lock, spec(1, 0), 0),
        ],
        ..Setup::default()
    });
    let grant = |rights| vec![Grant::owned(String::new(), true, rights)];
    let keys = Keyring::owned(vec![
        Key::owned("watcher".into(), WATCHER.to_vec(), grant(Rights::GET)),
        Key::owned("worker".into(), WORKER.to_vec(), grant(Rights::PUT)),
    ]);
    let now = p.now;
    p.m.set_keyring(keys, now).unwrap();
    let watcher = p.try_add_named("watcher", WATCHER, b"a").unwrap();
    let worker = p.try_add_named("worker", WORKER, b"b").unwrap();
    p.pump();
    let ready = p.open(watcher, "ready");
    let lk = p.open(watcher, "lk");
    let refused = Owned::Error(ErrorCode::NotAllowed);
    assert_eq!(act(&mut p, watcher, ready, Action::Set), refused);
    let wait = send(&mut p, watcher, ready, Action::Wait { wait: FOREVER });
    assert_eq!(
        act(&mut p, watcher, lk, Action::Acquire { wait: FOREVER }),
        refused
    );
    assert_eq!(act(&mut p, watcher, lk, Action::Count), Owned::Count(1));
    assert_eq!(act(&mut p, worker, ready, Action::IsSet), refused);
    assert_eq!(act(&mut p, worker, ready, Action::Set), Owned::Done);
    assert_eq!(p.take(watcher, wait), Some(Owned::Flag(true)));
    assert_eq!(
        act(&mut p, worker, lk, Action::Acquire { wait: FOREVER }),
        Owned::Flag(true)
    );
}

#[test]
fn a_lock_with_a_lease_is_taken_back_when_the_lease_runs_out() {
    // `max_item` is a lock's lease, in milliseconds.
    let mut p = pair("lk", ObjectKind::Lock, 1, 100);
    let (a, b) = (p.connect(), p.connect());
    let h = p.open(a, "lk");
    assert_eq!(
        act(&mut p, a, h, Action::Acquire { wait: FOREVER }),
        Owned::Flag(true)
    );
    let wb = send(&mut p, b, h, Action::Acquire { wait: FOREVER });
    p.advance(99);
    assert_eq!(p.take(b, wb), None, "a still holds it");
    p.advance(1);
    assert_eq!(p.take(b, wb), Some(Owned::Flag(true)), "a's lease ran out");
    assert_eq!(
        act(&mut p, a, h, Action::Release),
        Owned::Error(ErrorCode::NotOwner)
    );
    // Released in time, a lease ends with its holding.
    assert_eq!(act(&mut p, b, h, Action::Release), Owned::Done);
    p.advance(200);
    assert_eq!(act(&mut p, a, h, Action::Count), Owned::Count(1));
    assert_eq!(p.m.status().waiters, 0);
    // A semaphore's permits come back with their holder's lease too.
    let mut p = pair("sem", ObjectKind::Semaphore, 2, 50);
    let a = p.connect();
    let h = p.open(a, "sem");
    let now = Action::Acquire { wait: Wait::NoWait };
    assert_eq!(act(&mut p, a, h, now), Owned::Flag(true));
    p.advance(30);
    // Each acquire counts the lease again, for every permit the holder has.
    assert_eq!(act(&mut p, a, h, now), Owned::Flag(true));
    p.advance(30);
    assert_eq!(act(&mut p, a, h, Action::Count), Owned::Count(0));
    p.advance(20);
    assert_eq!(act(&mut p, a, h, Action::Count), Owned::Count(2));
}
