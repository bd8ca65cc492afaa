//! Sizing and owning every buffer the core manager borrows.
