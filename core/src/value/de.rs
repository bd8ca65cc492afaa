//! A value-model item to `T: Deserialize`. Only [`super::from_slice`] builds a
//! [`Deserializer`], after [`super::validate`] has passed, so nesting is bounded and every
//! length is known to fit the input; or, for an integer type without `messages`, to read one
//! integer's head without that check (`super::integer`), which is safe on any input.

use minicbor::data::Type;
use minicbor::Decoder;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

#[cfg(not(feature = "messages"))]
use super::Cursor;
use super::{read_f16, Unsupported, ValueError, PICKLE_TAG, TUPLE_TAG};

pub(crate) struct Deserializer<'de> {
    d: Decoder<'de>,
}

impl<'de> Deserializer<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Self {
        Deserializer {
            d: Decoder::new(bytes),
        }
    }

    /// Bytes read so far.
    #[cfg(not(feature = "messages"))]
    pub(crate) fn position(&self) -> usize {
        self.d.position()
    }

    /// The length of the array that follows, with or without the tuple tag.
    fn array(&mut self) -> Result<Option<u64>, ValueError> {
        if self.d.datatype()? == Type::Tag {
            match self.d.tag()?.as_u64() {
                TUPLE_TAG => {}
                PICKLE_TAG => return Err(ValueError::OpaquePython),
                tag => return Err(ValueError::Unsupported(Unsupported::Tag(tag))),
            }
        }
        if self.d.datatype()? != Type::Array {
            return Ok(None);
        }
        Ok(self.d.array()?)
    }

    /// An integer for an integer visitor. Any other value is refused with the error that
    /// visiting it would give, without visiting: so an image that reads only integers links
    /// no float, text or container decoding for them.
    #[cfg(feature = "messages")]
    fn integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, ValueError> {
        let unexpected = match self.d.datatype()? {
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                return visitor.visit_u64(self.d.u64()?)
            }
            Type::I8 | Type::I16 | Type::I32 | Type::I64 => {
                return visitor.visit_i64(self.d.i64()?)
            }
            Type::Int => return Err(de::Error::custom("integer below -2^63 for this type")),
            Type::Bool => Unexpected::Bool(self.d.bool()?),
            Type::Null => Unexpected::Unit,
            Type::F16 | Type::F32 | Type::F64 => Unexpected::Other("floating point number"),
            Type::Bytes => Unexpected::Bytes(self.d.bytes()?),
            Type::String => Unexpected::Str(self.d.str()?),
            Type::Array | Type::Tag => match self.array()? {
                Some(_) => Unexpected::Seq,
                None => return Err(ValueError::Malformed),
            },
            Type::Map => Unexpected::Map,
            Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
                return Err(ValueError::Unsupported(Unsupported::IndefiniteLength))
            }
            Type::Undefined | Type::Simple => {
                return Err(ValueError::Unsupported(Unsupported::Simple))
            }
            Type::Break | Type::Unknown(_) => return Err(ValueError::Malformed),
        };
        Err(de::Error::invalid_type(unexpected, &visitor))
    }

    /// [`Deserializer::integer`] where the refusal's text is dropped (no `messages`): what
    /// the value was need not be read to describe it, and only an opaque Python value has an
    /// error of its own. The item is validated, so the head is read with the validator's
    /// cursor: firmware that reads only integers links one CBOR reader, not two.
    #[cfg(not(feature = "messages"))]
    fn integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, ValueError> {
        let mut cursor = Cursor {
            bytes: self.d.input(),
            pos: self.d.position(),
            arg: 0,
        };
        let major = cursor.peek()? >> 5;
        if !matches!(major, 0 | 1 | 6) {
            return Err(refused(&visitor));
        }
        let argument = cursor.argument()?;
        match major {
            0 => {
                self.d.set_position(cursor.pos);
                visitor.visit_u64(argument)
            }
            // -1 - n; below -2^63 no integer visitor takes it (i128 goes through its own path).
            1 => match i64::try_from(argument) {
                Ok(n) => {
                    self.d.set_position(cursor.pos);
                    visitor.visit_i64(-1 - n)
                }
                Err(_) => Err(refused(&visitor)),
            },
            _ if argument == PICKLE_TAG => Err(ValueError::OpaquePython),
            _ => Err(refused(&visitor)),
        }
    }
}

/// A value of another type than `visitor` takes (what it is need not be read to say so).
#[cfg(not(feature = "messages"))]
fn refused<'de, V: Visitor<'de>>(visitor: &V) -> ValueError {
    de::Error::invalid_type(Unexpected::Other("value"), visitor)
}

macro_rules! forward {
    ($($f:ident)*) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            self.deserialize_any(visitor)
        }
    )*};
}

macro_rules! integers {
    ($($f:ident)*) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            self.integer(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.d.datatype()? {
            Type::Bool => visitor.visit_bool(self.d.bool()?),
            Type::Null => {
                self.d.null()?;
                visitor.visit_unit()
            }
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => visitor.visit_u64(self.d.u64()?),
            Type::I8 | Type::I16 | Type::I32 | Type::I64 => visitor.visit_i64(self.d.i64()?),
            // Below i64::MIN: only i128 takes it (see `deserialize_i128`). Not visiting i128
            // here keeps serde's i128 formatting out of firmware.
            Type::Int => Err(de::Error::custom("integer below -2^63 for this type")),
            Type::F16 => visitor.visit_f32(read_f16(&mut self.d)?),
            Type::F32 => visitor.visit_f32(self.d.f32()?),
            Type::F64 => visitor.visit_f64(self.d.f64()?),
            Type::Bytes => visitor.visit_borrowed_bytes(self.d.bytes()?),
            Type::String => visitor.visit_borrowed_str(self.d.str()?),
            Type::Array | Type::Tag => match self.array()? {
                Some(len) => visit_seq(self, len, visitor),
                None => Err(ValueError::Malformed),
            },
            Type::Map => {
                let len = self.d.map()?.ok_or(ValueError::Malformed)?;
                let mut access = Access {
                    de: self,
                    left: len,
                };
                let value = visitor.visit_map(&mut access)?;
                done(access.left)?;
                Ok(value)
            }
            Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
                Err(ValueError::Unsupported(Unsupported::IndefiniteLength))
            }
            Type::Undefined | Type::Simple => Err(ValueError::Unsupported(Unsupported::Simple)),
            Type::Break | Type::Unknown(_) => Err(ValueError::Malformed),
        }
    }

    integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    forward!(deserialize_bool deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_seq
        deserialize_map deserialize_identifier deserialize_ignored_any);

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self.d.datatype()? {
            Type::Int | Type::I64 | Type::I32 | Type::I16 | Type::I8 => {
                visitor.visit_i128(i128::from(self.d.int()?))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        if self.d.datatype()? == Type::Null {
            self.d.null()?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_any(visitor)
    }

    /// A unit variant is its name as text; any other variant is a one-entry map
    /// `{name: content}`.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self.d.datatype()? {
            Type::String => visitor.visit_enum(self.d.str()?.into_deserializer()),
            Type::Map if self.d.map()? == Some(1) => visitor.visit_enum(Variant { de: self }),
            _ => Err(de::Error::custom(
                "expected an enum: variant name, or a map of one entry {name: content}",
            )),
        }
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

fn visit_seq<'de, V: Visitor<'de>>(
    de: &mut Deserializer<'de>,
    len: u64,
    visitor: V,
) -> Result<V::Value, ValueError> {
    let mut access = Access { de, left: len };
    let value = visitor.visit_seq(&mut access)?;
    done(access.left)?;
    Ok(value)
}

/// A sequence or map with elements the visitor did not take is not the type asked for.
fn done(left: u64) -> Result<(), ValueError> {
    if left != 0 {
        return Err(de::Error::custom("more elements than the type has"));
    }
    Ok(())
}

struct Access<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: u64,
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = ValueError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ValueError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // Validated: every element is at least one byte of the input, so this is no lie that
        // could make a collection reserve more than the item's size.
        usize::try_from(self.left).ok()
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = ValueError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ValueError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ValueError> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok()
    }
}

struct Variant<'a, 'de> {
    de: &'a mut Deserializer<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = ValueError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), ValueError> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        de::Deserialize::deserialize(&mut *self.de)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }
}
