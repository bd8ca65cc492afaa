//! Unchanged Python `BaseManager` clients (real CPython) against the depot manager, on its
//! normal port. `python3` always runs; `DEPOT_PYTHONS` (a directory with `python3.9`,
//! `python3.13`, `python3.14` from `tests/extra-pythons`) adds those versions.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use depot_std::{Client, Manager, ManagerHandle};

#[path = "support/pythons.rs"]
mod pythons;
use pythons::pythons;

const KEY: &str = "producer";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/basemanager.py")
}

fn manager() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("task_queue", 1000)
        .queue("one", 1)
        .start()
        .unwrap()
}

fn python(py: &str, m: &ManagerHandle, key: &str, args: &[&str]) -> Command {
    let mut c = Command::new(py);
    c.arg(script())
        .arg(m.address().port().to_string())
        .arg(key)
        .args(args);
    c
}

fn run(py: &str, m: &ManagerHandle, args: &[&str]) -> Output {
    let out = python(py, m, KEY, args).output().unwrap();
    assert!(
        out.status.success(),
        "{py} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn python_producer_to_python_consumer_exactly_once() {
    for py in pythons() {
        let m = manager();
        let consumer = python(&py, &m, KEY, &["consume", "500"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        run(&py, &m, &["produce", "500"]);
        let out = consumer.wait_with_output().unwrap();
        assert!(out.status.success(), "{py} consumer failed");
        let got: Vec<u32> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(got, (0..500).collect::<Vec<_>>(), "{py}");
        assert_eq!(
            Client::connect(m.address(), KEY)
                .unwrap()
                .raw_queue("task_queue")
                .unwrap()
                .qsize()
                .unwrap(),
            0
        );
        m.shutdown().unwrap();
    }
}

#[test]
fn python_sees_queue_empty_and_full_and_its_objects_pass_unchanged() {
    for py in pythons() {
        let m = manager();
        let out = run(&py, &m, &["errors"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "errors ok");
        run(&py, &m, &["put_objects"]);
        let out = run(&py, &m, &["get_objects"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "objects ok");
        m.shutdown().unwrap();
    }
}

#[test]
fn wrong_authkey_raises_authentication_error() {
    let m = manager();
    for py in pythons() {
        let out = python(&py, &m, "not the key", &["produce", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{py}: a wrong key was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("AuthenticationError"), "{py}: {err}");
    }
    m.shutdown().unwrap();
}

/// A Python consumer killed while blocked in `get` loses nothing: the next item goes to the
/// next consumer.
#[test]
fn python_client_killed_while_blocked_loses_nothing() {
    let m = manager();
    let mut blocked = python("python3", &m, KEY, &["block"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(blocked.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "blocking");
    std::thread::sleep(Duration::from_millis(200));
    blocked.kill().unwrap();
    blocked.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    run("python3", &m, &["produce", "1"]);
    let out = run("python3", &m, &["consume", "1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    m.shutdown().unwrap();
}

/// The values `basemanager.py` puts and checks (`VALUES`), as depot's JSON lines print them.
const VALUES_JSON: [&str; 14] = [
    "7",
    "-3",
    "1099511627776",
    "1.5",
    "-0.25",
    "true",
    "false",
    "null",
    "\"text\"",
    "\"héllo\"",
    "{\"$bytes\": \"AGJ5dGVz\"}",
    "[1, [2, \"three\"]]",
    "{\"k\": 1, \"nested\": {\"list\": [1.5, null]}}",
    "[]",
];

/// A typed Rust mirror of some of the values.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Nested {
    k: u32,
    nested: Inner,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Inner {
    list: Vec<Option<f64>>,
}

/// Python producer → depot → Rust: the same values (as JSON lines, as `depot get` prints
/// them, and typed); Rust producer → depot → Python: Python reads the values it would have
/// put itself.
#[test]
fn python_and_rust_see_the_same_values() {
    for py in pythons() {
        let m = manager();
        run(&py, &m, &["put_values"]);
        let c = Client::connect(m.address(), KEY).unwrap();
        let raw = c.raw_queue("task_queue").unwrap();
        let printed: Vec<String> = VALUES_JSON
            .iter()
            .map(|_| depot_std::text::to_json(&raw.get().unwrap()).unwrap())
            .collect();
        assert_eq!(printed, VALUES_JSON, "{py}");

        // Rust puts the same values, typed where Rust has a type, parsed from JSON otherwise.
        let ints = c.queue::<i64>("task_queue").unwrap();
        ints.put(&7).unwrap();
        ints.put(&-3).unwrap();
        c.queue::<u64>("task_queue")
            .unwrap()
            .put(&(1 << 40))
            .unwrap();
        let floats = c.queue::<f64>("task_queue").unwrap();
        floats.put(&1.5).unwrap();
        floats.put(&-0.25).unwrap();
        for json in &VALUES_JSON[5..12] {
            raw.put(&depot_std::text::parse(json).unwrap()).unwrap();
        }
        c.queue::<Nested>("task_queue")
            .unwrap()
            .put(&Nested {
                k: 1,
                nested: Inner {
                    list: vec![Some(1.5), None],
                },
            })
            .unwrap();
        c.queue::<Vec<u32>>("task_queue")
            .unwrap()
            .put(&vec![])
            .unwrap();
        let out = run(&py, &m, &["get_values"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "values ok",
            "{py}"
        );
        m.shutdown().unwrap();
    }
}
