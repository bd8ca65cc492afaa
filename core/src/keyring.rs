//! Identities: named keys, each with its rights per object name.
//!
//! A client names its key in the hello (protocol version 3); the manager proves it against
//! that key and from then on checks every request against the key's grants. The unnamed key
//! (empty name) is the default one: Python `BaseManager` clients and clients that name no key
//! use it.
//!
//! A keyring is lent (`'static` slices built in `const` context, for firmware) or, with the
//! `alloc` feature, owned (loaded from a file at run time, replaced on reload):
//!
//! ```
//! use depot_core::keyring::{Grant, Key, Keyring, Rights};
//!
//! static SENSOR: [Grant<'static>; 1] = [Grant::exact("telemetry", Rights::PUT)];
//! static ADMIN: [Grant<'static>; 1] = [Grant::prefix("", Rights::ALL)];
//! static KEYS: [Key<'static>; 2] = [
//!     Key::new("sensor-7", b"a key of sixteen bytes or more", &SENSOR),
//!     Key::new("ops", b"another long and random authkey", &ADMIN),
//! ];
//! let keyring = Keyring::new(&KEYS);
//! assert!(keyring.check().is_ok());
//! ```

use core::ops::{BitOr, Deref};

#[cfg(feature = "alloc")]
use alloc::{string::String, vec::Vec};

use crate::wire::MAX_NAME_LEN;

/// Authkeys shorter than this are easy to guess offline from one recorded handshake; a
/// manager should warn loudly when it starts with one.
pub const MIN_KEY_LEN: usize = 16;

/// A read-only list lent for the owner's life or (with `alloc`) owned by it.
pub enum Shared<'a, T> {
    /// Lent by the caller (a `static` on firmware).
    Lent(&'a [T]),
    /// Given to the owner.
    #[cfg(feature = "alloc")]
    Owned(Vec<T>),
}

impl<T> Deref for Shared<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Shared::Lent(slice) => slice,
            #[cfg(feature = "alloc")]
            Shared::Owned(vec) => vec,
        }
    }
}

impl<T: Clone> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Shared::Lent(slice) => Shared::Lent(slice),
            #[cfg(feature = "alloc")]
            Shared::Owned(vec) => Shared::Owned(vec.clone()),
        }
    }
}

impl<T> core::fmt::Debug for Shared<'_, T>
where
    T: core::fmt::Debug,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What a key may do with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rights(u8);

impl Rights {
    /// Nothing.
    pub const NONE: Rights = Rights(0);
    /// `put`, `put_many`, giving items back, `join`.
    pub const PUT: Rights = Rights(1);
    /// `get`, `get_many`, `task_done`.
    pub const GET: Rights = Rights(2);
    /// Creating the object.
    pub const CREATE: Rights = Rights(4);
    /// Seeing it in `stat` and `status`; with a grant on every name, `shutdown`.
    pub const ADMIN: Rights = Rights(8);
    /// Everything.
    pub const ALL: Rights = Rights(15);

    /// Both sets of rights.
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Whether every right of `other` is in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no right is in `self`.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Rights {
    type Output = Rights;

    fn bitor(self, other: Rights) -> Rights {
        self.union(other)
    }
}

/// Rights on one object name, or on every name that starts with a prefix.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    pattern: Shared<'a, u8>,
    prefix: bool,
    rights: Rights,
}

impl<'a> Grant<'a> {
    /// `rights` on the object called `name`.
    pub const fn exact(name: &'a str, rights: Rights) -> Self {
        Grant {
            pattern: Shared::Lent(name.as_bytes()),
            prefix: false,
            rights,
        }
    }

    /// `rights` on every object whose name starts with `prefix` (`""`: every object).
    pub const fn prefix(prefix: &'a str, rights: Rights) -> Self {
        Grant {
            pattern: Shared::Lent(prefix.as_bytes()),
            prefix: true,
            rights,
        }
    }

    /// A grant that owns its pattern.
    #[cfg(feature = "alloc")]
    pub fn owned(pattern: String, prefix: bool, rights: Rights) -> Grant<'static> {
        Grant {
            pattern: Shared::Owned(pattern.into_bytes()),
            prefix,
            rights,
        }
    }

    /// Whether the grant covers `object`.
    pub fn matches(&self, object: &str) -> bool {
        if self.prefix {
            object.as_bytes().starts_with(&self.pattern)
        } else {
            object.as_bytes() == &*self.pattern
        }
    }

    /// The rights it gives.
    pub fn rights(&self) -> Rights {
        self.rights
    }

    fn covers_everything(&self) -> bool {
        self.prefix && self.pattern.is_empty()
    }
}

/// A named authkey and its grants.
#[derive(Clone)]
pub struct Key<'a> {
    name: Shared<'a, u8>,
    secret: Shared<'a, u8>,
    grants: Shared<'a, Grant<'a>>,
}

impl<'a> Key<'a> {
    /// A key lent for the keyring's life (`const`, so a firmware keyring can be a `static`).
    pub const fn new(name: &'a str, secret: &'a [u8], grants: &'a [Grant<'a>]) -> Self {
        Key {
            name: Shared::Lent(name.as_bytes()),
            secret: Shared::Lent(secret),
            grants: Shared::Lent(grants),
        }
    }

    /// A key that owns its name, secret and grants.
    #[cfg(feature = "alloc")]
    pub fn owned(name: String, secret: Vec<u8>, grants: Vec<Grant<'static>>) -> Key<'static> {
        Key {
            name: Shared::Owned(name.into_bytes()),
            secret: Shared::Owned(secret),
            grants: Shared::Owned(grants),
        }
    }

    /// Its name (empty: the default key).
    pub fn name(&self) -> &str {
        // Built from a `&str` or a `String`, so always UTF-8.
        core::str::from_utf8(&self.name).unwrap_or("")
    }

    /// Whether the secret is shorter than [`MIN_KEY_LEN`].
    pub fn is_weak(&self) -> bool {
        self.secret.len() < MIN_KEY_LEN
    }

    /// Its rights on `object`: the union of every grant that covers it.
    pub fn rights(&self, object: &str) -> Rights {
        self.grants
            .iter()
            .filter(|g| g.matches(object))
            .fold(Rights::NONE, |all, g| all | g.rights)
    }

    /// Whether `rights` are granted on every object name (needed for `shutdown`).
    pub fn has_everywhere(&self, rights: Rights) -> bool {
        self.grants
            .iter()
            .filter(|g| g.covers_everything())
            .fold(Rights::NONE, |all, g| all | g.rights)
            .contains(rights)
    }

    /// Whether any grant gives any of `rights` on some object.
    pub fn has_anywhere(&self, rights: Rights) -> bool {
        self.grants.iter().any(|g| g.rights.0 & rights.0 != 0)
    }

    /// The secret (the authkey itself).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Same name and secret: a connection proven with one is still good with the other.
    #[cfg_attr(not(feature = "keyring"), allow(dead_code))]
    pub(crate) fn same_identity(&self, other: &Key) -> bool {
        *self.name == *other.name && *self.secret == *other.secret
    }
}

impl core::fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name())
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// Why a keyring cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum KeyringError {
    /// Key number `n` has a name longer than `MAX_NAME_LEN` bytes or with control characters.
    InvalidName(usize),
    /// Key number `n` has the name of an earlier key.
    DuplicateName(usize),
    /// Key number `n` has an empty secret.
    EmptySecret(usize),
    /// More keys than a connection can refer to.
    TooMany,
}

impl core::fmt::Display for KeyringError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyringError::InvalidName(n) => write!(f, "key {n}: invalid name"),
            KeyringError::DuplicateName(n) => write!(f, "key {n}: name used twice"),
            KeyringError::EmptySecret(n) => write!(f, "key {n}: empty secret"),
            KeyringError::TooMany => f.write_str("too many keys"),
        }
    }
}

impl core::error::Error for KeyringError {}

/// The keys a manager accepts.
#[derive(Clone)]
pub struct Keyring<'a> {
    keys: Shared<'a, Key<'a>>,
}

/// The most keys a keyring holds (a connection refers to its key by a `u16`, two values kept).
pub const MAX_KEYS: usize = u16::MAX as usize - 2;

impl<'a> Keyring<'a> {
    /// A keyring lent for the manager's life.
    pub const fn new(keys: &'a [Key<'a>]) -> Self {
        Keyring {
            keys: Shared::Lent(keys),
        }
    }

    /// No keys at all.
    pub const fn empty() -> Self {
        Keyring {
            keys: Shared::Lent(&[]),
        }
    }

    /// A keyring that owns its keys.
    #[cfg(feature = "alloc")]
    pub fn owned(keys: Vec<Key<'static>>) -> Keyring<'static> {
        Keyring {
            keys: Shared::Owned(keys),
        }
    }

    /// Checks names (unique, at most `MAX_NAME_LEN` bytes, no control characters) and secrets.
    pub fn check(&self) -> Result<(), KeyringError> {
        if self.keys.len() > MAX_KEYS {
            return Err(KeyringError::TooMany);
        }
        for (n, key) in self.keys.iter().enumerate() {
            if KeyName::new(key.name()).is_none() {
                return Err(KeyringError::InvalidName(n));
            }
            if key.secret.is_empty() {
                return Err(KeyringError::EmptySecret(n));
            }
            if self.keys[..n].iter().any(|k| *k.name == *key.name) {
                return Err(KeyringError::DuplicateName(n));
            }
        }
        Ok(())
    }

    /// The keys.
    pub fn keys(&self) -> &[Key<'a>] {
        &self.keys
    }

    /// The index of the key called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.keys.iter().position(|k| *k.name == *name.as_bytes())
    }
}

impl core::fmt::Debug for Keyring<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

/// The name of a key as a client's hello carries it: at most `MAX_NAME_LEN` bytes of UTF-8
/// without control characters; empty names the default key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyName {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl KeyName {
    /// The default key's (empty) name.
    pub const DEFAULT: KeyName = KeyName {
        bytes: [0; MAX_NAME_LEN],
        len: 0,
    };

    /// `None` if `name` is too long or has control characters.
    pub fn new(name: &str) -> Option<KeyName> {
        if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return None;
        }
        let mut bytes = [0; MAX_NAME_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(KeyName {
            bytes,
            len: name.len() as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only `new` fills it, from a `&str`.
        let bytes = self.bytes.get(..self.len as usize).unwrap_or_default();
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// The name's bytes, as the hello carries them: no UTF-8 check to link into a client.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len as usize).unwrap_or_default()
    }
}

impl Default for KeyName {
    fn default() -> Self {
        KeyName::DEFAULT
    }
}

impl core::fmt::Debug for KeyName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for KeyName {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=str}", self.as_str())
    }
}

impl serde::Serialize for KeyName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for KeyName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = KeyName;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("a key name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyName, E> {
                KeyName::new(v).ok_or_else(|| E::custom("invalid key name"))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static GRANTS: [Grant<'static>; 2] = [
        Grant::exact("telemetry", Rights::PUT),
        Grant::prefix("jobs/", Rights::GET.union(Rights::ADMIN)),
    ];

    #[test]
    fn rights_are_the_union_of_matching_grants() {
        let key = Key::new("k", b"0123456789abcdef", &GRANTS);
        assert_eq!(key.rights("telemetry"), Rights::PUT);
        assert_eq!(key.rights("telemetry2"), Rights::NONE);
        assert_eq!(key.rights("jobs/a"), Rights::GET | Rights::ADMIN);
        assert_eq!(key.rights("jobs"), Rights::NONE);
        assert!(!key.has_everywhere(Rights::ADMIN));
        assert!(key.has_anywhere(Rights::ADMIN));
        assert!(!key.is_weak());
    }

    #[test]
    fn check_finds_bad_keyrings() {
        let keys = [Key::new("a", b"x", &[]), Key::new("a", b"y", &[])];
        assert_eq!(
            Keyring::new(&keys).check(),
            Err(KeyringError::DuplicateName(1))
        );
        let keys = [Key::new("bad\nname", b"x", &[])];
        assert_eq!(
            Keyring::new(&keys).check(),
            Err(KeyringError::InvalidName(0))
        );
        let keys = [Key::new("", b"", &[])];
        assert_eq!(
            Keyring::new(&keys).check(),
            Err(KeyringError::EmptySecret(0))
        );
        let keys = [Key::new("", b"x", &[]), Key::new("b", b"y", &[])];
        assert_eq!(Keyring::new(&keys).check(), Ok(()));
        assert_eq!(Keyring::new(&keys).find("b"), Some(1));
        assert_eq!(Keyring::new(&keys).find("c"), None);
    }

    #[test]
    fn key_names_are_bounded() {
        assert_eq!(KeyName::new("").unwrap().as_str(), "");
        let long = "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn";
        assert_eq!(KeyName::new(&long[1..]).unwrap().as_str().len(), 32);
        assert!(KeyName::new(long).is_none());
        assert!(KeyName::new("a\tb").is_none());
    }
}
