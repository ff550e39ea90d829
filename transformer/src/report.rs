//! The mapping report: what became of every field of a message (PROTOCOL B.2). A field is
//! mapped (input pointer → output pointer), filled with a default, or reported with the reason
//! it has no place on the other side; unknown properties are warnings. Nothing is dropped
//! silently.

use serde::Serialize;
use serde_json::Value;

pub use crate::read::Warning;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MappingReport {
    /// The wire shape the input arrived in.
    pub dialect: &'static str,
    /// The C# action (or `generate_sdxl_enhanced` for the HTTP body).
    pub action: &'static str,
    /// The message type produced.
    pub message_type: &'static str,
    pub mapped: Vec<Mapped>,
    pub defaults: Vec<DefaultApplied>,
    pub reported: Vec<Reported>,
    pub warnings: Vec<Warning>,
}

/// An input field and where its value went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mapped {
    /// JSON Pointer into the input.
    pub from: String,
    /// JSON Pointer into the output.
    pub to: String,
}

/// An output field the input did not set, filled with the sending side's documented default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefaultApplied {
    pub to: String,
    pub value: Value,
    pub reason: &'static str,
}

/// An input field with no place in the output, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reported {
    /// JSON Pointer into the input.
    pub path: String,
    pub value: Value,
    pub reason: &'static str,
}
