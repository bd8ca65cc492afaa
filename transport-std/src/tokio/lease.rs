//! Acknowledged gets for async code: the same leases as the blocking client's
//! ([`crate::RawLeased`]): other consumers do not see a leased item until it is acked, and a
//! nack, the lease running out, or the connection closing puts it back at the head of its
//! queue. Dropping a lease without acking it nacks it (the nack is sent by the connection task).

use std::ops::Deref;
use std::time::Duration;

use depot_core::value;
use depot_core::wire::{ErrorCode, Wait};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{nack, unexpected, Client, Command, Queue, RawQueue, Request};
use crate::client::conn::Outcome;
use crate::client::proxy::wait_for;
use crate::Error;

/// Items a leased get took, as bytes, with their lease. Dropping it without
/// [`ack`](RawLeased::ack) nacks it.
#[derive(Debug)]
pub struct RawLeased {
    client: Client,
    name: String,
    lease: u64,
    deliveries: Vec<u8>,
    items: Vec<Vec<u8>>,
    settled: bool,
}

impl RawLeased {
    /// The items, oldest first.
    pub fn items(&self) -> &[Vec<u8>] {
        &self.items
    }

    /// For each item, its deliveries under a lease, this one included (1 the first time).
    pub fn deliveries(&self) -> &[u8] {
        &self.deliveries
    }

    /// The lease id, unique within the manager's run (across restarts on a data directory).
    pub fn lease_id(&self) -> u64 {
        self.lease
    }

    /// Moves the items out (the lease stays, to ack or nack).
    pub fn take_items(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.items)
    }

    /// The items were processed: the manager removes them. `NoSuchLease` if the lease had run
    /// out (the items were put back and may be delivered again).
    pub async fn ack(mut self) -> Result<(), Error> {
        self.settled = true;
        self.settle(Request::Ack(self.lease)).await
    }

    /// [`RawLeased::ack`] without waiting for the manager's answer (see
    /// [`crate::RawLeased::ack_nowait`]).
    pub fn ack_nowait(mut self) -> Result<(), Error> {
        self.settled = true;
        let sent = self.client.shared.commands.send(Command::Call {
            token: u64::MAX,
            request: Request::Ack(self.lease),
            reply: None,
        });
        sent.map_err(|_| Error::Disconnected {
            reason: format!("connection to {} lost", self.client.shared.link().peer),
        })
    }

    /// The items were not processed: the manager puts them back at the head of the queue now.
    pub async fn nack(mut self) -> Result<(), Error> {
        self.settled = true;
        self.settle(Request::Nack(self.lease)).await
    }

    async fn settle(&self, request: Request) -> Result<(), Error> {
        match self.client.exchange(request).await? {
            Outcome::Done => Ok(()),
            other => Err(unexpected(other, &self.name)),
        }
    }
}

impl Drop for RawLeased {
    fn drop(&mut self) {
        if !self.settled {
            // If the connection is gone, the manager has put the items back already.
            let _ = self.client.shared.commands.send(nack(self.lease));
        }
    }
}

impl RawQueue {
    /// Takes the oldest item under a lease of `lease`, waiting while the queue is empty; ack it
    /// once processed (see [`RawLeased`]). Cancel-safe: a dropped call's items are nacked.
    pub async fn get_leased(&self, lease: Duration) -> Result<RawLeased, Error> {
        self.leased(1, lease, Wait::Forever).await
    }

    /// [`RawQueue::get_leased`], waiting at most `timeout` for an item.
    pub async fn get_leased_timeout(
        &self,
        lease: Duration,
        timeout: Duration,
    ) -> Result<RawLeased, Error> {
        self.leased(1, lease, wait_for(timeout)).await
    }

    /// Takes up to `n` items (at least one, waiting for it) under one lease of `lease`.
    pub async fn get_many_leased(&self, n: usize, lease: Duration) -> Result<RawLeased, Error> {
        self.leased(n, lease, Wait::Forever).await
    }

    async fn leased(&self, n: usize, lease: Duration, wait: Wait) -> Result<RawLeased, Error> {
        let lease_ms = u32::try_from(lease.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let max_items = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
        let handle = self.handle;
        let outcome = self
            .client
            .call_blocking(wait, |wait| {
                Request::GetLeased(handle, max_items, lease_ms, wait)
            })
            .await?;
        match outcome {
            Outcome::Leased {
                lease,
                deliveries,
                items,
            } => Ok(RawLeased {
                client: self.client.clone(),
                name: self.name.clone(),
                lease,
                deliveries,
                items,
                settled: false,
            }),
            Outcome::Error(ErrorCode::TooLarge) => Err(self.code_error(ErrorCode::TooLarge, 0)),
            other => Err(unexpected(other, &self.name)),
        }
    }
}

/// An item a leased get took, decoded, with its lease: `Deref`s to the item. Dropping it
/// without [`ack`](Leased::ack) nacks it.
#[derive(Debug)]
pub struct Leased<T> {
    item: T,
    raw: RawLeased,
}

impl<T> Leased<T> {
    /// How many times the item has been delivered under a lease, this time included.
    pub fn delivery(&self) -> u8 {
        self.raw.deliveries.first().copied().unwrap_or(1)
    }

    /// The lease id, unique within the manager's run (across restarts on a data directory).
    pub fn lease_id(&self) -> u64 {
        self.raw.lease
    }

    /// The item was processed: the manager removes it.
    pub async fn ack(self) -> Result<(), Error> {
        self.raw.ack().await
    }

    /// [`Leased::ack`] without waiting for the manager's answer.
    pub fn ack_nowait(self) -> Result<(), Error> {
        self.raw.ack_nowait()
    }

    /// The item was not processed: it goes back at the head of the queue now.
    pub async fn nack(self) -> Result<(), Error> {
        self.raw.nack().await
    }
}

impl<T> Deref for Leased<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.item
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Takes the oldest item under a lease of `lease` (at-least-once), waiting while the queue
    /// is empty; see [`crate::Queue::get_leased`]. An item that is not a `T` is nacked and
    /// reported as `Err(Error::Decode)`.
    pub async fn get_leased(&self, lease: Duration) -> Result<Leased<T>, Error> {
        typed(self.raw().get_leased(lease).await?)
    }

    /// [`Queue::get_leased`], waiting at most `timeout` for an item.
    pub async fn get_leased_timeout(
        &self,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Leased<T>, Error> {
        typed(self.raw().get_leased_timeout(lease, timeout).await?)
    }
}

fn typed<T: DeserializeOwned>(raw: RawLeased) -> Result<Leased<T>, Error> {
    let bytes = raw.items.first().map_or(&[][..], Vec::as_slice);
    // Dropping `raw` on an error nacks the item.
    let item = value::from_slice(bytes).map_err(|error| Error::Decode {
        error: Box::new(error),
        item: bytes.to_vec(),
    })?;
    Ok(Leased { item, raw })
}
