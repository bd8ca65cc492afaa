//! One connection to a manager, shared by any number of threads without a thread of its own.
//!
//! Requests from several threads are pipelined on the one TCP connection: each caller encodes
//! its request into the core client under a short lock, writes it out, and waits for the reply
//! carrying its request id. Replies are read by a *leader/follower* scheme instead of a
//! background thread (thousands of clients may exist): the first waiter becomes the leader and
//! reads the socket (through a `try_clone`d handle, holding no lock while it blocks), feeds the
//! bytes to the core and files every reply by id in a small table; the others sleep on a
//! condition variable and pick their reply up from the table. When the leader has its own reply
//! it steps down and wakes the others, one of which takes over.
//!
//! Three locks, always taken in this order when nested: `writer` (the socket's write side and a
//! copy buffer, held while a write blocks), `state` (the core client and the reply table, held
//! only briefly), and `reader` (the leader's read buffer, never contended). Writes copy the
//! core's output out under `state` and block on the socket outside it, so a slow write never
//! stops the leader from filing replies.
//!
//! The core client owns its buffers; they grow with the largest frame in flight and are given
//! back when they empty, so an idle client holds none.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use depot_core::client::{ClientConfig, SendError, SendUnansweredError};
use depot_core::reconnect::refused_for_now;
use depot_core::wire::{
    ErrorCode, ManagerStatus, ObjectInfo, ObjectStat, Op, QueueSize, Reply, HEADER_LEN,
    MAX_MAX_FRAME, NONCE_LEN,
};
use depot_core::{Event, Instant};
use tracing::debug;

use crate::sync::{Condvar, Mutex, MutexGuard, Stream};
use crate::Error;

/// Requests one connection keeps in flight at most.
pub(crate) const SLOTS: usize = 256;
/// The core client's receive and transmit buffers may each grow to the largest frame the
/// protocol allows, so any queue's largest item fits; they hold only what is in flight.
pub(crate) const BUF_LEN: usize = HEADER_LEN + MAX_MAX_FRAME as usize;
/// Bytes the leader reads from the socket at once (small: every client that waited has one).
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// How long the manager may take to answer beyond what a request itself may wait.
pub(crate) const REPLY_GRACE_MS: u32 = 30_000;
/// The longest a leader blocks in one read before it runs the core's clock again (a request
/// sent meanwhile may have an earlier reply deadline than the one the read started with).
const MAX_READ_WAIT: Duration = Duration::from_secs(5);

/// The core client, with a closure-style accessor so its uses read alike.
struct CoreCell(depot_core::Client<'static>);

impl CoreCell {
    fn with<R>(&mut self, f: impl FnOnce(&mut depot_core::Client<'static>) -> R) -> R {
        f(&mut self.0)
    }
}

/// A reply, owned, so it can wait in the table for the thread that asked.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done,
    Opened(ObjectInfo),
    Item(Vec<u8>),
    Size(QueueSize),
    Stat(Option<OwnedStat>),
    Status(ManagerStatus),
    Error(ErrorCode),
    Accepted {
        count: u32,
        error: Option<ErrorCode>,
    },
    Items(super::Batch),
    Leased {
        lease: u64,
        deliveries: Vec<u8>,
        items: Vec<Vec<u8>>,
    },
    Flag(bool),
    Count(u32),
    Value(Vec<u8>),
    Values(Vec<Vec<u8>>),
    Failed(String),
    /// The manager had no room to park this blocking request ("too many blocked requests"),
    /// when `progress` other replies had been filed: it may be sent again once more have.
    Refused {
        progress: u64,
    },
    /// The session is open; the manager remembered it.
    Session(bool),
    /// The manager's backend's health, `None` without a backend.
    Backend(Option<crate::BackendHealth>),
}

/// [`ObjectStat`] with its name owned.
#[derive(Debug)]
pub(crate) struct OwnedStat {
    pub(crate) name: String,
    pub(crate) stat: ObjectStat<'static>,
}

impl Outcome {
    pub(crate) fn from_reply(reply: Reply<'_>) -> Outcome {
        match reply {
            Reply::Done => Outcome::Done,
            Reply::Opened(info) => Outcome::Opened(info),
            Reply::Item { item, .. } => Outcome::Item(item.to_vec()),
            Reply::Size(size) => Outcome::Size(size),
            Reply::Stat(stat) => Outcome::Stat(stat.map(|s| OwnedStat {
                name: s.name.to_owned(),
                stat: ObjectStat { name: "", ..s },
            })),
            Reply::Status(status) => Outcome::Status(status),
            Reply::Error(code) => Outcome::Error(code),
            Reply::Accepted { count, error } => Outcome::Accepted { count, error },
            Reply::Items { items, .. } => {
                let mut batch = super::Batch::default();
                batch.extend_packed(items);
                Outcome::Items(batch)
            }
            Reply::Leased {
                lease,
                deliveries,
                items,
                ..
            } => Outcome::Leased {
                lease,
                deliveries: deliveries.to_vec(),
                items: items.iter().map(<[u8]>::to_vec).collect(),
            },
            Reply::Flag(flag) => Outcome::Flag(flag),
            Reply::Count(n) => Outcome::Count(n),
            Reply::Value(value) => Outcome::Value(value.to_vec()),
            Reply::Values(items) => Outcome::Values(items.iter().map(<[u8]>::to_vec).collect()),
            Reply::Failed(text) => Outcome::Failed(text.to_owned()),
            Reply::Session { resumed } => Outcome::Session(resumed),
            Reply::Backend(health) => Outcome::Backend(health.map(|h| crate::BackendHealth {
                kind: h.kind.to_owned(),
                server: h.server.to_owned(),
                connected: h.connected,
                since: std::time::Duration::from_millis(h.since_ms),
                reconnects: h.reconnects,
                last_error: h.last_error.to_owned(),
            })),
            // A reply this client never asks for.
            _ => Outcome::Error(ErrorCode::WrongKind),
        }
    }
}

/// Why [`Conn::try_send`] did not send: the core's [`SendError`] sorted into what waiting
/// cures (no slot or no buffer room) and what it does not.
pub(crate) enum TrySendError {
    /// Wait for replies (or for output to drain) and try again.
    Busy,
    Failed(Error),
}

struct State {
    core: CoreCell,
    /// Replies not yet picked up, by request id.
    replies: Vec<(u32, Outcome)>,
    /// Why the connection is over, once it is.
    closed: Option<depot_core::Error>,
    /// Whether some thread is reading the socket.
    leading: bool,
    /// Threads asleep on `changed`: with none, a wake-up is skipped (std's `notify_all` makes
    /// a syscall even when nobody waits, and a caller alone on its connection never waits).
    sleepers: usize,
    /// Replies filed so far; waiters for "any progress" watch it change.
    filed: u64,
    /// Replies filed so far other than refusals: each may have freed room for a blocked
    /// request (see [`Outcome::Refused`]).
    progress: u64,
}

struct Writer {
    stream: Stream,
    /// The core's output, copied out so the socket write happens outside the state lock.
    buf: Vec<u8>,
}

/// A shared connection. See the module docs.
pub(crate) struct Conn {
    peer: SocketAddr,
    epoch: std::time::Instant,
    state: Mutex<State>,
    changed: Condvar,
    writer: Mutex<Writer>,
    /// The leader's read side, its buffer, and the read timeout last set on the socket.
    reader: Mutex<(Stream, Vec<u8>, Option<Duration>)>,
    /// How long the leader looks for input without sleeping before a blocking read.
    busy_poll: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another caller leaves the state consistent (every update is a single step),
    // so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn millis(d: Duration) -> u32 {
    d.as_millis().clamp(1, u128::from(u32::MAX)) as u32
}

impl Conn {
    /// Connects to the first address that answers and runs the handshake, all within
    /// `timeout`.
    #[cfg(not(shuttle))]
    pub(crate) fn connect(
        addr: impl ToSocketAddrs,
        key_name: depot_core::KeyName,
        authkey: &[u8],
        timeout: Duration,
        encryption: depot_core::Encryption,
    ) -> Result<Conn, Error> {
        let epoch = std::time::Instant::now();
        let deadline = epoch + timeout;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("bad address: {e}")))?
            .collect();
        let mut last = Error::Config("the address resolves to nothing".into());
        let mut connected = None;
        for a in &addrs {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                last = Error::ConnectTimeout {
                    addr: a.to_string(),
                };
                break;
            }
            match std::net::TcpStream::connect_timeout(a, left) {
                Ok(s) => {
                    connected = Some((s, *a));
                    break;
                }
                Err(e) => last = connect_error(*a, e),
            }
        }
        let (stream, peer) = connected.ok_or(last)?;
        // Requests are small and latency-bound; never wait for Nagle.
        stream.set_nodelay(true)?;
        Self::over(stream, peer, key_name, authkey, timeout, epoch, encryption)
    }

    /// The model checker has no sockets: its tests connect with [`Conn::over`].
    #[cfg(shuttle)]
    pub(crate) fn connect(
        _: impl ToSocketAddrs,
        _: depot_core::KeyName,
        _: &[u8],
        _: Duration,
        _: depot_core::Encryption,
    ) -> Result<Conn, Error> {
        Err(Error::Config("no TCP under the model checker".into()))
    }

    /// Runs the handshake on a connected `stream`, within `timeout` of `epoch`.
    pub(crate) fn over(
        stream: Stream,
        peer: SocketAddr,
        key_name: depot_core::KeyName,
        authkey: &[u8],
        timeout: Duration,
        epoch: std::time::Instant,
        encryption: depot_core::Encryption,
    ) -> Result<Conn, Error> {
        let deadline = epoch + timeout;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| io::Error::other(format!("no random bytes for a nonce: {e}")))?;
        let config = ClientConfig {
            handshake_timeout_ms: millis(timeout),
            reply_timeout_ms: REPLY_GRACE_MS,
            key_name,
            encryption,
            prefer_aes_gcm: crate::aes_gcm_is_fast(),
        };
        let core = CoreCell(depot_core::Client::owned(
            config,
            authkey,
            nonce,
            Instant::ZERO,
            BUF_LEN,
            BUF_LEN,
            SLOTS,
        ));
        let reader = stream.try_clone()?;
        let conn = Conn {
            peer,
            epoch,
            state: Mutex::new(State {
                core,
                replies: Vec::with_capacity(SLOTS),
                closed: None,
                leading: false,
                sleepers: 0,
                filed: 0,
                progress: 0,
            }),
            changed: Condvar::new(),
            writer: Mutex::new(Writer {
                stream,
                buf: Vec::new(),
            }),
            reader: Mutex::new((reader, vec![0; READ_CHUNK], None)),
            busy_poll: crate::DEFAULT_BUSY_POLL,
        };
        conn.handshake(deadline)?;
        debug!(%peer, "connected");
        Ok(conn)
    }

    fn handshake(&self, deadline: std::time::Instant) -> Result<(), Error> {
        let timed_out = || Error::ConnectTimeout {
            addr: self.peer.to_string(),
        };
        loop {
            {
                let mut g = lock(&self.state);
                let event = g.core.with(|c| match c.poll_event() {
                    Some(Event::Connected) => Some(Ok(())),
                    Some(Event::Closed(e)) => Some(Err(e)),
                    _ => None,
                });
                match event {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(e)) => {
                        g.closed = Some(e);
                        return Err(match e {
                            depot_core::Error::Timeout => timed_out(),
                            e => self.closed_error(e, None),
                        });
                    }
                    None => {}
                }
            }
            // The hello at first; then what decoding the input produced (the proof).
            self.flush()?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let mut reader = lock(&self.reader);
            let (stream, buf, timeout) = &mut *reader;
            // The handshake's reads follow each other within microseconds: the timeout set
            // for the first still ends within 1/64 of it past the deadline, so it is kept
            // (a system call fewer per connect).
            if timeout.is_none_or(|t| t.saturating_sub(left) > t / 64) {
                stream.set_read_timeout(Some(left))?;
                *timeout = Some(left);
            }
            let n = match stream.read(buf) {
                Ok(0) => {
                    return Err(Error::Disconnected {
                        reason: format!(
                            "connection to {} lost: closed during the handshake",
                            self.peer
                        ),
                    })
                }
                Ok(n) => n,
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_lost(&e)),
            };
            let mut g = lock(&self.state);
            g.core.with(|c| c.handle_input(&buf[..n]));
        }
    }

    /// Sets how long a reader waiting for a reply looks for it without sleeping (see
    /// [`crate::ConnectOptions::busy_poll`]).
    pub(crate) fn with_busy_poll(mut self, t: Duration) -> Self {
        self.busy_poll = t;
        self
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection is over.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// How this connection's frames are protected.
    pub(crate) fn sealing(&self) -> Option<crate::Sealing> {
        lock(&self.state).core.with(|c| c.sealing())
    }

    /// The largest item a put on this connection can carry.
    pub(crate) fn max_item(&self) -> usize {
        lock(&self.state).core.with(|c| c.max_item())
    }

    /// Encodes a request into the core client (not yet written out).
    pub(crate) fn try_send(&self, op: Op<'_>) -> Result<u32, TrySendError> {
        let mut g = lock(&self.state);
        if let Some(e) = g.closed {
            return Err(TrySendError::Failed(self.closed_error(e, None)));
        }
        let now = self.now();
        match g.core.with(|c| c.send(now, op)) {
            Ok(id) => Ok(id),
            Err(SendError::InFlightLimit | SendError::WouldBlock) => Err(TrySendError::Busy),
            Err(SendError::TooLarge) => {
                let max = g.core.with(|c| c.max_item());
                let size = match op {
                    Op::Put { item, .. } => item.len(),
                    _ => 0,
                };
                Err(TrySendError::Failed(Error::TooLarge { size, max }))
            }
            Err(e) => Err(TrySendError::Failed(self.closed_error(e.into(), None))),
        }
    }

    /// Encodes a request, waiting for a free slot if every one is in use.
    pub(crate) fn send(&self, op: Op<'_>) -> Result<u32, Error> {
        let mut flushed = false;
        loop {
            match self.try_send(op) {
                Ok(id) => return Ok(id),
                Err(TrySendError::Failed(e)) => return Err(e),
                // The output buffer may just be full: writing it out makes room.
                Err(TrySendError::Busy) if !flushed => {
                    self.flush()?;
                    flushed = true;
                }
                // Every slot is in use: wait for some reply to free one.
                Err(TrySendError::Busy) => {
                    let seen = lock(&self.state).filed;
                    self.wait_until(|s| (s.filed != seen).then_some(()))?;
                    flushed = false;
                }
            }
        }
    }

    /// A request whose reply nobody waits for (see `Client::send_unanswered`), written out.
    pub(crate) fn send_unanswered(&self, op: Op<'_>) -> Result<(), Error> {
        for attempt in 0..2 {
            let sent = {
                let mut g = lock(&self.state);
                if let Some(e) = g.closed {
                    return Err(self.closed_error(e, None));
                }
                g.core.with(|c| c.send_unanswered(op))
            };
            match sent {
                Ok(()) => return self.write_out(true),
                // The output buffer may be full: writing it out makes room.
                Err(SendUnansweredError::WouldBlock) if attempt == 0 => self.flush()?,
                Err(e) => return Err(self.closed_error(e.into(), None)),
            }
        }
        Ok(())
    }

    /// One request, written out, and its reply.
    pub(crate) fn call(&self, op: Op<'_>) -> Result<Outcome, Error> {
        let id = self.send(op)?;
        self.flush()?;
        self.wait_reply(id)
    }

    /// Writes out everything the core has queued.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        self.write_out(false)
    }

    /// Writes out everything the core has queued; `held`: the kernel may hold it back until
    /// the next write or for a moment (see `sync::write_all_held`), as nobody waits for it.
    fn write_out(&self, held: bool) -> Result<(), Error> {
        let mut w = lock(&self.writer);
        loop {
            {
                let mut g = lock(&self.state);
                let Writer { buf, .. } = &mut *w;
                g.core.with(|c| {
                    let out = c.poll_transmit();
                    buf.extend_from_slice(out);
                    let n = out.len();
                    c.handle_transmitted(n);
                });
            }
            if w.buf.is_empty() {
                return Ok(());
            }
            let Writer { stream, buf } = &mut *w;
            let written = if held {
                crate::sync::write_all_held(stream, buf)
            } else {
                stream.write_all(buf)
            };
            buf.clear();
            if let Err(e) = written {
                let err = self.io_lost(&e);
                self.fail(depot_core::Error::Disconnected);
                return Err(err);
            }
        }
    }

    /// After a refusal filed at `progress`, waits until a blocking request may fit again:
    /// another reply came in, or (when nothing else is in flight to bring one) a short while
    /// passed, since then only other connections can free room.
    pub(crate) fn wait_for_room(&self, progress: u64) -> Result<(), Error> {
        let moved = self.wait_until(|s| {
            if s.progress != progress {
                Some(true)
            } else if s.core.with(|c| c.in_flight()) == 0 {
                Some(false)
            } else {
                None
            }
        })?;
        if !moved {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits for the reply to request `id`.
    pub(crate) fn wait_reply(&self, id: u32) -> Result<Outcome, Error> {
        let outcome = self.wait_until(|s| {
            let at = s.replies.iter().position(|(r, _)| *r == id)?;
            Some(s.replies.swap_remove(at).1)
        })?;
        match outcome {
            // The manager is stopping and applied nothing: an error of the connection, so
            // that a client that reconnects sends the request to the manager that comes next
            // (depot-core's `reconnect::refused_for_now`).
            Outcome::Error(code) if refused_for_now(code) => Err(Error::request(code, "")),
            other => Ok(other),
        }
    }

    /// Waits until `check` finds what it wants in the state, leading the reads if no one else
    /// does. Fails once the connection is over (after `check` had its last look).
    fn wait_until<R>(&self, mut check: impl FnMut(&mut State) -> Option<R>) -> Result<R, Error> {
        let mut g = lock(&self.state);
        loop {
            if let Some(r) = check(&mut g) {
                return Ok(r);
            }
            if let Some(e) = g.closed {
                return Err(self.closed_error(e, None));
            }
            if g.leading {
                g.sleepers += 1;
                g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
                g.sleepers -= 1;
                continue;
            }
            g.leading = true;
            drop(g);
            let result = self.lead(&mut check);
            g = lock(&self.state);
            g.leading = false;
            // Hand the reading over to whoever still waits.
            self.wake(&g);
            match result {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and files replies until `check` is satisfied or the connection ends.
    fn lead<R>(&self, check: &mut impl FnMut(&mut State) -> Option<R>) -> Result<Option<R>, Error> {
        let mut reader = lock(&self.reader);
        let (stream, buf, timeout) = &mut *reader;
        loop {
            let wait = {
                let mut g = lock(&self.state);
                if let Some(r) = check(&mut g) {
                    return Ok(Some(r));
                }
                if g.closed.is_some() {
                    return Ok(None);
                }
                let now = self.now();
                let deadline = g.core.with(|c| c.poll_timeout());
                deadline.map_or(MAX_READ_WAIT, |d| {
                    Duration::from_millis(now.millis_until(d).max(1)).min(MAX_READ_WAIT)
                })
            };
            // Waking early is harmless (the loop just looks again), so the socket's timeout
            // is only changed when it is longer than the wait, or far shorter: usually the wait
            // is the same [`MAX_READ_WAIT`] every time, and this saves a syscall per read.
            if timeout.is_none_or(|t| t > wait || t < wait / 2) {
                stream.set_read_timeout(Some(wait))?;
                *timeout = Some(wait);
            }
            let n = match crate::sync::read_soon(stream, buf, self.busy_poll) {
                Ok(0) => {
                    self.fail(depot_core::Error::Disconnected);
                    continue;
                }
                Ok(n) => n,
                Err(e) if is_timeout(&e) => {
                    let mut g = lock(&self.state);
                    let now = self.now();
                    g.core.with(|c| c.handle_timeout(now));
                    self.file_events(&mut g);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(peer = %self.peer, "read failed: {e}");
                    self.fail(depot_core::Error::Disconnected);
                    continue;
                }
            };
            let mut g = lock(&self.state);
            let mut input = &buf[..n];
            while !input.is_empty() {
                let taken = g.core.with(|c| c.handle_input(input));
                input = &input[taken..];
                let filed = self.file_events(&mut g);
                if taken == 0 && filed == 0 {
                    // The core can take no more and produced nothing: it has closed.
                    break;
                }
            }
        }
    }

    /// Files every reply the core has decoded; returns how many events there were.
    fn file_events(&self, g: &mut State) -> usize {
        let mut count = 0;
        loop {
            let event = g.core.with(|c| match c.poll_event() {
                Some(Event::Reply { id, reply }) => Some(Ok((id, Outcome::from_reply(reply)))),
                Some(Event::Closed(e)) => Some(Err(e)),
                _ => None,
            });
            match event {
                Some(Ok((id, outcome))) => {
                    let outcome = match outcome {
                        Outcome::Error(ErrorCode::WaiterLimit) => Outcome::Refused {
                            progress: g.progress,
                        },
                        other => {
                            g.progress += 1;
                            other
                        }
                    };
                    g.replies.push((id, outcome));
                    g.filed += 1;
                }
                Some(Err(e)) => {
                    debug!(peer = %self.peer, "connection closed: {e}");
                    g.closed.get_or_insert(e);
                    self.shutdown_socket();
                }
                None => break,
            }
            count += 1;
        }
        if count > 0 {
            self.wake(g);
        }
        count
    }

    /// Wakes every thread asleep on `changed`, if there is one (`g` is the state, locked).
    fn wake(&self, g: &State) {
        if g.sleepers > 0 {
            self.changed.notify_all();
        }
    }

    /// Marks the connection over and wakes every waiter.
    fn fail(&self, e: depot_core::Error) {
        let mut g = lock(&self.state);
        g.core.with(|c| c.handle_close());
        g.closed.get_or_insert(e);
        self.shutdown_socket();
        self.wake(&g);
    }

    fn shutdown_socket(&self) {
        // Through the writer's handle would need its lock, which a blocked write may hold;
        // the reader's clone is the same socket. `try_lock`: the leader holds it, and the
        // leader's own read then fails or sees the end anyway.
        if let Ok(r) = self.reader.try_lock() {
            let _ = r.0.shutdown(Shutdown::Both);
        }
    }

    /// The error for a connection that ended with `e`.
    pub(crate) fn closed_error(&self, e: depot_core::Error, detail: Option<&str>) -> Error {
        closed_error(self.peer, e, detail)
    }

    fn io_lost(&self, e: &io::Error) -> Error {
        self.closed_error(depot_core::Error::Disconnected, Some(&e.to_string()))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let w = lock(&self.writer);
        let _ = w.stream.shutdown(Shutdown::Both);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg_attr(shuttle, allow(dead_code))]
pub(crate) fn connect_error(addr: SocketAddr, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::Refused {
            addr: addr.to_string(),
            source: e,
        },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::ConnectTimeout {
            addr: addr.to_string(),
        },
        kind => Error::Io(io::Error::new(
            kind,
            format!("cannot connect to {addr}: {e}"),
        )),
    }
}

/// The error for a connection to `peer` that ended with `e`.
pub(crate) fn closed_error(peer: SocketAddr, e: depot_core::Error, detail: Option<&str>) -> Error {
    use depot_core::wire::CloseReason;
    let why = match e {
        depot_core::Error::AuthFailed => return Error::AuthFailed { addr: peer },
        depot_core::Error::PythonManager => return Error::PythonManager { addr: peer },
        depot_core::Error::Closed(CloseReason::Shutdown) => "manager shut down".to_owned(),
        depot_core::Error::Closed(CloseReason::Busy) => {
            format!("manager at {peer} refused the connection: it has no room for another")
        }
        depot_core::Error::Timeout => "manager did not answer in time".to_owned(),
        depot_core::Error::Disconnected => detail
            .unwrap_or("connection closed by the manager")
            .to_owned(),
        depot_core::Error::Closed(reason) => reason.description().to_owned(),
        other => return Error::Protocol(other),
    };
    if let depot_core::Error::Closed(CloseReason::Busy) = e {
        return Error::Disconnected { reason: why };
    }
    Error::Disconnected {
        reason: format!("connection to {peer} lost: {why}"),
    }
}
