//! Acknowledged gets: items taken under a lease, acked once processed (at-least-once).
//!
//! A leased item stays the manager's: other consumers do not see it while the lease lasts. An
//! [`ack`](RawLeased::ack) removes it; a [`nack`](RawLeased::nack), the lease running out, or
//! this connection closing (the process died) puts it back at the head of its queue, counted as
//! one more delivery. Dropping a lease without acking it nacks it.

use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use depot_core::value;
use depot_core::wire::{ErrorCode, Op, Wait};

use super::conn::Outcome;
use super::proxy::{wait_for, Queue, RawQueue, BATCH_BYTES};
use crate::Error;

/// Items a leased get took, as bytes, with their lease. Dropping it without
/// [`ack`](RawLeased::ack) nacks it (the items go back at the head of the queue).
#[derive(Debug)]
pub struct RawLeased {
    queue: RawQueue,
    lease: u64,
    deliveries: Vec<u8>,
    items: Vec<Vec<u8>>,
    /// Acked or nacked already.
    settled: bool,
}

impl RawLeased {
    /// The items, oldest first (one for [`RawQueue::get_leased`]).
    pub fn items(&self) -> &[Vec<u8>] {
        &self.items
    }

    /// For each item, how many times it has been delivered under a lease, this time included:
    /// 1 the first time, more for an item that came back (at most 255).
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

    /// The items were processed: the manager removes them. Fails with `NoSuchLease` if the
    /// lease had run out (the items were put back, and may be delivered again).
    pub fn ack(mut self) -> Result<(), Error> {
        self.settle(true)
    }

    /// [`RawLeased::ack`] without waiting for the manager's answer: the ack is written out and
    /// the call returns (the manager handles this connection's requests in order, so a later
    /// get never sees these items again unless the lease had run out, which is then not
    /// reported). Saves a round trip per lease.
    ///
    /// On Linux the kernel may hold the ack back to send it with this connection's next
    /// request (`MSG_MORE`), so a consumer's ack and its next `get` reach the manager in one
    /// segment and cost it one read; an idle connection's ack leaves on its own within about
    /// 200 ms, and at once when the connection closes. Keep leases longer than that.
    pub fn ack_nowait(mut self) -> Result<(), Error> {
        self.settled = true;
        let lease = self.lease;
        self.queue.client.conn()?.send_unanswered(Op::Ack { lease })
    }

    /// The items were not processed: the manager puts them back at the head of the queue now.
    pub fn nack(mut self) -> Result<(), Error> {
        self.settle(false)
    }

    fn settle(&mut self, ack: bool) -> Result<(), Error> {
        self.settled = true;
        let lease = self.lease;
        let op = if ack {
            Op::Ack { lease }
        } else {
            Op::Nack { lease }
        };
        match self.queue.client.conn()?.call(op)? {
            Outcome::Done => Ok(()),
            other => Err(self.queue.client.unexpected(other, &self.queue.name)),
        }
    }
}

impl Drop for RawLeased {
    fn drop(&mut self) {
        if !self.settled {
            // Best effort: if the connection is gone the manager has put the items back already.
            let _ = self.settle(false);
        }
    }
}

impl RawQueue {
    /// Takes the oldest item under a lease of `lease`, waiting while the queue is empty. Ack
    /// it once processed; see the module docs of leases in [`RawLeased`].
    pub fn get_leased(&self, lease: Duration) -> Result<RawLeased, Error> {
        self.leased(1, lease, Wait::Forever)
    }

    /// [`RawQueue::get_leased`], waiting at most `timeout` for an item.
    pub fn get_leased_timeout(
        &self,
        lease: Duration,
        timeout: Duration,
    ) -> Result<RawLeased, Error> {
        self.leased(1, lease, wait_for(timeout))
    }

    /// Takes up to `n` items (at least one, waiting for it) under one lease of `lease`.
    pub fn get_many_leased(&self, n: usize, lease: Duration) -> Result<RawLeased, Error> {
        self.leased(n, lease, Wait::Forever)
    }

    fn leased(&self, n: usize, lease: Duration, wait: Wait) -> Result<RawLeased, Error> {
        if self.py.is_some() {
            // Python's manager has no leases.
            return Err(super::code_error(ErrorCode::NotAllowed, &self.name));
        }
        let lease_ms = u32::try_from(lease.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
        let (handle, max_items) = (self.handle, u32::try_from(n.max(1)).unwrap_or(u32::MAX));
        // Sent again on a new connection: the lost one's leases went back to their queues.
        let outcome = self.blocking(wait, |wait, _| Op::GetLeased {
            handle,
            max_items,
            max_bytes: BATCH_BYTES as u32,
            lease_ms,
            wait,
        })?;
        match outcome {
            Outcome::Leased {
                lease,
                deliveries,
                items,
            } => Ok(RawLeased {
                queue: self.clone(),
                lease,
                deliveries,
                items,
                settled: false,
            }),
            other => Err(self.client.unexpected(other, &self.name)),
        }
    }
}

/// An item a leased get took, decoded, with its lease: `Deref`s to the item. Dropping it
/// without [`ack`](Leased::ack) nacks it (the item goes back at the head of the queue).
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

    /// The item was processed: the manager removes it (see [`RawLeased::ack`]).
    pub fn ack(self) -> Result<(), Error> {
        self.raw.ack()
    }

    /// [`Leased::ack`] without waiting for the manager's answer (see [`RawLeased::ack_nowait`]).
    pub fn ack_nowait(self) -> Result<(), Error> {
        self.raw.ack_nowait()
    }

    /// The item was not processed: it goes back at the head of the queue now.
    pub fn nack(self) -> Result<(), Error> {
        self.raw.nack()
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
    /// is empty: other consumers do not see it until the lease ends. [`Leased::ack`] it once
    /// processed; a nack, the lease running out, or this connection closing puts it back at
    /// the head of the queue with its delivery count raised, and so does dropping the
    /// [`Leased`] without acking it. An item that is not a `T` is nacked and reported as
    /// `Err(Error::Decode)` (a dead-letter queue on the manager stops it coming back for ever).
    ///
    /// ```no_run
    /// # fn run(jobs: depot_std::Queue<u32>) -> Result<(), depot_std::Error> {
    /// use std::time::Duration;
    /// let job = jobs.get_leased(Duration::from_secs(30))?;
    /// println!("job {} (delivery {})", *job, job.delivery());
    /// job.ack()?;
    /// # Ok(()) }
    /// ```
    pub fn get_leased(&self, lease: Duration) -> Result<Leased<T>, Error> {
        Self::typed(self.raw().get_leased(lease)?)
    }

    /// [`Queue::get_leased`], waiting at most `timeout` for an item.
    pub fn get_leased_timeout(
        &self,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Leased<T>, Error> {
        Self::typed(self.raw().get_leased_timeout(lease, timeout)?)
    }

    fn typed(raw: RawLeased) -> Result<Leased<T>, Error> {
        let bytes = raw.items.first().map_or(&[][..], Vec::as_slice);
        // Dropping `raw` on an error nacks the item.
        let item = value::from_slice(bytes).map_err(|error| Error::Decode {
            error: Box::new(error),
            item: bytes.to_vec(),
        })?;
        Ok(Leased { item, raw })
    }
}
