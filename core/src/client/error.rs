//! What each fallible operation of [`Client`](super::Client) can fail with: one small enum per
//! operation, each convertible into the crate's [`Error`] for callers that want one type.

use crate::error::Error;

/// Why [`Client::send`](super::Client::send) did not send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendError {
    /// This build does not send requests of this kind (leases or objects without their
    /// features).
    NotAllowed,
    /// The handshake has not finished.
    NotReady,
    /// The connection is over, for this reason (the one [`Event::Closed`](super::Event) gave).
    Closed(Error),
    /// The request is larger than the manager or the transmit buffer accepts.
    TooLarge,
    /// Every request slot is in use: wait for replies first.
    InFlightLimit,
    /// The transmit buffer has no room now: send what it holds first.
    WouldBlock,
}

/// Why [`Client::send_unanswered`](super::Client::send_unanswered) did not send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendUnansweredError {
    /// This build does not send requests of this kind (leases or objects without their
    /// features).
    NotAllowed,
    /// The handshake has not finished.
    NotReady,
    /// The connection is over, for this reason (the one [`Event::Closed`](super::Event) gave).
    Closed(Error),
    /// The transmit buffer has no room for it now: send what it holds first.
    WouldBlock,
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        match e {
            SendError::NotAllowed => Error::NotAllowed,
            SendError::NotReady => Error::NotReady,
            SendError::Closed(error) => error,
            SendError::TooLarge => Error::TooLarge,
            SendError::InFlightLimit => Error::InFlightLimit,
            SendError::WouldBlock => Error::WouldBlock,
        }
    }
}

impl From<SendUnansweredError> for Error {
    fn from(e: SendUnansweredError) -> Error {
        match e {
            SendUnansweredError::NotAllowed => Error::NotAllowed,
            SendUnansweredError::NotReady => Error::NotReady,
            SendUnansweredError::Closed(error) => error,
            SendUnansweredError::WouldBlock => Error::WouldBlock,
        }
    }
}

// The texts are those of the `Error` each becomes, so a message does not depend on which
// type carried it.
impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        Error::from(*self).fmt(f)
    }
}

impl core::fmt::Display for SendUnansweredError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        Error::from(*self).fmt(f)
    }
}

impl core::error::Error for SendError {}
impl core::error::Error for SendUnansweredError {}
