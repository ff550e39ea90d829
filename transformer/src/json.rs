//! A read-only JSON document that borrows its strings from the input text.
//!
//! The C# side's messages are only read, never edited, so the mapping does not need
//! `serde_json::Value`'s owned strings and hashed maps: [`Json`] keeps object members as a list in
//! document order and strings as slices of the input (escaped strings, the exception, are owned).
//!
//! It is the same document a `Value` would be: it is parsed by serde_json's own parser (same
//! syntax errors, same numbers, same recursion limit), a repeated key keeps its first position and
//! its last value (what `Value`'s insertion into its map does), equality is `Value`'s (members in
//! any order), and it serialises to the same text. [`Json::to_value`] gives the `Value` itself
//! where one is needed (error values).
//!
//! A reader that knows which values it wants need not build the document: `Pull` reads plain
//! text value by value, as the document's parser does. Both take the text's [`content_hash`]
//! (XXH3-64 of its compact form) as they read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// One JSON value; see the module documentation.
#[derive(Debug, Clone)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in document order, each key once.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// An object's members.
pub type Members<'a> = [(Cow<'a, str>, Json<'a>)];

impl<'a> Json<'a> {
    /// Parses JSON text: the document serde_json's parser reads, or its error, unchanged.
    ///
    /// Plain text (the usual message: no escapes but the common ones, integers of up to 18
    /// digits, nesting up to 64 deep, no syntax errors) is read by a parser of its own; anything
    /// else, errors included, by serde_json's.
    pub fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
        Json::parse_hashed(text).map(|(json, _)| json)
    }

    /// [`Json::parse`], with the [`content_hash`] of the document when it could be taken while
    /// reading (`None`: hash the document with [`content_hash`]).
    pub(crate) fn parse_hashed(text: &'a str) -> serde_json::Result<(Json<'a>, Option<u64>)> {
        match Plain::parse(text) {
            Some(parsed) => Ok(parsed),
            None => Json::parse_with_serde(text).map(|json| (json, None)),
        }
    }

    /// Parses JSON text with serde_json's parser.
    pub fn parse_with_serde(text: &'a str) -> serde_json::Result<Json<'a>> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Json::deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }

    /// A view of a `Value` (strings borrowed from it).
    pub fn from_value(value: &'a Value) -> Json<'a> {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(Cow::Borrowed(s)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from_value).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// The equal `Value`.
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(members) => {
                let mut map = Map::with_capacity(members.len());
                for (k, v) in members {
                    map.insert(k.to_string(), v.to_value());
                }
                Value::Object(map)
            }
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl PartialEq for Json<'_> {
    /// `Value`'s equality: objects are equal when they have the same keys with equal values,
    /// in any order.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Json::Null, Json::Null) => true,
            (Json::Bool(a), Json::Bool(b)) => a == b,
            (Json::Number(a), Json::Number(b)) => a == b,
            (Json::String(a), Json::String(b)) => a == b,
            (Json::Array(a), Json::Array(b)) => a == b,
            (Json::Object(a), Json::Object(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(key, value)| {
                        b.iter()
                            .find(|(k, _)| k == key)
                            .is_some_and(|(_, v)| v == value)
                    })
            }
            _ => false,
        }
    }
}

impl Serialize for Json<'_> {
    /// As `Value` serialises (so the same text).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json<'de>, E> {
        // What `Value` does: a non-finite number (which serde_json's parser never produces)
        // is `null`.
        Ok(Number::from_f64(value).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value)))
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<V: SeqAccess<'de>>(self, mut visitor: V) -> Result<Json<'de>, V::Error> {
        let mut items = Vec::new();
        while let Some(item) = visitor.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<V: MapAccess<'de>>(self, mut visitor: V) -> Result<Json<'de>, V::Error> {
        let mut members = MembersBuilder::default();
        while let Some(key) = visitor.next_key_seed(KeySeed)? {
            let value: Json<'de> = visitor.next_value()?;
            members.insert(key, value);
        }
        Ok(Json::Object(members.members))
    }
}

/// An object's members as they are read: `Value`'s map insertion, where a repeated key keeps its
/// first position and takes the last value.
#[derive(Default)]
struct MembersBuilder<'a> {
    members: Vec<(Cow<'a, str>, Json<'a>)>,
    /// Past a few members, repeated keys are found through an index instead of a scan.
    index: Option<HashMap<String, usize>>,
    /// A bit per key length and first byte seen (mod 64): a key whose bit is not set is new.
    seen: u64,
}

impl<'a> MembersBuilder<'a> {
    const SCAN: usize = 16;

    fn with_capacity(capacity: usize) -> Self {
        MembersBuilder {
            members: Vec::with_capacity(capacity),
            index: None,
            seen: 0,
        }
    }

    /// Adds a member; true when its key was there already (and its value is replaced).
    fn insert(&mut self, key: Cow<'a, str>, value: Json<'a>) -> bool {
        let (slot, repeated) = self.slot(key);
        *slot = value;
        repeated
    }

    /// Where the value of member `key` goes (a new member, `null` until then, or the one with
    /// that key, whose value is to be replaced); true when the key was there already.
    #[inline(always)]
    fn slot(&mut self, key: Cow<'a, str>) -> (&mut Json<'a>, bool) {
        let bit = key_bit(&key);
        let existing = if self.seen & bit == 0 {
            None
        } else {
            match &self.index {
                Some(index) => index.get(key.as_ref()).copied(),
                None => self.members.iter().position(|(k, _)| *k == key),
            }
        };
        self.seen |= bit;
        match existing {
            Some(i) => (&mut self.members[i].1, true),
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(key.to_string(), self.members.len());
                }
                self.members.push((key, Json::Null));
                if self.index.is_none() && self.members.len() > Self::SCAN {
                    self.index = Some(
                        self.members
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.to_string(), i))
                            .collect(),
                    );
                }
                let last = self.members.len() - 1;
                (&mut self.members[last].1, false)
            }
        }
    }
}

/// The parser of plain text (see [`Json::parse`]): `None` for anything it does not read exactly
/// as serde_json does, which serde_json then reads (or rejects, with its error).
struct Plain<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    /// The compact text of what has been read (what `serde_json::to_writer` would write of
    /// it) is `compact[..compact_len]` and then the input from `run` to here: everything read
    /// is written as it is in the input but whitespace (which ends a run) and the rare pieces
    /// that serde_json writes otherwise (escaped strings, some numbers). Wrong once a key
    /// repeats (the compact text then differs from the reading order).
    compact: Vec<u8>,
    compact_len: usize,
    run: usize,
    repeated_key: bool,
}

impl<'a> Plain<'a> {
    /// Below serde_json's recursion limit (128), so that deeper text gets its error.
    const MAX_DEPTH: usize = 64;

    fn new(text: &'a str) -> Plain<'a> {
        Plain {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
            compact: COMPACT.take(),
            compact_len: 0,
            run: 0,
            repeated_key: false,
        }
    }

    fn parse(text: &'a str) -> Option<(Json<'a>, Option<u64>)> {
        let mut parser = Plain::new(text);
        parser.whitespace();
        let value = parser.value()?;
        parser.whitespace();
        let hash = (!parser.repeated_key).then(|| parser.compact_hash());
        (parser.pos == parser.bytes.len()).then_some((value, hash))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Past insignificant whitespace, which ends a run of the compact text.
    ///
    /// Inlined where it is called: whether whitespace follows depends on the place (a space
    /// after `:`, a line break after `,`, none after a value), which each call site's branch
    /// then learns.
    #[inline(always)]
    fn whitespace(&mut self) {
        if let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.skip_whitespace();
        }
    }

    #[inline(never)]
    fn skip_whitespace(&mut self) {
        let from = self.pos;
        self.pos += 1;
        // A single space (after `:`), else a block scan.
        if !matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.copy_run(from);
            self.run = self.pos;
            return;
        }
        self.pos = scan::whitespace_end(self.bytes, self.pos);
        self.copy_run(from);
        self.run = self.pos;
    }

    fn value(&mut self) -> Option<Json<'a>> {
        let mut value = Json::Null;
        self.value_into(&mut value)?;
        Some(value)
    }

    /// Reads a value into `out`, where it is built: values are not returned and moved (a
    /// value written in parts and read back whole is slow to read).
    fn value_into(&mut self, out: &mut Json<'a>) -> Option<()> {
        match self.peek()? {
            b'{' => self.object_into(out)?,
            b'[' => self.array_into(out)?,
            b'"' => {
                self.pos += 1;
                *out = Json::String(match self.plain_string() {
                    Some(s) => Cow::Borrowed(s),
                    None => self.string()?,
                });
            }
            b't' => {
                self.literal(b"true")?;
                *out = Json::Bool(true);
            }
            b'f' => {
                self.literal(b"false")?;
                *out = Json::Bool(false);
            }
            b'n' => {
                self.literal(b"null")?;
                *out = Json::Null;
            }
            b'-' | b'0'..=b'9' => *out = self.number()?,
            _ => return None,
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn object_into(&mut self, out: &mut Json<'a>) -> Option<()> {
        self.depth += 1;
        if self.depth > Self::MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.whitespace();
        let mut members = MembersBuilder::with_capacity(8);
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                self.pos += 1;
                let key = match self.plain_string() {
                    Some(s) => Cow::Borrowed(s),
                    None => self.string()?,
                };
                self.whitespace();
                if self.peek()? != b':' {
                    return None;
                }
                self.pos += 1;
                self.whitespace();
                let (slot, repeated) = members.slot(key);
                self.repeated_key |= repeated;
                self.value_into(slot)?;
                self.whitespace();
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        self.whitespace();
                    }
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        *out = Json::Object(members.members);
        Some(())
    }

    fn array_into(&mut self, out: &mut Json<'a>) -> Option<()> {
        self.depth += 1;
        if self.depth > Self::MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.whitespace();
        let mut items = Vec::new();
        if self.peek()? == b']' {
            self.pos += 1;
        } else {
            loop {
                items.push(Json::Null);
                let last = items.len() - 1;
                self.value_into(&mut items[last])?;
                self.whitespace();
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        self.whitespace();
                    }
                    b']' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        *out = Json::Array(items);
        Some(())
    }

    /// The rest of a string (its opening quote read) when it has no escapes, borrowed; else
    /// `None`, nothing read (for [`Plain::string`]).
    fn plain_string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        self.skip_plain();
        if self.peek() == Some(b'"') {
            let s = &self.text[start..self.pos];
            self.pos += 1;
            // No escapes, no control characters: serde_json writes it as it is.
            Some(s)
        } else {
            self.pos = start;
            None
        }
    }

    /// The rest of a string (its opening quote read): borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.pos;
        self.skip_plain();
        match self.peek()? {
            b'"' => {
                let s = &self.text[start..self.pos];
                self.pos += 1;
                // No escapes, no control characters: serde_json writes it as it is.
                Some(Cow::Borrowed(s))
            }
            b'\\' => {
                let mut owned = String::with_capacity(self.pos - start + 16);
                owned.push_str(&self.text[start..self.pos]);
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.pos += 1;
                            self.hash_written(start - 1, |text| {
                                write_compact(text, owned.as_str())
                            });
                            return Some(Cow::Owned(owned));
                        }
                        b'\\' => {
                            self.pos += 1;
                            self.escape(&mut owned)?;
                        }
                        _ => {
                            let from = self.pos;
                            self.skip_plain();
                            if self.pos == from {
                                // A control character: serde_json's error.
                                return None;
                            }
                            owned.push_str(&self.text[from..self.pos]);
                        }
                    }
                }
            }
            // A control character: serde_json's error.
            _ => None,
        }
    }

    /// Past the bytes a string holds as they are (not `"`, `\\` or a control character).
    #[inline(always)]
    fn skip_plain(&mut self) {
        self.pos = scan::string_stop(self.bytes, self.pos);
    }

    fn escape(&mut self, out: &mut String) -> Option<()> {
        let c = self.peek()?;
        self.pos += 1;
        out.push(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A surrogate pair, or serde_json's judgement.
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return None;
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(unit)?,
                }
            }
            _ => return None,
        });
        Some(())
    }

    /// Whether a decimal `int.frac` (no exponent, not zero) is written exactly as serde_json
    /// writes the `f64` it reads as: the shortest digits that read back as that `f64`, in fixed
    /// notation. With at most 15 significant digits the digits are the shortest (two decimals
    /// of up to 15 digits never read as the same `f64`); serde_json's formatter writes fixed
    /// notation while the leading digit's power of ten is within -5..=15, an integral value as
    /// `N.0`, and no trailing zeros otherwise. (Parsing is correctly rounded on both sides:
    /// serde_json with `float_roundtrip`, and `str::parse`.)
    fn shortest_decimal(int: &[u8], frac: &[u8]) -> bool {
        let Some((&last, _)) = frac.split_last() else {
            return false;
        };
        if int != b"0" {
            // d…d.d…d: the power of the leading digit is int.len() - 1.
            let integral = frac == b"0";
            (integral || last != b'0')
                && int.len() <= 16
                && int.len() + if integral { 0 } else { frac.len() } <= 15
        } else {
            // 0.0…0d…d: the leading digit's power is -(leading zeros + 1).
            let zeros = frac.iter().take_while(|d| **d == b'0').count();
            zeros < frac.len() && last != b'0' && zeros <= 4 && frac.len() - zeros <= 15
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        let mut unit = 0;
        for d in digits {
            unit = unit * 16 + char::from(*d).to_digit(16)?;
        }
        self.pos += 4;
        Some(unit)
    }

    /// An integer of up to 18 digits is read here; other numbers by serde_json, alone (a
    /// number's reading does not depend on what is around it).
    fn number(&mut self) -> Option<Json<'a>> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
            }
            _ => return None,
        }
        let digits = self.pos - digits_start;
        let mut integer = true;
        let mut fraction = None;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            let from = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == from {
                return None;
            }
            fraction = Some(from);
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            exponent = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let from = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == from {
                return None;
            }
        }
        if integer && digits <= 18 {
            let magnitude = self.bytes[digits_start..self.pos]
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            let number = match (negative, magnitude) {
                (false, n) => Json::Number(n.into()),
                // serde_json reads `-0` as the float -0.0: its own reading.
                (true, 0) => return None,
                (true, n) => Json::Number((-(n as i64)).into()),
            };
            // serde_json writes an integer as JSON spells it (no leading zeros, no `+`).
            return Some(number);
        }
        if let (Some(fraction), false) = (fraction, exponent) {
            let int = &self.bytes[digits_start..fraction - 1];
            let frac = &self.bytes[fraction..self.pos];
            if let Some(number) = Plain::shortest_decimal(int, frac)
                .then(|| self.text[start..self.pos].parse::<f64>().ok())
                .flatten()
                .and_then(Number::from_f64)
            {
                // Written as serde_json writes this number: hashed as it is.
                return Some(Json::Number(number));
            }
        }
        match Json::parse_with_serde(&self.text[start..self.pos]) {
            Ok(number @ Json::Number(_)) => {
                self.hash_written(start, |text| write_compact(text, &number));
                Some(number)
            }
            _ => None,
        }
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

/// Eight bytes at a time, as one little-endian `u64`.
pub(crate) mod swar {
    pub(crate) const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    pub(crate) const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const LOWS: u64 = u64::from_le_bytes([0x7f; 8]);

    /// The high bit of each byte of `v` equal to `byte` (exactly those).
    #[inline(always)]
    pub(crate) fn bytes_equal(v: u64, byte: u8) -> u64 {
        let x = v ^ (ONES * u64::from(byte));
        !(((x & LOWS) + LOWS) | x) & HIGHS
    }

    /// The index of the first byte whose high bit is set in `mask` (not zero).
    #[inline(always)]
    pub(super) fn first(mask: u64) -> usize {
        (mask.trailing_zeros() / 8) as usize
    }
}

/// The two scans of the reader: past whitespace, and past a string's plain bytes. Sixteen bytes
/// at a time with SSE2 where the target has it (every x86-64), eight at a time otherwise, the
/// last few one by one.
mod scan {
    use super::swar::{self, HIGHS, ONES};

    /// The index of the first byte from `pos` that is not JSON whitespace (` `, `\n`, `\t`,
    /// `\r`), or the length.
    #[inline(always)]
    pub(super) fn whitespace_end(bytes: &[u8], pos: usize) -> usize {
        first_stop(
            bytes,
            pos,
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            sse2::not_whitespace,
            |v| {
                let space = swar::bytes_equal(v, b' ')
                    | swar::bytes_equal(v, b'\n')
                    | swar::bytes_equal(v, b'\t')
                    | swar::bytes_equal(v, b'\r');
                !space & HIGHS
            },
            |b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'),
        )
    }

    /// The index of the first byte from `pos` that a string cannot hold as it is (`"`, `\\` or
    /// a control character), or the length.
    #[inline(always)]
    pub(super) fn string_stop(bytes: &[u8], pos: usize) -> usize {
        // A byte's high bit per test, exact for the word's first byte that passes one (a false
        // positive only follows a true one).
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
        first_stop(
            bytes,
            pos,
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            sse2::string_special,
            |v| {
                let control = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
                control | zero(v ^ (ONES * u64::from(b'"'))) | zero(v ^ (ONES * u64::from(b'\\')))
            },
            |b| b == b'"' || b == b'\\' || b < 0x20,
        )
    }

    /// The index of the first byte from `pos` where `stop` holds, or the length: sixteen bytes
    /// at a time (`block`: a bit per stopping byte), then eight (`word`: the high bit of each
    /// byte, exact for the first), then one by one.
    #[inline(always)]
    fn first_stop(
        bytes: &[u8],
        mut pos: usize,
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))] block: impl Fn(&[u8; 16]) -> u32,
        word: impl Fn(u64) -> u64,
        stop: impl Fn(u8) -> bool,
    ) -> usize {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        while let Some(sixteen) = bytes.get(pos..pos + 16) {
            let sixteen: &[u8; 16] = sixteen.try_into().unwrap_or(&[0; 16]);
            let stops = block(sixteen);
            if stops != 0 {
                return pos + stops.trailing_zeros() as usize;
            }
            pos += 16;
        }
        while let Some(eight) = bytes.get(pos..pos + 8) {
            let stops = word(u64::from_le_bytes(eight.try_into().unwrap_or([0; 8])));
            if stops != 0 {
                return pos + swar::first(stops);
            }
            pos += 8;
        }
        while let Some(&b) = bytes.get(pos) {
            if stop(b) {
                break;
            }
            pos += 1;
        }
        pos
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    mod sse2 {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };

        /// A bit per byte of `block` (bit `i` for byte `i`) that is not JSON whitespace.
        #[inline(always)]
        pub(super) fn not_whitespace(block: &[u8; 16]) -> u32 {
            // SAFETY: SSE2 is enabled for this target (the `cfg` above), and the load reads the
            // 16 bytes `block` borrows (unaligned loads are allowed).
            let space = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().cast());
                let eq = |byte: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8));
                _mm_movemask_epi8(_mm_or_si128(
                    _mm_or_si128(eq(b' '), eq(b'\n')),
                    _mm_or_si128(eq(b'\t'), eq(b'\r')),
                ))
            };
            !(space as u32) & 0xffff
        }

        /// A bit per byte of `block` that is `"`, `\\` or a control character (below 0x20).
        #[inline(always)]
        pub(super) fn string_special(block: &[u8; 16]) -> u32 {
            // SAFETY: as in `not_whitespace`.
            let special = unsafe {
                let v = _mm_loadu_si128(block.as_ptr().cast());
                let eq = |w| _mm_cmpeq_epi8(v, w);
                // Below 0x20: the larger of the byte and 0x1f (unsigned) is 0x1f.
                let low = _mm_set1_epi8(0x1f);
                _mm_movemask_epi8(_mm_or_si128(
                    _mm_or_si128(
                        eq(_mm_set1_epi8(b'"' as i8)),
                        eq(_mm_set1_epi8(b'\\' as i8)),
                    ),
                    _mm_cmpeq_epi8(_mm_max_epu8(v, low), low),
                ))
            };
            special as u32
        }
    }
}

/// What the next value of a [`Pull`] reader is, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// Plain text read value by value in document order, without building a document: the same
/// reading (and the same hash of the compact text) as [`Json::parse_hashed`]'s parser, for a
/// reader that knows which values it wants. Every method gives `None` (or `false`) for what
/// it does not read exactly as that parser does, and the caller then parses the text whole.
///
/// Unlike the document, a repeated key is not resolved: the reading gives up on one (see
/// [`Pull::object`]).
pub(crate) struct Pull<'a> {
    plain: Plain<'a>,
}

/// A bit per key length and first byte (mod 64): a key whose bit is not set in an object's
/// mask of the keys read so far is new there.
fn key_bit(key: &str) -> u64 {
    1u64 << ((key.len() * 7 + usize::from(key.bytes().next().unwrap_or(0))) % 64)
}

/// The keys of the members of one object that its reader left, to find a repeated one. Such
/// members are rare (fields the C# model does not have): nothing is allocated until one is.
#[derive(Default)]
struct Keys<'a> {
    keys: Vec<&'a str>,
    /// The [`key_bit`]s of `keys`.
    seen: u64,
}

impl<'a> Keys<'a> {
    /// `None` when `key` is there already.
    fn insert(&mut self, key: &'a str) -> Option<()> {
        let bit = key_bit(key);
        if self.seen & bit != 0 && self.keys.contains(&key) {
            return None;
        }
        self.seen |= bit;
        self.keys.push(key);
        Some(())
    }
}

impl<'a> Pull<'a> {
    pub(crate) fn new(text: &'a str) -> Pull<'a> {
        let mut plain = Plain::new(text);
        plain.whitespace();
        Pull { plain }
    }

    /// The end of the text: the [`content_hash`] of everything read, when
    /// only whitespace is left.
    pub(crate) fn finish(mut self) -> Option<u64> {
        self.plain.whitespace();
        (self.plain.pos == self.plain.bytes.len() && !self.plain.repeated_key)
            .then(|| self.plain.compact_hash())
    }

    pub(crate) fn next(&self) -> Option<Next> {
        Some(match self.plain.peek()? {
            b'n' => Next::Null,
            b't' | b'f' => Next::Bool,
            b'-' | b'0'..=b'9' => Next::Number,
            b'"' => Next::String,
            b'[' => Next::Array,
            b'{' => Next::Object,
            _ => return None,
        })
    }

    /// Reads a `null`: false (nothing read) when the next value is not one.
    pub(crate) fn null(&mut self) -> bool {
        self.plain.peek() == Some(b'n') && self.plain.literal(b"null").is_some()
    }

    pub(crate) fn boolean(&mut self) -> Option<bool> {
        match self.plain.peek()? {
            b't' => self.plain.literal(b"true").map(|()| true),
            b'f' => self.plain.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    pub(crate) fn number(&mut self) -> Option<Number> {
        match self.next()? {
            Next::Number => match self.plain.number()? {
                Json::Number(n) => Some(n),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.plain.peek()? != b'"' {
            return None;
        }
        self.plain.pos += 1;
        match self.plain.plain_string() {
            Some(s) => Some(Cow::Borrowed(s)),
            None => self.plain.string(),
        }
    }

    /// Reads the next value, whatever it is, and forgets it.
    pub(crate) fn skip(&mut self) -> Option<()> {
        let mut skipped = Json::Null;
        self.plain.value_into(&mut skipped)
    }

    /// Reads an object: `read` is given each member's key and the reader at its value, which
    /// `read` reads or leaves (then skipped). `None` when the next value is not an object, a
    /// key has an escape, a key repeats among the members left, or `read` gives up.
    ///
    /// A repeated key makes the document differ from the reading (it keeps the last value, at
    /// the first place). Only the keys of members left are compared here: `read` must decide
    /// from the key alone whether to read a member, and give up on a key it has read before
    /// (the C# reader's `Seen`), so that a repeated key is always caught.
    pub(crate) fn object(
        &mut self,
        mut read: impl FnMut(&'a str, &mut Self) -> Option<()>,
    ) -> Option<()> {
        if self.plain.peek()? != b'{' {
            return None;
        }
        self.open()?;
        let mut left = Keys::default();
        if self.plain.peek()? == b'}' {
            self.plain.pos += 1;
        } else {
            loop {
                if self.plain.peek()? != b'"' {
                    return None;
                }
                self.plain.pos += 1;
                let key = self.plain.plain_string()?;
                self.plain.whitespace();
                if self.plain.peek()? != b':' {
                    return None;
                }
                self.plain.pos += 1;
                self.plain.whitespace();
                let at = self.plain.pos;
                read(key, self)?;
                if self.plain.pos == at {
                    left.insert(key)?;
                    self.skip()?;
                }
                if self.separator(b'}')? {
                    break;
                }
            }
        }
        self.close();
        Some(())
    }

    /// Reads an array: `read` is given the reader at each element, which it reads or leaves
    /// (then skipped). `None` when the next value is not an array or `read` gives up.
    pub(crate) fn array(&mut self, mut read: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.plain.peek()? != b'[' {
            return None;
        }
        self.open()?;
        if self.plain.peek()? == b']' {
            self.plain.pos += 1;
        } else {
            loop {
                self.element(&mut read)?;
                if self.separator(b']')? {
                    break;
                }
            }
        }
        self.close();
        Some(())
    }

    fn open(&mut self) -> Option<()> {
        self.plain.depth += 1;
        if self.plain.depth > Plain::MAX_DEPTH {
            return None;
        }
        self.plain.pos += 1;
        self.plain.whitespace();
        Some(())
    }

    fn close(&mut self) {
        self.plain.depth -= 1;
    }

    /// One member's value or element, read by `read` or else skipped.
    fn element(&mut self, read: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        let at = self.plain.pos;
        read(self)?;
        if self.plain.pos == at {
            self.skip()?;
        }
        Some(())
    }

    /// After a value: `,` (false, more follow) or the closing `end` (true).
    fn separator(&mut self, end: u8) -> Option<bool> {
        self.plain.whitespace();
        match self.plain.peek()? {
            b',' => {
                self.plain.pos += 1;
                self.plain.whitespace();
                Some(false)
            }
            b if b == end => {
                self.plain.pos += 1;
                Some(true)
            }
            _ => None,
        }
    }
}

/// The content hash of a JSON text: XXH3-64 (seed 0) of its compact text, as
/// `serde_json::to_writer` writes the document (members in document order, a repeated key once,
/// at its first place, with its last value). A standard hash, so other tools can derive the same
/// value (`XxHash3` in .NET, `xxhash.xxh3_64` in Python).
pub fn content_hash<T: Serialize + ?Sized>(document: &T) -> u64 {
    let mut text = Vec::with_capacity(256);
    write_compact(&mut text, document);
    xxhash_rust::xxh3::xxh3_64(&text)
}

/// `value`'s compact JSON text, as serde_json writes it, onto `text`.
fn write_compact<T: Serialize + ?Sized>(text: &mut Vec<u8>, value: &T) {
    // Writing to a `Vec` fails only for what JSON cannot hold (a non-string key), which a
    // parsed document never has.
    let written = serde_json::to_writer(&mut *text, value);
    debug_assert!(written.is_ok(), "a document writes as JSON");
}

thread_local! {
    /// The compact-text buffer of the last [`Plain`] parser on this thread, kept for the next
    /// one (a message is parsed per request; its buffer is a few kB).
    static COMPACT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Drop for Plain<'_> {
    fn drop(&mut self) {
        let compact = std::mem::take(&mut self.compact);
        if compact.len() <= 1 << 16 {
            COMPACT.set(compact);
        }
    }
}

impl Plain<'_> {
    /// Appends the run of input from `run` to `end` to the compact text.
    #[inline(always)]
    fn copy_run(&mut self, end: usize) {
        /// Runs are short (a key, a value and their punctuation): copied as one block of this
        /// many bytes (the part past the run overwritten later), not by a call to `memcpy`.
        const BLOCK: usize = 32;
        let (start, at) = (self.run, self.compact_len);
        let len = end - start;
        if self.compact.len() < at + len + BLOCK {
            // Kept zeroed past its use: grows only (`compact_len` is the text's length).
            self.compact
                .resize((at + len + BLOCK).max(2 * self.compact.len()), 0);
        }
        match self.bytes.get(start..start + BLOCK) {
            Some(block) if len <= BLOCK => self.compact[at..at + BLOCK].copy_from_slice(block),
            _ => self.compact[at..at + len].copy_from_slice(&self.bytes[start..end]),
        }
        self.compact_len += len;
    }

    /// The token read from `start` to here is written by `write` in the compact text (serde_json
    /// writes it otherwise than the input spells it).
    #[cold]
    fn hash_written(&mut self, start: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.copy_run(start);
        self.compact.truncate(self.compact_len);
        write(&mut self.compact);
        self.compact_len = self.compact.len();
        self.run = self.pos;
    }

    /// [`content_hash`] of what has been read.
    fn compact_hash(&mut self) -> u64 {
        self.copy_run(self.pos);
        self.run = self.pos;
        xxhash_rust::xxh3::xxh3_64(&self.compact[..self.compact_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block scans find what a byte-by-byte scan finds, from every start, in texts whose
    /// stopping byte sits at every place of a 16- and an 8-byte block and past the end.
    #[test]
    fn block_scans_are_the_byte_scans() {
        type Scan = fn(&[u8], usize) -> usize;
        let whitespace: (Scan, fn(u8) -> bool, &[u8]) = (
            scan::whitespace_end,
            |b| matches!(b, b' ' | b'\n' | b'\t' | b'\r'),
            b" \n\t\r",
        );
        let string: (Scan, fn(u8) -> bool, &[u8]) = (
            scan::string_stop,
            |b| b != b'"' && b != b'\\' && b >= 0x20,
            b"ab\xc3\xa9Z~\x7f\xff",
        );
        let stops: [u8; 8] = [b'"', b'\\', 0x00, 0x1f, b'x', b'{', 0x0b, 0x80];
        for (scan, passes, filler) in [whitespace, string] {
            for len in 0..40 {
                for (stop_at, &stop) in (0..=len).flat_map(|at| stops.iter().map(move |s| (at, s)))
                {
                    let mut text: Vec<u8> = (0..len).map(|i| filler[i % filler.len()]).collect();
                    if stop_at < len {
                        text[stop_at] = stop;
                    }
                    for from in 0..=len {
                        let expected = (from..len).find(|&i| !passes(text[i])).unwrap_or(len);
                        assert_eq!(scan(&text, from), expected, "{text:?} from {from}");
                    }
                }
            }
        }
    }

    fn same_as_value(text: &str) {
        let value: Value = serde_json::from_str(text).unwrap();
        let json = Json::parse(text).unwrap();
        assert_eq!(json.to_value(), value, "{text}");
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            serde_json::to_string(&value).unwrap(),
            "{text}"
        );
        assert_eq!(Json::from_value(&value), json, "{text}");
    }

    #[test]
    fn parses_as_value_does() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":-2,"e":1.5e3,"f":"x\"y\u00e9"}}"#,
            r#"{"a":1,"a":2,"b":3,"a":4}"#,
            r#"[-0, 0, -0.0, 18446744073709551615, -9223372036854775808, 1e-400, 0.1, 1E2]"#,
            r#"{"\u0041":1,"A":2}"#,
            r#""plain""#,
            "  [ ]  ",
        ] {
            same_as_value(text);
        }
        let many: String = (0..40)
            .map(|i| format!("\"k{}\":{i}", i % 23))
            .collect::<Vec<_>>()
            .join(",");
        same_as_value(&format!("{{{many}}}"));
    }

    /// The plain parser reads what serde_json reads, or leaves the text to it.
    fn plain_agrees(text: &str) {
        let serde = Json::parse_with_serde(text);
        if let Some((plain, hash)) = Plain::parse(text) {
            let serde = serde
                .as_ref()
                .expect("the plain parser accepted what serde_json rejects");
            if let Some(hash) = hash {
                assert_eq!(hash, content_hash(serde), "{text}");
            }
            assert_eq!(
                serde_json::to_string(&plain).unwrap(),
                serde_json::to_string(serde).unwrap(),
                "{text}"
            );
            assert_eq!(plain.to_value(), serde.to_value(), "{text}");
        }
        match (Json::parse(text), serde) {
            (Ok(a), Ok(b)) => assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            ),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{text}: {a:?} / {b:?}"),
        }
    }

    #[test]
    fn the_plain_parser_reads_as_serde_json_does() {
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":-2,"e":1.5e3,"f":"x\"y\u00e9\n\/"}}"#,
            r#"{"a":1,"a":2,"b":3,"a":4}"#,
            r#"[-0, 0, -0.0, 18446744073709551615, -9223372036854775808, 1e-400, 0.1, 1E2]"#,
            r#"[999999999999999999, -999999999999999999, 1000000000000000000, 12345678901234567890]"#,
            "[7.5, -7.5, 1.0, -1.0, 2.50, 0.8, 0.60, 10.0, 100.0, 1.10, 0.0, -0.0, 0.00, 00.5]",
            "[0.1, 0.01, 0.001, 0.0001, 0.00001, 0.000001, 0.0000012, 0.1000000000000000055511]",
            "[123456789012345.0, 1234567890123456.0, 12345678901234567.0, 123456789012.345]",
            "[1234567890123.45, 12345678901234.56, 0.123456789012345, 0.1234567890123456]",
            "[9007199254740993.0, 9999999999999999.0, 999999999999999.9, 0.30000000000000004]",
            "[1.7976931348623157e308, 5e-324, 1e16, 1.5e-7, 2.2250738585072014e-308, 1E+2]",
            r#"{"\u0041":1,"A":2, "\ud83c\udf03": "\ud83c\udf03", "é東京": "🌃"}"#,
            r#"["\ud800", "\udc00", "\ud800\u0041", "\u00", "\x", "a\u0000b"]"#,
            "[\"tab\there\"]",
            "[\"raw\u{1}control\"]",
            "[\"0123456789abcdef0123456789\\\"0123456789abcdef\"]",
            r#""plain""#,
            "  [ ]  ",
            " { } ",
            "\t\r\n[1 , 2 ]\n",
            "",
            " ",
            "{",
            "}",
            "[",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "{,}",
            "{1:2}",
            "1e400",
            "-1e400",
            "[1] x",
            "01",
            "-",
            "-a",
            "1.",
            "1.e3",
            "1e",
            "1e+",
            ".5",
            "+1",
            "tru",
            "truex",
            "nul",
            "nulll",
            "[true false]",
            "\"unterminated",
            "[\"a\"\"b\"]",
            "1",
            "-1",
            "0",
            "-0",
            "1.5",
            "[[[[[[[[[[]]]]]]]]]]",
        ] {
            plain_agrees(text);
        }
        plain_agrees(&("[".repeat(70) + &"]".repeat(70)));
        plain_agrees(&("[".repeat(200) + &"]".repeat(200)));
        plain_agrees(&("{\"a\":".repeat(63) + "1" + &"}".repeat(63)));
        let many: String = (0..40)
            .map(|i| format!("\"k{}\":{i}", i % 23))
            .collect::<Vec<_>>()
            .join(",");
        plain_agrees(&format!("{{{many}}}"));
        for fixture in ["requests", "replies"] {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/");
            let mut stack = vec![std::path::PathBuf::from(dir).join(fixture)];
            while let Some(path) = stack.pop() {
                if path.is_dir() {
                    stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                } else if let Ok(text) = std::fs::read_to_string(&path) {
                    plain_agrees(&text);
                }
            }
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z\"\\\\/\u{0}-\u{1f}é東🌃 ]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-cA\"\\\\é]{0,3}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn plain_parser_agrees_on_any_value(value in arb_value(), cut in 0usize..400, byte in 0u8..128, insert in proptest::bool::ANY) {
            for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
                plain_agrees(&text);
                assert_eq!(Json::parse(&text).unwrap().to_value(), value);
                // And the text broken at one place (a byte cut out, or one put in).
                let mut broken = text.clone().into_bytes();
                let at = cut % (broken.len() + 1);
                if insert {
                    broken.insert(at, byte);
                } else if at < broken.len() {
                    broken.remove(at);
                }
                if let Ok(broken) = String::from_utf8(broken) {
                    plain_agrees(&broken);
                }
            }
        }
    }

    #[test]
    fn errors_are_serde_json_s() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "1e400",
            "[1] x",
            "\"\\ud800\"",
        ] {
            let a = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            let b = Json::parse(text).unwrap_err().to_string();
            assert_eq!(a, Json::parse_with_serde(text).unwrap_err().to_string());
            assert_eq!(a, b, "{text}");
        }
    }

    #[test]
    fn equality_ignores_member_order() {
        let a = Json::parse(r#"{"a":1,"b":{"c":[1,2]}}"#).unwrap();
        let b = Json::parse(r#"{"b":{"c":[1,2]},"a":1}"#).unwrap();
        let c = Json::parse(r#"{"b":{"c":[2,1]},"a":1}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(Json::parse("1").unwrap(), Json::parse("1.0").unwrap());
    }
}
