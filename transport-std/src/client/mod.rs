//! The blocking client: one TCP connection per [`Client`], shared by any number of threads.

mod conn;
mod proxy;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use proxy::{Queue, RawQueue};

use crate::Error;

/// One queue's line in [`Client::stat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    /// The queue's name.
    pub name: String,
    /// Items queued.
    pub len: u32,
    /// The most items it holds.
    pub capacity: u32,
    /// The largest item, in bytes.
    pub max_item: u32,
    /// Bytes of item data queued.
    pub bytes: u32,
    /// Requests blocked in `get`.
    pub getters: u32,
    /// Requests blocked in `put`.
    pub putters: u32,
    /// Requests blocked in `join`.
    pub joiners: u32,
    /// Items put and not yet marked `task_done`.
    pub unfinished: u32,
    /// Items ever put.
    pub total_put: u64,
    /// Items ever got.
    pub total_got: u64,
}

/// A connection to a manager. `Send + Sync`: share it by reference or `Arc`.
#[derive(Debug)]
pub struct Client {
    conn: conn::Conn,
}

impl Client {
    /// Connects and authenticates, within 10 seconds.
    pub fn connect(addr: impl ToSocketAddrs, authkey: impl AsRef<[u8]>) -> Result<Client, Error> {
        Self::connect_timeout(addr, authkey, Duration::from_secs(10))
    }

    /// Connects and authenticates within `timeout`.
    pub fn connect_timeout(
        addr: impl ToSocketAddrs,
        authkey: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Client, Error> {
        let _ = (addr.to_socket_addrs(), authkey.as_ref(), timeout);
        todo!()
    }

    /// A typed proxy for the queue `name`; items travel as postcard.
    pub fn queue<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Queue<'_, T>, Error> {
        self.raw_queue(name).map(Queue::new)
    }

    /// A raw-bytes proxy for the queue `name`.
    pub fn raw_queue(&self, name: &str) -> Result<RawQueue<'_>, Error> {
        let _ = name;
        todo!()
    }

    /// Creates the queue `name` (or opens it if it exists), when the manager allows it.
    pub fn create_queue(
        &self,
        name: &str,
        capacity: u32,
        max_item: u32,
    ) -> Result<RawQueue<'_>, Error> {
        let _ = (name, capacity, max_item);
        todo!()
    }

    /// Every queue with its statistics.
    pub fn stat(&self) -> Result<Vec<QueueStat>, Error> {
        todo!()
    }

    /// The manager's status: connections, objects, blocked requests.
    pub fn status(&self) -> Result<depot_core::wire::ManagerStatus, Error> {
        todo!()
    }

    /// Asks the manager to stop; `Err(NotAllowed)` when it refuses.
    pub fn shutdown_manager(&self) -> Result<(), Error> {
        todo!()
    }

    /// The manager's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.peer_addr()
    }
}
