//! The blocking client's locks and socket. Normal builds use std's; under `--cfg shuttle` they
//! are shuttle's model-checked locks and an in-memory socket, so the model tests
//! (`client/model.rs`) can explore how the client's threads interleave.

#[cfg(not(shuttle))]
pub(crate) use std::net::TcpStream as Stream;
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(shuttle)]
pub(crate) use pipe::Stream;
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Condvar, Mutex, MutexGuard};

/// A connected pair of in-memory sockets with the few `TcpStream` methods the client uses.
#[cfg(shuttle)]
pub(crate) mod pipe {
    use std::collections::VecDeque;
    use std::io;
    use std::net::Shutdown;
    use std::sync::Arc;
    use std::time::Duration;

    use shuttle::sync::{Condvar, Mutex};

    #[derive(Default)]
    struct Wire {
        /// Bytes on their way to side 0 and to side 1.
        queued: [VecDeque<u8>; 2],
        /// Either side shut the connection down.
        closed: bool,
    }

    /// One end of the pair; clones are the same end (as `TcpStream::try_clone`).
    #[derive(Clone)]
    pub(crate) struct Stream {
        wire: Arc<(Mutex<Wire>, Condvar)>,
        side: usize,
    }

    /// Two connected ends.
    pub(crate) fn pair() -> (Stream, Stream) {
        let wire = Arc::new((Mutex::new(Wire::default()), Condvar::new()));
        let end = |side| Stream {
            wire: Arc::clone(&wire),
            side,
        };
        (end(0), end(1))
    }

    impl Stream {
        pub(crate) fn try_clone(&self) -> io::Result<Stream> {
            Ok(self.clone())
        }

        /// The model has no clock: a read waits for bytes or the end of the connection.
        pub(crate) fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }

        pub(crate) fn shutdown(&self, _: Shutdown) -> io::Result<()> {
            let (wire, changed) = &*self.wire;
            wire.lock().unwrap().closed = true;
            changed.notify_all();
            Ok(())
        }
    }

    impl io::Read for Stream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let (wire, changed) = &*self.wire;
            let mut w = wire.lock().unwrap();
            loop {
                let queued = &mut w.queued[self.side];
                if !queued.is_empty() {
                    let n = buf.len().min(queued.len());
                    for (b, q) in buf.iter_mut().zip(queued.drain(..n)) {
                        *b = q;
                    }
                    return Ok(n);
                }
                if w.closed {
                    return Ok(0);
                }
                w = changed.wait(w).unwrap();
            }
        }
    }

    impl io::Write for Stream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (wire, changed) = &*self.wire;
            let mut w = wire.lock().unwrap();
            if w.closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            w.queued[1 - self.side].extend(buf);
            changed.notify_all();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

/// Reads from `stream`: first looks for input without sleeping for up to `busy_poll`, yielding
/// the CPU between looks, then blocks as `read` does (with the socket's read timeout).
#[cfg(all(unix, not(shuttle)))]
pub(crate) fn read_soon(
    stream: &mut Stream,
    buf: &mut [u8],
    busy_poll: std::time::Duration,
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    if !busy_poll.is_zero() {
        let start = std::time::Instant::now();
        loop {
            #[allow(unsafe_code)]
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                return Ok(n);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock || start.elapsed() >= busy_poll {
                break;
            }
            std::thread::yield_now();
        }
    }
    std::io::Read::read(stream, buf)
}

/// Without `recv(MSG_DONTWAIT)` (or under the model checker), a plain blocking read.
#[cfg(not(all(unix, not(shuttle))))]
pub(crate) fn read_soon(
    stream: &mut Stream,
    buf: &mut [u8],
    _busy_poll: std::time::Duration,
) -> std::io::Result<usize> {
    std::io::Read::read(stream, buf)
}
