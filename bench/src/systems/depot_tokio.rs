//! depot's async client (`depot::tokio::Client`) against the same manager process as
//! [`super::depot`]: producers and consumers are tasks on a 2-thread tokio runtime, one
//! `Client` (connection) each, so (c) and (e) compare the async client with the blocking one;
//! or (`depot-tokio-shared`) every task on clones of one `Client`, as async code shares one.

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use depot::tokio::Client;

use super::depot::{ManagerProcess, Spec, AUTHKEY, BATCH, QUEUE};
use crate::system::{Measurement, Outcome, System, Transfer};
use crate::threaded;

/// The async client.
pub struct DepotTokio {
    /// Every task on one connection (clones of one `Client`) instead of one each.
    pub shared: bool,
}

impl System for DepotTokio {
    fn name(&self) -> &'static str {
        if self.shared {
            "depot-tokio-shared"
        } else {
            "depot-tokio"
        }
    }

    fn clients(&self) -> &'static str {
        if self.shared {
            "manager: its own process, as for depot; clients: tasks on a 2-thread tokio runtime, all on clones of one depot::tokio::Client (one connection); frames sealed"
        } else {
            "manager: its own process, as for depot; clients: tasks on a 2-thread tokio runtime, one depot::tokio::Client (connection) each; frames sealed"
        }
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined && (shape.producers != 1 || shape.consumers != 1) {
            return Ok(None);
        }
        let manager = ManagerProcess::start(&Spec::transfer(shape))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let m = runtime.block_on(transfer(&manager.addr, shape, self.shared))?;
        let note = if shape.pipelined {
            format!("async put_many / get_batch of {BATCH} items")
        } else {
            "async RawQueue put / get".to_owned()
        };
        Ok(Some(m.with_note(note)))
    }
}

/// Producers put their share then their sentinels (empty items), consumers get until a
/// sentinel; pipelined, one producer `put_many`s and one consumer `get_batch`es a known count.
/// Every client connects first; items per second from then to the last item received.
/// `shared`: every task on one connection.
async fn transfer(addr: &str, shape: &Transfer, shared: bool) -> Result<Measurement> {
    let item = threaded::item(shape.item_size);
    let one = if shared {
        Some(Client::connect(addr, AUTHKEY).await?)
    } else {
        None
    };
    let mut queues = Vec::new();
    for _ in 0..shape.producers + shape.consumers {
        let client = match &one {
            Some(client) => client.clone(),
            None => Client::connect(addr, AUTHKEY).await?,
        };
        queues.push(client.raw_queue(QUEUE).await?);
    }
    let consumers = queues.split_off(shape.producers);
    let producers = queues;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (index, queue) in producers.into_iter().enumerate() {
        let (item, shape) = (item.clone(), shape.clone());
        tasks.push(tokio::spawn(async move {
            let items = shape.items_for_producer(index);
            if shape.pipelined {
                let refs: Vec<&[u8]> = vec![item.as_slice(); BATCH.min(items)];
                let mut left = items;
                while left > 0 {
                    let n = left.min(BATCH);
                    queue.put_many(&refs[..n]).await?;
                    left -= n;
                }
                return Ok::<_, anyhow::Error>(None);
            }
            for _ in 0..items {
                queue.put(&item).await?;
            }
            for _ in 0..shape.sentinels_for_producer(index) {
                queue.put(&[]).await?;
            }
            Ok(None)
        }));
    }
    for queue in consumers {
        let shape = shape.clone();
        tasks.push(tokio::spawn(async move {
            let mut received = 0;
            if shape.pipelined {
                while received < shape.items {
                    let got = queue.get_batch((shape.items - received).min(BATCH)).await?;
                    if got.iter().any(|g| g.len() != shape.item_size.max(1)) {
                        bail!("got an item of the wrong size");
                    }
                    received += got.len();
                }
            } else {
                while !queue.get().await?.is_empty() {
                    received += 1;
                }
            }
            Ok(Some((received, Instant::now())))
        }));
    }
    let (mut received, mut last) = (0, start);
    for task in tasks {
        let done = task.await.map_err(|_| anyhow!("a task panicked"))??;
        if let Some((n, at)) = done {
            received += n;
            last = last.max(at);
        }
    }
    if received != shape.items {
        bail!(
            "consumers received {received} items, producers put {}",
            shape.items
        );
    }
    Ok(Measurement::rate(received, last - start))
}
