//! Deadlines in a binary heap whose storage is the slots that have them.
//!
//! The manager keeps one heap per kind of slot (connections, waiters, leases). Every slot
//! carries a [`TimerCell`], which does two jobs: cell `i` holds the heap's entry at position
//! `i` (the slot found there) and slot `i`'s own position in the heap. A heap never holds more
//! entries than there are slots, each slot at most once, so it needs no storage of its own and
//! an insertion cannot fail. The earliest deadline is at the top: reading it costs O(1), and
//! adding, moving or removing a slot's deadline O(log n).
//!
//! Without the `alloc` feature the slots are lent, fixed and few (firmware serves a handful of
//! connections), so the same interface is kept by [`Scan`]: a set of flags in the same cells,
//! searched for the earliest deadline in O(n) with a fraction of the heap's code. Both give
//! the same deadlines in the same order.
//!
//! The deadline of a slot is read from the slot itself ([`Slots::deadline`]); it must change
//! only together with [`Timers::update`] while the slot is in the heap. Whoever writes a whole
//! slot must keep the heap's half of its cell (see [`TimerCell::keep_entry`]).

use crate::time::Instant;

const NONE: u32 = u32::MAX;

/// A slot's share of a heap (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerCell {
    /// The slot whose entry stands at this cell's position of the heap.
    entry: u32,
    /// Where this cell's slot stands in the heap, `NONE` if it has no deadline there.
    pos: u32,
}

impl TimerCell {
    pub(crate) const EMPTY: TimerCell = TimerCell {
        entry: NONE,
        pos: NONE,
    };

    /// Whether this cell's slot has a deadline in the heap.
    pub(crate) fn is_set(self) -> bool {
        self.pos != NONE
    }

    /// This cell for a slot written anew with `fresh` (not in the heap): the heap's entry at
    /// this position stays.
    pub(crate) fn keep_entry(self) -> TimerCell {
        TimerCell {
            entry: self.entry,
            pos: NONE,
        }
    }
}

/// Slots with deadlines, as a heap sees them.
pub(crate) trait Slots {
    /// How many slots there are.
    #[cfg_attr(all(feature = "alloc", not(test)), allow(dead_code))]
    fn count(&self) -> u32;
    /// The deadline of slot `slot` (in the heap).
    fn deadline(&self, slot: u32) -> Instant;
    /// Among equal deadlines, whether slot `a` comes before slot `b`: the lower slot, unless
    /// the kind says otherwise.
    fn before(&self, a: u32, b: u32) -> bool {
        a < b
    }
    fn cell(&self, i: u32) -> &TimerCell;
    /// `None` only for a slot the table does not have (no panic path to link in).
    fn cell_mut(&mut self, i: u32) -> Option<&mut TimerCell>;
}

/// The deadlines of a kind of slot, earliest first.
#[cfg(feature = "alloc")]
pub(crate) type Timers = Heap;
/// The deadlines of a kind of slot, earliest first.
#[cfg(not(feature = "alloc"))]
pub(crate) type Timers = Scan;

/// Whether the entry of slot `a` goes before that of slot `b`.
fn less<S: Slots + ?Sized>(s: &S, a: u32, b: u32) -> bool {
    let (da, db) = (s.deadline(a), s.deadline(b));
    da < db || (da == db && s.before(a, b))
}

/// A heap of slot deadlines; the slots hold its storage (see the module docs).
#[cfg(any(feature = "alloc", test))]
#[derive(Debug, Default)]
pub(crate) struct Heap {
    len: u32,
    /// Cells visited, for tests that check the work done per deadline.
    #[cfg(test)]
    pub(crate) steps: u64,
}

#[cfg(any(feature = "alloc", test))]
impl Heap {
    pub(crate) const fn new() -> Self {
        Heap {
            len: 0,
            #[cfg(test)]
            steps: 0,
        }
    }

    /// Deadlines in the heap.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The slot with the earliest deadline.
    pub(crate) fn first(&self, s: &dyn Slots) -> Option<u32> {
        (self.len > 0).then(|| s.cell(0).entry)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self, s: &dyn Slots) -> Option<Instant> {
        self.first(s).map(|slot| s.deadline(slot))
    }

    /// Takes out and returns the slot with the earliest deadline if it is at or before `now`.
    pub(crate) fn pop_due(&mut self, s: &mut dyn Slots, now: Instant) -> Option<u32> {
        let slot = self.first(s)?;
        if s.deadline(slot) > now {
            return None;
        }
        self.remove(s, slot);
        Some(slot)
    }

    /// Slot `slot`'s deadline is new or changed: puts it in, or moves it to its place.
    pub(crate) fn update(&mut self, s: &mut dyn Slots, slot: u32) {
        let p = s.cell(slot).pos;
        if p == NONE {
            let p = self.len;
            self.len += 1;
            self.place(s, p, slot);
            self.fix(s, p);
        } else {
            self.fix(s, p);
        }
    }

    /// Takes slot `slot`'s deadline out, if it has one in the heap.
    pub(crate) fn remove(&mut self, s: &mut dyn Slots, slot: u32) {
        let p = s.cell(slot).pos;
        if p == NONE {
            return;
        }
        if let Some(cell) = s.cell_mut(slot) {
            cell.pos = NONE;
        }
        self.len -= 1;
        let last = self.len;
        if p != last {
            let moved = s.cell(last).entry;
            self.place(s, p, moved);
            self.fix(s, p);
        }
    }

    fn place(&mut self, s: &mut dyn Slots, p: u32, slot: u32) {
        #[cfg(test)]
        {
            self.steps += 1;
        }
        if let Some(cell) = s.cell_mut(p) {
            cell.entry = slot;
        }
        if let Some(cell) = s.cell_mut(slot) {
            cell.pos = p;
        }
    }

    /// Moves the entry at `p` to its place: up while it goes before its parent, then down
    /// while a child goes before it (after a move up none does: one loop or the other runs).
    fn fix(&mut self, s: &mut dyn Slots, mut p: u32) {
        let slot = s.cell(p).entry;
        while p > 0 {
            let parent = (p - 1) / 2;
            let above = s.cell(parent).entry;
            if !less(s, slot, above) {
                break;
            }
            self.place(s, p, above);
            p = parent;
        }
        loop {
            // Positions stay below `len`, at most `u32::MAX - 1`: no overflow in u64.
            let left = 2 * u64::from(p) + 1;
            if left >= u64::from(self.len) {
                break;
            }
            let left = left as u32;
            let mut child = left;
            let right = left + 1;
            if right < self.len && less(s, s.cell(right).entry, s.cell(left).entry) {
                child = right;
            }
            let below = s.cell(child).entry;
            if !less(s, below, slot) {
                break;
            }
            self.place(s, p, below);
            p = child;
        }
        self.place(s, p, slot);
    }
}

/// The deadlines of a few lent slots: a flag per slot and a search (see the module docs).
#[cfg(any(not(feature = "alloc"), test))]
#[derive(Debug, Default)]
pub(crate) struct Scan {
    len: u32,
}

#[cfg(any(not(feature = "alloc"), test))]
impl Scan {
    pub(crate) const fn new() -> Self {
        Scan { len: 0 }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The slot with the earliest deadline (among equal ones, the first by [`Slots::before`]).
    pub(crate) fn first<S: Slots + ?Sized>(&self, s: &S) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mut best = None;
        for i in 0..s.count() {
            if s.cell(i).is_set() && best.is_none_or(|b| less(s, i, b)) {
                best = Some(i);
            }
        }
        best
    }

    pub(crate) fn next<S: Slots + ?Sized>(&self, s: &S) -> Option<Instant> {
        self.first(s).map(|slot| s.deadline(slot))
    }

    pub(crate) fn pop_due<S: Slots + ?Sized>(&mut self, s: &mut S, now: Instant) -> Option<u32> {
        let slot = self.first(s)?;
        if s.deadline(slot) > now {
            return None;
        }
        self.remove(s, slot);
        Some(slot)
    }

    pub(crate) fn update<S: Slots + ?Sized>(&mut self, s: &mut S, slot: u32) {
        let Some(cell) = s.cell_mut(slot) else {
            return;
        };
        if !cell.is_set() {
            cell.pos = 0;
            self.len += 1;
        }
    }

    pub(crate) fn remove<S: Slots + ?Sized>(&mut self, s: &mut S, slot: u32) {
        let Some(cell) = s.cell_mut(slot) else {
            return;
        };
        if cell.is_set() {
            cell.pos = NONE;
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// Slots with an optional deadline each, and a naive model: the sorted list.
    struct Table {
        cells: Vec<TimerCell>,
        at: Vec<Option<u64>>,
    }

    impl Slots for Table {
        fn count(&self) -> u32 {
            self.cells.len() as u32
        }
        fn deadline(&self, slot: u32) -> Instant {
            Instant::from_millis(self.at[slot as usize].unwrap_or(u64::MAX))
        }
        fn cell(&self, i: u32) -> &TimerCell {
            &self.cells[i as usize]
        }
        fn cell_mut(&mut self, i: u32) -> Option<&mut TimerCell> {
            self.cells.get_mut(i as usize)
        }
    }

    impl Table {
        fn new(n: usize) -> Self {
            Table {
                cells: std::vec![TimerCell::EMPTY; n],
                at: std::vec![None; n],
            }
        }

        /// What a sorted list says comes out next: earliest deadline, then lowest slot.
        fn naive_first(&self) -> Option<(u64, u32)> {
            let mut all: Vec<(u64, u32)> = (0..self.at.len())
                .filter_map(|i| self.at[i].map(|d| (d, i as u32)))
                .collect();
            all.sort();
            all.first().copied()
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Set(usize, u64),
        Clear(usize),
        Pop(u64),
    }

    fn step(n: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..n, 0..50u64).prop_map(|(i, d)| Step::Set(i, d)),
            (0..n).prop_map(Step::Clear),
            (0..60u64).prop_map(Step::Pop),
        ]
    }

    macro_rules! agrees_with_a_sorted_list {
        ($name:ident, $kind:ty) => {
    proptest! {
        #![proptest_config(crate::proptest_cases(256))]

        /// Whatever is set, moved, cleared and popped, the heap gives what a sorted list
        /// gives, and pops exactly the due deadlines.
        // Safe code over the same dependencies as the quicker tests: Miri (UB checks) learns
        // nothing more from it and would spend a minute or more (CI's Miri step runs the rest).
        #[cfg_attr(miri, ignore)]
        #[test]
        fn $name(steps in proptest::collection::vec(step(12), 0..200)) {
            let mut t = Table::new(12);
            let mut heap = <$kind>::new();
            for s in steps {
                match s {
                    Step::Set(i, d) => {
                        t.at[i] = Some(d);
                        heap.update(&mut t, i as u32);
                    }
                    Step::Clear(i) => {
                        heap.remove(&mut t, i as u32);
                        t.at[i] = None;
                    }
                    Step::Pop(now) => {
                        let now = Instant::from_millis(now);
                        while let Some(slot) = heap.pop_due(&mut t, now) {
                            let want = t.naive_first().map(|(_, i)| i);
                            prop_assert_eq!(Some(slot), want);
                            prop_assert!(t.deadline(slot) <= now);
                            t.at[slot as usize] = None;
                        }
                        prop_assert!(t.naive_first().is_none_or(|(d, _)| d > now.as_millis()));
                    }
                }
                prop_assert_eq!(heap.next(&t).map(Instant::as_millis), t.naive_first().map(|f| f.0));
                prop_assert_eq!(heap.first(&t), t.naive_first().map(|f| f.1));
                let held = t.at.iter().filter(|d| d.is_some()).count() as u32;
                prop_assert_eq!(heap.len(), held);
                for i in 0..12u32 {
                    prop_assert_eq!(t.cell(i).is_set(), t.at[i as usize].is_some());
                }
            }
        }
    }

        };
    }

    agrees_with_a_sorted_list!(heap_agrees_with_a_sorted_list, Heap);
    agrees_with_a_sorted_list!(scan_agrees_with_a_sorted_list, Scan);

    /// One deadline among 10,000 comes out in O(log n) cell visits.
    #[test]
    fn one_pop_costs_log_n() {
        // Miri runs this some thousand times slower; a few dozen still show it is sound.
        let n: u32 = if cfg!(miri) { 64 } else { 10_000 };
        let mut t = Table::new(n as usize);
        let mut heap = Heap::new();
        for i in 0..n {
            t.at[i as usize] = Some(1_000 + u64::from(n - i));
            heap.update(&mut t, i);
        }
        heap.steps = 0;
        t.at[7] = Some(5);
        heap.update(&mut t, 7);
        assert_eq!(heap.pop_due(&mut t, Instant::from_millis(10)), Some(7));
        assert_eq!(heap.pop_due(&mut t, Instant::from_millis(10)), None);
        // log2(10,000) < 14: a move and a removal visit at most about 2 * 14 cells each.
        assert!(heap.steps <= 4 * 15, "{} steps", heap.steps);
    }
}
