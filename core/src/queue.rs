//! A bounded FIFO of variable-size byte items in storage the caller hands in.
//!
//! Items are stored back to back in a byte ring, each behind a 4-byte little-endian prefix, so
//! the overhead is four bytes an item. The prefix's low 24 bits are the item's length; its top
//! byte counts the item's deliveries under a lease (see `crate::lease`), kept while a returned
//! item waits at the head again. The queue is bounded twice: by item count (`capacity`,
//! Python's `maxsize`) and by the bytes of its storage.

use crate::storage::Managed;
use crate::wire::{QueueSize, QueueSpec};

const LEN_PREFIX: usize = 4;
/// Items must be shorter than this: the prefix keeps the delivery count above the length.
const MAX_LEN: usize = 1 << 24;
const LEN_MASK: u32 = (1 << 24) - 1;

/// Why an item could not be put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PushError {
    /// Larger than the queue's `max_item`: it can never be put.
    TooLarge,
    /// No room now, by count or by bytes.
    Full,
}

/// Why a queue could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SpecError {
    /// `capacity` is zero.
    ZeroCapacity,
    /// The storage cannot hold even one item of `max_item` bytes.
    StorageTooSmall,
}

/// `task_done` was called more times than items were put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskDoneTooMany;

/// A bounded FIFO of byte items with JoinableQueue's unfinished-task count.
pub struct Queue<'a> {
    storage: Managed<'a, u8>,
    spec: QueueSpec,
    /// Offset of the oldest item's length prefix.
    head: usize,
    /// Bytes in use, prefixes included.
    used: usize,
    len: u32,
    unfinished: u32,
    total_put: u64,
    total_got: u64,
}

/// The storage bytes a queue needs to hold `count` items of `item_len` bytes each.
pub const fn storage_for(count: usize, item_len: usize) -> usize {
    count * (item_len + LEN_PREFIX)
}

impl<'a> Queue<'a> {
    /// A queue with `spec`'s limits in `storage`.
    pub fn new(spec: QueueSpec, storage: impl Into<Managed<'a, u8>>) -> Result<Self, SpecError> {
        let storage = storage.into();
        if spec.capacity == 0 {
            return Err(SpecError::ZeroCapacity);
        }
        if (spec.max_item as usize).saturating_add(LEN_PREFIX) > storage.len() {
            return Err(SpecError::StorageTooSmall);
        }
        Ok(Queue {
            storage,
            spec,
            head: 0,
            used: 0,
            len: 0,
            unfinished: 0,
            total_put: 0,
            total_got: 0,
        })
    }

    /// The limits the queue was made with.
    pub fn spec(&self) -> QueueSpec {
        self.spec
    }

    /// Items queued.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// No items queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of item data queued (prefixes excluded).
    pub fn bytes(&self) -> usize {
        self.used - self.len as usize * LEN_PREFIX
    }

    /// Bytes of storage.
    pub fn storage_len(&self) -> usize {
        self.storage.len()
    }

    /// Whether an item of `item_len` bytes fits now.
    pub fn has_room_for(&self, item_len: usize) -> bool {
        self.len < self.spec.capacity && self.used + LEN_PREFIX + item_len <= self.storage.len()
    }

    /// Full as Python means it: at capacity, or without room for even an empty item.
    pub fn is_full(&self) -> bool {
        !self.has_room_for(0)
    }

    /// Length, capacity and fullness.
    pub fn size(&self) -> QueueSize {
        QueueSize {
            len: self.len,
            capacity: self.spec.capacity,
            full: self.is_full(),
        }
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> u32 {
        self.unfinished
    }

    /// Items ever put.
    pub fn total_put(&self) -> u64 {
        self.total_put
    }

    /// Items ever got.
    pub fn total_got(&self) -> u64 {
        self.total_got
    }

    /// Appends `item`, or says why not; the queue is unchanged on error.
    pub fn push(&mut self, item: &[u8]) -> Result<(), PushError> {
        self.push_delivered(item, 0)
    }

    /// [`Queue::push`] for an item that was delivered `deliveries` times under a lease before
    /// (one recovered from a log).
    pub fn push_delivered(&mut self, item: &[u8], deliveries: u8) -> Result<(), PushError> {
        self.push_bounded(item, deliveries, self.len < self.spec.capacity)
    }

    /// [`Queue::push_delivered`] bounded by the storage only, as [`Queue::push_front`] is:
    /// for an item recovered from a log, which returns may have filled past its capacity.
    pub fn push_recovered(&mut self, item: &[u8], deliveries: u8) -> Result<(), PushError> {
        self.push_bounded(item, deliveries, true)
    }

    fn push_bounded(
        &mut self,
        item: &[u8],
        deliveries: u8,
        counted: bool,
    ) -> Result<(), PushError> {
        if item.len() > self.spec.max_item as usize || item.len() >= MAX_LEN {
            return Err(PushError::TooLarge);
        }
        if !counted || self.used + LEN_PREFIX + item.len() > self.storage.len() {
            return Err(PushError::Full);
        }
        let tail = self.wrap(self.head + self.used);
        let prefix = item.len() as u32 | u32::from(deliveries) << 24;
        self.write_at(tail, &prefix.to_le_bytes());
        self.write_at(self.wrap(tail + LEN_PREFIX), item);
        self.used += LEN_PREFIX + item.len();
        self.len += 1;
        self.unfinished = self.unfinished.saturating_add(1);
        self.total_put += 1;
        Ok(())
    }

    /// The oldest item's length.
    pub fn front_len(&self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        Some((self.prefix_at(self.head) & LEN_MASK) as usize)
    }

    /// How many times each item, from the oldest, was delivered under a lease before.
    pub fn deliveries(&self) -> impl Iterator<Item = u8> + '_ {
        let mut at = self.head;
        (0..self.len).map(move |_| {
            let prefix = self.prefix_at(at);
            let len = (prefix & LEN_MASK) as usize;
            at = self.wrap(self.wrap(at + LEN_PREFIX) + len);
            (prefix >> 24) as u8
        })
    }

    fn prefix_at(&self, at: usize) -> u32 {
        // Most prefixes do not wrap: one read.
        if let Some(&prefix) = self.storage.get(at..).and_then(|s| s.first_chunk()) {
            return u32::from_le_bytes(prefix);
        }
        let mut prefix = [0; LEN_PREFIX];
        for (i, b) in prefix.iter_mut().enumerate() {
            *b = self.storage.get(self.wrap(at + i)).copied().unwrap_or(0);
        }
        u32::from_le_bytes(prefix)
    }

    /// The oldest item as one or two slices (two where it wraps around the storage's end).
    pub fn front(&self) -> Option<(&[u8], &[u8])> {
        let len = self.front_len()?;
        let at = self.wrap(self.head + LEN_PREFIX);
        let first = len.min(self.storage.len() - at);
        Some((
            self.storage.get(at..at + first)?,
            self.storage.get(..len - first)?,
        ))
    }

    /// The items from the oldest, each as one or two slices, without removing them.
    pub fn iter(&self) -> QueueIter<'_, 'a> {
        QueueIter {
            queue: self,
            at: self.head,
            left: self.len,
        }
    }

    /// Removes the oldest item (after reading it with [`Queue::front`]).
    pub fn pop_front(&mut self) -> bool {
        let Some(len) = self.front_len() else {
            return false;
        };
        self.head = self.wrap(self.head + LEN_PREFIX + len);
        self.used -= LEN_PREFIX + len;
        self.len -= 1;
        self.total_got += 1;
        if self.len == 0 {
            self.head = 0;
        }
        true
    }

    /// Copies the oldest item into `out` and removes it; `None` if empty or `out` is too small.
    pub fn pop_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let (a, b) = self.front()?;
        let n = a.len() + b.len();
        out.get_mut(..n)?;
        out[..a.len()].copy_from_slice(a);
        out[a.len()..n].copy_from_slice(b);
        self.pop_front();
        Some(n)
    }

    /// Puts an item that left the queue back at its head (a get whose caller gave up on it).
    /// Only the storage bounds it: the item held room in the queue a moment ago, and returning
    /// it must not fail because the count limit was reached since. `false` if no room.
    pub fn push_front(&mut self, item: &[u8]) -> bool {
        self.push_front_delivered(item, 0)
    }

    /// [`Queue::push_front`] for an item that was delivered `deliveries` times under a lease.
    pub fn push_front_delivered(&mut self, item: &[u8], deliveries: u8) -> bool {
        let need = LEN_PREFIX + item.len();
        if self.used + need > self.storage.len() || item.len() >= MAX_LEN {
            return false;
        }
        let head = (self.head + self.storage.len() - need) % self.storage.len().max(1);
        self.head = head;
        let prefix = item.len() as u32 | u32::from(deliveries) << 24;
        self.write_at(head, &prefix.to_le_bytes());
        self.write_at(self.wrap(head + LEN_PREFIX), item);
        self.used += need;
        self.len += 1;
        // A returned item counts as not got; one never got here (the client says otherwise)
        // counts as put, so the totals stay consistent (got never exceeds put).
        match self.total_got.checked_sub(1) {
            Some(got) => self.total_got = got,
            None => self.total_put += 1,
        }
        true
    }

    /// Marks one item as processed (JoinableQueue's `task_done`).
    pub fn task_done(&mut self) -> Result<(), TaskDoneTooMany> {
        self.unfinished = self.unfinished.checked_sub(1).ok_or(TaskDoneTooMany)?;
        Ok(())
    }

    /// The item whose length prefix is at `at`: its two slices and the next item's offset.
    fn item_at(&self, at: usize) -> (&[u8], &[u8], usize) {
        let len = (self.prefix_at(at) & LEN_MASK) as usize;
        let from = self.wrap(at + LEN_PREFIX);
        let first = len.min(self.storage.len() - from);
        let next = self.wrap(from + len);
        (
            self.storage.get(from..from + first).unwrap_or_default(),
            self.storage.get(..len - first).unwrap_or_default(),
            next,
        )
    }

    /// `at` brought back into the storage, for an `at` short of twice its length: an offset
    /// plus a prefix, or plus an item (never longer than the storage less a prefix).
    fn wrap(&self, at: usize) -> usize {
        if at >= self.storage.len() {
            at - self.storage.len()
        } else {
            at
        }
    }

    // Called from several places: one copy, not one inlined into each (firmware flash).
    #[inline(never)]
    fn write_at(&mut self, at: usize, bytes: &[u8]) {
        // Most writes do not wrap: one copy.
        if let Some(to) = self.storage.get_mut(at..at + bytes.len()) {
            to.copy_from_slice(bytes);
            return;
        }
        let first = bytes.len().min(self.storage.len() - at);
        let (a, b) = bytes.split_at(first);
        if let Some(to) = self.storage.get_mut(at..at + first) {
            to.copy_from_slice(a);
        }
        if let Some(to) = self.storage.get_mut(..b.len()) {
            to.copy_from_slice(b);
        }
    }
}

/// The items of a [`Queue`], oldest first (see [`Queue::iter`]).
pub struct QueueIter<'q, 'a> {
    queue: &'q Queue<'a>,
    at: usize,
    left: u32,
}

impl<'q> Iterator for QueueIter<'q, '_> {
    type Item = (&'q [u8], &'q [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (a, b, next) = self.queue.item_at(self.at);
        self.at = next;
        Some((a, b))
    }
}
