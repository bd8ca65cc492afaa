//! The reply deadlines of a client's requests in flight, earliest first.
//!
//! With `alloc` (hosts, up to 65,535 requests in flight) they are a heap kept in the request
//! slots, as the manager keeps its own ([`crate::timers`]): the next deadline costs O(1), and
//! a reply or an abandon O(log n). Without it the slots are lent and few (firmware), and a
//! search over their deadlines takes less flash and RAM than a heap or a flag per slot.

use super::RequestSlot;
use crate::storage::Managed;
#[cfg(not(feature = "alloc"))]
use crate::time::Deadline;
use crate::time::Instant;

/// A slot's share of the heap.
#[cfg(feature = "alloc")]
pub(super) type Cell = crate::timers::TimerCell;

/// Nothing: without `alloc` the deadlines are searched for.
#[cfg(not(feature = "alloc"))]
#[derive(Debug, Clone, Copy)]
pub(super) struct Cell;

#[cfg(not(feature = "alloc"))]
impl Cell {
    pub(super) const EMPTY: Cell = Cell;

    pub(super) fn keep_entry(self) -> Cell {
        Cell
    }
}

/// The deadlines of the requests in flight (see the module docs). A slot's deadline changes
/// only together with [`ReplyTimers::update`] or [`ReplyTimers::remove`].
#[derive(Debug)]
pub(super) struct ReplyTimers {
    #[cfg(feature = "alloc")]
    pub(super) heap: crate::timers::Heap,
}

impl ReplyTimers {
    pub(super) const fn new() -> Self {
        ReplyTimers {
            #[cfg(feature = "alloc")]
            heap: crate::timers::Heap::new(),
        }
    }

    /// The earliest deadline of a request in flight.
    pub(super) fn next(&self, slots: &Managed<'_, RequestSlot>) -> Option<Instant> {
        #[cfg(feature = "alloc")]
        let next = self.heap.next(slots);
        // No deadline is `u64::MAX` ms, later than any other: the earliest is a plain minimum.
        #[cfg(not(feature = "alloc"))]
        let next = {
            let mut next = Deadline::NONE;
            for slot in slots.iter() {
                if slot.busy && slot.deadline.millis() < next.millis() {
                    next = slot.deadline;
                }
            }
            next.get()
        };
        next
    }

    /// Slot `slot` has a new deadline.
    pub(super) fn update(&mut self, slots: &mut Managed<'_, RequestSlot>, slot: u32) {
        #[cfg(feature = "alloc")]
        self.heap.update(slots, slot);
        #[cfg(not(feature = "alloc"))]
        let _ = (slots, slot);
    }

    /// Slot `slot`'s deadline is gone (its reply came, or nobody waits for it any more).
    pub(super) fn remove(&mut self, slots: &mut Managed<'_, RequestSlot>, slot: u32) {
        #[cfg(feature = "alloc")]
        self.heap.remove(slots, slot);
        #[cfg(not(feature = "alloc"))]
        let _ = (slots, slot);
    }
}

#[cfg(feature = "alloc")]
impl crate::timers::Slots for Managed<'_, RequestSlot> {
    fn count(&self) -> u32 {
        self.len() as u32
    }
    fn deadline(&self, slot: u32) -> Instant {
        let deadline = self.get(slot as usize).and_then(|s| s.deadline.get());
        deadline.unwrap_or(Instant::from_millis(u64::MAX))
    }
    fn cell(&self, i: u32) -> &Cell {
        self.get(i as usize).map_or(&Cell::EMPTY, |s| &s.timer)
    }
    fn cell_mut(&mut self, i: u32) -> Option<&mut Cell> {
        self.get_mut(i as usize).map(|s| &mut s.timer)
    }
}
