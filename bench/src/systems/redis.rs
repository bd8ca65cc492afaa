//! Redis: a `redis-server` started by the harness per run, spoken to over RESP from threads of
//! this process, one connection each, one request in flight.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::resp::{Reply, RespConn};
use crate::child::LineChild;
use crate::holder;
use crate::os;
use crate::system::{Measurement, Outcome, Persistence, System, Transfer};
use crate::threaded::{self, QueueClient};

const PASSWORD: &str = "depot-bench-key";
const QUEUE: &[u8] = b"task_queue";
/// Values per RPUSH when filling the queue for (g); the storage is the same as one per command.
const FILL_BATCH: usize = 1000;

/// The Redis system.
pub struct Redis {
    server: Option<PathBuf>,
}

impl Redis {
    /// Redis from `redis-server` on PATH (or `DEPOT_BENCH_REDIS_SERVER`).
    pub fn new() -> Self {
        let server = std::env::var_os("DEPOT_BENCH_REDIS_SERVER")
            .map(PathBuf::from)
            .or_else(|| find_on_path("redis-server"));
        Redis { server }
    }

    fn start(&self) -> Result<RedisServer> {
        self.start_with(&["--appendonly", "no"])
    }

    /// A server with these persistence settings.
    fn start_with(&self, persistence: &[&str]) -> Result<RedisServer> {
        let binary = self.server.as_ref().context("redis-server not found")?;
        RedisServer::start(binary, persistence)
    }
}

impl System for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn clients(&self) -> &'static str {
        "threads of the harness, one RESP connection each, no pipelining; server is redis-server"
    }

    fn check(&mut self) -> Result<(), String> {
        match &self.server {
            Some(path) if path.is_file() => Ok(()),
            Some(path) => Err(format!("{} not found", path.display())),
            None => Err("install redis-server (apt-get install redis-server)".into()),
        }
    }

    fn connect_auth(&mut self, samples: usize) -> Outcome {
        let server = self.start()?;
        let m = threaded::time_connects(samples, || {
            let mut conn = RespConn::connect(&server.addr)?;
            conn.auth(PASSWORD)?;
            match conn.command(&[b"PING"])? {
                Reply::Simple(pong) if pong == "PONG" => Ok(()),
                other => bail!("PING answered {other:?}"),
            }
        })?;
        Ok(Some(m.with_note("connect + AUTH + PING")))
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        let server = self.start()?;
        let mut client = server.client(false)?;
        let m = threaded::put_get_pairs(&mut client, pairs, item_size)?;
        Ok(Some(m.with_note("RPUSH + LPOP")))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined {
            return Ok(None);
        }
        let server = self.start()?;
        let m = threaded::transfer(shape, || server.client(true))?;
        Ok(Some(m.with_note("RPUSH / BLPOP")))
    }

    fn idle_connections(&mut self, connections: usize) -> Outcome {
        let server = self.start()?;
        let command = holder::holder_command("redis", &server.addr, PASSWORD, connections)?;
        let holder = LineChild::spawn(command, "connection holder")?;
        let m = holder::idle_memory(server.pid(), holder, connections)?;
        Ok(Some(m.with_note("connect + AUTH each")))
    }

    fn durable_puts(
        &mut self,
        persistence: Persistence,
        producers: usize,
        items: usize,
    ) -> Outcome {
        let settings: &[&str] = match persistence {
            Persistence::Memory => &["--appendonly", "no"],
            Persistence::Always => &["--appendonly", "yes", "--appendfsync", "always"],
            Persistence::EverySecond => &["--appendonly", "yes", "--appendfsync", "everysec"],
            Persistence::Never => &["--appendonly", "yes", "--appendfsync", "no"],
            Persistence::Interval100 => return Ok(None),
        };
        let server = self.start_with(settings)?;
        let m = threaded::puts(producers, items, 8, || server.client(false))?;
        Ok(Some(m.with_note(format!("RPUSH; {}", settings.join(" ")))))
    }

    fn queued_items(&mut self, items: usize, item_size: usize) -> Outcome {
        let server = self.start()?;
        let mut conn = server.connection()?;
        let before = os::settled_rss_bytes(server.pid())?;
        let values: Vec<Vec<u8>> = (0..items).map(|i| distinct_item(i, item_size)).collect();
        for batch in values.chunks(FILL_BATCH) {
            let mut args: Vec<&[u8]> = vec![b"RPUSH", QUEUE];
            args.extend(batch.iter().map(Vec::as_slice));
            conn.command(&args)?;
        }
        let after = os::settled_rss_bytes(server.pid())?;
        match conn.command(&[b"LLEN", QUEUE])? {
            Reply::Integer(n) if n as usize == items => {}
            other => bail!("LLEN answered {other:?}, pushed {items}"),
        }
        Ok(Some(
            Measurement::bytes_per(before, after, items).with_note(format!(
                "distinct values, RPUSH of {FILL_BATCH} values per command"
            )),
        ))
    }
}

/// Item `i` of `size` bytes, distinct from the others (little-endian index, zero padded).
fn distinct_item(i: usize, size: usize) -> Vec<u8> {
    let mut item = vec![0u8; size.max(1)];
    let bytes = (i as u64).to_le_bytes();
    let n = bytes.len().min(item.len());
    item[..n].copy_from_slice(&bytes[..n]);
    item
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// A redis-server child on a free port of 127.0.0.1 with a password; killed on drop.
struct RedisServer {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl RedisServer {
    fn start(binary: &PathBuf, persistence: &[&str]) -> Result<Self> {
        let port = os::free_port()?;
        let dir = TempDir::new("redis")?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(persistence)
            .args(["--requirepass", PASSWORD, "--maxclients", "10100"])
            .args([
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--logfile",
                "",
            ])
            .arg("--dir")
            .arg(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = RedisServer {
            child,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        server.wait_ready()?;
        os::watch_server(server.child.id());
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited ({status}) at start-up");
            }
            if let Ok(mut conn) = self.connection() {
                if conn.command(&[b"PING"]).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer on {} within 10 s", self.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An authenticated connection.
    fn connection(&self) -> Result<RespConn> {
        let mut conn = RespConn::connect(&self.addr)?;
        conn.auth(PASSWORD)?;
        Ok(conn)
    }

    /// The benchmark queue; `blocking`: BLPOP, else LPOP.
    fn client(&self, blocking: bool) -> Result<RedisQueue> {
        Ok(RedisQueue {
            conn: self.connection()?,
            blocking,
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        os::unwatch_server(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The benchmark queue as a Redis list: RPUSH to put; BLPOP (waits) or LPOP (does not) to get.
struct RedisQueue {
    conn: RespConn,
    blocking: bool,
}

impl QueueClient for RedisQueue {
    fn put(&mut self, item: &[u8]) -> Result<()> {
        match self.conn.command(&[b"RPUSH", QUEUE, item])? {
            Reply::Integer(_) => Ok(()),
            other => bail!("RPUSH answered {other:?}"),
        }
    }

    fn get(&mut self) -> Result<Vec<u8>> {
        if !self.blocking {
            return match self.conn.command(&[b"LPOP", QUEUE])? {
                Reply::Bulk(Some(item)) => Ok(item),
                other => bail!("LPOP answered {other:?}"),
            };
        }
        match self.conn.command(&[b"BLPOP", QUEUE, b"0"])? {
            Reply::Array(Some(mut pair)) if pair.len() == 2 => match pair.pop() {
                Some(Reply::Bulk(Some(item))) => Ok(item),
                other => bail!("BLPOP answered {other:?}"),
            },
            other => bail!("BLPOP answered {other:?}"),
        }
    }
}

/// A private directory for a server's working files, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "depot-bench-{prefix}-{}-{}",
            std::process::id(),
            os::unix_now_ns()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
