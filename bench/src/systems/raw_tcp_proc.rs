//! raw-tcp-proc, the ceiling for depot's architecture: raw-tcp's trivial length-prefixed put/get
//! queue protocol served by a process of its own — this binary re-executed with the hidden
//! `__raw-tcp-server` subcommand — with ONE `mio` event-loop thread (non-blocking sockets,
//! edge-triggered), as depot's manager is built. No authentication, no MAC, no encoding, no
//! limits. Clients are raw-tcp's, threads of the harness with one connection each.
//!
//! For (e) the producer writes many put requests with one write and the consumer keeps many
//! gets in flight, a few writes' worth each: the ceiling for depot's `put_many` / `get_many`.
//!
//! The child prints its address and serves until a line (or end of file) arrives on its stdin.

use std::collections::VecDeque;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use super::raw_tcp::{self, RawQueue, OP_GET, OP_PUT};
use crate::child::LineChild;
use crate::holder;
use crate::os;
use crate::system::{Measurement, Outcome, System, Transfer};
use crate::threaded;

/// Subcommand name of the server process in this binary.
pub const SUBCOMMAND: &str = "__raw-tcp-server";

/// Frame header: u32 little-endian body length.
const HEADER: usize = 4;
/// Bytes of requests per write of the pipelined clients (depot's client packs 60 KiB per request).
const BATCH_BYTES: usize = 64 * 1024;
/// Writes' worth of requests a pipelined client keeps in flight (depot's `put_many` keeps 4).
const WINDOW: usize = 4;
/// Room offered to each read of the server.
const READ_CHUNK: usize = 64 * 1024;
const LISTENER: Token = Token(0);

/// The raw-tcp-proc system.
pub struct RawTcpProc;

impl System for RawTcpProc {
    fn name(&self) -> &'static str {
        "raw-tcp-proc"
    }

    fn clients(&self) -> &'static str {
        "server: its own process (1 mio event-loop thread); clients: threads of the harness, one connection each; no auth"
    }

    fn connect_auth(&mut self, samples: usize) -> Outcome {
        let server = ServerProcess::start()?;
        let m = threaded::time_connects(samples, || {
            TcpStream::connect(server.addr)?.set_nodelay(true)?;
            Ok(())
        })?;
        Ok(Some(m.with_note("TCP connect only, no authentication")))
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        let server = ServerProcess::start()?;
        let mut client = RawQueue::connect(server.addr)?;
        let m = threaded::put_get_pairs(&mut client, pairs, item_size)?;
        Ok(Some(m.with_note(
            "one-thread epoll queue server, 2 round trips per pair",
        )))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        let server = ServerProcess::start()?;
        if shape.pipelined {
            if shape.producers != 1 || shape.consumers != 1 {
                return Ok(None);
            }
            return pipelined(server.addr, shape).map(Some);
        }
        let m = threaded::transfer(shape, || RawQueue::connect(server.addr))?;
        Ok(Some(m.with_note("one-thread epoll queue server")))
    }

    fn idle_connections(&mut self, connections: usize) -> Outcome {
        let server = ServerProcess::start()?;
        let command = holder::holder_command("tcp", &server.addr.to_string(), "", connections)?;
        let holder = LineChild::spawn(command, "connection holder")?;
        let m = holder::idle_memory(server.child.pid(), holder, connections)?;
        Ok(Some(m.with_note("plain TCP connections, nothing sent")))
    }
}

/// `count` frames of one request each (`op` + `item`), back to back.
fn requests(op: u8, item: &[u8], count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * (HEADER + 1 + item.len()));
    for _ in 0..count {
        out.extend_from_slice(&(1 + item.len() as u32).to_le_bytes());
        out.push(op);
        out.extend_from_slice(item);
    }
    out
}

/// (e) the producer writes its puts `per_write` at a time and the consumer its gets, each
/// keeping up to [`WINDOW`] writes' worth unanswered; the consumer knows the count, so no
/// sentinel. Items per second from the barrier to the consumer's last reply.
fn pipelined(addr: SocketAddr, shape: &Transfer) -> Result<Measurement> {
    let item = threaded::item(shape.item_size);
    let per_write = (BATCH_BYTES / (HEADER + 1 + item.len())).clamp(1, shape.items.max(1));
    let ready = Barrier::new(3);
    let go = Barrier::new(3);
    let (start, last) = thread::scope(|scope| {
        let producer = scope.spawn(|| -> Result<()> {
            let stream = raw_tcp::connect(addr);
            ready.wait();
            go.wait();
            let batch = requests(OP_PUT, &item, per_write);
            pipeline(stream?, &batch, per_write, shape.items, |reply| {
                if !reply.is_empty() {
                    bail!("a put was answered with {} bytes", reply.len());
                }
                Ok(())
            })
        });
        let consumer = scope.spawn(|| -> Result<Instant> {
            let stream = raw_tcp::connect(addr);
            ready.wait();
            go.wait();
            let batch = requests(OP_GET, &[], per_write);
            pipeline(stream?, &batch, per_write, shape.items, |reply| {
                if reply.len() != item.len() {
                    bail!("got a {}-byte item, put {} bytes", reply.len(), item.len());
                }
                Ok(())
            })?;
            Ok(Instant::now())
        });
        crate::threaded::release_pair(&ready, &go, producer, consumer)
    })?;
    Ok(
        Measurement::rate(shape.items, last - start).with_note(format!(
            "{per_write} requests per write, up to {WINDOW} writes in flight; one-thread epoll server"
        )),
    )
}

/// Send `total` requests from `batch` (`per_write` equal frames) with one write per batch,
/// up to [`WINDOW`] batches unanswered, and check each reply with `check`.
fn pipeline(
    stream: TcpStream,
    batch: &[u8],
    per_write: usize,
    total: usize,
    mut check: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let frame = batch.len() / per_write;
    let mut reader = BufReader::with_capacity(READ_CHUNK, stream.try_clone()?);
    let mut writer = stream;
    let mut body = Vec::new();
    let mut in_flight = VecDeque::with_capacity(WINDOW);
    let mut left = total;
    while left > 0 || !in_flight.is_empty() {
        if left > 0 && in_flight.len() < WINDOW {
            let n = left.min(per_write);
            writer.write_all(&batch[..n * frame])?;
            in_flight.push_back(n);
            left -= n;
            continue;
        }
        let n = in_flight.pop_front().unwrap_or(0);
        for _ in 0..n {
            if !raw_tcp::read_frame(&mut reader, &mut body)? {
                bail!("queue server closed the connection");
            }
            check(&body)?;
        }
    }
    Ok(())
}

/// A server process; it exits when its stdin closes (on drop, then killed if still running).
struct ServerProcess {
    child: LineChild,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut command = Command::new(exe);
        command.arg(SUBCOMMAND);
        let mut child = LineChild::spawn(command, "raw TCP server")?;
        let line = child.read_line()?;
        let addr = line
            .parse()
            .with_context(|| format!("raw TCP server printed {line:?}, not an address"))?;
        os::watch_server(child.pid());
        Ok(ServerProcess { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        os::unwatch_server(self.child.pid());
        let _ = self.child.send("quit");
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while Instant::now() < deadline && !self.child.exited() {
            thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The `__raw-tcp-server` subcommand: runs in the child process. Prints the address and serves
/// on this thread; a line or end of file on stdin ends the process.
pub fn run_server() -> Result<()> {
    let mut listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    println!("{}", listener.local_addr()?);
    thread::spawn(|| {
        let _ = std::io::stdin().read_line(&mut String::new());
        std::process::exit(0);
    });
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut server = Server::default();
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            if event.token() == LISTENER {
                server.accept(&listener, &poll)?;
                continue;
            }
            let slot = event.token().0 - 1;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let drain = event.is_read_closed() || event.is_error();
                server.read(slot, drain);
            }
            if event.is_writable() {
                server.mark_dirty(slot);
            }
        }
        server.run();
    }
}

/// One client connection of the server.
struct Conn {
    stream: mio::net::TcpStream,
    /// Bytes read; requests not yet handled are `rx[rx_start..rx_end]`.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Replies not yet written: `tx[tx_start..]`.
    tx: Vec<u8>,
    tx_start: usize,
    /// A get waits for an item; the requests behind it wait too, so replies stay in order.
    parked: bool,
    dirty: bool,
    closed: bool,
}

/// The server's state: one FIFO, the connections and whom to serve next.
#[derive(Default)]
struct Server {
    queue: VecDeque<Vec<u8>>,
    /// Connections with a parked get, oldest first.
    waiters: VecDeque<usize>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections with unhandled requests.
    runnable: Vec<usize>,
    /// Connections with replies to write (or to close).
    dirty: Vec<usize>,
}

impl Server {
    fn accept(&mut self, listener: &TcpListener, poll: &Poll) -> Result<()> {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(_) => return Ok(()),
            };
            stream.set_nodelay(true)?;
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            poll.registry().register(
                &mut stream,
                Token(slot + 1),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.conns[slot] = Some(Conn {
                stream,
                rx: Vec::new(),
                rx_start: 0,
                rx_end: 0,
                tx: Vec::new(),
                tx_start: 0,
                parked: false,
                dirty: false,
                closed: false,
            });
        }
    }

    /// Read what the socket has. A read that fills less than the room offered drained the
    /// (edge-triggered) socket, unless the peer's end or an error is pending (`drain`).
    fn read(&mut self, slot: usize, drain: bool) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        loop {
            if conn.rx.len() - conn.rx_end < READ_CHUNK / 2 {
                conn.rx.copy_within(conn.rx_start..conn.rx_end, 0);
                conn.rx_end -= conn.rx_start;
                conn.rx_start = 0;
                if conn.rx.len() - conn.rx_end < READ_CHUNK / 2 {
                    let size = (conn.rx.len() * 2).max(READ_CHUNK);
                    conn.rx.resize(size, 0);
                }
            }
            let room = conn.rx.len() - conn.rx_end;
            match conn.stream.read(&mut conn.rx[conn.rx_end..]) {
                Ok(0) => {
                    conn.closed = true;
                    break;
                }
                Ok(n) => {
                    conn.rx_end += n;
                    if n < room && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.closed = true;
                    break;
                }
            }
        }
        self.runnable.push(slot);
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// Handle every runnable connection's requests, then write the replies.
    fn run(&mut self) {
        while let Some(slot) = self.runnable.pop() {
            self.handle(slot);
            self.serve_waiters();
        }
        while let Some(slot) = self.dirty.pop() {
            self.flush(slot);
        }
    }

    fn handle(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut replied = false;
        while !conn.parked {
            let pending = &conn.rx[conn.rx_start..conn.rx_end];
            let Some(header) = pending.first_chunk::<HEADER>() else {
                break;
            };
            let len = u32::from_le_bytes(*header) as usize;
            let Some(body) = pending.get(HEADER..HEADER + len) else {
                break;
            };
            match body.split_first() {
                Some((&OP_PUT, item)) => {
                    self.queue.push_back(item.to_vec());
                    push_frame(&mut conn.tx, &[]);
                    replied = true;
                }
                Some((&OP_GET, _)) => match self.queue.pop_front() {
                    Some(item) => {
                        push_frame(&mut conn.tx, &item);
                        replied = true;
                    }
                    None => {
                        conn.parked = true;
                        self.waiters.push_back(slot);
                    }
                },
                _ => {
                    conn.closed = true;
                    break;
                }
            }
            conn.rx_start += HEADER + len;
        }
        if replied || conn.closed {
            self.mark_dirty(slot);
        }
    }

    /// Give queued items to parked gets, oldest first, and resume those connections.
    fn serve_waiters(&mut self) {
        while !self.queue.is_empty() {
            let Some(slot) = self.waiters.pop_front() else {
                return;
            };
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            // A slot reused by a newer connection that is not waiting: nothing to give.
            if !conn.parked {
                continue;
            }
            if let Some(item) = self.queue.pop_front() {
                push_frame(&mut conn.tx, &item);
                conn.parked = false;
                self.mark_dirty(slot);
                self.runnable.push(slot);
            }
        }
    }

    /// Write pending replies until done or the socket is full (a writable event resumes it);
    /// close the connection when it ended.
    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.dirty = false;
        while conn.tx_start < conn.tx.len() && !conn.closed {
            match conn.stream.write(&conn.tx[conn.tx_start..]) {
                Ok(n) => conn.tx_start += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => conn.closed = true,
            }
        }
        if conn.tx_start == conn.tx.len() {
            conn.tx.clear();
            conn.tx_start = 0;
        }
        if conn.closed {
            // Dropping the stream closes and deregisters it.
            self.conns[slot] = None;
            self.free.push(slot);
        }
    }
}

fn push_frame(tx: &mut Vec<u8>, payload: &[u8]) {
    tx.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    tx.extend_from_slice(payload);
}
