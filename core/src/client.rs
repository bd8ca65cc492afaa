//! The client state machine: one connection to a manager, requests pipelined on it.
//!
//! [`Client::new`] queues the hello. The transport then moves bytes as for the manager
//! ([`Client::rx_space`] / [`Client::handle_received`], [`Client::poll_transmit`] /
//! [`Client::handle_transmitted`]) and drains [`Client::poll_event`]: first
//! [`Event::Connected`], then one [`Event::Reply`] per request sent with [`Client::send`], matched
//! by id, or [`Event::Closed`] with the reason. Several requests may be in flight at once, up to
//! the number of [`RequestSlot`]s handed in.

use crate::auth::{
    transcript_hash, AuthKey, FrameMac, CLIENT_PROOF, CLIENT_TO_MANAGER, MANAGER_PROOF,
    MANAGER_TO_CLIENT,
};
use crate::buf::{Peek, RxBuf, TxBuf};
use crate::error::Error;
use crate::time::Instant;
use crate::wire::{
    ClientHello, ClientProof, CloseReason, Message, Op, Reply, Request, ServerHello, ServerVerdict,
    Wait, HEADER_LEN, MAGIC, MAX_HANDSHAKE_BODY, MAX_MAX_FRAME, MIN_MAX_FRAME, NONCE_LEN,
    PY_CHALLENGE, PY_MANAGER_MARKER, PY_MANAGER_MARKER_AT, TAG_LEN, VERSION,
};

/// Bytes a `Put` request takes beyond its item: tags, id, handle, lengths and wait, as varints.
pub const PUT_OVERHEAD: usize = 24;

/// One request in flight. Hand a slice of [`RequestSlot::FREE`] to [`Client::new`]; its length
/// is the most requests in flight at once.
#[derive(Debug, Clone, Copy)]
pub struct RequestSlot {
    generation: u16,
    busy: bool,
    deadline: Option<Instant>,
}

impl RequestSlot {
    /// An unused slot.
    pub const FREE: RequestSlot = RequestSlot {
        generation: 0,
        busy: false,
        deadline: None,
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
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            handshake_timeout_ms: 10_000,
            reply_timeout_ms: 30_000,
        }
    }
}

/// What happened on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
    },
    Ready {
        rx_mac: FrameMac,
        tx_mac: FrameMac,
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
    slots: &'a mut [RequestSlot],
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
        rx: &'a mut [u8],
        tx: &'a mut [u8],
        slots: &'a mut [RequestSlot],
    ) -> Self {
        let max_frame = rx
            .len()
            .saturating_sub(HEADER_LEN)
            .min(MAX_MAX_FRAME as usize) as u32;
        for slot in slots.iter_mut() {
            *slot = RequestSlot::FREE;
        }
        let mut client = Client {
            config,
            key: AuthKey::new(authkey),
            rx: RxBuf::new(rx),
            tx: TxBuf::new(tx),
            slots,
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

    /// The hello this client sends (and hashes into the handshake transcript).
    fn hello(&self, nonce: [u8; NONCE_LEN]) -> ClientHello {
        let max_frame = self.rx.capacity().saturating_sub(HEADER_LEN);
        ClientHello {
            magic: MAGIC,
            min_version: VERSION,
            max_version: VERSION,
            nonce,
            max_frame: max_frame.min(MAX_MAX_FRAME as usize) as u32,
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
        if let State::Ready { tx_mac, .. } = &mut self.state {
            self.tx.seal(tx_mac);
        }
        self.tx.pending()
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
            State::Ready { .. } => self
                .slots
                .iter()
                .filter(|s| s.busy)
                .filter_map(|s| s.deadline)
                .min(),
            State::Closed { .. } => None,
        }
    }

    /// Closes the connection if the handshake or a reply is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        let overdue = match self.state {
            State::SentHello { .. } | State::SentProof { .. } => self.handshake_deadline <= now,
            State::Ready { .. } => self
                .slots
                .iter()
                .any(|s| s.busy && s.deadline.is_some_and(|d| d <= now)),
            State::Closed { .. } => false,
        };
        if overdue {
            debug!("client: manager did not answer in time");
            self.close(Error::Timeout);
        }
    }

    /// Sends a request; returns its id, which the matching [`Event::Reply`] carries.
    pub fn send(&mut self, now: Instant, op: Op) -> Result<u32, Error> {
        self.apply_consumed();
        let tx_mac = match &mut self.state {
            State::Ready { tx_mac, .. } => tx_mac,
            State::Closed { error, .. } => return Err(*error),
            _ => return Err(Error::NotReady),
        };
        if let Op::Put { item, .. } = op {
            if item.len() > self.peer_max.saturating_sub(TAG_LEN + PUT_OVERHEAD) {
                return Err(Error::TooLarge);
            }
        }
        if self.in_flight >= self.slots.len() {
            return Err(Error::InFlightLimit);
        }
        let n = self.slots.len();
        let index = (0..n)
            .map(|k| (self.next_slot + k) % n)
            .find(|&i| !self.slots[i].busy);
        let Some(index) = index else {
            return Err(Error::InFlightLimit);
        };
        let slot = &mut self.slots[index];
        let id = (u32::from(slot.generation) << 16) | index as u32;
        self.tx
            .push(&Request { id, op }, self.peer_max, tx_mac)
            .map_err(|_| {
                if self.tx.capacity() < HEADER_LEN + TAG_LEN + PUT_OVERHEAD + op_payload(&op) {
                    Error::TooLarge
                } else {
                    Error::WouldBlock
                }
            })?;
        let wait = match op {
            Op::Put { wait, .. } | Op::Get { wait, .. } | Op::Join { wait, .. } => wait,
            _ => Wait::NoWait,
        };
        let grace = u64::from(self.config.reply_timeout_ms);
        slot.busy = true;
        slot.deadline = match wait {
            Wait::Forever => None,
            Wait::NoWait => Some(now.add_millis(grace)),
            Wait::Millis(ms) => Some(now.add_millis(grace + u64::from(ms))),
        };
        self.in_flight += 1;
        self.next_slot = (index + 1) % n;
        Ok(id)
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
                State::Ready { .. } => match self.next_message() {
                    Some(Ok(at)) => match self.take_message(at) {
                        Ok(Some(reply)) => break reply,
                        Ok(None) => continue,
                        Err(error) => self.close(error),
                    },
                    Some(Err(reason)) => self.close(reason.into()),
                    None => return None,
                },
            }
        };
        // `take_message` checked this message; decoding it again lets the reply borrow `rx`.
        match postcard::take_from_bytes::<Message>(&self.rx.bytes()[at..end]) {
            Ok((Message::Reply { id, reply }, _)) => Some(Event::Reply { id, reply }),
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
        let body = &self.rx.bytes()[HEADER_LEN..HEADER_LEN + body_len];
        if matches!(self.state, State::SentHello { .. }) && body.starts_with(PY_CHALLENGE) {
            // A depot manager greets Python clients first; its marker says it speaks depot too.
            if body.get(PY_MANAGER_MARKER_AT..PY_MANAGER_MARKER_AT + PY_MANAGER_MARKER.len())
                != Some(&PY_MANAGER_MARKER[..])
            {
                self.close(Error::Closed(CloseReason::BadMagic));
                return Some(false);
            }
            self.rx.consume(HEADER_LEN + body_len);
            return Some(false);
        }
        let outcome = match self.state {
            State::SentHello {
                nonce: client_nonce,
            } => match postcard::take_from_bytes(body) {
                Ok((
                    ServerHello::Challenge {
                        version, max_frame, ..
                    },
                    [],
                )) => {
                    if version != VERSION {
                        Err(Error::Closed(CloseReason::VersionMismatch))
                    } else if max_frame < MIN_MAX_FRAME {
                        Err(Error::Closed(CloseReason::Malformed))
                    } else {
                        self.peer_max = max_frame.min(MAX_MAX_FRAME) as usize;
                        let mut encoded = [0; MAX_HANDSHAKE_BODY as usize];
                        let hello = postcard::to_slice(&self.hello(client_nonce), &mut encoded)
                            .map(|h| &*h)
                            .unwrap_or_default();
                        let transcript = transcript_hash(hello, body);
                        let proof = self.key.derive(CLIENT_PROOF, &transcript);
                        self.state = State::SentProof { transcript };
                        self.tx
                            .push_plain(&ClientProof { proof })
                            .map_err(|_| Error::WouldBlock)
                            .map(|_| false)
                    }
                }
                Ok((ServerHello::Reject(reason), [])) => Err(reason.into()),
                _ => Err(Error::Closed(CloseReason::Malformed)),
            },
            State::SentProof { transcript } => match postcard::take_from_bytes(body) {
                Ok((ServerVerdict::Welcome { proof }, [])) => {
                    if self.key.verify(MANAGER_PROOF, &transcript, &proof) {
                        self.state = State::Ready {
                            rx_mac: self.key.session(MANAGER_TO_CLIENT, &transcript),
                            tx_mac: self.key.session(CLIENT_TO_MANAGER, &transcript),
                        };
                        Ok(true)
                    } else {
                        debug!("client: the manager's proof is wrong");
                        Err(Error::AuthFailed)
                    }
                }
                Ok((ServerVerdict::AuthFailed, [])) => Err(Error::AuthFailed),
                _ => Err(Error::Closed(CloseReason::Malformed)),
            },
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
            let (header, rest) = self.rx.bytes().split_at(HEADER_LEN);
            let (messages, tag) = rest[..body_len].split_at(body_len - TAG_LEN);
            if !rx_mac.open(header, messages, tag) {
                return Some(Err(CloseReason::BadMac));
            }
            if messages.is_empty() {
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
    fn take_message(&mut self, at: usize) -> Result<Option<(usize, usize)>, Error> {
        let end = self.frame_end;
        let Ok((message, rest)) = postcard::take_from_bytes::<Message>(&self.rx.bytes()[at..end])
        else {
            return Err(Error::Closed(CloseReason::Malformed));
        };
        let message_end = end - rest.len();
        self.cursor = message_end;
        if self.cursor == end {
            self.consumed = end + TAG_LEN;
            self.cursor = 0;
        }
        match message {
            Message::Reply { id, .. } => {
                let index = (id & 0xFFFF) as usize;
                let slot = self
                    .slots
                    .get_mut(index)
                    .filter(|s| s.busy && u32::from(s.generation) == id >> 16);
                let Some(slot) = slot else {
                    warn!("client: reply to a request not in flight");
                    return Err(Error::Closed(CloseReason::Unexpected));
                };
                slot.busy = false;
                slot.deadline = None;
                slot.generation = slot.generation.wrapping_add(1);
                self.in_flight -= 1;
                Ok(Some((at, message_end)))
            }
            Message::Closing(reason) => {
                self.close(reason.into());
                Ok(None)
            }
        }
    }

    fn apply_consumed(&mut self) {
        if self.consumed > 0 {
            self.rx.consume(self.consumed);
            self.consumed = 0;
        }
    }

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
