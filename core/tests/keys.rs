//! Identities, permissions and the key-guessing throttle, on virtual time.
#![allow(clippy::field_reassign_with_default)]

mod harness;

use depot_core::keyring::{Grant, Key, Keyring, KeyringError, Rights};
use depot_core::wire::{CloseReason, ErrorCode, Op, QueueSpec, Wait, HEADER_LEN};
use depot_core::*;
use harness::*;

const SENSOR: &[u8] = b"sensor key, 32 bytes of secret!!";
const OPS: &[u8] = b"operator key with every right...";
const WATCH: &[u8] = b"watcher key, admin on telemetry.";

fn keyring(with_sensor: bool) -> Keyring<'static> {
    let mut keys = vec![
        Key::owned(
            "ops".into(),
            OPS.to_vec(),
            vec![Grant::owned(String::new(), true, Rights::ALL)],
        ),
        Key::owned(
            "watch".into(),
            WATCH.to_vec(),
            vec![Grant::owned("telemetry".into(), false, Rights::ADMIN)],
        ),
    ];
    if with_sensor {
        keys.push(Key::owned(
            "sensor".into(),
            SENSOR.to_vec(),
            vec![Grant::owned("telemetry".into(), false, Rights::PUT)],
        ));
    }
    Keyring::owned(keys)
}

fn setup() -> Setup {
    let spec = QueueSpec {
        capacity: 16,
        max_item: 256,
        mode: QueueMode::Raw,
    };
    let mut setup = Setup::default();
    setup.queues = vec![
        ("telemetry".into(), spec, 4096),
        ("other".into(), spec, 4096),
    ];
    setup.spares = vec![4096];
    setup.config.allow_create = true;
    setup.config.allow_remote_shutdown = true;
    setup
}

fn pair() -> Pair {
    let mut p = Pair::new(setup());
    let now = p.now;
    p.m.set_keyring(keyring(true), now).unwrap();
    p
}

fn connect_as(p: &mut Pair, name: &str, key: &[u8]) -> usize {
    let c = p.try_add_named(name, key, b"src").unwrap();
    p.pump();
    assert!(p.peers[c].connected, "{name} did not connect");
    c
}

fn stat_names(p: &mut Pair, c: usize) -> Vec<String> {
    let mut names = Vec::new();
    for index in 0.. {
        match p.call(c, Op::Stat { index }) {
            Owned::Stat(Some(s)) => names.push(s.name),
            Owned::Stat(None) => return names,
            other => panic!("stat: {other:?}"),
        }
    }
    names
}

#[test]
fn a_put_only_key_puts_and_nothing_else() {
    let mut p = pair();
    let ops = connect_as(&mut p, "ops", OPS);
    let sensor = connect_as(&mut p, "sensor", SENSOR);
    let tel = p.open(sensor, "telemetry");
    let id = p.put(sensor, tel, b"21.5", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(sensor, id), Some(Owned::Done));
    let denied = Owned::Error(ErrorCode::NotAllowed);
    // No get of its own queue, and the item stays.
    let id = p.get(sensor, tel, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(sensor, id), Some(denied.clone()));
    let batch = Op::GetMany {
        handle: tel,
        max_items: 4,
        max_bytes: 1024,
        wait: Wait::NoWait,
    };
    assert_eq!(p.call(sensor, batch), denied);
    assert_eq!(p.call(sensor, Op::TaskDone { handle: tel }), denied);
    assert_eq!(p.stat(0).len, 1);
    // Other queues: not opened, not put to by handle, not created.
    assert_eq!(p.call(sensor, Op::Open { name: "other" }), denied);
    let other = p.open(ops, "other");
    let put = Op::Put {
        handle: other,
        item: b"x",
        wait: Wait::NoWait,
    };
    assert_eq!(p.call(sensor, put), denied);
    assert_eq!(p.stat(1).len, 0);
    let spec = QueueSpec {
        capacity: 4,
        max_item: 64,
        mode: QueueMode::Raw,
    };
    let create = Op::Create {
        name: "new",
        spec,
        exist_ok: false,
    };
    assert_eq!(p.call(sensor, create), denied);
    // Opening what it may use through `Create { exist_ok }` works.
    let reopen = Op::Create {
        name: "telemetry",
        spec,
        exist_ok: true,
    };
    assert!(matches!(p.call(sensor, reopen), Owned::Opened(_)));
    // No administration.
    assert_eq!(p.call(sensor, Op::Stat { index: 0 }), denied);
    assert_eq!(p.call(sensor, Op::Status), denied);
    assert_eq!(p.call(sensor, Op::BackendStatus), denied);
    assert_eq!(p.call(sensor, Op::Shutdown), denied);
    assert!(!p.m.is_shutting_down());
    assert_eq!(p.closed(sensor), None, "a refusal keeps the connection");

    // The admin key does all of it.
    let tel_ops = p.open(ops, "telemetry");
    let id = p.get(ops, tel_ops, Wait::NoWait);
    p.pump();
    assert_eq!(p.take(ops, id), Some(Owned::Item(b"21.5".to_vec())));
    assert!(matches!(p.call(ops, create), Owned::Opened(_)));
    assert_eq!(stat_names(&mut p, ops), ["telemetry", "other", "new"]);
    assert_eq!(p.call(ops, Op::Shutdown), Owned::Done);
    assert!(p.m.is_shutting_down());
}

#[test]
fn stat_and_status_show_only_what_the_key_may_see() {
    let mut p = pair();
    let watch = connect_as(&mut p, "watch", WATCH);
    assert_eq!(stat_names(&mut p, watch), ["telemetry"]);
    match p.call(watch, Op::Status) {
        Owned::Status(s) => assert_eq!(s.objects, 1),
        other => panic!("status: {other:?}"),
    }
    // Admin on one queue is not admin on the manager.
    assert_eq!(
        p.call(watch, Op::Shutdown),
        Owned::Error(ErrorCode::NotAllowed)
    );
    // The default key (the authkey given to `Manager::new`) sees everything.
    let default = p.connect();
    match p.call(default, Op::Status) {
        Owned::Status(s) => assert_eq!(s.objects, 2),
        other => panic!("status: {other:?}"),
    }
}

/// An unknown key name, a known name with the wrong key and the default key with a wrong
/// key all end the same way, with the same verdict bytes.
#[test]
fn unknown_names_fail_like_wrong_keys() {
    let mut p = pair();
    let tries: [(&str, &[u8]); 3] = [("nobody", OPS), ("ops", SENSOR), ("", OPS)];
    for (name, key) in tries {
        let c = p.try_add_named(name, key, b"").unwrap();
        p.advance(10_000);
        assert_eq!(p.closed(c), Some(Error::AuthFailed), "{name}");
        assert_eq!(
            p.peers[c].manager_reason,
            Some(CloseReason::AuthFailed),
            "{name}"
        );
    }
    assert_eq!(p.m.connections(), 0);
}

#[test]
fn a_new_keyring_closes_the_connections_of_removed_keys_only() {
    let mut p = pair();
    let ops = connect_as(&mut p, "ops", OPS);
    let sensor = connect_as(&mut p, "sensor", SENSOR);
    let default = p.connect();
    let now = p.now;
    p.m.set_keyring(keyring(false), now).unwrap();
    p.pump();
    assert_eq!(p.closed(sensor), Some(Error::AuthFailed));
    assert_eq!(p.closed(ops), None);
    assert_eq!(p.closed(default), None);
    // The others keep working, with the rights of the new keyring.
    let h = p.open(ops, "other");
    let id = p.put(ops, h, b"still here", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(ops, id), Some(Owned::Done));
    assert!(matches!(p.call(default, Op::Status), Owned::Status(_)));
    // The removed key no longer connects.
    let again = p.try_add_named("sensor", SENSOR, b"").unwrap();
    p.advance(10_000);
    assert_eq!(p.closed(again), Some(Error::AuthFailed));
    // A changed secret under the same name counts as removed.
    let changed = Keyring::owned(vec![Key::owned(
        "ops".into(),
        b"a new secret for the operators!!".to_vec(),
        vec![Grant::owned(String::new(), true, Rights::ALL)],
    )]);
    let now = p.now;
    p.m.set_keyring(changed, now).unwrap();
    p.pump();
    assert_eq!(p.closed(ops), Some(Error::AuthFailed));
    assert_eq!(p.closed(default), None);
    // A default key on the keyring with the same secret as `Manager::new`'s takes over its
    // connections, with its rights; one with another secret closes them.
    let restricted = |secret: &[u8]| {
        Keyring::owned(vec![Key::owned(
            String::new(),
            secret.to_vec(),
            vec![Grant::owned("telemetry".into(), false, Rights::GET)],
        )])
    };
    let now = p.now;
    p.m.set_keyring(restricted(KEY), now).unwrap();
    p.pump();
    assert_eq!(p.closed(default), None);
    let denied = Owned::Error(ErrorCode::NotAllowed);
    assert_eq!(p.call(default, Op::Status), denied);
    assert_eq!(p.call(default, Op::Open { name: "other" }), denied);
    p.open(default, "telemetry");
    let now = p.now;
    p.m.set_keyring(restricted(b"not the producer key"), now)
        .unwrap();
    p.pump();
    assert_eq!(p.closed(default), Some(Error::AuthFailed));
}

#[test]
fn bad_keyrings_are_refused_and_change_nothing() {
    let mut p = pair();
    let sensor = connect_as(&mut p, "sensor", SENSOR);
    let twice = Keyring::owned(vec![
        Key::owned("a".into(), b"1".to_vec(), Vec::new()),
        Key::owned("a".into(), b"2".to_vec(), Vec::new()),
    ]);
    let now = p.now;
    assert_eq!(
        p.m.set_keyring(twice, now),
        Err(KeyringError::DuplicateName(1))
    );
    p.pump();
    assert_eq!(p.closed(sensor), None);
}

/// A `'static` keyring from statics, as firmware has it: no allocation.
#[test]
fn a_static_keyring_serves_without_a_default_key() {
    static SENSOR_GRANTS: [Grant<'static>; 1] = [Grant::exact("telemetry", Rights::PUT)];
    static KEYS: [Key<'static>; 1] = [Key::new("sensor", SENSOR, &SENSOR_GRANTS)];
    let setup = setup();
    let mut p = Pair::new(setup);
    // Swap in a manager built with the keyring alone, on the same storage plan.
    let resources = Resources {
        objects: vec![ObjectSlot::queue(
            "telemetry",
            QueueSpec {
                capacity: 4,
                max_item: 64,
                mode: QueueMode::Raw,
            },
            vec![0; 1024],
        )
        .unwrap()]
        .into(),
        connections: (0..4)
            .map(|_| Connection::new(vec![0; 4096], vec![0; 4096]))
            .collect::<Vec<_>>()
            .into(),
        waiters: vec![Waiter::EMPTY; 8].into(),
        parked: ParkStore::slots(vec![0; 1024], 256),
    };
    p.m = Manager::with_keyring(ManagerConfig::default(), Keyring::new(&KEYS), resources).unwrap();
    let sensor = connect_as(&mut p, "sensor", SENSOR);
    let h = p.open(sensor, "telemetry");
    let id = p.put(sensor, h, b"1", Wait::NoWait);
    p.pump();
    assert_eq!(p.take(sensor, id), Some(Owned::Done));
    // No key has the empty name: the authkey of old clients opens nothing.
    let old = p.try_add_client(KEY, b"").unwrap();
    p.advance(10_000);
    assert_eq!(p.closed(old), Some(Error::AuthFailed));
}

/// The verdict on a failed proof waits, longer each time; then the source is refused for a
/// while. Another source connects meanwhile, and the summary counts it all.
#[test]
fn failed_proofs_back_off_then_lock_the_source_out() {
    let mut setup = setup();
    setup.config.throttle = throttle::ThrottleConfig {
        delay_ms: 100,
        max_delay_ms: 400,
        lockout_after: 4,
        lockout_ms: 5_000,
    };
    let mut p = Pair::new(setup);
    let now = p.now;
    p.m.set_keyring(keyring(true), now).unwrap();
    let mut waits = Vec::new();
    for _ in 0..4 {
        let c = p.try_add_named("ops", b"a guess", b"attacker").unwrap();
        p.pump();
        let start = p.now;
        while p.closed(c).is_none() {
            p.advance(10);
            assert!(start.millis_until(p.now) <= 1_000, "no verdict");
        }
        waits.push(start.millis_until(p.now));
        assert_eq!(p.closed(c), Some(Error::AuthFailed));
    }
    // 100, 200, 400, 400 ms, to the 10 ms step of the loop.
    for (wait, expect) in waits.iter().zip([100, 200, 400, 400]) {
        assert!((expect..expect + 10).contains(wait), "waits {waits:?}");
    }
    assert_eq!(
        p.try_add_named("ops", OPS, b"attacker").err(),
        Some(AcceptError::Throttled)
    );
    assert_eq!(
        p.try_add_named("ops", b"another guess", b"attacker").err(),
        Some(AcceptError::Throttled)
    );
    // Another source is not held back.
    let good = p.try_add_named("ops", OPS, b"operator").unwrap();
    p.pump();
    assert!(p.peers[good].connected);
    let mut lines = Vec::new();
    p.m.take_auth_reports(|r| lines.push(format!("{r:?}")));
    assert_eq!(
        lines,
        [
            r#"Failed { source: [97, 116, 116, 97, 99, 107, 101, 114], key: "ops", count: 4 }"#,
            "Refused { source: [97, 116, 116, 97, 99, 107, 101, 114], count: 2 }",
        ]
    );
    assert!(!p.m.has_auth_reports());
    // Once its time is served, the source may try again.
    p.advance(5_000);
    let c = p.try_add_named("ops", OPS, b"attacker").unwrap();
    p.pump();
    assert!(p.peers[c].connected);
}

/// A hello of protocol version 2 (no key name) is told the version is not spoken.
#[test]
fn a_version_2_hello_gets_version_mismatch() {
    let mut p = pair();
    let conn = p.accept_silent(b"").unwrap();
    let mut body = b"dpot".to_vec();
    body.extend_from_slice(&[2, 2]);
    body.extend_from_slice(&[5; 32]);
    body.extend_from_slice(&[0x80, 0x20]); // max_frame 4096
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let now = p.now;
    p.m.handle_input(conn, now, &frame);
    assert_eq!(p.m.close_reason(conn), Some(CloseReason::VersionMismatch));
    let out = p.m.poll_transmit(conn).to_vec();
    // `ServerHello::Reject(VersionMismatch)`: variant 1, reason 1.
    assert_eq!(&out[HEADER_LEN..], [1, 1]);
}
