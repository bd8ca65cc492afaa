//! # depot-core
//!
//! The protocol core of depot: named shared queues between processes on different machines,
//! in the manner of Python's `multiprocessing.managers.BaseManager`, for hosts and firmware.
//!
//! `#![no_std]`, no allocation, no I/O. Callers hand in every buffer, the current time and
//! random bytes; the state machines give back bytes to send, wake-up times and events. The
//! transports (`depot-std` over std TCP, `depot-embassy` over embassy-net) only move bytes.
//!
//! ## Layers
//! - [`wire`]: frames, messages and limits, as PROTOCOL.md at the repository root specifies.
//! - [`auth`]: handshake proofs, session keys and the per-frame MAC.
//! - [`keyring`]: named keys and their rights per object; [`throttle`]: the key-guessing
//!   throttle.
//! - [`seal`]: how frames are protected after the handshake: MACed, or sealed with
//!   ChaCha20-Poly1305 (feature `aead`).
//! - [`queue`]: a bounded FIFO of byte items in caller storage.
//! - [`lease`]: items taken under a lease until acknowledged (at-least-once gets).
//! - [`manager`]: the manager state machine (registry, queues, blocked requests, many
//!   connections).
//! - [`client`]: the client state machine (one connection, pipelined requests).
//! - [`journal`]: every change of queue contents, reported for a transport to keep durable.
//! - `python` (feature `python`): Python's `BaseManager` protocol for unchanged Python clients.
//! - [`session`]: what the manager remembers of a client across connections (exactly-once
//!   puts); `reconnect` (feature `sessions`): what a client does to come back and resume its
//!   session.
//! - [`value`]: the value model, the one self-describing encoding of items (CBOR).
//!
//! ## Features
//! - `defmt`: derive `defmt::Format` on public types and log through defmt.
//! - `log`: log through the `log` crate. Not together with `defmt`.
//! - `alloc`: storage the state machines own (`Vec`s, buffers that grow on demand), so they
//!   can be `'static` and moved; without it every buffer is lent by the caller.
//! - `python`: serve unchanged Python `multiprocessing.managers.BaseManager` clients.
//! - `aead` (default): seal frames with ChaCha20-Poly1305 when the peer agrees; without it
//!   frames are MACed only (saves firmware flash).
//! - `aead-ring`: `aead` through ring's ChaCha20-Poly1305 (assembly; the same frames for
//!   about a third of the CPU). Hosts only: ring builds C and assembly (depot-std has it).
//! - `messages`: keep the text of value type-mismatch errors (hosts; costs firmware flash).
//! - `texts` (default): errors printed in words ("queue is full"); without it they print
//!   their wire number (`error code 1`, `close reason 0`; see [`Error`]), and firmware that
//!   prints its errors saves about 1.3 KiB of flash. `python` needs it.
//! - `keyring`, `throttle`, `leases`, `objects`, `sessions`, `create` (default; hosts keep
//!   them, firmware turns on only what it uses): named keys with rights, the per-source
//!   key-guessing throttle, acknowledged gets, objects beside queues with registered calls,
//!   sessions with exactly-once puts (and `reconnect` for clients), queues and objects clients
//!   create at run time (`ManagerConfig::allow_create`). A manager built without one answers
//!   its requests with a typed error (PROTOCOL.md §17).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[macro_use]
mod fmt;

pub mod auth;
mod buf;
pub mod client;
mod codec;
pub mod error;
pub mod journal;
pub mod keyring;
pub mod lease;
pub mod manager;
mod objects;
pub mod park;
#[cfg(feature = "python")]
pub mod python;
pub mod queue;
#[cfg(feature = "sessions")]
pub mod reconnect;
mod registry;
pub mod seal;
pub mod session;
pub mod storage;
pub mod throttle;
pub mod time;
mod timers;
pub mod value;
mod waiters;
pub mod wire;

/// Proptest's settings for the unit tests: `cases` cases, or a couple under Miri, which runs
/// each some thousand times slower and is isolated from the file system where failures are
/// kept (a couple of cases show the code is sound).
#[cfg(test)]
pub(crate) fn proptest_cases(cases: u32) -> proptest::test_runner::Config {
    let config = proptest::test_runner::Config::default();
    if cfg!(miri) {
        proptest::test_runner::Config {
            cases: 2,
            failure_persistence: None,
            ..config
        }
    } else {
        proptest::test_runner::Config { cases, ..config }
    }
}

pub use client::{Client, Event, RequestSlot};
pub use error::Error;
pub use journal::{Journal, JournalSlot};
pub use keyring::{Grant, Key, KeyName, Keyring, Rights};
pub use lease::{LeaseSlot, LeaseStore};
pub use manager::{AcceptError, ConnId, Connection, Manager, ManagerConfig, Resources};
pub use objects::ObjectSpecError;
pub use park::ParkStore;
pub use registry::{DeclareError, ObjectSlot};
pub use seal::Encryption;
pub use session::SessionSlot;
pub use storage::Managed;
pub use time::Instant;
pub use waiters::Waiter;
pub use wire::{Action, Handle, Items, ObjectInfo, ObjectKind, QueueMode, QueueSpec, Wait};
