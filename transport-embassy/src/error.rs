//! The error a firmware client sees.

use embassy_net::tcp::ConnectError;

/// Why a client operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The manager or the protocol said no: `Empty`, `Full`, `Timeout`, `AuthFailed`,
    /// `Disconnected`, … exactly as on every other transport.
    Depot(depot_core::Error),
    /// The TCP connection could not be opened.
    Connect(ConnectError),
    /// A typed `put` could not encode its item as a value: larger than the proxy's scratch
    /// buffer, or nested too deep. Nothing was sent.
    Encode,
    /// A typed `get` took an item that is not a value of the type asked for. The item has
    /// left the queue.
    Decode(DecodeError),
    /// A registered call's handler answered with an error.
    CallFailed,
}

/// Why an item a typed `get` took is not a `T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The bytes are not one well-formed value (the queue is raw). An integer type reads only
    /// the item's head (unless depot-core's `messages` feature is on), so for it an item that
    /// is not an integer is `WrongType`, well-formed or not.
    NotAValue,
    /// The item is an opaque Python value (a pickle depot cannot map).
    OpaquePython,
    /// A value, of another type (or out of the type's range).
    WrongType,
}

impl From<depot_core::value::ValueError> for DecodeError {
    fn from(e: depot_core::value::ValueError) -> Self {
        use depot_core::value::ValueError;
        match e {
            ValueError::OpaquePython => DecodeError::OpaquePython,
            ValueError::Mismatch(_) => DecodeError::WrongType,
            _ => DecodeError::NotAValue,
        }
    }
}

impl From<depot_core::Error> for Error {
    fn from(e: depot_core::Error) -> Self {
        Error::Depot(e)
    }
}

/// In words with the `texts` feature. Without it depot-core's errors print as depot-core says
/// (`error code N` …) and this crate's own as `transport error N`: 0 [`Error::Encode`],
/// 1 [`DecodeError::NotAValue`], 2 [`DecodeError::OpaquePython`], 3 [`DecodeError::WrongType`],
/// 4 [`Error::CallFailed`].
impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // In pieces, not `write!`: no formatting arguments to build on firmware.
        let which = match self {
            Error::Depot(e) => return e.fmt(f),
            Error::Connect(e) => {
                f.write_str("connect failed: ")?;
                return e.fmt(f);
            }
            Error::Encode => 0,
            Error::Decode(DecodeError::NotAValue) => 1,
            Error::Decode(DecodeError::OpaquePython) => 2,
            Error::Decode(DecodeError::WrongType) => 3,
            Error::CallFailed => 4,
        };
        #[cfg(feature = "texts")]
        return f.write_str(match which {
            0 => "item could not be encoded as a value",
            1 => "item is not a value",
            2 => "item is an opaque Python value, not readable as this type",
            3 => "item is a value of another type",
            _ => "the registered call's handler failed",
        });
        #[cfg(not(feature = "texts"))]
        {
            f.write_str("transport error ")?;
            core::fmt::Display::fmt(&which, f)
        }
    }
}

impl core::error::Error for Error {}
