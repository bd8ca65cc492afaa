//! Authentication: handshake proofs, session keys and per-frame MACs.
//!
//! Both sides prove knowledge of the authkey by an HMAC-SHA256 over both fresh nonces; the
//! authkey itself never crosses the wire. Each direction then gets its own session key, derived
//! from the authkey and both nonces, which MACs every frame together with an implicit sequence
//! number. A frame from another session, direction or position therefore fails to verify.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::wire::{PROOF_LEN, TAG_LEN};

/// HMAC-SHA256 keyed with the authkey or a session key.
///
/// `Hmac` keeps the keyed inner and outer block states, so each frame MAC costs only the
/// hashing of the frame itself.
type HmacSha256 = Hmac<Sha256>;

/// Labels keep every HMAC use in its own domain, so no value can be replayed as another.
pub(crate) const CLIENT_PROOF: &[u8] = b"depot/1 client proof";
pub(crate) const MANAGER_PROOF: &[u8] = b"depot/1 manager proof";
pub(crate) const CLIENT_TO_MANAGER: &[u8] = b"depot/1 client->manager";
pub(crate) const MANAGER_TO_CLIENT: &[u8] = b"depot/1 manager->client";

/// HMAC-SHA256 of `data` under `key` (RFC 2104): the primitive every proof, session key and
/// frame tag is built from, exposed so tests and third-party clients can check it against
/// known-answer vectors.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = AuthKey::new(key).mac;
    mac.update(data);
    finish(mac)
}

/// The shared secret, already keyed into HMAC so the raw key need not be kept.
#[derive(Clone)]
pub struct AuthKey {
    mac: HmacSha256,
}

impl AuthKey {
    /// Key HMAC-SHA256 with `authkey` (any length; HMAC hashes keys longer than 64 bytes).
    pub fn new(authkey: &[u8]) -> Self {
        // `new_from_slice` accepts every key length for HMAC, so this cannot fail.
        let mac = match HmacSha256::new_from_slice(authkey) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        AuthKey { mac }
    }

    /// HMAC(authkey, label ‖ 0 ‖ transcript hash).
    pub(crate) fn derive(&self, label: &[u8], transcript: &[u8; 32]) -> [u8; PROOF_LEN] {
        finish(self.keyed(label, transcript))
    }

    /// Constant-time check of a proof against [`AuthKey::derive`].
    pub(crate) fn verify(
        &self,
        label: &[u8],
        transcript: &[u8; 32],
        proof: &[u8; PROOF_LEN],
    ) -> bool {
        bool::from(self.derive(label, transcript).ct_eq(proof))
    }

    /// The session key for one direction.
    pub(crate) fn session(&self, label: &[u8], transcript: &[u8; 32]) -> FrameMac {
        FrameMac::new(&self.derive(label, transcript))
    }

    fn keyed(&self, label: &[u8], transcript: &[u8; 32]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(label);
        mac.update(&[0]);
        mac.update(transcript);
        mac
    }
}

/// SHA-256 of the hello and challenge bodies as sent: the proofs and session keys cover every
/// negotiated field and both nonces, so nothing in the handshake can be altered unnoticed.
pub(crate) fn transcript_hash(hello_body: &[u8], challenge_body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(hello_body);
    hash.update(challenge_body);
    hash.finalize().into()
}

impl core::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// The full HMAC: one copy of the finalisation (two SHA-256 finishes) for every caller,
/// instead of one inlined into each.
#[inline(never)]
fn finish(mac: HmacSha256) -> [u8; 32] {
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC takes keys of any length; reaching this would be a bug in the hmac crate.
    panic!("HMAC rejected a key")
}

/// MACs the frames of one direction of one session, counting them.
#[derive(Clone)]
pub(crate) struct FrameMac {
    mac: HmacSha256,
    /// The sequence number of the next frame; never sent, so a skipped frame breaks the MAC.
    seq: u64,
}

impl FrameMac {
    fn new(key: &[u8; PROOF_LEN]) -> Self {
        let mac = match HmacSha256::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        FrameMac { mac, seq: 0 }
    }

    fn keyed(&self, header: &[u8], body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(header);
        mac.update(body);
        mac
    }

    /// The tag of the next frame (header and body without the tag); advances the sequence.
    pub(crate) fn seal(&mut self, header: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
        let full = finish(self.keyed(header, body));
        self.seq += 1;
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Checks the next frame's tag in constant time; advances the sequence only on success.
    pub(crate) fn open(&mut self, header: &[u8], body: &[u8], tag: &[u8]) -> bool {
        let full = finish(self.keyed(header, body));
        // Tags are always `TAG_LEN` bytes; the comparison takes the same time wherever they
        // differ.
        let ok = tag.len() == TAG_LEN && bool::from(full[..TAG_LEN].ct_eq(tag));
        if ok {
            self.seq += 1;
        }
        ok
    }
}
