//! The manager's clock: every deadline in a heap of its kind, so a deadline costs O(log n)
//! and no call walks all connections or waiters.
//!
//! Waiters and leases keep exact deadlines in heaps of their own (`Waiters`, `LeaseStore`).
//! A connection's deadlines (handshake, frame, write stall, held-back verdict) move with its
//! traffic, so its entry here is a lower bound: it is lowered when an earlier deadline
//! appears, never raised on the hot path. When it passes, the connection's deadlines are
//! checked and the entry set to the next one, if any.

use super::{Connection, Manager, State};
use crate::storage::Managed;
use crate::time::Instant;
use crate::timers::{Slots, TimerCell};
use crate::wire::{CloseReason, ErrorCode, Handle, ServerVerdict};

/// How long an authenticated connection's owned buffers keep the memory they have grown to
/// after its peer last sent: a busy connection would otherwise allocate, zero and give back
/// its buffers for each request and each reply (64-KiB batches too: page faults each time),
/// while an idle one holds no buffer memory.
#[cfg(feature = "alloc")]
const KEEP_BUFFERS_MS: u64 = 1_000;

/// The earlier of two deadlines, if any.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// What a connection's next deadline does.
enum Due {
    /// It closes the connection for this reason (before the frame deadline, if that is due).
    Close(Option<Instant>, CloseReason),
    /// A closing connection's output has had its time: dropped.
    Flush(Instant),
    /// A held-back `AuthFailed` is sent.
    Refuse(Instant),
    /// Nothing.
    Nothing,
}

impl Slots for Managed<'_, Connection<'_>> {
    fn count(&self) -> u32 {
        self.len() as u32
    }
    fn deadline(&self, slot: u32) -> Instant {
        self.get(slot as usize)
            .map_or(Instant::from_millis(u64::MAX), |c| c.timer_at)
    }
    fn cell(&self, i: u32) -> &TimerCell {
        self.get(i as usize).map_or(&TimerCell::EMPTY, |c| &c.timer)
    }
    fn cell_mut(&mut self, i: u32) -> Option<&mut TimerCell> {
        self.get_mut(i as usize).map(|c| &mut c.timer)
    }
}

impl Manager<'_> {
    /// The earliest deadline of anything.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        let next = earlier(
            self.conn_timers.next(&self.conns),
            self.waiters.next_deadline(),
        );
        // Without the feature no lease is ever granted.
        #[cfg(feature = "leases")]
        let next = earlier(next, self.leases.next_deadline());
        #[cfg(feature = "python")]
        let next = earlier(next, self.stop_at);
        next
    }

    /// Runs every deadline at or before `now`, kind by kind: leases come back, a Python
    /// client's stop begins, blocked requests time out, then connections.
    pub(super) fn run_timeouts(&mut self, now: Instant) {
        self.expire_leases(now);
        #[cfg(feature = "python")]
        if self.stop_at.is_some_and(|at| at <= now) {
            self.stop_at = None;
            debug!("remote stop from a python client");
            self.shutdown(now);
        }
        while let Some(w) = self.waiters.pop_due(now) {
            if self.condition_timed_out(w) {
                continue;
            }
            let waiter = *self.waiters.get(w);
            self.fail_waiter(w, ErrorCode::Timeout);
            self.waiter_left(waiter);
            // A putter that gave up may have held back smaller puts behind it.
            self.settle(Handle(waiter.object));
        }
        while let Some(i) = self.conn_timers.pop_due(&mut self.conns, now) {
            self.conn_timeout(i as usize, now);
        }
        self.run_resumes(now);
    }

    /// Makes sure connection `i` is woken by `at`: O(1) when its entry is that early already,
    /// else O(log n).
    pub(super) fn arm(&mut self, i: usize, at: Instant) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.timer.is_set() && c.timer_at <= at {
            return;
        }
        c.timer_at = at;
        self.conn_timers.update(&mut self.conns, i as u32);
    }

    /// Arms connection `i` for its next deadline, if it has one.
    fn arm_conn(&mut self, i: usize) {
        let at = match self.due(i) {
            Due::Close(d, _) => earlier(d, self.conns.get(i).and_then(|c| c.frame_deadline)),
            Due::Flush(at) | Due::Refuse(at) => Some(at),
            Due::Nothing => None,
        };
        if let Some(at) = at {
            self.arm(i, at);
        }
    }

    /// Connection `i`'s peer sent something after its handshake: its buffers keep their memory
    /// until it has been quiet for `KEEP_BUFFERS_MS`. A store per call; a deadline only
    /// when the connection was idle before.
    #[cfg(feature = "alloc")]
    pub(super) fn note_busy(&mut self, i: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        // The hot path: a store. Buffers and deadline change only when it was idle.
        if c.busy_at.replace(now).is_none() {
            c.keep_buffers(Some(now));
            self.arm(i, now.add_millis(KEEP_BUFFERS_MS));
        }
    }

    /// When connection `i`'s buffers stop keeping their memory, if they keep it.
    #[cfg(feature = "alloc")]
    fn keep_until(&self, i: usize) -> Option<Instant> {
        let busy_at = self.conns.get(i)?.busy_at?;
        Some(busy_at.add_millis(KEEP_BUFFERS_MS))
    }

    /// Gives connection `i`'s buffer memory back if it has been quiet long enough (what its
    /// buffers still hold is given back once sent or read).
    #[cfg(feature = "alloc")]
    fn trim_if_quiet(&mut self, i: usize, now: Instant) {
        if self.keep_until(i).is_some_and(|at| at <= now) {
            if let Some(c) = self.conns.get_mut(i) {
                c.keep_buffers(None);
            }
        }
    }

    /// Connection `i` has no deadlines any more (its slot is free).
    pub(super) fn disarm(&mut self, i: usize) {
        self.conn_timers.remove(&mut self.conns, i as u32);
    }

    /// Connection `i`'s next deadline and what it does.
    fn due(&self, i: usize) -> Due {
        let Some(c) = self.conns.get(i) else {
            return Due::Nothing;
        };
        let stall = c
            .tx_progress
            .add_millis(self.config.write_stall_timeout_ms.into());
        match &c.state {
            State::Free => Due::Nothing,
            // A closing connection whose peer never reads would keep its last bytes (and its
            // slot) for ever, since `wants_close` waits for empty output: that output gets
            // the same stall limit as any other.
            State::Closing(_) if !c.tx.is_empty() => Due::Flush(stall),
            State::Closing(_) => Due::Nothing,
            State::AwaitHello { deadline, .. } | State::AwaitProof { deadline, .. } => {
                Due::Close(Some(*deadline), CloseReason::HandshakeTimeout)
            }
            State::Refusing { at } => Due::Refuse(*at),
            State::Open(_) if !c.tx.is_empty() => {
                Due::Close(Some(stall), CloseReason::WriteStalled)
            }
            State::Open(_) => Due::Close(None, CloseReason::FrameTimeout),
            #[cfg(feature = "python")]
            State::Python { py, deadline } if !py.is_authenticated() => {
                Due::Close(Some(*deadline), CloseReason::HandshakeTimeout)
            }
            #[cfg(feature = "python")]
            State::Python { .. } if !c.tx.is_empty() => {
                Due::Close(Some(stall), CloseReason::WriteStalled)
            }
            #[cfg(feature = "python")]
            State::Python { .. } => Due::Close(None, CloseReason::FrameTimeout),
        }
    }

    /// Connection `i`'s entry came due: acts on whichever of its deadlines passed, and arms it
    /// for the next.
    fn conn_timeout(&mut self, i: usize, now: Instant) {
        #[cfg(test)]
        {
            self.conn_timers.steps += 1;
        }
        #[cfg(feature = "alloc")]
        self.trim_if_quiet(i, now);
        match self.due(i) {
            Due::Nothing => {}
            Due::Flush(at) if at <= now => {
                self.give_back_unsent(i);
                self.link(super::List::Ready, i);
            }
            Due::Refuse(at) if at <= now => {
                if let Some(c) = self.conns.get_mut(i) {
                    let _ = c.tx.push_plain(&ServerVerdict::AuthFailed);
                }
                self.begin_close(i, CloseReason::AuthFailed);
            }
            Due::Flush(at) | Due::Refuse(at) => self.arm(i, at),
            Due::Close(deadline, reason) => {
                let frame_deadline = self.conns.get(i).and_then(|c| c.frame_deadline);
                if deadline.is_some_and(|d| d <= now) {
                    self.begin_close(i, reason);
                } else if frame_deadline.is_some_and(|d| d <= now) {
                    self.begin_close(i, CloseReason::FrameTimeout);
                } else {
                    self.arm_conn(i);
                }
            }
        }
        // Whichever way it went, a busy connection's buffers still have their deadline.
        #[cfg(feature = "alloc")]
        if let Some(at) = self.keep_until(i) {
            self.arm(i, at);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use crate::manager::{Connection, Manager, ManagerConfig, Resources};
    use crate::park::ParkStore;
    use crate::time::Instant;
    use crate::waiters::Waiter;
    use crate::wire::CloseReason;
    use std::vec::Vec;

    /// With 10,000 connections waiting for their hello and one of them due, a timeout closes
    /// that one with O(log n) work: no walk over the others.
    #[test]
    fn one_due_connection_among_ten_thousand_costs_log_n() {
        // Miri runs this some thousand times slower; a few dozen still show it is sound.
        let n = if cfg!(miri) { 64 } else { 10_000 };
        let conns: Vec<Connection<'static>> =
            (0..n).map(|_| Connection::owned(1024, 1024)).collect();
        let waiters = std::vec![Waiter::EMPTY; 16];
        let resources = Resources {
            objects: Vec::new().into(),
            connections: conns.into(),
            waiters: waiters.into(),
            parked: ParkStore::none(),
        };
        let config = ManagerConfig {
            handshake_timeout_ms: 1_000,
            ..ManagerConfig::default()
        };
        let mut m = Manager::new(config, b"key", resources);
        let first = m.accept(Instant::ZERO, [1; 32], b"").unwrap();
        let later = Instant::from_millis(500);
        let rest: Vec<_> = (1..n)
            .map(|k| {
                let mut nonce = [0; 32];
                nonce[..4].copy_from_slice(&(k as u32).to_le_bytes());
                m.accept(later, nonce, b"").unwrap()
            })
            .collect();
        assert_eq!(m.poll_timeout(), Some(Instant::from_millis(1_000)));
        m.conn_timers.steps = 0;
        m.handle_timeout(Instant::from_millis(1_000));
        assert_eq!(m.close_reason(first), Some(CloseReason::HandshakeTimeout));
        assert!(rest.iter().all(|&id| m.close_reason(id).is_none()));
        // log2(10,000) < 14: the due entry leaves (a removal sifts down at most 14 levels)
        // and one connection is looked at (a walk would count 10,000).
        let steps = m.conn_timers.steps;
        assert!(
            steps <= 4 * 15,
            "{steps} heap steps for one deadline among {n}"
        );
        assert_eq!(m.poll_timeout(), Some(Instant::from_millis(1_500)));
    }
}
