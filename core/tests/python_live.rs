//! Real CPython `BaseManager` clients over real sockets against the Python machine, served by
//! a small thread-per-connection server over one in-memory queue (the manager's registry and
//! queues stand in). `python3` always runs; set `DEPOT_PYTHONS` to a directory of `python3.X`
//! launchers (`tools/extra-pythons DIR`) to run those versions too.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use depot_core::python::conn::{challenge_frame, PyConn, Step};
use depot_core::python::frame::{self, Peek};
use depot_core::python::pickle::ScratchBuf;
use depot_core::python::PyKey;
use depot_core::wire::{
    ErrorCode, Handle, ManagerStatus, ObjectInfo, ObjectKind, Op, QueueSize, QueueSpec, Reply, Wait,
};

const CAPACITY: usize = 64;

#[derive(Default)]
struct Store {
    items: Mutex<(VecDeque<Vec<u8>>, u32)>,
    changed: Condvar,
}

/// Runs `op` as a manager would; a blocked `get` waits here, and its reply is encoded after.
fn execute(store: &Store, op: Op<'_>, item: &mut Vec<u8>) -> Result<Reply<'static>, ErrorCode> {
    let info = ObjectInfo {
        handle: Handle::from_raw(0),
        kind: ObjectKind::Queue,
        spec: QueueSpec {
            capacity: CAPACITY as u32,
            max_item: 4096,
            mode: depot_core::QueueMode::Value,
        },
    };
    let mut guard = store.items.lock().unwrap();
    Ok(match op {
        Op::Open { name: "jobs" } => Reply::Opened(info),
        Op::Open { .. } => return Err(ErrorCode::NoSuchObject),
        Op::Size { handle } if handle == Handle::from_raw(0) => Reply::Size(QueueSize {
            len: guard.0.len() as u32,
            capacity: CAPACITY as u32,
            full: guard.0.len() >= CAPACITY,
        }),
        Op::Put { item, .. } => {
            guard.0.push_back(item.to_vec());
            guard.1 += 1;
            store.changed.notify_all();
            Reply::Done
        }
        Op::Get { wait, .. } => {
            let deadline = match wait {
                Wait::NoWait => Some(Instant::now()),
                Wait::Millis(ms) => Some(Instant::now() + Duration::from_millis(ms.into())),
                Wait::Forever => None,
            };
            loop {
                if let Some(front) = guard.0.pop_front() {
                    *item = front;
                    return Ok(Reply::Done);
                }
                let left = match deadline {
                    Some(d) if d <= Instant::now() => {
                        return Err(if wait == Wait::NoWait {
                            ErrorCode::Empty
                        } else {
                            ErrorCode::Timeout
                        })
                    }
                    Some(d) => d - Instant::now(),
                    None => Duration::from_secs(3600),
                };
                guard = store.changed.wait_timeout(guard, left).unwrap().0;
            }
        }
        Op::TaskDone { .. } => {
            if guard.1 == 0 {
                return Err(ErrorCode::TaskDoneTooMany);
            }
            guard.1 -= 1;
            Reply::Done
        }
        Op::Join { .. } => Reply::Done,
        Op::Status => Reply::Status(ManagerStatus {
            connections: 1,
            max_connections: 1,
            objects: 1,
            waiters: 0,
        }),
        _ => return Err(ErrorCode::NotAllowed),
    })
}

fn serve(mut sock: TcpStream, store: Arc<Store>, nonce: [u8; 32]) {
    sock.set_nodelay(true).unwrap();
    let key = PyKey::new(b"secret");
    sock.write_all(&challenge_frame(&nonce)).unwrap();
    let mut py = PyConn::new(nonce);
    let mut rx = Vec::new();
    let mut out = vec![0u8; 1 << 16];
    let mut scratch = ScratchBuf::<512, 128, 128>::new();
    let mut item = vec![0u8; 4096];
    let mut buf = [0u8; 4096];
    loop {
        let (header, body) = match frame::peek(&rx, py.max_body(1 << 16)) {
            Peek::Frame { header, body } => (header, body),
            Peek::Partial => match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    rx.extend_from_slice(&buf[..n]);
                    continue;
                }
            },
            other => panic!("bad frame from a Python client: {other:?}"),
        };
        let frame_bytes: Vec<u8> = rx.drain(..header + body).skip(header).collect();
        let mut s = scratch.scratch();
        let step = py.handle_frame(&key, &frame_bytes, &mut s, &mut item, &mut out);
        let step = match step {
            Step::Execute(op) => {
                let mut got = Vec::new();
                let is_get = matches!(op, Op::Get { .. });
                let result = execute(&store, op, &mut got);
                let reply = match (result, is_get) {
                    (Ok(_), true) => Reply::Item {
                        handle: Handle::from_raw(0),
                        item: &got,
                    },
                    (Ok(r), false) => r,
                    (Err(code), _) => Reply::Error(code),
                };
                py.handle_reply(&reply, &mut scratch.scratch(), &mut out)
            }
            other => other,
        };
        match step {
            Step::Send { len, close } => {
                sock.write_all(&out[..len]).unwrap();
                if close {
                    return;
                }
            }
            Step::Wait => {}
            Step::Close(_) => return,
            other => unreachable!("handled above: {other:?}"),
        }
    }
}

fn run_client(python: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Store::default());
    std::thread::spawn(move || {
        for (n, sock) in listener.incoming().enumerate() {
            let store = store.clone();
            let mut nonce = [0u8; 32];
            nonce[..8].copy_from_slice(&(n as u64).to_le_bytes());
            std::thread::spawn(move || serve(sock.unwrap(), store, nonce));
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/live_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok"),
        "{python}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{python}: {}", stdout.trim());
}

#[test]
fn python3_client_round_trips_every_value() {
    run_client("python3");
}

#[test]
fn other_python_versions() {
    let Ok(dir) = std::env::var("DEPOT_PYTHONS") else {
        eprintln!("DEPOT_PYTHONS not set: only python3 ran");
        return;
    };
    for v in ["3.9", "3.13", "3.14"] {
        run_client(&format!("{dir}/python{v}"));
    }
}
