//! The blocking client: one TCP connection per [`Client`], shared by any number of threads.

mod batch;
pub(crate) mod conn;
mod lease;
mod link;
#[cfg(all(test, shuttle))]
mod model;
mod objects;
pub(crate) mod ops;
pub(crate) mod proxy;
mod python;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use depot_core::wire::{ErrorCode, Op, QueueMode, QueueSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;

use conn::Outcome;
use tracing::debug;

pub use batch::{Batch, BatchIter};
pub use lease::{Leased, RawLeased};
#[cfg(feature = "tokio")]
pub(crate) use link::random;
pub use link::Reconnect;
pub use objects::{Barrier, Condition, Dict, Event, List, Lock, LockGuard, Semaphore, Value};
pub use proxy::{Iter, Queue, RawQueue};

use crate::Error;

/// One queue's line in [`Client::stat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    /// The object's name.
    pub name: String,
    /// What it is: a queue, or one of the objects beside queues (their fields are read as
    /// PROTOCOL.md §15 says).
    pub kind: depot_core::wire::ObjectKind,
    /// Items queued.
    pub len: u32,
    /// The most items it holds.
    pub capacity: u32,
    /// The largest item, in bytes.
    pub max_item: u32,
    /// What the queue accepts: values, or any bytes.
    pub mode: QueueMode,
    /// Bytes of item data queued.
    pub bytes: u32,
    /// Requests blocked in `get`.
    pub getters: u32,
    /// Requests blocked in `put`.
    pub putters: u32,
    /// Requests blocked in `join`.
    pub joiners: u32,
    /// Items put and not yet marked `task_done`.
    pub unfinished: u32,
    /// Items ever put.
    pub total_put: u64,
    /// Items ever got.
    pub total_got: u64,
}

/// A connection to a manager: a cheap handle, `Clone + Send + Sync`.
///
/// Clones share the one connection. Several threads may call it at once: their requests are
/// pipelined on the connection, and each caller waits for its own reply (matched by request
/// id). No thread is spawned per client: whichever caller is waiting reads the socket for
/// everyone (see `conn.rs`). The connection closes when the last clone, and the last queue
/// proxy made from it, is dropped.
///
/// When the manager is an unchanged Python `BaseManager`, [`Client::connect`] notices and
/// speaks Python's protocol instead: queue proxies work the same (see PROTOCOL.md §12,
/// "depot clients of a Python manager"); calls Python cannot serve fail with
/// [`Error::NotSupportedByPython`].
#[derive(Debug, Clone)]
pub struct Client {
    conn: Arc<Backend>,
}

/// The manager's protocol.
// The depot connection stays inline: no extra indirection on the depot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Backend {
    Depot(conn::Conn),
    /// A depot connection that is dialled again when lost.
    Linked(link::Link),
    Python(Arc<python::PyManager>),
}

/// The depot connection a call uses.
pub(crate) enum ConnRef<'a> {
    Fixed(&'a conn::Conn),
    Linked(Arc<conn::Conn>),
}

impl std::ops::Deref for ConnRef<'_> {
    type Target = conn::Conn;

    fn deref(&self) -> &conn::Conn {
        match self {
            ConnRef::Fixed(conn) => conn,
            ConnRef::Linked(conn) => conn,
        }
    }
}

impl From<conn::OwnedStat> for QueueStat {
    fn from(s: conn::OwnedStat) -> QueueStat {
        QueueStat {
            name: s.name,
            kind: s.stat.info.kind,
            len: s.stat.len,
            capacity: s.stat.info.spec.capacity,
            max_item: s.stat.info.spec.max_item,
            mode: s.stat.info.spec.mode,
            bytes: s.stat.bytes,
            getters: s.stat.getters,
            putters: s.stat.putters,
            joiners: s.stat.joiners,
            unfinished: s.stat.unfinished,
            total_put: s.stat.total_put,
            total_got: s.stat.total_got,
        }
    }
}

/// How [`Client::connect_with`] connects.
///
/// ```
/// use std::time::Duration;
/// use depot_std::{ConnectOptions, Encryption};
///
/// let options = ConnectOptions::new()
///     .timeout(Duration::from_secs(3))
///     .encryption(Encryption::Required);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    timeout: Duration,
    encryption: depot_core::Encryption,
    key_name: String,
    reconnect: Option<Reconnect>,
    busy_poll: Duration,
}

impl ConnectOptions {
    /// 10 seconds to connect and authenticate; frames sealed when the manager can
    /// ([`Encryption::Preferred`](depot_core::Encryption::Preferred)).
    pub fn new() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(10),
            encryption: depot_core::Encryption::default(),
            key_name: String::new(),
            reconnect: None,
            busy_poll: crate::DEFAULT_BUSY_POLL,
        }
    }

    /// How long a caller waiting for a reply keeps looking for it without sleeping (default
    /// [`crate::DEFAULT_BUSY_POLL`], 50 µs; zero: it sleeps in the socket read at once). It
    /// yields its CPU between looks, so other threads that want it run.
    ///
    /// A reply often comes back sooner than a sleeping thread can be woken (tens of
    /// microseconds in a virtual machine, where an idle CPU halts), so one request at a time
    /// runs several times faster with it. The price is CPU time: up to this long per reply
    /// that takes longer.
    pub fn busy_poll(mut self, t: Duration) -> Self {
        self.busy_poll = t;
        self
    }

    /// The name of the key on the manager's keyring that `authkey` is (default `""`: the
    /// manager's default key). A name longer than 32 bytes or with control characters is
    /// refused when connecting.
    pub fn key_name(mut self, name: &str) -> Self {
        self.key_name = name.to_owned();
        self
    }

    /// A client that reconnects by itself: when the connection is lost, the next call (or the
    /// calls in flight) dial again with jittered exponential backoff as `reconnect` says, and
    /// resume the client's session (128 random bits chosen when connecting): puts whose
    /// replies were lost are sent again with their numbers, and the manager applies each once
    /// (PROTOCOL.md §16). A call fails only when its own timeout passes (or, without one,
    /// after `reconnect.give_up`).
    ///
    /// What a lost connection means for each call:
    /// - `put`, `put_many`: sent again; applied exactly once while the manager remembers the
    ///   session (a manager restarted without persistence, or one that had to forget the
    ///   session for room, does not: then a put in flight may be applied twice, at least
    ///   once).
    /// - `get`, `get_many`: sent again. An item the manager had handed to the lost connection
    ///   but the client never read is lost (a plain get is at-most-once); items it had not
    ///   sent yet go back to the head of the queue.
    /// - `task_done`: fails with the connection error (whether it counted cannot be told);
    ///   the next call reconnects.
    /// - `join`, `qsize`, opening queues, `stat`, `status`: sent again.
    /// - any call the manager refuses because it is shutting down (`ShuttingDown`: it applied
    ///   nothing; of a `put_many` blocked part-way, the items not yet in): sent again on the
    ///   next connection, so blocked calls ride a manager's graceful restart.
    ///
    /// These rules (and the backoff) are depot-core's `reconnect` module, which firmware
    /// clients follow too.
    ///
    /// The manager remembers the last 64 puts of a session: with more than 64 puts in flight
    /// at once on one client (threads sharing it), a put sent again may be refused with
    /// [`ErrorCode::SequenceExpired`] (its outcome unknown) rather than applied twice. A
    /// manager with no room for the session (or none kept) takes the client without one: puts
    /// in flight on a lost connection then fail with the connection error.
    ///
    /// Queue handles stay valid across a reconnect to the same manager, and across its
    /// restart when it declares the same queues in the same order.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// Time to connect and authenticate.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether frames are sealed (encrypted), and whether a manager that will not seal them
    /// is refused (PROTOCOL.md §5.1). `Required` also refuses a Python manager, whose
    /// protocol has no encryption.
    pub fn encryption(mut self, encryption: depot_core::Encryption) -> Self {
        self.encryption = encryption;
        self
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Registry entries asked for at once by [`Client::stat`].
pub(crate) const STAT_BATCH: u16 = 16;

impl Client {
    /// Connects and authenticates, within 10 seconds.
    pub fn connect(addr: impl ToSocketAddrs, authkey: impl AsRef<[u8]>) -> Result<Client, Error> {
        Self::connect_timeout(addr, authkey, Duration::from_secs(10))
    }

    /// Connects and authenticates within `timeout`.
    pub fn connect_timeout(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Client, Error> {
        Self::connect_with(addr, authkey, &ConnectOptions::new().timeout(timeout))
    }

    /// Connects with the key called `key_name` on the manager's keyring (protocol version 3;
    /// `""` is the default key, as [`Client::connect`] uses), within 10 seconds. The manager
    /// then allows what that key may do; anything else is refused with
    /// [`ErrorCode::NotAllowed`](crate::ErrorCode::NotAllowed).
    pub fn connect_as(
        addr: impl ToSocketAddrs,
        key_name: &str,
        authkey: impl AsRef<[u8]>,
    ) -> Result<Client, Error> {
        Self::connect_with(addr, authkey, &ConnectOptions::new().key_name(key_name))
    }

    /// [`Client::connect_as`] within `timeout`.
    pub fn connect_as_timeout(
        addr: impl ToSocketAddrs,
        key_name: &str,
        authkey: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let options = ConnectOptions::new().key_name(key_name).timeout(timeout);
        Self::connect_with(addr, authkey, &options)
    }

    /// Connects and authenticates as `options` say.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
        options: &ConnectOptions,
    ) -> Result<Client, Error> {
        let key_name = &options.key_name;
        let name = depot_core::KeyName::new(key_name).ok_or_else(|| {
            Error::Config(format!(
                "invalid key name '{}': at most 32 bytes, no control characters",
                key_name.escape_debug()
            ))
        })?;
        let timeout = options.timeout;
        let start = std::time::Instant::now();
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("bad address: {e}")))?
            .collect();
        let dialled = match options.reconnect {
            Some(policy) => link::Link::connect(
                addrs,
                name,
                authkey.as_ref(),
                timeout,
                options.encryption,
                policy,
                options.busy_poll,
            )
            .map(Backend::Linked),
            None => conn::Conn::connect(
                &addrs[..],
                name,
                authkey.as_ref(),
                timeout,
                options.encryption,
            )
            .map(|c| Backend::Depot(c.with_busy_poll(options.busy_poll))),
        };
        let conn = match dialled {
            Ok(conn) => conn,
            Err(Error::PythonManager { addr })
                if options.encryption == depot_core::Encryption::Required =>
            {
                return Err(Error::Disconnected {
                    reason: format!(
                        "connection to {addr} refused: encryption is required, and the \
                         manager is a Python BaseManager, whose protocol has none"
                    ),
                });
            }
            // The Python manager read our hello as a wrong answer; a new connection speaks
            // its protocol.
            Err(Error::PythonManager { addr }) => {
                let left = timeout
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(1));
                let m = python::PyManager::connect(addr, authkey.as_ref(), left)?;
                Backend::Python(Arc::new(m))
            }
            Err(e) => return Err(e),
        };
        Ok(Client {
            conn: Arc::new(conn),
        })
    }

    /// Runs `attempt` on the depot connection. A client that reconnects (see
    /// [`ConnectOptions::reconnect`]) dials again, until `deadline` (`None`: its give-up time),
    /// when the connection is found lost, and runs `attempt` again when depot-core's
    /// [`resend`](depot_core::reconnect::resend) allows the request the call makes (`request`:
    /// the request on a connection that holds the client's session or not; for a call of
    /// several requests, one of their kind). The flag tells `attempt` whether the connection
    /// holds the session.
    pub(crate) fn with_conn<'r, R>(
        &self,
        what: &'static str,
        deadline: Option<std::time::Instant>,
        request: impl Fn(bool) -> Op<'r>,
        mut attempt: impl FnMut(&conn::Conn, bool) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let link = match &*self.conn {
            Backend::Depot(conn) => return attempt(conn, false),
            Backend::Python(_) => return Err(Error::NotSupportedByPython { what }),
            Backend::Linked(link) => link,
        };
        let deadline = deadline.or_else(|| link.default_deadline());
        let mut current = link.current();
        loop {
            if current.conn.is_closed() {
                current = link.redial(&current, deadline)?;
            }
            match attempt(&current.conn, current.session) {
                Err(e) if e.is_connection_lost() => {
                    let session = current.session;
                    // Refused by a stopping manager: nothing was applied, it may always go
                    // again.
                    let refused = e.code().is_some_and(depot_core::reconnect::refused_for_now);
                    if !refused && !depot_core::reconnect::resend(&request(session), session) {
                        return Err(e);
                    }
                    debug!("connection lost during {what}: {e}");
                    current = link.redial(&current, deadline)?;
                }
                other => return other,
            }
        }
    }

    /// A fresh number for a put in this client's session (0 without one: not sent then).
    pub(crate) fn next_seq(&self) -> u64 {
        match &*self.conn {
            Backend::Linked(link) => link.next_seq(),
            _ => 0,
        }
    }

    /// A typed proxy for the queue `name`; each item is one value of the value model (CBOR,
    /// PROTOCOL.md §11), as the CLI, firmware and Python clients read and write it. The proxy
    /// holds a clone of this client, so it can be moved to another thread or task.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Queue<T>, Error> {
        self.raw_queue(name).map(Queue::new)
    }

    /// A raw-bytes proxy for the queue `name` (holding a clone of this client).
    pub fn raw_queue(&self, name: &str) -> Result<RawQueue, Error> {
        if let Backend::Python(m) = &*self.conn {
            return Ok(RawQueue {
                client: self.clone(),
                name: name.to_owned(),
                handle: depot_core::Handle::from_raw(0),
                spec: depot_core::QueueSpec {
                    capacity: u32::MAX,
                    max_item: python::MAX_ITEM as u32,
                    mode: QueueMode::Value,
                },
                py: Some(Arc::new(python::PyQueue::open(m, name)?)),
            });
        }
        let outcome = self.with_conn(
            "opening a queue",
            None,
            |_| Op::Open { name },
            |c, _| c.call(Op::Open { name }),
        )?;
        self.opened(name, outcome)
    }

    /// Creates the value queue `name` (or opens it if it exists), when the manager allows it.
    pub fn create_queue(
        &self,
        name: &str,
        capacity: u32,
        max_item: u32,
    ) -> Result<RawQueue, Error> {
        self.create_queue_with(name, capacity, max_item, QueueMode::Value)
    }

    /// Creates the queue `name` in `mode` (or opens it if it exists), when the manager allows
    /// it.
    pub fn create_queue_with(
        &self,
        name: &str,
        capacity: u32,
        max_item: u32,
        mode: QueueMode,
    ) -> Result<RawQueue, Error> {
        let spec = QueueSpec {
            capacity,
            max_item,
            mode,
        };
        let create = Op::Create {
            name,
            spec,
            exist_ok: true,
        };
        let outcome =
            self.with_conn("creating a queue", None, |_| create, |c, _| c.call(create))?;
        self.opened(name, outcome)
    }

    fn opened(&self, name: &str, outcome: Outcome) -> Result<RawQueue, Error> {
        match outcome {
            Outcome::Opened(info) => Ok(RawQueue {
                client: self.clone(),
                name: name.to_owned(),
                handle: info.handle,
                spec: info.spec,
                py: None,
            }),
            other => Err(self.unexpected(other, name)),
        }
    }

    /// Every queue with its statistics (requests for the entries are pipelined).
    pub fn stat(&self) -> Result<Vec<QueueStat>, Error> {
        self.with_conn(
            "stat",
            None,
            |_| Op::Stat { index: 0 },
            |conn, _| self.stat_on(conn),
        )
    }

    fn stat_on(&self, conn: &conn::Conn) -> Result<Vec<QueueStat>, Error> {
        let mut stats = Vec::new();
        let mut index: u16 = 0;
        loop {
            let mut ids = Vec::with_capacity(STAT_BATCH as usize);
            for k in 0..STAT_BATCH {
                match index.checked_add(k) {
                    Some(i) => ids.push(conn.send(Op::Stat { index: i })?),
                    None => break,
                }
            }
            conn.flush()?;
            let mut end = ids.is_empty();
            // Every reply is collected, even past the end, so none is left in the table.
            for id in ids {
                match conn.wait_reply(id)? {
                    Outcome::Stat(Some(s)) if !end => stats.push(s.into()),
                    Outcome::Stat(_) => end = true,
                    other => return Err(self.unexpected(other, "")),
                }
            }
            if end {
                return Ok(stats);
            }
            index = index.saturating_add(STAT_BATCH);
        }
    }

    /// The manager's status: connections, objects, blocked requests.
    pub fn status(&self) -> Result<depot_core::wire::ManagerStatus, Error> {
        match self.with_conn("status", None, |_| Op::Status, |c, _| c.call(Op::Status))? {
            Outcome::Status(status) => Ok(status),
            other => Err(self.unexpected(other, "")),
        }
    }

    /// The health of the manager's backend (`depot serve --backend`), `None` when the manager
    /// keeps its queues itself. Needs the rights of [`Client::status`].
    pub fn backend_status(&self) -> Result<Option<BackendHealth>, Error> {
        let call = |c: &conn::Conn, _| c.call(Op::BackendStatus);
        match self.with_conn("backend status", None, |_| Op::BackendStatus, call)? {
            Outcome::Backend(health) => Ok(health),
            other => Err(self.unexpected(other, "")),
        }
    }

    /// Asks the manager to stop; `Err(NotAllowed)` when it refuses.
    pub fn shutdown_manager(&self) -> Result<(), Error> {
        match self.with_conn(
            "remote shutdown",
            None,
            |_| Op::Shutdown,
            |c, _| c.call(Op::Shutdown),
        )? {
            Outcome::Done => Ok(()),
            other => Err(self.unexpected(other, "")),
        }
    }

    /// The manager's address.
    pub fn peer_addr(&self) -> SocketAddr {
        match &*self.conn {
            Backend::Depot(conn) => conn.peer_addr(),
            Backend::Linked(link) => link.current().conn.peer_addr(),
            Backend::Python(m) => m.addr(),
        }
    }

    /// How frames to and from the manager are protected (PROTOCOL.md §5.1): sealed with
    /// AES-256-GCM where both ends have AES instructions, else with ChaCha20-Poly1305, or MACed
    /// only when either end turned encryption off. `None` for a Python manager, whose protocol
    /// has neither.
    pub fn sealing(&self) -> Option<crate::Sealing> {
        match &*self.conn {
            Backend::Depot(conn) => conn.sealing(),
            Backend::Linked(link) => link.current().conn.sealing(),
            Backend::Python(_) => None,
        }
    }

    /// Whether the manager is a Python `BaseManager`.
    pub fn is_python(&self) -> bool {
        matches!(*self.conn, Backend::Python(_))
    }

    /// The depot connection in use now for `what`, which a Python manager cannot serve.
    pub(crate) fn depot(&self, what: &'static str) -> Result<ConnRef<'_>, Error> {
        match &*self.conn {
            Backend::Python(_) => Err(Error::NotSupportedByPython { what }),
            _ => self.conn(),
        }
    }

    /// The depot connection in use now, for a proxy of a depot queue.
    pub(crate) fn conn(&self) -> Result<ConnRef<'_>, Error> {
        match &*self.conn {
            Backend::Depot(conn) => Ok(ConnRef::Fixed(conn)),
            Backend::Linked(link) => Ok(ConnRef::Linked(link.current().conn)),
            Backend::Python(_) => Err(Error::NotSupportedByPython { what: "this call" }),
        }
    }

    /// The error for a reply that is not the success a request expects; `name` is the queue
    /// concerned, if any.
    pub(crate) fn unexpected(&self, outcome: Outcome, name: &str) -> Error {
        ops::unexpected(outcome, name)
    }
}

/// The error for a failed request's code.
pub(crate) fn code_error(code: ErrorCode, name: &str) -> Error {
    Error::request(code, name)
}

/// How a manager's backend fares (see [`Client::backend_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// The engine, such as `nats`.
    pub kind: String,
    /// The server it is (or was last) connected to ("" before it first connected).
    pub server: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// How long ago it last connected or lost its connection.
    pub since: Duration,
    /// Connections it lost since it started (each followed by attempts to connect again).
    pub reconnects: u32,
    /// Why it last lost its connection ("" if never).
    pub last_error: String,
}
