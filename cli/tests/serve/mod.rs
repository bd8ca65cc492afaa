//! Starting real `depot serve` processes for the tests that kill and restart them.

// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A small deterministic generator, so a run can be repeated from its printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `depot serve ARGS` under `key` and waits for its "listening on" line; tries again
/// every `pause` until `within` has passed (the port may be held a moment longer by a process
/// just killed, or the manager's backend may not be ready yet).
pub fn serve(args: &[&std::ffi::OsStr], key: &str, within: Duration, pause: Duration) -> Child {
    let deadline = Instant::now() + within;
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_depot"))
            .arg("serve")
            .args(args)
            .env("DEPOT_AUTHKEY", key)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("depot serve starts");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.starts_with("listening on ") {
            return child;
        }
        let _ = child.wait();
        assert!(
            Instant::now() < deadline,
            "depot serve did not start: {args:?}"
        );
        thread::sleep(pause);
    }
}

/// A gateway's Prometheus metrics (`serve --metrics ADDR`).
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The value of the metric line starting with `name`.
pub fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("depot-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Stops the process as an operator would (SIGTERM: nats-server writes its store out).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `nats-server` with `args` and waits until it listens on `port`.
pub fn start_nats(args: &[&std::ffi::OsStr], port: u16) -> Proc {
    let child = Command::new("nats-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server runs (tests/install installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}
