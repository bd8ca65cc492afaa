//! depot clients joining an unchanged Python deployment: a real CPython `BaseManager` serving
//! `queue.Queue`s, real Python clients on the other side. `python3` always runs;
//! `DEPOT_PYTHONS` (a directory with `python3.9`, `python3.13`, `python3.14` from
//! `tests/extra-pythons`) adds those versions, as manager and as peer.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode};

#[path = "support/pythons.rs"]
mod pythons;
use pythons::pythons;

const KEY: &str = "producer";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/deployment.py")
}

/// A Python manager process, killed on drop.
struct PyManager {
    child: Child,
    port: u16,
}

impl PyManager {
    fn start(py: &str) -> PyManager {
        let mut child = Command::new(py)
            .arg(script())
            .args(["serve", KEY])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{py}: {line:?}"));
        PyManager { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PyManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python(py: &str, port: u16, args: &[&str]) -> Output {
    let out = Command::new(py)
        .arg(script())
        .arg(port.to_string())
        .arg(KEY)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{py} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `VALUES` of deployment.py in depot's value encoding (CBOR, PROTOCOL.md §11), written out
/// by hand from RFC 8949.
fn values() -> Vec<Vec<u8>> {
    let mut big = vec![0x1b];
    big.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let mut float = vec![0xfb];
    float.extend_from_slice(&1.5f64.to_be_bytes());
    let mut text = vec![0x66];
    text.extend_from_slice("héllo".as_bytes());
    vec![
        vec![0x07],
        vec![0x22],
        big,
        float,
        text,
        b"\x46\x00bytes".to_vec(),
        vec![0x82, 0x01, 0x82, 0x02, 0x61, b'x'],
        vec![0xa2, 0x61, b'a', 0x01, 0x61, b'b', 0x82, 0xf5, 0xf6],
        // Tag 0x64700001 (a tuple) around [1, "two"].
        vec![
            0xda, 0x64, 0x70, 0x00, 0x01, 0x82, 0x01, 0x63, b't', b'w', b'o',
        ],
    ]
}

#[test]
fn values_cross_both_ways_with_python_clients() {
    for manager_py in pythons() {
        let m = PyManager::start(&manager_py);
        let client = Client::connect(m.addr(), KEY).unwrap();
        assert!(client.is_python(), "{manager_py}");
        let q = client.raw_queue("task_queue").unwrap();
        for peer in pythons() {
            // Python puts, depot gets.
            python(&peer, m.port, &["put_values"]);
            for (i, want) in values().iter().enumerate() {
                let got = q.get_timeout(Duration::from_secs(10)).unwrap();
                assert_eq!(&got, want, "{manager_py} / {peer}: value {i}");
            }
            // depot puts, Python gets and compares with its own values.
            for v in values() {
                q.put(&v).unwrap();
            }
            let out = python(&peer, m.port, &["get_values"]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "values ok",
                "{manager_py} / {peer}"
            );
        }
        assert_eq!(q.qsize().unwrap(), 0);
    }
}

/// Python objects that are no depot value come out as the whole-pickle tag and go back to
/// Python as they were.
#[test]
fn python_objects_pass_through_unchanged() {
    for py in pythons() {
        let m = PyManager::start(&py);
        let client = Client::connect(m.addr(), KEY).unwrap();
        let q = client.raw_queue("task_queue").unwrap();
        python(&py, m.port, &["put_objects"]);
        let got = q.get_many(3).unwrap();
        for item in &got {
            // Tag 0x64700002 around a byte string.
            assert_eq!(
                item[..5],
                [0xda, 0x64, 0x70, 0x00, 0x02],
                "{py}: {item:02x?}"
            );
        }
        for item in &got {
            q.put(item).unwrap();
        }
        let out = python(&py, m.port, &["get_objects"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "objects ok",
            "{py}"
        );
    }
}

/// Large items both ways: 100,000 small values in one list, and 3 MB of bytes.
#[test]
fn large_items_cross_both_ways() {
    let m = PyManager::start("python3");
    let client = Client::connect(m.addr(), KEY).unwrap();
    let q = client.raw_queue("task_queue").unwrap();
    python("python3", m.port, &["put_big"]);
    let list = q.get().unwrap();
    // An array of 100,000 (4-byte count), then 0..=23 in one byte each, 24..=255 in two,
    // the rest in three or five.
    assert_eq!(list[..5], [0x9a, 0x00, 0x01, 0x86, 0xa0]);
    let want = 5 + 24 + (256 - 24) * 2 + (65_536 - 256) * 3 + (100_000 - 65_536) * 5;
    assert_eq!(list.len(), want);
    let bytes = q.get().unwrap();
    assert_eq!(bytes[..5], [0x5a, 0x00, 0x2d, 0xc6, 0xc0]);
    assert!(bytes[5..].iter().all(|&b| b == b'x') && bytes.len() == 5 + 3_000_000);
    q.put(&list).unwrap();
    q.put(&bytes).unwrap();
    let out = python("python3", m.port, &["get_big"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "big ok");
}

#[test]
fn queue_methods_and_errors_as_python_raises_them() {
    for py in pythons() {
        let m = PyManager::start(&py);
        let client = Client::connect(m.addr(), KEY).unwrap();
        let q = client.raw_queue("task_queue").unwrap();
        assert!(
            matches!(q.get_nowait(), Err(e) if e.code() == Some(ErrorCode::Empty)),
            "{py}"
        );
        let t = Instant::now();
        assert!(matches!(
            q.get_timeout(Duration::from_millis(300)),
            Err(e) if e.code() == Some(ErrorCode::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(250));
        assert!(q.empty().unwrap());
        q.put_nowait(&[0x01]).unwrap();
        q.put_many(&[&[0x02], &[0x03]]).unwrap();
        assert_eq!(q.qsize().unwrap(), 3);
        assert!(!q.empty().unwrap() && !q.full().unwrap());
        assert_eq!(q.get_many(3).unwrap(), vec![vec![1], vec![2], vec![3]]);
        for _ in 0..3 {
            q.task_done().unwrap();
        }
        assert!(
            matches!(q.task_done(), Err(e) if e.code() == Some(ErrorCode::TaskDoneTooMany)),
            "{py}"
        );
        q.join().unwrap();

        let one = client.raw_queue("one").unwrap();
        one.put(&[0x01]).unwrap();
        assert!(one.full().unwrap());
        assert!(matches!(one.put_nowait(&[0x02]), Err(e) if e.code() == Some(ErrorCode::Full)));
        assert!(matches!(
            one.put_timeout(&[0x02], Duration::from_millis(100)),
            Err(e) if e.code() == Some(ErrorCode::Timeout)
        ));
        assert_eq!(one.get().unwrap(), vec![0x01]);

        assert!(
            matches!(client.raw_queue("nope"), Err(Error::Request { code: ErrorCode::NoSuchObject, object }) if object == "nope")
        );
        for e in [
            client.stat().unwrap_err(),
            client.status().map(|_| ()).unwrap_err(),
            client.shutdown_manager().unwrap_err(),
            client.create_queue("x", 1, 1).map(|_| ()).unwrap_err(),
        ] {
            assert!(matches!(e, Error::NotSupportedByPython { .. }), "{e}");
            assert!(e
                .to_string()
                .contains("not supported by a Python BaseManager"));
        }
    }
}

#[test]
fn wrong_authkey_fails_authentication() {
    for py in pythons() {
        let m = PyManager::start(&py);
        let e = Client::connect(m.addr(), "not the key").unwrap_err();
        assert!(matches!(e, Error::AuthFailed { .. }), "{py}: {e}");
        assert!(e.to_string().contains("authentication failed"));
        // The manager is unharmed.
        let client = Client::connect(m.addr(), KEY).unwrap();
        assert!(client.raw_queue("task_queue").unwrap().empty().unwrap());
    }
}

/// A get blocked on the Python manager holds a connection of its own: other calls of the same
/// client go on, and the put from another thread wakes it.
#[test]
fn blocked_get_does_not_block_the_client() {
    let m = PyManager::start("python3");
    let client = Client::connect(m.addr(), KEY).unwrap();
    let q = client.raw_queue("task_queue").unwrap();
    let answer = [0x18, 42]; // CBOR 42
    std::thread::scope(|s| {
        let getter = s.spawn(|| q.get());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(q.qsize().unwrap(), 0);
        q.put(&answer).unwrap();
        assert_eq!(getter.join().unwrap().unwrap(), answer);
    });
    q.put(&answer).unwrap();
    let out = python("python3", m.port, &["get_repr", "1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}
