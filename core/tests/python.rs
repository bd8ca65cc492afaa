//! The Python machine against byte captures of real CPython clients (3.9, 3.11, 3.13, 3.14):
//! `tests/python/capture.py` recorded what unchanged `BaseManager` clients send to a manager
//! that challenges as depot does (fixed nonce, so their answers are reproducible). Each
//! recorded client frame is replayed; handshake replies must be the exact bytes the client
//! accepted, request replies the same Python values the recording manager (CPython's own
//! pickle) sent.

use depot_core::python::conn::{challenge_frame, PyConn, Step};
use depot_core::python::frame;
use depot_core::python::pickle::{self, ScratchBuf, Writer};
use depot_core::python::PyKey;
use depot_core::wire::{
    ErrorCode, Handle, ObjectInfo, ObjectKind, Op, QueueSize, QueueSpec, Reply, Wait,
};

const NONCE: [u8; 32] = {
    let mut n = [0; 32];
    let mut i = 0;
    while i < 32 {
        n[i] = i as u8;
        i += 1;
    }
    n
};

type Scratch = ScratchBuf<256, 64, 64>;

struct Frame {
    conn: u32,
    to_manager: bool,
    body: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn load(version: &str) -> Vec<Frame> {
    let path = format!(
        "{}/tests/python/capture-{version}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut parts = l.split(' ');
            let conn = parts.next().unwrap().parse().unwrap();
            let to_manager = parts.next().unwrap() == "C>S";
            let body = hex(parts.next().unwrap_or(""));
            Frame {
                conn,
                to_manager,
                body,
            }
        })
        .collect()
}

/// A pickle decoded and written back without memo or frames: equal values give equal bytes.
fn canonical(bytes: &[u8]) -> Vec<u8> {
    let mut s = Scratch::new();
    let mut scratch = s.scratch();
    let p = pickle::decode(bytes, &mut scratch).expect("a pickle");
    let mut out = vec![0; 4096];
    let mut w = Writer::new(&mut out);
    let mut budget = 10_000;
    pickle::write_node(&mut w, &p, p.root, 0, &mut budget).unwrap();
    let n = w.finish().unwrap();
    out.truncate(n);
    out
}

const INFO: ObjectInfo = ObjectInfo {
    handle: Handle(0),
    kind: ObjectKind::Queue,
    spec: QueueSpec {
        capacity: 8,
        max_item: 256,
    },
};

/// The reply a manager gives the operation the Python client asked for in the capture (whose
/// recording manager answered `get` with `queue.Empty` and `get_nowait` with 7).
fn expect_op(op: &Op) -> Reply<'static> {
    match *op {
        Op::Open { name } => {
            assert_eq!(name, "jobs");
            Reply::Opened(INFO)
        }
        Op::Size { handle } => {
            assert_eq!(handle, Handle(0));
            Reply::Size(QueueSize {
                len: 0,
                capacity: 8,
                full: false,
            })
        }
        Op::Put { handle, item, wait } => {
            assert_eq!(handle, Handle(0));
            assert_eq!(wait, Wait::Forever);
            let tuple = hex(concat!(
                "da64700001",             // tag 0x64700001
                "85",                     // array(5)
                "01",                     // 1
                "6161",                   // "a"
                "4178",                   // b"x"
                "82fb3ff8000000000000f6", // [1.5, None]
                "a1616bf5"                // {"k": True}
            ));
            let datetime = hex(concat!(
                "da64700002",               // tag 0x64700002
                "5826",                     // bytes(38)
                "8004",                     // PROTO 4
                "8c086461746574696d65",     // 'datetime'
                "8c086461746574696d65",     // 'datetime'
                "93",                       // STACK_GLOBAL
                "430a07e80506070809000000", // b'\x07\xe8\x05\x06\x07\x08\x09\x00\x00\x00'
                "85522e"                    // TUPLE1 REDUCE STOP
            ));
            assert!(
                item == [7] || item == tuple || item == datetime,
                "unexpected item {item:02x?}"
            );
            Reply::Done
        }
        Op::Get { handle, wait } => {
            assert_eq!(handle, Handle(0));
            match wait {
                Wait::Millis(500) => Reply::Error(ErrorCode::Timeout),
                Wait::NoWait => Reply::Item(&[7]),
                other => panic!("unexpected wait {other:?}"),
            }
        }
        other => panic!("unexpected op {other:?}"),
    }
}

fn replay(version: &str) {
    let frames = load(version);
    let key = PyKey::new(b"secret");
    let conns: Vec<u32> = {
        let mut c: Vec<u32> = frames.iter().map(|f| f.conn).collect();
        c.dedup();
        c
    };
    let mut failures = 0;
    let mut requests = 0;
    for conn in conns {
        let mut frames = frames.iter().filter(|f| f.conn == conn);
        let first = frames.next().unwrap();
        assert!(!first.to_manager);
        assert_eq!(
            first.body,
            challenge_frame(&NONCE)[4..],
            "depot's challenge"
        );
        let mut py = PyConn::new(NONCE);
        let mut pending: Option<&[u8]> = None;
        for f in frames {
            if !f.to_manager {
                let mine = pending.take().expect("the manager answered");
                if mine.first() == Some(&0x80) {
                    assert_eq!(canonical(mine), canonical(&f.body), "reply in conn {conn}");
                } else {
                    assert_eq!(mine, &f.body[..], "handshake reply in conn {conn}");
                }
                continue;
            }
            let mut s = Scratch::new();
            let mut scratch = s.scratch();
            let mut item = [0u8; 256];
            let mut out = vec![0u8; 1024];
            let step = py.handle_frame(&key, &f.body, &mut scratch, &mut item, &mut out);
            let (len, close) = match step {
                Step::Send { len, close } => (len, close),
                Step::Wait => continue,
                Step::Execute(op) => {
                    requests += 1;
                    let reply = expect_op(&op);
                    let mut s2 = Scratch::new();
                    match py.handle_reply(&reply, &mut s2.scratch(), &mut out) {
                        Step::Send { len, close } => (len, close),
                        other => panic!("{other:?}"),
                    }
                }
                Step::Close(why) => panic!("closed: {why:?}"),
            };
            let frame::Peek::Frame { header, body } = frame::peek(&out[..len], 1 << 20) else {
                panic!("not a frame");
            };
            assert_eq!(header + body, len);
            if out[header..len] == *b"#FAILURE#" {
                failures += 1;
                assert!(close);
            }
            pending = Some(Box::leak(out[header..len].to_vec().into_boxed_slice()));
        }
    }
    assert_eq!(failures, 1, "the wrong-key client is refused");
    // create, incref, decref, accept, 3 puts, 2 gets (the one-shot dummy is answered at once).
    assert!(requests >= 8, "{requests} requests");
}

#[test]
fn python_3_9_client() {
    replay("3.9");
}

#[test]
fn python_3_11_client() {
    replay("3.11");
}

#[test]
fn python_3_13_client() {
    replay("3.13");
}

#[test]
fn python_3_14_client() {
    replay("3.14");
}
