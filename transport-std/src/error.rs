//! The one error type of the std transport.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use depot_core::wire::ErrorCode;

/// Why a manager or client operation failed. `Display` gives one line a user understands.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The manager (or, for a local time limit, the client) refused or failed one request;
    /// the connection stays usable. `code` says why; `object` names the queue concerned
    /// (empty for requests about no object, such as a remote shutdown).
    ///
    /// ```
    /// use depot_std::{Error, ErrorCode};
    ///
    /// fn is_empty(e: &Error) -> bool {
    ///     matches!(e, Error::Request { code: ErrorCode::Empty, .. })
    /// }
    /// # assert!(is_empty(&Error::Request { code: ErrorCode::Empty, object: "q".into() }));
    /// ```
    Request {
        /// Why the request failed.
        code: ErrorCode,
        /// The queue the request was about, or empty.
        object: String,
    },
    /// The item is larger than the queue or the connection allows.
    TooLarge {
        /// The item's size in bytes.
        size: usize,
        /// The largest item allowed.
        max: usize,
    },
    /// The manager at `addr` does not share our authkey.
    AuthFailed {
        /// The manager's address.
        addr: SocketAddr,
    },
    /// Nothing accepted the connection.
    Refused {
        /// The address as given.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Connecting and the handshake did not finish in time.
    ConnectTimeout {
        /// The address as given.
        addr: String,
    },
    /// The connection to the manager is gone (it stopped, closed the connection, or the
    /// network failed); every later call on it fails the same way.
    Disconnected {
        /// What happened, with the address.
        reason: String,
    },
    /// The manager broke the protocol (or the connection ended for a protocol reason).
    Protocol(depot_core::Error),
    /// A typed proxy could not encode an item as a value.
    Encode(Box<depot_core::value::ValueError>),
    /// A typed proxy took an item that is not a value of its type. The item has left the
    /// queue; its bytes are here, so nothing is lost.
    Decode {
        /// Why it is not a value of the type.
        error: Box<depot_core::value::ValueError>,
        /// The item's bytes as the queue held them.
        item: Vec<u8>,
    },
    /// An I/O error.
    Io(io::Error),
    /// The configuration is not usable.
    Config(String),
    /// The manager at `addr` is a Python `BaseManager`: how a depot connection attempt ends
    /// there. [`Client::connect`](crate::Client::connect) then joins it speaking Python's
    /// protocol, so it does not return this.
    PythonManager {
        /// The manager's address.
        addr: SocketAddr,
    },
    /// A Python `BaseManager` cannot serve this call (`stat`, `status`, creating queues, …).
    NotSupportedByPython {
        /// What was asked for.
        what: &'static str,
    },
    /// A Python manager raised an exception or failed in a way depot has no error for.
    Python(String),
    /// A registered call's handler returned an error, or panicked.
    CallFailed {
        /// The call's name.
        call: String,
        /// The handler's error (cut to `depot_core::manager::MAX_FAILED_LEN` bytes).
        message: String,
    },
}

impl Error {
    /// The failed request's code, if this is the failure of one request (an item found too
    /// large counts as one).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Request { code, .. } => Some(*code),
            Error::TooLarge { .. } => Some(ErrorCode::TooLarge),
            _ => None,
        }
    }

    /// Whether the connection is over (the manager stopped or went away, or the connection
    /// failed): no later request on it can succeed. A manager that is shutting down counts.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Error::Disconnected { .. }
                | Error::Protocol(_)
                | Error::Io(_)
                | Error::Request {
                    code: ErrorCode::ShuttingDown,
                    ..
                }
        )
    }

    pub(crate) fn request(code: ErrorCode, object: &str) -> Error {
        Error::Request {
            code,
            object: object.to_owned(),
        }
    }
}

/// `queue 'name'` or, without a name, `the queue`.
struct Queue<'a>(&'a str);

impl fmt::Display for Queue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the queue")
        } else {
            write!(f, "queue '{}'", self.0.escape_debug())
        }
    }
}

fn request_fmt(code: ErrorCode, object: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let q = Queue(object);
    match code {
        ErrorCode::Empty => write!(f, "{q} is empty"),
        ErrorCode::Full => write!(f, "{q} is full"),
        ErrorCode::Timeout if object.is_empty() => f.write_str("timed out"),
        ErrorCode::Timeout => write!(f, "timed out waiting on {q}"),
        ErrorCode::NoSuchObject => write!(f, "{q} does not exist"),
        ErrorCode::AlreadyExists => write!(f, "{q} already exists"),
        ErrorCode::TooLarge => write!(f, "item too large for {q}"),
        ErrorCode::InvalidName => write!(
            f,
            "invalid queue name '{}': 1 to 32 bytes, no control characters",
            object.escape_debug()
        ),
        ErrorCode::InvalidSpec => write!(f, "the manager cannot create {q} with those limits"),
        ErrorCode::ObjectLimit => {
            write!(
                f,
                "the manager has no room for another queue (creating {q})"
            )
        }
        ErrorCode::WaiterLimit => write!(
            f,
            "too many blocked requests on this connection or in the manager (waiting on {q})"
        ),
        ErrorCode::TaskDoneTooMany => write!(f, "task_done() called too many times on {q}"),
        ErrorCode::NotAllowed if !object.is_empty() => {
            write!(f, "not allowed by the manager for this key: {q}")
        }
        ErrorCode::NotAllowed => f.write_str("not allowed by the manager"),
        ErrorCode::ShuttingDown => f.write_str("manager is shutting down"),
        ErrorCode::WrongKind => write!(
            f,
            "'{}' is not the kind of object this call needs",
            object.escape_debug()
        ),
        ErrorCode::Cancelled => write!(f, "the request on {q} was cancelled"),
        ErrorCode::InvalidValue => write!(
            f,
            "{q} holds values and refused an item that is not one well-formed value"
        ),
        other => write!(f, "request on {q} failed: {other}"),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Request { code, object } => request_fmt(*code, object, f),
            Error::TooLarge { size, max } => {
                write!(f, "item too large: {size} bytes, at most {max} allowed")
            }
            Error::AuthFailed { addr } => {
                write!(f, "authentication failed: wrong authkey for {addr}")
            }
            Error::Refused { addr, .. } => {
                write!(f, "connection refused: nothing is listening on {addr}")
            }
            Error::ConnectTimeout { addr } => write!(f, "timed out connecting to {addr}"),
            Error::Disconnected { reason } => f.write_str(reason),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Encode(e) => write!(f, "cannot encode item: {e}"),
            Error::Decode { error, item } => {
                write!(f, "cannot decode item ({} bytes): {error}", item.len())
            }
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::PythonManager { addr } => {
                write!(f, "the manager at {addr} is a Python BaseManager")
            }
            Error::NotSupportedByPython { what } => {
                write!(f, "{what} is not supported by a Python BaseManager")
            }
            Error::Python(e) => f.write_str(e),
            Error::CallFailed { call, message } => {
                write!(f, "call '{}' failed: {message}", call.escape_debug())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Refused { source, .. } => Some(source),
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
