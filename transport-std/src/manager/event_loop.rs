//! The mio event loop that moves bytes between sockets and the core manager.
//!
//! One thread, one `mio::Poll`. Sockets are non-blocking and edge-triggered, so every read
//! goes on until `WouldBlock` (or until the core has no room: then the connection is marked
//! stalled and read again when the core reports it ready), and every write until the core has
//! nothing more or the socket is full (then the writable edge brings us back). After each core
//! call the loop drains `poll_ready`, because one connection's request (a put) can change
//! another's state (its blocked get is answered). Every protocol decision is the core's; this
//! file only moves bytes and keeps the clock.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use depot_core::keyring::MIN_KEY_LEN;
use depot_core::manager::encode_busy;
use depot_core::wire::CloseReason;
use depot_core::wire::NONCE_LEN;
use depot_core::{AcceptError, Instant};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, info, info_span, warn, Span};

use super::backend;
use super::durable::{self, Log};
use super::metrics::{Counters, Metrics};
use super::storage::{self, Plan};
use super::tally::{self, Kind, Tally};
use super::Shared;
use crate::Error;

pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
pub(crate) const WAKER: Token = Token(usize::MAX - 2);
/// A backend's socket the loop reads for it (see `backend::BackendLink::watch`).
pub(crate) const BACKEND: Token = Token(usize::MAX - 3);

/// How long a shutting-down manager waits for its connections to flush and go.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Reads one connection gets per turn before others are served (fairness under floods).
const READ_BUDGET: usize = 16;
/// Bytes of the read at accept (a hello is a few hundred; more is read the usual way).
const FIRST_READ: usize = 1024;
/// Connections accepted per turn before the others are served: under a flood of connects,
/// clients already accepted get their hellos read before newer connections evict them.
const ACCEPT_BUDGET: usize = 64;
/// How soon to try `accept` again after it failed for lack of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The longest a commit that syncs waits for the connections of the last one to ask again.
const GATHER: Duration = Duration::from_micros(50);
/// Rounds of commit-then-flush per turn for connections whose replies waited on the log (each
/// round may read more input, so more records); the rest wait for the next turn.
const COMMIT_ROUNDS: usize = 4;

/// A bound listener and its poll, ready to run (made by the builder, so that bind errors and
/// the address are known before a background thread starts).
pub(crate) struct Prepared {
    pub(crate) plan: Plan,
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) address: SocketAddr,
    pub(crate) shared: Arc<Shared>,
}

/// Milliseconds since the manager started: the core's clock.
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.0.elapsed().as_millis() as u64)
    }
}

/// One accepted socket, indexed by its core connection id.
struct Sock {
    stream: TcpStream,
    /// Every log line about this connection is in its span, which carries the peer.
    span: Span,
    /// Input may be waiting in the socket: the core had no room, or the read budget ran out.
    read_stalled: bool,
    /// On the backlog of connections to read again without waiting for an edge.
    backlogged: bool,
    /// Its output waits until the log holds the changes its replies depend on.
    deferred: bool,
    /// The number of the last commit whose sync answered it (see `Loop::commit`).
    answered_by: u64,
    /// Writes to a Python client after which its next input is acknowledged at once.
    quick_acks: u8,
}

/// Allocates the storage, builds the core manager on it and runs the loop until the manager
/// has shut down. `started` hears whether set-up worked, before the loop starts.
pub(crate) fn run(p: Prepared, started: Option<Sender<Result<(), Error>>>) -> Result<(), Error> {
    let Prepared {
        plan,
        poll,
        listener,
        address,
        shared,
    } = p;
    let resources = match storage::resources(&plan) {
        Ok(resources) => resources,
        Err(e) => return report_setup(started, e),
    };
    let mut core = match &plan.authkey {
        Some(authkey) => depot_core::Manager::new(plan.config, authkey, resources),
        None => match depot_core::Manager::with_keyring(
            plan.config,
            depot_core::Keyring::empty(),
            resources,
        ) {
            Ok(core) => core,
            Err(e) => return report_setup(started, Error::Config(format!("keyring: {e}"))),
        },
    };
    if let Some(keyring) = plan.keyring.clone() {
        if let Err(e) = core.set_keyring(keyring, Instant::ZERO) {
            return report_setup(started, Error::Config(format!("keyring: {e}")));
        }
    }
    // Python BaseManager clients are served on the same port (PROTOCOL.md §12), with the
    // default key: the keyring's unnamed key, else the authkey.
    let python_key = core
        .keyring()
        .find("")
        .map(|k| core.keyring().keys()[k].secret().to_vec())
        .or_else(|| plan.authkey.clone());
    // Python clients' requests do not pass through the backend.
    if let (Some(key), None) = (python_key, &plan.backend) {
        core.serve_python(&key, storage::python(&plan));
    }
    if plan.authkey.as_ref().is_some_and(|k| k.len() < MIN_KEY_LEN) {
        warn!(
            "THE AUTHKEY IS SHORTER THAN {MIN_KEY_LEN} BYTES: one recorded handshake lets anyone \
             guess it offline; use a long random key (`depot keys new NAME` makes one)"
        );
    }
    warn_weak_keys(core.keyring());
    core.serve_leases(storage::leases(&plan));
    if let Err(e) = storage::dead_letters(&mut core, &plan) {
        return report_setup(started, e);
    }
    core.serve_sessions(vec![depot_core::SessionSlot::EMPTY; plan.sessions]);
    if let Some(name) = core.duplicate_name() {
        let e = Error::Config(format!("queue '{name}' declared twice"));
        return report_setup(started, e);
    }
    let log = match plan
        .durable
        .clone()
        .map(|opts| durable::start(opts, &mut core))
    {
        None => None,
        Some(Ok(log)) => Some(log),
        Some(Err(e)) => return report_setup(started, e),
    };
    let backend = match &plan.backend {
        None => None,
        Some(b) => {
            let queues: Vec<_> = plan
                .queues
                .iter()
                .map(|(name, spec, _)| (name.clone(), *spec))
                .collect();
            let pending = plan.waiters.max(4096);
            match backend::start(
                b,
                &queues,
                shared.clone(),
                poll.registry(),
                &mut core,
                pending,
            ) {
                Ok(running) => Some(running),
                Err(e) => return report_setup(started, e),
            }
        }
    };
    if let Some(tx) = started {
        let _ = tx.send(Ok(()));
    }
    info!(
        %address,
        queues = plan.queues.len(),
        max_connections = plan.max_connections,
        "manager listening"
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut event_loop = Loop {
        calls: Calls {
            handlers: plan.handlers.clone(),
            done_tx,
            done_rx,
        },
        poll,
        listener: Some(listener),
        core,
        socks: (0..plan.max_connections).map(|_| None).collect(),
        backlog: Vec::with_capacity(plan.max_connections),
        spare: Vec::with_capacity(plan.max_connections),
        clock: Clock(std::time::Instant::now()),
        shared,
        grace_until: None,
        accept_retry: None,
        accept_more: false,
        reserve_fd: reserve_fd(),
        tally: Tally::new(tally::INTERVAL),
        auth_quiet_until: std::time::Instant::now(),
        counters: Counters::default(),
        metrics_served: 0,
        closed_in_shutdown: 0,
        log,
        deferred: Vec::with_capacity(plan.max_connections),
        last_group: 0,
        last_answered: 0,
        // A connection not yet answered has 0: never the number of the last sync.
        commits: 1,
        gather_until: None,
        backend,
        busy_poll: plan.busy_poll,
    };
    let mut result = event_loop.run();
    if let (Ok(()), Some(log)) = (&result, &mut event_loop.log) {
        result = log.close().map_err(Error::from);
    }
    event_loop.tally.flush();
    event_loop.auth_quiet_until = std::time::Instant::now();
    event_loop.report_auth();
    let last = event_loop.snapshot();
    info!(
        %address,
        queued_items = last.queued_items(),
        connections_closed = event_loop.closed_in_shutdown,
        "manager stopped"
    );
    let ticket = event_loop.shared.board.wanted(0).unwrap_or(0);
    event_loop.shared.board.publish(ticket, last, true);
    result
}

/// What a panic said, for the caller of a registered call.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let said = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("the handler panicked: {said}")
}

fn report_setup(started: Option<Sender<Result<(), Error>>>, e: Error) -> Result<(), Error> {
    match started {
        Some(tx) => {
            let _ = tx.send(Err(e));
            Ok(())
        }
        None => Err(e),
    }
}

/// A call's answer, from the thread that ran its handler.
type Answer = (depot_core::manager::CallId, Result<Vec<u8>, String>);

/// Registered calls: their handlers, and the answers of those running on their threads.
struct Calls {
    handlers: std::collections::HashMap<String, super::builder::CallHandler>,
    done_tx: Sender<Answer>,
    done_rx: std::sync::mpsc::Receiver<Answer>,
}

struct Loop<'m> {
    calls: Calls,
    poll: Poll,
    /// `None` once shutting down: no new connections.
    listener: Option<TcpListener>,
    core: depot_core::Manager<'m>,
    socks: Vec<Option<Sock>>,
    /// Connections to read again this turn; `spare` is swapped in while it is walked, so
    /// neither ever reallocates (both hold every connection).
    backlog: Vec<usize>,
    spare: Vec<usize>,
    clock: Clock,
    shared: Arc<Shared>,
    /// When a shutting-down manager stops waiting for its connections.
    grace_until: Option<std::time::Instant>,
    /// When to try `accept` again after running out of file descriptors.
    accept_retry: Option<std::time::Instant>,
    /// The accept budget ran out with connections perhaps still pending.
    accept_more: bool,
    /// A descriptor kept open to be given up when none is left, so that a client the process
    /// cannot serve is accepted just long enough to be told "busy" (not left hanging).
    reserve_fd: Option<File>,
    /// Counts events peers can cause at will, for rate-limited log lines.
    tally: Tally,
    /// No summary of failed proofs before this.
    auth_quiet_until: std::time::Instant,
    counters: Counters,
    /// The newest metrics ticket answered.
    metrics_served: u64,
    /// Connections closed since shutting down began.
    closed_in_shutdown: u64,
    /// The log of a manager with a data directory.
    log: Option<Log>,
    /// Connections whose output waits for the next commit of the log.
    deferred: Vec<usize>,
    /// Connections the last two syncs answered between them, and until when the next commit
    /// waits for as many.
    last_group: usize,
    /// Connections the last sync answered, and that sync's number (each sync that answers
    /// any gets the next).
    last_answered: usize,
    commits: u64,
    gather_until: Option<std::time::Instant>,
    /// The engine that keeps the queues, if not this manager.
    backend: Option<backend::Running>,
    /// How long to look for input without sleeping after a turn that had some.
    busy_poll: Duration,
}

impl Loop<'_> {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.wait(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    // The stop flag is checked below, on every turn.
                    WAKER => {}
                    BACKEND => {
                        if let Some(b) = &self.backend {
                            b.read_input();
                        }
                    }
                    Token(i) => {
                        if event.is_writable() {
                            self.flush(i);
                        }
                        let closing = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closing {
                            // A short read drains the socket, and any later input is a new
                            // edge, unless the peer's end (or an error) is already pending.
                            self.read_until(i, !closing);
                        }
                        self.service(i);
                    }
                }
            }
            if self.accept_more
                || self
                    .accept_retry
                    .is_some_and(|t| t <= std::time::Instant::now())
            {
                self.accept_retry = None;
                self.accept_more = false;
                self.accept_all();
            }
            self.run_backlog();
            self.core.handle_timeout(self.clock.now());
            self.run_calls();
            self.run_backend();
            self.drain_ready();
            self.tally.tick();
            self.take_keyring();
            self.report_auth();
            if self.shared.stop.load(Ordering::SeqCst) && !self.core.is_shutting_down() {
                info!(
                    connections = self.core.connections(),
                    "manager shutting down"
                );
                self.core.shutdown(self.clock.now());
                self.drain_ready();
            }
            self.core.flush_backend();
            self.commit()?;
            if let Some(ticket) = self.shared.board.wanted(self.metrics_served) {
                self.metrics_served = ticket;
                self.shared.board.publish(ticket, self.snapshot(), false);
            }
            if self.core.is_shutting_down() && self.finish_shutdown() {
                return Ok(());
            }
        }
    }

    /// Waits for events. After a turn that had some, it first looks again without sleeping
    /// for up to `busy_poll`, yielding the CPU between looks (until another thread wants it):
    /// the next request of a busy connection usually comes sooner than a sleeping thread can
    /// be woken.
    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let spin = timeout.map_or(self.busy_poll, |t| t.min(self.busy_poll));
        if !events.is_empty() && !spin.is_zero() {
            let start = std::time::Instant::now();
            let poll = &mut self.poll;
            let found = crate::busy::look_for(spin, || {
                poll.poll(events, Some(Duration::ZERO))?;
                Ok((!events.is_empty()).then_some(()))
            })?;
            if found.is_some() {
                return Ok(());
            }
            let spun = start.elapsed();
            return self
                .poll
                .poll(events, timeout.map(|t| t.saturating_sub(spun)));
        }
        self.poll.poll(events, timeout)
    }

    /// Hands answered calls back to the core, and starts each call the core has for its
    /// handler on a thread of its own (the core bounds how many run at once); the thread wakes
    /// the loop with its answer. A handler that panics answers the panic's message.
    fn run_calls(&mut self) {
        while let Ok((id, outcome)) = self.calls.done_rx.try_recv() {
            let outcome = match &outcome {
                Ok(response) => Ok(&response[..]),
                Err(e) => Err(e.as_str()),
            };
            self.core.handle_call_done(id, self.clock.now(), outcome);
        }
        while let Some(call) = self.core.poll_call() {
            let handler = self.calls.handlers.get(call.name).cloned();
            let (id, request) = (call.id, call.request.to_vec());
            let done = self.calls.done_tx.clone();
            let shared = self.shared.clone();
            let run = move || {
                let outcome = match handler {
                    Some(h) => {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (h.0)(&request)))
                            .unwrap_or_else(|panic| Err(panic_text(&*panic)))
                    }
                    None => Err("no handler for this call".into()),
                };
                let _ = done.send((id, outcome));
                let _ = shared.waker.wake();
            };
            let spawned = std::thread::Builder::new()
                .name(format!("depot-call {}", call.name))
                .spawn(run);
            if let Err(e) = spawned {
                let text = format!("cannot start the handler: {e}");
                self.core.handle_call_done(id, self.clock.now(), Err(&text));
            }
        }
    }

    /// Hands the backend's answers to the core, and tells the backend what became of each.
    fn run_backend(&mut self) {
        let Some(b) = &self.backend else {
            return;
        };
        b.pending.take();
        while let Ok(done) = b.rx.try_recv() {
            let completion =
                self.core
                    .complete_backend(done.token, done.outcome.borrow(), self.clock.now());
            if let Some(settle) = done.settle {
                settle(completion);
            }
        }
    }

    /// How long to sleep: until the core's next deadline, sooner for pending work.
    fn poll_timeout(&self) -> Option<Duration> {
        let now = self.clock.now();
        let mut timeout = self
            .core
            .poll_timeout()
            .map(|t| Duration::from_millis(now.millis_until(t)));
        let mut sooner = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        let answers = self.backend.as_ref().is_some_and(|b| b.pending.is_set());
        let commit_now = !self.deferred.is_empty() && self.gather_until.is_none();
        if !self.backlog.is_empty() || self.accept_more || commit_now || answers {
            sooner(Duration::ZERO);
        }
        let wall = std::time::Instant::now();
        let summary = self.tally.due();
        let auth = self
            .core
            .has_auth_reports()
            .then_some(self.auth_quiet_until);
        let sync = self.log.as_ref().and_then(Log::sync_due);
        let gather = self.gather_until;
        for until in [
            self.grace_until,
            self.accept_retry,
            summary,
            auth,
            sync,
            gather,
        ]
        .into_iter()
        .flatten()
        {
            sooner(until.saturating_duration_since(wall));
        }
        timeout
    }

    /// Stops accepting once the core is shutting down; `true` when the loop may end.
    fn finish_shutdown(&mut self) -> bool {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            self.grace_until = Some(std::time::Instant::now() + SHUTDOWN_GRACE);
            // Counted from when shutting down began: some may have closed in that same turn.
            info!(
                connections = self.closed_in_shutdown + u64::from(self.core.connections()),
                "manager no longer accepting; flushing connections"
            );
        }
        let expired = self
            .grace_until
            .is_some_and(|t| t <= std::time::Instant::now());
        if self.core.connections() > 0 && !expired {
            return false;
        }
        for i in 0..self.socks.len() {
            if self.socks[i].is_some() {
                self.close(i, "manager stopped");
            }
        }
        true
    }

    fn accept_all(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else {
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    self.tally.note_accept_error(&e);
                    if out_of_descriptors(&e) && self.refuse_with_reserve() {
                        continue;
                    }
                    // The pending connections stay in the backlog, and no new edge may come:
                    // try again shortly, without spinning.
                    self.accept_retry = Some(std::time::Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            self.admit(stream, peer);
            // An accept may have evicted a handshake: close it now, so that its slot serves
            // the next connection in this same burst.
            self.drain_ready();
        }
        // Pending connections wait for the next turn (the listener gives no new edge for them).
        self.accept_more = true;
    }

    /// Out of descriptors: gives up the reserve to accept one pending client and tell it
    /// "busy", then takes the reserve back. `false` if there was nothing to do it with.
    fn refuse_with_reserve(&mut self) -> bool {
        let (Some(listener), Some(reserve)) = (&self.listener, self.reserve_fd.take()) else {
            return false;
        };
        drop(reserve);
        let refused = match listener.accept() {
            Ok((stream, _)) => {
                self.counters.refused_busy += 1;
                self.tally.note(Kind::Busy);
                refuse(stream);
                true
            }
            Err(_) => false,
        };
        self.reserve_fd = reserve_fd();
        refused && self.reserve_fd.is_some()
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        // Replies are small and latency-bound; never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let mut nonce = [0u8; NONCE_LEN];
        if let Err(e) = getrandom::fill(&mut nonce) {
            // Counted and summarised: repeated per connection, it must not flood the log.
            let e = io::Error::other(format!("no random bytes for a handshake nonce: {e}"));
            self.tally.note_accept_error(&e);
            return;
        }
        let now = self.clock.now();
        let source = match peer.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let mut accepted = self.core.accept(now, nonce, &source);
        if accepted == Err(AcceptError::Busy) {
            // The core may have evicted a handshake to make room: once that socket is closed,
            // its slot is free for this connection.
            let before = self.core.connections();
            self.drain_ready();
            if self.core.connections() < before {
                accepted = self.core.accept(now, nonce, &source);
            }
        }
        let id = match accepted {
            Ok(id) => id,
            Err(AcceptError::Throttled) => {
                // Counted by the core, reported in its summary of failed proofs.
                self.counters.refused_source += 1;
                refuse(stream);
                return;
            }
            Err(e @ (AcceptError::Busy | AcceptError::SourceLimit)) => {
                if e == AcceptError::Busy {
                    self.counters.refused_busy += 1;
                    self.tally.note(Kind::Busy);
                } else {
                    self.counters.refused_source += 1;
                    self.tally.note(Kind::SourceLimit);
                }
                debug!(%peer, "refusing connection: {e:?}");
                refuse(stream);
                return;
            }
            Err(_) => return,
        };
        let i = id.index();
        let registered = self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        );
        match (registered, self.socks.get_mut(i)) {
            (Ok(()), Some(slot)) => {
                self.counters.accepted += 1;
                let span = info_span!("conn", id = i, %peer);
                debug!(parent: &span, "connection accepted");
                *slot = Some(Sock {
                    stream,
                    span,
                    read_stalled: false,
                    backlogged: false,
                    deferred: false,
                    answered_by: 0,
                    quick_acks: PYTHON_QUICK_ACKS,
                });
                // A client's hello is often here already: reading it now moves the client
                // ahead of silent connections in the order of eviction.
                self.read_first(i);
                self.service(i);
            }
            (result, _) => {
                let e = io::Error::other(format!("cannot watch a connection: {result:?}"));
                self.tally.note_accept_error(&e);
                self.core.handle_close(id, now);
            }
        }
    }

    /// The read at accept, into a block on the stack rather than the core's buffer: when the
    /// client has sent nothing yet (a Python client waits for our challenge, a flood sends
    /// nothing at all), asking the core for room would allocate a receive buffer that the
    /// silent connection then holds until it speaks or times out.
    fn read_first(&mut self, i: usize) {
        let (Some(id), Some(sock)) = (
            self.core.connection_at(i),
            self.socks.get(i).and_then(Option::as_ref),
        ) else {
            return;
        };
        let mut first = [0u8; FIRST_READ];
        match (&sock.stream).read(&mut first) {
            Ok(0) => self.close_ended(i, "peer closed the connection", true),
            Ok(n) => {
                self.counters.bytes_in += n as u64;
                let taken = self.core.handle_input(id, self.clock.now(), &first[..n]);
                if taken < n && !self.core.wants_close(id) {
                    // A fresh connection's buffer grows to hold a whole frame, so only input
                    // the core refused (and closes for) is left over; never lose bytes.
                    self.close(i, "input the manager could not take");
                } else if n == first.len() {
                    // Perhaps more than the block: read on as usual.
                    self.read_until(i, true);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => self.close(i, &format!("read failed: {e}")),
        }
    }

    /// Reads connection `i` until the socket is drained, the core has no room, or the turn's
    /// budget is spent; the core processes every whole frame as it arrives.
    fn read(&mut self, i: usize) {
        self.read_until(i, false);
    }

    /// [`Self::read`]; with `short_read_drains`, a read that fills less than the room offered
    /// counts as draining the socket (saving the read that would only say `WouldBlock`).
    fn read_until(&mut self, i: usize, short_read_drains: bool) {
        let Some(id) = self.core.connection_at(i) else {
            return;
        };
        for _ in 0..READ_BUDGET {
            let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let space = self.core.rx_space(id);
            if space.is_empty() {
                // Paused (replies waiting for room) or closing: the core reports the
                // connection ready when it may read again.
                sock.read_stalled = true;
                return;
            }
            match (&sock.stream).read(space) {
                Ok(0) => {
                    self.close_ended(i, "peer closed the connection", true);
                    return;
                }
                Ok(n) => {
                    self.counters.bytes_in += n as u64;
                    let drained = short_read_drains && n < space.len();
                    self.core.handle_received(id, self.clock.now(), n);
                    if drained {
                        if let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) {
                            sock.read_stalled = false;
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sock.read_stalled = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(i, &format!("read failed: {e}"));
                    return;
                }
            }
        }
        // Budget spent with input perhaps left: come back after the others had a turn.
        if let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) {
            sock.read_stalled = true;
            if !sock.backlogged {
                sock.backlogged = true;
                self.backlog.push(i);
            }
        }
    }

    fn run_backlog(&mut self) {
        std::mem::swap(&mut self.backlog, &mut self.spare);
        let mut k = 0;
        while k < self.spare.len() {
            let i = self.spare[k];
            k += 1;
            if let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) {
                sock.backlogged = false;
                self.read(i);
                self.service(i);
            }
        }
        self.spare.clear();
    }

    /// Writes what the core has for connection `i` until it has no more or the socket is full.
    fn flush(&mut self, i: usize) {
        if self.must_wait(i) {
            return;
        }
        let Some(id) = self.core.connection_at(i) else {
            return;
        };
        loop {
            let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            let out = self.core.poll_transmit(id);
            if out.is_empty() {
                return;
            }
            match (&sock.stream).write(out) {
                Ok(0) => {
                    self.close(i, "peer stopped accepting data");
                    return;
                }
                Ok(n) => {
                    self.counters.bytes_out += n as u64;
                    if sock.quick_acks > 0 && self.core.is_python(id) {
                        sock.quick_acks -= 1;
                        quick_ack(&sock.stream);
                    }
                    self.core.handle_transmitted(id, self.clock.now(), n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(i, &format!("write failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Brings connection `i` up to date with the core: output flushed, closed if the core is
    /// done with it, stalled input read again.
    fn service(&mut self, i: usize) {
        if self.must_wait(i) {
            return;
        }
        self.flush(i);
        let Some(sock) = self.socks.get(i).and_then(Option::as_ref) else {
            return;
        };
        let stalled = sock.read_stalled && !sock.backlogged;
        let Some(id) = self.core.connection_at(i) else {
            return;
        };
        if self.core.wants_close(id) {
            let why = self
                .core
                .close_reason(id)
                .map_or("closed by the manager", |r| r.description());
            self.close(i, why);
        } else if stalled {
            self.read(i);
        }
    }

    /// Whether connection `i`'s output must wait for the log to hold the changes made since
    /// the last commit (its replies may depend on them); if so it is served after the commit.
    fn must_wait(&mut self, i: usize) -> bool {
        if !self.log.as_ref().is_some_and(Log::dirty) {
            return false;
        }
        if let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) {
            if !sock.deferred {
                sock.deferred = true;
                self.deferred.push(i);
            }
        }
        true
    }

    /// Group commit: writes (and syncs, as the policy says) the records of this turn's input,
    /// then serves the connections whose replies waited for them.
    ///
    /// When every commit syncs and some connection waits for it, it first waits (up to
    /// [`GATHER`]) until as many connections wait for it as the last two syncs answered
    /// between them: those clients send their next request within microseconds of their
    /// reply, and one sync for all of them costs a fraction of one each. Two syncs, not one:
    /// a client that missed one gathering (it was slow to send) makes the next group
    /// smaller, and counting only that group would keep the clients split in two groups,
    /// each syncing for itself.
    fn commit(&mut self) -> Result<(), Error> {
        let Some(log) = self.log.as_ref() else {
            return Ok(());
        };
        let waiting = self.deferred.len();
        if log.syncs_every_commit() && waiting > 0 && waiting < self.last_group {
            let now = std::time::Instant::now();
            let until = *self.gather_until.get_or_insert(now + GATHER);
            if now < until {
                return Ok(());
            }
        }
        self.gather_until = None;
        for round in 0..COMMIT_ROUNDS {
            if let Some(log) = self.log.as_mut() {
                log.commit()?;
            }
            if self.deferred.is_empty() {
                break;
            }
            std::mem::swap(&mut self.deferred, &mut self.spare);
            if round == 0 {
                self.count_group();
            }
            let mut k = 0;
            while k < self.spare.len() {
                let i = self.spare[k];
                k += 1;
                if let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) {
                    sock.deferred = false;
                    self.service(i);
                }
            }
            self.spare.clear();
            self.drain_ready();
        }
        if let Some(log) = self.log.as_mut() {
            log.tick()?;
        }
        Ok(())
    }

    /// Counts the group a sync answers (the connections in `spare`) for the next commit's
    /// gathering: the connections of this group and the last one's, each once.
    fn count_group(&mut self) {
        self.commits += 1;
        let mut again = 0;
        for &i in &self.spare {
            if let Some(sock) = self.socks.get_mut(i).and_then(Option::as_mut) {
                if sock.answered_by + 1 == self.commits {
                    again += 1;
                }
                sock.answered_by = self.commits;
            }
        }
        let group = self.spare.len();
        self.last_group = (group + self.last_answered).saturating_sub(again);
        self.last_answered = group;
    }

    /// Serves every connection whose state changed outside its own calls.
    fn drain_ready(&mut self) {
        while let Some(id) = self.core.poll_ready() {
            self.service(id.index());
        }
    }

    /// Closes connection `i`'s socket and frees its core slot.
    fn close(&mut self, i: usize, why: &str) {
        self.close_ended(i, why, false);
    }

    /// [`Self::close`]; `input_ended` when a read just saw the end of the peer's input.
    fn close_ended(&mut self, i: usize, why: &str, input_ended: bool) {
        let id = self.core.connection_at(i);
        // No `deregister`: the socket is closed below, which takes it out of the epoll set
        // (the manager holds no other descriptor of it), one system call fewer per connection.
        if let Some(sock) = self.socks.get_mut(i).and_then(Option::take) {
            // Unread input would turn our close into a reset, which can make the peer lose
            // the farewell it has not read yet; past the end there is none.
            if !input_ended {
                discard_input(&sock.stream);
            }
            let _ = sock.stream.shutdown(Shutdown::Write);
            debug!(parent: &sock.span, "connection closed: {why}");
            match id.and_then(|id| self.core.close_reason(id)) {
                Some(CloseReason::AuthFailed) => {
                    self.counters.auth_failures += 1;
                    self.tally.note(Kind::AuthFailed);
                }
                Some(CloseReason::Busy) => {
                    self.counters.evicted += 1;
                    self.tally.note(Kind::Evicted);
                }
                Some(CloseReason::EncryptionRequired) => self.tally.note(Kind::NotEncrypted),
                _ => {}
            }
            if self.core.is_shutting_down() {
                self.closed_in_shutdown += 1;
            }
        }
        if let Some(id) = id {
            self.core.handle_close(id, self.clock.now());
        }
    }

    /// Takes in a keyring handed over by [`super::ManagerHandle::set_keyring`].
    fn take_keyring(&mut self) {
        let keyring = self
            .shared
            .keyring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(keyring) = keyring else {
            return;
        };
        let before = self.core.connections();
        match self.core.set_keyring(keyring, self.clock.now()) {
            Ok(()) => {
                warn_weak_keys(self.core.keyring());
                self.drain_ready();
                info!(
                    keys = self.core.keyring().keys().len(),
                    closed = before.saturating_sub(self.core.connections()),
                    "keyring replaced"
                );
            }
            Err(e) => warn!("keyring not replaced: {e}"),
        }
    }

    /// Logs the core's summary of failed proofs, at most once per interval.
    fn report_auth(&mut self) {
        let now = std::time::Instant::now();
        if !self.core.has_auth_reports() || now < self.auth_quiet_until {
            return;
        }
        let mut lines = Vec::new();
        let mut total = 0u64;
        self.core.take_auth_reports(|r| {
            let (text, n) = tally::auth_line(r);
            total += u64::from(n);
            lines.push(text);
        });
        // One line per interval at most, however many peers fail.
        warn!(
            "{total} failed or refused authentication{} since the last report: {}",
            if total == 1 { "" } else { "s" },
            lines.join("; ")
        );
        self.auth_quiet_until = now + tally::INTERVAL;
    }

    /// The core's state and this loop's counters, for [`super::ManagerHandle::metrics`].
    fn snapshot(&self) -> Metrics {
        let mut metrics = Metrics::of(&self.core, self.counters);
        metrics.durability = self.log.as_ref().map(Log::state);
        metrics.backend = self.backend.as_ref().map(|b| b.health.state(&b.kind));
        metrics
    }
}

/// Warns about every key shorter than [`MIN_KEY_LEN`].
fn warn_weak_keys(keyring: &depot_core::Keyring) {
    for key in keyring.keys().iter().filter(|k| k.is_weak()) {
        warn!(
            "KEY '{}' IS SHORTER THAN {MIN_KEY_LEN} BYTES: one recorded handshake lets anyone \
             guess it offline; use a long random key (`depot keys new NAME` makes one)",
            key.name()
        );
    }
}

/// Python's client sends its handshake's last message and its first request back to back with
/// Nagle's algorithm on, so the request waits until the manager acknowledges the first: a
/// delayed acknowledgement would hold it for 40 ms. After each of the manager's first writes to
/// a Python client (the welcome, its answer to the client's challenge, the first reply), the
/// socket is set to acknowledge at once (Linux clears the setting as it goes, so it is set again).
const PYTHON_QUICK_ACKS: u8 = 3;

fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is the stream's own and open; the option is a `c_int`.
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// Tells a client it is refused ("busy") and closes.
fn refuse(stream: TcpStream) {
    discard_input(&stream);
    let mut out = [0u8; 16];
    let _ = (&stream).write(encode_busy(&mut out));
    let _ = stream.shutdown(Shutdown::Write);
}

/// Whether `accept` failed for lack of file descriptors (the process's or the system's).
fn out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A descriptor to hold in reserve (see `Loop::reserve_fd`).
fn reserve_fd() -> Option<File> {
    File::open(if cfg!(unix) { "/dev/null" } else { "NUL" }).ok()
}

/// Reads and drops whatever input is waiting, a little at most.
fn discard_input(mut stream: &TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..4 {
        match stream.read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}
