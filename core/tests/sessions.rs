//! Sessions (protocol version 3): a numbered put retried on a new connection after its reply
//! was lost is applied once, and the bounds of the session table and window are typed errors.

mod harness;

use depot_core::session::WINDOW;
use depot_core::wire::{CloseReason, ErrorCode, Items, Op, Wait};
use depot_core::*;
use harness::*;

const ID: [u8; 16] = [7; 16];

fn pair(capacity: u32, sessions: usize) -> (Pair, Handle) {
    let mut p = Pair::new(Setup::queue("q", capacity, 16, 1024));
    p.m.serve_sessions(vec![SessionSlot::EMPTY; sessions]);
    let c = p.connect();
    let h = p.open(c, "q");
    p.disconnect(c);
    (p, h)
}

fn session(p: &mut Pair, id: [u8; 16]) -> (usize, Owned) {
    let c = p.connect();
    let reply = p.call(c, Op::Session { id });
    (c, reply)
}

fn put_seq(p: &mut Pair, c: usize, h: Handle, seq: u64, item: &[u8], wait: Wait) -> u32 {
    p.send(
        c,
        Op::PutSeq {
            seq,
            handle: h,
            item,
            wait,
        },
    )
}

fn packed(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let at = out.len();
        out.resize(at + Items::packed_len(item.len()), 0);
        Items::push(&mut out, at, item).expect("room");
    }
    out
}

/// Everything in the queue, taken out in order.
fn drain(p: &mut Pair, h: Handle) -> Vec<Vec<u8>> {
    let c = p.connect();
    let mut out = Vec::new();
    loop {
        match p.call(
            c,
            Op::Get {
                handle: h,
                wait: Wait::NoWait,
            },
        ) {
            Owned::Item(item) => out.push(item),
            Owned::Error(ErrorCode::Empty) => break,
            other => panic!("get: {other:?}"),
        }
    }
    p.disconnect(c);
    out
}

/// The client stops hearing the manager and its socket closes: replies in flight are lost.
fn lose_replies_and_drop(p: &mut Pair, c: usize) {
    p.peers[c].reading = false;
    p.pump();
    p.disconnect(c);
}

#[test]
fn a_put_retried_after_a_lost_reply_is_applied_once_and_answered_alike() {
    let (mut p, h) = pair(8, 4);
    let (c, opened) = session(&mut p, ID);
    assert_eq!(opened, Owned::Session(false));
    put_seq(&mut p, c, h, 1, b"one", Wait::Forever);
    let list = packed(&[b"two", b"three"]);
    let batch = Op::PutManySeq {
        seq: 2,
        handle: h,
        items: Items(&list),
        wait: Wait::Forever,
    };
    p.send(c, batch);
    lose_replies_and_drop(&mut p, c);
    assert_eq!(p.stat(0).len, 3);

    let (c, resumed) = session(&mut p, ID);
    assert_eq!(resumed, Owned::Session(true));
    let id = put_seq(&mut p, c, h, 1, b"one", Wait::Forever);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Done));
    assert_eq!(p.call(c, batch), Owned::Accepted(2, None));
    // A new number is a new put.
    let id = put_seq(&mut p, c, h, 3, b"four", Wait::Forever);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Done));
    let got = drain(&mut p, h);
    assert_eq!(got, [&b"one"[..], b"two", b"three", b"four"]);
}

#[test]
fn a_batch_cut_short_is_finished_on_retry_without_repeating_its_head() {
    let (mut p, h) = pair(2, 4);
    let (c, _) = session(&mut p, ID);
    let list = packed(&[b"a", b"b", b"c", b"d"]);
    let batch = Op::PutManySeq {
        seq: 9,
        handle: h,
        items: Items(&list),
        wait: Wait::Forever,
    };
    p.send(c, batch);
    // Two went in; the rest waited in the manager when the connection died.
    lose_replies_and_drop(&mut p, c);
    assert_eq!(drain(&mut p, h), [&b"a"[..], b"b"]);

    let (c, _) = session(&mut p, ID);
    assert_eq!(p.call(c, batch), Owned::Accepted(4, None));
    assert_eq!(drain(&mut p, h), [&b"c"[..], b"d"]);
}

#[test]
fn resuming_a_session_closes_the_connection_that_held_it_and_its_waiting_put() {
    let (mut p, h) = pair(1, 4);
    let (old, _) = session(&mut p, ID);
    put_seq(&mut p, old, h, 1, b"first", Wait::Forever);
    put_seq(&mut p, old, h, 2, b"second", Wait::Forever);
    p.peers[old].reading = false;
    p.pump();
    assert_eq!(p.stat(0).putters, 1);
    // The old connection is half dead (its socket still open) when the client comes back.
    let (c, resumed) = session(&mut p, ID);
    assert_eq!(resumed, Owned::Session(true));
    let old_conn = p.peers[old].conn.expect("still open on the manager's side");
    assert_eq!(p.m.close_reason(old_conn), Some(CloseReason::Superseded));
    assert_eq!(p.stat(0).putters, 0);
    let first = put_seq(&mut p, c, h, 1, b"first", Wait::Forever);
    let second = put_seq(&mut p, c, h, 2, b"second", Wait::Forever);
    p.pump();
    assert_eq!(p.take(c, first), Some(Owned::Done));
    assert_eq!(p.take(c, second), None, "waits for room");
    // Taking `first` makes room for `second`: each went in once.
    assert_eq!(drain(&mut p, h), [&b"first"[..], b"second"]);
    p.pump();
    assert_eq!(p.take(c, second), Some(Owned::Done));
}

#[test]
fn a_number_older_than_the_window_is_refused_as_unknown() {
    let (mut p, h) = pair(WINDOW as u32 + 8, 4);
    let (c, _) = session(&mut p, ID);
    for seq in 0..WINDOW as u64 + 2 {
        let id = put_seq(&mut p, c, h, seq, b"x", Wait::NoWait);
        p.pump();
        assert_eq!(p.take(c, id), Some(Owned::Done));
    }
    // The two oldest left the window; the rest are still known.
    for seq in 0..2 {
        let id = put_seq(&mut p, c, h, seq, b"x", Wait::NoWait);
        p.pump();
        assert_eq!(
            p.take(c, id),
            Some(Owned::Error(ErrorCode::SequenceExpired))
        );
    }
    let id = put_seq(&mut p, c, h, 2, b"x", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Done));
    assert_eq!(p.stat(0).len, WINDOW as u32 + 2);
}

#[test]
fn the_session_table_is_bounded_and_forgets_the_least_recently_used() {
    let (mut p, h) = pair(8, 1);
    let (a, _) = session(&mut p, [1; 16]);
    let (b, refused) = session(&mut p, [2; 16]);
    assert_eq!(refused, Owned::Error(ErrorCode::SessionLimit));
    let id = put_seq(&mut p, b, h, 1, b"x", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(b, id), Some(Owned::Error(ErrorCode::NoSession)));
    p.disconnect(a);
    // The slot is free to take now; session 1 is forgotten.
    assert_eq!(
        p.call(b, Op::Session { id: [2; 16] }),
        Owned::Session(false)
    );
    p.disconnect(b);
    let (_, again) = session(&mut p, [1; 16]);
    assert_eq!(again, Owned::Session(false));
}

#[test]
fn a_manager_without_session_storage_refuses_sessions() {
    let mut p = Pair::new(Setup::queue("q", 8, 16, 1024));
    let c = p.connect();
    assert_eq!(
        p.call(c, Op::Session { id: ID }),
        Owned::Error(ErrorCode::NotAllowed)
    );
}

// ---------------------------------------------------------------------------------------------
// Any mix of numbered puts (some blocking on a full queue), consumers making room, and lost
// connections — closed, or left half dead while the client resumes elsewhere — after which the
// client sends every unanswered request again, as a reconnecting client does: every item is
// queued exactly once, in the order it was put.

use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// A numbered put of this many items (1: `PutSeq`, more: `PutManySeq`).
    Put(usize),
    /// The consumer takes one item, if there is one.
    Take,
    /// The connection is lost with its replies in flight, and the client resumes on a new
    /// one; `half_dead`: the old socket stays open (the manager closes it on resumption).
    Lose { half_dead: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..4).prop_map(Step::Put),
        3 => Just(Step::Take),
        1 => any::<bool>().prop_map(|half_dead| Step::Lose { half_dead }),
    ]
}

/// One numbered request of the client: its items and whether its reply came.
struct Sent {
    seq: u64,
    items: Vec<Vec<u8>>,
    id: u32,
    answered: bool,
}

fn send_numbered(p: &mut Pair, c: usize, h: Handle, s: &mut Sent) {
    let list = packed(&s.items.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let op = if s.items.len() == 1 {
        Op::PutSeq {
            seq: s.seq,
            handle: h,
            item: &s.items[0],
            wait: Wait::Forever,
        }
    } else {
        Op::PutManySeq {
            seq: s.seq,
            handle: h,
            items: Items(&list),
            wait: Wait::Forever,
        }
    };
    s.id = p.send(c, op);
}

/// Files the replies client `c` got.
fn collect(p: &mut Pair, c: usize, sent: &mut [Sent]) {
    for s in sent.iter_mut().filter(|s| !s.answered) {
        match p.take(c, s.id) {
            None => {}
            Some(Owned::Done) => s.answered = true,
            Some(Owned::Accepted(n, None)) if n as usize == s.items.len() => s.answered = true,
            Some(other) => panic!("put {}: {other:?}", s.seq),
        }
    }
}

fn take_one(p: &mut Pair, consumer: usize, h: Handle, got: &mut Vec<Vec<u8>>) {
    match p.call(
        consumer,
        Op::Get {
            handle: h,
            wait: Wait::NoWait,
        },
    ) {
        Owned::Item(item) => got.push(item),
        Owned::Error(ErrorCode::Empty) => {}
        other => panic!("get: {other:?}"),
    }
}

/// A new connection resuming the session, with every unanswered request sent again in order.
fn resume(p: &mut Pair, h: Handle, sent: &mut [Sent]) -> usize {
    let (c, reply) = session(p, ID);
    assert_eq!(reply, Owned::Session(true));
    for s in sent.iter_mut().filter(|s| !s.answered) {
        send_numbered(p, c, h, s);
    }
    p.pump();
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 96 }))]

    #[test]
    fn every_item_is_queued_once_in_order_across_lost_connections(
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        // Room for every half-dead connection a case leaves open.
        let mut p = Pair::new(Setup { conns: 64, ..Setup::queue("q", 3, 16, 1024) });
        p.m.serve_sessions(vec![SessionSlot::EMPTY; 4]);
        let consumer = p.connect();
        let h = p.open(consumer, "q");
        let (mut c, _) = session(&mut p, ID);
        let mut sent: Vec<Sent> = Vec::new();
        let mut got = Vec::new();
        let mut next_item = 0u32;
        for step in steps {
            let unanswered = sent.iter().filter(|s| !s.answered).count();
            match step {
                // The client keeps a few requests in flight at most (its slots are few).
                Step::Put(_) if unanswered >= 6 => take_one(&mut p, consumer, h, &mut got),
                Step::Put(n) => {
                    let items = (0..n)
                        .map(|_| {
                            next_item += 1;
                            next_item.to_be_bytes().to_vec()
                        })
                        .collect();
                    let seq = sent.len() as u64;
                    sent.push(Sent { seq, items, id: 0, answered: false });
                    let last = sent.len() - 1;
                    send_numbered(&mut p, c, h, &mut sent[last]);
                    p.pump();
                }
                Step::Take => take_one(&mut p, consumer, h, &mut got),
                Step::Lose { half_dead } => {
                    p.peers[c].reading = false;
                    p.pump();
                    if !half_dead {
                        p.disconnect(c);
                    }
                    c = resume(&mut p, h, &mut sent);
                }
            }
            collect(&mut p, c, &mut sent);
        }
        // Consumers drain the queue until every put was answered.
        for _ in 0..200 {
            take_one(&mut p, consumer, h, &mut got);
            collect(&mut p, c, &mut sent);
            if sent.iter().all(|s| s.answered) && p.stat(0).len == 0 {
                break;
            }
        }
        prop_assert!(sent.iter().all(|s| s.answered), "every put answered");
        let want: Vec<Vec<u8>> = sent.iter().flat_map(|s| s.items.clone()).collect();
        prop_assert_eq!(got, want);
    }
}

/// The same client state machine, restarted on a new connection as a reconnecting client does
/// (`Client::restart`, `reconnect::ClientSession`): it handshakes again, resumes its session,
/// and its put sent again with its number is applied once; the lost reply is never reported.
#[test]
fn a_restarted_client_resumes_its_session_and_its_put_is_applied_once() {
    use depot_core::reconnect::{resend, ClientSession};
    let (mut p, h) = pair(8, 4);
    let mut session = ClientSession::new(ID);
    let c = p.connect();
    assert_eq!(p.call(c, session.open()), Owned::Session(false));
    let seq = session.next_seq();
    let put = Op::PutSeq {
        seq,
        handle: h,
        item: b"once",
        wait: Wait::Forever,
    };
    let lost = p.send(c, put);
    lose_replies_and_drop(&mut p, c);
    assert!(p.closed(c).is_some());
    assert!(resend(&put, true));

    let conn = p.m.accept(p.now, nonce(900, 0xAA), &[]).expect("accept");
    let peer = &mut p.peers[c];
    peer.client.restart(nonce(901, 0xCC), p.now);
    peer.conn = Some(conn);
    (peer.reading, peer.connected, peer.closed) = (true, false, None);
    p.pump();
    assert!(p.peers[c].connected, "the restarted client did not connect");
    assert_eq!(p.call(c, session.open()), Owned::Session(true));
    let again = p.send(c, put);
    p.pump();
    assert_eq!(p.take(c, again), Some(Owned::Done));
    assert_eq!(p.take(c, lost), None);
    assert_eq!(drain(&mut p, h), [&b"once"[..]]);
    // The next put has a new number.
    assert_eq!(session.next_seq(), seq + 1);
}
