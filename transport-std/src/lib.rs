//! # depot-std
//!
//! depot over std TCP: Python's `multiprocessing.managers.BaseManager` for Rust hosts. A
//! [`Manager`] publishes named FIFO queues at a TCP address guarded by an authkey; a
//! [`Client`] connects, proves it knows the key, and puts and gets through queue proxies
//! ([`Queue`] for serde types, [`RawQueue`] for bytes).
//!
//! All protocol logic (framing, the mutual HMAC handshake, per-frame MACs, queues, blocked
//! requests, every limit and timeout) lives in [`depot_core`]; this crate only moves bytes
//! between sockets and the core's state machines and keeps the clock:
//!
//! - the manager is one event-loop thread on `mio` serving every connection; queue storage is
//!   allocated at start-up from the queue options, and a connection's buffers only while it
//!   has bytes in flight (an idle connection holds none); the
//!   [`ManagerHandle`] that [`ManagerBuilder::start`] returns is `Send + Sync`: stop it from
//!   any thread ([`ManagerHandle::stop`]), wait for it ([`ManagerHandle::join`]), and read
//!   [`Metrics`] that the loop itself publishes (also as Prometheus text);
//! - the client is blocking; a [`Client`] is a cheap handle (`Clone + Send + Sync`) whose
//!   clones share one connection, with the requests of all threads pipelined on it and no
//!   thread spawned per client. Any mix of blocked puts, gets and joins shares that
//!   connection: producers whose puts block and the consumers that free their room may use
//!   the same `Client`. Its proxies ([`Queue`], [`RawQueue`]) own a clone of it, so they move
//!   into threads; [`Queue::iter`] is a consumer loop;
//! - with the `tokio` feature, `tokio::Client` is the async client: one background task
//!   drives the same core client, requests reach it over a channel, and a dropped `get` future
//!   loses no item.
//!
//! ```no_run
//! use depot_std::{Client, Manager};
//!
//! # fn main() -> Result<(), depot_std::Error> {
//! // manager: register 'task_queue'; listen on 127.0.0.1:5000 with authkey b"producer"
//! let manager = Manager::builder()
//!     .listen("127.0.0.1:5000")
//!     .authkey(b"producer")
//!     .queue("task_queue", 100)
//!     .start()?;
//!
//! // producer and consumer (usually other processes, on other machines)
//! let client = Client::connect(manager.address(), b"producer")?;
//! let tasks = client.queue::<u32>("task_queue")?;
//! tasks.put(&7)?;
//! assert_eq!(tasks.get()?, 7); // `get` blocks while the queue is empty
//!
//! manager.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one [`Error`] type whose `Display` is one line a user understands, such as
//! "authentication failed: wrong authkey for 127.0.0.1:5000" or
//! "queue 'x' does not exist". A failed request is [`Error::Request`] with its [`ErrorCode`]
//! and the queue's name; a lost connection is [`Error::Disconnected`]. Logs go through
//! `tracing`.
//!
//! Feature flags: `tokio` (off by default) adds the async client in `depot_std::tokio`.
#![warn(missing_docs)]

mod client;
mod error;
mod manager;
mod sync;
#[cfg(feature = "tokio")]
pub mod tokio;

pub mod busy;
pub mod text;

/// How long a client waiting for a reply, and the manager's event loop after a turn with
/// input, keep looking for input before they sleep (see [`ConnectOptions::busy_poll`] and
/// [`ManagerBuilder::busy_poll`]).
pub const DEFAULT_BUSY_POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// Whether this CPU has the instructions that make AES-256-GCM cheaper than
/// ChaCha20-Poly1305 (AES and carry-less multiply): clients then offer it and managers pick it
/// for clients that offer it (protocol version 4, PROTOCOL.md §5.1).
fn aes_gcm_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes");
    #[allow(unreachable_code)]
    false
}

pub use client::{
    BackendHealth, Barrier, Batch, BatchIter, Client, Condition, ConnectOptions, Dict, Event, Iter,
    Leased, List, Lock, LockGuard, Queue, QueueStat, RawLeased, RawQueue, Reconnect, Semaphore,
    Value,
};
/// How failed proofs are slowed down (see [`ManagerBuilder::auth_throttle`]).
pub use depot_core::throttle::ThrottleConfig;
/// Why a request failed: the `code` of [`Error::Request`].
pub use depot_core::wire::ErrorCode;
/// What [`Client::status`] returns.
pub use depot_core::wire::ManagerStatus;
pub use depot_core::wire::ObjectKind;
/// How a connection's frames are protected (see [`Client::sealing`]).
pub use depot_core::wire::Sealing;
pub use depot_core::Encryption;
pub use depot_core::QueueMode;
/// Keyrings of named keys and their rights (see [`ManagerBuilder::keyring`]).
pub use depot_core::{Grant, Key, KeyName, Keyring, Rights};
pub use error::Error;
/// Queues kept by an engine outside the manager (see [`ManagerBuilder::backend`]).
pub use manager::backend;
pub use manager::{
    Counters, Durability, Fsync, Manager, ManagerBuilder, ManagerHandle, Metrics, QueueOptions,
    DEFAULT_COMPACT_AFTER,
};
