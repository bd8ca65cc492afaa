//! Protocol version 2 in protocol terms: batches, several blocked calls per connection,
//! cancellation, and items given back rather than dropped.

mod harness;

use depot_core::wire::{ErrorCode, Items, Op, Wait};
use depot_core::*;
use harness::*;

fn packed(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let at = out.len();
        out.resize(at + Items::packed_len(item.len()), 0);
        Items::push(&mut out, at, item).expect("room");
    }
    out
}

fn put_many(p: &mut Pair, c: usize, h: Handle, items: &[&[u8]], wait: Wait) -> u32 {
    let list = packed(items);
    p.send(
        c,
        Op::PutMany {
            handle: h,
            items: Items(&list),
            wait,
        },
    )
}

fn get_many(p: &mut Pair, c: usize, h: Handle, max_items: u32, wait: Wait) -> u32 {
    p.send(
        c,
        Op::GetMany {
            handle: h,
            max_items,
            max_bytes: 64 * 1024,
            wait,
        },
    )
}

fn items(list: &[&[u8]]) -> Owned {
    Owned::Items(list.iter().map(|i| i.to_vec()).collect())
}

#[test]
fn put_many_reports_what_went_in_and_get_many_takes_a_batch() {
    let mut p = Pair::new(Setup::queue("q", 3, 16, 1024));
    let c = p.connect();
    let h = p.open(c, "q");
    let id = put_many(&mut p, c, h, &[b"a", b"b", b"c", b"d"], Wait::NoWait);
    p.pump();
    assert_eq!(
        p.take(c, id),
        Some(Owned::Accepted(3, Some(ErrorCode::Full)))
    );
    let id = get_many(&mut p, c, h, 10, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(items(&[b"a", b"b", b"c"])));
    let id = get_many(&mut p, c, h, 10, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Error(ErrorCode::Empty)));
}

#[test]
fn put_many_stops_at_an_item_too_large_and_keeps_the_ones_before() {
    let mut p = Pair::new(Setup::queue("q", 8, 4, 1024));
    let c = p.connect();
    let h = p.open(c, "q");
    let id = put_many(&mut p, c, h, &[b"ok", b"too large", b"no"], Wait::Forever);
    p.pump();
    assert_eq!(
        p.take(c, id),
        Some(Owned::Accepted(1, Some(ErrorCode::TooLarge)))
    );
    assert_eq!(p.stat(0).len, 1);
}

#[test]
fn get_many_respects_max_items_and_max_bytes_but_always_takes_one() {
    let mut p = Pair::new(Setup::queue("q", 8, 64, 2048));
    let c = p.connect();
    let h = p.open(c, "q");
    let big = [7u8; 40];
    let id = put_many(&mut p, c, h, &[&big, b"x", b"y", b"z"], Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Accepted(4, None)));
    let tiny = p.send(
        c,
        Op::GetMany {
            handle: h,
            max_items: 8,
            max_bytes: 3,
            wait: Wait::NoWait,
        },
    );
    let two = get_many(&mut p, c, h, 2, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, tiny), Some(items(&[&big])));
    assert_eq!(p.take(c, two), Some(items(&[b"x", b"y"])));
}

/// A blocked `PutMany` waits for room item after item, in order, and answers once all are in.
#[test]
fn put_many_waits_for_room_item_after_item() {
    let mut p = Pair::new(Setup::queue("q", 2, 16, 1024));
    let producer = p.connect();
    let consumer = p.connect();
    let h = p.open(producer, "q");
    let batch = put_many(
        &mut p,
        producer,
        h,
        &[b"1", b"2", b"3", b"4", b"5"],
        Wait::Forever,
    );
    p.pump();
    assert_eq!(p.take(producer, batch), None);
    let mut got = Vec::new();
    for _ in 0..3 {
        let id = get_many(&mut p, consumer, h, 10, Wait::Forever);
        p.pump();
        match p.take(consumer, id) {
            Some(Owned::Items(batch)) => got.extend(batch),
            other => panic!("get_many: {other:?}"),
        }
    }
    assert_eq!(p.take(producer, batch), Some(Owned::Accepted(5, None)));
    let expected: Vec<Vec<u8>> = (1..=5).map(|i| i.to_string().into_bytes()).collect();
    assert_eq!(got, expected);
}

/// A blocked `GetMany` waits for the first item only, then takes what there is.
#[test]
fn get_many_waits_for_the_first_item() {
    let mut p = Pair::new(Setup::queue("q", 8, 16, 1024));
    let consumer = p.connect();
    let producer = p.connect();
    let h = p.open(consumer, "q");
    let id = get_many(&mut p, consumer, h, 10, Wait::Forever);
    p.pump();
    assert_eq!(p.take(consumer, id), None);
    let put = p.put(producer, h, b"first", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(producer, put), Some(Owned::Done));
    assert_eq!(p.take(consumer, id), Some(items(&[b"first"])));
}

/// One connection shared by two blocking producers and a consumer on a capacity-1 queue:
/// every request is served, none waits behind another's blocked put.
#[test]
fn one_connection_carries_blocked_puts_and_the_gets_that_free_them() {
    let mut p = Pair::new(Setup::queue("q", 1, 16, 1024));
    let c = p.connect();
    let h = p.open(c, "q");
    let mut puts = Vec::new();
    for i in 0..10u8 {
        puts.push(p.put(c, h, &[i], Wait::Forever));
    }
    p.pump();
    let mut got = Vec::new();
    for _ in 0..10 {
        let id = p.get(c, h, Wait::Forever);
        p.pump();
        match p.take(c, id) {
            Some(Owned::Item(item)) => got.extend(item),
            other => panic!("get: {other:?}"),
        }
    }
    for id in puts {
        assert_eq!(p.take(c, id), Some(Owned::Done));
    }
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}

#[test]
fn cancel_withdraws_blocked_requests_and_changes_nothing_else() {
    let mut p = Pair::new(Setup::queue("q", 1, 16, 1024));
    let c = p.connect();
    let other = p.connect();
    let h = p.open(c, "q");
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: h,
                item: b"kept",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let blocked_put = p.put(c, h, b"withdrawn", Wait::Forever);
    let behind = p.put(other, h, b"behind", Wait::Forever);
    p.pump();
    assert_eq!(
        p.call(
            c,
            Op::Cancel {
                target: blocked_put
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.take(c, blocked_put),
        Some(Owned::Error(ErrorCode::Cancelled))
    );
    // The withdrawn item never went in; the put behind it takes its turn.
    let g1 = p.get(other, h, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(other, g1), Some(Owned::Item(b"kept".to_vec())));
    assert_eq!(p.take(other, behind), Some(Owned::Done));
    let g2 = p.get(other, h, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(other, g2), Some(Owned::Item(b"behind".to_vec())));
    // Cancelling something already answered, or unknown, is harmless.
    assert_eq!(p.call(c, Op::Cancel { target: g2 }), Owned::Done);
    assert_eq!(p.stat(0).len, 0);
}

/// The race cancellation must survive: a client gives up on a blocked `get` while an item is
/// already on its way. The item goes back to the head of the queue, and the next `get` has it.
#[test]
fn an_item_for_an_abandoned_get_goes_back_to_the_head() {
    let mut p = Pair::new(Setup::queue("q", 4, 16, 1024));
    let consumer = p.connect();
    let producer = p.connect();
    let h = p.open(consumer, "q");
    let gave_up = p.get(consumer, h, Wait::Forever);
    p.pump();
    // The consumer's Cancel is held back (as on a slow link) while the producer puts.
    p.peers[consumer].writing = false;
    p.peers[consumer].client.abandon(gave_up);
    let put = p.put(producer, h, b"on its way", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(producer, put), Some(Owned::Done));
    let later = p.put(producer, h, b"later", Wait::NoWait);
    p.pump();
    p.peers[consumer].writing = true;
    p.pump();
    // The abandoned get's reply is not reported; its item is back at the head.
    assert_eq!(p.take(consumer, gave_up), None);
    assert_eq!(p.take(producer, later), Some(Owned::Done));
    let next = p.get(consumer, h, Wait::NoWait);
    p.pump();
    assert_eq!(
        p.take(consumer, next),
        Some(Owned::Item(b"on its way".to_vec()))
    );
    let after = p.get(consumer, h, Wait::NoWait);
    p.pump();
    assert_eq!(
        p.take(consumer, after),
        Some(Owned::Item(b"later".to_vec()))
    );
    assert!(p.closed(consumer).is_none());
}

/// Items of an abandoned `GetMany` go back in their order, ahead of the rest.
#[test]
fn items_of_an_abandoned_get_many_go_back_in_order() {
    let mut p = Pair::new(Setup::queue("q", 8, 16, 1024));
    let consumer = p.connect();
    let producer = p.connect();
    let h = p.open(consumer, "q");
    let gave_up = get_many(&mut p, consumer, h, 2, Wait::Forever);
    p.pump();
    p.peers[consumer].writing = false;
    p.peers[consumer].client.abandon(gave_up);
    let id = put_many(&mut p, producer, h, &[b"1", b"2", b"3"], Wait::NoWait);
    p.pump();
    assert_eq!(p.take(producer, id), Some(Owned::Accepted(3, None)));
    p.peers[consumer].writing = true;
    p.pump();
    let all = get_many(&mut p, consumer, h, 10, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(consumer, all), Some(items(&[b"1", b"2", b"3"])));
}

/// A given-back item whose place in the queue was taken meanwhile waits at the front of the
/// blocked puts, ahead of them, and is not lost when the client that gave it back goes away.
#[test]
fn a_returned_item_outlives_its_client_when_the_queue_filled_up() {
    let mut p = Pair::new(Setup::queue("q", 1, 8, 12));
    let a = p.connect();
    let b = p.connect();
    let h = p.open(a, "q");
    assert_eq!(
        p.call(
            b,
            Op::Put {
                handle: h,
                item: b"filler",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    assert_eq!(
        p.call(
            a,
            Op::Return {
                handle: h,
                item: b"back"
            }
        ),
        Owned::Done
    );
    let blocked = p.put(b, h, b"blocked", Wait::Forever);
    p.pump();
    p.disconnect(a);
    let mut got = Vec::new();
    for _ in 0..3 {
        let id = p.get(b, h, Wait::Forever);
        p.pump();
        match p.take(b, id) {
            Some(Owned::Item(item)) => got.push(item),
            other => panic!("get: {other:?}"),
        }
    }
    assert_eq!(p.take(b, blocked), Some(Owned::Done));
    assert_eq!(
        got,
        vec![b"filler".to_vec(), b"back".to_vec(), b"blocked".to_vec()]
    );
}

/// The park store bounds what blocked puts pin: beyond it, `WaiterLimit` at once, nothing
/// queued; room comes back as blocked puts complete.
#[test]
fn blocked_puts_beyond_the_park_store_get_waiter_limit() {
    let mut setup = Setup::queue("q", 1, 16, 1024);
    setup.park_slots = 2;
    setup.conn_park = 16;
    let mut p = Pair::new(setup);
    let c = p.connect();
    let h = p.open(c, "q");
    assert_eq!(
        p.call(
            c,
            Op::Put {
                handle: h,
                item: b"0",
                wait: Wait::NoWait
            }
        ),
        Owned::Done
    );
    let one = p.put(c, h, b"1", Wait::Forever);
    let two = p.put(c, h, b"2", Wait::Forever);
    let three = p.put(c, h, b"3", Wait::Forever);
    p.pump();
    assert_eq!(p.take(c, three), Some(Owned::Error(ErrorCode::WaiterLimit)));
    let mut got = Vec::new();
    for _ in 0..3 {
        let id = p.get(c, h, Wait::Forever);
        p.pump();
        if let Some(Owned::Item(item)) = p.take(c, id) {
            got.extend(item);
        }
    }
    assert_eq!(p.take(c, one), Some(Owned::Done));
    assert_eq!(p.take(c, two), Some(Owned::Done));
    assert_eq!(got, b"012".to_vec());
}

/// A blocked `PutMany` that times out says how many of its items went in.
#[test]
fn a_timed_out_put_many_reports_its_progress() {
    let mut p = Pair::new(Setup::queue("q", 2, 16, 1024));
    let c = p.connect();
    let h = p.open(c, "q");
    let id = put_many(&mut p, c, h, &[b"1", b"2", b"3"], Wait::Millis(50));
    p.pump();
    assert_eq!(p.take(c, id), None);
    p.advance(51);
    assert_eq!(
        p.take(c, id),
        Some(Owned::Accepted(2, Some(ErrorCode::Timeout)))
    );
    assert_eq!(p.stat(0).len, 2);
}

/// A version-1 client is refused with `VersionMismatch`, which it can report.
#[test]
fn a_version_1_hello_is_refused() {
    let mut p = Pair::new(Setup::default());
    let conn = p.m.accept(p.now, [1; 32], &[]).unwrap();
    let mut body = b"dpot\x01\x01".to_vec();
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
        Some(wire::CloseReason::VersionMismatch)
    );
}

/// A client that stops reading is dropped after the write-stall time; the items of replies it
/// never got go back to the head of their queue, in order, and nothing else changes.
#[test]
fn a_stalled_readers_unsent_items_go_back() {
    let mut p = Pair::new(Setup::queue("q", 8, 16, 1024));
    let stalled = p.connect();
    let other = p.connect();
    let h = p.open(stalled, "q");
    let id = put_many(
        &mut p,
        other,
        h,
        &[b"1", b"2", b"3", b"4", b"5"],
        Wait::NoWait,
    );
    p.pump();
    assert_eq!(p.take(other, id), Some(Owned::Accepted(5, None)));
    p.peers[stalled].reading = false;
    let one = p.get(stalled, h, Wait::NoWait);
    let many = get_many(&mut p, stalled, h, 2, Wait::NoWait);
    p.pump();
    assert_eq!(p.stat(0).len, 2);
    p.advance(30_000);
    assert_eq!(
        p.peers[stalled].manager_reason,
        Some(wire::CloseReason::WriteStalled)
    );
    assert_eq!((p.take(stalled, one), p.take(stalled, many)), (None, None));
    let all = get_many(&mut p, other, h, 10, Wait::NoWait);
    p.pump();
    assert_eq!(
        p.take(other, all),
        Some(items(&[b"1", b"2", b"3", b"4", b"5"]))
    );
}

/// `Return` takes the client's word only as far as a put would: a value queue refuses what
/// is not a value, and an item the queue never gave out counts as put (got never exceeds put).
#[test]
fn a_returned_item_is_checked_like_a_put() {
    let mut setup = Setup::queue("q", 4, 16, 1024);
    setup.queues[0].1.mode = QueueMode::Value;
    let mut p = Pair::new(setup);
    let c = p.connect();
    let h = p.open(c, "q");
    assert_eq!(
        p.call(
            c,
            Op::Return {
                handle: h,
                item: &[0xFF]
            }
        ),
        Owned::Error(ErrorCode::InvalidValue)
    );
    assert_eq!(
        p.call(
            c,
            Op::Return {
                handle: h,
                item: &[0x07]
            }
        ),
        Owned::Done
    );
    let got = p.get(c, h, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, got), Some(Owned::Item(vec![0x07])));
    let s = p.stat(0);
    assert_eq!((s.total_put, s.total_got), (1, 1));
}

/// Owned connection buffers hold no memory through a handshake or while idle, keep their first
/// blocks while the peer is busy, and give them back after a quiet second.
#[test]
fn owned_buffers_are_kept_while_busy_and_given_back_when_quiet() {
    let mut p = Pair::new(Setup {
        owned_conns: true,
        ..Setup::default()
    });
    let c = p.connect();
    let id = p.peers[c].conn.unwrap();
    // The handshake's buffers went back as they emptied: an authenticated, idle connection
    // (and a flood of them) costs no buffer memory.
    assert_eq!(p.m.buffer_memory(id), 0);
    let h = p.open(c, "task_queue");
    let busy = p.m.buffer_memory(id);
    assert!(busy >= 2 * 4096, "busy connection holds {busy} B");
    for n in 0..5u8 {
        p.advance(400);
        let id = p.put(c, h, &[n], Wait::NoWait);
        p.pump();
        assert_eq!(p.take(c, id), Some(Owned::Done));
        assert_eq!(
            p.m.buffer_memory(id_of(&p, c)),
            busy,
            "request {n} kept them"
        );
    }
    // A second of quiet after the last request, less one tick: still kept.
    p.advance(999);
    assert_eq!(p.m.buffer_memory(id), busy);
    p.advance(1);
    assert_eq!(p.m.buffer_memory(id), 0);
    // Busy again: kept again, and a close gives everything back at once.
    p.put(c, h, b"x", Wait::NoWait);
    p.pump();
    assert_eq!(p.m.buffer_memory(id), busy);
    p.disconnect(c);
    assert_eq!(p.m.buffer_memory(id), 0);
}

fn id_of(p: &Pair, c: usize) -> ConnId {
    p.peers[c].conn.unwrap()
}

/// A busy connection keeps at most 128 KiB of what a huge frame made its buffer grow to.
#[test]
fn a_busy_connection_does_not_keep_what_a_huge_item_needed() {
    let big = 300 << 10;
    let mut setup = Setup::queue("task_queue", 4, big as u32, 2 * big);
    setup.config.max_frame = 2 * big as u32;
    let mut p = Pair::new(Setup {
        owned_conns: true,
        conn_rx: 2 * big,
        conn_tx: 2 * big,
        client_rx: 2 * big,
        client_tx: 2 * big,
        ..setup
    });
    let c = p.connect();
    let h = p.open(c, "task_queue");
    let id = p.put(c, h, &vec![7u8; big], Wait::NoWait);
    p.pump();
    assert_eq!(p.take(c, id), Some(Owned::Done));
    let kept = p.m.buffer_memory(id_of(&p, c));
    assert!((4096..=(128 << 10) + 4096).contains(&kept), "kept {kept} B");
}
