//! Unchanged Python `BaseManager` clients (real CPython) using depot's objects beside queues:
//! events, locks, semaphores, values, dicts, barriers and registered calls through `AutoProxy` and the stdlib's typed
//! proxies. `DEPOT_PYTHONS` adds interpreters as for the other interop tests.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use depot_std::{Client, Manager, ManagerHandle};

#[path = "support/pythons.rs"]
mod pythons;
use pythons::pythons;

const KEY: &str = "objects";

fn manager() -> ManagerHandle {
    Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .event("ready")
        .lock("lk")
        .rlock("rlk")
        .semaphore("sem", 2)
        .value("v")
        .dict("d", 16)
        .dict("ns", 4)
        .barrier("gate", 2)
        .call("area", |(w, h): (u32, u32)| {
            w.checked_mul(h).ok_or("too large")
        })
        .call("echo", |s: Option<String>| Ok::<_, String>(s))
        .start()
        .unwrap()
}

fn python(py: &str, m: &ManagerHandle, role: &str) -> Command {
    pythons::script(py, "objects.py", m.address().port(), KEY, role)
}

fn run(py: &str, m: &ManagerHandle, role: &str) -> String {
    pythons::run_script(py, "objects.py", m.address().port(), KEY, role)
}

#[test]
fn python_event_set_in_one_process_wakes_a_wait_in_another() {
    for py in pythons() {
        let m = manager();
        let waiter = python(&py, &m, "event_wait").spawn().unwrap();
        let c = Client::connect(m.address(), KEY).unwrap();
        let start = std::time::Instant::now();
        while c.status().unwrap().waiters == 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "{py}: no waiter");
            std::thread::sleep(Duration::from_millis(10));
        }
        run(&py, &m, "event_set");
        let out = waiter.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{py}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True", "{py}");
        assert!(c.event("ready").unwrap().is_set().unwrap());
        m.shutdown().unwrap();
    }
}

#[test]
fn python_locks_and_semaphores_follow_python_rules() {
    for py in pythons() {
        let m = manager();
        assert_eq!(run(&py, &m, "lock_use").trim(), "ok", "{py}");
        m.shutdown().unwrap();
    }
}

#[test]
fn a_python_lock_holder_killed_releases_the_lock() {
    for py in pythons() {
        let m = manager();
        let mut holder = python(&py, &m, "lock_hold").spawn().unwrap();
        let mut out = BufReader::new(holder.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held", "{py}");
        let c = Client::connect(m.address(), KEY).unwrap();
        let lock = c.lock("lk").unwrap();
        assert!(
            !lock.try_acquire().unwrap(),
            "{py}: the Python process holds it"
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(
            lock.acquire_timeout(Duration::from_secs(10)).unwrap(),
            "{py}"
        );
        m.shutdown().unwrap();
    }
}

#[test]
fn python_typed_proxies_and_values_and_dicts() {
    for py in pythons() {
        let m = manager();
        assert_eq!(run(&py, &m, "typed").trim(), "ok", "{py}");
        let c = Client::connect(m.address(), KEY).unwrap();
        let ns = c.dict::<String, String>("ns").unwrap();
        assert_eq!(ns.get(&"label".into()).unwrap().as_deref(), Some("a"));
        assert_eq!(c.value::<f64>("v").unwrap().get().unwrap(), 2.5);
        c.value::<Option<u32>>("v").unwrap().set(&None).unwrap();
        assert_eq!(run(&py, &m, "value_dict").trim(), "ok", "{py}");
        assert_eq!(c.value::<u32>("v").unwrap().get().unwrap(), 42);
        let d = c.dict::<String, String>("d").unwrap();
        assert_eq!(d.get(&"go".into()).unwrap().as_deref(), Some("now"));
        m.shutdown().unwrap();
    }
}

#[test]
fn python_clients_make_registered_calls() {
    for py in pythons() {
        let m = manager();
        assert_eq!(run(&py, &m, "calls").trim(), "ok", "{py}");
        m.shutdown().unwrap();
    }
}
