//! Admission control: connections still in their handshake cannot keep clients that
//! authenticate out (handshake cap, eviction of the oldest, per-source cap).
#![allow(clippy::field_reassign_with_default)]

mod harness;

use depot_core::wire::{ClientHello, CloseReason, ServerHello, HEADER_LEN, MAGIC, VERSION};
use depot_core::*;
use harness::*;

fn setup(conns: usize, max_handshaking: u32, per_source: u32) -> Setup {
    let mut setup = Setup::default();
    setup.conns = conns;
    setup.config.max_handshaking = max_handshaking;
    setup.config.max_handshaking_per_source = per_source;
    setup
}

/// The transport's part for a silent connection the manager is done with: flush, close.
/// Returns what the manager sent it.
fn close_if_done(p: &mut Pair, id: ConnId) -> Option<Vec<u8>> {
    p.m.close_reason(id)?;
    let out = p.m.poll_transmit(id).to_vec();
    let n = out.len();
    p.m.handle_transmitted(id, p.now, n);
    assert!(p.m.wants_close(id));
    p.m.handle_close(id, p.now);
    Some(out)
}

/// A hello-less connection evicted is told `Reject(Busy)`, the message it waits for.
fn assert_busy_reject(bytes: &[u8]) {
    assert!(bytes.len() > HEADER_LEN, "no farewell: {bytes:?}");
    let body = &bytes[HEADER_LEN..];
    let len = u32::from_be_bytes(bytes[..HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, body.len());
    let (hello, rest): (ServerHello, _) = postcard::take_from_bytes(body).unwrap();
    assert!(rest.is_empty());
    assert!(matches!(hello, ServerHello::Reject(CloseReason::Busy)));
}

/// At the handshake cap, a new connection evicts the oldest one still in its handshake, and the
/// newcomer is served.
#[test]
// Full handshakes (HMACs) take minutes under Miri; `smoke` covers them there.
#[cfg_attr(miri, ignore)]
fn handshake_cap_evicts_the_oldest() {
    let mut p = Pair::new(setup(8, 2, 0));
    let a = p.accept_silent(b"").unwrap();
    p.advance(5);
    let b = p.accept_silent(b"").unwrap();
    assert_eq!(p.m.handshaking(), 2);
    let c = p.try_add_client(KEY, b"").unwrap();
    assert_eq!(p.m.close_reason(a), Some(CloseReason::Busy));
    assert_eq!(p.m.close_reason(b), None);
    assert_busy_reject(&close_if_done(&mut p, a).unwrap());
    p.pump();
    assert!(p.peers[c].connected);
    assert_eq!(p.m.handshaking(), 1, "only b is left in its handshake");
    let q = p.open(c, "task_queue");
    p.put(c, q, b"x", Wait::NoWait);
    p.pump();
    assert_eq!(p.stat(0).len, 1);
}

/// With every slot taken, the oldest handshake is evicted and the newcomer told `Busy`; the
/// freed slot serves the next client. Authenticated connections are never evicted.
#[test]
// Full handshakes (HMACs) take minutes under Miri; `smoke` covers them there.
#[cfg_attr(miri, ignore)]
fn full_slots_evict_the_oldest_handshake() {
    let mut p = Pair::new(setup(3, u32::MAX, 0));
    let x = p.connect();
    let idle = p.accept_silent(b"").unwrap();
    let y = p.connect();
    assert_eq!(p.accept_silent(b""), Err(AcceptError::Busy));
    assert_eq!(p.m.close_reason(idle), Some(CloseReason::Busy));
    close_if_done(&mut p, idle).unwrap();
    let z = p.connect();
    // Only authenticated connections now: refused, nobody evicted.
    assert_eq!(p.accept_silent(b""), Err(AcceptError::Busy));
    for c in [x, y, z] {
        assert!(p.peers[c].connected && p.peers[c].closed.is_none());
    }
    assert_eq!(p.m.connections(), 3);
}

/// A client evicted before it finished reports `Busy`, as for a refused connection.
#[test]
// Full handshakes (HMACs) take minutes under Miri; `smoke` covers them there.
#[cfg_attr(miri, ignore)]
fn evicted_client_hears_busy() {
    let mut p = Pair::new(setup(8, 1, 0));
    let slow = p.try_add_client(KEY, b"").unwrap();
    let fresh = p.try_add_client(KEY, b"").unwrap();
    p.pump();
    assert_eq!(p.peers[slow].closed, Some(Error::Closed(CloseReason::Busy)));
    assert_eq!(p.peers[slow].manager_reason, Some(CloseReason::Busy));
    assert!(p.peers[fresh].connected);
}

/// More than `max_handshaking_per_source` handshakes from one source are refused; other
/// sources are not affected, and the source's count falls as its connections finish.
#[test]
// Full handshakes (HMACs) take minutes under Miri; `smoke` covers them there.
#[cfg_attr(miri, ignore)]
fn per_source_cap() {
    let mut p = Pair::new(setup(16, u32::MAX, 2));
    let a1 = p.accept_silent(b"10.0.0.1").unwrap();
    let _a2 = p.accept_silent(b"10.0.0.1").unwrap();
    assert_eq!(p.accept_silent(b"10.0.0.1"), Err(AcceptError::SourceLimit));
    // Another source, and connections with no source, are not counted against it.
    let b = p.try_add_client(KEY, b"10.0.0.2").unwrap();
    p.accept_silent(b"").unwrap();
    p.pump();
    assert!(p.peers[b].connected);
    // a1 goes away: room for one more from 10.0.0.1, which authenticates and stops counting.
    p.m.handle_close(a1, p.now);
    let a3 = p.try_add_client(KEY, b"10.0.0.1").unwrap();
    p.pump();
    assert!(p.peers[a3].connected);
    let _a4 = p.accept_silent(b"10.0.0.1").unwrap();
    assert_eq!(p.accept_silent(b"10.0.0.1"), Err(AcceptError::SourceLimit));
    // The handshake deadline frees the source too.
    p.advance(u64::from(p.setup.config.handshake_timeout_ms) + 1);
    assert!(p.accept_silent(b"10.0.0.1").is_ok());
}

/// A flood of silent connections, each re-opened as soon as it is dropped, never keeps a real
/// client out: every client gets in at its first try, and the counts stay within their caps.
#[test]
// Full handshakes (HMACs) take minutes under Miri; `smoke` covers them there.
#[cfg_attr(miri, ignore)]
fn silent_flood_never_locks_clients_out() {
    let mut p = Pair::new(setup(8, 4, 0));
    let mut silent: Vec<ConnId> = Vec::new();
    let mut clients = 0;
    let mut busy = 0;
    let rounds = 2_000u32;
    for round in 0..rounds {
        match p.accept_silent(b"") {
            Ok(id) => silent.push(id),
            Err(AcceptError::Busy) => busy += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
        // The transport closes whatever the manager is done with.
        silent.retain(|&id| close_if_done(&mut p, id).is_none());
        if round.is_multiple_of(50) {
            let c = p.try_add_client(KEY, b"").expect("a client is accepted");
            p.pump();
            assert!(p.peers[c].connected, "client {c} kept out at round {round}");
            clients += 1;
            // It leaves again: the flood must not take its slot for good.
            p.peers[c].client.handle_close();
            p.pump();
        }
        assert!(p.m.handshaking() <= 4);
        assert!(p.m.connections() <= 8);
        p.advance(1);
    }
    assert_eq!(clients, rounds.div_ceil(50));
    // Silent connections take at most the handshake share: slots stay free, nobody is refused.
    assert_eq!(busy, 0);
}

/// Eviction and the handshake list survive every kind of end: timeouts, bad input, the peer
/// closing; the count of handshakes returns to zero.
#[test]
fn handshake_count_follows_every_end() {
    let mut p = Pair::new(setup(8, 3, 2));
    let timed_out = p.accept_silent(b"s").unwrap();
    let garbage = p.accept_silent(b"s").unwrap();
    let gone = p.accept_silent(b"t").unwrap();
    assert_eq!(p.m.handshaking(), 3);
    p.m.handle_input(garbage, p.now, b"GET / HTTP/1.1\r\n\r\n");
    assert!(p.m.close_reason(garbage).is_some());
    close_if_done(&mut p, garbage);
    p.m.handle_close(gone, p.now);
    assert_eq!(p.m.handshaking(), 1);
    p.advance(u64::from(p.setup.config.handshake_timeout_ms) + 1);
    assert_eq!(
        p.m.close_reason(timed_out),
        Some(CloseReason::HandshakeTimeout)
    );
    close_if_done(&mut p, timed_out);
    assert_eq!(p.m.handshaking(), 0);
    assert_eq!(p.m.connections(), 0);
    // All room is back: three from one source would pass the cap of 2 only if counts leaked.
    p.accept_silent(b"s").unwrap();
    p.accept_silent(b"s").unwrap();
    assert_eq!(p.accept_silent(b"s"), Err(AcceptError::SourceLimit));
}

/// A hello frame as a client sends it.
fn hello_frame() -> Vec<u8> {
    let hello = ClientHello {
        magic: MAGIC,
        min_version: VERSION,
        max_version: VERSION,
        nonce: [7; 32],
        max_frame: 4096,
        key: Default::default(),
        encrypt: false,
    };
    let mut buf = [0u8; 128];
    let body = postcard::to_slice(&hello, &mut buf).unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Connections that have not sent a valid hello are evicted before older ones that have: a
/// client that speaks at once outlives a flood of silent connections.
#[test]
fn silent_connections_are_evicted_first() {
    let mut p = Pair::new(setup(8, 3, 0));
    let spoke = p.accept_silent(b"").unwrap();
    assert_eq!(
        p.m.handle_input(spoke, p.now, &hello_frame()),
        hello_frame().len()
    );
    assert!(!p.m.poll_transmit(spoke).is_empty(), "challenged");
    let silent = p.accept_silent(b"").unwrap();
    let later = p.accept_silent(b"").unwrap();
    // The cap is reached: the newcomer evicts the oldest silent one, not the older speaker.
    p.accept_silent(b"").unwrap();
    assert_eq!(p.m.close_reason(silent), Some(CloseReason::Busy));
    assert_eq!(p.m.close_reason(spoke), None);
    assert_eq!(p.m.close_reason(later), None);
    close_if_done(&mut p, silent);
    // With only speakers left at the cap, the oldest speaker goes.
    let mut p = Pair::new(setup(8, 2, 0));
    let first = p.accept_silent(b"").unwrap();
    let second = p.accept_silent(b"").unwrap();
    for id in [first, second] {
        p.m.handle_input(id, p.now, &hello_frame());
    }
    p.accept_silent(b"").unwrap();
    assert_eq!(p.m.close_reason(first), Some(CloseReason::Busy));
    assert_eq!(p.m.close_reason(second), None);
    // It was challenged already: it gets no `Reject`, only the close.
    let out = close_if_done(&mut p, first).unwrap();
    let (_, rest) = out.split_at(HEADER_LEN);
    let (hello, _): (ServerHello, _) = postcard::take_from_bytes(rest).unwrap();
    assert!(matches!(hello, ServerHello::Challenge { .. }));
}
