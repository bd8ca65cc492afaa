//! One connection shared by many threads.

use std::net::SocketAddr;

#[derive(Debug)]
pub(crate) struct Conn {
    peer: SocketAddr,
}

impl Conn {
    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}
