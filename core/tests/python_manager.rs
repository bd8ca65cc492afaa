//! Real CPython `BaseManager` clients against depot's own `Manager` with Python serving on,
//! driven by a minimal single-threaded transport over real sockets: the same queues serve a
//! depot client and Python clients at once, and a blocked Python `get` parks in the manager.
//! `python3` always runs; `DEPOT_PYTHONS` (a directory of `python3.X` launchers from
//! `tools/extra-pythons`) adds 3.9, 3.13 and 3.14.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

use depot_core::client::ClientConfig;
use depot_core::manager::PythonStorage;
use depot_core::python::pickle::Node;
use depot_core::python::ScratchStore;
use depot_core::wire::{Op, QueueSpec, Reply, Wait};
use depot_core::*;

fn scratch() -> ScratchStore<'static> {
    ScratchStore {
        nodes: vec![Node::None; 1024].into(),
        stack: vec![0; 128].into(),
        memo: vec![0; 256].into(),
    }
}

fn manager(tx: usize) -> Manager<'static> {
    manager_with(tx, ManagerConfig::default())
}

fn manager_with(tx: usize, config: ManagerConfig) -> Manager<'static> {
    let spec = QueueSpec {
        capacity: 64,
        max_item: 4096,
        mode: depot_core::QueueMode::Value,
    };
    let small = QueueSpec {
        capacity: 2,
        max_item: 64,
        mode: depot_core::QueueMode::Value,
    };
    let objects = vec![
        ObjectSlot::queue("jobs", spec, vec![0; 64 * 1024]).unwrap(),
        ObjectSlot::queue("small", small, vec![0; 1024]).unwrap(),
    ];
    let conns: Vec<Connection<'static>> = (0..16)
        .map(|_| Connection::new(vec![0; 16 * 1024], vec![0; tx]))
        .collect();
    let resources = Resources {
        objects: objects.into(),
        connections: conns.into(),
        waiters: vec![Waiter::EMPTY; 64].into(),
        parked: ParkStore::slots(vec![0; 16 * 4096], 4096),
    };
    let mut m = Manager::new(config, b"secret", resources);
    m.serve_python(
        b"secret",
        PythonStorage {
            request: scratch(),
            item: vec![0; 4096].into(),
            reply: scratch(),
            join: vec![0; 4096].into(),
        },
    );
    m
}

/// Moves bytes between sockets and the manager until `done` says so.
struct Transport {
    m: Manager<'static>,
    listener: TcpListener,
    socks: HashMap<ConnId, TcpStream>,
    start: StdInstant,
    /// The manager's clock stands at this many milliseconds when set.
    frozen: Option<u64>,
    accepted: u64,
}

impl Transport {
    fn new() -> Self {
        Self::with_tx(32 * 1024)
    }

    fn with_tx(tx: usize) -> Self {
        Self::with_manager(manager(tx))
    }

    fn with_manager(m: Manager<'static>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Transport {
            m,
            listener,
            socks: HashMap::new(),
            start: StdInstant::now(),
            frozen: None,
            accepted: 0,
        }
    }

    fn now(&self) -> depot_core::Instant {
        let ms = self
            .frozen
            .unwrap_or(self.start.elapsed().as_millis() as u64);
        depot_core::Instant::from_millis(ms)
    }

    fn turn(&mut self) {
        let now = self.now();
        while let Ok((sock, _)) = self.listener.accept() {
            sock.set_nonblocking(true).unwrap();
            sock.set_nodelay(true).unwrap();
            self.accepted += 1;
            let mut nonce = [0u8; 32];
            nonce[..8].copy_from_slice(&self.accepted.to_le_bytes());
            // A manager that is shutting down refuses: the socket closes.
            if let Ok(id) = self.m.accept(now, nonce, &[]) {
                self.socks.insert(id, sock);
            }
        }
        self.m.handle_timeout(now);
        let ids: Vec<ConnId> = self.socks.keys().copied().collect();
        for id in ids {
            let sock = self.socks.get_mut(&id).unwrap();
            let mut gone = false;
            loop {
                let space = self.m.rx_space(id);
                if space.is_empty() {
                    break;
                }
                match sock.read(space) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => self.m.handle_received(id, now, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            loop {
                let out = self.m.poll_transmit(id);
                if out.is_empty() {
                    break;
                }
                match sock.write(out) {
                    Ok(n) => self.m.handle_transmitted(id, now, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone || self.m.wants_close(id) {
                self.socks.remove(&id);
                self.m.handle_close(id, now);
            }
        }
        while self.m.poll_ready().is_some() {}
    }

    fn run_until_exit(&mut self, mut child: Child) -> std::process::Output {
        let deadline = StdInstant::now() + Duration::from_secs(60);
        loop {
            self.turn();
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            assert!(StdInstant::now() < deadline, "client did not finish");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn python_client(python: &str, port: u16) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/live_client.py");
    Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"))
}

fn check(python: &str) {
    let mut t = Transport::new();
    let port = t.listener.local_addr().unwrap().port();
    let out = t.run_until_exit(python_client(python, port));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok"),
        "{python}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{python}: {}", stdout.trim());
    // Every connection was closed and handed back.
    for _ in 0..100 {
        t.turn();
    }
    assert_eq!(t.m.connections(), 0);
}

#[test]
fn python3_client_against_the_manager() {
    check("python3");
}

#[test]
fn other_python_versions_against_the_manager() {
    let Ok(dir) = std::env::var("DEPOT_PYTHONS") else {
        eprintln!("DEPOT_PYTHONS not set: only python3 ran");
        return;
    };
    for v in ["3.9", "3.13", "3.14"] {
        check(&format!("{dir}/python{v}"));
    }
}

/// A depot client on the same port skips the Python greeting and shares the queue with a
/// Python producer: what Python puts, depot gets as CBOR, and the other way round.
#[test]
fn depot_and_python_share_a_queue() {
    let mut t = Transport::new();
    let port = t.listener.local_addr().unwrap().port();
    let producer = Command::new("python3")
        .args([
            "-c",
            &format!(
                "from multiprocessing.managers import BaseManager as B\n\
             B.register('jobs'); m = B(address=('127.0.0.1', {port}), authkey=b'secret')\n\
             m.connect(); q = m.jobs(); q.put((1, 'a')); assert q.get(timeout=5) == [b'z', None]\n"
            ),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The depot client, over its own socket, driven here too.
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_nonblocking(true).unwrap();
    let (rx, tx, slots) = (vec![0u8; 8192], vec![0u8; 8192], vec![RequestSlot::FREE; 4]);
    let mut c = Client::new(
        ClientConfig::default(),
        b"secret",
        [3; 32],
        t.now(),
        rx,
        tx,
        slots,
    );
    let mut pump = |t: &mut Transport, c: &mut Client<'static>| {
        t.turn();
        let out = c.poll_transmit().to_vec();
        sock.write_all(&out).unwrap();
        c.handle_transmitted(out.len());
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.read(&mut buf) {
            c.handle_input(&buf[..n]);
        }
    };
    let mut events = Vec::new();
    let deadline = StdInstant::now() + Duration::from_secs(30);
    let mut handle = None;
    let mut got = None;
    let mut sent_get = false;
    let mut sent_put = false;
    let mut put_done = false;
    while !put_done {
        assert!(StdInstant::now() < deadline, "stuck: {events:?}");
        pump(&mut t, &mut c);
        while let Some(e) = c.poll_event() {
            match e {
                Event::Connected => {
                    c.send(t.now(), Op::Open { name: "jobs" }).unwrap();
                }
                Event::Reply {
                    reply: Reply::Opened(info),
                    ..
                } => handle = Some(info.handle),
                Event::Reply {
                    reply: Reply::Item { item, .. },
                    ..
                } => got = Some(item.to_vec()),
                Event::Reply {
                    reply: Reply::Done, ..
                } => put_done = true,
                other => events.push(format!("{other:?}")),
            }
        }
        if let (Some(h), false) = (handle, sent_get) {
            c.send(
                t.now(),
                Op::Get {
                    handle: h,
                    wait: Wait::Forever,
                },
            )
            .unwrap();
            sent_get = true;
        }
        if let (Some(h), Some(_), false) = (handle, &got, sent_put) {
            // [b'z', None] in CBOR.
            let item = [0x82, 0x41, b'z', 0xf6];
            c.send(
                t.now(),
                Op::Put {
                    handle: h,
                    item: &item,
                    wait: Wait::NoWait,
                },
            )
            .unwrap();
            sent_put = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Python's (1, 'a'): a tuple-tagged array.
    assert_eq!(
        got.unwrap(),
        [0xda, 0x64, 0x70, 0x00, 0x01, 0x82, 0x01, 0x61, b'a']
    );
    let out = t.run_until_exit(producer);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An item whose Python reply cannot fit the connection's output is refused with
/// `ValueError`, and stays queued for a reader that can take it.
#[test]
fn an_item_too_large_for_the_output_stays_queued() {
    let mut t = Transport::with_tx(2048);
    let port = t.listener.local_addr().unwrap().port();
    let script = format!(
        "from multiprocessing.managers import BaseManager as B\n\
         B.register('jobs'); m = B(address=('127.0.0.1', {port}), authkey=b'secret')\n\
         m.connect(); q = m.jobs(); q.put(b'x' * 3000)\n\
         try:\n    q.get(timeout=1); raise SystemExit('must fail')\n\
         except ValueError:\n    pass\n\
         assert q.qsize() == 1\n\
         q.put('small')\n"
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = t.run_until_exit(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = t.m.stat(0).unwrap();
    assert_eq!(
        (jobs.len, jobs.total_got),
        (2, 0),
        "both items still queued"
    );
}

/// `put` on a full queue: `queue.Full` at once or after the timeout, and a blocked `put`
/// (parked in the manager, no thread) completes when a `get` makes room.
#[test]
fn full_queue_and_blocked_put() {
    let mut t = Transport::new();
    let port = t.listener.local_addr().unwrap().port();
    let script = format!(
        "import queue, threading, time\n\
         from multiprocessing.managers import BaseManager as B\n\
         B.register('small'); m = B(address=('127.0.0.1', {port}), authkey=b'secret')\n\
         m.connect(); q = m.small(); q.put(1); q.put(2)\n\
         assert q.full() and q.qsize() == 2\n\
         for call in (lambda: q.put_nowait(3), lambda: q.put(3, False), lambda: q.put(3, timeout=0.2)):\n\
         \x20   try:\n\
         \x20       call(); raise SystemExit('must be full')\n\
         \x20   except queue.Full:\n\
         \x20       pass\n\
         t = threading.Thread(target=lambda: q.put(3)); t.start(); time.sleep(0.3)\n\
         assert t.is_alive() and q.qsize() == 2\n\
         m2 = B(address=('127.0.0.1', {port}), authkey=b'secret'); m2.connect()\n\
         assert m2.small().get() == 1\n\
         t.join(5); assert not t.is_alive()\n\
         assert [q.get(), q.get()] == [2, 3]\n"
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = t.run_until_exit(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let small = t.m.stat(1).unwrap();
    assert_eq!((small.total_put, small.total_got, small.len), (3, 3, 0));
}

/// Python's `register('close')` then `m.close()`, the way scripts stop a standalone manager.
fn close_script(port: u16, then: &str) -> Command {
    let script = format!(
        "from multiprocessing.managers import BaseManager as B, RemoteError\n\
         B.register('close'); B.register('jobs')\n\
         m = B(address=('127.0.0.1', {port}), authkey=b'secret'); m.connect()\n\
         {then}\n"
    );
    let mut c = Command::new("python3");
    c.args(["-c", &script])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    c
}

/// With remote shutdown allowed, `m.close()` returns (its `incref`/`decref` on new
/// connections are answered) and the manager begins its shutdown once the grace has passed
/// on its own clock, here held still while the client runs.
#[test]
fn python_close_stops_the_manager_after_the_grace() {
    let config = ManagerConfig {
        allow_remote_shutdown: true,
        ..ManagerConfig::default()
    };
    let mut t = Transport::with_manager(manager_with(32 * 1024, config));
    t.frozen = Some(1000);
    let port = t.listener.local_addr().unwrap().port();
    let child = close_script(port, "m.close(); m.close(); print('closed')")
        .spawn()
        .unwrap();
    let out = t.run_until_exit(child);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "closed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.m.is_shutting_down(), "stopped before the grace");
    let grace = u64::from(depot_core::python::conn::STOP_GRACE_MS);
    t.frozen = Some(1000 + grace - 1);
    t.turn();
    assert!(!t.m.is_shutting_down(), "stopped before the grace");
    t.frozen = Some(1000 + grace);
    t.turn();
    assert!(t.m.is_shutting_down());
    for _ in 0..100 {
        t.turn();
    }
    assert_eq!(t.m.connections(), 0);
}

/// Without permission `m.close()` raises in the client and the manager serves on.
#[test]
fn python_close_refused_without_remote_shutdown() {
    let mut t = Transport::new();
    let port = t.listener.local_addr().unwrap().port();
    let then = "try:\n    m.close(); raise SystemExit('close must fail')\n\
                except RemoteError as e:\n    assert 'does not allow remote shutdown' in str(e), e\n\
                m.jobs().put('still serving')";
    let out = t.run_until_exit(close_script(port, then).spawn().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..1000 {
        t.turn();
    }
    assert!(!t.m.is_shutting_down());
    assert_eq!(t.m.stat(0).unwrap().len, 1);
}
