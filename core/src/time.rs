//! Time as the transport tells it: the core has no clock.

/// A point in time, in milliseconds since an epoch the transport chooses (boot, process start).
///
/// Only differences matter, so the epoch must simply stay fixed for the life of a state machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This instant plus `ms` milliseconds, saturating far in the future.
    pub const fn add_millis(self, ms: u64) -> Self {
        Instant(self.0.saturating_add(ms))
    }

    /// Milliseconds from `self` until `later` (zero if `later` is not later).
    pub const fn millis_until(self, later: Instant) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

/// An optional deadline in 8 bytes aligned to 4: `Option<Instant>` takes 16 bytes aligned to
/// 8, which in the slot arrays firmware keeps (waiters, request slots) costs 8 to 12 bytes a
/// slot. A deadline of `u64::MAX` ms counts as none (it is never reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline([u32; 2]);

impl Deadline {
    pub(crate) const NONE: Deadline = Deadline([u32::MAX; 2]);

    pub(crate) fn new(at: Option<Instant>) -> Self {
        at.map_or(Self::NONE, |d| Deadline([d.0 as u32, (d.0 >> 32) as u32]))
    }

    pub(crate) fn get(self) -> Option<Instant> {
        (self != Self::NONE).then_some(Instant(self.millis()))
    }

    /// The deadline in milliseconds, `u64::MAX` for none.
    pub(crate) fn millis(self) -> u64 {
        let [low, high] = self.0;
        u64::from(high) << 32 | u64::from(low)
    }
}
