//! Queues kept by an engine outside the manager (see [`depot_core::manager::backend`]): the
//! plug a backend crate (such as `depot-nats`) fills, and the loop's side of it.
//!
//! The engine runs on threads of its own. The manager's loop hands it each request through
//! [`depot_core::manager::backend::Backend::request`] (which must not block), and the engine
//! answers through its [`BackendLink`], which wakes the loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use depot_core::manager::backend::{
    Backend, BackendOutcome, BackendRequest, BackendToken, Completion, Health,
};
use depot_core::wire::{ErrorCode, Items, QueueSpec};

use super::Shared;

/// An engine's answer, owned, on its way to the manager's loop.
pub struct BackendDone {
    /// The request answered.
    pub token: BackendToken,
    /// The answer.
    pub outcome: Outcome,
    /// Told what became of the answer: on [`Completion::Released`] the engine gives the
    /// items back (they reached nobody).
    pub settle: Option<Box<dyn FnOnce(Completion) + Send>>,
}

/// [`BackendOutcome`] with owned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A put, ack or nack succeeded.
    Done,
    /// How many items of a batch put went in, and what stopped the rest.
    Accepted {
        /// Items appended, from the first.
        count: u32,
        /// Why the rest did not go in.
        error: Option<ErrorCode>,
    },
    /// The items a plain get took, packed ([`Items::push`]).
    Items(Vec<u8>),
    /// The items a leased get took, packed, with the lease and each item's delivery count.
    Leased {
        /// The lease's id.
        lease: u64,
        /// Each item's delivery count, 1 the first time.
        deliveries: Vec<u8>,
        /// The items, packed.
        items: Vec<u8>,
    },
    /// The operation failed.
    Error(ErrorCode),
}

impl Outcome {
    pub(crate) fn borrow(&self) -> BackendOutcome<'_> {
        match self {
            Outcome::Done => BackendOutcome::Done,
            Outcome::Accepted { count, error } => BackendOutcome::Accepted {
                count: *count,
                error: *error,
            },
            Outcome::Items(items) => BackendOutcome::Items(Items(items)),
            Outcome::Leased {
                lease,
                deliveries,
                items,
            } => BackendOutcome::Leased {
                lease: *lease,
                deliveries,
                items: Items(items),
            },
            Outcome::Error(code) => BackendOutcome::Error(*code),
        }
    }
}

/// How the engine's connection fares, for `stat` and metrics.
#[derive(Debug, Default)]
pub struct BackendHealth {
    connected: AtomicBool,
    reconnects: AtomicU64,
    server: Mutex<String>,
    last_error: Mutex<String>,
    /// When it last connected or lost its connection.
    changed: Mutex<Option<Instant>>,
}

impl BackendHealth {
    /// Connected to `server` (an address); counts a reconnect if it was connected before.
    pub fn connected(&self, server: &str) {
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = server.to_owned();
        self.connected.store(true, Ordering::SeqCst);
        self.mark_change();
    }

    fn mark_change(&self) {
        *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// The connection was lost (`why`); a reconnect follows.
    pub fn disconnected(&self, why: &str) {
        if self.connected.swap(false, Ordering::SeqCst) {
            self.reconnects.fetch_add(1, Ordering::SeqCst);
            self.mark_change();
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = why.to_owned();
    }

    /// A snapshot.
    pub fn state(&self, kind: &str) -> BackendState {
        BackendState {
            kind: kind.to_owned(),
            connected: self.connected.load(Ordering::SeqCst),
            server: self
                .server
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            reconnects: self.reconnects.load(Ordering::SeqCst),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            since: self
                .changed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .map(|t| t.elapsed()),
        }
    }
}

/// The backend's health in [`super::Metrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendState {
    /// What engine (`nats`).
    pub kind: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// The server it is (or was last) connected to.
    pub server: String,
    /// Connections lost since the start (each followed by a reconnect attempt).
    pub reconnects: u64,
    /// Why the connection was last lost ("" if never).
    pub last_error: String,
    /// How long ago it last connected or lost its connection (`None`: never connected).
    pub since: Option<Duration>,
}

/// A backend that reports the health its engine keeps in the link (see [`Backend::health`]).
struct Reporting {
    engine: Box<dyn Backend>,
    kind: String,
    health: Arc<BackendHealth>,
}

impl Backend for Reporting {
    fn request(&mut self, request: BackendRequest<'_>) {
        self.engine.request(request);
    }

    fn len(&self, name: &str) -> Option<u32> {
        self.engine.len(name)
    }

    fn flush(&mut self) {
        self.engine.flush();
    }

    fn health(&self) -> Health {
        let state = self.health.state(&self.kind);
        Health {
            kind: state.kind,
            server: state.server,
            connected: state.connected,
            since_ms: state
                .since
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            reconnects: u32::try_from(state.reconnects).unwrap_or(u32::MAX),
            last_error: state.last_error,
        }
    }
}

/// Whether the loop has answers to take, so that a batch of answers costs one wake-up.
pub(crate) struct Pending {
    /// Set by the first answer after the loop last took them; the loop clears it before it
    /// takes them.
    set: AtomicBool,
    /// The loop's own answers (given while it hands a request over) need no wake-up: it takes
    /// them before it sleeps.
    loop_thread: std::thread::ThreadId,
}

impl Pending {
    /// Clears the flag before the answers are taken (an answer that comes after wakes again).
    pub(crate) fn take(&self) {
        self.set.store(false, Ordering::SeqCst);
    }

    /// Whether answers wait (the loop must not sleep).
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }
}

/// Input an engine has the manager's loop read for it (see [`BackendLink::watch`]).
pub trait BackendInput: Send + Sync {
    /// Called on the loop's thread when the watched socket may have input: reads all there is
    /// without blocking (the loop is told again only of input that comes after) and completes
    /// what it answers. The loop takes those answers without a wake-up.
    fn readable(&self);
}

/// The socket the loop watches for an engine (its descriptor), and who reads it.
pub(crate) type Watched = Mutex<Option<(i32, Arc<dyn BackendInput>)>>;

/// What a backend holds to answer the manager's loop.
#[derive(Clone)]
pub struct BackendLink {
    tx: Sender<BackendDone>,
    shared: Arc<Shared>,
    health: Arc<BackendHealth>,
    pending: Arc<Pending>,
    registry: Arc<mio::Registry>,
    watched: Arc<Watched>,
}

impl std::fmt::Debug for BackendLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendLink")
    }
}

impl BackendLink {
    /// Hands an answer to the loop, waking it unless an earlier answer already did. `false`
    /// once the manager has stopped.
    pub fn complete(&self, done: BackendDone) -> bool {
        if self.tx.send(done).is_err() {
            return false;
        }
        if !self.pending.set.swap(true, Ordering::SeqCst)
            && std::thread::current().id() != self.pending.loop_thread
        {
            let _ = self.shared.waker.wake();
        }
        true
    }

    /// Where the engine reports its connection's health.
    pub fn health(&self) -> &Arc<BackendHealth> {
        &self.health
    }

    /// Has the manager's loop watch `socket` for input and call `input` on its own thread
    /// when some comes, instead of the engine blocking in a read on a thread of its own: an
    /// answer then reaches the loop without a thread hand-off. Replaces the socket watched
    /// before; a socket that already has input is read at once. The engine keeps the socket
    /// open until [`BackendLink::unwatch`]. (Unix only.)
    #[cfg(unix)]
    pub fn watch(
        &self,
        socket: &std::net::TcpStream,
        input: Arc<dyn BackendInput>,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        self.unwatch();
        let fd = socket.as_raw_fd();
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        self.registry.register(
            &mut mio::unix::SourceFd(&fd),
            super::event_loop::BACKEND,
            mio::Interest::READABLE,
        )?;
        *watched = Some((fd, input));
        Ok(())
    }

    /// Stops watching the socket given to [`BackendLink::watch`] (before the engine closes it).
    #[cfg(unix)]
    pub fn unwatch(&self) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((fd, _)) = watched.take() {
            let _ = self.registry.deregister(&mut mio::unix::SourceFd(&fd));
        }
    }
}

/// Starts a backend for a manager: given the link and the declared queues (name, limits), it
/// makes sure the engine keeps them and returns the [`Backend`] the manager hands requests to.
pub type StartBackend =
    dyn Fn(BackendLink, &[(String, QueueSpec)]) -> Result<Box<dyn Backend>, String> + Send + Sync;

/// A backend's starter and name, for [`crate::ManagerBuilder::backend`].
#[derive(Clone)]
pub(crate) struct BackendPlan {
    pub(crate) kind: String,
    pub(crate) start: Arc<StartBackend>,
}

impl std::fmt::Debug for BackendPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendPlan({})", self.kind)
    }
}

/// The loop's end of a running backend.
pub(crate) struct Running {
    pub(crate) kind: String,
    pub(crate) rx: Receiver<BackendDone>,
    pub(crate) health: Arc<BackendHealth>,
    pub(crate) pending: Arc<Pending>,
    /// The socket the engine has the loop read, if any.
    pub(crate) watched: Arc<Watched>,
}

impl Running {
    /// Reads the engine's watched socket (its answers are then pending).
    pub(crate) fn read_input(&self) {
        let input = self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, input)| input.clone());
        if let Some(input) = input {
            input.readable();
        }
    }
}

/// Starts `plan`'s backend for `core`'s queues and hands it to `core`.
pub(crate) fn start(
    plan: &BackendPlan,
    queues: &[(String, QueueSpec)],
    shared: Arc<Shared>,
    registry: &mio::Registry,
    core: &mut depot_core::Manager<'_>,
    max_pending: usize,
) -> Result<Running, crate::Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let health = Arc::new(BackendHealth::default());
    // Called on the loop's thread.
    let pending = Arc::new(Pending {
        set: AtomicBool::new(false),
        loop_thread: std::thread::current().id(),
    });
    let watched = Arc::new(Mutex::new(None));
    let link = BackendLink {
        tx,
        shared,
        health: health.clone(),
        pending: pending.clone(),
        registry: Arc::new(registry.try_clone()?),
        watched: watched.clone(),
    };
    let engine = (plan.start)(link, queues)
        .map_err(|e| crate::Error::Config(format!("backend {}: {e}", plan.kind)))?;
    let backend = Reporting {
        engine,
        kind: plan.kind.clone(),
        health: health.clone(),
    };
    core.set_backend(Box::new(backend), max_pending);
    Ok(Running {
        kind: plan.kind.clone(),
        rx,
        health,
        pending,
        watched,
    })
}
