//! The protocol's JSON Schemas (2020-12), embedded in the crate and compiled once.
//!
//! Every schema file carries two annotations the tooling reads: `x-version` (bumped whenever the
//! schema changes in a way the other side can notice) and `x-direction` (`request`: the schema of
//! what a consumer accepts; `reply`: the schema of what a producer sends), which tells the schema
//! gate which way a change breaks.

use std::sync::OnceLock;

use serde_json::Value;

use crate::error::{Errors, FieldError, Result};
use crate::flat::{Flat, FlatJson};

/// One of the protocol's schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    /// The C# HTTP request body (camelCase), including the seed document's fields.
    CsharpRequest,
    /// The C# HTTP response body (camelCase).
    CsharpResponse,
    /// The Python worker request envelope, protocol v2 (the current one).
    PythonRequest,
    /// The Python worker request envelope, protocol v1, frozen: every v1-valid request must stay
    /// v2-valid.
    PythonRequestV1,
    /// What a Python worker may reply: the v2 envelope, the error shape, both legacy flat shapes.
    PythonReply,
}

impl Schema {
    pub const ALL: [Schema; 5] = [
        Schema::CsharpRequest,
        Schema::CsharpResponse,
        Schema::PythonRequest,
        Schema::PythonRequestV1,
        Schema::PythonReply,
    ];

    /// The name used on the command line (`--schema NAME`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Schema::CsharpRequest => "csharp-request",
            Schema::CsharpResponse => "csharp-response",
            Schema::PythonRequest => "python-request",
            Schema::PythonRequestV1 => "python-request-v1",
            Schema::PythonReply => "python-reply",
        }
    }

    pub fn from_cli_name(name: &str) -> Option<Schema> {
        Schema::ALL.into_iter().find(|s| s.cli_name() == name)
    }

    /// The file under `transformer/schemas/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Schema::CsharpRequest => "csharp-request.schema.json",
            Schema::CsharpResponse => "csharp-response.schema.json",
            Schema::PythonRequest => "python-request.schema.json",
            Schema::PythonRequestV1 => "python-request.v1.schema.json",
            Schema::PythonReply => "python-reply.schema.json",
        }
    }

    /// The schema document's text, as committed.
    pub fn source(self) -> &'static str {
        match self {
            Schema::CsharpRequest => include_str!("../schemas/csharp-request.schema.json"),
            Schema::CsharpResponse => include_str!("../schemas/csharp-response.schema.json"),
            Schema::PythonRequest => include_str!("../schemas/python-request.schema.json"),
            Schema::PythonRequestV1 => include_str!("../schemas/python-request.v1.schema.json"),
            Schema::PythonReply => include_str!("../schemas/python-reply.schema.json"),
        }
    }

    /// The parsed schema document.
    pub fn document(self) -> &'static Value {
        static DOCS: [OnceLock<Value>; 5] = [const { OnceLock::new() }; 5];
        DOCS[self as usize].get_or_init(|| {
            serde_json::from_str(self.source())
                .unwrap_or_else(|e| panic!("embedded schema {} is not JSON: {e}", self.file_name()))
        })
    }

    /// The compiled validator (compiled on first use; the embedded schemas are tested to compile).
    pub fn validator(self) -> &'static jsonschema::Validator {
        static VALIDATORS: [OnceLock<jsonschema::Validator>; 5] = [const { OnceLock::new() }; 5];
        VALIDATORS[self as usize].get_or_init(|| {
            jsonschema::draft202012::new(self.document()).unwrap_or_else(|e| {
                panic!("embedded schema {} does not compile: {e}", self.file_name())
            })
        })
    }

    /// The same schema compiled for [`Flat`] documents (a message checked without building its
    /// `Value`; the same keywords, the same answers).
    pub fn flat_validator(self) -> &'static jsonschema::Validator<FlatJson> {
        static VALIDATORS: [OnceLock<jsonschema::Validator<FlatJson>>; 5] =
            [const { OnceLock::new() }; 5];
        VALIDATORS[self as usize].get_or_init(|| {
            jsonschema::options_for::<FlatJson>()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(self.document())
                .unwrap_or_else(|e| {
                    panic!("embedded schema {} does not compile: {e}", self.file_name())
                })
        })
    }

    /// True when the document is valid: [`Schema::is_valid`] of its `Value`.
    pub fn is_valid_flat(self, document: &Flat) -> bool {
        self.flat_validator().is_valid(document.root())
    }

    /// True when `instance` is valid; cheaper than [`Schema::validate`].
    pub fn is_valid(self, instance: &Value) -> bool {
        self.validator().is_valid(instance)
    }

    /// Validates `instance`, reporting every violation with its JSON Pointer.
    pub fn validate(self, instance: &Value) -> Result<()> {
        let validator = self.validator();
        if validator.is_valid(instance) {
            return Ok(());
        }
        let errors: Vec<FieldError> = validator
            .iter_errors(instance)
            .map(|e| {
                let path = e.instance_path().to_string();
                let value = instance.pointer(&path).cloned();
                let mut error = FieldError::new(
                    path,
                    schema_rule(e.kind().keyword()),
                    format!("{} (schema {}: {})", e, self.cli_name(), e.schema_path()),
                );
                if let Some(value) = value {
                    error = error.with_value(&value);
                }
                error
            })
            .collect();
        Err(Errors { errors })
    }
}

/// Compiles a schema document (2020-12); the error says why it is not a usable schema.
pub fn compile(document: &Value) -> std::result::Result<jsonschema::Validator, String> {
    jsonschema::draft202012::new(document).map_err(|e| e.to_string())
}

/// Maps a JSON Schema keyword to the rule name of the error convention.
fn schema_rule(keyword: &str) -> &'static str {
    const KEYWORDS: &[&str] = &[
        "additionalProperties",
        "anyOf",
        "const",
        "contains",
        "enum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "false",
        "format",
        "maxItems",
        "maxLength",
        "maxProperties",
        "maximum",
        "minItems",
        "minLength",
        "minProperties",
        "minimum",
        "multipleOf",
        "not",
        "oneOf",
        "pattern",
        "propertyNames",
        "required",
        "type",
        "unevaluatedItems",
        "unevaluatedProperties",
        "uniqueItems",
    ];
    KEYWORDS
        .iter()
        .find(|k| **k == keyword)
        .copied()
        .unwrap_or("schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_compiles_and_is_annotated() {
        for schema in Schema::ALL {
            let doc = schema.document();
            assert_eq!(
                doc["$schema"],
                "https://json-schema.org/draft/2020-12/schema",
                "{}",
                schema.file_name()
            );
            assert!(
                doc["x-version"].is_string(),
                "{} lacks x-version",
                schema.file_name()
            );
            assert!(
                matches!(doc["x-direction"].as_str(), Some("request" | "reply")),
                "{} lacks x-direction",
                schema.file_name()
            );
            let _ = schema.validator();
            let _ = schema.flat_validator();
        }
    }
}
