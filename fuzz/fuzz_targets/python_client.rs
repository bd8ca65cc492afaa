//! Arbitrary bytes from a "Python manager" into depot's client side of Python's protocol: as
//! the first frames of a connection, or as replies after a valid handshake and a request.
#![no_main]

use depot_core::auth::hmac_sha256;
use depot_core::python::frame::{self, Peek};
use depot_core::python::pickle::ScratchBuf;
use depot_core::python::{PyClient, PyClientError, PyKey, PyRequest, PyStep};
use depot_core::wire::Wait;
use depot_fuzz::{plain_frame, KEY};
use libfuzzer_sys::fuzz_target;

type Scratch = ScratchBuf<64, 16, 16>;

/// Runs the `{sha256}` handshake with `c`; true when connected.
fn handshake(c: &mut PyClient, key: &PyKey) -> bool {
    let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
    challenge.extend_from_slice(&[0x21; 40]);
    let mut s = Scratch::new();
    let mut out = [0u8; 300];
    let steps = [challenge, b"#WELCOME#".to_vec()];
    for body in steps {
        if c.handle_frame(key, &body, &mut s.scratch(), &mut [], &mut out)
            .is_err()
        {
            return false;
        }
    }
    // The client's own challenge is in `out`; answer it as a 3.12+ manager does.
    let Peek::Frame { header, body } = frame::peek(&out, 300) else {
        return false;
    };
    let mut answer = b"{sha256}".to_vec();
    answer.extend_from_slice(&hmac_sha256(KEY, &out[header + 11..header + body]));
    matches!(
        c.handle_frame(key, &answer, &mut s.scratch(), &mut [], &mut out),
        Ok(PyStep::Connected { .. })
    )
}

fn run(connected: bool, data: &[u8]) {
    let key = PyKey::new(KEY);
    let mut c = PyClient::new([0x5C; 32]);
    let mut stream = Vec::new();
    if connected {
        assert!(handshake(&mut c, &key), "a valid handshake connects");
        // accept_connection's reply, then a get in flight.
        let mut s = Scratch::new();
        let mut out = [0u8; 256];
        let accept = PyRequest::AcceptConnection { name: "f" };
        assert!(c.write_request(&accept, &mut s.scratch(), &mut out).is_ok());
        stream.extend_from_slice(&plain_frame(b"\x80\x04\x8c\x07#RETURNN\x86."));
        stream.extend_from_slice(data);
    } else {
        stream.extend_from_slice(data);
    }
    let mut at = 0;
    for k in 0..1000 {
        let (header, body) = match frame::peek(&stream[at..], c.max_body(4096)) {
            Peek::Frame { header, body } => (header, body),
            _ => break,
        };
        let bytes = &stream[at + header..at + header + body];
        at += header + body;
        let mut s = Scratch::new();
        let mut item = [0u8; 128];
        let mut out = [0u8; 300];
        match c.handle_frame(&key, bytes, &mut s.scratch(), &mut item, &mut out) {
            Ok(PyStep::Send { len } | PyStep::Connected { len }) => {
                assert!(matches!(frame::peek(&out[..len], 300), Peek::Frame { .. }));
            }
            Ok(_) | Err(PyClientError::ItemTooLarge | PyClientError::NoScratch) => {}
            Err(_) => {
                assert!(!c.is_ready() && !c.is_busy());
                break;
            }
        }
        if c.is_ready() && c.is_proxy() {
            let request = PyRequest::Get {
                ident: "7f00",
                wait: if k % 2 == 0 {
                    Wait::NoWait
                } else {
                    Wait::Millis(5)
                },
            };
            let mut out = [0u8; 256];
            assert!(c
                .write_request(&request, &mut s.scratch(), &mut out)
                .is_ok());
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [mode, data @ ..] = input else {
        return;
    };
    run(mode % 2 == 1, data);
});
