//! Workload drivers for systems whose clients are threads of this process, each with its own
//! connection (raw TCP, Redis, and depot's blocking client). A system implements [`QueueClient`]
//! and hands a connect function to these drivers.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::os::CpuMeter;
use crate::system::{Measurement, Transfer};

/// One connection to a queue server, one request in flight.
pub trait QueueClient {
    /// Append `item` to the benchmark queue.
    fn put(&mut self, item: &[u8]) -> Result<()>;
    /// Take the oldest item, waiting for one as long as it takes.
    fn get(&mut self) -> Result<Vec<u8>>;
}

/// The bytes of a benchmark item (never empty: the empty item is the sentinel).
pub fn item(size: usize) -> Vec<u8> {
    vec![b'x'; size.max(1)]
}

/// (a) time `samples` calls of `connect`, one after another.
pub fn time_connects(
    samples: usize,
    mut connect: impl FnMut() -> Result<()>,
) -> Result<Measurement> {
    let mut times = Vec::with_capacity(samples);
    let cpu = CpuMeter::start();
    for _ in 0..samples {
        let start = Instant::now();
        connect()?;
        times.push(start.elapsed());
    }
    Ok(Measurement::latency(&times).with_cpu(cpu.per_op(samples)))
}

/// (b) `pairs` put-then-get pairs on one client, after one warm-up pair.
pub fn put_get_pairs(
    client: &mut impl QueueClient,
    pairs: usize,
    item_size: usize,
) -> Result<Measurement> {
    let item = item(item_size);
    let round = |client: &mut dyn QueueClient| -> Result<()> {
        client.put(&item)?;
        let got = client.get()?;
        if got.len() != item.len() {
            bail!(
                "got a {}-byte item back, put {} bytes",
                got.len(),
                item.len()
            );
        }
        Ok(())
    };
    round(client)?;
    let cpu = CpuMeter::start();
    let start = Instant::now();
    for _ in 0..pairs {
        round(client)?;
    }
    let elapsed = start.elapsed();
    Ok(Measurement::rate(pairs, elapsed).with_cpu(cpu.per_op(pairs)))
}

/// (h) `producers` threads, each connected with `connect` before the barrier, put `items`
/// items of `item_size` bytes in all; puts per second from the barrier to the last reply.
pub fn puts<C, F>(
    producers: usize,
    items: usize,
    item_size: usize,
    connect: F,
) -> Result<Measurement>
where
    C: QueueClient,
    F: Fn() -> Result<C> + Sync,
{
    let ready = Barrier::new(producers + 1);
    let go = Barrier::new(producers + 1);
    let item = item(item_size);
    let (start, cpu) = thread::scope(|scope| {
        let threads: Vec<_> = (0..producers)
            .map(|index| {
                let (connect, ready, go, item) = (&connect, &ready, &go, &item);
                let share = items / producers + usize::from(index < items % producers);
                scope.spawn(move || -> Result<()> {
                    let client = connect();
                    ready.wait();
                    go.wait();
                    let mut client = client?;
                    for _ in 0..share {
                        client.put(item)?;
                    }
                    Ok(())
                })
            })
            .collect();
        ready.wait();
        let cpu = CpuMeter::start();
        let start = Instant::now();
        go.wait();
        let mut outcome = Ok((start, cpu));
        for t in threads {
            let joined = t.join().map_err(|_| anyhow!("a producer panicked"));
            if let Err(e) = joined.and_then(|r| r) {
                outcome = outcome.and(Err(e));
            }
        }
        outcome
    })?;
    let elapsed = start.elapsed();
    Ok(Measurement::rate(items, elapsed).with_cpu(cpu.per_op(items)))
}

/// (c), (d) producers and consumers as threads, each connected with `connect` before the barrier.
/// Producers put their share and then their sentinels (empty items); a consumer stops at its
/// first sentinel. Items per second from the barrier to the last item any consumer received.
pub fn transfer<C, F>(shape: &Transfer, connect: F) -> Result<Measurement>
where
    C: QueueClient,
    F: Fn() -> Result<C> + Sync,
{
    let threads = shape.producers + shape.consumers;
    let ready = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    let item = item(shape.item_size);

    let (start, received, last, cpu) = thread::scope(|scope| {
        let producers: Vec<_> = (0..shape.producers)
            .map(|index| {
                let (connect, ready, go, item) = (&connect, &ready, &go, &item);
                scope.spawn(move || -> Result<()> {
                    let client = connect();
                    ready.wait();
                    go.wait();
                    let mut client = client?;
                    for _ in 0..shape.items_for_producer(index) {
                        client.put(item)?;
                    }
                    for _ in 0..shape.sentinels_for_producer(index) {
                        client.put(&[])?;
                    }
                    Ok(())
                })
            })
            .collect();
        let consumers: Vec<_> = (0..shape.consumers)
            .map(|_| {
                let (connect, ready, go) = (&connect, &ready, &go);
                scope.spawn(move || -> Result<(usize, Option<Instant>)> {
                    let client = connect();
                    ready.wait();
                    go.wait();
                    let mut client = client?;
                    let (mut received, mut last) = (0, None);
                    while !client.get()?.is_empty() {
                        received += 1;
                        last = Some(Instant::now());
                    }
                    Ok((received, last))
                })
            })
            .collect();

        ready.wait();
        let cpu = CpuMeter::start();
        let start = Instant::now();
        go.wait();

        let mut outcome = Ok(());
        for producer in producers {
            let joined = producer.join().map_err(|_| anyhow!("a producer panicked"));
            if let Err(e) = joined.and_then(|r| r) {
                outcome = outcome.and(Err(e));
            }
        }
        let (mut received, mut last) = (0, None::<Instant>);
        for consumer in consumers {
            match consumer
                .join()
                .map_err(|_| anyhow!("a consumer panicked"))
                .and_then(|r| r)
            {
                Ok((n, at)) => {
                    received += n;
                    last = last.max(at);
                }
                Err(e) => outcome = outcome.and(Err(e)),
            }
        }
        let cpu = cpu.per_op(received);
        outcome.map(|()| (start, received, last, cpu))
    })?;

    if received != shape.items {
        bail!(
            "consumers received {received} items, producers put {}",
            shape.items
        );
    }
    let elapsed = last.map_or(Duration::ZERO, |at| at - start);
    Ok(Measurement::rate(received, elapsed).with_cpu(cpu))
}

/// Lets a pipelined producer and consumer go together (each waits on `ready`, then `go`, as
/// the caller does here) and joins them: the moment they were let go and the consumer's end.
pub(crate) fn release_pair(
    ready: &Barrier,
    go: &Barrier,
    producer: thread::ScopedJoinHandle<'_, Result<()>>,
    consumer: thread::ScopedJoinHandle<'_, Result<Instant>>,
) -> Result<(Instant, Instant)> {
    ready.wait();
    let start = Instant::now();
    go.wait();
    let produced = producer
        .join()
        .map_err(|_| anyhow!("the producer panicked"))?;
    let consumed = consumer
        .join()
        .map_err(|_| anyhow!("the consumer panicked"))?;
    produced?;
    consumed.map(|last| (start, last))
}
