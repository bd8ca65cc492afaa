//! What the harness reads from the operating system: resident memory, CPU time, free ports,
//! wall time.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
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

/// The server process of the run under way (0: none, or the server runs in this process).
static SERVER: AtomicU32 = AtomicU32::new(0);

/// Count `pid`'s CPU time as the server's in [`CpuMeter`]s started from now on.
pub fn watch_server(pid: u32) {
    SERVER.store(pid, Ordering::Relaxed);
}

/// Stop counting `pid` as the server (when it stops).
pub fn unwatch_server(pid: u32) {
    let _ = SERVER.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
}

/// User + system CPU time of process `pid` (every thread, finished ones included), or of this
/// process when `pid` is `None`; nanosecond resolution, unlike the ticks of `/proc/PID/stat`.
#[allow(unsafe_code)] // two libc calls that only write to locals
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let mut clock: libc::clockid_t = libc::CLOCK_PROCESS_CPUTIME_ID;
    if let Some(pid) = pid {
        let pid = libc::pid_t::try_from(pid).ok()?;
        // SAFETY: `clock` is a valid place for the clock id.
        if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
            return None;
        }
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the time.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// CPU time per operation, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuCost {
    /// The server process (all its threads).
    pub server_us: f64,
    /// This process: the client threads (and the harness's own waiting, which is negligible).
    pub client_us: f64,
}

/// CPU time of the watched server and of this process from [`CpuMeter::start`] on. CPU time is
/// what a request costs; unlike throughput it hardly moves when other work shares the machine.
pub struct CpuMeter {
    server: Option<(u32, Duration)>,
    client: Option<Duration>,
}

impl CpuMeter {
    /// Start counting; nothing is counted when no server process is watched (a server inside
    /// this process would be counted as client).
    pub fn start() -> Self {
        let pid = SERVER.load(Ordering::Relaxed);
        let server = (pid != 0)
            .then(|| cpu_time(Some(pid)).map(|t| (pid, t)))
            .flatten();
        CpuMeter {
            client: server.and(cpu_time(None)),
            server,
        }
    }

    /// The CPU time since [`CpuMeter::start`] divided by `ops`.
    pub fn per_op(&self, ops: usize) -> Option<CpuCost> {
        let (pid, server0) = self.server?;
        let server = cpu_time(Some(pid))?.checked_sub(server0)?;
        let client = cpu_time(None)?.checked_sub(self.client?)?;
        let ops = ops.max(1) as f64;
        Some(CpuCost {
            server_us: server.as_secs_f64() * 1e6 / ops,
            client_us: client.as_secs_f64() * 1e6 / ops,
        })
    }
}
