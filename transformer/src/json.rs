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
    /// Parses JSON text with serde_json's parser (its errors, unchanged).
    pub fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
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
        let mut members: Vec<(Cow<'de, str>, Json<'de>)> = Vec::new();
        // Past a few members, repeated keys are found through an index instead of a scan.
        const SCAN: usize = 16;
        let mut index: Option<HashMap<String, usize>> = None;
        while let Some(key) = visitor.next_key_seed(KeySeed)? {
            let value: Json<'de> = visitor.next_value()?;
            let existing = match &index {
                Some(index) => index.get(key.as_ref()).copied(),
                None => members.iter().position(|(k, _)| *k == key),
            };
            match existing {
                // `Value` keeps a repeated key where it first was, with the last value.
                Some(i) => members[i].1 = value,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(key.to_string(), members.len());
                    }
                    members.push((key, value));
                    if index.is_none() && members.len() > SCAN {
                        index = Some(
                            members
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.to_string(), i))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(Json::Object(members))
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

#[cfg(test)]
mod tests {
    use super::*;

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
