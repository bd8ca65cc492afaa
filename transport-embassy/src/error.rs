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
    /// A typed item could not be encoded (larger than the proxy's scratch buffer) or the
    /// bytes a `get` took could not be decoded as the type asked for. The item is consumed.
    Codec,
}

impl From<depot_core::Error> for Error {
    fn from(e: depot_core::Error) -> Self {
        Error::Depot(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Depot(e) => e.fmt(f),
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Codec => f.write_str("item could not be encoded or decoded"),
        }
    }
}

impl core::error::Error for Error {}
