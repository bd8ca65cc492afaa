//! Requests blocked on an object, in a pool of slots the caller hands in.
//!
//! Each object keeps FIFO lists of its blocked getters, putters and joiners, threaded through
//! the pool by index, so parking, waking and cancelling take no allocation.

use crate::park::ParkRef;
use crate::storage::Managed;
use crate::time::{Deadline, Instant};
use crate::timers::{Slots, TimerCell, Timers};

const NONE: u32 = u32::MAX;

/// What a blocked request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "objects"), allow(dead_code))]
pub(crate) enum WaitKind {
    Get,
    Put,
    Join,
    /// Blocked on an object other than a queue (see `crate::objects`).
    Wait,
    /// Not blocked: a record of the permits a connection holds (see `crate::objects`).
    Held,
}

/// What a blocked request holds besides its kind (one of these at a time, so they share room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "objects"), allow(dead_code))]
pub(crate) enum Hold {
    /// Nothing: a `Get` of one item, a `Join`.
    Nothing,
    /// A `GetMany`: the most items and packed bytes to take.
    Take { max_items: u32, max_bytes: u32 },
    /// A `GetLeased`: the same, and the lease's length.
    Lease {
        max_items: u32,
        max_bytes: u32,
        lease_ms: u32,
    },
    /// A blocked `Put`'s item, or an item given back; a dict's `WaitKey` key.
    Item(ParkRef),
    /// A blocked `Acquire`; a `Held` record's permits.
    Permits(u32),
    /// A condition's `Wait`: the levels of its lock to take back, and once woken whether by
    /// a notify (`true`) or its deadline (`false`), until it has the lock again.
    Condition { levels: u32, woken: Option<bool> },
    /// A registered call's request, handed to the application.
    Started(ParkRef),
    /// A blocked `PutMany`: the rest of its packed list, the bytes of it already put and the
    /// items put.
    Items {
        parked: ParkRef,
        offset: u32,
        accepted: u32,
    },
}

impl Hold {
    /// The parked bytes this request holds, if any.
    pub(crate) fn parked(self) -> Option<ParkRef> {
        match self {
            Hold::Item(parked) | Hold::Items { parked, .. } | Hold::Started(parked) => Some(parked),
            Hold::Nothing
            | Hold::Take { .. }
            | Hold::Lease { .. }
            | Hold::Permits(_)
            | Hold::Condition { .. } => None,
        }
    }
}

/// One slot of the waiter pool.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    pub(crate) conn: u32,
    pub(crate) request: u32,
    pub(crate) object: u16,
    pub(crate) kind: WaitKind,
    /// When the wait runs out, if it does.
    pub(crate) deadline: Deadline,
    /// Transmit bytes kept free on the connection for this request's reply.
    pub(crate) reserve: u32,
    pub(crate) hold: Hold,
    pub(crate) in_use: bool,
    pub(crate) prev: u32,
    pub(crate) next: u32,
    /// Its place among the deadlines (see `crate::timers`).
    pub(crate) timer: TimerCell,
}

impl Waiter {
    /// An unused slot, for initialising the pool (`[Waiter::EMPTY; N]`).
    pub const EMPTY: Waiter = Waiter {
        conn: 0,
        request: 0,
        object: 0,
        kind: WaitKind::Get,
        deadline: Deadline::NONE,
        reserve: 0,
        hold: Hold::Nothing,
        in_use: false,
        prev: NONE,
        next: NONE,
        timer: TimerCell::EMPTY,
    };

    /// When the wait runs out, if it does.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Sets the deadline of a waiter not yet parked (a parked one's goes through
    /// [`Waiters::set_deadline`], which keeps the deadlines in order).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        debug_assert!(!self.in_use);
        self.deadline = Deadline::new(deadline);
    }
}

/// A FIFO of waiters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitList {
    head: u32,
    tail: u32,
    len: u32,
}

impl WaitList {
    pub(crate) const EMPTY: WaitList = WaitList {
        head: NONE,
        tail: NONE,
        len: 0,
    };

    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    pub(crate) fn front(&self) -> Option<u32> {
        (self.head != NONE).then_some(self.head)
    }
}

/// What [`Waiters::get`] reads for a slot the pool does not have: free, of no connection.
const NO_WAITER: Waiter = Waiter {
    conn: NONE,
    ..Waiter::EMPTY
};

pub(crate) struct Waiters<'a> {
    slots: Managed<'a, Waiter>,
    /// Head of the free slots, chained through `next`.
    free: u32,
    used: u32,
    /// One past the highest slot ever taken: scans stop there. Freed slots are reused first
    /// (the free list is a stack), so this is the most waiters there ever were at once, not
    /// the pool's size, which is sized for every connection a manager may serve.
    end: u32,
    /// The deadlines of waiters in use, earliest first.
    timers: Timers,
}

impl<'a> Waiters<'a> {
    pub(crate) fn new(mut slots: Managed<'a, Waiter>) -> Self {
        let count = slots.len().min(NONE as usize - 1);
        for (i, slot) in slots.iter_mut().enumerate() {
            *slot = Waiter::EMPTY;
            slot.next = if i + 1 < count { i as u32 + 1 } else { NONE };
        }
        Waiters {
            slots,
            free: if count > 0 { 0 } else { NONE },
            used: 0,
            end: 0,
            timers: Timers::new(),
        }
    }

    pub(crate) fn used(&self) -> u32 {
        self.used
    }

    /// The waiter in slot `index`; a slot the pool does not have reads as a free one of no
    /// connection (`get`, not indexing, so no panic path is linked in).
    pub(crate) fn get(&self, index: u32) -> &Waiter {
        self.slots.get(index as usize).unwrap_or(&NO_WAITER)
    }

    #[cfg(feature = "objects")]
    pub(crate) fn get_mut(&mut self, index: u32) -> &mut Waiter {
        &mut self.slots[index as usize]
    }

    /// Sets what the waiter in slot `index` holds (nothing for a slot the pool does not have).
    pub(crate) fn set_hold(&mut self, index: u32, hold: Hold) {
        if let Some(w) = self.slots.get_mut(index as usize) {
            w.hold = hold;
        }
    }

    /// Parks `waiter` at the back of `list`; `None` when the pool is full.
    pub(crate) fn park(&mut self, list: &mut WaitList, waiter: Waiter) -> Option<u32> {
        let index = self.take_slot(waiter)?;
        if let Some(w) = self.slots.get_mut(index as usize) {
            w.prev = list.tail;
        }
        match self.slots.get_mut(list.tail as usize) {
            Some(tail) => tail.next = index,
            None => list.head = index,
        }
        list.tail = index;
        list.len += 1;
        Some(index)
    }

    /// Parks `waiter` at the front of `list`; `None` when the pool is full.
    pub(crate) fn park_front(&mut self, list: &mut WaitList, waiter: Waiter) -> Option<u32> {
        let index = self.take_slot(waiter)?;
        if let Some(w) = self.slots.get_mut(index as usize) {
            w.next = list.head;
        }
        match self.slots.get_mut(list.head as usize) {
            Some(head) => head.prev = index,
            None => list.tail = index,
        }
        list.head = index;
        list.len += 1;
        Some(index)
    }

    /// Puts `waiter` in a free slot, linked to nothing yet; `None` when the pool is full.
    fn take_slot(&mut self, mut waiter: Waiter) -> Option<u32> {
        let index = self.free;
        // `NONE` (no free slot) is past the pool's end too.
        let slot = self.slots.get_mut(index as usize)?;
        self.free = slot.next;
        waiter.in_use = true;
        waiter.prev = NONE;
        waiter.next = NONE;
        waiter.timer = slot.timer.keep_entry();
        let timed = waiter.deadline().is_some();
        *slot = waiter;
        self.used += 1;
        self.end = self.end.max(index + 1);
        if timed {
            self.timers.update(&mut self.slots, index);
        }
        Some(index)
    }

    /// Unlinks `index` from `list` (which must hold it), frees its slot and returns it.
    pub(crate) fn remove(&mut self, list: &mut WaitList, index: u32) -> Waiter {
        if index as usize >= self.slots.len() {
            return NO_WAITER;
        }
        self.timers.remove(&mut self.slots, index);
        let free = self.free;
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return NO_WAITER;
        };
        let timer = slot.timer.keep_entry();
        let waiter = core::mem::replace(
            slot,
            Waiter {
                next: free,
                timer,
                ..Waiter::EMPTY
            },
        );
        match self.slots.get_mut(waiter.prev as usize) {
            Some(prev) => prev.next = waiter.next,
            None => list.head = waiter.next,
        }
        match self.slots.get_mut(waiter.next as usize) {
            Some(next) => next.prev = waiter.prev,
            None => list.tail = waiter.prev,
        }
        list.len -= 1;
        self.used -= 1;
        self.free = index;
        waiter
    }

    /// Sets (or clears) the deadline of waiter `index`, which is in use.
    #[cfg_attr(not(feature = "objects"), allow(dead_code))]
    pub(crate) fn set_deadline(&mut self, index: u32, deadline: Option<Instant>) {
        let slot = &mut self.slots[index as usize];
        slot.deadline = Deadline::new(deadline);
        if deadline.is_some() {
            self.timers.update(&mut self.slots, index);
        } else {
            self.timers.remove(&mut self.slots, index);
        }
    }

    /// The earliest deadline of a waiter, O(1).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next(&self.slots)
    }

    /// A waiter whose deadline is at or before `now`, earliest first (ties: lowest slot); its
    /// deadline leaves the order (it stays set). O(log n).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<u32> {
        self.timers.pop_due(&mut self.slots, now)
    }

    /// Whether a waiter in use holds the parked item in slot `index` of a lent park store.
    pub(crate) fn holds_parked(&self, index: u32) -> bool {
        self.taken()
            .iter()
            .any(|w| w.in_use && w.hold.parked().is_some_and(|p| p.index() == index))
    }

    /// The slots that may be in use.
    fn taken(&self) -> &[Waiter] {
        self.slots.get(..self.end as usize).unwrap_or(&self.slots)
    }

    /// The first waiter of `list` that matches `pred`.
    #[cfg_attr(not(feature = "objects"), allow(dead_code))]
    pub(crate) fn find_in(&self, list: &WaitList, pred: impl Fn(&Waiter) -> bool) -> Option<u32> {
        let mut at = list.head;
        while at != NONE {
            let w = self.get(at);
            if pred(w) {
                return Some(at);
            }
            at = w.next;
        }
        None
    }

    /// Indices of waiters in use that match `pred`, one at a time from `from`.
    pub(crate) fn find_from(&self, from: u32, pred: impl Fn(&Waiter) -> bool) -> Option<u32> {
        if self.used == 0 {
            return None;
        }
        self.taken()
            .iter()
            .enumerate()
            .skip(from as usize)
            .find(|(_, w)| w.in_use && pred(w))
            .map(|(i, _)| i as u32)
    }
}

impl Slots for Managed<'_, Waiter> {
    fn count(&self) -> u32 {
        self.len() as u32
    }
    fn deadline(&self, slot: u32) -> Instant {
        self.get(slot as usize)
            .and_then(Waiter::deadline)
            .unwrap_or(Instant::from_millis(u64::MAX))
    }
    fn cell(&self, i: u32) -> &TimerCell {
        self.get(i as usize).map_or(&TimerCell::EMPTY, |w| &w.timer)
    }
    fn cell_mut(&mut self, i: u32) -> Option<&mut TimerCell> {
        self.get_mut(i as usize).map(|w| &mut w.timer)
    }
}
