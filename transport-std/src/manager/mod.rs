//! The host manager: a builder, a single-threaded mio event loop driving
//! [`depot_core::Manager`], and a handle to watch and stop it.

pub mod backend;
mod builder;
mod durable;
mod event_loop;
mod metrics;
mod storage;
mod tally;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

pub use builder::{ManagerBuilder, QueueOptions};
pub use durable::{Durability, Fsync, DEFAULT_COMPACT_AFTER};
pub use metrics::{Counters, Metrics};

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
/// `Send + Sync`: share it behind an `Arc` to stop the manager from one thread (a signal
/// handler, say) while another waits in [`ManagerHandle::join`]. Dropping the handle leaves
/// the manager running (like a daemon thread).
#[derive(Debug)]
pub struct ManagerHandle {
    address: SocketAddr,
    shared: Arc<Shared>,
    thread: Mutex<Joined>,
}

/// What the handle and the event loop share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Wakes the event loop out of its poll.
    pub(crate) waker: mio::Waker,
    /// Asks the loop to stop; it checks on every turn.
    pub(crate) stop: AtomicBool,
    /// Set when the loop's thread has ended, however it ended.
    pub(crate) finished: AtomicBool,
    pub(crate) board: metrics::Board,
    /// A keyring for the loop to take in (see [`ManagerHandle::set_keyring`]).
    pub(crate) keyring: Mutex<Option<depot_core::Keyring<'static>>>,
}

/// The manager thread, until someone has joined it.
#[derive(Debug)]
enum Joined {
    Running(JoinHandle<Result<(), Error>>),
    /// Joined: `None` if it ended well, else its error's text.
    Ended(Option<String>),
}

impl ManagerHandle {
    pub(crate) fn new(
        address: SocketAddr,
        shared: Arc<Shared>,
        thread: JoinHandle<Result<(), Error>>,
    ) -> Self {
        ManagerHandle {
            address,
            shared,
            thread: Mutex::new(Joined::Running(thread)),
        }
    }

    /// The address the manager listens on (with the real port when bound to port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Asks the manager to stop gracefully and returns at once: no new connections, blocked
    /// callers are answered `ShuttingDown`, every connection is flushed and closed. Callable
    /// from any thread, any number of times; [`ManagerHandle::join`] waits for the end.
    pub fn stop(&self) -> Result<(), Error> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if self.is_finished() {
            return Ok(());
        }
        self.shared.waker.wake()?;
        Ok(())
    }

    /// [`ManagerHandle::stop`], then [`ManagerHandle::join`].
    pub fn shutdown(&self) -> Result<(), Error> {
        self.stop()?;
        self.join()
    }

    /// Whether the manager has stopped (its thread has ended).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// Waits until the manager stops (after [`ManagerHandle::stop`] or a remote shutdown).
    ///
    /// The first call returns how the manager ended; later calls (and calls that waited
    /// alongside it) return the same outcome, an error as [`Error::Io`] with its text.
    pub fn join(&self) -> Result<(), Error> {
        let mut joined = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = match std::mem::replace(&mut *joined, Joined::Ended(None)) {
            Joined::Running(thread) => match thread.join() {
                Ok(result) => result,
                Err(_) => Err(Error::Io(std::io::Error::other("manager thread panicked"))),
            },
            Joined::Ended(None) => Ok(()),
            Joined::Ended(Some(text)) => Err(Error::Io(std::io::Error::other(text))),
        };
        *joined = Joined::Ended(outcome.as_ref().err().map(ToString::to_string));
        outcome
    }

    /// Replaces the manager's keyring (a reload) and returns at once; the manager takes it
    /// on its next turn. Connections of keys that are still there (same name and secret)
    /// stay, with their new rights; those of removed or changed keys are closed. A keyring
    /// that does not check (see [`depot_core::Keyring::check`]) is refused and changes
    /// nothing.
    pub fn set_keyring(&self, keyring: depot_core::Keyring<'static>) -> Result<(), Error> {
        keyring
            .check()
            .map_err(|e| Error::Config(format!("keyring: {e}")))?;
        *self
            .shared
            .keyring
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(keyring);
        if !self.is_finished() {
            self.shared.waker.wake()?;
        }
        Ok(())
    }

    /// A snapshot of the manager's state and counters, taken by its event loop on its next
    /// turn (so it never races the loop); after the manager stopped, the final snapshot.
    pub fn metrics(&self) -> Result<Metrics, Error> {
        self.shared.board.read(&self.shared.waker)
    }
}
