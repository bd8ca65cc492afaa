//! A [`Client`](super::Client) whose manager is an unchanged Python `BaseManager`.
//!
//! The protocol is `depot_core::python::client`; this module only moves its frames. Python's
//! manager serves a connection with one thread, one call at a time, and a blocking `get` holds
//! that thread, so every call takes an idle *proxy connection* from a pool (or opens one:
//! handshake, then `accept_connection`) and puts it back after the reply. Concurrent callers
//! thus get connections of their own, as Python clients in several threads do. `create` and
//! `decref` use one-shot connections, as Python's do.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use depot_core::python::frame::{self, Peek};
use depot_core::python::item::PICKLE_TAG;
use depot_core::python::pickle::{Node, Scratch};
use depot_core::python::{PyClient, PyClientError, PyKey, PyReply, PyRequest, PyStep};
use depot_core::wire::{ErrorCode, Wait, NONCE_LEN};
use tracing::debug;

use crate::Error;

/// The largest frame accepted from a Python manager.
const MAX_BODY: usize = 16 << 20;
/// The largest item put (its pickle may be up to three times as large).
pub(crate) const MAX_ITEM: usize = MAX_BODY / 3;
/// How long the manager may take to answer beyond what a call itself may wait.
const REPLY_GRACE: Duration = Duration::from_secs(30);
/// How [`PICKLE_TAG`] starts in CBOR (a tag with a 4-byte number).
const PICKLE_TAG_HEAD: [u8; 5] = {
    let n = (PICKLE_TAG as u32).to_be_bytes();
    [0xda, n[0], n[1], n[2], n[3]]
};
/// Idle proxy connections kept for reuse.
const MAX_IDLE: usize = 16;

/// The Python manager at one address.
pub(crate) struct PyManager {
    addr: SocketAddr,
    key: PyKey,
    connect_timeout: Duration,
    idle: Mutex<Vec<Link>>,
}

impl std::fmt::Debug for PyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyManager")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One authenticated TCP connection and its protocol state.
struct Link {
    stream: TcpStream,
    client: PyClient,
    /// Received bytes not yet handled.
    rx: Vec<u8>,
}

/// Decode storage. A pickle makes at most about two nodes per byte, but an item is usually
/// a few large values: storage starts small and grows when a reply needs more.
struct Storage {
    nodes: Vec<Node>,
    stack: Vec<u32>,
    memo: Vec<u32>,
}

impl Storage {
    fn for_len(len: usize) -> Storage {
        let n = len / 16 + 64;
        Storage {
            nodes: vec![Node::None; n],
            stack: vec![0; n],
            memo: vec![0; n],
        }
    }

    /// All a pickle of `len` bytes can need.
    fn full(len: usize) -> Storage {
        Storage {
            nodes: vec![Node::None; 2 * len + 64],
            stack: vec![0; len + 16],
            memo: vec![0; len + 16],
        }
    }

    /// Grows for a frame body of `len` bytes; false when it is as large as one can need.
    fn grow(&mut self, len: usize) -> bool {
        let most = 2 * len + 64;
        if self.nodes.len() >= most && self.stack.len() >= len + 16 && self.memo.len() >= len + 16 {
            return false;
        }
        let nodes = (4 * self.nodes.len()).min(most);
        let other = (4 * self.stack.len()).min(len + 16).max(self.stack.len());
        self.nodes.resize(nodes.max(self.nodes.len()), Node::None);
        self.stack.resize(other, 0);
        self.memo.resize(other, 0);
        true
    }

    fn scratch(&mut self) -> Scratch<'_> {
        Scratch {
            nodes: &mut self.nodes,
            stack: &mut self.stack,
            memo: &mut self.memo,
        }
    }
}

/// A reply with what it borrowed copied out.
enum Owned {
    Done,
    Bool(bool),
    Int(i64),
    Created(String),
    Item(Vec<u8>),
    Failed(Error),
}

impl PyManager {
    /// Opens one proxy connection (proving the key both ways) and keeps it for the first call.
    pub(crate) fn connect(
        addr: SocketAddr,
        authkey: &[u8],
        timeout: Duration,
    ) -> Result<PyManager, Error> {
        let m = PyManager {
            addr,
            key: PyKey::new(authkey),
            connect_timeout: timeout,
            idle: Mutex::new(Vec::new()),
        };
        let link = m.open_proxy()?;
        m.idle.lock().unwrap_or_else(|p| p.into_inner()).push(link);
        debug!(%addr, "connected to a Python BaseManager");
        Ok(m)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `create(typeid)`: the ident of a new reference to the registered object.
    pub(crate) fn create(&self, typeid: &str) -> Result<String, Error> {
        let mut link = self.open()?;
        match self.call(&mut link, &PyRequest::Create { typeid }, None, typeid)? {
            Owned::Created(ident) => Ok(ident),
            Owned::Failed(e) => Err(e),
            _ => Err(self.malformed()),
        }
    }

    /// `decref(ident)`, best effort (the manager may be gone).
    pub(crate) fn decref(&self, ident: &str) {
        let done = self.open().and_then(|mut link| {
            let deadline = Some(Instant::now() + self.connect_timeout);
            self.call(&mut link, &PyRequest::Decref { ident }, deadline, "")
        });
        if let Err(e) = done {
            debug!(addr = %self.addr, "decref {ident} failed: {e}");
        }
    }

    /// One method call on a proxy connection; `wait` is how long the call itself may block.
    fn proxy_call(&self, request: &PyRequest<'_>, wait: Wait, name: &str) -> Result<Owned, Error> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut link = match pooled {
            Some(link) => link,
            None => self.open_proxy()?,
        };
        let deadline = match wait {
            Wait::Forever => None,
            Wait::NoWait => Some(Instant::now() + REPLY_GRACE),
            Wait::Millis(ms) => {
                Some(Instant::now() + REPLY_GRACE + Duration::from_millis(ms.into()))
            }
        };
        let outcome = self.call(&mut link, request, deadline, name)?;
        // A link whose call failed at the connection level never comes back here.
        if link.client.is_ready() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(link);
            }
        }
        Ok(outcome)
    }

    /// A new connection, authenticated.
    fn open(&self) -> Result<Link, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let stream = TcpStream::connect_timeout(&self.addr, self.connect_timeout).map_err(|e| {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                Error::Refused {
                    addr: self.addr.to_string(),
                    source: e,
                }
            } else {
                self.lost(&e.to_string())
            }
        })?;
        stream.set_nodelay(true)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| io::Error::other(format!("no random bytes for a nonce: {e}")))?;
        let mut link = Link {
            stream,
            client: PyClient::new(nonce),
            rx: Vec::new(),
        };
        let mut out = [0u8; 256];
        let mut storage = Storage::for_len(0);
        loop {
            let body = self.read_frame(&mut link, Some(deadline))?;
            let mut scratch = storage.scratch();
            let step = link
                .client
                .handle_frame(
                    &self.key,
                    &link.rx[body.clone()],
                    &mut scratch,
                    &mut [],
                    &mut out,
                )
                .map_err(|e| self.failed(e))?;
            let (len, connected) = match step {
                PyStep::Send { len } => (len, false),
                PyStep::Connected { len } => (len, true),
                // A reply, or a step of a later core: not a handshake this client knows.
                _ => return Err(self.malformed()),
            };
            link.rx.drain(..body.end);
            self.write(&mut link, &out[..len])?;
            if connected {
                return Ok(link);
            }
        }
    }

    /// A new proxy connection.
    fn open_proxy(&self) -> Result<Link, Error> {
        let mut link = self.open()?;
        let deadline = Some(Instant::now() + self.connect_timeout);
        let name = "depot";
        match self.call(
            &mut link,
            &PyRequest::AcceptConnection { name },
            deadline,
            "",
        )? {
            Owned::Done => Ok(link),
            Owned::Failed(e) => Err(e),
            _ => Err(self.malformed()),
        }
    }

    /// Writes `request`, reads its reply.
    fn call(
        &self,
        link: &mut Link,
        request: &PyRequest<'_>,
        deadline: Option<Instant>,
        name: &str,
    ) -> Result<Owned, Error> {
        // Writing an item decodes the pickles stored in it (one that does not fit the storage
        // would reach Python as bytes), so an item holding any gets all it may need.
        let mut storage = match request {
            PyRequest::Put { item, .. } if item.windows(5).any(|w| w == PICKLE_TAG_HEAD) => {
                Storage::full(item.len())
            }
            _ => Storage::for_len(0),
        };
        let mut out = vec![0u8; request.frame_bound()];
        let len = link
            .client
            .write_request(request, &mut storage.scratch(), &mut out)
            .map_err(|e| self.failed(e))?;
        self.write(link, &out[..len])?;
        let body = self.read_frame(link, deadline)?;
        let mut storage = Storage::for_len(body.len());
        let mut item = vec![0u8; body.len() + 64];
        loop {
            let mut scratch = storage.scratch();
            let result = match link.client.handle_frame(
                &self.key,
                &link.rx[body.clone()],
                &mut scratch,
                &mut item,
                &mut [],
            ) {
                Ok(PyStep::Reply(reply)) => Ok(owned(reply, &item, name)),
                Ok(_) => Err(PyClientError::Malformed),
                Err(e) => Err(e),
            };
            match result {
                Ok(owned) => {
                    link.rx.drain(..body.end);
                    return Ok(owned);
                }
                // A converted item may outgrow its pickle (shared values are copied out).
                Err(PyClientError::ItemTooLarge) if item.len() < 16 * body.len() + 1024 => {
                    let more = 2 * item.len();
                    item.resize(more, 0);
                }
                Err(PyClientError::NoScratch) if storage.grow(body.len()) => {}
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    fn write(&self, link: &mut Link, bytes: &[u8]) -> Result<(), Error> {
        link.stream
            .write_all(bytes)
            .map_err(|e| self.lost(&e.to_string()))
    }

    /// Reads until a whole frame is in `link.rx`; returns its body's range.
    fn read_frame(
        &self,
        link: &mut Link,
        deadline: Option<Instant>,
    ) -> Result<std::ops::Range<usize>, Error> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match frame::peek(&link.rx, link.client.max_body(MAX_BODY)) {
                Peek::Frame { header, body } => return Ok(header..header + body),
                Peek::TooLarge => {
                    return Err(Error::TooLarge {
                        size: 0,
                        max: MAX_BODY,
                    })
                }
                Peek::Partial => {}
                _ => return Err(self.malformed()),
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let _ = link.stream.shutdown(Shutdown::Both);
                        return Err(Error::request(ErrorCode::Timeout, ""));
                    }
                    Some(left)
                }
                None => None,
            };
            link.stream.set_read_timeout(wait)?;
            match link.stream.read(&mut chunk) {
                Ok(0) => return Err(self.lost("closed by the manager")),
                Ok(n) => link.rx.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(self.lost(&e.to_string())),
            }
        }
    }

    fn failed(&self, e: PyClientError) -> Error {
        match e {
            PyClientError::AuthFailed => Error::AuthFailed { addr: self.addr },
            other => Error::Python(format!("{other} (Python manager at {})", self.addr)),
        }
    }

    fn malformed(&self) -> Error {
        self.failed(PyClientError::Malformed)
    }

    fn lost(&self, why: &str) -> Error {
        Error::Disconnected {
            reason: format!("connection to {} lost: {why}", self.addr),
        }
    }
}

fn owned(reply: PyReply<'_>, item: &[u8], queue: &str) -> Owned {
    let code = |code| Error::request(code, queue);
    match reply {
        PyReply::Done => Owned::Done,
        PyReply::Bool(v) => Owned::Bool(v),
        PyReply::Int(v) => Owned::Int(v),
        PyReply::Created { ident } => Owned::Created(ident.to_owned()),
        PyReply::Item(len) => Owned::Item(item[..len].to_vec()),
        PyReply::Empty => Owned::Failed(code(ErrorCode::Empty)),
        PyReply::Full => Owned::Failed(code(ErrorCode::Full)),
        PyReply::Timeout => Owned::Failed(code(ErrorCode::Timeout)),
        PyReply::NoSuchObject => Owned::Failed(code(ErrorCode::NoSuchObject)),
        PyReply::Unconvertible => Owned::Failed(Error::Python(
            "the Python manager returned an item nested too deeply (or self-referential) for \
             depot; it has left the queue"
                .to_owned(),
        )),
        PyReply::Raised {
            module,
            name,
            message,
        } => Owned::Failed(match (name, message) {
            ("ValueError", Some(m)) if m.contains("task_done() called too many times") => {
                code(ErrorCode::TaskDoneTooMany)
            }
            (_, Some(m)) => {
                Error::Python(format!("the Python manager raised {module}.{name}: {m}"))
            }
            (_, None) => Error::Python(format!("the Python manager raised {module}.{name}")),
        }),
        PyReply::Traceback(text) => Owned::Failed(Error::Python(format!(
            "the Python manager failed: {}",
            text.trim_end().rsplit('\n').next().unwrap_or("")
        ))),
        _ => Owned::Failed(Error::Python(
            "the Python manager's reply is of a kind this client does not know".to_owned(),
        )),
    }
}

/// A queue on a Python manager: one `create`d reference, given back when the last proxy for
/// it goes.
#[derive(Debug)]
pub(crate) struct PyQueue {
    manager: Arc<PyManager>,
    name: String,
    ident: String,
}

impl Drop for PyQueue {
    fn drop(&mut self) {
        self.manager.decref(&self.ident);
    }
}

impl PyQueue {
    pub(crate) fn open(manager: &Arc<PyManager>, name: &str) -> Result<PyQueue, Error> {
        let ident = manager.create(name)?;
        Ok(PyQueue {
            manager: Arc::clone(manager),
            name: name.to_owned(),
            ident,
        })
    }

    fn call(&self, request: PyRequest<'_>, wait: Wait) -> Result<Owned, Error> {
        match self.manager.proxy_call(&request, wait, &self.name)? {
            Owned::Failed(e) => Err(e),
            other => Ok(other),
        }
    }

    fn unit(&self, request: PyRequest<'_>, wait: Wait) -> Result<(), Error> {
        match self.call(request, wait)? {
            Owned::Done => Ok(()),
            _ => Err(self.manager.malformed()),
        }
    }

    pub(crate) fn put(&self, item: &[u8], wait: Wait) -> Result<(), Error> {
        if item.len() > MAX_ITEM {
            return Err(Error::TooLarge {
                size: item.len(),
                max: MAX_ITEM,
            });
        }
        let ident = &self.ident;
        self.unit(PyRequest::Put { ident, item, wait }, wait)
    }

    pub(crate) fn get(&self, wait: Wait) -> Result<Vec<u8>, Error> {
        let ident = &self.ident;
        match self.call(PyRequest::Get { ident, wait }, wait)? {
            Owned::Item(item) => Ok(item),
            _ => Err(self.manager.malformed()),
        }
    }

    pub(crate) fn qsize(&self) -> Result<u32, Error> {
        let ident = &self.ident;
        match self.call(PyRequest::Qsize { ident }, Wait::NoWait)? {
            Owned::Int(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => Err(self.manager.malformed()),
        }
    }

    fn boolean(&self, request: PyRequest<'_>) -> Result<bool, Error> {
        match self.call(request, Wait::NoWait)? {
            Owned::Bool(v) => Ok(v),
            _ => Err(self.manager.malformed()),
        }
    }

    pub(crate) fn empty(&self) -> Result<bool, Error> {
        self.boolean(PyRequest::Empty { ident: &self.ident })
    }

    pub(crate) fn full(&self) -> Result<bool, Error> {
        self.boolean(PyRequest::Full { ident: &self.ident })
    }

    pub(crate) fn task_done(&self) -> Result<(), Error> {
        self.unit(PyRequest::TaskDone { ident: &self.ident }, Wait::NoWait)
    }

    pub(crate) fn join(&self) -> Result<(), Error> {
        self.unit(PyRequest::Join { ident: &self.ident }, Wait::Forever)
    }
}
