//! The async manager: one `depot_core::Manager` serving a fixed pool of TCP sockets.
//!
//! [`Server::run`] is a single future (like embassy-net's `Runner::run`): one loop per socket,
//! each accepting on the port and moving bytes between its socket and the shared manager, and
//! one clock loop running the manager's deadlines. They share the manager in a `RefCell`; no
//! borrow is ever held across an `.await`, so they never contend. The core decides everything
//! (handshake, limits, timeouts, blocked requests); a loop only reads, writes, and sleeps until
//! its socket, the clock or another connection (a `put` answering a blocked `get`) wakes it.

use core::cell::{Cell, RefCell, RefMut};
use core::future::poll_fn;
use core::net::IpAddr;
use core::task::{Context, Poll};

#[cfg(feature = "keyring")]
use depot_core::keyring::{Keyring, KeyringError};
use depot_core::manager::encode_busy;
use depot_core::{
    AcceptError, ConnId, Connection, Manager, ManagerConfig, ObjectSlot, ParkStore, Resources,
    Waiter,
};
use embassy_futures::join::{join, join_array};
use embassy_futures::select::select;
use embassy_net::tcp::{State, TcpSocket};
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer};

use crate::client::poll_once;
use crate::entropy::{nonce, Entropy};
use crate::time::{now, to_embassy};

/// How the server listens and treats its sockets; the protocol rules are in `manager`.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// The TCP port every socket of the pool listens on.
    pub port: u16,
    /// The core's rules: timeouts, remote shutdown, waiter limits.
    pub manager: ManagerConfig,
    /// TCP keep-alive interval, so an idle client blocked in `get` is told apart from a
    /// vanished one (default 10 s).
    pub keep_alive: Option<Duration>,
    /// A peer silent at the TCP level (not even acknowledging keep-alives) this long is
    /// dropped (default 30 s). Protocol-level stalls are the core's `write_stall_timeout_ms`.
    pub socket_timeout: Option<Duration>,
    /// Time a closing socket gets to deliver its last bytes and see the peer's FIN (default
    /// 1 s).
    pub linger: Duration,
}

impl ServerConfig {
    /// Defaults on `port`: the core's default rules with a 4 KiB frame limit (firmware frames
    /// are bounded by the resources anyway), keep-alive 10 s, timeout 30 s, linger 1 s.
    pub fn new(port: u16) -> Self {
        ServerConfig {
            port,
            manager: ManagerConfig {
                max_frame: 4096,
                ..ManagerConfig::default()
            },
            keep_alive: Some(Duration::from_secs(10)),
            socket_timeout: Some(Duration::from_secs(30)),
            linger: Duration::from_secs(1),
        }
    }
}

/// Every byte the server needs, sized at compile time; put it in a `static` (`StaticCell`).
///
/// - `SOCKETS`: connections served at once (each a TCP socket in the stack's
///   `StackResources`, plus a connection slot in the manager).
/// - `FRAME` (default 512): per connection, bytes of each of the manager's receive and transmit
///   buffers, and of one slot of the store where blocked puts' items wait (one slot per
///   connection, shared by all). It bounds the largest frame accepted (so the largest `put`
///   item is about `FRAME - 44` bytes) and must hold the largest `get` reply (`max_item + 32`).
/// - `SOCKET_BUF` (default 1024): per socket, bytes of each of the TCP receive and transmit
///   buffers (smoltcp's windows).
/// - `WAITERS` (default 16): blocked requests (`get`/`put`/`join`) over all connections.
///
/// RAM: `SOCKETS * (3 * FRAME + 2 * SOCKET_BUF + ~300)` + `WAITERS * ~40` bytes, plus the queues'
/// own storage in the [`ObjectSlot`]s.
pub struct ManagerResources<
    'a,
    const SOCKETS: usize,
    const FRAME: usize = 512,
    const SOCKET_BUF: usize = 1024,
    const WAITERS: usize = 16,
> {
    frames: [[[u8; FRAME]; 2]; SOCKETS],
    parked: [[u8; FRAME]; SOCKETS],
    sockets: [[[u8; SOCKET_BUF]; 2]; SOCKETS],
    waiters: [Waiter; WAITERS],
    conns: Option<[Connection<'a>; SOCKETS]>,
    shared: Option<Shared<'a, SOCKETS>>,
}

impl<
        'a,
        const SOCKETS: usize,
        const FRAME: usize,
        const SOCKET_BUF: usize,
        const WAITERS: usize,
    > ManagerResources<'a, SOCKETS, FRAME, SOCKET_BUF, WAITERS>
{
    /// Zeroed resources (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        ManagerResources {
            frames: [[[0; FRAME]; 2]; SOCKETS],
            parked: [[0; FRAME]; SOCKETS],
            sockets: [[[0; SOCKET_BUF]; 2]; SOCKETS],
            waiters: [Waiter::EMPTY; WAITERS],
            conns: None,
            shared: None,
        }
    }
}

impl<
        'a,
        const SOCKETS: usize,
        const FRAME: usize,
        const SOCKET_BUF: usize,
        const WAITERS: usize,
    > Default for ManagerResources<'a, SOCKETS, FRAME, SOCKET_BUF, WAITERS>
{
    fn default() -> Self {
        Self::new()
    }
}

/// What the loops share.
struct Shared<'a, const N: usize> {
    core: RefCell<Core<'a>>,
    /// One per socket loop: "look at your connection again". Any change that
    /// `Manager::poll_ready` reports wakes every loop; each checks its own connection, which
    /// with a handful of sockets is cheaper than a map from connections to sockets.
    wake: [Signal<NoopRawMutex, ()>; N],
    /// Tells the clock that the manager's next deadline may have moved.
    rearm: Signal<NoopRawMutex, ()>,
    /// Tells the call loop (if any) that a registered call may be waiting to run.
    calls: Signal<NoopRawMutex, ()>,
    /// Whether the loops have been told about the shutdown already.
    shutdown_told: Cell<bool>,
    sockets: SocketRules,
    stack: Stack<'a>,
}

/// The socket loops' part of [`ServerConfig`] (the manager keeps its own rules): a copy of the
/// whole would be written at start-up for nothing.
#[derive(Clone, Copy)]
struct SocketRules {
    port: u16,
    keep_alive: Option<Duration>,
    socket_timeout: Option<Duration>,
    linger: Duration,
}

struct Core<'a> {
    manager: Manager<'a>,
    entropy: &'a mut dyn Entropy,
}

impl<'a, const N: usize> Shared<'a, N> {
    fn with<R>(&self, f: impl FnOnce(&mut Core<'a>) -> R) -> R {
        f(&mut self.lock())
    }

    fn manager<R>(&self, f: impl FnOnce(&mut Manager<'a>) -> R) -> R {
        f(&mut self.lock().manager)
    }

    /// The core, borrowed in one out-of-line place: `RefCell::borrow_mut` inlined into every
    /// closure's caller links in a panic path and its location at each.
    #[inline(never)]
    fn lock(&self) -> RefMut<'_, Core<'a>> {
        self.core.borrow_mut()
    }

    /// After any call into the manager: wakes the loops whose connections may have changed,
    /// and (unless the clock itself calls) the clock.
    fn dispatch(&self, rearm: bool) {
        let (ready, shutting_down) = self.manager(|m| {
            let mut ready = false;
            while m.poll_ready().is_some() {
                ready = true;
            }
            (ready, m.is_shutting_down())
        });
        // Listening sockets learn of a shutdown once, not on every later change.
        let tell_shutdown = shutting_down && !self.shutdown_told.replace(true);
        if ready || tell_shutdown {
            for wake in &self.wake {
                wake.signal(());
            }
        }
        if rearm {
            self.rearm.signal(());
        }
        self.calls.signal(());
    }

    fn done(&self) -> bool {
        self.manager(|m| m.is_shutting_down())
    }
}

/// The manager's server: build it with [`Server::new`], then await [`Server::run`].
pub struct Server<'a, const SOCKETS: usize> {
    shared: &'a Shared<'a, SOCKETS>,
    sockets: [[&'a mut [u8]; 2]; SOCKETS],
}

impl<'a, const SOCKETS: usize> Server<'a, SOCKETS> {
    /// A server for `objects` (queues declared with `ObjectSlot::queue`, spare slots for
    /// queues clients may create), guarded by `authkey`, on `stack`.
    ///
    /// `entropy` gives every connection's handshake nonce (see [`Entropy`]).
    pub fn new<const FRAME: usize, const SOCKET_BUF: usize, const WAITERS: usize>(
        stack: Stack<'a>,
        config: ServerConfig,
        authkey: &[u8],
        objects: &'a mut [ObjectSlot<'a>],
        entropy: &'a mut dyn Entropy,
        resources: &'a mut ManagerResources<'a, SOCKETS, FRAME, SOCKET_BUF, WAITERS>,
    ) -> Self {
        let built = Self::build(stack, config, objects, entropy, resources, |r| {
            Ok::<_, core::convert::Infallible>(Manager::new(config.manager, authkey, r))
        });
        match built {
            Ok(server) => server,
            Err(never) => match never {},
        }
    }

    /// [`Server::new`] guarded by named keys with their rights (feature `keyring`; e.g.
    /// `Keyring::new(&STATIC_KEYS)`) instead of one authkey. The default key (clients that
    /// name none) is the keyring's key named `""`, if it has one. Fails when the keyring does
    /// (`Keyring::check`: duplicate names, too many keys).
    #[cfg(feature = "keyring")]
    pub fn with_keyring<const FRAME: usize, const SOCKET_BUF: usize, const WAITERS: usize>(
        stack: Stack<'a>,
        config: ServerConfig,
        keyring: Keyring<'a>,
        objects: &'a mut [ObjectSlot<'a>],
        entropy: &'a mut dyn Entropy,
        resources: &'a mut ManagerResources<'a, SOCKETS, FRAME, SOCKET_BUF, WAITERS>,
    ) -> Result<Self, KeyringError> {
        Self::build(stack, config, objects, entropy, resources, |r| {
            Manager::with_keyring(config.manager, keyring, r)
        })
    }

    /// The server around the manager `manager` makes from the resources.
    fn build<const FRAME: usize, const SOCKET_BUF: usize, const WAITERS: usize, E>(
        stack: Stack<'a>,
        config: ServerConfig,
        objects: &'a mut [ObjectSlot<'a>],
        entropy: &'a mut dyn Entropy,
        resources: &'a mut ManagerResources<'a, SOCKETS, FRAME, SOCKET_BUF, WAITERS>,
        manager: impl FnOnce(Resources<'a>) -> Result<Manager<'a>, E>,
    ) -> Result<Self, E> {
        let ManagerResources {
            frames,
            parked,
            sockets,
            waiters,
            conns,
            shared,
        } = resources;
        let mut frames = frames.iter_mut();
        let conns = conns.insert(core::array::from_fn(|_| match frames.next() {
            Some([rx, tx]) => Connection::new(rx, tx),
            None => unreachable!("one frame set per socket"),
        }));
        let resources = Resources {
            objects: objects.into(),
            connections: conns.into(),
            waiters: waiters.into(),
            parked: ParkStore::slots(parked.as_flattened_mut(), FRAME),
        };
        let manager = manager(resources)?;
        if let Some(name) = manager.duplicate_name() {
            warn!("depot: queue name declared twice: {}", name);
        }
        let shared = shared.insert(Shared {
            core: RefCell::new(Core { manager, entropy }),
            wake: [const { Signal::new() }; SOCKETS],
            rearm: Signal::new(),
            calls: Signal::new(),
            shutdown_told: Cell::new(false),
            sockets: SocketRules {
                port: config.port,
                keep_alive: config.keep_alive,
                socket_timeout: config.socket_timeout,
                linger: config.linger,
            },
            stack,
        });
        let mut sockets = sockets.iter_mut();
        let sockets = core::array::from_fn(|_| match sockets.next() {
            Some([rx, tx]) => [&mut rx[..], &mut tx[..]],
            None => unreachable!("one buffer pair per socket"),
        });
        Ok(Server { shared, sockets })
    }

    /// Remembers clients' sessions in `slots`, so that a reconnecting client's numbered puts
    /// are applied once across its reconnects (PROTOCOL.md §16; feature `sessions`). Call it
    /// before [`Server::run`]; without it the server answers `Session` `NotAllowed`. Put the
    /// slots in a `static` (`[SessionSlot::EMPTY; N]`, about 1.6 KiB each): `N` bounds the
    /// sessions remembered at once, the least recently used one no connection holds being
    /// forgotten for a new one.
    #[cfg(feature = "sessions")]
    pub fn serve_sessions(&mut self, slots: &'a mut [depot_core::session::SessionSlot]) {
        self.shared.manager(|m| m.serve_sessions(slots));
    }

    /// A handle for other tasks: local shutdown, statistics.
    pub fn handle(&self) -> ServerHandle<'a, SOCKETS> {
        ServerHandle {
            shared: self.shared,
        }
    }

    /// Serves until the manager shuts down (a permitted remote `Shutdown`, or
    /// [`ServerHandle::shutdown`]) and every connection has closed.
    ///
    /// A misbehaving or vanished client costs only its own connection: the core closes it
    /// (bad handshake, bad MAC, garbage, stalled reads) or TCP does (reset, timeout), and its
    /// socket goes back to listening.
    pub async fn run(&mut self) {
        let shared = self.shared;
        let mut sockets = self.sockets.iter_mut().enumerate();
        let loops: [_; SOCKETS] = core::array::from_fn(|_| {
            let (i, [rx, tx]) = sockets.next().expect("one buffer pair per socket");
            socket_loop(shared, i, rx, tx)
        });
        join(join_array(loops), clock(shared)).await;
    }

    /// [`Server::run`], with `handler` answering the registered calls declared among the
    /// objects (`ObjectSlot::declare(name, ObjectKind::Call, ..)`), one at a time, while the
    /// sockets are served. A call's request is copied to `request` first (one that does not
    /// fit is answered with an error) and its response written to `response`.
    #[cfg(feature = "objects")]
    pub async fn run_with_calls(
        &mut self,
        handler: &mut impl CallHandler,
        request: &mut [u8],
        response: &mut [u8],
    ) {
        let shared = self.shared;
        let mut sockets = self.sockets.iter_mut().enumerate();
        let loops: [_; SOCKETS] = core::array::from_fn(|_| {
            let (i, [rx, tx]) = sockets.next().expect("one buffer pair per socket");
            socket_loop(shared, i, rx, tx)
        });
        embassy_futures::join::join3(
            join_array(loops),
            clock(shared),
            calls(shared, handler, request, response),
        )
        .await;
    }
}

/// The application's side of registered calls (feature `objects`): see
/// [`Server::run_with_calls`].
#[cfg(feature = "objects")]
#[allow(async_fn_in_trait)]
pub trait CallHandler {
    /// Answers the call `name` with `request` (one value of the value model): the length of
    /// the response written at the start of `response` (one value, at most the call's
    /// `max_item` bytes, else the caller gets `TooLarge` or `InvalidValue`), or an error text
    /// the caller gets as the call's failure. The manager serves on while it runs.
    async fn call(
        &mut self,
        name: &str,
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, &'static str>;
}

/// Runs registered calls one at a time until the manager shuts down.
#[cfg(feature = "objects")]
async fn calls<const N: usize>(
    shared: &Shared<'_, N>,
    handler: &mut impl CallHandler,
    request: &mut [u8],
    response: &mut [u8],
) {
    let mut name = [0u8; depot_core::wire::MAX_NAME_LEN];
    while !shared.done() {
        let taken = shared.manager(|m| {
            let call = m.poll_call()?;
            let name_len = call.name.len().min(name.len());
            name[..name_len].copy_from_slice(&call.name.as_bytes()[..name_len]);
            let fits = request.get_mut(..call.request.len()).map(|dest| {
                dest.copy_from_slice(call.request);
                dest.len()
            });
            Some((call.id, name_len, fits))
        });
        let Some((id, name_len, fits)) = taken else {
            shared.calls.wait().await;
            continue;
        };
        let outcome = match (fits, core::str::from_utf8(&name[..name_len])) {
            (Some(len), Ok(name)) => handler.call(name, &request[..len], response).await,
            _ => Err("request larger than the firmware's call buffer"),
        };
        let outcome = outcome.map(|len| &response[..len.min(response.len())]);
        shared.manager(|m| m.handle_call_done(id, now(), outcome));
        shared.dispatch(true);
    }
}

/// Another task's view of a running server.
#[derive(Clone, Copy)]
pub struct ServerHandle<'a, const SOCKETS: usize> {
    shared: &'a Shared<'a, SOCKETS>,
}

impl<'a, const SOCKETS: usize> ServerHandle<'a, SOCKETS> {
    /// Stops the manager gracefully: blocked requests are answered `ShuttingDown`, connections
    /// are told and closed, and [`Server::run`] returns.
    pub fn shutdown(&self) {
        self.shared.manager(|m| m.shutdown(now()));
        self.shared.dispatch(true);
    }

    /// Reads the manager's state (`status()`, `stat(i)` …). Do not call into it to change it:
    /// the server would not learn of the change.
    pub fn inspect<R>(&self, f: impl FnOnce(&Manager<'a>) -> R) -> R {
        self.shared.manager(|m| f(m))
    }
}

/// One socket of the pool: accept, serve, close, again; until the manager shuts down.
async fn socket_loop<const N: usize>(
    shared: &Shared<'_, N>,
    i: usize,
    rx: &mut [u8],
    tx: &mut [u8],
) {
    let config = shared.sockets;
    while !shared.done() {
        let mut socket = TcpSocket::new(shared.stack, rx, tx);
        socket.set_keep_alive(config.keep_alive);
        socket.set_timeout(config.socket_timeout);
        // Replies are small and the client waits for each: Nagle would only add latency.
        socket.set_nagle_enabled(false);
        let mut phase = Phase::Accept;
        poll_fn(|cx| poll_socket(shared, i, &mut socket, &mut phase, cx)).await;
    }
}

/// Where a socket is in its cycle.
#[derive(Clone, Copy)]
enum Phase {
    /// Listening until a peer connects (or the manager shuts down).
    Accept,
    /// Serving the manager's connection.
    Serve(ConnId),
    /// Closed on our side: its last bytes leaving and the peer's FIN awaited, until then.
    Linger(Instant),
    /// Accepting failed: waiting until then before trying again, so as not to spin on a
    /// persistent error (a bad port).
    Pause(Instant),
}

/// One socket's cycle, from listening to its close, for one connection: ready when the socket
/// can be dropped. A plain function moving through [`Phase`]s, not nested async loops: the
/// state machines those compile to cost firmware more flash.
#[inline(never)]
fn poll_socket<const N: usize>(
    shared: &Shared<'_, N>,
    i: usize,
    socket: &mut TcpSocket<'_>,
    phase: &mut Phase,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        *phase = match *phase {
            Phase::Accept => match poll_accept(shared, &shared.wake[i], socket, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(true)) => match admit(shared, i, socket, cx) {
                    Some(id) => Phase::Serve(id),
                    None => close(socket, shared.sockets.linger),
                },
                Poll::Ready(Ok(false)) => close(socket, shared.sockets.linger),
                Poll::Ready(Err(e)) => {
                    debug!("depot: accept on socket {}: {:?}", i, e);
                    Phase::Pause(Instant::now() + Duration::from_millis(100))
                }
            },
            Phase::Serve(id) => {
                if poll_connection(shared, &shared.wake[i], id, socket, cx).is_pending() {
                    return Poll::Pending;
                }
                shared.manager(|m| m.handle_close(id, now()));
                shared.dispatch(true);
                close(socket, shared.sockets.linger)
            }
            Phase::Linger(until) => return poll_linger(shared, socket, until, cx),
            Phase::Pause(until) => return poll_until(until, cx),
        };
    }
}

/// Waits for a peer: ready with `true` once one has connected, `false` if the manager shut
/// down first (`wake` tells of that).
fn poll_accept<const N: usize>(
    shared: &Shared<'_, N>,
    wake: &Signal<NoopRawMutex, ()>,
    socket: &mut TcpSocket<'_>,
    cx: &mut Context<'_>,
) -> Poll<Result<bool, embassy_net::tcp::AcceptError>> {
    let _ = poll_once(cx, wake.wait());
    if shared.done() {
        return Poll::Ready(Ok(false));
    }
    match socket.state() {
        // Starts listening, or fails at once (a bad port).
        State::Closed => match poll_once(cx, socket.accept(shared.sockets.port)) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(true)),
            Poll::Pending => Poll::Pending,
        },
        // `accept` would listen again: waiting to be able to send (a connection) registers
        // the same wake-up its own wait does.
        State::Listen | State::SynReceived => {
            poll_once(cx, socket.wait_write_ready()).map(|()| Ok(true))
        }
        _ => Poll::Ready(Ok(true)),
    }
}

/// Closes `socket` on our side and lingers for `linger`.
fn close(socket: &mut TcpSocket<'_>, linger: Duration) -> Phase {
    socket.close();
    Phase::Linger(Instant::now() + linger)
}

/// Hands a newly accepted connection to the manager: its id, or `None` when the manager
/// refuses it (after telling the peer it is busy, where that is why).
fn admit<const N: usize>(
    shared: &Shared<'_, N>,
    i: usize,
    socket: &mut TcpSocket<'_>,
    cx: &mut Context<'_>,
) -> Option<ConnId> {
    let source = source_key(socket);
    let accepted = shared.with(|core| {
        let nonce = nonce(&mut *core.entropy);
        core.manager.accept(now(), nonce, &source)
    });
    match accepted {
        Ok(id) => {
            debug!("depot: socket {} serves connection {}", i, id.index());
            // Wakes the other sockets: one may have been evicted to make room for this
            // connection.
            shared.dispatch(true);
            Some(id)
        }
        // Too many handshakes from this peer's endpoint (the manager has a slot per socket, so
        // plain `Busy` cannot happen): tell it, then close. A new socket's transmit buffer is
        // empty: the notice fits at once.
        Err(AcceptError::Busy | AcceptError::SourceLimit) => {
            let mut out = [0u8; 16];
            let busy = encode_busy(&mut out);
            let _ = poll_write(shared, socket, cx, Out::Bytes(busy));
            None
        }
        // The peer came in just as the manager stopped: closing is all it needs.
        Err(_) => None,
    }
}

/// Moves bytes for connection `id` until the manager closes it or its peer is gone: writes
/// what the manager has for it, reads what the peer sent (not while the core's input is
/// paused: its output is full, and TCP pushes back) and notices `wake` (another connection's
/// change). Pending when none of them can move.
///
/// A plain function polling each once, not an async block selecting over them: the state
/// machine the latter compiles to costs firmware more flash (-0.3 KB) and RAM (-0.4 KB).
#[inline(never)]
fn poll_connection<const N: usize>(
    shared: &Shared<'_, N>,
    wake: &Signal<NoopRawMutex, ()>,
    id: ConnId,
    socket: &mut TcpSocket<'_>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        let (output, input, close) = shared.manager(|m| {
            (
                !m.poll_transmit(id).is_empty(),
                !m.rx_space(id).is_empty(),
                m.wants_close(id),
            )
        });
        if close {
            return Poll::Ready(());
        }
        let mut moved = false;
        let mut peer_gone = false;
        if output {
            if let Poll::Ready(result) = poll_write(shared, socket, cx, Out::Manager(id)) {
                moved = true;
                peer_gone |= result.is_err();
            }
        }
        if input {
            if let Poll::Ready(result) = poll_read(shared, socket, cx, Some(id)) {
                moved = true;
                peer_gone |= result.is_err();
            }
        }
        moved |= poll_once(cx, wake.wait()).is_ready();
        if !moved {
            return Poll::Pending;
        }
        shared.dispatch(true);
        if peer_gone {
            debug!("depot: connection {}: peer gone", id.index());
            return Poll::Ready(());
        }
    }
}

/// The per-source key of the peer: its IP address in 16 bytes (IPv4 mapped into IPv6), as
/// depot-std's manager gives it (zeros if the socket had no remote endpoint, which an accepted
/// one always has).
fn source_key(socket: &TcpSocket<'_>) -> [u8; 16] {
    match socket
        .remote_endpoint()
        .map(|endpoint| IpAddr::from(endpoint.addr))
    {
        Some(IpAddr::V4(a)) => a.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(a)) => a.octets(),
        None => [0; 16],
    }
}

/// Copies the manager's output for `id` into the socket's free space.
fn transmit(m: &mut Manager<'_>, id: ConnId, buf: &mut [u8]) -> usize {
    let n = copy_into(buf, m.poll_transmit(id));
    m.handle_transmitted(id, now(), n);
    n
}

/// Copies as much of `bytes` as fits into `buf`; returns how much.
fn copy_into(buf: &mut [u8], bytes: &[u8]) -> usize {
    let n = bytes.len().min(buf.len());
    if let (Some(to), Some(from)) = (buf.get_mut(..n), bytes.get(..n)) {
        to.copy_from_slice(from);
    }
    n
}

/// Where a write's bytes come from.
enum Out<'b> {
    /// The manager's output for a connection.
    Manager(ConnId),
    /// These bytes, as many as fit.
    Bytes(&'b [u8]),
}

/// Polls a write into the socket's free space once. Every write of the server goes through
/// here, so embassy-net's `write_with` future is instantiated once, not once per caller
/// (firmware flash).
fn poll_write<const N: usize>(
    shared: &Shared<'_, N>,
    socket: &mut TcpSocket<'_>,
    cx: &mut Context<'_>,
    out: Out<'_>,
) -> Poll<Result<(), embassy_net::tcp::Error>> {
    let write = socket.write_with(|buf| {
        let n = match out {
            Out::Manager(id) => shared.manager(|m| transmit(m, id, buf)),
            Out::Bytes(bytes) => copy_into(buf, bytes),
        };
        (n, ())
    });
    poll_once(cx, write)
}

/// Polls a read of what the socket has received once: handed to the manager for connection
/// `to`, or (`None`) thrown away. An error once the peer's input has ended, as on a reset. One
/// instance of embassy-net's `read_with` future, as [`poll_write`].
fn poll_read<const N: usize>(
    shared: &Shared<'_, N>,
    socket: &mut TcpSocket<'_>,
    cx: &mut Context<'_>,
    to: Option<ConnId>,
) -> Poll<Result<(), embassy_net::tcp::Error>> {
    let read = socket.read_with(|buf| {
        let n = match to {
            Some(id) => shared.manager(|m| m.handle_input(id, now(), buf)),
            None => buf.len(),
        };
        (n, ())
    });
    poll_once(cx, read)
}

/// The wait of a closed socket ([`close`]): ready once our last bytes are acknowledged and
/// the peer's FIN (or a reset) has come, or at `until`. No reset is sent: one reaching the peer
/// before it read our last reply would make its kernel throw the reply away.
fn poll_linger<const N: usize>(
    shared: &Shared<'_, N>,
    socket: &mut TcpSocket<'_>,
    until: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if poll_until(until, cx).is_ready() {
        return Poll::Ready(());
    }
    match poll_once(cx, socket.flush()) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) => return Poll::Ready(()),
        Poll::Pending => return Poll::Pending,
    }
    // Whatever still comes is thrown away, until the end of the peer's input (an error here).
    loop {
        match poll_read(shared, socket, cx, None) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Ready at `until`; registers the wake-up for it otherwise.
fn poll_until(until: Instant, cx: &mut Context<'_>) -> Poll<()> {
    // An embassy `Timer` yields once before it completes, so one polled once only registers
    // the wake-up: whether the time has come is read from the clock.
    if Instant::now() >= until {
        return Poll::Ready(());
    }
    let _ = poll_once(cx, Timer::at(until));
    Poll::Pending
}

/// Runs the manager's deadlines: blocked requests timing out, slow handshakes and stalled
/// readers being dropped. Ends once the manager has shut down and every connection closed.
async fn clock<const N: usize>(shared: &Shared<'_, N>) {
    loop {
        let (deadline, finished) = shared.manager(|m| {
            (
                m.poll_timeout(),
                m.is_shutting_down() && m.connections() == 0,
            )
        });
        if finished {
            return;
        }
        match deadline {
            Some(at) => {
                select(Timer::at(to_embassy(at)), shared.rearm.wait()).await;
            }
            None => shared.rearm.wait().await,
        }
        shared.manager(|m| m.handle_timeout(now()));
        shared.dispatch(false);
    }
}
