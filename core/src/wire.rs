//! The wire format: frame layout, limits and every message, as PROTOCOL.md specifies them.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of body. During the
//! handshake a body is one postcard-encoded handshake message. After it, a body is one or more
//! postcard-encoded messages followed by a 16-byte truncated HMAC-SHA256 tag (see `crate::auth`),
//! or, when the hello agreed to seal frames, those messages encrypted with ChaCha20-Poly1305
//! and its 16-byte tag (see `crate::seal`).
//! Nothing received is ever interpreted beyond these closed enums.

use serde::{Deserialize, Serialize};

/// Bytes in a frame header (the body length, big-endian `u32`).
pub const HEADER_LEN: usize = 4;
/// Bytes of the tag (MAC or AEAD) that ends every frame after the handshake.
pub const TAG_LEN: usize = 16;
/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a handshake proof (a full HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// The largest handshake frame body either side accepts.
pub const MAX_HANDSHAKE_BODY: u32 = 128;
/// The smallest `max_frame` an endpoint may announce.
pub const MIN_MAX_FRAME: u32 = 256;
/// The largest `max_frame` an endpoint may announce (16 MiB).
pub const MAX_MAX_FRAME: u32 = 16 * 1024 * 1024;
/// The longest object name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 32;
/// The first four bytes of every client hello.
pub const MAGIC: [u8; 4] = *b"dpot";
/// The id of a request a client sends on its own behalf and does not wait for (an ack it does
/// not wait for, `Cancel`, `Return`): the manager answers it only when it fails
/// (PROTOCOL.md §6).
pub const UNANSWERED_ID: u32 = u32::MAX;
/// The tag that starts a Python handshake challenge (`multiprocessing.connection`).
pub const PY_CHALLENGE: &[u8] = b"#CHALLENGE#";
/// What a depot manager's Python-style challenge carries after `#CHALLENGE#{sha256}`, ahead of
/// its nonce: a depot client skips such a frame, and closes with
/// [`Error::PythonManager`](crate::Error::PythonManager) on a challenge without it (a real
/// Python manager). See PROTOCOL.md, "Python clients on the same port".
pub const PY_MANAGER_MARKER: [u8; 8] = *b"dpot/mgr";
/// Where [`PY_MANAGER_MARKER`] sits in the challenge frame body.
pub const PY_MANAGER_MARKER_AT: usize = PY_CHALLENGE.len() + 8;
/// The newest protocol version this crate speaks: 4 (frames may be sealed with AES-256-GCM,
/// PROTOCOL.md §5.1) where it has ring's ciphers (feature `aead-ring`), else 3.
pub const VERSION: u8 = if cfg!(feature = "aead-ring") { 4 } else { 3 };
/// The oldest protocol version this crate speaks (older peers are refused: PROTOCOL.md §10).
pub const MIN_VERSION: u8 = 3;
/// Bytes of a session id (protocol version 3).
pub const SESSION_ID_LEN: usize = 16;

/// Bytes a reply carrying an item of `item_len` bytes can take on the wire, frame included.
///
/// The manager reserves this much output space before it takes an item off a queue for a
/// connection, so a reply is never dropped for lack of room.
pub const fn item_reply_bound(item_len: usize) -> usize {
    HEADER_LEN + TAG_LEN + ITEM_REPLY_OVERHEAD + item_len
}

/// Bytes an item reply message takes beyond the item: message and reply tags, the request id,
/// the queue's handle and the item length, each at most a 5-byte varint (3 for the handle).
pub const ITEM_REPLY_OVERHEAD: usize = 15;

/// Bytes a `Leased` reply takes beyond its packed items and their delivery counts: message and
/// reply tags, request id, handle, lease id and the two byte-string lengths.
pub const LEASE_REPLY_OVERHEAD: usize = 5 + 5 + 5 + 3 + 10 + 5 + 5;

/// Bytes any reply other than an item can take on the wire, frame included.
pub const SMALL_REPLY_BOUND: usize = HEADER_LEN + TAG_LEN + 160;

/// The body length announced by a frame header, if `buf` holds a whole header.
pub fn peek_body_len(buf: &[u8]) -> Option<u32> {
    let header: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(header))
}

/// Client to manager, first frame: who I am and what I speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientHello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The oldest protocol version the client speaks.
    pub min_version: u8,
    /// The newest protocol version the client speaks.
    pub max_version: u8,
    /// Fresh random bytes from the client.
    pub nonce: [u8; NONCE_LEN],
    /// The largest frame body the client accepts.
    pub max_frame: u32,
    /// The name of the key the client proves (empty: the default key). Protocol version 3;
    /// older hellos end before it.
    pub key: crate::keyring::KeyName,
    /// The client asks for sealed frames (version 3, PROTOCOL.md §5.1).
    pub encrypt: bool,
}

/// Manager to client, answer to [`ClientHello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ServerHello {
    /// Go on with the version chosen here; prove you know the authkey.
    Challenge {
        /// The version both sides speak from now on.
        version: u8,
        /// Fresh random bytes from the manager.
        nonce: [u8; NONCE_LEN],
        /// The largest frame body the manager accepts.
        max_frame: u32,
        /// How frames are protected from now on (PROTOCOL.md §5.1): sealed only if the client
        /// asked, with AES-256-GCM only in version 4.
        sealed: Sealing,
    },
    /// The manager will not talk to this client; the connection closes.
    Reject(CloseReason),
}

/// How the frames after the handshake are protected (PROTOCOL.md §5, §5.1); on the wire one
/// byte, as `false` and `true` were before version 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Sealing {
    /// Not sealed: each frame carries its MAC (§5).
    Mac,
    /// Sealed with ChaCha20-Poly1305 (version 3).
    ChaCha20Poly1305,
    /// Sealed with AES-256-GCM (version 4).
    Aes256Gcm,
}

/// Client to manager, second frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientProof {
    /// HMAC-SHA256(authkey, "depot/1 client proof" ‖ 0 ‖ client nonce ‖ manager nonce).
    pub proof: [u8; PROOF_LEN],
}

/// Manager to client, last handshake frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ServerVerdict {
    /// The client proved the key; here is the manager's proof.
    Welcome {
        /// HMAC-SHA256(authkey, "depot/1 manager proof" ‖ 0 ‖ client nonce ‖ manager nonce).
        proof: [u8; PROOF_LEN],
    },
    /// The client's proof was wrong. Nothing else is said; the connection closes.
    AuthFailed,
}

/// A handle to an object, valid on the connection that opened it and every other one.
///
/// Opaque: a handle comes from the manager (an `Open` or `Create` reply, [`Manager`] calls),
/// so that no caller names an object by a number it made up. [`Handle::from_raw`] and
/// [`Handle::to_raw`] are for formats that store or carry handles (a journal, the wire).
///
/// [`Manager`]: crate::Manager
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Handle(pub(crate) u16);

impl Handle {
    /// The manager's built-in registered call [`CLOSE_CALL`] (PROTOCOL.md §15.2), when no
    /// object of that name is declared: never a registry slot.
    pub const CLOSE: Handle = Handle(u16::MAX);

    /// The handle whose number is `raw`, as [`Handle::to_raw`] gave it: for a format that
    /// stores handles (a journal restored) or carries them (a decoder of frames).
    pub const fn from_raw(raw: u16) -> Handle {
        Handle(raw)
    }

    /// The handle's number, for a format that stores or carries it (see [`Handle::from_raw`]).
    pub const fn to_raw(self) -> u16 {
        self.0
    }
}

/// The name of the manager's built-in registered call that stops it (the seed's `close`).
pub const CLOSE_CALL: &str = "close";

/// How long a `put`, `get` or `join` may wait for its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Wait {
    /// Do not wait: fail at once with `Empty` or `Full` (Python's `block=False`).
    NoWait,
    /// Wait as long as it takes (Python's `block=True, timeout=None`).
    Forever,
    /// Wait at most this many milliseconds, then fail with `Timeout`.
    Millis(u32),
}

/// The kinds of shared object. Every kind but `Queue` is protocol version 3; their limits
/// travel in a [`QueueSpec`] as [`ObjectKind`]'s variant docs say (PROTOCOL.md §15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ObjectKind {
    /// A bounded FIFO of byte items with `task_done`/`join`.
    Queue,
    /// A flag clients set, clear and wait for (Python's `Event`).
    Event,
    /// A lock held by one connection at a time, released when that connection goes away.
    Lock,
    /// A lock its holder may take again, released after as many releases.
    RLock,
    /// `capacity` permits, taken and given back (a connection's are returned when it goes).
    Semaphore,
    /// A semaphore whose permits never exceed `capacity`.
    BoundedSemaphore,
    /// One value of the value model, at most `max_item` bytes (initially `null`).
    Value,
    /// `capacity` parties wait until all have arrived.
    Barrier,
    /// A map of at most `capacity` entries, values of the value model as keys and values, in
    /// at most `max_item` bytes.
    Dict,
    /// A call the manager's application answers (a registered handler): at most `capacity`
    /// run at once, requests and responses of at most `max_item` bytes.
    Call,
    /// A lock with waiters that are notified (Python's `Condition`, reentrant like its
    /// default `RLock`): `max_item` is the lease in milliseconds, as a lock's.
    Condition,
    /// A sequence of at most `capacity` values of the value model in at most `max_item` bytes
    /// (Python's `list`).
    List,
}

impl ObjectKind {
    /// The kind's name, as `depot stat` shows it.
    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Queue => "queue",
            ObjectKind::Event => "event",
            ObjectKind::Lock => "lock",
            ObjectKind::RLock => "rlock",
            ObjectKind::Semaphore => "semaphore",
            ObjectKind::BoundedSemaphore => "bounded-semaphore",
            ObjectKind::Value => "value",
            ObjectKind::Barrier => "barrier",
            ObjectKind::Dict => "dict",
            ObjectKind::Call => "call",
            ObjectKind::Condition => "condition",
            ObjectKind::List => "list",
        }
    }
}

/// The limits of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueueSpec {
    /// The most items the queue holds at once (Python's `maxsize`).
    pub capacity: u32,
    /// The largest item, in bytes.
    pub max_item: u32,
    /// What the queue accepts as an item (protocol version 2).
    pub mode: QueueMode,
}

/// What a queue accepts as an item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QueueMode {
    /// Only one well-formed value of the value model (see [`crate::value`]); anything else is
    /// refused with [`ErrorCode::InvalidValue`].
    #[default]
    Value,
    /// Any bytes.
    Raw,
}

impl QueueMode {
    /// The mode's name, as `depot stat` shows it.
    pub const fn name(self) -> &'static str {
        match self {
            QueueMode::Value => "value",
            QueueMode::Raw => "raw",
        }
    }
}

/// What a client learns when it opens or creates an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ObjectInfo {
    /// The handle for later requests.
    pub handle: Handle,
    /// What the object is.
    pub kind: ObjectKind,
    /// Its limits.
    pub spec: QueueSpec,
}

/// A queue's length at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueueSize {
    /// Items in the queue.
    pub len: u32,
    /// The most items it holds.
    pub capacity: u32,
    /// True when a non-blocking put would fail now (by count or by bytes).
    pub full: bool,
}

/// One line of the registry listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ObjectStat<'a> {
    /// The object's name.
    pub name: &'a str,
    /// Handle, kind and limits.
    pub info: ObjectInfo,
    /// Items queued.
    pub len: u32,
    /// Bytes of item data queued.
    pub bytes: u32,
    /// Bytes of item storage the queue has.
    pub storage: u32,
    /// Requests blocked in `get`.
    pub getters: u32,
    /// Requests blocked in `put`.
    pub putters: u32,
    /// Requests blocked in `join`.
    pub joiners: u32,
    /// Items put and not yet marked `task_done`.
    pub unfinished: u32,
    /// Items ever put.
    pub total_put: u64,
    /// Items ever got.
    pub total_got: u64,
}

/// The manager as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ManagerStatus {
    /// Connections open now (any state).
    pub connections: u32,
    /// The most connections the manager serves at once.
    pub max_connections: u32,
    /// Objects in the registry.
    pub objects: u32,
    /// Requests blocked now, over all objects.
    pub waiters: u32,
}

/// Client to manager, after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// Chosen by the client, echoed in the reply.
    pub id: u32,
    /// What to do.
    #[serde(borrow)]
    pub op: Op<'a>,
}

/// Every operation a client can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Op<'a> {
    /// Look an object up by name. Reply: `Opened` or `NoSuchObject`.
    Open {
        /// The object's name.
        name: &'a str,
    },
    /// Create a queue (when the manager allows it). Reply: `Opened`.
    Create {
        /// The new object's name.
        name: &'a str,
        /// Its limits.
        spec: QueueSpec,
        /// Open the existing object instead of failing with `AlreadyExists`.
        exist_ok: bool,
    },
    /// Append an item. Reply: `Done`, or `Full`/`Timeout`/`TooLarge`.
    Put {
        /// The queue.
        handle: Handle,
        /// The item's bytes.
        item: &'a [u8],
        /// Whether and how long to wait for room.
        wait: Wait,
    },
    /// Take the oldest item. Reply: `Item`, or `Empty`/`Timeout`.
    Get {
        /// The queue.
        handle: Handle,
        /// Whether and how long to wait for an item.
        wait: Wait,
    },
    /// Reply: `Size`.
    Size {
        /// The queue.
        handle: Handle,
    },
    /// Mark one got item as processed. Reply: `Done` or `TaskDoneTooMany`.
    TaskDone {
        /// The queue.
        handle: Handle,
    },
    /// Wait until every item put has been marked done. Reply: `Done` or `Timeout`.
    Join {
        /// The queue.
        handle: Handle,
        /// Whether and how long to wait.
        wait: Wait,
    },
    /// The registry entry at `index` (0, 1, … in creation order). Reply: `Stat`.
    Stat {
        /// Position in the registry.
        index: u16,
    },
    /// Reply: `Status`.
    Status,
    /// Ask the manager to stop. Reply: `Done` or `NotAllowed`.
    Shutdown,
    /// Append several items, in order, as one request. Reply: `Accepted(n)`: the first `n`
    /// items went in (all of them unless the wait ran out or the queue refused one).
    PutMany {
        /// The queue.
        handle: Handle,
        /// The items, packed (see [`Items`]).
        items: Items<'a>,
        /// Whether and how long to wait for room, item after item.
        wait: Wait,
    },
    /// Take up to `max_items` items whose packed size is at most `max_bytes` (the first item
    /// is taken whatever its size). The wait applies to the first item only. Reply: `Items`.
    GetMany {
        /// The queue.
        handle: Handle,
        /// The most items to take.
        max_items: u32,
        /// The most bytes of packed items to take.
        max_bytes: u32,
        /// Whether and how long to wait for the first item.
        wait: Wait,
    },
    /// Withdraw the blocked request `target` of this connection: it is answered `Cancelled`
    /// if it was still waiting. Reply: `Done` (whether or not it was).
    Cancel {
        /// The id of the request to withdraw.
        target: u32,
    },
    /// Put an item that a get took back at the head of its queue (its caller gave up on it).
    /// Reply: `Done`.
    Return {
        /// The queue.
        handle: Handle,
        /// The item's bytes.
        item: &'a [u8],
    },
    /// Take items as `GetMany` does, under a lease of `lease_ms` (protocol version 3): they
    /// stay the manager's, unseen by other consumers, until `Ack` removes them; `Nack`, the
    /// lease running out or the connection closing puts them back at the head of the queue.
    /// Reply: `Leased`.
    GetLeased {
        /// The queue.
        handle: Handle,
        /// The most items to take.
        max_items: u32,
        /// The most bytes of packed items to take.
        max_bytes: u32,
        /// How long the lease lasts, from when the items are taken.
        lease_ms: u32,
        /// Whether and how long to wait for the first item.
        wait: Wait,
    },
    /// The items of this connection's lease were processed: remove them. Reply: `Done` or
    /// `NoSuchLease`.
    Ack {
        /// The lease id from `Leased`.
        lease: u64,
    },
    /// The items of this connection's lease were not processed: put them back at the head of
    /// their queue now. Reply: `Done` or `NoSuchLease`.
    Nack {
        /// The lease id from `Leased`.
        lease: u64,
    },
    /// Create an object of any kind (when the manager allows it; protocol version 3).
    /// Reply: `Opened`.
    CreateObject {
        /// The new object's name.
        name: &'a str,
        /// What it is.
        kind: ObjectKind,
        /// Its limits (see [`ObjectKind`]).
        spec: QueueSpec,
        /// Open the existing object of that kind instead of failing with `AlreadyExists`.
        exist_ok: bool,
    },
    /// Act on an object that is not a queue (protocol version 3). The replies are listed
    /// with each [`Action`].
    Act {
        /// The object.
        handle: Handle,
        /// What to do.
        #[serde(borrow)]
        action: Action<'a>,
    },
    /// Opens (or resumes) the client's session on this connection (protocol version 3).
    /// Reply: `Session`, or `SessionLimit`/`NotAllowed`. A connection that held the session
    /// before is closed with `Superseded`.
    Session {
        /// 128 random bits the client chose.
        id: [u8; SESSION_ID_LEN],
    },
    /// `Put` numbered in the connection's session: applied at most once per number (protocol
    /// version 3). Replies as `Put`, and `NoSession`, `SequenceExpired`.
    PutSeq {
        /// The put's number in the session.
        seq: u64,
        /// The queue.
        handle: Handle,
        /// The item's bytes.
        item: &'a [u8],
        /// Whether and how long to wait for room.
        wait: Wait,
    },
    /// `PutMany` numbered in the connection's session: each item is applied at most once
    /// (protocol version 3). Replies as `PutMany`, and `NoSession`, `SequenceExpired`.
    PutManySeq {
        /// The batch's number in the session.
        seq: u64,
        /// The queue.
        handle: Handle,
        /// The items, packed (see [`Items`]).
        items: Items<'a>,
        /// Whether and how long to wait for room, item after item.
        wait: Wait,
    },
    /// The health of the manager's backend (protocol version 3 addition). Replies `Backend`.
    BackendStatus,
}

/// What [`Op::Act`] does. An action that does not apply to the object's kind gets `WrongKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Action<'a> {
    /// Event: set the flag and wake every waiter. Reply: `Done`.
    Set,
    /// Event: clear the flag. Reply: `Done`.
    Clear,
    /// Event: Reply: `Flag`.
    IsSet,
    /// Event: wait until the flag is set (`Flag(true)`); Barrier: wait until every party has
    /// arrived (`Count(arrival index)`, or `Broken`). Out of time: `Timeout`.
    Wait {
        /// Whether and how long to wait.
        wait: Wait,
    },
    /// Lock, semaphore: take one permit (`Flag(true)`); out of time: `Timeout`.
    Acquire {
        /// Whether and how long to wait.
        wait: Wait,
    },
    /// Lock, semaphore: give one permit back. Reply: `Done`, `NotOwner` (a lock this
    /// connection does not hold) or `Overflow` (a bounded semaphore at its bound).
    Release,
    /// Reply: `Count`: a semaphore's or lock's free permits, a barrier's waiting parties, a
    /// dict's entries.
    Count,
    /// Value: Reply: `Value`.
    Get,
    /// Value: replace the value. Reply: `Done`, `InvalidValue` or `TooLarge`.
    Put {
        /// One value of the value model.
        value: &'a [u8],
    },
    /// Value: replace the value if it is `expected` (compared by encoding). Reply: `Flag`
    /// (whether it was replaced).
    CompareAndSet {
        /// The value expected now.
        expected: &'a [u8],
        /// The value to store.
        value: &'a [u8],
    },
    /// Dict: Reply: `Value`, or `NoSuchKey`.
    Lookup {
        /// The key.
        key: &'a [u8],
    },
    /// Dict: insert or replace. Reply: `Done`, or `Full` (no room), `InvalidValue`.
    Insert {
        /// The key.
        key: &'a [u8],
        /// Its value.
        value: &'a [u8],
    },
    /// Dict: remove an entry. Reply: `Value` (the removed value), or `NoSuchKey`.
    Remove {
        /// The key.
        key: &'a [u8],
    },
    /// Dict: Reply: `Values` with every key.
    Keys,
    /// Dict: Reply: `Values` with every key followed by its value.
    Entries,
    /// Dict: wait until `key` is present. Reply: `Value`; out of time: `Timeout` (at once
    /// for `NoWait`: `NoSuchKey`).
    WaitKey {
        /// The key.
        key: &'a [u8],
        /// Whether and how long to wait.
        wait: Wait,
    },
    /// Barrier: break it: its waiters and later waits get `Broken`. Reply: `Done`.
    Abort,
    /// Barrier: mend a broken barrier (its waiters get `Broken`). Reply: `Done`.
    Reset,
    /// Call: run the handler with `request` (one value). Reply: `Value` (its response),
    /// `Failed` (its error), or `Timeout` when `wait` runs out first.
    Call {
        /// The request, one value of the value model.
        request: &'a [u8],
        /// How long to wait for the response (`NoWait`: `Timeout` at once).
        wait: Wait,
    },
    /// Barrier: Reply: `Count`, its parties (protocol version 3).
    Parties,
    /// Barrier: Reply: `Flag`, whether it is broken (protocol version 3).
    IsBroken,
    /// Condition: wake at most `n` of its waiters (`u32::MAX`: all); the caller must hold
    /// it. Reply: `Done`, or `NotOwner`.
    Notify {
        /// How many waiters to wake.
        n: u32,
    },
    /// List: add `value` at the end. Reply: `Done`, `Full`, `InvalidValue`.
    Append {
        /// One value of the value model.
        value: &'a [u8],
    },
    /// List: Reply: `Value`, the value at `index` (from the end when negative), or
    /// `NoSuchKey` past either end.
    At {
        /// The position.
        index: i32,
    },
    /// List: replace the value at `index`. Reply: `Done`, `NoSuchKey`, `Full`, `InvalidValue`.
    Replace {
        /// The position.
        index: i32,
        /// One value of the value model.
        value: &'a [u8],
    },
    /// List: insert `value` before `index` (clamped to the list, as Python's `insert`).
    /// Reply: `Done`, `Full`, `InvalidValue`.
    InsertAt {
        /// The position.
        index: i32,
        /// One value of the value model.
        value: &'a [u8],
    },
    /// List: remove the value at `index`. Reply: `Value`, the value removed, or `NoSuchKey`.
    PopAt {
        /// The position.
        index: i32,
    },
    /// List: Reply: `Count`, the first position of `value` (compared by encoding), or
    /// `NoSuchKey`.
    Find {
        /// The value.
        value: &'a [u8],
    },
    /// List: Reply: `Count`, how many times `value` is in it.
    CountOf {
        /// The value.
        value: &'a [u8],
    },
    /// List: remove the first `value`. Reply: `Done`, or `NoSuchKey`.
    RemoveValue {
        /// The value.
        value: &'a [u8],
    },
    /// List: reverse it in place. Reply: `Done`.
    Reverse,
}

/// Manager to client, after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Message<'a> {
    /// The answer to the request with this id.
    Reply {
        /// The request's id.
        id: u32,
        /// The outcome.
        #[serde(borrow)]
        reply: Reply<'a>,
    },
    /// The manager is closing the connection for this reason; nothing follows.
    Closing(CloseReason),
}

/// The outcome of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Reply<'a> {
    /// Success with nothing to return.
    Done,
    /// An object was opened or created.
    Opened(ObjectInfo),
    /// The item a `get` took.
    Item {
        /// The queue it came from.
        handle: Handle,
        /// Its bytes.
        item: &'a [u8],
    },
    /// A queue's size.
    Size(QueueSize),
    /// A registry entry, or `None` past the last one.
    #[serde(borrow)]
    Stat(Option<ObjectStat<'a>>),
    /// The manager's status.
    Status(ManagerStatus),
    /// The request failed; the connection stays open.
    Error(ErrorCode),
    /// How many items of a `PutMany` went in, and the error that stopped the rest, if any.
    Accepted {
        /// Items appended, from the first.
        count: u32,
        /// Why the rest did not go in (`None` when all did).
        error: Option<ErrorCode>,
    },
    /// The items a `GetMany` took, packed (at least one).
    Items {
        /// The queue they came from.
        handle: Handle,
        /// The items.
        #[serde(borrow)]
        items: Items<'a>,
    },
    /// The items a `GetLeased` took under one lease (at least one).
    Leased {
        /// The queue they came from.
        handle: Handle,
        /// The lease id, unique within the manager's run, for `Ack` and `Nack`.
        lease: u64,
        /// For each item, how many times it has been delivered under a lease, this time
        /// included (1 the first time; at most 255).
        deliveries: &'a [u8],
        /// The items.
        #[serde(borrow)]
        items: Items<'a>,
    },
    /// A yes or no (protocol version 3).
    Flag(bool),
    /// A number (protocol version 3).
    Count(u32),
    /// One value of an object (protocol version 3).
    Value(&'a [u8]),
    /// Values of an object, packed (protocol version 3).
    #[serde(borrow)]
    Values(Items<'a>),
    /// A registered call failed: its handler's error, or a panic (protocol version 3).
    Failed(&'a str),
    /// The session is open on this connection (protocol version 3).
    Session {
        /// The manager remembered it (else it starts afresh: it never existed, or was
        /// forgotten).
        resumed: bool,
    },
    /// The health of the manager's backend, or `None` when it keeps its queues itself.
    #[serde(borrow)]
    Backend(Option<BackendHealth<'a>>),
}

/// The longest [`BackendHealth::kind`], in bytes.
pub const MAX_BACKEND_KIND: usize = 16;
/// The longest [`BackendHealth::server`], in bytes.
pub const MAX_BACKEND_SERVER: usize = 48;
/// The longest [`BackendHealth::last_error`], in bytes.
pub const MAX_BACKEND_ERROR: usize = 64;

/// How a manager's backend fares. Its texts are at most [`MAX_BACKEND_KIND`],
/// [`MAX_BACKEND_SERVER`] and [`MAX_BACKEND_ERROR`] bytes, so the reply stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackendHealth<'a> {
    /// The engine, such as `nats`.
    pub kind: &'a str,
    /// The server it is (or was last) connected to, if any.
    pub server: &'a str,
    /// Whether it is connected now.
    pub connected: bool,
    /// Milliseconds since it last connected or lost its connection.
    pub since_ms: u64,
    /// Connections it lost since it started (each followed by attempts to connect again).
    pub reconnects: u32,
    /// The last error it met, or empty.
    pub last_error: &'a str,
}

/// Why a request failed. The connection stays usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ErrorCode {
    /// A non-blocking `get` found the queue empty.
    Empty,
    /// A non-blocking `put` found the queue full.
    Full,
    /// A waiting request's time ran out.
    Timeout,
    /// No object has that name or handle.
    NoSuchObject,
    /// `Create` named an object that exists.
    AlreadyExists,
    /// The item is larger than the queue's `max_item` or than a frame can carry.
    TooLarge,
    /// The name is empty or longer than [`MAX_NAME_LEN`].
    InvalidName,
    /// The queue limits asked for cannot be met.
    InvalidSpec,
    /// The registry has no room for another object.
    ObjectLimit,
    /// The connection or the manager has no room for another blocked request.
    WaiterLimit,
    /// `task_done` was called more times than items were put.
    TaskDoneTooMany,
    /// The manager does not allow this (remote shutdown, creating objects), or the key the
    /// connection proved has no right to it (protocol version 3).
    NotAllowed,
    /// The manager is shutting down.
    ShuttingDown,
    /// The operation does not apply to this kind of object.
    WrongKind,
    /// The request was withdrawn with `Cancel` before it completed.
    Cancelled,
    /// A `value` queue was given an item that is not one well-formed value (protocol
    /// version 2).
    InvalidValue,
    /// `Ack` or `Nack` named a lease this connection does not hold (acked, returned, expired,
    /// or never granted; protocol version 3).
    NoSuchLease,
    /// The manager has no room to keep another leased item (protocol version 3); the items
    /// stay queued.
    LeaseLimit,
    /// A dict has no such key (protocol version 3).
    NoSuchKey,
    /// A lock was released by a connection that does not hold it (protocol version 3).
    NotOwner,
    /// A barrier is broken: a party timed out or went away, or it was aborted (protocol
    /// version 3).
    Broken,
    /// A bounded semaphore was released more times than acquired (protocol version 3).
    Overflow,
    /// A numbered put on a connection with no session (protocol version 3).
    NoSession,
    /// The manager remembers as many sessions as it can, all on live connections (protocol
    /// version 3).
    SessionLimit,
    /// A numbered put older than its session's window: whether it was applied cannot be told
    /// (protocol version 3).
    SequenceExpired,
}

/// Why a connection was closed. Sent in `Reject` and `Closing` when the manager can say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer does not know the authkey (or is not the manager it claims to be).
    AuthFailed,
    /// No protocol version in common.
    VersionMismatch,
    /// The peer does not speak depot.
    BadMagic,
    /// A frame announced a body larger than allowed.
    FrameTooLarge,
    /// A frame or message could not be decoded.
    Malformed,
    /// A frame's MAC did not verify: altered, injected, replayed, reordered or dropped frames.
    BadMac,
    /// A message arrived that the protocol does not allow at this point.
    Unexpected,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// A frame did not arrive whole in time.
    FrameTimeout,
    /// The peer stopped reading its replies.
    WriteStalled,
    /// The manager is shutting down.
    Shutdown,
    /// The manager serves as many connections as it can.
    Busy,
    /// The peer closed the connection.
    PeerClosed,
    /// One side requires sealed frames and the other cannot or will not seal them
    /// (version 3).
    EncryptionRequired,
    /// Another connection resumed this connection's session (protocol version 3).
    Superseded,
}

/// Defines the string `$all`, every text one after another, and `$ends`, where each ends.
#[cfg(feature = "texts")]
macro_rules! texts {
    ($all:ident, $ends:ident: $($text:literal,)*) => {
        const $all: &str = concat!($($text),*);
        const $ends: [u16; [$($text),*].len()] = text_ends([$($text),*]);
    };
}

#[cfg(feature = "texts")]
texts!(TEXTS, TEXT_ENDS:
    // `ErrorCode`'s, in the order of its variants.
    "queue is empty",
    "queue is full",
    "timed out",
    "no such object",
    "object already exists",
    "item too large",
    "invalid object name",
    "invalid queue limits",
    "registry is full",
    "too many blocked requests",
    "task_done() called too many times",
    "not allowed by the manager",
    "manager is shutting down",
    "wrong kind of object",
    "cancelled",
    "item is not a well-formed value (the queue holds values)",
    "no such lease (acked, returned or expired)",
    "no room for another leased item",
    "no such key",
    "lock not held by this client",
    "barrier is broken",
    "semaphore released too many times",
    "numbered put without a session",
    "manager has no room for another session",
    "put too old for its session's window: outcome unknown",
    // `CloseReason`'s, in the order of its variants.
    "authentication failed",
    "no protocol version in common",
    "peer does not speak depot",
    "frame too large",
    "malformed frame",
    "frame failed its integrity check",
    "unexpected message",
    "handshake timed out",
    "frame did not arrive in time",
    "peer stopped reading",
    "manager shut down",
    "manager has no room for another connection",
    "connection closed by peer",
    "encryption required: one side requires sealed frames and the other does not seal",
    "session resumed on another connection",
    // The client's own errors (`crate::Error`), from `ERROR_TEXTS` on.
    "disconnected",
    "handshake not finished",
    "too many requests in flight",
    "transmit buffer full",
    "the peer is a Python BaseManager, not a depot manager",
    "request failed",
);

/// Where `CloseReason`'s texts start in `TEXTS`.
#[cfg(feature = "texts")]
const CLOSE_TEXTS: usize = 25;
/// Where the client's own errors' texts start in `TEXTS` (see `error.rs`).
#[cfg(feature = "texts")]
pub(crate) const ERROR_TEXTS: usize = CLOSE_TEXTS + 15;

#[cfg(feature = "texts")]
const _: () = assert!(TEXT_ENDS.len() == ERROR_TEXTS + 6 && TEXTS.len() <= u16::MAX as usize);

/// The end of each text, for `texts!`.
#[cfg(feature = "texts")]
const fn text_ends<const N: usize>(texts: [&str; N]) -> [u16; N] {
    let mut ends = [0; N];
    let mut end = 0;
    let mut i = 0;
    while i < N {
        end += texts[i].len();
        ends[i] = end as u16;
        i += 1;
    }
    ends
}

/// Text `i` of `TEXTS` (empty past the last).
///
/// Every error text of depot-core is one piece of one string, found by two bytes of index:
/// firmware that prints its errors keeps neither a pointer and a length per text nor the code
/// that loads them, one branch per text.
#[cfg(feature = "texts")]
pub(crate) const fn text(i: usize) -> &'static str {
    if i >= TEXT_ENDS.len() {
        return "";
    }
    let start = if i == 0 { 0 } else { TEXT_ENDS[i - 1] as usize };
    let Some((head, _)) = TEXTS.split_at_checked(TEXT_ENDS[i] as usize) else {
        return "";
    };
    match head.split_at_checked(start) {
        Some((_, text)) => text,
        None => "",
    }
}

/// Writes `label` and `number`: how an error prints without the `texts` feature.
#[cfg(not(feature = "texts"))]
pub(crate) fn write_numbered(
    f: &mut core::fmt::Formatter<'_>,
    label: &str,
    number: u8,
) -> core::fmt::Result {
    f.write_str(label)?;
    core::fmt::Display::fmt(&u32::from(number), f)
}

impl ErrorCode {
    /// A short description for users (feature `texts`).
    #[cfg(feature = "texts")]
    pub const fn description(self) -> &'static str {
        text(self as usize)
    }
}

/// The description (feature `texts`), else `error code N` with the code's number on the wire
/// (PROTOCOL.md lists them).
impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        #[cfg(feature = "texts")]
        return f.write_str(self.description());
        #[cfg(not(feature = "texts"))]
        write_numbered(f, "error code ", *self as u8)
    }
}

impl core::error::Error for ErrorCode {}

impl CloseReason {
    /// A short description for users (feature `texts`).
    #[cfg(feature = "texts")]
    pub const fn description(self) -> &'static str {
        text(CLOSE_TEXTS + self as usize)
    }
}

/// The description (feature `texts`), else `close reason N` with the reason's number on the
/// wire (PROTOCOL.md lists them).
impl core::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        #[cfg(feature = "texts")]
        return f.write_str(self.description());
        #[cfg(not(feature = "texts"))]
        write_numbered(f, "close reason ", *self as u8)
    }
}

impl core::error::Error for CloseReason {}

/// Several items in one byte string: each is a varint length (postcard's, LEB128) followed by
/// that many bytes. Built with [`Items::push`]; read with [`Items::iter`], which stops at the
/// first malformed entry ([`Items::check`] tells whether there is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Items<'a>(#[serde(borrow)] pub &'a [u8]);

impl<'a> Items<'a> {
    /// Appends `item` to the packed list in `out[at..]`; returns the new end, or `None` when
    /// `out` has no room.
    pub fn push(out: &mut [u8], at: usize, item: &[u8]) -> Option<usize> {
        let mut varint = [0; 5];
        let head = write_varint(&mut varint, item.len() as u32);
        let end = at.checked_add(head)?.checked_add(item.len())?;
        let dest = out.get_mut(at..end)?;
        dest[..head].copy_from_slice(&varint[..head]);
        dest[head..].copy_from_slice(item);
        Some(end)
    }

    /// Bytes an item of `len` bytes takes in a packed list.
    pub const fn packed_len(len: usize) -> usize {
        varint_len(len as u32) + len
    }

    /// The items, in order.
    pub fn iter(&self) -> ItemsIter<'a> {
        ItemsIter { rest: self.0 }
    }

    /// The number of items, or `None` if the list is malformed.
    pub fn check(&self) -> Option<u32> {
        let mut iter = self.iter();
        let mut count = 0u32;
        while iter.next().is_some() {
            count += 1;
        }
        iter.rest.is_empty().then_some(count)
    }

    /// The list without its first `n` items (the items a batch put applied before are
    /// skipped when it goes again).
    pub fn after(&self, n: u32) -> Items<'a> {
        let mut rest = self.iter();
        for _ in 0..n {
            rest.next();
        }
        Items(rest.rest)
    }
}

/// The items of an [`Items`] list.
#[derive(Clone, Debug)]
pub struct ItemsIter<'a> {
    rest: &'a [u8],
}

impl<'a> ItemsIter<'a> {
    /// The bytes not yet read (empty once the whole list was read well-formed).
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for ItemsIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, head) = read_varint(self.rest)?;
        let end = head.checked_add(len as usize)?;
        let item = self.rest.get(head..end)?;
        self.rest = &self.rest[end..];
        Some(item)
    }
}

/// Writes `v` as a LEB128 varint; returns its length.
pub(crate) fn write_varint(out: &mut [u8; 5], mut v: u32) -> usize {
    // A u32 takes at most 5 bytes (7 bits each), so the loop ends by the last one: walking
    // `out` itself, rather than indexing it, links in no panic path.
    let mut n = 0;
    for slot in out.iter_mut() {
        *slot = (v & 0x7F) as u8;
        v >>= 7;
        n += 1;
        if v == 0 {
            break;
        }
        *slot |= 0x80;
    }
    n
}

/// The length of `v` as a varint.
pub(crate) const fn varint_len(v: u32) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0xFFF_FFFF => 4,
        _ => 5,
    }
}

/// Reads a LEB128 varint of at most 5 bytes that fits a `u32`: `(value, bytes read)`.
fn read_varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7F);
        if i == 4 && part > 0x0F {
            return None;
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Whether `name` is a valid object name: 1 to [`MAX_NAME_LEN`] bytes, no control characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod varint_tests {
    use super::*;

    #[test]
    fn items_after_skips_the_first_n() {
        let mut packed = [0u8; 32];
        let mut end = 0;
        for item in [&b"a"[..], b"", b"ccc"] {
            end = Items::push(&mut packed, end, item).unwrap();
        }
        let items = Items(&packed[..end]);
        assert_eq!(items.after(0).0, items.0);
        let rest: [&[u8]; 1] = [b"ccc"];
        assert!(items.after(2).iter().eq(rest));
        assert!(items.after(3).0.is_empty());
        assert!(items.after(9).0.is_empty());
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            (1 << 21) - 1,
            1 << 21,
            1 << 28,
            u32::MAX,
        ] {
            let mut out = [0; 5];
            let n = write_varint(&mut out, v);
            assert_eq!(n, varint_len(v), "{v}");
            assert_eq!(read_varint(&out[..n]), Some((v, n)), "{v}");
        }
    }
}

#[cfg(all(test, feature = "texts"))]
mod text_tests {
    use super::*;
    use crate::Error;
    use alloc::format;
    use alloc::string::ToString;

    /// The texts as they were written out per variant before they became one table.
    #[test]
    fn every_text_is_its_variants() {
        let codes = [
            (ErrorCode::Empty, "queue is empty"),
            (ErrorCode::Full, "queue is full"),
            (ErrorCode::Timeout, "timed out"),
            (ErrorCode::NoSuchObject, "no such object"),
            (ErrorCode::AlreadyExists, "object already exists"),
            (ErrorCode::TooLarge, "item too large"),
            (ErrorCode::InvalidName, "invalid object name"),
            (ErrorCode::InvalidSpec, "invalid queue limits"),
            (ErrorCode::ObjectLimit, "registry is full"),
            (ErrorCode::WaiterLimit, "too many blocked requests"),
            (
                ErrorCode::TaskDoneTooMany,
                "task_done() called too many times",
            ),
            (ErrorCode::NotAllowed, "not allowed by the manager"),
            (ErrorCode::ShuttingDown, "manager is shutting down"),
            (ErrorCode::WrongKind, "wrong kind of object"),
            (ErrorCode::Cancelled, "cancelled"),
            (
                ErrorCode::InvalidValue,
                "item is not a well-formed value (the queue holds values)",
            ),
            (
                ErrorCode::NoSuchLease,
                "no such lease (acked, returned or expired)",
            ),
            (ErrorCode::LeaseLimit, "no room for another leased item"),
            (ErrorCode::NoSuchKey, "no such key"),
            (ErrorCode::NotOwner, "lock not held by this client"),
            (ErrorCode::Broken, "barrier is broken"),
            (ErrorCode::Overflow, "semaphore released too many times"),
            (ErrorCode::NoSession, "numbered put without a session"),
            (
                ErrorCode::SessionLimit,
                "manager has no room for another session",
            ),
            (
                ErrorCode::SequenceExpired,
                "put too old for its session's window: outcome unknown",
            ),
        ];
        for (code, text) in codes {
            assert_eq!(code.description(), text);
            assert_eq!(Error::from(code).to_string(), text);
            assert_eq!(Error::from(code).code(), Some(code));
        }
        let reasons = [
            (CloseReason::AuthFailed, "authentication failed"),
            (
                CloseReason::VersionMismatch,
                "no protocol version in common",
            ),
            (CloseReason::BadMagic, "peer does not speak depot"),
            (CloseReason::FrameTooLarge, "frame too large"),
            (CloseReason::Malformed, "malformed frame"),
            (CloseReason::BadMac, "frame failed its integrity check"),
            (CloseReason::Unexpected, "unexpected message"),
            (CloseReason::HandshakeTimeout, "handshake timed out"),
            (CloseReason::FrameTimeout, "frame did not arrive in time"),
            (CloseReason::WriteStalled, "peer stopped reading"),
            (CloseReason::Shutdown, "manager shut down"),
            (
                CloseReason::Busy,
                "manager has no room for another connection",
            ),
            (CloseReason::PeerClosed, "connection closed by peer"),
            (
                CloseReason::EncryptionRequired,
                "encryption required: one side requires sealed frames and the other does not seal",
            ),
            (
                CloseReason::Superseded,
                "session resumed on another connection",
            ),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.description(), text);
            assert_eq!(reason.to_string(), text);
            let closed = format!("connection closed: {text}");
            assert_eq!(Error::Closed(reason).to_string(), closed);
        }
        let errors = [
            (Error::AuthFailed, "authentication failed"),
            (Error::Disconnected, "disconnected"),
            (Error::NotReady, "handshake not finished"),
            (Error::InFlightLimit, "too many requests in flight"),
            (Error::WouldBlock, "transmit buffer full"),
            (
                Error::PythonManager,
                "the peer is a Python BaseManager, not a depot manager",
            ),
        ];
        for (error, text) in errors {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.code(), None);
        }
        assert_eq!(text(TEXT_ENDS.len()), "");
    }
}

/// Without `texts` errors print their numbers, which are their numbers on the wire.
#[cfg(all(test, not(feature = "texts")))]
mod number_tests {
    use super::*;
    use crate::Error;
    use core::fmt::{Display, Write};

    fn printed(e: impl Display) -> heapless::String<64> {
        let mut out = heapless::String::new();
        write!(out, "{e}").unwrap();
        out
    }

    #[test]
    fn errors_print_their_wire_numbers() {
        assert_eq!(printed(ErrorCode::Empty), "error code 0");
        assert_eq!(printed(Error::Full), "error code 1");
        assert_eq!(printed(Error::SequenceExpired), "error code 24");
        assert_eq!(printed(CloseReason::Superseded), "close reason 14");
        assert_eq!(printed(Error::AuthFailed), "close reason 0");
        assert_eq!(
            printed(Error::Closed(CloseReason::EncryptionRequired)),
            "connection closed: close reason 13"
        );
        assert_eq!(printed(Error::Disconnected), "client error 0");
        assert_eq!(printed(Error::PythonManager), "client error 4");
        // The numbers printed are the ones on the wire (postcard's variant index).
        let mut wire = [0u8; 4];
        let code = postcard::to_slice(&ErrorCode::SequenceExpired, &mut wire).unwrap();
        assert_eq!(code, [24]);
        let reason = postcard::to_slice(&CloseReason::EncryptionRequired, &mut wire).unwrap();
        assert_eq!(reason, [13]);
    }
}
