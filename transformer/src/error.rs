//! Errors of the protocol: every problem names where it is (a JSON Pointer into the input), the
//! rule it broke, a sentence for people and, where there is one, the offending value.

use serde::Serialize;
use serde_json::Value;

use crate::json::Json;

/// One problem found in an input document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) into the input document; `""` is the whole document.
    pub path: String,
    /// Short machine-readable rule name, e.g. `required`, `type`, `range`, `enum`.
    pub rule: &'static str,
    /// What is wrong, for people.
    pub message: String,
    /// The offending value, when there is one (large values are abbreviated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl FieldError {
    pub fn new(path: impl Into<String>, rule: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            rule,
            message: message.into(),
            value: None,
        }
    }

    pub fn with_value(mut self, value: &Value) -> Self {
        self.value = Some(abbreviate(value));
        self
    }
}

/// Keeps error output small: long strings are cut, containers are summarised.
fn abbreviate(value: &Value) -> Value {
    const MAX_CHARS: usize = 120;
    match value {
        Value::String(s) if s.chars().count() > MAX_CHARS => {
            let head: String = s.chars().take(MAX_CHARS).collect();
            Value::String(format!("{head}… ({} chars)", s.chars().count()))
        }
        Value::Array(items) if items.len() > 8 => {
            Value::String(format!("[array of {} items]", items.len()))
        }
        Value::Object(map) if map.len() > 8 => {
            Value::String(format!("{{object with {} properties}}", map.len()))
        }
        other => other.clone(),
    }
}

/// All errors of one input, reported at once. Serialises as `{"errors":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{} error(s), first: {}", errors.len(), errors.first().map(|e| format!("{}: {}", display_path(&e.path), e.message)).unwrap_or_default())]
pub struct Errors {
    pub errors: Vec<FieldError>,
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "(document)"
    } else {
        path
    }
}

impl Errors {
    pub fn one(error: FieldError) -> Self {
        Errors {
            errors: vec![error],
        }
    }

    /// The single-line JSON form written to stderr by the CLI.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Serialising plain strings and JSON values cannot fail; keep a fallback anyway.
            String::from(r#"{"errors":[{"path":"","rule":"internal","message":"error serialisation failed"}]}"#)
        })
    }
}

impl From<FieldError> for Errors {
    fn from(error: FieldError) -> Self {
        Errors::one(error)
    }
}

pub type Result<T, E = Errors> = std::result::Result<T, E>;

/// Appends a reference token to a JSON Pointer, escaping `~` and `/` as RFC 6901 requires.
pub fn pointer_push(base: &str, token: &str) -> String {
    let mut out = String::with_capacity(base.len() + token.len() + 1);
    out.push_str(base);
    out.push('/');
    if !token.bytes().any(|b| b == b'~' || b == b'/') {
        // Nothing to escape (the usual case): copy the token as is.
        out.push_str(token);
        return out;
    }
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// Parses bytes as JSON, turning every failure (not UTF-8, syntax, nesting deeper than
/// serde_json's limit of 128, numbers out of range) into the error convention.
pub fn parse_json(bytes: &[u8]) -> Result<Value> {
    // Already checked as UTF-8: `from_str` does not check the strings' bytes a second time.
    serde_json::from_str(utf8(bytes)?).map_err(syntax_error)
}

/// [`parse_json`] into a document that borrows its strings from `bytes` (same errors).
pub fn parse_document(bytes: &[u8]) -> Result<Json<'_>> {
    Json::parse(utf8(bytes)?).map_err(syntax_error)
}

/// [`parse_document`] of text already checked as UTF-8 ([`utf8`]), with the hash of the compact
/// text when taken while parsing (see [`Json::parse_hashed`]).
pub(crate) fn parse_text_hashed(text: &str) -> Result<(Json<'_>, Option<u64>)> {
    Json::parse_hashed(text).map_err(syntax_error)
}

/// The bytes as text, or the error convention's error for bytes that are not UTF-8.
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| {
        FieldError::new(
            "",
            "json_syntax",
            format!(
                "input is not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
        .into()
    })
}

fn syntax_error(e: serde_json::Error) -> Errors {
    let rule = match e.classify() {
        serde_json::error::Category::Eof => "json_truncated",
        _ => "json_syntax",
    };
    FieldError::new(
        "",
        rule,
        format!(
            "input is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(pointer_push("/a", "b/c~d"), "/a/b~1c~0d");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(20_000) + &"]".repeat(20_000);
        let err = parse_json(deep.as_bytes()).unwrap_err();
        assert_eq!(err.errors[0].rule, "json_syntax");
        assert!(err.errors[0].message.contains("recursion limit"), "{err:?}");
    }

    #[test]
    fn binary_garbage_is_an_error() {
        let err = parse_json(&[0xff, 0xfe, 0x00, 0x7b]).unwrap_err();
        assert!(err.errors[0].message.contains("UTF-8"));
    }

    #[test]
    fn huge_numbers_are_an_error() {
        let err = parse_json(b"{\"a\": 1e400}").unwrap_err();
        assert_eq!(err.errors[0].rule, "json_syntax");
    }
}
