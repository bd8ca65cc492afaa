//! What a running manager tells an operator about itself.
//!
//! Only the event loop may touch the core manager, so a reader asks for a [`Metrics`] snapshot
//! (a ticket and a wake-up) and the loop publishes one on its next turn, built from the core's
//! own `status()` / `stat(i)` and the transport's byte and refusal counters. Nothing is
//! computed from the protocol here; the loop pays for a snapshot only when someone asks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use depot_core::wire::ErrorCode;

use super::durable::Durability;
use crate::{Error, QueueStat};

/// How long a reader waits for the loop to publish (it answers within one turn).
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// The transport's own counts since the manager started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted (and given a core slot).
    pub accepted: u64,
    /// Connections refused because every slot was in use.
    pub refused_busy: u64,
    /// Connections refused because their address had too many handshakes going on, or was
    /// locked out after failed proofs.
    pub refused_source: u64,
    /// Connections closed during their handshake to make room for others.
    pub evicted: u64,
    /// Connections closed because the peer failed the authkey proof.
    pub auth_failures: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

/// One snapshot of a running (or just stopped) manager. See [`crate::ManagerHandle::metrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Connections open, in any state.
    pub connections: u32,
    /// The most connections served at once.
    pub max_connections: u32,
    /// Requests blocked now, over all queues.
    pub waiters: u32,
    /// Every queue, in registry order.
    pub queues: Vec<QueueStat>,
    /// The transport's counts.
    pub counters: Counters,
    /// Whether the manager is stopping (or has stopped).
    pub shutting_down: bool,
    /// The log of a manager with a data directory (`None`: queues in memory only).
    pub durability: Option<Durability>,
    /// The engine that keeps the queues (`None`: this manager keeps them).
    pub backend: Option<super::backend::BackendState>,
}

impl Metrics {
    /// Reads the core manager's state; the loop adds its counters.
    pub(crate) fn of(core: &depot_core::Manager<'_>, counters: Counters) -> Metrics {
        let status = core.status();
        let queues = (0..=u16::MAX)
            .map_while(|i| core.stat(i))
            // Queues only: the other objects' numbers are not items.
            .filter(|s| s.info.kind == depot_core::wire::ObjectKind::Queue)
            .map(|s| QueueStat {
                name: s.name.to_owned(),
                kind: s.info.kind,
                mode: s.info.spec.mode,
                len: s.len,
                capacity: s.info.spec.capacity,
                max_item: s.info.spec.max_item,
                bytes: s.bytes,
                getters: s.getters,
                putters: s.putters,
                joiners: s.joiners,
                unfinished: s.unfinished,
                total_put: s.total_put,
                total_got: s.total_got,
            })
            .collect();
        Metrics {
            connections: status.connections,
            max_connections: status.max_connections,
            waiters: status.waiters,
            queues,
            counters,
            shutting_down: core.is_shutting_down(),
            durability: None,
            backend: None,
        }
    }

    /// Items queued over all queues.
    pub fn queued_items(&self) -> u64 {
        self.queues.iter().map(|q| u64::from(q.len)).sum()
    }

    /// The snapshot in Prometheus' text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(2048 + self.queues.len() * 640);
        let c = &self.counters;
        let whole: [(&str, &str, &str, u64); 11] = [
            (
                "depot_connections",
                "gauge",
                "Connections open now.",
                self.connections.into(),
            ),
            (
                "depot_max_connections",
                "gauge",
                "The most connections served at once.",
                self.max_connections.into(),
            ),
            (
                "depot_waiters",
                "gauge",
                "Requests blocked now, over all queues.",
                self.waiters.into(),
            ),
            (
                "depot_shutting_down",
                "gauge",
                "1 while the manager is stopping.",
                self.shutting_down.into(),
            ),
            (
                "depot_connections_accepted_total",
                "counter",
                "Connections accepted.",
                c.accepted,
            ),
            (
                "depot_connections_refused_total",
                "counter",
                "Connections refused because every slot was in use.",
                c.refused_busy,
            ),
            (
                "depot_connections_refused_per_source_total",
                "counter",
                "Connections refused because their address had too many handshakes going on.",
                c.refused_source,
            ),
            (
                "depot_connections_evicted_total",
                "counter",
                "Connections closed during their handshake to make room for others.",
                c.evicted,
            ),
            (
                "depot_auth_failures_total",
                "counter",
                "Connections closed for a failed authkey proof.",
                c.auth_failures,
            ),
            (
                "depot_received_bytes_total",
                "counter",
                "Bytes read from clients.",
                c.bytes_in,
            ),
            (
                "depot_sent_bytes_total",
                "counter",
                "Bytes written to clients.",
                c.bytes_out,
            ),
        ];
        for (name, kind, help, value) in whole {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        if let Some(d) = &self.durability {
            let since_epoch = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            let durable: [(&str, &str, &str, u64); 5] = [
                (
                    "depot_log_bytes",
                    "gauge",
                    "Bytes in the current log segment.",
                    d.log_bytes,
                ),
                (
                    "depot_log_unsynced_bytes",
                    "gauge",
                    "Bytes written to the log and not yet synced to disk.",
                    d.unsynced_bytes,
                ),
                (
                    "depot_log_last_fsync_seconds",
                    "gauge",
                    "When the log was last synced (Unix time, whole seconds).",
                    d.last_fsync.map_or(0, since_epoch),
                ),
                (
                    "depot_log_fsyncs_total",
                    "counter",
                    "Syncs of the log.",
                    d.fsyncs,
                ),
                (
                    "depot_log_compactions_total",
                    "counter",
                    "Log segments written from the queues' contents.",
                    d.compactions,
                ),
            ];
            for (name, kind, help, value) in durable {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
        if let Some(b) = &self.backend {
            let _ = writeln!(
                out,
                "# HELP depot_backend_connected 1 while the queues' engine is connected.\n\
                 # TYPE depot_backend_connected gauge\n\
                 depot_backend_connected{{kind=\"{}\",server=\"{}\"}} {}\n\
                 # HELP depot_backend_reconnects_total Connections to the engine lost.\n\
                 # TYPE depot_backend_reconnects_total counter\n\
                 depot_backend_reconnects_total {}",
                b.kind,
                b.server.replace(['"', '\\', '\n'], "_"),
                u8::from(b.connected),
                b.reconnects
            );
        }
        type Field = fn(&QueueStat) -> u64;
        let per_queue: [(&str, &str, &str, Field); 8] = [
            ("depot_queue_length", "gauge", "Items queued.", |q| {
                q.len.into()
            }),
            (
                "depot_queue_capacity",
                "gauge",
                "The most items the queue holds.",
                |q| q.capacity.into(),
            ),
            (
                "depot_queue_bytes",
                "gauge",
                "Bytes of item data queued.",
                |q| q.bytes.into(),
            ),
            (
                "depot_queue_getters",
                "gauge",
                "Requests blocked in get.",
                |q| q.getters.into(),
            ),
            (
                "depot_queue_putters",
                "gauge",
                "Requests blocked in put.",
                |q| q.putters.into(),
            ),
            (
                "depot_queue_unfinished",
                "gauge",
                "Items put and not yet marked task_done.",
                |q| q.unfinished.into(),
            ),
            ("depot_queue_put_total", "counter", "Items ever put.", |q| {
                q.total_put
            }),
            ("depot_queue_got_total", "counter", "Items ever got.", |q| {
                q.total_got
            }),
        ];
        for (name, kind, help, field) in per_queue {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for q in &self.queues {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", label(&q.name), field(q));
            }
        }
        out
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the text format asks.
fn label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            ch => s.push(ch),
        }
    }
    s
}

/// Where readers ask for snapshots and the event loop publishes them.
#[derive(Debug, Default)]
pub(crate) struct Board {
    /// Tickets handed out; the loop publishes when this passes what it has published.
    requested: AtomicU64,
    published: Mutex<Published>,
    fresh: Condvar,
}

#[derive(Debug, Default)]
struct Published {
    /// The newest ticket the snapshot answers.
    ticket: u64,
    metrics: Option<Metrics>,
    /// The loop has ended: `metrics` is final.
    ended: bool,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Loop side: the newest ticket, if a reader waits for a snapshot newer than `served`.
    pub(crate) fn wanted(&self, served: u64) -> Option<u64> {
        let t = self.requested.load(Ordering::Acquire);
        (t > served).then_some(t)
    }

    /// Loop side: answers every ticket up to `ticket`; `last` when the loop is ending.
    pub(crate) fn publish(&self, ticket: u64, metrics: Metrics, last: bool) {
        let mut p = self.lock();
        p.ticket = p.ticket.max(ticket);
        p.metrics = Some(metrics);
        p.ended |= last;
        self.fresh.notify_all();
    }

    /// Loop side: the loop failed before or without a final snapshot; wake every reader.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.fresh.notify_all();
    }

    /// Reader side: a snapshot taken after this call, or the final one once the loop ended.
    pub(crate) fn read(&self, waker: &mio::Waker) -> Result<Metrics, Error> {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        if !self.lock().ended {
            waker.wake()?;
        }
        let deadline = Instant::now() + PUBLISH_WAIT;
        let mut p = self.lock();
        loop {
            if p.ticket >= ticket || p.ended {
                return p
                    .metrics
                    .clone()
                    .ok_or(Error::request(ErrorCode::ShuttingDown, ""));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::request(ErrorCode::Timeout, ""));
            }
            p = self
                .fresh
                .wait_timeout(p, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_escapes_labels_and_lists_every_queue() {
        let q = |name: &str, len| QueueStat {
            name: name.into(),
            kind: crate::ObjectKind::Queue,
            mode: crate::QueueMode::Value,
            len,
            capacity: 8,
            max_item: 16,
            bytes: len * 3,
            getters: 0,
            putters: 1,
            joiners: 0,
            unfinished: len,
            total_put: 10,
            total_got: 10 - u64::from(len),
        };
        let m = Metrics {
            connections: 2,
            max_connections: 64,
            waiters: 1,
            queues: vec![q("jobs", 4), q("we\"ird\\", 0)],
            counters: Counters {
                accepted: 5,
                refused_busy: 1,
                refused_source: 0,
                evicted: 3,
                auth_failures: 2,
                bytes_in: 300,
                bytes_out: 200,
            },
            shutting_down: false,
            durability: None,
            backend: None,
        };
        let text = m.prometheus();
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "depot_connections 2",
            "depot_connections_refused_total 1",
            "depot_auth_failures_total 2",
            "depot_received_bytes_total 300",
            "depot_queue_length{queue=\"jobs\"} 4",
            "depot_queue_got_total{queue=\"jobs\"} 6",
            "depot_queue_length{queue=\"we\\\"ird\\\\\"} 0",
            "# TYPE depot_queue_put_total counter",
        ] {
            assert!(lines.contains(&want), "no {want:?} in\n{text}");
        }
        // Every sample line is `name[{labels}] value` with a number for the value.
        for line in lines.iter().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
        assert_eq!(m.queued_items(), 4);
    }
}
