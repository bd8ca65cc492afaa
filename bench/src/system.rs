//! The interface every benchmarked system implements.
//!
//! A system (raw TCP, Python's BaseManager, Redis, depot …) implements [`System`]: one method per
//! workload, each doing **one run** and returning `Ok(Some(measurement))`, or `Ok(None)` when the
//! workload does not apply to that system (the default). The harness repeats runs, takes the
//! median and the spread, and computes the ratios; a system never aggregates or formats.
//!
//! Units are fixed by the workload, and [`Measurement`]'s constructors produce them: latency in
//! microseconds ([`Measurement::latency`]), throughput in operations per second
//! ([`Measurement::rate`]), memory in bytes per unit ([`Measurement::bytes_per`]).

use std::time::Duration;

use anyhow::Result;

use crate::os::CpuCost;
use crate::stats;

/// The result of one run of one workload, in the workload's unit.
#[derive(Clone, Debug, Default)]
pub struct Measurement {
    /// The headline figure: the median latency, the rate or the bytes per unit.
    pub value: f64,
    /// Latency workloads only: the 99th percentile of the run's samples.
    pub p99: Option<f64>,
    /// What was measured when it differs from what was asked (a smaller count, a batched fill …).
    pub note: Option<String>,
    /// CPU time per operation of the server process and of the clients, when the server runs
    /// in a process of its own.
    pub cpu: Option<CpuCost>,
}

impl Measurement {
    /// Median and p99 of `samples`, in microseconds.
    pub fn latency(samples: &[Duration]) -> Self {
        let micros: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        Measurement {
            value: stats::median(&micros),
            p99: Some(stats::percentile(&micros, 99.0)),
            ..Measurement::default()
        }
    }

    /// `count` operations in `elapsed`, per second.
    pub fn rate(count: usize, elapsed: Duration) -> Self {
        Measurement {
            value: count as f64 / elapsed.as_secs_f64(),
            ..Measurement::default()
        }
    }

    /// The growth from `before` to `after` bytes, per one of `count` units.
    pub fn bytes_per(before: u64, after: u64, count: usize) -> Self {
        Measurement {
            value: (after as f64 - before as f64) / count as f64,
            ..Measurement::default()
        }
    }

    /// The same measurement with the CPU cost per operation, when it was measured.
    pub fn with_cpu(mut self, cpu: Option<CpuCost>) -> Self {
        self.cpu = cpu;
        self
    }

    /// The same measurement with a note about what was measured.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// What one run of a workload returns: `Ok(None)` when the workload does not apply.
pub type Outcome = Result<Option<Measurement>>;

/// A producer/consumer transfer: workloads (c), (d) and (e).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Producers, each with its own connection.
    pub producers: usize,
    /// Consumers, each with its own connection.
    pub consumers: usize,
    /// Items in total over all producers (sentinels not counted).
    pub items: usize,
    /// Bytes per item (always at least 1: an empty item is the sentinel).
    pub item_size: usize,
    /// Several requests in flight per connection (workload (e)); `false`: one request in flight.
    pub pipelined: bool,
}

impl Transfer {
    /// Items producer `index` puts: an even share, the remainder to the first producers.
    pub fn items_for_producer(&self, index: usize) -> usize {
        share(self.items, self.producers, index)
    }

    /// Sentinels producer `index` puts after its items, so that each consumer receives exactly one.
    pub fn sentinels_for_producer(&self, index: usize) -> usize {
        share(self.consumers, self.producers, index)
    }
}

fn share(total: usize, parts: usize, index: usize) -> usize {
    total / parts + usize::from(index < total % parts)
}

/// How a server keeps its queue for (h): in memory, or appended to a log synced as said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Memory only (depot's default; Redis with `appendonly no`).
    Memory,
    /// Synced before each reply is sent (`--fsync always`; `appendfsync always`).
    Always,
    /// Synced once a second (`--fsync interval=1000`; `appendfsync everysec`).
    EverySecond,
    /// depot's default policy, `--fsync interval=100` (Redis has no such setting).
    Interval100,
    /// Written, never synced explicitly (`--fsync never`; `appendfsync no`).
    Never,
}

impl Persistence {
    /// Every setting, in report order.
    pub const ALL: [Persistence; 5] = [
        Persistence::Memory,
        Persistence::Always,
        Persistence::EverySecond,
        Persistence::Interval100,
        Persistence::Never,
    ];
}

/// A benchmarked system. Each workload method does one run and starts whatever server it needs
/// (a fresh one per run is fine and keeps the memory figures clean).
pub trait System {
    /// Name used by `--only` and in the report: `raw-tcp`, `python`, `redis`, `depot`.
    fn name(&self) -> &'static str;

    /// How its clients run (threads or processes, connections each), printed under the report.
    fn clients(&self) -> &'static str;

    /// `Err(reason)` when it cannot run on this machine; the report shows "skipped: reason".
    fn check(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// (a) connect and authenticate `samples` times, one after another: latency per connection.
    fn connect_auth(&mut self, _samples: usize) -> Outcome {
        Ok(None)
    }

    /// (b0) `count` bare request/response round trips on one connection: round trips per second.
    fn round_trips(&mut self, _count: usize) -> Outcome {
        Ok(None)
    }

    /// (b) one client, `pairs` sequential put-then-get pairs of `item_size`-byte items, one request
    /// in flight: pairs per second.
    fn put_get_pairs(&mut self, _pairs: usize, _item_size: usize) -> Outcome {
        Ok(None)
    }

    /// (c), (d), (e) producers and consumers moving `shape.items` items: items per second, from
    /// the start barrier to the last item received.
    fn transfer(&mut self, _shape: &Transfer) -> Outcome {
        Ok(None)
    }

    /// (f) `connections` idle, authenticated connections held by another process: growth of the
    /// server's resident memory per connection, in bytes.
    fn idle_connections(&mut self, _connections: usize) -> Outcome {
        Ok(None)
    }

    /// (g) `items` items of `item_size` bytes queued in the server: growth of its resident memory
    /// per item, in bytes.
    fn queued_items(&mut self, _items: usize, _item_size: usize) -> Outcome {
        Ok(None)
    }

    /// (h) `producers` threads put `items` 8-B items in all, one put in flight each, to a server
    /// keeping its queue as `persistence` says: acknowledged puts per second.
    fn durable_puts(
        &mut self,
        _persistence: Persistence,
        _producers: usize,
        _items: usize,
    ) -> Outcome {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_total() {
        let shape = Transfer {
            producers: 4,
            consumers: 4,
            items: 10,
            item_size: 8,
            pipelined: false,
        };
        let items: usize = (0..4).map(|i| shape.items_for_producer(i)).sum();
        let sentinels: usize = (0..4).map(|i| shape.sentinels_for_producer(i)).sum();
        assert_eq!((items, sentinels), (10, 4));
        assert_eq!(shape.items_for_producer(0), 3);
        assert_eq!(shape.items_for_producer(3), 2);
    }

    #[test]
    fn latency_in_microseconds() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let m = Measurement::latency(&samples);
        assert_eq!(m.value, 50.5);
        assert_eq!(m.p99, Some(99.0));
    }
}
