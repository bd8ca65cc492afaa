//! The workloads (a)–(g), their counts in full and quick mode, and the loop that runs each of
//! them on each system several times.

use crate::stats;
use crate::system::{Measurement, Outcome, Persistence, System, Transfer};

/// Item sizes of the transfer workloads.
const ITEM_SIZES: [usize; 2] = [8, 1024];

/// How much each workload does, and how often.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `true` in `--quick` mode.
    pub quick: bool,
    /// Runs per figure; the report shows their median and spread.
    pub runs: usize,
    /// (a) connections timed per run.
    pub connect_samples: usize,
    /// (b0) round trips per run.
    pub round_trips: usize,
    /// (b) put-then-get pairs per run.
    pub pairs: usize,
    /// (c), (d), (e) items per run.
    pub items: usize,
    /// (f) idle connections.
    pub idle_connections: usize,
    /// (g) queued items.
    pub queued_items: usize,
    /// (h) puts per run, and with a sync before every reply (slow on purpose).
    pub durable_puts: usize,
    pub durable_puts_always: usize,
}

impl Plan {
    /// The figures to report.
    pub fn full() -> Self {
        Plan {
            quick: false,
            runs: 3,
            connect_samples: 300,
            round_trips: 100_000,
            pairs: 20_000,
            items: 100_000,
            idle_connections: 10_000,
            queued_items: 1_000_000,
            durable_puts: 40_000,
            durable_puts_always: 4_000,
        }
    }

    /// Tiny counts that prove the harness works.
    pub fn quick() -> Self {
        Plan {
            quick: true,
            runs: 1,
            connect_samples: 20,
            round_trips: 2_000,
            pairs: 500,
            items: 2_000,
            idle_connections: 200,
            queued_items: 10_000,
            durable_puts: 1_000,
            durable_puts_always: 100,
        }
    }
}

/// Whether a larger figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput.
    Higher,
    /// Latency and memory.
    Lower,
}

/// Which figure of a [`Measurement`] a metric reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// [`Measurement::value`].
    Value,
    /// [`Measurement::p99`].
    P99,
    /// [`Measurement::cpu`]: the server process's CPU time per operation.
    ServerCpu,
    /// [`Measurement::cpu`]: the clients' CPU time per operation.
    ClientCpu,
}

/// One line of the report's grouping: a figure that every system can be compared on.
#[derive(Clone, Debug)]
pub struct Metric {
    /// Stable key for JSON, e.g. `spsc_8B`.
    pub key: String,
    /// Heading, e.g. `(c) 1 producer + 1 consumer, 8-B items`.
    pub label: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// Direction.
    pub better: Better,
    field: Field,
}

impl Metric {
    fn new(
        key: impl Into<String>,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
    ) -> Self {
        Metric {
            key: key.into(),
            label: label.into(),
            unit,
            better,
            field: Field::Value,
        }
    }

    fn p99(mut self) -> Self {
        self.field = Field::P99;
        self
    }

    /// The CPU time per `per` (one connection, pair, item, put) of the server process and of the
    /// clients, for the same runs as this metric.
    fn cpu(&self, per: &str) -> [Metric; 2] {
        let cpu = |field, whose: &str, key: &str| Metric {
            key: format!("{}_cpu_{key}", self.key),
            label: format!("{} — CPU time per {per}, {whose}", self.label),
            unit: "CPU µs",
            better: Better::Lower,
            field,
        };
        [
            cpu(Field::ServerCpu, "server process", "server"),
            cpu(Field::ClientCpu, "client threads", "client"),
        ]
    }

    /// This metric's figure in `m`.
    pub fn pick(&self, m: &Measurement) -> Option<f64> {
        match self.field {
            Field::Value => Some(m.value),
            Field::P99 => m.p99,
            Field::ServerCpu => m.cpu.map(|c| c.server_us),
            Field::ClientCpu => m.cpu.map(|c| c.client_us),
        }
    }
}

/// A workload: one call of a [`System`] method per run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// (a)
    ConnectAuth,
    /// (b0), the raw ceiling of (b)
    RoundTrips,
    /// (b)
    PutGetPairs,
    /// (c), (d), (e); `items` comes from the plan
    Transfer(Transfer),
    /// (f)
    IdleConnections,
    /// (g)
    QueuedItems,
    /// (h)
    DurablePuts(Persistence),
}

impl Workload {
    /// All workloads in report order, sized by `plan`.
    pub fn all(plan: &Plan) -> Vec<Workload> {
        let mut all = vec![
            Workload::ConnectAuth,
            Workload::RoundTrips,
            Workload::PutGetPairs,
        ];
        for (producers, pipelined) in [(1, false), (4, false), (1, true)] {
            for item_size in ITEM_SIZES {
                all.push(Workload::Transfer(Transfer {
                    producers,
                    consumers: producers,
                    items: plan.items,
                    item_size,
                    pipelined,
                }));
            }
        }
        all.extend([Workload::IdleConnections, Workload::QueuedItems]);
        all.extend(Persistence::ALL.map(Workload::DurablePuts));
        all
    }

    /// The letter `--workload` selects it by.
    pub fn letter(&self) -> char {
        match self {
            Workload::ConnectAuth => 'a',
            Workload::RoundTrips | Workload::PutGetPairs => 'b',
            Workload::Transfer(t) if t.pipelined => 'e',
            Workload::Transfer(t) if t.producers == 1 => 'c',
            Workload::Transfer(_) => 'd',
            Workload::IdleConnections => 'f',
            Workload::QueuedItems => 'g',
            Workload::DurablePuts(_) => 'h',
        }
    }

    /// The figures this workload reports: its own, then the CPU time per operation where the
    /// clients are threads of this process (systems without a server process leave it out).
    pub fn metrics(&self, plan: &Plan) -> Vec<Metric> {
        let mut metrics = self.own_metrics(plan);
        let per = match self {
            Workload::ConnectAuth => Some("connection"),
            Workload::PutGetPairs => Some("pair"),
            Workload::Transfer(t) if !t.pipelined => Some("item"),
            Workload::DurablePuts(_) => Some("put"),
            _ => None,
        };
        if let Some(per) = per {
            let cpu = metrics[0].cpu(per);
            metrics.extend(cpu);
        }
        metrics
    }

    fn own_metrics(&self, plan: &Plan) -> Vec<Metric> {
        use Better::{Higher, Lower};
        match self {
            Workload::ConnectAuth => vec![
                Metric::new(
                    "connect_auth_median",
                    "(a) connect + authenticate, median",
                    "µs",
                    Lower,
                ),
                Metric::new(
                    "connect_auth_p99",
                    "(a) connect + authenticate, p99",
                    "µs",
                    Lower,
                )
                .p99(),
            ],
            Workload::RoundTrips => vec![Metric::new(
                "round_trips",
                "(b0) one client, request/response round trips, one in flight",
                "round trips/s",
                Higher,
            )],
            Workload::PutGetPairs => vec![Metric::new(
                "put_get_pairs",
                "(b) one client, sequential put-then-get pairs of 8-B items, one in flight",
                "pairs/s",
                Higher,
            )],
            Workload::Transfer(t) => {
                let size = size_name(t.item_size, "");
                let (key, shape) = match (t.pipelined, t.producers) {
                    (true, _) => (
                        "spsc_pipelined",
                        "1 producer + 1 consumer, pipelined".to_owned(),
                    ),
                    (false, 1) => ("spsc", "1 producer + 1 consumer".to_owned()),
                    (false, n) => ("mpmc", format!("{n} producers + {} consumers", t.consumers)),
                };
                let key = if key == "mpmc" {
                    format!("mpmc{}_{size}", t.producers)
                } else {
                    format!("{key}_{size}")
                };
                let label = format!(
                    "({}) {shape}, {} × {} items",
                    self.letter(),
                    group(t.items),
                    size_name(t.item_size, "-")
                );
                vec![Metric::new(key, label, "items/s", Higher)]
            }
            Workload::IdleConnections => vec![Metric::new(
                "idle_connection_memory",
                format!(
                    "(f) {} idle connections: server memory per connection",
                    group(plan.idle_connections)
                ),
                "B/conn",
                Lower,
            )],
            Workload::QueuedItems => vec![Metric::new(
                "queued_item_memory",
                format!(
                    "(g) {} queued 8-B items: server memory per item",
                    group(plan.queued_items)
                ),
                "B/item",
                Lower,
            )],
            Workload::DurablePuts(p) => {
                let (key, how) = match p {
                    Persistence::Memory => ("memory", "in memory only"),
                    Persistence::Always => ("always", "fsync always / appendfsync always"),
                    Persistence::EverySecond => {
                        ("everysec", "fsync interval=1000 / appendfsync everysec")
                    }
                    Persistence::Interval100 => {
                        ("interval100", "fsync interval=100 (depot's default)")
                    }
                    Persistence::Never => ("never", "fsync never / appendfsync no"),
                };
                vec![Metric::new(
                    format!("durable_puts_{key}"),
                    format!(
                        "(h) {DURABLE_PRODUCERS} producers, {} acknowledged 8-B puts, {how}",
                        group(durable_items(plan, *p))
                    ),
                    "puts/s",
                    Higher,
                )]
            }
        }
    }

    /// One run on `system`.
    pub fn run_once(&self, system: &mut dyn System, plan: &Plan) -> Outcome {
        match self {
            Workload::ConnectAuth => system.connect_auth(plan.connect_samples),
            Workload::RoundTrips => system.round_trips(plan.round_trips),
            Workload::PutGetPairs => system.put_get_pairs(plan.pairs, 8),
            Workload::Transfer(shape) => system.transfer(shape),
            Workload::IdleConnections => system.idle_connections(plan.idle_connections),
            Workload::QueuedItems => system.queued_items(plan.queued_items, 8),
            Workload::DurablePuts(p) => {
                system.durable_puts(*p, DURABLE_PRODUCERS, durable_items(plan, *p))
            }
        }
    }
}

/// Producers of (h): several, so that a sync can cover the puts of more than one client.
const DURABLE_PRODUCERS: usize = 4;

/// Puts per run of (h): fewer when each waits for a sync.
fn durable_items(plan: &Plan, p: Persistence) -> usize {
    match p {
        Persistence::Always => plan.durable_puts_always,
        _ => plan.durable_puts,
    }
}

/// `8B`, `1KiB` (with `joint` `-`: `8-B`, `1-KiB`).
fn size_name(bytes: usize, joint: &str) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}{joint}KiB", bytes / 1024)
    } else {
        format!("{bytes}{joint}B")
    }
}

/// `100000` → `100,000`.
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What one system gave for one metric.
#[derive(Clone, Debug)]
pub enum Cell {
    /// Median of the runs, with the spread.
    Value {
        /// Median over runs.
        median: f64,
        /// Smallest run.
        min: f64,
        /// Largest run.
        max: f64,
        /// Every run's figure.
        runs: Vec<f64>,
    },
    /// The system cannot run here.
    Skipped(String),
    /// A run failed.
    Failed(String),
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    /// What is measured.
    pub metric: Metric,
    /// Which system.
    pub system: &'static str,
    /// The figure.
    pub cell: Cell,
    /// The system's note about what it measured.
    pub note: Option<String>,
}

/// A system and whether it can run here.
pub struct Contender {
    /// The system.
    pub system: Box<dyn System>,
    /// `Err(reason)` to skip it.
    pub available: Result<(), String>,
}

/// Run every workload on every contender (workload by workload, so drift hits all systems
/// alike), `plan.runs` times each; progress goes to stderr.
pub fn run_all(contenders: &mut [Contender], workloads: &[Workload], plan: &Plan) -> Vec<Row> {
    let mut rows = Vec::new();
    for workload in workloads {
        let metrics = workload.metrics(plan);
        for contender in contenders.iter_mut() {
            let name = contender.system.name();
            if let Err(reason) = &contender.available {
                rows.extend(metrics.iter().map(|metric| Row {
                    metric: metric.clone(),
                    system: name,
                    cell: Cell::Skipped(reason.clone()),
                    note: None,
                }));
                continue;
            }
            let mut measurements = Vec::new();
            let mut failure = None;
            for run in 1..=plan.runs {
                eprint!("  {} — {name}, run {run}/{}: ", metrics[0].label, plan.runs);
                match workload.run_once(contender.system.as_mut(), plan) {
                    Ok(Some(m)) => {
                        eprintln!("{:.1} {}", m.value, metrics[0].unit);
                        measurements.push(m);
                    }
                    Ok(None) => {
                        eprintln!("not applicable");
                        break;
                    }
                    Err(e) => {
                        eprintln!("failed: {e:#}");
                        failure = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            let note = measurements.first().and_then(|m| m.note.clone());
            for metric in &metrics {
                let cell = match &failure {
                    Some(error) => Cell::Failed(error.clone()),
                    None => {
                        let runs: Vec<f64> =
                            measurements.iter().filter_map(|m| metric.pick(m)).collect();
                        if runs.is_empty() {
                            continue;
                        }
                        let (min, max) = stats::min_max(&runs);
                        Cell::Value {
                            median: stats::median(&runs),
                            min,
                            max,
                            runs,
                        }
                    }
                };
                rows.push(Row {
                    metric: metric.clone(),
                    system: name,
                    cell,
                    note: note.clone(),
                });
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_has_a_letter_and_metrics() {
        let plan = Plan::quick();
        let all = Workload::all(&plan);
        assert_eq!(all.len(), 16);
        let letters: String = all.iter().map(Workload::letter).collect();
        assert_eq!(letters, "abbccddeefghhhhh");
        let keys: Vec<String> = all
            .iter()
            .flat_map(|w| w.metrics(&plan))
            .map(|m| m.key)
            .collect();
        assert!(keys.contains(&"mpmc4_1KiB".to_owned()));
        assert!(keys.contains(&"spsc_pipelined_8B".to_owned()));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(100_000), "100,000");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
    }
}
