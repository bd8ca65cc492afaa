//! What the harness reads from the operating system: resident memory, free ports, wall time.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// How long to let a server settle before its memory is read.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Resident set size of process `pid` in bytes, from `VmRSS` in `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parsing VmRSS in {path}"))?;
            return Ok(kib * 1024);
        }
    }
    bail!("no VmRSS line in {path}")
}

/// Resident set size of `pid` after letting it settle for [`SETTLE`].
pub fn settled_rss_bytes(pid: u32) -> Result<u64> {
    std::thread::sleep(SETTLE);
    rss_bytes(pid)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot bind port 0).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe socket")?;
    Ok(listener.local_addr()?.port())
}

/// Wall-clock time in nanoseconds since the Unix epoch: comparable across processes on one machine.
pub fn unix_now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
