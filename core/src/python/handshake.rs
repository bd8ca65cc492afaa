//! The manager's side of Python's connection handshake, both generations.
//!
//! The manager challenges first with `#CHALLENGE#{sha256}` and 40 bytes: depot's 8-byte
//! [`MANAGER_MARKER`](crate::wire::PY_MANAGER_MARKER) and a 32-byte fresh nonce. It accepts the
//! answer of every client generation: 16 raw bytes of HMAC-MD5 (Python 3.8–3.11) or
//! `{digest}` + HMAC-digest (3.12+), each over the whole challenge message after the tag. It
//! then answers the client's challenge the way that client expects: raw HMAC-MD5 for a 20-byte
//! challenge (3.8–3.11), `{digest}` + HMAC-digest for a prefixed one (3.12+).
//!
//! Supported digests: `md5`, `sha256`, `sha384`. Python also allows `sha3_256` and `sha3_384`,
//! which its clients never choose unless patched; depot refuses them (the client sees
//! `AuthenticationError`). Every comparison is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Sha256, Sha384};

use crate::wire::{NONCE_LEN, PY_CHALLENGE, PY_MANAGER_MARKER};

/// `#WELCOME#`: the peer proved the key.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// `#FAILURE#`: the peer's answer was wrong; Python raises `AuthenticationError` on it.
pub const FAILURE: &[u8] = b"#FAILURE#";

/// The digest prefix of depot's challenge.
const SHA256_PREFIX: &[u8] = b"{sha256}";

/// Bytes of depot's challenge message after `#CHALLENGE#`.
pub const CHALLENGE_MESSAGE_LEN: usize = SHA256_PREFIX.len() + PY_MANAGER_MARKER.len() + NONCE_LEN;
/// Bytes of depot's challenge frame body.
pub const CHALLENGE_BODY_LEN: usize = PY_CHALLENGE.len() + CHALLENGE_MESSAGE_LEN;
/// The longest answer depot writes: `{sha384}` and 48 bytes.
pub const MAX_ANSWER_LEN: usize = 8 + 48;

/// The authkey keyed into every HMAC Python may ask for.
#[derive(Clone)]
pub struct PyKey {
    md5: Hmac<Md5>,
    sha256: Hmac<Sha256>,
    sha384: Hmac<Sha384>,
}

impl core::fmt::Debug for PyKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PyKey(..)")
    }
}

/// A digest Python names in a `{name}` prefix (or implies with a bare 16-byte answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Digest {
    /// HMAC-MD5 (the only one Python 3.8–3.11 knows).
    Md5,
    /// HMAC-SHA256 (what Python 3.12+ uses by default).
    Sha256,
    /// HMAC-SHA384.
    Sha384,
}

impl Digest {
    fn name(self) -> &'static [u8] {
        match self {
            Digest::Md5 => b"md5",
            Digest::Sha256 => b"sha256",
            Digest::Sha384 => b"sha384",
        }
    }

    fn len(self) -> usize {
        match self {
            Digest::Md5 => 16,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
        }
    }
}

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HandshakeError {
    /// The MAC is wrong: the peer does not know the authkey.
    WrongKey,
    /// The digest named is not one depot computes.
    UnsupportedDigest,
    /// The message is not shaped as the handshake requires at this point.
    Malformed,
}

impl PyKey {
    /// Keys every supported HMAC with `authkey`.
    pub fn new(authkey: &[u8]) -> Self {
        // HMAC accepts keys of every length, so `new_from_slice` cannot fail.
        PyKey {
            md5: Hmac::new_from_slice(authkey).unwrap_or_else(|_| unreachable()),
            sha256: Hmac::new_from_slice(authkey).unwrap_or_else(|_| unreachable()),
            sha384: Hmac::new_from_slice(authkey).unwrap_or_else(|_| unreachable()),
        }
    }

    /// HMAC-`digest` of `message` into `out`; returns its length.
    fn mac(&self, digest: Digest, message: &[u8], out: &mut [u8; 48]) -> usize {
        match digest {
            Digest::Md5 => {
                let mut m = self.md5.clone();
                m.update(message);
                out[..16].copy_from_slice(&m.finalize().into_bytes());
            }
            Digest::Sha256 => {
                let mut m = self.sha256.clone();
                m.update(message);
                out[..32].copy_from_slice(&m.finalize().into_bytes());
            }
            Digest::Sha384 => {
                let mut m = self.sha384.clone();
                m.update(message);
                out.copy_from_slice(&m.finalize().into_bytes());
            }
        }
        digest.len()
    }

    /// Constant-time check of `mac` against HMAC-`digest` of `message`.
    fn verify(&self, digest: Digest, message: &[u8], mac: &[u8]) -> bool {
        match digest {
            Digest::Md5 => {
                let mut m = self.md5.clone();
                m.update(message);
                m.verify_slice(mac).is_ok()
            }
            Digest::Sha256 => {
                let mut m = self.sha256.clone();
                m.update(message);
                m.verify_slice(mac).is_ok()
            }
            Digest::Sha384 => {
                let mut m = self.sha384.clone();
                m.update(message);
                m.verify_slice(mac).is_ok()
            }
        }
    }
}

#[cold]
fn unreachable() -> ! {
    // Reaching this would be a bug in the hmac crate.
    panic!("HMAC rejected a key")
}

/// Depot's challenge frame body: `#CHALLENGE#{sha256}`, the marker and `nonce`.
pub fn challenge_body(nonce: &[u8; NONCE_LEN]) -> [u8; CHALLENGE_BODY_LEN] {
    let mut body = [0; CHALLENGE_BODY_LEN];
    let mut at = 0;
    for part in [
        PY_CHALLENGE,
        SHA256_PREFIX,
        &PY_MANAGER_MARKER[..],
        &nonce[..],
    ] {
        body[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    body
}

/// Python's `_get_digest_name_and_payload`: a 16- or 20-byte message is a bare MD5 one (the
/// length decides first: a raw digest may start with `{` by chance); otherwise `{name}` leads.
fn digest_and_payload(message: &[u8]) -> Result<(Digest, &[u8]), HandshakeError> {
    if message.len() == 16 || message.len() == 20 {
        return Ok((Digest::Md5, message));
    }
    if message.first() != Some(&b'{') {
        return Err(HandshakeError::Malformed);
    }
    // Python looks for `}` within `message[1:10]`.
    let window = &message[1..message.len().min(10)];
    let Some(close) = window.iter().position(|&b| b == b'}') else {
        return Err(HandshakeError::Malformed);
    };
    let name = &window[..close];
    let payload = &message[close + 2..];
    [Digest::Md5, Digest::Sha256, Digest::Sha384]
        .into_iter()
        .find(|d| d.name() == name)
        .map(|d| (d, payload))
        .ok_or(match name {
            b"sha3_256" | b"sha3_384" => HandshakeError::UnsupportedDigest,
            _ => HandshakeError::Malformed,
        })
}

/// Checks a client's answer (the whole frame body) to the challenge sent with `nonce`.
pub fn verify_answer(
    key: &PyKey,
    nonce: &[u8; NONCE_LEN],
    answer: &[u8],
) -> Result<Digest, HandshakeError> {
    verify_over(key, &challenge_body(nonce), answer)
}

/// Bytes of the challenge frame body a depot client sends a Python manager.
pub const CLIENT_CHALLENGE_BODY_LEN: usize = PY_CHALLENGE.len() + SHA256_PREFIX.len() + NONCE_LEN;

/// The challenge a depot client sends a Python manager: `#CHALLENGE#{sha256}` and `nonce`.
/// A 3.12+ manager answers `{sha256}` + HMAC-SHA256; a 3.8–3.11 one raw HMAC-MD5 (it hashes
/// whatever follows the tag).
pub fn client_challenge_body(nonce: &[u8; NONCE_LEN]) -> [u8; CLIENT_CHALLENGE_BODY_LEN] {
    let mut body = [0; CLIENT_CHALLENGE_BODY_LEN];
    let (tag, rest) = body.split_at_mut(PY_CHALLENGE.len());
    tag.copy_from_slice(PY_CHALLENGE);
    let (prefix, random) = rest.split_at_mut(SHA256_PREFIX.len());
    prefix.copy_from_slice(SHA256_PREFIX);
    random.copy_from_slice(nonce);
    body
}

/// Checks a manager's answer (the whole frame body) to [`client_challenge_body`]`(nonce)`.
/// Every answer a Python 3.12+ client accepts is accepted (raw MD5 from older managers too).
pub fn verify_manager_answer(
    key: &PyKey,
    nonce: &[u8; NONCE_LEN],
    answer: &[u8],
) -> Result<Digest, HandshakeError> {
    verify_over(key, &client_challenge_body(nonce), answer)
}

/// Checks `answer` against the challenge frame body `challenge`.
fn verify_over(key: &PyKey, challenge: &[u8], answer: &[u8]) -> Result<Digest, HandshakeError> {
    let (digest, mac) = digest_and_payload(answer)?;
    let message = &challenge[PY_CHALLENGE.len()..];
    if key.verify(digest, message, mac) {
        Ok(digest)
    } else {
        Err(HandshakeError::WrongKey)
    }
}

/// Answers a client's challenge (the whole frame body) into `out`; returns the answer's length.
pub fn answer_challenge(
    key: &PyKey,
    challenge: &[u8],
    out: &mut [u8; MAX_ANSWER_LEN],
) -> Result<usize, HandshakeError> {
    let Some(message) = challenge.strip_prefix(PY_CHALLENGE) else {
        return Err(HandshakeError::Malformed);
    };
    // Python's `answer_challenge` refuses challenges shorter than 20 bytes.
    if message.len() < 20 {
        return Err(HandshakeError::Malformed);
    }
    let (digest, _) = digest_and_payload(message)?;
    let mut mac = [0; 48];
    let n = key.mac(digest, message, &mut mac);
    if message.len() == 16 || message.len() == 20 {
        out[..n].copy_from_slice(&mac[..n]);
        return Ok(n);
    }
    let name = digest.name();
    out[0] = b'{';
    out[1..1 + name.len()].copy_from_slice(name);
    out[1 + name.len()] = b'}';
    let at = name.len() + 2;
    out[at..at + n].copy_from_slice(&mac[..n]);
    Ok(at + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_decides_before_prefix() {
        let raw = *b"{sha256}abcdefgh";
        assert_eq!(digest_and_payload(&raw), Ok((Digest::Md5, &raw[..])));
        assert_eq!(
            digest_and_payload(b"{sha3_256}xxxxxxxxxxxxxxxxxxxxxxxxxxxx").unwrap_err(),
            HandshakeError::UnsupportedDigest
        );
        assert_eq!(
            digest_and_payload(b"{sha3_25}xxxxxxxxxxxxxxxxxxxxxxx").unwrap_err(),
            HandshakeError::Malformed
        );
        assert_eq!(
            digest_and_payload(b"{blake2b}xxxxxxxxxxxxxxxxxxxxxxx").unwrap_err(),
            HandshakeError::Malformed
        );
        assert_eq!(
            digest_and_payload(b"{").unwrap_err(),
            HandshakeError::Malformed
        );
        assert_eq!(
            digest_and_payload(b"").unwrap_err(),
            HandshakeError::Malformed
        );
    }

    fn hex(s: &str) -> [u8; 48] {
        let mut out = [0; 48];
        for (i, b) in out.iter_mut().enumerate().take(s.len() / 2) {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn prefixed(name: &[u8], mac: &[u8]) -> ([u8; 64], usize) {
        let mut out = [0; 64];
        out[..name.len()].copy_from_slice(name);
        out[name.len()..name.len() + mac.len()].copy_from_slice(mac);
        (out, name.len() + mac.len())
    }

    /// Known answers from CPython's `hmac` module (key `b"secret"`, nonce 32 × 7): every answer
    /// Python 3.12+ accepts is accepted; a raw SHA-256 or a MAC over the random part is not.
    #[test]
    fn accepts_what_python_accepts() {
        let key = PyKey::new(b"secret");
        let nonce = [7; NONCE_LEN];
        let md5 = hex("6dad5db059008a926d231a5f9979cad1");
        let sha256 = hex("0e5ebc3d43968c062cb998892cf00c63806d3fd9dfd1bc3a977de69d5930af74");
        let sha384 = hex(concat!(
            "2f79f2fd15f12379cea42b4c06e5941627d9aed0a7738a0520fc938a745c8129",
            "57cb061aa1d59282ccc7523e4fc4409f"
        ));
        assert_eq!(verify_answer(&key, &nonce, &md5[..16]), Ok(Digest::Md5));
        for (name, mac, digest) in [
            (&b"{md5}"[..], &md5[..16], Digest::Md5),
            (b"{sha256}", &sha256[..32], Digest::Sha256),
            (b"{sha384}", &sha384[..], Digest::Sha384),
        ] {
            let (answer, n) = prefixed(name, mac);
            assert_eq!(verify_answer(&key, &nonce, &answer[..n]), Ok(digest));
        }
        assert!(verify_answer(&key, &nonce, &sha256[..32]).is_err());
        let random_only = hex("c5cfe2ee9e5dcc65e582b11e3c652d82");
        assert_eq!(
            verify_answer(&key, &nonce, &random_only[..16]),
            Err(HandshakeError::WrongKey)
        );
        // Answers to a 3.8–3.11 challenge (20 bytes: raw MD5) and to a `{sha384}` one.
        let mut out = [0; MAX_ANSWER_LEN];
        let mut challenge = [0u8; 11 + 48];
        challenge[..11].copy_from_slice(b"#CHALLENGE#");
        for (i, b) in challenge[11..31].iter_mut().enumerate() {
            *b = i as u8;
        }
        let n = answer_challenge(&key, &challenge[..31], &mut out).unwrap();
        assert_eq!(out[..n], hex("7defa9cc46abc3583325d17ccda75190")[..16]);
        challenge[11..19].copy_from_slice(b"{sha384}");
        for (i, b) in challenge[19..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let n = answer_challenge(&key, &challenge, &mut out).unwrap();
        let want = hex(concat!(
            "bae78a3376369f7b803a8473318a9b7062495b47434159ac84fc92ddb33c51b2",
            "77c44c3edd9a5f9cb7d628f21abe2665"
        ));
        assert_eq!(&out[..8], b"{sha384}");
        assert_eq!(out[8..n], want[..]);
    }

    #[test]
    fn answers_round_trip() {
        let key = PyKey::new(b"secret");
        let nonce = [7; NONCE_LEN];
        let body = challenge_body(&nonce);
        let mut out = [0; MAX_ANSWER_LEN];
        let n = answer_challenge(&key, &body, &mut out).unwrap();
        assert_eq!(&out[..8], b"{sha256}");
        assert_eq!(verify_answer(&key, &nonce, &out[..n]), Ok(Digest::Sha256));
        let other = PyKey::new(b"other");
        assert_eq!(
            verify_answer(&other, &nonce, &out[..n]),
            Err(HandshakeError::WrongKey)
        );
        assert_eq!(
            answer_challenge(&key, b"#CHALLENGE#short", &mut out),
            Err(HandshakeError::Malformed)
        );
    }
}
