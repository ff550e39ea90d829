//! Reading JSON objects the way System.Text.Json does with `PropertyNameCaseInsensitive`:
//! property names match case-insensitively, `null` means absent, and a value of the wrong JSON
//! type is an error (no coercion of `"42"` to 42 or of `7.5` to an integer).
//!
//! Every problem is recorded in a [`Ctx`] instead of stopping at the first one, so a request's
//! errors are all reported at once. Properties nobody read become warnings: nothing is dropped
//! silently.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{pointer_push, FieldError};

/// A note in the mapping report that is not an error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

/// Errors and warnings collected while reading one message.
#[derive(Debug, Default)]
pub struct Ctx {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<Warning>,
}

impl Ctx {
    pub fn error(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A JSON value together with the JSON Pointer it was found at.
#[derive(Debug, Clone)]
pub struct At<'a> {
    pub value: &'a Value,
    pub path: String,
}

/// One JSON object being read; tracks which properties were consumed.
pub struct Reader<'a> {
    path: String,
    /// The object's properties in document order; their pointers are built only when needed.
    entries: Vec<(&'a str, &'a Value)>,
    used: Vec<bool>,
}

/// Property names compare like System.Text.Json's case-insensitive mode (ordinal, ignoring case).
fn same_name(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.is_ascii() && b.is_ascii() {
        // The same comparison for ASCII text, without per-char case tables.
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .zip(b.chars())
        .all(|(x, y)| x.to_lowercase().eq(y.to_lowercase()))
}

/// A looser match used only as a fallback, with a warning: snake_case spellings of a camelCase
/// name (`guidance_scale` for `guidanceScale`). System.Text.Json would not bind these, so the
/// report says so; the analyses-era samples use them.
fn same_name_ignoring_underscores(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        let mut x = a.bytes().filter(|c| *c != b'_');
        let mut y = b.bytes().filter(|c| *c != b'_');
        loop {
            match (x.next(), y.next()) {
                (None, None) => return true,
                (Some(p), Some(q)) if p.eq_ignore_ascii_case(&q) => {}
                _ => return false,
            }
        }
    }
    let mut x = a.chars().filter(|c| *c != '_').flat_map(char::to_lowercase);
    let mut y = b.chars().filter(|c| *c != '_').flat_map(char::to_lowercase);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

impl<'a> Reader<'a> {
    pub fn new(map: &'a Map<String, Value>, path: impl Into<String>) -> Self {
        Reader {
            path: path.into(),
            entries: map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            used: vec![false; map.len()],
        }
    }

    /// The JSON Pointer of the `i`th property.
    fn pointer(&self, i: usize) -> String {
        pointer_push(&self.path, self.entries[i].0)
    }

    /// Reads `value` as an object at `path`, recording a type error otherwise.
    pub fn object(ctx: &mut Ctx, at: At<'a>) -> Option<Reader<'a>> {
        match at.value {
            Value::Object(map) => Some(Reader::new(map, at.path)),
            other => {
                ctx.error(type_error(&at.path, "an object", other));
                None
            }
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The property matching `name` (any casing), or `None` when absent or `null`.
    /// Two properties that both match are an error naming both paths.
    pub fn get(&mut self, ctx: &mut Ctx, name: &str) -> Option<At<'a>> {
        let mut found: Option<usize> = None;
        for (i, (key, _)) in self.entries.iter().enumerate() {
            if same_name(key, name) {
                if let Some(first) = found {
                    let (first, this) = (self.pointer(first), self.pointer(i));
                    ctx.error(FieldError::new(
                        this.clone(),
                        "conflict",
                        format!(
                            "two properties match `{name}` (names are case-insensitive): {first} and {this}"
                        ),
                    ));
                    self.used[i] = true;
                    continue;
                }
                found = Some(i);
            }
        }
        if found.is_none() {
            for (i, (key, _)) in self.entries.iter().enumerate() {
                if !self.used[i] && same_name_ignoring_underscores(key, name) {
                    ctx.warn(
                        self.pointer(i),
                        format!(
                            "read as `{name}`: System.Text.Json would not bind `{key}` (underscores are not ignored there)"
                        ),
                    );
                    found = Some(i);
                    break;
                }
            }
        }
        let i = found?;
        self.used[i] = true;
        let value = self.entries[i].1;
        if value.is_null() {
            return None;
        }
        Some(At {
            value,
            path: self.pointer(i),
        })
    }

    /// True when a property matching `name` exists (even if `null`); does not consume it.
    pub fn has(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, _)| same_name(k, name) || same_name_ignoring_underscores(k, name))
    }

    pub fn string(&mut self, ctx: &mut Ctx, name: &str) -> Option<(String, String)> {
        let at = self.get(ctx, name)?;
        as_string(ctx, &at).map(|s| (s, at.path))
    }

    pub fn int(&mut self, ctx: &mut Ctx, name: &str) -> Option<(i64, String)> {
        let at = self.get(ctx, name)?;
        as_int(ctx, &at).map(|n| (n, at.path))
    }

    pub fn number(&mut self, ctx: &mut Ctx, name: &str) -> Option<(f64, String)> {
        let at = self.get(ctx, name)?;
        as_number(ctx, &at).map(|n| (n, at.path))
    }

    pub fn boolean(&mut self, ctx: &mut Ctx, name: &str) -> Option<(bool, String)> {
        let at = self.get(ctx, name)?;
        as_bool(ctx, &at).map(|b| (b, at.path))
    }

    pub fn object_field(&mut self, ctx: &mut Ctx, name: &str) -> Option<Reader<'a>> {
        let at = self.get(ctx, name)?;
        Reader::object(ctx, at)
    }

    pub fn array(&mut self, ctx: &mut Ctx, name: &str) -> Option<Vec<At<'a>>> {
        let at = self.get(ctx, name)?;
        as_array(ctx, &at)
    }

    /// Records every property nobody read as a warning ("ignored").
    pub fn finish(self, ctx: &mut Ctx) {
        for (i, (key, _)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                ctx.warn(
                    self.pointer(i),
                    format!("unknown property `{key}`: not part of the protocol, ignored"),
                );
            }
        }
    }
}

/// Items of an array, each with its JSON Pointer.
pub fn as_array<'a>(ctx: &mut Ctx, at: &At<'a>) -> Option<Vec<At<'a>>> {
    match at.value {
        Value::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, value)| At {
                    value,
                    path: format!("{}/{i}", at.path),
                })
                .collect(),
        ),
        other => {
            ctx.error(type_error(&at.path, "an array", other));
            None
        }
    }
}

pub fn as_bool(ctx: &mut Ctx, at: &At<'_>) -> Option<bool> {
    match at.value {
        Value::Bool(b) => Some(*b),
        other => {
            ctx.error(type_error(&at.path, "a boolean", other));
            None
        }
    }
}

pub fn as_string(ctx: &mut Ctx, at: &At<'_>) -> Option<String> {
    match at.value {
        Value::String(s) => Some(s.clone()),
        other => {
            ctx.error(type_error(&at.path, "a string", other));
            None
        }
    }
}

pub fn as_int(ctx: &mut Ctx, at: &At<'_>) -> Option<i64> {
    match at.value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(i),
            None if n.is_u64() => {
                ctx.error(
                    FieldError::new(&at.path, "range", "integer too large").with_value(at.value),
                );
                None
            }
            None => {
                ctx.error(type_error(&at.path, "an integer", at.value));
                None
            }
        },
        other => {
            ctx.error(type_error(&at.path, "an integer", other));
            None
        }
    }
}

pub fn as_number(ctx: &mut Ctx, at: &At<'_>) -> Option<f64> {
    match at.value {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).or_else(|| {
            ctx.error(
                FieldError::new(&at.path, "range", "number is not finite").with_value(at.value),
            );
            None
        }),
        other => {
            ctx.error(type_error(&at.path, "a number", other));
            None
        }
    }
}

pub fn type_error(path: &str, expected: &str, found: &Value) -> FieldError {
    FieldError::new(
        path,
        "type",
        format!("expected {expected}, found {}", json_type_name(found)),
    )
    .with_value(found)
}

pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
