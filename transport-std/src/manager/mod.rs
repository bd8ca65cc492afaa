//! The host manager: a builder, a single-threaded mio event loop driving
//! [`depot_core::Manager`], and a handle to stop it.

mod builder;
mod event_loop;
mod storage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use builder::{ManagerBuilder, QueueOptions};

use crate::Error;

/// The manager, in the manner of Python's `BaseManager`: start one with [`Manager::builder`].
#[derive(Debug)]
pub struct Manager;

impl Manager {
    /// A builder with the defaults: listen on 127.0.0.1:5000, no queues, no authkey yet.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::new()
    }
}

/// A manager running on a background thread (see [`ManagerBuilder::start`]).
///
/// Dropping the handle leaves the manager running (like a daemon thread); call
/// [`ManagerHandle::shutdown`] or [`ManagerHandle::join`] to end it or wait for it.
#[derive(Debug)]
pub struct ManagerHandle {
    address: SocketAddr,
    waker: Arc<mio::Waker>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<Result<(), Error>>,
}

impl ManagerHandle {
    /// The address the manager listens on (with the real port when bound to port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the manager gracefully: no new connections, blocked callers are answered
    /// `ShuttingDown`, every connection is flushed and closed; then waits for the thread.
    pub fn shutdown(self) -> Result<(), Error> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.waker.wake()?;
        self.join()
    }

    /// Waits until the manager stops (after a remote shutdown, say).
    pub fn join(self) -> Result<(), Error> {
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err(Error::Io(std::io::Error::other("manager thread panicked"))),
        }
    }
}
