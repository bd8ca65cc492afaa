//! Python's `multiprocessing.managers.BaseManager` protocol: from the manager's side, so
//! unchanged Python clients (3.8–3.14) talk to a depot manager on its normal port, and from
//! the client's side, so depot clients use the queues of an unchanged Python manager.
//!
//! - [`frame`]: Python's length-prefixed framing, with hard limits.
//! - [`handshake`]: both handshake generations (HMAC-MD5 up to 3.11, `{sha256}` from 3.12).
//! - [`pickle`]: a data-only pickle decoder over caller storage, and a pickle writer.
//! - [`item`]: items between Python values and depot's CBOR value encoding.
//! - [`conn`]: one connection's state machine: frames in, operations and reply frames out.
//! - [`client`]: one connection to a Python manager: requests out, replies in.
//!
//! How a manager tells the protocols apart is in PROTOCOL.md ("Python clients on the same
//! port"); what each piece accepts is in its module docs.

pub mod client;
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod item;
mod objects;
pub mod pickle;

pub use client::{PyClient, PyClientError, PyReply, PyRequest, PyStep};
pub use conn::{challenge_frame, PyClose, PyConn, Step};
pub use handshake::PyKey;
pub use pickle::{Scratch, ScratchBuf, ScratchStore};
