//! The async client on tokio (feature `tokio`).
//!
//! A [`Client`] is a cheap handle (`Clone + Send + Sync`) to one connection, usable from any
//! number of tasks at once. The connection is driven by one background task that owns the
//! socket's read side and the same sans-IO [`depot_core::Client`] the blocking client uses;
//! callers send it their requests over a channel and get the replies back through oneshots, so
//! requests of all tasks are pipelined on the one connection. A second small task writes what
//! the core produces, so a slow write never stops replies from being read.
//!
//! Futures are cancel-safe in the sense that matters for a queue: dropping a `get` (say under
//! `tokio::time::timeout`) never loses an item. The dropped call is withdrawn from the manager
//! (`Cancel`), and an item that was already on its way is given back to the head of its queue
//! (`Return`), where the next `get` finds it. A dropped `put` may or may not have put its item.
//!
//! ```no_run
//! # async fn run() -> Result<(), depot_std::Error> {
//! let client = depot_std::tokio::Client::connect("127.0.0.1:5000", "producer").await?;
//! let queue = client.queue::<u32>("task_queue").await?;
//! let consumer = {
//!     let queue = queue.clone();
//!     tokio::spawn(async move { queue.get().await })
//! };
//! queue.put(&7).await?;
//! assert_eq!(consumer.await.unwrap()?, 7);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use ::tokio::net::{lookup_host, TcpStream, ToSocketAddrs};
use ::tokio::sync::{mpsc, oneshot, Notify};
use ::tokio::time::{sleep_until, timeout};
use depot_core::client::{ClientConfig, SendError};
use depot_core::reconnect::{refused_for_now, resend, Backoff, ClientSession, Policy};
use depot_core::wire::{
    ErrorCode, Items, ManagerStatus, Op, QueueSize, QueueSpec, Reply, Wait, NONCE_LEN,
    SESSION_ID_LEN,
};
use depot_core::{Event as CoreEvent, Handle, Instant};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use crate::client::conn::{
    closed_error, connect_error, millis, Outcome, BUF_LEN, READ_CHUNK, REPLY_GRACE_MS, SLOTS,
};
use crate::client::proxy::{
    decode, decode_slice, encode, fits, pack, wait_for, BATCHES_IN_FLIGHT, BATCH_BYTES,
};
use crate::client::STAT_BATCH;

mod lease;
mod objects;
use crate::client::ops::ActionBuf;
use crate::{Batch, Error, QueueStat, Reconnect};
pub use lease::{Leased, RawLeased};
pub use objects::{Barrier, Condition, Dict, Event, List, Lock, Semaphore, Value};

/// How long a request refused for lack of room to block waits before it is sent again when
/// no reply of this connection arrives meanwhile (only other connections can free room then).
const ROOM_RETRY: Duration = Duration::from_millis(20);

/// A request, owned, on its way to the connection task.
#[derive(Debug)]
enum Request {
    Open(String),
    Create(String, QueueSpec),
    Put(Handle, Vec<u8>, Wait),
    Get(Handle, Wait),
    PutMany(Handle, Vec<u8>, Wait),
    GetMany(Handle, u32, Wait),
    Size(Handle),
    TaskDone(Handle),
    Join(Handle, Wait),
    Stat(u16),
    Status,
    BackendStatus,
    Shutdown,
    Return(Handle, Vec<u8>),
    /// Max items, lease ms, wait.
    GetLeased(Handle, u32, u32, Wait),
    Ack(u64),
    Nack(u64),
    /// A `Put` numbered in the client's session (given its number when first sent).
    PutSeq(Handle, Vec<u8>, Wait, u64),
    /// A `PutMany` numbered in the client's session.
    PutManySeq(Handle, Vec<u8>, Wait, u64),
    /// An action on an object beside queues, waiting this long if it waits.
    Act(Handle, ActionBuf, Wait),
}

impl Request {
    fn op(&self) -> Op<'_> {
        match self {
            Request::Open(name) => Op::Open { name },
            Request::Create(name, spec) => Op::Create {
                name,
                spec: *spec,
                exist_ok: true,
            },
            Request::Put(handle, item, wait) => Op::Put {
                handle: *handle,
                item,
                wait: *wait,
            },
            Request::Get(handle, wait) => Op::Get {
                handle: *handle,
                wait: *wait,
            },
            Request::PutMany(handle, items, wait) => Op::PutMany {
                handle: *handle,
                items: Items(items),
                wait: *wait,
            },
            Request::GetMany(handle, max_items, wait) => Op::GetMany {
                handle: *handle,
                max_items: *max_items,
                max_bytes: BATCH_BYTES as u32,
                wait: *wait,
            },
            Request::Size(handle) => Op::Size { handle: *handle },
            Request::TaskDone(handle) => Op::TaskDone { handle: *handle },
            Request::Join(handle, wait) => Op::Join {
                handle: *handle,
                wait: *wait,
            },
            Request::Stat(index) => Op::Stat { index: *index },
            Request::Status => Op::Status,
            Request::BackendStatus => Op::BackendStatus,
            Request::Shutdown => Op::Shutdown,
            Request::Return(handle, item) => Op::Return {
                handle: *handle,
                item,
            },
            Request::GetLeased(handle, max_items, lease_ms, wait) => Op::GetLeased {
                handle: *handle,
                max_items: *max_items,
                max_bytes: BATCH_BYTES as u32,
                lease_ms: *lease_ms,
                wait: *wait,
            },
            Request::Ack(lease) => Op::Ack { lease: *lease },
            Request::Nack(lease) => Op::Nack { lease: *lease },
            Request::PutSeq(handle, item, wait, seq) => Op::PutSeq {
                seq: *seq,
                handle: *handle,
                item,
                wait: *wait,
            },
            Request::PutManySeq(handle, items, wait, seq) => Op::PutManySeq {
                seq: *seq,
                handle: *handle,
                items: Items(items),
                wait: *wait,
            },
            Request::Act(handle, action, wait) => Op::Act {
                handle: *handle,
                action: action.action(*wait),
            },
        }
    }

    /// This put numbered `seq` in the client's session (other requests are unchanged).
    fn numbered(self, seq: u64) -> Request {
        match self {
            Request::Put(h, item, wait) => Request::PutSeq(h, item, wait, seq),
            Request::PutMany(h, items, wait) => Request::PutManySeq(h, items, wait, seq),
            other => other,
        }
    }

    /// How long it may wait in the manager, if it may wait at all.
    fn wait_mut(&mut self) -> Option<&mut Wait> {
        match self {
            Request::Put(_, _, w)
            | Request::Get(_, w)
            | Request::PutMany(_, _, w)
            | Request::GetMany(_, _, w)
            | Request::Join(_, w)
            | Request::GetLeased(_, _, _, w)
            | Request::PutSeq(_, _, w, _)
            | Request::PutManySeq(_, _, w, _) => Some(w),
            _ => None,
        }
    }

    /// The queue whose items a reply to this request may carry.
    fn takes_from(&self) -> Option<Handle> {
        match self {
            Request::Get(handle, _) | Request::GetMany(handle, _, _) => Some(*handle),
            _ => None,
        }
    }
}

type ReplyTx = oneshot::Sender<Result<Outcome, Error>>;

/// What callers send the connection task.
enum Command {
    /// A request; its reply goes to `reply` (none for the task's own `Return`s).
    Call {
        token: u64,
        request: Request,
        reply: Option<ReplyTx>,
    },
    /// The caller of `token` stopped waiting.
    Abandon(u64),
    /// Items a dropped caller had already received: back to the head of their queue. The
    /// same call's requests still in flight, `withdrawn` (abandoned) just before, took from
    /// the queue after these items, so whatever their replies bring goes back behind them.
    GiveBack {
        handle: Handle,
        items: Vec<Vec<u8>>,
        withdrawn: Vec<u64>,
    },
}

/// What every clone of a client shares.
#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    tokens: AtomicU64,
    /// Signalled whenever replies arrive: a request refused for lack of room may fit now.
    progress: Notify,
    /// The current connection's, set again by each reconnect (the manager may differ).
    link: std::sync::Mutex<Link>,
}

/// What a client's current connection is: a reconnect may reach another address or a
/// manager that agrees to other sealing.
#[derive(Debug, Clone, Copy)]
struct Link {
    peer: SocketAddr,
    /// The largest item a put on this connection can carry.
    max_item: usize,
    sealing: Option<crate::Sealing>,
}

impl Shared {
    fn link(&self) -> Link {
        *self
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_link(&self, link: Link) {
        *self
            .link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = link;
    }
}

/// A connection to a manager for async code: a cheap handle, `Clone + Send + Sync`.
///
/// Clones share the one connection and the task driving it; requests from any number of
/// tasks are pipelined on it. The connection closes when the last clone, and the last queue
/// proxy made from it, is dropped. Must be created inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Client {
    /// Connects and authenticates, within 10 seconds.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
    ) -> Result<Client, Error> {
        Self::connect_timeout(addr, authkey, Duration::from_secs(10)).await
    }

    /// Connects and authenticates within `limit`.
    pub async fn connect_timeout(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
        limit: Duration,
    ) -> Result<Client, Error> {
        let addrs = resolve(addr).await?;
        let dialled = dial(&addrs, authkey.as_ref(), limit).await?;
        Ok(Client::run(dialled, None))
    }

    /// Connects and authenticates (within 10 seconds) a client that reconnects by itself, as
    /// a blocking client with [`ConnectOptions::reconnect`](crate::ConnectOptions::reconnect) does: on a lost
    /// connection the connection task dials again with jittered exponential backoff, resumes
    /// the client's session and sends the requests in flight again — numbered puts with their
    /// numbers, applied once (PROTOCOL.md §16); gets, joins, sizes and opens as they were. A
    /// `task_done`, `ack` or `nack` in flight fails (what is sent again is depot-core's
    /// [`resend`]). A request the manager refuses because it is shutting down (it applied
    /// nothing; of a batch put, the items not yet in) waits for the next connection too, so
    /// blocked calls ride a graceful restart. A request fails when its own wait runs out
    /// while there is no connection, or after `reconnect.give_up` without one.
    pub async fn connect_reconnecting(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
        reconnect: Reconnect,
    ) -> Result<Client, Error> {
        let addrs = resolve(addr).await?;
        let mut id = [0; SESSION_ID_LEN];
        getrandom::fill(&mut id)
            .map_err(|e| std::io::Error::other(format!("no random bytes for a session: {e}")))?;
        let session = ClientSession::new(id);
        let mut dialled = dial(&addrs, authkey.as_ref(), Duration::from_secs(10)).await?;
        let has_session = open_session(&mut dialled, &session).await?;
        let redial = Redial {
            addrs,
            authkey: authkey.as_ref().to_vec(),
            policy: reconnect.policy(),
            session,
            has_session,
        };
        Ok(Client::run(dialled, Some(redial)))
    }

    /// Starts the tasks that drive a connection.
    fn run(dialled: Dialled, redial: Option<Redial>) -> Client {
        let Dialled {
            core,
            stream,
            peer,
            epoch,
        } = dialled;
        let link = Link {
            peer,
            max_item: core.max_item(),
            sealing: core.sealing(),
        };
        let (read, write) = stream.into_split();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            commands,
            tokens: AtomicU64::new(0),
            progress: Notify::new(),
            link: std::sync::Mutex::new(link),
        });
        ::tokio::spawn(write_out(write, out_rx));
        let driver = Driver {
            core,
            peer,
            epoch,
            out: out_tx,
            shared: Arc::downgrade(&shared),
            pending: HashMap::new(),
            ids: HashMap::new(),
            backlog: VecDeque::new(),
            deferred: Vec::new(),
            filed: 0,
            redial,
            refused: Vec::new(),
            applied_before: HashMap::new(),
            sent: 0,
        };
        ::tokio::spawn(driver.run(read, command_rx));
        Client { shared }
    }

    /// A typed proxy for the queue `name`, items in depot's value encoding. The proxy holds a
    /// clone of this client, so it can be moved into other tasks.
    pub async fn queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Queue<T>, Error> {
        self.raw_queue(name).await.map(|raw| Queue {
            raw,
            _items: PhantomData,
        })
    }

    /// A raw-bytes proxy for the queue `name`.
    pub async fn raw_queue(&self, name: &str) -> Result<RawQueue, Error> {
        let outcome = self.exchange(Request::Open(name.to_owned())).await?;
        self.opened(name, outcome)
    }

    /// Creates the queue `name` (or opens it if it exists), when the manager allows it.
    pub async fn create_queue(
        &self,
        name: &str,
        capacity: u32,
        max_item: u32,
    ) -> Result<RawQueue, Error> {
        let spec = QueueSpec {
            capacity,
            max_item,
            mode: depot_core::QueueMode::Value,
        };
        let outcome = self
            .exchange(Request::Create(name.to_owned(), spec))
            .await?;
        self.opened(name, outcome)
    }

    fn opened(&self, name: &str, outcome: Outcome) -> Result<RawQueue, Error> {
        match outcome {
            Outcome::Opened(info) => Ok(RawQueue {
                client: self.clone(),
                name: name.to_owned(),
                handle: info.handle,
                spec: info.spec,
            }),
            other => Err(unexpected(other, name)),
        }
    }

    /// Every queue with its statistics (requests for the entries are pipelined).
    pub async fn stat(&self) -> Result<Vec<QueueStat>, Error> {
        let mut stats = Vec::new();
        let mut index: u16 = 0;
        loop {
            let batch: Vec<Waiting<'_>> = (0..STAT_BATCH)
                .map_while(|k| index.checked_add(k))
                .map(|i| self.start(Request::Stat(i)))
                .collect();
            let mut end = batch.is_empty();
            // Every reply is collected, even past the end.
            for waiting in batch {
                match waiting.finish().await? {
                    Outcome::Stat(Some(s)) if !end => stats.push(s.into()),
                    Outcome::Stat(_) => end = true,
                    other => return Err(unexpected(other, "")),
                }
            }
            if end {
                return Ok(stats);
            }
            index = index.saturating_add(STAT_BATCH);
        }
    }

    /// The manager's status: connections, objects, blocked requests.
    pub async fn status(&self) -> Result<ManagerStatus, Error> {
        match self.exchange(Request::Status).await? {
            Outcome::Status(status) => Ok(status),
            other => Err(unexpected(other, "")),
        }
    }

    /// The health of the manager's backend, `None` when it keeps its queues itself.
    pub async fn backend_status(&self) -> Result<Option<crate::BackendHealth>, Error> {
        match self.exchange(Request::BackendStatus).await? {
            Outcome::Backend(health) => Ok(health),
            other => Err(unexpected(other, "")),
        }
    }

    /// Asks the manager to stop; an [`ErrorCode::NotAllowed`] error when it refuses.
    pub async fn shutdown_manager(&self) -> Result<(), Error> {
        match self.exchange(Request::Shutdown).await? {
            Outcome::Done => Ok(()),
            other => Err(unexpected(other, "")),
        }
    }

    /// The manager's address (of the current connection, for a client that reconnects).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.link().peer
    }

    /// How frames to and from the manager are protected (see the blocking
    /// [`crate::Client::sealing`]).
    pub fn sealing(&self) -> Option<crate::Sealing> {
        self.shared.link().sealing
    }

    /// Hands `request` to the connection task; the returned value waits for its reply.
    fn start(&self, request: Request) -> Waiting<'_> {
        let token = self.shared.tokens.fetch_add(1, Ordering::Relaxed);
        let handle = request.takes_from();
        let (tx, rx) = oneshot::channel();
        let sent = self.shared.commands.send(Command::Call {
            token,
            request,
            reply: Some(tx),
        });
        Waiting {
            shared: &self.shared,
            rx: sent.is_ok().then_some(rx),
            token,
            handle,
        }
    }

    /// One request and its reply.
    async fn exchange(&self, request: Request) -> Result<Outcome, Error> {
        self.start(request).finish().await
    }

    /// A request that may block on the manager, made by `remake` for a wait. Refused for
    /// lack of room to block (`WaiterLimit`), it is sent again, with what is left of its
    /// time, once room may be free.
    async fn call_blocking(
        &self,
        wait: Wait,
        remake: impl Fn(Wait) -> Request,
    ) -> Result<Outcome, Error> {
        let start = ::tokio::time::Instant::now();
        let mut current = wait;
        loop {
            let notified = self.shared.progress.notified();
            ::tokio::pin!(notified);
            // Registered before the request goes out, so no reply in between is missed.
            notified.as_mut().enable();
            match self.exchange(remake(current)).await? {
                Outcome::Error(ErrorCode::WaiterLimit) => {
                    let _ = timeout(ROOM_RETRY, notified).await;
                    if let Wait::Millis(ms) = wait {
                        let total = Duration::from_millis(ms.into());
                        let left = total.saturating_sub(start.elapsed());
                        if left.is_zero() {
                            return Ok(Outcome::Error(ErrorCode::Timeout));
                        }
                        current = wait_for(left);
                    }
                }
                other => return Ok(other),
            }
        }
    }
}

/// A request handed to the connection task, until its reply is taken. Dropped before that,
/// it withdraws the request, or gives back the items its reply already brought.
struct Waiting<'c> {
    shared: &'c Shared,
    /// `None` once the reply was taken (or when the task was already gone).
    rx: Option<oneshot::Receiver<Result<Outcome, Error>>>,
    token: u64,
    handle: Option<Handle>,
}

impl Waiting<'_> {
    async fn finish(mut self) -> Result<Outcome, Error> {
        self.reply().await
    }

    /// Waits for the reply. Dropped while it waits, `self` still withdraws the request.
    async fn reply(&mut self) -> Result<Outcome, Error> {
        let gone = || Error::Disconnected {
            reason: format!("connection to {} lost", self.shared.link().peer),
        };
        let Some(rx) = self.rx.as_mut() else {
            return Err(gone());
        };
        let reply = rx.await;
        self.rx = None;
        reply.unwrap_or_else(|_| Err(gone()))
    }
}

impl Waiting<'_> {
    /// Stops the reply channel: from now on the task either has delivered the reply already
    /// or finds the receiver gone (and gives the items back itself).
    fn close(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.close();
        }
    }

    /// After [`Waiting::close`]: adds the items of a reply already delivered to `items`, or
    /// the request to `withdrawn` if its reply has not come. Leased items are nacked now:
    /// nobody will process them.
    fn settle(&mut self, items: &mut Vec<Vec<u8>>, withdrawn: &mut Vec<u64>) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        match rx.try_recv() {
            Ok(Ok(Outcome::Leased { lease, .. })) => {
                let _ = self.shared.commands.send(nack(lease));
            }
            Ok(Ok(outcome)) => items.extend(items_of(outcome).unwrap_or_default()),
            Ok(Err(_)) => {}
            Err(_) => withdrawn.push(self.token),
        }
    }
}

/// Tells the task what a dropped call leaves: requests to withdraw, and `items` it had
/// received from `handle`'s queue, which go back ahead of whatever those requests bring.
fn give_up(
    commands: &mpsc::UnboundedSender<Command>,
    handle: Option<Handle>,
    items: Vec<Vec<u8>>,
    withdrawn: Vec<u64>,
) {
    for token in &withdrawn {
        let _ = commands.send(Command::Abandon(*token));
    }
    if let (Some(handle), false) = (handle, items.is_empty()) {
        let _ = commands.send(Command::GiveBack {
            handle,
            items,
            withdrawn,
        });
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let (mut items, mut withdrawn) = (Vec::new(), Vec::new());
        self.close();
        self.settle(&mut items, &mut withdrawn);
        give_up(&self.shared.commands, self.handle, items, withdrawn);
    }
}

/// What a `get_batch` has taken so far and its requests in flight (the items each asked
/// for, and whether it waits): dropped before the call returns them, it gives every item
/// back to the head of the queue, in order, those the replies in flight bring included.
struct Taking<'c> {
    commands: &'c mpsc::UnboundedSender<Command>,
    handle: Handle,
    items: Batch,
    in_flight: VecDeque<(Waiting<'c>, usize, bool)>,
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        // Newest first: the connection task files replies in the order their items left the
        // queue, so a reply it can still hand over is older than every one it cannot. The
        // items of the first kind go back from here, behind those taken before; the others
        // the task gives back itself, behind these.
        for (waiting, _, _) in self.in_flight.iter_mut().rev() {
            waiting.close();
        }
        let mut items = std::mem::take(&mut self.items).to_vecs();
        let mut withdrawn = Vec::new();
        for (waiting, _, _) in &mut self.in_flight {
            waiting.settle(&mut items, &mut withdrawn);
        }
        give_up(self.commands, Some(self.handle), items, withdrawn);
    }
}

/// A `Nack` of `lease` that nobody waits for.
fn nack(lease: u64) -> Command {
    Command::Call {
        token: u64::MAX,
        request: Request::Nack(lease),
        reply: None,
    }
}

/// The items a reply carries, if any.
fn items_of(outcome: Outcome) -> Option<Vec<Vec<u8>>> {
    match outcome {
        Outcome::Item(item) => Some(vec![item]),
        Outcome::Items(items) => Some(items.to_vecs()),
        _ => None,
    }
}

/// The error for a reply that is not the success a request expects.
fn unexpected(outcome: Outcome, name: &str) -> Error {
    crate::client::ops::unexpected(outcome, name)
}

/// The addresses `addr` names.
async fn resolve(addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = lookup_host(addr)
        .await
        .map_err(|e| Error::Config(format!("bad address: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Config("the address resolves to nothing".into()));
    }
    Ok(addrs)
}

/// A connection that finished its handshake.
struct Dialled {
    core: depot_core::Client<'static>,
    stream: TcpStream,
    peer: SocketAddr,
    /// Time zero of the core's clock.
    epoch: ::tokio::time::Instant,
}

/// Connects to the first of `addrs` that answers and runs the handshake, within `limit`.
async fn dial(addrs: &[SocketAddr], authkey: &[u8], limit: Duration) -> Result<Dialled, Error> {
    let epoch = ::tokio::time::Instant::now();
    let timed_out = |a: &SocketAddr| Error::ConnectTimeout {
        addr: a.to_string(),
    };
    let mut last = Error::Config("the address resolves to nothing".into());
    let mut connected = None;
    for a in addrs {
        match timeout(limit.saturating_sub(epoch.elapsed()), TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                connected = Some((s, *a));
                break;
            }
            Ok(Err(e)) => last = connect_error(*a, e),
            Err(_) => {
                last = timed_out(a);
                break;
            }
        }
    }
    let (mut stream, peer) = connected.ok_or(last)?;
    // Requests are small and latency-bound; never wait for Nagle.
    stream.set_nodelay(true)?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| std::io::Error::other(format!("no random bytes for a nonce: {e}")))?;
    let config = ClientConfig {
        handshake_timeout_ms: millis(limit),
        reply_timeout_ms: REPLY_GRACE_MS,
        prefer_aes_gcm: crate::aes_gcm_is_fast(),
        ..ClientConfig::default()
    };
    let mut core = depot_core::Client::owned(
        config,
        authkey,
        nonce,
        Instant::ZERO,
        BUF_LEN,
        BUF_LEN,
        SLOTS,
    );
    let left = limit.saturating_sub(epoch.elapsed());
    match timeout(left, handshake(&mut core, &mut stream, peer)).await {
        Ok(done) => done?,
        Err(_) => return Err(timed_out(&peer)),
    }
    debug!(%peer, "connected");
    Ok(Dialled {
        core,
        stream,
        peer,
        epoch,
    })
}

/// Opens (or resumes) `session` on a fresh connection: whether the manager took it.
async fn open_session(d: &mut Dialled, session: &ClientSession) -> Result<bool, Error> {
    let now = Instant::from_millis(d.epoch.elapsed().as_millis() as u64);
    let peer = d.peer;
    let id = d
        .core
        .send(now, session.open())
        .map_err(|e| closed_error(peer, e.into(), None))?;
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let out = d.core.poll_transmit();
        if !out.is_empty() {
            let n = out.len();
            d.stream.write_all(out).await?;
            d.core.handle_transmitted(n);
        }
        while let Some(event) = d.core.poll_event() {
            match event {
                CoreEvent::Reply { id: r, reply } if r == id => {
                    let took = matches!(reply, Reply::Session { .. });
                    debug!(took, "session");
                    return Ok(took);
                }
                CoreEvent::Closed(e) => return Err(closed_error(peer, e, None)),
                _ => {}
            }
        }
        let n = d.stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::Disconnected {
                reason: format!("connection to {peer} lost: closed before the session opened"),
            });
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            let taken = d.core.handle_input(input);
            if taken == 0 {
                break;
            }
            input = &input[taken..];
        }
    }
}

/// How a reconnecting client's connection task dials again.
struct Redial {
    addrs: Vec<SocketAddr>,
    authkey: Vec<u8>,
    policy: Policy,
    session: ClientSession,
    /// The manager took the session on the current connection.
    has_session: bool,
}

/// Runs the handshake on `stream` until the core reports it done.
async fn handshake(
    core: &mut depot_core::Client<'static>,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<(), Error> {
    let mut buf = vec![0; READ_CHUNK];
    loop {
        match core.poll_event() {
            Some(CoreEvent::Connected) => return Ok(()),
            Some(CoreEvent::Closed(e)) => return Err(closed_error(peer, e, None)),
            _ => {}
        }
        let out = core.poll_transmit();
        if !out.is_empty() {
            let n = out.len();
            stream.write_all(out).await?;
            core.handle_transmitted(n);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::Disconnected {
                reason: format!("connection to {peer} lost: closed during the handshake"),
            });
        }
        let mut input = &buf[..n];
        while !input.is_empty() {
            let taken = core.handle_input(input);
            if taken == 0 {
                break;
            }
            input = &input[taken..];
        }
    }
}

/// Writes out what the connection task produces, in order.
async fn write_out(mut stream: OwnedWriteHalf, mut out: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = out.recv().await {
        if let Err(e) = stream.write_all(&bytes).await {
            debug!("write failed: {e}");
            break;
        }
    }
    let _ = stream.shutdown().await;
}

/// Items on their way back to the head of their queue.
struct GiveBack {
    handle: Handle,
    /// When their items left the queue, against other give-backs: the `filed` count of the
    /// reply that brought them (even), or just below the first reply still to come (odd).
    age: u64,
    /// The request whose reply brought them (a get withdrawn by a dropped caller), if any.
    token: Option<u64>,
    items: Vec<Vec<u8>>,
}

/// A request in flight.
struct Pending {
    token: u64,
    /// The queue its reply's items come from (to give them back if nobody takes them).
    handle: Option<Handle>,
    reply: Option<ReplyTx>,
    /// The request, kept to send it again on a new connection (reconnecting clients only).
    request: Option<Request>,
    /// When it was sent, counted over the connection task's life (to send again in order).
    order: u64,
    /// When its own wait runs out, if it has one.
    deadline: Option<::tokio::time::Instant>,
}

/// The connection task: the core client, the socket's read side, and the requests in flight.
struct Driver {
    core: depot_core::Client<'static>,
    peer: SocketAddr,
    epoch: ::tokio::time::Instant,
    out: mpsc::UnboundedSender<Vec<u8>>,
    shared: std::sync::Weak<Shared>,
    pending: HashMap<u32, Pending>,
    /// Request id by caller token, for abandoning.
    ids: HashMap<u64, u32>,
    /// Requests waiting for a free slot, in order.
    backlog: VecDeque<(u64, Request, Option<ReplyTx>)>,
    /// Items to give back to the head of their queue, held while a get from it whose caller
    /// has gone still waits for its reply (see [`Driver::release_deferred`]).
    deferred: Vec<GiveBack>,
    /// Replies filed so far, times two: the age of what each brings (see [`GiveBack`]).
    filed: u64,
    /// Set for a client that reconnects.
    redial: Option<Redial>,
    /// Requests a stopping manager refused (it applied nothing of them), held for the next
    /// connection (reconnecting clients only; depot-core's `reconnect::refused_for_now`).
    refused: Vec<Pending>,
    /// Items a batch put refused part-way had applied, by caller token: added to the count
    /// of its last reply.
    applied_before: HashMap<u64, u32>,
    /// Requests sent so far.
    sent: u64,
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    async fn run(
        mut self,
        mut read: OwnedReadHalf,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let closed = loop {
            let Some(closed) = self.serve(&mut read, &mut commands).await else {
                // Every handle is gone: nobody waits for anything.
                return;
            };
            debug!(peer = %self.peer, "connection closed: {closed}");
            if self.redial.is_none() {
                break closed;
            }
            match self.reconnect(closed, &mut commands).await {
                Some(next) => read = next,
                None => break closed,
            }
        };
        drop(read);
        let peer = self.peer;
        let fail = |reply: Option<ReplyTx>| {
            if let Some(reply) = reply {
                let _ = reply.send(Err(closed_error(peer, closed, None)));
            }
        };
        for (_, p) in std::mem::take(&mut self.pending) {
            fail(p.reply);
        }
        for (_, _, reply) in std::mem::take(&mut self.backlog) {
            fail(reply);
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.progress.notify_waiters();
        }
        // Later requests fail the same way, until every handle is gone.
        while let Some(command) = commands.recv().await {
            if let Command::Call { reply, .. } = command {
                fail(reply);
            }
        }
    }

    /// Serves the connection until it closes (its error) or every handle is gone (`None`).
    async fn serve(
        &mut self,
        read: &mut OwnedReadHalf,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Option<depot_core::Error> {
        let mut buf = vec![0; READ_CHUNK];
        // Set once every handle is gone: how long the task may still take to settle.
        let mut linger: Option<::tokio::time::Instant> = None;
        loop {
            // Replies first: one that comes for a caller who has just gone queues its give-back
            // in the backlog, which must go out now, not after the next input.
            if let Some(e) = self.file_events() {
                return Some(e);
            }
            self.release_deferred();
            self.send_backlog();
            self.flush();
            // Every handle is gone: what the task still owes the manager (items to give back,
            // and the replies of dropped callers' gets, which may bring some) is settled
            // first, so no item goes down with the connection; a manager that does not answer
            // is given a reply's grace, no more.
            if let Some(end) = linger {
                let settled =
                    self.backlog.is_empty() && self.deferred.is_empty() && self.pending.is_empty();
                if settled || ::tokio::time::Instant::now() >= end {
                    return None;
                }
            }
            let deadline = self.core.poll_timeout().map(|d| {
                let ms = self.now().millis_until(d);
                ::tokio::time::Instant::now() + Duration::from_millis(ms)
            });
            let deadline = match (deadline, linger) {
                (Some(d), Some(end)) => Some(d.min(end)),
                (d, end) => d.or(end),
            };
            // Commands are taken while requests wait for room: a dropped caller's `Abandon`
            // must withdraw its get even then, or a get held behind it would wait for good.
            ::tokio::select! {
                command = commands.recv(), if linger.is_none() => match command {
                    Some(command) => self.handle(command),
                    None => {
                        let grace = Duration::from_millis(REPLY_GRACE_MS.into());
                        linger = Some(::tokio::time::Instant::now() + grace);
                    }
                },
                read = read.read(&mut buf) => match read {
                    Ok(0) => self.core.handle_close(),
                    Ok(n) => {
                        if let Some(closed) = self.input(&buf[..n]) {
                            return Some(closed);
                        }
                    }
                    Err(e) => {
                        debug!(peer = %self.peer, "read failed: {e}");
                        self.core.handle_close();
                    }
                },
                () = sleep_until(deadline.unwrap_or_else(::tokio::time::Instant::now)), if deadline.is_some() => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
        }
    }

    /// After the connection closed with `closed`: dials again until it connects (the new
    /// read side) or the manager cannot be joined at all (`None`). Requests in flight that may
    /// be sent again go first on the new connection, in the order they were sent; each
    /// request fails when its own wait runs out, or `give_up` after the loss, whichever is
    /// first.
    async fn reconnect(
        &mut self,
        closed: depot_core::Error,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Option<OwnedReadHalf> {
        let lost = ::tokio::time::Instant::now();
        let peer = self.peer;
        let redial = self.redial.as_ref()?;
        let had_session = redial.has_session;
        let policy = redial.policy;
        // In flight, and refused by the manager as it stopped (those go again whatever they
        // are: they changed nothing).
        let mut in_flight: Vec<(Pending, bool)> =
            self.pending.drain().map(|(_, p)| (p, false)).collect();
        in_flight.extend(self.refused.drain(..).map(|p| (p, true)));
        in_flight.sort_by_key(|(p, _)| p.order);
        self.ids.clear();
        // (token, own deadline) of every request that waits for the new connection.
        let mut deadlines: HashMap<u64, ::tokio::time::Instant> = HashMap::new();
        for (p, refused) in in_flight.into_iter().rev() {
            let again = p
                .request
                .as_ref()
                .is_some_and(|r| refused || resend(&r.op(), had_session));
            match (again, p.request) {
                (true, Some(request)) => {
                    if let Some(d) = p.deadline {
                        deadlines.insert(p.token, d);
                    }
                    self.backlog.push_front((p.token, request, p.reply));
                }
                (_, _) => {
                    if let Some(reply) = p.reply {
                        let _ = reply.send(Err(closed_error(peer, closed, None)));
                    }
                }
            }
        }
        let mut backoff = Backoff::new(&policy);
        let give_up = policy
            .give_up_ms
            .map(|ms| lost + Duration::from_millis(ms.into()));
        let connect_timeout = Duration::from_millis(policy.connect_timeout_ms.into());
        loop {
            let now = ::tokio::time::Instant::now();
            let gave_up = give_up.is_some_and(|g| now >= g);
            // Requests past their time fail now.
            let mut kept = VecDeque::new();
            for (token, request, reply) in std::mem::take(&mut self.backlog) {
                let expired = gave_up || deadlines.get(&token).is_some_and(|d| now >= *d);
                match reply {
                    Some(reply) if expired => {
                        self.applied_before.remove(&token);
                        let _ = reply.send(Err(closed_error(peer, closed, None)));
                    }
                    reply => kept.push_back((token, request, reply)),
                }
            }
            self.backlog = kept;
            let redial = self.redial.as_mut()?;
            match dial(&redial.addrs, &redial.authkey, connect_timeout).await {
                Ok(mut d) => match open_session(&mut d, &redial.session).await {
                    Ok(has_session) => {
                        redial.has_session = has_session;
                        return Some(self.install(d, &deadlines));
                    }
                    Err(e) => debug!("reconnecting: {e}"),
                },
                // Waiting does not mend these.
                Err(Error::AuthFailed { .. } | Error::PythonManager { .. }) => return None,
                Err(e) => debug!("reconnecting: {e}"),
            }
            let pause = backoff.pause_ms(crate::client::random());
            let wake = ::tokio::time::Instant::now() + Duration::from_millis(pause.into());
            // Meanwhile, new requests queue up and dropped ones are withdrawn.
            loop {
                let tick = (::tokio::time::Instant::now() + Duration::from_millis(20)).min(wake);
                ::tokio::select! {
                    command = commands.recv() => match command {
                        Some(command) => self.handle(command),
                        None => return None,
                    },
                    () = sleep_until(tick) => {}
                }
                if ::tokio::time::Instant::now() >= wake {
                    break;
                }
                let now = ::tokio::time::Instant::now();
                if self
                    .backlog
                    .iter()
                    .any(|(t, _, r)| r.is_some() && deadlines.get(t).is_some_and(|d| now >= *d))
                {
                    break;
                }
            }
        }
    }

    /// Takes the new connection `d` in use; returns its read side. Requests sent again wait
    /// only what is left of their time.
    fn install(
        &mut self,
        d: Dialled,
        deadlines: &HashMap<u64, ::tokio::time::Instant>,
    ) -> OwnedReadHalf {
        let now = ::tokio::time::Instant::now();
        for (token, request, _) in &mut self.backlog {
            if let (Some(deadline), Some(wait)) = (deadlines.get(token), request.wait_mut()) {
                *wait = wait_for(deadline.saturating_duration_since(now));
            }
        }
        let (read, write) = d.stream.into_split();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        ::tokio::spawn(write_out(write, out_rx));
        self.core = d.core;
        self.peer = d.peer;
        self.epoch = d.epoch;
        self.out = out_tx;
        if let Some(shared) = self.shared.upgrade() {
            shared.set_link(Link {
                peer: self.peer,
                max_item: self.core.max_item(),
                sealing: self.core.sealing(),
            });
        }
        debug!(peer = %self.peer, "reconnected");
        read
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Call {
                token,
                request,
                reply,
            } => self.backlog.push_back((token, request, reply)),
            Command::Abandon(token) => match self.ids.remove(&token) {
                // A get's reply is still wanted: what it brings goes back in order with what
                // its caller gives back (`file_events`).
                Some(id) => match self.pending.get_mut(&id) {
                    Some(p) if p.handle.is_some() => {
                        p.reply = None;
                        self.core.withdraw(id);
                    }
                    _ => {
                        self.pending.remove(&id);
                        self.core.abandon(id);
                    }
                },
                // Not sent yet, or held since a stopping manager refused it: dropped.
                None => {
                    self.backlog.retain(|(t, _, _)| *t != token);
                    self.refused.retain(|p| p.token != token);
                    self.applied_before.remove(&token);
                }
            },
            Command::GiveBack {
                handle,
                items,
                withdrawn,
            } => {
                // Older than anything the withdrawn requests bring: below the first of their
                // replies already filed, or below every reply still to come.
                let age = self
                    .deferred
                    .iter()
                    .filter(|g| g.token.is_some_and(|t| withdrawn.contains(&t)))
                    .map(|g| g.age)
                    .min()
                    .unwrap_or(self.filed + 2)
                    - 1;
                self.deferred.push(GiveBack {
                    handle,
                    age,
                    token: None,
                    items,
                });
            }
        }
    }

    /// Gives back the held items of every queue from which no get of a caller who has gone
    /// awaits its reply, oldest last: each goes to the head, so they end up in the order they
    /// left the queue. A reply that comes later brings newer items; holding older ones until
    /// then puts them back ahead of those.
    fn release_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let (mut ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|g| !self.awaits_dropped_get(g.handle));
        self.deferred = held;
        ready.sort_by_key(|g| g.age);
        for g in ready {
            self.give_back(g.handle, g.items);
        }
    }

    /// Whether a get from `handle` whose caller has gone (it withdrew the get, or is about to)
    /// still awaits its reply.
    fn awaits_dropped_get(&self, handle: Handle) -> bool {
        self.pending
            .values()
            .any(|p| p.handle == Some(handle) && p.reply.as_ref().is_none_or(ReplyTx::is_closed))
    }

    /// Queues `Return`s, ahead of every other request, putting `items` back at the head of
    /// their queue in order: each goes to the head, so the last is sent first (pushing each
    /// to the front of the backlog in turn does that).
    fn give_back(&mut self, handle: Handle, items: Vec<Vec<u8>>) {
        for item in items {
            self.backlog
                .push_front((u64::MAX, Request::Return(handle, item), None));
        }
    }

    /// Encodes waiting requests into the core while it has slots.
    fn send_backlog(&mut self) {
        loop {
            let now = self.now();
            let Some(taking) = self.backlog.front().map(|(_, r, _)| r.takes_from()) else {
                break;
            };
            // A get must not overtake items still to be given back to its queue: those held,
            // and those the reply to a dropped caller's get will bring.
            if let Some(handle) = taking {
                if self.deferred.iter().any(|g| g.handle == handle)
                    || self.awaits_dropped_get(handle)
                {
                    break;
                }
            }
            let Some((token, request, _)) = self.backlog.front_mut() else {
                break;
            };
            if let Some(r) = self.redial.as_mut().filter(|r| r.has_session) {
                if matches!(request, Request::Put(..) | Request::PutMany(..)) {
                    let plain = std::mem::replace(request, Request::Status);
                    *request = plain.numbered(r.session.next_seq());
                }
            }
            let (token, handle) = (*token, taking);
            match self.core.send(now, request.op()) {
                Ok(id) => {
                    let (_, request, reply) = self.backlog.pop_front().expect("front exists");
                    if reply.is_some() {
                        self.ids.insert(token, id);
                    }
                    let deadline = match request.op() {
                        Op::Put { wait, .. }
                        | Op::Get { wait, .. }
                        | Op::PutMany { wait, .. }
                        | Op::GetMany { wait, .. }
                        | Op::Join { wait, .. }
                        | Op::GetLeased { wait, .. }
                        | Op::PutSeq { wait, .. }
                        | Op::PutManySeq { wait, .. } => match wait {
                            Wait::Millis(ms) => Some(
                                ::tokio::time::Instant::now() + Duration::from_millis(ms.into()),
                            ),
                            _ => None,
                        },
                        _ => None,
                    };
                    self.sent += 1;
                    self.pending.insert(
                        id,
                        Pending {
                            token,
                            handle,
                            reply,
                            request: self.redial.is_some().then_some(request),
                            order: self.sent,
                            deadline,
                        },
                    );
                }
                Err(SendError::InFlightLimit | SendError::WouldBlock) => {
                    if self.core.poll_transmit().is_empty() {
                        break;
                    }
                    // The output buffer was full: writing it out makes room.
                    self.flush();
                }
                Err(e) => {
                    let (_, request, reply) = self.backlog.pop_front().expect("front exists");
                    let error = match (e, &request) {
                        (
                            SendError::TooLarge,
                            Request::Put(_, item, _) | Request::PutSeq(_, item, _, _),
                        ) => Error::TooLarge {
                            size: item.len(),
                            max: self.core.max_item(),
                        },
                        _ => closed_error(self.peer, e.into(), None),
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
    }

    /// Hands what the core has to write to the writer task.
    fn flush(&mut self) {
        let out = self.core.poll_transmit();
        if out.is_empty() {
            return;
        }
        let n = out.len();
        // A writer that is gone failed a write; the read side sees the end.
        let _ = self.out.send(out.to_vec());
        self.core.handle_transmitted(n);
    }

    /// Hands `input` to the core and files the replies it decodes; the core's error if the
    /// connection closed (a close notice read here is reported once, so it must not be lost).
    fn input(&mut self, mut input: &[u8]) -> Option<depot_core::Error> {
        while !input.is_empty() {
            let taken = self.core.handle_input(input);
            input = &input[taken..];
            if let Some(closed) = self.file_events() {
                return Some(closed);
            }
            if taken == 0 {
                break;
            }
        }
        None
    }

    /// Delivers every reply the core has decoded; the core's error once it has closed.
    fn file_events(&mut self) -> Option<depot_core::Error> {
        let mut filed = false;
        let mut closed = None;
        loop {
            let (id, outcome) = match self.core.poll_event() {
                Some(CoreEvent::Reply { id, reply }) => (id, Outcome::from_reply(reply)),
                Some(CoreEvent::Closed(e)) => {
                    closed = Some(e);
                    break;
                }
                Some(_) => continue,
                None => break,
            };
            filed = true;
            self.filed += 2;
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let Some((p, outcome)) = self.hold_refused(p, outcome) else {
                continue;
            };
            let unwanted = match p.reply {
                Some(reply) => {
                    self.ids.remove(&p.token);
                    reply.send(Ok(outcome)).err().and_then(Result::ok)
                }
                None => Some(outcome),
            };
            // The caller went away (just now, or it withdrew the request): what it took goes
            // back.
            match unwanted {
                Some(Outcome::Leased { lease, .. }) => self.handle(nack(lease)),
                Some(outcome) => {
                    if let (Some(handle), Some(items)) = (p.handle, items_of(outcome)) {
                        self.deferred.push(GiveBack {
                            handle,
                            age: self.filed,
                            token: Some(p.token),
                            items,
                        });
                    }
                }
                None => {}
            }
        }
        if filed {
            if let Some(shared) = self.shared.upgrade() {
                shared.progress.notify_waiters();
            }
        }
        closed
    }
}

impl Driver {
    /// Holds `p` for the next connection if a stopping manager refused it and this client
    /// reconnects (a batch put refused part-way goes again with only its rest, which
    /// `send_backlog` numbers anew); otherwise gives it back with its outcome (the count of
    /// a batch put's last try grown by what its earlier tries applied).
    fn hold_refused(&mut self, mut p: Pending, outcome: Outcome) -> Option<(Pending, Outcome)> {
        let refused = match outcome {
            Outcome::Error(code) => refused_for_now(code).then_some(0),
            Outcome::Accepted {
                count,
                error: Some(code),
            } => refused_for_now(code).then_some(count),
            _ => None,
        };
        let wanted = p.reply.as_ref().is_some_and(|r| !r.is_closed());
        match (refused, p.request.take()) {
            (Some(applied), Some(request)) if wanted && self.redial.is_some() => {
                p.request = Some(match request {
                    Request::PutMany(handle, items, wait)
                    | Request::PutManySeq(handle, items, wait, _)
                        if applied > 0 =>
                    {
                        *self.applied_before.entry(p.token).or_default() += applied;
                        Request::PutMany(handle, Items(&items).after(applied).0.to_vec(), wait)
                    }
                    other => other,
                });
                // Its caller dropping it now drops the held request (`handle`).
                self.ids.remove(&p.token);
                self.refused.push(p);
                None
            }
            (_, request) => {
                p.request = request;
                let outcome = match (outcome, self.applied_before.remove(&p.token)) {
                    (Outcome::Accepted { count, error }, Some(before)) => Outcome::Accepted {
                        count: count + before,
                        error,
                    },
                    (outcome, _) => outcome,
                };
                Some((p, outcome))
            }
        }
    }
}

/// A queue on the manager, items as bytes, for async code. `Clone + Send + Sync + 'static`:
/// it holds a clone of its [`Client`].
#[derive(Debug, Clone)]
pub struct RawQueue {
    client: Client,
    name: String,
    handle: Handle,
    spec: QueueSpec,
}

impl RawQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> u32 {
        self.spec.capacity
    }

    /// The largest item, in bytes.
    pub fn max_item(&self) -> usize {
        self.spec.max_item as usize
    }

    /// Appends `item`, waiting while the queue is full.
    pub async fn put(&self, item: &[u8]) -> Result<(), Error> {
        self.put_with(item, Wait::Forever).await
    }

    /// Appends `item`, waiting at most `timeout` for room; a `Timeout` error then.
    pub async fn put_timeout(&self, item: &[u8], timeout: Duration) -> Result<(), Error> {
        self.put_with(item, wait_for(timeout)).await
    }

    /// Appends `item` if there is room now; a `Full` error otherwise.
    pub async fn put_nowait(&self, item: &[u8]) -> Result<(), Error> {
        self.put_with(item, Wait::NoWait).await
    }

    /// Takes the oldest item, waiting while the queue is empty. Cancel-safe: if this future
    /// is dropped, no item is lost (see the module docs).
    pub async fn get(&self) -> Result<Vec<u8>, Error> {
        self.get_with(Wait::Forever).await
    }

    /// Takes the oldest item, waiting at most `timeout`; a `Timeout` error then.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>, Error> {
        self.get_with(wait_for(timeout)).await
    }

    /// Takes the oldest item if there is one; an `Empty` error otherwise.
    pub async fn get_nowait(&self) -> Result<Vec<u8>, Error> {
        self.get_with(Wait::NoWait).await
    }

    /// Items in the queue now.
    pub async fn qsize(&self) -> Result<u32, Error> {
        self.size().await.map(|s| s.len)
    }

    /// Whether the queue is empty now.
    pub async fn empty(&self) -> Result<bool, Error> {
        self.size().await.map(|s| s.len == 0)
    }

    /// Whether a non-blocking put would fail now (by item count or by bytes).
    pub async fn full(&self) -> Result<bool, Error> {
        self.size().await.map(|s| s.full)
    }

    /// Marks one got item as processed.
    pub async fn task_done(&self) -> Result<(), Error> {
        let outcome = self.client.exchange(Request::TaskDone(self.handle)).await?;
        self.done(outcome)
    }

    /// Waits until every item put has been marked done.
    pub async fn join(&self) -> Result<(), Error> {
        let handle = self.handle;
        let outcome = self
            .client
            .call_blocking(Wait::Forever, |wait| Request::Join(handle, wait))
            .await?;
        self.done(outcome)
    }

    /// Puts every item in order, packed into `PutMany` requests, several in flight at once;
    /// each waits for room as long as it takes. On failure the error comes back once every
    /// reply is in; the items before the one that failed are queued.
    pub async fn put_many(&self, items: &[&[u8]]) -> Result<(), Error> {
        let max = self.largest_put();
        for item in items {
            fits(item, max)?;
        }
        let budget = self.client.shared.link().max_item.clamp(1, BATCH_BYTES);
        let mut in_flight = VecDeque::new();
        let mut next = 0;
        let mut first_error = None;
        let mut packed = Vec::new();
        loop {
            while next < items.len() && in_flight.len() < BATCHES_IN_FLIGHT && first_error.is_none()
            {
                let (count, bytes) = pack(&items[next..], budget, &mut packed);
                let request =
                    Request::PutMany(self.handle, packed[..bytes].to_vec(), Wait::Forever);
                in_flight.push_back((self.client.start(request), next, next + count));
                next += count;
            }
            let Some((waiting, from, to)) = in_flight.pop_front() else {
                break;
            };
            let error = match waiting.finish().await {
                Ok(Outcome::Accepted {
                    count,
                    error: Some(code),
                }) => {
                    let size = items.get(from + count as usize).map_or(0, |i| i.len());
                    Some(self.code_error(code, size))
                }
                Ok(Outcome::Accepted { count, error: None }) if from + count as usize != to => {
                    Some(self.code_error(ErrorCode::Full, 0))
                }
                Ok(Outcome::Accepted { .. }) => None,
                Ok(other) => Some(unexpected(other, &self.name)),
                Err(e) => Some(e),
            };
            if let Some(e) = error {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Gets `n` items in queue order, as many at a time as a `GetMany` reply carries; waits for
    /// each as long as it takes. If a request fails after some items were taken, those items
    /// are returned (fewer than `n`) and the failure is reported by the next call.
    /// Cancel-safe: dropped part-way, it gives every item it took back to the head of the
    /// queue, in order. [`Self::get_batch`] does the same without an allocation per item.
    pub async fn get_many(&self, n: usize) -> Result<Vec<Vec<u8>>, Error> {
        self.get_batch(n).await.map(Vec::from)
    }

    /// [`Self::get_many`], the items kept packed in one [`Batch`] as the replies carried them.
    ///
    /// Several `GetMany` are kept in flight while the queue has items, as the blocking client
    /// does, so a reply's round trip does not stall the consumer: the oldest waits as long as
    /// it takes, the others take what is there now (`NoWait`) and stop the refill when one
    /// finds the queue empty. Together they never ask for more than `n`.
    pub async fn get_batch(&self, n: usize) -> Result<Batch, Error> {
        let handle = self.handle;
        let mut taking = Taking {
            commands: &self.client.shared.commands,
            handle,
            items: Batch::default(),
            in_flight: VecDeque::new(),
        };
        let mut first_error = None;
        // Items one reply carries: unknown (all) until a reply shows their size.
        let mut per_reply = n;
        let mut dry = false;
        loop {
            let asked: usize = taking.in_flight.iter().map(|r| r.1).sum();
            let mut open = n.saturating_sub(taking.items.len() + asked);
            while open > 0 && taking.in_flight.len() < BATCHES_IN_FLIGHT && first_error.is_none() {
                let waits = taking.in_flight.is_empty();
                if dry && !waits {
                    break;
                }
                let max = open.min(per_reply);
                let wait = if waits { Wait::Forever } else { Wait::NoWait };
                let request =
                    Request::GetMany(handle, u32::try_from(max).unwrap_or(u32::MAX), wait);
                taking
                    .in_flight
                    .push_back((self.client.start(request), max, waits));
                open -= max;
            }
            // Awaited where it stands: dropped meanwhile, `taking` withdraws it.
            let Some((waiting, _, waits)) = taking.in_flight.front_mut() else {
                break;
            };
            let waits = *waits;
            let notified = self.client.shared.progress.notified();
            let outcome = waiting.reply().await;
            taking.in_flight.pop_front();
            match outcome {
                Ok(Outcome::Items(got)) if !got.is_empty() => {
                    per_reply = (BATCH_BYTES / got.packed_per_item().max(1)).max(1);
                    dry = false;
                    taking.items.append(got);
                }
                // The queue was empty: no more requests that do not wait, for now.
                Ok(Outcome::Items(_)) => dry |= !waits,
                Ok(Outcome::Error(ErrorCode::Empty)) if !waits => dry = true,
                // No room to park it (other callers' blocked requests hold it): sent again
                // once replies may have freed some, as a blocking `get` is.
                Ok(Outcome::Error(ErrorCode::WaiterLimit)) => {
                    let _ = timeout(ROOM_RETRY, notified).await;
                }
                Ok(other) => {
                    first_error.get_or_insert(unexpected(other, &self.name));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let items = std::mem::take(&mut taking.items);
        match first_error {
            Some(e) if items.is_empty() => Err(e),
            _ => Ok(items),
        }
    }

    /// The largest item a put may carry: the queue's limit, and the connection's frames'.
    fn largest_put(&self) -> usize {
        self.max_item().min(self.client.shared.link().max_item)
    }

    fn check_size(&self, item: &[u8]) -> Result<(), Error> {
        fits(item, self.largest_put())
    }

    async fn put_with(&self, item: &[u8], wait: Wait) -> Result<(), Error> {
        self.check_size(item)?;
        let handle = self.handle;
        let outcome = self
            .client
            .call_blocking(wait, |wait| Request::Put(handle, item.to_vec(), wait))
            .await?;
        match outcome {
            Outcome::Error(ErrorCode::TooLarge) => {
                Err(self.code_error(ErrorCode::TooLarge, item.len()))
            }
            other => self.done(other),
        }
    }

    async fn get_with(&self, wait: Wait) -> Result<Vec<u8>, Error> {
        let handle = self.handle;
        match self
            .client
            .call_blocking(wait, |wait| Request::Get(handle, wait))
            .await?
        {
            Outcome::Item(item) => Ok(item),
            other => Err(unexpected(other, &self.name)),
        }
    }

    async fn size(&self) -> Result<QueueSize, Error> {
        match self.client.exchange(Request::Size(self.handle)).await? {
            Outcome::Size(size) => Ok(size),
            other => Err(unexpected(other, &self.name)),
        }
    }

    fn done(&self, outcome: Outcome) -> Result<(), Error> {
        match outcome {
            Outcome::Done => Ok(()),
            other => Err(unexpected(other, &self.name)),
        }
    }

    /// The error for `code`, with `size` for an item found too large.
    fn code_error(&self, code: ErrorCode, size: usize) -> Error {
        match code {
            ErrorCode::TooLarge if size > 0 => Error::TooLarge {
                size,
                max: self.largest_put(),
            },
            code => Error::request(code, &self.name),
        }
    }
}

/// A queue on the manager with items of type `T`, for async code. `Clone + Send + Sync +
/// 'static` (for any `T`): it holds a clone of its [`Client`].
#[derive(Debug)]
pub struct Queue<T> {
    raw: RawQueue,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            raw: self.raw.clone(),
            _items: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// The raw-bytes proxy underneath.
    pub fn raw(&self) -> &RawQueue {
        &self.raw
    }
    /// The queue's name.
    pub fn name(&self) -> &str {
        self.raw.name()
    }
    /// The most items the queue holds.
    pub fn capacity(&self) -> u32 {
        self.raw.capacity()
    }
    /// The largest encoded item, in bytes.
    pub fn max_item(&self) -> usize {
        self.raw.max_item()
    }
    /// Appends `item`, waiting while the queue is full.
    pub async fn put(&self, item: &T) -> Result<(), Error> {
        self.raw.put(&encode(item)?).await
    }
    /// Appends `item`, waiting at most `timeout` for room.
    pub async fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        self.raw.put_timeout(&encode(item)?, timeout).await
    }
    /// Appends `item` if there is room now.
    pub async fn put_nowait(&self, item: &T) -> Result<(), Error> {
        self.raw.put_nowait(&encode(item)?).await
    }
    /// Takes the oldest item, waiting while the queue is empty. Cancel-safe (see
    /// [`RawQueue::get`]).
    pub async fn get(&self) -> Result<T, Error> {
        decode(self.raw.get().await?)
    }
    /// Takes the oldest item, waiting at most `timeout`.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        decode(self.raw.get_timeout(timeout).await?)
    }
    /// Takes the oldest item if there is one.
    pub async fn get_nowait(&self) -> Result<T, Error> {
        decode(self.raw.get_nowait().await?)
    }
    /// Items in the queue now.
    pub async fn qsize(&self) -> Result<u32, Error> {
        self.raw.qsize().await
    }
    /// Whether the queue is empty now.
    pub async fn empty(&self) -> Result<bool, Error> {
        self.raw.empty().await
    }
    /// Whether a non-blocking put would fail now.
    pub async fn full(&self) -> Result<bool, Error> {
        self.raw.full().await
    }
    /// Marks one got item as processed.
    pub async fn task_done(&self) -> Result<(), Error> {
        self.raw.task_done().await
    }
    /// Waits until every item put has been marked done.
    pub async fn join(&self) -> Result<(), Error> {
        self.raw.join().await
    }
    /// Puts every item in order, several `PutMany` requests in flight at once.
    pub async fn put_many(&self, items: &[T]) -> Result<(), Error> {
        let encoded = items.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        self.raw.put_many(&refs).await
    }
    /// Gets `n` items (see [`RawQueue::get_many`]); each is decoded on its own.
    pub async fn get_many(&self, n: usize) -> Result<Vec<Result<T, Error>>, Error> {
        let batch = self.raw.get_batch(n).await?;
        Ok(batch.iter().map(decode_slice).collect())
    }
}
