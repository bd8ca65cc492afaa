//! Helpers shared by the fuzz targets: the client side of the handshake and frame sealing,
//! written from PROTOCOL.md with `depot_core::auth::hmac_sha256`, so a target can hand the
//! manager or a client arbitrary message bytes inside frames whose MACs verify.

use depot_core::auth::hmac_sha256;
use depot_core::wire::{HEADER_LEN, TAG_LEN};
use sha2::{Digest, Sha256};

pub const KEY: &[u8] = b"producer";

/// A frame around `body` (no MAC: handshake frames).
pub fn plain_frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// `ClientHello { magic, MIN_VERSION, MIN_VERSION, nonce, max_frame, key: "", encrypt: false }` as a
/// frame (MACed frames: the fuzz targets write frames that verify).
pub fn hello_frame(nonce: &[u8; 32], max_frame: u32) -> Vec<u8> {
    let mut body = b"dpot".to_vec();
    body.extend_from_slice(&[depot_core::wire::MIN_VERSION; 2]);
    body.extend_from_slice(nonce);
    varint(&mut body, max_frame);
    // The default key's empty name, then no sealing.
    body.push(0);
    body.push(0);
    plain_frame(&body)
}

/// `ServerHello::Challenge { MIN_VERSION, nonce, max_frame, sealed: Mac }` as a frame.
pub fn challenge_frame(nonce: &[u8; 32], max_frame: u32) -> Vec<u8> {
    let mut body = vec![0, depot_core::wire::MIN_VERSION];
    body.extend_from_slice(nonce);
    varint(&mut body, max_frame);
    body.push(0);
    plain_frame(&body)
}

pub fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// SHA-256(hello body ‖ challenge body), from the two frames as sent.
pub fn transcript(hello: &[u8], challenge: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(&hello[HEADER_LEN..])
        .chain_update(&challenge[HEADER_LEN..])
        .finalize()
        .into()
}

/// HMAC(key, label ‖ 0 ‖ transcript hash).
pub fn derive(label: &[u8], transcript: &[u8; 32]) -> [u8; 32] {
    let mut data = label.to_vec();
    data.push(0);
    data.extend_from_slice(transcript);
    hmac_sha256(KEY, &data)
}

/// One direction of a session, as the spec defines it.
pub struct Sealer {
    key: [u8; 32],
    seq: u64,
}

impl Sealer {
    pub fn client_to_manager(transcript: &[u8; 32]) -> Sealer {
        Sealer {
            key: derive(b"depot/1 client->manager", transcript),
            seq: 0,
        }
    }

    pub fn manager_to_client(transcript: &[u8; 32]) -> Sealer {
        Sealer {
            key: derive(b"depot/1 manager->client", transcript),
            seq: 0,
        }
    }

    /// The next frame carrying `messages`, with a tag that verifies.
    pub fn seal(&mut self, messages: &[u8]) -> Vec<u8> {
        let len = (messages.len() + TAG_LEN) as u32;
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(messages);
        let mut data = self.seq.to_be_bytes().to_vec();
        data.extend_from_slice(&frame);
        frame.extend_from_slice(&hmac_sha256(&self.key, &data)[..TAG_LEN]);
        self.seq += 1;
        frame
    }
}

/// The manager nonce in a challenge frame, if it is one.
pub fn challenge_nonce(frame: &[u8]) -> Option<[u8; 32]> {
    if frame.get(HEADER_LEN..HEADER_LEN + 2)? != [0, depot_core::wire::MIN_VERSION] {
        return None;
    }
    frame.get(HEADER_LEN + 2..HEADER_LEN + 34)?.try_into().ok()
}
