//! A JSON document in one flat array, written from any `Serialize` and validated in place.
//!
//! Checking a mapped message against the v2 schema used to mean building it as a
//! `serde_json::Value` first: one allocation per key, string and object, a hash per key, and as
//! many frees after. [`Flat`] holds the same document as a list of nodes in document order (each
//! container knows where its subtree ends) and one string for all text, so writing it costs two
//! growing buffers. `jsonschema` validates it as it is: [`FlatJson`] is a JSON representation in
//! the sense of `jsonschema::json` (the same schema, the same compiled keywords, the same answers
//! as for the `Value`; `tests/flat.rs` holds it to that).
//!
//! The document is the one `serde_json::to_value` would build from the same `Serialize`: numbers
//! are kept as serde_json keeps them (non-negative integers unsigned, negative ones signed, floats
//! as floats, non-finite floats as `null`), keys in the order they are written, a repeated key
//! kept twice (serde's derived structs never repeat one).

use std::borrow::Cow;
use std::fmt;

use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde::ser::{self, Serialize};
use serde_json::{Number, Value};

/// A member's name: a struct field's (static) or text written into [`Flat::text`].
#[derive(Debug, Clone, Copy)]
enum Key {
    None,
    Static(&'static str),
    Text(u32, u32),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Null,
    Bool(bool),
    /// Non-negative integers (serde_json's `PosInt`).
    U64(u64),
    /// Negative integers (`NegInt`).
    I64(i64),
    /// Finite floats.
    F64(f64),
    /// A range of [`Flat::text`].
    Str(u32, u32),
    /// The number of elements.
    Array(u32),
    /// The number of members.
    Object(u32),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Key,
    kind: Kind,
    /// One past this node's subtree: the index of its next sibling.
    end: u32,
}

/// A JSON document; node 0 is the root. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Flat {
    slots: Vec<Slot>,
    text: String,
    /// While it is written: the containers open, innermost last (kept with the buffers).
    open: Vec<usize>,
}

/// Why a value could not be written as JSON (what `serde_json::to_value` refuses too).
#[derive(Debug)]
pub struct FlatError(String);

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FlatError {}

impl ser::Error for FlatError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FlatError(msg.to_string())
    }
}

impl Flat {
    /// The document `value` serialises to. `capacity`: nodes to reserve (a guess; it grows).
    pub fn from_serialize<T: Serialize + ?Sized>(
        value: &T,
        capacity: usize,
    ) -> Result<Flat, FlatError> {
        let mut flat = Flat {
            slots: Vec::with_capacity(capacity),
            text: String::with_capacity(capacity * 16),
            open: Vec::new(),
        };
        flat.rewrite(value)?;
        Ok(flat)
    }

    /// This document replaced by the one `value` serialises to, in the same buffers (so a
    /// document kept for the next one allocates nothing once it is large enough). On an error
    /// the document is incomplete.
    pub fn rewrite<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FlatError> {
        self.slots.clear();
        self.text.clear();
        self.open.clear();
        let mut writer = Writer {
            flat: self,
            key: Key::None,
        };
        value.serialize(&mut writer)?;
        if !self.open.is_empty() || self.slots.is_empty() {
            return Err(FlatError("incomplete value".into()));
        }
        Ok(())
    }

    /// The root node.
    pub fn root(&self) -> FlatNode<'_> {
        FlatNode { doc: self, at: 0 }
    }

    /// The document as a `Value` (what `serde_json::to_value` gives for the same input).
    pub fn to_value(&self) -> Value {
        self.root().value()
    }

    fn string(&self, start: u32, end: u32) -> &str {
        &self.text[start as usize..end as usize]
    }
}

/// Writes a `Serialize` into a [`Flat`].
struct Writer<'f> {
    flat: &'f mut Flat,
    /// The name of the map member whose value is written next.
    key: Key,
}

impl Writer<'_> {
    // Inlined: a `Kind` passed through memory is stored in parts and read back whole, which
    // stalls (a store-forwarding miss) on every node.
    #[inline(always)]
    fn push(&mut self, kind: Kind) -> usize {
        if let Some(&parent) = self.flat.open.last() {
            match &mut self.flat.slots[parent].kind {
                Kind::Array(n) | Kind::Object(n) => *n += 1,
                _ => unreachable!("only containers are opened"),
            }
        }
        let at = self.flat.slots.len();
        // The member's name is set once its value is written ([`Writer::keyed`]): reading it
        // back here from where it was just stored stalled every push (a store-forwarding miss).
        self.flat.slots.push(Slot {
            key: Key::None,
            kind,
            end: at as u32 + 1,
        });
        at
    }

    fn text(&mut self, s: &str) -> (u32, u32) {
        let start = self.flat.text.len() as u32;
        self.flat.text.push_str(s);
        (start, self.flat.text.len() as u32)
    }

    fn string(&mut self, s: &str) {
        let (start, end) = self.text(s);
        self.push(Kind::Str(start, end));
    }

    fn open(&mut self, kind: Kind) {
        let at = self.push(kind);
        self.flat.open.push(at);
    }

    fn close(&mut self) {
        if let Some(at) = self.flat.open.pop() {
            self.flat.slots[at].end = self.flat.slots.len() as u32;
        }
    }

    /// Writes a member's value with `write`, then names it `key`.
    fn keyed(
        &mut self,
        key: Key,
        write: impl FnOnce(&mut Self) -> Result<(), FlatError>,
    ) -> Result<(), FlatError> {
        let at = self.flat.slots.len();
        write(self)?;
        if let Some(slot) = self.flat.slots.get_mut(at) {
            slot.key = key;
        }
        Ok(())
    }

    /// `{variant: …}`, as serde_json writes enum variants with content, the value a container
    /// of `kind` (opened).
    fn open_variant(&mut self, variant: &'static str, kind: Kind) {
        self.open(Kind::Object(0));
        let at = self.push(kind);
        self.flat.slots[at].key = Key::Static(variant);
        self.flat.open.push(at);
    }

    fn float(&mut self, f: f64) {
        // serde_json: a non-finite float is `null`.
        self.push(if f.is_finite() {
            Kind::F64(f)
        } else {
            Kind::Null
        });
    }

    fn signed(&mut self, i: i64) {
        self.push(if i < 0 {
            Kind::I64(i)
        } else {
            Kind::U64(i as u64)
        });
    }
}

impl ser::Serializer for &mut Writer<'_> {
    type Ok = ();
    type Error = FlatError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), FlatError> {
        self.push(Kind::Bool(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), FlatError> {
        self.signed(v.into());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), FlatError> {
        self.signed(v.into());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), FlatError> {
        self.signed(v.into());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), FlatError> {
        self.signed(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), FlatError> {
        match i64::try_from(v) {
            Ok(v) => self.signed(v),
            Err(_) => return self.serialize_u128(u128::try_from(v).unwrap_or(u128::MAX)),
        }
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), FlatError> {
        self.push(Kind::U64(v.into()));
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), FlatError> {
        self.push(Kind::U64(v.into()));
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), FlatError> {
        self.push(Kind::U64(v.into()));
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), FlatError> {
        self.push(Kind::U64(v));
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), FlatError> {
        let v = u64::try_from(v).map_err(|_| FlatError("number out of range".into()))?;
        self.push(Kind::U64(v));
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), FlatError> {
        self.float(v.into());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), FlatError> {
        self.float(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), FlatError> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), FlatError> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), FlatError> {
        self.open(Kind::Array(0));
        for b in v {
            self.push(Kind::U64((*b).into()));
        }
        self.close();
        Ok(())
    }
    fn serialize_none(self) -> Result<(), FlatError> {
        self.push(Kind::Null);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), FlatError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), FlatError> {
        self.push(Kind::Null);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), FlatError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), FlatError> {
        self.string(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), FlatError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), FlatError> {
        self.open(Kind::Object(0));
        self.keyed(Key::Static(variant), |w| value.serialize(w))?;
        self.close();
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, FlatError> {
        self.open(Kind::Array(0));
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, FlatError> {
        self.open(Kind::Array(0));
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, FlatError> {
        self.open(Kind::Array(0));
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, FlatError> {
        self.open_variant(variant, Kind::Array(0));
        Ok(self)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self, FlatError> {
        self.open(Kind::Object(0));
        Ok(self)
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, FlatError> {
        self.open(Kind::Object(0));
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self, FlatError> {
        self.open_variant(variant, Kind::Object(0));
        Ok(self)
    }
}

/// The sequence-like serde traits: each element a value, `end` closes the array.
macro_rules! elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for &mut Writer<'_> {
            type Ok = ();
            type Error = FlatError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FlatError> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), FlatError> {
                self.close();
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

impl ser::SerializeTupleVariant for &mut Writer<'_> {
    type Ok = ();
    type Error = FlatError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FlatError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), FlatError> {
        self.close(); // the array
        self.close(); // `{variant: …}`
        Ok(())
    }
}

impl ser::SerializeMap for &mut Writer<'_> {
    type Ok = ();
    type Error = FlatError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), FlatError> {
        let name = key.serialize(KeyName)?;
        let (start, end) = self.text(&name);
        self.key = Key::Text(start, end);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FlatError> {
        let key = std::mem::replace(&mut self.key, Key::None);
        self.keyed(key, |w| value.serialize(w))
    }
    fn end(self) -> Result<(), FlatError> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = FlatError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), FlatError> {
        self.keyed(Key::Static(key), |w| value.serialize(w))
    }
    fn end(self) -> Result<(), FlatError> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Writer<'_> {
    type Ok = ();
    type Error = FlatError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), FlatError> {
        self.keyed(Key::Static(key), |w| value.serialize(w))
    }
    fn end(self) -> Result<(), FlatError> {
        self.close(); // the fields
        self.close(); // `{variant: …}`
        Ok(())
    }
}

/// A map key as text: strings, and the scalars serde_json also writes as keys.
struct KeyName;

/// [`KeyName`]'s scalars, written as their text.
macro_rules! key_as_text {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<String, FlatError> {
            Ok(v.to_string())
        }
    )*};
}

impl KeyName {
    fn refuse<T>() -> Result<T, FlatError> {
        Err(FlatError("key must be a string".into()))
    }
}

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = FlatError;
    type SerializeSeq = ser::Impossible<String, FlatError>;
    type SerializeTuple = ser::Impossible<String, FlatError>;
    type SerializeTupleStruct = ser::Impossible<String, FlatError>;
    type SerializeTupleVariant = ser::Impossible<String, FlatError>;
    type SerializeMap = ser::Impossible<String, FlatError>;
    type SerializeStruct = ser::Impossible<String, FlatError>;
    type SerializeStructVariant = ser::Impossible<String, FlatError>;

    fn serialize_str(self, v: &str) -> Result<String, FlatError> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, FlatError> {
        Ok(v.to_string())
    }
    key_as_text!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64
    );
    fn serialize_f32(self, _v: f32) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_f64(self, _v: f64) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_none(self) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_unit(self) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, FlatError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, FlatError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, FlatError> {
        KeyName::refuse()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, FlatError> {
        KeyName::refuse()
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, FlatError> {
        KeyName::refuse()
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, FlatError> {
        KeyName::refuse()
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, FlatError> {
        KeyName::refuse()
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, FlatError> {
        KeyName::refuse()
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, FlatError> {
        KeyName::refuse()
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, FlatError> {
        KeyName::refuse()
    }
}

/// The [`Flat`] representation for `jsonschema` (`jsonschema::options_for::<FlatJson>()`).
#[derive(Debug)]
pub struct FlatJson;

impl Json for FlatJson {
    type Node<'a> = FlatNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = Flat;
    /// A lookup is a scan of the members, no cheaper than a pass over them.
    const KEYS_PER_LOOKUP: usize = 1;
    /// A document is a tree: no node contains itself.
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(
        buffer: &mut Flat,
        string: &str,
        f: impl FnOnce(FlatNode<'_>) -> T,
    ) -> T {
        buffer.slots.clear();
        buffer.text.clear();
        buffer.text.push_str(string);
        buffer.slots.push(Slot {
            key: Key::None,
            kind: Kind::Str(0, string.len() as u32),
            end: 1,
        });
        f(buffer.root())
    }
}

/// A node of a [`Flat`] document.
#[derive(Debug, Clone, Copy)]
pub struct FlatNode<'a> {
    doc: &'a Flat,
    at: u32,
}

impl<'a> FlatNode<'a> {
    fn slot(&self) -> &'a Slot {
        &self.doc.slots[self.at as usize]
    }

    /// The children of a container, in order.
    fn children(&self) -> Children<'a> {
        let slot = self.slot();
        Children {
            doc: self.doc,
            at: self.at + 1,
            end: slot.end,
        }
    }

    fn key(&self) -> &'a str {
        match self.slot().key {
            Key::None => "",
            Key::Static(key) => key,
            Key::Text(start, end) => self.doc.string(start, end),
        }
    }

    fn value(&self) -> Value {
        match self.slot().kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(b),
            Kind::U64(n) => Value::from(n),
            Kind::I64(n) => Value::from(n),
            Kind::F64(n) => Value::from(n),
            Kind::Str(start, end) => Value::String(self.doc.string(start, end).to_owned()),
            Kind::Array(n) => {
                let mut items = Vec::with_capacity(n as usize);
                items.extend(self.children().map(|child| child.value()));
                Value::Array(items)
            }
            Kind::Object(n) => {
                let mut map = serde_json::Map::with_capacity(n as usize);
                for child in self.children() {
                    map.insert(child.key().to_owned(), child.value());
                }
                Value::Object(map)
            }
        }
    }
}

/// The children of a container node.
#[derive(Debug, Clone)]
pub struct Children<'a> {
    doc: &'a Flat,
    at: u32,
    end: u32,
}

impl<'a> Iterator for Children<'a> {
    type Item = FlatNode<'a>;

    fn next(&mut self) -> Option<FlatNode<'a>> {
        if self.at >= self.end {
            return None;
        }
        let node = FlatNode {
            doc: self.doc,
            at: self.at,
        };
        self.at = self.doc.slots[self.at as usize].end;
        Some(node)
    }
}

/// The members of an object node, with their names.
#[derive(Debug, Clone)]
pub struct Members<'a>(Children<'a>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, FlatNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|node| (node.key(), node))
    }
}

/// An object node.
#[derive(Debug, Clone, Copy)]
pub struct FlatObject<'a>(FlatNode<'a>, u32);

/// An array node.
#[derive(Debug, Clone, Copy)]
pub struct FlatArray<'a>(FlatNode<'a>, u32);

/// A number, as serde_json's `Number` holds it.
#[derive(Debug, Clone, Copy)]
pub enum FlatNumber {
    U64(u64),
    I64(i64),
    F64(f64),
}

impl FlatNumber {
    fn number(self) -> Number {
        match self {
            FlatNumber::U64(n) => Number::from(n),
            FlatNumber::I64(n) => Number::from(n),
            // Only finite floats are stored.
            FlatNumber::F64(n) => Number::from_f64(n).unwrap_or_else(|| Number::from(0)),
        }
    }
}

impl JsonNumber for FlatNumber {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            FlatNumber::U64(n) => Some(n),
            _ => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match *self {
            FlatNumber::U64(n) => i64::try_from(n).ok(),
            FlatNumber::I64(n) => Some(n),
            FlatNumber::F64(_) => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            FlatNumber::U64(n) => n as f64,
            FlatNumber::I64(n) => n as f64,
            FlatNumber::F64(n) => n,
        })
    }
    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.number().to_string())
    }
    fn to_number(&self) -> Cow<'_, Number> {
        Cow::Owned(self.number())
    }
    fn is_integer(&self) -> bool {
        match *self {
            FlatNumber::U64(_) | FlatNumber::I64(_) => true,
            FlatNumber::F64(n) => n.fract() == 0.0,
        }
    }
    /// serde_json writes a float with a fraction or an exponent (`7.0`), an integer without.
    fn is_written_as_integer(&self) -> bool {
        !matches!(self, FlatNumber::F64(_))
    }
}

impl<'a> Node<'a, FlatJson> for FlatNode<'a> {
    type Object = FlatObject<'a>;
    type Array = FlatArray<'a>;
    type Number = FlatNumber;

    fn as_object(&self) -> Option<FlatObject<'a>> {
        match self.slot().kind {
            Kind::Object(n) => Some(FlatObject(*self, n)),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<FlatArray<'a>> {
        match self.slot().kind {
            Kind::Array(n) => Some(FlatArray(*self, n)),
            _ => None,
        }
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self.slot().kind {
            Kind::Str(start, end) => Some(Cow::Borrowed(self.doc.string(start, end))),
            _ => None,
        }
    }
    fn as_number(&self) -> Option<FlatNumber> {
        match self.slot().kind {
            Kind::U64(n) => Some(FlatNumber::U64(n)),
            Kind::I64(n) => Some(FlatNumber::I64(n)),
            Kind::F64(n) => Some(FlatNumber::F64(n)),
            _ => None,
        }
    }
    fn as_boolean(&self) -> Option<bool> {
        match self.slot().kind {
            Kind::Bool(b) => Some(b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self.slot().kind, Kind::Null)
    }
    fn json_type(&self) -> JsonType {
        match self.slot().kind {
            Kind::Null => JsonType::Null,
            Kind::Bool(_) => JsonType::Boolean,
            Kind::U64(_) | Kind::I64(_) | Kind::F64(_) => JsonType::Number,
            Kind::Str(..) => JsonType::String,
            Kind::Array(_) => JsonType::Array,
            Kind::Object(_) => JsonType::Object,
        }
    }
    fn equals_value(&self, expected: &Value) -> bool {
        match (self.slot().kind, expected) {
            (Kind::Str(start, end), Value::String(s)) => self.doc.string(start, end) == s,
            (Kind::Str(..), _) => false,
            (Kind::Bool(b), Value::Bool(e)) => b == *e,
            (Kind::Bool(_), _) => false,
            (Kind::Null, e) => e.is_null(),
            _ => jsonschema::json::cmp::equal(&self.value(), expected),
        }
    }
    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.value())
    }
    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref::<Flat>(self.doc) as usize,
            self.at,
        ))
    }
}

impl<'a> Object<'a, FlatJson> for FlatObject<'a> {
    type Node = FlatNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.1 as usize
    }
    fn get(&self, key: &Box<str>) -> Option<FlatNode<'a>> {
        self.0.children().find(|child| child.key() == &**key)
    }
    fn members(&self) -> Members<'a> {
        Members(self.0.children())
    }
}

impl<'a> Array<'a, FlatJson> for FlatArray<'a> {
    type Node = FlatNode<'a>;
    type ElementsIter = Children<'a>;

    fn len(&self) -> usize {
        self.1 as usize
    }
    fn elements(&self) -> Children<'a> {
        self.0.children()
    }
}
