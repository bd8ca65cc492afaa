//! A TCP forwarder that injects faults, for testing depot (or anything on TCP) over a bad
//! network: latency, a bandwidth cap, connections dropped (FIN) or reset (RST) at intervals,
//! half-closed connections, and pauses. It forwards between real sockets: clients connect to
//! [`FaultProxy::addr`], and each connection is forwarded to the upstream address.
//!
//! ```no_run
//! use std::time::Duration;
//! use faultproxy::{FaultProxy, Faults};
//!
//! let faults = Faults {
//!     reset_every: Some(Duration::from_millis(300)),
//!     latency: Duration::from_millis(2),
//!     ..Faults::default()
//! };
//! let proxy = FaultProxy::start("127.0.0.1:0", "127.0.0.1:5000".parse().unwrap(), faults).unwrap();
//! // Connect clients to proxy.addr() instead of 127.0.0.1:5000.
//! ```
//!
//! Each connection uses four threads (a reader and a writer each way); a test proxy serves
//! tens of connections, not thousands.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// How often blocked threads look at their connection's state.
const TICK: Duration = Duration::from_millis(10);
/// Bytes read at once.
const CHUNK: usize = 64 * 1024;

/// The faults to inject. The default injects none: a plain forwarder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every chunk is held this long before it is forwarded, each way.
    pub latency: Duration,
    /// At most this many bytes per second are forwarded, each way, per connection.
    pub bandwidth: Option<u64>,
    /// Every open connection is closed (FIN to both ends) at this interval.
    pub drop_every: Option<Duration>,
    /// Every open connection is reset (RST to both ends) at this interval.
    pub reset_every: Option<Duration>,
    /// At this interval, every open connection's client-to-upstream direction is closed: the
    /// upstream sees the end of its input, and what the client sends after is discarded; the
    /// client learns of it only when the upstream closes its side.
    pub half_close_every: Option<Duration>,
    /// `(every, for)`: at each `every`, nothing is forwarded for `for`.
    pub pause: Option<(Duration, Duration)>,
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections dropped, reset or half-closed.
    pub cut: u64,
    /// Pauses begun.
    pub pauses: u64,
}

const FINE: u8 = 0;
const DROP: u8 = 1;
const RESET: u8 = 2;

/// One forwarded connection.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
    fault: AtomicU8,
    /// The client-to-upstream direction was closed by a half-close.
    half_closed: AtomicBool,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    stop: AtomicBool,
    links: Mutex<Vec<Weak<Link>>>,
    paused_until: Mutex<Option<Instant>>,
    accepted: AtomicU64,
    cut: AtomicU64,
    pauses: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running proxy; it stops (resetting its connections) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on `listen` and forwards each connection to `upstream`, injecting `faults`.
    pub fn start(
        listen: impl ToSocketAddrs,
        upstream: SocketAddr,
        faults: Faults,
    ) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(faults),
            stop: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            paused_until: Mutex::new(None),
            accepted: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name("faultproxy-accept".into())
            .spawn(move || accept_loop(&listener, &s))?;
        let s = shared.clone();
        thread::Builder::new()
            .name("faultproxy-faults".into())
            .spawn(move || fault_loop(&s))?;
        Ok(FaultProxy { addr, shared })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults (intervals restart from now).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Closes every open connection now (FIN to both ends).
    pub fn drop_all(&self) {
        cut_all(&self.shared, DROP);
    }

    /// Resets every open connection now (RST to both ends).
    pub fn reset_all(&self) {
        cut_all(&self.shared, RESET);
    }

    /// Closes every open connection's client-to-upstream direction now.
    pub fn half_close_all(&self) {
        for link in live_links(&self.shared) {
            half_close(&self.shared, &link);
        }
    }

    /// Forwards nothing for `d` from now.
    pub fn pause(&self, d: Duration) {
        *lock(&self.shared.paused_until) = Some(Instant::now() + d);
        self.shared.pauses.fetch_add(1, Ordering::Relaxed);
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> Stats {
        Stats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            cut: self.shared.cut.load(Ordering::Relaxed),
            pauses: self.shared.pauses.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        cut_all(&self.shared, RESET);
    }
}

fn live_links(shared: &Shared) -> Vec<Arc<Link>> {
    let mut links = lock(&shared.links);
    links.retain(|l| l.strong_count() > 0);
    links.iter().filter_map(Weak::upgrade).collect()
}

fn cut_all(shared: &Shared, how: u8) {
    for link in live_links(shared) {
        cut(shared, &link, how);
    }
}

fn cut(shared: &Shared, link: &Link, how: u8) {
    if link.fault.swap(how, Ordering::Relaxed) != FINE {
        return;
    }
    shared.cut.fetch_add(1, Ordering::Relaxed);
    if how == RESET {
        // The RST goes out when the threads let go of the sockets (within a tick): no FIN
        // before it.
        set_linger_zero(&link.client);
        set_linger_zero(&link.upstream);
    } else {
        let _ = link.client.shutdown(Shutdown::Both);
        let _ = link.upstream.shutdown(Shutdown::Both);
    }
}

fn half_close(shared: &Shared, link: &Link) {
    if link.fault.load(Ordering::Relaxed) == FINE && !link.half_closed.swap(true, Ordering::Relaxed)
    {
        shared.cut.fetch_add(1, Ordering::Relaxed);
        let _ = link.upstream.shutdown(Shutdown::Write);
    }
}

#[cfg(unix)]
fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // std's `set_linger` is unstable. SAFETY: `setsockopt` reads `linger`, which lives across
    // the call, for the size given.
    #[allow(unsafe_code)]
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(not(unix))]
fn set_linger_zero(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Both);
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let s = shared.clone();
                let _ = thread::Builder::new()
                    .name("faultproxy-conn".into())
                    .spawn(move || serve(client, &s));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(TICK / 2),
            Err(_) => thread::sleep(TICK),
        }
    }
}

fn fault_loop(shared: &Shared) {
    let mut last_faults = *lock(&shared.faults);
    let start = Instant::now();
    let mut due = [start; 4];
    while !shared.stop.load(Ordering::Relaxed) {
        thread::sleep(TICK);
        let faults = *lock(&shared.faults);
        let now = Instant::now();
        if faults != last_faults {
            last_faults = faults;
            due = [now; 4];
        }
        let intervals = [
            faults.drop_every,
            faults.reset_every,
            faults.half_close_every,
            faults.pause.map(|(every, _)| every),
        ];
        for (k, every) in intervals.iter().enumerate() {
            let Some(every) = *every else { continue };
            if now < due[k] + every {
                continue;
            }
            due[k] = now;
            match k {
                0 => cut_all(shared, DROP),
                1 => cut_all(shared, RESET),
                2 => {
                    for link in live_links(shared) {
                        half_close(shared, &link);
                    }
                }
                _ => {
                    let length = faults.pause.map_or(Duration::ZERO, |(_, d)| d);
                    *lock(&shared.paused_until) = Some(now + length);
                    shared.pauses.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Forwards one connection until either side ends it or a fault cuts it.
fn serve(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c_read), Ok(c_write), Ok(u_read), Ok(u_write)) = (
        client.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    let link = Arc::new(Link {
        client,
        upstream,
        fault: AtomicU8::new(FINE),
        half_closed: AtomicBool::new(false),
    });
    lock(&shared.links).push(Arc::downgrade(&link));
    let (up_tx, up_rx) = mpsc::channel();
    let (down_tx, down_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (name, job) in [
        (
            "up-read",
            Box::new({
                let (l, s) = (link.clone(), shared.clone());
                move || read_side(c_read, &up_tx, &l, &s, true)
            }) as Box<dyn FnOnce() + Send>,
        ),
        (
            "down-read",
            Box::new({
                let (l, s) = (link.clone(), shared.clone());
                move || read_side(u_read, &down_tx, &l, &s, false)
            }),
        ),
        (
            "up-write",
            Box::new({
                let (l, s) = (link.clone(), shared.clone());
                move || write_side(u_write, &up_rx, &l, &s)
            }),
        ),
        (
            "down-write",
            Box::new({
                let (l, s) = (link.clone(), shared.clone());
                move || write_side(c_write, &down_rx, &l, &s)
            }),
        ),
    ] {
        if let Ok(t) = thread::Builder::new()
            .name(format!("faultproxy-{name}"))
            .spawn(job)
        {
            threads.push(t);
        }
    }
    drop(link);
    for t in threads {
        let _ = t.join();
    }
}

enum Chunk {
    Data(Instant, Vec<u8>),
    End,
}

fn cut_off(link: &Link, shared: &Shared) -> bool {
    link.fault.load(Ordering::Relaxed) != FINE || shared.stop.load(Ordering::Relaxed)
}

fn read_side(mut from: TcpStream, to: &Sender<Chunk>, link: &Link, shared: &Shared, up: bool) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0; CHUNK];
    while !cut_off(link, shared) {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.send(Chunk::End);
                return;
            }
            Ok(n) => {
                if up && link.half_closed.load(Ordering::Relaxed) {
                    continue;
                }
                let latency = lock(&shared.faults).latency;
                let due = Instant::now() + latency;
                if to.send(Chunk::Data(due, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.send(Chunk::End);
                return;
            }
        }
    }
}

/// Sleeps until `until`, in ticks; `false` if the connection was cut meanwhile.
fn sleep_until(until: Instant, link: &Link, shared: &Shared) -> bool {
    loop {
        if cut_off(link, shared) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        thread::sleep((until - now).min(TICK));
    }
}

fn write_side(mut to: TcpStream, from: &Receiver<Chunk>, link: &Link, shared: &Shared) {
    let _ = to.set_write_timeout(Some(TICK));
    while !cut_off(link, shared) {
        let (due, data) = match from.recv_timeout(TICK) {
            Ok(Chunk::Data(due, data)) => (due, data),
            Ok(Chunk::End) | Err(RecvTimeoutError::Disconnected) => {
                // The other side's reader also stops when the link is cut: a FIN then would
                // reach the peer before the reset `cut` sends.
                if !cut_off(link, shared) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => continue,
        };
        if !sleep_until(due, link, shared) {
            return;
        }
        loop {
            let paused = *lock(&shared.paused_until);
            match paused {
                Some(until) if until > Instant::now() => {
                    if !sleep_until(until, link, shared) {
                        return;
                    }
                }
                _ => break,
            }
        }
        let bandwidth = lock(&shared.faults).bandwidth;
        let mut rest = &data[..];
        while !rest.is_empty() {
            // Under a cap, a slice a tenth of a second's worth at a time.
            let take = bandwidth.map_or(rest.len(), |bw| rest.len().min((bw / 10).max(1) as usize));
            let started = Instant::now();
            if !write_all(&mut to, &rest[..take], link, shared) {
                return;
            }
            rest = &rest[take..];
            if let Some(bw) = bandwidth {
                let cost = Duration::from_secs_f64(take as f64 / bw.max(1) as f64);
                if !sleep_until(started + cost, link, shared) {
                    return;
                }
            }
        }
    }
}

fn write_all(to: &mut TcpStream, mut data: &[u8], link: &Link, shared: &Shared) -> bool {
    while !data.is_empty() {
        if cut_off(link, shared) {
            return false;
        }
        match to.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
