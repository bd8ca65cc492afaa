//! `T: Serialize` to a value-model item.

use core::fmt::{self, Write as _};

use minicbor::encode::Write;
use minicbor::Encoder;
use serde::ser::{self, Serialize};

use super::{ValueError, MAX_DEPTH, TUPLE_TAG};

/// Writes one value through minicbor's encoder, counting container depth so a recursive
/// Rust type cannot produce an item deeper than [`MAX_DEPTH`].
pub(crate) struct Serializer<W: Write> {
    enc: Encoder<W>,
    depth: usize,
}

impl<W: Write> Serializer<W> {
    pub(crate) fn new(writer: W) -> Self {
        Serializer {
            enc: Encoder::new(writer),
            depth: 0,
        }
    }

    pub(crate) fn into_writer(self) -> W {
        self.enc.into_writer()
    }

    fn open(&mut self) -> Result<(), ValueError> {
        if self.depth >= MAX_DEPTH {
            return Err(ValueError::TooDeep);
        }
        self.depth += 1;
        Ok(())
    }

    /// `{variant: …}`: the map level around an enum variant's content.
    fn variant(&mut self, variant: &str) -> Result<(), ValueError> {
        self.open()?;
        self.enc.map(1).map_err(write_failed)?;
        self.enc.str(variant).map_err(write_failed)?;
        Ok(())
    }

    fn tuple(&mut self, len: usize) -> Result<(), ValueError> {
        self.open()?;
        self.enc
            .tag(minicbor::data::Tag::new(TUPLE_TAG))
            .map_err(write_failed)?;
        self.enc.array(len as u64).map_err(write_failed)?;
        Ok(())
    }
}

fn write_failed<E>(_: minicbor::encode::Error<E>) -> ValueError {
    ValueError::BufferFull
}

/// An open container; `levels` is how many depth levels its `end` closes.
pub(crate) struct Compound<'a, W: Write> {
    ser: &'a mut Serializer<W>,
    levels: usize,
}

impl<W: Write> Compound<'_, W> {
    fn end(self) -> Result<(), ValueError> {
        self.ser.depth = self.ser.depth.saturating_sub(self.levels);
        Ok(())
    }
}

macro_rules! int {
    ($($f:ident: $t:ty => $m:ident),*) => {$(
        fn $f(self, v: $t) -> Result<(), ValueError> {
            self.enc.$m(v).map_err(write_failed)?;
            Ok(())
        }
    )*};
}

impl<'a, W: Write> ser::Serializer for &'a mut Serializer<W> {
    type Ok = ();
    type Error = ValueError;
    type SerializeSeq = Compound<'a, W>;
    type SerializeTuple = Compound<'a, W>;
    type SerializeTupleStruct = Compound<'a, W>;
    type SerializeTupleVariant = Compound<'a, W>;
    type SerializeMap = Compound<'a, W>;
    type SerializeStruct = Compound<'a, W>;
    type SerializeStructVariant = Compound<'a, W>;

    int!(serialize_bool: bool => bool, serialize_i8: i8 => i8, serialize_i16: i16 => i16,
        serialize_i32: i32 => i32, serialize_i64: i64 => i64, serialize_u8: u8 => u8,
        serialize_u16: u16 => u16, serialize_u32: u32 => u32, serialize_u64: u64 => u64,
        serialize_f32: f32 => f32, serialize_f64: f64 => f64);

    fn serialize_i128(self, v: i128) -> Result<(), ValueError> {
        let v = minicbor::data::Int::try_from(v).map_err(|_| ValueError::IntegerRange)?;
        self.enc.int(v).map_err(write_failed)?;
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), ValueError> {
        let v = minicbor::data::Int::try_from(v).map_err(|_| ValueError::IntegerRange)?;
        self.enc.int(v).map_err(write_failed)?;
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), ValueError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), ValueError> {
        self.enc.str(v).map_err(write_failed)?;
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), ValueError> {
        self.enc.bytes(v).map_err(write_failed)?;
        Ok(())
    }

    fn serialize_none(self) -> Result<(), ValueError> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), ValueError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), ValueError> {
        self.enc.null().map_err(write_failed)?;
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), ValueError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), ValueError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        self.variant(variant)?;
        value.serialize(&mut *self)?;
        self.depth -= 1;
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a, W>, ValueError> {
        let len = len.ok_or(ValueError::UnknownLength)?;
        self.open()?;
        self.enc.array(len as u64).map_err(write_failed)?;
        Ok(Compound {
            ser: self,
            levels: 1,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, W>, ValueError> {
        self.tuple(len)?;
        Ok(Compound {
            ser: self,
            levels: 1,
        })
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, ValueError> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, ValueError> {
        self.variant(variant)?;
        self.tuple(len)?;
        Ok(Compound {
            ser: self,
            levels: 2,
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a, W>, ValueError> {
        let len = len.ok_or(ValueError::UnknownLength)?;
        self.open()?;
        self.enc.map(len as u64).map_err(write_failed)?;
        Ok(Compound {
            ser: self,
            levels: 1,
        })
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, ValueError> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, W>, ValueError> {
        self.variant(variant)?;
        self.open()?;
        self.enc.map(len as u64).map_err(write_failed)?;
        Ok(Compound {
            ser: self,
            levels: 2,
        })
    }

    /// Text of a `Display` value, written without a buffer: once to measure, once to write.
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), ValueError> {
        let mut count = Count(0);
        write!(count, "{value}").map_err(|_| ValueError::Malformed)?;
        self.enc.str_len(count.0 as u64).map_err(write_failed)?;
        let mut out = Raw {
            enc: &mut self.enc,
            left: count.0,
        };
        write!(out, "{value}").map_err(|_| ValueError::BufferFull)?;
        if out.left != 0 {
            return Err(ValueError::Malformed);
        }
        Ok(())
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

struct Count(usize);

impl fmt::Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Text bytes straight into the encoder's writer, never more than were announced.
struct Raw<'e, W: Write> {
    enc: &'e mut Encoder<W>,
    left: usize,
}

impl<W: Write> fmt::Write for Raw<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.left = self.left.checked_sub(s.len()).ok_or(fmt::Error)?;
        self.enc
            .writer_mut()
            .write_all(s.as_bytes())
            .map_err(|_| fmt::Error)
    }
}

impl<W: Write> ser::SerializeSeq for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}

impl<W: Write> ser::SerializeTuple for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}

impl<W: Write> ser::SerializeTupleStruct for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}

impl<W: Write> ser::SerializeTupleVariant for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}

impl<W: Write> ser::SerializeMap for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        key.serialize(&mut *self.ser)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}

impl<W: Write> ser::SerializeStruct for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        self.ser.enc.str(key).map_err(write_failed)?;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}

impl<W: Write> ser::SerializeStructVariant for Compound<'_, W> {
    type Ok = ();
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        self.ser.enc.str(key).map_err(write_failed)?;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), ValueError> {
        Compound::end(self)
    }
}
