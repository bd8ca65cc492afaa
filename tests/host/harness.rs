//! A small test runner (this target has `harness = false`), and child processes.
//!
//! The test binary is also every child process the tests need: run with `DEPOT_TEST_ROLE`
//! set, it plays that role (an example's `main`, or a helper from `roles`) instead of testing.
//! So the examples run as real processes, rebuilt with the tests, and no `cargo build` is
//! needed from inside a test.

use std::io::{BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable that selects a child process's role.
pub const ROLE_ENV: &str = "DEPOT_TEST_ROLE";

/// A test: its name and body. A panic fails it.
pub type Test = (&'static str, fn());

/// Runs the tests whose names contain one of the free arguments (all without any), a few at a
/// time, and prints libtest-style lines. Returns whether all passed.
pub fn run(tests: &[Test]) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return true;
    }
    // libtest flags cargo may pass (--nocapture, --test-threads N, -q ...) are ignored.
    let mut filters = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--test-threads" || a == "--format" || a == "--skip" {
            it.next();
        } else if !a.starts_with('-') {
            filters.push(a.clone());
        }
    }
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect();
    let filtered_out = tests.len() - selected.len();
    println!("\nrunning {} tests", selected.len());

    let started = Instant::now();
    let threads = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4);
    let queue = Arc::new(Mutex::new(
        selected.into_iter().cloned().collect::<Vec<_>>(),
    ));
    let (tx, rx) = mpsc::channel::<(&'static str, Result<Duration, String>)>();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let tx = tx.clone();
            thread::spawn(move || loop {
                let next = queue.lock().unwrap().pop();
                let Some((name, body)) = next else { break };
                let t0 = Instant::now();
                let outcome = catch_unwind(AssertUnwindSafe(body))
                    .map(|()| t0.elapsed())
                    .map_err(|p| panic_text(p.as_ref()));
                let _ = tx.send((name, outcome));
            })
        })
        .collect();
    drop(tx);
    let mut failed = Vec::new();
    let mut passed = 0;
    for (name, outcome) in rx {
        match outcome {
            Ok(t) => {
                passed += 1;
                println!("test {name} ... ok ({:.2}s)", t.as_secs_f64());
            }
            Err(msg) => {
                println!("test {name} ... FAILED");
                failed.push((name, msg));
            }
        }
    }
    for w in workers {
        let _ = w.join();
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for (name, msg) in &failed {
            println!("\n---- {name} ----\n{msg}");
        }
        println!("\nfailures:");
        for (name, _) in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    failed.is_empty()
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// A child process playing a role, its stdout read line by line as it comes, its stderr
/// gathered. Killed when dropped, so a failing test leaves no process behind.
pub struct Proc {
    role: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<thread::JoinHandle<()>>,
    stdout_reader: Option<thread::JoinHandle<()>>,
}

/// Starts this test binary as a child playing `role` with `args`.
pub fn spawn(role: &str, args: &[&str]) -> Proc {
    spawn_env(role, args, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_env(role: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(ROLE_ENV, role)
        .env_remove("DEPOT_ADDR")
        .env_remove("DEPOT_AUTHKEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {role}: {e}"));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    let stdout_reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&stderr);
    let stderr_reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Proc {
        role: role.to_owned(),
        child,
        stdin,
        lines,
        seen: Vec::new(),
        stderr,
        stderr_reader: Some(stderr_reader),
        stdout_reader: Some(stdout_reader),
    }
}

impl Proc {
    /// The next stdout line, waiting at most `timeout`.
    pub fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no line on stdout within {timeout:?}; stderr: {}",
                self.role,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "{}: stdout closed (exit {:?}); stderr: {}",
                self.role,
                self.child.try_wait(),
                self.stderr()
            ),
        }
    }

    /// The address from a `listening on ADDR` line, the first line of a manager.
    pub fn listening_addr(&mut self) -> String {
        let line = self.line(Duration::from_secs(10));
        line.strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{}: expected 'listening on ADDR', got {line:?}", self.role))
            .to_owned()
    }

    /// Writes a line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Waits at most `timeout` for the child to exit (killing it and failing otherwise);
    /// returns the status and every stdout line not yet taken with [`Proc::line`].
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: still running after {timeout:?}; stderr: {}",
                    self.role,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        if let Some(r) = self.stdout_reader.take() {
            let _ = r.join();
        }
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest.iter().cloned());
        (status, rest)
    }

    /// Waits for a successful exit (see [`Proc::wait`]) and returns the remaining stdout lines.
    pub fn success(&mut self, timeout: Duration) -> Vec<String> {
        let (status, rest) = self.wait(timeout);
        assert!(
            status.success(),
            "{}: exited with {status}; stderr: {}",
            self.role,
            self.stderr()
        );
        rest
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the child wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every few milliseconds until it holds; fails after `timeout` with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}
