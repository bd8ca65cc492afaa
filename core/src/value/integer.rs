//! Integer types read only an integer (without the `messages` feature: firmware):
//! [`super::from_slice`] asks a type what it reads before reading the item, and a type that
//! reads an integer has the item's head read and its end checked, without the whole-item
//! check, which an image that reads only integers then does not link (about 0.8 KB).
//!
//! An item that is not an integer is refused as the wrong type without being read further,
//! so a malformed non-integer gets a type error rather than `Malformed`.

use core::fmt;

use serde::de::{self, Deserialize, Visitor};
use serde::forward_to_deserialize_any;

use super::de::Deserializer;
use super::ValueError;

/// Whether `T`'s first (and, serde types being driven by one call, only) request to a
/// deserializer is for an integer of at most 64 bits. Reads nothing: [`Probe`] answers
/// every request with which one it was, so the answer is a constant once inlined.
pub(super) fn reads_an_integer<'de, T: Deserialize<'de>>() -> bool {
    matches!(T::deserialize(Probe), Err(Asked { integer: true }))
}

/// Reads one integer for `T` from `bytes`, which must be exactly that integer. Only for a
/// `T` for which [`reads_an_integer`] holds: any other request is refused.
pub(super) fn from_integer<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ValueError> {
    let mut de = Deserializer::new(bytes);
    let value = T::deserialize(IntegerOnly(&mut de))?;
    if de.position() != bytes.len() {
        return Err(ValueError::TrailingBytes);
    }
    Ok(value)
}

/// The request a type made of [`Probe`].
#[derive(Debug)]
struct Asked {
    integer: bool,
}

impl fmt::Display for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probed")
    }
}

impl de::StdError for Asked {}

impl de::Error for Asked {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Asked { integer: false }
    }
}

/// A deserializer with nothing to read: it fails every request, saying whether it was for an
/// integer.
struct Probe;

macro_rules! integers_asked {
    ($($f:ident)*) => {$(
        fn $f<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Asked> {
            Err(Asked { integer: true })
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe {
    type Error = Asked;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Asked> {
        Err(Asked { integer: false })
    }

    integers_asked!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The real deserializer, for integer requests only: the item has not been validated, and
/// only an integer's head is safe to read without it.
struct IntegerOnly<'a, 'de>(&'a mut Deserializer<'de>);

macro_rules! integers_read {
    ($($f:ident)*) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            de::Deserializer::$f(self.0, visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for IntegerOnly<'_, 'de> {
    type Error = ValueError;

    /// A type that asked the probe for an integer and now asks for something else.
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ValueError> {
        Err(de::Error::custom(
            "the type asked for an integer, then for another kind",
        ))
    }

    integers_read!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}
