//! `depot serve --config FILE`: everything `serve`'s flags say, in TOML, with the flags
//! overriding the file. `examples/depot.toml` shows every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The file as written. Every key is optional; unknown keys are errors (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address to listen on.
    pub listen: Option<String>,
    /// The authkey file; a relative path is relative to the config file.
    pub authkey_file: Option<PathBuf>,
    /// The keys file (`--keys`); relative to the config file too.
    pub keys: Option<PathBuf>,
    /// Address of the Prometheus endpoint.
    pub metrics: Option<String>,
    /// Whether `depot shutdown` may stop the manager.
    pub allow_remote_shutdown: Option<bool>,
    /// Whether depot clients that do not encrypt are refused.
    pub require_encryption: Option<bool>,
    /// Largest item of a queue that does not give its own.
    pub max_item: Option<u32>,
    /// Where the queues are kept; a relative path is relative to the config file.
    pub data_dir: Option<PathBuf>,
    /// When the log in `data_dir` is synced: `always`, `interval[=MS]` or `never`.
    pub fsync: Option<String>,
    /// Microseconds the event loop looks for more input before it sleeps.
    pub busy_poll_us: Option<u64>,
    #[serde(default)]
    pub limits: Limits,
    pub allow_create: Option<AllowCreate>,
    #[serde(default, rename = "queue")]
    pub queues: Vec<QueueEntry>,
    /// Objects beside queues: `[[object]] name = "ready", kind = "event"`.
    #[serde(default, rename = "object")]
    pub objects: Vec<ObjectEntry>,
}

/// One `[[object]]`: `capacity` is a semaphore's permits, a barrier's parties or a dict's
/// entries; `max_item` a value's or dict's bytes.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ObjectEntry {
    pub name: String,
    pub kind: KindEntry,
    pub capacity: Option<u32>,
    pub max_item: Option<u32>,
}

/// The kinds an `[[object]]` may have.
#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum KindEntry {
    Event,
    Lock,
    Rlock,
    Semaphore,
    BoundedSemaphore,
    Value,
    Barrier,
    Dict,
    Condition,
    List,
}

/// `[limits]`: connections and time limits (seconds).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_connections: Option<usize>,
    pub max_handshaking: Option<usize>,
    pub max_handshaking_per_source: Option<usize>,
    pub handshake_timeout: Option<f64>,
    pub frame_timeout: Option<f64>,
    pub write_stall_timeout: Option<f64>,
}

/// `[allow_create]`: clients may create up to `slots` queues within these limits.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowCreate {
    pub slots: usize,
    pub capacity: Option<u32>,
    pub max_item: Option<u32>,
}

/// One `[[queue]]`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueEntry {
    pub name: String,
    pub capacity: Option<u32>,
    pub max_item: Option<u32>,
    /// `"value"` (the default: items must be well-formed values) or `"raw"` (any bytes).
    pub mode: Option<ModeEntry>,
}

/// A queue's mode in a config file.
#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ModeEntry {
    Value,
    Raw,
}

impl ConfigFile {
    /// Reads and checks `path`; relative paths inside it become relative to its directory.
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        let mut config: ConfigFile = toml::from_str(&text).map_err(|e| {
            // toml's own text quotes the source over several lines: say it in one.
            let at = match e.span() {
                Some(span) => {
                    let line_no = text[..span.start].matches('\n').count() + 1;
                    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
                    format!("line {line_no} ({line}): ")
                }
                None => String::new(),
            };
            format!("config file {}: {at}{}", path.display(), e.message())
        })?;
        for relative in [
            &mut config.authkey_file,
            &mut config.data_dir,
            &mut config.keys,
        ]
        .into_iter()
        .flatten()
        {
            if relative.is_relative() {
                let dir = path.parent().unwrap_or(Path::new("."));
                *relative = dir.join(&*relative);
            }
        }
        config
            .check()
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(policy) = &self.fsync {
            policy
                .parse::<depot_std::Fsync>()
                .map_err(|e| format!("fsync: {e}"))?;
        }
        for q in &self.queues {
            if q.name.is_empty() {
                return Err("a queue has an empty name".into());
            }
            if q.capacity == Some(0) {
                return Err(format!("queue '{}': capacity must be above 0", q.name));
            }
        }
        for o in &self.objects {
            if o.name.is_empty() {
                return Err("an object has an empty name".into());
            }
        }
        let limits = [
            ("handshake_timeout", self.limits.handshake_timeout),
            ("frame_timeout", self.limits.frame_timeout),
            ("write_stall_timeout", self.limits.write_stall_timeout),
        ];
        for (name, secs) in limits {
            if let Some(s) = secs {
                secs_to_duration(s).map_err(|e| format!("limits.{name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// A number of seconds as a duration, or why not.
pub fn secs_to_duration(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{secs} is not a usable number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, String> {
        let c: ConfigFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn the_example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/depot.toml");
        let c = ConfigFile::load(&path).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:5000"));
        assert!(c.queues.iter().any(|q| q.name == "task_queue"));
        assert!(c.allow_create.is_some());
        assert!(c.limits.max_connections.is_some());
        assert_eq!(c.require_encryption, Some(false));
    }

    #[test]
    fn authkey_file_is_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("depot-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("depot.toml");
        std::fs::write(&path, "authkey_file = \"key\"\n").unwrap();
        let c = ConfigFile::load(&path).unwrap();
        assert_eq!(c.authkey_file, Some(dir.join("key")));
        std::fs::write(&path, "data_dir = \"queues\"\n").unwrap();
        let c = ConfigFile::load(&path).unwrap();
        assert_eq!(c.data_dir, Some(dir.join("queues")));
        std::fs::write(&path, "keys = \"keys.toml\"\n").unwrap();
        let c = ConfigFile::load(&path).unwrap();
        assert_eq!(c.keys, Some(dir.join("keys.toml")));
        std::fs::write(&path, "authkey_file = \"/abs/key\"\n").unwrap();
        let c = ConfigFile::load(&path).unwrap();
        assert_eq!(c.authkey_file, Some(PathBuf::from("/abs/key")));
        std::fs::write(&path, "listen = 5\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err();
        assert!(!err.contains('\n') && err.contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(parse("").is_ok());
        assert!(parse("listen = 5").is_err());
        assert!(parse("lisen = \"127.0.0.1:1\"").is_err(), "unknown keys");
        assert!(
            parse("[[queue]]\ncapacity = 3").is_err(),
            "a queue needs a name"
        );
        assert!(parse("[[queue]]\nname = \"q\"\ncapacity = 0").is_err());
        assert!(parse("[[queue]]\nname = \"\"").is_err());
        assert!(parse("[limits]\nframe_timeout = -1.0").is_err());
        assert!(parse("data_dir = \"d\"\nfsync = \"interval=50\"").is_ok());
        assert!(parse("fsync = \"sometimes\"").is_err());
        assert!(
            parse("[allow_create]\ncapacity = 3").is_err(),
            "slots is required"
        );
    }
}
