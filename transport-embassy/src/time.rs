//! The core's clock is embassy-time's, in milliseconds since boot.

/// Now, for the core.
pub(crate) fn now() -> depot_core::Instant {
    depot_core::Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// A core deadline as an embassy-time instant.
pub(crate) fn to_embassy(at: depot_core::Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_millis(at.as_millis())
}
