//! Clients that come back by themselves (PROTOCOL.md §16, "Clients that reconnect"): the
//! rules a transport's reconnecting client follows, here so that hosts and firmware follow the
//! same ones. The transport dials, sleeps and keeps time; this says when and what.
//!
//! - [`Policy`]: how fast to dial again (jittered exponential backoff) and when a call with no
//!   deadline of its own gives up.
//! - [`Backoff`]: the pauses of one run of failed attempts.
//! - [`ClientSession`]: the client's session id and the numbers of its puts. The client sends
//!   `Op::Session` first on every connection, and a put as `PutSeq`/`PutManySeq` with a
//!   number it keeps for every try of that put.
//! - [`resend`]: whether a request in flight when its connection was lost may be sent again on
//!   the next one.
//! - [`refused_for_now`]: whether a request the manager answered with an error should be sent
//!   again on the next connection (the manager was stopping: it may be restarting).
//!
//! A client restarts its state machine on the new connection with
//! [`Client::restart`](crate::Client::restart).

use crate::time::Instant;
use crate::wire::{ErrorCode, Op, SESSION_ID_LEN};

/// How a client reconnects. The defaults are depot-std's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Policy {
    /// The first pause between attempts (default 50 ms). The first attempt is made at once.
    pub initial_ms: u32,
    /// The longest pause between attempts (default 2 s).
    pub max_ms: u32,
    /// How long a call with no deadline of its own (`Wait::Forever` or `Wait::NoWait`) keeps
    /// trying to reconnect before it fails (default 60 s; `None`: for ever). A call that
    /// waits `Wait::Millis(ms)` fails when its `ms` pass.
    pub give_up_ms: Option<u32>,
    /// The time each attempt (TCP connect, handshake and session) may take (default 5 s).
    pub connect_timeout_ms: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial_ms: 50,
            max_ms: 2_000,
            give_up_ms: Some(60_000),
            connect_timeout_ms: 5_000,
        }
    }
}

impl Policy {
    /// When a call that started at `start` and has no deadline of its own stops reconnecting.
    pub fn give_up_at(&self, start: Instant) -> Option<Instant> {
        self.give_up_ms.map(|ms| start.add_millis(ms.into()))
    }
}

/// The pauses between the attempts of one reconnection: each drawn between half and all of
/// a delay that starts at [`Policy::initial_ms`] and doubles up to [`Policy::max_ms`], so that
/// the clients of a restarted manager do not all come back at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    delay_ms: u32,
    max_ms: u32,
}

impl Backoff {
    /// A fresh run of attempts.
    pub fn new(policy: &Policy) -> Self {
        Backoff {
            delay_ms: policy.initial_ms.max(1),
            max_ms: policy.max_ms.max(1),
        }
    }

    /// The pause after a failed attempt, in milliseconds; `random` is any random `u32`.
    pub fn pause_ms(&mut self, random: u32) -> u32 {
        let delay = self.delay_ms.min(self.max_ms);
        let half = delay / 2;
        let jitter = ((u64::from(delay - half) * u64::from(random)) >> 32) as u32;
        self.delay_ms = delay.saturating_mul(2).min(self.max_ms);
        half + jitter
    }
}

/// A client's session: its id, chosen at random once, and the next number for a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSession {
    id: [u8; SESSION_ID_LEN],
    next_seq: u64,
}

impl ClientSession {
    /// A session named by 128 random bits.
    pub fn new(id: [u8; SESSION_ID_LEN]) -> Self {
        ClientSession { id, next_seq: 0 }
    }

    /// The request that opens (or resumes) the session: the first on every connection.
    pub fn open(&self) -> Op<'static> {
        Op::Session { id: self.id }
    }

    /// A fresh number for a put. Every try of that put carries the same number.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        seq
    }
}

/// Whether request `op`, in flight when its connection was lost, may be sent again on a new
/// connection: when it changes nothing, or changes what it changes once however often it
/// arrives. `in_session`: the new connection holds the client's session, so the manager
/// applies a numbered put once. A request that was never written to a connection may always
/// be sent.
///
/// Not sent again: plain puts (they may be applied twice), `TaskDone` and object actions
/// (whether they counted cannot be told), `Ack`/`Nack` (the lease ended with the connection),
/// `Shutdown`, and the client's own `Cancel`/`Return`/`Session`.
pub fn resend(op: &Op, in_session: bool) -> bool {
    match op {
        Op::Open { .. }
        | Op::Create { .. }
        | Op::CreateObject { .. }
        | Op::Get { .. }
        | Op::GetMany { .. }
        | Op::GetLeased { .. }
        | Op::Size { .. }
        | Op::Join { .. }
        | Op::Stat { .. }
        | Op::Status
        | Op::BackendStatus => true,
        Op::PutSeq { .. } | Op::PutManySeq { .. } => in_session,
        Op::Put { .. }
        | Op::PutMany { .. }
        | Op::TaskDone { .. }
        | Op::Act { .. }
        | Op::Ack { .. }
        | Op::Nack { .. }
        | Op::Shutdown
        | Op::Cancel { .. }
        | Op::Return { .. }
        | Op::Session { .. } => false,
    }
}

/// Whether a request answered `code` is, for a client that reconnects, not failed but sent
/// again on its next connection, whatever the request: `ShuttingDown`. A manager answers it
/// only to requests it did not apply (a batch put: the items from `Accepted.count` on, which go
/// again alone, as a put of their own with a new number), and a manager that stops may be
/// starting again (an upgrade, a restart with its data directory): the client rides it as it
/// rides a lost connection, and the call fails only when its own time runs out.
pub fn refused_for_now(code: ErrorCode) -> bool {
    code == ErrorCode::ShuttingDown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Handle, Wait};

    #[test]
    fn pauses_are_jittered_between_half_and_all_and_double_up_to_the_max() {
        let policy = Policy {
            initial_ms: 100,
            max_ms: 1_000,
            ..Policy::default()
        };
        let mut low = Backoff::new(&policy);
        let mut high = Backoff::new(&policy);
        let mut lows = [0; 6];
        let mut highs = [0; 6];
        for k in 0..6 {
            lows[k] = low.pause_ms(0);
            highs[k] = high.pause_ms(u32::MAX);
        }
        assert_eq!(lows, [50, 100, 200, 400, 500, 500]);
        assert_eq!(highs, [99, 199, 399, 799, 999, 999]);
        let mut mid = Backoff::new(&policy);
        assert_eq!(mid.pause_ms(1 << 31), 75);
    }

    #[test]
    fn a_zero_policy_still_pauses_and_never_overflows() {
        let zero = Policy {
            initial_ms: 0,
            max_ms: 0,
            ..Policy::default()
        };
        let mut b = Backoff::new(&zero);
        assert!(b.pause_ms(u32::MAX) <= 1);
        let huge = Policy {
            initial_ms: u32::MAX,
            max_ms: u32::MAX,
            ..Policy::default()
        };
        let mut b = Backoff::new(&huge);
        for _ in 0..4 {
            assert!(b.pause_ms(u32::MAX) >= u32::MAX / 2);
        }
    }

    #[test]
    fn put_numbers_count_up_and_the_session_opens_with_its_id() {
        let mut s = ClientSession::new([9; SESSION_ID_LEN]);
        assert_eq!((s.next_seq(), s.next_seq(), s.next_seq()), (0, 1, 2));
        assert_eq!(
            s.open(),
            Op::Session {
                id: [9; SESSION_ID_LEN]
            }
        );
    }

    #[test]
    fn only_requests_safe_to_repeat_are_sent_again() {
        let handle = Handle(1);
        let wait = Wait::Forever;
        let numbered = Op::PutSeq {
            seq: 3,
            handle,
            item: b"x",
            wait,
        };
        assert!(resend(&numbered, true));
        assert!(!resend(&numbered, false));
        assert!(!resend(
            &Op::Put {
                handle,
                item: b"x",
                wait
            },
            true
        ));
        assert!(resend(&Op::Get { handle, wait }, false));
        assert!(resend(&Op::Size { handle }, false));
        assert!(!resend(&Op::TaskDone { handle }, true));
        assert!(!resend(&Op::Shutdown, true));
    }

    /// Every reconnecting client (depot-std's blocking and tokio ones, depot-embassy's) asks
    /// this for each kind of request it makes again, batches and leases included.
    #[test]
    fn batches_follow_the_session_and_leases_are_not_settled_again() {
        use crate::wire::Items;
        let handle = Handle(2);
        let wait = Wait::Millis(5);
        let items = Items(b"");
        let batch = Op::PutManySeq {
            seq: 1,
            handle,
            items,
            wait,
        };
        assert!(resend(&batch, true));
        assert!(!resend(&batch, false));
        assert!(!resend(
            &Op::PutMany {
                handle,
                items,
                wait
            },
            true
        ));
        let (max_items, max_bytes) = (4, 64);
        let repeatable = [
            Op::Open { name: "q" },
            Op::GetMany {
                handle,
                max_items,
                max_bytes,
                wait,
            },
            Op::GetLeased {
                handle,
                max_items,
                max_bytes,
                lease_ms: 100,
                wait,
            },
            Op::Join { handle, wait },
            Op::Stat { index: 0 },
            Op::Status,
        ];
        for op in &repeatable {
            assert!(resend(op, false), "{op:?}");
        }
        let once = [
            Op::Ack { lease: 7 },
            Op::Nack { lease: 7 },
            Op::Return { handle, item: b"x" },
            Op::Session {
                id: [0; SESSION_ID_LEN],
            },
        ];
        for op in &once {
            assert!(!resend(op, true), "{op:?}");
        }
    }
}
