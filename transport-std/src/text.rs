//! Values as text: the JSON the `depot` CLI prints for an item and the JSON-like text it reads
//! into one (PROTOCOL.md, "Items: the value model", "As text").
//!
//! Printing: integers, floats (`NaN`, `Infinity`, `-Infinity` as Python's `json` does),
//! `true`/`false`/`null`, text and arrays as JSON; tuples as arrays; maps whose keys are all
//! text as objects; the rest in one-key objects: `{"$bytes": "<base64>"}`,
//! `{"$python_pickle": "<base64>"}`, `{"$map": [[key, value], …]}` (other keys, or a lone key
//! that would read as one of these). Parsing takes the same forms back, plus
//! `{"$tuple": [...]}` and any value as a map key (`{1: "a"}`).

use std::fmt::Write as _;

use depot_core::value::{self, ValueError, MAX_DEPTH, PICKLE_TAG, TUPLE_TAG};
use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};

/// The one-key objects that stand for what JSON cannot say.
const SPECIAL: [&str; 4] = ["$bytes", "$python_pickle", "$map", "$tuple"];

/// The item as one line of JSON; an error if it is not one well-formed value.
pub fn to_json(item: &[u8]) -> Result<String, ValueError> {
    value::validate(item)?;
    let mut out = String::new();
    let mut d = Decoder::new(item);
    print(&mut d, &mut out)?;
    Ok(out)
}

fn print(d: &mut Decoder<'_>, out: &mut String) -> Result<(), ValueError> {
    match d.datatype()? {
        Type::Bool => out.push_str(if d.bool()? { "true" } else { "false" }),
        Type::Null => {
            d.null()?;
            out.push_str("null");
        }
        Type::U8 | Type::U16 | Type::U32 | Type::U64 | Type::I8 | Type::I16 | Type::I32 => {
            let _ = write!(out, "{}", i128::from(d.int()?));
        }
        Type::I64 | Type::Int => {
            let _ = write!(out, "{}", i128::from(d.int()?));
        }
        Type::F16 => {
            let p = d.position();
            let half = d.input().get(p..p + 3).ok_or(ValueError::Truncated)?;
            float(
                f64::from(value::from_slice::<f32>(half)?),
                &format!("{:?}", value::from_slice::<f32>(half)?),
                out,
            );
            d.set_position(p + 3);
        }
        Type::F32 => {
            let f = d.f32()?;
            float(f64::from(f), &format!("{f:?}"), out);
        }
        Type::F64 => {
            let f = d.f64()?;
            float(f, &format!("{f:?}"), out);
        }
        Type::Bytes => special(out, "$bytes", &base64(d.bytes()?)),
        Type::String => string(d.str()?, out),
        Type::Array => seq(d, out)?,
        Type::Tag => match d.tag()?.as_u64() {
            TUPLE_TAG => seq(d, out)?,
            PICKLE_TAG => special(out, "$python_pickle", &base64(d.bytes()?)),
            _ => return Err(ValueError::Malformed),
        },
        Type::Map => {
            let n = d.map()?.ok_or(ValueError::Malformed)?;
            let start = d.position();
            let mut text_keys = true;
            let mut lone_special = false;
            for _ in 0..n {
                if d.datatype()? == Type::String {
                    let key = d.str()?;
                    lone_special = n == 1 && SPECIAL.contains(&key);
                } else {
                    text_keys = false;
                    skip_value(d)?;
                }
                skip_value(d)?;
            }
            d.set_position(start);
            if text_keys && !lone_special {
                out.push('{');
                for i in 0..n {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    string(d.str()?, out);
                    out.push_str(": ");
                    print(d, out)?;
                }
                out.push('}');
            } else {
                out.push_str("{\"$map\": [");
                for i in 0..n {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push('[');
                    print(d, out)?;
                    out.push_str(", ");
                    print(d, out)?;
                    out.push(']');
                }
                out.push_str("]}");
            }
        }
        _ => return Err(ValueError::Malformed),
    }
    Ok(())
}

/// Skips one validated value (minicbor's own skip needs its `half` feature for half floats).
fn skip_value(d: &mut Decoder<'_>) -> Result<(), ValueError> {
    match d.datatype()? {
        Type::F16 => d.set_position(d.position() + 3),
        Type::Array => {
            for _ in 0..d.array()?.unwrap_or(0) {
                skip_value(d)?;
            }
        }
        Type::Map => {
            for _ in 0..d.map()?.unwrap_or(0) {
                skip_value(d)?;
                skip_value(d)?;
            }
        }
        Type::Tag => {
            d.tag()?;
            skip_value(d)?;
        }
        _ => d.skip()?,
    }
    Ok(())
}

fn seq(d: &mut Decoder<'_>, out: &mut String) -> Result<(), ValueError> {
    let n = d.array()?.ok_or(ValueError::Malformed)?;
    out.push('[');
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        print(d, out)?;
    }
    out.push(']');
    Ok(())
}

fn special(out: &mut String, key: &str, b64: &str) {
    let _ = write!(out, "{{\"{key}\": \"{b64}\"}}");
}

/// `shown` is the float's shortest `{:?}` form at its own width, which keeps a fraction or an
/// exponent, so a float never reads back as an integer.
fn float(f: f64, shown: &str, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.push_str(shown);
    }
}

fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4) with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn unbase64(s: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("not base64: \"{}\"", s.escape_debug());
    let body = s.trim_end_matches('=');
    if !s.len().is_multiple_of(4) || s.len() - body.len() > 2 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.bytes() {
        let v = B64.iter().position(|&b| b == c).ok_or_else(bad)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// A plain string as a value (CBOR text), as `depot put --text` sends it.
pub fn text_value(s: &str) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::with_capacity(s.len() + 9));
    // Writing into a Vec cannot fail.
    let _ = enc.str(s);
    enc.into_writer()
}

/// Parses JSON-like text into one value: JSON (numbers, `"text"`, `true`, `false`, `null`,
/// arrays, objects), `NaN`/`Infinity`, any value as an object key, and the one-key objects
/// that [`to_json`] prints.
pub fn parse(input: &str) -> Result<Vec<u8>, String> {
    let mut p = Parser {
        s: input.as_bytes(),
        i: 0,
    };
    let node = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the value"));
    }
    let mut enc = Encoder::new(Vec::new());
    node.encode(&mut enc);
    let item = enc.into_writer();
    value::validate(&item).map_err(|e| e.to_string())?;
    Ok(item)
}

/// A parsed value (CBOR puts a container's length before its items).
enum Node {
    Int(minicbor::data::Int),
    Float(f64),
    Bool(bool),
    Null,
    Text(String),
    Bytes(Vec<u8>),
    Pickle(Vec<u8>),
    Array(Vec<Node>),
    Tuple(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn encode(&self, enc: &mut Encoder<Vec<u8>>) {
        // Writing into a Vec cannot fail.
        let _ = match self {
            Node::Int(i) => enc.int(*i),
            Node::Float(f) => enc.f64(*f),
            Node::Bool(b) => enc.bool(*b),
            Node::Null => enc.null(),
            Node::Text(t) => enc.str(t),
            Node::Bytes(b) => enc.bytes(b),
            Node::Pickle(b) => enc.tag(Tag::new(PICKLE_TAG)).and_then(|e| e.bytes(b)),
            Node::Array(items) | Node::Tuple(items) => {
                if matches!(self, Node::Tuple(_)) {
                    let _ = enc.tag(Tag::new(TUPLE_TAG));
                }
                let _ = enc.array(items.len() as u64);
                items.iter().for_each(|n| n.encode(enc));
                return;
            }
            Node::Map(entries) => {
                let _ = enc.map(entries.len() as u64);
                for (k, v) in entries {
                    k.encode(enc);
                    v.encode(enc);
                }
                return;
            }
        };
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        let text = String::from_utf8_lossy(self.s);
        if self.i >= self.s.len() {
            format!("{what} at the end of '{text}'")
        } else {
            format!("{what} at byte {} of '{text}'", self.i)
        }
    }

    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if !self.eat(c) {
            return Err(self.err(&format!("expected '{}'", c as char)));
        }
        Ok(())
    }

    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            let end = self.i + w.len();
            if !self.s.get(end).is_some_and(|c| c.is_ascii_alphanumeric()) {
                self.i = end;
                return true;
            }
        }
        false
    }

    fn value(&mut self, depth: usize) -> Result<Node, String> {
        match self.peek() {
            None => Err(self.err("expected a value")),
            Some(b'"') => Ok(Node::Text(self.string()?)),
            Some(b'[') => Ok(Node::Array(self.items(b']', depth, |p, d| p.value(d))?)),
            Some(b'{') => self.object(depth),
            Some(c) if c == b'-' || c.is_ascii_digit() || c == b'N' || c == b'I' => self.number(),
            Some(_) if self.word("true") => Ok(Node::Bool(true)),
            Some(_) if self.word("false") => Ok(Node::Bool(false)),
            Some(_) if self.word("null") => Ok(Node::Null),
            Some(_) => {
                Err(self
                    .err("not a value (quote text as \"...\", or use --text for plain strings)"))
            }
        }
    }

    /// Parses `open item (, item)* close` at `self.i`, one level deeper than `depth`.
    fn items<T>(
        &mut self,
        close: u8,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        if depth >= MAX_DEPTH {
            return Err(self.err(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.i += 1;
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(item(self, depth + 1)?);
            if self.eat(close) {
                return Ok(items);
            }
            if !self.eat(b',') {
                return Err(self.err(&format!("expected ',' or '{}'", close as char)));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node, String> {
        let start = self.i;
        // A one-key object may be a special form.
        self.i += 1;
        if self.peek() == Some(b'"') {
            let key = self.string()?;
            if SPECIAL.contains(&key.as_str()) && self.eat(b':') {
                let node = self.special(&key, depth)?;
                if !self.eat(b'}') {
                    return Err(
                        self.err(&format!("expected '}}': {key} stands alone in its object"))
                    );
                }
                return Ok(node);
            }
        }
        self.i = start;
        let entries = self.items(b'}', depth, |p, d| {
            let k = p.value(d)?;
            p.expect(b':')?;
            Ok((k, p.value(d)?))
        })?;
        Ok(Node::Map(entries))
    }

    fn special(&mut self, key: &str, depth: usize) -> Result<Node, String> {
        match key {
            "$bytes" | "$python_pickle" => {
                if self.peek() != Some(b'"') {
                    return Err(self.err(&format!("{key} takes a base64 string")));
                }
                let b = unbase64(&self.string()?)?;
                Ok(if key == "$bytes" {
                    Node::Bytes(b)
                } else {
                    Node::Pickle(b)
                })
            }
            "$tuple" => {
                if self.peek() != Some(b'[') {
                    return Err(self.err("$tuple takes an array"));
                }
                Ok(Node::Tuple(self.items(b']', depth, |p, d| p.value(d))?))
            }
            _ => {
                if self.peek() != Some(b'[') {
                    return Err(self.err("$map takes an array of [key, value] pairs"));
                }
                let entries = self.items(b']', depth, |p, d| {
                    p.expect(b'[')?;
                    let k = p.value(d)?;
                    p.expect(b',')?;
                    let v = p.value(d)?;
                    p.expect(b']')?;
                    Ok((k, v))
                })?;
                Ok(Node::Map(entries))
            }
        }
    }

    fn number(&mut self) -> Result<Node, String> {
        let start = self.i;
        let negative = self.s[self.i] == b'-';
        if negative {
            self.i += 1;
        }
        if self.word("Infinity") {
            let f = if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            return Ok(Node::Float(f));
        }
        if !negative && self.word("NaN") {
            return Ok(Node::Float(f64::NAN));
        }
        let mut float = false;
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'0'..=b'9' => {}
                b'.' | b'e' | b'E' | b'+' | b'-' => float = true,
                _ => break,
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        if float {
            let f: f64 = text
                .parse()
                .map_err(|_| self.err(&format!("'{text}' is not a number")))?;
            Ok(Node::Float(f))
        } else {
            let i: i128 = text
                .parse()
                .map_err(|_| self.err(&format!("'{text}' is not a number")))?;
            let i = minicbor::data::Int::try_from(i)
                .map_err(|_| format!("integer {text} is outside -2^64 .. 2^64-1"))?;
            Ok(Node::Int(i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = std::str::from_utf8(&self.s[self.i..]).map_err(|_| self.err("bad UTF-8"))?;
            let Some(c) = rest.chars().next() else {
                return Err(self.err("unterminated string"));
            };
            self.i += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self.s.get(self.i).copied();
                    self.i += 1;
                    match e {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => out.push(self.unicode_escape()?),
                        _ => return Err(self.err("bad escape in string")),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let hex = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(hex)
    }

    fn unicode_escape(&mut self) -> Result<char, String> {
        let hi = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&hi) && self.s[self.i..].starts_with(b"\\u") {
            self.i += 2;
            let lo = self.hex4()?;
            0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> String {
        to_json(&parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))).unwrap()
    }

    #[test]
    fn json_round_trips() {
        for text in [
            "42",
            "-7",
            "18446744073709551615",
            "-18446744073709551616",
            "1.5",
            "-0.0",
            "1e300",
            "NaN",
            "-Infinity",
            "true",
            "null",
            "\"a \\\"quoted\\\" line\\n\"",
            "[]",
            "[1, [2, [3]], {\"k\": \"v\"}]",
            "{\"a\": 1, \"b\": [0.5], \"c\": {\"$bytes\": \"AA==\"}}",
            "{}",
            "{\"$bytes\": \"AAEC/w==\"}",
            "{\"$python_pickle\": \"gARLAS4=\"}",
            "{\"$map\": [[1, \"a\"], [[1, 2], null]]}",
            "{\"$map\": [[\"$bytes\", \"not bytes\"]]}",
        ] {
            assert_eq!(round(text), text);
        }
        assert_eq!(round(" [ 1 ,2 ] "), "[1, 2]");
        assert_eq!(round("{1: \"a\"}"), "{\"$map\": [[1, \"a\"]]}");
        assert_eq!(round("{\"$tuple\": [1, \"x\"]}"), "[1, \"x\"]");
        assert_eq!(round("\"\\u00e9\\ud83d\\ude00\""), "\"é😀\"");
        assert_eq!(round("2.0"), "2.0");
    }

    #[test]
    fn exact_items() {
        assert_eq!(parse("42").unwrap(), [0x18, 42]);
        assert_eq!(parse("\"hi\"").unwrap(), [0x62, b'h', b'i']);
        assert_eq!(
            parse("{\"$tuple\": [1]}").unwrap(),
            [0xda, 0x64, 0x70, 0x00, 0x01, 0x81, 0x01]
        );
        assert_eq!(to_json(&[0xf9, 0x3c, 0x00]).unwrap(), "1.0");
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(unbase64("aGVsbG8=").unwrap(), b"hello");
    }

    #[test]
    fn bad_text_is_a_clear_error() {
        for (text, says) in [
            ("hello", "not a value"),
            ("", "expected a value"),
            ("[1, 2", "expected ','"),
            ("1 2", "after the value"),
            ("18446744073709551616", "outside"),
            ("\"open", "unterminated"),
            ("{\"$bytes\": \"***\"}", "not base64"),
            ("{\"a\" 1}", "expected ':'"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().contains("deeper"));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(parse(&ok).map(|v| v.len()), Ok(MAX_DEPTH));
        assert!(to_json(b"hello").is_err());
    }
}
