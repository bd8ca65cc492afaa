//! Conditions (Python's `Condition`): a reentrant lock whose holder may `Wait`, giving the
//! lock up until a `Notify` (or its deadline) wakes it, and then waits for the lock again
//! among the blocked acquirers; its reply (`Flag`: notified or not) comes once it holds the
//! lock, at the levels it held before.

use super::Manager;
#[cfg(feature = "objects")]
use {
    super::park_timeout,
    crate::objects::State as Obj,
    crate::waiters::{Hold, WaitKind, Waiter},
    crate::wire::{ErrorCode, Handle, Reply, Wait},
};

#[cfg(feature = "objects")]
impl Manager<'_> {
    /// `Wait` on condition `handle` by connection `i`, which must hold it.
    pub(super) fn condition_wait(&mut self, i: usize, id: u32, handle: Handle, wait: Wait) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        let Some(h) = self.waiters.find_in(&o.holders, |w| w.conn == i as u32) else {
            return self.reply_error(i, id, ErrorCode::NotOwner);
        };
        if self.shutting_down {
            return self.reply_error(i, id, ErrorCode::ShuttingDown);
        }
        let timeout = match park_timeout(wait, ErrorCode::Timeout) {
            Ok(timeout) => timeout,
            // Nobody can notify a wait that may not block: it has the lock and `false` now.
            Err(_) => return self.reply(i, id, &Reply::Flag(false)),
        };
        let Hold::Permits(levels) = self.waiters.get(h).hold else {
            return self.reply_error(i, id, ErrorCode::NotOwner);
        };
        // The holder record's slot goes to the waiter.
        self.release(h);
        if let Ok(o) = self.registry.shared(handle) {
            if let Obj::Permits { free } = o.state {
                o.state = Obj::Permits { free: free + 1 };
            }
        }
        let waiter = Waiter {
            hold: Hold::Condition {
                levels,
                woken: None,
            },
            ..Waiter::EMPTY
        };
        if !self.park(i, id, handle, WaitKind::Wait, timeout, waiter) {
            // Refused (and answered): it keeps the lock it had.
            if self.take_permit(i, handle) {
                self.set_levels(i, handle, levels);
            }
            return;
        }
        self.grant(handle);
    }

    /// `Notify` of at most `n` waiters of condition `handle` by connection `i`, which must
    /// hold it: they wait for the lock now, without a deadline.
    pub(super) fn notify(&mut self, i: usize, handle: Handle, n: u32) -> Reply<'static> {
        let Ok(o) = self.registry.shared(handle) else {
            return Reply::Error(ErrorCode::NoSuchObject);
        };
        if self
            .waiters
            .find_in(&o.holders, |w| w.conn == i as u32)
            .is_none()
        {
            return Reply::Error(ErrorCode::NotOwner);
        }
        let list = o.waiters;
        for _ in 0..n {
            let Some(w) = self.waiters.find_in(&list, |w| {
                matches!(w.hold, Hold::Condition { woken: None, .. })
            }) else {
                break;
            };
            self.wake(w, true);
        }
        self.grant(handle);
        Reply::Done
    }

    /// Waiter `w`, a condition's, wakes and waits for the lock.
    fn wake(&mut self, w: u32, notified: bool) {
        let waiter = self.waiters.get_mut(w);
        if let Hold::Condition { woken, .. } = &mut waiter.hold {
            *woken = Some(notified);
        }
        self.waiters.set_deadline(w, None);
    }

    /// Waiter `w`'s deadline passed: `true` if it is a condition's waiter not yet woken,
    /// which then waits for the lock to answer `false` (Python's `wait` returns holding it).
    pub(super) fn condition_timed_out(&mut self, w: u32) -> bool {
        let waiter = *self.waiters.get(w);
        if !matches!(waiter.hold, Hold::Condition { woken: None, .. }) {
            return false;
        }
        self.wake(w, false);
        self.grant(Handle(waiter.object));
        true
    }

    /// Connection `i` holds `handle` at `levels` (it has just taken it once).
    pub(super) fn set_levels(&mut self, i: usize, handle: Handle, levels: u32) {
        let Ok(o) = self.registry.shared(handle) else {
            return;
        };
        if let Some(h) = self.waiters.find_in(&o.holders, |w| w.conn == i as u32) {
            self.waiters.get_mut(h).hold = Hold::Permits(levels.max(1));
        }
    }
}

#[cfg(not(feature = "objects"))]
impl Manager<'_> {
    pub(super) fn condition_timed_out(&mut self, _w: u32) -> bool {
        false
    }
}
