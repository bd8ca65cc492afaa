//! Python's `multiprocessing.connection` framing: a 4-byte signed big-endian length, or for
//! bodies over `i32::MAX` bytes the marker `-1` followed by a `u64` big-endian length.
//!
//! Every length is checked against the receiver's limit before any of the body is read.

/// The largest handshake frame body Python reads (`maxlength=256`); depot enforces it too.
pub const MAX_HANDSHAKE_BODY: usize = 256;

/// Bytes of the short header.
pub const SHORT_HEADER: usize = 4;
/// Bytes of the long header (`-1` then a `u64`).
pub const LONG_HEADER: usize = 12;

/// Where the next frame in a receive buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Peek {
    /// Not a whole frame yet.
    Partial,
    /// A whole frame: its body is `buf[header..header + body]`.
    Frame {
        /// Header bytes (4 or 12).
        header: usize,
        /// Body bytes.
        body: usize,
    },
    /// The header announces more than `max_body`.
    TooLarge,
    /// A negative length other than the long-form marker; CPython would lose sync here.
    Invalid,
}

/// Checks the frame at the front of `buf` against `max_body` before its body is read.
pub fn peek(buf: &[u8], max_body: usize) -> Peek {
    let Some(head) = buf.get(..SHORT_HEADER) else {
        return Peek::Partial;
    };
    let short = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let (header, body) = match short {
        -1 => {
            let Some(long) = buf.get(SHORT_HEADER..LONG_HEADER) else {
                return Peek::Partial;
            };
            let mut n = [0; 8];
            n.copy_from_slice(long);
            (LONG_HEADER, u64::from_be_bytes(n))
        }
        n if n < 0 => return Peek::Invalid,
        n => (SHORT_HEADER, n as u64),
    };
    if body > max_body as u64 {
        return Peek::TooLarge;
    }
    let body = body as usize;
    if buf.len() - header < body {
        Peek::Partial
    } else {
        Peek::Frame { header, body }
    }
}

/// Header bytes a body of `body_len` bytes gets (Python uses the long form only past `i32::MAX`).
pub const fn header_len(body_len: usize) -> usize {
    if body_len as u64 > i32::MAX as u64 {
        LONG_HEADER
    } else {
        SHORT_HEADER
    }
}

/// Writes the header for `body_len` bytes at the start of `out`; `None` if `out` is too small.
pub fn write_header(out: &mut [u8], body_len: usize) -> Option<usize> {
    let n = header_len(body_len);
    let head = out.get_mut(..n)?;
    if n == SHORT_HEADER {
        head.copy_from_slice(&(body_len as u32).to_be_bytes());
    } else {
        head[..4].copy_from_slice(&[0xff; 4]);
        head[4..].copy_from_slice(&(body_len as u64).to_be_bytes());
    }
    Some(n)
}

/// Writes `body` as one frame into `out`; the bytes written, or `None` if `out` is too small.
pub fn write_frame(out: &mut [u8], body: &[u8]) -> Option<usize> {
    let n = write_header(out, body.len())?;
    out.get_mut(n..n + body.len())?.copy_from_slice(body);
    Some(n + body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms() {
        assert_eq!(peek(&[0, 0, 0], 10), Peek::Partial);
        assert_eq!(peek(&[0, 0, 0, 2, b'a'], 10), Peek::Partial);
        assert_eq!(
            peek(&[0, 0, 0, 2, b'a', b'b', b'c'], 10),
            Peek::Frame { header: 4, body: 2 }
        );
        assert_eq!(peek(&[0, 0, 0, 11], 10), Peek::TooLarge);
        assert_eq!(peek(&[0xff, 0xff, 0xff, 0xfe], 10), Peek::Invalid);
        assert_eq!(peek(&[0x80, 0, 0, 0], 10), Peek::Invalid);
        // CPython accepts the long form for small bodies too.
        let long = [
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o',
        ];
        assert_eq!(
            peek(&long, 10),
            Peek::Frame {
                header: 12,
                body: 5
            }
        );
        assert_eq!(peek(&long[..11], 10), Peek::Partial);
        let huge = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(peek(&huge, 1 << 20), Peek::TooLarge);
    }

    #[test]
    fn headers_as_python_writes_them() {
        let mut out = [0; 12];
        assert_eq!(write_header(&mut out, 0x7fff_ffff), Some(4));
        assert_eq!(out[..4], [0x7f, 0xff, 0xff, 0xff]);
        if usize::BITS > 32 {
            assert_eq!(write_header(&mut out, 0x8000_0000), Some(12));
            assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]);
        }
        assert_eq!(write_frame(&mut out[..5], b"ab"), None);
        assert_eq!(write_frame(&mut out, b"ab"), Some(6));
        assert_eq!(out[..6], [0, 0, 0, 2, b'a', b'b']);
    }
}
