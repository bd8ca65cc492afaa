//! depot with acknowledged gets: the same manager process and producers as [`super::depot`];
//! consumers take each item under a lease (`get_leased`) and ack it, so (c) and (d) show what
//! at-least-once delivery costs next to depot's plain (at-most-once) gets. Two systems: the ack
//! written out without waiting for its answer (`ack_nowait`, one round trip per item, as
//! RabbitMQ's and NATS JetStream's default acks) and the ack confirmed (`ack`, two).

use std::time::Duration;

use anyhow::{Context, Result};
use depot::{Client, RawQueue};

use super::depot::{ManagerProcess, Spec, AUTHKEY, QUEUE};
use crate::system::{Outcome, System, Transfer};
use crate::threaded::{self, QueueClient};

/// The lease each get takes: far longer than any run, so no item comes back.
const LEASE: Duration = Duration::from_secs(600);

/// depot, consumers acking every item.
pub struct DepotAcked {
    /// Wait for each ack's answer (`ack`) instead of writing it out (`ack_nowait`).
    pub confirmed: bool,
}

impl System for DepotAcked {
    fn name(&self) -> &'static str {
        if self.confirmed {
            "depot-acked-sync"
        } else {
            "depot-acked"
        }
    }

    fn clients(&self) -> &'static str {
        if self.confirmed {
            "as depot; consumers get_leased + ack (waits for the answer: 2 round trips per item)"
        } else {
            "as depot; consumers get_leased + ack_nowait (the ack is not waited for)"
        }
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined {
            return Ok(None);
        }
        let manager = ManagerProcess::start(&Spec::transfer(shape))?;
        let confirmed = self.confirmed;
        let m = threaded::transfer(shape, || AckingQueue::connect(&manager.addr, confirmed))?;
        let note = if confirmed {
            "RawQueue put / get_leased + ack"
        } else {
            "RawQueue put / get_leased + ack_nowait"
        };
        Ok(Some(m.with_note(note)))
    }
}

struct AckingQueue {
    queue: RawQueue,
    confirmed: bool,
}

impl AckingQueue {
    fn connect(addr: &str, confirmed: bool) -> Result<Self> {
        let client =
            Client::connect(addr, AUTHKEY).with_context(|| format!("connecting to {addr}"))?;
        Ok(AckingQueue {
            queue: client.raw_queue(QUEUE)?,
            confirmed,
        })
    }
}

impl QueueClient for AckingQueue {
    fn put(&mut self, item: &[u8]) -> Result<()> {
        Ok(self.queue.put(item)?)
    }

    fn get(&mut self) -> Result<Vec<u8>> {
        let mut leased = self.queue.get_leased(LEASE)?;
        let item = leased.take_items().pop().unwrap_or_default();
        if self.confirmed {
            leased.ack()?;
        } else {
            leased.ack_nowait()?;
        }
        Ok(item)
    }
}
