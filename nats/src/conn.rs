//! A small NATS client: one TCP connection at a time over a list of servers, the text protocol
//! (INFO, CONNECT, PUB, SUB, MSG, HMSG, PING, PONG), one inbox subscription for replies, and
//! reconnection by itself; TLS (after the server's INFO, [`crate::tls`]) and nkey or JWT
//! credentials when asked.
//!
//! A reader thread owns the connection: it connects (trying the servers in turn), reads and
//! dispatches messages to the [`Handler`], and reconnects when the connection is lost. It looks
//! for input without sleeping for a moment ([`Options::busy_poll`]) before it blocks: an
//! answer that comes soon is read without the cost of waking a sleeping thread. A depot
//! manager's event loop can take the reading over ([`Conn::read_on_loop`]): messages are then
//! handled on the loop's thread as they come, and the reader thread only reconnects and pings.
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

use depot_std::backend::BackendLink;
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
    /// The manager's loop that reads the connection, once asked ([`Conn::read_on_loop`]).
    reading_loop: Mutex<Option<BackendLink>>,
    /// The connection while a manager's loop reads it.
    watched: Mutex<Option<Watched>>,
    /// Tells the reader thread that the watched connection was lost.
    lost: Condvar,
}

/// A connection the manager's loop reads.
struct Watched {
    reader: Reader,
    /// Why the connection was lost, once it was.
    lost: Option<String>,
    /// When input last came.
    last_input: std::time::Instant,
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
            reading_loop: Mutex::new(None),
            watched: Mutex::new(None),
            lost: Condvar::new(),
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
        let _watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        self.lost.notify_all();
    }

    /// Has a depot manager's loop read the connection from now on, instead of the reader
    /// thread (Unix, without TLS): what the server sends is then read and handled on the
    /// loop's thread as soon as it comes, with no hand-off between threads. The reader thread
    /// still connects, reconnects and pings a silent server. It hands the connection over at
    /// its next input (this pings the server for one); until the loop runs, answers wait, so
    /// the loop's thread must not then wait for one.
    pub fn read_on_loop(&self, link: BackendLink) {
        *self
            .reading_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(link);
        self.raw(b"PING\r\n");
    }

    /// The loop to hand the connection to, if there is one.
    fn reading_loop(&self) -> Option<BackendLink> {
        if !cfg!(unix) {
            return None;
        }
        self.reading_loop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
        self: &Arc<Self>,
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
            match self.session(server, &opts, &handler, connected_before, &mut first) {
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
        self: &Arc<Self>,
        server: &str,
        opts: &Options,
        handler: &Arc<dyn Handler>,
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
        let handover = reader.tls.is_none();
        let why = match self.serve(&mut reader, &**handler, handover) {
            Served::Lost(why) => why,
            Served::HandOver(link) => self.serve_watched(reader, handler, &link, &stream),
        };
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.stream = None;
        out.tls = None;
        // Whatever was not written is lost with the connection.
        out.buf.clear();
        drop(out);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        Ok(format!("{server}: {why}"))
    }

    /// Reads and dispatches until the connection is lost, or (`handover`) until a manager's
    /// loop is to read it.
    fn serve(&self, reader: &mut Reader, handler: &dyn Handler, handover: bool) -> Served {
        let mut silent = 0;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Served::Lost("closed".into());
            }
            if let Err(why) = self.dispatch(reader, handler) {
                return Served::Lost(why);
            }
            if let Some(link) = self.reading_loop().filter(|_| handover) {
                return Served::HandOver(link);
            }
            let more = reader.more();
            if std::mem::take(&mut reader.tls_wants_write) {
                self.kick();
            }
            match more {
                Ok(()) => silent = 0,
                Err(e) if is_timeout(&e) => {
                    silent += 1;
                    if silent >= 3 {
                        return Served::Lost("the server stopped answering".into());
                    }
                    self.raw(b"PING\r\n");
                }
                Err(e) => return Served::Lost(e.to_string()),
            }
        }
    }

    /// [`Conn::serve`] with the manager's loop reading the connection ([`Conn::read_now`]):
    /// this thread waits until the connection is lost, pinging the server when it is silent.
    #[cfg(unix)]
    fn serve_watched(
        self: &Arc<Self>,
        reader: Reader,
        handler: &Arc<dyn Handler>,
        link: &BackendLink,
        stream: &TcpStream,
    ) -> String {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        *watched = Some(Watched {
            reader,
            lost: None,
            last_input: std::time::Instant::now(),
        });
        drop(watched);
        let input = Arc::new(LoopInput {
            conn: self.clone(),
            handler: handler.clone(),
        });
        if let Err(e) = link.watch(stream, input.clone()) {
            tracing::debug!("NATS: the manager's loop cannot read the connection: {e}");
            let taken = self
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            return match taken.map(|mut w| self.serve(&mut w.reader, &**handler, false)) {
                Some(Served::Lost(why)) => why,
                _ => "closed".into(),
            };
        }
        // What came with the handshake, or before the loop watched.
        self.read_now(&**handler);
        let mut pinged = std::time::Instant::now();
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let why = loop {
            if self.stop.load(Ordering::SeqCst) {
                break "closed".to_string();
            }
            let Some(w) = watched.as_mut() else {
                break "closed".to_string();
            };
            if let Some(why) = w.lost.take() {
                break why;
            }
            // As when this thread reads: a ping after each read timeout without input, and
            // the connection given up after three.
            let quiet = w.last_input.elapsed();
            if quiet >= 3 * READ_TIMEOUT {
                break "the server stopped answering".to_string();
            }
            if quiet >= READ_TIMEOUT && pinged.elapsed() >= READ_TIMEOUT {
                pinged = std::time::Instant::now();
                drop(watched);
                self.raw(b"PING\r\n");
                watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            watched = self
                .lost
                .wait_timeout(watched, READ_TIMEOUT)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(watched);
        link.unwatch();
        *self.watched.lock().unwrap_or_else(PoisonError::into_inner) = None;
        why
    }

    #[cfg(not(unix))]
    fn serve_watched(
        self: &Arc<Self>,
        mut reader: Reader,
        handler: &Arc<dyn Handler>,
        _link: &BackendLink,
        _stream: &TcpStream,
    ) -> String {
        match self.serve(&mut reader, &**handler, false) {
            Served::Lost(why) => why,
            Served::HandOver(_) => "closed".into(),
        }
    }

    /// Reads and dispatches what the watched connection has, without blocking (on the
    /// manager's loop); tells the reader thread if the connection is lost.
    fn read_now(&self, handler: &dyn Handler) {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = watched.as_mut().filter(|w| w.lost.is_none()) else {
            return;
        };
        let lost = loop {
            if let Err(why) = self.dispatch(&mut w.reader, handler) {
                break Some(why);
            }
            match w.reader.more_now() {
                Ok(true) => w.last_input = std::time::Instant::now(),
                Ok(false) => break None,
                Err(e) => break Some(e.to_string()),
            }
        };
        if lost.is_some() {
            w.lost = lost;
            self.lost.notify_all();
        }
    }

    /// Handles every whole line and message in `reader`'s buffer; the rest stays for later.
    /// `Err`: the connection must end, for this reason.
    fn dispatch(&self, reader: &mut Reader, handler: &dyn Handler) -> Result<(), String> {
        loop {
            let window = &reader.buf[reader.start..reader.end];
            let Some(at) = window.windows(2).position(|w| w == b"\r\n") else {
                if window.len() > 1 << 20 {
                    return Err("line too long".into());
                }
                return Ok(());
            };
            let line = String::from_utf8_lossy(&window[..at]);
            let mut parts = line.split_ascii_whitespace();
            let op = parts.next().unwrap_or("");
            let args: Vec<&str> = parts.collect();
            let used = match op {
                "MSG" | "HMSG" => {
                    let body = &window[at + 2..];
                    match message(handler, op == "HMSG", &args, body) {
                        Ok(Some(len)) => at + 2 + len,
                        // The rest of the message is on its way.
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                "PING" => {
                    self.raw(b"PONG\r\n");
                    at + 2
                }
                "-ERR" => {
                    let text = line.trim_start_matches("-ERR").trim().to_string();
                    if text.contains("Permissions Violation") || text.contains("Invalid") {
                        tracing::warn!("NATS server: {text}");
                    } else {
                        return Err(text);
                    }
                    at + 2
                }
                _ => at + 2,
            };
            reader.start += used;
        }
    }
}

/// Hands one `MSG`/`HMSG` (its arguments, and what follows its line in `body`) to the
/// handler: how many bytes of `body` it took, or `None` if not all of it is there yet.
fn message(
    handler: &dyn Handler,
    headers: bool,
    args: &[&str],
    body: &[u8],
) -> io::Result<Option<usize>> {
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
    if hlen > total {
        return Err(bad());
    }
    let Some(message) = body.get(..total.saturating_add(2)) else {
        return Ok(None);
    };
    let (head, payload) = message[..total].split_at(hlen);
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
        subject,
        reply,
        status,
        payload,
    });
    Ok(Some(message.len()))
}

/// Reads the watched connection on the manager's loop.
struct LoopInput {
    conn: Arc<Conn>,
    handler: Arc<dyn Handler>,
}

impl depot_std::backend::BackendInput for LoopInput {
    fn readable(&self) {
        self.conn.read_now(&*self.handler);
    }
}

/// How [`Conn::serve`] ended.
enum Served {
    /// The connection was lost, for this reason.
    Lost(String),
    /// A manager's loop is to read the connection from now on.
    HandOver(BackendLink),
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

    /// Makes room after `end` for more input.
    fn make_room(&mut self) {
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
    }

    /// Reads more input, waiting for it (up to the socket's read timeout).
    fn more(&mut self) -> io::Result<()> {
        self.make_room();
        let n = self.fill()?;
        if n == 0 {
            return Err(closed());
        }
        self.end += n;
        Ok(())
    }

    /// Reads what input there is without waiting: `false` if none.
    fn more_now(&mut self) -> io::Result<bool> {
        self.make_room();
        match depot_std::busy::recv_now(&self.stream, &mut self.buf[self.end..]) {
            Ok(0) => Err(closed()),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
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
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}
