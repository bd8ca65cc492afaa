//! Leased items: items a consumer took with `GetLeased` and has not yet acknowledged.
//!
//! A leased item has left its queue but is still the manager's: it is kept here, with its
//! queue, the connection that holds it, its delivery count and the lease's deadline. Three
//! transitions (methods of [`LeaseStore`]) change lease state:
//!
//! - `grant`: items leave their queue under a new lease (id, bytes, counts);
//! - `ack`: the consumer processed them: they are dropped;
//! - `release`: a `Nack`, the deadline passing or the connection closing: the
//!   manager puts the items back at the head of their queue (or into its dead-letter queue)
//!   and then frees them here.
//!
//! Every change of lease state goes through these functions; the manager reports each to its
//! journal (`leased`, `lease_ended`) right after, before any reply that depends on it.
//!
//! Storage is bounded twice, like a queue: by item count (the record slots lent or given to
//! [`LeaseStore::new`]) and by bytes (a [`ParkStore`]). A grant that does not fit changes
//! nothing and fails with [`LeaseLimit`].
//!
//! A lease id is unique within a manager's run: a serial number (40 bits) above the index of
//! the lease's first record (24 bits), so an ack finds its lease without a search. A manager
//! restored from a journal starts its serial numbers above the journal's ids.

// Without the `leases` feature the manager keeps an empty store and calls none of this.
#![cfg_attr(not(feature = "leases"), allow(dead_code))]

use crate::park::{ParkRef, ParkStore};
use crate::storage::Managed;
use crate::time::Instant;
use crate::timers::{Slots, TimerCell, Timers};
use crate::wire::Handle;

const NONE: u32 = u32::MAX;
const SLOT_BITS: u32 = 24;
/// The most records a store uses (the slot index must fit the low bits of a lease id).
pub const MAX_LEASE_SLOTS: usize = 1 << SLOT_BITS;
/// Serial numbers fill the 40 bits above the slot index.
const MAX_SERIAL: u64 = (1 << (64 - SLOT_BITS)) - 1;

/// The store has no room for the items of another lease (by count or by bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LeaseLimit;

/// No lease of that id is held by that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoSuchLease;

/// One leased item: a record slot of a [`LeaseStore`].
#[derive(Debug, Clone, Copy)]
pub struct LeaseSlot {
    /// The lease this item belongs to; 0 when the slot is free.
    lease: u64,
    conn: u32,
    handle: u16,
    /// Deliveries under a lease so far, this one included.
    deliveries: u8,
    deadline: Instant,
    item: Option<ParkRef>,
    /// The next item of the same lease, or the next free slot.
    next: u32,
    /// The previous item of the same lease; in a lease's first slot, its last item.
    prev: u32,
    /// The lease's place among the deadlines, in its first slot (see `crate::timers`).
    timer: TimerCell,
    /// Its place among the leases whose deadline passed, newest first.
    due: TimerCell,
}

impl LeaseSlot {
    /// A free slot, to fill lent storage with.
    pub const EMPTY: LeaseSlot = LeaseSlot {
        lease: 0,
        conn: NONE,
        handle: 0,
        deliveries: 0,
        deadline: Instant::ZERO,
        item: None,
        next: NONE,
        prev: NONE,
        timer: TimerCell::EMPTY,
        due: TimerCell::EMPTY,
    };
}

/// Leased items and their leases. See the module docs.
pub struct LeaseStore<'a> {
    slots: Managed<'a, LeaseSlot>,
    items: ParkStore<'a>,
    /// Head of the free slot list.
    free: u32,
    /// Slots in use.
    used: u32,
    /// The serial number of the next lease.
    serial: u64,
    /// The deadlines of the leases, earliest first.
    timers: Timers,
    /// Leases whose deadline passed and that have not been released yet, newest first.
    due: Timers,
}

impl<'a> LeaseStore<'a> {
    /// A store keeping at most `slots.len()` leased items (capped at [`MAX_LEASE_SLOTS`]) whose
    /// bytes `items` holds.
    pub fn new(slots: impl Into<Managed<'a, LeaseSlot>>, items: ParkStore<'a>) -> Self {
        let mut slots = slots.into();
        let count = slots.len().min(MAX_LEASE_SLOTS);
        for (i, slot) in slots.iter_mut().enumerate().take(count) {
            *slot = LeaseSlot {
                next: if i + 1 < count { i as u32 + 1 } else { NONE },
                ..LeaseSlot::EMPTY
            };
        }
        LeaseStore {
            slots,
            items,
            free: if count > 0 { 0 } else { NONE },
            used: 0,
            serial: 1,
            timers: Timers::new(),
            due: Timers::new(),
        }
    }

    /// No store: every leased get fails with [`LeaseLimit`].
    pub fn none() -> Self {
        Self::new(Managed::empty(), ParkStore::none())
    }

    /// A store on the heap for at most `max_items` leased items of `budget` bytes in all.
    #[cfg(feature = "alloc")]
    pub fn heap(max_items: usize, budget: usize) -> LeaseStore<'static> {
        let slots = alloc::vec![LeaseSlot::EMPTY; max_items.min(MAX_LEASE_SLOTS)];
        LeaseStore::new(slots, ParkStore::heap(budget))
    }

    /// Items leased now.
    pub fn leased(&self) -> u32 {
        self.used
    }

    /// Records free for more leased items.
    pub fn free_slots(&self) -> u32 {
        (self.slots.len().min(MAX_LEASE_SLOTS) as u32).saturating_sub(self.used)
    }

    /// Bytes of leased items kept now.
    pub fn bytes(&self) -> usize {
        self.items.bytes()
    }

    /// Transition "leased": `items` (each in two pieces, with its delivery count) left queue
    /// `handle` for connection `conn` until `deadline`. Returns the new lease id; on
    /// [`LeaseLimit`] nothing changed.
    pub(crate) fn grant<'q>(
        &mut self,
        conn: u32,
        handle: Handle,
        deadline: Instant,
        items: impl Iterator<Item = (&'q [u8], &'q [u8], u8)>,
    ) -> Result<u64, LeaseLimit> {
        let mut first = NONE;
        let mut last = NONE;
        for (a, b, deliveries) in items {
            let Some(slot) = self.take_slot(a, b) else {
                if first != NONE {
                    self.free_chain(first);
                }
                return Err(LeaseLimit);
            };
            let s = &mut self.slots[slot as usize];
            s.conn = conn;
            s.handle = handle.0;
            s.deliveries = deliveries;
            s.deadline = deadline;
            s.next = NONE;
            s.prev = last;
            if first == NONE {
                first = slot;
            } else {
                self.slots[last as usize].next = slot;
            }
            last = slot;
        }
        if first == NONE {
            return Err(LeaseLimit);
        }
        let lease = (self.serial << SLOT_BITS) | u64::from(first);
        self.serial += 1;
        let mut at = first;
        while at != NONE {
            self.slots[at as usize].lease = lease;
            at = self.slots[at as usize].next;
        }
        self.slots[first as usize].prev = last;
        self.timers.update(&mut self.slots, first);
        Ok(lease)
    }

    /// Transition "acked": connection `conn` processed lease `lease`; its items are dropped.
    pub(crate) fn ack(&mut self, conn: u32, lease: u64) -> Result<(), NoSuchLease> {
        let first = self.find(conn, lease)?;
        self.free_chain(first);
        Ok(())
    }

    /// Transition "released" (nack, expiry, connection closed): the manager has put the items
    /// of `lease` back (see [`LeaseStore::items_last_first`]); they are dropped here.
    pub(crate) fn release(&mut self, lease: u64) {
        if let Ok(first) = self.find(NONE, lease) {
            self.free_chain(first);
        }
    }

    /// Undoes the grant of `lease`, whose items never left their queue (its reply could not be
    /// queued): no transition happened.
    pub(crate) fn undo_grant(&mut self, lease: u64) {
        if let Ok(first) = self.find(NONE, lease) {
            self.free_chain(first);
        }
    }

    /// When the next lease ends, O(1).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next(&self.slots)
    }

    /// Every lease held now, with its queue (what a snapshot of the manager's state keeps).
    pub fn held(&self) -> impl Iterator<Item = (u64, Handle)> + '_ {
        self.heads().map(|s| (s.lease, Handle(s.handle)))
    }

    /// Every lease granted so far has an id below this.
    pub fn id_floor(&self) -> u64 {
        self.serial << SLOT_BITS
    }

    /// Gives later leases ids at or above `floor` (ids of an earlier run, recovered from a
    /// log), so an old id never names a new lease.
    pub(crate) fn skip_ids_below(&mut self, floor: u64) {
        let serial = floor.div_ceil(1 << SLOT_BITS);
        self.serial = self.serial.max(serial).min(MAX_SERIAL);
    }

    /// The items of `lease` in order, each with its delivery count.
    pub fn items(&self, lease: u64) -> impl Iterator<Item = (&[u8], u8)> + '_ {
        let mut at = self.find(NONE, lease).unwrap_or(NONE);
        core::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let s = &self.slots[at as usize];
            at = s.next;
            Some((s.item.map_or(&[][..], |r| self.items.get(r)), s.deliveries))
        })
    }

    /// The queue of lease `lease` held by `conn` (any connection for `NONE`).
    pub(crate) fn queue_of(&self, conn: u32, lease: u64) -> Result<Handle, NoSuchLease> {
        let first = self.find(conn, lease)?;
        Ok(Handle(self.slots[first as usize].handle))
    }

    /// The items of `lease`, last first (the order that puts them back at the head of a queue
    /// in their order), each with its delivery count.
    pub(crate) fn items_last_first(&self, lease: u64) -> impl Iterator<Item = (&[u8], u8)> + '_ {
        let first = self.find(NONE, lease).unwrap_or(NONE);
        let mut at = match first {
            NONE => NONE,
            f => self.slots[f as usize].prev,
        };
        core::iter::from_fn(move || {
            if at == NONE {
                return None;
            }
            let s = &self.slots[at as usize];
            at = if at == first { NONE } else { s.prev };
            Some((s.item.map_or(&[][..], |r| self.items.get(r)), s.deliveries))
        })
    }

    /// Marks every lease whose deadline is at or before `now` as due; `false` if there was
    /// none. O(log n) a lease.
    pub(crate) fn take_expired(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(first) = self.timers.pop_due(&mut self.slots, now) {
            self.due.update(&mut NewestFirst(&mut self.slots), first);
            any = true;
        }
        any
    }

    /// The newest lease marked due, no longer due: leases that end together go back newest
    /// first, so the oldest stands at the head of its queue. `release` it next. O(log n).
    pub(crate) fn pop_due(&mut self) -> Option<u64> {
        let first = self
            .due
            .pop_due(&mut NewestFirst(&mut self.slots), Instant::ZERO)?;
        Some(self.slots[first as usize].lease)
    }

    /// The newest lease held by connection `conn`.
    pub(crate) fn newest_of(&self, conn: u32) -> Option<u64> {
        if self.used == 0 {
            return None;
        }
        self.heads()
            .filter(|s| s.conn == conn)
            .map(|s| s.lease)
            .max()
    }

    /// The first slots of leases.
    fn heads(&self) -> impl Iterator<Item = &LeaseSlot> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|&(i, s)| s.lease != 0 && s.lease & ((1 << SLOT_BITS) - 1) == i as u64)
            .map(|(_, s)| s)
    }

    /// The first slot of `lease` when `conn` holds it (`NONE`: whoever holds it).
    fn find(&self, conn: u32, lease: u64) -> Result<u32, NoSuchLease> {
        let first = (lease & ((1 << SLOT_BITS) - 1)) as u32;
        match self.slots.get(first as usize) {
            Some(s) if lease != 0 && s.lease == lease && (conn == NONE || s.conn == conn) => {
                Ok(first)
            }
            _ => Err(NoSuchLease),
        }
    }

    /// A free slot holding a copy of the item `a ‖ b`.
    fn take_slot(&mut self, a: &[u8], b: &[u8]) -> Option<u32> {
        let slot = self.free;
        if slot == NONE {
            return None;
        }
        let slots = &self.slots;
        let item = self.items.store_parts(a, b, &|x| {
            slots.iter().any(|s| s.item.is_some_and(|r| r.index() == x))
        })?;
        let s = &mut self.slots[slot as usize];
        self.free = s.next;
        s.item = Some(item);
        s.lease = 0;
        self.used += 1;
        Some(slot)
    }

    /// Frees the slots of the chain that starts at `first`, and their bytes.
    fn free_chain(&mut self, first: u32) {
        self.timers.remove(&mut self.slots, first);
        self.due.remove(&mut NewestFirst(&mut self.slots), first);
        let mut at = first;
        while at != NONE {
            let s = &mut self.slots[at as usize];
            let next = s.next;
            if let Some(item) = s.item.take() {
                self.items.free(item);
            }
            *s = LeaseSlot {
                next: self.free,
                timer: s.timer.keep_entry(),
                due: s.due.keep_entry(),
                ..LeaseSlot::EMPTY
            };
            self.free = at;
            self.used -= 1;
            at = next;
        }
    }
}

impl Slots for Managed<'_, LeaseSlot> {
    fn count(&self) -> u32 {
        self.len() as u32
    }
    fn deadline(&self, slot: u32) -> Instant {
        self[slot as usize].deadline
    }
    fn cell(&self, i: u32) -> &TimerCell {
        &self[i as usize].timer
    }
    fn cell_mut(&mut self, i: u32) -> Option<&mut TimerCell> {
        self.get_mut(i as usize).map(|l| &mut l.timer)
    }
}

/// The leases marked due, as a heap of their own: newest first.
struct NewestFirst<'s, 'a>(&'s mut Managed<'a, LeaseSlot>);

impl Slots for NewestFirst<'_, '_> {
    fn count(&self) -> u32 {
        self.0.len() as u32
    }
    fn deadline(&self, _: u32) -> Instant {
        Instant::ZERO
    }
    fn before(&self, a: u32, b: u32) -> bool {
        self.0[a as usize].lease > self.0[b as usize].lease
    }
    fn cell(&self, i: u32) -> &TimerCell {
        &self.0[i as usize].due
    }
    fn cell_mut(&mut self, i: u32) -> Option<&mut TimerCell> {
        self.0.get_mut(i as usize).map(|l| &mut l.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store<'a>(slots: &'a mut [LeaseSlot], bytes: &'a mut [u8]) -> LeaseStore<'a> {
        LeaseStore::new(slots, ParkStore::slots(bytes, 8))
    }

    extern crate std;
    use std::vec::Vec;

    #[test]
    fn grant_ack_release_and_limits() {
        let (mut slots, mut bytes) = ([LeaseSlot::EMPTY; 3], [0; 24]);
        let mut s = store(&mut slots, &mut bytes);
        let t = Instant::ZERO.add_millis(100);
        let items: [(&[u8], &[u8], u8); 2] = [(b"ab", b"c", 1), (b"", b"de", 2)];
        let a = s.grant(7, Handle(1), t, items.into_iter()).unwrap();
        assert_eq!(s.leased(), 2);
        let back: Vec<_> = s.items_last_first(a).collect();
        assert_eq!(back, [(&b"de"[..], 2), (&b"abc"[..], 1)]);
        // Two more do not fit three slots: nothing changes.
        assert_eq!(s.grant(7, Handle(1), t, items.into_iter()), Err(LeaseLimit));
        assert_eq!(s.leased(), 2);
        // Too large for a byte slot.
        let big: [(&[u8], &[u8], u8); 1] = [(&[0; 9], b"", 1)];
        assert_eq!(s.grant(7, Handle(1), t, big.into_iter()), Err(LeaseLimit));
        assert_eq!(s.ack(8, a), Err(NoSuchLease), "another connection's lease");
        assert_eq!(s.next_deadline(), Some(t));
        assert!(!s.take_expired(Instant::ZERO));
        assert!(s.take_expired(t));
        assert_eq!(s.pop_due(), Some(a));
        assert_eq!(s.pop_due(), None);
        assert_eq!(s.newest_of(7), Some(a));
        assert_eq!(s.newest_of(8), None);
        s.ack(7, a).unwrap();
        assert_eq!(s.ack(7, a), Err(NoSuchLease), "acked twice");
        assert_eq!(s.leased(), 0);
        let one: [(&[u8], &[u8], u8); 1] = [(b"x", b"", 1)];
        let b = s.grant(9, Handle(2), t, one.into_iter()).unwrap();
        assert_ne!(a, b, "ids are not reused");
        assert_eq!(s.queue_of(9, b), Ok(Handle(2)));
        s.release(b);
        assert_eq!(s.leased(), 0);
        assert_eq!(s.next_deadline(), None);
        // Ids of an earlier run are skipped: the next lease's id is above them.
        let floor = s.id_floor() + (5 << SLOT_BITS) + 3;
        s.skip_ids_below(floor);
        let c = s.grant(9, Handle(2), t, one.into_iter()).unwrap();
        assert!(c >= floor && c > b);
        assert_eq!(s.held().collect::<Vec<_>>(), [(c, Handle(2))]);
        assert_eq!(s.items(c).collect::<Vec<_>>(), [(&b"x"[..], 1)]);
    }
}
