//! Items between Python values and depot's value encoding (CBOR, RFC 8949).
//!
//! | Python | CBOR |
//! |---|---|
//! | `int` within −2⁶⁴ … 2⁶⁴−1 | int |
//! | `float` | float64 |
//! | `bool`, `None` | `true`/`false`, `null` |
//! | `str` | text |
//! | `bytes`, `bytearray` | byte string |
//! | `list`, `dict` | array, map |
//! | `tuple` | array inside tag [`TUPLE_TAG`] |
//! | anything else (a bigger int, `datetime`, sets, user classes, …) | the **whole item** as tag [`PICKLE_TAG`] around a byte string holding a pickle of it |
//!
//! Back to Python, tagged arrays become tuples, [`PICKLE_TAG`] items become the stored pickle,
//! and everything else the table's way. Depot has no use for what it cannot map: it never
//! runs it, and a Python reader gets it back value for value (depot's own pickles byte for
//! byte). An item that is not CBOR at all (a raw byte queue) reaches Python as `bytes`.

use minicbor::data::{Int, Tag, Type};
use minicbor::encode::write::Cursor;
use minicbor::{Decoder, Encoder};

use super::pickle::{self, Node, Pickle, Scratch, Writer, MAX_DEPTH, NIL};

/// CBOR tag around an array that was a Python tuple.
pub const TUPLE_TAG: u64 = 0x6470_0001;
/// CBOR tag around a byte string holding a whole Python pickle depot does not map.
pub const PICKLE_TAG: u64 = 0x6470_0002;

/// Nodes one item may visit when converted (shared references are walked each time): at
/// least this many, and at least as many as the pickle decoded to, so that a large item
/// without sharing always converts while shared references cannot multiply the work.
const WORK_BUDGET: u32 = 1 << 16;

fn budget_for(p: &Pickle<'_>) -> u32 {
    WORK_BUDGET.max(u32::try_from(p.nodes.len()).unwrap_or(u32::MAX))
}

/// Why an item could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ItemError {
    /// The converted item does not fit the output.
    TooLarge,
    /// Nested deeper than [`MAX_DEPTH`], self-referential, or too much shared structure.
    TooComplex,
}

impl From<pickle::WriteError> for ItemError {
    fn from(e: pickle::WriteError) -> Self {
        match e {
            pickle::WriteError::NoRoom => ItemError::TooLarge,
            _ => ItemError::TooComplex,
        }
    }
}

/// Writes the value at node `root` of `p` as one CBOR item into `out`; returns its length.
pub fn to_cbor(p: &Pickle<'_>, root: u32, out: &mut [u8]) -> Result<usize, ItemError> {
    let mut budget = budget_for(p);
    if mappable(p, root, 0, &mut budget)? {
        let mut e = Encoder::new(Cursor::new(&mut *out));
        encode(&mut e, p, root).map_err(|_| ItemError::TooLarge)?;
        return Ok(e.writer().position());
    }
    // Opaque: a standalone pickle of the item, behind a header of at most 5 + 9 bytes.
    const ROOM: usize = 14;
    let tail = out.get_mut(ROOM..).ok_or(ItemError::TooLarge)?;
    let mut w = Writer::new(tail);
    w.proto();
    let mut budget = budget_for(p);
    pickle::write_node(&mut w, p, root, 0, &mut budget)?;
    w.stop();
    let len = w.finish().map_err(|_| ItemError::TooLarge)?;
    let mut head = [0u8; ROOM];
    let mut e = Encoder::new(Cursor::new(&mut head[..]));
    e.tag(Tag::new(PICKLE_TAG))
        .and_then(|e| e.bytes_len(len as u64))
        .map_err(|_| ItemError::TooLarge)?;
    let h = e.writer().position();
    out.copy_within(ROOM..ROOM + len, h);
    out[..h].copy_from_slice(&head[..h]);
    Ok(h + len)
}

/// An int node's value, if within CBOR's range.
fn int_value(p: &Pickle<'_>, node: Node) -> Option<i128> {
    match node {
        Node::Int(v) => Some(v.into()),
        Node::Long(s) => {
            let le = p.bytes(s);
            if le.len() > 16 {
                return None;
            }
            let fill = if le.last().is_some_and(|&b| b & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut b = [fill; 16];
            b[..le.len()].copy_from_slice(le);
            let v = i128::from_le_bytes(b);
            (-(1i128 << 64)..(1i128 << 64)).contains(&v).then_some(v)
        }
        _ => None,
    }
}

/// The bytes of `bytearray(b'...')` written the protocol 2–4 way, if `node` is exactly that.
fn reduced_bytearray<'p>(p: &Pickle<'p>, node: Node) -> Option<&'p [u8]> {
    let Node::Reduce {
        func,
        args,
        state: NIL,
    } = node
    else {
        return None;
    };
    let Some(Node::Global { module, name }) = p.node(func) else {
        return None;
    };
    if p.bytes(module) != b"builtins" || p.bytes(name) != b"bytearray" {
        return None;
    }
    let mut items = p.tuple(args)?;
    let first = items.next();
    if items.next().is_some() {
        return None;
    }
    match first.and_then(|i| p.node(i)) {
        Some(Node::Bytes(s)) => Some(p.bytes(s)),
        None => Some(&[]),
        _ => None,
    }
}

fn mappable(p: &Pickle<'_>, i: u32, depth: u32, budget: &mut u32) -> Result<bool, ItemError> {
    if depth > MAX_DEPTH {
        return Err(ItemError::TooComplex);
    }
    *budget = budget.checked_sub(1).ok_or(ItemError::TooComplex)?;
    let Some(node) = p.node(i) else {
        return Ok(false);
    };
    Ok(match node {
        Node::None | Node::Bool(_) | Node::Float(_) | Node::Bytes(_) | Node::ByteArray(_) => true,
        Node::Int(_) | Node::Long(_) => int_value(p, node).is_some(),
        Node::Str(s) => core::str::from_utf8(p.bytes(s)).is_ok(),
        Node::Tuple(seq) | Node::List(seq) | Node::Dict(seq) => {
            for item in p.items(seq) {
                if !mappable(p, item, depth + 1, budget)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Reduce { .. } => reduced_bytearray(p, node).is_some(),
        _ => false,
    })
}

type EncResult = Result<(), minicbor::encode::Error<minicbor::encode::write::EndOfSlice>>;

/// Writes a node [`mappable`] accepted (so depth and shape are already checked).
fn encode(e: &mut Encoder<Cursor<&mut [u8]>>, p: &Pickle<'_>, i: u32) -> EncResult {
    let Some(node) = p.node(i) else {
        return Ok(());
    };
    match node {
        Node::None => {
            e.null()?;
        }
        Node::Bool(v) => {
            e.bool(v)?;
        }
        Node::Int(_) | Node::Long(_) => {
            let v = int_value(p, node).unwrap_or_default();
            e.int(Int::try_from(v).unwrap_or(Int::from(0u8)))?;
        }
        Node::Float(v) => {
            e.f64(v)?;
        }
        Node::Str(s) => {
            e.str(core::str::from_utf8(p.bytes(s)).unwrap_or_default())?;
        }
        Node::Bytes(s) | Node::ByteArray(s) => {
            e.bytes(p.bytes(s))?;
        }
        Node::Reduce { .. } => {
            e.bytes(reduced_bytearray(p, node).unwrap_or_default())?;
        }
        Node::Tuple(seq) | Node::List(seq) => {
            if matches!(node, Node::Tuple(_)) {
                e.tag(Tag::new(TUPLE_TAG))?;
            }
            e.array(seq.len.into())?;
            for item in p.items(seq) {
                encode(e, p, item)?;
            }
        }
        Node::Dict(seq) => {
            e.map((seq.len / 2).into())?;
            for item in p.items(seq) {
                encode(e, p, item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Output bytes [`to_pickle`] may need for a CBOR item of `len` bytes: every CBOR byte becomes
/// at most three pickle bytes (a 1-byte array header becomes `]`, `(`, `e`; a 3-byte half
/// float a 9-byte `BINFLOAT`), and an item written as plain bytes needs a 9-byte header.
pub const fn pickle_bound(len: usize) -> usize {
    3 * len + 9
}

/// Writes the item `cbor` as pickle opcodes for one value (no `PROTO`/`STOP`). Stored pickles
/// are decoded (in `scratch`) and written back; an item that is not one well-formed CBOR value
/// is written as `bytes`.
pub fn to_pickle(cbor: &[u8], w: &mut Writer<'_>, scratch: &mut Scratch<'_>) {
    let start = w.len();
    let mut d = Decoder::new(cbor);
    let ok = value(&mut d, w, scratch, 0, false).is_ok() && d.position() == cbor.len();
    if !ok {
        w.rewind(start);
        w.bytes(cbor);
    }
}

/// A CBOR item depot cannot turn into a Python value.
struct Bad;

fn dec<T>(r: Result<T, minicbor::decode::Error>) -> Result<T, Bad> {
    r.map_err(|_| Bad)
}

/// Half float to f64 (IEEE 754 binary16).
fn half(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * pow2(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1024.0 + frac) * pow2(e - 25),
    }
}

fn pow2(e: i32) -> f64 {
    f64::from_bits(((1023 + e) as u64) << 52)
}

/// Total bytes of an indefinite string's chunks (text or bytes).
fn chunked_len(d: &Decoder<'_>, text: bool) -> Result<usize, Bad> {
    let mut d = d.clone();
    let mut n = 0usize;
    if text {
        for chunk in dec(d.str_iter())? {
            n = n.checked_add(dec(chunk)?.len()).ok_or(Bad)?;
        }
    } else {
        for chunk in dec(d.bytes_iter())? {
            n = n.checked_add(dec(chunk)?.len()).ok_or(Bad)?;
        }
    }
    Ok(n)
}

fn value(
    d: &mut Decoder<'_>,
    w: &mut Writer<'_>,
    scratch: &mut Scratch<'_>,
    depth: u32,
    key: bool,
) -> Result<(), Bad> {
    if depth > MAX_DEPTH {
        return Err(Bad);
    }
    match dec(d.datatype())? {
        Type::Bool => {
            w.bool(dec(d.bool())?);
        }
        Type::Null => {
            dec(d.null())?;
            w.none();
        }
        Type::Undefined => {
            dec(d.undefined())?;
            w.none();
        }
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => {
            w.int(i128::from(dec(d.int())?));
        }
        Type::F16 => {
            let at = d.position();
            let b = d.input().get(at + 1..at + 3).ok_or(Bad)?;
            let bits = u16::from_be_bytes([b[0], b[1]]);
            d.set_position(at + 3);
            w.float(half(bits));
        }
        Type::F32 | Type::F64 => {
            w.float(dec(d.f64())?);
        }
        Type::Simple => {
            w.int(dec(d.simple())?.into());
        }
        Type::Bytes => {
            w.bytes(dec(d.bytes())?);
        }
        Type::String => {
            w.str(dec(d.str())?.as_bytes());
        }
        Type::BytesIndef | Type::StringIndef => {
            let text = matches!(dec(d.datatype())?, Type::StringIndef);
            let len = chunked_len(d, text)?;
            if text {
                w.str_header(len);
                for chunk in dec(d.str_iter())? {
                    w.raw(dec(chunk)?.as_bytes());
                }
            } else {
                w.bytes_header(len);
                for chunk in dec(d.bytes_iter())? {
                    w.raw(dec(chunk)?);
                }
            }
        }
        Type::Array | Type::ArrayIndef => {
            if key {
                // A list cannot be a dict key in Python: give the tuple it stands for.
                w.mark();
                items(d, w, scratch, depth, 1)?;
                w.tuple_from_mark();
            } else {
                w.empty_list().mark();
                items(d, w, scratch, depth, 1)?;
                w.appends();
            }
        }
        Type::Map | Type::MapIndef => {
            w.empty_dict().mark();
            items(d, w, scratch, depth, 2)?;
            w.setitems();
        }
        Type::Tag => match dec(d.tag())?.as_u64() {
            TUPLE_TAG => {
                if !matches!(dec(d.datatype())?, Type::Array | Type::ArrayIndef) {
                    return Err(Bad);
                }
                w.mark();
                items(d, w, scratch, depth, 1)?;
                // The long form: the count is not needed (`MARK … TUPLE`).
                w.tuple_from_mark();
            }
            PICKLE_TAG => {
                let stored = dec(d.bytes())?;
                embed(stored, w, scratch)?;
            }
            // Other tags: the value they wrap.
            _ => value(d, w, scratch, depth + 1, key)?,
        },
        _ => return Err(Bad),
    }
    Ok(())
}

/// The entries of an array (`per` 1) or map (`per` 2) as consecutive values.
fn items(
    d: &mut Decoder<'_>,
    w: &mut Writer<'_>,
    scratch: &mut Scratch<'_>,
    depth: u32,
    per: u64,
) -> Result<(), Bad> {
    let len = if per == 1 {
        dec(d.array())?
    } else {
        dec(d.map())?
    };
    match len {
        Some(n) => {
            // Each entry takes at least a byte, so a forged count ends at the input's end.
            for _ in 0..n {
                for k in 0..per {
                    value(d, w, scratch, depth + 1, per == 2 && k == 0)?;
                }
            }
        }
        None => loop {
            if dec(d.datatype())? == Type::Break {
                d.set_position(d.position() + 1);
                break;
            }
            for k in 0..per {
                value(d, w, scratch, depth + 1, per == 2 && k == 0)?;
            }
        },
    }
    Ok(())
}

/// Writes a stored pickle's value: decoded, then written back without memo or frames, so it
/// nests anywhere. One that does not decode reaches Python as `bytes`.
fn embed(stored: &[u8], w: &mut Writer<'_>, scratch: &mut Scratch<'_>) -> Result<(), Bad> {
    let mut sub = Scratch {
        nodes: &mut *scratch.nodes,
        stack: &mut *scratch.stack,
        memo: &mut *scratch.memo,
    };
    let start = w.len();
    if let Ok(p) = pickle::decode(stored, &mut sub) {
        let mut budget = budget_for(&p);
        // Shared references come back as copies; a pickle that would grow past the bound
        // `pickle_bound` promises (only one written with its memo can) stays bytes instead.
        let written = pickle::write_node(w, &p, p.root, 0, &mut budget).is_ok();
        if written && w.len() - start <= 3 * stored.len() {
            return Ok(());
        }
        w.rewind(start);
    }
    w.bytes(stored);
    Ok(())
}
