//! Raw TCP, the ceiling: minimal Rust servers on loopback with TCP_NODELAY, a thread per
//! connection, clients as threads of the harness. No authentication, no encoding, no limits.
//!
//! - echo: the server returns every 16-byte message it reads (connect time, round trips);
//! - queue: an in-memory FIFO behind a trivial length-prefixed put/get protocol, so the
//!   put-then-get and producer/consumer shapes match the real systems;
//! - stream: one buffered one-way connection of small frames, the pipelined ceiling.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::system::{Measurement, Outcome, System, Transfer};
use crate::threaded::{self, QueueClient};
use crate::workloads::group;

/// Size of an echo message.
const ECHO_SIZE: usize = 16;
/// Queue protocol operations (first byte of a request body).
pub(crate) const OP_PUT: u8 = b'P';
pub(crate) const OP_GET: u8 = b'G';
/// Stream frame header: u32 payload length, u32 sequence number.
const STREAM_HEADER: usize = 8;
/// The stream moves this many times the transfer's item count (it is far faster) …
const STREAM_ITEMS_FACTOR: usize = 100;
/// … but no more bytes than this per run.
const STREAM_MAX_BYTES: usize = 1 << 30;
const BUFFER: usize = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The raw TCP system.
pub struct RawTcp;

impl System for RawTcp {
    fn name(&self) -> &'static str {
        "raw-tcp"
    }

    fn clients(&self) -> &'static str {
        "threads of the harness, one connection each; server is threads of the harness too"
    }

    fn connect_auth(&mut self, samples: usize) -> Outcome {
        let server = Server::start(echo)?;
        let m = threaded::time_connects(samples, || {
            TcpStream::connect(server.addr)?.set_nodelay(true)?;
            Ok(())
        })?;
        Ok(Some(m.with_note("TCP connect only, no authentication")))
    }

    fn round_trips(&mut self, count: usize) -> Outcome {
        let server = Server::start(echo)?;
        let mut stream = connect(server.addr)?;
        let mut message = [7u8; ECHO_SIZE];
        let start = Instant::now();
        for _ in 0..count {
            stream.write_all(&message)?;
            stream.read_exact(&mut message)?;
        }
        Ok(Some(
            Measurement::rate(count, start.elapsed()).with_note("16-B echo"),
        ))
    }

    fn put_get_pairs(&mut self, pairs: usize, item_size: usize) -> Outcome {
        let server = QueueServer::start()?;
        let mut client = RawQueue::connect(server.addr())?;
        let m = threaded::put_get_pairs(&mut client, pairs, item_size)?;
        Ok(Some(
            m.with_note("minimal queue server, 2 round trips per pair"),
        ))
    }

    fn transfer(&mut self, shape: &Transfer) -> Outcome {
        if shape.pipelined {
            if shape.producers != 1 || shape.consumers != 1 {
                return Ok(None);
            }
            return stream(shape.items, shape.item_size).map(Some);
        }
        let server = QueueServer::start()?;
        let m = threaded::transfer(shape, || RawQueue::connect(server.addr()))?;
        Ok(Some(m.with_note("minimal queue server")))
    }
}

pub(crate) fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
}

/// A listener on 127.0.0.1 with a thread per accepted connection running `handler`.
/// Dropping it stops accepting; connection threads end when their clients close.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    fn start<H>(handler: H) -> Result<Self>
    where
        H: Fn(TcpStream) -> std::io::Result<()> + Clone + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                thread::spawn(move || handler(stream));
            }
        });
        Ok(Server {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the acceptor out of accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut message = [0u8; ECHO_SIZE];
    loop {
        match stream.read_exact(&mut message) {
            Ok(()) => stream.write_all(&message)?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The in-memory FIFO shared by all connections of a queue server.
#[derive(Default)]
struct SharedQueue {
    items: Mutex<VecDeque<Vec<u8>>>,
    nonempty: Condvar,
}

/// The minimal queue server. Protocol, little-endian: a request is `u32 length, op, payload`
/// (`P` + item: put, answered by an empty frame; `G`: get, answered by the item when there is
/// one); a response is `u32 length, payload`.
struct QueueServer {
    server: Server,
}

impl QueueServer {
    fn start() -> Result<Self> {
        let queue = Arc::new(SharedQueue::default());
        Ok(QueueServer {
            server: Server::start(move |stream| serve_queue(&queue, stream))?,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

fn serve_queue(queue: &SharedQueue, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut body = Vec::new();
    let mut out = Vec::new();
    while read_frame(&mut reader, &mut body)? {
        match body.split_first() {
            Some((&OP_PUT, item)) => {
                queue
                    .items
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(item.to_vec());
                queue.nonempty.notify_one();
                write_frame(&mut writer, &mut out, None, &[])?;
            }
            Some((&OP_GET, _)) => {
                let mut items = queue.items.lock().unwrap_or_else(|e| e.into_inner());
                let item = loop {
                    match items.pop_front() {
                        Some(item) => break item,
                        None => {
                            items = queue
                                .nonempty
                                .wait(items)
                                .unwrap_or_else(|e| e.into_inner())
                        }
                    }
                };
                drop(items);
                write_frame(&mut writer, &mut out, None, &item)?;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// Read one `u32 length, body` frame into `body`; `false` at a clean end of stream.
pub(crate) fn read_frame(reader: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    body.resize(u32::from_le_bytes(header) as usize, 0);
    reader.read_exact(body)?;
    Ok(true)
}

/// Write one frame (`op` first in the body when given) with a single write.
fn write_frame(
    writer: &mut impl Write,
    out: &mut Vec<u8>,
    op: Option<u8>,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = payload.len() + usize::from(op.is_some());
    out.clear();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend(op);
    out.extend_from_slice(payload);
    writer.write_all(out)
}

/// A client of the minimal queue server.
pub(crate) struct RawQueue {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl RawQueue {
    pub(crate) fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = connect(addr)?;
        Ok(RawQueue {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            out: Vec::new(),
            body: Vec::new(),
        })
    }

    fn call(&mut self, op: u8, payload: &[u8]) -> Result<()> {
        write_frame(&mut self.writer, &mut self.out, Some(op), payload)?;
        if !read_frame(&mut self.reader, &mut self.body)? {
            bail!("queue server closed the connection");
        }
        Ok(())
    }
}

impl QueueClient for RawQueue {
    fn put(&mut self, item: &[u8]) -> Result<()> {
        self.call(OP_PUT, item)
    }

    fn get(&mut self) -> Result<Vec<u8>> {
        self.call(OP_GET, &[])?;
        Ok(self.body.clone())
    }
}

/// (e) ceiling: one producer thread writes frames of `8-B header + item` through a buffered
/// writer, one consumer thread reads them through a buffered reader; an empty frame ends it.
fn stream(items: usize, item_size: usize) -> Result<Measurement> {
    let frame = STREAM_HEADER + item_size.max(1);
    let count = (items * STREAM_ITEMS_FACTOR)
        .min(STREAM_MAX_BYTES / frame)
        .max(1);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let go = Arc::new(Barrier::new(2));
    let producer_go = Arc::clone(&go);
    let producer = thread::spawn(move || -> Result<()> {
        let socket = connect(addr);
        producer_go.wait();
        let mut writer = BufWriter::with_capacity(BUFFER, socket?);
        let payload = vec![b'x'; item_size.max(1)];
        for seq in 0..count as u32 {
            writer.write_all(&(payload.len() as u32).to_le_bytes())?;
            writer.write_all(&seq.to_le_bytes())?;
            writer.write_all(&payload)?;
        }
        writer.write_all(&[0u8; STREAM_HEADER])?;
        writer.flush()?;
        Ok(())
    });
    let (socket, _) = listener.accept()?;
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::with_capacity(BUFFER, socket);
    let mut header = [0u8; STREAM_HEADER];
    let mut payload = vec![0u8; item_size.max(1)];
    let start = Instant::now();
    go.wait();
    let mut received = 0usize;
    loop {
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 {
            break;
        }
        reader.read_exact(&mut payload[..len])?;
        received += 1;
    }
    // The end marker arrives right behind the last frame: one clock read, not one per frame.
    let last = Instant::now();
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("stream producer panicked"))??;
    if received != count {
        bail!("stream received {received} frames of {count}");
    }
    Ok(Measurement::rate(received, last - start).with_note(format!(
        "one-way buffered stream of {}-B frames ({} frames), not a queue",
        group(frame),
        group(count)
    )))
}
