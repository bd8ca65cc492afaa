//! # depot
//!
//! Named shared queues between processes on different machines, in the manner of Python's
//! `multiprocessing.managers.BaseManager`. This facade re-exports the std transport
//! ([`depot_std`]: manager, client, typed proxies) and the protocol core as [`core`].
//!
//! Feature flags: `tokio` (off by default) adds the async client, `depot::tokio::Client`.
//!
//! The README follows; its Rust example is compiled as a doctest.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use depot_core as core;
pub use depot_std::*;
