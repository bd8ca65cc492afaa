//! `depot put`/`depot get` joining an unchanged Python deployment: a real CPython
//! `BaseManager` with Python clients on the other side. What the Python side sees, and what
//! `depot get` prints, must be what they are with a depot manager in its place. `python3`
//! always runs; `DEPOT_PYTHONS` (see `tests/extra-pythons`) adds 3.9, 3.13 and 3.14.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use depot_std::Manager;

#[path = "../../transport-std/tests/support/pythons.rs"]
mod pythons;
use pythons::pythons;

const KEY: &str = "cli-python-key";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../transport-std/tests/python/deployment.py")
}

/// `depot ARGS` with the authkey `key`; waits for it.
fn depot(key: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(args)
        .env("DEPOT_AUTHKEY", key)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run depot")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Failed with one line `depot: ...`; returns the text after the prefix.
fn failed(out: Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    err.strip_prefix("depot: ")
        .expect("prefix")
        .trim_end()
        .to_owned()
}

fn python(py: &str, port: u16, args: &[&str]) -> String {
    ok(Command::new(py)
        .arg(script())
        .arg(port.to_string())
        .arg(KEY)
        .args(args)
        .output()
        .unwrap())
}

/// A Python manager process, killed on drop.
struct PyManager(Child, u16);

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
        let port = line.trim().parse().unwrap();
        PyManager(child, port)
    }
}

impl Drop for PyManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Items the CLI puts, what Python then gets (as reprs), and what `depot get` prints of the
/// values Python puts: the same from a Python manager as from a depot one.
fn session(py: &str, port: u16) -> (String, String) {
    let addr = format!("127.0.0.1:{port}");
    let put = [
        "put",
        "--connect",
        &addr,
        "--queue",
        "task_queue",
        "--text",
        "hello world",
        "second item",
    ];
    ok(depot(KEY, &put));
    let reprs = python(py, port, &["get_repr", "2"]);
    python(py, port, &["put_values"]);
    let get = [
        "get",
        "--connect",
        &addr,
        "--queue",
        "task_queue",
        "--count",
        "9",
    ];
    let printed = ok(depot(KEY, &get));
    (reprs, printed)
}

#[test]
fn depot_put_and_get_against_a_python_manager() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("task_queue", 100)
        .start()
        .unwrap();
    let (reprs, printed) = session("python3", m.address().port());
    m.shutdown().unwrap();
    assert_eq!(reprs, "'hello world'\n'second item'\n");
    assert_eq!(printed.lines().count(), 9, "{printed}");

    for py in pythons() {
        let pm = PyManager::start(&py);
        assert_eq!(session(&py, pm.1), (reprs.clone(), printed.clone()), "{py}");

        let addr = format!("127.0.0.1:{}", pm.1);
        let get = [
            "get",
            "--connect",
            &addr,
            "--queue",
            "task_queue",
            "--timeout",
            "0.2",
        ];
        assert_eq!(
            failed(depot(KEY, &get)),
            "timed out waiting on queue 'task_queue'",
            "{py}"
        );
        let text = failed(depot(KEY, &["stat", "--connect", &addr]));
        assert_eq!(text, "stat is not supported by a Python BaseManager");
        let text = failed(depot(
            "wrong",
            &["get", "--connect", &addr, "--queue", "task_queue"],
        ));
        assert_eq!(
            text,
            format!("authentication failed: wrong authkey for {addr}")
        );
        let put = ["put", "--connect", &addr, "--queue", "nope", "1"];
        assert_eq!(failed(depot(KEY, &put)), "queue 'nope' does not exist");
    }
}
