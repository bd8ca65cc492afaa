//! postcard, written out by hand for the wire messages.
//!
//! The bytes are exactly postcard's (see the tests, which hold every message and every byte
//! string against postcard itself). serde's derived code visits every field and array element
//! through generic visitors, and each message type gets its own copy; on firmware that was
//! most of the protocol code. The derives stay on the wire types for hosts.
//!
//! postcard's rules, as used here: `u8` and `[u8; N]` are raw bytes; `u16`/`u32`/`u64` and
//! lengths are LEB128 varints of at most 3/5/10 bytes whose last byte may not carry bits past
//! the type (not required to be minimal); `bool` and `Option` tags are one byte, 0 or 1; an
//! enum is its variant index as a `u32` varint, then its fields; `&str` is checked UTF-8.
//!
//! Both directions keep a sticky error instead of returning early from every field: a failed
//! read gives a placeholder and marks the reader bad, a write that does not fit marks the
//! writer full, and only the outcome of the whole message is looked at. Straight-line field
//! code is a fraction of the size of a branch after each field.

use crate::keyring::KeyName;
use crate::wire::{
    Action, ClientHello, ClientProof, CloseReason, ErrorCode, Handle, Items, ManagerStatus,
    Message, ObjectInfo, ObjectKind, ObjectStat, Op, QueueMode, QueueSize, QueueSpec, Reply,
    Request, Sealing, ServerHello, ServerVerdict, Wait,
};

/// Variant numbers of `Message::Reply` and of each `Reply`, in one place for the codec and
/// the manager's hand-written reply encoders (which write item bytes straight from a queue).
// Replies of capabilities left out of a build are neither sent nor read by it.
#[allow(dead_code)]
pub(crate) mod tag {
    /// `Message::Reply`.
    pub(crate) const MESSAGE_REPLY: u32 = 0;
    pub(crate) const DONE: u32 = 0;
    pub(crate) const OPENED: u32 = 1;
    pub(crate) const ITEM: u32 = 2;
    pub(crate) const SIZE: u32 = 3;
    pub(crate) const STAT: u32 = 4;
    pub(crate) const STATUS: u32 = 5;
    pub(crate) const ERROR: u32 = 6;
    pub(crate) const ACCEPTED: u32 = 7;
    pub(crate) const ITEMS: u32 = 8;
    pub(crate) const LEASED: u32 = 9;
    pub(crate) const FLAG: u32 = 10;
    pub(crate) const COUNT: u32 = 11;
    pub(crate) const VALUE: u32 = 12;
    pub(crate) const VALUES: u32 = 13;
    pub(crate) const FAILED: u32 = 14;
    pub(crate) const SESSION: u32 = 15;
    pub(crate) const BACKEND: u32 = 16;
    /// `Op::BackendStatus`.
    pub(crate) const OP_BACKEND_STATUS: u32 = 22;
}

/// Reads postcard values off the front of a byte string.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    /// A read failed: the value read is not to be used.
    bad: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader {
            rest: bytes,
            bad: false,
        }
    }

    /// Bytes not yet read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Marks the reader bad and gives `placeholder` back.
    fn fail<T>(&mut self, placeholder: T) -> T {
        self.mark_bad();
        placeholder
    }

    #[inline(never)]
    fn mark_bad(&mut self) {
        self.bad = true;
        self.rest = &[];
    }

    /// `value` if every read so far succeeded.
    fn done<T>(&self, value: T) -> Option<T> {
        (!self.bad).then_some(value)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        if n > self.rest.len() {
            return self.fail(&[]);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => self.fail(0),
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let bytes = self.take(N);
        if bytes.len() == N {
            out.copy_from_slice(bytes);
        }
        out
    }

    /// A varint of an unsigned type of `bits` bits, by postcard's rules.
    #[inline(never)]
    fn varint(&mut self, bits: u32) -> u64 {
        let max_len = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut value = 0u64;
        for i in 0..max_len {
            let b = self.u8();
            value |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i + 1 == max_len && b > last_max {
                    break;
                }
                return value;
            }
        }
        self.fail(0)
    }

    fn u16(&mut self) -> u16 {
        self.varint(16) as u16
    }

    // Read in dozens of places: a call each, not the varint's argument set-up each.
    #[inline(never)]
    fn u32(&mut self) -> u32 {
        self.varint(32) as u32
    }

    fn u64(&mut self) -> u64 {
        self.varint(64)
    }

    /// A signed integer, zigzag-encoded as postcard writes it.
    #[cfg(feature = "objects")]
    fn i32(&mut self) -> i32 {
        let v = self.u32();
        ((v >> 1) as i32) ^ -((v & 1) as i32)
    }

    /// A one-byte tag that must be 0 or 1 (`bool`, `Option`).
    fn flag(&mut self) -> bool {
        match self.u8() {
            0 => false,
            1 => true,
            _ => self.fail(false),
        }
    }

    /// A length-prefixed byte string (postcard's lengths are `usize` varints).
    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    fn bytes(&mut self) -> &'a [u8] {
        let len = self.varint(usize::BITS);
        match usize::try_from(len) {
            Ok(len) => self.take(len),
            Err(_) => self.fail(&[]),
        }
    }

    #[inline(never)]
    fn str(&mut self) -> &'a str {
        match core::str::from_utf8(self.bytes()) {
            Ok(s) => s,
            Err(_) => self.fail(""),
        }
    }

    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    fn handle(&mut self) -> Handle {
        Handle(self.u16())
    }

    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    fn wait(&mut self) -> Wait {
        match self.u32() {
            0 => Wait::NoWait,
            1 => Wait::Forever,
            2 => Wait::Millis(self.u32()),
            _ => self.fail(Wait::NoWait),
        }
    }

    fn spec(&mut self) -> QueueSpec {
        QueueSpec {
            capacity: self.u32(),
            max_item: self.u32(),
            mode: match self.u32() {
                0 => QueueMode::Value,
                1 => QueueMode::Raw,
                _ => self.fail(QueueMode::Value),
            },
        }
    }

    fn kind(&mut self) -> ObjectKind {
        match OBJECT_KINDS.get(self.u32() as usize) {
            Some(&kind) => kind,
            None => self.fail(ObjectKind::Queue),
        }
    }

    fn info(&mut self) -> ObjectInfo {
        ObjectInfo {
            handle: self.handle(),
            kind: self.kind(),
            spec: self.spec(),
        }
    }

    /// An `Act`'s action. A manager without `objects` answers every `Act` `NotAllowed`
    /// whatever its action, so it only moves past the fields (see the other `action`).
    #[cfg(feature = "objects")]
    fn action(&mut self) -> Action<'a> {
        match self.u32() {
            0 => Action::Set,
            1 => Action::Clear,
            2 => Action::IsSet,
            3 => Action::Wait { wait: self.wait() },
            4 => Action::Acquire { wait: self.wait() },
            5 => Action::Release,
            6 => Action::Count,
            7 => Action::Get,
            8 => Action::Put {
                value: self.bytes(),
            },
            9 => Action::CompareAndSet {
                expected: self.bytes(),
                value: self.bytes(),
            },
            10 => Action::Lookup { key: self.bytes() },
            11 => Action::Insert {
                key: self.bytes(),
                value: self.bytes(),
            },
            12 => Action::Remove { key: self.bytes() },
            13 => Action::Keys,
            14 => Action::Entries,
            15 => Action::WaitKey {
                key: self.bytes(),
                wait: self.wait(),
            },
            16 => Action::Abort,
            17 => Action::Reset,
            18 => Action::Call {
                request: self.bytes(),
                wait: self.wait(),
            },
            19 => Action::Parties,
            20 => Action::IsBroken,
            21 => Action::Notify { n: self.u32() },
            22 => Action::Append {
                value: self.bytes(),
            },
            23 => Action::At { index: self.i32() },
            24 => Action::Replace {
                index: self.i32(),
                value: self.bytes(),
            },
            25 => Action::InsertAt {
                index: self.i32(),
                value: self.bytes(),
            },
            26 => Action::PopAt { index: self.i32() },
            27 => Action::Find {
                value: self.bytes(),
            },
            28 => Action::CountOf {
                value: self.bytes(),
            },
            29 => Action::RemoveValue {
                value: self.bytes(),
            },
            30 => Action::Reverse,
            _ => self.fail(Action::Count),
        }
    }

    /// Moves past an `Act`'s action, for a manager without `objects`, which answers every
    /// `Act` `NotAllowed` (and a key's right to it is checked as for `Count`, the action given
    /// back): one table instead of a decoder per action (~0.5 KB of firmware flash). A tag
    /// past the table is malformed, as with `objects`.
    #[cfg(not(feature = "objects"))]
    fn action(&mut self) -> Action<'a> {
        // Each action's fields in order, two bits each from the lowest: 1 a `Wait`, 2 bytes,
        // 3 a varint (`u32`, or `i32` zigzagged). Indexed by the action's tag.
        const W: u8 = 1;
        const B: u8 = 2;
        const N: u8 = 3;
        #[rustfmt::skip]
        const FIELDS: [u8; 31] = [
            // 0 Set, Clear, IsSet, Wait, Acquire, Release, Count, 7 Get
            0, 0, 0, W, W, 0, 0, 0,
            // 8 Put, CompareAndSet, Lookup, Insert, Remove, Keys, Entries, 15 WaitKey
            B, B | B << 2, B, B | B << 2, B, 0, 0, B | W << 2,
            // 16 Abort, Reset, Call, Parties, IsBroken, Notify, Append, 23 At
            0, 0, B | W << 2, 0, 0, N, B, N,
            // 24 Replace, InsertAt, PopAt, Find, CountOf, RemoveValue, 30 Reverse
            N | B << 2, N | B << 2, N, B, B, B, 0,
        ];
        let Some(mut fields) = FIELDS.get(self.u32() as usize).copied() else {
            return self.fail(Action::Count);
        };
        while fields != 0 {
            match fields & 3 {
                W => {
                    self.wait();
                }
                B => {
                    self.bytes();
                }
                _ => {
                    self.u32();
                }
            }
            fields >>= 2;
        }
        Action::Count
    }

    fn error_code(&mut self) -> ErrorCode {
        match ERROR_CODES.get(self.u32() as usize) {
            Some(&code) => code,
            None => self.fail(ErrorCode::Empty),
        }
    }

    fn close_reason(&mut self) -> CloseReason {
        match CLOSE_REASONS.get(self.u32() as usize) {
            Some(&reason) => reason,
            None => self.fail(CloseReason::Malformed),
        }
    }

    /// `N` `u32`s in a row.
    fn u32s<const N: usize>(&mut self) -> [u32; N] {
        let mut out = [0; N];
        for v in &mut out {
            *v = self.u32();
        }
        out
    }

    #[inline(never)]
    fn stat(&mut self) -> ObjectStat<'a> {
        let name = self.str();
        let info = self.info();
        let [len, bytes, storage, getters, putters, joiners, unfinished] = self.u32s();
        ObjectStat {
            name,
            info,
            len,
            bytes,
            storage,
            getters,
            putters,
            joiners,
            unfinished,
            total_put: self.u64(),
            total_got: self.u64(),
        }
    }

    /// A reply; with `ALL` false, those to requests a client without `full-client` cannot
    /// send are malformed (one copy less of their decoding in such a client's firmware).
    fn reply<const ALL: bool>(&mut self) -> Reply<'a> {
        match self.u32() {
            tag::DONE => Reply::Done,
            tag::OPENED => Reply::Opened(self.info()),
            tag::ITEM => Reply::Item {
                handle: self.handle(),
                item: self.bytes(),
            },
            tag::SIZE => {
                let [len, capacity] = self.u32s();
                Reply::Size(QueueSize {
                    len,
                    capacity,
                    full: self.flag(),
                })
            }
            // Any manager gives these replies (and reads its own output back), but a client
            // without `full-client` sends no request they answer: malformed to it (`ALL`).
            tag::STAT if ALL => Reply::Stat(self.flag().then(|| self.stat())),
            tag::STATUS if ALL => {
                let [connections, max_connections, objects, waiters] = self.u32s();
                Reply::Status(ManagerStatus {
                    connections,
                    max_connections,
                    objects,
                    waiters,
                })
            }
            tag::ERROR => Reply::Error(self.error_code()),
            tag::ACCEPTED if ALL => Reply::Accepted {
                count: self.u32(),
                error: self.flag().then(|| self.error_code()),
            },
            tag::ITEMS if ALL => Reply::Items {
                handle: self.handle(),
                items: Items(self.bytes()),
            },
            // A client without leases or objects sends no request these replies answer: they
            // are malformed to it (and their decoding is not linked into its firmware).
            #[cfg(feature = "leases")]
            tag::LEASED => Reply::Leased {
                handle: self.handle(),
                lease: self.u64(),
                deliveries: self.bytes(),
                items: Items(self.bytes()),
            },
            #[cfg(feature = "objects")]
            tag::FLAG => Reply::Flag(self.flag()),
            #[cfg(feature = "objects")]
            tag::COUNT => Reply::Count(self.u32()),
            #[cfg(feature = "objects")]
            tag::VALUE => Reply::Value(self.bytes()),
            #[cfg(feature = "objects")]
            tag::VALUES => Reply::Values(Items(self.bytes())),
            #[cfg(feature = "objects")]
            tag::FAILED => Reply::Failed(self.str()),
            #[cfg(feature = "sessions")]
            tag::SESSION => Reply::Session {
                resumed: self.flag(),
            },
            // Only hosts ask for a backend's health.
            #[cfg(feature = "backend")]
            tag::BACKEND => Reply::Backend(self.flag().then(|| crate::wire::BackendHealth {
                kind: self.str(),
                server: self.str(),
                connected: self.flag(),
                since_ms: self.u64(),
                reconnects: self.u32(),
                last_error: self.str(),
            })),
            // A manager without a backend answers `BackendStatus` with `Backend(None)`, and
            // reads that back among its unsent output: the one form it can give.
            #[cfg(not(feature = "backend"))]
            tag::BACKEND => match self.flag() {
                false => Reply::Backend(None),
                true => self.fail(Reply::Done),
            },
            _ => self.fail(Reply::Done),
        }
    }

    fn op(&mut self) -> Op<'a> {
        match self.u32() {
            0 => Op::Open { name: self.str() },
            1 => Op::Create {
                name: self.str(),
                spec: self.spec(),
                exist_ok: self.flag(),
            },
            2 => Op::Put {
                handle: self.handle(),
                item: self.bytes(),
                wait: self.wait(),
            },
            3 => Op::Get {
                handle: self.handle(),
                wait: self.wait(),
            },
            4 => Op::Size {
                handle: self.handle(),
            },
            5 => Op::TaskDone {
                handle: self.handle(),
            },
            6 => Op::Join {
                handle: self.handle(),
                wait: self.wait(),
            },
            7 => Op::Stat { index: self.u16() },
            8 => Op::Status,
            9 => Op::Shutdown,
            10 => Op::PutMany {
                handle: self.handle(),
                items: Items(self.bytes()),
                wait: self.wait(),
            },
            11 => {
                let handle = self.handle();
                let [max_items, max_bytes] = self.u32s();
                Op::GetMany {
                    handle,
                    max_items,
                    max_bytes,
                    wait: self.wait(),
                }
            }
            12 => Op::Cancel { target: self.u32() },
            13 => Op::Return {
                handle: self.handle(),
                item: self.bytes(),
            },
            14 => {
                let handle = self.handle();
                let [max_items, max_bytes, lease_ms] = self.u32s();
                Op::GetLeased {
                    handle,
                    max_items,
                    max_bytes,
                    lease_ms,
                    wait: self.wait(),
                }
            }
            15 => Op::Ack { lease: self.u64() },
            16 => Op::Nack { lease: self.u64() },
            17 => Op::CreateObject {
                name: self.str(),
                kind: self.kind(),
                spec: self.spec(),
                exist_ok: self.flag(),
            },
            18 => Op::Act {
                handle: self.handle(),
                action: self.action(),
            },
            19 => Op::Session { id: self.array() },
            20 => Op::PutSeq {
                seq: self.u64(),
                handle: self.handle(),
                item: self.bytes(),
                wait: self.wait(),
            },
            21 => Op::PutManySeq {
                seq: self.u64(),
                handle: self.handle(),
                items: Items(self.bytes()),
                wait: self.wait(),
            },
            tag::OP_BACKEND_STATUS => Op::BackendStatus,
            _ => self.fail(Op::Status),
        }
    }

    /// A [`Message`] off the front (more messages may follow it).
    pub(crate) fn message(&mut self) -> Option<Message<'a>> {
        self.message_of::<true>()
    }

    /// A [`Message`] as this build's client reads it: a reply to a request it cannot send
    /// (see [`sendable`]) is malformed.
    pub(crate) fn client_message(&mut self) -> Option<Message<'a>> {
        self.message_of::<{ cfg!(feature = "full-client") }>()
    }

    fn message_of<const ALL: bool>(&mut self) -> Option<Message<'a>> {
        let message = match self.u32() {
            tag::MESSAGE_REPLY => Message::Reply {
                id: self.u32(),
                reply: self.reply::<ALL>(),
            },
            1 => Message::Closing(self.close_reason()),
            _ => self.fail(Message::Closing(CloseReason::Malformed)),
        };
        self.done(message)
    }

    /// A [`Request`] off the front (more requests may follow it).
    pub(crate) fn request(&mut self) -> Option<Request<'a>> {
        let request = Request {
            id: self.u32(),
            op: self.op(),
        };
        self.done(request)
    }

    pub(crate) fn client_hello(&mut self) -> Option<ClientHello> {
        let hello = ClientHello {
            magic: self.array(),
            min_version: self.u8(),
            max_version: self.u8(),
            nonce: self.array(),
            max_frame: self.u32(),
            key: KeyName::DEFAULT,
            encrypt: false,
        };
        let hello = match KeyName::new(self.str()) {
            Some(key) => ClientHello { key, ..hello },
            None => self.fail(hello),
        };
        let hello = ClientHello {
            encrypt: self.flag(),
            ..hello
        };
        self.done(hello)
    }

    pub(crate) fn client_proof(&mut self) -> Option<ClientProof> {
        let proof = ClientProof {
            proof: self.array(),
        };
        self.done(proof)
    }

    pub(crate) fn server_hello(&mut self) -> Option<ServerHello> {
        let hello = match self.u32() {
            0 => ServerHello::Challenge {
                version: self.u8(),
                nonce: self.array(),
                max_frame: self.u32(),
                // An enum's variant, as postcard reads it: a varint.
                sealed: match self.u32() {
                    0 => Sealing::Mac,
                    1 => Sealing::ChaCha20Poly1305,
                    2 => Sealing::Aes256Gcm,
                    _ => self.fail(Sealing::Mac),
                },
            },
            1 => ServerHello::Reject(self.close_reason()),
            _ => self.fail(ServerHello::Reject(CloseReason::Malformed)),
        };
        self.done(hello)
    }

    pub(crate) fn server_verdict(&mut self) -> Option<ServerVerdict> {
        let verdict = match self.u32() {
            0 => ServerVerdict::Welcome {
                proof: self.array(),
            },
            1 => ServerVerdict::AuthFailed,
            _ => self.fail(ServerVerdict::AuthFailed),
        };
        self.done(verdict)
    }
}

/// Decodes a whole byte string with `read`: `None` when it fails or leaves bytes over.
pub(crate) fn decode_all<'a, T>(
    bytes: &'a [u8],
    read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<T> {
    let mut reader = Reader::new(bytes);
    let value = read(&mut reader)?;
    reader.rest.is_empty().then_some(value)
}

/// Every `ErrorCode`, at its variant index.
const ERROR_CODES: [ErrorCode; 25] = [
    ErrorCode::Empty,
    ErrorCode::Full,
    ErrorCode::Timeout,
    ErrorCode::NoSuchObject,
    ErrorCode::AlreadyExists,
    ErrorCode::TooLarge,
    ErrorCode::InvalidName,
    ErrorCode::InvalidSpec,
    ErrorCode::ObjectLimit,
    ErrorCode::WaiterLimit,
    ErrorCode::TaskDoneTooMany,
    ErrorCode::NotAllowed,
    ErrorCode::ShuttingDown,
    ErrorCode::WrongKind,
    ErrorCode::Cancelled,
    ErrorCode::InvalidValue,
    ErrorCode::NoSuchLease,
    ErrorCode::LeaseLimit,
    ErrorCode::NoSuchKey,
    ErrorCode::NotOwner,
    ErrorCode::Broken,
    ErrorCode::Overflow,
    ErrorCode::NoSession,
    ErrorCode::SessionLimit,
    ErrorCode::SequenceExpired,
];

/// Every `ObjectKind`, at its variant index.
const OBJECT_KINDS: [ObjectKind; 12] = [
    ObjectKind::Queue,
    ObjectKind::Event,
    ObjectKind::Lock,
    ObjectKind::RLock,
    ObjectKind::Semaphore,
    ObjectKind::BoundedSemaphore,
    ObjectKind::Value,
    ObjectKind::Barrier,
    ObjectKind::Dict,
    ObjectKind::Call,
    ObjectKind::Condition,
    ObjectKind::List,
];

/// Every `CloseReason`, at its variant index.
const CLOSE_REASONS: [CloseReason; 15] = [
    CloseReason::AuthFailed,
    CloseReason::VersionMismatch,
    CloseReason::BadMagic,
    CloseReason::FrameTooLarge,
    CloseReason::Malformed,
    CloseReason::BadMac,
    CloseReason::Unexpected,
    CloseReason::HandshakeTimeout,
    CloseReason::FrameTimeout,
    CloseReason::WriteStalled,
    CloseReason::Shutdown,
    CloseReason::Busy,
    CloseReason::PeerClosed,
    CloseReason::EncryptionRequired,
    CloseReason::Superseded,
];

/// Writes postcard values into a byte slice; once a value does not fit, nothing more is
/// written and the writer is full.
pub(crate) struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
    full: bool,
}

impl<'o> Writer<'o> {
    pub(crate) fn new(out: &'o mut [u8]) -> Self {
        Writer {
            out,
            at: 0,
            full: false,
        }
    }

    /// The bytes written, unless something did not fit.
    pub(crate) fn finish(&self) -> Option<usize> {
        (!self.full).then_some(self.at)
    }

    #[inline(never)]
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        // `checked_add`: the slice found is then as long as `bytes` (no panic path).
        let at = self.at;
        let end = at.checked_add(bytes.len());
        match end.and_then(|end| self.out.get_mut(at..end)) {
            Some(dest) if !self.full => {
                dest.copy_from_slice(bytes);
                self.at = at + bytes.len();
            }
            _ => self.full = true,
        }
    }

    fn u8(&mut self, b: u8) {
        self.raw(&[b]);
    }

    /// A minimal varint (postcard writes every unsigned integer and length this way).
    #[inline(never)]
    pub(crate) fn varint(&mut self, mut v: u64) {
        let mut buf = [0u8; 10];
        let mut n = 0;
        for byte in &mut buf {
            n += 1;
            if v < 0x80 {
                *byte = v as u8;
                break;
            }
            *byte = v as u8 | 0x80;
            v >>= 7;
        }
        self.raw(buf.get(..n).unwrap_or_default());
    }

    fn u32(&mut self, v: u32) {
        self.varint(v.into());
    }

    /// A signed integer, zigzag-encoded as postcard writes it.
    #[cfg(feature = "objects")]
    fn i32(&mut self, v: i32) {
        self.u32(((v << 1) ^ (v >> 31)) as u32);
    }

    /// `u32`s in a row (variant indices and fields alike).
    #[inline(never)]
    fn u32s(&mut self, values: &[u32]) {
        for &v in values {
            self.u32(v);
        }
    }

    #[inline(never)]
    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.raw(bytes);
    }

    fn wait(&mut self, wait: Wait) {
        match wait {
            Wait::NoWait => self.u32(0),
            Wait::Forever => self.u32(1),
            Wait::Millis(ms) => self.u32s(&[2, ms]),
        }
    }

    fn info(&mut self, info: ObjectInfo) {
        self.u32s(&[
            info.handle.0.into(),
            info.kind as u32,
            info.spec.capacity,
            info.spec.max_item,
            info.spec.mode as u32,
        ]);
    }

    fn reply(&mut self, reply: &Reply) {
        match *reply {
            Reply::Done => self.u32(tag::DONE),
            Reply::Opened(info) => {
                self.u32(tag::OPENED);
                self.info(info);
            }
            Reply::Item { handle, item } => {
                self.u32s(&[tag::ITEM, handle.0.into()]);
                self.bytes(item);
            }
            Reply::Size(size) => self.u32s(&[tag::SIZE, size.len, size.capacity, size.full.into()]),
            Reply::Stat(None) => self.u32s(&[tag::STAT, 0]),
            Reply::Stat(Some(s)) => {
                self.u32s(&[tag::STAT, 1]);
                self.bytes(s.name.as_bytes());
                self.info(s.info);
                self.u32s(&[
                    s.len,
                    s.bytes,
                    s.storage,
                    s.getters,
                    s.putters,
                    s.joiners,
                    s.unfinished,
                ]);
                self.varint(s.total_put);
                self.varint(s.total_got);
            }
            Reply::Status(s) => self.u32s(&[
                tag::STATUS,
                s.connections,
                s.max_connections,
                s.objects,
                s.waiters,
            ]),
            Reply::Error(code) => self.u32s(&[tag::ERROR, code as u32]),
            Reply::Accepted { count, error } => match error {
                None => self.u32s(&[tag::ACCEPTED, count, 0]),
                Some(code) => self.u32s(&[tag::ACCEPTED, count, 1, code as u32]),
            },
            Reply::Items { handle, items } => {
                self.u32s(&[tag::ITEMS, handle.0.into()]);
                self.bytes(items.0);
            }
            #[cfg(feature = "leases")]
            Reply::Leased {
                handle,
                lease,
                deliveries,
                items,
            } => {
                self.u32s(&[tag::LEASED, handle.0.into()]);
                self.varint(lease);
                self.bytes(deliveries);
                self.bytes(items.0);
            }
            #[cfg(feature = "objects")]
            Reply::Flag(flag) => self.u32s(&[tag::FLAG, flag.into()]),
            #[cfg(feature = "objects")]
            Reply::Count(n) => self.u32s(&[tag::COUNT, n]),
            #[cfg(feature = "objects")]
            Reply::Value(value) => {
                self.u32(tag::VALUE);
                self.bytes(value);
            }
            #[cfg(feature = "objects")]
            Reply::Values(items) => {
                self.u32(tag::VALUES);
                self.bytes(items.0);
            }
            #[cfg(feature = "objects")]
            Reply::Failed(text) => {
                self.u32(tag::FAILED);
                self.bytes(text.as_bytes());
            }
            Reply::Session { resumed } => self.u32s(&[tag::SESSION, resumed.into()]),
            Reply::Backend(None) => self.u32s(&[tag::BACKEND, 0]),
            // Only a manager with a backend reports one.
            #[cfg(feature = "backend")]
            Reply::Backend(Some(h)) => {
                self.u32s(&[tag::BACKEND, 1]);
                self.bytes(h.kind.as_bytes());
                self.bytes(h.server.as_bytes());
                self.u32(h.connected.into());
                self.varint(h.since_ms);
                self.u32(h.reconnects);
                self.bytes(h.last_error.as_bytes());
            }
            // A manager without leases, objects or a backend never gives these replies.
            #[cfg(not(all(feature = "leases", feature = "objects", feature = "backend")))]
            _ => self.full = true,
        }
    }

    #[cfg(feature = "objects")]
    fn action(&mut self, action: &Action) {
        match *action {
            Action::Set => self.u32(0),
            Action::Clear => self.u32(1),
            Action::IsSet => self.u32(2),
            Action::Wait { wait } => {
                self.u32(3);
                self.wait(wait);
            }
            Action::Acquire { wait } => {
                self.u32(4);
                self.wait(wait);
            }
            Action::Release => self.u32(5),
            Action::Count => self.u32(6),
            Action::Get => self.u32(7),
            Action::Put { value } => {
                self.u32(8);
                self.bytes(value);
            }
            Action::CompareAndSet { expected, value } => {
                self.u32(9);
                self.bytes(expected);
                self.bytes(value);
            }
            Action::Lookup { key } => {
                self.u32(10);
                self.bytes(key);
            }
            Action::Insert { key, value } => {
                self.u32(11);
                self.bytes(key);
                self.bytes(value);
            }
            Action::Remove { key } => {
                self.u32(12);
                self.bytes(key);
            }
            Action::Keys => self.u32(13),
            Action::Entries => self.u32(14),
            Action::WaitKey { key, wait } => {
                self.u32(15);
                self.bytes(key);
                self.wait(wait);
            }
            Action::Abort => self.u32(16),
            Action::Reset => self.u32(17),
            Action::Call { request, wait } => {
                self.u32(18);
                self.bytes(request);
                self.wait(wait);
            }
            Action::Parties => self.u32(19),
            Action::IsBroken => self.u32(20),
            Action::Notify { n } => self.u32s(&[21, n]),
            Action::Append { value } => {
                self.u32(22);
                self.bytes(value);
            }
            Action::At { index } => {
                self.u32(23);
                self.i32(index);
            }
            Action::Replace { index, value } => {
                self.u32(24);
                self.i32(index);
                self.bytes(value);
            }
            Action::InsertAt { index, value } => {
                self.u32(25);
                self.i32(index);
                self.bytes(value);
            }
            Action::PopAt { index } => {
                self.u32(26);
                self.i32(index);
            }
            Action::Find { value } => {
                self.u32(27);
                self.bytes(value);
            }
            Action::CountOf { value } => {
                self.u32(28);
                self.bytes(value);
            }
            Action::RemoveValue { value } => {
                self.u32(29);
                self.bytes(value);
            }
            Action::Reverse => self.u32(30),
        }
    }

    fn op(&mut self, op: &Op) {
        // A `bool` and an `Option` tag (0 or 1) are written as varints of 0 or 1 would be.
        match *op {
            Op::Open { name } => {
                self.u32(0);
                self.bytes(name.as_bytes());
            }
            #[cfg(feature = "full-client")]
            Op::Create {
                name,
                spec,
                exist_ok,
            } => {
                self.u32(1);
                self.bytes(name.as_bytes());
                self.u32s(&[
                    spec.capacity,
                    spec.max_item,
                    spec.mode as u32,
                    exist_ok.into(),
                ]);
            }
            Op::Put { handle, item, wait } => {
                self.u32s(&[2, handle.0.into()]);
                self.bytes(item);
                self.wait(wait);
            }
            Op::Get { handle, wait } => {
                self.u32s(&[3, handle.0.into()]);
                self.wait(wait);
            }
            Op::Size { handle } => self.u32s(&[4, handle.0.into()]),
            Op::TaskDone { handle } => self.u32s(&[5, handle.0.into()]),
            Op::Join { handle, wait } => {
                self.u32s(&[6, handle.0.into()]);
                self.wait(wait);
            }
            #[cfg(feature = "full-client")]
            Op::Stat { index } => self.u32s(&[7, index.into()]),
            #[cfg(feature = "full-client")]
            Op::Status => self.u32(8),
            Op::Shutdown => self.u32(9),
            #[cfg(feature = "full-client")]
            Op::PutMany {
                handle,
                items,
                wait,
            } => {
                self.u32s(&[10, handle.0.into()]);
                self.bytes(items.0);
                self.wait(wait);
            }
            #[cfg(feature = "full-client")]
            Op::GetMany {
                handle,
                max_items,
                max_bytes,
                wait,
            } => {
                self.u32s(&[11, handle.0.into(), max_items, max_bytes]);
                self.wait(wait);
            }
            Op::Cancel { target } => self.u32s(&[12, target]),
            Op::Return { handle, item } => {
                self.u32s(&[13, handle.0.into()]);
                self.bytes(item);
            }
            #[cfg(feature = "leases")]
            Op::GetLeased {
                handle,
                max_items,
                max_bytes,
                lease_ms,
                wait,
            } => {
                self.u32s(&[14, handle.0.into(), max_items, max_bytes, lease_ms]);
                self.wait(wait);
            }
            #[cfg(feature = "leases")]
            Op::Ack { lease } => {
                self.u32(15);
                self.varint(lease);
            }
            #[cfg(feature = "leases")]
            Op::Nack { lease } => {
                self.u32(16);
                self.varint(lease);
            }
            #[cfg(feature = "objects")]
            Op::CreateObject {
                name,
                kind,
                spec,
                exist_ok,
            } => {
                self.u32(17);
                self.bytes(name.as_bytes());
                self.u32s(&[
                    kind as u32,
                    spec.capacity,
                    spec.max_item,
                    spec.mode as u32,
                    exist_ok.into(),
                ]);
            }
            #[cfg(feature = "objects")]
            Op::Act { handle, action } => {
                self.u32s(&[18, handle.0.into()]);
                self.action(&action);
            }
            #[cfg(feature = "sessions")]
            Op::Session { id } => {
                self.u32(19);
                self.raw(&id);
            }
            #[cfg(feature = "sessions")]
            Op::PutSeq {
                seq,
                handle,
                item,
                wait,
            } => {
                self.u32(20);
                self.varint(seq);
                self.u32(handle.0.into());
                self.bytes(item);
                self.wait(wait);
            }
            #[cfg(all(feature = "full-client", feature = "sessions"))]
            Op::PutManySeq {
                seq,
                handle,
                items,
                wait,
            } => {
                self.u32(21);
                self.varint(seq);
                self.u32(handle.0.into());
                self.bytes(items.0);
                self.wait(wait);
            }
            #[cfg(feature = "backend")]
            Op::BackendStatus => self.u32(tag::OP_BACKEND_STATUS),
            // Not sent by a client without the feature the request needs (see [`sendable`]).
            #[cfg(not(all(
                feature = "leases",
                feature = "objects",
                feature = "full-client",
                feature = "sessions",
                feature = "backend"
            )))]
            _ => self.full = true,
        }
    }
}

/// Whether this build can send `op`: requests for leases, objects and sessions need those
/// features, creating, statistics and batches `full-client`, a backend's health `backend`.
pub(crate) fn sendable(op: &Op) -> bool {
    let lease = matches!(op, Op::GetLeased { .. } | Op::Ack { .. } | Op::Nack { .. });
    let object = matches!(op, Op::CreateObject { .. } | Op::Act { .. });
    let full = matches!(
        op,
        Op::Create { .. }
            | Op::Stat { .. }
            | Op::Status
            | Op::PutMany { .. }
            | Op::GetMany { .. }
            | Op::PutManySeq { .. }
    );
    let session = matches!(
        op,
        Op::Session { .. } | Op::PutSeq { .. } | Op::PutManySeq { .. }
    );
    (cfg!(feature = "leases") || !lease)
        && (cfg!(feature = "objects") || !object)
        && (cfg!(feature = "full-client") || !full)
        && (cfg!(feature = "sessions") || !session)
        && (cfg!(feature = "backend") || !matches!(op, Op::BackendStatus))
}

/// A message that can be written as postcard writes it.
pub(crate) trait Encode {
    /// Writes `self` (the writer says whether it fitted).
    fn encode(&self, w: &mut Writer);

    /// Writes `self` at the start of `out`; returns the bytes written, `None` if it does not
    /// fit.
    fn encode_into(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer::new(out);
        self.encode(&mut w);
        w.finish()
    }
}

impl Encode for Message<'_> {
    fn encode(&self, w: &mut Writer) {
        match *self {
            Message::Reply { id, ref reply } => {
                w.u32s(&[tag::MESSAGE_REPLY, id]);
                w.reply(reply);
            }
            Message::Closing(reason) => w.u32s(&[1, reason as u32]),
        }
    }
}

impl Encode for Request<'_> {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.id);
        w.op(&self.op);
    }
}

impl Encode for ClientHello {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.magic);
        w.raw(&[self.min_version, self.max_version]);
        w.raw(&self.nonce);
        w.u32(self.max_frame);
        w.bytes(self.key.as_bytes());
        w.u8(self.encrypt.into());
    }
}

impl Encode for ClientProof {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.proof);
    }
}

impl Encode for ServerHello {
    fn encode(&self, w: &mut Writer) {
        match *self {
            ServerHello::Challenge {
                version,
                nonce,
                max_frame,
                sealed,
            } => {
                w.u32(0);
                w.u8(version);
                w.raw(&nonce);
                w.u32(max_frame);
                w.u8(sealed as u8);
            }
            ServerHello::Reject(reason) => w.u32s(&[1, reason as u32]),
        }
    }
}

impl Encode for ServerVerdict {
    fn encode(&self, w: &mut Writer) {
        match self {
            ServerVerdict::Welcome { proof } => {
                w.u32(0);
                w.raw(proof);
            }
            ServerVerdict::AuthFailed => w.u32(1),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// Field values from which one message of each kind is built (the messages borrow them).
    #[derive(Debug, Clone)]
    struct Parts {
        variant: u32,
        sub: u32,
        nums: [u32; 8],
        big: [u64; 2],
        handle: u16,
        flag: bool,
        text: String,
        bytes: Vec<u8>,
        nonce: [u8; 32],
    }

    fn num() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..3, 0u32..300, any::<u32>(), Just(u32::MAX)]
    }

    fn parts() -> impl Strategy<Value = Parts> {
        (
            (0u32..64, 0u32..64, prop::array::uniform8(num())),
            prop::array::uniform2(prop_oneof![0u64..300, any::<u64>()]),
            prop_oneof![0u16..300, any::<u16>()],
            any::<bool>(),
            "\\PC{0,12}",
            prop::collection::vec(any::<u8>(), 0..200),
            any::<[u8; 32]>(),
        )
            .prop_map(
                |((variant, sub, nums), big, handle, flag, text, bytes, nonce)| Parts {
                    variant,
                    sub,
                    nums,
                    big,
                    handle,
                    flag,
                    text,
                    bytes,
                    nonce,
                },
            )
    }

    fn wait(p: &Parts) -> Wait {
        match p.sub % 3 {
            0 => Wait::NoWait,
            1 => Wait::Forever,
            _ => Wait::Millis(p.nums[7]),
        }
    }

    fn info(p: &Parts) -> ObjectInfo {
        ObjectInfo {
            handle: Handle(p.handle),
            kind: OBJECT_KINDS[p.nums[5] as usize % OBJECT_KINDS.len()],
            spec: QueueSpec {
                capacity: p.nums[0],
                max_item: p.nums[1],
                mode: if p.flag {
                    QueueMode::Raw
                } else {
                    QueueMode::Value
                },
            },
        }
    }

    #[cfg(feature = "objects")]
    fn code(n: u32) -> ErrorCode {
        ERROR_CODES[n as usize % ERROR_CODES.len()]
    }

    fn reason(n: u32) -> CloseReason {
        CLOSE_REASONS[n as usize % CLOSE_REASONS.len()]
    }

    #[cfg(feature = "objects")]
    fn reply(p: &Parts) -> Reply<'_> {
        let n = p.nums;
        match p.variant % 19 {
            0 => Reply::Done,
            1 => Reply::Opened(info(p)),
            2 => Reply::Item {
                handle: Handle(p.handle),
                item: &p.bytes,
            },
            3 => Reply::Size(QueueSize {
                len: n[2],
                capacity: n[3],
                full: p.flag,
            }),
            4 => Reply::Stat(None),
            5 => Reply::Stat(Some(ObjectStat {
                name: &p.text,
                info: info(p),
                len: n[0],
                bytes: n[1],
                storage: n[2],
                getters: n[3],
                putters: n[4],
                joiners: n[5],
                unfinished: n[6],
                total_put: p.big[0],
                total_got: p.big[1],
            })),
            6 => Reply::Status(ManagerStatus {
                connections: n[0],
                max_connections: n[1],
                objects: n[2],
                waiters: n[3],
            }),
            7 => Reply::Error(code(p.sub)),
            8 => Reply::Accepted {
                count: n[4],
                error: p.flag.then(|| code(p.sub)),
            },
            9 => Reply::Items {
                handle: Handle(p.handle),
                items: Items(&p.bytes),
            },
            10 => Reply::Leased {
                handle: Handle(p.handle),
                lease: p.big[0],
                deliveries: &p.bytes[..p.bytes.len() / 2],
                items: Items(&p.bytes),
            },
            11 => Reply::Flag(p.flag),
            12 => Reply::Count(n[1]),
            13 => Reply::Value(&p.bytes),
            14 => Reply::Values(Items(&p.bytes)),
            15 => Reply::Session { resumed: p.flag },
            16 => Reply::Backend(None),
            17 => Reply::Backend(Some(crate::wire::BackendHealth {
                kind: &p.text,
                server: "nats://127.0.0.1:4222",
                connected: p.flag,
                since_ms: p.big[0],
                reconnects: n[1],
                last_error: &p.text,
            })),
            _ => Reply::Failed(&p.text),
        }
    }

    fn action(p: &Parts) -> Action<'_> {
        let (a, b) = p.bytes.split_at(p.bytes.len() / 2);
        // Independent of the action chosen below.
        let wait = |p: &Parts| match (p.sub / 31) % 3 {
            0 => Wait::NoWait,
            1 => Wait::Forever,
            _ => Wait::Millis(p.nums[7]),
        };
        let index = p.nums[6] as i32;
        match p.sub % 31 {
            0 => Action::Set,
            1 => Action::Clear,
            2 => Action::IsSet,
            3 => Action::Wait { wait: wait(p) },
            4 => Action::Acquire { wait: wait(p) },
            5 => Action::Release,
            6 => Action::Count,
            7 => Action::Get,
            8 => Action::Put { value: a },
            9 => Action::CompareAndSet {
                expected: a,
                value: b,
            },
            10 => Action::Lookup { key: b },
            11 => Action::Insert { key: a, value: b },
            12 => Action::Remove { key: a },
            13 => Action::Keys,
            14 => Action::Entries,
            15 => Action::WaitKey {
                key: a,
                wait: wait(p),
            },
            16 => Action::Abort,
            17 => Action::Reset,
            18 => Action::Parties,
            19 => Action::IsBroken,
            20 => Action::Notify { n: p.nums[7] },
            21 => Action::Append { value: a },
            22 => Action::At { index },
            23 => Action::Replace { index, value: b },
            24 => Action::InsertAt { index, value: a },
            25 => Action::PopAt { index },
            26 => Action::Find { value: b },
            27 => Action::CountOf { value: a },
            28 => Action::RemoveValue { value: b },
            29 => Action::Reverse,
            _ => Action::Call {
                request: a,
                wait: wait(p),
            },
        }
    }

    #[cfg(feature = "objects")]
    fn message(p: &Parts) -> Message<'_> {
        match p.sub % 7 {
            0 => Message::Closing(reason(p.nums[5])),
            _ => Message::Reply {
                id: p.nums[6],
                reply: reply(p),
            },
        }
    }

    fn op(p: &Parts) -> Op<'_> {
        let (handle, n) = (Handle(p.handle), p.nums);
        match p.variant % 23 {
            0 => Op::Open { name: &p.text },
            1 => Op::Create {
                name: &p.text,
                spec: info(p).spec,
                exist_ok: p.flag,
            },
            2 => Op::Put {
                handle,
                item: &p.bytes,
                wait: wait(p),
            },
            3 => Op::Get {
                handle,
                wait: wait(p),
            },
            4 => Op::Size { handle },
            5 => Op::TaskDone { handle },
            6 => Op::Join {
                handle,
                wait: wait(p),
            },
            7 => Op::Stat { index: p.handle },
            8 => Op::Status,
            9 => Op::Shutdown,
            10 => Op::PutMany {
                handle,
                items: Items(&p.bytes),
                wait: wait(p),
            },
            11 => Op::GetMany {
                handle,
                max_items: n[2],
                max_bytes: n[3],
                wait: wait(p),
            },
            12 => Op::Cancel { target: n[4] },
            13 => Op::Return {
                handle,
                item: &p.bytes,
            },
            14 => Op::GetLeased {
                handle,
                max_items: n[2],
                max_bytes: n[3],
                lease_ms: n[5],
                wait: wait(p),
            },
            15 => Op::Ack { lease: p.big[1] },
            16 => Op::Nack { lease: p.big[0] },
            17 => Op::CreateObject {
                name: &p.text,
                kind: info(p).kind,
                spec: info(p).spec,
                exist_ok: p.flag,
            },
            18 => Op::Act {
                handle,
                action: action(p),
            },
            19 => {
                let mut id = [0; 16];
                id.copy_from_slice(&p.nonce[..16]);
                Op::Session { id }
            }
            20 => Op::PutSeq {
                seq: p.big[0],
                handle,
                item: &p.bytes,
                wait: wait(p),
            },
            22 => Op::BackendStatus,
            _ => Op::PutManySeq {
                seq: p.big[1],
                handle,
                items: Items(&p.bytes),
                wait: wait(p),
            },
        }
    }

    fn request(p: &Parts) -> Request<'_> {
        Request {
            id: p.nums[6],
            op: op(p),
        }
    }

    fn client_hello(p: &Parts) -> ClientHello {
        let mut magic = [0; 4];
        magic.copy_from_slice(&p.nonce[..4]);
        ClientHello {
            magic,
            min_version: p.nonce[4],
            max_version: p.nonce[5],
            nonce: p.nonce,
            max_frame: p.nums[0],
            key: KeyName::new(&p.text).unwrap_or_default(),
            encrypt: p.flag,
        }
    }

    fn server_hello(p: &Parts) -> ServerHello {
        match p.flag {
            true => ServerHello::Challenge {
                version: p.nonce[0],
                nonce: p.nonce,
                max_frame: p.nums[0],
                sealed: [Sealing::Mac, Sealing::ChaCha20Poly1305, Sealing::Aes256Gcm]
                    [usize::from(p.nonce[1] % 3)],
            },
            false => ServerHello::Reject(reason(p.sub)),
        }
    }

    fn server_verdict(p: &Parts) -> ServerVerdict {
        match p.flag {
            true => ServerVerdict::Welcome { proof: p.nonce },
            false => ServerVerdict::AuthFailed,
        }
    }

    /// Byte edits applied to an encoding, to reach the strings near valid ones.
    #[derive(Debug, Clone)]
    enum Edit {
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        // Bytes near the edges of tags, flags and varints, and any byte.
        let byte = || {
            prop_oneof![
                0u8..4,
                Just(0x0F),
                Just(0x10),
                Just(0x7F),
                Just(0x80),
                Just(0xFF),
                any::<u8>()
            ]
        };
        let edit = prop_oneof![
            (any::<usize>(), byte()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<usize>(), byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Remove),
            any::<usize>().prop_map(Edit::Truncate),
        ];
        prop::collection::vec(edit, 0..4)
    }

    fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
        for edit in edits {
            let at = |i: usize, n: usize| if n == 0 { 0 } else { i % n };
            match *edit {
                Edit::Set(i, b) if !bytes.is_empty() => {
                    let i = at(i, bytes.len());
                    bytes[i] = b;
                }
                Edit::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
                Edit::Remove(i) if !bytes.is_empty() => {
                    bytes.remove(at(i, bytes.len()));
                }
                Edit::Truncate(i) => bytes.truncate(at(i, bytes.len() + 1)),
                _ => {}
            }
        }
        bytes
    }

    /// `value` encodes to exactly postcard's bytes, which decode back to it (also with bytes
    /// after it, which are left unread); and on every edited form of those bytes, `read`
    /// accepts exactly what postcard accepts, with the same value and length.
    fn check<'a, T>(
        value: &T,
        read: fn(&mut Reader<'a>) -> Option<T>,
        (followed, edited): (&'a mut Vec<u8>, &'a mut Vec<u8>),
        edits: &[Edit],
    ) where
        T: Encode + Serialize + Deserialize<'a> + PartialEq + core::fmt::Debug,
    {
        let mut buf = [0u8; 512];
        let theirs = postcard::to_slice(value, &mut buf).unwrap().to_vec();
        let mut ours = std::vec![0u8; theirs.len() + 8];
        let n = value.encode_into(&mut ours).unwrap();
        assert_eq!(&ours[..n], &theirs[..]);
        assert!(value.encode_into(&mut ours[..n - 1]).is_none());

        followed.clone_from(&theirs);
        followed.extend_from_slice(&[0x80, 1, 2]);
        let mut reader = Reader::new(followed);
        let back = read(&mut reader);
        assert_eq!(back.as_ref(), Some(value));
        assert_eq!(reader.rest(), [0x80, 1, 2]);

        *edited = apply(theirs, edits);
        let bytes: &'a [u8] = edited;
        let mut reader = Reader::new(bytes);
        let ours = read(&mut reader).map(|v| (v, reader.rest().len()));
        let theirs = postcard::take_from_bytes::<T>(bytes)
            .ok()
            .map(|(v, rest)| (v, rest.len()));
        assert_eq!(ours, theirs, "{bytes:02x?}");
    }

    // The whole codec against postcard needs `objects` (and `leases`, `sessions`): without
    // them a manager moves past what it would refuse and a client reads fewer replies.
    proptest! {
        #![proptest_config(crate::proptest_cases(2048))]

        #[cfg(feature = "objects")]
        #[test]
        fn messages_match_postcard(p in parts(), edits in edits()) {
            let mut scratch = (Vec::new(), Vec::new());
            check(&message(&p), Reader::message, (&mut scratch.0, &mut scratch.1), &edits);
        }

        #[cfg(feature = "objects")]
        #[test]
        fn requests_match_postcard(p in parts(), edits in edits()) {
            let mut scratch = (Vec::new(), Vec::new());
            check(&request(&p), Reader::request, (&mut scratch.0, &mut scratch.1), &edits);
        }

        /// Without `objects` an `Act`'s action is moved past, not decoded: on any edit of an
        /// `Act` request the reader still ends where postcard ends, accepts what it accepts,
        /// and reads the action as `Count`.
        #[cfg(not(feature = "objects"))]
        #[test]
        fn acts_are_moved_past_where_postcard_ends_them(p in parts(), edits in edits()) {
            let p = Parts { variant: 18, ..p };
            let act = request(&p);
            let is_act = matches!(act.op, Op::Act { .. });
            prop_assert!(is_act);
            let mut buf = [0u8; 512];
            let bytes = apply(postcard::to_slice(&act, &mut buf).unwrap().to_vec(), &edits);
            let mut r = Reader::new(&bytes);
            let ours = r.request().map(|q| (q, r.rest().len()));
            let theirs = postcard::take_from_bytes::<Request>(&bytes).ok().map(|(q, rest)| {
                let op = match q.op {
                    Op::Act { handle, .. } => Op::Act { handle, action: Action::Count },
                    op => op,
                };
                (Request { op, ..q }, rest.len())
            });
            prop_assert_eq!(ours, theirs, "{:02x?}", bytes);
        }

        #[test]
        fn handshake_messages_match_postcard(p in parts(), edits in edits()) {
            let mut s = [(); 4].map(|_| (Vec::new(), Vec::new()));
            let [a, b, c, d] = &mut s;
            check(&client_hello(&p), Reader::client_hello, (&mut a.0, &mut a.1), &edits);
            check(&ClientProof { proof: p.nonce }, Reader::client_proof, (&mut b.0, &mut b.1), &edits);
            check(&server_hello(&p), Reader::server_hello, (&mut c.0, &mut c.1), &edits);
            check(&server_verdict(&p), Reader::server_verdict, (&mut d.0, &mut d.1), &edits);
        }

        /// Any byte string: the decoders accept exactly what postcard accepts.
        #[cfg(feature = "objects")]
        #[test]
        fn garbage_matches_postcard(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let ours = r.message().map(|m| (m, r.rest().len()));
            let theirs = postcard::take_from_bytes::<Message>(&bytes).ok().map(|(m, rest)| (m, rest.len()));
            prop_assert_eq!(ours, theirs);
            let mut r = Reader::new(&bytes);
            let ours = r.request().map(|m| (m, r.rest().len()));
            let theirs = postcard::take_from_bytes::<Request>(&bytes).ok().map(|(m, rest)| (m, rest.len()));
            prop_assert_eq!(ours, theirs);
        }
    }

    /// The largest backend health reply fits the room every small reply has.
    #[test]
    fn the_largest_backend_reply_is_a_small_reply() {
        use crate::wire::{
            BackendHealth, HEADER_LEN, MAX_BACKEND_ERROR, MAX_BACKEND_KIND, MAX_BACKEND_SERVER,
            SMALL_REPLY_BOUND, TAG_LEN,
        };
        let (kind, server, error) = (
            "k".repeat(MAX_BACKEND_KIND),
            "s".repeat(MAX_BACKEND_SERVER),
            "e".repeat(MAX_BACKEND_ERROR),
        );
        let message = Message::Reply {
            id: u32::MAX,
            reply: Reply::Backend(Some(BackendHealth {
                kind: &kind,
                server: &server,
                connected: true,
                since_ms: u64::MAX,
                reconnects: u32::MAX,
                last_error: &error,
            })),
        };
        let mut buf = [0; 512];
        let n = message.encode_into(&mut buf).unwrap();
        let theirs = postcard::to_slice(&message, &mut [0; 512])
            .unwrap()
            .to_vec();
        assert_eq!(&buf[..n], &theirs[..]);
        assert!(n + HEADER_LEN + TAG_LEN <= SMALL_REPLY_BOUND, "{n}");
        assert_eq!(decode_all(&buf[..n], Reader::message), Some(message));
    }

    /// A manager built without a backend reads back the one backend reply it gives.
    #[test]
    fn no_backend_is_read_back_by_every_build() {
        let message = Message::Reply {
            id: 7,
            reply: Reply::Backend(None),
        };
        let mut buf = [0; 16];
        let n = message.encode_into(&mut buf).unwrap();
        assert_eq!(decode_all(&buf[..n], Reader::message), Some(message));
    }

    /// Varints at the edges of each width: too long, bits past the type, not minimal.
    #[test]
    fn varint_edges_match_postcard() {
        let cases: [&[u8]; 10] = [
            &[0x80, 0x00],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0x10],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            &[0xFF, 0xFF, 0x03],
            &[0xFF, 0xFF, 0x04],
            &[0x80, 0x80, 0x80],
            &[0xFF; 9],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
        ];
        for case in cases {
            let u16s = postcard::take_from_bytes::<u16>(case)
                .ok()
                .map(|(v, r)| (u64::from(v), r.len()));
            let u32s = postcard::take_from_bytes::<u32>(case)
                .ok()
                .map(|(v, r)| (u64::from(v), r.len()));
            let u64s = postcard::take_from_bytes::<u64>(case)
                .ok()
                .map(|(v, r)| (v, r.len()));
            for (bits, theirs) in [(16, u16s), (32, u32s), (64, u64s)] {
                let mut r = Reader::new(case);
                let value = r.varint(bits);
                let ours = r.done(value).map(|v| (v, r.rest().len()));
                assert_eq!(ours, theirs, "{bits} bits: {case:02x?}");
            }
        }
    }
}
