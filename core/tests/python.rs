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
    handle: Handle::from_raw(0),
    kind: ObjectKind::Queue,
    spec: QueueSpec {
        capacity: 8,
        max_item: 256,
        mode: depot_core::QueueMode::Value,
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
            assert_eq!(handle, Handle::from_raw(0));
            Reply::Size(QueueSize {
                len: 0,
                capacity: 8,
                full: false,
            })
        }
        Op::Put { handle, item, wait } => {
            assert_eq!(handle, Handle::from_raw(0));
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
            assert_eq!(handle, Handle::from_raw(0));
            match wait {
                Wait::Millis(500) => Reply::Error(ErrorCode::Timeout),
                Wait::NoWait => Reply::Item {
                    handle: Handle::from_raw(0),
                    item: &[7],
                },
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
                Step::Stop => panic!("the capture asks for no stop"),
                other => panic!("a step the test does not know: {other:?}"),
            };
            let frame::Peek::Frame { header, body } = frame::peek(&out[..len], 1 << 20) else {
                panic!("not a frame");
            };
            assert_eq!(header + body, len);
            if out[header..len] == *b"#FAILURE#" {
                failures += 1;
                assert!(close);
                assert!(!py.is_authenticated());
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

mod decoder {
    use super::*;
    use depot_core::python::item::{self, ItemError, PICKLE_TAG};
    use depot_core::python::pickle::PickleError;
    use proptest::prelude::*;

    fn decode_err(bytes: &[u8]) -> PickleError {
        let mut s = ScratchBuf::<64, 16, 16>::new();
        let mut scratch = s.scratch();
        pickle::decode(bytes, &mut scratch).err().expect("refused")
    }

    fn cbor_of(bytes: &[u8]) -> Result<Vec<u8>, ItemError> {
        let mut s = Scratch::new();
        let mut scratch = s.scratch();
        let p = pickle::decode(bytes, &mut scratch).expect("decodes");
        let mut out = vec![0; 4096];
        let n = item::to_cbor(&p, p.root, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    #[test]
    fn bounded_by_its_storage() {
        // Sixty-five empty lists need more nodes than 64.
        let mut many = vec![0x80, 4, b'('];
        many.extend_from_slice(&[b']'; 65]);
        many.extend_from_slice(b"l.");
        assert_eq!(decode_err(&many), PickleError::StackFull);
        let mut deep = vec![0x80, 4];
        deep.extend_from_slice(&[b'('; 17]);
        assert_eq!(decode_err(&deep), PickleError::StackFull);
        assert_eq!(decode_err(b"N\x72\xff\xff\xff\xff."), PickleError::MemoFull);
        assert_eq!(decode_err(b"h\x00."), PickleError::BadMemo);
        assert_eq!(decode_err(b"N.N"), PickleError::TrailingBytes);
        assert_eq!(decode_err(b"NN."), PickleError::Malformed);
        assert_eq!(decode_err(b"\x8c\x05ab"), PickleError::Truncated);
        assert_eq!(decode_err(b"("), PickleError::Truncated);
        assert_eq!(decode_err(b"(."), PickleError::Malformed);
        assert_eq!(decode_err(b"I1\n."), PickleError::UnsupportedOpcode(b'I'));
        assert_eq!(decode_err(b"P1\n."), PickleError::UnsupportedOpcode(b'P'));
    }

    #[test]
    fn never_runs_what_it_reads() {
        // `os.system('x')` as a pickle: kept as an inert tree, stored opaque, written back.
        let evil = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x01x\x85R.";
        let cbor = cbor_of(evil).unwrap();
        assert_eq!(&cbor[..5], &[0xda, 0x64, 0x70, 0x00, 0x02]);
        assert!(cbor.ends_with(evil), "the pickle is stored as it was");
    }

    #[test]
    fn self_reference_and_sharing_are_bounded() {
        // l = []; l.append(l)
        let cyclic = b"\x80\x04]\x94h\x00a.";
        assert_eq!(cbor_of(cyclic), Err(ItemError::TooComplex));
        // x = []; then x = [x, x] forty times: 2**40 leaves if walked naively.
        let mut dag = b"\x80\x04]\x940".to_vec();
        for k in 0..40u8 {
            dag.extend_from_slice(&[b'h', k, b'h', k, 0x86, 0x94, b'0']);
        }
        dag.extend_from_slice(b"h\x28.");
        let mut s = ScratchBuf::<256, 16, 64>::new();
        let mut scratch = s.scratch();
        let p = pickle::decode(&dag, &mut scratch).unwrap();
        let mut out = vec![0; 1 << 16];
        assert!(item::to_cbor(&p, p.root, &mut out).is_err());
    }

    #[test]
    fn depot_items_reach_python() {
        let to_pickle = |cbor: &[u8]| {
            let mut out = vec![0; item::pickle_bound(cbor.len())];
            let mut w = Writer::new(&mut out);
            let mut s = Scratch::new();
            item::to_pickle(cbor, &mut w, &mut s.scratch());
            let n = w.finish().expect("within the bound");
            out.truncate(n);
            out
        };
        // A half float, an indefinite text, an unknown tag, undefined.
        assert_eq!(to_pickle(&[0xf9, 0x3e, 0x00]), hex("473ff8000000000000"));
        assert_eq!(to_pickle(&hex("7f616161626163ff")), hex("8c03616263"));
        assert_eq!(to_pickle(&hex("c11a5f5e1000")), hex("4a00105e5f"));
        assert_eq!(to_pickle(&[0xf7]), b"N");
        // Not CBOR (or not one value): the raw bytes.
        assert_eq!(to_pickle(&[0xff]), hex("4301ff"));
        assert_eq!(to_pickle(&[0x01, 0x02]), hex("43020102"));
        // A stored pickle that does not decode comes back as bytes, whole.
        let mut bad = vec![0xda, 0x64, 0x70, 0x00, 0x02, 0x42];
        bad.extend_from_slice(b"\x80\x04");
        assert_eq!(to_pickle(&bad), hex("43028004"));
        assert_eq!(PICKLE_TAG, 0x6470_0002);
    }

    /// Python-like values as a pickle writer would write them.
    #[derive(Debug, Clone)]
    enum V {
        None,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Bytes(Vec<u8>),
        List(Vec<V>),
        Tuple(Vec<V>),
        Dict(Vec<(V, V)>),
    }

    fn scalar() -> impl Strategy<Value = V> {
        prop_oneof![
            Just(V::None),
            any::<bool>().prop_map(V::Bool),
            any::<i64>().prop_map(V::Int),
            any::<f64>().prop_map(V::Float),
            ".{0,8}".prop_map(V::Str),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(V::Bytes),
        ]
    }

    fn value() -> impl Strategy<Value = V> {
        scalar().prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(V::List),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(V::Tuple),
                proptest::collection::vec((scalar(), inner), 0..4).prop_map(V::Dict),
            ]
        })
    }

    fn write(w: &mut Writer<'_>, v: &V) {
        match v {
            V::None => {
                w.none();
            }
            V::Bool(b) => {
                w.bool(*b);
            }
            V::Int(i) => {
                w.int((*i).into());
            }
            V::Float(f) => {
                w.float(*f);
            }
            V::Str(s) => {
                w.str(s.as_bytes());
            }
            V::Bytes(b) => {
                w.bytes(b);
            }
            V::List(items) => {
                w.empty_list().mark();
                items.iter().for_each(|i| write(w, i));
                w.appends();
            }
            V::Tuple(items) => {
                w.mark();
                items.iter().for_each(|i| write(w, i));
                w.tuple_from_mark();
            }
            V::Dict(pairs) => {
                w.empty_dict().mark();
                for (k, v) in pairs {
                    write(w, k);
                    write(w, v);
                }
                w.setitems();
            }
        }
    }

    fn pickled(v: &V) -> Vec<u8> {
        let mut out = vec![0; 1 << 16];
        let mut w = Writer::new(&mut out);
        w.proto();
        write(&mut w, v);
        w.stop();
        let n = w.finish().unwrap();
        out.truncate(n);
        out
    }

    proptest! {
        #[test]
        fn values_survive_python_to_depot_to_python(v in value()) {
            let original = pickled(&v);
            let cbor = cbor_of(&original).unwrap();
            prop_assert!(!cbor.starts_with(&[0xda, 0x64, 0x70, 0, 2]), "mapped, not opaque");
            let mut out = vec![0; item::pickle_bound(cbor.len()) + 3];
            let mut w = Writer::new(&mut out);
            w.proto();
            let mut s = Scratch::new();
            item::to_pickle(&cbor, &mut w, &mut s.scratch());
            w.stop();
            let n = w.finish().expect("within pickle_bound");
            prop_assert_eq!(canonical(&out[..n]), canonical(&original));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut s = ScratchBuf::<32, 8, 8>::new();
            let mut scratch = s.scratch();
            if let Ok(p) = pickle::decode(&bytes, &mut scratch) {
                let mut out = [0u8; 512];
                let _ = item::to_cbor(&p, p.root, &mut out);
            }
        }

        #[test]
        fn any_item_fits_pickle_bound(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = vec![0; item::pickle_bound(bytes.len())];
            let mut w = Writer::new(&mut out);
            let mut s = ScratchBuf::<32, 8, 8>::new();
            item::to_pickle(&bytes, &mut w, &mut s.scratch());
            prop_assert!(w.finish().is_ok());
        }

        #[test]
        fn machine_never_panics(frames in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..6)) {
            let key = PyKey::new(b"secret");
            let mut py = PyConn::new(NONCE);
            for body in &frames {
                let mut s = ScratchBuf::<32, 8, 8>::new();
                let mut scratch = s.scratch();
                let mut item = [0u8; 64];
                let mut out = [0u8; 600];
                if let Step::Execute(_) =
                    py.handle_frame(&key, body, &mut scratch, &mut item, &mut out)
                {
                    let mut s = ScratchBuf::<32, 8, 8>::new();
                    let item = Reply::Item { handle: Handle::from_raw(0), item: body };
                    let _ = py.handle_reply(&item, &mut s.scratch(), &mut out);
                }
            }
        }
    }
}

/// The other public functions, as CPython 3.11's `ForkingPickler` writes them; every reply is
/// checked by CPython's own `pickle.loads`.
mod public_functions {
    use super::*;
    use depot_core::wire::ManagerStatus;
    use std::process::Command;

    /// A Python connection taken through the handshake (as a 3.11 client does it).
    fn ready() -> PyConn {
        let frames = load("3.11");
        let key = PyKey::new(b"secret");
        let mut py = PyConn::new(NONCE);
        for f in frames
            .iter()
            .filter(|f| f.conn == 1 && f.to_manager)
            .take(3)
        {
            let mut s = Scratch::new();
            let mut out = [0u8; 512];
            py.handle_frame(&key, &f.body, &mut s.scratch(), &mut [], &mut out);
        }
        assert!(py.is_authenticated());
        py
    }

    /// Runs one request; returns the op asked for (if any) and the reply body.
    fn call(request: &str, reply: Option<Reply>) -> (Option<String>, Vec<u8>) {
        let key = PyKey::new(b"secret");
        let mut py = ready();
        let body = hex(request);
        let mut s = Scratch::new();
        let mut scratch = s.scratch();
        let mut out = vec![0u8; 1024];
        let mut op = None;
        let step = match py.handle_frame(&key, &body, &mut scratch, &mut [], &mut out) {
            Step::Execute(o) => {
                op = Some(format!("{o:?}"));
                let mut s = Scratch::new();
                py.handle_reply(&reply.expect("a reply"), &mut s.scratch(), &mut out)
            }
            other => other,
        };
        let Step::Send { len, close: true } = step else {
            panic!("one reply, then close: {step:?}");
        };
        (op, out[4..len].to_vec())
    }

    /// `repr()` of the pickle as CPython loads it.
    fn python_repr(pickle: &[u8]) -> String {
        let out = Command::new("python3")
            .args([
                "-c",
                "import pickle,sys; print(repr(pickle.loads(bytes.fromhex(sys.argv[1]))))",
            ])
            .arg(
                pickle
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    const STATUS: Reply = Reply::Status(ManagerStatus {
        connections: 3,
        max_connections: 16,
        objects: 2,
        waiters: 1,
    });

    #[test]
    fn get_methods_reads_the_token() {
        let (op, reply) = call(
            "8004955f00000000000000284e8c0b6765745f6d6574686f6473948c186d756c746970726f63657373696e672e6d616e6167657273948c05546f6b656e9493942981948c046a6f6273948c093132372e302e302e31944b0186948c036471309487946285947d9474942e",
            Some(Reply::Size(QueueSize { len: 0, capacity: 8, full: false })),
        );
        assert_eq!(op.unwrap(), "Size { handle: Handle(0) }");
        assert_eq!(
            python_repr(&reply),
            "('#RETURN', ('empty', 'full', 'get', 'get_nowait', 'join', 'put', 'put_nowait', 'qsize', 'task_done'))"
        );
    }

    #[test]
    fn status_functions() {
        let (op, reply) = call(
            "8004951c00000000000000284e8c116e756d6265725f6f665f6f626a6563747394297d9474942e",
            Some(STATUS),
        );
        assert_eq!(op.unwrap(), "Status");
        assert_eq!(python_repr(&reply), "('#RETURN', 2)");
        let (_, reply) = call(
            "8004951500000000000000284e8c0a64656275675f696e666f94297d9474942e",
            Some(STATUS),
        );
        assert_eq!(
            python_repr(&reply),
            "('#RETURN', 'objects: 2\\nconnections: 3\\nmax_connections: 16\\nblocked requests: 1\\n')"
        );
    }

    #[test]
    fn shutdown_and_failures_are_tracebacks() {
        let shutdown = "8004951300000000000000284e8c0873687574646f776e94297d9474942e";
        let (op, reply) = call(shutdown, Some(Reply::Done));
        assert_eq!(op.unwrap(), "Shutdown");
        assert_eq!(python_repr(&reply), "('#RETURN', None)");
        let (_, reply) = call(shutdown, Some(Reply::Error(ErrorCode::NotAllowed)));
        assert!(python_repr(&reply).starts_with("('#TRACEBACK', 'Traceback"));
        // An unknown function and an ident depot never handed out.
        for request in [
            "8004951000000000000000284e8c05626f67757394297d9474942e",
            "8004951900000000000000284e8c06696e63726566948c04376630309485947d9474942e",
        ] {
            let (op, reply) = call(request, None);
            assert_eq!(op, None);
            assert!(python_repr(&reply).starts_with("('#TRACEBACK', 'Traceback"));
        }
    }
}
