//! Reading a socket soon: on a machine where waking a sleeping thread costs tens of
//! microseconds, a thread that expects an answer shortly looks for it without sleeping first.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A look and a yield that take longer than this gave the CPU to another thread.
const CONTENDED_YIELD: Duration = Duration::from_micros(20);

/// Calls `look` until it finds something (`Some`), fails, `busy_poll` has passed, or another
/// thread wants the CPU, yielding the CPU between looks. A look and a yield that take longer
/// than `CONTENDED_YIELD` gave the CPU to another thread: the busy poll stops then, since on a
/// contended CPU the scheduler runs a thread that is woken by input sooner than one that keeps
/// yielding, so sleeping is the faster wait there. `None`: nothing came, and the caller may
/// sleep now.
pub(crate) fn look_for<T>(
    busy_poll: Duration,
    mut look: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let start = Instant::now();
    // One clock read per look (they show in profiles of a client waiting for replies): the
    // time after a yield is the time before the next one.
    let mut last = start;
    loop {
        if let Some(found) = look()? {
            return Ok(Some(found));
        }
        if last.duration_since(start) >= busy_poll {
            return Ok(None);
        }
        std::thread::yield_now();
        let now = Instant::now();
        if now.duration_since(last) >= CONTENDED_YIELD {
            return Ok(None);
        }
        last = now;
    }
}

/// Reads from `stream`: first looks for input without sleeping for up to `busy_poll` (see
/// `look_for`), then blocks as `read` does (with the socket's read timeout). Zero `busy_poll`
/// blocks at once. Used by depot's blocking client and by depot-nats's reader.
pub fn read_soon(stream: &TcpStream, buf: &mut [u8], busy_poll: Duration) -> io::Result<usize> {
    // Without `recv(MSG_DONTWAIT)`, a plain blocking read.
    if !busy_poll.is_zero() && cfg!(unix) {
        let found = look_for(busy_poll, || match recv_now(stream, &mut *buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        })?;
        if let Some(n) = found {
            return Ok(n);
        }
    }
    let mut stream = stream;
    stream.read(buf)
}

/// One look for input that never blocks: what came (0 at the end of the stream), or
/// `WouldBlock`. Unsupported off Unix.
#[cfg(unix)]
pub fn recv_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and the
    // descriptor is open for as long as `stream` lives.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(unix))]
pub fn recv_now(_stream: &TcpStream, _buf: &mut [u8]) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        (writer, reader)
    }

    #[test]
    fn reads_input_that_comes_while_looking_after_it_and_the_end() {
        for busy_poll in [
            Duration::ZERO,
            crate::DEFAULT_BUSY_POLL,
            Duration::from_secs(5),
        ] {
            let (mut writer, reader) = pair();
            let mut buf = [0u8; 16];
            writer.write_all(b"now").unwrap();
            // Loopback delivers at once, but give it a moment all the same.
            std::thread::sleep(Duration::from_millis(10));
            assert_eq!(read_soon(&reader, &mut buf, busy_poll).unwrap(), 3);
            assert_eq!(&buf[..3], b"now");
            let late = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                writer.write_all(b"later").unwrap();
                writer
            });
            assert_eq!(read_soon(&reader, &mut buf, busy_poll).unwrap(), 5);
            assert_eq!(&buf[..5], b"later");
            late.join()
                .unwrap()
                .shutdown(std::net::Shutdown::Write)
                .unwrap();
            assert_eq!(read_soon(&reader, &mut buf, busy_poll).unwrap(), 0);
        }
    }

    #[test]
    fn keeps_the_read_timeout() {
        let (_writer, reader) = pair();
        reader
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let e = read_soon(&reader, &mut [0u8; 4], crate::DEFAULT_BUSY_POLL).unwrap_err();
        assert!(matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
    }
}
