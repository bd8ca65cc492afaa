//! One connection to a Python `multiprocessing.managers.BaseManager`, from the client's side:
//! a depot client using the queues of an unchanged Python deployment.
//!
//! Python's manager serves each connection with one thread, one call at a time, and a blocking
//! `get` holds that thread until it returns. So a transport keeps one [`PyClient`] per TCP
//! connection and uses it strictly in turn, with two kinds of connection, as Python's own
//! client does:
//!
//! - a *public-function* connection: the handshake, one [`PyRequest::Create`],
//!   [`PyRequest::Incref`] or [`PyRequest::Decref`], its reply; then the manager closes it;
//! - a *proxy* connection: the handshake, [`PyRequest::AcceptConnection`], then any number of
//!   method calls on any object, one at a time. A blocked call holds its connection until the
//!   manager answers: callers that must not wait behind it need connections of their own.
//!
//! Driving it: find whole frames with [`super::frame::peek`] (bounded by
//! [`PyClient::max_body`]) and hand each body to [`PyClient::handle_frame`]. During the
//! handshake it returns [`PyStep::Send`] (write `out[..len]`), then [`PyStep::Connected`]
//! (write `out[..len]`; requests may follow). [`PyClient::write_request`] writes one request
//! frame; the next frame's [`PyStep::Reply`] is its answer. Any error ends the connection,
//! except those that ask for more room ([`PyClientError::ItemTooLarge`],
//! [`PyClientError::NoScratch`], [`PyClientError::NoRoom`]).
//!
//! The handshake answers the manager's challenge the way its generation expects (raw
//! HMAC-MD5 for a 3.8–3.11 manager's bare challenge, `{digest}` + HMAC for 3.12+), then
//! challenges it with `{sha256}` and a fresh nonce, accepting what a Python 3.12+ client
//! accepts (a 3.8–3.11 manager answers with raw HMAC-MD5). Items cross as in [`super::item`]:
//! a depot item (a CBOR value) is written as the Python value it encodes, and a Python value
//! comes back as CBOR (objects depot does not map as the whole-pickle tag).

use crate::wire::{Wait, NONCE_LEN};

use super::frame::{self, MAX_HANDSHAKE_BODY};
use super::handshake::{self, HandshakeError, PyKey, FAILURE, MAX_ANSWER_LEN, WELCOME};
use super::item::{self, ItemError};
use super::pickle::{self, Node, Pickle, PickleError, Scratch, Writer};

/// A request to a Python manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PyRequest<'a> {
    /// `create(typeid)`: a new reference to the registered object; the reply names its ident.
    /// The manager counts it: [`PyRequest::Decref`] it when done.
    Create {
        /// The registered name (`BaseManager.register(typeid, …)`).
        typeid: &'a str,
    },
    /// `incref(ident)`.
    Incref {
        /// The object.
        ident: &'a str,
    },
    /// `decref(ident)`: the manager forgets the object's ident when its count reaches zero.
    Decref {
        /// The object.
        ident: &'a str,
    },
    /// `accept_connection(name)`: turns this connection into a proxy connection.
    AcceptConnection {
        /// The caller's name (Python sends its thread's name; informational).
        name: &'a str,
    },
    /// `put(item)`, `put(item, True, timeout)` or `put_nowait(item)` by `wait`.
    Put {
        /// The object.
        ident: &'a str,
        /// The item: a depot value (CBOR); other bytes reach Python as `bytes`.
        item: &'a [u8],
        /// How long the manager may wait for room.
        wait: Wait,
    },
    /// `get()`, `get(True, timeout)` or `get_nowait()` by `wait`.
    Get {
        /// The object.
        ident: &'a str,
        /// How long the manager may wait for an item.
        wait: Wait,
    },
    /// `qsize()`.
    Qsize {
        /// The object.
        ident: &'a str,
    },
    /// `empty()`.
    Empty {
        /// The object.
        ident: &'a str,
    },
    /// `full()`.
    Full {
        /// The object.
        ident: &'a str,
    },
    /// `task_done()`.
    TaskDone {
        /// The object.
        ident: &'a str,
    },
    /// `join()`: blocks until every item put was marked done.
    Join {
        /// The object.
        ident: &'a str,
    },
}

/// The answer to a request.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PyReply<'b> {
    /// The call returned `None` (put, task_done, join, incref, decref, accept_connection).
    Done,
    /// `empty()` / `full()`.
    Bool(bool),
    /// `qsize()`.
    Int(i64),
    /// `create()`: the new reference's ident.
    Created {
        /// The object's ident.
        ident: &'b str,
    },
    /// `get()`: the item, as a depot value, is `item_out[..len]`.
    Item(usize),
    /// `queue.Empty` from a non-blocking get.
    Empty,
    /// `queue.Full` from a non-blocking put.
    Full,
    /// `queue.Empty` / `queue.Full` after a timed wait.
    Timeout,
    /// The manager has no such typeid or ident (its `KeyError` traceback).
    NoSuchObject,
    /// `get()` returned an item depot cannot convert: nested deeper than
    /// [`pickle::MAX_DEPTH`] or self-referential. It has left Python's queue.
    Unconvertible,
    /// The call raised another exception: `module.name(message)`.
    Raised {
        /// The exception's module (`builtins`, …).
        module: &'b str,
        /// The exception's class name.
        name: &'b str,
        /// Its first argument, when that is a str.
        message: Option<&'b str>,
    },
    /// The manager failed outside the call (`#TRACEBACK`, `#UNSERIALIZABLE`): its text.
    Traceback(&'b str),
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PyStep<'b> {
    /// Send `out[..len]` (a handshake frame), then read on.
    Send {
        /// Bytes of `out`.
        len: usize,
    },
    /// Send `out[..len]`; both sides proved the key and requests may be written.
    Connected {
        /// Bytes of `out`.
        len: usize,
    },
    /// The answer to the request written last.
    Reply(PyReply<'b>),
}

/// Why a Python connection failed. All but those asking for more room end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PyClientError {
    /// The manager refused our answer, or answered our challenge wrongly: different authkeys.
    AuthFailed,
    /// The manager asked for a digest depot does not compute (`sha3_*`).
    UnsupportedDigest,
    /// A frame the protocol does not allow here, or one that does not decode.
    Malformed,
    /// `out` cannot hold the frame to send (nothing was written; the state is unchanged).
    NoRoom,
    /// A got item does not fit `item_out`. The state is unchanged: hand the same frame again
    /// with a larger `item_out`. (The item has left Python's queue: dropping it here loses
    /// it.)
    ItemTooLarge,
    /// The reply needs more decode storage (nodes, stack or memo) than `scratch` has. The
    /// state is unchanged: hand the same frame again with more.
    NoScratch,
    /// A request this connection cannot carry now: the handshake has not finished, a call is
    /// outstanding, or it is the wrong kind of connection for the request.
    NotReady,
}

impl core::fmt::Display for PyClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PyClientError::AuthFailed => "authentication failed",
            PyClientError::UnsupportedDigest => "the manager asks for an unsupported digest",
            PyClientError::Malformed => "unexpected or malformed frame from the manager",
            PyClientError::NoRoom => "request too large for the output buffer",
            PyClientError::ItemTooLarge => "item too large",
            PyClientError::NoScratch => "reply too complex for the decode storage",
            PyClientError::NotReady => "connection not ready for this request",
        })
    }
}

impl core::error::Error for PyClientError {}

/// The reply shape a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Create,
    Unit,
    Accept,
    Put { timed: bool },
    Get { timed: bool },
    Int,
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitChallenge,
    AwaitVerdict,
    AwaitAnswer,
    Ready,
    Busy(Call),
    Done,
}

/// The client side of one connection to a Python manager. See the module docs.
#[derive(Debug, Clone)]
pub struct PyClient {
    state: State,
    /// The nonce of our challenge to the manager.
    nonce: [u8; NONCE_LEN],
    /// `accept_connection` succeeded: method calls follow.
    proxy: bool,
}

impl PyClient {
    /// A client on a fresh connection; `nonce` must be fresh random bytes.
    pub fn new(nonce: [u8; NONCE_LEN]) -> Self {
        PyClient {
            state: State::AwaitChallenge,
            nonce,
            proxy: false,
        }
    }

    /// The largest frame body to accept now: Python's 256 during the handshake, else `limit`.
    pub fn max_body(&self, limit: usize) -> usize {
        match self.state {
            State::AwaitChallenge | State::AwaitVerdict | State::AwaitAnswer => MAX_HANDSHAKE_BODY,
            _ => limit,
        }
    }

    /// Whether a request may be written now.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether a request awaits its reply.
    pub fn is_busy(&self) -> bool {
        matches!(self.state, State::Busy(_))
    }

    /// Whether this is a proxy connection (after `accept_connection`).
    pub fn is_proxy(&self) -> bool {
        self.proxy
    }

    /// Handles one whole frame body from the manager. `scratch` decodes replies, `item_out`
    /// receives a got item (CBOR), `out` a handshake frame to send.
    pub fn handle_frame<'b>(
        &mut self,
        key: &PyKey,
        body: &'b [u8],
        scratch: &'b mut Scratch<'_>,
        item_out: &mut [u8],
        out: &mut [u8],
    ) -> Result<PyStep<'b>, PyClientError> {
        let result = self.step(key, body, scratch, item_out, out);
        if let Err(e) = result {
            let keeps = matches!(
                e,
                PyClientError::ItemTooLarge | PyClientError::NoScratch | PyClientError::NoRoom
            );
            if !keeps {
                self.state = State::Done;
            }
        }
        result
    }

    fn step<'b>(
        &mut self,
        key: &PyKey,
        body: &'b [u8],
        scratch: &'b mut Scratch<'_>,
        item_out: &mut [u8],
        out: &mut [u8],
    ) -> Result<PyStep<'b>, PyClientError> {
        match self.state {
            State::AwaitChallenge => {
                let mut answer = [0; MAX_ANSWER_LEN];
                let n = handshake::answer_challenge(key, body, &mut answer).map_err(auth_error)?;
                let len = frame::write_frame(out, &answer[..n]).ok_or(PyClientError::NoRoom)?;
                self.state = State::AwaitVerdict;
                Ok(PyStep::Send { len })
            }
            State::AwaitVerdict => {
                if body == FAILURE {
                    return Err(PyClientError::AuthFailed);
                }
                if body != WELCOME {
                    return Err(PyClientError::Malformed);
                }
                let challenge = handshake::client_challenge_body(&self.nonce);
                let len = frame::write_frame(out, &challenge).ok_or(PyClientError::NoRoom)?;
                self.state = State::AwaitAnswer;
                Ok(PyStep::Send { len })
            }
            State::AwaitAnswer => {
                handshake::verify_manager_answer(key, &self.nonce, body).map_err(auth_error)?;
                let len = frame::write_frame(out, WELCOME).ok_or(PyClientError::NoRoom)?;
                self.state = State::Ready;
                Ok(PyStep::Connected { len })
            }
            State::Busy(call) => {
                let reply = reply(call, body, scratch, item_out)?;
                self.state = match call {
                    Call::Accept if reply == PyReply::Done => {
                        self.proxy = true;
                        State::Ready
                    }
                    _ if self.proxy => State::Ready,
                    // Python closes a public-function connection after its one reply.
                    _ => State::Done,
                };
                Ok(PyStep::Reply(reply))
            }
            // Python's manager sends nothing unasked.
            State::Ready | State::Done => Err(PyClientError::Malformed),
        }
    }

    /// Writes `request` as one frame into `out`; returns its length. `scratch` is needed to
    /// write back an item holding a stored pickle. `out` needs at most
    /// [`PyRequest::frame_bound`] bytes.
    pub fn write_request(
        &mut self,
        request: &PyRequest<'_>,
        scratch: &mut Scratch<'_>,
        out: &mut [u8],
    ) -> Result<usize, PyClientError> {
        if self.state != State::Ready {
            return Err(PyClientError::NotReady);
        }
        let public = matches!(
            request,
            PyRequest::Create { .. }
                | PyRequest::Incref { .. }
                | PyRequest::Decref { .. }
                | PyRequest::AcceptConnection { .. }
        );
        if public == self.proxy {
            return Err(PyClientError::NotReady);
        }
        let body = out
            .get_mut(frame::SHORT_HEADER..)
            .ok_or(PyClientError::NoRoom)?;
        let mut w = Writer::new(body);
        let call = write_call(&mut w, request, scratch);
        let len = w.finish().map_err(|_| PyClientError::NoRoom)?;
        if frame::header_len(len) != frame::SHORT_HEADER {
            return Err(PyClientError::NoRoom);
        }
        let header = frame::write_header(out, len).ok_or(PyClientError::NoRoom)?;
        self.state = State::Busy(call);
        Ok(header + len)
    }
}

/// Bytes a request frame takes beyond its item and its ident (or typeid, or name): header,
/// opcodes, method and timeout.
pub const REQUEST_OVERHEAD: usize = 64;

impl PyRequest<'_> {
    /// The most bytes [`PyClient::write_request`] writes for this request.
    pub fn frame_bound(&self) -> usize {
        let (text, item) = match *self {
            PyRequest::Create { typeid: s }
            | PyRequest::Incref { ident: s }
            | PyRequest::Decref { ident: s }
            | PyRequest::AcceptConnection { name: s } => (s, 0),
            PyRequest::Put { ident, item, .. } => (ident, item::pickle_bound(item.len())),
            PyRequest::Get { ident, .. }
            | PyRequest::Qsize { ident }
            | PyRequest::Empty { ident }
            | PyRequest::Full { ident }
            | PyRequest::TaskDone { ident }
            | PyRequest::Join { ident } => (ident, 0),
        };
        // A str longer than 255 bytes takes a 5-byte header instead of 2.
        REQUEST_OVERHEAD + text.len() + 9 + item
    }
}

fn auth_error(e: HandshakeError) -> PyClientError {
    match e {
        HandshakeError::WrongKey => PyClientError::AuthFailed,
        HandshakeError::UnsupportedDigest => PyClientError::UnsupportedDigest,
        HandshakeError::Malformed => PyClientError::Malformed,
    }
}

/// Python's wait arguments: `(method, block/timeout)`.
fn waiting(
    wait: Wait,
    nowait: &'static str,
    blocking: &'static str,
) -> (&'static str, Option<f64>) {
    match wait {
        Wait::NoWait => (nowait, None),
        Wait::Forever => (blocking, None),
        Wait::Millis(ms) => (blocking, Some(f64::from(ms) / 1000.0)),
    }
}

/// Writes `(ident, method, args, {})` and returns the reply shape it expects.
fn write_call(w: &mut Writer<'_>, request: &PyRequest<'_>, scratch: &mut Scratch<'_>) -> Call {
    w.proto().mark();
    let (ident, method, call) = match *request {
        PyRequest::Create { .. } => (None, "create", Call::Create),
        PyRequest::Incref { .. } => (None, "incref", Call::Unit),
        PyRequest::Decref { .. } => (None, "decref", Call::Unit),
        PyRequest::AcceptConnection { .. } => (None, "accept_connection", Call::Accept),
        PyRequest::Put { ident, wait, .. } => {
            let (m, t) = waiting(wait, "put_nowait", "put");
            (Some(ident), m, Call::Put { timed: t.is_some() })
        }
        PyRequest::Get { ident, wait } => {
            let (m, t) = waiting(wait, "get_nowait", "get");
            (Some(ident), m, Call::Get { timed: t.is_some() })
        }
        PyRequest::Qsize { ident } => (Some(ident), "qsize", Call::Int),
        PyRequest::Empty { ident } => (Some(ident), "empty", Call::Bool),
        PyRequest::Full { ident } => (Some(ident), "full", Call::Bool),
        PyRequest::TaskDone { ident } => (Some(ident), "task_done", Call::Unit),
        PyRequest::Join { ident } => (Some(ident), "join", Call::Unit),
    };
    match ident {
        Some(i) => w.str(i.as_bytes()),
        None => w.none(),
    };
    w.str(method.as_bytes());
    match *request {
        PyRequest::Create { typeid: s }
        | PyRequest::Incref { ident: s }
        | PyRequest::Decref { ident: s }
        | PyRequest::AcceptConnection { name: s } => {
            w.str(s.as_bytes()).tuple(1);
        }
        PyRequest::Put { item, wait, .. } => {
            item::to_pickle(item, w, scratch);
            match waiting(wait, "", "").1 {
                Some(secs) => w.bool(true).float(secs).tuple(3),
                None => w.tuple(1),
            };
        }
        PyRequest::Get { wait, .. } => {
            match waiting(wait, "", "").1 {
                Some(secs) => w.bool(true).float(secs).tuple(2),
                None => w.tuple(0),
            };
        }
        _ => {
            w.tuple(0);
        }
    }
    w.empty_dict().tuple_from_mark().stop();
    call
}

/// Decodes `(kind, value)` and checks it against the call.
fn reply<'b>(
    call: Call,
    body: &'b [u8],
    scratch: &'b mut Scratch<'_>,
    item_out: &mut [u8],
) -> Result<PyReply<'b>, PyClientError> {
    let p = pickle::decode(body, scratch).map_err(|e| match e {
        PickleError::TooManyNodes | PickleError::StackFull | PickleError::MemoFull => {
            PyClientError::NoScratch
        }
        _ => PyClientError::Malformed,
    })?;
    let mut parts = p.tuple(p.root).ok_or(PyClientError::Malformed)?;
    let (Some(kind), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(PyClientError::Malformed);
    };
    match p.str(kind).ok_or(PyClientError::Malformed)? {
        "#RETURN" => returned(call, &p, value, item_out),
        "#ERROR" => Ok(raised(call, &p, value)),
        "#TRACEBACK" | "#UNSERIALIZABLE" => {
            let text = p.str(value).ok_or(PyClientError::Malformed)?;
            Ok(if last_line(text).starts_with("KeyError") {
                PyReply::NoSuchObject
            } else {
                PyReply::Traceback(text)
            })
        }
        _ => Err(PyClientError::Malformed),
    }
}

fn returned<'b>(
    call: Call,
    p: &Pickle<'b>,
    value: u32,
    item_out: &mut [u8],
) -> Result<PyReply<'b>, PyClientError> {
    let node = p.node(value).ok_or(PyClientError::Malformed)?;
    match (call, node) {
        (Call::Get { .. }, _) => match item::to_cbor(p, value, item_out) {
            Ok(len) => Ok(PyReply::Item(len)),
            Err(ItemError::TooLarge) => Err(PyClientError::ItemTooLarge),
            Err(ItemError::TooComplex) => Ok(PyReply::Unconvertible),
        },
        (Call::Create, Node::Tuple(_)) => {
            let mut fields = p.tuple(value).ok_or(PyClientError::Malformed)?;
            let ident = fields
                .next()
                .and_then(|i| p.str(i))
                .ok_or(PyClientError::Malformed)?;
            Ok(PyReply::Created { ident })
        }
        (Call::Unit | Call::Accept | Call::Put { .. }, Node::None) => Ok(PyReply::Done),
        (Call::Int, Node::Int(v)) => Ok(PyReply::Int(v)),
        (Call::Bool, Node::Bool(v)) => Ok(PyReply::Bool(v)),
        _ => Err(PyClientError::Malformed),
    }
}

/// An `#ERROR` value: the exception instance Python pickled (`REDUCE` of its class and args).
fn raised<'b>(call: Call, p: &Pickle<'b>, value: u32) -> PyReply<'b> {
    let (module, name, message) = exception(p, value).unwrap_or(("", "", None));
    let queue_module = matches!(module, "queue" | "_queue");
    match (call, name) {
        (Call::Get { timed }, "Empty") if queue_module => {
            if timed {
                PyReply::Timeout
            } else {
                PyReply::Empty
            }
        }
        (Call::Put { timed }, "Full") if queue_module => {
            if timed {
                PyReply::Timeout
            } else {
                PyReply::Full
            }
        }
        _ => PyReply::Raised {
            module,
            name,
            message,
        },
    }
}

/// `(module, name, first str argument)` of a pickled exception instance.
fn exception<'b>(p: &Pickle<'b>, i: u32) -> Option<(&'b str, &'b str, Option<&'b str>)> {
    let (cls, args) = match p.node(i)? {
        Node::Reduce { func, args, .. } => (func, args),
        Node::NewObj { cls, args, .. } => (cls, args),
        _ => return None,
    };
    let Node::Global { module, name } = p.node(cls)? else {
        return None;
    };
    let module = core::str::from_utf8(p.bytes(module)).ok()?;
    let name = core::str::from_utf8(p.bytes(name)).ok()?;
    let message = p
        .tuple(args)
        .and_then(|mut a| a.next())
        .and_then(|m| p.str(m));
    Some((module, name, message))
}

/// The last non-empty line of a traceback (where Python names the exception).
fn last_line(text: &str) -> &str {
    text.trim_end().rsplit('\n').next().unwrap_or("")
}
