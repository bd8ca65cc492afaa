//! The mio event loop that moves bytes between sockets and the core manager.
