//! How frames are protected after the handshake: a MAC (PROTOCOL.md §5), or sealed with
//! ChaCha20-Poly1305 when both sides agree in the hello (§5.1, feature `aead`), or with
//! AES-256-GCM where both prefer it (protocol version 4, feature `aead-ring`).
//!
//! Either way each direction has its own key derived from the transcript and counts its
//! frames; the count is never sent, so a frame dropped, replayed or reordered fails to open.
//! Sealed frames add confidentiality: the messages travel encrypted, the length header in
//! the clear (it is authenticated as associated data).

use crate::auth::{AuthKey, FrameMac, CLIENT_TO_MANAGER, MANAGER_TO_CLIENT};
use crate::wire::{CloseReason, Sealing, HEADER_LEN, TAG_LEN};

/// Whether a side seals its frames (PROTOCOL.md §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Encryption {
    /// Never seal: frames carry their MAC only (integrity, no confidentiality).
    Off,
    /// Seal when the peer can; accept a peer that cannot (the default with feature `aead`).
    Preferred,
    /// Seal, and refuse a peer that cannot ([`CloseReason::EncryptionRequired`]). Without the
    /// `aead` feature this refuses every peer.
    Required,
}

impl Default for Encryption {
    /// [`Encryption::Preferred`] when this build can seal (feature `aead`), else
    /// [`Encryption::Off`].
    fn default() -> Self {
        if CAN_SEAL {
            Encryption::Preferred
        } else {
            Encryption::Off
        }
    }
}

/// Whether this build can seal frames.
pub const CAN_SEAL: bool = cfg!(feature = "aead");

impl Encryption {
    /// What a client with this policy asks for in its hello.
    pub(crate) fn wants(self) -> bool {
        CAN_SEAL && self != Encryption::Off
    }

    /// The manager's choice for a client that asked (`wants`) or not: sealed or not, or the
    /// reason to refuse the client.
    pub(crate) fn manager_choice(self, wants: bool) -> Result<bool, CloseReason> {
        match self {
            Encryption::Required if !(wants && CAN_SEAL) => Err(CloseReason::EncryptionRequired),
            Encryption::Off => Ok(false),
            _ => Ok(wants && CAN_SEAL),
        }
    }

    /// Whether a client with this policy, which asked for sealing or not, goes on with the
    /// manager's choice.
    pub(crate) fn client_accepts(self, sealed: bool) -> Result<(), CloseReason> {
        if sealed && !self.wants() {
            // The manager may seal only when asked to.
            return Err(CloseReason::Malformed);
        }
        if self == Encryption::Required && !sealed {
            return Err(CloseReason::EncryptionRequired);
        }
        Ok(())
    }
}

/// Each direction's key labels: its MAC key's (`auth`), then its ChaCha20-Poly1305 and its
/// AES-256-GCM keys', all apart, so no key serves two algorithms.
const CLIENT_TO_MANAGER_LABELS: [&[u8]; 3] = [
    CLIENT_TO_MANAGER,
    b"depot/3 seal client->manager",
    b"depot/4 aes-gcm client->manager",
];
const MANAGER_TO_CLIENT_LABELS: [&[u8]; 3] = [
    MANAGER_TO_CLIENT,
    b"depot/3 seal manager->client",
    b"depot/4 aes-gcm manager->client",
];

/// Protects the frames of one direction of one session.
#[derive(Clone)]
pub(crate) struct FrameKey(Kind);

// No heap to box into: the keys live inline, as large as they are.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Kind {
    Mac(FrameMac),
    #[cfg(feature = "aead")]
    Aead(FrameAead),
}

impl FrameKey {
    /// The key of frames from the client to the manager.
    pub(crate) fn client_to_manager(key: &AuthKey, transcript: &[u8; 32], how: Sealing) -> Self {
        Self::derive(key, transcript, how, CLIENT_TO_MANAGER_LABELS)
    }

    /// The key of frames from the manager to the client.
    pub(crate) fn manager_to_client(key: &AuthKey, transcript: &[u8; 32], how: Sealing) -> Self {
        Self::derive(key, transcript, how, MANAGER_TO_CLIENT_LABELS)
    }

    /// One direction's key: `labels` are its MAC's, ChaCha20-Poly1305's and AES-256-GCM's, in
    /// `Sealing`'s order.
    fn derive(key: &AuthKey, transcript: &[u8; 32], how: Sealing, labels: [&[u8]; 3]) -> Self {
        #[cfg(feature = "aead")]
        if how != Sealing::Mac {
            // `Sealing`'s values are the labels' order.
            let k = key.derive(labels[how as usize], transcript);
            return FrameKey(Kind::Aead(FrameAead::new(&k, how)));
        }
        let _ = how;
        FrameKey(Kind::Mac(key.session(labels[0], transcript)))
    }

    /// How this key protects frames.
    pub(crate) fn sealing(&self) -> Sealing {
        match &self.0 {
            Kind::Mac(_) => Sealing::Mac,
            #[cfg(feature = "aead")]
            Kind::Aead(aead) => aead.sealing(),
        }
    }

    /// Protects the next frame: `body` (the messages) is encrypted in place when sealing;
    /// returns the tag. Advances the sequence.
    pub(crate) fn seal(&mut self, header: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
        match &mut self.0 {
            Kind::Mac(mac) => mac.seal(header, body),
            #[cfg(feature = "aead")]
            Kind::Aead(aead) => aead.seal(header, body),
        }
    }

    /// Checks the next whole frame (header ‖ messages ‖ tag), decrypting its messages in place
    /// when sealed; advances the sequence only on success. On failure the frame is unchanged.
    pub(crate) fn open(&mut self, frame: &mut [u8]) -> bool {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return false;
        }
        let (header, rest) = frame.split_at_mut(HEADER_LEN);
        let (messages, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        match &mut self.0 {
            Kind::Mac(mac) => mac.open(header, messages, tag),
            #[cfg(feature = "aead")]
            Kind::Aead(aead) => aead.open(header, messages, tag),
        }
    }

    /// What reads back frames this key sealed, if it encrypts (see `TxBuf::open_unsent`).
    #[cfg(feature = "aead")]
    pub(crate) fn reader(&self) -> Option<&FrameAead> {
        match &self.0 {
            Kind::Aead(aead) => Some(aead),
            Kind::Mac(_) => None,
        }
    }
}

#[cfg(feature = "aead")]
pub(crate) use aead_impl::FrameAead;

#[cfg(feature = "aead")]
mod aead_impl {
    use crate::wire::{Sealing, TAG_LEN};

    /// A sealing cipher under one direction's key, with that direction's frame count.
    #[derive(Clone)]
    pub(crate) struct FrameAead {
        cipher: Cipher,
        /// The sequence number of the next frame: its nonce, never sent.
        seq: u64,
        /// Which cipher (not `Mac`).
        how: Sealing,
    }

    /// The 96-bit nonce of frame `seq`: four zero bytes, then `seq` big-endian. Each key
    /// seals at most one frame per `seq`, so no nonce repeats under a key.
    fn nonce(seq: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&seq.to_be_bytes());
        n
    }

    impl FrameAead {
        /// Seals with `how`: AES-256-GCM only with ring's ciphers (feature `aead-ring`), which
        /// version 4 needs; a build without them never agrees to it.
        pub(crate) fn new(key: &[u8; 32], how: Sealing) -> Self {
            FrameAead {
                cipher: Cipher::new(key, how),
                seq: 0,
                how,
            }
        }

        pub(crate) fn sealing(&self) -> Sealing {
            self.how
        }

        /// The sequence number the next frame will have.
        pub(crate) fn next_seq(&self) -> u64 {
            self.seq
        }

        pub(crate) fn seal(&mut self, header: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
            let tag = self.cipher.seal(nonce(self.seq), header, body);
            self.seq += 1;
            tag
        }

        pub(crate) fn open(&mut self, header: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
            let ok = self.open_at(self.seq, header, body, tag);
            if ok {
                self.seq += 1;
            }
            ok
        }

        /// Checks and decrypts frame `seq` in place. On `false` the body is not to be used.
        pub(crate) fn open_at(&self, seq: u64, header: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
            self.cipher.open(nonce(seq), header, body, tag)
        }
    }

    /// RustCrypto's ChaCha20-Poly1305: portable Rust, for firmware.
    #[cfg(not(feature = "aead-ring"))]
    #[derive(Clone)]
    struct Cipher(chacha20poly1305::ChaCha20Poly1305);

    #[cfg(not(feature = "aead-ring"))]
    impl Cipher {
        fn new(key: &[u8; 32], _how: Sealing) -> Self {
            use chacha20poly1305::KeyInit;
            Cipher(chacha20poly1305::ChaCha20Poly1305::new(&(*key).into()))
        }

        fn seal(&self, nonce: [u8; 12], header: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
            use chacha20poly1305::AeadInOut;
            // Frames are far below ChaCha20's 256 GiB per nonce, the only way this fails.
            self.0
                .encrypt_inout_detached(&nonce.into(), header, body.into())
                .map(|t| t.into())
                .unwrap_or([0; TAG_LEN])
        }

        /// The tag is checked, in constant time, before anything is decrypted.
        fn open(&self, nonce: [u8; 12], header: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
            use chacha20poly1305::AeadInOut;
            let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
                return false;
            };
            self.0
                .decrypt_inout_detached(&nonce.into(), header, body.into(), &tag.into())
                .is_ok()
        }
    }

    /// ring's ChaCha20-Poly1305 or AES-256-GCM (feature `aead-ring`): the same ChaCha20 as
    /// RustCrypto's, in assembly, and AES in the CPU's AES instructions where it has them.
    #[cfg(feature = "aead-ring")]
    #[derive(Clone)]
    struct Cipher(ring::aead::LessSafeKey);

    #[cfg(feature = "aead-ring")]
    impl Cipher {
        fn new(key: &[u8; 32], how: Sealing) -> Self {
            use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
            let algorithm = match how {
                Sealing::Aes256Gcm => &AES_256_GCM,
                _ => &CHACHA20_POLY1305,
            };
            // A 32-byte key is the one length both take: this cannot fail.
            let key = UnboundKey::new(algorithm, key).unwrap_or_else(|_| unreachable!());
            Cipher(LessSafeKey::new(key))
        }

        fn seal(&self, nonce: [u8; 12], header: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
            use ring::aead::{Aad, Nonce};
            // Frames are far below ChaCha20's 256 GiB per nonce, the only way this fails.
            self.0
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    body,
                )
                .map(|t| {
                    let mut tag = [0; TAG_LEN];
                    tag.copy_from_slice(t.as_ref());
                    tag
                })
                .unwrap_or([0; TAG_LEN])
        }

        /// The tag is checked in constant time; on a wrong one the body is garbage (and the
        /// frame refused).
        fn open(&self, nonce: [u8; 12], header: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
            use ring::aead::{Aad, Nonce, Tag};
            let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag) else {
                return false;
            };
            self.0
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    Tag::from(tag),
                    body,
                    0..,
                )
                .is_ok()
        }
    }

    /// ring and RustCrypto seal the same frames the same way, so a host with `aead-ring` and
    /// firmware without it understand each other.
    #[cfg(all(test, feature = "aead-ring"))]
    mod tests {
        use super::*;
        use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit};

        #[test]
        fn ring_and_rustcrypto_seal_and_open_alike() {
            let key = [0x42; 32];
            let portable = ChaCha20Poly1305::new(&key.into());
            let mut ours = FrameAead::new(&key, Sealing::ChaCha20Poly1305);
            for len in [0usize, 1, 63, 64, 65, 1024, 5000] {
                let header = (len as u32).to_le_bytes();
                let plain: alloc::vec::Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let seq = ours.next_seq();
                let mut body = plain.clone();
                let tag = ours.seal(&header, &mut body);
                let mut theirs = plain.clone();
                let their_tag = portable
                    .encrypt_inout_detached(
                        &nonce(seq).into(),
                        &header,
                        theirs.as_mut_slice().into(),
                    )
                    .unwrap();
                assert_eq!((&body, &tag[..]), (&theirs, &their_tag[..]), "{len} B");
                let reader = FrameAead::new(&key, Sealing::ChaCha20Poly1305);
                let mut opened = body.clone();
                assert!(reader.open_at(seq, &header, &mut opened, &tag));
                assert_eq!(opened, plain);
                let mut bad = tag;
                bad[0] ^= 1;
                assert!(!reader.open_at(seq, &header, &mut body.clone(), &bad));
                assert!(!reader.open_at(seq + 1, &header, &mut body.clone(), &tag));
            }
        }
    }
}
