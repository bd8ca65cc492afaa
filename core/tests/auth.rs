//! Authentication: HMAC-SHA256 known answers, the handshake against PROTOCOL.md, and every way
//! of tampering with a sealed frame.
#![allow(clippy::field_reassign_with_default)]

mod harness;

use depot_core::auth::hmac_sha256;
use depot_core::client::ClientConfig;
use depot_core::wire::{CloseReason, Op, Wait, HEADER_LEN, TAG_LEN};
use depot_core::*;
use harness::*;
use sha2::{Digest, Sha256};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 4231, test cases 1–4, 6 and 7 (HMAC-SHA-256), and 5 (truncated to 128 bits, as frame
/// tags are).
#[test]
fn rfc4231_known_answers() {
    let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            (1..=25).collect(),
            vec![0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            vec![0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (n, (key, data, want)) in cases.iter().enumerate() {
        assert_eq!(hmac_sha256(key, data).to_vec(), hex(want), "case {n}");
    }
    // Test case 5: only the first 128 bits are specified.
    let tc5 = hmac_sha256(&[0x0c; 20], b"Test With Truncation");
    assert_eq!(tc5[..16].to_vec(), hex("a3b6167473100ee06e0c796c2955552b"));
}

/// Moves one handshake step by hand: bytes out of `from`, into `to`.
fn client_out(c: &mut Client<'_>) -> Vec<u8> {
    let out = c.poll_transmit().to_vec();
    c.handle_transmitted(out.len());
    out
}

fn manager_out(m: &mut Manager<'_>, id: ConnId, now: Instant) -> Vec<u8> {
    let out = m.poll_transmit(id).to_vec();
    m.handle_transmitted(id, now, out.len());
    out
}

/// A client (with the right key) taken through hello and challenge by hand; returns it, its
/// connection, and the hello and challenge frames (whose bodies make the transcript).
fn hello_and_challenge(p: &mut Pair) -> (usize, ConnId, Vec<u8>, Vec<u8>) {
    let c = p.add_client_with_key(KEY);
    let conn = p.peers[c].conn.unwrap();
    let now = p.now;
    let hello = client_out(&mut p.peers[c].client);
    p.m.handle_input(conn, now, &hello);
    let challenge = manager_out(&mut p.m, conn, now);
    p.peers[c].client.handle_input(&challenge);
    assert_eq!(drain_events(&mut p.peers[c].client), vec![]);
    (c, conn, hello, challenge)
}

/// [`hello_and_challenge`], returning the proof frame the client now sends instead.
fn up_to_proof(p: &mut Pair) -> (usize, ConnId, Vec<u8>) {
    let (c, conn, _, _) = hello_and_challenge(p);
    (c, conn, client_out(&mut p.peers[c].client))
}

/// [`hello_and_challenge`], then the proof and the welcome: the client is connected.
fn handshake_by_hand(p: &mut Pair) -> (usize, ConnId, Vec<u8>, Vec<u8>) {
    let (c, conn, hello, challenge) = hello_and_challenge(p);
    let proof = client_out(&mut p.peers[c].client);
    p.m.handle_input(conn, p.now, &proof);
    let welcome = manager_out(&mut p.m, conn, p.now);
    p.peers[c].client.handle_input(&welcome);
    assert_eq!(drain_events(&mut p.peers[c].client), vec![Seen::Connected]);
    (c, conn, hello, challenge)
}

/// A session key as PROTOCOL.md §5 derives it: HMAC(authkey, label ‖ 0 ‖ transcript).
fn session_key(hello: &[u8], challenge: &[u8], label: &[u8]) -> [u8; 32] {
    let transcript: [u8; 32] = Sha256::new()
        .chain_update(&hello[HEADER_LEN..])
        .chain_update(&challenge[HEADER_LEN..])
        .finalize()
        .into();
    let mut data = label.to_vec();
    data.push(0);
    data.extend_from_slice(&transcript);
    hmac_sha256(KEY, &data)
}

/// The handshake and the first frame in each direction, recomputed from PROTOCOL.md alone
/// (a client that does not ask for sealed frames: MACed frames, §5).
#[test]
fn handshake_and_tags_follow_the_spec() {
    let mut setup = Setup::default();
    setup.client_config.encryption = Encryption::Off;
    let mut p = Pair::new(setup);
    let c = p.add_client_with_key(KEY);
    let conn = p.peers[c].conn.unwrap();
    let now = p.now;
    let hello = client_out(&mut p.peers[c].client);
    // ClientHello: magic, versions, nonce, max_frame varint.
    assert_eq!(&hello[HEADER_LEN..HEADER_LEN + 4], b"dpot");
    let cn: [u8; 32] = hello[HEADER_LEN + 6..HEADER_LEN + 38].try_into().unwrap();
    p.m.handle_input(conn, now, &hello);
    let challenge = manager_out(&mut p.m, conn, now);
    assert_eq!(challenge[HEADER_LEN], 0, "Challenge variant");
    assert_eq!(
        challenge[HEADER_LEN + 1],
        wire::MIN_VERSION,
        "version (the client offers 3..=3)"
    );
    // Neither asked for nor granted sealed frames: the last byte of each hello.
    assert_eq!(hello.last(), Some(&0), "ClientHello.encrypt");
    assert_eq!(challenge.last(), Some(&0), "Challenge.sealed");
    let mn: [u8; 32] = challenge[HEADER_LEN + 2..HEADER_LEN + 34]
        .try_into()
        .unwrap();
    p.peers[c].client.handle_input(&challenge);
    assert_eq!(drain_events(&mut p.peers[c].client), vec![]);
    let proof = client_out(&mut p.peers[c].client);
    // The transcript hash covers both handshake bodies as sent, nonces included.
    let transcript: [u8; 32] = Sha256::new()
        .chain_update(&hello[HEADER_LEN..])
        .chain_update(&challenge[HEADER_LEN..])
        .finalize()
        .into();
    assert!(hello[HEADER_LEN..].windows(32).any(|w| w == cn));
    assert!(challenge[HEADER_LEN..].windows(32).any(|w| w == mn));
    let labelled = |label: &[u8]| {
        let mut data = label.to_vec();
        data.push(0);
        data.extend_from_slice(&transcript);
        data
    };
    assert_eq!(proof.len(), HEADER_LEN + 32);
    assert_eq!(
        proof[HEADER_LEN..],
        hmac_sha256(KEY, &labelled(b"depot/1 client proof"))
    );
    p.m.handle_input(conn, now, &proof);
    let welcome = manager_out(&mut p.m, conn, now);
    assert_eq!(welcome.len(), HEADER_LEN + 33);
    assert_eq!(welcome[HEADER_LEN], 0, "Welcome variant");
    assert_eq!(
        welcome[HEADER_LEN + 1..],
        hmac_sha256(KEY, &labelled(b"depot/1 manager proof"))
    );
    p.peers[c].client.handle_input(&welcome);
    assert_eq!(drain_events(&mut p.peers[c].client), vec![Seen::Connected]);

    // Frames: tag = HMAC(k_dir, seq ‖ header ‖ messages)[..16], seq from 0 in each direction.
    let k_c2m = hmac_sha256(KEY, &labelled(b"depot/1 client->manager"));
    let k_m2c = hmac_sha256(KEY, &labelled(b"depot/1 manager->client"));
    let check = |key: &[u8; 32], seq: u64, frame: &[u8]| {
        let body_len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), HEADER_LEN + body_len);
        let split = frame.len() - TAG_LEN;
        let mut data = seq.to_be_bytes().to_vec();
        data.extend_from_slice(&frame[..split]);
        assert_eq!(frame[split..], hmac_sha256(key, &data)[..TAG_LEN]);
    };
    for seq in 0..3 {
        p.send(c, Op::Status);
        let req = client_out(&mut p.peers[c].client);
        check(&k_c2m, seq, &req);
        p.m.handle_input(conn, now, &req);
        let rep = manager_out(&mut p.m, conn, now);
        check(&k_m2c, seq, &rep);
        p.peers[c].client.handle_input(&rep);
        assert!(matches!(
            drain_events(&mut p.peers[c].client)[..],
            [Seen::Reply(_, Owned::Status(_))]
        ));
    }
}

/// Wrong key: both ends report `AuthFailed`, and the manager's only word is `AuthFailed`.
#[test]
fn wrong_key_fails_on_both_ends() {
    let mut setup = Setup::default();
    setup.manager_key = b"not the producer key".to_vec();
    // The verdict at once (the throttle's delays have tests of their own).
    setup.config.throttle.delay_ms = 0;
    let mut p = Pair::new(setup);
    let (c, conn, proof) = up_to_proof(&mut p);
    let now = p.now;
    p.m.handle_input(conn, now, &proof);
    // Exactly one frame, `ServerVerdict::AuthFailed` (variant 1, no fields), then close.
    let verdict = manager_out(&mut p.m, conn, now);
    assert_eq!(verdict, [0, 0, 0, 1, 1]);
    assert!(p.m.wants_close(conn));
    assert_eq!(p.m.close_reason(conn), Some(CloseReason::AuthFailed));
    p.peers[c].client.handle_input(&verdict);
    assert_eq!(
        drain_events(&mut p.peers[c].client),
        vec![Seen::Closed(Error::AuthFailed)]
    );
    // Through the harness as well, with another client.
    let d = p.add_client_with_key(b"also wrong");
    p.pump();
    assert_eq!(p.closed(d), Some(Error::AuthFailed));
    assert_eq!(p.peers[d].manager_reason, Some(CloseReason::AuthFailed));
    assert_eq!(p.m.connections(), 0);
}

/// A proof frame that does not decode is answered the way a wrong proof is, in the message
/// the client expects at that point (`ServerVerdict::AuthFailed`), then the manager closes.
#[test]
fn malformed_proof_is_answered_auth_failed() {
    let mut p = Pair::new(Setup::default());
    let (c, conn, _proof) = up_to_proof(&mut p);
    let now = p.now;
    // A proof body one byte short.
    let mut short = vec![0, 0, 0, 31];
    short.extend_from_slice(&[7; 31]);
    p.m.handle_input(conn, now, &short);
    let verdict = manager_out(&mut p.m, conn, now);
    assert_eq!(verdict, [0, 0, 0, 1, 1]);
    assert_eq!(p.m.close_reason(conn), Some(CloseReason::Malformed));
    p.peers[c].client.handle_input(&verdict);
    assert_eq!(
        drain_events(&mut p.peers[c].client),
        vec![Seen::Closed(Error::AuthFailed)]
    );
}

/// A "manager" that does not know the key cannot pass the client's check of its proof.
#[test]
fn client_rejects_an_impostor_manager() {
    let (mut rx, mut tx, mut slots) = (vec![0u8; 1024], vec![0u8; 1024], [RequestSlot::FREE; 2]);
    let mut c = Client::new(
        ClientConfig::default(),
        KEY,
        [7; 32],
        Instant::ZERO,
        &mut rx[..],
        &mut tx[..],
        &mut slots,
    );
    let _hello = client_out(&mut c);
    let mn = [9u8; 32];
    let mut challenge = vec![0u8];
    challenge.push(wire::MIN_VERSION);
    challenge.extend_from_slice(&mn);
    challenge.extend_from_slice(&[0x80, 0x08]); // max_frame 1024 as a varint
    challenge.push(1); // sealed, as the client asked
    let mut frame = (challenge.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&challenge);
    c.handle_input(&frame);
    assert_eq!(drain_events(&mut c), vec![]);
    let _proof = client_out(&mut c);
    // The impostor answers with a proof under its own key.
    let mut data = b"depot/1 manager proof\0".to_vec();
    data.extend_from_slice(&Sha256::digest(mn));
    let mut welcome = vec![0, 0, 0, 33, 0];
    welcome.extend_from_slice(&hmac_sha256(b"guess", &data));
    c.handle_input(&welcome);
    assert_eq!(drain_events(&mut c), vec![Seen::Closed(Error::AuthFailed)]);
    assert!(!c.is_ready());
}

/// A depot manager greets first with a Python-style challenge carrying depot's marker (for
/// Python clients on the same port): the client skips it, in any split, and connects.
#[test]
fn client_skips_the_python_greeting_of_a_depot_manager() {
    for split in [1, 7, 64, 4096] {
        let mut p = Pair::new(Setup::default());
        let c = p.add_client_with_key(KEY);
        let conn = p.peers[c].conn.unwrap();
        let now = p.now;
        let mut greeting = b"#CHALLENGE#{sha256}dpot/mgr".to_vec();
        greeting.extend_from_slice(&[0x5a; 32]);
        let mut bytes = (greeting.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&greeting);
        let hello = client_out(&mut p.peers[c].client);
        p.m.handle_input(conn, now, &hello);
        bytes.extend_from_slice(&manager_out(&mut p.m, conn, now));
        for chunk in bytes.chunks(split) {
            assert_eq!(p.peers[c].client.handle_input(chunk), chunk.len());
            assert_eq!(drain_events(&mut p.peers[c].client), vec![]);
        }
        let proof = client_out(&mut p.peers[c].client);
        p.m.handle_input(conn, now, &proof);
        let welcome = manager_out(&mut p.m, conn, now);
        p.peers[c].client.handle_input(&welcome);
        assert_eq!(drain_events(&mut p.peers[c].client), vec![Seen::Connected]);
    }
}

/// A real Python manager's challenge has no depot marker: the client says the peer does not
/// speak depot instead of waiting for an answer that never comes.
#[test]
fn client_recognises_a_python_manager() {
    let (mut rx, mut tx, mut slots) = (vec![0u8; 1024], vec![0u8; 1024], [RequestSlot::FREE; 2]);
    let mut c = Client::new(
        ClientConfig::default(),
        KEY,
        [7; 32],
        Instant::ZERO,
        &mut rx,
        &mut tx,
        &mut slots,
    );
    let _hello = client_out(&mut c);
    // CPython 3.13's challenge: `{sha256}` and 40 random bytes.
    let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
    challenge.extend_from_slice(&[0x11; 40]);
    let mut frame = (challenge.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&challenge);
    c.handle_input(&frame);
    assert_eq!(
        drain_events(&mut c),
        vec![Seen::Closed(Error::PythonManager)]
    );
}

/// A connected pair whose client does not write by itself; returns (pair, client).
fn quiet_pair() -> (Pair, usize) {
    let mut setup = Setup::default();
    setup.conns = 2;
    setup.config.frame_timeout_ms = 1_000;
    let mut p = Pair::new(setup);
    let c = p.connect();
    p.peers[c].writing = false;
    (p, c)
}

/// The next sealed frame of client `c` carrying `op`.
fn frame_of(p: &mut Pair, c: usize, op: Op) -> Vec<u8> {
    p.send(c, op);
    client_out(&mut p.peers[c].client)
}

/// Feeds `bytes` to the manager as client `c`'s input and pumps.
fn inject(p: &mut Pair, c: usize, bytes: &[u8]) {
    let conn = p.peers[c].conn.expect("connection open");
    p.m.handle_input(conn, p.now, bytes);
    p.pump();
}

fn put_op(item: &[u8]) -> Op<'_> {
    Op::Put {
        handle: wire::Handle::from_raw(0),
        item,
        wait: Wait::NoWait,
    }
}

/// Every single-bit flip of a sealed request frame is rejected: the connection closes with
/// `BadMac` (or, for header flips, `FrameTooLarge`/`Malformed`, or `FrameTimeout` when the
/// flipped length asks for bytes that never come). Nothing is executed, nothing panics.
#[test]
fn every_bit_flip_of_a_request_is_rejected() {
    let (mut p, c) = quiet_pair();
    let frame = frame_of(&mut p, c, put_op(b"hello"));
    for bit in 0..frame.len() * 8 {
        let (mut p, c) = quiet_pair();
        let mut bad = frame.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        inject(&mut p, c, &bad);
        if p.peers[c].conn.is_some() {
            assert!(bit < HEADER_LEN * 8, "bit {bit}: body flip not rejected");
            p.advance(1_000);
        }
        let reason = p.peers[c].manager_reason;
        let allowed: &[CloseReason] = if bit < HEADER_LEN * 8 {
            &[
                CloseReason::BadMac,
                CloseReason::FrameTooLarge,
                CloseReason::Malformed,
                CloseReason::FrameTimeout,
            ]
        } else {
            &[CloseReason::BadMac]
        };
        assert!(
            reason.is_some_and(|r| allowed.contains(&r)),
            "bit {bit}: {reason:?}"
        );
        assert_eq!(p.stat(0).total_put, 0, "bit {bit}: the put ran");
        assert!(p.peers[c].conn.is_none());
        assert_eq!(p.closed(c).map(|_| ()), Some(()));
    }
}

/// The same for the client: every bit flip of a reply frame closes it.
#[test]
fn every_bit_flip_of_a_reply_is_rejected() {
    let reply_frame = |p: &mut Pair, c: usize| {
        p.peers[c].reading = false;
        p.send(
            c,
            Op::Get {
                handle: wire::Handle::from_raw(0),
                wait: Wait::NoWait,
            },
        );
        p.pump();
        let conn = p.peers[c].conn.unwrap();
        manager_out(&mut p.m, conn, p.now)
    };
    let mut p = Pair::with_default();
    let c = p.connect();
    let frame = reply_frame(&mut p, c);
    assert!(frame.len() > HEADER_LEN + TAG_LEN);
    for bit in 0..frame.len() * 8 {
        let mut p = Pair::with_default();
        let c = p.connect();
        assert_eq!(reply_frame(&mut p, c), frame);
        let mut bad = frame.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        p.peers[c].client.handle_input(&bad);
        let mut events = drain_events(&mut p.peers[c].client);
        if events.is_empty() {
            // A longer length: the client waits for bytes that never come, then gives up.
            assert!(bit < HEADER_LEN * 8, "bit {bit}: body flip not rejected");
            let deadline = p.peers[c].client.poll_timeout().expect("a reply deadline");
            p.peers[c].client.handle_timeout(deadline);
            events = drain_events(&mut p.peers[c].client);
        }
        let [Seen::Closed(e)] = events[..] else {
            panic!("bit {bit}: {events:?}");
        };
        let ok = if bit < HEADER_LEN * 8 {
            matches!(
                e,
                Error::Closed(CloseReason::BadMac)
                    | Error::Closed(CloseReason::FrameTooLarge)
                    | Error::Closed(CloseReason::Malformed)
                    | Error::Timeout
            )
        } else {
            e == Error::Closed(CloseReason::BadMac)
        };
        assert!(ok, "bit {bit}: {e:?}");
    }
}

#[test]
fn replayed_frame_is_rejected() {
    let (mut p, c) = quiet_pair();
    let first = frame_of(&mut p, c, put_op(b"once"));
    inject(&mut p, c, &first);
    assert_eq!(p.stat(0).total_put, 1);
    inject(&mut p, c, &first);
    assert_eq!(p.peers[c].manager_reason, Some(CloseReason::BadMac));
    assert_eq!(p.stat(0).total_put, 1, "the replay ran");
}

#[test]
fn reordered_frames_are_rejected() {
    let (mut p, c) = quiet_pair();
    let first = frame_of(&mut p, c, put_op(b"first"));
    let second = frame_of(&mut p, c, put_op(b"second"));
    inject(&mut p, c, &second);
    assert_eq!(p.peers[c].manager_reason, Some(CloseReason::BadMac));
    assert_eq!(p.stat(0).total_put, 0);
    let _ = first;
}

#[test]
fn dropped_frame_then_next_is_rejected() {
    let (mut p, c) = quiet_pair();
    let first = frame_of(&mut p, c, put_op(b"first"));
    let _dropped = frame_of(&mut p, c, put_op(b"second"));
    let third = frame_of(&mut p, c, put_op(b"third"));
    inject(&mut p, c, &first);
    assert_eq!(p.stat(0).total_put, 1);
    inject(&mut p, c, &third);
    assert_eq!(p.peers[c].manager_reason, Some(CloseReason::BadMac));
    assert_eq!(p.stat(0).total_put, 1);
}

#[test]
fn truncated_frames_are_rejected() {
    // Cut short and left hanging: nothing runs, and the frame deadline closes it.
    let (mut p, c) = quiet_pair();
    let frame = frame_of(&mut p, c, put_op(b"truncated"));
    inject(&mut p, c, &frame[..frame.len() - 1]);
    assert!(p.peers[c].conn.is_some());
    p.advance(1_000);
    assert_eq!(p.peers[c].manager_reason, Some(CloseReason::FrameTimeout));
    assert_eq!(p.stat(0).total_put, 0);
    // Cut short with the length rewritten to match: the tag no longer verifies.
    for cut in 1..frame.len() - HEADER_LEN {
        let (mut p, c) = quiet_pair();
        let mut short = frame[..frame.len() - cut].to_vec();
        let len = (short.len() - HEADER_LEN) as u32;
        short[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        inject(&mut p, c, &short);
        let want = if (len as usize) < TAG_LEN {
            CloseReason::Malformed
        } else {
            CloseReason::BadMac
        };
        assert_eq!(p.peers[c].manager_reason, Some(want), "cut {cut}");
        assert_eq!(p.stat(0).total_put, 0);
    }
}

/// A frame sealed in one session does not verify in another, even at the same position.
#[test]
fn frame_from_another_session_is_rejected() {
    let (mut a, ca) = quiet_pair();
    let from_a = frame_of(&mut a, ca, put_op(b"session a"));
    // A second connection to the same manager, same key, same sequence number.
    let cb = a.connect();
    a.peers[cb].writing = false;
    inject(&mut a, cb, &from_a);
    assert_eq!(a.peers[cb].manager_reason, Some(CloseReason::BadMac));
    assert_eq!(a.stat(0).total_put, 0);
    // And the frame still works where it belongs.
    inject(&mut a, ca, &from_a);
    assert_eq!(a.stat(0).total_put, 1);
    assert!(a.peers[ca].conn.is_some());
}

/// Replies replayed or reordered towards the client are rejected by the client.
#[test]
fn client_rejects_replayed_and_reordered_replies() {
    let setup = || {
        let mut p = Pair::with_default();
        let c = p.connect();
        p.peers[c].reading = false;
        let conn = p.peers[c].conn.unwrap();
        p.send(c, Op::Status);
        p.pump();
        let r1 = manager_out(&mut p.m, conn, p.now);
        p.send(c, Op::Status);
        p.pump();
        let r2 = manager_out(&mut p.m, conn, p.now);
        (p, c, r1, r2)
    };
    let (mut p, c, r1, _r2) = setup();
    p.peers[c].client.handle_input(&r1);
    assert!(matches!(
        drain_events(&mut p.peers[c].client)[..],
        [Seen::Reply(..)]
    ));
    p.peers[c].client.handle_input(&r1);
    assert_eq!(
        drain_events(&mut p.peers[c].client),
        vec![Seen::Closed(Error::Closed(CloseReason::BadMac))]
    );
    let (mut p, c, _r1, r2) = setup();
    p.peers[c].client.handle_input(&r2);
    assert_eq!(
        drain_events(&mut p.peers[c].client),
        vec![Seen::Closed(Error::Closed(CloseReason::BadMac))]
    );
}

/// A frame with a valid tag from the wrong direction (a reflected frame) is rejected.
#[test]
fn reflected_frame_is_rejected() {
    let mut p = Pair::with_default();
    let c = p.connect();
    p.peers[c].reading = false;
    let conn = p.peers[c].conn.unwrap();
    p.send(c, Op::Status);
    p.pump();
    let reply = manager_out(&mut p.m, conn, p.now);
    p.m.handle_input(conn, p.now, &reply);
    p.peers[c].reading = true;
    p.pump();
    assert_eq!(p.peers[c].manager_reason, Some(CloseReason::BadMac));
}

/// Every single-bit flip of the client's handshake frames: the whole hello (versions, nonce,
/// `max_frame`) is bound into the proofs by the transcript hash, so a flip there fails
/// authentication; the header, magic and encoding fail to parse (PROTOCOL.md §4).
#[test]
fn every_bit_flip_of_the_client_handshake() {
    let record = || {
        let mut p = Pair::new(Setup {
            conns: 1,
            ..Setup::default()
        });
        let c = p.add_client_with_key(KEY);
        let conn = p.peers[c].conn.unwrap();
        let hello = client_out(&mut p.peers[c].client);
        (p, c, conn, hello)
    };
    let (_, _, _, hello) = record();
    for bit in 0..hello.len() * 8 {
        let (mut p, c, conn, _) = record();
        let mut bad = hello.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        p.m.handle_input(conn, p.now, &bad);
        p.pump();
        p.advance(10_000);
        let connected = p.peers[c].connected && p.closed(c).is_none();
        assert!(!connected, "bit {bit}: a tampered hello connected");
        assert!(
            p.peers[c].conn.is_none() || connected,
            "bit {bit}: left open"
        );
    }
    // The proof frame.
    let (mut p, c, conn, hello) = record();
    p.m.handle_input(conn, p.now, &hello);
    let challenge = manager_out(&mut p.m, conn, p.now);
    p.peers[c].client.handle_input(&challenge);
    drain_events(&mut p.peers[c].client);
    let proof = client_out(&mut p.peers[c].client);
    for bit in 0..proof.len() * 8 {
        let (mut p, _c, conn, hello) = record();
        p.m.handle_input(conn, p.now, &hello);
        let _ = manager_out(&mut p.m, conn, p.now);
        let mut bad = proof.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        p.m.handle_input(conn, p.now, &bad);
        p.m.handle_timeout(p.now.add_millis(10_000));
        let reason = p.m.close_reason(conn);
        let ok = if bit < HEADER_LEN * 8 {
            matches!(
                reason,
                Some(
                    CloseReason::FrameTooLarge
                        | CloseReason::Malformed
                        | CloseReason::HandshakeTimeout
                )
            )
        } else {
            reason == Some(CloseReason::AuthFailed)
        };
        assert!(ok, "bit {bit}: {reason:?}");
    }
}

/// Sealed frames (PROTOCOL.md §5.1), recomputed from the spec: per-direction keys from the
/// transcript, the sequence number as nonce, the length header as associated data. The
/// item's bytes do not appear in the frame; they come back out of it with the spec's key.
#[test]
fn sealed_frames_follow_the_spec() {
    use chacha20poly1305::aead::array::Array;
    use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};

    let mut p = Pair::new(Setup::default());
    let (c, conn, hello, challenge) = handshake_by_hand(&mut p);
    assert_eq!(hello.last(), Some(&1), "ClientHello.encrypt");
    assert_eq!(challenge.last(), Some(&1), "Challenge.sealed");
    let now = p.now;
    let key =
        |label: &[u8]| ChaCha20Poly1305::new(&Array::from(session_key(&hello, &challenge, label)));
    let c2m = key(b"depot/3 seal client->manager");
    let m2c = key(b"depot/3 seal manager->client");
    let open = |cipher: &ChaCha20Poly1305, seq: u64, frame: &[u8]| -> Vec<u8> {
        let body_len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), HEADER_LEN + body_len);
        let split = frame.len() - TAG_LEN;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let mut body = frame[HEADER_LEN..split].to_vec();
        let tag = Array::try_from(&frame[split..]).unwrap();
        cipher
            .decrypt_inout_detached(
                &Array::from(nonce),
                &frame[..HEADER_LEN],
                body.as_mut_slice().into(),
                &tag,
            )
            .unwrap_or_else(|_| panic!("frame {seq} does not open"));
        body
    };
    let item = b"a recognisable item";
    let handle = wire::Handle::from_raw(0);
    for seq in 0..3 {
        let op = Op::Put {
            handle,
            item,
            wait: Wait::NoWait,
        };
        let req = frame_of(&mut p, c, op);
        assert!(!req.windows(item.len()).any(|w| w == item));
        let mut want = vec![0u8; 64];
        let want =
            postcard::to_slice(&wire::Request { id: 0, op }, &mut want).unwrap()[1..].to_vec();
        let plain = open(&c2m, seq, &req);
        assert!(plain.ends_with(&want), "frame {seq}: {plain:?}");
        p.m.handle_input(conn, now, &req);
        let rep = manager_out(&mut p.m, conn, now);
        // Message::Reply (0), the request's id, Reply::Done (0).
        assert_eq!(open(&m2c, seq, &rep), [0, plain[0], 0], "reply {seq}");
        p.peers[c].client.handle_input(&rep);
        assert!(matches!(
            drain_events(&mut p.peers[c].client)[..],
            [Seen::Reply(_, Owned::Done)]
        ));
    }
    assert_eq!(p.stat(0).total_put, 3);
}

/// The manager's and the client's policies meet in the hello: sealed when the client asks and
/// the manager agrees; a side that requires sealing refuses a peer that will not, with
/// `EncryptionRequired` on both ends.
#[test]
fn encryption_is_negotiated_in_the_hello() {
    use Encryption::*;
    // (manager, client, sealed or the refusal)
    let cases = [
        (Preferred, Preferred, Ok(true)),
        (Required, Preferred, Ok(true)),
        (Preferred, Required, Ok(true)),
        (Required, Required, Ok(true)),
        (Off, Preferred, Ok(false)),
        (Preferred, Off, Ok(false)),
        (Off, Off, Ok(false)),
        (Required, Off, Err(CloseReason::EncryptionRequired)),
        (Off, Required, Err(CloseReason::EncryptionRequired)),
    ];
    for (manager, client, want) in cases {
        let mut setup = Setup::default();
        setup.config.encryption = manager;
        setup.client_config.encryption = client;
        let mut p = Pair::new(setup);
        let c = p.add_client_with_key(KEY);
        p.pump();
        let case = format!("manager {manager:?}, client {client:?}");
        match want {
            Ok(sealed) => {
                assert!(p.peers[c].client.is_ready(), "{case}");
                let item = b"plain or sealed?";
                let frame = frame_of(&mut p, c, put_op(item));
                let visible = frame.windows(item.len()).any(|w| w == item);
                assert_eq!(visible, !sealed, "{case}");
                inject(&mut p, c, &frame);
                assert_eq!(p.stat(0).total_put, 1, "{case}");
            }
            Err(reason) => {
                assert_eq!(p.closed(c), Some(Error::Closed(reason)), "{case}");
                if manager == Required {
                    assert_eq!(p.peers[c].manager_reason, Some(reason), "{case}");
                }
                assert_eq!(p.m.connections(), 0, "{case}");
            }
        }
    }
}

/// A challenge frame as a manager would send it: `version`, nonce `[9; 32]`, `max_frame` 1024,
/// the `sealed` byte.
fn crafted_challenge(version: u8, sealed: u8) -> Vec<u8> {
    let mut challenge = vec![0u8, version];
    challenge.extend_from_slice(&[9u8; 32]);
    challenge.extend_from_slice(&[0x80, 0x08, sealed]);
    let mut frame = (challenge.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&challenge);
    frame
}

/// A manager that seals frames the client did not ask for breaks the protocol: the client
/// closes (a tampered challenge would fail the proofs anyway).
#[test]
fn client_refuses_sealing_it_did_not_ask_for() {
    let mut config = ClientConfig::default();
    config.encryption = Encryption::Off;
    let (mut rx, mut tx, mut slots) = (vec![0u8; 1024], vec![0u8; 1024], [RequestSlot::FREE; 2]);
    let mut c = Client::new(
        config,
        KEY,
        [7; 32],
        Instant::ZERO,
        &mut rx[..],
        &mut tx[..],
        &mut slots,
    );
    let hello = client_out(&mut c);
    assert_eq!(hello.last(), Some(&0));
    c.handle_input(&crafted_challenge(wire::MIN_VERSION, 1));
    assert_eq!(
        drain_events(&mut c),
        vec![Seen::Closed(Error::Closed(CloseReason::Malformed))]
    );
}

/// A version-2 client's hello (no `encrypt` byte) is answered `VersionMismatch`, which it
/// can read, rather than `Malformed`.
#[test]
fn a_version_2_hello_learns_it_is_too_old() {
    let mut p = Pair::new(Setup::default());
    let conn = p.accept_silent(b"").unwrap();
    let mut body = b"dpot".to_vec();
    body.extend_from_slice(&[2, 2]);
    body.extend_from_slice(&[5; 32]);
    body.extend_from_slice(&[0x80, 0x20]);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    p.m.handle_input(conn, p.now, &frame);
    let reply = manager_out(&mut p.m, conn, p.now);
    // ServerHello::Reject (1), CloseReason::VersionMismatch (1): unchanged since version 1.
    assert_eq!(reply, [0, 0, 0, 2, 1, 1]);
    assert_eq!(p.m.close_reason(conn), Some(CloseReason::VersionMismatch));
}

/// Replies sealed for a client but never wholly handed to its socket still give their items
/// back to the head of the queue, in order, when the connection ends: the manager reads its
/// own sealed output back.
#[test]
fn items_in_sealed_unsent_replies_go_back() {
    for encryption in [Encryption::Preferred, Encryption::Off] {
        let mut setup = Setup::default();
        setup.config.encryption = encryption;
        let mut p = Pair::new(setup);
        let producer = p.connect();
        let consumer = p.connect();
        let q = p.open(producer, "task_queue");
        for item in [b"one", b"two", b"six"] {
            p.put(producer, q, item, Wait::NoWait);
        }
        p.pump();
        assert_eq!(p.stat(0).len, 3);
        // Handles are the manager's: valid on every connection.
        p.peers[consumer].reading = false;
        p.get(consumer, q, Wait::NoWait);
        p.get(consumer, q, Wait::NoWait);
        p.pump();
        assert_eq!(p.stat(0).len, 1);
        // The transport takes the sealed replies but its socket takes only a few bytes.
        let conn = p.peers[consumer].conn.unwrap();
        let pending = p.m.poll_transmit(conn).len();
        assert!(pending > 7);
        p.m.handle_transmitted(conn, p.now, 7);
        p.m.handle_close(conn, p.now);
        p.peers[consumer].conn = None;
        assert_eq!(p.stat(0).len, 3, "{encryption:?}");
        for want in [b"one", b"two", b"six"] {
            let id = p.get(producer, q, Wait::NoWait);
            p.pump();
            assert_eq!(
                p.take(producer, id),
                Some(Owned::Item(want.to_vec())),
                "{encryption:?}"
            );
        }
    }
}

/// AES-256-GCM (protocol version 4) is used when both sides prefer it, and only then; either
/// side without the preference gets ChaCha20-Poly1305, and the version says what was agreed.
#[test]
fn aes_gcm_only_when_both_prefer_it() {
    use wire::Sealing::*;
    let v4 = wire::VERSION >= 4;
    // (client prefers, manager prefers, version, sealing)
    let cases = [
        (true, true, 4, Aes256Gcm),
        (true, false, 4, ChaCha20Poly1305),
        (false, true, 3, ChaCha20Poly1305),
        (false, false, 3, ChaCha20Poly1305),
    ];
    for (client, manager, version, sealing) in cases {
        let (version, sealing) = match v4 {
            true => (version, sealing),
            // A build without ring's ciphers speaks version 3 only.
            false => (3, ChaCha20Poly1305),
        };
        let mut setup = Setup::default();
        setup.client_config.prefer_aes_gcm = client;
        setup.config.prefer_aes_gcm = manager;
        let mut p = Pair::new(setup);
        let c = p.add_client_with_key(KEY);
        let conn = p.peers[c].conn.unwrap();
        let hello = client_out(&mut p.peers[c].client);
        assert_eq!(
            hello[HEADER_LEN + 4..HEADER_LEN + 6],
            [3, version],
            "offered"
        );
        p.m.handle_input(conn, p.now, &hello);
        let challenge = manager_out(&mut p.m, conn, p.now);
        assert_eq!(challenge[HEADER_LEN + 1], version, "chosen");
        assert_eq!(challenge.last(), Some(&(sealing as u8)), "Challenge.sealed");
        p.peers[c].client.handle_input(&challenge);
        p.pump();
        let case = format!("client {client}, manager {manager}");
        assert_eq!(p.peers[c].client.sealing(), Some(sealing), "{case}");
        let item = b"sealed either way";
        let frame = frame_of(&mut p, c, put_op(item));
        assert!(!frame.windows(item.len()).any(|w| w == item), "{case}");
        inject(&mut p, c, &frame);
        assert_eq!(p.stat(0).total_put, 1, "{case}");
    }
}

/// AES-256-GCM frames as PROTOCOL.md §5.1 gives them: keys under the `depot/4 aes-gcm` labels,
/// the sequence number as nonce, the length header as associated data; every bit flip of one
/// closes the connection with `BadMac`.
#[cfg(feature = "aead-ring")]
#[test]
fn aes_gcm_frames_follow_the_spec() {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    let mut setup = Setup::default();
    setup.client_config.prefer_aes_gcm = true;
    setup.config.prefer_aes_gcm = true;
    let mut p = Pair::new(setup);
    let (c, conn, hello, challenge) = handshake_by_hand(&mut p);
    let now = p.now;
    let key = |label: &[u8]| {
        let key = session_key(&hello, &challenge, label);
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap())
    };
    let (c2m, m2c) = (
        key(b"depot/4 aes-gcm client->manager"),
        key(b"depot/4 aes-gcm manager->client"),
    );
    let open = |cipher: &LessSafeKey, seq: u64, frame: &[u8]| -> Vec<u8> {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&seq.to_be_bytes());
        let mut body = frame[HEADER_LEN..].to_vec();
        let aad = Aad::from(&frame[..HEADER_LEN]);
        let plain = cipher
            .open_in_place(Nonce::assume_unique_for_key(nonce), aad, &mut body)
            .unwrap_or_else(|_| panic!("frame {seq} does not open"));
        plain.to_vec()
    };
    let item = b"a recognisable item";
    let mut flipped = None;
    for seq in 0..3 {
        let req = frame_of(&mut p, c, put_op(item));
        assert!(!req.windows(item.len()).any(|w| w == item));
        let plain = open(&c2m, seq, &req);
        assert!(
            plain.windows(item.len()).any(|w| w == item),
            "frame {seq}: {plain:?}"
        );
        flipped.get_or_insert(req.clone());
        p.m.handle_input(conn, now, &req);
        let rep = manager_out(&mut p.m, conn, now);
        assert_eq!(open(&m2c, seq, &rep), [0, plain[0], 0], "reply {seq}");
        p.peers[c].client.handle_input(&rep);
        drain_events(&mut p.peers[c].client);
    }
    assert_eq!(p.stat(0).total_put, 3);
    // Body flips of the first request, replayed into fresh sessions at its place.
    let frame = flipped.unwrap();
    for bit in HEADER_LEN * 8..frame.len() * 8 {
        let mut setup = Setup::default();
        setup.client_config.prefer_aes_gcm = true;
        setup.config.prefer_aes_gcm = true;
        setup.config.frame_timeout_ms = 1_000;
        let mut q = Pair::new(setup);
        let d = q.connect();
        q.peers[d].writing = false;
        let mut bad = frame_of(&mut q, d, put_op(item));
        bad[bit / 8] ^= 1 << (bit % 8);
        inject(&mut q, d, &bad);
        assert_eq!(
            q.peers[d].manager_reason,
            Some(CloseReason::BadMac),
            "bit {bit}"
        );
        assert_eq!(q.stat(0).total_put, 0, "bit {bit}");
    }
}

/// A client that offers versions 3 and 4 goes on with a version-3 manager (ChaCha20-Poly1305)
/// and refuses AES-256-GCM from one that claims version 3.
#[test]
fn a_client_offering_version_4_meets_a_version_3_manager() {
    for (sealed, closes) in [(1u8, false), (2, true)] {
        let mut config = ClientConfig::default();
        config.prefer_aes_gcm = true;
        let mut c = Client::owned(config, KEY, [7; 32], Instant::ZERO, 1024, 1024, 2);
        let hello = client_out(&mut c);
        assert_eq!(hello[HEADER_LEN + 4..HEADER_LEN + 6], [3, wire::VERSION]);
        c.handle_input(&crafted_challenge(3, sealed));
        let want = match closes {
            true => vec![Seen::Closed(Error::Closed(CloseReason::Malformed))],
            false => vec![],
        };
        assert_eq!(drain_events(&mut c), want, "sealed {sealed}");
        if !closes {
            assert_eq!(
                client_out(&mut c).len(),
                HEADER_LEN + 32,
                "the proof follows"
            );
        }
    }
}
