//! [`ManagerBuilder`]: what to serve, where, and under which limits.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use super::durable::{Fsync, DEFAULT_COMPACT_AFTER};
use super::event_loop::{self, Prepared, LISTENER, WAKER};
use super::storage::Plan;
use super::{ManagerHandle, Shared};
use crate::Error;
use depot_core::wire::ObjectKind;
use depot_core::QueueMode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The limits of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// The most items the queue holds at once (Python's `maxsize`).
    pub capacity: u32,
    /// The largest item, in bytes.
    pub max_item: u32,
    /// Bytes of item storage; by default `capacity * (max_item + 4)` capped at 64 MiB, and
    /// never less than one largest item (`max_item + 4`). Reserved, not resident: the storage
    /// is a ring whose pages take memory as items first reach them (in 2-MiB pages on Linux
    /// for 4 MiB and more, where transparent huge pages are enabled) and keep it after.
    pub storage_bytes: Option<usize>,
    /// What the queue accepts: one well-formed value per item (the default), or any bytes.
    pub mode: QueueMode,
}

/// The default time a new connection has to finish its handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default most handshakes at once from one IP address.
pub const DEFAULT_HANDSHAKING_PER_SOURCE: usize = 256;

/// The default most items leased at once (acknowledged gets not yet acked).
pub const DEFAULT_MAX_LEASED: usize = 16 * 1024;
/// The default most client sessions remembered at once (about 1.6 KiB each).
pub(crate) const DEFAULT_SESSIONS: usize = 1024;

/// The default largest item: 64 KiB.
pub const DEFAULT_MAX_ITEM: u32 = 64 * 1024;

/// The default bytes of a declared value or dict: 64 KiB.
pub const DEFAULT_OBJECT_BYTES: u32 = 64 * 1024;

/// Calls of one registered handler that run at once unless told otherwise.
pub const DEFAULT_CALLS: u32 = 8;

/// A handler on encoded values: the request in, the response or an error's text out.
type RawHandler = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync;

/// A registered call's handler.
#[derive(Clone)]
pub(crate) struct CallHandler(pub(crate) Arc<RawHandler>);

impl std::fmt::Debug for CallHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallHandler")
    }
}

impl QueueOptions {
    /// `capacity` items of at most 64 KiB each, default storage.
    pub fn new(capacity: u32) -> Self {
        QueueOptions {
            capacity,
            max_item: DEFAULT_MAX_ITEM,
            storage_bytes: None,
            mode: QueueMode::Value,
        }
    }

    /// The same limits for a queue of any bytes.
    pub fn raw(self) -> Self {
        QueueOptions {
            mode: QueueMode::Raw,
            ..self
        }
    }
}

/// Builds and runs a manager. See [`crate::Manager::builder`].
#[derive(Debug, Clone)]
pub struct ManagerBuilder {
    pub(crate) addrs: Result<Vec<SocketAddr>, String>,
    pub(crate) authkey: Option<Vec<u8>>,
    pub(crate) keyring: Option<depot_core::Keyring<'static>>,
    pub(crate) queues: Vec<(String, QueueOptions)>,
    /// Declared objects beside queues: name, kind, capacity, bytes.
    pub(crate) objects: Vec<(String, ObjectKind, u32, u32)>,
    /// Registered calls' handlers, by name (each also declared in `objects`).
    pub(crate) handlers: Vec<(String, CallHandler)>,
    pub(crate) allow_remote_shutdown: bool,
    pub(crate) create: Option<(usize, QueueOptions)>,
    /// `None`: follow the file descriptor limit (see [`ManagerBuilder::max_connections`]).
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_handshaking: Option<usize>,
    pub(crate) max_handshaking_per_source: usize,
    pub(crate) throttle: depot_core::throttle::ThrottleConfig,
    pub(crate) handshake_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    pub(crate) write_stall_timeout: Duration,
    pub(crate) encryption: depot_core::Encryption,
    pub(crate) max_leased: usize,
    /// `(queue, dead-letter queue, deliveries)`.
    pub(crate) dead_letters: Vec<(String, String, u8)>,
    /// `None`: queues live in memory only.
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) fsync: Fsync,
    pub(crate) compact_after: u64,
    pub(crate) sessions: usize,
    /// `None`: queues live in this manager (memory or `data_dir`).
    pub(crate) backend: Option<super::backend::BackendPlan>,
    pub(crate) busy_poll: Duration,
}

impl ManagerBuilder {
    pub(crate) fn new() -> Self {
        ManagerBuilder {
            addrs: Ok(vec![SocketAddr::from(([127, 0, 0, 1], 5000))]),
            authkey: None,
            keyring: None,
            queues: Vec::new(),
            objects: Vec::new(),
            handlers: Vec::new(),
            allow_remote_shutdown: false,
            create: None,
            max_connections: None,
            max_handshaking: None,
            max_handshaking_per_source: DEFAULT_HANDSHAKING_PER_SOURCE,
            throttle: Default::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            frame_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(30),
            encryption: depot_core::Encryption::default(),
            max_leased: DEFAULT_MAX_LEASED,
            dead_letters: Vec::new(),
            data_dir: None,
            fsync: Fsync::default(),
            compact_after: DEFAULT_COMPACT_AFTER,
            sessions: DEFAULT_SESSIONS,
            backend: None,
            busy_poll: crate::DEFAULT_BUSY_POLL,
        }
    }

    /// The address to listen on (default 127.0.0.1:5000; port 0 picks a free port).
    pub fn listen(mut self, addr: impl ToSocketAddrs) -> Self {
        self.addrs = addr
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|e| format!("bad listen address: {e}"));
        self
    }

    /// The most client sessions remembered at once (default 1024; 0 refuses
    /// sessions). A session lets a client that reconnects send its unanswered puts again
    /// without duplicating them (PROTOCOL.md §16); beyond the limit, the least recently used
    /// session no connection holds is forgotten.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.sessions = n;
        self
    }

    /// The shared secret clients must prove they know: the default key, which clients that
    /// name no key (Python's among them) use, with every right. An authkey or a keyring is
    /// required.
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// Named keys, each with its rights per queue (see [`depot_core::keyring`]); clients
    /// pick theirs with [`Client::connect_as`](crate::Client::connect_as). Alongside an
    /// [`authkey`](ManagerBuilder::authkey), which stays the default key unless the keyring
    /// has a key with the empty name. Replace it while running with
    /// [`ManagerHandle::set_keyring`](crate::ManagerHandle::set_keyring).
    pub fn keyring(mut self, keyring: depot_core::Keyring<'static>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Declares a queue of `capacity` values of at most 64 KiB each (a `value` queue: it refuses
    /// an item that is not one well-formed value).
    pub fn queue(self, name: &str, capacity: u32) -> Self {
        self.queue_with(name, QueueOptions::new(capacity))
    }

    /// Declares a queue of `capacity` items of any bytes (at most 64 KiB each): a `raw` queue,
    /// which does not check that items are values.
    pub fn raw_queue(self, name: &str, capacity: u32) -> Self {
        self.queue_with(name, QueueOptions::new(capacity).raw())
    }

    /// Declares a queue with explicit limits.
    pub fn queue_with(mut self, name: &str, opts: QueueOptions) -> Self {
        self.queues.push((name.to_owned(), opts));
        self
    }

    /// Declares an object beside the queues (PROTOCOL.md §15): `capacity` is a semaphore's
    /// permits, a barrier's parties or a dict's most entries, `max_item` a value's or dict's
    /// bytes.
    pub fn object(mut self, name: &str, kind: ObjectKind, capacity: u32, max_item: u32) -> Self {
        self.objects
            .push((name.to_owned(), kind, capacity, max_item));
        self
    }

    /// Declares an event (Python's `Event`).
    pub fn event(self, name: &str) -> Self {
        self.object(name, ObjectKind::Event, 0, 0)
    }

    /// Declares a lock (Python's `Lock`), released when its holder's connection ends.
    pub fn lock(self, name: &str) -> Self {
        self.object(name, ObjectKind::Lock, 1, 0)
    }

    /// Declares a lock that a holder keeps at most `lease` after its latest acquire: then it
    /// is taken back and goes to the next waiter (whether or not the holder is still there).
    pub fn lock_with_lease(self, name: &str, lease: Duration) -> Self {
        let ms = lease.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        self.object(name, ObjectKind::Lock, 1, ms)
    }

    /// Declares a lock its holder may take again (Python's `RLock`).
    pub fn rlock(self, name: &str) -> Self {
        self.object(name, ObjectKind::RLock, 1, 0)
    }

    /// Declares a semaphore of `permits` (Python's `Semaphore`).
    pub fn semaphore(self, name: &str, permits: u32) -> Self {
        self.object(name, ObjectKind::Semaphore, permits, 0)
    }

    /// Declares a semaphore whose permits never exceed `permits` (`BoundedSemaphore`).
    pub fn bounded_semaphore(self, name: &str, permits: u32) -> Self {
        self.object(name, ObjectKind::BoundedSemaphore, permits, 0)
    }

    /// Declares a value of at most 64 KiB (Python's `Value`), `null` at first.
    pub fn value(self, name: &str) -> Self {
        self.object(name, ObjectKind::Value, 1, DEFAULT_OBJECT_BYTES)
    }

    /// Declares a barrier for `parties` (Python's `Barrier`).
    pub fn barrier(self, name: &str, parties: u32) -> Self {
        self.object(name, ObjectKind::Barrier, parties, 0)
    }

    /// Declares a dict of at most `capacity` entries in 64 KiB (Python's `dict`).
    pub fn dict(self, name: &str, capacity: u32) -> Self {
        self.object(name, ObjectKind::Dict, capacity, DEFAULT_OBJECT_BYTES)
    }

    /// Declares a condition (Python's `Condition`): a reentrant lock, released when its
    /// holder's connection ends, whose holder may wait until notified.
    pub fn condition(self, name: &str) -> Self {
        self.object(name, ObjectKind::Condition, 1, 0)
    }

    /// Declares a list of at most `capacity` values in 64 KiB (Python's `list`).
    pub fn list(self, name: &str, capacity: u32) -> Self {
        self.object(name, ObjectKind::List, capacity, DEFAULT_OBJECT_BYTES)
    }

    /// Registers the call `name`: clients' [`crate::Client::call`]s run `handler` on a
    /// thread of its own, at most 8 at once, with requests and responses (values of the value
    /// model) of at most 64 KiB. A handler's error, or its panic, is the caller's
    /// `Error::CallFailed`; the manager serves on meanwhile.
    pub fn call<Req, Resp, E, F>(self, name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: Fn(Req) -> Result<Resp, E> + Send + Sync + 'static,
    {
        self.call_with(name, DEFAULT_CALLS, DEFAULT_OBJECT_BYTES, handler)
    }

    /// [`ManagerBuilder::call`] with at most `concurrent` calls at once and requests and
    /// responses of at most `max_bytes`.
    pub fn call_with<Req, Resp, E, F>(
        mut self,
        name: &str,
        concurrent: u32,
        max_bytes: u32,
        handler: F,
    ) -> Self
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        E: std::fmt::Display,
        F: Fn(Req) -> Result<Resp, E> + Send + Sync + 'static,
    {
        let run = move |request: &[u8]| -> Result<Vec<u8>, String> {
            let request: Req = depot_core::value::from_slice(request)
                .map_err(|e| format!("cannot read the request: {e}"))?;
            let response = handler(request).map_err(|e| e.to_string())?;
            depot_core::value::to_writer(&response, Vec::new())
                .map_err(|e| format!("cannot write the response: {e}"))
        };
        self.handlers
            .push((name.to_owned(), CallHandler(Arc::new(run))));
        self.object(name, ObjectKind::Call, concurrent, max_bytes)
    }

    /// Whether a client's `shutdown_manager` stops the manager (default false).
    pub fn allow_remote_shutdown(mut self, yes: bool) -> Self {
        self.allow_remote_shutdown = yes;
        self
    }

    /// Lets clients create up to `spare_slots` queues, each within `opts`' limits.
    pub fn allow_create(mut self, spare_slots: usize, opts: QueueOptions) -> Self {
        self.create = (spare_slots > 0).then_some((spare_slots, opts));
        self
    }

    /// The most connections served at once; more are told "busy". By default 16384, or fewer
    /// when the process's file descriptor limit (`ulimit -n`) is lower: each connection is a
    /// descriptor, and a few are kept for the listener and the rest. An explicit `n` above
    /// that limit is lowered to it as well (with a warning), so clients beyond what the process
    /// can open are told "busy" at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// The most connections in their handshake at once (default: half of the connection
    /// limit). Beyond it, a new connection evicts the one that has been in its handshake
    /// longest, so peers that never authenticate cannot take the slots of clients that do.
    pub fn max_handshaking(mut self, n: usize) -> Self {
        self.max_handshaking = Some(n);
        self
    }

    /// The most connections from one IP address in their handshake at once (default 256; 0: no
    /// limit); more are told "busy".
    pub fn max_handshaking_per_source(mut self, n: usize) -> Self {
        self.max_handshaking_per_source = n;
        self
    }

    /// How failed proofs from one IP address are slowed down: the verdict held back longer
    /// each time, then the address refused for a while (see [`depot_core::throttle`]; the
    /// defaults: 100 ms doubling to 3 s, 60 s after 10 failures).
    pub fn auth_throttle(mut self, config: depot_core::throttle::ThrottleConfig) -> Self {
        self.throttle = config;
        self
    }

    /// Whether frames are sealed (encrypted) for depot clients that ask (the default), never,
    /// or always, refusing a client that cannot seal with a clear error
    /// ([`Encryption::Required`](depot_core::Encryption::Required)). Python clients are served
    /// as before: their protocol has no encryption (PROTOCOL.md §5.1).
    pub fn encryption(mut self, encryption: depot_core::Encryption) -> Self {
        self.encryption = encryption;
        self
    }

    /// Time limits: accept to finished handshake, first to last byte of a frame, and output
    /// left unread by a peer before it is dropped.
    pub fn timeouts(mut self, handshake: Duration, frame: Duration, write_stall: Duration) -> Self {
        self.handshake_timeout = handshake;
        self.frame_timeout = frame;
        self.write_stall_timeout = write_stall;
        self
    }

    /// How long a new connection has to finish its handshake (default 2 s: a client on a
    /// working network needs a few round trips; a silent peer should not hold a slot for long).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// How long a frame may take from its first byte to its last (default 10 s).
    pub fn frame_timeout(mut self, t: Duration) -> Self {
        self.frame_timeout = t;
        self
    }

    /// The most items leased at once, over all queues (default 16384; each costs about 50
    /// bytes of memory from the start, plus the item while leased, within 64 MiB in all). A
    /// leased get beyond it takes fewer items, or fails with `LeaseLimit` when none are left.
    pub fn max_leased(mut self, n: usize) -> Self {
        self.max_leased = n;
        self
    }

    /// Items of `queue` delivered `max_deliveries` times under a lease and still not acked go
    /// to the tail of `dead_letter` (another declared queue) instead of back to `queue`.
    pub fn dead_letter(mut self, queue: &str, dead_letter: &str, max_deliveries: u8) -> Self {
        self.dead_letters
            .push((queue.to_owned(), dead_letter.to_owned(), max_deliveries));
        self
    }

    /// How long output may stay unread by a peer before it is dropped (default 30 s).
    pub fn write_stall_timeout(mut self, t: Duration) -> Self {
        self.write_stall_timeout = t;
        self
    }

    /// Keeps the queues in `dir` (created if missing), so that a restarted manager serves what
    /// was queued when it stopped or crashed: every change of queue contents is appended to a
    /// log there before the replies that depend on it are sent. By default queues live in
    /// memory only. One manager at a time may use a directory.
    ///
    /// Queues found in the log are served again: a declared queue of the same name takes its
    /// items (it must have room for them); another is made in a spare slot (see
    /// [`ManagerBuilder::allow_create`]), or the manager refuses to start.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Keeps every queue's contents in an engine outside this manager (`kind` names it in
    /// logs and metrics), so that several managers serve the same queues as stateless
    /// gateways (see [`depot_core::manager::backend`]). `start` connects to the engine; a
    /// backend crate such as `depot-nats` provides it. Not together with
    /// [`ManagerBuilder::data_dir`]; Python clients are not served under a backend.
    pub fn backend(mut self, kind: &str, start: Arc<super::backend::StartBackend>) -> Self {
        self.backend = Some(super::backend::BackendPlan {
            kind: kind.to_owned(),
            start,
        });
        self
    }

    /// How long the event loop keeps looking for more input without sleeping after a turn
    /// that had some (default 50 µs; zero: it always sleeps in `epoll_wait` until input
    /// arrives). Between looks it yields its CPU to any other thread that wants it.
    ///
    /// A client with one request in flight sends its next request a few microseconds after
    /// its reply, and waking a thread that went to sleep costs more than that on many
    /// machines (tens of microseconds in a virtual machine, where an idle CPU halts); looking
    /// again spares that wake-up, so one-request-at-a-time traffic is served several times
    /// faster. The price is CPU time while the manager is busy: at most this long after each
    /// turn with input, nothing while it is idle.
    pub fn busy_poll(mut self, t: Duration) -> Self {
        self.busy_poll = t;
        self
    }

    /// When the log in the [`ManagerBuilder::data_dir`] is synced to disk (default: every
    /// 100 ms). The log is written before replies go out under every policy, so a crash of
    /// the manager's process loses no acknowledged put; the policy says what a crash of the
    /// operating system (or power loss) may lose: nothing acknowledged with
    /// [`Fsync::Always`], about the last interval with [`Fsync::Interval`].
    pub fn fsync(mut self, policy: Fsync) -> Self {
        self.fsync = policy;
        self
    }

    /// The log size past which it is rewritten from the queues' contents (default 64 MiB, or
    /// twice the contents if more).
    pub fn compact_after(mut self, bytes: u64) -> Self {
        self.compact_after = bytes;
        self
    }

    /// Runs the manager on this thread until it is shut down (by a permitted remote request;
    /// use [`ManagerBuilder::start`] for a manager that can also be stopped locally).
    pub fn serve_forever(self) -> Result<(), Error> {
        event_loop::run(self.prepare()?, None)
    }

    /// Runs the manager on a background thread; returns once it listens.
    pub fn start(self) -> Result<ManagerHandle, Error> {
        let prepared = self.prepare()?;
        let address = prepared.address;
        let shared = prepared.shared.clone();
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("depot-manager {address}"))
            .spawn(move || {
                // Set however the loop ends, a panic included.
                struct Finished(Arc<Shared>);
                impl Drop for Finished {
                    fn drop(&mut self) {
                        self.0.finished.store(true, Ordering::SeqCst);
                        self.0.board.end();
                    }
                }
                let _finished = Finished(prepared.shared.clone());
                event_loop::run(prepared, Some(tx))
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(ManagerHandle::new(address, shared, thread)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended without a word: it can only have failed.
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(Error::Io(io::Error::other(
                    "manager thread failed to start",
                ))),
            },
        }
    }

    /// Checks the options, binds the listener and sets up the poll.
    fn prepare(self) -> Result<Prepared, Error> {
        let plan = Plan::new(&self)?;
        let addrs = self.addrs.map_err(Error::Config)?;
        let shown = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let listener = std::net::TcpListener::bind(&addrs[..])
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {shown}: {e}")))?;
        listener.set_nonblocking(true)?;
        deepen_backlog(&listener);
        let address = listener.local_addr()?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        let poll = mio::Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, mio::Interest::READABLE)?;
        let shared = Arc::new(Shared {
            waker: mio::Waker::new(poll.registry(), WAKER)?,
            stop: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            board: Default::default(),
            keyring: Default::default(),
        });
        Ok(Prepared {
            plan,
            poll,
            listener,
            address,
            shared,
        })
    }
}

/// Connections the kernel may hold for the manager before it accepts them. std listens with a
/// backlog of 128: a burst of connections (a flood, or a fleet reconnecting at once) overflows
/// it, and the kernel drops further SYNs, which a client retries only after a second. The
/// kernel caps the figure at `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: i32 = 4096;

/// Raises the listening socket's backlog to [`LISTEN_BACKLOG`] (calling `listen` again on a
/// listening socket changes its backlog). Best effort: the std backlog stays on failure.
#[cfg(unix)]
fn deepen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` reads only its arguments; the descriptor is the listener's own and open.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
}

#[cfg(not(unix))]
fn deepen_backlog(_listener: &std::net::TcpListener) {}
