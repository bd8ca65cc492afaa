//! A manager whose queues live in a backend (`manager::backend`): queue operations leave as
//! requests with tokens, their replies go out only when the backend completes them, and a
//! caller that went away never loses an item: its request is withdrawn, a late outcome is
//! released for the backend to give back, and unsent items are returned.

mod harness;

use std::sync::{Arc, Mutex};

use depot_core::manager::backend::{
    Backend, BackendOutcome, BackendRequest, BackendToken, Completion, Health,
};
use depot_core::wire::{
    ErrorCode, Handle, Items, Op, Wait, MAX_BACKEND_ERROR, MAX_BACKEND_KIND, MAX_BACKEND_SERVER,
};
use depot_core::*;
use harness::*;

/// A request as the backend saw it, owned.
#[derive(Debug, Clone, PartialEq)]
enum Rec {
    Put(BackendToken, String, Vec<u8>),
    PutMany(BackendToken, Vec<Vec<u8>>),
    Get {
        token: BackendToken,
        max_items: u32,
        wait: Wait,
        lease: bool,
    },
    Ack(BackendToken, u64),
    Nack(BackendToken, u64),
    Return(String, Vec<u8>),
    Cancel(BackendToken),
    Closed(ConnId),
    Created(String),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Rec>>>);

impl Recorder {
    fn take(&self) -> Vec<Rec> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Backend for Recorder {
    fn request(&mut self, r: BackendRequest<'_>) {
        let rec = match r {
            BackendRequest::Put {
                token, name, item, ..
            } => Rec::Put(token, name.into(), item.to_vec()),
            BackendRequest::PutMany { token, items, .. } => {
                Rec::PutMany(token, items.iter().map(<[u8]>::to_vec).collect())
            }
            BackendRequest::Get {
                token,
                max_items,
                wait,
                lease_ms,
                ..
            } => Rec::Get {
                token,
                max_items,
                wait,
                lease: lease_ms.is_some(),
            },
            BackendRequest::Ack { token, lease, .. } => Rec::Ack(token, lease),
            BackendRequest::Nack { token, lease, .. } => Rec::Nack(token, lease),
            BackendRequest::Return { name, item, .. } => Rec::Return(name.into(), item.to_vec()),
            BackendRequest::Cancel { token } => Rec::Cancel(token),
            BackendRequest::Closed { conn } => Rec::Closed(conn),
            BackendRequest::Created { name, .. } => Rec::Created(name.into()),
        };
        self.0.lock().unwrap().push(rec);
    }
}

fn setup() -> (Pair, Recorder, Handle) {
    let mut p = Pair::with_default();
    let rec = Recorder::default();
    p.m.set_backend(Box::new(rec.clone()), 64);
    p.connect();
    let h = p.open(0, "task_queue");
    (p, rec, h)
}

fn packed(items: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0; items.iter().map(|i| Items::packed_len(i.len())).sum()];
    let mut at = 0;
    for item in items {
        at = Items::push(&mut out, at, item).unwrap();
    }
    out
}

fn complete(p: &mut Pair, token: BackendToken, outcome: BackendOutcome) -> Completion {
    let now = p.now;
    let c = p.m.complete_backend(token, outcome, now);
    p.pump();
    c
}

#[test]
fn puts_are_answered_when_the_backend_stored_them() {
    let (mut p, rec, h) = setup();
    let id = p.put(0, h, b"one", Wait::Forever);
    p.pump();
    let [Rec::Put(token, name, item)] = &rec.take()[..] else {
        panic!("one put request");
    };
    assert_eq!((name.as_str(), &item[..]), ("task_queue", &b"one"[..]));
    assert_eq!(p.take(0, id), None, "no reply before the backend's");
    assert_eq!(
        complete(&mut p, *token, BackendOutcome::Done),
        Completion::Delivered
    );
    assert_eq!(p.take(0, id), Some(Owned::Done));
    // The manager's own queue stays empty.
    assert_eq!(p.stat(0).len, 0);

    let id = p.put(0, h, b"two", Wait::NoWait);
    p.pump();
    let [Rec::Put(token, ..)] = &rec.take()[..] else {
        panic!("one put request");
    };
    complete(&mut p, *token, BackendOutcome::Error(ErrorCode::Full));
    assert_eq!(p.take(0, id), Some(Owned::Error(ErrorCode::Full)));
    // An outcome for a token already answered is released.
    assert_eq!(
        complete(&mut p, *token, BackendOutcome::Done),
        Completion::Released
    );

    // Limits are the manager's, checked before the backend hears anything.
    let big = vec![0u8; 300];
    assert_eq!(
        p.call(
            0,
            Op::Put {
                handle: h,
                item: &big,
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::TooLarge)
    );
    let items = packed(&[b"a", b"b"]);
    let id = p.send(
        0,
        Op::PutMany {
            handle: h,
            items: Items(&items),
            wait: Wait::NoWait,
        },
    );
    p.pump();
    let [Rec::PutMany(token, got)] = &rec.take()[..] else {
        panic!("one batch request");
    };
    assert_eq!(got, &[b"a".to_vec(), b"b".to_vec()]);
    complete(
        &mut p,
        *token,
        BackendOutcome::Accepted {
            count: 2,
            error: None,
        },
    );
    assert_eq!(p.take(0, id), Some(Owned::Accepted(2, None)));
    assert_eq!(
        p.call(
            0,
            Op::PutSeq {
                seq: 1,
                handle: h,
                item: b"x",
                wait: Wait::NoWait
            }
        ),
        Owned::Error(ErrorCode::NotAllowed)
    );
    assert!(rec.take().is_empty());
}

#[test]
fn gets_wait_in_the_backend_and_cancelled_ones_release_their_items() {
    let (mut p, rec, h) = setup();
    let id = p.get(0, h, Wait::Forever);
    p.pump();
    let [Rec::Get {
        token,
        max_items: 1,
        wait: Wait::Forever,
        lease: false,
    }] = &rec.take()[..]
    else {
        panic!("one get request");
    };
    let items = packed(&[b"x"]);
    assert_eq!(
        complete(&mut p, *token, BackendOutcome::Items(Items(&items))),
        Completion::Delivered
    );
    assert_eq!(p.take(0, id), Some(Owned::Item(b"x".to_vec())));

    // A get the client withdraws: the backend is told, a late outcome is released.
    let id = p.get(0, h, Wait::Forever);
    p.pump();
    let [Rec::Get { token, .. }] = &rec.take()[..] else {
        panic!("one get request");
    };
    let cancel = p.send(0, Op::Cancel { target: id });
    p.pump();
    assert_eq!(p.take(0, id), Some(Owned::Error(ErrorCode::Cancelled)));
    assert_eq!(p.take(0, cancel), Some(Owned::Done));
    assert_eq!(rec.take(), [Rec::Cancel(*token)]);
    assert_eq!(
        complete(&mut p, *token, BackendOutcome::Items(Items(&items))),
        Completion::Released
    );

    // Two items for a plain get do not fit its reply: released, and the caller told.
    let id = p.get(0, h, Wait::NoWait);
    p.pump();
    let [Rec::Get { token, .. }] = &rec.take()[..] else {
        panic!("one get request");
    };
    let two = packed(&[b"x", b"y"]);
    assert_eq!(
        complete(&mut p, *token, BackendOutcome::Items(Items(&two))),
        Completion::Released
    );
    assert_eq!(p.take(0, id), Some(Owned::Error(ErrorCode::TooLarge)));
}

#[test]
fn leases_go_through_the_backend_and_a_closed_connection_gives_everything_back() {
    let (mut p, rec, h) = setup();
    let op = Op::GetLeased {
        handle: h,
        max_items: 4,
        max_bytes: 4096,
        lease_ms: 1000,
        wait: Wait::Forever,
    };
    let id = p.send(0, op);
    p.pump();
    let [Rec::Get {
        token,
        max_items: 4,
        lease: true,
        ..
    }] = &rec.take()[..]
    else {
        panic!("one leased get request");
    };
    let items = packed(&[b"a", b"b"]);
    let outcome = BackendOutcome::Leased {
        lease: 77,
        deliveries: &[1, 3],
        items: Items(&items),
    };
    assert_eq!(complete(&mut p, *token, outcome), Completion::Delivered);
    assert_eq!(
        p.take(0, id),
        Some(Owned::Leased {
            lease: 77,
            deliveries: vec![1, 3],
            items: vec![b"a".to_vec(), b"b".to_vec()]
        })
    );
    let ack = p.send(0, Op::Ack { lease: 77 });
    p.pump();
    let [Rec::Ack(token, 77)] = &rec.take()[..] else {
        panic!("one ack request");
    };
    complete(
        &mut p,
        *token,
        BackendOutcome::Error(ErrorCode::NoSuchLease),
    );
    assert_eq!(p.take(0, ack), Some(Owned::Error(ErrorCode::NoSuchLease)));

    // A blocked leased get, then the client goes away.
    p.send(0, op);
    p.pump();
    let [Rec::Get { token, .. }] = &rec.take()[..] else {
        panic!("one leased get request");
    };
    let conn = p.peers[0].conn.unwrap();
    p.disconnect(0);
    assert_eq!(rec.take(), [Rec::Cancel(*token), Rec::Closed(conn)]);
    let outcome = BackendOutcome::Leased {
        lease: 78,
        deliveries: &[1],
        items: Items(&items[..2]),
    };
    assert_eq!(complete(&mut p, *token, outcome), Completion::Released);
}

#[test]
fn items_of_replies_that_never_left_go_back_to_the_backend() {
    let (mut p, rec, h) = setup();
    p.peers[0].reading = false;
    let id = p.get(0, h, Wait::NoWait);
    p.pump();
    let [Rec::Get { token, .. }] = &rec.take()[..] else {
        panic!("one get request");
    };
    let items = packed(&[b"kept"]);
    assert_eq!(
        complete(&mut p, *token, BackendOutcome::Items(Items(&items))),
        Completion::Delivered
    );
    assert_eq!(p.take(0, id), None, "the reply did not reach the client");
    let conn = p.peers[0].conn.unwrap();
    p.disconnect(0);
    assert_eq!(
        rec.take(),
        [
            Rec::Return("task_queue".into(), b"kept".to_vec()),
            Rec::Closed(conn)
        ]
    );
}

/// A backend that knows its queues' lengths.
#[derive(Clone, Default)]
struct Lengths(Arc<Mutex<Option<u32>>>);

impl Backend for Lengths {
    fn request(&mut self, _: BackendRequest<'_>) {}

    fn len(&self, name: &str) -> Option<u32> {
        assert_eq!(name, "task_queue");
        *self.0.lock().unwrap()
    }
}

#[test]
fn stat_and_size_show_the_length_the_backend_reports() {
    let mut p = Pair::with_default();
    let lengths = Lengths::default();
    p.m.set_backend(Box::new(lengths.clone()), 64);
    p.connect();
    let h = p.open(0, "task_queue");
    let capacity = p.stat(0).info.spec.capacity;
    let stat_len = |p: &mut Pair| match p.call(0, Op::Stat { index: 0 }) {
        Owned::Stat(Some(s)) => s.len,
        other => panic!("{other:?}"),
    };
    let size = |p: &mut Pair| match p.call(0, Op::Size { handle: h }) {
        Owned::Size(s) => (s.len, s.full),
        other => panic!("{other:?}"),
    };
    // Unknown: the manager's own view.
    assert_eq!((p.stat(0).len, stat_len(&mut p)), (0, 0));
    assert_eq!(size(&mut p), (0, false));

    *lengths.0.lock().unwrap() = Some(3);
    assert_eq!((p.stat(0).len, stat_len(&mut p)), (3, 3));
    assert_eq!(size(&mut p), (3, false));

    *lengths.0.lock().unwrap() = Some(capacity);
    assert_eq!(size(&mut p), (capacity, true));
}

/// A backend whose health the test sets.
#[derive(Clone, Default)]
struct Healthy(Arc<Mutex<Health>>);

impl Backend for Healthy {
    fn request(&mut self, _: BackendRequest<'_>) {}

    fn health(&self) -> Health {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn backend_status_answers_no_backend_without_one() {
    let mut p = Pair::with_default();
    p.connect();
    assert_eq!(p.call(0, Op::BackendStatus), Owned::Backend(None));
    // The connection stays usable.
    p.open(0, "task_queue");
}

#[test]
fn backend_status_shows_the_health_the_backend_reports_with_long_texts_cut() {
    let mut p = Pair::with_default();
    let health = Healthy::default();
    p.m.set_backend(Box::new(health.clone()), 64);
    p.connect();
    *health.0.lock().unwrap() = Health {
        kind: "nats".into(),
        server: "127.0.0.1:4222".into(),
        connected: true,
        since_ms: 1500,
        reconnects: 0,
        last_error: String::new(),
    };
    assert_eq!(
        p.call(0, Op::BackendStatus),
        Owned::Backend(Some((
            "nats".into(),
            "127.0.0.1:4222".into(),
            true,
            1500,
            0,
            String::new()
        )))
    );

    // Texts past the wire's bounds are cut on a character boundary ("é" is two bytes).
    let long = "é".repeat(100);
    *health.0.lock().unwrap() = Health {
        kind: long.clone(),
        server: long.clone(),
        connected: false,
        since_ms: u64::MAX,
        reconnects: u32::MAX,
        last_error: format!("x{long}"),
    };
    let Owned::Backend(Some((kind, server, connected, since, reconnects, error))) =
        p.call(0, Op::BackendStatus)
    else {
        panic!("no health")
    };
    assert_eq!(kind, "é".repeat(MAX_BACKEND_KIND / 2));
    assert_eq!(server, "é".repeat(MAX_BACKEND_SERVER / 2));
    assert_eq!(
        error,
        format!("x{}", "é".repeat((MAX_BACKEND_ERROR - 1) / 2))
    );
    assert!(error.len() < MAX_BACKEND_ERROR);
    assert_eq!((connected, since, reconnects), (false, u64::MAX, u32::MAX));
}
