//! Arbitrary bytes into the value model: the validator and typed decoding never panic, agree
//! with each other, and whatever decodes re-encodes to a valid item that decodes the same.
#![no_main]

use std::collections::BTreeMap;

use depot_core::value::{self, ValueError};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

/// A type that takes most values: what an application might decode items into.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Any {
    Null(()),
    Bool(bool),
    Int(i64),
    Big(u64),
    Float(f64),
    Text(String),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    List(Vec<Any>),
    Map(BTreeMap<String, Any>),
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
            // Untagged enums may re-encode larger than the input (a half float becomes f64).
            Err(ValueError::BufferFull) => {}
            Err(e) => panic!("re-encoding failed: {e}"),
        }
    }
});
