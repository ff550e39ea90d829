//! The executable specification of the C# ↔ Python SDXL worker protocol.
//!
//! Data flow: C# JSON → [`csharp`] (parse case-insensitively into the typed C# request) →
//! [`request_map`] (C# → Python v2, with a [`report::MappingReport`]) → [`schema`] validation (of
//! the typed message as a [`flat`] document) →
//! Python JSON. Replies come back through [`reply_map`].

pub mod commands;
pub mod coverage;
pub mod csharp;
pub mod error;
pub mod flat;
pub mod json;
pub mod python;
pub mod read;
pub mod reply_map;
pub mod report;
pub mod request_map;
pub mod reverse;
pub mod schedulers;
pub mod schema;
pub mod schema_diff;

pub use error::{Errors, FieldError, Result};
pub use schema::Schema;
