//! The one error type of the std transport.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why a manager or client operation failed. `Display` gives one line a user understands.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A non-blocking `get` found the queue empty.
    Empty,
    /// A non-blocking `put` found the queue full.
    Full,
    /// A blocking call's time ran out.
    Timeout,
    /// The item is larger than the queue or the connection allows.
    TooLarge {
        /// The item's size in bytes.
        size: usize,
        /// The largest item allowed.
        max: usize,
    },
    /// `task_done` was called more times than items were put.
    TaskDoneTooMany,
    /// The manager does not allow this.
    NotAllowed,
    /// The manager is shutting down.
    ShuttingDown,
    /// A queue of that name exists already.
    AlreadyExists(String),
    /// The name is empty, too long or has control characters.
    InvalidName(String),
    /// No queue has that name.
    NoSuchQueue(String),
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
    /// The connection to the manager is gone.
    Disconnected {
        /// What happened, with the address.
        reason: String,
    },
    /// Another protocol error from the core.
    Protocol(depot_core::Error),
    /// A typed proxy could not encode or decode an item.
    Codec(String),
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("queue is empty"),
            Error::Full => f.write_str("queue is full"),
            Error::Timeout => f.write_str("timed out"),
            Error::TooLarge { size, max } => {
                write!(f, "item too large: {size} bytes, at most {max} allowed")
            }
            Error::TaskDoneTooMany => f.write_str("task_done() called too many times"),
            Error::NotAllowed => f.write_str("not allowed by the manager"),
            Error::ShuttingDown => f.write_str("manager is shutting down"),
            Error::AlreadyExists(name) => write!(f, "queue '{name}' already exists"),
            Error::InvalidName(name) => write!(
                f,
                "invalid queue name '{}': 1 to 32 bytes, no control characters",
                name.escape_debug()
            ),
            Error::NoSuchQueue(name) => write!(f, "queue '{name}' does not exist"),
            Error::AuthFailed { addr } => {
                write!(f, "authentication failed: wrong authkey for {addr}")
            }
            Error::Refused { addr, .. } => {
                write!(f, "connection refused: nothing is listening on {addr}")
            }
            Error::ConnectTimeout { addr } => write!(f, "timed out connecting to {addr}"),
            Error::Disconnected { reason } => f.write_str(reason),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Codec(e) => write!(f, "cannot encode or decode item: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::PythonManager { addr } => {
                write!(f, "the manager at {addr} is a Python BaseManager")
            }
            Error::NotSupportedByPython { what } => {
                write!(f, "{what} is not supported by a Python BaseManager")
            }
            Error::Python(e) => f.write_str(e),
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
