//! The `depot` CLI as a user runs it: real processes against real managers. Every failure must
//! exit non-zero with exactly one line on stderr, `depot: <error>`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use depot_std::{Client, Error, ErrorCode, Manager, ManagerHandle};

#[path = "../../transport-std/tests/support/pythons.rs"]
mod pythons;
use pythons::pythons;

const KEY: &str = "cli-test-key";
const SOON: Duration = Duration::from_secs(10);

/// `depot` with `DEPOT_AUTHKEY` set to `key` (or unset for `None`).
fn depot(key: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_depot"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match key {
        Some(k) => cmd.env("DEPOT_AUTHKEY", k),
        None => cmd.env_remove("DEPOT_AUTHKEY"),
    };
    cmd
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "exit {}; stderr: {}",
            self.status,
            self.stderr
        );
        assert_eq!(self.stderr, "", "stderr of a success");
        self
    }

    /// Failed with exactly `depot: {expected}` on stderr.
    fn failed_with(&self, expected: &str) {
        self.failed();
        assert_eq!(self.stderr, format!("depot: {expected}\n"));
    }

    /// Failed with one `depot: ...` line on stderr; returns the text after `depot: `.
    fn failed(&self) -> &str {
        assert!(!self.status.success(), "succeeded; stdout: {}", self.stdout);
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {:?}", self.stderr);
        assert!(self.stderr.ends_with('\n'));
        self.stderr
            .strip_prefix("depot: ")
            .unwrap_or_else(|| panic!("stderr: {:?}", self.stderr))
            .trim_end()
    }
}

/// Runs to completion within `SOON` (killed and failed otherwise), feeding `input` on stdin.
fn run_with(mut cmd: Command, input: Option<&[u8]>) -> Run {
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start depot");
    if let Some(bytes) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(bytes).unwrap();
    }
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = wait(&mut child, SOON);
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run(cmd: Command) -> Run {
    run_with(cmd, None)
}

/// Runs a command that finishes at once; its stdout as bytes.
fn run_bytes(mut cmd: Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().expect("run depot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn wait(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("depot still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A long-running `depot` whose stdout lines arrive on a channel. Killed when dropped.
struct Bg {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Bg {
    fn start(mut cmd: Command) -> Bg {
        let mut child = cmd.spawn().expect("start depot");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Some(reader(child.stderr.take().unwrap()));
        Bg {
            child,
            lines,
            stderr,
        }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(SOON).expect("a line on stdout")
    }

    /// Waits for the exit; returns the status, the rest of stdout and all of stderr.
    fn finish(mut self) -> Run {
        let status = wait(&mut self.child, SOON);
        let stderr = self.stderr.take().unwrap().join().unwrap();
        // The stdout thread ends at EOF, after the exit.
        let stdout: Vec<String> = self.lines.iter().collect();
        Run {
            status,
            stdout: stdout.join("\n"),
            stderr,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn manager(queues: &[(&str, u32)]) -> ManagerHandle {
    let mut b = Manager::builder().listen("127.0.0.1:0").authkey(KEY);
    for (name, cap) in queues {
        b = b.queue(name, *cap);
    }
    b.start().expect("start a manager")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn getters(c: &Client, queue: &str) -> u32 {
    c.stat()
        .unwrap()
        .into_iter()
        .find(|q| q.name == queue)
        .expect("the queue")
        .getters
}

/// An address nobody listens on.
fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn help_for_every_subcommand() {
    let top = run(depot(None, &["--help"]));
    top.ok();
    for sub in ["serve", "put", "get", "stat", "shutdown"] {
        assert!(top.stdout.contains(sub), "{sub} missing from --help");
        let help = run(depot(None, &[sub, "--help"]));
        help.ok();
        assert!(
            help.stdout.contains("Usage: depot"),
            "{sub} --help: {}",
            help.stdout
        );
        assert!(help.stdout.contains("--authkey-file"), "{sub} --help");
    }
    let serve = run(depot(None, &["serve", "--help"]));
    for opt in [
        "--config",
        "--listen",
        "--queue",
        "--max-item",
        "--allow-remote-shutdown",
        "--allow-create",
        "--max-connections",
        "--handshake-timeout",
        "--frame-timeout",
        "--write-stall-timeout",
        "--metrics",
        // The config file's keys are documented too.
        "[[queue]]",
        "[allow_create]",
        "[limits]",
        "write_stall_timeout =",
    ] {
        assert!(serve.stdout.contains(opt), "serve --help lacks {opt}");
    }
    let stat = run(depot(None, &["stat", "--help"]));
    for opt in ["--json", "--watch"] {
        assert!(stat.stdout.contains(opt), "stat --help lacks {opt}");
    }
}

#[test]
fn no_authkey_is_a_clear_error() {
    run(depot(None, &["stat"]))
        .failed_with("no authkey: set DEPOT_AUTHKEY or pass --authkey-file PATH");
    run(depot(Some(""), &["stat"])).failed_with("the authkey in DEPOT_AUTHKEY is empty");
    let missing = std::env::temp_dir().join("depot-cli-test-no-such-key-file");
    let path = missing.to_str().unwrap();
    let msg = run(depot(None, &["--authkey-file", path, "stat"]))
        .failed()
        .to_owned();
    assert!(msg.starts_with("cannot read the authkey file"), "{msg}");
}

#[test]
fn authkey_file_with_trailing_newline() {
    let m = manager(&[("q", 4)]);
    let dir = std::env::temp_dir().join(format!("depot-cli-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("authkey");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let addr = m.address().to_string();
    // The file wins over a wrong key in the environment.
    let r = run(depot(
        Some("wrong"),
        &[
            "--authkey-file",
            file.to_str().unwrap(),
            "put",
            "--connect",
            &addr,
            "--queue",
            "q",
            "42",
        ],
    ));
    r.ok();
    let c = Client::connect(m.address(), KEY).unwrap();
    assert_eq!(c.queue::<u32>("q").unwrap().get_nowait().unwrap(), 42);
    std::fs::remove_dir_all(&dir).unwrap();
    m.shutdown().unwrap();
}

#[test]
fn put_parses_values_and_get_prints_json_lines() {
    let m = manager(&[("q", 32)]);
    let addr = m.address().to_string();
    let conn = ["--connect", addr.as_str(), "--queue", "q"];
    let values = [
        "42",
        "-1.5",
        "\"two words\"",
        "true",
        "null",
        "[1, \"a\", [false]]",
        "{\"k\": {\"n\": [2.5, -7]}, \"b\": {\"$bytes\": \"AP8=\"}}",
        "{\"$map\": [[1, \"one\"]]}",
        "18446744073709551615",
    ];
    run(depot(Some(KEY), &[&["put"][..], &conn, &values].concat())).ok();
    // No values: one item per line of stdin (\n or \r\n).
    run_with(
        depot(Some(KEY), &[&["put"][..], &conn].concat()),
        Some(b"\"four\"\r\n5\n[6]"),
    )
    .ok();
    // --text: each line is a string as given, empty lines included.
    run_with(
        depot(Some(KEY), &[&["put", "--text"][..], &conn].concat()),
        Some("plain words\n\nünïcode".as_bytes()),
    )
    .ok();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.raw_queue("q").unwrap();
    assert_eq!(q.qsize().unwrap(), 15);

    let got = run(depot(
        Some(KEY),
        &[&["get"][..], &conn, &["--count", "15"]].concat(),
    ));
    got.ok();
    let printed: Vec<&str> = got.stdout.lines().collect();
    assert_eq!(printed[..9], values);
    assert_eq!(
        printed[9..],
        [
            "\"four\"",
            "5",
            "[6]",
            "\"plain words\"",
            "\"\"",
            "\"ünïcode\""
        ]
    );

    // Not a value: refused before anything is sent, with a hint.
    let err = run(depot(
        Some(KEY),
        &[&["put"][..], &conn, &["hello"]].concat(),
    ))
    .failed()
    .to_owned();
    assert!(
        err.contains("not a value") && err.contains("--text"),
        "{err}"
    );
    assert_eq!(q.qsize().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn put_42_is_a_u32_for_a_typed_consumer() {
    let m = manager(&[("q", 4)]);
    let addr = m.address().to_string();
    run(depot(
        Some(KEY),
        &["put", "--connect", &addr, "--queue", "q", "42", "3"],
    ))
    .ok();
    let c = Client::connect(m.address(), KEY).unwrap();
    let q = c.queue::<u32>("q").unwrap();
    assert_eq!(q.get().unwrap(), 42);
    assert_eq!(q.get().unwrap(), 3);
    // An opaque Python value is no u32: the error says what it is and keeps its bytes.
    run(depot(
        Some(KEY),
        &[
            "put",
            "--connect",
            &addr,
            "--queue",
            "q",
            "{\"$python_pickle\": \"gARLAS4=\"}",
        ],
    ))
    .ok();
    match q.get() {
        Err(e @ Error::Decode { .. }) => {
            assert!(e.to_string().contains("opaque Python value"), "{e}");
            let Error::Decode { item, .. } = e else {
                unreachable!()
            };
            assert_eq!(item[..5], [0xda, 0x64, 0x70, 0x00, 0x02]);
        }
        other => panic!("{other:?}"),
    }
    m.shutdown().unwrap();
}

/// What a typed Rust producer puts, `depot get` prints as the same values in JSON.
#[test]
fn typed_producer_values_print_as_json() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Reading {
        sensor: String,
        at: (u32, i8),
        values: Vec<f64>,
        tags: std::collections::BTreeMap<String, Vec<Option<bool>>>,
        #[serde(with = "serde_bytes")]
        raw: Vec<u8>,
        nested: Vec<Vec<i64>>,
    }
    let m = manager(&[("q", 4)]);
    let addr = m.address().to_string();
    let c = Client::connect(m.address(), KEY).unwrap();
    c.queue::<Reading>("q")
        .unwrap()
        .put(&Reading {
            sensor: "t\"1\"".into(),
            at: (7, -3),
            values: vec![0.5, -2.0, 1e-7],
            tags: [("ok".into(), vec![Some(true), None])].into(),
            raw: vec![0, 1, 254, 255],
            nested: vec![vec![], vec![i64::MIN]],
        })
        .unwrap();
    c.queue::<Vec<u8>>("q").unwrap().put(&vec![1, 2]).unwrap();
    let got = run(depot(
        Some(KEY),
        &["get", "--connect", &addr, "--queue", "q", "--count", "2"],
    ));
    got.ok();
    assert_eq!(
        got.stdout,
        "{\"sensor\": \"t\\\"1\\\"\", \"at\": [7, -3], \"values\": [0.5, -2.0, 1e-7], \
         \"tags\": {\"ok\": [true, null]}, \"raw\": {\"$bytes\": \"AAH+/w==\"}, \
         \"nested\": [[], [-9223372036854775808]]}\n[1, 2]\n"
    );
    m.shutdown().unwrap();
}

#[test]
fn raw_queues_carry_any_bytes_and_value_queues_refuse_them() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue("values", 4)
        .raw_queue("bytes", 4)
        .start()
        .unwrap();
    let addr = m.address().to_string();
    let on = |q: &'static str| ["--connect", addr.as_str(), "--queue", q].map(String::from);
    let args = |q, extra: &[&str]| {
        let mut v: Vec<String> = on(q).to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cmd = |sub: &str, a: Vec<String>| {
        let mut all = vec![sub.to_owned()];
        all.extend(a);
        depot(
            Some(KEY),
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    // A raw queue takes bytes that are no value, and gives them back as they were.
    run_with(
        cmd("put", args("bytes", &["--raw"])),
        Some(&[b'a', 0xff, b'b'][..]),
    )
    .ok();
    run(cmd("put", args("bytes", &["--raw", "hello"]))).ok();
    run(cmd("put", args("bytes", &["7"]))).ok();
    let got = run_bytes(cmd("get", args("bytes", &["--raw"])));
    assert_eq!(got, [b'a', 0xff, b'b', b'\n']);
    // Printed as JSON, an item that is not a value shows its bytes in base64.
    let got = run(cmd("get", args("bytes", &["--count", "2"])));
    got.ok();
    assert_eq!(got.stdout, "{\"$raw\": \"aGVsbG8=\"}\n7\n");

    // A value queue refuses garbage with the typed error and keeps nothing.
    let err = run(cmd("put", args("values", &["--raw", "hello"])))
        .failed()
        .to_owned();
    let invalid = |object: &str| Error::Request {
        code: ErrorCode::InvalidValue,
        object: object.into(),
    };
    assert_eq!(err, invalid("values").to_string());
    let c = Client::connect(m.address(), KEY).unwrap();
    let values = c.raw_queue("values").unwrap();
    assert!(matches!(
        values.put(&[0x82, 0x01]),
        Err(Error::Request { code: ErrorCode::InvalidValue, object }) if object == "values"
    ));
    assert_eq!(values.qsize().unwrap(), 0);
    // Through the raw proxy, bytes that are one value are taken.
    values.put(&[0x18, 42]).unwrap();
    assert_eq!(c.queue::<u8>("values").unwrap().get().unwrap(), 42);

    let st = run(cmd("stat", vec!["--connect".into(), addr.clone()]));
    st.ok();
    assert!(
        st.stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["bytes", "raw"])),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["values", "value"])),
        "{}",
        st.stdout
    );
    m.shutdown().unwrap();
}

#[test]
fn get_blocks_and_prints_each_item_at_once() {
    let m = manager(&[("q", 4)]);
    let addr = m.address().to_string();
    let bg = Bg::start(depot(
        Some(KEY),
        &["get", "--connect", &addr, "--queue", "q", "--count", "2"],
    ));
    let c = Client::connect(m.address(), KEY).unwrap();
    wait_until("depot get is parked", || getters(&c, "q") == 1);
    let q = c.queue::<String>("q").unwrap();
    q.put(&"first".into()).unwrap();
    // Printed (and flushed) before the second item exists.
    assert_eq!(bg.line(), "\"first\"");
    q.put(&"second".into()).unwrap();
    assert_eq!(bg.line(), "\"second\"");
    let r = bg.finish();
    r.ok();
    m.shutdown().unwrap();
}

#[test]
fn timeouts_fail_with_one_line() {
    let m = manager(&[("q", 1)]);
    let addr = m.address().to_string();
    let conn = ["--connect", addr.as_str(), "--queue", "q"];
    let t0 = Instant::now();
    run(depot(
        Some(KEY),
        &[&["get"][..], &conn, &["--timeout", "0.2"]].concat(),
    ))
    .failed_with(
        &Error::Request {
            code: ErrorCode::Timeout,
            object: "q".into(),
        }
        .to_string(),
    );
    assert!(t0.elapsed() >= Duration::from_millis(200));

    run(depot(
        Some(KEY),
        &[&["put"][..], &conn, &["--text", "fills it"]].concat(),
    ))
    .ok();
    run(depot(
        Some(KEY),
        &[
            &["put"][..],
            &conn,
            &["--timeout", "0.2", "--text", "no room"],
        ]
        .concat(),
    ))
    .failed_with(
        &Error::Request {
            code: ErrorCode::Timeout,
            object: "q".into(),
        }
        .to_string(),
    );

    // get --count 3 with one item: prints it, then times out.
    let r = run(depot(
        Some(KEY),
        &[&["get"][..], &conn, &["--count", "3", "--timeout", "0.2"]].concat(),
    ));
    r.failed_with(
        &Error::Request {
            code: ErrorCode::Timeout,
            object: "q".into(),
        }
        .to_string(),
    );
    assert_eq!(r.stdout, "\"fills it\"\n");
    m.shutdown().unwrap();
}

#[test]
fn wrong_key_refused_and_unknown_queue() {
    let m = manager(&[("q", 4)]);
    let addr = m.address().to_string();
    let text = run(depot(Some("wrong"), &["stat", "--connect", &addr]))
        .failed()
        .to_owned();
    assert!(text.starts_with("authentication failed"), "{text}");
    assert!(text.contains(&addr), "{text}");

    let dead = dead_addr();
    let text = run(depot(
        Some(KEY),
        &["put", "--connect", &dead, "--queue", "q", "x"],
    ))
    .failed()
    .to_owned();
    assert!(text.starts_with("connection refused"), "{text}");
    assert!(text.contains(&dead), "{text}");

    run(depot(
        Some(KEY),
        &["put", "--connect", &addr, "--queue", "nope", "x"],
    ))
    .failed_with(
        &Error::Request {
            code: ErrorCode::NoSuchObject,
            object: "nope".into(),
        }
        .to_string(),
    );
    run(depot(
        Some(KEY),
        &["get", "--connect", &addr, "--queue", "nope"],
    ))
    .failed_with(
        &Error::Request {
            code: ErrorCode::NoSuchObject,
            object: "nope".into(),
        }
        .to_string(),
    );
    m.shutdown().unwrap();
}

#[test]
fn item_too_large_is_one_line() {
    let m = Manager::builder()
        .listen("127.0.0.1:0")
        .authkey(KEY)
        .queue_with(
            "small",
            depot_std::QueueOptions {
                capacity: 4,
                max_item: 8,
                storage_bytes: None,
                mode: depot_std::QueueMode::Value,
            },
        )
        .start()
        .unwrap();
    let addr = m.address().to_string();
    let text = run(depot(
        Some(KEY),
        &[
            "put",
            "--connect",
            &addr,
            "--queue",
            "small",
            "\"123456789\"",
        ],
    ))
    .failed()
    .to_owned();
    // Ten bytes: the text's head and its nine bytes.
    assert!(
        text.contains("10 bytes") && text.contains('8'),
        "size and limit: {text}"
    );
    let c = Client::connect(m.address(), KEY).unwrap();
    assert_eq!(c.raw_queue("small").unwrap().qsize().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn stat_prints_a_table() {
    let m = manager(&[("jobs", 8), ("idle", 3)]);
    let addr = m.address().to_string();
    let c = Client::connect(m.address(), KEY).unwrap();
    let jobs = c.queue::<String>("jobs").unwrap();
    for i in 0..5 {
        jobs.put(&format!("job {i}")).unwrap();
    }
    jobs.get().unwrap();
    let blocked = Bg::start(depot(
        Some(KEY),
        &["get", "--connect", &addr, "--queue", "idle"],
    ));
    wait_until("a getter on idle", || getters(&c, "idle") == 1);

    let r = run(depot(Some(KEY), &["stat", "--connect", &addr]));
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name}: {header:?}"))
    };
    let row = |queue: &str| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|cells| cells.first().map(String::as_str) == Some(queue))
            .unwrap_or_else(|| panic!("no row {queue}: {}", r.stdout))
    };
    let jobs_row = row("jobs");
    let idle_row = row("idle");
    assert_eq!(jobs_row[col("MODE")], "value");
    assert_eq!(jobs_row[col("LENGTH")], "4");
    assert_eq!(jobs_row[col("CAPACITY")], "8");
    assert_eq!(jobs_row[col("TOTAL_PUT")], "5");
    assert_eq!(jobs_row[col("TOTAL_GOT")], "1");
    assert_eq!(jobs_row[col("GETTERS")], "0");
    assert_eq!(idle_row[col("CAPACITY")], "3");
    assert_eq!(idle_row[col("GETTERS")], "1");
    assert_eq!(idle_row[col("PUTTERS")], "0");
    // The status line: this client, the blocked get, and the stat command itself.
    let status = lines.last().unwrap();
    assert!(status.contains("3 of"), "{status}");
    assert!(status.contains("1 blocked"), "{status}");
    // A manager that keeps its queues itself has no backend to show.
    assert!(!r.stdout.contains("backend"), "{}", r.stdout);
    let json = stat_json(&addr);
    assert!(json.get("backend").is_some_and(|b| b.is_null()), "{json}");
    drop(blocked);
    m.shutdown().unwrap();
}

#[test]
fn shutdown_refused_without_permission() {
    let m = manager(&[("q", 4)]);
    let addr = m.address().to_string();
    run(depot(Some(KEY), &["shutdown", "--connect", &addr])).failed_with(
        &Error::Request {
            code: ErrorCode::NotAllowed,
            object: String::new(),
        }
        .to_string(),
    );
    // Still serving.
    run(depot(
        Some(KEY),
        &["put", "--connect", &addr, "--queue", "q", "\"alive\""],
    ))
    .ok();
    m.shutdown().unwrap();
}

fn serve(args: &[&str]) -> (Bg, String) {
    let bg = Bg::start(depot(
        Some(KEY),
        &[&["serve", "--listen", "127.0.0.1:0"][..], args].concat(),
    ));
    let line = bg.line();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve printed {line:?}"))
        .to_owned();
    (bg, addr)
}

#[test]
fn serve_put_get_stat_shutdown_as_processes() {
    let (server, addr) = serve(&[
        "--queue",
        "jobs:2",
        "--queue",
        "other",
        "--queue",
        "bytes:3:raw",
        "--max-item",
        "16",
        "--allow-remote-shutdown",
        "--max-connections",
        "8",
    ]);
    let conn = ["--connect", addr.as_str()];
    run(depot(
        Some(KEY),
        &[&["put"][..], &conn, &["--queue", "jobs", "1", "\"b\""]].concat(),
    ))
    .ok();
    run(depot(
        Some(KEY),
        &[
            &["put"][..],
            &conn,
            &["--queue", "jobs", "--timeout", "0.1", "3"],
        ]
        .concat(),
    ))
    .failed_with(
        &Error::Request {
            code: ErrorCode::Timeout,
            object: "jobs".into(),
        }
        .to_string(),
    );
    run(depot(
        Some(KEY),
        &[
            &["put"][..],
            &conn,
            &["--queue", "other", "--text", "x".repeat(16).as_str()],
        ]
        .concat(),
    ))
    .failed();
    let st = run(depot(Some(KEY), &[&["stat"][..], &conn].concat()));
    st.ok();
    assert!(
        st.stdout
            .lines()
            .any(|l| l.split_whitespace().take(4).eq(["jobs", "value", "2", "2"])),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.lines().any(|l| l
            .split_whitespace()
            .take(4)
            .eq(["other", "value", "0", "1024"])),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout
            .lines()
            .any(|l| l.split_whitespace().take(4).eq(["bytes", "raw", "0", "3"])),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("of 8 connections"), "{}", st.stdout);
    let got = run(depot(
        Some(KEY),
        &[&["get"][..], &conn, &["--queue", "jobs", "--count", "2"]].concat(),
    ));
    got.ok();
    assert_eq!(got.stdout, "1\n\"b\"\n");
    run(depot(Some(KEY), &[&["shutdown"][..], &conn].concat())).ok();
    let r = server.finish();
    assert!(r.status.success(), "serve exit {}: {}", r.status, r.stderr);
    // Stopped: nothing listens any more.
    let text = run(depot(Some(KEY), &[&["stat"][..], &conn].concat()))
        .failed()
        .to_owned();
    assert!(text.starts_with("connection refused"), "{text}");
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_sigint() {
    // With or without remote shutdown allowed, a signal stops the manager from inside the
    // process (no connection to itself).
    for (sig, allow) in [("-TERM", false), ("-INT", false), ("-TERM", true)] {
        let flags: &[&str] = if allow {
            &[
                "-v",
                "--queue",
                "q",
                "--queue",
                "full",
                "--allow-remote-shutdown",
            ]
        } else {
            &["-v", "--queue", "q", "--queue", "full"]
        };
        let (server, addr) = serve(flags);
        // A client blocked in get is told the manager is shutting down.
        let blocked = Bg::start(depot(
            Some(KEY),
            &["get", "--connect", &addr, "--queue", "q"],
        ));
        run(depot(
            Some(KEY),
            &[
                "put",
                "--connect",
                &addr,
                "--queue",
                "full",
                "--text",
                "a",
                "b",
                "c",
            ],
        ))
        .ok();
        let c = Client::connect(addr.as_str(), KEY).unwrap();
        wait_until("the get is parked", || getters(&c, "q") == 1);
        // Open now: this client and the blocked get (the put's connection is gone).
        wait_until("two connections are left", || {
            c.status().unwrap().connections == 2
        });
        server.signal(sig);
        let r = server.finish();
        assert!(
            r.status.success(),
            "serve after {sig}: exit {}; {}",
            r.status,
            r.stderr
        );
        blocked.finish().failed_with(
            &Error::Request {
                code: ErrorCode::ShuttingDown,
                object: String::new(),
            }
            .to_string(),
        );
        let stopped = r
            .stderr
            .lines()
            .find(|l| l.contains("manager stopped"))
            .unwrap_or_else(|| panic!("no 'manager stopped' line: {}", r.stderr));
        assert!(stopped.contains("queued_items=3"), "{stopped}");
        assert!(stopped.contains("connections_closed=2"), "{stopped}");
        let flushing = r
            .stderr
            .lines()
            .find(|l| l.contains("no longer accepting"))
            .unwrap_or_else(|| panic!("no 'no longer accepting' line: {}", r.stderr));
        assert!(flushing.contains("connections=2"), "{flushing}");
        // Each connection's lines carry its span: an id and the peer's address.
        assert!(
            r.stderr.lines().any(|l| l.contains("conn{id=")
                && l.contains("peer=127.0.0.1:")
                && l.contains("connection closed")),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn serve_errors_are_one_line() {
    // The port is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = run(depot(
        Some(KEY),
        &["serve", "--listen", &addr, "--queue", "q"],
    ));
    r.failed();
    // No queue: a usage error (exit 2), not a crash.
    let r = run(depot(Some(KEY), &["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.failed().starts_with("no queue to serve"), "{}", r.stderr);
    // The metrics port is taken: refused before anything listens.
    let r = run(depot(
        Some(KEY),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--queue",
            "q",
            "--metrics",
            &addr,
        ],
    ));
    assert!(
        r.failed().starts_with("cannot serve metrics on"),
        "{}",
        r.stderr
    );
    // A config file that is not there, or not TOML.
    let r = run(depot(
        Some(KEY),
        &["serve", "--config", "/nonexistent/depot.toml"],
    ));
    assert!(
        r.failed().starts_with("cannot read the config file"),
        "{}",
        r.stderr
    );
    let dir = temp_dir("bad-config");
    let bad = dir.join("depot.toml");
    std::fs::write(&bad, "[[queue]]\nname = \"q\"\ncapacity = \"many\"\n").unwrap();
    let r = run(depot(
        Some(KEY),
        &["serve", "--config", bad.to_str().unwrap()],
    ));
    let text = r.failed();
    assert!(
        text.contains("line 3") && text.contains("capacity"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A bad capacity.
    let r = run(depot(Some(KEY), &["serve", "--queue", "q:zero"]));
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("capacity"), "{}", r.stderr);
    // A bad fsync policy, or one without a data directory to apply to.
    let r = run(depot(
        Some(KEY),
        &["serve", "--queue", "q", "--fsync", "sometimes"],
    ));
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("not an fsync policy"), "{}", r.stderr);
    let r = run(depot(
        Some(KEY),
        &["serve", "--queue", "q", "--fsync", "always"],
    ));
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.failed().contains("--data-dir"), "{}", r.stderr);
    // A data directory that cannot be one (a file).
    let dir = temp_dir("data-dir-file");
    let file = dir.join("file");
    std::fs::write(&file, "x").unwrap();
    let r = run(depot(
        Some(KEY),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--queue",
            "q",
            "--data-dir",
            file.to_str().unwrap(),
        ],
    ));
    // (The manager warns about the short test key first.)
    assert!(!r.status.success());
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("depot: ") && last.contains("data dir"),
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_dir_keeps_queues_across_a_restart_and_metrics_show_the_log() {
    let dir = temp_dir("data-dir");
    let data = dir.join("queues");
    let args = [
        "--queue",
        "jobs",
        "--data-dir",
        data.to_str().unwrap(),
        "--fsync",
        "always",
        "--metrics",
        "127.0.0.1:0",
    ];
    let (bg, addr) = serve(&args);
    let metrics = bg.line();
    let metrics = metrics
        .strip_prefix("metrics on http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("serve printed {metrics:?}"))
        .to_owned();
    let put = ["put", "--connect", &addr, "--queue", "jobs", "1", "2", "3"];
    run(depot(Some(KEY), &put)).ok();
    let samples = scrape(&metrics);
    assert!(samples["depot_log_bytes"] > 12, "{samples:?}");
    assert!(samples["depot_log_fsyncs_total"] >= 1, "{samples:?}");
    // SIGKILL: no graceful stop, no final sync.
    drop(bg);
    let (_bg, addr) = serve(&args[..4]);
    let get = ["get", "--connect", &addr, "--queue", "jobs", "--count", "3"];
    let got = run(depot(Some(KEY), &get));
    got.ok();
    assert_eq!(got.stdout, "1\n2\n3\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("depot-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `GET path` over plain HTTP/1.1; the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert_eq!(body.len(), length, "{head}");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Prometheus samples by `name{labels}`.
fn scrape(metrics: &str) -> HashMap<String, u64> {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            let value = value.parse().unwrap_or_else(|_| panic!("sample {l:?}"));
            (name.to_owned(), value)
        })
        .collect()
}

fn stat_json(addr: &str) -> serde_json::Value {
    let r = run(depot(Some(KEY), &["stat", "--connect", addr, "--json"]));
    r.ok();
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    serde_json::from_str(&r.stdout).expect("stat --json prints JSON")
}

#[test]
fn metrics_over_http_match_stat_json() {
    let (server, addr) = serve(&[
        "--queue",
        "jobs:8",
        "--queue",
        "idle:2",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = server
        .line()
        .strip_prefix("metrics on http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .expect("the metrics address on stdout")
        .to_owned();
    let conn = ["--connect", addr.as_str()];
    run(depot(
        Some(KEY),
        &[
            &["put"][..],
            &conn,
            &["--queue", "jobs", "1", "22", "333", "4444"],
        ]
        .concat(),
    ))
    .ok();
    run(depot(
        Some(KEY),
        &[&["get"][..], &conn, &["--queue", "jobs"]].concat(),
    ))
    .ok();
    let _blocked = Bg::start(depot(
        Some(KEY),
        &[&["get"][..], &conn, &["--queue", "idle"]].concat(),
    ));
    run(depot(Some("wrong"), &[&["stat"][..], &conn].concat())).failed();
    // Settled: only the blocked get is connected, and the wrong key is counted.
    let before = {
        let mut last = HashMap::new();
        wait_until("the run has settled", || {
            last = scrape(&metrics);
            last["depot_connections"] == 1
                && last["depot_waiters"] == 1
                && last["depot_auth_failures_total"] == 1
        });
        last
    };
    let stat = stat_json(&addr);
    let after = scrape(&metrics);

    // The stat command's own connection is the one more it saw.
    assert_eq!(stat["connections"], before["depot_connections"] + 1);
    assert_eq!(stat["max_connections"], before["depot_max_connections"]);
    assert_eq!(stat["waiters"], before["depot_waiters"]);
    let queues = stat["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    for q in queues {
        let name = q["name"].as_str().unwrap();
        for (field, metric) in [
            ("len", "length"),
            ("capacity", "capacity"),
            ("bytes", "bytes"),
            ("getters", "getters"),
            ("putters", "putters"),
            ("unfinished", "unfinished"),
            ("total_put", "put_total"),
            ("total_got", "got_total"),
        ] {
            let key = format!("depot_queue_{metric}{{queue=\"{name}\"}}");
            assert_eq!(q[field], before[&key], "{key}");
            assert_eq!(q[field], after[&key], "{key}");
        }
    }
    let jobs = queues.iter().find(|q| q["name"] == "jobs").unwrap();
    assert_eq!(
        (jobs["len"].as_u64(), jobs["total_put"].as_u64()),
        (Some(3), Some(4))
    );
    // The values left are 22, 333 and 4444: CBOR takes one byte for 22, three for the others.
    assert_eq!(jobs["bytes"].as_u64(), Some(1 + 3 + 3));
    // Every process so far: put, get, the blocked get, the wrong key, stat --json.
    assert_eq!(after["depot_connections_accepted_total"], 5);
    assert_eq!(after["depot_connections_refused_total"], 0);
    assert!(after["depot_received_bytes_total"] > before["depot_received_bytes_total"]);
    assert!(after["depot_sent_bytes_total"] > before["depot_sent_bytes_total"]);
    // Only /metrics is served.
    assert_eq!(http_get(&metrics, "/").0, "HTTP/1.1 404 Not Found");
}

#[test]
fn stat_watch_prints_again() {
    let m = manager(&[("q", 4)]);
    let addr = m.address().to_string();
    let watch = Bg::start(depot(
        Some(KEY),
        &["stat", "--connect", &addr, "--json", "--watch", "0.05"],
    ));
    let len = |line: String| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object a line");
        v["queues"][0]["len"].as_u64().unwrap()
    };
    assert_eq!(len(watch.line()), 0);
    let c = Client::connect(m.address(), KEY).unwrap();
    c.queue::<u32>("q").unwrap().put(&7).unwrap();
    let deadline = Instant::now() + SOON;
    while len(watch.line()) != 1 {
        assert!(Instant::now() < deadline, "the put never showed");
    }
    drop(watch);
    // The table, too: into a pipe, one table after another, each ending in its status line.
    let tables = Bg::start(depot(
        Some(KEY),
        &["stat", "--connect", &addr, "--watch", "0.05"],
    ));
    for _ in 0..2 {
        assert!(tables.line().starts_with("QUEUE"));
        assert!(tables.line().starts_with("q "));
        assert_eq!(tables.line(), "");
        assert!(tables.line().starts_with("manager "));
        assert_eq!(tables.line(), "");
    }
    drop(tables);
    // A zero interval is a usage error.
    let r = run(depot(
        Some(KEY),
        &["stat", "--connect", &addr, "--watch", "0"],
    ));
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    m.shutdown().unwrap();
}

#[test]
fn config_file_with_flags_overriding_it() {
    let dir = temp_dir("config");
    std::fs::write(dir.join("key"), format!("{KEY}\n")).unwrap();
    let config = dir.join("depot.toml");
    // Port 1 is never ours to take: only the --listen override makes this serve.
    std::fs::write(
        &config,
        r#"
listen = "127.0.0.1:1"
authkey_file = "key"
allow_remote_shutdown = true
max_item = 16

[limits]
max_connections = 5

[allow_create]
slots = 2
capacity = 3

[[queue]]
name = "jobs"
capacity = 5

[[queue]]
name = "big"
capacity = 2
max_item = 1000
"#,
    )
    .unwrap();
    // The key comes from the file named in the config, not from the (wrong) environment.
    let (server, addr) = {
        let bg = Bg::start(depot(
            Some("wrong"),
            &[
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--queue",
                "jobs:7",
                "--allow-remote-shutdown=false",
            ],
        ));
        let line = bg.line();
        let addr = line
            .strip_prefix("listening on ")
            .expect("listening")
            .to_owned();
        (bg, addr)
    };
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    let stat = c.stat().unwrap();
    let q = |name: &str| stat.iter().find(|q| q.name == name).unwrap().clone();
    // --queue jobs:7 replaced the file's jobs (capacity 5); the file's max_item applies to it.
    assert_eq!((q("jobs").capacity, q("jobs").max_item), (7, 16));
    assert_eq!((q("big").capacity, q("big").max_item), (2, 1000));
    assert_eq!(c.status().unwrap().max_connections, 5);
    // [allow_create]: two slots, each with room for 3 items of 16 bytes (the file's max_item).
    assert!(
        c.create_queue("huge", 1, 1000).is_err(),
        "an item larger than a slot"
    );
    assert_eq!(c.create_queue("made", 3, 16).unwrap().capacity(), 3);
    assert_eq!(c.create_queue("more", 3, 16).unwrap().capacity(), 3);
    assert!(c.create_queue("third", 3, 16).is_err(), "only two slots");
    // --allow-remote-shutdown=false won over the file's true.
    assert!(matches!(
        c.shutdown_manager(),
        Err(Error::Request {
            code: ErrorCode::NotAllowed,
            ..
        })
    ));
    server.signal("-TERM");
    let r = server.finish();
    assert!(r.status.success(), "{}", r.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The seed's Python `close` script, unchanged but for the address: connect, put one item,
/// then `m.close()`; `then` runs after it.
fn python_close(python: &str, addr: &str, then: &str) -> Run {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        "from multiprocessing.managers import BaseManager, RemoteError\n\
         class QueueManager(BaseManager): pass\n\
         QueueManager.register('task_queue'); QueueManager.register('close')\n\
         m = QueueManager(address=('{host}', {port}), authkey=b'{KEY}'); m.connect()\n\
         m.task_queue().put(7)\n\
         {then}\n"
    );
    let mut cmd = Command::new(python);
    cmd.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run(cmd)
}

#[test]
fn depot_call_close_stops_serve_only_when_allowed() {
    let (server, addr) = serve(&["--queue", "task_queue"]);
    let text = run(depot(Some(KEY), &["call", "--connect", &addr, "close"]))
        .failed()
        .to_owned();
    assert!(text.contains("not allowed"), "{text}");
    run(depot(Some(KEY), &["stat", "--connect", &addr])).ok();
    drop(server);

    let (server, addr) = serve(&["--queue", "task_queue", "--allow-remote-shutdown"]);
    let r = run(depot(Some(KEY), &["call", "--connect", &addr, "close"]));
    r.ok();
    assert_eq!(r.stdout, "null\n");
    let r = server.finish();
    assert!(r.status.success(), "serve exit {}: {}", r.status, r.stderr);
}

#[test]
fn python_close_stops_serve_with_remote_shutdown() {
    for python in pythons() {
        let (server, addr) = serve(&["--queue", "task_queue", "--allow-remote-shutdown"]);
        let r = python_close(&python, &addr, "m.close(); print('closed')");
        assert!(
            r.status.success() && r.stdout.trim() == "closed",
            "{python}: {}\n{}",
            r.status,
            r.stderr
        );
        let r = server.finish();
        assert!(r.status.success(), "serve exit {}: {}", r.status, r.stderr);
        let text = run(depot(Some(KEY), &["stat", "--connect", &addr]))
            .failed()
            .to_owned();
        assert!(text.starts_with("connection refused"), "{python}: {text}");
    }
}

#[test]
fn python_close_refused_without_remote_shutdown() {
    for python in pythons() {
        let (server, addr) = serve(&["--queue", "task_queue"]);
        let then = "try:\n    m.close(); raise SystemExit('close must fail')\n\
                    except RemoteError as e:\n    assert 'does not allow remote shutdown' in str(e), e\n\
                    assert m.task_queue().get(timeout=5) == 7";
        let r = python_close(&python, &addr, then);
        assert!(r.status.success(), "{python}: {}\n{}", r.status, r.stderr);
        // Still serving after the script has gone.
        run(depot(Some(KEY), &["stat", "--connect", &addr])).ok();
        drop(server);
    }
}

#[test]
fn serve_declares_conditions_and_lists_and_stat_shows_them() {
    let (server, addr) = serve(&["--condition", "cv", "--list", "jobs:2", "--list", "log"]);
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    c.condition("cv").unwrap().acquire().unwrap();
    let jobs = c.list::<u32>("jobs").unwrap();
    jobs.push(&1).unwrap();
    jobs.push(&2).unwrap();
    assert!(matches!(
        jobs.push(&3),
        Err(Error::Request {
            code: ErrorCode::Full,
            ..
        })
    ));
    c.list::<String>("log").unwrap().push(&"x".into()).unwrap();
    let json = stat_json(&addr);
    let seen: Vec<(String, String, u64)> = json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["kind"].as_str().unwrap().to_owned(),
                o["len"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect: Vec<(String, String, u64)> = [
        ("cv", "condition", 0),
        ("jobs", "list", 2),
        ("log", "list", 1),
    ]
    .iter()
    .map(|(n, k, l)| (n.to_string(), k.to_string(), *l))
    .collect();
    let mut seen = seen;
    seen.sort();
    assert_eq!(seen, expect);
    let r = run(depot(Some(KEY), &["stat", "--connect", &addr]));
    r.ok();
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("jobs "))
        .unwrap_or_else(|| panic!("no row for jobs: {}", r.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some("list"));
    // A condition takes no number.
    let r = run(depot(Some(KEY), &["serve", "--condition", "cv:2"]));
    assert!(
        !r.status.success() && r.stderr.contains("takes no number"),
        "{}",
        r.stderr
    );
    drop(server);
}

#[test]
fn serve_declares_objects_from_flags_and_config_and_stat_shows_them() {
    let dir = temp_dir("objects");
    let config = dir.join("depot.toml");
    std::fs::write(
        &config,
        r#"
[[object]]
name = "gate"
kind = "barrier"
capacity = 5

[[object]]
name = "settings"
kind = "dict"
capacity = 2
"#,
    )
    .unwrap();
    let (server, addr) = serve(&[
        "--config",
        config.to_str().unwrap(),
        "--event",
        "ready",
        "--lock",
        "lk",
        "--semaphore",
        "slots:3",
        "--value",
        "v:64",
        // Overrides the file's barrier.
        "--barrier",
        "gate:2",
    ]);
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    c.event("ready").unwrap().set().unwrap();
    c.lock("lk").unwrap().acquire().unwrap();
    let slots = c.semaphore("slots").unwrap();
    slots.acquire().unwrap();
    c.value::<String>("v").unwrap().set(&"x".into()).unwrap();
    let d = c.dict::<u32, u32>("settings").unwrap();
    d.insert(&1, &10).unwrap();
    d.insert(&2, &20).unwrap();
    assert!(matches!(
        d.insert(&3, &30),
        Err(Error::Request {
            code: ErrorCode::Full,
            ..
        })
    ));
    assert_eq!(c.barrier("gate").unwrap().parties(), 2);
    // A value of 64 bytes refuses a longer one.
    let long = "y".repeat(80);
    assert!(c.value::<String>("v").unwrap().set(&long).is_err());

    let json = stat_json(&addr);
    let seen: Vec<(String, String, u64)> = json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["kind"].as_str().unwrap().to_owned(),
                o["len"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect = [
        ("gate", "barrier", 0),
        ("settings", "dict", 2),
        ("ready", "event", 1),
        ("lk", "lock", 0),
        ("slots", "semaphore", 2),
        ("v", "value", 1),
    ];
    let expect: Vec<(String, String, u64)> = expect
        .iter()
        .map(|(n, k, l)| (n.to_string(), k.to_string(), *l))
        .collect();
    assert_eq!(seen, expect);
    // The table shows each object's kind where a queue shows its mode.
    let r = run(depot(Some(KEY), &["stat", "--connect", &addr]));
    r.ok();
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("slots "))
        .unwrap_or_else(|| panic!("no row for slots: {}", r.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some("semaphore"));
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_refuses_bad_object_flags() {
    for (flag, value, says) in [
        ("--barrier", "gate", "parties"),
        ("--event", "ready:3", "takes no number"),
        ("--dict", "d:0", "above 0"),
    ] {
        let r = run(depot(
            Some(KEY),
            &["serve", "--listen", "127.0.0.1:0", flag, value],
        ));
        assert!(!r.status.success(), "{flag} {value}");
        assert!(r.stderr.contains(says), "{flag} {value}: {}", r.stderr);
    }
}

#[test]
fn event_verbs_set_test_and_wait() {
    let (server, addr) = serve(&["--event", "ready"]);
    let ev = |args: &[&str]| {
        depot(
            Some(KEY),
            &[&["event", "--connect", addr.as_str()][..], args].concat(),
        )
    };
    let r = run(ev(&["wait", "ready", "--timeout", "0.1"]));
    assert!(!r.status.success());
    assert!(
        r.stderr.contains("timed out waiting for event 'ready'"),
        "{}",
        r.stderr
    );
    assert_eq!(run(ev(&["is-set", "ready"])).ok().stdout.trim(), "false");
    // A waiter in another process wakes when the event is set.
    let waiter = Bg::start(ev(&["wait", "ready"]));
    let c = Client::connect(addr.as_str(), KEY).unwrap();
    wait_until("the waiter blocks", || c.status().unwrap().waiters == 1);
    run(ev(&["set", "ready"])).ok();
    assert!(waiter.finish().status.success());
    assert_eq!(run(ev(&["is-set", "ready"])).ok().stdout.trim(), "true");
    run(ev(&["clear", "ready"])).ok();
    assert!(!c.event("ready").unwrap().is_set().unwrap());
    let r = run(ev(&["set", "nope"]));
    assert!(!r.status.success());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    drop(server);
}

/// `serve --require-encryption`: the CLI's own clients (sealing by default) are served; a
/// client that does not encrypt is refused with one clear line.
#[test]
fn serve_require_encryption_refuses_clients_that_do_not_encrypt() {
    let (server, addr) = serve(&["--queue", "q", "--require-encryption"]);
    let conn = ["--connect", addr.as_str()];
    run(depot(
        Some(KEY),
        &[&["put"][..], &conn, &["--queue", "q", "1"]].concat(),
    ))
    .ok();
    let off = depot_std::ConnectOptions::new().encryption(depot_std::Encryption::Off);
    let err = Client::connect_with(addr.as_str(), KEY, &off).expect_err("refused");
    assert!(err.to_string().contains("encryption required"), "{err}");
    let sealed = Client::connect(addr.as_str(), KEY).unwrap();
    assert_eq!(sealed.raw_queue("q").unwrap().qsize().unwrap(), 1);
    drop(server);
}
