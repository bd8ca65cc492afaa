//! Unchanged Python `BaseManager` clients (real CPython) using a depot condition and lists
//! through `ConditionProxy`, `ListProxy` and `AutoProxy`, next to Rust clients.
//! `DEPOT_PYTHONS` adds interpreters as for the other interop tests.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use depot_std::{Client, Manager, ManagerHandle};

#[path = "support/pythons.rs"]
mod pythons;
use pythons::pythons;

const KEY: &str = "conditions";

fn manager() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .condition("cv")
        .list("items", 64)
        .list("small", 2)
        .start()
        .unwrap()
}

fn python(py: &str, m: &ManagerHandle, role: &str) -> Command {
    pythons::script(py, "conditions_lists.py", m.address().port(), KEY, role)
}

fn run(py: &str, m: &ManagerHandle, role: &str) -> String {
    pythons::run_script(py, "conditions_lists.py", m.address().port(), KEY, role)
}

#[test]
fn a_python_condition_waiter_is_woken_by_a_python_notify_in_another_process() {
    for py in pythons() {
        let m = manager();
        let mut consumer = python(&py, &m, "consumer").spawn().unwrap();
        let mut out = BufReader::new(consumer.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "waiting", "{py}");
        // The consumer holds the lock until its wait gives it up.
        let c = Client::connect(m.address(), KEY).unwrap();
        let cv = c.condition("cv").unwrap();
        let start = Instant::now();
        while !cv.try_acquire().unwrap() {
            assert!(start.elapsed() < Duration::from_secs(20), "{py}: no wait");
            std::thread::sleep(Duration::from_millis(10));
        }
        cv.release().unwrap();
        run(&py, &m, "producer");
        line.clear();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "42", "{py}");
        assert!(consumer.wait().unwrap().success(), "{py}");
        assert!(c.list::<u32>("items").unwrap().is_empty().unwrap());
        m.shutdown().unwrap();
    }
}

#[test]
fn python_conditions_and_lists_follow_python_rules() {
    for py in pythons() {
        let m = manager();
        assert_eq!(run(&py, &m, "cv_rules").trim(), "ok", "{py}");
        assert_eq!(run(&py, &m, "list_use").trim(), "ok", "{py}");
        // What Python left, as a Rust client reads it.
        let c = Client::connect(m.address(), KEY).unwrap();
        assert_eq!(c.list::<u32>("small").unwrap().to_vec().unwrap(), [1, 2]);
        m.shutdown().unwrap();
    }
}
