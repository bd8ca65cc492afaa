//! The value model: the one self-describing encoding every depot client library uses for
//! items, so the CLI, typed Rust proxies, firmware and Python clients see the same value.
//!
//! An item is one CBOR data item (RFC 8949) from a small subset, specified in PROTOCOL.md
//! ("Items: the value model"): integers in −2⁶⁴ … 2⁶⁴−1, floats, `true`/`false`, `null`,
//! text, bytes, arrays, maps, and two depot tags: [`TUPLE_TAG`] around an array (a Python
//! tuple) and [`PICKLE_TAG`] around bytes (an opaque Python value). Lengths are definite,
//! containers nest at most [`MAX_DEPTH`] deep. Nothing here allocates or panics on any input.
//!
//! - [`validate`] checks that bytes are exactly one such value.
//! - [`to_slice`] / [`to_writer`] encode any `T: Serialize`; [`from_slice`] decodes any
//!   `T: Deserialize` (borrowing `&str` and `&[u8]` from the item), after validating it.

mod de;
#[cfg(not(feature = "messages"))]
mod integer;
mod ser;

use core::fmt;

use minicbor::Decoder;

use de::Deserializer;
use ser::Serializer;

/// Re-exported so callers can encode into their own writers (`Vec<u8>` with minicbor's
/// `alloc` feature).
pub use minicbor;

/// CBOR tag around an array that is a tuple (Python `tuple`; Rust tuples and tuple structs).
/// Readers accept a tagged array wherever a sequence is expected.
pub const TUPLE_TAG: u64 = 0x6470_0001;
/// CBOR tag around a byte string holding a complete Python pickle depot cannot map: an opaque
/// Python value, passed on unchanged.
pub const PICKLE_TAG: u64 = 0x6470_0002;
/// The deepest nesting of arrays and maps a value may have (a scalar is at depth 0; `[[1]]`
/// is 2 deep).
pub const MAX_DEPTH: usize = 32;

/// Why bytes are not a value of the value model, or not of the type asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ValueError {
    /// The bytes end inside a value.
    Truncated,
    /// Bytes follow the one value.
    TrailingBytes,
    /// Not well-formed CBOR (a reserved header byte, a stray break, text that is not UTF-8).
    Malformed,
    /// Arrays and maps nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Well-formed CBOR outside the value model.
    Unsupported(Unsupported),
    /// The item is an opaque Python value (a pickle), which no Rust type but bytes-level
    /// access can read.
    OpaquePython,
    /// The value does not fit the type asked for; the message says how.
    Mismatch(Message),
    /// Encoding: the output buffer is too small.
    BufferFull,
    /// Encoding: a sequence or map whose length is not known up front.
    UnknownLength,
    /// Encoding: an integer outside −2⁶⁴ … 2⁶⁴−1.
    IntegerRange,
}

/// CBOR that is well-formed but not part of the value model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Unsupported {
    /// An indefinite-length string, array or map.
    IndefiniteLength,
    /// A tag other than [`TUPLE_TAG`] and [`PICKLE_TAG`] (bignums, tags 2 and 3, included),
    /// or one of those around the wrong kind of content.
    Tag(u64),
    /// `undefined` or another simple value than `false`, `true` and `null`.
    Simple,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Truncated => f.write_str("not a value: the bytes end inside it"),
            ValueError::TrailingBytes => f.write_str("not a value: bytes follow it"),
            ValueError::Malformed => f.write_str("not a value: malformed CBOR"),
            ValueError::TooDeep => write!(f, "value nested deeper than {MAX_DEPTH} levels"),
            ValueError::Unsupported(Unsupported::IndefiniteLength) => {
                f.write_str("not a value: indefinite-length CBOR")
            }
            ValueError::Unsupported(Unsupported::Tag(t)) => {
                write!(f, "not a value: unsupported CBOR tag {t}")
            }
            ValueError::Unsupported(Unsupported::Simple) => {
                f.write_str("not a value: unsupported CBOR simple value")
            }
            ValueError::OpaquePython => f.write_str(
                "the item is an opaque Python value (a pickle depot cannot map), \
                 not readable as this type",
            ),
            ValueError::Mismatch(m) if m.as_str().is_empty() => {
                f.write_str("value does not fit the type")
            }
            ValueError::Mismatch(m) => write!(f, "value does not fit the type: {m}"),
            ValueError::BufferFull => f.write_str("encoded value does not fit the buffer"),
            ValueError::UnknownLength => {
                f.write_str("cannot encode a sequence or map of unknown length")
            }
            ValueError::IntegerRange => f.write_str("integer outside -2^64 .. 2^64-1"),
        }
    }
}

impl core::error::Error for ValueError {}

impl serde::de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Mismatch(Message::from_display(&msg))
    }
}

impl serde::ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError::Mismatch(Message::from_display(&msg))
    }
}

impl From<minicbor::decode::Error> for ValueError {
    fn from(e: minicbor::decode::Error) -> Self {
        if e.is_end_of_input() {
            ValueError::Truncated
        } else {
            ValueError::Malformed
        }
    }
}

/// A short error message kept without allocation (cut at [`Message::CAPACITY`] bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Message(heapless::String<{ Message::CAPACITY }>);

impl Message {
    /// The longest message kept, in bytes.
    pub const CAPACITY: usize = 96;

    /// The message's text, cut to [`Message::CAPACITY`] bytes. Without the `messages` feature
    /// the text is left out: formatting serde's messages links float formatting, about 22 KB
    /// of flash, into firmware that decodes any typed item.
    fn from_display(msg: &dyn fmt::Display) -> Self {
        #[cfg(feature = "messages")]
        {
            let mut m = Message(heapless::String::new());
            // A message longer than the capacity is cut; what fits is kept.
            let _ = fmt::write(&mut m, format_args!("{msg}"));
            m
        }
        #[cfg(not(feature = "messages"))]
        {
            let _ = msg;
            Message(heapless::String::new())
        }
    }

    /// The message text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            self.0.push(c).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `bytes` are exactly one value of the value model, nested at most
/// [`MAX_DEPTH`] deep. Allocates nothing; stack use is bounded by [`MAX_DEPTH`].
///
/// It walks the CBOR headers itself instead of through minicbor's typed reads: a manager
/// checks every item put into a value queue, and the typed reads (float conversions
/// included) cost firmware several KiB for answers a header already gives. The outcome,
/// error kinds included, is minicbor's (the tests hold the two against each other).
pub fn validate(bytes: &[u8]) -> Result<(), ValueError> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        arg: 0,
    };
    match c.check(0) {
        Ok(()) => {}
        Err(Bad::Tag) => return Err(ValueError::Unsupported(Unsupported::Tag(c.arg))),
        Err(bad) => return Err(bad.into()),
    }
    if c.pos != bytes.len() {
        return Err(ValueError::TrailingBytes);
    }
    Ok(())
}

impl From<Bad> for ValueError {
    fn from(bad: Bad) -> Self {
        match bad {
            Bad::Truncated => ValueError::Truncated,
            Bad::Malformed => ValueError::Malformed,
            Bad::TooDeep => ValueError::TooDeep,
            Bad::Indefinite => ValueError::Unsupported(Unsupported::IndefiniteLength),
            Bad::Simple => ValueError::Unsupported(Unsupported::Simple),
            // Only `Cursor::check` gives it, and `validate` reads the tag from the cursor.
            Bad::Tag => ValueError::Malformed,
        }
    }
}

/// Why [`validate`] stopped: the [`ValueError`]s it gives, small enough to pass back up the
/// nesting cheaply (a [`ValueError`] has room for a message): one byte, without payload, so
/// every level returns it in a register (an unsupported tag is left in [`Cursor::arg`]; with
/// the tag in `Bad` the walk cost firmware ~0.25 to 0.3 KB more).
enum Bad {
    Truncated,
    Malformed,
    TooDeep,
    Indefinite,
    Simple,
    /// An unsupported tag, or a depot tag around the wrong kind of content: which tag is in
    /// [`Cursor::arg`].
    Tag,
}

/// A read position in CBOR bytes, for [`validate`].
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The argument of the header read last: so [`Cursor::head`] returns in a register, and
    /// the tag [`Bad::Tag`] refused.
    arg: u64,
}

impl<'a> Cursor<'a> {
    /// The next `n` bytes, consumed.
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        let end = self.pos.checked_add(n).ok_or(Bad::Truncated)?;
        let taken = self.bytes.get(self.pos..end).ok_or(Bad::Truncated)?;
        self.pos = end;
        Ok(taken)
    }

    /// The header byte at the read position, not consumed.
    fn peek(&self) -> Result<u8, Bad> {
        self.bytes.get(self.pos).copied().ok_or(Bad::Truncated)
    }

    /// Reads a header whose additional information is 0..=27 and returns its argument.
    #[inline(always)]
    fn argument(&mut self) -> Result<u64, Bad> {
        self.head()?;
        Ok(self.arg)
    }

    /// Reads a header whose additional information is 0..=27 into [`Cursor::arg`].
    fn head(&mut self) -> Result<(), Bad> {
        let info = self.take(1)?[0] & 0x1f;
        let n = match info {
            0..=23 => {
                self.arg = u64::from(info);
                return Ok(());
            }
            24..=27 => 1 << (info - 24),
            _ => return Err(Bad::Malformed),
        };
        self.arg = self
            .take(n)?
            .iter()
            .fold(0, |v, &b| (v << 8) | u64::from(b));
        Ok(())
    }

    /// Reads an array's or a map's header and returns its count, at most `usize::MAX`: each
    /// entry consumes input, so a longer count ends at the end of the bytes all the same (and
    /// the loops over it count in one register, not two).
    fn count(&mut self) -> Result<usize, Bad> {
        Ok(usize::try_from(self.argument()?).unwrap_or(usize::MAX))
    }

    /// Moves past a byte string, or a text string (`text`) whose content must be UTF-8. The
    /// content is checked here, not handed back: a one-byte result returns in a register.
    fn string(&mut self, text: bool) -> Result<(), Bad> {
        let len = usize::try_from(self.argument()?).map_err(|_| Bad::Malformed)?;
        let content = self.take(len)?;
        if text && !is_utf8(content) {
            return Err(Bad::Malformed);
        }
        Ok(())
    }

    /// Checks one value at `depth` containers deep and moves past it.
    fn check(&mut self, depth: usize) -> Result<(), Bad> {
        let head = self.peek()?;
        let (major, info) = (head >> 5, head & 0x1f);
        if major < 7 && info >= 28 {
            return Err(if info == 31 && (2..=5).contains(&major) {
                Bad::Indefinite
            } else {
                Bad::Malformed
            });
        }
        match major {
            // Integers: only the argument's bytes must be there.
            0 | 1 => drop(self.argument()?),
            2 => self.string(false)?,
            3 => self.string(true)?,
            4 => self.check_array(depth)?,
            5 => {
                let depth = deeper(depth)?;
                for _ in 0..self.count()? {
                    self.check(depth)?;
                    self.check(depth)?;
                }
            }
            6 => match self.argument()? {
                TUPLE_TAG if self.next_is(4)? => self.check_array(depth)?,
                PICKLE_TAG if self.next_is(2)? => self.string(false)?,
                // The tag is the argument read last.
                _ => return Err(Bad::Tag),
            },
            _ => match info {
                20..=22 => self.pos += 1,
                25..=27 => drop(self.take(1 + (1 << (info - 24)))?),
                0..=19 | 23 | 24 => return Err(Bad::Simple),
                _ => return Err(Bad::Malformed),
            },
        }
        Ok(())
    }

    fn check_array(&mut self, depth: usize) -> Result<(), Bad> {
        let depth = deeper(depth)?;
        for _ in 0..self.count()? {
            self.check(depth)?;
        }
        Ok(())
    }

    /// Whether the next item is of `major` type with a definite length. As minicbor's type
    /// peek, a negative integer header with an argument of 1 or more bytes needs that
    /// argument's first byte.
    fn next_is(&self, major: u8) -> Result<bool, Bad> {
        let head = self.peek()?;
        if (0x38..=0x3b).contains(&head) && self.bytes.len() <= self.pos + 1 {
            return Err(Bad::Truncated);
        }
        Ok(head >> 5 == major && head & 0x1f < 28)
    }
}

/// Whether `bytes` are UTF-8, exactly as `core::str::from_utf8` decides: every sequence
/// decodes to a Unicode scalar value (not a surrogate, at most U+10FFFF) in its shortest form,
/// which is what the well-formed sequences of Unicode's table 3-7 spell out. A byte at a time
/// and by arithmetic, not by that table: `from_utf8`'s word-at-a-time fast path and its tables
/// cost a firmware that checks values about 0.6 KiB, the table as a `match` ~0.1 KiB more.
fn is_utf8(bytes: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&first) = bytes.get(i) {
        i += 1;
        if first < 0x80 {
            continue;
        }
        // The sequence's continuation bytes, and the lowest code point it may encode (a lower
        // one is overlong).
        let (more, min) = match first {
            0xc0..=0xdf => (1, 0x80),
            0xe0..=0xef => (2, 0x800),
            0xf0..=0xf7 => (3, 0x1_0000),
            _ => return false,
        };
        let mut point = u32::from(first) & (0x3f >> more);
        for _ in 0..more {
            match bytes.get(i) {
                Some(&b) if b & 0xc0 == 0x80 => point = (point << 6) | u32::from(b & 0x3f),
                _ => return false,
            }
            i += 1;
        }
        if point < min || point > 0x10_ffff || (0xd800..=0xdfff).contains(&point) {
            return false;
        }
    }
    true
}

fn deeper(depth: usize) -> Result<usize, Bad> {
    if depth >= MAX_DEPTH {
        return Err(Bad::TooDeep);
    }
    Ok(depth + 1)
}

/// Reads a half-precision float (minicbor reads them only with its `half` feature).
fn read_f16(d: &mut Decoder<'_>) -> Result<f32, ValueError> {
    let pos = d.position();
    let Some(&[0xf9, hi, lo]) = d.input().get(pos..pos + 3) else {
        return Err(ValueError::Truncated);
    };
    d.set_position(pos + 3);
    Ok(f16_to_f32(u16::from_be_bytes([hi, lo])))
}

fn f16_to_f32(bits: u16) -> f32 {
    let negative = bits & 0x8000 != 0;
    let exp = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match exp {
        // Subnormal: mantissa × 2⁻²⁴, exact in f32.
        0 => mantissa as f32 / 16_777_216.0,
        31 if mantissa == 0 => f32::INFINITY,
        31 => f32::NAN,
        _ => f32::from_bits(((exp + 112) << 23) | (mantissa << 13)),
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// Encodes `value` into `buf`; returns the bytes used.
pub fn to_slice<T: serde::Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> Result<usize, ValueError> {
    let mut ser = Serializer::new(minicbor::encode::write::Cursor::new(buf));
    value.serialize(&mut ser)?;
    Ok(ser.into_writer().position())
}

/// Encodes `value` into `writer` (a `Vec<u8>` on hosts, with minicbor's `alloc` feature).
pub fn to_writer<T, W>(value: &T, writer: W) -> Result<W, ValueError>
where
    T: serde::Serialize + ?Sized,
    W: minicbor::encode::Write,
{
    let mut ser = Serializer::new(writer);
    value.serialize(&mut ser)?;
    Ok(ser.into_writer())
}

/// Decodes one value of type `T` from `bytes`, which must be exactly one valid value.
///
/// Without the `messages` feature (firmware), an integer type (`u8` … `i64`, and types that
/// deserialize as one) reads only the item's head, so the whole-item check is not linked
/// into an image that reads only integers: an item that is not an integer is then refused as
/// the wrong type (`Mismatch`) without the rest of it being checked, so a malformed one gives
/// `Mismatch`, not `Malformed`. With `messages` every item is checked whole first.
pub fn from_slice<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ValueError> {
    #[cfg(not(feature = "messages"))]
    if integer::reads_an_integer::<T>() {
        return integer::from_integer(bytes);
    }
    validate(bytes)?;
    let mut de = Deserializer::new(bytes);
    T::deserialize(&mut de)
}
