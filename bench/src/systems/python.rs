//! Python's `multiprocessing.managers.BaseManager`: `bench/python/bm_bench.py` runs the manager
//! and every client as processes of their own; this module starts them and reads their JSON.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::child::{json_u64, LineChild};
use crate::holder;
use crate::os;
use crate::system::{Measurement, Outcome, System, Transfer};
use crate::workloads::group;

const AUTHKEY: &str = "depot-bench-key";
/// Most idle connections measured: the manager runs a thread per connection.
const MAX_IDLE_CONNECTIONS: usize = 1000;

/// The Python system.
pub struct Python {
    interpreter: Option<PathBuf>,
    script: PathBuf,
}

impl Python {
    /// `python3` (or `DEPOT_BENCH_PYTHON`), resolved once to the real executable so no launcher
    /// shim sits between the harness and the processes it measures.
    pub fn new() -> Self {
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
        command
    }

    fn client(&self, mode: &str, port: u16, args: &[(&str, usize)]) -> Result<LineChild> {
        let mut command = self.command(mode, port);
        for (name, value) in args {
            command.arg(format!("--{name}")).arg(value.to_string());
        }
        LineChild::spawn(command, format!("python {mode}"))
    }

    fn start_manager(&self) -> Result<Manager> {
        let mut child = LineChild::spawn(self.command("manager", 0), "python manager")?;
        let port = json_u64(&child.read_json()?, "port")? as u16;
        Ok(Manager { child, port })
    }
}

/// A running manager process; killed on drop.
struct Manager {
    child: LineChild,
    port: u16,
}

impl System for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn clients(&self) -> &'static str {
        "processes (manager and each client), one proxy connection each"
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
        let manager = self.start_manager()?;
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
        let manager = self.start_manager()?;
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
        let manager = self.start_manager()?;
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
        let measured = connections.min(MAX_IDLE_CONNECTIONS);
        let manager = self.start_manager()?;
        let holder = self.client("hold", manager.port, &[("count", measured)])?;
        let m = holder::idle_memory(manager.child.pid(), holder, measured)?;
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
        let manager = self.start_manager()?;
        let mut filler = self.client(
            "fill",
            manager.port,
            &[("count", items), ("size", item_size)],
        )?;
        filler.expect("READY")?;
        let before = os::settled_rss_bytes(manager.child.pid())?;
        filler.send("go")?;
        filler.expect("DONE")?;
        let after = os::settled_rss_bytes(manager.child.pid())?;
        filler.send("quit")?;
        filler.finish()?;
        Ok(Some(Measurement::bytes_per(before, after, items).with_note(
            "distinct bytes objects queued by a helper inside the manager (not through the proxy)",
        )))
    }
}
