//! Arbitrary bytes into depot's Python side: the pickle decoder and item conversions, and the
//! per-connection machine as a byte stream, from its first frame or after a valid handshake.
#![no_main]

use depot_core::auth::hmac_sha256;
use depot_core::python::conn::{challenge_frame, item_reply_bound, PyConn, Step};
use depot_core::python::frame::{self, Peek};
use depot_core::python::item;
use depot_core::python::pickle::{self, ScratchBuf, Writer};
use depot_core::python::PyKey;
use depot_core::wire::{ErrorCode, QueueSize, Reply};
use depot_fuzz::KEY;
use libfuzzer_sys::fuzz_target;

const NONCE: [u8; 32] = [0x4D; 32];

type Scratch = ScratchBuf<64, 16, 16>;

fn items(data: &[u8]) {
    let mut s = Scratch::new();
    let mut scratch = s.scratch();
    if let Ok(p) = pickle::decode(data, &mut scratch) {
        let mut cbor = [0u8; 1024];
        if let Ok(n) = item::to_cbor(&p, p.root, &mut cbor) {
            back(&cbor[..n]);
        }
    }
    back(data);
}

/// CBOR to pickle always fits the bound the manager reserves.
fn back(cbor: &[u8]) {
    let mut out = vec![0; item::pickle_bound(cbor.len())];
    let mut w = Writer::new(&mut out);
    let mut s = Scratch::new();
    item::to_pickle(cbor, &mut w, &mut s.scratch());
    assert!(w.finish().is_ok(), "pickle_bound holds");
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn machine(authenticated: bool, data: &[u8]) {
    let key = PyKey::new(KEY);
    let mut py = PyConn::new(NONCE);
    let mut stream = Vec::new();
    if authenticated {
        let challenge = challenge_frame(&NONCE);
        let mut answer = b"{sha256}".to_vec();
        answer.extend_from_slice(&hmac_sha256(KEY, &challenge[4 + 11..]));
        stream.extend_from_slice(&framed(&answer));
        let mut theirs = b"#CHALLENGE#".to_vec();
        theirs.extend_from_slice(&[0x43; 20]);
        stream.extend_from_slice(&framed(&theirs));
        stream.extend_from_slice(&framed(b"#WELCOME#"));
    }
    stream.extend_from_slice(data);
    let mut at = 0;
    let mut replies = data.iter().cycle();
    for _ in 0..1000 {
        let (header, body) = match frame::peek(&stream[at..], py.max_body(4096)) {
            Peek::Frame { header, body } => (header, body),
            _ => break,
        };
        let bytes = &stream[at + header..at + header + body];
        at += header + body;
        let mut s = Scratch::new();
        let mut scratch = s.scratch();
        let mut item_buf = [0u8; 256];
        let mut out = vec![0u8; item_reply_bound(64).max(1024)];
        let step = py.handle_frame(&key, bytes, &mut scratch, &mut item_buf, &mut out);
        let step = match step {
            Step::Execute(_) => {
                let pick = replies.next().copied().unwrap_or(0);
                let item = &bytes[..bytes.len().min(64)];
                let reply = match pick % 5 {
                    0 => Reply::Done,
                    1 => Reply::Item {
                        handle: depot_core::wire::Handle::from_raw(0),
                        item,
                    },
                    2 => Reply::Size(QueueSize {
                        len: pick.into(),
                        capacity: 8,
                        full: pick & 1 == 0,
                    }),
                    3 => Reply::Error(ErrorCode::NoSuchObject),
                    _ => Reply::Error(ErrorCode::Timeout),
                };
                let mut s = Scratch::new();
                match py.handle_reply(&reply, &mut s.scratch(), &mut out) {
                    // A remote stop: granted or refused, as the manager decides.
                    Step::Stop => {
                        let verdict = if pick & 8 == 0 {
                            Reply::Done
                        } else {
                            Reply::Error(ErrorCode::NotAllowed)
                        };
                        py.handle_reply(&verdict, &mut s.scratch(), &mut out)
                    }
                    step => step,
                }
            }
            other => other,
        };
        match step {
            Step::Send { len, close } => {
                assert!(len <= out.len());
                assert!(matches!(
                    frame::peek(&out[..len], usize::MAX),
                    Peek::Frame { .. }
                ));
                if close {
                    break;
                }
            }
            Step::Close(_) => break,
            _ => {}
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [mode, data @ ..] = input else {
        return;
    };
    match mode % 3 {
        0 => items(data),
        1 => machine(false, data),
        _ => machine(true, data),
    }
});
