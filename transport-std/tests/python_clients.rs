//! Unchanged Python `BaseManager` clients (real CPython) against the depot manager, on its
//! normal port. `python3` always runs; `DEPOT_PYTHONS` (a directory with `python3.9`,
//! `python3.13`, `python3.14` from `tests/extra-pythons`) adds those versions.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use depot_std::{Client, Manager, ManagerHandle};

const KEY: &str = "producer";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/basemanager.py")
}

/// Every interpreter to test with: `python3`, and those `DEPOT_PYTHONS` names.
fn pythons() -> Vec<String> {
    let mut all = vec!["python3".to_owned()];
    match std::env::var("DEPOT_PYTHONS") {
        Ok(dir) => {
            for v in ["3.9", "3.13", "3.14"] {
                let p = format!("{dir}/python{v}");
                assert!(
                    std::path::Path::new(&p).exists(),
                    "{p} missing: run tests/extra-pythons {dir}"
                );
                all.push(p);
            }
        }
        Err(_) => eprintln!("DEPOT_PYTHONS not set: only python3 runs"),
    }
    all
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
