//! Named keys in-process: `Client::connect_as`, `ManagerHandle::set_keyring`, and unchanged
//! Python `BaseManager` clients (real CPython) on the default key next to a keyring.

use std::path::PathBuf;
use std::process::Command;

use depot_std::{Client, Error, ErrorCode, Grant, Key, Keyring, Manager, Rights};

const KEY: &str = "producer";
const SENSOR: &str = "sensor key of thirty-two bytes!!";

fn keyring(sensor: bool, default: Option<Rights>) -> Keyring<'static> {
    let mut keys = Vec::new();
    if sensor {
        keys.push(Key::owned(
            "sensor".into(),
            SENSOR.into(),
            vec![Grant::owned("telemetry".into(), false, Rights::PUT)],
        ));
    }
    if let Some(rights) = default {
        keys.push(Key::owned(
            String::new(),
            KEY.into(),
            vec![Grant::owned("task_queue".into(), false, rights)],
        ));
    }
    Keyring::owned(keys)
}

fn python(port: u16, args: &[&str]) -> std::process::Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/basemanager.py");
    Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(KEY)
        .args(args)
        .output()
        .unwrap()
}

fn not_allowed(e: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(
        e,
        Err(Error::Request {
            code: ErrorCode::NotAllowed,
            ..
        })
    )
}

#[test]
fn keys_rights_and_python_clients_on_the_default_key() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .keyring(keyring(true, None))
        .queue("task_queue", 100)
        .queue("telemetry", 100)
        .start()
        .unwrap();
    let port = m.address().port();
    // Python clients use the default key, with every right.
    let out = python(port, &["produce", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sensor = Client::connect_as(m.address(), "sensor", SENSOR).unwrap();
    let telemetry = sensor.raw_queue("telemetry").unwrap();
    telemetry.put(b"\x01").unwrap();
    assert!(not_allowed(telemetry.get_nowait()));
    assert!(not_allowed(sensor.raw_queue("task_queue")));
    assert!(not_allowed(sensor.stat()));
    // A key name that is not on the keyring fails like a wrong key.
    assert!(matches!(
        Client::connect_as(m.address(), "nobody", SENSOR),
        Err(Error::AuthFailed { .. })
    ));
    assert!(matches!(
        Client::connect_as(m.address(), "bad\nname", SENSOR),
        Err(Error::Config(_))
    ));
    let default = Client::connect(m.address(), KEY).unwrap();

    // Revoke the sensor; give the default key only `get` on task_queue.
    m.set_keyring(keyring(false, Some(Rights::GET))).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sensor.raw_queue("telemetry").is_ok() {
        assert!(std::time::Instant::now() < deadline, "the sensor stayed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The keyring's default key is the builder's authkey: connections on it stay, with its
    // rights from now on, and so do new ones.
    assert!(not_allowed(default.stat()));
    let restricted = Client::connect(m.address(), KEY).unwrap();
    assert!(not_allowed(restricted.stat()));
    assert!(not_allowed(restricted.raw_queue("telemetry")));
    let tasks = restricted.raw_queue("task_queue").unwrap();
    assert!(not_allowed(tasks.put(b"\x01")));
    assert!(tasks.get_nowait().is_ok());
    // Python clients get the default key's rights too: taking works, putting is refused.
    let out = python(port, &["consume", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = python(port, &["produce", "1"]);
    assert!(
        !out.status.success(),
        "a Python put the key may not make went through"
    );
    assert_eq!(tasks.qsize().unwrap(), 0);
    // A keyring that does not check is refused and changes nothing.
    let twice = Keyring::owned(vec![
        Key::owned("a".into(), b"1".to_vec(), Vec::new()),
        Key::owned("a".into(), b"2".to_vec(), Vec::new()),
    ]);
    assert!(matches!(m.set_keyring(twice), Err(Error::Config(_))));
    // A default key with another secret closes the connections of the old one.
    let other = Keyring::owned(vec![Key::owned(
        String::new(),
        b"another default key, long enough".to_vec(),
        vec![Grant::owned(String::new(), true, Rights::ALL)],
    )]);
    m.set_keyring(other).unwrap();
    while default.raw_queue("task_queue").is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old default key stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    m.shutdown().unwrap();
}
