//! A small NATS client: one TCP connection at a time over a list of servers, the text protocol
//! (INFO, CONNECT, PUB, SUB, MSG, HMSG, PING, PONG), one inbox subscription for replies, and
//! reconnection by itself; TLS (after the server's INFO, [`crate::tls`]) and nkey or JWT
//! credentials when asked.
//!
//! A reader thread owns the connection: it connects (trying the servers in turn), reads and
//! dispatches messages to the [`Handler`], and reconnects when the connection is lost. It looks
//! for input without sleeping for a moment ([`Options::busy_poll`]) before it blocks: an
//! answer that comes soon is read without the cost of waking a sleeping thread.
//! [`Conn::publish`] writes on the caller's thread without blocking (no hand-off to another
//! thread on the hot path); what the socket does not take at once goes to a writer thread,
//! which sends it, many messages per write. What is published while
//! no connection is up is dropped, as is what a lost connection did not send: the caller's own
//! deadlines (put acknowledgements, fetches re-issued on [`Handler::connected`]) cover it.
//! Over TLS every write goes through the writer thread, which seals and sends in order.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use depot_std::busy::read_soon;

use crate::nkeys::UserKey;
use crate::tls::{Session, TlsConfig};

/// How the client proves itself to the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A user and password.
    UserPass(String, String),
    /// A token.
    Token(String),
    /// An nkey: the server's nonce signed with the user's seed.
    NKey(UserKey),
    /// A user JWT (of a `.creds` file) and the seed that signs the nonce.
    Jwt(String, UserKey),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of each server, tried in turn.
    pub servers: Vec<String>,
    /// Credentials.
    pub auth: Auth,
    /// The client's name, shown by the server.
    pub name: String,
    /// TLS to every server (a server that does not offer it is refused); without it, a
    /// server that requires TLS is refused.
    pub tls: Option<TlsConfig>,
    /// How long the reader thread looks for input without sleeping, yielding its CPU between
    /// looks, before it blocks: an answer expected soon is then read without a wake-up
    /// ([`depot_std::DEFAULT_BUSY_POLL`] is the usual; zero blocks at once).
    pub busy_poll: Duration,
}

/// A message from the server.
#[derive(Debug)]
pub struct Msg<'a> {
    /// The subscription it came on: 1 for the inbox, else what [`Conn::subscribe`] gave.
    pub sid: u64,
    /// Its subject.
    pub subject: &'a str,
    /// Where to reply (JetStream: the ack subject).
    pub reply: Option<&'a str>,
    /// The status code of a status message (`HMSG` with `NATS/1.0 <code>`), such as 404.
    pub status: Option<u16>,
    /// The payload.
    pub payload: &'a [u8],
}

/// Hears what the connection brings.
pub trait Handler: Send + Sync {
    /// A message on the inbox or another subscription.
    fn message(&self, msg: Msg<'_>);
    /// Connected to `server` (`again`: after losing an earlier connection).
    fn connected(&self, server: &str, again: bool);
    /// The connection was lost.
    fn disconnected(&self, why: &str);
}

/// Time to read a line before the reader pings the server; two such silences end the
/// connection.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Output queued beyond this (a server that stopped reading) is dropped.
const MAX_PENDING_OUT: usize = 64 << 20;

struct Out {
    buf: Vec<u8>,
    stream: Option<TcpStream>,
    closed: bool,
    /// The writer thread is sending a batch outside the lock: nobody else may write now.
    writing: bool,
    /// The connection's TLS, if it has it (then only the writer thread writes).
    tls: Option<Arc<Session>>,
    /// TLS has records of its own to send (the writer thread sends them even with no batch).
    kick: bool,
}

/// A client connection (see the module docs). Cheap to share behind an `Arc`.
pub struct Conn {
    inbox: String,
    out: Mutex<Out>,
    ready: Condvar,
    stop: AtomicBool,
    /// Whether [`Conn::publish`] may write on the caller's thread (see
    /// [`Conn::set_write_on_caller`]).
    on_caller: AtomicBool,
    /// Subscriptions beside the inbox (sid, subject), made again after a reconnect.
    subs: Mutex<(u64, std::collections::HashMap<u64, String>)>,
}

impl Conn {
    /// Starts the reader and writer threads and waits up to `wait` for the first connection.
    pub fn start(
        opts: Options,
        handler: Arc<dyn Handler>,
        wait: Duration,
    ) -> io::Result<Arc<Conn>> {
        if opts.servers.is_empty() {
            return Err(io::Error::other("no NATS server given"));
        }
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
        let inbox = format!("_INBOX.{}", hex(&id));
        let conn = Arc::new(Conn {
            inbox,
            out: Mutex::new(Out {
                buf: Vec::new(),
                stream: None,
                closed: false,
                writing: false,
                tls: None,
                kick: false,
            }),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            on_caller: AtomicBool::new(true),
            subs: Mutex::new((1, Default::default())),
        });
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let c = conn.clone();
        std::thread::Builder::new()
            .name("depot-nats reader".into())
            .spawn(move || c.read_loop(opts, handler, first_tx))?;
        let c = conn.clone();
        std::thread::Builder::new()
            .name("depot-nats writer".into())
            .spawn(move || c.write_loop())?;
        match first_rx.recv_timeout(wait) {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(e)) => {
                conn.close();
                Err(io::Error::other(e))
            }
            Err(_) => {
                conn.close();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no NATS server answered in time",
                ))
            }
        }
    }

    /// The prefix of this client's reply subjects: replies to `<inbox>.<anything>` reach the
    /// handler.
    pub fn inbox(&self) -> &str {
        &self.inbox
    }

    /// Queues a message for `subject`, with an optional reply subject.
    pub fn publish(&self, subject: &str, reply: Option<&str>, payload: &[u8]) {
        self.publish_all([(subject, reply, payload)]);
    }

    /// Queues several messages (subject, reply subject, payload) at once: one lock and one
    /// hand-off to the writer for all of them.
    pub fn publish_all<'a>(
        &self,
        msgs: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'a [u8])>,
    ) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        if out.stream.is_none() {
            return;
        }
        for (subject, reply, payload) in msgs {
            if out.buf.len() > MAX_PENDING_OUT {
                break;
            }
            push_pub(&mut out.buf, subject, reply, payload);
        }
        self.flush(out);
    }

    /// Whether publishing writes on the caller's thread when it can (the default), or always
    /// hands the bytes to the writer thread. A thread that has other work to do, such as an
    /// event loop, is better off handing off: on a busy machine the send's cost (the kernel's
    /// whole loopback path) then runs on another core while the caller goes on.
    pub fn set_write_on_caller(&self, on: bool) {
        self.on_caller.store(on, Ordering::Relaxed);
    }

    /// Subscribes to `subject`: its messages reach the handler with the returned sid.
    pub fn subscribe(&self, subject: &str) -> u64 {
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        subs.0 += 1;
        let sid = subs.0;
        subs.1.insert(sid, subject.to_owned());
        drop(subs);
        self.raw(format!("SUB {subject} {sid}\r\n").as_bytes());
        sid
    }

    /// Ends subscription `sid`.
    pub fn unsubscribe(&self, sid: u64) {
        let mut subs = self.subs.lock().unwrap_or_else(PoisonError::into_inner);
        if subs.1.remove(&sid).is_some() {
            drop(subs);
            self.raw(format!("UNSUB {sid}\r\n").as_bytes());
        }
    }

    /// Stops both threads and closes the connection.
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.closed = true;
        if let Some(s) = out.stream.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        drop(out);
        self.ready.notify_all();
    }

    /// Has the writer thread send what TLS has to say.
    fn kick(&self) {
        self.out.lock().unwrap_or_else(PoisonError::into_inner).kick = true;
        self.ready.notify_one();
    }

    fn raw(&self, bytes: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.buf.extend_from_slice(bytes);
        self.flush(out);
    }

    /// Sends what is queued from this thread as far as the socket takes it without blocking
    /// (while the writer thread is idle, so bytes keep their order); the rest is the writer
    /// thread's.
    fn flush(&self, mut out: std::sync::MutexGuard<'_, Out>) {
        if !out.writing && out.tls.is_none() && self.on_caller.load(Ordering::Relaxed) {
            if let Some(stream) = &out.stream {
                let sent = send_now(stream, &out.buf);
                out.buf.drain(..sent);
            }
        }
        let rest = !out.buf.is_empty();
        drop(out);
        if rest {
            self.ready.notify_one();
        }
    }

    fn write_loop(&self) {
        let mut batch = Vec::new();
        let mut sealed = Vec::new();
        loop {
            let stream = {
                let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
                while !out.closed && ((out.buf.is_empty() && !out.kick) || out.stream.is_none()) {
                    out = self.ready.wait(out).unwrap_or_else(PoisonError::into_inner);
                }
                if out.closed {
                    return;
                }
                std::mem::swap(&mut batch, &mut out.buf);
                out.writing = true;
                out.kick = false;
                (
                    out.stream.as_ref().and_then(|s| s.try_clone().ok()),
                    out.tls.clone(),
                )
            };
            // A failed write is the reader's to notice (the connection is gone).
            match stream {
                (Some(mut s), None) => {
                    let _ = s.write_all(&batch);
                }
                (Some(mut s), Some(tls)) => {
                    if tls.seal(&batch, &mut sealed).is_ok() {
                        let _ = s.write_all(&sealed);
                    }
                    sealed.clear();
                }
                _ => {}
            }
            batch.clear();
            self.out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .writing = false;
        }
    }

    fn read_loop(
        &self,
        opts: Options,
        handler: Arc<dyn Handler>,
        first: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let mut first = Some(first);
        let mut connected_before = false;
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(50);
        while !self.stop.load(Ordering::SeqCst) {
            let server = &opts.servers[next % opts.servers.len()];
            next += 1;
            match self.session(server, &opts, &*handler, connected_before, &mut first) {
                Ok(why) => {
                    connected_before = true;
                    backoff = Duration::from_millis(50);
                    handler.disconnected(&why);
                }
                Err(Failed::Refused(why)) => {
                    // Bad credentials stay bad: say so at once on the first connection.
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(why));
                        self.close();
                        return;
                    }
                    tracing::warn!("NATS: {why}");
                }
                Err(Failed::Io(e)) => {
                    tracing::debug!("NATS: cannot connect to {server}: {e}");
                }
            }
            if next.is_multiple_of(opts.servers.len()) {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// One connection to `server`, from handshake to loss: why it was lost.
    fn session(
        &self,
        server: &str,
        opts: &Options,
        handler: &dyn Handler,
        again: bool,
        first: &mut Option<std::sync::mpsc::Sender<Result<(), String>>>,
    ) -> Result<String, Failed> {
        let addr = server
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let mut reader = Reader::new(stream.try_clone()?, opts.busy_poll);
        let info = reader.line()?;
        let Some(info) = info
            .strip_prefix("INFO ")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        else {
            return Err(Failed::Refused(format!("{server}: not a NATS server")));
        };
        let offers_tls = |key: &str| info.get(key).and_then(serde_json::Value::as_bool);
        let tls = match (
            &opts.tls,
            offers_tls("tls_required"),
            offers_tls("tls_available"),
        ) {
            (None, Some(true), _) => {
                return Err(Failed::Refused(format!(
                    "{server} requires TLS, and no TLS is configured for it"
                )))
            }
            (None, ..) => None,
            (Some(config), Some(true), _) | (Some(config), _, Some(true)) => {
                match Session::handshake(config, host_of(server), &stream) {
                    Ok(s) => Some(Arc::new(s)),
                    // A certificate refused either way stays refused.
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        return Err(Failed::Refused(format!("{server}: TLS: {e}")))
                    }
                    Err(e) => return Err(Failed::Io(e)),
                }
            }
            (Some(_), ..) => {
                return Err(Failed::Refused(format!("{server} does not offer TLS")));
            }
        };
        reader.tls = tls.clone();
        let nonce = info.get("nonce").and_then(serde_json::Value::as_str);
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": false,
            "name": opts.name,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
        });
        match &opts.auth {
            Auth::None => {}
            Auth::UserPass(user, pass) => {
                connect["user"] = user.clone().into();
                connect["pass"] = pass.clone().into();
            }
            Auth::Token(token) => connect["auth_token"] = token.clone().into(),
            Auth::NKey(key) | Auth::Jwt(_, key) => {
                let nonce = nonce.ok_or_else(|| {
                    Failed::Refused(format!(
                        "{server} sent no nonce to sign (nkeys not enabled?)"
                    ))
                })?;
                connect["sig"] = key.sign(nonce).map_err(Failed::Refused)?.into();
                match &opts.auth {
                    Auth::Jwt(jwt, _) => connect["jwt"] = jwt.clone().into(),
                    _ => connect["nkey"] = key.public().map_err(Failed::Refused)?.into(),
                }
            }
        }
        if tls.is_some() {
            connect["tls_required"] = true.into();
        }
        let mut hello = format!("CONNECT {connect}\r\nSUB {}.> 1\r\n", self.inbox);
        for (sid, subject) in &self.subs.lock().unwrap_or_else(PoisonError::into_inner).1 {
            hello.push_str(&format!("SUB {subject} {sid}\r\n"));
        }
        hello.push_str("PING\r\n");
        match &tls {
            None => (&stream).write_all(hello.as_bytes())?,
            Some(tls) => {
                let mut sealed = Vec::new();
                tls.seal(hello.as_bytes(), &mut sealed)?;
                (&stream).write_all(&sealed)?;
            }
        }
        loop {
            // A TLS alert now (a client certificate refused, say) stays the same next time.
            let line = reader.line().map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => Failed::Refused(format!("{server}: {e}")),
                _ => Failed::Io(e),
            })?;
            if line == "PONG" {
                break;
            }
            if let Some(err) = line.strip_prefix("-ERR") {
                return Err(Failed::Refused(format!("{server}:{err}")));
            }
        }
        {
            let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
            out.stream = Some(stream.try_clone()?);
            out.tls = tls;
        }
        self.ready.notify_one();
        handler.connected(server, again);
        if let Some(tx) = first.take() {
            let _ = tx.send(Ok(()));
        }
        let why = self.serve(&mut reader, handler);
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.stream = None;
        out.tls = None;
        // Whatever was not written is lost with the connection.
        out.buf.clear();
        drop(out);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        Ok(format!("{server}: {why}"))
    }

    /// Reads and dispatches until the connection is lost; why it was.
    fn serve(&self, reader: &mut Reader, handler: &dyn Handler) -> String {
        let mut silent = 0;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return "closed".into();
            }
            let line = reader.line();
            if std::mem::take(&mut reader.tls_wants_write) {
                self.kick();
            }
            let line = match line {
                Ok(line) => {
                    silent = 0;
                    line
                }
                Err(e) if is_timeout(&e) => {
                    silent += 1;
                    if silent >= 3 {
                        return "the server stopped answering".into();
                    }
                    self.raw(b"PING\r\n");
                    continue;
                }
                Err(e) => return e.to_string(),
            };
            let mut parts = line.split_ascii_whitespace();
            let op = parts.next().unwrap_or("");
            let args: Vec<&str> = parts.collect();
            let result = match op {
                "PING" => {
                    self.raw(b"PONG\r\n");
                    Ok(())
                }
                "MSG" | "HMSG" => self.message(reader, handler, op == "HMSG", &args),
                "-ERR" => {
                    let text = line.trim_start_matches("-ERR").trim().to_string();
                    if text.contains("Permissions Violation") || text.contains("Invalid") {
                        tracing::warn!("NATS server: {text}");
                        Ok(())
                    } else {
                        return text;
                    }
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                return e.to_string();
            }
        }
    }

    fn message(
        &self,
        reader: &mut Reader,
        handler: &dyn Handler,
        headers: bool,
        args: &[&str],
    ) -> io::Result<()> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed MSG");
        let num = |t: &str| t.parse::<usize>().map_err(|_| bad());
        let (subject, sid, reply, hlen, total) = match (headers, args) {
            (false, [s, i, n]) => (*s, *i, None, 0, num(n)?),
            (false, [s, i, r, n]) => (*s, *i, Some(*r), 0, num(n)?),
            (true, [s, i, h, n]) => (*s, *i, None, num(h)?, num(n)?),
            (true, [s, i, r, h, n]) => (*s, *i, Some(*r), num(h)?, num(n)?),
            _ => return Err(bad()),
        };
        let sid = sid.parse::<u64>().map_err(|_| bad())?;
        let (subject, reply) = (subject.to_string(), reply.map(str::to_string));
        if hlen > total {
            return Err(bad());
        }
        let body = reader.exact(total + 2)?;
        let (head, payload) = body[..total].split_at(hlen);
        let status = if headers {
            // "NATS/1.0 404 No Messages\r\n..."
            std::str::from_utf8(head)
                .ok()
                .and_then(|h| h.strip_prefix("NATS/1.0"))
                .and_then(|h| h.split_ascii_whitespace().next())
                .and_then(|code| code.parse().ok())
        } else {
            None
        };
        handler.message(Msg {
            sid,
            subject: &subject,
            reply: reply.as_deref(),
            status,
            payload,
        });
        Ok(())
    }
}

enum Failed {
    /// The server refused us (credentials, or not a NATS server).
    Refused(String),
    Io(io::Error),
}

impl From<io::Error> for Failed {
    fn from(e: io::Error) -> Self {
        Failed::Io(e)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends `n` in decimal, without a formatter's allocation.
/// A `PUB` line and its payload.
fn push_pub(b: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    b.extend_from_slice(b"PUB ");
    b.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        b.push(b' ');
        b.extend_from_slice(reply.as_bytes());
    }
    b.push(b' ');
    push_decimal(b, payload.len());
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(payload);
    b.extend_from_slice(b"\r\n");
}

fn push_decimal(b: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[at..]);
}

/// Writes what `stream` takes of `bytes` at once, never blocking: how much it took (0 on any
/// error: a lost connection is the reader's to notice).
#[cfg(unix)]
#[allow(unsafe_code)]
fn send_now(stream: &TcpStream, bytes: &[u8]) -> usize {
    use std::os::fd::AsRawFd;
    if bytes.is_empty() {
        return 0;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = libc::MSG_DONTWAIT;
    // SAFETY: the descriptor is open for as long as `stream` lives, and the pointer and length
    // describe `bytes`.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            flags,
        )
    };
    usize::try_from(n).unwrap_or(0)
}

/// Elsewhere every write goes through the writer thread.
#[cfg(not(unix))]
fn send_now(_stream: &TcpStream, _bytes: &[u8]) -> usize {
    0
}

/// The host of `host:port` (an IPv6 address without its brackets).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads lines and payloads, keeping partial input across read timeouts.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Once the connection is upgraded: its TLS, the records read and not yet opened, and
    /// whether TLS has something to send back.
    tls: Option<Arc<Session>>,
    raw: Vec<u8>,
    tls_wants_write: bool,
    busy_poll: Duration,
}

impl Reader {
    fn new(stream: TcpStream, busy_poll: Duration) -> Self {
        Reader {
            stream,
            busy_poll,
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
            tls: None,
            raw: Vec::new(),
            tls_wants_write: false,
        }
    }

    /// Reads into `buf[end..]` (not empty): from the socket, or what TLS opens of it.
    fn fill(&mut self) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return read_soon(&self.stream, &mut self.buf[self.end..], self.busy_poll);
        };
        loop {
            if let Some(n) = tls.open(&mut self.buf[self.end..])? {
                return Ok(n);
            }
            if self.raw.is_empty() {
                let mut chunk = [0u8; 16 << 10];
                let n = read_soon(&self.stream, &mut chunk, self.busy_poll)?;
                if n == 0 {
                    return Ok(0);
                }
                self.raw.extend_from_slice(&chunk[..n]);
            }
            let (taken, wants_write) = tls.feed(&self.raw)?;
            self.raw.drain(..taken);
            self.tls_wants_write |= wants_write;
        }
    }

    fn more(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let n = self.fill()?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            let window = &self.buf[self.start..self.end];
            if let Some(at) = window.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&window[..at]).into_owned();
                self.start += at + 2;
                return Ok(line);
            }
            if self.end - self.start > 1 << 20 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            self.more()?;
        }
    }

    fn exact(&mut self, n: usize) -> io::Result<&[u8]> {
        let mut silent = 0;
        while self.end - self.start < n {
            match self.more() {
                Ok(()) => {}
                // Mid-message: the rest is on its way, unless the server went silent.
                Err(e) if is_timeout(&e) && silent < 3 => silent += 1,
                Err(e) => return Err(e),
            }
        }
        let at = self.start;
        self.start += n;
        Ok(&self.buf[at..at + n])
    }
}
