//! One Python connection, from the manager's side: handshake, then requests.
//!
//! The manager sends [`challenge_frame`] when it accepts a connection. When the first frame
//! arrives and its body does not start with depot's `MAGIC`, the connection is a Python one:
//! the manager makes a [`PyConn`] and hands it every whole frame body ([`PyConn::max_body`]
//! bounds them; [`super::frame::peek`] finds them). Each call returns a [`Step`]:
//!
//! - [`Step::Send`]: write `out[..len]` (a whole frame) to the peer; if `close`, close the
//!   connection once it is sent.
//! - [`Step::Execute`]: run the [`Op`] on the registry and queues exactly as for a depot
//!   client, now or later (a `get` on an empty queue parks as usual), then hand its [`Reply`]
//!   to [`PyConn::handle_reply`], which writes the frame to send. Python sends nothing while a
//!   call is outstanding; a frame that arrives anyway closes the connection.
//! - [`Step::Wait`]: nothing to send; read on.
//! - [`Step::Close`]: close the connection without sending anything more.
//!
//! Python's own rules decide the shape of every reply: public functions answer `#RETURN` or
//! `#TRACEBACK` and the connection closes after one reply; after `accept_connection` the
//! connection carries proxy calls, whose failures are `#ERROR` with the exception Python code
//! catches (`queue.Empty`, `queue.Full`, `TypeError`, `ValueError`).
//!
//! The remote-function idiom `register('close')` (or `'stop'`), then `m.close()`, is a `create`
//! of that typeid. When no queue has that name it asks for the manager's remote shutdown
//! ([`Step::Stop`]): if allowed, the client gets [`STOP_IDENT`] (exposing nothing), whose
//! `incref`/`decref` always succeed, and the manager stops [`STOP_GRACE_MS`] later, so the
//! client's follow-up connections are still answered (CPython's own example delays its stop
//! the same way); if not, `create` answers `#TRACEBACK` and the client raises.
//!
//! An object's ident is `dq` and its handle in hex: any string serves Python clients, and this
//! one works on every connection without a table. Depot does not count proxy references (a
//! queue lives as long as the manager, as `lambda: q` does in Python): `incref` and `decref`
//! only check that the object exists.

use crate::wire::{
    Action, ErrorCode, Handle, ManagerStatus, ObjectKind, Op, QueueSize, Reply, Wait, NONCE_LEN,
};

use super::frame::{self, MAX_HANDSHAKE_BODY};
use super::handshake::{self, PyKey, CHALLENGE_BODY_LEN, FAILURE, MAX_ANSWER_LEN, WELCOME};
use super::item;
use super::objects::{self, Build, IndexAction, KeyAction, ObjCall, ValueAction};
use super::pickle::{self, Node, Pickle, Scratch, Writer};

/// The methods a depot queue exposes to Python proxies: `queue.Queue`'s, as Python 3.8–3.12
/// managers list them.
pub const EXPOSED: [&str; 9] = [
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
];

/// The ident of the token a remote `close`/`stop` returns (not a queue's: those start `dq`).
pub const STOP_IDENT: &str = "depot-stop";

/// Typeids that stop the manager when no queue has that name.
pub const STOP_NAMES: [&str; 2] = ["close", "stop"];

/// How long after a granted `close`/`stop` the manager begins its shutdown: long enough for
/// the client's `incref` and `decref` connections that follow the reply.
pub const STOP_GRACE_MS: u32 = 300;

/// Output bytes any reply other than a `get`'s needs, frame header included.
pub const SMALL_REPLY_BOUND: usize = 512;

/// Output bytes the reply to a `get` of a stored item of `item_len` bytes may need.
pub const fn item_reply_bound(item_len: usize) -> usize {
    // Header, `PROTO`, `'#RETURN'`, `TUPLE2`, `STOP`.
    frame::SHORT_HEADER + 2 + 9 + 2 + item::pickle_bound(item_len)
}

/// Depot's challenge frame for the connection whose fresh nonce is `nonce`: send it on accept.
pub fn challenge_frame(nonce: &[u8; NONCE_LEN]) -> [u8; 4 + CHALLENGE_BODY_LEN] {
    let mut out = [0; 4 + CHALLENGE_BODY_LEN];
    out[..4].copy_from_slice(&(CHALLENGE_BODY_LEN as u32).to_be_bytes());
    out[4..].copy_from_slice(&handshake::challenge_body(nonce));
    out
}

/// What the manager does next for a Python connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Step<'b> {
    /// Send `out[..len]`; then read on, or close once it is sent if `close`.
    Send {
        /// Bytes of `out` to send (one frame).
        len: usize,
        /// Close after sending.
        close: bool,
    },
    /// Run this operation and hand its reply to [`PyConn::handle_reply`] (now or later).
    Execute(Op<'b>),
    /// Nothing to send; read on.
    Wait,
    /// Close now.
    Close(PyClose),
    /// The client called a registered `close`/`stop` and no queue has that name: the
    /// manager's remote shutdown. Hand [`PyConn::handle_reply`] `Reply::Done` if the manager
    /// will stop (after [`STOP_GRACE_MS`]), `Reply::Error(ErrorCode::NotAllowed)` if not.
    Stop,
}

/// Why a Python connection ends without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PyClose {
    /// The client refused the manager's answer (a different authkey).
    AuthFailed,
    /// A frame that the protocol does not allow here (or a malformed handshake message).
    Unexpected,
    /// `out` cannot hold the reply. After [`PyConn::handle_reply`] nothing changed: the
    /// call still awaits an answer (give it a smaller one, such as an error, or close).
    NoRoom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Create,
    /// `create` of a name in [`STOP_NAMES`]: a queue's, else a remote stop.
    CreateOrStop,
    /// The manager was asked to stop.
    Stop,
    Exists,
    GetMethods(ObjectKind),
    NumberOfObjects,
    DebugInfo,
    Shutdown,
    Put,
    Get,
    Qsize,
    Empty,
    Full,
    TaskDone,
    Join,
    /// A method of an object beside queues (see `super::objects`).
    Object(ObjCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitAnswer { nonce: [u8; NONCE_LEN] },
    AwaitChallenge,
    AwaitVerdict,
    Ready,
    Busy(Call),
    Done,
}

/// The Python side of one connection. See the module docs.
#[derive(Debug, Clone)]
pub struct PyConn {
    state: State,
    /// `accept_connection` was called: proxy calls follow, replies keep the connection open.
    proxy: bool,
    /// Both sides proved the key.
    authenticated: bool,
}

/// What a reply carries: the Python value after `'#RETURN'`, or an error.
pub(super) enum Out<'a> {
    None,
    Bool(bool),
    Int(i64),
    Text(&'a str),
    Created(Handle, ObjectKind),
    /// The token of a granted stop: `(STOP_IDENT, ())`.
    StopToken,
    Exposed(ObjectKind),
    Status(ManagerStatus),
    Item(&'a [u8]),
    /// A list made from a dict's packed entries (key, value, key, value, …).
    List(&'a [u8], objects::ListOf),
    /// `#ERROR` with `module.name(message)`.
    Error(&'a str, &'a str, Option<&'a str>),
    /// `#TRACEBACK` with this text.
    Traceback(&'a str, &'a str),
}

impl PyConn {
    /// A Python connection that was sent [`challenge_frame`]`(nonce)`; its first frame body
    /// goes to [`PyConn::handle_frame`].
    pub fn new(nonce: [u8; NONCE_LEN]) -> Self {
        PyConn {
            state: State::AwaitAnswer { nonce },
            proxy: false,
            authenticated: false,
        }
    }

    /// The largest frame body to accept now: Python's 256 during the handshake, else `limit`.
    pub fn max_body(&self, limit: usize) -> usize {
        match self.state {
            State::AwaitAnswer { .. } | State::AwaitChallenge | State::AwaitVerdict => {
                MAX_HANDSHAKE_BODY
            }
            _ => limit,
        }
    }

    /// Whether both sides proved the key.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether an [`Step::Execute`]d operation awaits its reply.
    pub fn is_busy(&self) -> bool {
        matches!(self.state, State::Busy(_))
    }

    /// Forgets the operation last [`Step::Execute`]d, which the manager could not run yet
    /// (no output room): the same frame is handed to [`PyConn::handle_frame`] again later.
    pub fn retry(&mut self) {
        if let State::Busy(_) = self.state {
            self.state = State::Ready;
        }
    }

    /// Handles one whole frame body. `scratch` decodes requests; a `put`'s item is converted
    /// into `item` (its size bounds the items Python can put); `out` receives the frame to send.
    pub fn handle_frame<'b>(
        &mut self,
        key: &PyKey,
        body: &'b [u8],
        scratch: &'b mut Scratch<'_>,
        item: &'b mut [u8],
        out: &mut [u8],
    ) -> Step<'b> {
        match self.state {
            State::AwaitAnswer { nonce } => match handshake::verify_answer(key, &nonce, body) {
                Ok(_) => {
                    self.state = State::AwaitChallenge;
                    send(out, WELCOME, false)
                }
                Err(_) => {
                    debug!("python: authentication failed");
                    self.state = State::Done;
                    send(out, FAILURE, true)
                }
            },
            State::AwaitChallenge => {
                let mut answer = [0; MAX_ANSWER_LEN];
                match handshake::answer_challenge(key, body, &mut answer) {
                    Ok(n) => {
                        self.state = State::AwaitVerdict;
                        send(out, &answer[..n], false)
                    }
                    Err(_) => self.close(PyClose::Unexpected),
                }
            }
            State::AwaitVerdict => {
                if body == WELCOME {
                    self.state = State::Ready;
                    self.authenticated = true;
                    Step::Wait
                } else if body == FAILURE {
                    self.close(PyClose::AuthFailed)
                } else {
                    self.close(PyClose::Unexpected)
                }
            }
            State::Ready => self.request(body, scratch, item, out),
            State::Busy(_) | State::Done => self.close(PyClose::Unexpected),
        }
    }

    /// Writes the answer to the operation [`Step::Execute`] asked for. `scratch` may be needed
    /// to write back a stored pickle. `out` must hold [`SMALL_REPLY_BOUND`] bytes; a `get`'s
    /// reply needs at most [`item_reply_bound`] of the item, usually about the item's length.
    /// If the reply does not fit, this returns [`Step::Close`]`(`[`PyClose::NoRoom`]`)` and
    /// changes nothing: leave the item queued and answer `Reply::Error(ErrorCode::TooLarge)`.
    pub fn handle_reply(
        &mut self,
        reply: &Reply<'_>,
        scratch: &mut Scratch<'_>,
        out: &mut [u8],
    ) -> Step<'static> {
        let State::Busy(call) = self.state else {
            return self.close(PyClose::Unexpected);
        };
        self.state = State::Ready;
        let step = self.answer(call, reply, scratch, out);
        if step == Step::Close(PyClose::NoRoom) {
            self.state = State::Busy(call);
        }
        step
    }

    fn answer(
        &mut self,
        call: Call,
        reply: &Reply<'_>,
        scratch: &mut Scratch<'_>,
        out: &mut [u8],
    ) -> Step<'static> {
        let o = match (&call, *reply) {
            // The manager's built-in `close`: `create` runs it, as Python's runs a callable.
            (Call::CreateOrStop, Reply::Opened(info)) if info.handle == Handle::CLOSE => {
                self.state = State::Busy(Call::Stop);
                return Step::Stop;
            }
            (Call::Create | Call::CreateOrStop, Reply::Opened(info)) => {
                Out::Created(info.handle, info.kind)
            }
            (Call::Object(c), reply) => objects::answer(c, &reply),
            (Call::CreateOrStop, Reply::Error(ErrorCode::NoSuchObject)) => {
                self.state = State::Busy(Call::Stop);
                return Step::Stop;
            }
            (Call::Stop, Reply::Done) => Out::StopToken,
            (Call::Stop, Reply::Error(ErrorCode::NotAllowed)) => Out::Traceback(
                "RuntimeError",
                "this depot manager does not allow remote shutdown",
            ),
            (Call::GetMethods(kind), Reply::Size(_) | Reply::Count(_)) => Out::Exposed(*kind),
            (
                Call::Exists | Call::Put | Call::TaskDone | Call::Join | Call::Shutdown,
                Reply::Done,
            )
            | (Call::Exists, Reply::Size(_) | Reply::Count(_)) => Out::None,
            (Call::NumberOfObjects, Reply::Status(s)) => Out::Int(s.objects.into()),
            (Call::DebugInfo, Reply::Status(s)) => Out::Status(s),
            (Call::Get, Reply::Item { item, .. }) => Out::Item(item),
            (Call::Qsize, Reply::Size(s)) => Out::Int(s.len.into()),
            (Call::Empty, Reply::Size(QueueSize { len, .. })) => Out::Bool(len == 0),
            (Call::Full, Reply::Size(QueueSize { full, .. })) => Out::Bool(full),
            (_, Reply::Error(code)) => error_out(call, code),
            _ => Out::Traceback("RuntimeError", "unexpected reply from the manager"),
        };
        self.reply(o, scratch, out)
    }

    fn close(&mut self, why: PyClose) -> Step<'static> {
        self.state = State::Done;
        Step::Close(why)
    }

    /// Writes a reply frame; one-shot connections close after it.
    fn reply<'b>(&mut self, o: Out<'_>, scratch: &mut Scratch<'_>, out: &mut [u8]) -> Step<'b> {
        let before = self.state;
        let close = !self.proxy;
        if close {
            self.state = State::Done;
        }
        let written = out.get_mut(frame::SHORT_HEADER..).and_then(|body| {
            let mut w = Writer::new(body);
            write_reply(&mut w, &o, scratch);
            w.finish().ok()
        });
        match written.and_then(|len| Some(frame::write_header(out, len)? + len)) {
            Some(len) => Step::Send { len, close },
            None => {
                // Nothing is lost: the caller may answer again (with an error) or close.
                self.state = before;
                Step::Close(PyClose::NoRoom)
            }
        }
    }

    fn execute<'b>(&mut self, call: Call, op: Op<'b>) -> Step<'b> {
        self.state = State::Busy(call);
        Step::Execute(op)
    }

    fn request<'b>(
        &mut self,
        body: &'b [u8],
        scratch: &'b mut Scratch<'_>,
        item: &'b mut [u8],
        out: &mut [u8],
    ) -> Step<'b> {
        let mut no_scratch = Scratch {
            nodes: &mut [],
            stack: &mut [],
            memo: &mut [],
        };
        let p = match pickle::decode(body, scratch) {
            Ok(p) => p,
            Err(e) => {
                debug!("python: undecodable request: {:?}", e);
                let text = match e {
                    pickle::PickleError::TooManyNodes
                    | pickle::PickleError::StackFull
                    | pickle::PickleError::MemoFull => "request too complex for this manager",
                    pickle::PickleError::UnsupportedOpcode(_) => "unsupported pickle opcode",
                    _ => "malformed pickle",
                };
                return self.reply(
                    Out::Traceback("UnpicklingError", text),
                    &mut no_scratch,
                    out,
                );
            }
        };
        let parsed = parse(&p);
        let Some((ident, method, args, kwds)) = parsed else {
            return self.reply(
                Out::Traceback("ValueError", "a request is (ident, method, args, kwds)"),
                &mut no_scratch,
                out,
            );
        };
        let o = if self.proxy {
            match self.proxy_call(&p, ident, method, args, kwds, item) {
                Ok((call, op)) => return self.execute(call, op),
                Err(o) => o,
            }
        } else {
            match self.public(&p, method, args, kwds) {
                Ok((call, op)) => return self.execute(call, op),
                Err(o) => o,
            }
        };
        self.reply(o, &mut no_scratch, out)
    }

    /// A public function on a fresh connection (`Err`: the answer, given at once).
    fn public<'b>(
        &mut self,
        p: &Pickle<'b>,
        method: &'b str,
        args: Args<'b>,
        kwds: Args<'b>,
    ) -> Result<(Call, Op<'b>), Out<'b>> {
        let one_arg = || -> Option<u32> {
            let mut a = args.clone();
            let first = a.next();
            (a.next().is_none() && kwds.len() == 0)
                .then_some(first)
                .flatten()
        };
        let no_args = args.len() == 0 && kwds.len() == 0;
        let bad_args = Out::Traceback("TypeError", "wrong arguments");
        match method {
            "dummy" if no_args => Err(Out::None),
            "accept_connection" => {
                // The argument names the client thread; informational only.
                self.proxy = true;
                Err(Out::None)
            }
            "create" => {
                let typeid = one_arg().and_then(|i| p.str(i)).ok_or(Out::Traceback(
                    "TypeError",
                    "create() takes a typeid and no arguments for a depot queue",
                ))?;
                let call = if STOP_NAMES.contains(&typeid) {
                    Call::CreateOrStop
                } else {
                    Call::Create
                };
                Ok((call, Op::Open { name: typeid }))
            }
            "incref" | "decref" => {
                let ident = one_arg().and_then(|i| p.str(i));
                if ident == Some(STOP_IDENT) {
                    // A stop token holds nothing to count.
                    return Err(Out::None);
                }
                let (handle, kind) = ident
                    .and_then(parse_ident)
                    .ok_or(Out::Traceback("KeyError", "no such ident"))?;
                Ok((Call::Exists, exists_op(handle, kind)))
            }
            "get_methods" => {
                let (handle, kind) = one_arg()
                    .and_then(|i| token_ident(p, i))
                    .and_then(parse_ident)
                    .ok_or(Out::Traceback("KeyError", "no such ident"))?;
                Ok((Call::GetMethods(kind), exists_op(handle, kind)))
            }
            "number_of_objects" if no_args => Ok((Call::NumberOfObjects, Op::Status)),
            "debug_info" if no_args => Ok((Call::DebugInfo, Op::Status)),
            "shutdown" if no_args => Ok((Call::Shutdown, Op::Shutdown)),
            "dummy" | "number_of_objects" | "debug_info" | "shutdown" => Err(bad_args),
            _ => Err(Out::Traceback("AssertionError", "unrecognized function")),
        }
    }

    /// A method call on a proxy connection (`Err`: the answer, given at once).
    fn proxy_call<'b>(
        &mut self,
        p: &Pickle<'b>,
        ident: Option<&'b str>,
        method: &'b str,
        args: Args<'b>,
        kwds: Args<'b>,
        item_buf: &'b mut [u8],
    ) -> Result<(Call, Op<'b>), Out<'b>> {
        let (handle, kind) = ident
            .and_then(parse_ident)
            .ok_or(Out::Traceback("KeyError", "no such ident"))?;
        if kind != ObjectKind::Queue {
            return object_call(p, kind, handle, method, args, kwds, item_buf);
        }
        let (call, params): (Call, &[&str]) = match method {
            "put" => (Call::Put, &["item", "block", "timeout"]),
            "put_nowait" => (Call::Put, &["item"]),
            "get" => (Call::Get, &["block", "timeout"]),
            "get_nowait" => (Call::Get, &[]),
            "qsize" => (Call::Qsize, &[]),
            "empty" => (Call::Empty, &[]),
            "full" => (Call::Full, &[]),
            "task_done" => (Call::TaskDone, &[]),
            "join" => (Call::Join, &[]),
            "__repr__" | "__str__" => return Err(Out::Text("<depot queue>")),
            _ => {
                return Err(Out::Traceback(
                    "AttributeError",
                    "method not exposed by a depot queue",
                ))
            }
        };
        let mut bound = [pickle::NIL; 3];
        bind(p, params, args, kwds, &mut bound)
            .map_err(|m| Out::Error("builtins", "TypeError", Some(m)))?;
        let nowait = method.ends_with("_nowait");
        let (block, timeout) = match call {
            Call::Put => (bound[1], bound[2]),
            _ => (bound[0], bound[1]),
        };
        let wait = if nowait {
            Wait::NoWait
        } else {
            wait_of(p, block, timeout)?
        };
        let op = match call {
            Call::Put => {
                let n = item::to_cbor(p, bound[0], item_buf).map_err(|e| {
                    Out::Error(
                        "builtins",
                        "ValueError",
                        Some(match e {
                            item::ItemError::TooLarge => "item too large for this manager",
                            item::ItemError::TooComplex => "item nested too deeply",
                        }),
                    )
                })?;
                Op::Put {
                    handle,
                    item: &item_buf[..n],
                    wait,
                }
            }
            Call::Get => Op::Get { handle, wait },
            Call::TaskDone => Op::TaskDone { handle },
            Call::Join => Op::Join {
                handle,
                wait: Wait::Forever,
            },
            _ => Op::Size { handle },
        };
        Ok((call, op))
    }
}

type Args<'b> = pickle::Items<'b>;

/// An op that succeeds when the object `handle` of `kind` exists.
fn exists_op(handle: Handle, kind: ObjectKind) -> Op<'static> {
    match kind {
        ObjectKind::Queue => Op::Size { handle },
        _ => Op::Act {
            handle,
            action: Action::Count,
        },
    }
}

/// A list index or a count that is not an integer.
fn int_error() -> Out<'static> {
    Out::Error(
        "builtins",
        "TypeError",
        Some("indices and counts must be integers"),
    )
}

/// A method call on an object beside queues (`Err`: the answer, given at once).
fn object_call<'b>(
    p: &Pickle<'b>,
    kind: ObjectKind,
    handle: Handle,
    name: &'b str,
    args: Args<'b>,
    kwds: Args<'b>,
    item_buf: &'b mut [u8],
) -> Result<(Call, Op<'b>), Out<'b>> {
    if matches!(name, "__repr__" | "__str__") {
        return Err(Out::Text(kind.name()));
    }
    let m = objects::method(kind, name).ok_or(Out::Traceback(
        "AttributeError",
        "method not exposed by this depot object",
    ))?;
    let mut bound = [pickle::NIL; 3];
    bind(p, m.params, args, kwds, &mut bound)
        .map_err(|m| Out::Error("builtins", "TypeError", Some(m)))?;
    if bound[..m.required].contains(&pickle::NIL) {
        return Err(Out::Error(
            "builtins",
            "TypeError",
            Some("missing a required argument"),
        ));
    }
    let value_error = |e| {
        Out::Error(
            "builtins",
            "ValueError",
            Some(match e {
                item::ItemError::TooLarge => "value too large for this manager",
                item::ItemError::TooComplex => "value nested too deeply",
            }),
        )
    };
    // Two values (a key and a value, or an expected and a new value) share the buffer.
    let half = item_buf.len() / 2;
    let mut call = m.call;
    let action = match m.action {
        Build::Fixed(action) => action,
        Build::Wait => Action::Wait {
            wait: wait_of(p, pickle::NIL, bound[0])?,
        },
        Build::Acquire => {
            let blocking = bound[0] == pickle::NIL || truthy(p, bound[0]);
            let timeout = match p.node(bound[1]) {
                None | Some(Node::None) => None,
                Some(Node::Int(v)) => Some(v as f64),
                Some(Node::Float(v)) => Some(v),
                Some(_) => {
                    return Err(Out::Error(
                        "builtins",
                        "TypeError",
                        Some("'timeout' must be a number or None"),
                    ))
                }
            };
            Action::Acquire {
                wait: objects::acquire_wait(blocking, timeout),
            }
        }
        Build::Put => {
            let n = item::to_cbor(p, bound[0], item_buf).map_err(value_error)?;
            Action::Put {
                value: &item_buf[..n],
            }
        }
        Build::CompareAndSet => {
            let (first, second) = item_buf.split_at_mut(half);
            let a = item::to_cbor(p, bound[0], first).map_err(value_error)?;
            let b = item::to_cbor(p, bound[1], second).map_err(value_error)?;
            Action::CompareAndSet {
                expected: &first[..a],
                value: &second[..b],
            }
        }
        Build::Key(k) => {
            let n = item::to_cbor(p, bound[0], item_buf).map_err(value_error)?;
            let key = &item_buf[..n];
            match k {
                KeyAction::Lookup => Action::Lookup { key },
                KeyAction::Remove => Action::Remove { key },
            }
        }
        Build::KeyOr(k) => {
            if bound[1] != pickle::NIL {
                call = ObjCall::ItemOr(
                    objects::Fallback::new(|buf| item::to_cbor(p, bound[1], buf)).map_err(|e| {
                        match e {
                            item::ItemError::TooLarge => Out::Error(
                                "builtins",
                                "ValueError",
                                Some("a dict's default is limited to 32 bytes"),
                            ),
                            e => value_error(e),
                        }
                    })?,
                );
            }
            let n = item::to_cbor(p, bound[0], item_buf).map_err(value_error)?;
            let key = &item_buf[..n];
            match k {
                KeyAction::Lookup => Action::Lookup { key },
                KeyAction::Remove => Action::Remove { key },
            }
        }
        Build::Request => {
            let request = if bound[0] == pickle::NIL {
                &crate::objects::NULL[..]
            } else {
                let n = item::to_cbor(p, bound[0], item_buf).map_err(value_error)?;
                &item_buf[..n]
            };
            Action::Call {
                request,
                wait: Wait::Forever,
            }
        }
        Build::Attribute => {
            let (c, action) = match p.str(bound[0]) {
                Some("parties") => (ObjCall::Int, Action::Parties),
                Some("n_waiting") => (ObjCall::Int, Action::Count),
                Some("broken") => (ObjCall::Flag, Action::IsBroken),
                _ => {
                    return Err(Out::Error(
                        "builtins",
                        "AttributeError",
                        Some("a barrier has only parties, n_waiting and broken"),
                    ))
                }
            };
            call = c;
            action
        }
        Build::Insert => {
            let (first, second) = item_buf.split_at_mut(half);
            let a = item::to_cbor(p, bound[0], first).map_err(value_error)?;
            let b = item::to_cbor(p, bound[1], second).map_err(value_error)?;
            Action::Insert {
                key: &first[..a],
                value: &second[..b],
            }
        }
        Build::Notify => Action::Notify {
            n: match p.node(bound[0]) {
                None | Some(Node::None) => 1,
                Some(Node::Int(n)) => n.clamp(0, i64::from(u32::MAX)) as u32,
                Some(_) => return Err(int_error()),
            },
        },
        Build::Index(a) => {
            let index = match p.node(bound[0]) {
                None | Some(Node::None) => -1,
                Some(Node::Int(n)) => n.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                Some(_) => return Err(int_error()),
            };
            match a {
                IndexAction::Pop => Action::PopAt { index },
                _ => Action::At { index },
            }
        }
        Build::IndexValue(a) => {
            let index = match p.node(bound[0]) {
                Some(Node::Int(n)) => n.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                _ => return Err(int_error()),
            };
            let n = item::to_cbor(p, bound[1], item_buf).map_err(value_error)?;
            let value = &item_buf[..n];
            match a {
                IndexAction::Insert => Action::InsertAt { index, value },
                _ => Action::Replace { index, value },
            }
        }
        Build::Value(a) => {
            let n = item::to_cbor(p, bound[0], item_buf).map_err(value_error)?;
            let value = &item_buf[..n];
            match a {
                ValueAction::Append => Action::Append { value },
                ValueAction::Find => Action::Find { value },
                ValueAction::CountOf => Action::CountOf { value },
                ValueAction::Remove => Action::RemoveValue { value },
            }
        }
        Build::WaitKey => {
            let wait = wait_of(p, pickle::NIL, bound[1])?;
            let n = item::to_cbor(p, bound[0], item_buf).map_err(value_error)?;
            Action::WaitKey {
                key: &item_buf[..n],
                wait,
            }
        }
    };
    Ok((Call::Object(call), Op::Act { handle, action }))
}

/// `(ident, method, args, kwds)`.
fn parse<'b>(p: &Pickle<'b>) -> Option<(Option<&'b str>, &'b str, Args<'b>, Args<'b>)> {
    let mut parts = p.tuple(p.root)?;
    let (ident, method, args, kwds) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let ident = match p.node(ident)? {
        Node::None => None,
        _ => Some(p.str(ident)?),
    };
    let kwds = match p.node(kwds)? {
        Node::Dict(seq) => p.items(seq),
        _ => return None,
    };
    Some((ident, p.str(method)?, p.tuple(args)?, kwds))
}

/// Binds positional and keyword arguments to `params` as Python does; unbound ones stay NIL.
/// The first parameter of `put` is required.
fn bind(
    p: &Pickle<'_>,
    params: &[&str],
    args: Args<'_>,
    mut kwds: Args<'_>,
    bound: &mut [u32; 3],
) -> Result<(), &'static str> {
    if args.len() > params.len() {
        return Err("too many positional arguments");
    }
    for (k, a) in args.enumerate() {
        bound[k] = a;
    }
    while let Some(key) = kwds.next() {
        let value = kwds.next().ok_or("malformed keyword arguments")?;
        let name = p.str(key).ok_or("keywords must be strings")?;
        let k = params
            .iter()
            .position(|&n| n == name)
            .ok_or("an unexpected keyword argument")?;
        if bound[k] != pickle::NIL {
            return Err("multiple values for an argument");
        }
        bound[k] = value;
    }
    if params.first() == Some(&"item") && bound[0] == pickle::NIL {
        return Err("missing required argument: 'item'");
    }
    Ok(())
}

/// Python's `Queue.get/put(block, timeout)` rules as a depot wait.
fn wait_of<'b>(p: &Pickle<'_>, block: u32, timeout: u32) -> Result<Wait, Out<'b>> {
    let blocking = block == pickle::NIL || truthy(p, block);
    if !blocking {
        return Ok(Wait::NoWait);
    }
    let secs = match p.node(timeout) {
        None | Some(Node::None) => return Ok(Wait::Forever),
        Some(Node::Int(v)) => v as f64,
        Some(Node::Bool(b)) => f64::from(u8::from(b)),
        Some(Node::Float(v)) => v,
        Some(Node::Long(_)) => return Ok(Wait::Forever),
        Some(_) => {
            return Err(Out::Error(
                "builtins",
                "TypeError",
                Some("'timeout' must be a number or None"),
            ))
        }
    };
    if secs < 0.0 || secs.is_nan() {
        return Err(Out::Error(
            "builtins",
            "ValueError",
            Some("'timeout' must be a non-negative number"),
        ));
    }
    let ms = secs * 1000.0;
    if ms >= u32::MAX as f64 {
        return Ok(Wait::Forever);
    }
    // Round up: never return before the time asked for.
    let whole = ms as u32;
    Ok(Wait::Millis(if (whole as f64) < ms {
        whole + 1
    } else {
        whole
    }))
}

/// Python truthiness of a decoded value (objects count as true, as without `__bool__`).
fn truthy(p: &Pickle<'_>, i: u32) -> bool {
    match p.node(i) {
        Some(Node::None) => false,
        Some(Node::Bool(b)) => b,
        Some(Node::Int(v)) => v != 0,
        Some(Node::Float(v)) => v != 0.0,
        Some(Node::Str(s) | Node::Bytes(s) | Node::ByteArray(s) | Node::Long(s)) => s.len != 0,
        Some(
            Node::Tuple(s) | Node::List(s) | Node::Dict(s) | Node::Set(s) | Node::FrozenSet(s),
        ) => s.len != 0,
        _ => true,
    }
}

/// The `id` of a pickled `Token` (`NEWOBJ` + `BUILD` with state `(typeid, address, id)`).
fn token_ident<'b>(p: &Pickle<'b>, i: u32) -> Option<&'b str> {
    let Node::NewObj { cls, state, .. } = p.node(i)? else {
        return None;
    };
    let Node::Global { name, .. } = p.node(cls)? else {
        return None;
    };
    if p.bytes(name) != b"Token" {
        return None;
    }
    let mut fields = p.tuple(state)?;
    fields.next()?;
    fields.next()?;
    p.str(fields.next()?)
}

/// The ident of `handle`, an object of `kind`: `d`, the kind's letter (`q` for a queue) and
/// lowercase hex.
pub fn ident_of(handle: Handle, kind: ObjectKind, out: &mut [u8; 6]) -> &str {
    out[0] = b'd';
    out[1] = objects::letter(kind);
    let mut n = 2;
    let v = handle.0;
    let digits = if v == 0 {
        1
    } else {
        (16 - v.leading_zeros()).div_ceil(4) as usize
    };
    for k in (0..digits).rev() {
        let d = ((v >> (4 * k)) & 0xf) as u8;
        out[n] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n += 1;
    }
    core::str::from_utf8(&out[..n]).unwrap_or("dq")
}

/// The handle an ident names and the kind of its object, if it is one depot hands out.
pub fn parse_ident(ident: &str) -> Option<(Handle, ObjectKind)> {
    let rest = ident.strip_prefix('d')?;
    let kind = objects::kind_of(*rest.as_bytes().first()?)?;
    let hex = &rest[1..];
    if hex.is_empty() || hex.len() > 4 || (hex.len() > 1 && hex.starts_with('0')) {
        return None;
    }
    let mut v: u16 = 0;
    for c in hex.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u16::from(d);
    }
    Some((Handle(v), kind))
}

fn error_out<'a>(call: Call, code: ErrorCode) -> Out<'a> {
    let public = matches!(
        call,
        Call::Create
            | Call::CreateOrStop
            | Call::Stop
            | Call::Exists
            | Call::GetMethods(_)
            | Call::NumberOfObjects
            | Call::DebugInfo
            | Call::Shutdown
    );
    if public || code == ErrorCode::NoSuchObject {
        let kind = match code {
            ErrorCode::NoSuchObject | ErrorCode::InvalidName => "KeyError",
            _ => "RuntimeError",
        };
        return Out::Traceback(kind, code.description());
    }
    match (call, code) {
        (Call::Get, ErrorCode::Empty | ErrorCode::Timeout) => Out::Error("_queue", "Empty", None),
        (Call::Put, ErrorCode::Full | ErrorCode::Timeout) => Out::Error("queue", "Full", None),
        (_, ErrorCode::TaskDoneTooMany) => Out::Error(
            "builtins",
            "ValueError",
            Some("task_done() called too many times"),
        ),
        (_, ErrorCode::TooLarge) => Out::Error("builtins", "ValueError", Some("item too large")),
        (_, code) => Out::Error("builtins", "RuntimeError", Some(code.description())),
    }
}

fn send(out: &mut [u8], body: &[u8], close: bool) -> Step<'static> {
    match frame::write_frame(out, body) {
        Some(len) => Step::Send { len, close },
        None => Step::Close(PyClose::NoRoom),
    }
}

/// `(kind, value)` as Python's manager pickles it.
fn write_reply(w: &mut Writer<'_>, o: &Out<'_>, scratch: &mut Scratch<'_>) {
    w.proto();
    let kind: &[u8] = match o {
        Out::Error(..) => b"#ERROR",
        Out::Traceback(..) => b"#TRACEBACK",
        _ => b"#RETURN",
    };
    w.str(kind);
    match *o {
        Out::None => {
            w.none();
        }
        Out::Bool(v) => {
            w.bool(v);
        }
        Out::Int(v) => {
            w.int(v.into());
        }
        Out::Text(t) => {
            w.str(t.as_bytes());
        }
        Out::Created(handle, kind) => {
            let mut buf = [0; 6];
            w.str(ident_of(handle, kind, &mut buf).as_bytes());
            write_exposed(w, kind);
            w.tuple(2);
        }
        Out::StopToken => {
            w.str(STOP_IDENT.as_bytes());
            w.tuple(0);
            w.tuple(2);
        }
        Out::Exposed(kind) => write_exposed(w, kind),
        Out::Status(s) => {
            // debug_info(): free text, one line per fact.
            let mut text = [0u8; 160];
            let n = status_text(&s, &mut text);
            w.str(&text[..n]);
        }
        Out::Item(bytes) => item::to_pickle(bytes, w, scratch),
        Out::List(entries, of) => {
            w.empty_list().mark();
            let mut it = crate::wire::Items(entries).iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                match of {
                    objects::ListOf::Keys => item::to_pickle(k, w, scratch),
                    objects::ListOf::Values => item::to_pickle(v, w, scratch),
                    objects::ListOf::Items => {
                        item::to_pickle(k, w, scratch);
                        item::to_pickle(v, w, scratch);
                        w.tuple(2);
                    }
                }
            }
            w.appends();
        }
        Out::Error(module, name, message) => {
            w.exception(
                module.as_bytes(),
                name.as_bytes(),
                message.map(str::as_bytes),
            );
        }
        Out::Traceback(kind, text) => {
            let mut buf = [0u8; 160];
            let mut n = 0;
            for part in [
                "Traceback (depot manager):\n".as_bytes(),
                kind.as_bytes(),
                b": ",
                text.as_bytes(),
                b"\n",
            ] {
                let m = part.len().min(buf.len() - n);
                buf[n..n + m].copy_from_slice(&part[..m]);
                n += m;
            }
            w.str(&buf[..n]);
        }
    }
    w.tuple(2).stop();
}

fn write_exposed(w: &mut Writer<'_>, kind: ObjectKind) {
    let names = match kind {
        ObjectKind::Queue => &EXPOSED[..],
        _ => objects::exposed(kind),
    };
    w.mark();
    for name in names {
        w.str(name.as_bytes());
    }
    w.tuple_from_mark();
}

fn status_text(s: &ManagerStatus, out: &mut [u8; 160]) -> usize {
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let m = bytes.len().min(out.len() - n);
        out[n..n + m].copy_from_slice(&bytes[..m]);
        n += m;
    };
    for (label, v) in [
        ("objects: ", s.objects),
        ("\nconnections: ", s.connections),
        ("\nmax_connections: ", s.max_connections),
        ("\nblocked requests: ", s.waiters),
    ] {
        put(label.as_bytes());
        let mut digits = [0u8; 10];
        let mut k = digits.len();
        let mut v = v;
        loop {
            k -= 1;
            digits[k] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        put(&digits[k..]);
    }
    put(b"\n");
    n
}
