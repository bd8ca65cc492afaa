//! The manager state machine: many connections, one registry, no I/O.
//!
//! The transport accepts a socket and calls [`Manager::accept`] with fresh random bytes, then
//! moves bytes: what arrives goes in through [`Manager::rx_space`] and
//! [`Manager::handle_received`] (or [`Manager::handle_input`]); what
//! [`Manager::poll_transmit`] returns goes out, acknowledged with
//! [`Manager::handle_transmitted`]. [`Manager::poll_ready`] names connections whose state changed
//! because of another connection (a blocked `get` answered by someone's `put`), and
//! [`Manager::poll_timeout`] / [`Manager::handle_timeout`] run the clock. When
//! [`Manager::wants_close`] says so, the transport closes the socket and calls
//! [`Manager::handle_close`], as it does when the peer goes away.
//!
//! Every limit is enforced here: frame sizes before a body is read, handshake and frame deadlines,
//! output bounded per connection (a request is read only when its reply has room, and a peer that
//! stops reading is dropped), waiters bounded per connection and in all.

use crate::auth::{transcript_hash, AuthKey, CLIENT_PROOF, MANAGER_PROOF};
use crate::buf::{Peek, RxBuf, TxBuf};
use crate::codec::{decode_all, tag, Encode, Reader, Writer};
use crate::journal::{note, JournalSlot, RestoreError};
#[cfg(feature = "keyring")]
use crate::keyring::KeyringError;
use crate::keyring::{Key, KeyName, Keyring, Rights};
use crate::lease::LeaseStore;
use crate::park::ParkStore;
use crate::registry::{ObjectSlot, Registry};
use crate::seal::{Encryption, FrameKey};
#[cfg(feature = "alloc")]
use crate::storage::Bytes;
use crate::storage::Managed;
use crate::throttle::{AuthReport, Throttle, ThrottleConfig, SOURCE_LEN};
use crate::time::Instant;
use crate::timers::{TimerCell, Timers};
use crate::waiters::{Hold, WaitKind, Waiter, Waiters};
use crate::wire::{
    item_reply_bound, valid_name, write_varint, ClientProof, CloseReason, ErrorCode, Handle, Items,
    ManagerStatus, Message, ObjectStat, Op, Reply, Request, Sealing, ServerHello, ServerVerdict,
    Wait, HEADER_LEN, ITEM_REPLY_OVERHEAD, MAGIC, MAX_HANDSHAKE_BODY, MAX_MAX_FRAME, MIN_MAX_FRAME,
    MIN_VERSION, NONCE_LEN, SMALL_REPLY_BOUND, TAG_LEN, VERSION,
};

#[cfg(feature = "backend")]
pub mod backend;
mod close;
mod condition;
mod leasing;
mod objects;
mod timeouts;

pub use objects::{CallId, CallRequest, MAX_FAILED_LEN};

const NONE: u32 = u32::MAX;

mod sessions;

/// A connection, by its slot in the storage handed to [`Manager::new`]. Opaque: only
/// [`Manager::accept`] (and [`Manager::connection_at`]) give one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnId(pub(crate) u32);

impl ConnId {
    /// The connection's slot in the storage handed to [`Manager::new`] (below its length), so
    /// a transport can keep its own per-connection state in a table indexed by it. The slot
    /// is used again for a later connection once [`Manager::handle_close`] freed it.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How the manager behaves; the same rules on every transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ManagerConfig {
    /// The largest frame body accepted (further capped by each connection's receive buffer).
    pub max_frame: u32,
    /// Time from accept to a finished handshake.
    pub handshake_timeout_ms: u32,
    /// Time from a frame's first byte to its last.
    pub frame_timeout_ms: u32,
    /// Time output may wait, unread by the peer, before the peer is dropped.
    pub write_stall_timeout_ms: u32,
    /// Whether a client's `Shutdown` request stops the manager.
    pub allow_remote_shutdown: bool,
    /// Whether clients may create queues and objects in spare slots (with depot-core's feature
    /// `create`; without it they never may).
    pub allow_create: bool,
    /// Blocked requests one connection may have at once.
    pub max_waiters_per_connection: u32,
    /// Connections that may be in their handshake at once; a new connection beyond it evicts
    /// the oldest one still in its handshake. Keep it below the number of connection slots so
    /// that clients that authenticate always find room.
    pub max_handshaking: u32,
    /// Connections from one source (see [`Manager::accept`]) that may be in their handshake at
    /// once; more are refused ([`AcceptError::SourceLimit`]). 0: no limit.
    pub max_handshaking_per_source: u32,
    /// How failed proofs from one source are slowed down (see [`crate::throttle`]).
    pub throttle: ThrottleConfig,
    /// Whether frames are sealed (encrypted) for clients that ask, and whether a client that
    /// does not is refused (PROTOCOL.md §5.1). Python clients are not affected.
    pub encryption: Encryption,
    /// Seal with AES-256-GCM instead of ChaCha20-Poly1305 for clients that offer it (protocol
    /// version 4, PROTOCOL.md §5.1): set it where the CPU has AES instructions, which make
    /// AES-256-GCM the cheaper cipher (depot-std does). Needs feature `aead-ring`; without it
    /// this crate speaks version 3 and ignores it.
    pub prefer_aes_gcm: bool,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            max_frame: 64 * 1024,
            handshake_timeout_ms: 10_000,
            frame_timeout_ms: 10_000,
            write_stall_timeout_ms: 30_000,
            allow_remote_shutdown: false,
            allow_create: false,
            max_waiters_per_connection: 64,
            max_handshaking: u32::MAX,
            max_handshaking_per_source: 0,
            throttle: ThrottleConfig::default(),
            encryption: Encryption::default(),
            prefer_aes_gcm: false,
        }
    }
}

/// Why a connection could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AcceptError {
    /// Every connection slot is in use; [`encode_busy`] gives bytes to tell the peer. If a
    /// connection was still in its handshake, the oldest such was evicted to free a slot (it
    /// shows [`CloseReason::Busy`] in [`Manager::close_reason`]): a transport that closes it
    /// at once (see [`Manager::poll_ready`]) may call `accept` again for this peer.
    Busy,
    /// The source already has `max_handshaking_per_source` connections in their handshake;
    /// tell the peer as for [`AcceptError::Busy`].
    SourceLimit,
    /// The manager is shutting down.
    ShuttingDown,
    /// The source failed too many proofs and is locked out for a while (see
    /// [`crate::throttle`]); tell the peer as for [`AcceptError::Busy`], or just close.
    Throttled,
}

/// The storage of one connection: its receive and transmit buffers.
///
/// `rx` bounds the largest frame the manager accepts on this connection; `tx` must hold the
/// largest reply (a `get` of the largest item) and bounds how many blocked gets it may have.
/// With the `alloc` feature, `Connection::owned` buffers hold no memory while idle and grow to
/// their limits on demand.
pub struct Connection<'a> {
    rx: RxBuf<'a>,
    tx: TxBuf<'a>,
    state: State,
    /// Transmit bytes promised to this connection's blocked requests.
    reserved: usize,
    waiters: u32,
    /// The peer's largest frame body.
    peer_max: usize,
    /// When the partial frame at the front of `rx` must be whole.
    frame_deadline: Option<Instant>,
    /// When output last made progress.
    tx_progress: Instant,
    /// While its buffers keep their memory: when the peer last sent (see `note_busy`).
    #[cfg(feature = "alloc")]
    busy_at: Option<Instant>,
    /// Offset in `rx` of the next message of a verified frame, 0 when none is being read.
    cursor: usize,
    /// Offset in `rx` of the end of that frame's messages.
    frame_end: usize,
    links: [u32; 2],
    linked: [bool; 2],
    /// Neighbours on the list of connections at this stage of their handshake, oldest first
    /// (doubly linked: a connection leaves it from anywhere in O(1)).
    hs_prev: u32,
    hs_next: u32,
    /// Which handshake list this connection is on, if any.
    hs_stage: Option<Stage>,
    /// This connection's source bucket in `source_count` (valid while `handshaking`).
    source: u32,
    /// Used as a table indexed by source bucket, not by this connection: how many connections
    /// of the sources hashed to this slot's index are in their handshake. One entry per slot
    /// needs no storage of its own.
    source_count: u32,
    /// Where the peer connects from (cut to `SOURCE_LEN` bytes), for the throttle.
    peer: [u8; SOURCE_LEN],
    peer_len: u8,
    /// The key the peer proved: an index into the keyring, or `DEFAULT_KEY` / `NO_KEY`.
    key: u16,
    /// The slot of the session this connection holds, `NONE` if none.
    #[cfg(feature = "sessions")]
    session: u32,
    /// No deadline of this connection is earlier than this, while it is among the deadlines
    /// (see `timeouts`).
    timer_at: Instant,
    timer: TimerCell,
}

/// The key given to [`Manager::new`], with every right.
const DEFAULT_KEY: u16 = u16::MAX;
/// No key (not proven yet, or revoked): no rights.
const NO_KEY: u16 = u16::MAX - 1;

// No heap to box into: the session keys live inline, as large as they are.
#[allow(clippy::large_enum_variant)]
enum State {
    Free,
    AwaitHello {
        nonce: [u8; NONCE_LEN],
        deadline: Instant,
    },
    AwaitProof {
        /// Hash of the hello and challenge (see `auth::transcript_hash`).
        transcript: [u8; 32],
        deadline: Instant,
        /// The key the hello named.
        key: KeyName,
        /// How frames will be protected (PROTOCOL.md §5.1).
        sealed: Sealing,
    },
    /// The proof failed; the verdict is held back until `at` (see `crate::throttle`).
    Refusing {
        at: Instant,
    },
    Open(Session),
    /// A Python `BaseManager` client (see `crate::python`).
    #[cfg(feature = "python")]
    Python {
        py: crate::python::PyConn,
        /// The handshake deadline (until both sides proved the key).
        deadline: Instant,
    },
    Closing(CloseReason),
}

struct Session {
    rx_mac: FrameKey,
    tx_mac: FrameKey,
}

impl<'a> Connection<'a> {
    /// A free connection slot with lent (or given) buffers.
    pub fn new(rx: impl Into<Managed<'a, u8>>, tx: impl Into<Managed<'a, u8>>) -> Self {
        Self::with(RxBuf::new(rx.into()), TxBuf::new(tx.into()))
    }

    /// A free connection slot whose buffers are allocated when used, up to `rx_limit` and
    /// `tx_limit` bytes, and given back when they empty, or, while the peer keeps sending,
    /// once it has been quiet for a second (see [`Manager::buffer_memory`]).
    #[cfg(feature = "alloc")]
    pub fn owned(rx_limit: usize, tx_limit: usize) -> Connection<'static> {
        Connection::with(
            RxBuf::with(Bytes::owned(rx_limit, false)),
            TxBuf::with(Bytes::owned(tx_limit, false)),
        )
    }

    fn with(rx: RxBuf<'a>, tx: TxBuf<'a>) -> Self {
        Connection {
            rx,
            tx,
            state: State::Free,
            reserved: 0,
            waiters: 0,
            peer_max: 0,
            frame_deadline: None,
            tx_progress: Instant::ZERO,
            #[cfg(feature = "alloc")]
            busy_at: None,
            cursor: 0,
            frame_end: 0,
            links: [NONE; 2],
            linked: [false; 2],
            hs_prev: NONE,
            hs_next: NONE,
            hs_stage: None,
            source: NONE,
            source_count: 0,
            peer: [0; SOURCE_LEN],
            peer_len: 0,
            key: NO_KEY,
            #[cfg(feature = "sessions")]
            session: NONE,
            timer_at: Instant::ZERO,
            timer: TimerCell::EMPTY,
        }
    }

    /// Whether its owned buffers keep what they grew to (`Some`: the peer last sent then) or
    /// give it back once empty (`None`; at once if they are empty now).
    #[cfg(feature = "alloc")]
    fn keep_buffers(&mut self, busy_at: Option<Instant>) {
        self.busy_at = busy_at;
        self.rx.keep_memory(busy_at.is_some());
        self.tx.keep_memory(busy_at.is_some());
    }

    fn is_free(&self) -> bool {
        matches!(self.state, State::Free)
    }
}

/// The stages of a handshake, each with its list of connections, oldest first. Eviction takes
/// from `Hello` first: a peer that has not even sent a valid hello is the first to give way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Hello = 0,
    Proof = 1,
}

/// Which intrusive list of connections.
#[derive(Clone, Copy)]
enum List {
    /// Connections the transport should look at.
    Ready = 0,
    /// Connections whose unread input can go on (a parked put finished, output drained).
    Resume = 1,
    /// Free slots (only `links[0]` is used for it, while the slot is free).
    Free = 2,
}

#[derive(Clone, Copy)]
struct IdList {
    head: u32,
    tail: u32,
}

impl IdList {
    const EMPTY: IdList = IdList {
        head: NONE,
        tail: NONE,
    };
}

/// Whether a request was answered (or parked), or must wait for output room.
enum Step {
    Done,
    Paused,
}

/// How many items a get takes.
#[derive(Clone, Copy)]
enum Take {
    One,
    Many {
        max_items: u32,
        max_bytes: u32,
    },
    /// As `Many`, under a lease (see `leasing`).
    Leased {
        max_items: u32,
        max_bytes: u32,
        lease_ms: u32,
    },
}

impl Take {
    fn many(max_items: u32, max_bytes: u32) -> Take {
        Take::Many {
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    fn leased(max_items: u32, max_bytes: u32, lease_ms: u32) -> Take {
        Take::Leased {
            max_items: max_items.max(1),
            max_bytes,
            lease_ms,
        }
    }
}

/// Whether `item` may go into a queue of `spec`: a value queue takes only one well-formed value.
// Called from several places: one copy, not one inlined into each (firmware flash).
#[inline(never)]
fn fits_mode(spec: crate::wire::QueueSpec, item: &[u8]) -> bool {
    spec.mode != crate::wire::QueueMode::Value || crate::value::validate(item).is_ok()
}

/// Appends the packed `items` to `queue` while they fit: `(items put, bytes of the list
/// used, the error that stopped it)`. Stopping for lack of room is not an error.
fn push_items(
    queue: &mut crate::queue::Queue,
    items: &[u8],
    journal: &mut Option<JournalSlot>,
    handle: Handle,
) -> (u32, usize, Option<ErrorCode>) {
    let mut iter = Items(items).iter();
    let mut count = 0;
    let mut used = 0;
    while let Some(item) = iter.next() {
        if item.len() > queue.spec().max_item as usize {
            return (count, used, Some(ErrorCode::TooLarge));
        }
        if !fits_mode(queue.spec(), item) {
            return (count, used, Some(ErrorCode::InvalidValue));
        }
        if queue.push(item).is_err() {
            break;
        }
        note(journal, |j| j.appended(handle, item));
        count += 1;
        used = items.len() - iter.remaining().len();
    }
    (count, used, None)
}

/// Everything a manager keeps, lent or given by the caller.
pub struct Resources<'a> {
    /// The registry: declared objects and spare slots for objects clients create.
    pub objects: Managed<'a, ObjectSlot<'a>>,
    /// One slot per connection served at once.
    pub connections: Managed<'a, Connection<'a>>,
    /// Room for blocked requests, over all connections.
    pub waiters: Managed<'a, Waiter>,
    /// Where the items of blocked puts wait.
    pub parked: ParkStore<'a>,
}

/// Storage for serving Python clients (see [`Manager::serve_python`]); one set serves every
/// connection, since the manager handles one frame at a time.
///
/// Sizing: a request needs some twenty nodes plus about two per value in its item (a
/// [`Node`](crate::python::pickle::Node) is 24 bytes), a stack as deep as its items nest plus
/// their widest tuple, and a memo slot per string or container Python memoizes. A request that
/// needs more is answered with a `RemoteError` and changes nothing. Each connection's transmit
/// buffer must hold [`SMALL_REPLY_BOUND`](crate::python::conn::SMALL_REPLY_BOUND) beyond its
/// depot needs; a `get` reply is about as long as its item.
#[cfg(feature = "python")]
pub struct PythonStorage<'a> {
    /// Decodes requests.
    pub request: crate::python::ScratchStore<'a>,
    /// Holds a `put`'s item converted to depot's value encoding: as large as the largest item.
    pub item: Managed<'a, u8>,
    /// Writes back stored pickles in `get` replies.
    pub reply: crate::python::ScratchStore<'a>,
    /// Holds a `get`'s item in one piece while its reply is written: as large as the largest item.
    pub join: Managed<'a, u8>,
}

#[cfg(feature = "python")]
struct PythonSide<'a> {
    key: crate::python::PyKey,
    /// Taken while a request's operation (which borrows it) runs.
    request: Option<(crate::python::ScratchStore<'a>, Managed<'a, u8>)>,
    reply: crate::python::ScratchStore<'a>,
    join: Managed<'a, u8>,
}

/// The manager state machine. See the module docs for how a transport drives it.
pub struct Manager<'a> {
    config: ManagerConfig,
    /// The key given to [`Manager::new`]: the default key, unless the keyring names one.
    key: Option<AuthKey>,
    /// What identifies that key without keeping it (see `key_id`).
    #[cfg(feature = "keyring")]
    key_id: [u8; 32],
    keyring: Keyring<'a>,
    throttle: Throttle,
    registry: Registry<'a>,
    conns: Managed<'a, Connection<'a>>,
    waiters: Waiters<'a>,
    parked: ParkStore<'a>,
    /// Items taken under a lease and not yet acknowledged.
    leases: LeaseStore<'a>,
    lists: [IdList; 3],
    open_conns: u32,
    /// Connections in their handshake by stage, oldest at `head`.
    handshakes: [IdList; 2],
    handshaking: u32,
    /// Keys the source hash, so that a peer cannot choose sources that share a bucket with
    /// another's (set from the first accept's random nonce).
    source_salt: Option<u64>,
    shutting_down: bool,
    /// A granted remote stop from a Python client begins the shutdown at this time.
    #[cfg(feature = "python")]
    stop_at: Option<Instant>,
    /// The time the transport passed with its latest call.
    now: Instant,
    /// The connections' deadlines, earliest first (see `timeouts`).
    conn_timers: Timers,
    #[cfg(feature = "python")]
    python: Option<PythonSide<'a>>,
    /// Hears every change of queue contents (see [`crate::journal`]).
    journal: Option<JournalSlot<'a>>,
    /// Clients' sessions (none until [`Manager::serve_sessions`]).
    #[cfg(feature = "sessions")]
    sessions: crate::session::Sessions<'a>,
    /// The engine that keeps the queues' contents, if not this manager (see `backend`).
    #[cfg(feature = "backend")]
    backend: Option<backend::BackendSide>,
}

impl<'a> Manager<'a> {
    /// A manager over the given storage. Objects declared in `objects` are live at once; spare
    /// slots take objects clients create (when `config.allow_create`).
    pub fn new(config: ManagerConfig, authkey: &[u8], resources: Resources<'a>) -> Self {
        let Resources {
            objects,
            connections: conns,
            waiters,
            parked,
        } = resources;
        let count = conns.len().min(NONE as usize - 1);
        let mut manager = Manager {
            config,
            key: Some(AuthKey::new(authkey)),
            #[cfg(feature = "keyring")]
            key_id: key_id(authkey),
            keyring: Keyring::empty(),
            throttle: Throttle::new(),
            registry: Registry::new(objects),
            conns,
            waiters: Waiters::new(waiters),
            parked,
            leases: LeaseStore::none(),
            lists: [IdList::EMPTY; 3],
            open_conns: 0,
            handshakes: [IdList::EMPTY; 2],
            handshaking: 0,
            source_salt: None,
            shutting_down: false,
            #[cfg(feature = "python")]
            stop_at: None,
            now: Instant::ZERO,
            conn_timers: Timers::new(),
            #[cfg(feature = "python")]
            python: None,
            journal: None,
            #[cfg(feature = "sessions")]
            sessions: crate::session::Sessions::new(Managed::empty()),
            #[cfg(feature = "backend")]
            backend: None,
        };
        for c in manager.conns.iter_mut() {
            c.timer = TimerCell::EMPTY;
        }
        for i in (0..count).rev() {
            manager.conns[i].links[0] = manager.lists[List::Free as usize].head;
            manager.lists[List::Free as usize].head = i as u32;
        }
        manager
    }

    #[cfg(feature = "keyring")]
    /// A manager that accepts the keys of `keyring` and no other: the default key (the one
    /// clients that name no key use, Python clients among them) only if the keyring has one
    /// with the empty name.
    pub fn with_keyring(
        config: ManagerConfig,
        keyring: Keyring<'a>,
        resources: Resources<'a>,
    ) -> Result<Self, KeyringError> {
        keyring.check()?;
        let mut manager = Self::new(config, &[], resources);
        manager.key = None;
        manager.keyring = keyring;
        Ok(manager)
    }

    #[cfg(feature = "keyring")]
    /// Replaces the keyring (a reload). Connections proven with a key that is still there
    /// (same name, same secret) go on with its new rights; those of a key that is gone or
    /// changed are closed ([`CloseReason::AuthFailed`]). Handshakes in progress are checked
    /// against the new keys. The key given to [`Manager::new`] stays the default key while
    /// the keyring has none; a default key on the keyring replaces it, and its connections
    /// take that key's rights (the same secret) or are closed (another secret).
    pub fn set_keyring(&mut self, keyring: Keyring<'a>, now: Instant) -> Result<(), KeyringError> {
        keyring.check()?;
        self.now = now;
        let mut revoked = false;
        // A default key on the new keyring takes over from the one given to `new`, if it is
        // the same key; if it is another, connections proven with the old one are closed.
        let default = keyring.find("").map(|k| {
            let same = key_id(keyring.keys()[k].secret()) == self.key_id;
            (same && self.key.is_some()).then_some(k as u16)
        });
        for i in 0..self.conns.len() {
            let k = self.conns[i].key;
            if k == NO_KEY {
                continue;
            }
            let new = if k == DEFAULT_KEY {
                match default {
                    None => continue,
                    Some(new) => new.map(usize::from),
                }
            } else {
                let old = self.keyring.keys().get(k as usize);
                old.and_then(|old| keyring.keys().iter().position(|n| n.same_identity(old)))
            };
            self.conns[i].key = match new {
                Some(n) => n as u16,
                None => {
                    revoked = true;
                    NO_KEY
                }
            };
        }
        self.keyring = keyring;
        if revoked {
            for i in 0..self.conns.len() {
                let c = &self.conns[i];
                let proven = matches!(c.state, State::Open(_));
                #[cfg(feature = "python")]
                let proven = proven || matches!(c.state, State::Python { .. });
                if proven && c.key == NO_KEY {
                    debug!("connection {}: its key was revoked", i);
                    self.begin_close(i, CloseReason::AuthFailed);
                }
            }
        }
        Ok(())
    }

    #[cfg(feature = "keyring")]
    /// The keyring.
    pub fn keyring(&self) -> &Keyring<'a> {
        &self.keyring
    }

    /// Gives the summary of failed proofs and throttled connections since the last call to
    /// `f`, one line per source and key name (see [`crate::throttle`]). A transport calls it
    /// now and then and logs what it gets.
    pub fn take_auth_reports(&mut self, mut f: impl FnMut(AuthReport<'_>)) {
        self.throttle.take_reports(&mut f);
    }

    /// Whether [`Manager::take_auth_reports`] has anything to give.
    pub fn has_auth_reports(&self) -> bool {
        self.throttle.has_reports()
    }

    /// Serves Python `BaseManager` clients on the same connections, with the same `authkey`:
    /// from now on every accepted connection is first sent a Python-style challenge, which
    /// depot clients skip (PROTOCOL.md, "Python clients on the same port").
    #[cfg(feature = "python")]
    pub fn serve_python(&mut self, authkey: &[u8], storage: PythonStorage<'a>) {
        self.python = Some(PythonSide {
            key: crate::python::PyKey::new(authkey),
            request: Some((storage.request, storage.item)),
            reply: storage.reply,
            join: storage.join,
        });
    }

    /// Sets the journal that hears every change of queue contents from now on (see
    /// [`crate::journal`]); restore recovered contents first.
    pub fn set_journal(&mut self, journal: impl Into<JournalSlot<'a>>) {
        self.journal = Some(journal.into());
    }

    /// The queue recovered items called `name` go into: the declared queue of that name, else
    /// one made with `spec` in a spare slot (whether or not clients may create queues). Not
    /// journaled; call before serving.
    pub fn restore_queue(
        &mut self,
        name: &str,
        spec: crate::wire::QueueSpec,
    ) -> Result<Handle, ErrorCode> {
        match self.registry.find(name) {
            Some(handle) => Ok(handle),
            None => self
                .registry
                .create(name, crate::wire::ObjectKind::Queue, spec),
        }
    }

    /// Appends a recovered item at the tail of queue `handle`. Only the queue's storage bounds
    /// it, not its capacity: items given back may have filled the queue past its capacity
    /// before. Not journaled; call before serving.
    pub fn restore_item(&mut self, handle: Handle, item: &[u8]) -> Result<(), RestoreError> {
        self.restore_item_delivered(handle, item, 0)
    }

    /// [`Manager::restore_item`] for an item delivered `deliveries` times under leases before.
    pub fn restore_item_delivered(
        &mut self,
        handle: Handle,
        item: &[u8],
        deliveries: u8,
    ) -> Result<(), RestoreError> {
        let q = self
            .registry
            .queue(handle)
            .map_err(|_| RestoreError::NoSuchQueue)?;
        q.queue
            .push_recovered(item, deliveries)
            .map_err(|e| match e {
                crate::queue::PushError::TooLarge => RestoreError::TooLarge,
                crate::queue::PushError::Full => RestoreError::Full,
            })
    }

    /// Gives a recovered item back to queue `handle` as a client's give-back does: at its
    /// head, or, with no room there, held at the front of its blocked puts until there is
    /// (see [`crate::journal::Journal::held`]). Not journaled; call before serving, the item
    /// held last (nearest the queue) first.
    pub fn restore_held(&mut self, handle: Handle, item: &[u8]) -> Result<(), RestoreError> {
        match self.return_item(handle, item) {
            Reply::Done => Ok(()),
            Reply::Error(ErrorCode::NoSuchObject | ErrorCode::WrongKind) => {
                Err(RestoreError::NoSuchQueue)
            }
            Reply::Error(ErrorCode::TooLarge) => Err(RestoreError::TooLarge),
            _ => Err(RestoreError::Full),
        }
    }

    /// The items held outside queue `handle` for want of room (see
    /// [`crate::journal::Journal::held`]), the next to enter first: what a snapshot keeps
    /// next to [`Manager::queue_items`].
    pub fn queue_held(&self, handle: Handle) -> impl Iterator<Item = &[u8]> + use<'_, 'a> {
        let mut at = self
            .registry
            .queue_ref(handle)
            .and_then(|q| q.putters.front());
        core::iter::from_fn(move || loop {
            let w = self.waiters.get(at?);
            at = (w.next != NONE).then_some(w.next);
            if w.conn == NONE && w.kind == WaitKind::Put {
                if let Some(p) = w.hold.parked() {
                    return Some(self.parked.get(p));
                }
            }
        })
    }

    /// The items of queue `handle`, oldest first, each as one or two slices (where it wraps
    /// around the queue's storage): what a snapshot of the queue holds.
    pub fn queue_items(&self, handle: Handle) -> Option<crate::queue::QueueIter<'_, 'a>> {
        self.registry.queue_ref(handle).map(|q| q.queue.iter())
    }

    /// How many times each item of queue `handle`, oldest first, was delivered under a lease
    /// (what a snapshot keeps next to [`Manager::queue_items`]).
    pub fn queue_deliveries(&self, handle: Handle) -> Option<impl Iterator<Item = u8> + '_> {
        self.registry
            .queue_ref(handle)
            .map(|q| q.queue.deliveries())
    }

    /// The first name declared twice, if any (the later slot is unreachable by name).
    pub fn duplicate_name(&self) -> Option<&str> {
        self.registry.first_duplicate()
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Takes a new connection; `nonce` must be fresh random bytes, `source` names where it
    /// comes from (a host's IP address, a firmware's remote endpoint; empty: no per-source limit).
    ///
    /// Admission keeps room for clients that authenticate: when `config.max_handshaking`
    /// connections are in their handshake, the oldest of them is evicted to make room; when no
    /// slot is free, the oldest is evicted (its slot is free once the transport closes it) and
    /// this one is refused `Busy` (see [`AcceptError::Busy`] for taking it after all). Evicted connections close with [`CloseReason::Busy`]: the
    /// transport sees them in [`Manager::poll_ready`] and closes them as any other. Costs O(1).
    pub fn accept(
        &mut self,
        now: Instant,
        nonce: [u8; NONCE_LEN],
        source: &[u8],
    ) -> Result<ConnId, AcceptError> {
        if self.shutting_down {
            return Err(AcceptError::ShuttingDown);
        }
        self.now = now;
        if !source.is_empty() && self.throttle.refuses(source, now) {
            return Err(AcceptError::Throttled);
        }
        let bucket = self.source_bucket(&nonce, source);
        let limit = self.config.max_handshaking_per_source;
        if let Some(b) = bucket {
            let count = self.conns.get(b as usize).map_or(0, |c| c.source_count);
            if limit > 0 && count >= limit {
                return Err(AcceptError::SourceLimit);
            }
        }
        if self.lists[List::Free as usize].head == NONE {
            self.evict_oldest_handshake();
            return Err(AcceptError::Busy);
        }
        if self.handshaking >= self.config.max_handshaking.max(1) {
            self.evict_oldest_handshake();
        }
        let free = &mut self.lists[List::Free as usize];
        let index = free.head;
        let Some(c) = self.conns.get_mut(index as usize) else {
            return Err(AcceptError::Busy);
        };
        free.head = c.links[0];
        c.links = [NONE; 2];
        let deadline = now.add_millis(self.config.handshake_timeout_ms.into());
        c.state = State::AwaitHello { nonce, deadline };
        c.rx.clear();
        c.tx.clear();
        c.reserved = 0;
        c.waiters = 0;
        c.cursor = 0;
        c.frame_deadline = None;
        c.tx_progress = now;
        let len = source.len().min(SOURCE_LEN);
        if let (Some(to), Some(from)) = (c.peer.get_mut(..len), source.get(..len)) {
            to.copy_from_slice(from);
        }
        c.peer_len = len as u8;
        c.key = NO_KEY;
        self.open_conns += 1;
        self.enter_handshake(index as usize, bucket);
        self.arm(index as usize, deadline);
        #[cfg(feature = "python")]
        if self.python.is_some() {
            let frame = crate::python::challenge_frame(&nonce);
            let c = &mut self.conns[index as usize];
            let sent = c.tx.push_raw(frame.len(), |out| {
                out.get_mut(..frame.len())?.copy_from_slice(&frame);
                Some(frame.len())
            });
            if sent.is_err() {
                self.begin_close(index as usize, CloseReason::WriteStalled);
            }
            self.link(List::Ready, index as usize);
        }
        Ok(ConnId(index))
    }

    /// The connection in slot `index` (see [`ConnId::index`]), if that slot is in use. O(1).
    pub fn connection_at(&self, index: usize) -> Option<ConnId> {
        let c = self.conns.get(index)?;
        (!c.is_free()).then_some(ConnId(index as u32))
    }

    /// Connections in their handshake now.
    pub fn handshaking(&self) -> u32 {
        self.handshaking
    }

    /// The bucket of `source` in the per-source table, `None` when it is not counted.
    fn source_bucket(&mut self, nonce: &[u8; NONCE_LEN], source: &[u8]) -> Option<u32> {
        if source.is_empty() || self.conns.is_empty() {
            return None;
        }
        let salt = *self.source_salt.get_or_insert_with(|| {
            let mut salt = [0; 8];
            salt.copy_from_slice(&nonce[..8]);
            u64::from_le_bytes(salt)
        });
        // FNV-1a over the salt and the key, then a final mix: cheap, and salted so that
        // colliding sources cannot be picked in advance.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in salt.to_le_bytes().iter().chain(source) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        Some((h % self.conns.len() as u64) as u32)
    }

    /// Counts connection `i` as in its handshake, awaiting its hello.
    fn enter_handshake(&mut self, i: usize, bucket: Option<u32>) {
        if let Some(c) = self.conns.get_mut(i) {
            debug_assert!(c.hs_stage.is_none());
            c.source = bucket.unwrap_or(NONE);
        }
        self.hs_link(i, Stage::Hello);
        self.handshaking += 1;
        if let Some(c) = bucket.and_then(|b| self.conns.get_mut(b as usize)) {
            c.source_count += 1;
        }
    }

    /// Counts connection `i` as no longer in its handshake (it authenticated or is closing).
    fn leave_handshake(&mut self, i: usize) {
        // `get`, not indexing, here and in the other list helpers: no panic path to link in.
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.hs_stage.is_none() {
            return;
        }
        let source = core::mem::replace(&mut c.source, NONE);
        self.hs_unlink(i);
        self.handshaking -= 1;
        if let Some(s) = self.conns.get_mut(source as usize) {
            debug_assert!(s.source_count > 0);
            s.source_count = s.source_count.saturating_sub(1);
        }
    }

    /// Puts connection `i` at the young end of the `stage` list.
    fn hs_link(&mut self, i: usize, stage: Stage) {
        let list = &mut self.handshakes[stage as usize];
        let tail = list.tail;
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        c.hs_stage = Some(stage);
        c.hs_prev = tail;
        c.hs_next = NONE;
        match self.conns.get_mut(tail as usize) {
            Some(t) => t.hs_next = i as u32,
            None => list.head = i as u32,
        }
        list.tail = i as u32;
    }

    /// Takes connection `i` off its handshake list.
    fn hs_unlink(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let Some(stage) = c.hs_stage.take() else {
            return;
        };
        let (prev, next) = (c.hs_prev, c.hs_next);
        c.hs_prev = NONE;
        c.hs_next = NONE;
        let list = &mut self.handshakes[stage as usize];
        match self.conns.get_mut(prev as usize) {
            Some(p) => p.hs_next = next,
            None => list.head = next,
        }
        match self.conns.get_mut(next as usize) {
            Some(n) => n.hs_prev = prev,
            None => list.tail = prev,
        }
    }

    /// Closes the connection that has waited longest for its hello or, if none, for its proof:
    /// a peer that has not proven the key yet gives way to one that may.
    fn evict_oldest_handshake(&mut self) {
        let i = match self.handshakes[Stage::Hello as usize].head {
            NONE => self.handshakes[Stage::Proof as usize].head,
            i => i,
        };
        if i == NONE {
            return;
        }
        let i = i as usize;
        debug!("connection {}: evicted during its handshake", i);
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if matches!(c.state, State::AwaitHello { .. }) && c.tx.is_empty() {
            // The peer waits for a `ServerHello`: tell it why.
            let _ = c.tx.push_plain(&ServerHello::Reject(CloseReason::Busy));
        }
        self.begin_close(i, CloseReason::Busy);
    }

    /// Free space to read bytes into: empty for a free or closing connection. A connection
    /// whose input is paused still gets the rest of its buffer (a lent buffer is fixed; an owned
    /// one grows only to hold a frame whose header it has read), so a paused peer fills it
    /// and then its socket.
    pub fn rx_space(&mut self, id: ConnId) -> &mut [u8] {
        match self.conns.get_mut(id.0 as usize) {
            Some(c) if matches!(c.state, State::Free | State::Closing(_)) => &mut [],
            Some(c) => c.rx.space(),
            None => &mut [],
        }
    }

    /// `n` bytes were read into [`Manager::rx_space`]; processes every whole frame.
    pub fn handle_received(&mut self, id: ConnId, now: Instant, n: usize) {
        let Some(c) = self.conns.get_mut(id.0 as usize) else {
            return;
        };
        if matches!(c.state, State::Free | State::Closing(_)) {
            return;
        }
        c.rx.commit(n);
        self.now = now;
        self.process(id.0 as usize, now);
        self.run_resumes(now);
    }

    /// Copies in as much of `bytes` as fits and processes it; returns how many were taken.
    pub fn handle_input(&mut self, id: ConnId, now: Instant, bytes: &[u8]) -> usize {
        let mut rest = bytes;
        // Asks for room only while there is input: room is memory, for an owned buffer.
        while !rest.is_empty() {
            let space = self.rx_space(id);
            let n = space.len().min(rest.len());
            if n == 0 {
                break;
            }
            let (now_in, later) = rest.split_at(n);
            if let Some(to) = space.get_mut(..n) {
                to.copy_from_slice(now_in);
            }
            rest = later;
            self.handle_received(id, now, n);
        }
        bytes.len() - rest.len()
    }

    /// Bytes to send to the peer now (sealing the frame being built).
    pub fn poll_transmit(&mut self, id: ConnId) -> &[u8] {
        let Some(c) = self.conns.get_mut(id.0 as usize) else {
            return &[];
        };
        if let State::Open(session) = &mut c.state {
            c.tx.seal(&mut session.tx_mac);
        }
        c.tx.pending()
    }

    /// The transport sent `n` bytes of [`Manager::poll_transmit`].
    pub fn handle_transmitted(&mut self, id: ConnId, now: Instant, n: usize) {
        self.now = now;
        let Some(c) = self.conns.get_mut(id.0 as usize) else {
            return;
        };
        c.tx.consume(n);
        if n > 0 {
            c.tx_progress = now;
        }
        if c.cursor > 0 || !c.rx.is_empty() {
            // Input may have waited for this room.
            self.link(List::Resume, id.0 as usize);
            self.run_resumes(now);
        }
    }

    /// The manager is done with this connection: once [`Manager::poll_transmit`] is empty, close
    /// the socket and call [`Manager::handle_close`].
    pub fn wants_close(&self, id: ConnId) -> bool {
        self.conns
            .get(id.0 as usize)
            .is_some_and(|c| matches!(c.state, State::Closing(_)) && c.tx.is_empty())
    }

    /// Why the manager is closing this connection, if it is.
    pub fn close_reason(&self, id: ConnId) -> Option<CloseReason> {
        match self.conns.get(id.0 as usize)?.state {
            State::Closing(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the connection speaks Python's protocol. Python's client leaves Nagle's
    /// algorithm on, so a transport may want to acknowledge its input at once.
    #[cfg(feature = "python")]
    pub fn is_python(&self, id: ConnId) -> bool {
        self.conns
            .get(id.0 as usize)
            .is_some_and(|c| matches!(c.state, State::Python { .. }))
    }

    /// The socket is gone (peer closed, error, or after [`Manager::wants_close`]): frees the slot.
    /// The connection's blocked requests are cancelled; nothing else changes.
    pub fn handle_close(&mut self, id: ConnId, now: Instant) {
        let i = id.0 as usize;
        if self.conns.get(i).is_none_or(Connection::is_free) {
            return;
        }
        self.now = now;
        self.cancel_waiters(i);
        self.leave_session(i);
        self.leave_handshake(i);
        self.give_back_unsent(i);
        self.release_leases_of(i);
        #[cfg(feature = "backend")]
        self.backend_closed(i);
        self.disarm(i);
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        c.state = State::Free;
        #[cfg(feature = "alloc")]
        c.keep_buffers(None);
        c.rx.clear();
        c.tx.clear();
        c.reserved = 0;
        c.cursor = 0;
        // Bug fix: the free list shares `links[0]` with the ready list, so a connection closed
        // while still on the ready (or resume) list corrupted it: later connections were lost
        // from `poll_ready` for good and freed slots were reported instead. Take it off both
        // lists before it joins the free list.
        self.unlink(List::Ready, i);
        self.unlink(List::Resume, i);
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        c.links[0] = self.lists[List::Free as usize].head;
        self.lists[List::Free as usize].head = i as u32;
        self.open_conns -= 1;
        self.run_resumes(now);
    }

    /// The next connection whose state changed outside its own calls: flush its output, check
    /// [`Manager::wants_close`], and read again if its input had stopped.
    pub fn poll_ready(&mut self) -> Option<ConnId> {
        self.unlink_front(List::Ready).map(|i| ConnId(i as u32))
    }

    /// When [`Manager::handle_timeout`] should next run (it may be early, never late). O(1)
    /// with owned storage (`alloc`); with lent storage a search over its few slots.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout()
    }

    /// Runs every deadline that has passed: blocked requests time out, slow handshakes, frames
    /// and readers are dropped. With owned storage (`alloc`) each deadline that passed costs
    /// O(log n), whatever the number of connections and waiters; lent storage, sized for a
    /// few connections, is searched instead (the same deadlines in the same order).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.next_timeout().is_none_or(|t| t > now) {
            return;
        }
        self.run_timeouts(now);
    }

    /// Stops the manager gracefully: no new connections, blocked requests answered with
    /// `ShuttingDown`, every connection told and closed once its output is flushed (within the
    /// write-stall time from `now`).
    pub fn shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.now = now;
        self.shutting_down = true;
        // One pass over the pool: failing a waiter parks none, so nothing appears behind it.
        let mut from = 0;
        while let Some(w) = self.waiters.find_from(from, |_| true) {
            from = w + 1;
            self.fail_waiter(w, ErrorCode::ShuttingDown);
        }
        for i in 0..self.conns.len() {
            if self.conns.get(i).is_some_and(|c| !c.is_free()) {
                self.begin_close(i, CloseReason::Shutdown);
            }
        }
    }

    /// Whether [`Manager::shutdown`] ran (locally or by a permitted remote request).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Connections in use.
    pub fn connections(&self) -> u32 {
        self.open_conns
    }

    /// The manager's status, as a client's `Status` request sees it.
    pub fn status(&self) -> ManagerStatus {
        ManagerStatus {
            connections: self.open_conns,
            max_connections: self.conns.len() as u32,
            objects: self.registry.count() as u32,
            waiters: self.waiters.used(),
        }
    }

    /// Bytes of memory connection `id`'s buffers hold now. Lent buffers always hold their
    /// slices. Owned ones (`Connection::owned`) hold none while idle and grow as frames need
    /// (up to their limits); while the peer is busy they keep what they have grown to, up to
    /// 128 KiB each, until it has been quiet for a second, so a busy connection does not
    /// allocate, zero and give back its buffers for every request and reply.
    pub fn buffer_memory(&self, id: ConnId) -> usize {
        self.conns
            .get(id.0 as usize)
            .map_or(0, |c| c.rx.memory() + c.tx.memory())
    }

    /// The `index`-th object with its statistics, as a client's `Stat` request sees it.
    pub fn stat(&self, index: u16) -> Option<ObjectStat<'_>> {
        #[cfg(feature = "backend")]
        return self.backend_stat(self.registry.stat(index));
        #[cfg(not(feature = "backend"))]
        self.registry.stat(index)
    }

    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    fn link(&mut self, list: List, i: usize) {
        let l = list as usize;
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.linked[l] {
            return;
        }
        c.linked[l] = true;
        c.links[l] = NONE;
        let list = &mut self.lists[l];
        match self.conns.get_mut(list.tail as usize) {
            Some(tail) => tail.links[l] = i as u32,
            None => list.head = i as u32,
        }
        list.tail = i as u32;
    }

    /// Takes connection `i` off `list` wherever it stands (a walk: lists are short).
    fn unlink(&mut self, list: List, i: usize) {
        let l = list as usize;
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if !c.linked[l] {
            return;
        }
        c.linked[l] = false;
        let next = core::mem::replace(&mut c.links[l], NONE);
        let mut prev = NONE;
        let mut at = self.lists[l].head;
        while at != NONE && at as usize != i {
            prev = at;
            at = self.conns.get(at as usize).map_or(NONE, |c| c.links[l]);
        }
        if at == NONE {
            return;
        }
        let list = &mut self.lists[l];
        match self.conns.get_mut(prev as usize) {
            Some(p) => p.links[l] = next,
            None => list.head = next,
        }
        if list.tail == i as u32 {
            list.tail = prev;
        }
    }

    fn unlink_front(&mut self, list: List) -> Option<usize> {
        let l = list as usize;
        let head = self.lists[l].head;
        if head == NONE {
            return None;
        }
        let c = self.conns.get_mut(head as usize)?;
        self.lists[l].head = c.links[l];
        if self.lists[l].head == NONE {
            self.lists[l].tail = NONE;
        }
        c.linked[l] = false;
        Some(head as usize)
    }

    fn run_resumes(&mut self, now: Instant) {
        while let Some(i) = self.unlink_front(List::Resume) {
            self.process(i, now);
            self.link(List::Ready, i);
        }
    }

    /// Reads every whole frame of connection `i` that can be answered now.
    fn process(&mut self, i: usize, now: Instant) {
        loop {
            let Some(c) = self.conns.get(i) else {
                return;
            };
            let progressed = match c.state {
                State::Free | State::Closing(_) => return,
                State::AwaitHello { .. } | State::AwaitProof { .. } => self.process_handshake(i),
                // The peer has nothing more to say; its input is ignored.
                State::Refusing { .. } => false,
                State::Open(_) => {
                    // Input after the handshake (not the handshake's own last step).
                    #[cfg(feature = "alloc")]
                    if !c.rx.is_empty() {
                        self.note_busy(i, now);
                    }
                    self.process_frame(i)
                }
                #[cfg(feature = "python")]
                State::Python { .. } => self.process_python(i),
            };
            if !progressed {
                break;
            }
        }
        let timeout = self.config.frame_timeout_ms.into();
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.rx.is_empty() || c.cursor > 0 || matches!(c.state, State::Closing(_)) {
            c.frame_deadline = None;
        } else if c.frame_deadline.is_none() {
            let deadline = now.add_millis(timeout);
            c.frame_deadline = Some(deadline);
            self.arm(i, deadline);
        }
    }

    fn process_handshake(&mut self, i: usize) -> bool {
        let Some(c) = self.conns.get_mut(i) else {
            return false;
        };
        let body_len = match c.rx.peek(MAX_HANDSHAKE_BODY as usize) {
            Peek::Partial => return false,
            Peek::TooLarge => {
                self.reject(i, CloseReason::FrameTooLarge);
                return false;
            }
            Peek::Frame { body_len } => body_len,
        };
        // `get`, not indexing, for the slices here: `peek` vouched for them, and no panic path
        // gets linked in.
        let Some(body) = c.rx.bytes().get(HEADER_LEN..HEADER_LEN + body_len) else {
            return false;
        };
        match c.state {
            State::AwaitHello { nonce, deadline } => {
                #[cfg(feature = "python")]
                if self.python.is_some() && body.get(..MAGIC.len()) != Some(&MAGIC[..]) {
                    // Not a depot hello: a Python client's answer to the challenge.
                    c.state = State::Python {
                        py: crate::python::PyConn::new(nonce),
                        deadline,
                    };
                    // Python clients name no key: theirs is the default one.
                    c.key = match self.keyring.find("") {
                        Some(k) => k as u16,
                        None => DEFAULT_KEY,
                    };
                    c.peer_max = MAX_MAX_FRAME as usize;
                    return true;
                }
                if body.len() < MAGIC.len() {
                    return self.reject(i, CloseReason::Malformed);
                }
                if body[..MAGIC.len()] != MAGIC {
                    return self.reject(i, CloseReason::BadMagic);
                }
                // The versions come first, as in every version's hello: an older client, whose
                // hello is laid out differently, learns that it is too old.
                if let Some(&[lo, hi]) = body.get(MAGIC.len()..MAGIC.len() + 2) {
                    if lo > VERSION || hi < MIN_VERSION || lo > hi {
                        return self.reject(i, CloseReason::VersionMismatch);
                    }
                }
                let Some(hello) = decode_all(body, Reader::client_hello) else {
                    return self.reject(i, CloseReason::Malformed);
                };
                // The newest both speak (3 and 4 lay out the handshake alike).
                let version = hello.max_version.min(VERSION);
                if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&hello.max_frame) {
                    return self.reject(i, CloseReason::Malformed);
                }
                let sealed = match self.config.encryption.manager_choice(hello.encrypt) {
                    Ok(false) => Sealing::Mac,
                    Ok(true) if version >= 4 && self.config.prefer_aes_gcm => Sealing::Aes256Gcm,
                    Ok(true) => Sealing::ChaCha20Poly1305,
                    Err(reason) => return self.reject(i, reason),
                };
                let max_frame = self.max_frame(i) as u32;
                let challenge = ServerHello::Challenge {
                    version,
                    nonce,
                    max_frame,
                    sealed,
                };
                let mut encoded = [0; MAX_HANDSHAKE_BODY as usize];
                let Some(challenge_len) = challenge.encode_into(&mut encoded) else {
                    return self.reject(i, CloseReason::Malformed);
                };
                let challenge_body = encoded.get(..challenge_len).unwrap_or_default();
                let Some(c) = self.conns.get_mut(i) else {
                    return false;
                };
                let Some(body) = c.rx.bytes().get(HEADER_LEN..HEADER_LEN + body_len) else {
                    return false;
                };
                let transcript = transcript_hash(body, challenge_body);
                c.rx.consume(HEADER_LEN + body_len);
                c.peer_max = hello.max_frame.min(MAX_MAX_FRAME) as usize;
                c.state = State::AwaitProof {
                    transcript,
                    deadline,
                    key: hello.key,
                    sealed,
                };
                self.hs_unlink(i);
                self.hs_link(i, Stage::Proof);
                let Some(c) = self.conns.get_mut(i) else {
                    return false;
                };
                if c.tx.push_plain(&challenge).is_err() {
                    self.begin_close(i, CloseReason::Malformed);
                    return false;
                }
                self.link(List::Ready, i);
                true
            }
            State::AwaitProof {
                transcript,
                key,
                sealed,
                ..
            } => {
                let Some(ClientProof { proof }) = decode_all(body, Reader::client_proof) else {
                    return self.reject(i, CloseReason::Malformed);
                };
                c.rx.consume(HEADER_LEN + body_len);
                let (index, auth) = self.proof_key(key);
                // An unknown name is checked against a stand-in key, so it fails exactly
                // like a wrong key, in about the same time.
                if !auth.verify(CLIENT_PROOF, &transcript, &proof) || index == NO_KEY {
                    debug!("connection {}: authentication failed", i);
                    let Some(c) = self.conns.get(i) else {
                        return false;
                    };
                    let peer = c.peer.get(..c.peer_len as usize).unwrap_or_default();
                    let delay = self
                        .throttle
                        .failed(&self.config.throttle, peer, key, self.now);
                    if delay == 0 {
                        let Some(c) = self.conns.get_mut(i) else {
                            return false;
                        };
                        let _ = c.tx.push_plain(&ServerVerdict::AuthFailed);
                        self.begin_close(i, CloseReason::AuthFailed);
                    } else {
                        // Still a handshake (admission may evict it); the verdict waits.
                        let at = self.now.add_millis(delay.into());
                        if let Some(c) = self.conns.get_mut(i) {
                            c.state = State::Refusing { at };
                        }
                        self.arm(i, at);
                    }
                    return false;
                }
                let welcome = ServerVerdict::Welcome {
                    proof: auth.derive(MANAGER_PROOF, &transcript),
                };
                let session = Session {
                    rx_mac: FrameKey::client_to_manager(&auth, &transcript, sealed),
                    tx_mac: FrameKey::manager_to_client(&auth, &transcript, sealed),
                };
                let Some(c) = self.conns.get_mut(i) else {
                    return false;
                };
                if c.tx.push_plain(&welcome).is_err() {
                    self.begin_close(i, CloseReason::Malformed);
                    return false;
                }
                c.state = State::Open(session);
                c.key = index;
                // The welcome waits to be read: the write-stall clock runs.
                let stall = c
                    .tx_progress
                    .add_millis(self.config.write_stall_timeout_ms.into());
                let peer = c.peer.get(..c.peer_len as usize).unwrap_or_default();
                self.throttle.succeeded(peer);
                self.leave_handshake(i);
                self.arm(i, stall);
                self.link(List::Ready, i);
                true
            }
            _ => false,
        }
    }

    /// The key a hello's name stands for: its index (`NO_KEY` if there is none) and the key
    /// to check the proof with.
    fn proof_key(&self, name: KeyName) -> (u16, AuthKey) {
        if let Some(k) = self
            .keyring
            .find(name.as_str())
            .filter(|_| cfg!(feature = "keyring"))
        {
            return (k as u16, AuthKey::new(self.keyring.keys()[k].secret()));
        }
        match &self.key {
            Some(key) if name.as_str().is_empty() => (DEFAULT_KEY, key.clone()),
            _ => (NO_KEY, AuthKey::new(&[0; 32])),
        }
    }

    /// The key connection `i` proved; `None` for the key given to [`Manager::new`] (every
    /// right).
    fn key_of(&self, i: usize) -> Result<Option<&Key<'a>>, ErrorCode> {
        if !cfg!(feature = "keyring") {
            // Without a keyring every connection proved the default key.
            return Ok(None);
        }
        match self.conns[i].key {
            DEFAULT_KEY => Ok(None),
            k => self
                .keyring
                .keys()
                .get(k as usize)
                .map(Some)
                .ok_or(ErrorCode::NotAllowed),
        }
    }

    /// `NotAllowed` if connection `i`'s key may not run `op` (then nothing changes).
    fn permit(&self, i: usize, op: &Op) -> Result<(), ErrorCode> {
        let Some(key) = self.key_of(i)? else {
            return Ok(());
        };
        let on_handle = |handle: Handle, need: Rights| match self.registry.name(handle) {
            // An unknown handle is answered `NoSuchObject` by the operation itself.
            None => true,
            Some(name) => {
                let rights = key.rights(name);
                if need.is_empty() {
                    !rights.is_empty()
                } else {
                    rights.contains(need)
                }
            }
        };
        let allowed = match *op {
            Op::Open { name } => !key.rights(name).is_empty(),
            Op::Create { name, exist_ok, .. } | Op::CreateObject { name, exist_ok, .. } => {
                let rights = key.rights(name);
                rights.contains(Rights::CREATE)
                    // Opening what exists is all a `Create` with `exist_ok` does then.
                    || (exist_ok && !rights.is_empty() && self.registry.find(name).is_some())
            }
            Op::Put { handle, .. }
            | Op::PutMany { handle, .. }
            | Op::PutSeq { handle, .. }
            | Op::PutManySeq { handle, .. }
            | Op::Return { handle, .. }
            | Op::Join { handle, .. } => on_handle(handle, Rights::PUT),
            Op::Get { handle, .. }
            | Op::GetMany { handle, .. }
            | Op::GetLeased { handle, .. }
            | Op::TaskDone { handle } => on_handle(handle, Rights::GET),
            Op::Size { handle } => on_handle(handle, Rights::NONE),
            Op::Act { handle, action } => on_handle(handle, objects::right_for(action)),
            // These concern the connection's own requests and leases; a session holds nothing
            // the key could not reach otherwise.
            Op::Cancel { .. } | Op::Ack { .. } | Op::Nack { .. } | Op::Session { .. } => true,
            Op::Stat { .. } | Op::Status | Op::BackendStatus => key.has_anywhere(Rights::ADMIN),
            Op::Shutdown => key.has_everywhere(Rights::ADMIN),
        };
        if allowed {
            Ok(())
        } else {
            Err(ErrorCode::NotAllowed)
        }
    }

    /// Tells a handshaking peer it is refused, in the message it expects next (a hello is
    /// answered `Reject(reason)`, a proof `AuthFailed`), then closes. Returns `false`.
    fn reject(&mut self, i: usize, reason: CloseReason) -> bool {
        let Some(c) = self.conns.get_mut(i) else {
            return false;
        };
        let _ = match c.state {
            State::AwaitProof { .. } => c.tx.push_plain(&ServerVerdict::AuthFailed),
            _ => c.tx.push_plain(&ServerHello::Reject(reason)),
        };
        self.begin_close(i, reason);
        false
    }

    /// The largest frame body this manager accepts on connection `i`.
    fn max_frame(&self, i: usize) -> usize {
        let rx = self
            .conns
            .get(i)
            .map_or(0, |c| c.rx.capacity().saturating_sub(HEADER_LEN));
        rx.min(self.config.max_frame as usize)
            .min(MAX_MAX_FRAME as usize)
    }

    /// Verifies the next frame (if not yet) and answers its messages. `true` if a whole frame
    /// was consumed.
    fn process_frame(&mut self, i: usize) -> bool {
        let max_body = self.max_frame(i);
        let Some(c) = self.conns.get_mut(i) else {
            return false;
        };
        if c.cursor == 0 {
            let body_len = match c.rx.peek(max_body) {
                Peek::Partial => return false,
                Peek::TooLarge => {
                    self.begin_close(i, CloseReason::FrameTooLarge);
                    return false;
                }
                Peek::Frame { body_len } => body_len,
            };
            if body_len < TAG_LEN {
                self.begin_close(i, CloseReason::Malformed);
                return false;
            }
            let State::Open(session) = &mut c.state else {
                return false;
            };
            if !session.rx_mac.open(c.rx.frame_mut(HEADER_LEN + body_len)) {
                debug!("connection {}: frame failed its MAC", i);
                self.begin_close(i, CloseReason::BadMac);
                return false;
            }
            c.cursor = HEADER_LEN;
            c.frame_end = HEADER_LEN + body_len - TAG_LEN;
            c.frame_deadline = None;
        }
        while let Some(c) = self.conns.get_mut(i).filter(|c| c.cursor < c.frame_end) {
            let (cursor, end) = (c.cursor, c.frame_end);
            let rx = core::mem::replace(&mut c.rx, RxBuf::new(Managed::empty()));
            let mut reader = Reader::new(rx.bytes().get(cursor..end).unwrap_or_default());
            let step = match reader.request() {
                Some(request) => {
                    let used = end - cursor - reader.rest().len();
                    match self.handle_request(i, request) {
                        Step::Done => Some(used),
                        Step::Paused => None,
                    }
                }
                None => {
                    self.begin_close(i, CloseReason::Malformed);
                    None
                }
            };
            let Some(c) = self.conns.get_mut(i) else {
                return false;
            };
            c.rx = rx;
            if matches!(c.state, State::Closing(_)) {
                c.rx.clear();
                return false;
            }
            match step {
                Some(used) => c.cursor += used,
                None => return false,
            }
        }
        let Some(c) = self.conns.get_mut(i) else {
            return false;
        };
        c.rx.consume(c.frame_end + TAG_LEN);
        c.cursor = 0;
        true
    }

    /// Answers one request, parks it, or pauses the connection's input until there is room.
    fn handle_request(&mut self, i: usize, request: Request) -> Step {
        let id = request.id;
        // Only the reply sent now needs room here; a get that parks checks its own
        // reservation in `park`.
        let need = match request.op {
            Op::Get { handle, .. } => self.get_reply_now(i, handle, Take::One),
            Op::GetMany {
                handle,
                max_items,
                max_bytes,
                ..
            } => self.get_reply_now(i, handle, Take::many(max_items, max_bytes)),
            Op::GetLeased {
                handle,
                max_items,
                max_bytes,
                lease_ms,
                ..
            } => self.get_reply_now(i, handle, Take::leased(max_items, max_bytes, lease_ms)),
            Op::Act { handle, action } => self.act_reply_bound(i, handle, action),
            _ => SMALL_REPLY_BOUND,
        };
        let Some(c) = self.conns.get(i) else {
            return Step::Done;
        };
        if c.tx.free() < c.reserved + need {
            if c.reserved > 0 || need <= c.tx.capacity().saturating_sub(TAG_LEN) {
                // Room comes back as output drains and blocked requests are answered.
                return Step::Paused;
            }
            // This reply can never fit this connection's output: refuse rather than stall.
            self.reply_error(i, id, ErrorCode::TooLarge);
            return Step::Done;
        }
        if let Err(code) = self.permit(i, &request.op) {
            self.reply_error(i, id, code);
            return Step::Done;
        }
        #[cfg(feature = "backend")]
        if let Some(step) = self.backend_request(i, id, &request.op) {
            return step;
        }
        let reply = match request.op {
            Op::Open { name } => match self.registry.find(name) {
                Some(handle) => self.registry.info(handle).map(Reply::Opened),
                None if name == crate::wire::CLOSE_CALL => Some(Reply::Opened(close::INFO)),
                None if !valid_name(name) => Some(Reply::Error(ErrorCode::InvalidName)),
                None => Some(Reply::Error(ErrorCode::NoSuchObject)),
            },
            Op::Create {
                name,
                spec,
                exist_ok,
            } => Some(self.create(name, spec, exist_ok)),
            Op::Put { handle, item, wait } => {
                self.put(i, id, handle, item, wait);
                None
            }
            Op::PutMany {
                handle,
                items,
                wait,
            } => {
                self.put_many(i, id, handle, items, wait, 0);
                None
            }
            Op::Session { id: session } => Some(self.open_session(i, session)),
            Op::PutSeq {
                seq,
                handle,
                item,
                wait,
            } => {
                self.put_seq(i, id, seq, handle, item, wait);
                None
            }
            Op::PutManySeq {
                seq,
                handle,
                items,
                wait,
            } => {
                self.put_many_seq(i, id, seq, handle, items, wait);
                None
            }
            Op::Get { handle, wait } => {
                self.get(i, id, handle, wait, Take::One);
                None
            }
            Op::GetMany {
                handle,
                max_items,
                max_bytes,
                wait,
            } => {
                self.get(i, id, handle, wait, Take::many(max_items, max_bytes));
                None
            }
            Op::Cancel { target } => {
                self.cancel(i, target);
                Some(Reply::Done)
            }
            Op::Return { handle, item } => Some(self.return_item(handle, item)),
            Op::GetLeased {
                handle,
                max_items,
                max_bytes,
                lease_ms,
                wait,
            } => {
                self.get_leased(i, id, handle, wait, max_items, max_bytes, lease_ms);
                None
            }
            Op::Ack { lease } => Some(self.ack(i, lease)),
            Op::Nack { lease } => Some(self.nack(i, lease)),
            Op::Size { handle } => Some(match self.registry.queue(handle) {
                #[cfg(feature = "backend")]
                Ok(q) => {
                    let size = q.queue.size();
                    let name = self.registry.name(handle).unwrap_or("");
                    Reply::Size(self.backend_size(name, size))
                }
                #[cfg(not(feature = "backend"))]
                Ok(q) => Reply::Size(q.queue.size()),
                Err(e) => Reply::Error(e),
            }),
            Op::TaskDone { handle } => Some(self.task_done(handle)),
            Op::Join { handle, wait } => {
                self.join(i, id, handle, wait);
                None
            }
            Op::Stat { index } => {
                let key = self.key_of(i).ok().flatten();
                let stat = visible_stat(&self.registry, key, index);
                #[cfg(feature = "backend")]
                let stat = self.backend_stat(stat);
                let Some(c) = self.conns.get_mut(i) else {
                    return Step::Done;
                };
                if let State::Open(session) = &mut c.state {
                    let msg = Message::Reply {
                        id,
                        reply: Reply::Stat(stat),
                    };
                    let was_idle = c.tx.is_empty();
                    match c.tx.push(&msg, c.peer_max, &mut session.tx_mac) {
                        Ok(()) => self.output_queued(i, was_idle),
                        Err(_) => self.begin_close(i, CloseReason::WriteStalled),
                    }
                }
                None
            }
            Op::Status => {
                let mut status = self.status();
                if let Ok(Some(key)) = self.key_of(i) {
                    status.objects = count_visible(&self.registry, key);
                }
                Some(Reply::Status(status))
            }
            Op::Shutdown if self.config.allow_remote_shutdown => {
                self.reply_done(i, id);
                debug!("connection {}: remote shutdown", i);
                self.shutdown(self.now);
                None
            }
            Op::Shutdown => Some(Reply::Error(ErrorCode::NotAllowed)),
            #[cfg(feature = "backend")]
            Op::BackendStatus => {
                self.backend_status(i, id);
                None
            }
            #[cfg(not(feature = "backend"))]
            Op::BackendStatus => Some(Reply::Backend(None)),
            Op::CreateObject {
                name,
                kind,
                spec,
                exist_ok,
            } => Some(self.create_object(name, kind, spec, exist_ok)),
            Op::Act { handle, action } if handle == Handle::CLOSE => self.close_call(i, id, action),
            Op::Act { handle, action } => {
                self.act(i, id, handle, action);
                None
            }
        };
        if let Some(reply) = reply {
            self.reply(i, id, &reply);
        }
        Step::Done
    }

    fn create(
        &mut self,
        name: &str,
        spec: crate::wire::QueueSpec,
        exist_ok: bool,
    ) -> Reply<'static> {
        if !cfg!(feature = "create") || !self.config.allow_create {
            return Reply::Error(ErrorCode::NotAllowed);
        }
        if exist_ok {
            if let Some(handle) = self.registry.find(name) {
                return self
                    .registry
                    .info(handle)
                    .map_or(Reply::Error(ErrorCode::NoSuchObject), Reply::Opened);
            }
        }
        match self
            .registry
            .create(name, crate::wire::ObjectKind::Queue, spec)
        {
            Ok(handle) => {
                note(&mut self.journal, |j| j.created(handle, name, spec));
                #[cfg(feature = "backend")]
                self.backend_created(handle, name, spec);
                self.registry
                    .info(handle)
                    .map_or(Reply::Error(ErrorCode::NoSuchObject), Reply::Opened)
            }
            Err(e) => Reply::Error(e),
        }
    }

    /// The largest item body a reply on connection `i` can carry.
    fn item_fit(&self, i: usize) -> usize {
        self.conns.get(i).map_or(0, |c| {
            c.peer_max.saturating_sub(TAG_LEN + ITEM_REPLY_OVERHEAD)
        })
    }

    /// The most packed bytes a `GetMany` reply carries on connection `i` beyond its first
    /// item: a quarter of the connection's output, so a batch never crowds out other replies.
    fn many_cap(&self, i: usize) -> usize {
        let capacity = self.conns.get(i).map_or(0, |c| c.tx.capacity());
        (capacity / 4).saturating_sub(HEADER_LEN + TAG_LEN + ITEM_REPLY_OVERHEAD)
    }

    /// Output bytes a get on `handle` may need on connection `i` whenever it is answered.
    fn get_reply_bound(&mut self, i: usize, handle: Handle, take: Take) -> usize {
        #[cfg(feature = "python")]
        if matches!(self.conns[i].state, State::Python { .. }) {
            // The worst case is three pickle bytes per stored byte; real items take about
            // one. Reserve no more than the output can hold: a reply that turns out larger is
            // refused with `TooLarge` and its item stays queued.
            let cap = self.conns[i].tx.capacity();
            let most = cap.saturating_sub(TAG_LEN + SMALL_REPLY_BOUND);
            return match self.registry.queue(handle) {
                Ok(q) => crate::python::conn::item_reply_bound(q.queue.spec().max_item as usize)
                    .min(most),
                Err(_) => crate::python::conn::SMALL_REPLY_BOUND,
            };
        }
        let fit = self.item_fit(i);
        let cap = self.many_cap(i);
        match self.registry.queue(handle) {
            Ok(q) => {
                let max_item = q.queue.spec().max_item as usize;
                let body = match take {
                    Take::One => max_item,
                    Take::Many { max_bytes, .. } => (max_bytes as usize)
                        .min(cap)
                        .max(Items::packed_len(max_item)),
                    Take::Leased { max_bytes, .. } => {
                        let body = (max_bytes as usize)
                            .min(cap)
                            .max(Items::packed_len(max_item) + 1);
                        return leasing::reply_bound(body.min(self.lease_fit(i)));
                    }
                };
                item_reply_bound(body.min(fit))
            }
            Err(_) => SMALL_REPLY_BOUND,
        }
    }

    /// Output bytes a get on `handle` needs on connection `i` if answered now: the items it
    /// would take, or a small reply (an error, or none at all when it parks).
    fn get_reply_now(&mut self, i: usize, handle: Handle, take: Take) -> usize {
        #[cfg(feature = "python")]
        if matches!(self.conns[i].state, State::Python { .. }) {
            let small = crate::python::conn::SMALL_REPLY_BOUND;
            let most = self.conns[i].tx.capacity().saturating_sub(TAG_LEN);
            return match self.registry.queue(handle).map(|q| q.queue.front_len()) {
                Ok(Some(len)) => crate::python::conn::item_reply_bound(len)
                    .min(most)
                    .max(small),
                _ => small,
            };
        }
        match (self.plan_take(i, handle, take), take) {
            (Some((_, body)), Take::Leased { .. }) => {
                leasing::reply_bound(body).max(SMALL_REPLY_BOUND)
            }
            (Some((_, body)), _) => item_reply_bound(body).max(SMALL_REPLY_BOUND),
            (None, _) => SMALL_REPLY_BOUND,
        }
    }

    /// What a get on `handle` takes now for connection `i`: `(items, reply body bytes)`, or
    /// `None` when the queue is empty or its first item does not fit a frame to the peer. A
    /// leased get's body counts a byte per item for its delivery count.
    fn plan_take(&mut self, i: usize, handle: Handle, take: Take) -> Option<(u32, usize)> {
        let (fit, per_item) = match take {
            Take::Leased { .. } => (self.lease_fit(i), 1),
            _ => (self.item_fit(i), 0),
        };
        let cap = self.many_cap(i);
        let q = self.registry.queue(handle).ok()?;
        let first = q.queue.front_len()?;
        match take {
            Take::One => (first <= fit).then_some((1, first)),
            Take::Many {
                max_items,
                max_bytes,
            }
            | Take::Leased {
                max_items,
                max_bytes,
                ..
            } => {
                // A leased get takes no more items than the lease store has records for.
                let max_items = match take {
                    Take::Leased { .. } => max_items.min(self.leases.free_slots().max(1)),
                    _ => max_items,
                };
                let mut count = 0u32;
                let mut bytes = 0usize;
                for (a, b) in q.queue.iter() {
                    let packed = Items::packed_len(a.len() + b.len()) + per_item;
                    let limit = if count == 0 {
                        fit
                    } else {
                        (max_bytes as usize).min(cap).min(fit)
                    };
                    if count >= max_items || bytes + packed > limit {
                        break;
                    }
                    count += 1;
                    bytes += packed;
                }
                (count > 0).then_some((count, bytes))
            }
        }
    }

    /// Answers or parks a put: `(items applied now, parked)`.
    fn put(&mut self, i: usize, id: u32, handle: Handle, item: &[u8], wait: Wait) -> (u32, bool) {
        let refuse = |m: &mut Self, code| {
            m.reply_error(i, id, code);
            (0, false)
        };
        if self.shutting_down {
            return refuse(self, ErrorCode::ShuttingDown);
        }
        let q = match self.registry.queue(handle) {
            Ok(q) => q,
            Err(e) => return refuse(self, e),
        };
        if item.len() > q.queue.spec().max_item as usize {
            return refuse(self, ErrorCode::TooLarge);
        }
        if !fits_mode(q.queue.spec(), item) {
            return refuse(self, ErrorCode::InvalidValue);
        }
        // Fair: nobody overtakes a blocked putter.
        if q.putters.len() == 0 && q.queue.push(item).is_ok() {
            note(&mut self.journal, |j| j.appended(handle, item));
            self.reply_done(i, id);
            self.settle(handle);
            return (1, false);
        }
        let deadline = match park_timeout(wait, ErrorCode::Full) {
            Ok(deadline) => deadline,
            Err(code) => return refuse(self, code),
        };
        let Some(parked) = self.parked.store(item, &|x| self.waiters.holds_parked(x)) else {
            return refuse(self, ErrorCode::WaiterLimit);
        };
        let waiter = Waiter {
            hold: Hold::Item(parked),
            ..Waiter::EMPTY
        };
        if !self.park(i, id, handle, WaitKind::Put, deadline, waiter) {
            self.parked.free(parked);
            return (0, false);
        }
        (0, true)
    }

    /// Answers or parks a batch put, counting `already` items applied before (by an earlier
    /// try of the same numbered batch): `(items applied now, parked)`.
    fn put_many(
        &mut self,
        i: usize,
        id: u32,
        handle: Handle,
        items: Items,
        wait: Wait,
        already: u32,
    ) -> (u32, bool) {
        let Some(total) = items.check() else {
            self.begin_close(i, CloseReason::Malformed);
            return (0, false);
        };
        let answer = |count: u32, error| Reply::Accepted {
            count: already + count,
            error,
        };
        if self.shutting_down {
            self.reply(i, id, &answer(0, Some(ErrorCode::ShuttingDown)));
            return (0, false);
        }
        let q = match self.registry.queue(handle) {
            Ok(q) => q,
            Err(e) => {
                self.reply(i, id, &answer(0, Some(e)));
                return (0, false);
            }
        };
        let (count, offset, error) = if q.putters.len() == 0 {
            push_items(&mut q.queue, items.0, &mut self.journal, handle)
        } else {
            (0, 0, None)
        };
        if error.is_some() || count == total {
            self.reply(i, id, &answer(count, error));
            self.settle(handle);
            return (count, false);
        }
        let deadline = match park_timeout(wait, ErrorCode::Full) {
            Ok(deadline) => deadline,
            Err(code) => {
                self.reply(i, id, &answer(count, Some(code)));
                self.settle(handle);
                return (count, false);
            }
        };
        let Some(parked) = self
            .parked
            .store(items.0.get(offset..).unwrap_or_default(), &|x| {
                self.waiters.holds_parked(x)
            })
        else {
            self.reply(i, id, &answer(count, Some(ErrorCode::WaiterLimit)));
            self.settle(handle);
            return (count, false);
        };
        let waiter = Waiter {
            hold: Hold::Items {
                parked,
                offset: 0,
                accepted: already + count,
            },
            ..Waiter::EMPTY
        };
        let parked_now = self.park(i, id, handle, WaitKind::Put, deadline, waiter);
        if !parked_now {
            self.parked.free(parked);
        }
        self.settle(handle);
        (count, parked_now)
    }

    fn get(&mut self, i: usize, id: u32, handle: Handle, wait: Wait, take: Take) {
        let q = match self.registry.queue(handle) {
            Ok(q) => q,
            Err(e) => return self.reply_error(i, id, e),
        };
        if !q.queue.is_empty() {
            self.deliver(i, id, handle, take);
            return self.settle(handle);
        }
        if self.shutting_down {
            return self.reply_error(i, id, ErrorCode::ShuttingDown);
        }
        let deadline = match park_timeout(wait, ErrorCode::Empty) {
            Ok(deadline) => deadline,
            Err(code) => return self.reply_error(i, id, code),
        };
        let reserve = self.get_reply_bound(i, handle, take);
        let hold = match take {
            Take::One => Hold::Nothing,
            Take::Many {
                max_items,
                max_bytes,
            } => Hold::Take {
                max_items,
                max_bytes,
            },
            Take::Leased {
                max_items,
                max_bytes,
                lease_ms,
            } => Hold::Lease {
                max_items,
                max_bytes,
                lease_ms,
            },
        };
        let waiter = Waiter {
            reserve: reserve as u32,
            hold,
            ..Waiter::EMPTY
        };
        self.park(i, id, handle, WaitKind::Get, deadline, waiter);
    }

    /// Withdraws connection `i`'s blocked request `target`, if it is still blocked.
    fn cancel(&mut self, i: usize, target: u32) {
        #[cfg(feature = "backend")]
        if self.backend_cancel(i, target) {
            return;
        }
        let found = self.waiters.find_from(0, |w| {
            w.conn == i as u32 && w.request == target && w.kind != WaitKind::Held
        });
        if let Some(w) = found {
            let waiter = *self.waiters.get(w);
            self.fail_waiter(w, ErrorCode::Cancelled);
            self.waiter_left(waiter);
            if waiter.kind == WaitKind::Put {
                // A withdrawn putter may have held back others behind it.
                self.settle(Handle(waiter.object));
            }
        }
    }

    /// Puts an item a client gave up on back at the head of its queue. When the queue's
    /// storage has been taken meanwhile, the item waits at the front of the blocked puts,
    /// owned by no connection, so it is not lost when the returning client goes away.
    fn return_item(&mut self, handle: Handle, item: &[u8]) -> Reply<'static> {
        #[cfg(feature = "backend")]
        if let Some(reply) = self.backend_return(handle, item) {
            return reply;
        }
        let q = match self.registry.queue(handle) {
            Ok(q) => q,
            Err(e) => return Reply::Error(e),
        };
        if item.len() > q.queue.spec().max_item as usize {
            return Reply::Error(ErrorCode::TooLarge);
        }
        // A client says where the item came from: what any put must be, it must be too.
        if !fits_mode(q.queue.spec(), item) {
            return Reply::Error(ErrorCode::InvalidValue);
        }
        if q.queue.push_front(item) {
            note(&mut self.journal, |j| j.returned(handle, item));
            self.settle(handle);
            return Reply::Done;
        }
        // Within the park budget like any blocked put, so returns cannot pin unbounded memory.
        let Some(parked) = self.parked.store(item, &|x| self.waiters.holds_parked(x)) else {
            warn!("an item given back could not be kept: no room to park it");
            return Reply::Error(ErrorCode::WaiterLimit);
        };
        let waiter = Waiter {
            conn: NONE,
            object: handle.0,
            kind: WaitKind::Put,
            hold: Hold::Item(parked),
            ..Waiter::EMPTY
        };
        let Ok(q) = self.registry.queue(handle) else {
            return Reply::Error(ErrorCode::NoSuchObject);
        };
        if self.waiters.park_front(&mut q.putters, waiter).is_none() {
            self.parked.free(parked);
            warn!("an item given back could not be kept: no waiter slot");
            return Reply::Error(ErrorCode::WaiterLimit);
        }
        note(&mut self.journal, |j| j.held(handle, item));
        Reply::Done
    }

    fn task_done(&mut self, handle: Handle) -> Reply<'static> {
        let q = match self.registry.queue(handle) {
            Ok(q) => q,
            Err(e) => return Reply::Error(e),
        };
        if q.queue.task_done().is_err() {
            return Reply::Error(ErrorCode::TaskDoneTooMany);
        }
        if q.queue.unfinished() == 0 {
            while let Some(w) = self
                .registry
                .queue(handle)
                .ok()
                .and_then(|q| q.joiners.front())
            {
                self.finish_waiter(w, &Reply::Done);
            }
        }
        Reply::Done
    }

    fn join(&mut self, i: usize, id: u32, handle: Handle, wait: Wait) {
        let unfinished = match self.registry.queue(handle) {
            Ok(q) => q.queue.unfinished(),
            Err(e) => return self.reply_error(i, id, e),
        };
        if unfinished == 0 {
            return self.reply_done(i, id);
        }
        let deadline = match park_timeout(wait, ErrorCode::Timeout) {
            Ok(deadline) => deadline,
            Err(code) => return self.reply_error(i, id, code),
        };
        self.park(i, id, handle, WaitKind::Join, deadline, Waiter::EMPTY);
    }

    /// Parks request `id` of connection `i` (with the extra fields of `waiter`); answers
    /// `WaiterLimit` when there is no room. `true` if parked.
    fn park(
        &mut self,
        i: usize,
        id: u32,
        handle: Handle,
        kind: WaitKind,
        timeout_ms: Option<u32>,
        waiter: Waiter,
    ) -> bool {
        let Some(c) = self.conns.get(i) else {
            return false;
        };
        // Keep room for one more ordinary reply, so the connection never pauses for good.
        let room = c.tx.capacity().saturating_sub(TAG_LEN + SMALL_REPLY_BOUND);
        let reserve = waiter.reserve.max(SMALL_REPLY_BOUND as u32) as usize;
        if c.waiters >= self.config.max_waiters_per_connection || c.reserved + reserve > room {
            self.reply_error(i, id, ErrorCode::WaiterLimit);
            return false;
        }
        // One millisecond more than asked: the request arrived part-way through the
        // millisecond the clock reads now, so `now + ms` could come up to a millisecond short
        // of `ms` by a finer clock (the caller's).
        let deadline = timeout_ms.map(|ms| self.now.add_millis(u64::from(ms) + 1));
        let mut waiter = Waiter {
            conn: i as u32,
            request: id,
            object: handle.0,
            kind,
            reserve: reserve as u32,
            ..waiter
        };
        waiter.set_deadline(deadline);
        let Some(object) = self.registry.get(handle) else {
            return false;
        };
        if self.waiters.park(object.list(kind), waiter).is_none() {
            self.reply_error(i, id, ErrorCode::WaiterLimit);
            return false;
        }
        if let Some(c) = self.conns.get_mut(i) {
            c.waiters += 1;
            c.reserved += reserve;
        }
        true
    }

    /// Moves parked puts in and hands items to parked getters while either can progress.
    fn settle(&mut self, handle: Handle) {
        loop {
            let Ok(q) = self.registry.queue(handle) else {
                return;
            };
            if let Some(w) = q.putters.front() {
                let hold = self.waiters.get(w).hold;
                let parked = hold.parked().map_or(&[][..], |r| self.parked.get(r));
                if let Hold::Items {
                    parked: at,
                    offset,
                    accepted,
                } = hold
                {
                    let rest = parked.get(offset as usize..).unwrap_or(&[]);
                    let (count, used, error) =
                        push_items(&mut q.queue, rest, &mut self.journal, handle);
                    let accepted = accepted + count;
                    let offset = offset + used as u32;
                    let hold = Hold::Items {
                        parked: at,
                        offset,
                        accepted,
                    };
                    self.waiters.set_hold(w, hold);
                    let finished = error.is_some() || offset as usize >= parked.len();
                    self.session_progress(w, accepted);
                    if finished {
                        let reply = Reply::Accepted {
                            count: accepted,
                            error,
                        };
                        self.finish_waiter(w, &reply);
                        continue;
                    }
                } else if q.queue.push(parked).is_ok() {
                    // An item given back to a full queue waits owned by no connection.
                    if self.waiters.get(w).conn == NONE {
                        note(&mut self.journal, |j| j.held_entered(handle, parked));
                    } else {
                        note(&mut self.journal, |j| j.appended(handle, parked));
                    }
                    self.session_progress(w, 1);
                    self.finish_waiter(w, &Reply::Done);
                    continue;
                }
            }
            let Ok(q) = self.registry.queue(handle) else {
                return;
            };
            if q.queue.is_empty() {
                return;
            }
            let Some(w) = q.getters.front() else { return };
            let waiter = *self.waiters.get(w);
            self.release(w);
            let take = match waiter.hold {
                Hold::Take {
                    max_items,
                    max_bytes,
                } => Take::many(max_items, max_bytes),
                Hold::Lease {
                    max_items,
                    max_bytes,
                    lease_ms,
                } => Take::leased(max_items, max_bytes, lease_ms),
                _ => Take::One,
            };
            self.deliver(waiter.conn as usize, waiter.request, handle, take);
        }
    }

    /// Takes the oldest items of `handle` into a reply to request `id` on connection `i`.
    /// An item the connection's frames cannot carry stays queued and the request gets `TooLarge`.
    fn deliver(&mut self, i: usize, id: u32, handle: Handle, take: Take) {
        #[cfg(feature = "python")]
        if matches!(self.conns[i].state, State::Python { .. }) {
            self.python_deliver(i, handle);
            return;
        }
        let Some((count, body)) = self.plan_take(i, handle, take) else {
            let empty = self
                .registry
                .queue(handle)
                .map_or(true, |q| q.queue.is_empty());
            if !empty {
                self.reply_error(i, id, ErrorCode::TooLarge);
            }
            return;
        };
        if let Take::Leased { lease_ms, .. } = take {
            return self.deliver_leased(i, id, handle, count, body, lease_ms);
        }
        let Ok(q) = self.registry.queue(handle) else {
            return;
        };
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let State::Open(session) = &mut c.state else {
            return;
        };
        let was_idle = c.tx.is_empty();
        let queue = &q.queue;
        let pushed =
            c.tx.push_with(c.peer_max, &mut session.tx_mac, &mut |out| match take {
                Take::One => {
                    let (a, b) = queue.front()?;
                    encode_item_reply(out, id, handle, a, b)
                }
                _ => encode_items_reply(out, id, handle, queue.iter().take(count as usize), body),
            });
        match pushed {
            Ok(()) => {
                for _ in 0..count {
                    q.queue.pop_front();
                }
                note(&mut self.journal, |j| j.removed(handle, count));
                self.output_queued(i, was_idle);
            }
            Err(_) => self.begin_close(i, CloseReason::WriteStalled),
        }
    }

    /// Unparks waiter `w` and answers it with `reply`.
    fn finish_waiter(&mut self, w: u32, reply: &Reply) {
        let waiter = *self.waiters.get(w);
        self.release(w);
        // A `Held` record answers nobody: it is not a request.
        if waiter.conn != NONE && waiter.kind != WaitKind::Held {
            self.reply(waiter.conn as usize, waiter.request, reply);
        }
    }

    /// Unparks waiter `w` and answers it with the error `code` (a `PutMany` learns how many of
    /// its items went in).
    fn fail_waiter(&mut self, w: u32, code: ErrorCode) {
        let waiter = *self.waiters.get(w);
        let reply = match waiter.hold {
            Hold::Items { accepted, .. } => Reply::Accepted {
                count: accepted,
                error: Some(code),
            },
            _ => Reply::Error(code),
        };
        self.finish_waiter(w, &reply);
    }

    /// Unparks waiter `w` without answering: frees its slot, reservation and parked items.
    fn release(&mut self, w: u32) {
        let waiter = *self.waiters.get(w);
        let Some(object) = self.registry.get(Handle(waiter.object)) else {
            return;
        };
        self.waiters.remove(object.list(waiter.kind), w);
        if let Some(parked) = waiter.hold.parked() {
            self.parked.free(parked);
        }
        if let Some(c) = self.conns.get_mut(waiter.conn as usize) {
            c.waiters -= 1;
            c.reserved -= waiter.reserve as usize;
            if waiter.kind == WaitKind::Put {
                self.session_stop_waiting(waiter.conn as usize, waiter.request);
            }
        }
    }

    /// Drops connection `i`'s blocked requests without answering them.
    fn cancel_waiters(&mut self, i: usize) {
        #[cfg(feature = "backend")]
        self.backend_drop_conn(i);
        let mut cancelled_put = false;
        let mut from = 0;
        while self.conns.get(i).is_some_and(|c| c.waiters > 0) {
            // Holdings go last (`drop_holdings`), so that no permit they free is granted to
            // this connection's own blocked requests.
            let mine = |w: &Waiter| w.conn == i as u32 && w.kind != WaitKind::Held;
            let Some(w) = self.waiters.find_from(from, mine) else {
                break;
            };
            from = w + 1;
            let waiter = *self.waiters.get(w);
            cancelled_put |= waiter.kind == WaitKind::Put;
            self.release(w);
            self.waiter_left(waiter);
        }
        // What is left are holdings; none (as after a shutdown) costs no pass over the pool.
        if self.conns.get(i).is_some_and(|c| c.waiters > 0) {
            self.drop_holdings(i);
        }
        if cancelled_put {
            // A cancelled putter may have held back smaller puts behind it.
            for h in 0..self.registry.len() {
                self.settle(Handle(h as u16));
            }
        }
    }

    /// Empties connection `i`'s output, giving the items of replies that never wholly left it
    /// back to the head of their queues, in their order.
    fn give_back_unsent(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let mut tx = core::mem::replace(&mut c.tx, TxBuf::new(Managed::empty()));
        tx.open_unsent();
        // Last first, so each queue gets them back at its head in their order.
        let mut given = 0usize;
        #[cfg(feature = "alloc")]
        {
            let mut replies = alloc::vec::Vec::new();
            each_unsent(&tx, &mut |handle, items| replies.push((handle, items)));
            for &(handle, items) in replies.iter().rev() {
                given += self.give_back_items(handle, items);
            }
        }
        // Without a heap, each is found by a fresh pass: a lent output holds few replies.
        #[cfg(not(feature = "alloc"))]
        visit_last_first::<(Handle, ItemsOf<'_>)>(
            &|f| each_unsent(&tx, &mut |h, items| f((h, items))),
            &mut |(handle, items)| given += self.give_back_items(handle, items),
        );
        if given > 0 {
            debug!("connection {}: {} unsent items given back", i, given);
        }
        tx.clear();
        if let Some(c) = self.conns.get_mut(i) {
            c.tx = tx;
        }
    }

    /// Gives `items` back to the head of `handle`'s queue, last first; how many.
    fn give_back_items(&mut self, handle: Handle, items: ItemsOf) -> usize {
        let mut given = 0;
        for k in (0..items.len()).rev() {
            if let Some(item) = items.nth(k) {
                self.return_item(handle, item);
                given += 1;
            }
        }
        given
    }

    /// Queues `reply` to request `id` on connection `i`.
    fn reply(&mut self, i: usize, id: u32, reply: &Reply) {
        #[cfg(feature = "python")]
        if matches!(self.conns[i].state, State::Python { .. }) {
            self.python_reply(i, reply);
            return;
        }
        // A request sent unanswered hears back only when it failed: a `Done` would be a frame
        // (and, on a host, a send and a wake-up of the client) for nothing.
        if id == crate::wire::UNANSWERED_ID && matches!(reply, Reply::Done) {
            return;
        }
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let State::Open(session) = &mut c.state else {
            return;
        };
        let msg = Message::Reply { id, reply: *reply };
        let was_idle = c.tx.is_empty();
        if c.tx.push(&msg, c.peer_max, &mut session.tx_mac).is_err() {
            warn!("connection {}: no room for a reply", i);
            self.begin_close(i, CloseReason::WriteStalled);
            return;
        }
        self.output_queued(i, was_idle);
    }

    /// [`Manager::reply`] with `Reply::Error(code)`. Built here, out of line: each
    /// `&Reply::Error(ErrorCode::…)` at a caller would be a constant `Reply` of its own in
    /// firmware's flash (72 bytes each).
    #[inline(never)]
    fn reply_error(&mut self, i: usize, id: u32, code: ErrorCode) {
        self.reply(i, id, &Reply::Error(code));
    }

    /// [`Manager::reply`] with `Reply::Done` (out of line, as [`Manager::reply_error`]).
    #[inline(never)]
    fn reply_done(&mut self, i: usize, id: u32) {
        self.reply(i, id, &Reply::Done);
    }

    /// Marks connection `i` for the transport and, if its output was idle, starts the clock
    /// on the peer reading it.
    fn output_queued(&mut self, i: usize, was_idle: bool) {
        if let (true, Some(c)) = (was_idle, self.conns.get_mut(i)) {
            c.tx_progress = self.now;
            let stall = self
                .now
                .add_millis(self.config.write_stall_timeout_ms.into());
            self.arm(i, stall);
        }
        self.link(List::Ready, i);
    }

    /// Stops reading connection `i`, cancels its waiters and tells the peer why, if it can.
    fn begin_close(&mut self, i: usize, reason: CloseReason) {
        if !matches!(self.conns.get(i), Some(c) if !matches!(c.state, State::Free | State::Closing(_)))
        {
            return;
        }
        debug!("connection {}: closing: {}", i, reason);
        self.cancel_waiters(i);
        self.leave_handshake(i);
        let now = self.now;
        let stall = u64::from(self.config.write_stall_timeout_ms);
        if reason == CloseReason::WriteStalled {
            // The peer is not reading, so nothing more will drain: drop the output (a
            // `Closing` behind it would never be read either), giving its items back.
            self.give_back_unsent(i);
        }
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if let (false, State::Open(session)) = (reason == CloseReason::WriteStalled, &mut c.state) {
            let was_idle = c.tx.is_empty();
            let peer_max = c.peer_max;
            let _ =
                c.tx.push(&Message::Closing(reason), peer_max, &mut session.tx_mac);
            c.tx.seal(&mut session.tx_mac);
            if was_idle && !c.tx.is_empty() {
                // The farewell gets the usual time to be read (see `handle_timeout`).
                c.tx_progress = now;
            }
        }
        let closing_output = !c.tx.is_empty();
        c.state = State::Closing(reason);
        c.rx.clear();
        c.cursor = 0;
        c.frame_deadline = None;
        if closing_output {
            let deadline = c.tx_progress.add_millis(stall);
            self.arm(i, deadline);
        }
        self.link(List::Ready, i);
    }
}

/// Identifies an authkey (to tell whether a reloaded default key is the same one) without
/// keeping the key itself.
#[cfg(feature = "keyring")]
fn key_id(authkey: &[u8]) -> [u8; 32] {
    crate::auth::hmac_sha256(authkey, b"depot key identity")
}

/// The `index`-th object `key` may see (`None`: every object), with its statistics.
fn visible_stat<'r>(
    registry: &'r Registry,
    key: Option<&Key>,
    index: u16,
) -> Option<ObjectStat<'r>> {
    let Some(key) = key else {
        return registry.stat(index);
    };
    (0..=u16::MAX)
        .map_while(|n| registry.stat(n))
        .filter(|s| key.rights(s.name).contains(Rights::ADMIN))
        .nth(index.into())
}

/// How many objects `key` may see.
fn count_visible(registry: &Registry, key: &Key) -> u32 {
    (0..=u16::MAX)
        .map_while(|n| registry.stat(n))
        .filter(|s| key.rights(s.name).contains(Rights::ADMIN))
        .count() as u32
}

/// Calls `f` with each item reply in `tx` that never wholly left it, in order, as packed
/// lists (a single item is read as a list of one). `dyn`: one copy serves every caller.
fn each_unsent<'t>(tx: &'t TxBuf, f: &mut dyn FnMut(Handle, ItemsOf<'t>)) {
    for body in tx.unsent() {
        let mut reader = crate::codec::Reader::new(body);
        while let Some(message) = reader.message() {
            match message {
                Message::Reply {
                    reply: Reply::Item { handle, item },
                    ..
                } => f(handle, ItemsOf::One(item)),
                Message::Reply {
                    reply: Reply::Items { handle, items },
                    ..
                } => f(handle, ItemsOf::Many(items)),
                _ => {}
            }
        }
    }
}

/// Something handed each visited element in turn.
#[cfg(any(test, not(feature = "alloc")))]
type Visitor<'v, T> = dyn FnMut(T) + 'v;

/// Calls `f` with what `each` visits, last first, without a heap: `each` runs once to count
/// and once more per element (quadratic, for the few replies of a lent output).
#[cfg(any(test, not(feature = "alloc")))]
fn visit_last_first<T>(each: &dyn Fn(&mut Visitor<T>), f: &mut Visitor<T>) {
    let mut count = 0usize;
    each(&mut |_| count += 1);
    for n in (0..count).rev() {
        let (mut seen, mut found) = (0usize, None);
        each(&mut |x| {
            if seen == n {
                found = Some(x);
            }
            seen += 1;
        });
        if let Some(x) = found {
            f(x);
        }
    }
}

/// One item, or a packed list of them.
#[derive(Clone, Copy)]
enum ItemsOf<'t> {
    One(&'t [u8]),
    Many(Items<'t>),
}

impl<'t> ItemsOf<'t> {
    fn len(self) -> usize {
        match self {
            ItemsOf::One(_) => 1,
            ItemsOf::Many(items) => items.iter().count(),
        }
    }

    fn nth(self, k: usize) -> Option<&'t [u8]> {
        match self {
            ItemsOf::One(item) => (k == 0).then_some(item),
            ItemsOf::Many(items) => items.iter().nth(k),
        }
    }
}

#[cfg(feature = "python")]
impl Manager<'_> {
    /// Runs the next whole frame of Python connection `i`. `true` if one was consumed.
    fn process_python(&mut self, i: usize) -> bool {
        use crate::python::conn::{Step as PyStep, SMALL_REPLY_BOUND as PY_SMALL};
        use crate::python::frame::{peek, Peek as PyPeek};
        let limit = self.max_frame(i);
        let c = &mut self.conns[i];
        let State::Python { py, .. } = &mut c.state else {
            return false;
        };
        if py.is_busy() {
            // Python sends nothing while a call is out; anything more waits for its answer.
            return false;
        }
        let (header, body) = match peek(c.rx.bytes(), py.max_body(limit)) {
            PyPeek::Partial => return false,
            PyPeek::TooLarge => {
                self.begin_close(i, CloseReason::FrameTooLarge);
                return false;
            }
            PyPeek::Invalid => {
                self.begin_close(i, CloseReason::Malformed);
                return false;
            }
            PyPeek::Frame { header, body } => (header, body),
        };
        if c.tx.free() < c.reserved + PY_SMALL {
            // Room comes back as output drains.
            return false;
        }
        let Some(side) = self.python.as_mut() else {
            return false;
        };
        let Some((mut store, mut item)) = side.request.take() else {
            return false;
        };
        let mut scratch = store.scratch();
        let rx = core::mem::replace(&mut c.rx, RxBuf::new(Managed::empty()));
        let frame = &rx.bytes()[header..header + body];
        let mut out = [0u8; PY_SMALL];
        let step = py.handle_frame(&side.key, frame, &mut scratch, &mut item, &mut out);
        let done = if py.is_authenticated() {
            CloseReason::PeerClosed
        } else {
            CloseReason::AuthFailed
        };
        let (consumed, close) = match step {
            PyStep::Send { len, close } => {
                let was_idle = c.tx.is_empty();
                let pushed = c.tx.push_raw(len, |dst| {
                    dst.get_mut(..len)?.copy_from_slice(&out[..len]);
                    Some(len)
                });
                match pushed {
                    Ok(()) => {
                        self.output_queued(i, was_idle);
                        (true, close.then_some(done))
                    }
                    Err(_) => (true, Some(CloseReason::WriteStalled)),
                }
            }
            PyStep::Wait => (true, None),
            // Only a reply leads to a stop.
            PyStep::Stop => (true, Some(CloseReason::Unexpected)),
            PyStep::Close(why) => {
                debug!("connection {}: python client closed: {:?}", i, why);
                let reason = match why {
                    crate::python::PyClose::AuthFailed => {
                        // Counted against the source like a depot proof (Python's client
                        // expects its verdict at once, so it is not held back).
                        let peer = c.peer.get(..c.peer_len as usize).unwrap_or_default();
                        let throttle = &self.config.throttle;
                        self.throttle
                            .failed(throttle, peer, KeyName::DEFAULT, self.now);
                        CloseReason::AuthFailed
                    }
                    _ => CloseReason::Unexpected,
                };
                (true, Some(reason))
            }
            PyStep::Execute(op) => match self.handle_request(i, Request { id: 0, op }) {
                Step::Done => (true, None),
                Step::Paused => {
                    if let State::Python { py, .. } = &mut self.conns[i].state {
                        py.retry();
                    }
                    (false, None)
                }
            },
        };
        if let Some(side) = self.python.as_mut() {
            side.request = Some((store, item));
        }
        let c = &mut self.conns[i];
        c.rx = rx;
        if consumed {
            c.rx.consume(header + body);
        }
        if let Some(reason) = close {
            // A one-shot exchange is over (Python's manager closes first), or it failed.
            self.begin_close(i, reason);
            return false;
        }
        if matches!(&self.conns[i].state, State::Python { py, .. } if py.is_authenticated()) {
            // Proven: no longer a handshake that admission control may evict.
            self.leave_handshake(i);
        }
        consumed && !matches!(self.conns[i].state, State::Closing(_))
    }

    /// Writes `reply` for Python connection `i`; `false` (and the connection closes) if it
    /// could not be queued.
    fn python_reply(&mut self, i: usize, reply: &Reply) -> bool {
        if self.python_push(i, reply) {
            return true;
        }
        self.begin_close(i, CloseReason::WriteStalled);
        false
    }

    /// Queues `reply` for Python connection `i`; `false` if it does not fit the output (the
    /// connection's Python state is then unchanged).
    fn python_push(&mut self, i: usize, reply: &Reply) -> bool {
        use crate::python::conn::Step as PyStep;
        let Some(side) = self.python.as_mut() else {
            return false;
        };
        let c = &mut self.conns[i];
        let State::Python { py, .. } = &mut c.state else {
            return false;
        };
        let was_idle = c.tx.is_empty();
        let mut close = None;
        let mut stop = false;
        let need = match reply {
            Reply::Item { item, .. } | Reply::Value(item) => {
                crate::python::conn::item_reply_bound(item.len())
            }
            // A list adds a few bytes per entry to what its values take.
            Reply::Values(items) => crate::python::conn::item_reply_bound(2 * items.0.len()),
            _ => crate::python::conn::SMALL_REPLY_BOUND,
        };
        let pushed = c.tx.push_raw(need, |out| {
            match py.handle_reply(reply, &mut side.reply.scratch(), out) {
                PyStep::Send { len, close: last } => {
                    close = last.then_some(CloseReason::PeerClosed);
                    Some(len)
                }
                PyStep::Stop => {
                    stop = true;
                    None
                }
                _ => None,
            }
        });
        if stop {
            // Nothing was written; the answer is the stop's.
            let answer = match self.remote_stop_allowed(i) {
                Ok(()) => self.python_stop(),
                Err(code) => Reply::Error(code),
            };
            return self.python_push(i, &answer);
        }
        if pushed.is_err() {
            return false;
        }
        self.output_queued(i, was_idle);
        if let Some(reason) = close {
            // A one-shot exchange is over: Python's manager closes first.
            self.begin_close(i, reason);
        }
        true
    }

    /// A Python client's remote stop (a registered `close`/`stop`), once granted
    /// (`remote_stop_allowed`): begun after a grace that lets the client's follow-up
    /// `incref`/`decref` connections be served.
    fn python_stop(&mut self) -> Reply<'static> {
        if !self.shutting_down && self.stop_at.is_none() {
            let at = self
                .now
                .add_millis(u64::from(crate::python::conn::STOP_GRACE_MS));
            self.stop_at = Some(at);
        }
        Reply::Done
    }

    /// Takes the oldest item of `handle` into a reply on Python connection `i`; an item
    /// larger than the join buffer stays queued and the call fails with `TooLarge`.
    fn python_deliver(&mut self, i: usize, handle: Handle) {
        let Some(side) = self.python.as_mut() else {
            return;
        };
        let Ok(q) = self.registry.queue(handle) else {
            return;
        };
        let Some((a, b)) = q.queue.front() else {
            return;
        };
        let len = a.len() + b.len();
        let Some(join) = side.join.get_mut(..len) else {
            self.python_reply(i, &Reply::Error(ErrorCode::TooLarge));
            return;
        };
        join[..a.len()].copy_from_slice(a);
        join[a.len()..].copy_from_slice(b);
        // The join buffer is lent to the reply; take it out of `self` meanwhile.
        let join = core::mem::replace(&mut side.join, Managed::empty());
        let sent = self.python_push(
            i,
            &Reply::Item {
                handle,
                item: &join[..len],
            },
        );
        if let Some(side) = self.python.as_mut() {
            side.join = join;
        }
        if sent {
            if let Ok(q) = self.registry.queue(handle) {
                if q.queue.pop_front() {
                    note(&mut self.journal, |j| j.removed(handle, 1));
                }
            }
        } else {
            // The reply does not fit this connection's output: the item stays queued.
            self.python_reply(i, &Reply::Error(ErrorCode::TooLarge));
        }
    }
}

/// How long a request that cannot complete now may stay parked, in milliseconds (`None`:
/// forever); `Err` is the answer it gets at once instead (`at_once` for `NoWait`).
// Called from several places: one copy, not one inlined into each (firmware flash).
#[inline(never)]
fn park_timeout(wait: Wait, at_once: ErrorCode) -> Result<Option<u32>, ErrorCode> {
    match wait {
        Wait::NoWait => Err(at_once),
        Wait::Millis(0) => Err(ErrorCode::Timeout),
        Wait::Millis(ms) => Ok(Some(ms)),
        Wait::Forever => Ok(None),
    }
}

/// Writes the head of `Message::Reply { id, reply }` whose reply is variant `variant` carrying
/// `handle` and then a byte string of `len` bytes (what comes before the bytes); returns its
/// length.
fn reply_head(out: &mut [u8], id: u32, variant: u32, handle: Handle, len: usize) -> Option<usize> {
    // postcard writes the variant indices, the id, the handle and the length as varints.
    let mut w = Writer::new(out);
    for v in [
        tag::MESSAGE_REPLY.into(),
        u64::from(id),
        variant.into(),
        handle.0.into(),
        len as u64,
    ] {
        w.varint(v);
    }
    w.finish()
}

/// Writes `Message::Reply { id, reply: Reply::Item { handle, item: a ‖ b } }` as postcard
/// would, from an item stored in two pieces; `None` if `out` is too small.
pub(crate) fn encode_item_reply(
    out: &mut [u8],
    id: u32,
    handle: Handle,
    a: &[u8],
    b: &[u8],
) -> Option<usize> {
    let len = a.len() + b.len();
    let head = reply_head(out, id, tag::ITEM, handle, len)?;
    let total = head + len;
    let (to_a, to_b) = out.get_mut(head..total)?.split_at_mut_checked(a.len())?;
    to_a.copy_from_slice(a);
    to_b.copy_from_slice(b);
    Some(total)
}

/// Writes `Message::Reply { id, reply: Reply::Items { handle, .. } }` as postcard would,
/// packing the given items (each stored in two pieces) whose packed size is `body`; `None` if
/// `out` is too small.
pub(crate) fn encode_items_reply<'q>(
    out: &mut [u8],
    id: u32,
    handle: Handle,
    items: impl Iterator<Item = (&'q [u8], &'q [u8])>,
    body: usize,
) -> Option<usize> {
    let mut at = reply_head(out, id, tag::ITEMS, handle, body)?;
    let end = at.checked_add(body)?;
    out.get(..end)?;
    for (a, b) in items {
        let mut varint = [0; 5];
        let head = write_varint(&mut varint, (a.len() + b.len()) as u32);
        let item_end = at + head + a.len() + b.len();
        if item_end > end {
            return None;
        }
        // Checked splits rather than indexing: no panic path to link in.
        let (to_head, to_item) = out.get_mut(at..item_end)?.split_at_mut_checked(head)?;
        to_head.copy_from_slice(varint.get(..head)?);
        let (to_a, to_b) = to_item.split_at_mut_checked(a.len())?;
        to_a.copy_from_slice(a);
        // Only an item that wraps around the queue's storage has a second part.
        if !b.is_empty() {
            to_b.get_mut(..b.len())?.copy_from_slice(b);
        }
        at = item_end;
    }
    (at == end).then_some(end)
}

/// A handshake reply refusing a connection for which no slot was free: the transport writes
/// these bytes to the socket and closes it.
pub fn encode_busy(out: &mut [u8; 16]) -> &[u8] {
    let Some(body) = ServerHello::Reject(CloseReason::Busy).encode_into(&mut out[HEADER_LEN..])
    else {
        return &[];
    };
    if let Some(head) = out.first_chunk_mut::<HEADER_LEN>() {
        *head = (body as u32).to_be_bytes();
    }
    out.get(..HEADER_LEN + body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap-free give-back visits unsent replies in reverse, each once, for any count.
    #[test]
    fn visit_last_first_reverses_without_a_heap() {
        for len in 0..6u8 {
            let items: heapless::Vec<u8, 8> = (0..len).collect();
            let mut seen: heapless::Vec<u8, 8> = heapless::Vec::new();
            visit_last_first(&|f| items.iter().for_each(|&x| f(x)), &mut |x| {
                seen.push(x).unwrap()
            });
            let expected: heapless::Vec<u8, 8> = (0..len).rev().collect();
            assert_eq!(seen, expected);
        }
    }

    /// The hand-written reply encoders write exactly what postcard writes for the same message,
    /// whatever the split of the stored items.
    #[test]
    fn item_reply_encoders_match_postcard() {
        let items: [&[u8]; 3] = [b"", b"one", &[0xAB; 200]];
        let ids: &[u32] = if cfg!(miri) {
            &[0, u32::MAX]
        } else {
            &[0, 1, 127, 128, 300_000, u32::MAX]
        };
        for &id in ids {
            for item in items {
                // Every split; a few under Miri, which runs this thousands of times slower.
                let step = if cfg!(miri) { 67 } else { 1 };
                for cut in (0..=item.len()).step_by(step) {
                    let (a, b) = item.split_at(cut);
                    let mut ours = [0u8; 512];
                    let handle = Handle(id as u16 ^ 0x1234);
                    let n = encode_item_reply(&mut ours, id, handle, a, b).unwrap();
                    let mut theirs = [0u8; 512];
                    let msg = Message::Reply {
                        id,
                        reply: Reply::Item { handle, item },
                    };
                    let expect = postcard::to_slice(&msg, &mut theirs).unwrap();
                    assert_eq!(&ours[..n], &*expect);
                }
            }
            let mut packed = [0u8; 512];
            let mut end = 0;
            for item in items {
                end = Items::push(&mut packed, end, item).unwrap();
            }
            let split: [(&[u8], &[u8]); 3] = [(b"", b""), (b"o", b"ne"), (&[0xAB; 200], b"")];
            let mut ours = [0u8; 512];
            let handle = Handle(u16::MAX);
            let n = encode_items_reply(&mut ours, id, handle, split.into_iter(), end).unwrap();
            let mut theirs = [0u8; 512];
            let msg = Message::Reply {
                id,
                reply: Reply::Items {
                    handle,
                    items: Items(&packed[..end]),
                },
            };
            let expect = postcard::to_slice(&msg, &mut theirs).unwrap();
            assert_eq!(&ours[..n], &*expect);
            let short = &mut ours[..n - 1];
            assert!(encode_items_reply(short, id, handle, split.into_iter(), end).is_none());
        }
    }
}
