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
mod ser;

use core::fmt;

use minicbor::data::Type;
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
pub fn validate(bytes: &[u8]) -> Result<(), ValueError> {
    let mut d = Decoder::new(bytes);
    check(&mut d, 0)?;
    if d.position() != bytes.len() {
        return Err(ValueError::TrailingBytes);
    }
    Ok(())
}

/// Checks one value at `depth` containers deep and moves past it.
fn check(d: &mut Decoder<'_>, depth: usize) -> Result<(), ValueError> {
    match d.datatype()? {
        Type::Bool => drop(d.bool()?),
        Type::Null => d.null()?,
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => drop(d.u64()?),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => drop(d.int()?),
        Type::F16 => drop(read_f16(d)?),
        Type::F32 => drop(d.f32()?),
        Type::F64 => drop(d.f64()?),
        Type::Bytes => drop(d.bytes()?),
        Type::String => drop(d.str()?),
        Type::Array => check_array(d, depth)?,
        Type::Map => {
            let depth = deeper(depth)?;
            let n = definite(d.map()?)?;
            // Each entry consumes input, so a huge count ends at the end of the bytes.
            for _ in 0..n {
                check(d, depth)?;
                check(d, depth)?;
            }
        }
        Type::Tag => match d.tag()?.as_u64() {
            TUPLE_TAG if d.datatype()? == Type::Array => check_array(d, depth)?,
            PICKLE_TAG if d.datatype()? == Type::Bytes => drop(d.bytes()?),
            tag => return Err(ValueError::Unsupported(Unsupported::Tag(tag))),
        },
        Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
            return Err(ValueError::Unsupported(Unsupported::IndefiniteLength))
        }
        Type::Undefined | Type::Simple => return Err(ValueError::Unsupported(Unsupported::Simple)),
        Type::Break | Type::Unknown(_) => return Err(ValueError::Malformed),
    }
    Ok(())
}

fn check_array(d: &mut Decoder<'_>, depth: usize) -> Result<(), ValueError> {
    let depth = deeper(depth)?;
    let n = definite(d.array()?)?;
    for _ in 0..n {
        check(d, depth)?;
    }
    Ok(())
}

fn deeper(depth: usize) -> Result<usize, ValueError> {
    if depth >= MAX_DEPTH {
        return Err(ValueError::TooDeep);
    }
    Ok(depth + 1)
}

fn definite(len: Option<u64>) -> Result<u64, ValueError> {
    len.ok_or(ValueError::Unsupported(Unsupported::IndefiniteLength))
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
pub fn from_slice<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ValueError> {
    validate(bytes)?;
    let mut de = Deserializer::new(bytes);
    T::deserialize(&mut de)
}
