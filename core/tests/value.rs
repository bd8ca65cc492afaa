//! The value model: serde types to CBOR items and back, the validator on good, bad and
//! arbitrary bytes.

use std::collections::BTreeMap;

use depot_core::value::{self, Unsupported, ValueError, MAX_DEPTH, PICKLE_TAG, TUPLE_TAG};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut buf = vec![0; 4096];
    let n = value::to_slice(v, &mut buf).expect("encodes");
    buf.truncate(n);
    buf
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle(f64),
    Rect(u16, u16),
    Named { name: String, sides: u8 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    delta: i64,
    score: f64,
    ratio: f32,
    label: String,
    blob: ByteBuf,
    tags: Vec<String>,
    pairs: Vec<(i32, String)>,
    table: BTreeMap<String, Vec<i16>>,
    maybe: Option<bool>,
    shapes: Vec<Shape>,
    unit: (),
}

#[test]
fn scalars_encode_as_rfc_8949_preferred_forms() {
    assert_eq!(enc(&42u32), [0x18, 42]);
    assert_eq!(enc(&7u8), [0x07]);
    assert_eq!(enc(&-1i64), [0x20]);
    assert_eq!(
        enc(&u64::MAX),
        [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(enc(&true), [0xf5]);
    assert_eq!(enc(&Option::<u8>::None), [0xf6]);
    assert_eq!(enc(&1.5f64), [0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
    assert_eq!(enc("hi"), [0x62, b'h', b'i']);
    assert_eq!(enc(&ByteBuf::from(vec![1, 2])), [0x42, 1, 2]);
    assert_eq!(enc(&vec![1u8, 2]), [0x82, 1, 2]);
    // A tuple is an array inside tag 0x64700001.
    assert_eq!(enc(&(1u8, 2u8)), [0xda, 0x64, 0x70, 0x00, 0x01, 0x82, 1, 2]);
    assert_eq!(TUPLE_TAG, 1_685_061_633);
    assert_eq!(PICKLE_TAG, 1_685_061_634);
    // A unit variant is its name; other variants are {name: content}.
    assert_eq!(enc(&Shape::Point), [0x65, b'P', b'o', b'i', b'n', b't']);
    assert_eq!(
        enc(&Shape::Circle(0.5))[..8],
        [0xa1, 0x66, b'C', b'i', b'r', b'c', b'l', b'e']
    );
}

#[test]
fn a_nested_struct_round_trips() {
    let job = Job {
        id: u64::MAX,
        delta: i64::MIN,
        score: -2.25,
        ratio: 0.5,
        label: "grüße".into(),
        blob: ByteBuf::from(vec![0, 255, 7]),
        tags: vec!["a".into(), String::new()],
        pairs: vec![(-3, "x".into())],
        table: [("k".to_string(), vec![1, -2])].into(),
        maybe: Some(false),
        shapes: vec![
            Shape::Point,
            Shape::Circle(1.0),
            Shape::Rect(3, 4),
            Shape::Named {
                name: "hex".into(),
                sides: 6,
            },
        ],
        unit: (),
    };
    let bytes = enc(&job);
    value::validate(&bytes).unwrap();
    assert_eq!(value::from_slice::<Job>(&bytes).unwrap(), job);
}

#[test]
fn text_and_bytes_are_borrowed_from_the_item() {
    #[derive(Serialize, Deserialize)]
    struct View<'a> {
        name: &'a str,
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
    }
    let bytes = enc(&View {
        name: "n",
        data: &[9, 8],
    });
    let view: View<'_> = value::from_slice(&bytes).unwrap();
    assert_eq!((view.name, view.data), ("n", &[9u8, 8][..]));
}

#[test]
fn tagged_and_plain_arrays_read_as_any_sequence() {
    let tagged = [0xda, 0x64, 0x70, 0x00, 0x01, 0x82, 1, 2];
    let plain = [0x82, 1, 2];
    assert_eq!(value::from_slice::<Vec<u8>>(&tagged).unwrap(), [1, 2]);
    assert_eq!(value::from_slice::<(u8, u8)>(&plain).unwrap(), (1, 2));
    assert_eq!(value::from_slice::<[u8; 2]>(&tagged).unwrap(), [1, 2]);
    // A tuple of the wrong length is a mismatch, not a truncated read.
    assert!(matches!(
        value::from_slice::<(u8,)>(&plain),
        Err(ValueError::Mismatch(_))
    ));
}

#[test]
fn an_opaque_python_value_is_valid_but_no_rust_type() {
    let mut item = vec![0xda, 0x64, 0x70, 0x00, 0x02, 0x43];
    item.extend_from_slice(b"\x80\x04N");
    value::validate(&item).unwrap();
    let err = value::from_slice::<u32>(&item).unwrap_err();
    assert_eq!(err, ValueError::OpaquePython);
    assert!(err.to_string().contains("opaque Python value"), "{err}");
    assert_eq!(
        value::from_slice::<Vec<u8>>(&item).unwrap_err(),
        ValueError::OpaquePython
    );
    // The pickle tag must hold bytes.
    let bad = [0xda, 0x64, 0x70, 0x00, 0x02, 0x01];
    assert_eq!(
        value::validate(&bad),
        Err(ValueError::Unsupported(Unsupported::Tag(PICKLE_TAG)))
    );
}

#[test]
fn integers_beyond_64_bits_are_refused() {
    // Bignum tags 2 and 3 are not part of the value model.
    let big = [0xc2, 0x49, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        value::validate(&big),
        Err(ValueError::Unsupported(Unsupported::Tag(2)))
    );
    assert_eq!(
        value::to_slice(&(u128::from(u64::MAX) + 1), &mut [0; 32]),
        Err(ValueError::IntegerRange)
    );
    // −2⁶⁴ is a CBOR integer: valid, readable as i128, not as i64.
    let min = [0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(value::from_slice::<i128>(&min).unwrap(), -(1i128 << 64));
    assert!(matches!(
        value::from_slice::<i64>(&min),
        Err(ValueError::Mismatch(_))
    ));
}

#[test]
fn integer_types_read_integers_and_refuse_every_other_kind() {
    assert_eq!(value::from_slice::<u32>(&enc(&7u8)).unwrap(), 7);
    assert_eq!(value::from_slice::<i16>(&enc(&-300i32)).unwrap(), -300);
    assert_eq!(value::from_slice::<u64>(&enc(&u64::MAX)).unwrap(), u64::MAX);
    assert!(matches!(
        value::from_slice::<u8>(&enc(&-1i8)),
        Err(ValueError::Mismatch(_))
    ));
    let others = [
        enc(&1.5f64),
        enc(&true),
        enc(&()),
        enc("7"),
        enc(serde_bytes_like()),
        enc(&[1u8, 2]),
        enc(&(1u8, 2u8)),
        enc(&std::collections::BTreeMap::from([(1u8, 2u8)])),
    ];
    for item in &others {
        value::validate(item).unwrap();
        assert!(
            matches!(value::from_slice::<u32>(item), Err(ValueError::Mismatch(_))),
            "{item:02x?}"
        );
        assert!(
            matches!(value::from_slice::<i64>(item), Err(ValueError::Mismatch(_))),
            "{item:02x?}"
        );
    }
}

/// Bytes as CBOR bytes (major type 2), not as an array of integers.
fn serde_bytes_like() -> &'static ByteItem {
    &ByteItem
}

struct ByteItem;

impl Serialize for ByteItem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b"\x00\x01")
    }
}

#[cfg(feature = "messages")]
#[test]
fn a_wrong_type_says_what_it_found() {
    let err = value::from_slice::<u32>(&enc("abc")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "value does not fit the type: invalid type: string \"abc\", expected u32"
    );
    let err = value::from_slice::<u8>(&enc(&300u16)).unwrap_err();
    assert!(err.to_string().contains("300"), "{err}");
}

#[test]
fn floats_of_every_width_read_as_f64() {
    assert_eq!(value::from_slice::<f64>(&[0xf9, 0x3c, 0x00]).unwrap(), 1.0);
    assert_eq!(value::from_slice::<f64>(&[0xf9, 0xc0, 0x00]).unwrap(), -2.0);
    assert_eq!(
        value::from_slice::<f64>(&[0xf9, 0x00, 0x01]).unwrap(),
        2f64.powi(-24)
    );
    assert_eq!(
        value::from_slice::<f64>(&[0xf9, 0x7c, 0x00]).unwrap(),
        f64::INFINITY
    );
    assert_eq!(value::from_slice::<f64>(&enc(&0.25f32)).unwrap(), 0.25);
    assert_eq!(value::from_slice::<f64>(&enc(&3u8)).unwrap(), 3.0);
}

fn nested(depth: usize) -> Vec<u8> {
    let mut item = vec![0x81; depth];
    item.push(0x00);
    item
}

#[test]
fn nesting_is_bounded() {
    value::validate(&nested(MAX_DEPTH)).unwrap();
    assert_eq!(
        value::validate(&nested(MAX_DEPTH + 1)),
        Err(ValueError::TooDeep)
    );
    assert_eq!(value::validate(&nested(100_000)), Err(ValueError::TooDeep));

    #[derive(Serialize)]
    struct Link(Option<Box<Link>>);
    let mut chain = Link(None);
    for _ in 0..MAX_DEPTH {
        chain = Link(Some(Box::new(chain)));
    }
    // Newtypes and options add no level: this is one value, not a deep one.
    assert!(value::to_slice(&chain, &mut [0; 64]).is_ok());
    let deep = (0..=MAX_DEPTH).fold(serde_json_like::Tree::Leaf, |t, _| {
        serde_json_like::Tree::List(vec![t])
    });
    assert_eq!(
        value::to_slice(&deep, &mut [0; 4096]),
        Err(ValueError::TooDeep)
    );
}

mod serde_json_like {
    use serde::Serialize;
    #[derive(Serialize)]
    #[serde(untagged)]
    pub enum Tree {
        Leaf,
        List(Vec<Tree>),
    }
}

#[test]
fn bad_bytes_are_refused_by_kind() {
    assert_eq!(value::validate(&[]), Err(ValueError::Truncated));
    assert_eq!(value::validate(&[0x82, 1]), Err(ValueError::Truncated));
    assert_eq!(
        value::validate(&[0x01, 0x02]),
        Err(ValueError::TrailingBytes)
    );
    assert_eq!(value::validate(&[0xff]), Err(ValueError::Malformed));
    assert_eq!(
        value::validate(&[0x62, 0xc3, 0x28]),
        Err(ValueError::Malformed)
    );
    assert_eq!(
        value::validate(&[0x9f, 0xff]),
        Err(ValueError::Unsupported(Unsupported::IndefiniteLength))
    );
    assert_eq!(
        value::validate(&[0xf7]),
        Err(ValueError::Unsupported(Unsupported::Simple))
    );
    assert_eq!(
        value::validate(&[0xc1, 0x00]),
        Err(ValueError::Unsupported(Unsupported::Tag(1)))
    );
    // A length far beyond the input ends at the input's end.
    assert_eq!(
        value::validate(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]),
        Err(ValueError::Truncated)
    );
    assert_eq!(
        value::to_slice(&"too long for the buffer", &mut [0; 8]),
        Err(ValueError::BufferFull)
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Tree {
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(ByteBuf),
    List(Vec<Tree>),
    Tuple((bool, Option<u32>)),
    Map(BTreeMap<String, Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Tree::Int),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Tree::Float),
        ".{0,12}".prop_map(Tree::Text),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Tree::Bytes(ByteBuf::from(b))),
        any::<(bool, Option<u32>)>().prop_map(Tree::Tuple),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            proptest::collection::btree_map(".{0,6}", inner, 0..6).prop_map(Tree::Map),
        ]
    })
}

proptest! {
    #[test]
    fn trees_round_trip(t in tree()) {
        let bytes = enc(&t);
        prop_assert_eq!(value::validate(&bytes), Ok(()));
        prop_assert_eq!(value::from_slice::<Tree>(&bytes).unwrap(), t);
    }

    #[test]
    fn integers_round_trip(i in any::<i64>(), u in any::<u64>(), s in any::<i16>()) {
        prop_assert_eq!(value::from_slice::<i64>(&enc(&i)).unwrap(), i);
        prop_assert_eq!(value::from_slice::<u64>(&enc(&u)).unwrap(), u);
        prop_assert_eq!(value::from_slice::<i16>(&enc(&s)).unwrap(), s);
        prop_assert_eq!(value::from_slice::<i128>(&enc(&u)).unwrap(), i128::from(u));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let valid = value::validate(&bytes).is_ok();
        let _ = value::from_slice::<Tree>(&bytes);
        let _ = value::from_slice::<serde::de::IgnoredAny>(&bytes);
        // Whatever typed decode accepts, the validator accepts.
        if value::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
            prop_assert!(valid);
        }
    }

    #[test]
    fn mutated_values_never_panic(
        t in tree(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = enc(&t);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let valid = value::validate(&bytes).is_ok();
        if value::from_slice::<Tree>(&bytes).is_ok() {
            prop_assert!(valid);
        }
        let _ = value::from_slice::<serde::de::IgnoredAny>(&bytes);
    }

    #[test]
    fn any_prefix_of_a_value_is_truncated(t in tree(), cut in any::<prop::sample::Index>()) {
        let bytes = enc(&t);
        let n = cut.index(bytes.len());
        prop_assert_eq!(value::validate(&bytes[..n]), Err(ValueError::Truncated));
    }
}

/// The validator as minicbor's typed reads define it: `value::validate` walks the headers
/// itself and must give the same outcome, error kind included, on any input.
mod reference {
    use depot_core::value::minicbor::data::Type;
    use depot_core::value::minicbor::decode::Error;
    use depot_core::value::minicbor::Decoder;
    use depot_core::value::{Unsupported, ValueError, MAX_DEPTH, PICKLE_TAG, TUPLE_TAG};

    fn err(e: Error) -> ValueError {
        if e.is_end_of_input() {
            ValueError::Truncated
        } else {
            ValueError::Malformed
        }
    }

    pub fn validate(bytes: &[u8]) -> Result<(), ValueError> {
        let mut d = Decoder::new(bytes);
        check(&mut d, 0)?;
        if d.position() != bytes.len() {
            return Err(ValueError::TrailingBytes);
        }
        Ok(())
    }

    fn deeper(depth: usize) -> Result<usize, ValueError> {
        if depth >= MAX_DEPTH {
            return Err(ValueError::TooDeep);
        }
        Ok(depth + 1)
    }

    fn check_array(d: &mut Decoder<'_>, depth: usize) -> Result<(), ValueError> {
        let depth = deeper(depth)?;
        let n = d.array().map_err(err)?.expect("definite");
        for _ in 0..n {
            check(d, depth)?;
        }
        Ok(())
    }

    fn check(d: &mut Decoder<'_>, depth: usize) -> Result<(), ValueError> {
        match d.datatype().map_err(err)? {
            Type::Bool => d.bool().map_err(err).map(|_| ())?,
            Type::Null => d.null().map_err(err)?,
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64().map_err(err).map(|_| ())?,
            Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
                d.int().map_err(err).map(|_| ())?
            }
            Type::F16 => {
                let pos = d.position();
                if d.input().get(pos..pos + 3).is_none() {
                    return Err(ValueError::Truncated);
                }
                d.set_position(pos + 3);
            }
            Type::F32 => d.f32().map_err(err).map(|_| ())?,
            Type::F64 => d.f64().map_err(err).map(|_| ())?,
            Type::Bytes => d.bytes().map_err(err).map(|_| ())?,
            Type::String => d.str().map_err(err).map(|_| ())?,
            Type::Array => check_array(d, depth)?,
            Type::Map => {
                let depth = deeper(depth)?;
                let n = d.map().map_err(err)?.expect("definite");
                for _ in 0..n {
                    check(d, depth)?;
                    check(d, depth)?;
                }
            }
            Type::Tag => match d.tag().map_err(err)?.as_u64() {
                TUPLE_TAG if d.datatype().map_err(err)? == Type::Array => check_array(d, depth)?,
                PICKLE_TAG if d.datatype().map_err(err)? == Type::Bytes => {
                    d.bytes().map_err(err).map(|_| ())?
                }
                tag => return Err(ValueError::Unsupported(Unsupported::Tag(tag))),
            },
            Type::BytesIndef | Type::StringIndef | Type::ArrayIndef | Type::MapIndef => {
                return Err(ValueError::Unsupported(Unsupported::IndefiniteLength))
            }
            Type::Undefined | Type::Simple => {
                return Err(ValueError::Unsupported(Unsupported::Simple))
            }
            _ => return Err(ValueError::Malformed),
        }
        Ok(())
    }
}

/// Bytes that look like CBOR more often than random ones: headers of every kind, with the
/// depot tags and short arguments, so the differential test reaches nested and tagged items.
fn cbor_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        (0u8..8, 0u8..32).prop_map(|(major, info)| vec![(major << 5) | info]),
        Just(vec![0xda, 0x64, 0x70, 0x00, 0x01]),
        Just(vec![0xda, 0x64, 0x70, 0x00, 0x02]),
        Just(vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Just(vec![0x62, 0xc3, 0x28]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn validate_agrees_with_minicbor_on_any_bytes(bytes in cbor_ish()) {
        prop_assert_eq!(value::validate(&bytes), reference::validate(&bytes));
    }

    #[test]
    fn validate_agrees_with_minicbor_on_mutated_values(
        t in tree(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = enc(&t);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        prop_assert_eq!(value::validate(&bytes), reference::validate(&bytes));
        let n = cut.index(bytes.len() + 1);
        prop_assert_eq!(value::validate(&bytes[..n]), reference::validate(&bytes[..n]));
    }
}

/// An integer's header (any additional information, valid or not) and 0 to 9 more bytes.
fn integer_ish() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..2,
        0u8..32,
        proptest::collection::vec(any::<u8>(), 0..10),
    )
        .prop_map(|(major, info, rest)| {
            let mut bytes = vec![(major << 5) | info];
            bytes.extend(rest);
            bytes
        })
}

/// The integer an item is, as minicbor reads it (any integer header, trailing bytes ignored).
fn integer_of(bytes: &[u8]) -> Option<i128> {
    use depot_core::value::minicbor::data::Type;
    let mut d = depot_core::value::minicbor::Decoder::new(bytes);
    match d.datatype().ok()? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64().ok().map(i128::from),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => d.int().ok().map(i128::from),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// An integer type accepts exactly the valid items that are integers in its range, with
    /// their value (without `messages` it reads only the item's head, not checking it whole).
    #[test]
    fn integer_types_accept_exactly_the_valid_integers_in_range(
        bytes in prop_oneof![cbor_ish(), integer_ish()],
    ) {
        let expected = value::validate(&bytes).ok().and_then(|()| integer_of(&bytes));
        prop_assert_eq!(
            value::from_slice::<i64>(&bytes).ok().map(i128::from),
            expected.filter(|&n| i64::try_from(n).is_ok())
        );
        prop_assert_eq!(
            value::from_slice::<u32>(&bytes).ok().map(i128::from),
            expected.filter(|&n| u32::try_from(n).is_ok())
        );
        prop_assert_eq!(
            value::from_slice::<Transparent>(&bytes).ok().map(|t| i128::from(t.0)),
            expected.filter(|&n| u8::try_from(n).is_ok())
        );
    }
}

/// A type that deserializes as the integer inside it (it asks for an integer itself).
#[derive(Deserialize)]
#[serde(transparent)]
struct Transparent(u8);

#[test]
fn an_integer_type_refuses_other_items() {
    // Text that is not UTF-8: not a value.
    let bad_text = [0x62, 0xc3, 0x28];
    assert_eq!(value::validate(&bad_text), Err(ValueError::Malformed));
    // With `messages` (hosts) every item is checked whole first.
    #[cfg(feature = "messages")]
    assert_eq!(
        value::from_slice::<u32>(&bad_text),
        Err(ValueError::Malformed)
    );
    // Without (firmware) an integer type reads only the head: it sees text, the wrong type.
    #[cfg(not(feature = "messages"))]
    assert!(matches!(
        value::from_slice::<u32>(&bad_text),
        Err(ValueError::Mismatch(_))
    ));
    // The integer must be the whole item.
    assert_eq!(
        value::from_slice::<u32>(&[0x01, 0x02]),
        Err(ValueError::TrailingBytes)
    );
    assert_eq!(
        value::from_slice::<u32>(&[0x19, 0x01]),
        Err(ValueError::Truncated)
    );
    assert_eq!(value::from_slice::<u32>(&[]), Err(ValueError::Truncated));
    // An opaque Python value keeps its own error.
    let pickle = [0xda, 0x64, 0x70, 0x00, 0x02, 0x41, 0x00];
    assert_eq!(
        value::from_slice::<u32>(&pickle),
        Err(ValueError::OpaquePython)
    );
}

#[test]
fn validate_agrees_with_minicbor_on_corner_cases() {
    let tuple = [0xda, 0x64, 0x70, 0x00, 0x01];
    let pickle = [0xda, 0x64, 0x70, 0x00, 0x02];
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        [&tuple[..], &[0x38]].concat(),
        [&tuple[..], &[0x38, 0x01]].concat(),
        [&tuple[..], &[0x80]].concat(),
        [&tuple[..], &[0x9f, 0xff]].concat(),
        [&pickle[..], &[0x41, 0x00]].concat(),
        [&pickle[..], &[0x5f, 0xff]].concat(),
        [&pickle[..]].concat(),
        vec![0xf8],
        vec![0xf8, 0x20],
        vec![0xf9, 0x00],
        vec![0xfa, 0, 0, 0, 0],
        vec![0xfb, 0, 0, 0, 0, 0, 0, 0],
        vec![0x1c],
        vec![0x3b, 0xff, 0, 0, 0, 0, 0, 0, 0],
        vec![0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xdb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
        vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ];
    for b in 0..=255u8 {
        cases.push(vec![b]);
        cases.push(vec![b, 0x00]);
        cases.push(vec![0x81, b]);
    }
    for case in cases {
        assert_eq!(
            value::validate(&case),
            reference::validate(&case),
            "{case:02x?}"
        );
    }
}

/// A text string is valid exactly when Rust's own UTF-8 check says so (`validate` has a
/// smaller check of its own): every sequence of up to three bytes, and four-byte ones around
/// every boundary of the encoding.
#[test]
fn text_is_valid_exactly_when_it_is_utf8() {
    let agree = |bytes: &[u8]| {
        let item = [&[0x60 | bytes.len() as u8][..], bytes].concat();
        assert_eq!(
            value::validate(&item).is_ok(),
            std::str::from_utf8(bytes).is_ok(),
            "{bytes:02x?}"
        );
    };
    agree(&[]);
    for a in 0..=255u8 {
        agree(&[a]);
        for b in 0..=255u8 {
            agree(&[a, b]);
            if a >= 0xc0 {
                for c in 0..=255u8 {
                    agree(&[a, b, c]);
                }
            }
        }
    }
    let edges = [
        0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xe0, 0xff,
    ];
    for a in 0xf0..=0xff {
        for b in edges {
            for c in edges {
                for d in edges {
                    agree(&[a, b, c, d]);
                    agree(&[0x41, a, b, c, d, 0x41]);
                }
            }
        }
    }
}
