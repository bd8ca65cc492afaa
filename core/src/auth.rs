//! Authentication: handshake proofs, session keys and per-frame MACs.
//!
//! Both sides prove knowledge of the authkey by an HMAC-SHA256 over both fresh nonces; the
//! authkey itself never crosses the wire. Each direction then gets its own session key, derived
//! from the authkey and both nonces, which MACs every frame together with an implicit sequence
//! number. A frame from another session, direction or position therefore fails to verify.

use sha2::digest::generic_array::GenericArray;
use subtle::ConstantTimeEq;

use crate::wire::{PROOF_LEN, TAG_LEN};

/// SHA-256 on sha2's block function (the hardware rounds where a host has them, the compact
/// ones on firmware), with the buffering and padding written out here: the generic `digest`
/// and `hmac` layers around it cost firmware about 2 KiB of flash.
#[derive(Clone)]
struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    /// Bytes hashed so far; `len % 64` of them wait in `block`.
    len: u64,
}

const SHA256_INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl Sha256 {
    const fn new() -> Self {
        Sha256 {
            state: SHA256_INIT,
            block: [0; 64],
            len: 0,
        }
    }

    #[inline(never)]
    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let free = &mut self.block[(self.len % 64) as usize..];
            let n = free.len().min(data.len());
            let (head, rest) = data.split_at(n);
            free[..n].copy_from_slice(head);
            let full = n == free.len();
            self.len += n as u64;
            data = rest;
            if full {
                compress(&mut self.state, &self.block);
            }
        }
    }

    #[inline(never)]
    fn finish(mut self) -> [u8; 32] {
        let bits = self.len.wrapping_mul(8);
        let at = (self.len % 64) as usize;
        self.block[at] = 0x80;
        self.block[at + 1..].fill(0);
        if at >= 56 {
            compress(&mut self.state, &self.block);
            self.block = [0; 64];
        }
        self.block[56..].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &self.block);
        let mut out = [0; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let block: &GenericArray<u8, _> = block.into();
    sha2::compress256(state, core::slice::from_ref(block));
}

/// HMAC-SHA256 (RFC 2104), keyed once: the inner hash has taken the key's block, and the
/// outer one is kept as its state after the key's block (the rest of it is always empty).
#[derive(Clone)]
struct HmacSha256 {
    inner: Sha256,
    outer: [u32; 8],
}

impl HmacSha256 {
    fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if key.len() > block.len() {
            let mut hash = Sha256::new();
            hash.update(key);
            block[..32].copy_from_slice(&hash.finish());
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(&block.map(|b| b ^ 0x36));
        let mut outer = SHA256_INIT;
        compress(&mut outer, &block.map(|b| b ^ 0x5c));
        HmacSha256 { inner, outer }
    }

    fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The full HMAC: one copy of the finalisation (two SHA-256 finishes) for every caller.
    #[inline(never)]
    fn finish(self) -> [u8; 32] {
        let mut outer = Sha256 {
            state: self.outer,
            block: [0; 64],
            len: 64,
        };
        outer.update(&self.inner.finish());
        outer.finish()
    }
}

/// Labels keep every HMAC use in its own domain, so no value can be replayed as another.
pub(crate) const CLIENT_PROOF: &[u8] = b"depot/1 client proof";
pub(crate) const MANAGER_PROOF: &[u8] = b"depot/1 manager proof";
pub(crate) const CLIENT_TO_MANAGER: &[u8] = b"depot/1 client->manager";
pub(crate) const MANAGER_TO_CLIENT: &[u8] = b"depot/1 manager->client";

/// HMAC-SHA256 of `data` under `key` (RFC 2104): the primitive every proof, session key and
/// frame tag is built from, exposed so tests and third-party clients can check it against
/// known-answer vectors.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new(key);
    mac.update(data);
    mac.finish()
}

/// The shared secret, already keyed into HMAC so the raw key need not be kept.
#[derive(Clone)]
pub struct AuthKey {
    mac: HmacSha256,
}

impl AuthKey {
    /// Key HMAC-SHA256 with `authkey` (any length; HMAC hashes keys longer than 64 bytes).
    pub fn new(authkey: &[u8]) -> Self {
        AuthKey {
            mac: HmacSha256::new(authkey),
        }
    }

    /// HMAC(authkey, label ‖ 0 ‖ transcript hash).
    pub(crate) fn derive(&self, label: &[u8], transcript: &[u8; 32]) -> [u8; PROOF_LEN] {
        self.keyed(label, transcript).finish()
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
    hash.finish()
}

impl core::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuthKey(..)")
    }
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
        FrameMac {
            mac: HmacSha256::new(key),
            seq: 0,
        }
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
        let full = self.keyed(header, body).finish();
        self.seq += 1;
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Checks the next frame's tag in constant time; advances the sequence only on success.
    pub(crate) fn open(&mut self, header: &[u8], body: &[u8], tag: &[u8]) -> bool {
        let full = self.keyed(header, body).finish();
        // Tags are always `TAG_LEN` bytes; the comparison takes the same time wherever they
        // differ.
        let ok = tag.len() == TAG_LEN && bool::from(full[..TAG_LEN].ct_eq(tag));
        if ok {
            self.seq += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sha2::Digest;

    proptest! {
        #![proptest_config(crate::proptest_cases(256))]

        /// Every key length (short, one block, hashed) and data split across block bounds.
        #[test]
        fn matches_the_hmac_crate(
            key in prop::collection::vec(any::<u8>(), 0..150),
            data in prop::collection::vec(any::<u8>(), 0..300),
            split in 0usize..300,
        ) {
            let split = split.min(data.len());
            let mut ours = HmacSha256::new(&key);
            ours.update(&data[..split]);
            ours.update(&data[split..]);
            let mut theirs = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
            theirs.update(&data);
            prop_assert_eq!(ours.finish(), <[u8; 32]>::from(theirs.finalize().into_bytes()));
            prop_assert_eq!(
                transcript_hash(&data[..split], &data[split..]),
                <[u8; 32]>::from(sha2::Sha256::digest(&data))
            );
        }
    }
}
