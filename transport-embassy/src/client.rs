//! The async client: one TCP connection to a manager, driven by `depot_core::Client`, shared by
//! every task that holds a `&Client`.
//!
//! Calls are pipelined: each sends its request at once (`depot_core::Client::send`), then waits
//! for the reply with its id. Nothing runs in the background: whichever call is being polled
//! moves the socket's bytes, hands each reply to the call it answers (its own in place, small
//! ones by value, an item through one shared item buffer) and wakes that call. A call whose
//! future is dropped before its reply is abandoned: the core withdraws it with `Cancel`, and an
//! item already on its way goes back to the head of its queue with `Return`.
//!
//! It is made for one executor on one core (`RefCell`, no `Send`); the cell is only borrowed
//! inside a poll, never across an `.await`.

use core::cell::{Cell, RefCell, RefMut};
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{ready, Context, Poll, Waker};

use depot_core::client::{ClientConfig, SendError};
use depot_core::wire::{
    Action, CloseReason, ErrorCode, Handle, ObjectInfo, Op, QueueSize, Reply, Wait,
};
use depot_core::{Event, RequestSlot};
use embassy_net::tcp::TcpSocket;
use embassy_net::IpEndpoint;
use embassy_time::{Duration, Instant, Timer};

use crate::entropy::{nonce, Entropy};
use crate::queue::{Queue, RawQueue};
use crate::time::to_embassy;
use crate::Error;

/// Time [`Client::close`] gives the last bytes and the FIN to be acknowledged.
const LINGER: Duration = Duration::from_millis(500);

/// No call: the core never reports a reply to this id (it is its own requests' id).
const NO_CALL: u32 = u32::MAX;

/// The client's protocol buffers, sized at compile time.
///
/// - `FRAME` (default 512): bytes of the receive buffer, of the transmit buffer and of the
///   item buffer each. The receive side bounds the largest reply (announced to the manager), so
///   the largest item a `get` can take is `FRAME` minus 32 bytes of framing; the transmit side
///   bounds the largest `put` (`FRAME` minus 44). Must be at least 260 (the protocol's smallest
///   frame plus header). The item buffer holds an item that arrived for one call while another
///   was moving the bytes, until its call picks it up; meanwhile no other reply is read, so a
///   call future kept but no longer polled (neither awaited nor dropped) would hold up the
///   connection.
/// - `SLOTS` (default 2): calls in flight at once. Give a client shared by several tasks at
///   least one slot per task that calls it at once, plus one: a call waits for a free slot,
///   and while the item buffer is full one slot is kept for giving its item back. Up to
///   `SLOTS` tasks can wait for a slot while the executor sleeps; more than that keep waking
///   each other until one frees.
///
/// `3 * FRAME` bytes plus under 100 per slot; put it in a `static` (`StaticCell`) or on the
/// stack of the task that owns the client.
pub struct ClientBuffers<const FRAME: usize = 512, const SLOTS: usize = 2> {
    rx: [u8; FRAME],
    tx: [u8; FRAME],
    item: [u8; FRAME],
    slots: [RequestSlot; SLOTS],
    calls: [Call; SLOTS],
    senders: [Option<Waker>; SLOTS],
}

impl<const FRAME: usize, const SLOTS: usize> ClientBuffers<FRAME, SLOTS> {
    /// Zeroed buffers (a `const fn`, so they can sit in a `static`).
    pub const fn new() -> Self {
        ClientBuffers {
            rx: [0; FRAME],
            tx: [0; FRAME],
            item: [0; FRAME],
            slots: [RequestSlot::FREE; SLOTS],
            calls: [const { Call::FREE }; SLOTS],
            senders: [const { None }; SLOTS],
        }
    }
}

impl<const FRAME: usize, const SLOTS: usize> Default for ClientBuffers<FRAME, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

/// A call in flight, as the connection's shared state tracks it.
struct Call {
    id: u32,
    state: CallState,
    /// The queue a get takes from, to give its item back if the call is dropped.
    get_from: Option<Handle>,
    waker: Option<Waker>,
}

impl Call {
    const FREE: Call = Call {
        id: NO_CALL,
        state: CallState::Free,
        get_from: None,
        waker: None,
    };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CallState {
    Free,
    /// Sent, not yet answered.
    Waiting,
    /// Answered; the reply waits for its call.
    Answered(Filed),
    /// Dropped with its item (that many bytes) in the item buffer: it goes back with a
    /// `Return` as soon as one can be sent.
    Returning(usize),
    /// A `Return` nobody waits for.
    Discard,
    /// Sent on a connection that was replaced before the reply came.
    #[cfg(feature = "sessions")]
    Lost,
}

/// A reply kept for its call. Only what this client's requests can get back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filed {
    Done,
    Opened(ObjectInfo),
    Size(QueueSize),
    Error(ErrorCode),
    /// An item of that many bytes from that queue, in the item buffer.
    Item(Handle, usize),
    /// The session is open (whether the manager remembered it).
    #[cfg(feature = "sessions")]
    Session(bool),
    /// A reply no request of this client asks for.
    Unexpected,
}

/// The calls in flight, the wakers of calls waiting to be sent, and the item buffer.
struct Calls<'a> {
    calls: &'a mut [Call],
    senders: &'a mut [Option<Waker>],
    item: &'a mut [u8],
    /// The item buffer holds an item (filed for a call, or to be given back).
    held: bool,
}

impl Calls<'_> {
    fn find(&self, id: u32) -> Option<usize> {
        self.calls
            .iter()
            .position(|c| c.id == id && c.state != CallState::Free)
    }

    /// The state of call `index` (from `find`): `get`, as indexing links in a panic path.
    fn state(&self, index: usize) -> CallState {
        self.calls.get(index).map_or(CallState::Free, |c| c.state)
    }

    /// Replaces call `index` (from `find`).
    fn set(&mut self, index: usize, call: Call) {
        if let Some(c) = self.calls.get_mut(index) {
            *c = call;
        }
    }

    /// Keeps `reply` for call `id` and wakes it.
    fn file(&mut self, id: u32, reply: Reply<'_>) {
        let Some(call) = self
            .calls
            .iter_mut()
            .find(|c| c.id == id && c.state != CallState::Free)
        else {
            return;
        };
        match call.state {
            CallState::Waiting => {}
            CallState::Discard => {
                if let Reply::Error(code) = reply {
                    warn!("depot: an item could not be given back: {}", code);
                }
                *call = Call::FREE;
                return;
            }
            _ => return,
        }
        let filed = match reply {
            Reply::Done => Filed::Done,
            Reply::Opened(info) => Filed::Opened(info),
            Reply::Size(size) => Filed::Size(size),
            Reply::Error(code) => Filed::Error(code),
            // Always fits: the item buffer is as large as a received frame.
            Reply::Item { handle, item } => match self.item.get_mut(..item.len()) {
                Some(held) => {
                    held.copy_from_slice(item);
                    self.held = true;
                    Filed::Item(handle, item.len())
                }
                None => Filed::Unexpected,
            },
            #[cfg(feature = "sessions")]
            Reply::Session { resumed } => Filed::Session(resumed),
            _ => Filed::Unexpected,
        };
        call.state = CallState::Answered(filed);
        if let Some(waker) = call.waker.take() {
            waker.wake();
        }
    }

    /// Wakes every waiting call and every task waiting to send: after a call ends, one of
    /// them has to take over moving the bytes, and a slot may have freed.
    fn wake_all(&mut self) {
        for call in self.calls.iter_mut() {
            if let Some(waker) = call.waker.take() {
                waker.wake();
            }
        }
        self.wake_senders();
    }

    fn wake_senders(&mut self) {
        for waker in self.senders.iter_mut().filter_map(Option::take) {
            waker.wake();
        }
    }

    /// Remembers the task of a call waiting to be sent.
    fn wait_to_send(&mut self, waker: &Waker) {
        if self.senders.iter().flatten().any(|w| w.will_wake(waker)) {
            return;
        }
        if let Some(free) = self.senders.iter_mut().find(|w| w.is_none()) {
            *free = Some(waker.clone());
            return;
        }
        // More tasks wait than there are places: wake them all, each one registers again.
        self.wake_senders();
        if let Some(first) = self.senders.first_mut() {
            *first = Some(waker.clone());
        }
    }

    fn sent(&mut self, waker: &Waker) {
        for w in self.senders.iter_mut() {
            if w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *w = None;
            }
        }
    }
}

/// What [`Shared::drive`] did.
enum Driven {
    /// The polling call's reply was handed over.
    Mine,
    /// Bytes moved or replies were filed.
    Moved,
    /// Nothing can move now; wake-ups are registered.
    Stuck,
}

/// Everything behind the client's `RefCell`.
pub(crate) struct Shared<'a> {
    /// `None` only while a reconnecting client dials with it.
    pub(crate) socket: Option<TcpSocket<'a>>,
    pub(crate) core: depot_core::Client<'a>,
    calls: Calls<'a>,
    /// How to come back after the connection is lost (a reconnecting client only).
    #[cfg(feature = "sessions")]
    pub(crate) resume: Option<crate::resume::Resume<'a>>,
}

impl Shared<'_> {
    /// Whether the connection is gone (or being replaced): a call cannot be made on it now.
    pub(crate) fn lost(&self) -> bool {
        #[cfg(feature = "sessions")]
        if self.resume.as_ref().is_some_and(|r| r.dialling) {
            return true;
        }
        self.core.error().is_some()
    }

    /// Starts the core over on a new connection: every call waiting for a reply on the old
    /// one fails as lost (its caller decides whether to send it again).
    #[cfg(feature = "sessions")]
    pub(crate) fn restart(&mut self, nonce: [u8; depot_core::wire::NONCE_LEN]) {
        for call in self.calls.calls.iter_mut() {
            match call.state {
                CallState::Waiting => call.state = CallState::Lost,
                // A `Return` lost in flight: its outcome went with the connection.
                CallState::Discard => *call = Call::FREE,
                _ => {}
            }
        }
        self.core.restart(nonce, now());
        self.calls.wake_all();
    }

    /// Sends `op` as soon as a slot and room allow; `Ok(id)`. `gated`: not while a
    /// reconnecting client dials (only its own session request goes then).
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        op: Op<'_>,
        gated: bool,
    ) -> Poll<Result<u32, Error>> {
        loop {
            if let Some(e) = self.core.error() {
                return Poll::Ready(Err(e.into()));
            }
            if gated && self.lost() {
                return Poll::Ready(Err(Error::Depot(depot_core::Error::Disconnected)));
            }
            // While the item buffer is full, one slot stays free for the `Return` that gives
            // its item back if its call is dropped.
            let room = !self.calls.held || self.core.in_flight() + 1 < self.calls.calls.len();
            let free = self
                .calls
                .calls
                .iter_mut()
                .find(|c| c.state == CallState::Free);
            if let (true, Some(call)) = (room, free) {
                match self.core.send(now(), op) {
                    Ok(id) => {
                        let get_from = match op {
                            Op::Get { handle, .. } => Some(handle),
                            _ => None,
                        };
                        *call = Call {
                            id,
                            state: CallState::Waiting,
                            get_from,
                            waker: None,
                        };
                        self.calls.sent(cx.waker());
                        return Poll::Ready(Ok(id));
                    }
                    // Replies still hold the slots or the output room: let them drain.
                    Err(SendError::InFlightLimit | SendError::WouldBlock) => {}
                    Err(e) => return Poll::Ready(Err(Error::Depot(e.into()))),
                }
            }
            self.calls.wait_to_send(cx.waker());
            if let Driven::Stuck = self.drive(cx, NO_CALL, &mut |_| {}) {
                return Poll::Pending;
            }
        }
    }

    /// Waits for the reply of call `id` and hands it to `on_reply`.
    fn poll_reply(
        &mut self,
        cx: &mut Context<'_>,
        id: u32,
        on_reply: &mut dyn FnMut(Reply<'_>),
    ) -> Poll<Result<(), Error>> {
        loop {
            let Some(index) = self.calls.find(id) else {
                return Poll::Ready(Err(Error::Depot(depot_core::Error::Closed(
                    CloseReason::Unexpected,
                ))));
            };
            if let CallState::Answered(filed) = self.calls.state(index) {
                self.calls.set(index, Call::FREE);
                let outcome = match filed {
                    Filed::Done => Ok(Reply::Done),
                    Filed::Opened(info) => Ok(Reply::Opened(info)),
                    Filed::Size(size) => Ok(Reply::Size(size)),
                    Filed::Error(code) => Ok(Reply::Error(code)),
                    Filed::Item(handle, len) => Ok(Reply::Item {
                        handle,
                        // Filed only when it fitted: `get` says so without a panic path.
                        item: self.calls.item.get(..len).unwrap_or_default(),
                    }),
                    #[cfg(feature = "sessions")]
                    Filed::Session(resumed) => Ok(Reply::Session { resumed }),
                    Filed::Unexpected => Err(Error::Depot(depot_core::Error::Closed(
                        CloseReason::Unexpected,
                    ))),
                };
                let outcome = outcome.map(&mut *on_reply);
                if let Filed::Item(..) = filed {
                    self.calls.held = false;
                }
                self.calls.wake_all();
                return Poll::Ready(outcome);
            }
            #[cfg(feature = "sessions")]
            if self.calls.state(index) == CallState::Lost {
                self.calls.set(index, Call::FREE);
                return Poll::Ready(Err(Error::Depot(depot_core::Error::Disconnected)));
            }
            if let Some(e) = self.core.error() {
                self.calls.set(index, Call::FREE);
                self.calls.wake_all();
                return Poll::Ready(Err(e.into()));
            }
            match self.drive(cx, id, on_reply) {
                Driven::Mine => {
                    self.calls.set(index, Call::FREE);
                    self.calls.wake_all();
                    return Poll::Ready(Ok(()));
                }
                Driven::Moved => {}
                Driven::Stuck => {
                    if let Some(call) = self.calls.calls.get_mut(index) {
                        let waker = &mut call.waker;
                        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *waker = Some(cx.waker().clone());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Moves bytes between the socket and the core and files replies until nothing moves.
    /// The reply of call `mine` goes to `on_reply` in place, borrowed from the receive buffer.
    /// When stuck, the socket and the core's deadline wake the polling task.
    fn drive(
        &mut self,
        cx: &mut Context<'_>,
        mine: u32,
        on_reply: &mut dyn FnMut(Reply<'_>),
    ) -> Driven {
        let mut moved = false;
        loop {
            let mut progress = self.give_back();
            // Not while the item buffer is full: the next reply may be an item.
            while !self.calls.held {
                let Some(event) = self.core.poll_event() else {
                    break;
                };
                progress = true;
                match event {
                    Event::Reply { id, reply } if id == mine => {
                        on_reply(reply);
                        return Driven::Mine;
                    }
                    Event::Reply { id, reply } => {
                        self.calls.file(id, reply);
                        // Its slot is free again.
                        self.calls.wake_senders();
                    }
                    Event::Closed(e) => {
                        debug!("depot: connection closed: {}", e);
                        self.calls.wake_all();
                    }
                    _ => {}
                }
            }
            if self.core.error().is_none() {
                progress |= self.move_bytes(cx);
            }
            if !progress {
                return if moved { Driven::Moved } else { Driven::Stuck };
            }
            moved = true;
        }
    }

    /// One write, one read and the deadline; whether anything happened.
    fn move_bytes(&mut self, cx: &mut Context<'_>) -> bool {
        let Shared { socket, core, .. } = self;
        let Some(socket) = socket else {
            return false;
        };
        let mut progress = false;
        let out = core.poll_transmit();
        if !out.is_empty() {
            match poll_once(cx, socket.write(out)) {
                Poll::Pending => {}
                Poll::Ready(Ok(n)) => {
                    core.handle_transmitted(n);
                    progress = true;
                    // Room for a request that did not fit.
                    self.calls.wake_senders();
                }
                // Reset, or the manager closed its side: what it sent before is already in.
                Poll::Ready(Err(_)) => {
                    core.handle_close();
                    return true;
                }
            }
        }
        let read = socket.read_with(|buf| {
            let n = core.handle_input(buf);
            (n, n)
        });
        match poll_once(cx, read) {
            Poll::Ready(Ok(0)) | Poll::Pending => {}
            Poll::Ready(Ok(_)) => progress = true,
            Poll::Ready(Err(_)) => {
                core.handle_close();
                return true;
            }
        }
        if let Some(at) = core.poll_timeout() {
            let now = now();
            if at <= now {
                core.handle_timeout(now);
                progress |= core.error().is_some();
            } else {
                // A timer polled once registers the wake-up; dropping it cancels nothing.
                let _ = poll_once(cx, Timer::at(to_embassy(at)));
            }
        }
        progress
    }

    /// Sends the `Return` of an item whose call was dropped, if one waits and fits now.
    fn give_back(&mut self) -> bool {
        let Some(index) = self
            .calls
            .calls
            .iter()
            .position(|c| matches!(c.state, CallState::Returning(_)))
        else {
            return false;
        };
        let Some(call) = self.calls.calls.get(index) else {
            return false;
        };
        let (CallState::Returning(len), Some(handle)) = (call.state, call.get_from) else {
            // An item for a request that takes none: the manager broke the protocol.
            self.calls.set(index, Call::FREE);
            self.calls.held = false;
            return true;
        };
        let item = self.calls.item.get(..len).unwrap_or_default();
        match self.core.send(now(), Op::Return { handle, item }) {
            Ok(id) => {
                let discard = Call {
                    id,
                    state: CallState::Discard,
                    ..Call::FREE
                };
                self.calls.set(index, discard);
            }
            Err(SendError::InFlightLimit | SendError::WouldBlock) => return false,
            // The connection is gone, and the item's outcome with it.
            Err(_) => self.calls.set(index, Call::FREE),
        }
        self.calls.held = false;
        self.calls.wake_all();
        true
    }

    /// [`Client::close`]: the first poll closes the socket and sets `until`, the time the
    /// FIN and the last bytes have to be acknowledged by; then the core closes.
    fn poll_close(&mut self, cx: &mut Context<'_>, until: &mut Option<Instant>) -> Poll<()> {
        let until = *until.get_or_insert_with(|| {
            // A reconnecting client stops coming back: later calls fail too.
            #[cfg(feature = "sessions")]
            {
                self.resume = None;
            }
            if let Some(socket) = &mut self.socket {
                socket.close();
            }
            Instant::now() + LINGER
        });
        let flushed = match &mut self.socket {
            Some(socket) => poll_once(cx, socket.flush()).is_ready(),
            None => true,
        };
        if !flushed && Instant::now() < until {
            // A timer polled once registers the wake-up; dropping it cancels nothing.
            let _ = poll_once(cx, Timer::at(until));
            return Poll::Pending;
        }
        self.core.handle_close();
        self.calls.wake_all();
        Poll::Ready(())
    }

    /// Call `id`'s future was dropped before it took its reply.
    fn abandon(&mut self, id: u32) {
        let Some(index) = self.calls.find(id) else {
            return;
        };
        match self.calls.state(index) {
            // The core withdraws it, and gives back an item that comes anyway.
            CallState::Waiting => {
                self.core.abandon(id);
                self.calls.set(index, Call::FREE);
            }
            CallState::Answered(Filed::Item(_, len)) => {
                if let Some(call) = self.calls.calls.get_mut(index) {
                    call.state = CallState::Returning(len);
                }
                self.give_back();
            }
            CallState::Answered(_) => self.calls.set(index, Call::FREE),
            #[cfg(feature = "sessions")]
            CallState::Lost => self.calls.set(index, Call::FREE),
            _ => {}
        }
        // The `Cancel` or `Return` has to be written, and this call may have been the one
        // the socket would wake.
        self.calls.wake_all();
    }
}

/// The core's clock for the client: one out-of-line copy for its several reads (the
/// server's stay inlined, where a call costs more than it saves).
#[inline(never)]
fn now() -> depot_core::Instant {
    crate::time::now()
}

/// Polls `future` once (it registers its wake-up) and drops it.
pub(crate) fn poll_once<F: Future>(cx: &mut Context<'_>, future: F) -> Poll<F::Output> {
    pin!(future).poll(cx)
}

/// A connection to a depot manager, for any number of tasks at once: every method takes
/// `&self`. See the crate docs for an example.
pub struct Client<'a> {
    pub(crate) shared: RefCell<Shared<'a>>,
    pub(crate) max_item: Cell<usize>,
}

impl<'a> Client<'a> {
    /// The state behind the cell, borrowed in one out-of-line place: `RefCell::borrow_mut`
    /// inlined at every call links in a panic path and its location at each.
    #[inline(never)]
    pub(crate) fn lock(&self) -> RefMut<'_, Shared<'a>> {
        self.shared.borrow_mut()
    }

    /// Opens `socket` (a fresh, unconnected `TcpSocket`) to `endpoint` and runs the mutual
    /// authkey handshake. A wrong key gives `Error::Depot(depot_core::Error::AuthFailed)`.
    ///
    /// Failing TCP-level liveness (the manager's host vanishing) is up to the socket's own
    /// `set_timeout` / `set_keep_alive`; the protocol's deadlines (handshake, reply) are the
    /// core's and run here on embassy-time.
    ///
    /// Its future is [`Client::connect_with`]'s own: no state machine around it.
    pub fn connect<'k, 'e, const FRAME: usize, const SLOTS: usize, P, E>(
        socket: TcpSocket<'a>,
        endpoint: P,
        authkey: &'k [u8],
        entropy: &'e mut E,
        buffers: &'a mut ClientBuffers<FRAME, SLOTS>,
    ) -> impl Future<Output = Result<Client<'a>, Error>> + use<'a, 'k, 'e, FRAME, SLOTS, P, E>
    where
        P: Into<IpEndpoint>,
        E: Entropy + ?Sized,
    {
        Self::connect_with(
            socket,
            endpoint,
            authkey,
            entropy,
            buffers,
            ClientConfig::default(),
        )
    }

    /// [`Client::connect`] with the core's settings: its time limits, and whether frames are
    /// sealed (`config.encryption`; `Required` refuses a manager that will not seal them).
    pub async fn connect_with<const FRAME: usize, const SLOTS: usize>(
        mut socket: TcpSocket<'a>,
        endpoint: impl Into<IpEndpoint>,
        authkey: &[u8],
        entropy: &mut (impl Entropy + ?Sized),
        buffers: &'a mut ClientBuffers<FRAME, SLOTS>,
        config: ClientConfig,
    ) -> Result<Client<'a>, Error> {
        // Requests are small and each waits for its reply: Nagle would only add latency.
        socket.set_nagle_enabled(false);
        socket.connect(endpoint).await.map_err(Error::Connect)?;
        let ClientBuffers {
            rx,
            tx,
            item,
            slots,
            calls,
            senders,
        } = buffers;
        let core = depot_core::Client::new(config, authkey, nonce(entropy), now(), rx, tx, slots);
        let shared = Shared {
            socket: Some(socket),
            core,
            calls: Calls {
                calls,
                senders,
                item,
                held: false,
            },
            #[cfg(feature = "sessions")]
            resume: None,
        };
        let client = Client {
            shared: RefCell::new(shared),
            max_item: Cell::new(0),
        };
        match client.handshake().await {
            Ok(()) => Ok(client),
            Err(e) => {
                debug!("depot: connect failed: {}", e);
                client.close().await;
                Err(e)
            }
        }
    }

    /// Runs the handshake the core has queued; then the largest item is known.
    pub(crate) fn handshake(&self) -> impl Future<Output = Result<(), Error>> + use<'_, 'a> {
        poll_fn(|cx| {
            let mut shared = self.lock();
            loop {
                if shared.core.is_ready() {
                    self.max_item.set(shared.core.max_item());
                    return Poll::Ready(Ok(()));
                }
                if let Some(e) = shared.core.error() {
                    return Poll::Ready(Err(Error::from(e)));
                }
                if let Driven::Stuck = shared.drive(cx, NO_CALL, &mut |_| {}) {
                    return Poll::Pending;
                }
            }
        })
    }

    /// A raw-bytes proxy for the queue named `name`.
    ///
    /// Its future is the `Open` call's own: no state machine around it.
    pub fn queue_raw<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Future<Output = Result<RawQueue<'s, 'a>, Error>> + use<'s, 'a, 'n> {
        self.call(Op::Open { name }, move |reply| match reply {
            Reply::Opened(info) => Ok(RawQueue::new(self, info)),
            other => Err(unexpected(other)),
        })
    }

    /// A typed proxy for the queue named `name`: items are `T` as values (the value model),
    /// through a scratch buffer of `N` bytes (default 64) on the stack of each `put`.
    ///
    /// Its future is the `Open` call's own: no state machine around it.
    pub fn queue<'s, 'n, T, const N: usize>(
        &'s self,
        name: &'n str,
    ) -> impl Future<Output = Result<Queue<'s, 'a, T, N>, Error>> + use<'s, 'a, 'n, T, N>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.call(Op::Open { name }, move |reply| match reply {
            Reply::Opened(info) => Ok(Queue::new(RawQueue::new(self, info))),
            other => Err(unexpected(other)),
        })
    }

    /// A raw proxy for an object opened before (see [`RawQueue::info`]), without a round trip.
    pub fn attach(&self, info: ObjectInfo) -> RawQueue<'_, 'a> {
        RawQueue::new(self, info)
    }

    /// Looks an object up by name.
    pub fn open<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Future<Output = Result<ObjectInfo, Error>> + use<'s, 'a, 'n> {
        self.call(Op::Open { name }, |reply| match reply {
            Reply::Opened(info) => Ok(info),
            other => Err(unexpected(other)),
        })
    }

    /// Calls the manager's registered call `name` with `request` (one value of the value
    /// model), waiting as long as its handler runs: the length of the response written at
    /// the start of `response`. The handler's error is [`Error::CallFailed`]; a response
    /// larger than `response` is `TooLarge`.
    pub async fn call_raw(
        &self,
        name: &str,
        request: &[u8],
        response: &mut [u8],
    ) -> Result<usize, Error> {
        let info = self.open(name).await?;
        let action = Action::Call {
            request,
            wait: Wait::Forever,
        };
        let op = Op::Act {
            handle: info.handle,
            action,
        };
        self.call(op, |reply| match reply {
            Reply::Value(v) => {
                let dest = response
                    .get_mut(..v.len())
                    .ok_or(Error::Depot(ErrorCode::TooLarge.into()))?;
                dest.copy_from_slice(v);
                Ok(v.len())
            }
            Reply::Failed(_) => Err(Error::CallFailed),
            other => Err(unexpected(other)),
        })
        .await
    }

    /// Asks the manager to stop (it must allow remote shutdown, else `NotAllowed`).
    pub fn shutdown(&self) -> impl Future<Output = Result<(), Error>> + use<'_, 'a> {
        self.call(Op::Shutdown, done)
    }

    /// The largest item a `put` on this connection can carry.
    pub fn max_item(&self) -> usize {
        self.max_item.get()
    }

    /// Closes the connection: sends the FIN after the last bytes and waits (at most 500 ms)
    /// for the manager to acknowledge them. Calls still in flight, and any made after, fail
    /// with `Disconnected` (a reconnecting client does not come back after it).
    ///
    /// Its future is a `poll_fn` around one out-of-line poll, with its own deadline instead of
    /// `with_timeout`'s select.
    pub fn close(&self) -> impl Future<Output = ()> + use<'_, 'a> {
        let mut until = None;
        poll_fn(move |cx| self.lock().poll_close(cx, &mut until))
    }

    /// Sends `op` and hands its reply to `f`, which runs while the reply's bytes are borrowed
    /// (so a `get` decodes or copies without a buffer of its own). `f` must not call the
    /// client. A reconnecting client makes the call again on a new connection when it may.
    #[cfg(feature = "sessions")]
    pub(crate) async fn call<R>(
        &self,
        op: Op<'_>,
        mut f: impl FnMut(Reply<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        if self.shared.borrow().resume.is_some() {
            return crate::resume::call(self, op, &mut f).await;
        }
        self.call_once(op, f, true, None).await
    }

    /// Without reconnecting, a call is one try: its future is `call_once`'s own (no state
    /// machine around it, which firmware would pay for in flash).
    #[cfg(not(feature = "sessions"))]
    pub(crate) fn call<'s, 'o, R, F>(
        &'s self,
        op: Op<'o>,
        f: F,
    ) -> impl Future<Output = Result<R, Error>> + use<'s, 'a, 'o, R, F>
    where
        F: FnMut(Reply<'_>) -> Result<R, Error>,
    {
        self.call_once(op, f, true, None)
    }

    /// `op` on the connection there is now. When it fails because the connection is lost (or
    /// being replaced, unless `gated` is false), a reconnecting client learns it in `lost`:
    /// `Some(sent)`, `sent` telling whether the request had been handed to the connection.
    ///
    /// Its future is a thin `poll_fn` around [`Progress::poll`], which is the same for every
    /// op and reply type: an image links one copy of the call's logic, not one per call site.
    pub(crate) fn call_once<'s, 'o, 'l, R, F>(
        &'s self,
        op: Op<'o>,
        mut f: F,
        gated: bool,
        #[cfg_attr(not(feature = "sessions"), allow(unused_variables))] lost: Option<
            &'l mut Option<bool>,
        >,
    ) -> impl Future<Output = Result<R, Error>> + use<'s, 'a, 'o, 'l, R, F>
    where
        F: FnMut(Reply<'_>) -> Result<R, Error>,
    {
        let mut call = Progress::new(self, gated);
        #[cfg(feature = "sessions")]
        {
            call.lost = lost;
        }
        poll_fn(move |cx| call.poll_with(cx, &op, &mut f))
    }
}

/// A call's progress: sending its request, then waiting for the reply.
pub(crate) struct Progress<'c, 'a, 'l> {
    client: &'c Client<'a>,
    gated: bool,
    #[cfg(feature = "sessions")]
    lost: Option<&'l mut Option<bool>>,
    #[cfg(not(feature = "sessions"))]
    lost: core::marker::PhantomData<&'l mut Option<bool>>,
    /// The id of the request once sent and until its reply is taken. Dropped meanwhile (say,
    /// under `with_timeout`), the call is abandoned: the core withdraws it and any item
    /// already on its way goes back to its queue.
    sent: Option<u32>,
}

impl<'c, 'a> Progress<'c, 'a, '_> {
    /// A call not yet sent; `gated` as for [`Client::call_once`].
    pub(crate) fn new(client: &'c Client<'a>, gated: bool) -> Self {
        Progress {
            client,
            gated,
            #[cfg(feature = "sessions")]
            lost: None,
            #[cfg(not(feature = "sessions"))]
            lost: core::marker::PhantomData,
            sent: None,
        }
    }

    /// A poll of the call's future: sends `op` (the same at every poll until it is sent) and
    /// hands the reply to `f`.
    pub(crate) fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: &Op<'_>,
        f: &mut impl FnMut(Reply<'_>) -> Result<R, Error>,
    ) -> Poll<Result<R, Error>> {
        // `on_reply` runs in the poll that returns `Ready(Ok(()))`.
        let mut result = None;
        let outcome = ready!(self.poll(cx, op, &mut |reply| result = Some(f(reply))));
        Poll::Ready(outcome.and_then(|()| result.unwrap_or(Err(unexpected_reply()))))
    }

    /// Sends `op` when it can, then waits for its reply and hands it to `on_reply`.
    /// Not generic, and out of line: one copy for every call of an image.
    #[inline(never)]
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        op: &Op<'_>,
        on_reply: &mut dyn FnMut(Reply<'_>),
    ) -> Poll<Result<(), Error>> {
        let id = match self.sent {
            Some(id) => id,
            None => match self.client.lock().poll_send(cx, *op, self.gated) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(id)) => {
                    self.sent = Some(id);
                    id
                }
                Poll::Ready(Err(e)) => {
                    #[cfg(feature = "sessions")]
                    if let (Some(lost), true) =
                        (self.lost.take(), self.client.shared.borrow().lost())
                    {
                        *lost = Some(false);
                    }
                    return Poll::Ready(Err(e));
                }
            },
        };
        let outcome = ready!(self.client.lock().poll_reply(cx, id, on_reply));
        self.sent = None;
        // Not a broken reply: the connection went.
        #[cfg(feature = "sessions")]
        if let (Err(e), Some(lost)) = (outcome, self.lost.take()) {
            if e != unexpected_reply() {
                *lost = Some(true);
            }
        }
        Poll::Ready(outcome)
    }
}

impl Drop for Progress<'_, '_, '_> {
    fn drop(&mut self) {
        if let Some(id) = self.sent {
            self.client.lock().abandon(id);
        }
    }
}

/// The error of a reply that does not answer its request.
fn unexpected_reply() -> Error {
    Error::Depot(depot_core::Error::Closed(CloseReason::Unexpected))
}

/// `Done` as success.
pub(crate) fn done(reply: Reply<'_>) -> Result<(), Error> {
    match reply {
        Reply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// The error a reply other than the expected one means.
pub(crate) fn unexpected(reply: Reply<'_>) -> Error {
    match reply {
        Reply::Error(code) => Error::Depot(code.into()),
        _ => Error::Depot(depot_core::Error::Closed(CloseReason::Unexpected)),
    }
}
