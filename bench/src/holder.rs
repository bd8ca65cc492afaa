//! Workload (f): idle connections held by another process than the server, because one process
//! cannot hold 10,000 of each end under `ulimit -n` 20000.
//!
//! The holder speaks a line protocol on stdin/stdout, whichever program it is (this binary's
//! hidden `__hold` subcommand, or `bm_bench.py hold`):
//! open `warm` connections, print `WARM`, wait for a line; open `count` more, print `READY`,
//! wait for a line; exit. The server's memory is read at `WARM` and at `READY`.

use std::any::Any;
use std::net::TcpStream;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::child::LineChild;
use crate::os;
use crate::system::Measurement;

/// Connections opened before the baseline is read, so one-time costs of the first connection
/// are not charged to the others.
pub const WARM_CONNECTIONS: usize = 10;

/// Subcommand name of the holder in this binary.
pub const SUBCOMMAND: &str = "__hold";

/// What the `__hold` subcommand needs to open one connection.
#[derive(Debug, Default)]
pub struct HoldArgs {
    /// Which protocol to authenticate with: `tcp` (none), `redis` (AUTH) or `depot` (HMAC).
    pub kind: String,
    /// Server address, `127.0.0.1:PORT`.
    pub addr: String,
    /// Password or authkey.
    pub key: String,
    /// Connections to hold after the warm ones.
    pub count: usize,
}

/// A `Command` running this binary as a holder.
pub fn holder_command(kind: &str, addr: &str, key: &str, count: usize) -> Result<Command> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut command = Command::new(exe);
    command.args([
        SUBCOMMAND, "--kind", kind, "--addr", addr, "--key", key, "--count",
    ]);
    command.arg(count.to_string());
    Ok(command)
}

/// Drive a holder through its protocol and return the growth of `server_pid`'s memory per
/// connection.
pub fn idle_memory(server_pid: u32, mut holder: LineChild, count: usize) -> Result<Measurement> {
    holder.expect("WARM")?;
    let before = os::settled_rss_bytes(server_pid)?;
    holder.send("go")?;
    holder.expect("READY")?;
    let after = os::settled_rss_bytes(server_pid)?;
    holder.send("quit")?;
    holder.finish()?;
    Ok(Measurement::bytes_per(before, after, count))
}

/// The `__hold` subcommand: runs in the child process.
pub fn run(args: &HoldArgs) -> Result<()> {
    let mut stdin = std::io::stdin().lines();
    let mut wait_line = || -> Result<()> {
        stdin.next().transpose()?;
        Ok(())
    };
    let mut held: Vec<Box<dyn Any>> = Vec::with_capacity(WARM_CONNECTIONS + args.count);
    for _ in 0..WARM_CONNECTIONS {
        held.push(open(args)?);
    }
    println!("WARM");
    wait_line()?;
    for i in 0..args.count {
        held.push(open(args).with_context(|| format!("opening connection {}", i + 1))?);
    }
    println!("READY");
    wait_line()?;
    drop(held);
    Ok(())
}

/// One authenticated connection of `args.kind`, kept open by keeping the value.
fn open(args: &HoldArgs) -> Result<Box<dyn Any>> {
    match args.kind.as_str() {
        "tcp" => Ok(Box::new(TcpStream::connect(&args.addr)?)),
        "redis" => {
            let mut conn = crate::systems::resp::RespConn::connect(&args.addr)?;
            conn.auth(&args.key)?;
            Ok(Box::new(conn))
        }
        "depot" => Ok(Box::new(depot::Client::connect(&args.addr, &args.key)?)),
        other => bail!("unknown holder kind {other:?}"),
    }
}
