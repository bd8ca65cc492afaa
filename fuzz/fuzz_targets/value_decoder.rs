//! Arbitrary bytes into the value model: the validator and typed decoding never panic, agree
//! with each other, and whatever decodes re-encodes to a valid item that decodes the same.
#![no_main]

use depot_core::value::{self, ValueError};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

/// Any value as the deserializer presents it (`deserialize_any`), kind by kind.
#[derive(Debug, PartialEq)]
enum Any {
    Null,
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    List(Vec<Any>),
    Map(Vec<(Any, Any)>),
}

impl Serialize for Any {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Any::Null => s.serialize_unit(),
            Any::Bool(b) => s.serialize_bool(*b),
            Any::Int(i) => s.serialize_i64(*i),
            Any::Big(u) => s.serialize_u64(*u),
            Any::Float(f) => s.serialize_f64(*f),
            Any::Text(t) => s.serialize_str(t),
            Any::Bytes(b) => s.serialize_bytes(b),
            Any::List(items) => s.collect_seq(items),
            Any::Map(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Any, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> serde::de::Visitor<'de> for AnyVisitor {
    type Value = Any;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(Any::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(Any::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any, E> {
        Ok(i64::try_from(v).map_or(Any::Big(v), Any::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(Any::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Text(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Any, E> {
        Ok(Any::Bytes(v.to_vec()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Any::List(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Any::Map(entries))
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Record<'a> {
    id: u32,
    name: &'a str,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
    pair: (i8, Option<f32>),
}

fuzz_target!(|data: &[u8]| {
    let valid = value::validate(data);
    if value::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
        assert_eq!(valid, Ok(()));
    }
    let _ = value::from_slice::<Record>(data);
    let _ = value::from_slice::<u32>(data);
    let _ = value::from_slice::<Vec<(u8, String)>>(data);
    if let Ok(any) = value::from_slice::<Any>(data) {
        assert_eq!(valid, Ok(()));
        let mut buf = vec![0u8; data.len() * 2 + 64];
        match value::to_slice(&any, &mut buf) {
            Ok(n) => {
                value::validate(&buf[..n]).expect("re-encoded item is valid");
                let again: Any = value::from_slice(&buf[..n]).expect("decodes again");
                // NaN is not equal to itself; everything else must survive the round trip.
                if !format!("{any:?}").contains("NaN") {
                    assert_eq!(again, any);
                }
            }
            // A half or single float re-encodes as a double, larger than the input.
            Err(ValueError::BufferFull) => {}
            Err(e) => panic!("re-encoding failed: {e}"),
        }
    }
});
