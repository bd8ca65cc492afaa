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

/// Writes all of `buf`, letting the kernel hold it back for the next write (`MSG_MORE`): for a
/// request nobody waits for (an `ack_nowait`), which then leaves in one segment with the next
/// request instead of costing the peer a read and a wake-up of its own. Linux sends held bytes
/// with the next write without `MSG_MORE`, with an acknowledgment it sends or receives, when
/// the socket closes, or after about 200 ms at the latest. Elsewhere a plain `write_all`.
#[cfg(all(not(shuttle), any(target_os = "linux", target_os = "android")))]
#[allow(unsafe_code)]
pub(crate) fn write_all_held(stream: &mut Stream, mut buf: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        // SAFETY: the descriptor is open for as long as `stream` lives, and the pointer and
        // length describe `buf`.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n.min(buf.len())..],
            Err(_) => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Without `MSG_MORE` (or under the model checker), a plain `write_all`.
#[cfg(any(shuttle, not(any(target_os = "linux", target_os = "android"))))]
pub(crate) fn write_all_held(stream: &mut Stream, buf: &[u8]) -> std::io::Result<()> {
    std::io::Write::write_all(stream, buf)
}

/// Reads from `stream`, looking for input without sleeping first (see [`crate::busy`]).
#[cfg(not(shuttle))]
pub(crate) fn read_soon(
    stream: &mut Stream,
    buf: &mut [u8],
    busy_poll: std::time::Duration,
) -> std::io::Result<usize> {
    crate::busy::read_soon(stream, buf, busy_poll)
}

/// Under the model checker, a plain blocking read.
#[cfg(shuttle)]
pub(crate) fn read_soon(
    stream: &mut Stream,
    buf: &mut [u8],
    _busy_poll: std::time::Duration,
) -> std::io::Result<usize> {
    std::io::Read::read(stream, buf)
}
