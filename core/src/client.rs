//! The client state machine: one connection to a manager, requests pipelined on it.
//!
//! [`Client::new`] queues the hello. The transport then moves bytes as for the manager
//! ([`Client::rx_space`] / [`Client::handle_received`], [`Client::poll_transmit`] /
//! [`Client::handle_transmitted`]) and drains [`Client::poll_event`]: first
//! [`Event::Connected`], then one [`Event::Reply`] per request sent with [`Client::send`], matched
//! by id, or [`Event::Closed`] with the reason. Several requests may be in flight at once, up to
//! the number of [`RequestSlot`]s handed in.

use crate::auth::{transcript_hash, AuthKey, CLIENT_PROOF, MANAGER_PROOF};
use crate::buf::{Peek, RxBuf, TxBuf};
use crate::codec::{decode_all, sendable, Encode, Reader};
use crate::error::Error;
use crate::seal::{Encryption, FrameKey};
#[cfg(feature = "alloc")]
use crate::storage::Bytes;
use crate::storage::Managed;
use crate::time::{Deadline, Instant};
use crate::wire::{
    ClientHello, ClientProof, CloseReason, Handle, Message, Op, Reply, Request, Sealing,
    ServerHello, ServerVerdict, Wait, HEADER_LEN, MAGIC, MAX_HANDSHAKE_BODY, MAX_MAX_FRAME,
    MIN_MAX_FRAME, MIN_VERSION, NONCE_LEN, PY_CHALLENGE, PY_MANAGER_MARKER, PY_MANAGER_MARKER_AT,
    TAG_LEN, UNANSWERED_ID, VERSION,
};

pub use error::{SendError, SendUnansweredError};

mod error;
mod timeouts;

use timeouts::{Cell, ReplyTimers};

/// Bytes a `Put` request takes beyond its item: tags, id, handle, lengths and wait, as varints.
pub const PUT_OVERHEAD: usize = 24;

/// One request in flight. Hand a slice of [`RequestSlot::FREE`] to [`Client::new`]; its length
/// is the most requests in flight at once.
#[derive(Debug, Clone, Copy)]
pub struct RequestSlot {
    generation: u16,
    busy: bool,
    /// The caller gave up on it: its reply is not reported, and items in it go back.
    abandoned: bool,
    /// A `Cancel` for it still has to be sent.
    cancel_pending: bool,
    /// The queue a get takes from, so items of an abandoned get can be given back.
    handle: Option<Handle>,
    deadline: Deadline,
    /// Its share of the client's reply deadlines (`timers`).
    timer: Cell,
}

impl RequestSlot {
    /// An unused slot.
    pub const FREE: RequestSlot = RequestSlot {
        generation: 0,
        busy: false,
        abandoned: false,
        cancel_pending: false,
        handle: None,
        deadline: Deadline::NONE,
        timer: Cell::EMPTY,
    };
}

/// Time limits of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientConfig {
    /// Time from [`Client::new`] to a finished handshake.
    pub handshake_timeout_ms: u32,
    /// Time the manager has to answer, beyond what the request itself may wait.
    pub reply_timeout_ms: u32,
    /// The name of the key the authkey is (the hello carries it; the default: the unnamed key).
    pub key_name: crate::keyring::KeyName,
    /// Whether to ask for sealed (encrypted) frames, and whether to refuse a manager that
    /// will not seal them (PROTOCOL.md §5.1).
    pub encryption: Encryption,
    /// Offer AES-256-GCM (protocol version 4, PROTOCOL.md §5.1), which the manager picks when
    /// it prefers it too: set it where the CPU has AES instructions (depot-std does). Needs
    /// feature `aead-ring`; without it the client offers version 3 only.
    pub prefer_aes_gcm: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            handshake_timeout_ms: 10_000,
            reply_timeout_ms: 30_000,
            key_name: crate::keyring::KeyName::DEFAULT,
            encryption: Encryption::default(),
            prefer_aes_gcm: false,
        }
    }
}

/// What happened on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event<'r> {
    /// The handshake finished: both sides proved the authkey; requests may be sent.
    Connected,
    /// The answer to request `id`.
    Reply {
        /// The id [`Client::send`] returned.
        id: u32,
        /// The outcome; item bytes borrow the receive buffer until the next call.
        reply: Reply<'r>,
    },
    /// The connection is over; close the socket. Requests in flight will get no reply.
    Closed(Error),
}

// No heap to box into: the session keys live inline, as large as they are.
#[allow(clippy::large_enum_variant)]
enum State {
    SentHello {
        nonce: [u8; NONCE_LEN],
    },
    SentProof {
        /// Hash of the hello and challenge (see `auth::transcript_hash`).
        transcript: [u8; 32],
        /// How frames will be protected (PROTOCOL.md §5.1).
        sealed: Sealing,
    },
    Ready {
        rx_mac: FrameKey,
        tx_mac: FrameKey,
    },
    Closed {
        error: Error,
        reported: bool,
    },
}

/// The client state machine. See the module docs.
pub struct Client<'a> {
    config: ClientConfig,
    key: AuthKey,
    rx: RxBuf<'a>,
    tx: TxBuf<'a>,
    slots: Managed<'a, RequestSlot>,
    /// The reply deadlines of the requests in flight, earliest first.
    timers: ReplyTimers,
    /// Abandoned requests whose `Cancel` is not yet written.
    cancels_pending: usize,
    in_flight: usize,
    /// Where the search for a free slot starts.
    next_slot: usize,
    state: State,
    handshake_deadline: Instant,
    peer_max: usize,
    /// Offset of the next message of a verified frame; 0 when none is being read.
    cursor: usize,
    frame_end: usize,
    /// Bytes of `rx` to drop at the next call (the frame the last event borrowed from).
    consumed: usize,
}

impl<'a> Client<'a> {
    /// A client that has queued its hello. `nonce` must be fresh random bytes; `rx` bounds the
    /// largest reply (announced to the manager), `tx` the largest request.
    pub fn new(
        config: ClientConfig,
        authkey: &[u8],
        nonce: [u8; NONCE_LEN],
        now: Instant,
        rx: impl Into<Managed<'a, u8>>,
        tx: impl Into<Managed<'a, u8>>,
        slots: impl Into<Managed<'a, RequestSlot>>,
    ) -> Self {
        let buffers = (RxBuf::new(rx.into()), TxBuf::new(tx.into()));
        Self::with(config, authkey, nonce, now, buffers, slots.into())
    }

    /// A client that owns its buffers: they grow on demand up to `rx_limit` (the largest
    /// reply frame) and `tx_limit` bytes, and shrink back to their first 4 KiB whenever they
    /// empty.
    #[cfg(feature = "alloc")]
    pub fn owned(
        config: ClientConfig,
        authkey: &[u8],
        nonce: [u8; NONCE_LEN],
        now: Instant,
        rx_limit: usize,
        tx_limit: usize,
        slots: usize,
    ) -> Client<'static> {
        let buffers = (
            RxBuf::with(Bytes::owned(rx_limit, true)),
            TxBuf::with(Bytes::owned(tx_limit, true)),
        );
        let slots = alloc::vec![RequestSlot::FREE; slots.min(0xFFFF)];
        Client::with(config, authkey, nonce, now, buffers, slots.into())
    }

    fn with(
        config: ClientConfig,
        authkey: &[u8],
        nonce: [u8; NONCE_LEN],
        now: Instant,
        (rx, tx): (RxBuf<'a>, TxBuf<'a>),
        mut slots: Managed<'a, RequestSlot>,
    ) -> Self {
        let max_frame = rx
            .capacity()
            .saturating_sub(HEADER_LEN)
            .min(MAX_MAX_FRAME as usize) as u32;
        for slot in slots.iter_mut() {
            *slot = RequestSlot::FREE;
        }
        let mut client = Client {
            config,
            key: AuthKey::new(authkey),
            rx,
            tx,
            slots,
            timers: ReplyTimers::new(),
            cancels_pending: 0,
            in_flight: 0,
            next_slot: 0,
            state: State::SentHello { nonce },
            handshake_deadline: now.add_millis(config.handshake_timeout_ms.into()),
            peer_max: 0,
            cursor: 0,
            frame_end: 0,
            consumed: 0,
        };
        let hello = client.hello(nonce);
        if max_frame < MIN_MAX_FRAME || client.tx.push_plain(&hello).is_err() {
            client.close(Error::TooLarge);
        }
        client
    }

    /// Starts again on a new connection, as [`Client::new`] would with the same key, settings
    /// and storage: the buffers are emptied, the requests in flight are forgotten (no id
    /// handed out before is ever reported) and a new hello is queued. `nonce` must be fresh.
    /// For clients that reconnect (the `reconnect` module, feature `sessions`).
    pub fn restart(&mut self, nonce: [u8; NONCE_LEN], now: Instant) {
        self.rx.clear();
        self.tx.clear();
        for slot in self.slots.iter_mut() {
            *slot = RequestSlot {
                generation: slot.generation.wrapping_add(1),
                ..RequestSlot::FREE
            };
        }
        self.timers = ReplyTimers::new();
        self.cancels_pending = 0;
        self.in_flight = 0;
        self.next_slot = 0;
        self.state = State::SentHello { nonce };
        self.handshake_deadline = now.add_millis(self.config.handshake_timeout_ms.into());
        self.peer_max = 0;
        self.cursor = 0;
        self.frame_end = 0;
        self.consumed = 0;
        let hello = self.hello(nonce);
        if self.tx.push_plain(&hello).is_err() {
            self.close(Error::TooLarge);
        }
    }

    /// The hello this client sends (and hashes into the handshake transcript).
    #[inline(never)]
    fn hello(&self, nonce: [u8; NONCE_LEN]) -> ClientHello {
        let max_frame = self.rx.capacity().saturating_sub(HEADER_LEN);
        ClientHello {
            magic: MAGIC,
            min_version: MIN_VERSION,
            max_version: self.max_version(),
            nonce,
            max_frame: max_frame.min(MAX_MAX_FRAME as usize) as u32,
            key: self.config.key_name,
            encrypt: self.config.encryption.wants(),
        }
    }

    /// The newest protocol version this client offers: 4 (AES-256-GCM) only when it prefers
    /// AES-256-GCM and can seal with it.
    fn max_version(&self) -> u8 {
        if self.config.prefer_aes_gcm && self.config.encryption.wants() {
            VERSION
        } else {
            MIN_VERSION
        }
    }

    /// How frames are protected on this connection, once the handshake has finished.
    pub fn sealing(&self) -> Option<Sealing> {
        match &self.state {
            State::Ready { tx_mac, .. } => Some(tx_mac.sealing()),
            _ => None,
        }
    }

    /// Whether requests may be sent.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// Why the connection closed, once it has.
    pub fn error(&self) -> Option<Error> {
        match self.state {
            State::Closed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether another request may be sent now (a free slot and room to encode it).
    pub fn can_send(&self, item_len: usize) -> bool {
        self.is_ready()
            && self.in_flight < self.slots.len()
            && self.tx.free() >= item_len + PUT_OVERHEAD + HEADER_LEN + TAG_LEN
    }

    /// The largest item a `put` on this connection can carry (0 before the handshake).
    pub fn max_item(&self) -> usize {
        let frame = self.peer_max.saturating_sub(TAG_LEN + PUT_OVERHEAD);
        frame.min(
            self.tx
                .capacity()
                .saturating_sub(HEADER_LEN + TAG_LEN + PUT_OVERHEAD),
        )
    }

    /// Free space to read bytes into.
    pub fn rx_space(&mut self) -> &mut [u8] {
        self.apply_consumed();
        if matches!(self.state, State::Closed { .. }) {
            return &mut [];
        }
        self.rx.space()
    }

    /// `n` bytes were read into [`Client::rx_space`].
    pub fn handle_received(&mut self, n: usize) {
        self.rx.commit(n);
    }

    /// Copies in as much of `bytes` as fits; returns how many were taken.
    pub fn handle_input(&mut self, bytes: &[u8]) -> usize {
        self.apply_consumed();
        if matches!(self.state, State::Closed { .. }) {
            return 0;
        }
        self.rx.fill(bytes)
    }

    /// Bytes to send now (sealing the frame being built).
    pub fn poll_transmit(&mut self) -> &[u8] {
        self.write_cancels();
        if let State::Ready { tx_mac, .. } = &mut self.state {
            self.tx.seal(tx_mac);
        }
        self.tx.pending()
    }

    /// Gives up on request `id` (its caller stopped waiting, e.g. a dropped future): the
    /// manager is asked to withdraw it, its reply will not be reported, and any item it
    /// brings anyway is put back at the head of its queue. Never loses an item.
    pub fn abandon(&mut self, id: u32) {
        self.give_up(id, true);
    }

    /// Gives up on request `id` as [`Client::abandon`] does, except that its reply is still
    /// reported ([`Event::Reply`]), with any item it brings: for a transport that gives back
    /// what several calls of one caller took in an order of its own (the core would give each
    /// reply's items back as it came, the newest ending first).
    pub fn withdraw(&mut self, id: u32) {
        self.give_up(id, false);
    }

    fn give_up(&mut self, id: u32, abandon: bool) {
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        if slot.abandoned || slot.cancel_pending {
            return;
        }
        slot.abandoned = abandon;
        slot.cancel_pending = true;
        // Nobody waits for its reply any more, so it has no deadline.
        self.timers.remove(&mut self.slots, id & 0xFFFF);
        if let Some(slot) = self.slots.get_mut((id & 0xFFFF) as usize) {
            slot.deadline = Deadline::NONE;
        }
        self.cancels_pending += 1;
        self.write_cancels();
    }

    /// The slot of request `id`, while it is in flight.
    fn slot_mut(&mut self, id: u32) -> Option<&mut RequestSlot> {
        slot_in(&mut self.slots, id)
    }

    /// Writes the `Cancel`s of abandoned requests that fit the transmit buffer now.
    fn write_cancels(&mut self) {
        if self.cancels_pending == 0 {
            return;
        }
        let State::Ready { tx_mac, .. } = &mut self.state else {
            return;
        };
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if !slot.cancel_pending {
                continue;
            }
            let target = (u32::from(slot.generation) << 16) | index as u32;
            let cancel = Request {
                id: UNANSWERED_ID,
                op: Op::Cancel { target },
            };
            if self.tx.push(&cancel, self.peer_max, tx_mac).is_err() {
                return;
            }
            slot.cancel_pending = false;
            self.cancels_pending -= 1;
        }
    }

    /// The transport sent `n` bytes of [`Client::poll_transmit`].
    pub fn handle_transmitted(&mut self, n: usize) {
        self.tx.consume(n);
    }

    /// The socket is gone.
    pub fn handle_close(&mut self) {
        self.close(Error::Disconnected);
    }

    /// When [`Client::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::SentHello { .. } | State::SentProof { .. } => Some(self.handshake_deadline),
            State::Ready { .. } => self.timers.next(&self.slots),
            State::Closed { .. } => None,
        }
    }

    /// Closes the connection if the handshake or a reply is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        let overdue = match self.state {
            State::SentHello { .. } | State::SentProof { .. } => self.handshake_deadline <= now,
            // The earliest deadline is enough: any overdue reply closes the connection.
            State::Ready { .. } => self.timers.next(&self.slots).is_some_and(|d| d <= now),
            State::Closed { .. } => false,
        };
        if overdue {
            debug!("client: manager did not answer in time");
            self.close(Error::Timeout);
        }
    }

    /// Sends a request; returns its id, which the matching [`Event::Reply`] carries.
    /// Requests for leases and objects are `NotAllowed` without those features.
    pub fn send(&mut self, now: Instant, op: Op) -> Result<u32, SendError> {
        self.apply_consumed();
        if !sendable(&op) {
            return Err(SendError::NotAllowed);
        }
        let tx_mac = match &mut self.state {
            State::Ready { tx_mac, .. } => tx_mac,
            State::Closed { error, .. } => return Err(SendError::Closed(*error)),
            _ => return Err(SendError::NotReady),
        };
        if let Op::Put { item, .. } = op {
            if item.len() > self.peer_max.saturating_sub(TAG_LEN + PUT_OVERHEAD) {
                return Err(SendError::TooLarge);
            }
        }
        let n = self.slots.len().min(0xFFFF);
        if self.in_flight >= n {
            return Err(SendError::InFlightLimit);
        }
        // The first free slot from `next_slot` on, wrapping around: counted without `%`,
        // whose division by a length that could be zero links in a panic path.
        let mut index = self.next_slot;
        let mut free = None;
        for _ in 0..n {
            if index >= n {
                index = 0;
            }
            if self.slots.get(index).is_some_and(|s| !s.busy) {
                free = Some(index);
                break;
            }
            index += 1;
        }
        let Some((index, slot)) = free.and_then(|i| Some((i, self.slots.get_mut(i)?))) else {
            return Err(SendError::InFlightLimit);
        };
        let id = (u32::from(slot.generation) << 16) | index as u32;
        self.tx
            .push(&Request { id, op }, self.peer_max, tx_mac)
            .map_err(|_| {
                if self.tx.capacity() < HEADER_LEN + TAG_LEN + PUT_OVERHEAD + op_payload(&op) {
                    SendError::TooLarge
                } else {
                    SendError::WouldBlock
                }
            })?;
        let wait = match op {
            Op::Put { wait, .. }
            | Op::Get { wait, .. }
            | Op::Join { wait, .. }
            | Op::PutMany { wait, .. }
            | Op::GetMany { wait, .. }
            | Op::GetLeased { wait, .. } => wait,
            _ => Wait::NoWait,
        };
        let grace = u64::from(self.config.reply_timeout_ms);
        slot.busy = true;
        slot.handle = match op {
            Op::Get { handle, .. } | Op::GetMany { handle, .. } => Some(handle),
            _ => None,
        };
        slot.deadline = Deadline::new(match wait {
            Wait::Forever => None,
            Wait::NoWait => Some(now.add_millis(grace)),
            Wait::Millis(ms) => Some(now.add_millis(grace + u64::from(ms))),
        });
        if slot.deadline != Deadline::NONE {
            self.timers.update(&mut self.slots, index as u32);
        }
        self.in_flight += 1;
        self.next_slot = if index + 1 < n { index + 1 } else { 0 };
        Ok(id)
    }

    /// Sends a request whose reply is not reported, such as an ack the caller does not wait for:
    /// it takes no request slot, and a refusal is only logged.
    pub fn send_unanswered(&mut self, op: Op) -> Result<(), SendUnansweredError> {
        self.apply_consumed();
        if !sendable(&op) {
            return Err(SendUnansweredError::NotAllowed);
        }
        let tx_mac = match &mut self.state {
            State::Ready { tx_mac, .. } => tx_mac,
            State::Closed { error, .. } => return Err(SendUnansweredError::Closed(*error)),
            _ => return Err(SendUnansweredError::NotReady),
        };
        let request = Request {
            id: UNANSWERED_ID,
            op,
        };
        self.tx
            .push(&request, self.peer_max, tx_mac)
            .map_err(|_| SendUnansweredError::WouldBlock)
    }

    /// The next event, if any. Item bytes in a reply borrow the receive buffer until the next
    /// call on this client.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.apply_consumed();
        let (at, end) = loop {
            match &mut self.state {
                State::Closed { error, reported } => {
                    if *reported {
                        return None;
                    }
                    *reported = true;
                    return Some(Event::Closed(*error));
                }
                State::SentHello { .. } | State::SentProof { .. } => match self.handshake_step() {
                    Some(true) => return Some(Event::Connected),
                    Some(false) => continue,
                    None => return None,
                },
                // A skipped message may have ended its frame: drop that frame before the next.
                State::Ready { .. } if self.consumed > 0 => self.apply_consumed(),
                State::Ready { .. } => match self.next_message() {
                    Some(Ok(at)) => match self.take_message(at) {
                        Ok(Taken::Reply(at, end)) => break (at, end),
                        Ok(Taken::Skipped) => continue,
                        Ok(Taken::Blocked) => return None,
                        Err(error) => self.close(error),
                    },
                    Some(Err(reason)) => self.close(reason.into()),
                    None => return None,
                },
            }
        };
        // `take_message` checked this message; decoding it again lets the reply borrow `rx`.
        match Reader::new(self.rx.bytes().get(at..end).unwrap_or_default()).client_message() {
            Some(Message::Reply { id, reply }) => Some(Event::Reply { id, reply }),
            _ => None,
        }
    }

    /// Runs one handshake frame: `Some(true)` when connected, `Some(false)` when the state
    /// changed, `None` when more bytes are needed.
    fn handshake_step(&mut self) -> Option<bool> {
        let body_len = match self.rx.peek(MAX_HANDSHAKE_BODY as usize) {
            Peek::Partial => return None,
            Peek::TooLarge => {
                self.close(Error::Closed(CloseReason::FrameTooLarge));
                return Some(false);
            }
            Peek::Frame { body_len } => body_len,
        };
        // `peek` found the whole frame: `get` says so without a panic path.
        let body = (self.rx.bytes())
            .get(HEADER_LEN..HEADER_LEN + body_len)
            .unwrap_or_default();
        if matches!(self.state, State::SentHello { .. }) && body.starts_with(PY_CHALLENGE) {
            // A depot manager greets Python clients first; its marker says it speaks depot too.
            if body.get(PY_MANAGER_MARKER_AT..PY_MANAGER_MARKER_AT + PY_MANAGER_MARKER.len())
                != Some(&PY_MANAGER_MARKER[..])
            {
                self.close(Error::PythonManager);
                return Some(false);
            }
            self.rx.consume(HEADER_LEN + body_len);
            return Some(false);
        }
        let outcome = match self.state {
            State::SentHello {
                nonce: client_nonce,
            } => match decode_all(body, Reader::server_hello) {
                Some(ServerHello::Challenge {
                    version,
                    max_frame,
                    sealed,
                    ..
                }) => {
                    if !(MIN_VERSION..=self.max_version()).contains(&version) {
                        Err(Error::Closed(CloseReason::VersionMismatch))
                    } else if max_frame < MIN_MAX_FRAME
                        || (sealed == Sealing::Aes256Gcm && version < 4)
                    {
                        Err(Error::Closed(CloseReason::Malformed))
                    } else if let Err(reason) = self
                        .config
                        .encryption
                        .client_accepts(sealed != Sealing::Mac)
                    {
                        Err(Error::Closed(reason))
                    } else {
                        self.peer_max = max_frame.min(MAX_MAX_FRAME) as usize;
                        let mut encoded = [0; MAX_HANDSHAKE_BODY as usize];
                        let len = self.hello(client_nonce).encode_into(&mut encoded);
                        let hello = encoded.get(..len.unwrap_or_default()).unwrap_or_default();
                        let transcript = transcript_hash(hello, body);
                        let proof = self.key.derive(CLIENT_PROOF, &transcript);
                        self.state = State::SentProof { transcript, sealed };
                        self.tx
                            .push_plain(&ClientProof { proof })
                            .map_err(|_| Error::WouldBlock)
                            .map(|_| false)
                    }
                }
                Some(ServerHello::Reject(reason)) => Err(reason.into()),
                None => Err(Error::Closed(CloseReason::Malformed)),
            },
            State::SentProof { transcript, sealed } => {
                match decode_all(body, Reader::server_verdict) {
                    Some(ServerVerdict::Welcome { proof }) => {
                        if self.key.verify(MANAGER_PROOF, &transcript, &proof) {
                            self.state = State::Ready {
                                rx_mac: FrameKey::manager_to_client(&self.key, &transcript, sealed),
                                tx_mac: FrameKey::client_to_manager(&self.key, &transcript, sealed),
                            };
                            Ok(true)
                        } else {
                            debug!("client: the manager's proof is wrong");
                            Err(Error::AuthFailed)
                        }
                    }
                    Some(ServerVerdict::AuthFailed) => Err(Error::AuthFailed),
                    None => Err(Error::Closed(CloseReason::Malformed)),
                }
            }
            _ => return None,
        };
        self.rx.consume(HEADER_LEN + body_len);
        match outcome {
            Ok(connected) => Some(connected),
            Err(error) => {
                self.close(error);
                Some(false)
            }
        }
    }

    /// Finds the next message of a verified frame: its offset in `rx`.
    fn next_message(&mut self) -> Option<Result<usize, CloseReason>> {
        let State::Ready { rx_mac, .. } = &mut self.state else {
            return None;
        };
        // A loop, not recursion: a run of empty frames must not grow a firmware stack.
        while self.cursor == 0 {
            let body_len = match self.rx.peek(self.rx.capacity().saturating_sub(HEADER_LEN)) {
                Peek::Partial => return None,
                Peek::TooLarge => return Some(Err(CloseReason::FrameTooLarge)),
                Peek::Frame { body_len } if body_len < TAG_LEN => {
                    return Some(Err(CloseReason::Malformed))
                }
                Peek::Frame { body_len } => body_len,
            };
            if !rx_mac.open(self.rx.frame_mut(HEADER_LEN + body_len)) {
                return Some(Err(CloseReason::BadMac));
            }
            if body_len == TAG_LEN {
                self.rx.consume(HEADER_LEN + body_len);
                continue;
            }
            self.cursor = HEADER_LEN;
            self.frame_end = HEADER_LEN + body_len - TAG_LEN;
        }
        Some(Ok(self.cursor))
    }

    /// Checks the message at `at` and advances past it: `Some((at, end))` for a reply to a
    /// request in flight, `None` when the manager said it is closing.
    fn take_message(&mut self, at: usize) -> Result<Taken, Error> {
        let end = self.frame_end;
        let mut reader = Reader::new(self.rx.bytes().get(at..end).unwrap_or_default());
        let Some(message) = reader.client_message() else {
            return Err(Error::Closed(CloseReason::Malformed));
        };
        let message_end = end - reader.rest().len();
        let taken = match message {
            Message::Reply {
                id: UNANSWERED_ID,
                reply,
            } => {
                if let Reply::Error(code) = reply {
                    warn!(
                        "client: a request sent unanswered (cancel, give-back, ack) failed: {}",
                        code
                    );
                }
                Taken::Skipped
            }
            Message::Reply { id, reply } => {
                let Some(slot) = slot_in(&mut self.slots, id) else {
                    warn!("client: reply to a request not in flight");
                    return Err(Error::Closed(CloseReason::Unexpected));
                };
                let (abandoned, handle) = (slot.abandoned, slot.handle);
                if abandoned {
                    #[cfg(feature = "leases")]
                    if let Reply::Leased { lease, .. } = reply {
                        // Nobody will process these items: hand them back now rather than
                        // when the lease runs out.
                        if !nack(&mut self.tx, &mut self.state, self.peer_max, lease) {
                            return Ok(Taken::Blocked);
                        }
                    }
                    if let (Some(handle), Reply::Item { .. } | Reply::Items { .. }) =
                        (handle, reply)
                    {
                        if !give_back(&mut self.tx, &mut self.state, self.peer_max, handle, reply) {
                            // Room comes back as the transport sends; read this reply again then.
                            return Ok(Taken::Blocked);
                        }
                    }
                }
                self.timers.remove(&mut self.slots, id & 0xFFFF);
                // The slot `slot_in` found above: its index is enough now.
                let Some(slot) = self.slots.get_mut((id & 0xFFFF) as usize) else {
                    return Err(Error::Closed(CloseReason::Unexpected));
                };
                if slot.cancel_pending {
                    self.cancels_pending -= 1;
                }
                *slot = RequestSlot {
                    generation: slot.generation.wrapping_add(1),
                    timer: slot.timer.keep_entry(),
                    ..RequestSlot::FREE
                };
                self.in_flight -= 1;
                if abandoned {
                    Taken::Skipped
                } else {
                    Taken::Reply(at, message_end)
                }
            }
            Message::Closing(reason) => {
                self.close(reason.into());
                Taken::Skipped
            }
        };
        self.cursor = message_end;
        if self.cursor == end {
            self.consumed = end + TAG_LEN;
            self.cursor = 0;
        }
        Ok(taken)
    }

    fn apply_consumed(&mut self) {
        if self.consumed > 0 {
            self.rx.consume(self.consumed);
            self.consumed = 0;
        }
    }

    #[inline(never)]
    fn close(&mut self, error: Error) {
        if !matches!(self.state, State::Closed { .. }) {
            self.state = State::Closed {
                error,
                reported: false,
            };
        }
    }
}

fn op_payload(op: &Op) -> usize {
    match op {
        Op::Put { item, .. } => item.len(),
        Op::Open { name } | Op::Create { name, .. } => name.len(),
        _ => 0,
    }
}

/// What reading one message gave.
enum Taken {
    /// A reply to report, at this range of the receive buffer.
    Reply(usize, usize),
    /// Nothing to report (a closing notice, a reply to an abandoned or internal request).
    Skipped,
    /// A reply to an abandoned get whose items cannot be given back until output drains.
    Blocked,
}

/// Queues `Return`s giving the items of `reply` back to queue `handle`, last item first so
/// they end up at the head in their order; `false` (and nothing queued) when the transmit
/// buffer has no room for all of them now.
fn give_back(
    tx: &mut TxBuf,
    state: &mut State,
    peer_max: usize,
    handle: Handle,
    reply: Reply,
) -> bool {
    let State::Ready { tx_mac, .. } = state else {
        return true;
    };
    let one;
    let items = match reply {
        Reply::Item { item, .. } => {
            one = [item];
            &one[..]
        }
        #[cfg(feature = "full-client")]
        Reply::Items { .. } => &[][..],
        _ => return true,
    };
    // Lists come only with batches (`GetMany`), which need `full-client`.
    #[cfg(feature = "full-client")]
    let packed = match reply {
        Reply::Items { items, .. } => Some(items),
        _ => None,
    };
    #[cfg(not(feature = "full-client"))]
    let packed: Option<crate::wire::Items> = None;
    let count = packed.map_or(items.len(), |p| p.iter().count());
    let nth = |k: usize| match packed {
        Some(p) => p.iter().nth(k).unwrap_or(&[]),
        None => items[k],
    };
    let need: usize = (0..count)
        .map(|k| nth(k).len() + PUT_OVERHEAD + HEADER_LEN + TAG_LEN)
        .sum();
    if need > tx.capacity() {
        warn!("client: an item too large to give back is dropped");
        return true;
    }
    if tx.free() < need {
        return false;
    }
    for k in (0..count).rev() {
        let request = Request {
            id: UNANSWERED_ID,
            op: Op::Return {
                handle,
                item: nth(k),
            },
        };
        if tx.push(&request, peer_max, tx_mac).is_err() {
            warn!("client: no room to give an item back");
        }
    }
    true
}

/// Queues a `Nack` of `lease`; `false` (nothing queued) when the transmit buffer has no room now.
#[cfg(feature = "leases")]
fn nack(tx: &mut TxBuf, state: &mut State, peer_max: usize, lease: u64) -> bool {
    let State::Ready { tx_mac, .. } = state else {
        return true;
    };
    let request = Request {
        id: UNANSWERED_ID,
        op: Op::Nack { lease },
    };
    tx.push(&request, peer_max, tx_mac).is_ok()
}

/// The slot of request `id` in `slots`, while it is in flight.
fn slot_in(slots: &mut [RequestSlot], id: u32) -> Option<&mut RequestSlot> {
    slots
        .get_mut((id & 0xFFFF) as usize)
        .filter(|s| s.busy && u32::from(s.generation) == id >> 16)
}

#[cfg(test)]
mod tests;
