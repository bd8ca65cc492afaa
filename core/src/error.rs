//! The error type every client operation's error converts into.
//!
//! Each fallible operation of [`Client`](crate::Client) has an error enum of its own with only
//! the outcomes it can have ([`SendError`](crate::client::SendError), …); `?` turns any of them
//! into this [`Error`] for callers that want one type. Replies and
//! [`Event::Closed`](crate::Event::Closed) carry it directly.

#[cfg(not(feature = "texts"))]
use crate::wire::write_numbered;
#[cfg(feature = "texts")]
use crate::wire::{text, ERROR_TEXTS};
use crate::wire::{CloseReason, ErrorCode};

/// Why a client operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    // The first variants are `ErrorCode`'s, in its order: converting between the two is
    // then arithmetic, not a table or a branch per code.
    /// A non-blocking `get` found the queue empty.
    Empty,
    /// A non-blocking `put` found the queue full.
    Full,
    /// A waiting request's time ran out, or the manager did not answer in time.
    Timeout,
    /// No object has that name or handle.
    NoSuchObject,
    /// An object with that name exists already.
    AlreadyExists,
    /// The item is larger than the queue or the connection allows.
    TooLarge,
    /// The name is empty, too long or has control characters.
    InvalidName,
    /// The queue limits cannot be met.
    InvalidSpec,
    /// The registry has no room for another object.
    ObjectLimit,
    /// Too many blocked requests on this connection or on the manager.
    WaiterLimit,
    /// `task_done` was called more times than items were put.
    TaskDoneTooMany,
    /// The manager does not allow this.
    NotAllowed,
    /// The manager is shutting down.
    ShuttingDown,
    /// The operation does not apply to this kind of object.
    WrongKind,
    /// The request was withdrawn before it completed.
    Cancelled,
    /// A value queue refused an item that is not one well-formed value.
    InvalidValue,
    /// An ack or nack named a lease this connection does not hold (any more).
    NoSuchLease,
    /// The manager has no room to keep another leased item.
    LeaseLimit,
    /// A dict has no such key.
    NoSuchKey,
    /// A lock was released by a client that does not hold it.
    NotOwner,
    /// A barrier is broken (a party timed out or went away, or it was aborted).
    Broken,
    /// A bounded semaphore was released more times than acquired.
    Overflow,
    /// A numbered put on a connection with no session.
    NoSession,
    /// The manager has no room for another session.
    SessionLimit,
    /// A numbered put older than its session's window: whether it was applied is unknown.
    SequenceExpired,
    /// The authkey is wrong (or the peer is not the manager it claims to be).
    AuthFailed,
    /// The connection is gone.
    Disconnected,
    /// The connection was closed for this reason.
    Closed(CloseReason),
    /// The handshake has not finished.
    NotReady,
    /// Every request slot is in use: wait for replies first.
    InFlightLimit,
    /// The transmit buffer is full: send what it holds first.
    WouldBlock,
    /// The peer is a Python `multiprocessing.managers.BaseManager`: it greeted with a
    /// challenge that does not carry depot's marker. Connect again speaking Python's protocol
    /// (`python::client`, feature `python`).
    PythonManager,
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Empty => Error::Empty,
            ErrorCode::Full => Error::Full,
            ErrorCode::Timeout => Error::Timeout,
            ErrorCode::NoSuchObject => Error::NoSuchObject,
            ErrorCode::AlreadyExists => Error::AlreadyExists,
            ErrorCode::TooLarge => Error::TooLarge,
            ErrorCode::InvalidName => Error::InvalidName,
            ErrorCode::InvalidSpec => Error::InvalidSpec,
            ErrorCode::ObjectLimit => Error::ObjectLimit,
            ErrorCode::WaiterLimit => Error::WaiterLimit,
            ErrorCode::TaskDoneTooMany => Error::TaskDoneTooMany,
            ErrorCode::NotAllowed => Error::NotAllowed,
            ErrorCode::ShuttingDown => Error::ShuttingDown,
            ErrorCode::WrongKind => Error::WrongKind,
            ErrorCode::Cancelled => Error::Cancelled,
            ErrorCode::InvalidValue => Error::InvalidValue,
            ErrorCode::NoSuchLease => Error::NoSuchLease,
            ErrorCode::LeaseLimit => Error::LeaseLimit,
            ErrorCode::NoSuchKey => Error::NoSuchKey,
            ErrorCode::NotOwner => Error::NotOwner,
            ErrorCode::Broken => Error::Broken,
            ErrorCode::Overflow => Error::Overflow,
            ErrorCode::NoSession => Error::NoSession,
            ErrorCode::SessionLimit => Error::SessionLimit,
            ErrorCode::SequenceExpired => Error::SequenceExpired,
        }
    }
}

impl From<CloseReason> for Error {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::AuthFailed => Error::AuthFailed,
            CloseReason::PeerClosed => Error::Disconnected,
            other => Error::Closed(other),
        }
    }
}

impl Error {
    /// The manager's error code behind this error, if a request failed (the connection is
    /// still usable then).
    pub const fn code(self) -> Option<ErrorCode> {
        Some(match self {
            Error::Empty => ErrorCode::Empty,
            Error::Full => ErrorCode::Full,
            Error::Timeout => ErrorCode::Timeout,
            Error::NoSuchObject => ErrorCode::NoSuchObject,
            Error::AlreadyExists => ErrorCode::AlreadyExists,
            Error::TooLarge => ErrorCode::TooLarge,
            Error::InvalidName => ErrorCode::InvalidName,
            Error::InvalidSpec => ErrorCode::InvalidSpec,
            Error::ObjectLimit => ErrorCode::ObjectLimit,
            Error::WaiterLimit => ErrorCode::WaiterLimit,
            Error::TaskDoneTooMany => ErrorCode::TaskDoneTooMany,
            Error::NotAllowed => ErrorCode::NotAllowed,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::WrongKind => ErrorCode::WrongKind,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::InvalidValue => ErrorCode::InvalidValue,
            Error::NoSuchLease => ErrorCode::NoSuchLease,
            Error::LeaseLimit => ErrorCode::LeaseLimit,
            Error::NoSuchKey => ErrorCode::NoSuchKey,
            Error::NotOwner => ErrorCode::NotOwner,
            Error::Broken => ErrorCode::Broken,
            Error::Overflow => ErrorCode::Overflow,
            Error::NoSession => ErrorCode::NoSession,
            Error::SessionLimit => ErrorCode::SessionLimit,
            Error::SequenceExpired => ErrorCode::SequenceExpired,
            _ => return None,
        })
    }
}

/// In words with the `texts` feature. Without it: an [`ErrorCode`]'s `error code N`,
/// [`Error::AuthFailed`] as `close reason 0`, [`Error::Closed`] as `connection closed: close
/// reason N` (PROTOCOL.md lists both numbers), and the client's own errors as `client error
/// N`: 0 [`Error::Disconnected`], 1 [`Error::NotReady`], 2 [`Error::InFlightLimit`], 3
/// [`Error::WouldBlock`], 4 [`Error::PythonManager`], 5 any other.
impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if let Some(code) = self.code() {
            return code.fmt(f);
        }
        // Texts of the table in `wire.rs`: an index each, not a pointer and a length.
        let which = match self {
            Error::AuthFailed => return CloseReason::AuthFailed.fmt(f),
            Error::Disconnected => 0,
            Error::Closed(reason) => {
                f.write_str("connection closed: ")?;
                return reason.fmt(f);
            }
            Error::NotReady => 1,
            Error::InFlightLimit => 2,
            Error::WouldBlock => 3,
            Error::PythonManager => 4,
            _ => 5,
        };
        #[cfg(feature = "texts")]
        return f.write_str(text(ERROR_TEXTS + which));
        #[cfg(not(feature = "texts"))]
        write_numbered(f, "client error ", which)
    }
}

impl core::error::Error for Error {}
