//! The manager's side of sessions: opening them, numbered puts, and keeping each session's
//! window in step with the puts that wait (see [`crate::session`]).

use super::Manager;
#[cfg(feature = "sessions")]
use super::{State, NONE};
#[cfg(feature = "sessions")]
use crate::journal::{note, RestoreError};
#[cfg(feature = "sessions")]
use crate::session::{Begin, Grown, OpenError, SessionSlot, Window};
#[cfg(feature = "sessions")]
use crate::storage::Managed;
#[cfg(feature = "sessions")]
use crate::wire::CloseReason;
use crate::wire::{ErrorCode, Handle, Items, Reply, Wait, SESSION_ID_LEN};

#[cfg(feature = "sessions")]
impl<'a> Manager<'a> {
    /// Remembers clients' sessions in `slots` (their number bounds the sessions remembered
    /// at once; see [`crate::session`]). Without it, `Session` is answered `NotAllowed`.
    pub fn serve_sessions(&mut self, slots: impl Into<Managed<'a, SessionSlot>>) {
        self.sessions = crate::session::Sessions::new(slots.into());
    }

    pub(super) fn open_session(&mut self, i: usize, id: [u8; SESSION_ID_LEN]) -> Reply<'static> {
        self.leave_session(i);
        match self.sessions.open(id, i as u32) {
            Ok(opened) => {
                if let Some(j) = opened.previous {
                    // The client has moved on: its old connection's waiting puts are dropped
                    // before this one may try them again.
                    let j = j as usize;
                    if matches!(self.conns[j].state, State::Open(_)) {
                        self.begin_close(j, CloseReason::Superseded);
                    }
                    self.conns[j].session = NONE;
                }
                self.conns[i].session = opened.slot;
                Reply::Session {
                    resumed: opened.resumed,
                }
            }
            Err(OpenError::Full) => Reply::Error(ErrorCode::SessionLimit),
            Err(OpenError::Disabled) => Reply::Error(ErrorCode::NotAllowed),
        }
    }

    /// Connection `i` lets go of its session, if it holds one.
    pub(super) fn leave_session(&mut self, i: usize) {
        let slot = core::mem::replace(&mut self.conns[i].session, NONE);
        if slot != NONE {
            self.sessions.release(slot, i as u32);
        }
    }

    /// The session slot of connection `i` for a numbered put, or the error that refuses it.
    fn numbered(&mut self, i: usize, seq: u64) -> Result<(u32, u32), ErrorCode> {
        let slot = self.conns[i].session;
        if slot == NONE {
            return Err(ErrorCode::NoSession);
        }
        match self.sessions.begin(slot, seq) {
            Begin::Apply { applied } => Ok((slot, applied)),
            Begin::Busy => Err(ErrorCode::WaiterLimit),
            Begin::Expired => Err(ErrorCode::SequenceExpired),
        }
    }

    pub(super) fn put_seq(
        &mut self,
        i: usize,
        id: u32,
        seq: u64,
        handle: Handle,
        item: &[u8],
        wait: Wait,
    ) {
        let slot = match self.numbered(i, seq) {
            Ok((_, applied)) if applied > 0 => return self.reply_done(i, id),
            Ok((slot, _)) => slot,
            Err(code) => return self.reply_error(i, id, code),
        };
        // Marked first: a put that parks may finish before `put` returns.
        self.sessions.waiting(slot, seq, id);
        let (applied, parked) = self.put(i, id, handle, item, wait);
        let grown = self.sessions.applied(slot, seq, applied);
        self.journal_grown(grown);
        if !parked {
            self.sessions.stop_waiting(slot, id);
        }
    }

    pub(super) fn put_many_seq(
        &mut self,
        i: usize,
        id: u32,
        seq: u64,
        handle: Handle,
        items: Items,
        wait: Wait,
    ) {
        let Some(total) = items.check() else {
            return self.begin_close(i, CloseReason::Malformed);
        };
        let (slot, already) = match self.numbered(i, seq) {
            Ok(found) => found,
            Err(code) => {
                let reply = Reply::Accepted {
                    count: 0,
                    error: Some(code),
                };
                return self.reply(i, id, &reply);
            }
        };
        if already >= total {
            let reply = Reply::Accepted {
                count: total,
                error: None,
            };
            return self.reply(i, id, &reply);
        }
        // The items an earlier try applied are skipped.
        let rest = items.after(already);
        self.sessions.waiting(slot, seq, id);
        let (applied, parked) = self.put_many(i, id, handle, rest, wait, already);
        let grown = self.sessions.applied(slot, seq, already + applied);
        self.journal_grown(grown);
        if !parked {
            self.sessions.stop_waiting(slot, id);
        }
    }

    /// Waiter `w`, a put, has `applied` items of its request in its queue.
    pub(super) fn session_progress(&mut self, w: u32, applied: u32) {
        let waiter = *self.waiters.get(w);
        if waiter.conn == NONE {
            return;
        }
        let slot = self.conns[waiter.conn as usize].session;
        if slot != NONE {
            let grown = self.sessions.progress(slot, waiter.request, applied);
            self.journal_grown(grown);
        }
    }

    /// Tells the journal that a numbered put has more items in (after the items themselves).
    fn journal_grown(&mut self, grown: Option<Grown>) {
        if let Some(g) = grown {
            note(&mut self.journal, |j| {
                j.session_applied(&g.id, g.seq, g.applied)
            });
        }
    }

    /// Remembers session `id` as a journal left it (see [`crate::journal`]): numbers below
    /// `expired_below` that are not in `puts` fell out of its window, and each `(seq,
    /// applied)` of `puts` is a numbered put with that many items applied, so a client that
    /// resumes the session and retries it gets only the rest applied. Not journaled; call
    /// after [`Manager::serve_sessions`] and before serving, least recently used session
    /// first. Fails when sessions are not served; when every slot is taken, the least
    /// recently used session gives way, as when a client opens one.
    pub fn restore_session(
        &mut self,
        id: [u8; SESSION_ID_LEN],
        expired_below: u64,
        puts: impl IntoIterator<Item = (u64, u32)>,
    ) -> Result<(), RestoreError> {
        self.sessions
            .restore(id, expired_below, puts)
            .map_err(|e| match e {
                OpenError::Disabled => RestoreError::NoSessions,
                OpenError::Full => RestoreError::Full,
            })
    }

    /// The sessions remembered, least recently used first, with their de-duplication
    /// windows: what a snapshot keeps so a restore can give them back
    /// ([`Manager::restore_session`]).
    pub fn session_windows(&self) -> impl Iterator<Item = Window<'_>> + '_ {
        self.sessions.windows()
    }

    /// Put `request` of connection `i` waits no more.
    pub(super) fn session_stop_waiting(&mut self, i: usize, request: u32) {
        let slot = self.conns[i].session;
        if slot != NONE {
            self.sessions.stop_waiting(slot, request);
        }
    }
}

/// Without the `sessions` feature the manager keeps no sessions: `Session` is answered
/// `NotAllowed`, and a numbered put, on a connection that cannot have opened one, `NoSession`
/// (PROTOCOL.md §17), as by a manager given no session slots.
#[cfg(not(feature = "sessions"))]
impl Manager<'_> {
    pub(super) fn open_session(&mut self, _i: usize, _id: [u8; SESSION_ID_LEN]) -> Reply<'static> {
        Reply::Error(ErrorCode::NotAllowed)
    }

    pub(super) fn leave_session(&mut self, _i: usize) {}

    pub(super) fn put_seq(
        &mut self,
        i: usize,
        id: u32,
        _seq: u64,
        _handle: Handle,
        _item: &[u8],
        _wait: Wait,
    ) {
        self.reply_error(i, id, ErrorCode::NoSession);
    }

    pub(super) fn put_many_seq(
        &mut self,
        i: usize,
        id: u32,
        _seq: u64,
        _handle: Handle,
        items: Items,
        _wait: Wait,
    ) {
        if items.check().is_none() {
            return self.begin_close(i, super::CloseReason::Malformed);
        }
        let reply = Reply::Accepted {
            count: 0,
            error: Some(ErrorCode::NoSession),
        };
        self.reply(i, id, &reply);
    }

    pub(super) fn session_progress(&mut self, _w: u32, _applied: u32) {}

    pub(super) fn session_stop_waiting(&mut self, _i: usize, _request: u32) {}
}
