//! NATS nkeys: Ed25519 keys written as base32 text with a type prefix and a CRC-16, and the
//! `.creds` files that hold a user JWT beside its seed.
//!
//! A user seed is `SU…`: base32 (RFC 4648, no padding) of two prefix bytes (seed, then user),
//! the 32-byte Ed25519 seed and a CRC-16/XMODEM of those 34 bytes, little-endian. The matching
//! public key `U…` is one prefix byte, the 32-byte public key and the CRC. A client proves
//! itself by signing the server's INFO `nonce` (signing needs the cargo feature `nkeys`).

/// Prefix bytes (a key type's letter times 8 in base32).
const PREFIX_SEED: u8 = 18 << 3;
const PREFIX_USER: u8 = 20 << 3;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), as nkeys use.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = BASE32.iter().position(|&x| x == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The 32-byte Ed25519 seed of a user seed `SU…`.
pub fn decode_user_seed(seed: &str) -> Result<[u8; 32], String> {
    let seed = seed.trim();
    let raw = base32_decode(seed).ok_or("an nkey seed is base32 (A-Z, 2-7)")?;
    if raw.len() != 36 {
        return Err(format!("an nkey seed is 58 characters, not {}", seed.len()));
    }
    let (body, crc) = raw.split_at(34);
    if crc16(body).to_le_bytes() != crc {
        return Err("the nkey seed's checksum does not match (a typo?)".into());
    }
    if body[0] & 0xF8 != PREFIX_SEED {
        return Err("not an nkey seed (it should start with S)".into());
    }
    let kind = (body[0] & 7) << 5 | body[1] >> 3;
    if kind != PREFIX_USER {
        return Err("not a user seed (it should start with SU)".into());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&body[2..]);
    Ok(out)
}

/// The kinds of nkey depot deals in (a user logs in; operators and accounts sign JWTs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `O…`
    Operator,
    /// `A…`
    Account,
    /// `U…`
    User,
}

impl KeyKind {
    fn prefix(self) -> u8 {
        match self {
            KeyKind::Operator => 14 << 3,
            KeyKind::Account => 0,
            KeyKind::User => PREFIX_USER,
        }
    }
}

fn with_crc(mut raw: Vec<u8>) -> String {
    let crc = crc16(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    base32_encode(&raw)
}

/// The `S…` text of a seed of `kind` (the 32-byte Ed25519 seed).
pub fn encode_seed(kind: KeyKind, seed: &[u8; 32]) -> String {
    let mut raw = vec![PREFIX_SEED | kind.prefix() >> 5, (kind.prefix() & 31) << 3];
    raw.extend_from_slice(seed);
    with_crc(raw)
}

/// The `SU…` text of a user seed (the 32-byte Ed25519 seed).
pub fn encode_user_seed(seed: &[u8; 32]) -> String {
    encode_seed(KeyKind::User, seed)
}

/// The text of a public key of `kind`.
pub fn encode_public(kind: KeyKind, public: &[u8; 32]) -> String {
    let mut raw = vec![kind.prefix()];
    raw.extend_from_slice(public);
    with_crc(raw)
}

/// The `U…` text of a user's public key.
pub fn encode_user_key(public: &[u8; 32]) -> String {
    encode_public(KeyKind::User, public)
}

/// Unpadded base64url, as NATS wants signatures (and JWTs their parts).
pub fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A user's key pair, from its seed.
#[derive(Clone)]
pub struct UserKey {
    seed: [u8; 32],
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKey(…)")
    }
}

impl PartialEq for UserKey {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed
    }
}

impl Eq for UserKey {}

impl UserKey {
    /// From a user seed `SU…`.
    pub fn from_seed(seed: &str) -> Result<UserKey, String> {
        Ok(UserKey {
            seed: decode_user_seed(seed)?,
        })
    }

    /// From a file holding a user seed (other lines, such as comments, are skipped).
    pub fn from_file(path: &std::path::Path) -> Result<UserKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let seed = text
            .split_ascii_whitespace()
            .find(|w| w.starts_with("SU"))
            .ok_or_else(|| format!("{}: no user nkey seed (SU…) in it", path.display()))?;
        UserKey::from_seed(seed).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// An Ed25519 key pair of some kind (needs the cargo feature `nkeys`).
#[cfg(feature = "nkeys")]
pub struct KeyPair {
    kind: KeyKind,
    pair: ring::signature::Ed25519KeyPair,
}

#[cfg(feature = "nkeys")]
impl KeyPair {
    /// The pair of a 32-byte Ed25519 seed.
    pub fn new(kind: KeyKind, seed: &[u8; 32]) -> Result<KeyPair, String> {
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| format!("not an Ed25519 seed: {e}"))?;
        Ok(KeyPair { kind, pair })
    }

    /// The public key's text (`O…`, `A…`, `U…`).
    pub fn public(&self) -> Result<String, String> {
        use ring::signature::KeyPair as _;
        let public: [u8; 32] = self
            .pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
        Ok(encode_public(self.kind, &public))
    }

    /// The signature of `bytes`, base64url.
    pub fn sign(&self, bytes: &[u8]) -> String {
        base64url(self.pair.sign(bytes).as_ref())
    }
}

#[cfg(feature = "nkeys")]
impl UserKey {
    /// The public key, `U…`.
    pub fn public(&self) -> Result<String, String> {
        KeyPair::new(KeyKind::User, &self.seed)?.public()
    }

    /// The signature of the server's `nonce`, base64url as CONNECT's `sig` wants it.
    pub fn sign(&self, nonce: &str) -> Result<String, String> {
        Ok(KeyPair::new(KeyKind::User, &self.seed)?.sign(nonce.as_bytes()))
    }
}

#[cfg(not(feature = "nkeys"))]
impl UserKey {
    /// Needs the cargo feature `nkeys`: always an error.
    pub fn public(&self) -> Result<String, String> {
        Err(NOT_BUILT.into())
    }

    /// Needs the cargo feature `nkeys`: always an error.
    pub fn sign(&self, _nonce: &str) -> Result<String, String> {
        Err(NOT_BUILT.into())
    }
}

#[cfg(not(feature = "nkeys"))]
const NOT_BUILT: &str = "nkeys are not built into this depot (cargo feature `nkeys` of depot-nats)";

/// The user JWT and seed of a `.creds` file (the `-----BEGIN NATS USER JWT-----` and
/// `-----BEGIN USER NKEY SEED-----` blocks `nsc` writes).
pub fn parse_creds_file(text: &str) -> Result<(String, UserKey), String> {
    let block = |name: &str| -> Option<String> {
        let begin = format!("BEGIN {name}");
        let mut lines = text.lines().skip_while(|l| !l.contains(&begin)).skip(1);
        lines
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.starts_with("---"))
    };
    let jwt = block("NATS USER JWT").ok_or("no `BEGIN NATS USER JWT` block")?;
    if jwt.split('.').count() != 3 {
        return Err("the user JWT is not header.payload.signature".into());
    }
    let seed = block("USER NKEY SEED").ok_or("no `BEGIN USER NKEY SEED` block")?;
    Ok((jwt, UserKey::from_seed(&seed)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example user of the NATS server documentation's nkey authentication page.
    const DOC_SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
    const DOC_USER: &str = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

    #[test]
    fn crc16_is_xmodem() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn base32_round_trips() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn base64url_is_unpadded() {
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(b"fooba"), "Zm9vYmE");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn seeds_are_checked() {
        let seed = decode_user_seed(DOC_SEED).unwrap();
        assert_eq!(encode_user_seed(&seed), DOC_SEED);
        // One character changed: the checksum catches it.
        let typo = DOC_SEED.replacen("SSL3", "SSL4", 1);
        assert!(decode_user_seed(&typo).unwrap_err().contains("checksum"));
        assert!(decode_user_seed("SUACSSL3").is_err());
        assert!(decode_user_seed("not base32!").is_err());
        // The public key is not a seed.
        assert!(decode_user_seed(DOC_USER).is_err());
    }

    #[cfg(feature = "nkeys")]
    #[test]
    fn the_documented_seed_gives_the_documented_user() {
        let key = UserKey::from_seed(DOC_SEED).unwrap();
        assert_eq!(key.public().unwrap(), DOC_USER);
        // Ed25519 signatures are deterministic: 64 bytes, 86 base64url characters.
        let sig = key.sign("nonce").unwrap();
        assert_eq!(sig.len(), 86);
        assert_eq!(sig, key.sign("nonce").unwrap());
        assert_ne!(sig, key.sign("other").unwrap());
    }

    #[test]
    fn creds_files_hold_a_jwt_and_a_seed() {
        let text = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0.eyJq.c2ln\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{DOC_SEED}\n------END USER NKEY SEED------\n"
        );
        let (jwt, key) = parse_creds_file(&text).unwrap();
        assert_eq!(jwt, "eyJ0.eyJq.c2ln");
        assert_eq!(key, UserKey::from_seed(DOC_SEED).unwrap());
        assert!(parse_creds_file("user: x").is_err());
        assert!(parse_creds_file(&text.replace("eyJ0.eyJq.c2ln", "nojwt")).is_err());
    }
}
