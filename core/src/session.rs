//! Sessions: what the manager remembers of a client across its connections, so that a put
//! retried after a lost reply is applied once.
//!
//! A client names its session with 128 random bits ([`Op::Session`](crate::wire::Op)) and
//! numbers its puts ([`Op::PutSeq`](crate::wire::Op), `PutManySeq`). For each session the
//! manager keeps a window of the last [`WINDOW`] sequence numbers it saw and how many items of
//! each it has applied. A put whose number is in the window is not applied again (or, for a
//! batch cut short, only its rest is); a number older than the window is refused with
//! `SequenceExpired`, since its outcome can no longer be told.
//!
//! The table of sessions is bounded by the storage handed in: a new session takes a free slot,
//! else the least recently used slot no connection holds; when every slot is held, it is
//! refused with `SessionLimit`. A session whose slot was taken is forgotten: resuming it
//! starts afresh (the reply says so).
//!
//! All of a session's state is in its [`SessionSlot`], plain data, so it can be saved and
//! restored as it is.

#![cfg_attr(not(feature = "sessions"), allow(dead_code))]

use crate::storage::Managed;
use crate::wire::SESSION_ID_LEN;

/// Sequence numbers each session remembers.
pub const WINDOW: usize = 64;

const NONE: u32 = u32::MAX;

/// One remembered put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    /// Items of the request applied so far (a `PutSeq` has one).
    applied: u32,
    /// The request id of the connection where it waits in the manager, `NONE` if it does not.
    waiting: u32,
    used: bool,
}

impl Entry {
    const EMPTY: Entry = Entry {
        seq: 0,
        applied: 0,
        waiting: NONE,
        used: false,
    };
}

/// One session's slot. Hand a slice of [`SessionSlot::EMPTY`] to
/// [`Manager::serve_sessions`](crate::Manager::serve_sessions); its length is the most
/// sessions remembered at once.
#[derive(Debug, Clone, Copy)]
pub struct SessionSlot {
    id: [u8; SESSION_ID_LEN],
    in_use: bool,
    /// The connection holding the session, `NONE` if none does.
    conn: u32,
    /// The table's use counter when the session was last used (least recently used goes first).
    last_use: u64,
    /// Numbers below this one that are not in the window fell out of it.
    expired_below: u64,
    entries: [Entry; WINDOW],
}

impl SessionSlot {
    /// An unused slot.
    pub const EMPTY: SessionSlot = SessionSlot {
        id: [0; SESSION_ID_LEN],
        in_use: false,
        conn: NONE,
        last_use: 0,
        expired_below: 0,
        entries: [Entry::EMPTY; WINDOW],
    };
}

/// Why a session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Every slot is held by a connection.
    Full,
    /// No storage for sessions was handed in.
    Disabled,
}

/// A session opened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) slot: u32,
    /// The manager remembered the session.
    pub(crate) resumed: bool,
    /// Another connection held it (it must be closed: the client has moved on).
    pub(crate) previous: Option<u32>,
}

/// What to do with a numbered put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Apply it, skipping the first `applied` items (applied by an earlier try).
    Apply { applied: u32 },
    /// It is waiting in the manager right now (sent twice on live connections, or the window
    /// is all waiting puts): refuse it for now.
    Busy,
    /// Its number is older than the window: whether it was applied cannot be told.
    Expired,
}

/// A numbered put's count grew: what a journal hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grown {
    pub(crate) id: [u8; SESSION_ID_LEN],
    pub(crate) seq: u64,
    pub(crate) applied: u32,
}

/// One session's de-duplication window, as a snapshot keeps it (see
/// [`Manager::session_windows`](crate::Manager::session_windows)).
#[derive(Clone, Copy)]
pub struct Window<'s> {
    slot: &'s SessionSlot,
}

impl<'s> Window<'s> {
    /// The session's id.
    pub fn id(&self) -> &'s [u8; SESSION_ID_LEN] {
        &self.slot.id
    }
    /// Numbers below this one that are not in [`Window::puts`] fell out of the window.
    pub fn expired_below(&self) -> u64 {
        self.slot.expired_below
    }
    /// Each numbered put remembered with items applied: its number and how many.
    pub fn puts(&self) -> impl Iterator<Item = (u64, u32)> + 's {
        self.slot
            .entries
            .iter()
            .filter(|e| e.used && e.applied > 0)
            .map(|e| (e.seq, e.applied))
    }
}

/// The session table.
pub(crate) struct Sessions<'a> {
    slots: Managed<'a, SessionSlot>,
    uses: u64,
}

impl<'a> Sessions<'a> {
    pub(crate) fn new(slots: Managed<'a, SessionSlot>) -> Self {
        Sessions { slots, uses: 0 }
    }

    /// Opens session `id` on connection `conn`.
    pub(crate) fn open(
        &mut self,
        id: [u8; SESSION_ID_LEN],
        conn: u32,
    ) -> Result<Opened, OpenError> {
        if self.slots.is_empty() {
            return Err(OpenError::Disabled);
        }
        self.uses += 1;
        let uses = self.uses;
        if let Some(at) = self.slots.iter().position(|s| s.in_use && s.id == id) {
            let s = &mut self.slots[at];
            let previous = (s.conn != NONE && s.conn != conn).then_some(s.conn);
            s.conn = conn;
            s.last_use = uses;
            return Ok(Opened {
                slot: at as u32,
                resumed: true,
                previous,
            });
        }
        let free = self.slots.iter().position(|s| !s.in_use);
        let victim = free.or_else(|| {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.conn == NONE)
                .min_by_key(|(_, s)| s.last_use)
                .map(|(at, _)| at)
        });
        let at = victim.ok_or(OpenError::Full)?;
        self.slots[at] = SessionSlot {
            id,
            in_use: true,
            conn,
            last_use: uses,
            ..SessionSlot::EMPTY
        };
        Ok(Opened {
            slot: at as u32,
            resumed: false,
            previous: None,
        })
    }

    /// Connection `conn` no longer holds session `slot` (it closed).
    pub(crate) fn release(&mut self, slot: u32, conn: u32) {
        self.uses += 1;
        let uses = self.uses;
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if s.conn == conn {
                s.conn = NONE;
                s.last_use = uses;
            }
        }
    }

    /// Numbered put `seq` arrives on session `slot`: what to do with it. On `Apply` the
    /// number is in the window; [`Sessions::applied`] and [`Sessions::waiting`] record what
    /// became of it.
    pub(crate) fn begin(&mut self, slot: u32, seq: u64) -> Begin {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return Begin::Expired;
        };
        if let Some(e) = s.entries.iter().find(|e| e.used && e.seq == seq) {
            return if e.waiting != NONE {
                Begin::Busy
            } else {
                Begin::Apply { applied: e.applied }
            };
        }
        if seq < s.expired_below {
            return Begin::Expired;
        }
        // A free entry, else the oldest number not waiting (it leaves the window).
        let at = match s.entries.iter().position(|e| !e.used) {
            Some(at) => at,
            None => {
                let oldest = s
                    .entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.waiting == NONE)
                    .min_by_key(|(_, e)| e.seq)
                    .map(|(at, _)| at);
                let Some(at) = oldest else {
                    return Begin::Busy;
                };
                s.expired_below = s.expired_below.max(s.entries[at].seq.saturating_add(1));
                at
            }
        };
        s.entries[at] = Entry {
            seq,
            applied: 0,
            waiting: NONE,
            used: true,
        };
        Begin::Apply { applied: 0 }
    }

    fn entry(&mut self, slot: u32, pick: impl Fn(&Entry) -> bool) -> Option<&mut Entry> {
        let s = self.slots.get_mut(slot as usize)?;
        s.entries.iter_mut().find(|e| e.used && pick(e))
    }

    /// `applied` items of put `seq` are in its queue (counted from the request's first).
    /// Returns what a journal must hear when the count grew.
    pub(crate) fn applied(&mut self, slot: u32, seq: u64, applied: u32) -> Option<Grown> {
        self.grow(slot, |e| e.seq == seq, applied)
    }

    /// Raises the count of the entry `pick` finds to `applied`; what grew, if it did.
    fn grow(&mut self, slot: u32, pick: impl Fn(&Entry) -> bool, applied: u32) -> Option<Grown> {
        let s = self.slots.get_mut(slot as usize)?;
        let e = s.entries.iter_mut().find(|e| e.used && pick(e))?;
        if applied <= e.applied {
            return None;
        }
        e.applied = applied;
        Some(Grown {
            id: s.id,
            seq: e.seq,
            applied,
        })
    }

    /// Put `seq` waits in the manager as request `request` of the session's connection.
    pub(crate) fn waiting(&mut self, slot: u32, seq: u64, request: u32) {
        if let Some(e) = self.entry(slot, |e| e.seq == seq) {
            e.waiting = request;
        }
    }

    /// The waiting put that is request `request`: `applied` items of it are in now.
    pub(crate) fn progress(&mut self, slot: u32, request: u32, applied: u32) -> Option<Grown> {
        self.grow(slot, |e| e.waiting == request, applied)
    }

    /// Remembers session `id` as a journal left it: no connection holds it, numbers below
    /// `expired_below` not in `puts` fell out of its window, and each `(seq, applied)` of
    /// `puts` is a numbered put with that many items applied (the highest numbers are kept
    /// when there are more than [`WINDOW`]). It becomes the most recently used session.
    pub(crate) fn restore(
        &mut self,
        id: [u8; SESSION_ID_LEN],
        expired_below: u64,
        puts: impl IntoIterator<Item = (u64, u32)>,
    ) -> Result<(), OpenError> {
        let at = self.open(id, NONE)?.slot;
        let s = &mut self.slots[at as usize];
        s.expired_below = s.expired_below.max(expired_below);
        for (seq, applied) in puts {
            if let Some(e) = s.entries.iter_mut().find(|e| e.used && e.seq == seq) {
                e.applied = e.applied.max(applied);
                continue;
            }
            let at = match s.entries.iter().position(|e| !e.used) {
                Some(at) => at,
                None => {
                    let (at, lowest) = s
                        .entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| e.seq)
                        .map(|(at, e)| (at, e.seq))
                        .unwrap_or((0, 0));
                    if seq < lowest {
                        s.expired_below = s.expired_below.max(seq.saturating_add(1));
                        continue;
                    }
                    s.expired_below = s.expired_below.max(lowest.saturating_add(1));
                    at
                }
            };
            s.entries[at] = Entry {
                seq,
                applied,
                waiting: NONE,
                used: true,
            };
        }
        Ok(())
    }

    /// The sessions remembered, least recently used first, as [`Sessions::restore`] takes them.
    pub(crate) fn windows(&self) -> impl Iterator<Item = Window<'_>> + '_ {
        let mut last = None::<u64>;
        core::iter::from_fn(move || {
            // The next session by last use, after the one given before (no heap to sort in).
            let next = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.in_use && last.is_none_or(|l| s.last_use > l))
                .min_by_key(|(_, s)| s.last_use)?;
            last = Some(next.1.last_use);
            Some(Window { slot: next.1 })
        })
    }

    /// The waiting put that is request `request` waits no more (answered or dropped).
    pub(crate) fn stop_waiting(&mut self, slot: u32, request: u32) {
        if let Some(e) = self.entry(slot, |e| e.waiting == request) {
            e.waiting = NONE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(slots: &mut [SessionSlot]) -> Sessions<'_> {
        Sessions::new(Managed::from(slots))
    }

    #[test]
    fn a_number_is_applied_once_and_its_count_remembered() {
        let mut slots = [SessionSlot::EMPTY; 2];
        let mut t = table(&mut slots);
        let s = t.open([1; 16], 0).unwrap();
        assert!(!s.resumed);
        assert_eq!(t.begin(s.slot, 7), Begin::Apply { applied: 0 });
        t.applied(s.slot, 7, 3);
        assert_eq!(t.begin(s.slot, 7), Begin::Apply { applied: 3 });
        // On another connection: the same session, the same memory.
        let again = t.open([1; 16], 1).unwrap();
        assert_eq!(
            (again.slot, again.resumed, again.previous),
            (s.slot, true, Some(0))
        );
        assert_eq!(t.begin(s.slot, 7), Begin::Apply { applied: 3 });
    }

    #[test]
    fn numbers_older_than_the_window_are_expired() {
        let mut slots = [SessionSlot::EMPTY; 1];
        let mut t = table(&mut slots);
        let s = t.open([2; 16], 0).unwrap().slot;
        for seq in 0..WINDOW as u64 + 5 {
            assert_eq!(t.begin(s, seq), Begin::Apply { applied: 0 });
            t.applied(s, seq, 1);
        }
        for seq in 0..5 {
            assert_eq!(t.begin(s, seq), Begin::Expired);
        }
        assert_eq!(t.begin(s, 5), Begin::Apply { applied: 1 });
    }

    #[test]
    fn a_waiting_put_stays_in_the_window_and_is_busy() {
        let mut slots = [SessionSlot::EMPTY; 1];
        let mut t = table(&mut slots);
        let s = t.open([3; 16], 0).unwrap().slot;
        assert_eq!(t.begin(s, 0), Begin::Apply { applied: 0 });
        t.waiting(s, 0, 42);
        for seq in 1..3 * WINDOW as u64 {
            t.begin(s, seq);
        }
        assert_eq!(t.begin(s, 0), Begin::Busy);
        t.progress(s, 42, 2);
        t.stop_waiting(s, 42);
        assert_eq!(t.begin(s, 0), Begin::Apply { applied: 2 });
    }

    #[test]
    fn the_least_recently_used_free_session_gives_way() {
        let mut slots = [SessionSlot::EMPTY; 2];
        let mut t = table(&mut slots);
        let a = t.open([1; 16], 0).unwrap();
        let b = t.open([2; 16], 1).unwrap();
        // Both held: no room.
        assert_eq!(t.open([3; 16], 2), Err(OpenError::Full));
        t.release(b.slot, 1);
        t.release(a.slot, 0);
        // `b` was released first, so it is the least recently used.
        let c = t.open([3; 16], 2).unwrap();
        assert_eq!(c.slot, b.slot);
        assert!(t.open([1; 16], 3).unwrap().resumed);
        // `[2; 16]` was forgotten, and every slot is held again.
        assert_eq!(t.open([2; 16], 4), Err(OpenError::Full));
    }
}
