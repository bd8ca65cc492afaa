//! The items the test apps exchange with the host's `depot` CLI: a number as decimal text.
//!
//! Text keeps the host side of the tests plain shell (`depot put ... 1 2 3`, `depot get`
//! prints one item a line), and each item is distinct, so the tests can check that every one
//! arrived exactly once.

/// Writes `n` as decimal text into `buf`; returns the bytes used.
pub fn encode(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return &buf[at..];
        }
    }
}

/// The item's bytes as text, for printing (`?` when they are not UTF-8).
pub fn text(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("?")
}

/// The number an item's text holds (`None` if it is not decimal text of at most 9 digits).
pub fn number(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 9 {
        return None;
    }
    bytes.iter().try_fold(0u32, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
    })
}
