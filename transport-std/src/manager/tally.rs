//! Rate-limited logging of the events a peer can cause at will.
//!
//! A refused or evicted connection, a failed proof, an `accept` error: each costs a peer one
//! connect, so a line per event would let anyone grow the log as fast as they can connect.
//! They are counted instead, and reported in one line at most once per interval: the first
//! event after a quiet interval at once, the rest in a summary when the interval ends.

use std::time::{Duration, Instant};

use tracing::warn;

/// How often, at most, the summary line is written.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// One part of the summary of failed proofs: its text and how many it counts.
pub(crate) fn auth_line(report: depot_core::throttle::AuthReport) -> (String, u32) {
    use depot_core::throttle::AuthReport;
    let source = |bytes: &[u8]| match <[u8; 16]>::try_from(bytes) {
        Ok(octets) => std::net::Ipv6Addr::from(octets).to_canonical().to_string(),
        Err(_) => format!("{bytes:02x?}"),
    };
    match report {
        AuthReport::Failed {
            source: s,
            key,
            count,
        } => {
            let key = if key.is_empty() { "(default)" } else { key };
            (
                format!("{} failed from {} for key {key}", count, source(s)),
                count,
            )
        }
        AuthReport::Refused { source: s, count } => (
            format!("{count} refused from {} (locked out)", source(s)),
            count,
        ),
        AuthReport::Unlisted { count } => (format!("{count} more from other sources"), count),
        _ => ("failed proofs of another kind".to_owned(), 0),
    }
}

/// What a peer can cause without limit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Refused: every connection slot in use.
    Busy,
    /// Refused: too many handshakes from the peer's address.
    SourceLimit,
    /// Evicted during its handshake to make room.
    Evicted,
    /// Closed for a wrong authkey proof.
    AuthFailed,
    /// `accept` failed (out of file descriptors, most likely).
    AcceptError,
    /// Refused: the client does not encrypt and the manager requires it.
    NotEncrypted,
}

const KINDS: usize = 6;

#[derive(Debug)]
pub(crate) struct Tally {
    counts: [u64; KINDS],
    /// The latest `accept` error, shown in the summary.
    accept_error: Option<String>,
    /// No line before this.
    quiet_until: Instant,
    /// When the counts started.
    since: Instant,
    interval: Duration,
}

impl Tally {
    pub(crate) fn new(interval: Duration) -> Tally {
        let now = Instant::now();
        Tally {
            counts: [0; KINDS],
            accept_error: None,
            quiet_until: now,
            since: now,
            interval,
        }
    }

    pub(crate) fn note(&mut self, kind: Kind) {
        if !self.pending() {
            self.since = Instant::now();
        }
        self.counts[kind as usize] += 1;
        self.tick();
    }

    pub(crate) fn note_accept_error(&mut self, e: &std::io::Error) {
        self.accept_error = Some(e.to_string());
        self.note(Kind::AcceptError);
    }

    /// When a summary is due, if counts are waiting for one.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.pending().then_some(self.quiet_until)
    }

    /// Writes the summary if counts are waiting and the interval allows.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        if !self.pending() || now < self.quiet_until {
            return;
        }
        let [busy, source, evicted, auth, accept, unencrypted] = self.counts;
        let secs = now.duration_since(self.since).as_secs_f64().max(0.001);
        let total = busy + source + evicted + auth + accept + unencrypted;
        warn!(
            refused_busy = busy,
            refused_per_source = source,
            evicted_in_handshake = evicted,
            auth_failed = auth,
            accept_errors = accept,
            refused_unencrypted = unencrypted,
            last_accept_error = self.accept_error.as_deref().unwrap_or("-"),
            "turned away {} connection{} in the last {secs:.1} s",
            total,
            if total == 1 { "" } else { "s" },
        );
        self.counts = [0; KINDS];
        self.accept_error = None;
        self.quiet_until = now + self.interval;
        self.since = now;
    }

    /// Writes whatever is waiting, interval or not (the manager is stopping).
    pub(crate) fn flush(&mut self) {
        self.quiet_until = Instant::now();
        self.tick();
    }

    fn pending(&self) -> bool {
        self.counts.iter().any(|&n| n > 0)
    }
}
