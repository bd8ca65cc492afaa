//! Named keys as an operator uses them: `depot serve --keys FILE` as a real process, clients
//! as real processes and sockets; revocation by editing the file and sending SIGHUP; a
//! wrong-key storm from one address while a client with the right key comes from another.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode};

mod handshake;
use handshake::{connect_from, handshake};

const SOON: Duration = Duration::from_secs(10);
const DEFAULT_KEY: &str = "the default key, long enough";
const SENSOR_KEY: &str = "0123456789abcdef0123456789abcdef";
const OPS_KEY: &str = "fedcba9876543210fedcba9876543210";

fn keys_file(dir: &Path, with_sensor: bool) -> PathBuf {
    let mut text = String::from(
        "[[key]]\nname = \"ops\"\nkey_file = \"ops.key\"\n\
         put = [\"*\"]\nget = [\"*\"]\ncreate = [\"*\"]\nadmin = [\"*\"]\n",
    );
    if with_sensor {
        text +=
            &format!("[[key]]\nname = \"sensor\"\nkey = \"{SENSOR_KEY}\"\nput = [\"telemetry\"]\n");
    }
    std::fs::write(dir.join("ops.key"), format!("{OPS_KEY}\n")).unwrap();
    let path = dir.join("keys.toml");
    // Written whole and renamed, so a reload never reads half a file.
    let tmp = dir.join("keys.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("depot-keys-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn depot(key: Option<&str>, name: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("DEPOT_KEY_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match key {
        Some(k) => cmd.env("DEPOT_AUTHKEY", k),
        None => cmd.env_remove("DEPOT_AUTHKEY"),
    };
    if let Some(name) = name {
        cmd.env("DEPOT_KEY_NAME", name);
    }
    cmd
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(mut cmd: Command) -> Run {
    let out = cmd.output().expect("run depot");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    fn ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "exit {}: {}",
            self.status,
            self.stderr
        );
        self
    }

    fn failed_with(&self, expected: &str) {
        assert!(!self.status.success(), "succeeded: {}", self.stdout);
        assert_eq!(self.stderr, format!("depot: {expected}\n"));
    }
}

/// `depot serve` in the background; killed when dropped.
struct Serve {
    child: Child,
    addr: String,
    stderr: Option<thread::JoinHandle<String>>,
    _lines: Receiver<String>,
}

impl Serve {
    fn start(key: Option<&str>, args: &[&str]) -> Serve {
        let mut child = depot(
            key,
            None,
            &[&["serve", "--listen", "127.0.0.1:0"][..], args].concat(),
        )
        .spawn()
        .expect("start depot serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = Some(thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        }));
        let line = lines.recv_timeout(SOON).expect("serve prints its address");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
            .to_owned();
        Serve {
            child,
            addr,
            stderr,
            _lines: lines,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    /// Stops it with SIGTERM; its stderr.
    fn stop(mut self) -> String {
        self.signal("-TERM");
        let deadline = Instant::now() + SOON;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop");
            thread::sleep(Duration::from_millis(10));
        }
        self.stderr.take().unwrap().join().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn not_allowed(queue: &str) -> String {
    Error::Request {
        code: ErrorCode::NotAllowed,
        object: queue.into(),
    }
    .to_string()
}

#[test]
fn each_key_does_what_the_file_allows() {
    let dir = temp_dir("rights");
    let keys = keys_file(&dir, true);
    let server = Serve::start(
        Some(DEFAULT_KEY),
        &[
            "--keys",
            keys.to_str().unwrap(),
            "--queue",
            "telemetry",
            "--queue",
            "other",
            "--allow-remote-shutdown",
        ],
    );
    let addr = server.addr.as_str();
    let sensor = |args: &[&str]| depot(Some(SENSOR_KEY), Some("sensor"), args);
    run(sensor(&[
        "put",
        "--connect",
        addr,
        "--queue",
        "telemetry",
        "21.5",
    ]))
    .ok();
    run(sensor(&[
        "get",
        "--connect",
        addr,
        "--queue",
        "telemetry",
        "--timeout",
        "0",
    ]))
    .failed_with(&not_allowed("telemetry"));
    run(sensor(&["put", "--connect", addr, "--queue", "other", "1"]))
        .failed_with(&not_allowed("other"));
    run(sensor(&["stat", "--connect", addr])).failed_with(
        &Error::Request {
            code: ErrorCode::NotAllowed,
            object: String::new(),
        }
        .to_string(),
    );
    // The flag names the key as well as the environment does.
    let flag = run(depot(
        Some(SENSOR_KEY),
        None,
        &[
            "--key-name",
            "sensor",
            "put",
            "--connect",
            addr,
            "--queue",
            "telemetry",
            "22",
        ],
    ));
    flag.ok();
    // The sensor key under another name, or with no name, is a wrong key.
    let wrong = run(depot(
        Some(SENSOR_KEY),
        Some("ops"),
        &["put", "--connect", addr, "--queue", "telemetry", "1"],
    ));
    assert!(
        wrong.stderr.contains("authentication failed"),
        "{}",
        wrong.stderr
    );
    // The admin key sees and takes everything; the refused requests changed nothing.
    let ops = |args: &[&str]| depot(Some(OPS_KEY), Some("ops"), args);
    let got = run(ops(&[
        "get",
        "--connect",
        addr,
        "--queue",
        "telemetry",
        "--count",
        "2",
    ]));
    assert_eq!(got.ok().stdout, "21.5\n22\n");
    let stat = run(ops(&["stat", "--connect", addr, "--json"]));
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&stat.ok().stdout).unwrap()
        ["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["telemetry", "other"]);
    // The default key ($DEPOT_AUTHKEY) keeps every right, for old clients.
    run(depot(
        Some(DEFAULT_KEY),
        None,
        &["put", "--connect", addr, "--queue", "other", "1"],
    ))
    .ok();
    run(sensor(&["shutdown", "--connect", addr])).failed_with("not allowed by the manager");
    run(ops(&["shutdown", "--connect", addr])).ok();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_revokes_a_removed_key_and_closes_its_connections() {
    let dir = temp_dir("revoke");
    let keys = keys_file(&dir, true);
    let server = Serve::start(
        None,
        &["--keys", keys.to_str().unwrap(), "--queue", "telemetry"],
    );
    let addr = server.addr.as_str();
    let sensor = Client::connect_as(addr, "sensor", SENSOR_KEY).unwrap();
    let telemetry = sensor.queue::<u32>("telemetry").unwrap();
    telemetry.put(&1).unwrap();
    let ops = Client::connect_as(addr, "ops", OPS_KEY).unwrap();
    let ops_queue = ops.queue::<u32>("telemetry").unwrap();
    // A blocked get of the surviving key: it must live through the reload.
    assert_eq!(ops_queue.get().unwrap(), 1);
    let waiting = {
        let q = ops_queue.clone();
        thread::spawn(move || q.get())
    };
    wait_until("the get is parked", || {
        ops.stat().unwrap().iter().any(|q| q.getters == 1)
    });
    // Without a default key (no $DEPOT_AUTHKEY), nothing else gets in.
    assert!(matches!(
        Client::connect(addr, SENSOR_KEY),
        Err(Error::AuthFailed { .. })
    ));

    keys_file(&dir, false);
    server.signal("-HUP");
    // Opening the queue changes nothing, and fails once the connection is gone.
    wait_until("the sensor's connection is closed", || {
        sensor.raw_queue("telemetry").is_err()
    });
    match telemetry.put(&3) {
        Err(Error::AuthFailed { .. } | Error::Disconnected { .. } | Error::Protocol(_)) => {}
        other => panic!("after revocation: {other:?}"),
    }
    assert!(matches!(
        Client::connect_as(addr, "sensor", SENSOR_KEY),
        Err(Error::AuthFailed { .. })
    ));
    // The other key's connection and its blocked get go on.
    let put_by_ops = ops.queue::<u32>("telemetry").unwrap();
    put_by_ops.put(&7).unwrap();
    assert_eq!(waiting.join().unwrap().unwrap(), 7);
    assert_eq!(
        ops.stat().unwrap()[0].total_put,
        2,
        "the sensor put nothing after"
    );
    // A broken file changes nothing.
    std::fs::write(&keys, "[[key]]\nname = 3\n").unwrap();
    server.signal("-HUP");
    put_by_ops.put(&8).unwrap();
    let log = server.stop();
    assert!(log.contains("keyring replaced"), "{log}");
    assert!(log.contains("keys not reloaded"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_key_storm_is_slowed_and_summarised_while_others_get_in() {
    let dir = temp_dir("storm");
    let keys = keys_file(&dir, false);
    let server = Serve::start(
        Some(DEFAULT_KEY),
        &["--keys", keys.to_str().unwrap(), "--queue", "q"],
    );
    let addr = server.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let verdicts = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let storm: Vec<_> = (0..16)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            let (verdicts, refused) = (verdicts.clone(), refused.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match Client::connect_as(addr.as_str(), "ops", "a guess at the key") {
                        Err(Error::AuthFailed { .. }) => verdicts.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => panic!("a wrong key got in"),
                    };
                }
            })
        })
        .collect();
    wait_until("the storm's source is locked out", || {
        refused.load(Ordering::Relaxed) > 0
    });
    // Meanwhile the right key from another address gets in, again and again.
    for _ in 0..5 {
        let stream = connect_from([127, 0, 0, 2], &addr);
        assert_eq!(handshake(stream, "ops", OPS_KEY.as_bytes()), Ok(true));
    }
    // And a wrong one from there is told so, not refused: the lockout is per source.
    let wrong = handshake(connect_from([127, 0, 0, 2], &addr), "ops", b"nope");
    assert_eq!(wrong, Ok(false));
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.join().unwrap();
    }
    let (verdicts, refused) = (
        verdicts.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    println!("wrong-key storm, 16 threads: {verdicts} verdicts, {refused} refused at accept");
    // Ten failures lock the source out; at most the sixteen proofs in flight then get their
    // verdict. Everything after is refused at once, without a proof checked.
    assert!(
        verdicts <= 16 + 10,
        "{verdicts} verdicts, {refused} refused"
    );
    assert!(refused > verdicts, "{verdicts} verdicts, {refused} refused");
    let log = server.stop();
    let summary: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("failed or refused authentication"))
        .collect();
    assert!(!summary.is_empty(), "{log}");
    assert!(
        summary
            .iter()
            .any(|l| l.contains("failed from 127.0.0.1 for key ops")),
        "{summary:?}"
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("refused from 127.0.0.1 (locked out)")),
        "{summary:?}"
    );
    assert!(
        summary
            .iter()
            .any(|l| l.contains("1 failed from 127.0.0.2 for key ops")),
        "{summary:?}"
    );
    // Summaries, not a line per attempt.
    assert!(summary.len() < 5, "{summary:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_new_prints_an_entry_serve_accepts() {
    let dir = temp_dir("new");
    let out = run(depot(None, None, &["keys", "new", "sensor-7"]));
    let entry = out.ok().stdout.clone();
    assert!(
        entry.starts_with("[[key]]\nname = \"sensor-7\"\nkey = \""),
        "{entry}"
    );
    let key = entry
        .lines()
        .find_map(|l| l.strip_prefix("key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    assert_eq!(key.len(), 64);
    let again = run(depot(None, None, &["keys", "new", "sensor-7"]));
    assert_ne!(again.ok().stdout, entry, "a fresh key each time");
    // Give it a right and serve with it.
    let path = dir.join("keys.toml");
    std::fs::write(&path, entry.replace("put = []", "put = [\"q\"]")).unwrap();
    let server = Serve::start(None, &["--keys", path.to_str().unwrap(), "--queue", "q"]);
    let put = run(depot(
        Some(&key),
        Some("sensor-7"),
        &["put", "--connect", &server.addr, "--queue", "q", "1"],
    ));
    put.ok();
    let _ = server.stop();
    let bad = run(depot(None, None, &["keys", "new", "bad\tname"]));
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn short_authkeys_start_with_a_loud_warning() {
    let server = Serve::start(Some("producer"), &["--queue", "q"]);
    // The 8-byte key of the seed scenario still works.
    run(depot(
        Some("producer"),
        None,
        &["put", "--connect", &server.addr, "--queue", "q", "1"],
    ))
    .ok();
    let log = server.stop();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("THE AUTHKEY IS SHORTER THAN 16 BYTES")),
        "{log}"
    );
    let long = Serve::start(Some(DEFAULT_KEY), &["--queue", "q"]);
    let log = long.stop();
    assert!(!log.contains("SHORTER THAN"), "{log}");
}
