//! The client side of Python's protocol (`python::client`), in protocol terms: both handshake
//! generations against managers written here from Python's rules (HMACs by the `hmac` crate,
//! not by depot), every request against depot's own manager side (`PyConn`), and arbitrary
//! input, which never panics. Real CPython managers: depot-std's `python_manager` tests.

use depot_core::python::conn::{challenge_frame, PyConn, Step};
use depot_core::python::frame::{self, Peek};
use depot_core::python::pickle::ScratchBuf;
use depot_core::python::{PyClient, PyClientError, PyKey, PyReply, PyRequest, PyStep};
use depot_core::wire::{
    ErrorCode, Handle, ObjectInfo, ObjectKind, Op, QueueSize, QueueSpec, Reply, Wait,
};
use hmac::{Hmac, Mac};
use proptest::prelude::*;

const KEY: &[u8] = b"secret";
type Scratch = ScratchBuf<512, 128, 128>;

fn body(frame: &[u8]) -> &[u8] {
    match frame::peek(frame, 1 << 20) {
        Peek::Frame { header, body } => &frame[header..header + body],
        other => panic!("not one frame: {other:?}"),
    }
}

fn md5(message: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<md5::Md5>::new_from_slice(KEY).unwrap();
    m.update(message);
    m.finalize().into_bytes().to_vec()
}

fn sha256(message: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    m.update(message);
    m.finalize().into_bytes().to_vec()
}

/// Feeds `body` to `c`; returns the step with what it asked to send.
fn feed(c: &mut PyClient, body: &[u8]) -> Result<(PyStep<'static>, Vec<u8>), PyClientError> {
    let key = PyKey::new(KEY);
    let mut s = Scratch::new();
    let mut out = [0u8; 512];
    let mut scratch = s.scratch();
    let step = c.handle_frame(&key, body, &mut scratch, &mut [], &mut out)?;
    Ok(match step {
        PyStep::Send { len } => (PyStep::Send { len }, body_of(&out[..len])),
        PyStep::Connected { len } => (PyStep::Connected { len }, body_of(&out[..len])),
        PyStep::Reply(_) => panic!("a reply during the handshake"),
        other => panic!("a step the test does not know: {other:?}"),
    })
}

fn body_of(frame: &[u8]) -> Vec<u8> {
    body(frame).to_vec()
}

/// A 3.8–3.11 manager: a bare 20-byte challenge, raw HMAC-MD5 both ways.
#[test]
fn handshake_with_a_legacy_manager() {
    let random = [0x5a; 20];
    let mut challenge = b"#CHALLENGE#".to_vec();
    challenge.extend_from_slice(&random);
    let mut c = PyClient::new([9; 32]);
    assert_eq!(c.max_body(1 << 20), 256);
    let (_, answer) = feed(&mut c, &challenge).unwrap();
    assert_eq!(answer, md5(&random));
    let (_, ours) = feed(&mut c, b"#WELCOME#").unwrap();
    let message = ours.strip_prefix(b"#CHALLENGE#").unwrap();
    assert!(message.starts_with(b"{sha256}"));
    // Python 3.11 hashes whatever follows the tag with MD5.
    let (step, welcome) = feed(&mut c, &md5(message)).unwrap();
    assert!(matches!(step, PyStep::Connected { .. }));
    assert_eq!(welcome, b"#WELCOME#");
    assert!(c.is_ready() && !c.is_proxy());
    assert_eq!(c.max_body(1 << 20), 1 << 20);
}

/// A 3.12+ manager: `{sha256}` challenges, prefixed answers.
#[test]
fn handshake_with_a_modern_manager() {
    let mut message = b"{sha256}".to_vec();
    message.extend_from_slice(&[0x33; 40]);
    let mut challenge = b"#CHALLENGE#".to_vec();
    challenge.extend_from_slice(&message);
    let mut c = PyClient::new([9; 32]);
    let (_, answer) = feed(&mut c, &challenge).unwrap();
    let mut want = b"{sha256}".to_vec();
    want.extend_from_slice(&sha256(&message));
    assert_eq!(answer, want);
    let (_, ours) = feed(&mut c, b"#WELCOME#").unwrap();
    let theirs = ours.strip_prefix(b"#CHALLENGE#").unwrap();
    let mut reply = b"{sha256}".to_vec();
    reply.extend_from_slice(&sha256(theirs));
    let (step, _) = feed(&mut c, &reply).unwrap();
    assert!(matches!(step, PyStep::Connected { .. }));
}

#[test]
fn wrong_keys_fail_authentication_either_way() {
    let mut challenge = b"#CHALLENGE#".to_vec();
    challenge.extend_from_slice(&[1; 20]);
    // The manager refuses our answer.
    let mut c = PyClient::new([9; 32]);
    feed(&mut c, &challenge).unwrap();
    assert_eq!(feed(&mut c, b"#FAILURE#"), Err(PyClientError::AuthFailed));
    // The manager's answer to our challenge is wrong (another key, or a replay).
    let mut c = PyClient::new([9; 32]);
    feed(&mut c, &challenge).unwrap();
    feed(&mut c, b"#WELCOME#").unwrap();
    assert_eq!(feed(&mut c, &md5(b"other")), Err(PyClientError::AuthFailed));
    // Anything after a failure is refused.
    assert_eq!(feed(&mut c, b"#WELCOME#"), Err(PyClientError::Malformed));
    // Not a challenge, or a digest depot does not compute.
    let mut c = PyClient::new([9; 32]);
    assert_eq!(feed(&mut c, b"hello"), Err(PyClientError::Malformed));
    let mut c = PyClient::new([9; 32]);
    let mut sha3 = b"#CHALLENGE#{sha3_256}".to_vec();
    sha3.extend_from_slice(&[0; 40]);
    assert_eq!(feed(&mut c, &sha3), Err(PyClientError::UnsupportedDigest));
}

/// A [`PyClient`] and depot's own manager side, connected.
struct Pair {
    client: PyClient,
    manager: PyConn,
    key: PyKey,
}

impl Pair {
    fn new() -> Pair {
        let key = PyKey::new(KEY);
        let mut client = PyClient::new([4; 32]);
        let mut manager = PyConn::new([8; 32]);
        let mut to_client = challenge_frame(&[8; 32]).to_vec();
        loop {
            let mut s = Scratch::new();
            let mut sc = s.scratch();
            let mut out = [0u8; 512];
            let len = match client.handle_frame(&key, body(&to_client), &mut sc, &mut [], &mut out)
            {
                Ok(PyStep::Send { len }) => len,
                Ok(PyStep::Connected { len }) => {
                    let mut m_out = [0u8; 512];
                    let mut s = Scratch::new();
                    let mut sc = s.scratch();
                    let step =
                        manager.handle_frame(&key, body(&out[..len]), &mut sc, &mut [], &mut m_out);
                    assert_eq!(step, Step::Wait);
                    assert!(manager.is_authenticated());
                    break;
                }
                other => panic!("{other:?}"),
            };
            let mut m_out = [0u8; 512];
            let mut s = Scratch::new();
            match manager.handle_frame(
                &key,
                body(&out[..len]),
                &mut s.scratch(),
                &mut [],
                &mut m_out,
            ) {
                Step::Send { len, close: false } => to_client = m_out[..len].to_vec(),
                other => panic!("{other:?}"),
            }
        }
        Pair {
            client,
            manager,
            key,
        }
    }

    /// Sends `request`; the manager side asks for an op, which `answer` turns into a reply;
    /// returns the op (as text) and what the client makes of the reply (`item` filled for a
    /// get).
    fn call(
        &mut self,
        request: PyRequest<'_>,
        answer: impl FnOnce(&Op<'_>) -> Reply<'static>,
    ) -> (String, Result<PyReply<'static>, PyClientError>, Vec<u8>) {
        let mut s = Scratch::new();
        let mut out = vec![0u8; request.frame_bound()];
        let len = self
            .client
            .write_request(&request, &mut s.scratch(), &mut out)
            .unwrap();
        assert!(self.client.is_busy());
        let mut ms = Scratch::new();
        let mut msc = ms.scratch();
        let mut item_buf = [0u8; 256];
        let mut reply_out = [0u8; 512];
        let mut ms2 = Scratch::new();
        let (op_text, step) = match self.manager.handle_frame(
            &self.key,
            body(&out[..len]),
            &mut msc,
            &mut item_buf,
            &mut reply_out,
        ) {
            Step::Execute(op) => {
                let reply = answer(&op);
                let text = format!("{op:?}");
                let step = self
                    .manager
                    .handle_reply(&reply, &mut ms2.scratch(), &mut reply_out);
                (text, step)
            }
            other => (String::new(), other),
        };
        let Step::Send { len, .. } = step else {
            panic!("{step:?}");
        };
        let mut cs = Scratch::new();
        let mut got = [0u8; 256];
        let reply = self
            .client
            .handle_frame(
                &self.key,
                body(&reply_out[..len]),
                &mut cs.scratch(),
                &mut got,
                &mut [],
            )
            .map(|step| match step {
                PyStep::Reply(r) => owned(r),
                other => panic!("{other:?}"),
            });
        let item = match reply {
            Ok(PyReply::Item(n)) => got[..n].to_vec(),
            _ => Vec::new(),
        };
        (op_text, reply, item)
    }
}

/// The reply with borrowed text replaced (the tests compare shapes).
fn owned(r: PyReply<'_>) -> PyReply<'static> {
    match r {
        PyReply::Created { .. } => PyReply::Created { ident: "?" },
        PyReply::Raised { .. } => PyReply::Raised {
            module: "?",
            name: "?",
            message: None,
        },
        PyReply::Traceback(_) => PyReply::Traceback("?"),
        PyReply::Done => PyReply::Done,
        PyReply::Bool(v) => PyReply::Bool(v),
        PyReply::Int(v) => PyReply::Int(v),
        PyReply::Item(n) => PyReply::Item(n),
        PyReply::Empty => PyReply::Empty,
        PyReply::Full => PyReply::Full,
        PyReply::Timeout => PyReply::Timeout,
        PyReply::NoSuchObject => PyReply::NoSuchObject,
        PyReply::Unconvertible => PyReply::Unconvertible,
        other => panic!("a reply the test does not know: {other:?}"),
    }
}

const INFO: ObjectInfo = ObjectInfo {
    handle: Handle::from_raw(3),
    kind: ObjectKind::Queue,
    spec: QueueSpec {
        capacity: 8,
        max_item: 256,
        mode: depot_core::QueueMode::Value,
    },
};

#[test]
fn public_functions_then_the_connection_is_spent() {
    let mut p = Pair::new();
    let (op, reply, _) = p.call(PyRequest::Create { typeid: "jobs" }, |_| {
        Reply::Opened(INFO)
    });
    assert_eq!(op, r#"Open { name: "jobs" }"#);
    assert_eq!(reply, Ok(PyReply::Created { ident: "?" }));
    // One request per public-function connection.
    assert!(!p.client.is_ready());
    let mut s = Scratch::new();
    let mut out = [0u8; 256];
    assert_eq!(
        p.client.write_request(
            &PyRequest::Decref { ident: "dq3" },
            &mut s.scratch(),
            &mut out
        ),
        Err(PyClientError::NotReady)
    );

    let mut p = Pair::new();
    let (_, reply, _) = p.call(PyRequest::Create { typeid: "nope" }, |_| {
        Reply::Error(ErrorCode::NoSuchObject)
    });
    assert_eq!(reply, Ok(PyReply::NoSuchObject));
    let mut p = Pair::new();
    let (op, reply, _) = p.call(PyRequest::Incref { ident: "dq3" }, |_| {
        Reply::Size(QueueSize {
            len: 0,
            capacity: 8,
            full: false,
        })
    });
    assert_eq!(op, "Size { handle: Handle(3) }");
    assert_eq!(reply, Ok(PyReply::Done));
}

fn proxy() -> Pair {
    let mut p = Pair::new();
    // Method calls need a proxy connection.
    let mut s = Scratch::new();
    let mut out = [0u8; 256];
    assert_eq!(
        p.client.write_request(
            &PyRequest::Qsize { ident: "dq3" },
            &mut s.scratch(),
            &mut out
        ),
        Err(PyClientError::NotReady)
    );
    let (op, reply, _) = p.call(PyRequest::AcceptConnection { name: "t" }, |_| {
        unreachable!("answered by the connection itself")
    });
    assert_eq!(op, "");
    assert_eq!(reply, Ok(PyReply::Done));
    assert!(p.client.is_proxy() && p.client.is_ready());
    p
}

/// Items cross as depot values: the manager side stores exactly the CBOR the client put, and
/// the client gets back exactly the CBOR stored.
#[test]
fn queue_calls_round_trip_items_and_errors() {
    let mut p = proxy();
    let ident = "dq3";
    // [1, "two", {"k": -3.5}, h'00ff', (true, null)]
    let item: &[u8] = &[
        0x85, 0x01, 0x63, b't', b'w', b'o', 0xa1, 0x61, b'k', 0xfb, 0xc0, 0x0c, 0, 0, 0, 0, 0, 0,
        0x42, 0x00, 0xff, 0xda, 0x64, 0x70, 0x00, 0x01, 0x82, 0xf5, 0xf6,
    ];
    let mut stored = Vec::new();
    let (op, reply, _) = p.call(
        PyRequest::Put {
            ident,
            item,
            wait: Wait::Forever,
        },
        |op| {
            let Op::Put { item, wait, .. } = op else {
                panic!("{op:?}")
            };
            assert_eq!(*wait, Wait::Forever);
            stored = item.to_vec();
            Reply::Done
        },
    );
    assert!(op.starts_with("Put"), "{op}");
    assert_eq!(reply, Ok(PyReply::Done));
    assert_eq!(stored, item);

    let (op, reply, got) = p.call(
        PyRequest::Get {
            ident,
            wait: Wait::Millis(1500),
        },
        |_| Reply::Item {
            handle: Handle::from_raw(3),
            item,
        },
    );
    assert_eq!(op, "Get { handle: Handle(3), wait: Millis(1500) }");
    assert_eq!(reply, Ok(PyReply::Item(item.len())));
    assert_eq!(got, item);

    let empty = |_: &Op<'_>| Reply::Error(ErrorCode::Empty);
    let get = |wait| PyRequest::Get { ident, wait };
    let (op, reply, _) = p.call(get(Wait::NoWait), empty);
    assert_eq!(op, "Get { handle: Handle(3), wait: NoWait }");
    assert_eq!(reply, Ok(PyReply::Empty));
    let (_, reply, _) = p.call(get(Wait::Millis(5)), |_| Reply::Error(ErrorCode::Timeout));
    assert_eq!(reply, Ok(PyReply::Timeout));
    let put = |wait| PyRequest::Put {
        ident,
        item: &[0x01],
        wait,
    };
    let (_, reply, _) = p.call(put(Wait::NoWait), |_| Reply::Error(ErrorCode::Full));
    assert_eq!(reply, Ok(PyReply::Full));
    let (_, reply, _) = p.call(put(Wait::Millis(5)), |_| Reply::Error(ErrorCode::Timeout));
    assert_eq!(reply, Ok(PyReply::Timeout));

    let size = |_: &Op<'_>| {
        Reply::Size(QueueSize {
            len: 8,
            capacity: 8,
            full: true,
        })
    };
    assert_eq!(
        p.call(PyRequest::Qsize { ident }, size).1,
        Ok(PyReply::Int(8))
    );
    assert_eq!(
        p.call(PyRequest::Empty { ident }, size).1,
        Ok(PyReply::Bool(false))
    );
    assert_eq!(
        p.call(PyRequest::Full { ident }, size).1,
        Ok(PyReply::Bool(true))
    );
    let (op, reply, _) = p.call(PyRequest::TaskDone { ident }, |_| {
        Reply::Error(ErrorCode::TaskDoneTooMany)
    });
    assert_eq!(op, "TaskDone { handle: Handle(3) }");
    assert!(matches!(reply, Ok(PyReply::Raised { .. })));
    let (op, reply, _) = p.call(PyRequest::Join { ident }, |_| Reply::Done);
    assert_eq!(op, "Join { handle: Handle(3), wait: Forever }");
    assert_eq!(reply, Ok(PyReply::Done));
    // An unknown ident: Python's KeyError traceback.
    let (_, reply, _) = p.call(PyRequest::Qsize { ident: "zz" }, |_| unreachable!());
    assert_eq!(reply, Ok(PyReply::NoSuchObject));
    assert!(p.client.is_ready());
}

#[test]
fn a_reply_that_does_not_fit_keeps_the_call() {
    let mut p = proxy();
    let mut s = Scratch::new();
    let mut out = [0u8; 256];
    let len = p
        .client
        .write_request(
            &PyRequest::Get {
                ident: "dq3",
                wait: Wait::NoWait,
            },
            &mut s.scratch(),
            &mut out,
        )
        .unwrap();
    assert!(len > 0);
    // ('#RETURN', 'a text of 20 bytes..')
    let mut reply = vec![0x80, 4, 0x8c, 7];
    reply.extend_from_slice(b"#RETURN");
    reply.extend_from_slice(&[0x8c, 20]);
    reply.extend_from_slice(&[b'a'; 20]);
    reply.extend_from_slice(&[0x86, b'.']);
    let key = PyKey::new(KEY);
    let mut tiny = ScratchBuf::<2, 2, 2>::new();
    let mut big = [0u8; 64];
    assert_eq!(
        p.client
            .handle_frame(&key, &reply, &mut tiny.scratch(), &mut big, &mut []),
        Err(PyClientError::NoScratch)
    );
    assert!(p.client.is_busy());
    let mut small = [0u8; 8];
    assert_eq!(
        p.client
            .handle_frame(&key, &reply, &mut s.scratch(), &mut small, &mut []),
        Err(PyClientError::ItemTooLarge)
    );
    assert_eq!(
        p.client
            .handle_frame(&key, &reply, &mut s.scratch(), &mut big, &mut []),
        Ok(PyStep::Reply(PyReply::Item(21)))
    );
    assert_eq!(big[0], 0x74);
    // An item nested deeper than depot converts: reported, and the connection goes on.
    let get = PyRequest::Get {
        ident: "dq3",
        wait: Wait::NoWait,
    };
    p.client
        .write_request(&get, &mut s.scratch(), &mut out)
        .unwrap();
    let mut deep = vec![0x80, 4, 0x8c, 7];
    deep.extend_from_slice(b"#RETURN");
    deep.extend_from_slice(&b"](".repeat(39));
    deep.push(b']');
    deep.extend_from_slice(&[b'e'; 39]);
    deep.extend_from_slice(&[0x86, b'.']);
    assert_eq!(
        p.client
            .handle_frame(&key, &deep, &mut s.scratch(), &mut big, &mut []),
        Ok(PyStep::Reply(PyReply::Unconvertible))
    );
    assert!(p.client.is_ready());
    // Nothing is pushed unasked.
    assert_eq!(
        p.client
            .handle_frame(&key, &reply, &mut s.scratch(), &mut big, &mut []),
        Err(PyClientError::Malformed)
    );
}

proptest! {
    /// Arbitrary frames, in every state the client can be in, never panic, and an error
    /// always ends the connection (or, when more room is asked for, keeps the call).
    #[test]
    fn client_never_panics(
        state in 0..4u8,
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let key = PyKey::new(KEY);
        let p = if state >= 2 { proxy() } else { Pair::new() };
        let mut c = match state {
            0 => PyClient::new([1; 32]),
            _ => p.client.clone(),
        };
        let mut s = Scratch::new();
        let mut out = [0u8; 256];
        if state == 3 {
            let request = PyRequest::Get { ident: "dq3", wait: Wait::NoWait };
            c.write_request(&request, &mut s.scratch(), &mut out).unwrap();
        }
        let mut frames = frames;
        // Mutated real replies too: a `#RETURN` of a list, bytes flipped.
        let mut real = vec![0x80, 4, 0x8c, 7];
        real.extend_from_slice(b"#RETURN");
        real.extend_from_slice(&[b']', b'(', b'K', 1, 0x8c, 1, b'x', b'e', 0x86, b'.']);
        for (at, b) in flips {
            let n = real.len();
            real[at % n] ^= b;
        }
        frames.insert(0, real);
        for f in &frames {
            let mut item = [0u8; 128];
            match c.handle_frame(&key, f, &mut s.scratch(), &mut item, &mut out) {
                Ok(_) | Err(PyClientError::ItemTooLarge | PyClientError::NoScratch) => {}
                Err(_) => prop_assert!(!c.is_ready() && !c.is_busy()),
            }
        }
        let _ = p.client.is_ready();
    }

    /// Every request fits the bound it states, whatever its item and ident.
    #[test]
    fn requests_fit_their_bound(
        item in proptest::collection::vec(any::<u8>(), 0..200),
        ident in "\\PC{0,300}",
        wait in prop_oneof![Just(Wait::NoWait), Just(Wait::Forever), any::<u32>().prop_map(Wait::Millis)],
    ) {
        let mut s = Scratch::new();
        for request in [
            PyRequest::Put { ident: &ident, item: &item, wait },
            PyRequest::Get { ident: &ident, wait },
            PyRequest::Join { ident: &ident },
        ] {
            let mut p = proxy();
            let mut out = vec![0u8; request.frame_bound()];
            prop_assert!(p.client.write_request(&request, &mut s.scratch(), &mut out).is_ok());
        }
        let mut p = Pair::new();
        let request = PyRequest::Create { typeid: &ident };
        let mut out = vec![0u8; request.frame_bound()];
        prop_assert!(p.client.write_request(&request, &mut s.scratch(), &mut out).is_ok());
    }
}
