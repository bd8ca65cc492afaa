//! Python's `multiprocessing.managers.BaseManager`: `bench/python/bm_bench.py` runs the manager
//! and every client as processes of their own; this module starts them and reads their JSON.
//!
//! The same client processes also run against depot's manager (system `py-on-depot`): the
//! manager is then the `depot` system's manager process, serving Python clients on its port.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::child::{json_u64, LineChild};
use crate::holder;
use crate::os;
use crate::system::{Measurement, Outcome, System, Transfer};
use crate::systems::depot;
use crate::workloads::group;

const AUTHKEY: &str = "depot-bench-key";
/// Most idle connections measured: the manager runs a thread per connection.
const MAX_IDLE_CONNECTIONS: usize = 1000;

/// Bytes a depot queue needs per item beyond a Python `bytes` item's own: CBOR's byte-string
/// header (Python items are stored as CBOR values).
const CBOR_OVERHEAD: usize = 9;

/// Which manager the Python clients talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// Python's own `BaseManager` server (`bm_bench.py manager`).
    Python,
    /// depot's manager process, serving Python clients on its normal port.
    Depot,
}

/// Python clients, on Python's manager or on depot's.
pub struct Python {
    interpreter: Option<PathBuf>,
    script: PathBuf,
    server: Server,
}

impl Python {
    /// `python3` (or `DEPOT_BENCH_PYTHON`), resolved once to the real executable so no launcher
    /// shim sits between the harness and the processes it measures.
    pub fn new() -> Self {
        Self::with_server(Server::Python)
    }

    /// The same clients against depot's manager.
    pub fn on_depot() -> Self {
        Self::with_server(Server::Depot)
    }

    fn with_server(server: Server) -> Self {
        let requested = std::env::var("DEPOT_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let interpreter = Command::new(&requested)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/bm_bench.py");
        Python {
            interpreter,
            script,
            server,
        }
    }

    /// A command running the script in `mode` against `port`.
    fn command(&self, mode: &str, port: u16) -> Command {
        let interpreter = self.interpreter.clone().unwrap_or_else(|| "python3".into());
        let mut command = Command::new(interpreter);
        command.arg(&self.script).arg(mode).args([
            "--authkey",
            AUTHKEY,
            "--port",
            &port.to_string(),
        ]);
        if self.server == Server::Depot {
            command.args(["--queue", depot::QUEUE]);
        }
        command
    }

    fn client(&self, mode: &str, port: u16, args: &[(&str, usize)]) -> Result<LineChild> {
        let mut command = self.command(mode, port);
        for (name, value) in args {
            command.arg(format!("--{name}")).arg(value.to_string());
        }
        LineChild::spawn(command, format!("python {mode}"))
    }

    /// A fresh manager whose queue takes `capacity` items of `item_size` bytes (Python's
    /// queue is unbounded; depot's is sized for the run).
    fn start_manager(&self, capacity: usize, item_size: usize) -> Result<Manager> {
        match self.server {
            Server::Python => {
                let mut child = LineChild::spawn(self.command("manager", 0), "python manager")?;
                let port = json_u64(&child.read_json()?, "port")? as u16;
                Ok(Manager {
                    port,
                    process: Process::Python(child),
                })
            }
            Server::Depot => {
                let process =
                    depot::ManagerProcess::for_clients(capacity, item_size + CBOR_OVERHEAD)?;
                Ok(Manager {
                    port: process.port()?,
                    process: Process::Depot { _manager: process },
                })
            }
        }
    }
}

/// A running manager process; stopped on drop.
struct Manager {
    port: u16,
    process: Process,
}

enum Process {
    Python(LineChild),
    /// Held only to be dropped, which stops it.
    Depot {
        _manager: depot::ManagerProcess,
    },
}

impl Manager {
    /// The Python manager's process (the figures that need it run on Python's only).
    fn python_child(&self) -> Result<&LineChild> {
        match &self.process {
            Process::Python(child) => Ok(child),
            Process::Depot { .. } => bail!("not a Python manager"),
        }
    }
}

/// Queue capacity for (a) and (b) on depot.
const SMALL_CAPACITY: usize = 1024;
/// Item size (a) and (b) leave room for on depot.
const SMALL_ITEM: usize = 64;

impl System for Python {
    fn name(&self) -> &'static str {
        match self.server {
            Server::Python => "python",
            Server::Depot => "py-on-depot",
        }
    }

    fn clients(&self) -> &'static str {
        match self.server {
            Server::Python => "processes (manager and each client), one proxy connection each",
            Server::Depot => "the python system's client processes, one proxy connection each, against depot's manager process (as for depot)",
        }
    }

    fn check(&mut self) -> Result<(), String> {
        if self.interpreter.is_none() {
            return Err("python3 not found (set DEPOT_BENCH_PYTHON)".into());
        }
        if !self.script.is_file() {
            return Err(format!("{} missing", self.script.display()));
        }
        Ok(())
    }

    fn connect_auth(&mut self, samples: usize) -> Outcome {
        let manager = self.start_manager(SMALL_CAPACITY, SMALL_ITEM)?;
        let mut client = self.client("connect", manager.port, &[("count", samples)])?;
        let out = client.read_json()?;
        client.finish()?;
        let samples: Vec<Duration> = out["samples_ns"]
            .as_array()
            .context("no samples_ns")?
            .iter()
            .filter_map(|v| v.as_u64().map(Duration::from_nanos))
            .collect();
        Ok(Some(
            Measurement::latency(&samples).with_note("BaseManager.connect()"),
        ))
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        let manager = self.start_manager(SMALL_CAPACITY, item_size.max(SMALL_ITEM))?;
        let mut client = self.client(
            "pairs",
            manager.port,
            &[("count", pairs), ("size", item_size)],
        )?;
        let elapsed = Duration::from_nanos(json_u64(&client.read_json()?, "elapsed_ns")?);
        client.finish()?;
        Ok(Some(
            Measurement::rate(pairs, elapsed).with_note("proxy put() + get()"),
        ))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined {
            return Ok(None);
        }
        let manager = self.start_manager(shape.items + shape.consumers, shape.item_size)?;
        let mut producers = (0..shape.producers)
            .map(|i| {
                let args = [
                    ("count", shape.items_for_producer(i)),
                    ("size", shape.item_size),
                    ("sentinels", shape.sentinels_for_producer(i)),
                ];
                self.client("produce", manager.port, &args)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut consumers = (0..shape.consumers)
            .map(|_| self.client("consume", manager.port, &[]))
            .collect::<Result<Vec<_>>>()?;
        for child in producers.iter_mut().chain(consumers.iter_mut()) {
            child.expect("READY")?;
        }
        let start_ns = os::unix_now_ns();
        for child in consumers.iter_mut().chain(producers.iter_mut()) {
            child.send("go")?;
        }
        let (mut received, mut last_ns) = (0u64, 0u64);
        for mut consumer in consumers {
            let out = consumer.read_json()?;
            received += json_u64(&out, "received")?;
            last_ns = last_ns.max(json_u64(&out, "last_ns")?);
            consumer.finish()?;
        }
        for mut producer in producers {
            producer.read_json()?;
            producer.finish()?;
        }
        if received != shape.items as u64 {
            bail!(
                "consumers received {received} items, producers put {}",
                shape.items
            );
        }
        let elapsed = Duration::from_nanos((u128::from(last_ns).saturating_sub(start_ns)) as u64);
        drop(manager);
        Ok(Some(
            Measurement::rate(shape.items, elapsed)
                .with_note("proxy put() / get(), None as sentinel"),
        ))
    }

    fn idle_connections(&mut self, connections: usize) -> Outcome {
        if self.server == Server::Depot {
            // depot's own figure (its clients) measures the same manager.
            return Ok(None);
        }
        let measured = connections.min(MAX_IDLE_CONNECTIONS);
        let manager = self.start_manager(SMALL_CAPACITY, SMALL_ITEM)?;
        let holder = self.client("hold", manager.port, &[("count", measured)])?;
        let m = holder::idle_memory(manager.python_child()?.pid(), holder, measured)?;
        let note = if measured < connections {
            format!(
                "{} connections measured of {} asked (a manager thread each)",
                group(measured),
                group(connections)
            )
        } else {
            "a manager thread per connection".into()
        };
        Ok(Some(m.with_note(note)))
    }

    fn queued_items(&mut self, items: usize, item_size: usize) -> Outcome {
        if self.server == Server::Depot {
            // Filled by a helper inside Python's manager; depot's own figure covers depot.
            return Ok(None);
        }
        let manager = self.start_manager(items, item_size)?;
        let pid = manager.python_child()?.pid();
        let mut filler = self.client(
            "fill",
            manager.port,
            &[("count", items), ("size", item_size)],
        )?;
        filler.expect("READY")?;
        let before = os::settled_rss_bytes(pid)?;
        filler.send("go")?;
        filler.expect("DONE")?;
        let after = os::settled_rss_bytes(pid)?;
        filler.send("quit")?;
        filler.finish()?;
        Ok(Some(Measurement::bytes_per(before, after, items).with_note(
            "distinct bytes objects queued by a helper inside the manager (not through the proxy)",
        )))
    }
}
