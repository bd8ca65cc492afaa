//! depot over bare smoltcp, for firmware without an async executor (RTIC, a super-loop): the
//! application owns smoltcp's `Interface` and `SocketSet` and polls them; it hands one TCP
//! socket to a [`Client`] and calls [`Client::poll`] after each `Interface::poll`. The client
//! moves bytes between that socket and depot's sans-IO client (`depot_core::Client`, where all
//! of the protocol lives), and keeps its deadlines on the time it is given.
//!
//! ```ignore
//! let handle = sockets.add(tcp::Socket::new(rx, tx));
//! sockets.get_mut::<tcp::Socket>(handle).connect(iface.context(), MANAGER, LOCAL_PORT)?;
//! let mut client = Client::new(handle, AUTHKEY, nonce, now, &mut rx_frame, &mut tx_frame, &mut slots);
//! loop {
//!     iface.poll(smoltcp_now, &mut device, &mut sockets);
//!     client.poll(&mut sockets, now);
//!     while let Some(event) = client.poll_event() { /* Connected, Reply { id, reply }, Closed */ }
//!     // send requests with client.send(now, Op::...), then sleep until a frame or
//!     // min(iface.poll_delay(..), client.poll_at())
//! }
//! ```
//!
//! No allocation, no executor, no waker: the application decides when to poll.
#![no_std]

pub use depot_core;

use depot_core::client::{ClientConfig, Event, RequestSlot, SendError};
use depot_core::time::Instant;
use depot_core::wire::{Op, NONCE_LEN};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, State};

/// A depot client on one smoltcp TCP socket. See the crate docs.
pub struct Client<'a> {
    core: depot_core::Client<'a>,
    socket: SocketHandle,
    /// The socket got past connecting: from then on its closing ends the session.
    opened: bool,
}

impl<'a> Client<'a> {
    /// A client on `socket`, which the application has connected (or is connecting) to the
    /// manager. `nonce` must be fresh random bytes (see `depot_core::auth`); `rx` bounds the
    /// largest reply frame, `tx` the largest request; `slots` is the most requests in flight.
    pub fn new(
        socket: SocketHandle,
        authkey: &[u8],
        nonce: [u8; NONCE_LEN],
        now: Instant,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
        slots: &'a mut [RequestSlot],
    ) -> Self {
        Client {
            core: depot_core::Client::new(
                ClientConfig::default(),
                authkey,
                nonce,
                now,
                rx,
                tx,
                slots,
            ),
            socket,
            opened: false,
        }
    }

    /// Moves what can move: depot's output into the socket, the socket's input into depot,
    /// the socket's end or a passed deadline into an [`Event::Closed`]. Call it after every
    /// `Interface::poll`, then drain [`Client::poll_event`].
    pub fn poll(&mut self, sockets: &mut SocketSet<'_>, now: Instant) {
        let socket = sockets.get_mut::<Socket>(self.socket);
        if self.core.error().is_none() {
            self.opened |= socket.may_send();
            if socket.may_send() {
                let out = self.core.poll_transmit();
                if !out.is_empty() {
                    match socket.send_slice(out) {
                        Ok(n) => self.core.handle_transmitted(n),
                        Err(_) => self.core.handle_close(),
                    }
                }
            }
            while socket.can_recv() {
                let core = &mut self.core;
                match socket.recv(|bytes| {
                    let n = core.handle_input(bytes);
                    (n, n)
                }) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // Everything the manager sent before closing is in: the session is over.
            let ended = matches!(socket.state(), State::Closed | State::TimeWait)
                || (self.opened && !socket.may_recv());
            if ended {
                self.core.handle_close();
            }
        }
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
        }
    }

    /// What happened: [`Event::Connected`] once, then a [`Event::Reply`] per request sent, or
    /// [`Event::Closed`] (then close the socket). A reply's bytes are valid until the next call.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.core.poll_event()
    }

    /// Queues a request (sent by the next [`Client::poll`]); its id comes back in the reply.
    pub fn send(&mut self, now: Instant, op: Op<'_>) -> Result<u32, SendError> {
        self.core.send(now, op)
    }

    /// When [`Client::poll`] must run again at the latest, for a deadline (besides whenever
    /// the interface has input).
    pub fn poll_at(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// The sans-IO client underneath, for what this wrapper does not forward.
    pub fn core(&mut self) -> &mut depot_core::Client<'a> {
        &mut self.core
    }
}
