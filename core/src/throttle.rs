//! The key-guessing throttle: failed proofs from one source slow that source down.
//!
//! Each failed proof from a source doubles the time its next verdict is held back (from
//! [`ThrottleConfig::delay_ms`] up to [`ThrottleConfig::max_delay_ms`]); after
//! [`ThrottleConfig::lockout_after`] failures the source is refused at accept for
//! [`ThrottleConfig::lockout_ms`]. A source forgets its failures after a quiet `lockout_ms`,
//! and a proof that succeeds clears them at once. Other sources are not affected, so a storm
//! from one address does not keep anyone else out.
//!
//! The failures are also counted per source and key name for a summary the transport logs
//! (see [`Manager::take_auth_reports`](crate::Manager::take_auth_reports)). Both tables are
//! fixed and small; when full, the stalest source gives way.
//!
//! The tables (about 2.7 KiB of the manager) come with the `throttle` feature; without it
//! every failed proof is held back [`ThrottleConfig::delay_ms`], with no lockout and no
//! summary.

use crate::keyring::KeyName;
use crate::time::Instant;

/// Bytes of a source kept (an IPv6 address; longer sources are cut).
pub const SOURCE_LEN: usize = 16;
/// Sources the throttle remembers at once.
pub const SOURCES: usize = 32;
/// (source, key name) pairs the summary counts separately between two reports.
pub const REPORTS: usize = 16;

/// How failed proofs are slowed down (part of [`ManagerConfig`](crate::ManagerConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ThrottleConfig {
    /// How long the verdict on a source's first failed proof is held back; doubled for each
    /// further failure. 0: no delay.
    pub delay_ms: u32,
    /// The longest a verdict is held back.
    pub max_delay_ms: u32,
    /// Failed proofs after which a source is refused at accept. 0: never.
    pub lockout_after: u32,
    /// How long a source is refused, and how long a source must stay quiet to be forgiven.
    pub lockout_ms: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            delay_ms: 100,
            max_delay_ms: 3_000,
            lockout_after: 10,
            lockout_ms: 60_000,
        }
    }
}

/// A line of the failure summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AuthReport<'r> {
    /// Proofs that failed from `source` naming key `key` (an unknown name fails like a
    /// wrong key).
    Failed {
        /// Where they came from, as given to [`Manager::accept`](crate::Manager::accept).
        source: &'r [u8],
        /// The key name the hellos named (empty: the default key).
        key: &'r str,
        /// How many.
        count: u32,
    },
    /// Connections from `source` refused while it was locked out.
    Refused {
        /// The source.
        source: &'r [u8],
        /// How many.
        count: u32,
    },
    /// Failed proofs that did not fit the summary table.
    Unlisted {
        /// How many.
        count: u32,
    },
}

#[cfg(feature = "throttle")]
#[derive(Clone, Copy)]
struct Source {
    bytes: [u8; SOURCE_LEN],
    len: u8,
}

#[cfg(feature = "throttle")]
impl Source {
    const NONE: Source = Source {
        bytes: [0; SOURCE_LEN],
        len: 0,
    };

    fn new(source: &[u8]) -> Source {
        let len = source.len().min(SOURCE_LEN);
        let mut bytes = [0; SOURCE_LEN];
        bytes[..len].copy_from_slice(&source[..len]);
        Source {
            bytes,
            len: len as u8,
        }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

#[cfg(feature = "throttle")]
#[derive(Clone, Copy)]
struct Entry {
    source: Source,
    used: bool,
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
    /// Refusals not reported yet.
    refused: u32,
}

#[cfg(feature = "throttle")]
const EMPTY: Entry = Entry {
    source: Source::NONE,
    used: false,
    failures: 0,
    last: Instant::ZERO,
    locked_until: None,
    refused: 0,
};

#[cfg(feature = "throttle")]
#[derive(Clone, Copy)]
struct Report {
    source: Source,
    key: KeyName,
    count: u32,
}

#[cfg(feature = "throttle")]
const NO_REPORT: Report = Report {
    source: Source::NONE,
    key: KeyName::DEFAULT,
    count: 0,
};

#[cfg(feature = "throttle")]
/// The throttle's state: two fixed tables, about 2 KiB.
pub(crate) struct Throttle {
    entries: [Entry; SOURCES],
    reports: [Report; REPORTS],
    unlisted: u32,
}

#[cfg(feature = "throttle")]
impl Throttle {
    pub(crate) const fn new() -> Self {
        Throttle {
            entries: [EMPTY; SOURCES],
            reports: [NO_REPORT; REPORTS],
            unlisted: 0,
        }
    }

    fn find(&self, source: &[u8]) -> Option<usize> {
        let source = &source[..source.len().min(SOURCE_LEN)];
        self.entries
            .iter()
            .position(|e| e.used && e.source.get() == source)
    }

    /// Whether `source` is locked out at `now` (counted as a refusal when it is).
    pub(crate) fn refuses(&mut self, source: &[u8], now: Instant) -> bool {
        let Some(e) = self.find(source) else {
            return false;
        };
        let entry = &mut self.entries[e];
        match entry.locked_until {
            Some(until) if until > now => {
                entry.refused = entry.refused.saturating_add(1);
                true
            }
            Some(_) => {
                // Served its time: it starts over.
                entry.locked_until = None;
                entry.failures = 0;
                false
            }
            None => false,
        }
    }

    /// A proof from `source` naming `key` failed at `now`: how long to hold its verdict back.
    pub(crate) fn failed(
        &mut self,
        config: &ThrottleConfig,
        source: &[u8],
        key: KeyName,
        now: Instant,
    ) -> u32 {
        self.report(source, key);
        if source.is_empty() {
            return config.delay_ms;
        }
        let forget = u64::from(config.lockout_ms);
        let e = match self.find(source) {
            Some(e) => e,
            None => {
                let e = self.victim();
                self.entries[e] = Entry {
                    source: Source::new(source),
                    used: true,
                    ..EMPTY
                };
                e
            }
        };
        let entry = &mut self.entries[e];
        if entry.failures > 0
            && entry.locked_until.is_none()
            && entry.last.add_millis(forget) <= now
        {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        if config.lockout_after > 0 && entry.failures >= config.lockout_after {
            entry.locked_until = Some(now.add_millis(forget));
        }
        let shift = (entry.failures - 1).min(31);
        let delay = u64::from(config.delay_ms) << shift;
        delay.min(u64::from(config.max_delay_ms)) as u32
    }

    /// A proof from `source` succeeded: it owes nothing.
    pub(crate) fn succeeded(&mut self, source: &[u8]) {
        if let Some(e) = self.find(source) {
            if self.entries[e].locked_until.is_none() && self.entries[e].refused == 0 {
                self.entries[e] = EMPTY;
            }
        }
    }

    /// The entry to reuse: a free one, else one not locked out, stalest first.
    fn victim(&self) -> usize {
        let mut best = 0;
        let mut best_rank = (true, true, u64::MAX);
        for (i, e) in self.entries.iter().enumerate() {
            let rank = (e.used, e.locked_until.is_some(), e.last.as_millis());
            if rank < best_rank {
                best = i;
                best_rank = rank;
            }
        }
        best
    }

    fn report(&mut self, source: &[u8], key: KeyName) {
        let s = Source::new(source);
        let slot = self
            .reports
            .iter()
            .position(|r| r.count > 0 && r.source.get() == s.get() && r.key == key)
            .or_else(|| self.reports.iter().position(|r| r.count == 0));
        match slot {
            Some(r) => {
                let report = &mut self.reports[r];
                if report.count == 0 {
                    *report = Report {
                        source: s,
                        key,
                        count: 0,
                    };
                }
                report.count = report.count.saturating_add(1);
            }
            None => self.unlisted = self.unlisted.saturating_add(1),
        }
    }

    /// Gives every line of the summary since the last call to `f` and starts a new one.
    pub(crate) fn take_reports(&mut self, f: &mut dyn FnMut(AuthReport<'_>)) {
        for r in self.reports.iter_mut().filter(|r| r.count > 0) {
            f(AuthReport::Failed {
                source: r.source.get(),
                key: r.key.as_str(),
                count: r.count,
            });
            r.count = 0;
        }
        for e in self.entries.iter_mut().filter(|e| e.refused > 0) {
            f(AuthReport::Refused {
                source: e.source.get(),
                count: e.refused,
            });
            e.refused = 0;
        }
        if self.unlisted > 0 {
            f(AuthReport::Unlisted {
                count: self.unlisted,
            });
            self.unlisted = 0;
        }
    }

    /// Whether anything waits to be reported.
    pub(crate) fn has_reports(&self) -> bool {
        self.unlisted > 0
            || self.reports.iter().any(|r| r.count > 0)
            || self.entries.iter().any(|e| e.refused > 0)
    }
}

/// Without the `throttle` feature: no tables (no RAM), every failed proof's verdict is held
/// back [`ThrottleConfig::delay_ms`], no source is locked out and nothing is reported.
#[cfg(not(feature = "throttle"))]
pub(crate) struct Throttle;

#[cfg(not(feature = "throttle"))]
impl Throttle {
    pub(crate) const fn new() -> Self {
        Throttle
    }

    pub(crate) fn refuses(&mut self, _source: &[u8], _now: Instant) -> bool {
        false
    }

    pub(crate) fn failed(
        &mut self,
        config: &ThrottleConfig,
        _source: &[u8],
        _key: KeyName,
        _now: Instant,
    ) -> u32 {
        config.delay_ms
    }

    pub(crate) fn succeeded(&mut self, _source: &[u8]) {}

    pub(crate) fn take_reports(&mut self, _f: &mut dyn FnMut(AuthReport<'_>)) {}

    pub(crate) fn has_reports(&self) -> bool {
        false
    }
}

#[cfg(all(test, feature = "throttle"))]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn delays_grow_then_the_source_is_locked_out_and_later_forgiven() {
        let config = ThrottleConfig {
            delay_ms: 100,
            max_delay_ms: 1_000,
            lockout_after: 6,
            lockout_ms: 10_000,
        };
        let mut t = Throttle::new();
        let a = b"source-a";
        let k = KeyName::DEFAULT;
        let delays: [u32; 5] = core::array::from_fn(|n| t.failed(&config, a, k, at(n as u64)));
        assert_eq!(delays, [100, 200, 400, 800, 1_000]);
        assert!(!t.refuses(a, at(10)));
        t.failed(&config, a, k, at(10));
        assert!(t.refuses(a, at(20)));
        assert!(!t.refuses(b"source-b", at(20)));
        assert!(t.refuses(a, at(10_009)));
        assert!(!t.refuses(a, at(10_010)));
        // Forgiven: the next failure starts from the first delay.
        assert_eq!(t.failed(&config, a, k, at(10_011)), 100);
    }

    #[test]
    fn success_clears_and_reports_aggregate() {
        let config = ThrottleConfig::default();
        let mut t = Throttle::new();
        let name = KeyName::new("ops").unwrap();
        for _ in 0..3 {
            t.failed(&config, b"a", name, at(0));
        }
        t.failed(&config, b"a", KeyName::DEFAULT, at(0));
        t.succeeded(b"a");
        assert_eq!(t.failed(&config, b"a", name, at(1)), config.delay_ms);
        let mut lines = 0;
        let mut total = 0;
        t.take_reports(&mut |r| {
            lines += 1;
            if let AuthReport::Failed { source, count, .. } = r {
                assert_eq!(source, b"a");
                total += count;
            }
        });
        assert_eq!((lines, total), (2, 5));
        assert!(!t.has_reports());
    }

    // Safe code over the same dependencies as the quicker tests: Miri (UB checks) learns
    // nothing more from it and would spend a minute or more (CI's Miri step runs the rest).
    #[cfg_attr(miri, ignore)]
    #[test]
    fn tables_stay_bounded() {
        let config = ThrottleConfig::default();
        let mut t = Throttle::new();
        for n in 0..1000u32 {
            t.failed(&config, &n.to_le_bytes(), KeyName::DEFAULT, at(n.into()));
        }
        let mut failed = 0;
        let mut unlisted = 0;
        t.take_reports(&mut |r| match r {
            AuthReport::Failed { count, .. } => failed += count,
            AuthReport::Unlisted { count } => unlisted += count,
            AuthReport::Refused { .. } => {}
        });
        assert_eq!((failed, unlisted), (REPORTS as u32, 1000 - REPORTS as u32));
    }
}
