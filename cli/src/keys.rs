//! `depot serve --keys FILE`: named keys and their rights, in TOML; `depot keys new NAME`.
//!
//! ```toml
//! [[key]]
//! name = "sensor-7"                   # what clients give as --key-name (or $DEPOT_KEY_NAME)
//! key = "3f9c...e1"                   # the authkey, as text (what clients put in $DEPOT_AUTHKEY)
//! put = ["telemetry"]                 # queues it may put to
//! get = []                            # ... take from
//! create = []                         # ... create
//! admin = []                          # ... see in `depot stat`; "*" also allows `depot shutdown`
//!
//! [[key]]
//! name = "ops"
//! key_file = "ops.key"                # or the authkey in a file of its own (relative to this
//!                                     # file; one trailing newline stripped)
//! put = ["*"]                         # a name ending in * is a prefix: "jobs/*", "*" = all
//! get = ["*"]
//! admin = ["*"]
//! ```
//!
//! `key_hex = "..."` gives the authkey as hex-encoded bytes instead. The key named `""` is the
//! default key (clients that name none, Python's among them); `$DEPOT_AUTHKEY`, when set, is
//! the default key with every right unless the file names one.

use std::path::Path;

use depot_std::{Grant, Key, Keyring, Rights};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    key: Option<String>,
    key_hex: Option<String>,
    key_file: Option<std::path::PathBuf>,
    #[serde(default)]
    put: Vec<String>,
    #[serde(default)]
    get: Vec<String>,
    #[serde(default)]
    create: Vec<String>,
    #[serde(default)]
    admin: Vec<String>,
}

/// Reads and checks the keys file at `path`.
pub fn load(path: &Path) -> Result<Keyring<'static>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the keys file {}: {e}", path.display()))?;
    let file: KeysFile = toml::from_str(&text)
        .map_err(|e| format!("keys file {}: {}", path.display(), e.message()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut keys = Vec::with_capacity(file.keys.len());
    for entry in file.keys {
        let at =
            |what: String| format!("keys file {}: key '{}': {what}", path.display(), entry.name);
        let secret = match (&entry.key, &entry.key_hex, &entry.key_file) {
            (Some(text), None, None) => text.as_bytes().to_vec(),
            (None, Some(hex), None) => {
                from_hex(hex).ok_or_else(|| at("key_hex is not hex".into()))?
            }
            (None, None, Some(file)) => {
                let file = base.join(file);
                let mut bytes = std::fs::read(&file)
                    .map_err(|e| at(format!("cannot read {}: {e}", file.display())))?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                bytes
            }
            _ => return Err(at("give exactly one of key, key_hex, key_file".into())),
        };
        if secret.is_empty() {
            return Err(at("the key is empty".into()));
        }
        let mut grants = Vec::new();
        for (names, rights) in [
            (&entry.put, Rights::PUT),
            (&entry.get, Rights::GET),
            (&entry.create, Rights::CREATE),
            (&entry.admin, Rights::ADMIN),
        ] {
            for name in names {
                grants.push(match name.strip_suffix('*') {
                    Some(prefix) => Grant::owned(prefix.to_owned(), true, rights),
                    None => Grant::owned(name.clone(), false, rights),
                });
            }
        }
        keys.push(Key::owned(entry.name.clone(), secret, grants));
    }
    let keyring = Keyring::owned(keys);
    keyring
        .check()
        .map_err(|e| format!("keys file {}: {e}", path.display()))?;
    Ok(keyring)
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A `[[key]]` entry with a fresh random key of 32 bytes (written as 64 hex digits, which are
/// the authkey clients use), and no rights yet.
pub fn new_entry(name: &str) -> Result<String, String> {
    if depot_std::KeyName::new(name).is_none() {
        return Err(format!(
            "invalid key name '{}': at most 32 bytes, no control characters",
            name.escape_debug()
        ));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let quoted = format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
    Ok(format!(
        "[[key]]\n\
         name = {quoted}\n\
         key = \"{hex}\"\n\
         # Queues this key may use; a name ending in * is a prefix, \"*\" is every queue.\n\
         put = []\n\
         get = []\n\
         create = []\n\
         admin = []\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_becomes_a_keyring() {
        let dir = std::env::temp_dir().join(format!("depot-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ops.key"), "from a file\n").unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(
            &path,
            "[[key]]\nname = \"sensor\"\nkey = \"sensor secret\"\nput = [\"telemetry\"]\n\
             [[key]]\nname = \"ops\"\nkey_file = \"ops.key\"\nget = [\"*\"]\nadmin = [\"jobs/*\"]\n\
             [[key]]\nname = \"\"\nkey_hex = \"00ff10\"\n",
        )
        .unwrap();
        let keyring = load(&path).unwrap();
        let keys = keyring.keys();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].secret(), b"sensor secret");
        assert_eq!(keys[0].rights("telemetry"), Rights::PUT);
        assert_eq!(keys[0].rights("telemetry2"), Rights::NONE);
        assert_eq!(keys[1].secret(), b"from a file");
        assert_eq!(keys[1].rights("jobs/1"), Rights::GET | Rights::ADMIN);
        assert_eq!(keys[1].rights("x"), Rights::GET);
        assert_eq!(keys[2].secret(), [0, 0xff, 0x10]);
        std::fs::write(
            &path,
            "[[key]]\nname = \"a\"\nkey = \"1\"\nkey_hex = \"01\"\n",
        )
        .unwrap();
        assert!(load(&path).unwrap_err().contains("exactly one"));
        std::fs::write(&path, "[[key]]\nname = \"a\"\nkey = \"1\"\npt = []\n").unwrap();
        assert!(load(&path).is_err());
        std::fs::write(
            &path,
            "[[key]]\nname = \"a\"\nkey = \"1\"\n[[key]]\nname = \"a\"\nkey = \"2\"\n",
        )
        .unwrap();
        assert!(load(&path).unwrap_err().contains("twice"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_entry_parses_back() {
        let entry = new_entry("sensor-7").unwrap();
        let file: KeysFile = toml::from_str(&entry).unwrap();
        assert_eq!(file.keys[0].name, "sensor-7");
        let key = file.keys[0].key.as_deref().unwrap();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_entry("sensor-7").unwrap(), entry);
        assert!(new_entry("bad\nname").is_err());
    }
}
