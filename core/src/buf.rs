//! The receive and transmit buffers of one connection, in storage the caller hands in.
//!
//! Receive: bytes are appended at the end and whole frames taken from the front.
//! Transmit: messages are appended to an open frame that is sealed with its MAC when the
//! transport asks for bytes, so replies produced together share one frame and one MAC.

use crate::codec::Encode;
use crate::seal::FrameKey;
use crate::storage::{Bytes, Managed};
use crate::wire::{peek_body_len, HEADER_LEN, TAG_LEN};

/// Not enough room in a transmit buffer; the caller reserves room beforehand, so this
/// only reaches a peer as a closed connection, never as a lost message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoRoom;

/// Room a handshake message may need (they are all far smaller than this).
const MAX_PLAIN: usize = 128;
/// Room an owned buffer makes for a message before trying to write it; a larger one grows it.
const MIN_MESSAGE_ROOM: usize = 256;

/// Where the next whole frame in a receive buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek {
    /// Not a whole frame yet.
    Partial,
    /// A whole frame: its body is `buf[HEADER_LEN..HEADER_LEN + body_len]`.
    Frame { body_len: usize },
    /// The header announces more than the receiver accepts.
    TooLarge,
}

pub(crate) struct RxBuf<'a> {
    data: Bytes<'a>,
    start: usize,
    end: usize,
}

impl<'a> RxBuf<'a> {
    pub(crate) fn new(data: Managed<'a, u8>) -> Self {
        Self::with(Bytes::new(data))
    }

    pub(crate) fn with(data: Bytes<'a>) -> Self {
        RxBuf {
            data,
            start: 0,
            end: 0,
        }
    }

    /// The largest frame (header included) this buffer can ever hold.
    pub(crate) fn capacity(&self) -> usize {
        self.data.limit()
    }

    /// Bytes of memory the buffer holds now.
    pub(crate) fn memory(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.data.release();
    }

    /// Bytes received and not yet consumed.
    // Called in many places: one copy is smaller than inlining it at each.
    #[inline(never)]
    pub(crate) fn bytes(&self) -> &[u8] {
        // `start <= end <= len` always; `get` says so without a panic path.
        self.data.get(self.start..self.end).unwrap_or_default()
    }

    /// The first `len` bytes received and not yet consumed, to open a sealed frame in place.
    pub(crate) fn frame_mut(&mut self, len: usize) -> &mut [u8] {
        let end = self.start.saturating_add(len).min(self.end);
        self.data.get_mut(self.start..end).unwrap_or_default()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether an owned buffer keeps the memory it has grown to when emptied (up to a bound,
    /// `Bytes::keep_grown`); turned off, an empty buffer gives its memory back at once.
    #[cfg(feature = "alloc")]
    pub(crate) fn keep_memory(&mut self, keep: bool) {
        self.data.keep_grown(keep);
        if self.is_empty() {
            self.data.release();
        }
    }

    /// Free space to receive into, made contiguous first. An owned buffer grows to hold the
    /// frame whose header it has seen, never just because it is full: a connection whose input
    /// is paused must not read on.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = match peek_body_len(self.bytes()) {
            Some(len) => HEADER_LEN.saturating_add(len as usize),
            None => 1,
        };
        self.data.reserve(want);
        let end = self.end.min(self.data.len());
        &mut self.data[end..]
    }

    /// `n` bytes were written at the start of [`RxBuf::space`].
    pub(crate) fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Copies as much of `input` as fits; returns how much.
    pub(crate) fn fill(&mut self, input: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(input.len());
        space[..n].copy_from_slice(&input[..n]);
        self.commit(n);
        n
    }

    #[inline(never)]
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.clear();
        }
    }

    /// Checks the next frame against `max_body` before any of its body is read.
    pub(crate) fn peek(&self, max_body: usize) -> Peek {
        let Some(len) = peek_body_len(self.bytes()) else {
            return Peek::Partial;
        };
        let len = len as usize;
        if len > max_body || HEADER_LEN.saturating_add(len) > self.data.limit() {
            return Peek::TooLarge;
        }
        if self.end - self.start < HEADER_LEN + len {
            Peek::Partial
        } else {
            Peek::Frame { body_len: len }
        }
    }
}

pub(crate) struct TxBuf<'a> {
    data: Bytes<'a>,
    /// Start of the first frame not wholly handed to the transport (at or before `start`).
    head: usize,
    /// Frames before this offset are handshake frames, without a MAC.
    plain_end: usize,
    /// First byte not yet handed to the transport.
    start: usize,
    /// End of the sealed frames.
    sealed: usize,
    /// End of the open frame's messages (equals `sealed` when no frame is open).
    end: usize,
    /// The key that encrypted the sealed frames, as it stood after the last one: it reads
    /// them back when they never go out (see [`TxBuf::open_unsent`]).
    #[cfg(feature = "aead")]
    sealed_by: Option<crate::seal::FrameAead>,
}

impl<'a> TxBuf<'a> {
    pub(crate) fn new(data: Managed<'a, u8>) -> Self {
        Self::with(Bytes::new(data))
    }

    pub(crate) fn with(data: Bytes<'a>) -> Self {
        TxBuf {
            data,
            head: 0,
            plain_end: 0,
            start: 0,
            sealed: 0,
            end: 0,
            #[cfg(feature = "aead")]
            sealed_by: None,
        }
    }

    /// The most bytes this buffer can ever hold.
    pub(crate) fn capacity(&self) -> usize {
        self.data.limit()
    }

    /// Bytes of memory the buffer holds now.
    pub(crate) fn memory(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.plain_end = 0;
        self.start = 0;
        self.sealed = 0;
        self.end = 0;
        #[cfg(feature = "aead")]
        {
            self.sealed_by = None;
        }
        self.data.release();
    }

    /// Nothing waits to be sent, sealed or not.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether an owned buffer keeps the memory it has grown to when emptied (up to a bound,
    /// `Bytes::keep_grown`); turned off, an empty buffer gives its memory back at once.
    #[cfg(feature = "alloc")]
    pub(crate) fn keep_memory(&mut self, keep: bool) {
        self.data.keep_grown(keep);
        if self.is_empty() {
            self.data.release();
        }
    }

    /// Room for more message bytes, keeping room to seal the open frame.
    pub(crate) fn free(&self) -> usize {
        // A frame partly sent keeps its room until it has gone whole (see `compact`).
        self.data
            .limit()
            .saturating_sub(self.end - self.head + TAG_LEN)
    }

    fn frame_open(&self) -> bool {
        self.end > self.sealed
    }

    /// Moves what is not wholly sent to the front (a frame partly sent stays whole, so its
    /// messages can still be read back: see [`TxBuf::unsent`]).
    fn compact(&mut self) {
        let shift = self.head;
        if shift > 0 {
            self.data.copy_within(shift..self.end, 0);
            self.start -= shift;
            self.sealed -= shift;
            self.end -= shift;
            self.plain_end = self.plain_end.saturating_sub(shift);
            self.head = 0;
        }
    }

    /// Appends one handshake message as a frame of its own, without a MAC.
    pub(crate) fn push_plain(&mut self, msg: &dyn Encode) -> Result<(), NoRoom> {
        debug_assert!(!self.frame_open());
        self.compact();
        self.data.reserve(self.end + HEADER_LEN + MAX_PLAIN);
        let frame = self.data.get_mut(self.end..).ok_or(NoRoom)?;
        let (head, out) = frame.split_at_mut_checked(HEADER_LEN).ok_or(NoRoom)?;
        let len = msg.encode_into(out).ok_or(NoRoom)?;
        head.copy_from_slice(&(len as u32).to_be_bytes());
        self.end += HEADER_LEN + len;
        self.sealed = self.end;
        self.plain_end = self.end;
        Ok(())
    }

    /// Appends bytes `write` produces (whole frames of another protocol, no MAC); `write`
    /// returns the bytes it wrote or `None` when `out` is too small.
    #[cfg(feature = "python")]
    pub(crate) fn push_raw(
        &mut self,
        need: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<(), NoRoom> {
        debug_assert!(!self.frame_open());
        self.compact();
        self.data.reserve(self.end.saturating_add(need));
        let out = self.data.get_mut(self.end..).ok_or(NoRoom)?;
        let n = write(out).ok_or(NoRoom)?;
        self.end += n;
        self.sealed = self.end;
        // Not depot frames: nothing in them is read back (see `unsent`).
        self.plain_end = self.end;
        Ok(())
    }

    /// Appends a message to the open frame, sealing it and opening another when the message
    /// would push it past `max_body` (the peer's frame limit, tag included).
    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    pub(crate) fn push(
        &mut self,
        msg: &dyn Encode,
        max_body: usize,
        mac: &mut FrameKey,
    ) -> Result<(), NoRoom> {
        self.push_with(max_body, mac, &mut |out| msg.encode_into(out))
    }

    /// Like [`TxBuf::push`], with the message written by `write`, which returns the bytes it
    /// wrote or `None` when `out` is too small. (A trait object, not a generic: one copy of
    /// this code serves every message.)
    pub(crate) fn push_with(
        &mut self,
        max_body: usize,
        mac: &mut FrameKey,
        write: &mut dyn FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<(), NoRoom> {
        // Each pass grows the buffer (doubling, up to its limit) or seals a non-empty frame.
        for _ in 0..64 {
            if !self.frame_open() {
                self.compact();
                self.data
                    .reserve(self.end + HEADER_LEN + TAG_LEN + MIN_MESSAGE_ROOM);
                if self.end + HEADER_LEN + TAG_LEN > self.data.len() {
                    return Err(NoRoom);
                }
                self.end += HEADER_LEN;
            }
            let body_at = self.sealed + HEADER_LEN;
            let frame_cap = body_at + max_body.saturating_sub(TAG_LEN);
            let buf_cap = self.data.len().saturating_sub(TAG_LEN);
            let cap = buf_cap.min(frame_cap);
            if self.end < cap {
                if let Some(n) = write(&mut self.data[self.end..cap]) {
                    self.end += n;
                    return Ok(());
                }
            }
            if buf_cap < frame_cap && self.data.len() < self.data.limit() {
                let grown = self.data.len().saturating_mul(2);
                self.data.reserve(grown);
                continue;
            }
            if self.end == body_at {
                // Not even an empty frame has room for it: drop the empty frame.
                self.end = self.sealed;
                return Err(NoRoom);
            }
            self.seal(mac);
        }
        Err(NoRoom)
    }

    /// Closes the open frame, if any, with its length and tag.
    pub(crate) fn seal(&mut self, mac: &mut FrameKey) {
        if !self.frame_open() {
            return;
        }
        let body_len = self.end - self.sealed - HEADER_LEN;
        // `push_with` keeps room for the tag past the open frame, so the slices exist; `get`
        // and the checked splits say so without a panic path each.
        let frame = self.data.get_mut(self.sealed..self.end + TAG_LEN);
        let Some((head, rest)) = frame.and_then(|f| f.split_at_mut_checked(HEADER_LEN)) else {
            return;
        };
        let Some((body, tag_at)) = rest.split_at_mut_checked(body_len) else {
            return;
        };
        head.copy_from_slice(&((body_len + TAG_LEN) as u32).to_be_bytes());
        let tag = mac.seal(head, body);
        for (to, from) in tag_at.iter_mut().zip(tag) {
            *to = from;
        }
        self.end += TAG_LEN;
        self.sealed = self.end;
        #[cfg(feature = "aead")]
        {
            self.sealed_by = mac.reader().cloned();
        }
    }

    /// Decrypts in place the sealed frames not wholly handed to the transport, so that
    /// [`TxBuf::unsent`] reads their messages. Only for output that will never be sent: the
    /// caller clears the buffer afterwards.
    pub(crate) fn open_unsent(&mut self) {
        #[cfg(feature = "aead")]
        if let Some(key) = self.sealed_by.take() {
            let from = self.head.max(self.plain_end);
            let frames = self.frames(from).count() as u64;
            // Sealed frames are numbered in a row, the last one `next_seq - 1`.
            let mut seq = key.next_seq().wrapping_sub(frames);
            let mut at = from;
            while let Some(len) = peek_body_len(&self.data[at..self.sealed]) {
                let frame_end = at + HEADER_LEN + len as usize;
                let Some(frame) = self.data.get_mut(at..frame_end) else {
                    break;
                };
                let (header, rest) = frame.split_at_mut(HEADER_LEN);
                let (body, tag) = rest.split_at_mut(rest.len().saturating_sub(TAG_LEN));
                // Sealed here a moment ago, so it opens; if not, its items are not read.
                if !key.open_at(seq, header, body, tag) {
                    body.fill(0);
                }
                seq = seq.wrapping_add(1);
                at = frame_end;
            }
        }
    }

    /// The frames from `at` to the end of the sealed ones, as (start, end) offsets.
    #[cfg(feature = "aead")]
    fn frames(&self, mut at: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        core::iter::from_fn(move || {
            let len = peek_body_len(&self.data[at..self.sealed])? as usize;
            let start = at;
            at += HEADER_LEN + len;
            Some((start, at))
        })
    }

    /// Sealed bytes waiting for the transport.
    pub(crate) fn pending(&self) -> &[u8] {
        self.data.get(self.start..self.sealed).unwrap_or_default()
    }

    /// The transport sent `n` bytes of [`TxBuf::pending`].
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.sealed);
        if self.start == self.end {
            self.clear();
            return;
        }
        while let Some(len) =
            peek_body_len(self.data.get(self.head..self.sealed).unwrap_or_default())
        {
            let frame_end = self.head + HEADER_LEN + len as usize;
            if frame_end > self.start {
                break;
            }
            self.head = frame_end;
        }
    }

    /// The messages of every MACed frame not wholly handed to the transport, frame by frame
    /// (the open frame included): what a peer that stopped reading never got.
    pub(crate) fn unsent(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = self.head.max(self.plain_end);
        let open = (self.end > self.sealed)
            .then(|| self.data.get(self.sealed + HEADER_LEN..self.end))
            .flatten();
        core::iter::from_fn(move || {
            let len = peek_body_len(self.data.get(at..self.sealed)?)? as usize;
            let body = self.data.get(at + HEADER_LEN..at + HEADER_LEN + len)?;
            at += HEADER_LEN + len;
            Some(&body[..len.saturating_sub(TAG_LEN)])
        })
        .chain(open)
    }
}
