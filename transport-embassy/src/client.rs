//! The async client: one TCP connection to a manager, driven by `depot_core::Client`.
//!
//! Each call sends one request and waits for its reply, so a `&mut Client` method is a
//! request/response round trip. A call's future may be dropped (e.g. by `with_timeout`): the
//! request stays in flight and its late reply is discarded by the next call, which is why the
//! buffers default to more than one request slot.

use core::future::pending;

use depot_core::client::ClientConfig;
use depot_core::wire::{CloseReason, ObjectInfo, Op, Reply};
use depot_core::{Event, RequestSlot};
use embassy_futures::select::{select, Either};
use embassy_net::tcp::TcpSocket;
use embassy_net::IpEndpoint;
use embassy_time::{with_timeout, Duration, Timer};

use crate::entropy::{nonce, Entropy};
use crate::queue::{Queue, RawQueue};
use crate::time::{now, to_embassy};
use crate::Error;

/// Time [`Client::close`] gives the last bytes and the FIN to be acknowledged.
const LINGER: Duration = Duration::from_millis(500);

/// The client's protocol buffers, sized at compile time.
///
/// - `FRAME` (default 512): bytes of the receive and of the transmit buffer each. The receive
///   side bounds the largest reply (announced to the manager), so the largest item a `get` can
///   take is `FRAME` minus 32 bytes of framing; the transmit side bounds the largest `put`
///   (`FRAME` minus 44). Must be at least 260 (the protocol's smallest frame plus header).
/// - `SLOTS` (default 2): requests in flight. One is used at a time; the spare lets a new call
///   go out while the reply of a call whose future was dropped is still on its way.
///
/// `2 * FRAME` bytes plus a few per slot; put it in a `static` (`StaticCell`) or on the stack
/// of the task that owns the client.
pub struct ClientBuffers<const FRAME: usize = 512, const SLOTS: usize = 2> {
    rx: [u8; FRAME],
    tx: [u8; FRAME],
    slots: [RequestSlot; SLOTS],
}

impl<const FRAME: usize, const SLOTS: usize> ClientBuffers<FRAME, SLOTS> {
    /// Zeroed buffers (a `const fn`, so they can sit in a `static`).
    pub const fn new() -> Self {
        ClientBuffers {
            rx: [0; FRAME],
            tx: [0; FRAME],
            slots: [RequestSlot::FREE; SLOTS],
        }
    }
}

impl<const FRAME: usize, const SLOTS: usize> Default for ClientBuffers<FRAME, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection to a depot manager. See the crate docs for an example.
pub struct Client<'a> {
    socket: TcpSocket<'a>,
    core: depot_core::Client<'a>,
}

impl<'a> Client<'a> {
    /// Opens `socket` (a fresh, unconnected `TcpSocket`) to `endpoint` and runs the mutual
    /// authkey handshake. A wrong key gives `Error::Depot(depot_core::Error::AuthFailed)`.
    ///
    /// Failing TCP-level liveness (the manager's host vanishing) is up to the socket's own
    /// `set_timeout` / `set_keep_alive`; the protocol's deadlines (handshake, reply) are the
    /// core's and run here on embassy-time.
    pub async fn connect<const FRAME: usize, const SLOTS: usize>(
        mut socket: TcpSocket<'a>,
        endpoint: impl Into<IpEndpoint>,
        authkey: &[u8],
        entropy: &mut (impl Entropy + ?Sized),
        buffers: &'a mut ClientBuffers<FRAME, SLOTS>,
    ) -> Result<Client<'a>, Error> {
        // Requests are small and each waits for its reply: Nagle would only add latency.
        socket.set_nagle_enabled(false);
        socket.connect(endpoint).await.map_err(Error::Connect)?;
        let core = depot_core::Client::new(
            ClientConfig::default(),
            authkey,
            nonce(entropy),
            now(),
            &mut buffers.rx,
            &mut buffers.tx,
            &mut buffers.slots,
        );
        let mut client = Client { socket, core };
        let connected = client
            .until(|event| match event {
                Event::Connected => Some(Ok(())),
                _ => None,
            })
            .await;
        match connected {
            Ok(()) => Ok(client),
            Err(e) => {
                debug!("depot: connect failed: {}", e);
                client.close().await;
                Err(e)
            }
        }
    }

    /// A raw-bytes proxy for the queue named `name`.
    pub async fn queue_raw(&mut self, name: &str) -> Result<RawQueue<'_, 'a>, Error> {
        let info = self.open(name).await?;
        Ok(RawQueue::new(self, info))
    }

    /// A typed proxy for the queue named `name`: items are `T` as values (the value model),
    /// through a scratch buffer of `N` bytes (default 64) on the stack of each `put`.
    pub async fn queue<T, const N: usize>(
        &mut self,
        name: &str,
    ) -> Result<Queue<'_, 'a, T, N>, Error>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let info = self.open(name).await?;
        Ok(Queue::new(RawQueue::new(self, info)))
    }

    /// A raw proxy for an object opened before (see [`RawQueue::info`]), without a round trip.
    pub fn attach(&mut self, info: ObjectInfo) -> RawQueue<'_, 'a> {
        RawQueue::new(self, info)
    }

    /// Looks an object up by name.
    pub async fn open(&mut self, name: &str) -> Result<ObjectInfo, Error> {
        self.call(Op::Open { name }, |reply| match reply {
            Reply::Opened(info) => Ok(info),
            other => Err(unexpected(other)),
        })
        .await
    }

    /// Asks the manager to stop (it must allow remote shutdown, else `NotAllowed`).
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        self.call(Op::Shutdown, done).await
    }

    /// The largest item a `put` on this connection can carry.
    pub fn max_item(&self) -> usize {
        self.core.max_item()
    }

    /// Closes the connection: sends the FIN after the last bytes and waits (at most 500 ms)
    /// for the manager to acknowledge them; the socket is then released.
    pub async fn close(mut self) {
        self.socket.close();
        let _ = with_timeout(LINGER, self.socket.flush()).await;
    }

    /// Sends `op` and hands its reply to `f`, which runs while the reply's bytes are borrowed
    /// from the receive buffer (so a `get` decodes or copies without an extra buffer).
    pub(crate) async fn call<R>(
        &mut self,
        op: Op<'_>,
        mut f: impl FnMut(Reply<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let id = loop {
            match self.core.send(now(), op) {
                Ok(id) => break id,
                // Replies to abandoned calls still hold a slot or output room: let them drain.
                Err(depot_core::Error::InFlightLimit | depot_core::Error::WouldBlock) => {
                    while let Some(event) = self.core.poll_event() {
                        if let Event::Closed(e) = event {
                            return Err(e.into());
                        }
                    }
                    self.step().await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        // Dropped before its reply (say, under `with_timeout`), the call is abandoned: the
        // core withdraws it and gives back any item already on its way.
        let mut call = InFlight {
            client: self,
            id,
            answered: false,
        };
        let result = call
            .client
            .until(|event| match event {
                Event::Reply { id: got, reply } if got == id => Some(f(reply)),
                _ => None,
            })
            .await;
        call.answered = true;
        result
    }

    /// Moves bytes until `pick` takes an event; the connection closing is an error.
    async fn until<R>(
        &mut self,
        mut pick: impl FnMut(Event<'_>) -> Option<Result<R, Error>>,
    ) -> Result<R, Error> {
        loop {
            while let Some(event) = self.core.poll_event() {
                if let Event::Closed(e) = event {
                    return Err(e.into());
                }
                if let Some(result) = pick(event) {
                    return result;
                }
            }
            if let Some(e) = self.core.error() {
                // Closed and already reported: nothing will arrive any more.
                return Err(e.into());
            }
            self.step().await;
        }
    }

    /// One step of I/O: writes pending output, else reads what arrives; or runs the core's
    /// deadline when it comes first.
    async fn step(&mut self) {
        let deadline = self.core.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => Timer::at(to_embassy(at)).await,
                None => pending().await,
            }
        };
        let Client { socket, core } = self;
        let io = async {
            if core.poll_transmit().is_empty() {
                socket.read_with(|buf| (core.handle_input(buf), ())).await
            } else {
                socket
                    .write_with(|buf| {
                        let out = core.poll_transmit();
                        let n = out.len().min(buf.len());
                        buf[..n].copy_from_slice(&out[..n]);
                        core.handle_transmitted(n);
                        (n, ())
                    })
                    .await
            }
        };
        match select(io, timer).await {
            Either::First(Ok(())) => {}
            // Reset, or the manager closed its side: what it sent before is already in.
            Either::First(Err(_)) => self.core.handle_close(),
            Either::Second(()) => self.core.handle_timeout(now()),
        }
    }
}

/// A request sent and not yet answered; abandoned if dropped so.
struct InFlight<'c, 'a> {
    client: &'c mut Client<'a>,
    id: u32,
    answered: bool,
}

impl Drop for InFlight<'_, '_> {
    fn drop(&mut self) {
        if !self.answered {
            self.client.core.abandon(self.id);
        }
    }
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
