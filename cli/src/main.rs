//! `depot`: run a manager, or put, get, inspect and stop one from the shell.
//!
//! Every subcommand takes the authkey from the `DEPOT_AUTHKEY` environment variable or from
//! `--authkey-file PATH` (one trailing newline stripped), never from the command line itself.
//! Every failure ends the process with a non-zero exit code and one line on stderr,
//! `depot: <what went wrong>`.
//!
//! Items are values (PROTOCOL.md, "Items: the value model"): `put` reads each argument as
//! JSON-like text and `get` prints each item as one line of JSON (see `depot_std::text`);
//! `--text` and `--raw` put plain strings and bytes as given, and `get --raw` writes bytes.

mod config;
mod keys;
mod metrics_http;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use depot_std::{
    text, Client, ConnectOptions, Fsync, Manager, ObjectKind, QueueMode, QueueOptions, QueueStat,
    Reconnect,
};

use config::ConfigFile;

/// The address every subcommand uses unless told otherwise (the seed scenario's).
const DEFAULT_ADDR: &str = "127.0.0.1:5000";
/// Capacity of a `--queue NAME` given without one.
const DEFAULT_CAPACITY: u32 = 1024;
/// Largest item of a served queue unless `--max-item` says otherwise.
const DEFAULT_MAX_ITEM: u32 = 64 * 1024;
/// The environment variable that holds the authkey.
const AUTHKEY_ENV: &str = "DEPOT_AUTHKEY";
/// The environment variable that names the client's key on the manager's keyring.
const KEY_NAME_ENV: &str = "DEPOT_KEY_NAME";

#[derive(Parser, Debug)]
#[command(
    name = "depot",
    version,
    about = "Named shared FIFO queues over TCP, guarded by an authkey (Python's BaseManager, in Rust).",
    after_help = "The authkey comes from the DEPOT_AUTHKEY environment variable or from --authkey-file PATH."
)]
struct Cli {
    /// Read the authkey from this file (one trailing newline is stripped) instead of $DEPOT_AUTHKEY.
    #[arg(long, value_name = "PATH", global = true)]
    authkey_file: Option<PathBuf>,

    /// The name of the authkey on the manager's keyring (`serve --keys`) instead of $DEPOT_KEY_NAME; none: the default key.
    #[arg(long, value_name = "NAME", global = true)]
    key_name: Option<String>,

    /// More log output on stderr (-v: debug, -vv: trace). RUST_LOG, when set, wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of `serve`'s many flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run a manager in the foreground until Ctrl-C, SIGTERM or a permitted remote shutdown.
    Serve(Box<ServeArgs>),
    /// Put items into a queue: the VALUEs given, or else one item per line of stdin.
    #[command(after_help = PUT_HELP)]
    Put(PutArgs),
    /// Take items from a queue and print each as one line of JSON on stdout.
    #[command(after_help = GET_HELP)]
    Get(GetArgs),
    /// Show every queue of a manager (mode, length, capacity, waiters, totals), its connections,
    /// and its backend's health when it has one (kind, server or disconnected since when,
    /// reconnects, last error).
    Stat(StatArgs),
    /// Ask a manager to stop (it must have been started with --allow-remote-shutdown).
    Shutdown(ConnectArgs),
    /// Set, clear or test an event, or wait for it (`serve --event NAME`).
    Event(EventArgs),
    /// Call a manager's registered call (`close` stops a manager that allows remote shutdown)
    /// and print its response as one line of JSON.
    Call(CallArgs),
    /// Make keys for `serve --keys FILE`.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Print a [[key]] entry with a fresh random 32-byte key (64 hex digits) for a keys file.
    New {
        /// The key's name (what clients give as --key-name).
        name: String,
    },
}

/// What `serve --help` adds after the options.
const SERVE_HELP: &str = r#"Settings can also come from a TOML file (--config FILE); a flag given on the command line
overrides the file's value, and a --queue replaces the file's queue of the same name.
Every key, with its flag:

  listen = "127.0.0.1:5000"           # --listen
  authkey_file = "authkey"            # --authkey-file (relative to the config file)
  keys = "keys.toml"                  # --keys (relative to the config file)
  metrics = "127.0.0.1:9100"          # --metrics
  allow_remote_shutdown = false       # --allow-remote-shutdown[=BOOL]
  require_encryption = false          # --require-encryption[=BOOL]
  max_item = 65536                    # --max-item
  data_dir = "/var/lib/depot"         # --data-dir (relative to the config file)
  fsync = "interval=100"              # --fsync: always, interval[=MS] or never
  busy_poll_us = 50                   # --busy-poll-us (0: sleep as soon as idle)
  [limits]
  max_connections = 16384             # --max-connections (default: 16384 or what `ulimit -n` allows)
  max_handshaking = 8192              # --max-handshaking (default: half of max_connections)
  max_handshaking_per_source = 256    # --max-handshaking-per-source (0: no limit)
  handshake_timeout = 2               # --handshake-timeout (seconds)
  frame_timeout = 10                  # --frame-timeout
  write_stall_timeout = 30            # --write-stall-timeout
  [allow_create]
  slots = 8                           # --allow-create
  capacity = 1024
  max_item = 65536
  [[queue]]
  name = "task_queue"                 # --queue task_queue:100
  capacity = 100
  max_item = 65536

The manager stops gracefully on Ctrl-C or SIGTERM: no new connections, blocked clients are
told it is shutting down, replies are flushed; it logs the items still queued.

A keys file (--keys FILE) names keys and what each may do; clients pick theirs with
--key-name NAME (or $DEPOT_KEY_NAME) and its authkey in $DEPOT_AUTHKEY. SIGHUP rereads it:
connections of keys still there stay, those of removed or changed keys are closed.

  [[key]]
  name = "sensor-7"
  key = "3f9c...e1"             # the authkey as text (`depot keys new NAME` makes an entry)
  put = ["telemetry"]           # queues it may put to; "jobs/*" is a prefix, "*" every queue
  get = []                      # ... take from
  create = []                   # ... create
  admin = []                    # ... see in `depot stat`; "*" also allows `depot shutdown`
  [[key]]
  name = "ops"
  key_file = "ops.key"          # or key_hex = "..." (bytes); name = "" is the default key
  get = ["*"]"#;

#[derive(Args, Debug)]
#[command(after_help = SERVE_HELP)]
struct ServeArgs {
    /// Read the settings from this TOML file; flags override it (see below, and examples/depot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:5000] (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// A queue to serve, as NAME, NAME:CAPACITY or NAME:CAPACITY:raw (default capacity 1024).
    /// A queue holds values (one well-formed value per item, anything else is refused) unless
    /// it ends in `:raw`, which takes any bytes. Repeat for more.
    #[arg(long = "queue", value_name = "NAME[:CAPACITY[:raw]]", value_parser = parse_queue_spec)]
    queues: Vec<QueueSpecArg>,

    /// An event to serve (Python's `Event`). Repeat for more.
    #[arg(long = "event", value_name = "NAME", value_parser = object_parser(ObjectKind::Event))]
    events: Vec<ObjectArg>,

    /// A lock to serve; a client that dies holding it releases it. Repeat for more.
    #[arg(long = "lock", value_name = "NAME", value_parser = object_parser(ObjectKind::Lock))]
    locks: Vec<ObjectArg>,

    /// A lock its holder may take again (Python's `RLock`). Repeat for more.
    #[arg(long = "rlock", value_name = "NAME", value_parser = object_parser(ObjectKind::RLock))]
    rlocks: Vec<ObjectArg>,

    /// A semaphore of N permits [default: 1]. Repeat for more.
    #[arg(long = "semaphore", value_name = "NAME[:N]", value_parser = object_parser(ObjectKind::Semaphore))]
    semaphores: Vec<ObjectArg>,

    /// A semaphore whose permits never exceed N [default: 1]. Repeat for more.
    #[arg(long = "bounded-semaphore", value_name = "NAME[:N]", value_parser = object_parser(ObjectKind::BoundedSemaphore))]
    bounded_semaphores: Vec<ObjectArg>,

    /// A value of at most BYTES [default: 65536], null at first. Repeat for more.
    #[arg(long = "value", value_name = "NAME[:BYTES]", value_parser = object_parser(ObjectKind::Value))]
    values: Vec<ObjectArg>,

    /// A barrier for N parties. Repeat for more.
    #[arg(long = "barrier", value_name = "NAME:N", value_parser = object_parser(ObjectKind::Barrier))]
    barriers: Vec<ObjectArg>,

    /// A dict of at most CAP entries [default: 1024] in 64 KiB. Repeat for more.
    #[arg(long = "dict", value_name = "NAME[:CAP]", value_parser = object_parser(ObjectKind::Dict))]
    dicts: Vec<ObjectArg>,

    /// A condition (Python's `Condition`): a reentrant lock its holder waits on until
    /// notified. Repeat for more.
    #[arg(long = "condition", value_name = "NAME", value_parser = object_parser(ObjectKind::Condition))]
    conditions: Vec<ObjectArg>,

    /// A list of at most CAP values [default: 1024] in 64 KiB. Repeat for more.
    #[arg(long = "list", value_name = "NAME[:CAP]", value_parser = object_parser(ObjectKind::List))]
    lists: Vec<ObjectArg>,

    /// Largest item, in bytes, of the queues that do not set their own [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_item: Option<u32>,

    /// Let clients stop the manager (`depot shutdown`); `=false` overrides a config file's true.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    allow_remote_shutdown: Option<bool>,

    /// Refuse depot clients that do not encrypt their frames (they get a clear "encryption
    /// required" error). Without it, frames are encrypted for every client that can, which
    /// depot clients do by default. Python clients are served as before: their protocol has
    /// no encryption.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    require_encryption: Option<bool>,

    /// Let clients create up to N queues of their own (limits from the config's [allow_create]).
    #[arg(long, value_name = "N")]
    allow_create: Option<usize>,

    /// Most connections served at once [default: 16384, fewer if `ulimit -n` is lower].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,

    /// Most connections in their handshake at once; beyond it the oldest is evicted [default: half of --max-connections].
    #[arg(long, value_name = "N")]
    max_handshaking: Option<usize>,

    /// Most connections in their handshake at once from one IP address; more are told busy (0: no limit) [default: 256].
    #[arg(long, value_name = "N")]
    max_handshaking_per_source: Option<usize>,

    /// Seconds a new connection has to finish its handshake [default: 2].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    handshake_timeout: Option<Duration>,

    /// Seconds a frame may take from its first byte to its last [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    frame_timeout: Option<Duration>,

    /// Seconds a peer may leave its replies unread before it is dropped [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    write_stall_timeout: Option<Duration>,

    /// Microseconds the event loop (and, with --backend, the NATS connection's reader) keeps looking for more input, yielding its CPU, before it sleeps after a busy turn: spares one-request-at-a-time clients a wake-up per request, at the price of CPU time while busy (0: sleep at once) [default: 50].
    #[arg(long, value_name = "MICROS")]
    busy_poll_us: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free port; printed on stdout).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,

    /// Named keys and their rights per queue (TOML; see below); reread on SIGHUP. $DEPOT_AUTHKEY, if set, stays the default key.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Items of QUEUE delivered N times under a lease (`get --lease`) and still not acked go to the
    /// queue DEAD instead of back to QUEUE (both declared queues; N from 1 to 255). Repeat for more.
    #[arg(long = "dead-letter", value_name = "QUEUE:DEAD:N", value_parser = parse_dead_letter)]
    dead_letters: Vec<(String, String, u8)>,

    /// Keep the queues in DIR (created if missing): a restarted manager serves what was
    /// queued when it stopped or crashed. Without it, queues live in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// When the --data-dir log is synced to disk: always (before each reply), interval[=MS]
    /// (every MS milliseconds) or never (left to the OS). Every policy survives a crash of
    /// the manager's process; this bounds what an OS crash or power loss loses [default: interval=100].
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    fsync: Option<Fsync>,

    /// Keep every queue in NATS JetStream instead (nats://HOST:PORT[,HOST:PORT…], or tls://…
    /// for TLS): any number of managers given the same servers serve the same queues as
    /// stateless gateways (see SCALING.md). Not with --data-dir.
    #[arg(long, value_name = "URL")]
    backend: Option<String>,
    /// Credentials for the --backend servers: a NATS .creds file (user JWT and nkey seed), or
    /// a file of `user: …` and `password: …` lines, or a `token: …` line.
    #[arg(
        long,
        value_name = "FILE",
        requires = "backend",
        conflicts_with = "backend_nkey"
    )]
    backend_creds: Option<PathBuf>,
    /// Authenticate to the --backend servers with the user nkey whose seed (SU…) is in FILE.
    #[arg(long, value_name = "FILE", requires = "backend")]
    backend_nkey: Option<PathBuf>,
    /// TLS to every --backend server (as a tls:// URL); needs --backend-tls-ca.
    #[arg(long, requires = "backend")]
    backend_tls: bool,
    /// The PEM certificates that signed the --backend servers' certificates: the only roots
    /// trusted (the system's are not). Turns TLS on.
    #[arg(long, value_name = "FILE", requires = "backend")]
    backend_tls_ca: Option<PathBuf>,
    /// A PEM client certificate (chain) to show the --backend servers (mutual TLS), with
    /// --backend-tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["backend", "backend_tls_key"])]
    backend_tls_cert: Option<PathBuf>,
    /// The PEM private key of --backend-tls-cert.
    #[arg(long, value_name = "FILE", requires_all = ["backend", "backend_tls_cert"])]
    backend_tls_key: Option<PathBuf>,
    /// Copies of each queue's stream in a JetStream cluster [default: 1].
    #[arg(long, value_name = "N", requires = "backend")]
    backend_replicas: Option<u32>,
    /// Seconds a leased item stays with its holder before JetStream redelivers it (also when
    /// the gateway holding it is gone) [default: 30].
    #[arg(long, value_name = "SECS", requires = "backend")]
    backend_ack_wait: Option<f64>,
    /// Milliseconds a queue's next item, taken from JetStream ahead of the next get when more
    /// are waiting, stays with this gateway for a get to take it; then it goes back, counted
    /// by JetStream as a delivery. 0: no read-ahead (each get asks JetStream) [default: 250].
    #[arg(long, value_name = "MS", requires = "backend")]
    backend_read_ahead: Option<u64>,
}

/// `QUEUE:DEAD:N` of `serve --dead-letter`.
fn parse_dead_letter(s: &str) -> Result<(String, String, u8), String> {
    let mut parts = s.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(q), Some(d), Some(n), None) if !q.is_empty() && !d.is_empty() => {
            let n: u8 = n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("'{n}' is not a delivery count from 1 to 255"))?;
            Ok((q.to_owned(), d.to_owned(), n))
        }
        _ => Err("expected QUEUE:DEAD:N".into()),
    }
}

fn parse_fsync(s: &str) -> Result<Fsync, String> {
    s.parse()
}

#[derive(Args, Debug)]
struct EventArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// What to do: set, clear, is-set (prints true or false) or wait.
    #[arg(value_enum)]
    action: EventAction,

    /// The event's name.
    #[arg(value_name = "NAME")]
    name: String,

    /// With wait: fail after this many seconds; without it, wait as long as it takes.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
}

#[derive(Args, Debug)]
struct CallArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// The call's name.
    #[arg(value_name = "NAME")]
    name: String,

    /// The request, as `depot put` reads a VALUE [default: null].
    #[arg(value_name = "VALUE")]
    request: Option<String>,

    /// Fail after this many seconds; without it, wait as long as the handler runs.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum EventAction {
    Set,
    Clear,
    IsSet,
    Wait,
}

#[derive(Args, Debug)]
struct StatArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// Print one JSON object (one line) instead of a table; its `backend` is the backend's
    /// health, or null when the manager keeps its queues itself.
    #[arg(long)]
    json: bool,

    /// Print again every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    watch: Option<Duration>,
}

#[derive(Args, Debug)]
struct ConnectArgs {
    /// The manager's address.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADDR)]
    connect: String,
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// The queue to put into.
    #[arg(long, value_name = "NAME")]
    queue: String,

    /// Wait at most this long (in seconds) for room for each item; without it, wait as long as it takes.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,

    /// Put each VALUE (or line) as text, not parsed: `--text hello` puts the string "hello".
    #[arg(long, conflicts_with = "raw")]
    text: bool,

    /// Put each VALUE (or line) as the bytes given, not as a value (for raw queues).
    #[arg(long)]
    raw: bool,

    /// Reconnect when the connection is lost or the manager stops (a put it refused while
    /// stopping goes to the manager that comes back), and keep a session so that a put sent
    /// again is applied once by a manager that keeps sessions (PROTOCOL.md §16).
    #[arg(long)]
    reconnect: bool,

    /// The items, as values: 42, -1.5, '"text"', true, false, null, '[1, "a"]', '{"k": 2}'.
    /// Without any, each line of stdin is one item.
    #[arg(value_name = "VALUE", allow_negative_numbers = true)]
    values: Vec<OsString>,
}

const PUT_HELP: &str = "Each VALUE is JSON-like text: numbers, \"quoted text\", true, false, null, [lists] and \
{maps} (any value may be a key: {1: \"a\"}), NaN and Infinity, and the forms depot get prints:
{\"$bytes\": \"<base64>\"}, {\"$tuple\": [...]}, {\"$map\": [[key, value], ...]}, {\"$python_pickle\": \"<base64>\"}.
Example: depot put --queue jobs 42 '\"hello\"' '{\"id\": 7, \"tags\": [\"a\", \"b\"]}'";

const GET_HELP: &str = "Each item prints as one line of JSON: numbers, \"text\", true, false, null, [lists] (tuples \
too), {maps with text keys}; bytes as {\"$bytes\": \"<base64>\"}, an opaque Python value as \
{\"$python_pickle\": \"<base64>\"}, a map with other keys as {\"$map\": [[key, value], ...]}, and an item of a \
raw queue that is not a value as {\"$raw\": \"<base64>\"}. --raw writes each item's bytes as they are, \
followed by a newline.";

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    conn: ConnectArgs,

    /// The queue to take from.
    #[arg(long, value_name = "NAME")]
    queue: String,

    /// How many items to take; 0 takes items until a timeout or Ctrl-C.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: u64,

    /// Wait at most this long (in seconds) for each item, then fail; without it, wait as long as it takes.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,

    /// Write each item's bytes as they are (then a newline) instead of JSON.
    #[arg(long)]
    raw: bool,

    /// Take each item under a lease of SECS seconds and acknowledge it only once it is written to
    /// stdout and flushed: an item whose output failed, or whose consumer died first, goes back to
    /// the head of the queue (at-least-once instead of at-most-once).
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    lease: Option<Duration>,
}

/// An object of `serve --event`, `--lock`, … : its name and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ObjectArg {
    name: String,
    kind: ObjectKind,
    capacity: u32,
    max_item: u32,
}

/// Bytes of a value or dict unless given.
const DEFAULT_OBJECT_BYTES: u32 = 64 * 1024;

/// The limits of an object of `kind` whose `--kind NAME[:N]` flag or `[[object]]` entry gave
/// `n` (if anything): `(capacity, max_item)`.
fn object_limits(kind: ObjectKind, n: Option<u32>) -> Result<(u32, u32), String> {
    Ok(match kind {
        ObjectKind::Semaphore | ObjectKind::BoundedSemaphore => (n.unwrap_or(1), 0),
        ObjectKind::Value => (1, n.unwrap_or(DEFAULT_OBJECT_BYTES)),
        ObjectKind::Barrier => (n.ok_or("a barrier needs its parties: NAME:N")?, 0),
        ObjectKind::Dict | ObjectKind::List => {
            (n.unwrap_or(DEFAULT_CAPACITY), DEFAULT_OBJECT_BYTES)
        }
        _ if n.is_some() => return Err(format!("a {} takes no number", kind.name())),
        _ => (1, 0),
    })
}

/// A parser of `NAME[:N]` for objects of `kind`.
fn object_parser(kind: ObjectKind) -> impl Fn(&str) -> Result<ObjectArg, String> + Clone {
    move |s: &str| {
        let (name, n) = match s.rsplit_once(':') {
            Some((name, n)) => {
                let n = n
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0 || matches!(kind, ObjectKind::Semaphore))
                    .ok_or_else(|| format!("'{n}' is not a whole number above 0"))?;
                (name, Some(n))
            }
            None => (s, None),
        };
        if name.is_empty() {
            return Err("the name is empty".into());
        }
        let (capacity, max_item) = object_limits(kind, n)?;
        Ok(ObjectArg {
            name: name.to_owned(),
            kind,
            capacity,
            max_item,
        })
    }
}

/// `NAME[:CAPACITY[:raw]]` of `serve --queue`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct QueueSpecArg {
    name: String,
    capacity: u32,
    mode: QueueMode,
}

fn parse_queue_spec(s: &str) -> Result<QueueSpecArg, String> {
    let (s, mode) = match s.strip_suffix(":raw") {
        Some(rest) if rest.contains(':') => (rest, QueueMode::Raw),
        _ => (s, QueueMode::Value),
    };
    let (name, capacity) = match s.rsplit_once(':') {
        Some((name, cap)) => {
            let capacity = cap
                .parse::<u32>()
                .ok()
                .filter(|&c| c > 0)
                .ok_or_else(|| format!("capacity '{cap}' is not a whole number above 0"))?;
            (name, capacity)
        }
        None => (s, DEFAULT_CAPACITY),
    };
    if name.is_empty() {
        return Err("the queue name is empty".into());
    }
    Ok(QueueSpecArg {
        name: name.to_owned(),
        capacity,
        mode,
    })
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("'{s}' is not a usable number of seconds"))
}

fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    match parse_secs(s)? {
        Duration::ZERO => Err("the interval must be above 0 seconds".into()),
        d => Ok(d),
    }
}

/// Why the CLI failed: printed as `depot: {self}`.
#[derive(Debug)]
enum CliError {
    Depot(depot_std::Error),
    Msg(String),
    /// The command line (with its config file) does not say what to do: exit code 2, like
    /// clap's own usage errors.
    Usage(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Depot(e) => e.fmt(f),
            CliError::Msg(m) | CliError::Usage(m) => f.write_str(m),
        }
    }
}

impl From<depot_std::Error> for CliError {
    fn from(e: depot_std::Error) -> Self {
        CliError::Depot(e)
    }
}

type CliResult<T = ()> = Result<T, CliError>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error's text holds.
            let line = e.to_string().replace(['\n', '\r'], " ");
            eprintln!("depot: {line}");
            match e {
                CliError::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Logs go to stderr. `serve` logs at info by default; the client commands log nothing unless
/// asked, so that a failure prints exactly one line.
fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.verbose, &cli.command) {
        (0, Command::Serve(_)) => "info",
        (0, _) => "off",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).unwrap_or_else(|_| EnvFilter::new(default)),
        _ => EnvFilter::new(default),
    };
    // Colours only for a person at a terminal, never into a log file.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

fn run(cli: Cli) -> CliResult {
    let file = cli.authkey_file;
    let name = cli
        .key_name
        .or_else(|| std::env::var(KEY_NAME_ENV).ok())
        .unwrap_or_default();
    let connect = |addr: &str| -> CliResult<Client> {
        Ok(Client::connect_as(addr, &name, authkey(file.as_deref())?)?)
    };
    match cli.command {
        // `serve` may also name its authkey file in its config file.
        Command::Serve(args) => serve(*args, file),
        Command::Put(args) if args.reconnect => {
            let options = ConnectOptions::new()
                .key_name(&name)
                .reconnect(Reconnect::default());
            let authkey = authkey(file.as_deref())?;
            put(
                &args,
                &Client::connect_with(&args.conn.connect, authkey, &options)?,
            )
        }
        Command::Put(args) => put(&args, &connect(&args.conn.connect)?),
        Command::Get(args) => get(&args, &connect(&args.conn.connect)?),
        Command::Stat(args) => stat(&args, &connect(&args.conn.connect)?, &connect),
        Command::Shutdown(args) => {
            connect(&args.connect)?.shutdown_manager()?;
            Ok(())
        }
        Command::Event(args) => event(&args, &connect(&args.conn.connect)?),
        Command::Call(args) => call(&args, &connect(&args.conn.connect)?),
        Command::Keys(KeysCommand::New { name }) => {
            let entry = keys::new_entry(&name).map_err(CliError::Usage)?;
            print!("{entry}");
            Ok(())
        }
    }
}

/// The authkey from `--authkey-file` or else `$DEPOT_AUTHKEY`.
fn authkey(file: Option<&Path>) -> CliResult<Vec<u8>> {
    let mut key = match file {
        Some(path) => std::fs::read(path).map_err(|e| {
            CliError::Msg(format!(
                "cannot read the authkey file {}: {e}",
                path.display()
            ))
        })?,
        None => match std::env::var_os(AUTHKEY_ENV) {
            Some(v) => v.into_encoded_bytes(),
            None => {
                return Err(CliError::Msg(format!(
                    "no authkey: set {AUTHKEY_ENV} or pass --authkey-file PATH"
                )))
            }
        },
    };
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(CliError::Msg(match file {
            Some(path) => format!("the authkey file {} is empty", path.display()),
            None => format!("the authkey in {AUTHKEY_ENV} is empty"),
        }));
    }
    Ok(key)
}

/// What `serve` runs: the config file's settings with the flags laid over them.
#[derive(Debug)]
struct ServeSettings {
    listen: String,
    authkey_file: Option<PathBuf>,
    metrics: Option<String>,
    keys: Option<PathBuf>,
    allow_remote_shutdown: bool,
    require_encryption: bool,
    queues: Vec<(String, QueueOptions)>,
    objects: Vec<ObjectArg>,
    create: Option<(usize, QueueOptions)>,
    max_connections: Option<usize>,
    max_handshaking: Option<usize>,
    max_handshaking_per_source: Option<usize>,
    handshake_timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    write_stall_timeout: Option<Duration>,
    data_dir: Option<PathBuf>,
    fsync: Option<Fsync>,
    busy_poll_us: Option<u64>,
}

impl ServeSettings {
    fn new(args: ServeArgs, authkey_file: Option<PathBuf>) -> CliResult<ServeSettings> {
        let file = match &args.config {
            Some(path) => ConfigFile::load(path).map_err(CliError::Msg)?,
            None => ConfigFile::default(),
        };
        let max_item = args.max_item.or(file.max_item).unwrap_or(DEFAULT_MAX_ITEM);
        let options =
            |capacity: Option<u32>, own_max_item: Option<u32>, mode: QueueMode| QueueOptions {
                capacity: capacity.unwrap_or(DEFAULT_CAPACITY),
                max_item: own_max_item.unwrap_or(max_item),
                storage_bytes: None,
                mode,
            };
        let mut queues: Vec<(String, QueueOptions)> = file
            .queues
            .iter()
            .map(|q| {
                let mode = match q.mode {
                    Some(config::ModeEntry::Raw) => QueueMode::Raw,
                    _ => QueueMode::Value,
                };
                (q.name.clone(), options(q.capacity, q.max_item, mode))
            })
            .collect();
        for q in &args.queues {
            let opts = options(Some(q.capacity), None, q.mode);
            match queues.iter_mut().find(|(name, _)| *name == q.name) {
                Some(entry) => entry.1 = opts,
                None => queues.push((q.name.clone(), opts)),
            }
        }
        let mut objects = Vec::new();
        for o in &file.objects {
            use config::KindEntry as K;
            let kind = match o.kind {
                K::Event => ObjectKind::Event,
                K::Lock => ObjectKind::Lock,
                K::Rlock => ObjectKind::RLock,
                K::Semaphore => ObjectKind::Semaphore,
                K::BoundedSemaphore => ObjectKind::BoundedSemaphore,
                K::Value => ObjectKind::Value,
                K::Barrier => ObjectKind::Barrier,
                K::Dict => ObjectKind::Dict,
                K::Condition => ObjectKind::Condition,
                K::List => ObjectKind::List,
            };
            let n = match kind {
                ObjectKind::Value => o.max_item,
                _ => o.capacity,
            };
            let (capacity, max_item) = object_limits(kind, n)
                .map_err(|e| CliError::Msg(format!("object '{}': {e}", o.name)))?;
            let max_item = o.max_item.unwrap_or(max_item);
            objects.push(ObjectArg {
                name: o.name.clone(),
                kind,
                capacity,
                max_item,
            });
        }
        let flags = [
            &args.events,
            &args.locks,
            &args.rlocks,
            &args.semaphores,
            &args.bounded_semaphores,
            &args.values,
            &args.barriers,
            &args.dicts,
            &args.conditions,
            &args.lists,
        ];
        for o in flags.into_iter().flatten() {
            match objects.iter_mut().find(|x| x.name == o.name) {
                Some(entry) => *entry = o.clone(),
                None => objects.push(o.clone()),
            }
        }
        let created = file.allow_create.as_ref();
        let slots = args.allow_create.or(created.map(|c| c.slots)).unwrap_or(0);
        let create = (slots > 0).then(|| {
            let opts = options(
                created.and_then(|c| c.capacity),
                created.and_then(|c| c.max_item),
                QueueMode::Value,
            );
            (slots, opts)
        });
        if queues.is_empty() && objects.is_empty() && create.is_none() {
            return Err(CliError::Usage(
                "no queue to serve: give --queue NAME[:CAPACITY], or [[queue]] in a --config file"
                    .into(),
            ));
        }
        let secs = |flag: Option<Duration>, key: Option<f64>| -> CliResult<Option<Duration>> {
            match (flag, key) {
                (Some(d), _) => Ok(Some(d)),
                (None, Some(s)) => config::secs_to_duration(s).map(Some).map_err(CliError::Msg),
                (None, None) => Ok(None),
            }
        };
        let limits = &file.limits;
        let fsync = match (args.fsync, &file.fsync) {
            (Some(policy), _) => Some(policy),
            (None, Some(text)) => Some(text.parse().map_err(CliError::Msg)?),
            (None, None) => None,
        };
        let data_dir = args.data_dir.or(file.data_dir);
        if fsync.is_some() && data_dir.is_none() {
            return Err(CliError::Usage(
                "--fsync applies to a --data-dir: give one (queues are in memory otherwise)".into(),
            ));
        }
        Ok(ServeSettings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_ADDR.into()),
            authkey_file: authkey_file.or(file.authkey_file),
            metrics: args.metrics.or(file.metrics),
            keys: args.keys.or(file.keys),
            allow_remote_shutdown: args
                .allow_remote_shutdown
                .or(file.allow_remote_shutdown)
                .unwrap_or(false),
            require_encryption: args
                .require_encryption
                .or(file.require_encryption)
                .unwrap_or(false),
            queues,
            objects,
            create,
            max_connections: args.max_connections.or(limits.max_connections),
            max_handshaking: args.max_handshaking.or(limits.max_handshaking),
            max_handshaking_per_source: args
                .max_handshaking_per_source
                .or(limits.max_handshaking_per_source),
            handshake_timeout: secs(args.handshake_timeout, limits.handshake_timeout)?,
            frame_timeout: secs(args.frame_timeout, limits.frame_timeout)?,
            write_stall_timeout: secs(args.write_stall_timeout, limits.write_stall_timeout)?,
            data_dir,
            fsync,
            busy_poll_us: args.busy_poll_us.or(file.busy_poll_us),
        })
    }
}

/// The JetStream backend the serve flags ask for, if any.
fn nats_backend(args: &ServeArgs) -> CliResult<Option<depot_nats::JetStreamOptions>> {
    let Some(url) = &args.backend else {
        return Ok(None);
    };
    let url = depot_nats::parse_backend_url(url).map_err(CliError::Usage)?;
    let mut auth = url.auth;
    if let Some(path) = &args.backend_creds {
        auth = depot_nats::read_creds(path).map_err(CliError::Msg)?;
    }
    if let Some(path) = &args.backend_nkey {
        auth = depot_nats::Auth::NKey(depot_nats::UserKey::from_file(path).map_err(CliError::Msg)?);
    }
    let mut opts = depot_nats::JetStreamOptions::new(url.servers);
    opts.auth = auth;
    let client = args
        .backend_tls_cert
        .as_deref()
        .zip(args.backend_tls_key.as_deref());
    if url.tls || args.backend_tls || args.backend_tls_ca.is_some() || client.is_some() {
        let ca = args.backend_tls_ca.as_deref().ok_or_else(|| {
            CliError::Usage(
                "TLS to the backend needs --backend-tls-ca FILE: the PEM certificates that \
                 signed the NATS servers' certificates"
                    .into(),
            )
        })?;
        opts.tls = Some(depot_nats::TlsConfig::from_files(ca, client).map_err(CliError::Msg)?);
    }
    if let Some(n) = args.backend_replicas {
        if !(1..=5).contains(&n) {
            return Err(CliError::Usage("--backend-replicas: from 1 to 5".into()));
        }
        opts.replicas = n;
    }
    if let Some(secs) = args.backend_ack_wait {
        opts.ack_wait = config::secs_to_duration(secs).map_err(CliError::Usage)?;
    }
    if let Some(ms) = args.backend_read_ahead {
        opts.read_ahead = Duration::from_millis(ms);
    }
    Ok(Some(opts))
}

fn serve(args: ServeArgs, authkey_file: Option<PathBuf>) -> CliResult {
    let dead_letters = args.dead_letters.clone();
    let mut backend = nats_backend(&args)?;
    let s = ServeSettings::new(args, authkey_file)?;
    if let (Some(opts), Some(us)) = (&mut backend, s.busy_poll_us) {
        opts.busy_poll = Duration::from_micros(us);
    }
    let mut builder = Manager::builder()
        .listen(s.listen.as_str())
        .allow_remote_shutdown(s.allow_remote_shutdown);
    // With a keys file, the authkey (the default key) is optional.
    let given = s.authkey_file.is_some() || std::env::var_os(AUTHKEY_ENV).is_some();
    if s.keys.is_none() || given {
        builder = builder.authkey(authkey(s.authkey_file.as_deref())?);
    }
    if let Some(path) = &s.keys {
        builder = builder.keyring(keys::load(path).map_err(CliError::Msg)?);
    }
    if s.require_encryption {
        builder = builder.encryption(depot_std::Encryption::Required);
    }
    for (queue, dead, n) in &dead_letters {
        builder = builder.dead_letter(queue, dead, *n);
    }
    for (name, opts) in &s.queues {
        builder = builder.queue_with(name, *opts);
    }
    for o in &s.objects {
        builder = builder.object(&o.name, o.kind, o.capacity, o.max_item);
    }
    if let Some((slots, opts)) = s.create {
        builder = builder.allow_create(slots, opts);
    }
    if let Some(n) = s.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(n) = s.max_handshaking {
        builder = builder.max_handshaking(n);
    }
    if let Some(n) = s.max_handshaking_per_source {
        builder = builder.max_handshaking_per_source(n);
    }
    if let Some(t) = s.handshake_timeout {
        builder = builder.handshake_timeout(t);
    }
    if let Some(t) = s.frame_timeout {
        builder = builder.frame_timeout(t);
    }
    if let Some(t) = s.write_stall_timeout {
        builder = builder.write_stall_timeout(t);
    }
    if let Some(us) = s.busy_poll_us {
        builder = builder.busy_poll(Duration::from_micros(us));
    }
    if let Some(dir) = &s.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(policy) = s.fsync {
        builder = builder.fsync(policy);
    }
    if let Some(opts) = backend {
        builder = builder.backend("nats", depot_nats::backend(opts));
    }
    // Bound before the manager starts, so a taken port fails the command at once.
    let metrics = match &s.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr.as_str())
                .map_err(|e| CliError::Msg(format!("cannot serve metrics on {addr}: {e}")))?,
        ),
        None => None,
    };

    let handle = Arc::new(builder.start()?);
    if let Err(e) = watch_signals(handle.clone(), s.keys.clone()) {
        let _ = handle.shutdown();
        return Err(CliError::Msg(format!(
            "cannot install the signal handler: {e}"
        )));
    }
    let addr = handle.address();
    tracing::info!(%addr, queues = s.queues.len(), "serving");
    let mut lines = vec![format!("listening on {addr}")];
    if let Some(listener) = metrics {
        let at = listener
            .local_addr()
            .map_err(|e| CliError::Msg(format!("metrics listener: {e}")))?;
        metrics_http::spawn(listener, handle.clone())
            .map_err(|e| CliError::Msg(format!("cannot start the metrics thread: {e}")))?;
        tracing::info!(address = %at, "serving metrics (GET /metrics)");
        lines.push(format!("metrics on http://{at}/metrics"));
    }
    {
        let mut out = io::stdout().lock();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    handle.join()?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C and SIGTERM stop the manager the way `ManagerHandle::stop` does, whether or not
/// clients may stop it too; SIGHUP rereads the keys file (a file that does not load is
/// logged and changes nothing), or stops the manager when there is none.
fn watch_signals(
    handle: Arc<depot_std::ManagerHandle>,
    keys_file: Option<PathBuf>,
) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("depot-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal != SIGHUP {
                    tracing::info!("signal received: shutting down");
                    if let Err(e) = handle.stop() {
                        tracing::warn!("cannot stop the manager: {e}");
                    }
                    continue;
                }
                let Some(path) = &keys_file else {
                    // Without keys to reload, a hang-up stops the manager as it always has.
                    tracing::info!("SIGHUP received: shutting down");
                    if let Err(e) = handle.stop() {
                        tracing::warn!("cannot stop the manager: {e}");
                    }
                    continue;
                };
                match keys::load(path) {
                    Ok(keyring) => match handle.set_keyring(keyring) {
                        Ok(()) => tracing::info!(file = %path.display(), "reloading the keys"),
                        Err(e) => tracing::warn!("keys not reloaded: {e}"),
                    },
                    Err(e) => tracing::warn!("keys not reloaded: {e}"),
                }
            }
        })?;
    Ok(())
}

fn put(args: &PutArgs, client: &Client) -> CliResult {
    let queue = client.raw_queue(&args.queue)?;
    let put_one = |given: &[u8]| -> CliResult {
        let item = if args.raw {
            given.to_vec()
        } else {
            let given = std::str::from_utf8(given).map_err(|_| {
                CliError::Msg("a value must be UTF-8 text (use --raw for bytes)".into())
            })?;
            if args.text {
                encode_text(given)
            } else {
                text::parse(given).map_err(CliError::Msg)?
            }
        };
        match args.timeout {
            Some(t) => queue.put_timeout(&item, t)?,
            None => queue.put(&item)?,
        }
        Ok(())
    };
    if !args.values.is_empty() {
        for v in &args.values {
            put_one(v.as_encoded_bytes())?;
        }
        return Ok(());
    }
    let stdin = io::stdin().lock();
    let mut line = Vec::new();
    let mut reader = io::BufReader::new(stdin);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::Msg(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        put_one(&line)?;
    }
}

fn get(args: &GetArgs, client: &Client) -> CliResult {
    let queue = client.raw_queue(&args.queue)?;
    let mut out = io::stdout().lock();
    let mut got = 0u64;
    while args.count == 0 || got < args.count {
        let (item, lease) = match (args.lease, args.timeout) {
            (Some(l), Some(t)) => leased(queue.get_leased_timeout(l, t)?),
            (Some(l), None) => leased(queue.get_leased(l)?),
            (None, Some(t)) => (queue.get_timeout(t)?, None),
            (None, None) => (queue.get()?, None),
        };
        got += 1;
        let written = if args.raw {
            out.write_all(&item).and_then(|()| out.write_all(b"\n"))
        } else {
            // An item of a raw queue that is not a value still prints, so nothing is lost.
            let line = text::to_json(&item)
                .unwrap_or_else(|_| format!("{{\"$raw\": \"{}\"}}", text::base64(&item)));
            writeln!(out, "{line}")
        };
        // On an error the lease is dropped unacked, which puts the item back.
        written
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Msg(format!("cannot write to stdout: {e}")))?;
        if let Some(lease) = lease {
            lease.ack()?;
        }
    }
    Ok(())
}

/// A leased item's bytes, and its lease to ack once they are written.
fn leased(mut lease: depot_std::RawLeased) -> (Vec<u8>, Option<depot_std::RawLeased>) {
    let item = lease.take_items().into_iter().next().unwrap_or_default();
    (item, Some(lease))
}

fn call(args: &CallArgs, client: &Client) -> CliResult {
    let request = match &args.request {
        Some(given) => text::parse(given).map_err(CliError::Msg)?,
        None => vec![0xF6],
    };
    let response = client.call_raw(&args.name, &request, args.timeout)?;
    let line = text::to_json(&response)
        .unwrap_or_else(|_| format!("{{\"$raw\": \"{}\"}}", text::base64(&response)));
    println!("{line}");
    Ok(())
}

fn event(args: &EventArgs, client: &Client) -> CliResult {
    let e = client.event(&args.name)?;
    match args.action {
        EventAction::Set => e.set()?,
        EventAction::Clear => e.clear()?,
        EventAction::IsSet => println!("{}", e.is_set()?),
        EventAction::Wait => {
            let set = match args.timeout {
                Some(t) => e.wait_timeout(t)?,
                None => e.wait().map(|()| true)?,
            };
            if !set {
                return Err(CliError::Msg(format!(
                    "timed out waiting for event '{}'",
                    args.name.escape_debug()
                )));
            }
        }
    }
    Ok(())
}

/// `stat`, printed once or every `--watch` interval; `connect` opens a new connection when the
/// manager closed the first one on `BackendStatus`.
fn stat(
    args: &StatArgs,
    client: &Client,
    connect: &dyn Fn(&str) -> CliResult<Client>,
) -> CliResult {
    let clear = args.watch.is_some() && !args.json && io::IsTerminal::is_terminal(&io::stdout());
    let mut client = client.clone();
    let mut ask_backend = true;
    loop {
        let queues = client.stat()?;
        let status = client.status()?;
        let backend = if ask_backend {
            client.backend_status().or_else(|e| {
                // A manager older than `BackendStatus` closes the connection on it (PROTOCOL.md
                // §10): it is asked last, once, and watched on a new connection.
                tracing::debug!("no backend status: {e}");
                ask_backend = false;
                if e.is_connection_lost() {
                    client = connect(&args.conn.connect)?;
                }
                Ok::<_, CliError>(None)
            })?
        } else {
            None
        };
        let text = if args.json {
            let mut json = stat_json(&client, &queues, &status);
            json["backend"] = backend
                .as_ref()
                .map_or(serde_json::Value::Null, backend_json);
            let mut line = json.to_string();
            line.push('\n');
            line
        } else {
            format!(
                "{}\nmanager {}: {} of {} connections, {} objects, {} blocked requests\n{}",
                render_table(&queues),
                client.peer_addr(),
                status.connections,
                status.max_connections,
                status.objects,
                status.waiters,
                backend.as_ref().map_or(String::new(), render_backend),
            )
        };
        let mut out = io::stdout().lock();
        // A terminal shows one table in place; a pipe gets each one after a blank line.
        let lead = match (args.watch, clear) {
            (Some(_), true) => "\x1b[H\x1b[2J",
            _ => "",
        };
        write!(out, "{lead}{text}")
            .and_then(|()| out.flush())
            .map_err(|e| CliError::Msg(format!("cannot write to stdout: {e}")))?;
        let Some(every) = args.watch else {
            return Ok(());
        };
        if !args.json && !clear {
            let _ = writeln!(out);
        }
        drop(out);
        std::thread::sleep(every);
    }
}

/// `stat --json`: the status line's fields and every queue, one object.
fn stat_json(
    client: &Client,
    queues: &[QueueStat],
    status: &depot_std::ManagerStatus,
) -> serde_json::Value {
    let queues: Vec<serde_json::Value> = queues
        .iter()
        .map(|q| {
            serde_json::json!({
                "name": q.name,
                "kind": q.kind.name(),
                "len": q.len,
                "capacity": q.capacity,
                "max_item": q.max_item,
                "bytes": q.bytes,
                "getters": q.getters,
                "putters": q.putters,
                "joiners": q.joiners,
                "unfinished": q.unfinished,
                "total_put": q.total_put,
                "total_got": q.total_got,
            })
        })
        .collect();
    serde_json::json!({
        "manager": client.peer_addr().to_string(),
        "connections": status.connections,
        "max_connections": status.max_connections,
        "objects": status.objects,
        "waiters": status.waiters,
        "queues": queues,
    })
}

/// `stat --json`'s `backend`.
fn backend_json(h: &depot_std::BackendHealth) -> serde_json::Value {
    serde_json::json!({
        "kind": h.kind,
        "server": h.server,
        "connected": h.connected,
        "since_ms": u64::try_from(h.since.as_millis()).unwrap_or(u64::MAX),
        "reconnects": h.reconnects,
        "last_error": h.last_error,
    })
}

/// `stat`'s backend block.
fn render_backend(h: &depot_std::BackendHealth) -> String {
    let since = h.since.as_secs();
    let state = match (h.connected, h.server.as_str()) {
        (true, "") => "connected".to_owned(),
        (true, server) => format!("connected to {server} for {since}s"),
        (false, "") => "not connected yet".to_owned(),
        (false, server) => format!("disconnected from {server} for {since}s"),
    };
    let mut s = format!(
        "backend: {}\n  state: {state}\n  reconnects: {}\n",
        h.kind, h.reconnects
    );
    if !h.last_error.is_empty() {
        s.push_str(&format!("  last error: {}\n", h.last_error));
    }
    s
}

/// A plain string as a value (CBOR text).
fn encode_text(s: &str) -> Vec<u8> {
    depot_std::text::text_value(s)
}

/// A plain-text table of the queues, one row each, columns aligned.
fn render_table(queues: &[QueueStat]) -> String {
    let header = [
        "QUEUE",
        "MODE",
        "LENGTH",
        "CAPACITY",
        "GETTERS",
        "PUTTERS",
        "JOINERS",
        "UNFINISHED",
        "TOTAL_PUT",
        "TOTAL_GOT",
    ];
    let mut rows: Vec<[String; 10]> = vec![header.map(String::from)];
    for q in queues {
        rows.push([
            q.name.clone(),
            // Objects beside queues show their kind here (PROTOCOL.md §15 reads the rest).
            match q.kind {
                ObjectKind::Queue => q.mode.name().to_owned(),
                kind => kind.name().to_owned(),
            },
            q.len.to_string(),
            q.capacity.to_string(),
            q.getters.to_string(),
            q.putters.to_string(),
            q.joiners.to_string(),
            q.unfinished.to_string(),
            q.total_put.to_string(),
            q.total_got.to_string(),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == 0 {
                line.push_str(&format!("{cell:<w$}"));
            } else if i == 1 {
                line.push_str(&format!("  {cell:<w$}"));
            } else {
                line.push_str(&format!("  {cell:>w$}"));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn queue_specs_parse() {
        assert_eq!(
            parse_queue_spec("jobs:8"),
            Ok(QueueSpecArg {
                name: "jobs".into(),
                capacity: 8,
                mode: QueueMode::Value,
            })
        );
        assert_eq!(
            parse_queue_spec("jobs:8:raw").map(|q| (q.capacity, q.mode)),
            Ok((8, QueueMode::Raw))
        );
        // A queue may be named "raw".
        assert_eq!(
            parse_queue_spec("raw:3").map(|q| (q.name, q.mode)),
            Ok(("raw".into(), QueueMode::Value))
        );
        assert_eq!(
            parse_queue_spec("jobs").map(|q| q.capacity),
            Ok(DEFAULT_CAPACITY)
        );
        assert!(parse_queue_spec("jobs:0").is_err());
        assert!(parse_queue_spec("jobs:x").is_err());
        assert!(parse_queue_spec(":5").is_err());
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }

    #[test]
    fn authkey_file_strips_one_newline() {
        let dir = std::env::temp_dir().join(format!("depot-cli-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "secret\n").unwrap();
        assert_eq!(authkey(Some(&path)).unwrap(), b"secret");
        std::fs::write(&path, "secret\r\n").unwrap();
        assert_eq!(authkey(Some(&path)).unwrap(), b"secret");
        std::fs::write(&path, "two\n\n").unwrap();
        assert_eq!(authkey(Some(&path)).unwrap(), b"two\n");
        std::fs::write(&path, "\n").unwrap();
        assert!(authkey(Some(&path)).is_err());
        let missing = dir.join("missing");
        let err = authkey(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("cannot read the authkey file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_aligns_columns() {
        let q = |name: &str, len| QueueStat {
            name: name.into(),
            kind: depot_std::ObjectKind::Queue,
            len,
            capacity: 100,
            max_item: 10,
            mode: QueueMode::Value,
            bytes: 0,
            getters: 1,
            putters: 0,
            joiners: 0,
            unfinished: 0,
            total_put: 12345,
            total_got: 7,
        };
        let t = render_table(&[q("a", 5), q("longer_name", 42)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("QUEUE      "));
        assert!(lines[2].starts_with("longer_name"));
        // Right-aligned numbers end in the same column.
        assert_eq!(lines[1].len(), lines[2].len());
        assert!(lines[1].ends_with("12345          7"), "{t}");
    }
}
