//! Changes of queue contents, reported as they happen, so a transport can keep them durable.
//!
//! The core does no I/O: a manager given a [`Journal`] (see [`Manager::set_journal`]) calls it
//! for every change of what its queues hold, in the order the changes happen, before any reply
//! that depends on the change is queued for output. Replaying the calls on the state the
//! manager started from gives the state it has now. A transport that writes them to a log,
//! and transmits a reply only once the changes before it are as durable as it promises, loses
//! no acknowledged put in a crash. To start from what a log holds, declare or
//! [`Manager::restore_queue`] each queue and [`Manager::restore_item`] its items before the
//! journal is set and before serving. Items of leases the journal shows outstanding go back to
//! the head of their queue, oldest lease first at the head, with their delivery counts
//! ([`Manager::restore_item_delivered`]): what the manager does when their holders go away. Then
//! [`Manager::restore_lease_ids`] keeps new lease ids above every id the journal has seen.
//! Items held outside a full queue go back with [`Manager::restore_held`], sessions'
//! de-duplication windows with [`Manager::restore_session`].
//!
//! Calls cost the manager nothing when no journal is set (memory-only managers).
//!
//! [`Manager::set_journal`]: crate::Manager::set_journal
//! [`Manager::restore_queue`]: crate::Manager::restore_queue
//! [`Manager::restore_item`]: crate::Manager::restore_item
//! [`Manager::restore_item_delivered`]: crate::Manager::restore_item_delivered
//! [`Manager::restore_lease_ids`]: crate::Manager::restore_lease_ids
//! [`Manager::restore_held`]: crate::Manager::restore_held
//! [`Manager::restore_session`]: crate::Manager::restore_session

use crate::wire::{Handle, QueueSpec, SESSION_ID_LEN};

/// Hears every change of queue contents (see the module docs). The calls must not fail: a
/// transport that cannot keep a change stops sending replies (and so acknowledges nothing
/// more) and reports its error itself.
pub trait Journal: Send {
    /// A queue was created by a client (declared and restored queues are not reported).
    fn created(&mut self, handle: Handle, name: &str, spec: QueueSpec);
    /// `item` was appended at the tail of the queue.
    fn appended(&mut self, handle: Handle, item: &[u8]);
    /// `count` items were removed from the head of the queue (handed to a consumer).
    fn removed(&mut self, handle: Handle, count: u32);
    /// `item` went back to the head of the queue (a consumer gave it back, or its reply
    /// never left the manager).
    fn returned(&mut self, handle: Handle, item: &[u8]);

    /// `item`, just removed from the head of queue `handle` (see [`Journal::removed`]), is held
    /// by lease `lease`; this is its `deliveries`-th delivery under a lease. Reported per item
    /// in the lease's order. A journal that ignores leases sees a leased item as removed, so a
    /// restart loses it.
    fn leased(&mut self, lease: u64, handle: Handle, item: &[u8], deliveries: u8) {
        let _ = (lease, handle, item, deliveries);
    }
    /// Lease `lease` ended: acknowledged, or its items were given back first (reported as
    /// [`Journal::returned_leased`], or appended to a dead-letter queue).
    fn lease_ended(&mut self, lease: u64) {
        let _ = lease;
    }
    /// [`Journal::returned`] for an item delivered `deliveries` times under leases (its lease
    /// ended without an ack), which keeps that count.
    fn returned_leased(&mut self, handle: Handle, item: &[u8], deliveries: u8) {
        let _ = deliveries;
        self.returned(handle, item);
    }

    /// `item` was given back to queue `handle` while it had no room: it waits outside the
    /// queue, at the front of its blocked puts (ahead of those held before it), owned by no
    /// connection, until [`Journal::held_entered`]. A journal that ignores it loses such an
    /// item in a restart.
    fn held(&mut self, handle: Handle, item: &[u8]) {
        let _ = (handle, item);
    }
    /// The front item held outside queue `handle` (the newest [`Journal::held`] still
    /// waiting), `item`, was appended at its tail.
    fn held_entered(&mut self, handle: Handle, item: &[u8]) {
        self.appended(handle, item);
    }

    /// Session `session` has `applied` items of its numbered put `seq` in their queue now (the
    /// changes that put them there were reported before). Reported each time the count grows.
    /// A journal that keeps these lets a manager restored from it apply a put retried after a
    /// restart once (see [`Manager::restore_session`]); one that ignores them applies it again.
    ///
    /// [`Manager::restore_session`]: crate::Manager::restore_session
    fn session_applied(&mut self, session: &[u8; SESSION_ID_LEN], seq: u64, applied: u32) {
        let _ = (session, seq, applied);
    }
}

/// Where a manager's journal lives: lent by the caller, or (with `alloc`) owned.
pub enum JournalSlot<'a> {
    /// A journal the caller keeps.
    Lent(&'a mut dyn Journal),
    /// A journal the manager owns.
    #[cfg(feature = "alloc")]
    Owned(alloc::boxed::Box<dyn Journal>),
}

impl<'a> JournalSlot<'a> {
    pub(crate) fn get(&mut self) -> &mut dyn Journal {
        match self {
            JournalSlot::Lent(j) => &mut **j,
            #[cfg(feature = "alloc")]
            JournalSlot::Owned(j) => &mut **j,
        }
    }
}

impl<'a> From<&'a mut dyn Journal> for JournalSlot<'a> {
    fn from(journal: &'a mut dyn Journal) -> Self {
        JournalSlot::Lent(journal)
    }
}

#[cfg(feature = "alloc")]
impl From<alloc::boxed::Box<dyn Journal>> for JournalSlot<'_> {
    fn from(journal: alloc::boxed::Box<dyn Journal>) -> Self {
        JournalSlot::Owned(journal)
    }
}

/// Calls `f` on the journal, if there is one.
#[inline]
pub(crate) fn note(journal: &mut Option<JournalSlot>, f: impl FnOnce(&mut dyn Journal)) {
    if let Some(j) = journal {
        f(j.get());
    }
}

/// Why a recovered item could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RestoreError {
    /// No queue has this handle.
    NoSuchQueue,
    /// The item is larger than the queue's `max_item`.
    TooLarge,
    /// The queue has no room for it (its capacity or storage is smaller than before).
    Full,
    /// The manager serves no sessions (see [`crate::Manager::serve_sessions`]).
    NoSessions,
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RestoreError::NoSuchQueue => "no such queue",
            RestoreError::TooLarge => "an item is larger than the queue's max_item",
            RestoreError::Full => "the queue has no room for all its items",
            RestoreError::NoSessions => "the manager serves no sessions",
        })
    }
}

impl core::error::Error for RestoreError {}
