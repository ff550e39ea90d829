//! Python worker replies → the C# service's camelCase response (PROTOCOL A.6, A.7, B.7, B.8,
//! B.10).
//!
//! Flow: JSON → shape detection ([`ReplyShape::detect`], the same order as the `oneOf` of
//! `python-reply.schema.json`) → validation against that shape's part of the schema (errors are
//! JSON Pointers into the reply) → typed [`PythonReply`] → [`CsharpResponse`] plus a
//! [`ReplyReport`] listing every reply field that has no place in the C# response. Nothing is
//! dropped silently, nothing is invented: what a worker does not report is `null` in C#.

use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{parse_json, pointer_push, Errors, FieldError, Result};
use crate::report::{Reported, Warning};
use crate::schema::Schema;

/// `metrics.pipelineType` of every mapped reply (B.7).
pub const PIPELINE_TYPE: &str = "enhanced_sdxl";

/// The largest seed a reply may report: C#'s `int` holds seeds (B.3).
pub const MAX_SEED: i64 = 2_147_483_647;

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// The four reply shapes a Python worker may send (A.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyShape {
    /// v2: `{"request_id","success":true,"timestamp","data":{"images":[paths],…}}`.
    Envelope,
    /// `{"success":false,"error":"…"}`, optionally with `request_id`.
    Error,
    /// Legacy flat, one file: `{"success":true,"output_path",…}`.
    LegacyFile,
    /// Legacy flat, image list: `{"success":true,"images":[{path,…}],…}`.
    LegacyImages,
}

impl ReplyShape {
    pub const ALL: [ReplyShape; 4] = [
        ReplyShape::Envelope,
        ReplyShape::Error,
        ReplyShape::LegacyFile,
        ReplyShape::LegacyImages,
    ];

    /// The name used in reports and documentation.
    pub fn name(self) -> &'static str {
        match self {
            ReplyShape::Envelope => "envelope",
            ReplyShape::Error => "error",
            ReplyShape::LegacyFile => "legacy_file",
            ReplyShape::LegacyImages => "legacy_images",
        }
    }

    /// The `$defs` entry of `python-reply.schema.json` that describes this shape.
    pub fn schema_def(self) -> &'static str {
        match self {
            ReplyShape::Envelope => "envelope_reply",
            ReplyShape::Error => "error_reply",
            ReplyShape::LegacyFile => "legacy_file_reply",
            ReplyShape::LegacyImages => "legacy_images_reply",
        }
    }

    /// Which shape a reply claims to be, by the same rules, in the same order, as the schema's
    /// `oneOf`: `success: false` → error; else `data` → envelope; else `output_path` → legacy
    /// file; else `images` → legacy image list. `None` when nothing identifies a shape.
    pub fn detect(reply: &Value) -> Option<ReplyShape> {
        let object = reply.as_object()?;
        if object.get("success") == Some(&Value::Bool(false)) {
            Some(ReplyShape::Error)
        } else if object.contains_key("data") {
            Some(ReplyShape::Envelope)
        } else if object.contains_key("output_path") {
            Some(ReplyShape::LegacyFile)
        } else if object.contains_key("images") {
            Some(ReplyShape::LegacyImages)
        } else {
            None
        }
    }
}

/// One accepted reply shape, documented for people and for the CLI.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReplyShapeDoc {
    pub shape: ReplyShape,
    /// How the shape is recognised.
    pub recognised_by: &'static str,
    /// A minimal reply of this shape (tested to map).
    pub example: &'static str,
}

/// The accepted reply shapes, in the order they are recognised.
pub const REPLY_SHAPES: [ReplyShapeDoc; 4] = [
    ReplyShapeDoc {
        shape: ReplyShape::Error,
        recognised_by: "`success` is false; `error` is required and passed to C# verbatim",
        example: r#"{"success":false,"error":"CUDA out of memory","request_id":"0123456789abcdef"}"#,
    },
    ReplyShapeDoc {
        shape: ReplyShape::Envelope,
        recognised_by:
            "a `data` object; `request_id`, `success: true` and `data.images` (paths) required",
        example: r#"{"request_id":"0123456789abcdef","success":true,"timestamp":"2026-11-28T06:00:00Z","data":{"images":["/out/a.png","/out/b.png"],"model_used":"sdxl-base","processing_time":4.2,"inference_steps":25,"guidance_scale":7.5,"seed":42,"seeds":[42,43],"scheduler":"EulerDiscreteScheduler","dimensions":{"width":1024,"height":1024}}}"#,
    },
    ReplyShapeDoc {
        shape: ReplyShape::LegacyFile,
        recognised_by: "an `output_path` and no `data`",
        example: r#"{"success":true,"output_path":"/out/a.png","generation_time_seconds":3.1,"seed":7,"width":1024,"height":768}"#,
    },
    ReplyShapeDoc {
        shape: ReplyShape::LegacyImages,
        recognised_by: "a top-level `images` list of objects and neither `data` nor `output_path`",
        example: r#"{"success":true,"images":[{"path":"/out/a.png","filename":"a.png","width":1024,"height":1024,"seed":7}],"generation_time_seconds":3.1,"features_used":{"lora":false}}"#,
    },
];

/// True for a progress event line (B.10): `{"type":"progress","request_id",…}`. Such a line is
/// not a reply; a reader skips it and keeps reading for the reply line.
pub fn is_progress_line(line: &Value) -> bool {
    line.get("type").and_then(Value::as_str) == Some("progress")
}

// ---------------------------------------------------------------------------------------------
// Python reply model (input)
// ---------------------------------------------------------------------------------------------

/// The JSON literal `true` (`OK = true`) or `false` (`OK = false`) of a reply's `success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Success<const OK: bool>;

impl<const OK: bool> Serialize for Success<OK> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bool(OK)
    }
}

impl<'de, const OK: bool> Deserialize<'de> for Success<OK> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        if bool::deserialize(deserializer)? == OK {
            Ok(Success)
        } else {
            Err(serde::de::Error::custom(format!("success must be {OK}")))
        }
    }
}

/// A reply's `timestamp`: ISO 8601 text or Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    Text(String),
    UnixSeconds(f64),
}

/// A Python worker's reply, one of the [`ReplyShape`]s.
// One value per reply line, built once and mapped once: boxing the envelope would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PythonReply {
    Envelope(EnvelopeReply),
    Error(ErrorReply),
    LegacyFile(LegacyFileReply),
    LegacyImages(LegacyImagesReply),
}

/// What a successful reply may report about the generation: in `data` (envelope) or at the top
/// level (legacy shapes). The three timings are synonyms (B.7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_time_seconds: Option<f64>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub inference_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_used: Option<Map<String, Value>>,
}

/// `dimensions{width,height}` of an envelope's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimensions {
    #[serde(deserialize_with = "integral::required")]
    pub width: u32,
    #[serde(deserialize_with = "integral::required")]
    pub height: u32,
    /// Properties this model does not know; reported, never mapped.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The v2 envelope (A.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeReply {
    pub request_id: String,
    pub success: Success<true>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub data: EnvelopeData,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `data` object of the v2 envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeData {
    /// Paths of the written files, in batch order.
    pub images: Vec<String>,
    /// Only with `output.return_base64`: each image's encoded file, same order as `images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_base64: Option<Vec<String>>,
    /// The seed of image 0.
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<i64>,
    /// The seed of each image (B.8).
    #[serde(
        default,
        deserialize_with = "integral::option_vec",
        skip_serializing_if = "Option::is_none"
    )]
    pub seeds: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<Dimensions>,
    #[serde(flatten)]
    pub facts: GenerationFacts,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"success":false,"error":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub success: Success<false>,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Legacy flat reply for one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyFileReply {
    pub success: Success<true>,
    pub output_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<i64>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub width: Option<u32>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub height: Option<u32>,
    #[serde(flatten)]
    pub facts: GenerationFacts,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Legacy flat reply with a list of image objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyImagesReply {
    pub success: Success<true>,
    pub images: Vec<LegacyImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub facts: GenerationFacts,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of a legacy `images` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyImage {
    pub path: String,
    /// When given, must equal the last component of `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub width: Option<u32>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub height: Option<u32>,
    #[serde(
        default,
        deserialize_with = "integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// JSON Schema's `integer` admits `3.0`; serde's integer types do not. These helpers accept any
/// JSON number with no fractional part, so a reply the schema accepts always deserialises.
mod integral {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::Number;

    fn to_int<T: TryFrom<i64>, E: Error>(number: &Number) -> Result<T, E> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact in f64
        let whole = number.as_i64().or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
                .map(|f| f as i64)
        });
        whole
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| E::custom(format!("{number} is not an integer in range")))
    }

    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        to_int(&Number::deserialize(d)?)
    }

    pub fn option<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
        Option::<Number>::deserialize(d)?
            .map(|n| to_int(&n))
            .transpose()
    }

    pub fn option_vec<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
        d: D,
    ) -> Result<Option<Vec<T>>, D::Error> {
        Option::<Vec<Number>>::deserialize(d)?
            .map(|numbers| numbers.iter().map(to_int).collect())
            .transpose()
    }
}

impl PythonReply {
    pub fn shape(&self) -> ReplyShape {
        match self {
            PythonReply::Envelope(_) => ReplyShape::Envelope,
            PythonReply::Error(_) => ReplyShape::Error,
            PythonReply::LegacyFile(_) => ReplyShape::LegacyFile,
            PythonReply::LegacyImages(_) => ReplyShape::LegacyImages,
        }
    }

    /// Reads a reply: detects its shape, validates it against that shape's part of the
    /// python-reply schema (every violation, each with its JSON Pointer) and builds the typed
    /// model. Python replies are snake_case and matched exactly (no case folding).
    pub fn from_value(reply: &Value) -> Result<PythonReply> {
        let Some(object) = reply.as_object() else {
            return Err(FieldError::new(
                "",
                "type",
                format!("a reply is a JSON object; found {}", json_kind(reply)),
            )
            .with_value(reply)
            .into());
        };
        if is_progress_line(reply) {
            let request = object
                .get("request_id")
                .and_then(Value::as_str)
                .map(|id| format!(" of request {id}"))
                .unwrap_or_default();
            return Err(FieldError::new(
                "/type",
                "not_a_reply",
                format!(
                    "a progress event (PROTOCOL B.10) is not a reply: skip it and read the next \
                     line for the reply{request}"
                ),
            )
            .with_value(&Value::String("progress".into()))
            .into());
        }
        let looks_like_request = !object.contains_key("success")
            && (object.contains_key("message_type") || object.contains_key("action"));
        let Some(shape) = ReplyShape::detect(reply).filter(|_| !looks_like_request) else {
            return Err(unrecognised(object));
        };
        let errors = schema_errors(shape_validator(shape), reply);
        if !errors.is_empty() {
            return Err(Errors { errors });
        }
        let typed = match shape {
            ReplyShape::Envelope => EnvelopeReply::deserialize(reply).map(PythonReply::Envelope),
            ReplyShape::Error => ErrorReply::deserialize(reply).map(PythonReply::Error),
            ReplyShape::LegacyFile => {
                LegacyFileReply::deserialize(reply).map(PythonReply::LegacyFile)
            }
            ReplyShape::LegacyImages => {
                LegacyImagesReply::deserialize(reply).map(PythonReply::LegacyImages)
            }
        };
        typed.map_err(|e| {
            // The schema and the model describe the same shapes; reaching this is a bug here,
            // reported as a value rather than a panic.
            FieldError::new(
                "",
                "internal",
                format!(
                    "reply passed the {} schema but does not fit the typed model: {e}",
                    shape.name()
                ),
            )
            .into()
        })
    }

    /// The reply as JSON, as a worker would write it.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| internal(format!("reply serialisation: {e}")))
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The errors of an object that matches no reply shape, with hints for the usual mix-ups: a C#
/// message (camelCase names) or a schema document fed in where a reply belongs.
fn unrecognised(object: &Map<String, Value>) -> Errors {
    let mut errors = Vec::new();
    match object.get("success") {
        None => errors.push(FieldError::new(
            "",
            "required",
            "\"success\" is a required property of every reply",
        )),
        Some(Value::Bool(_)) => {}
        Some(other) => errors.push(
            FieldError::new("/success", "type", "success must be true or false").with_value(other),
        ),
    }
    const LISTED: usize = 12;
    let names: Vec<String> = object.keys().take(LISTED).map(|n| short_name(n)).collect();
    let mut message = String::from(
        "not a Python worker reply: a reply is the error shape (success false, error), the v2 \
         envelope (request_id, success, data.images), or a legacy flat shape (success with \
         output_path, or success with an images list)",
    );
    if names.is_empty() {
        message.push_str("; the object is empty");
    } else {
        message.push_str(&format!("; found properties: {}", names.join(", ")));
        if object.len() > LISTED {
            message.push_str(&format!(", … ({} in all)", object.len()));
        }
    }
    if object.contains_key("message_type") || object.contains_key("action") {
        message.push_str("; `message_type` or `action` mark a request, not a reply");
    }
    if object.contains_key("$schema") {
        message.push_str("; this is a JSON Schema document, not a reply");
    }
    let camel: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.chars().any(|c| c.is_ascii_uppercase()))
        .collect();
    if !camel.is_empty() {
        message.push_str(&format!(
            "; camelCase names ({}) suggest a C#-side message, while Python replies are snake_case",
            camel.join(", ")
        ));
    }
    errors.push(FieldError::new("", "shape", message));
    Errors { errors }
}

/// A property name for a message: long ones are cut.
fn short_name(name: &str) -> String {
    const MAX_CHARS: usize = 40;
    if name.chars().count() > MAX_CHARS {
        let head: String = name.chars().take(MAX_CHARS).collect();
        format!("{head}…")
    } else {
        name.to_owned()
    }
}

/// The python-reply schema narrowed to one shape: the same document with its top-level `oneOf`
/// replaced by a `$ref` to the shape's `$defs` entry, so violations point inside the reply
/// instead of ending at "not valid under any of the schemas listed in oneOf".
fn shape_validator(shape: ReplyShape) -> &'static jsonschema::Validator {
    static VALIDATORS: [OnceLock<jsonschema::Validator>; 4] = [const { OnceLock::new() }; 4];
    let index = ReplyShape::ALL
        .iter()
        .position(|s| *s == shape)
        .unwrap_or_default();
    VALIDATORS[index].get_or_init(|| {
        let mut document = Schema::PythonReply.document().clone();
        if let Some(root) = document.as_object_mut() {
            root.remove("oneOf");
            root.remove("not");
            root.insert(
                "$ref".into(),
                Value::String(format!("#/$defs/{}", shape.schema_def())),
            );
        }
        jsonschema::draft202012::new(&document).unwrap_or_else(|e| {
            panic!(
                "embedded python-reply schema, shape {}, does not compile: {e}",
                shape.name()
            )
        })
    })
}

fn schema_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<FieldError> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().to_string();
            let mut error = FieldError::new(
                path.clone(),
                schema_rule(e.kind().keyword()),
                format!("{e} (schema python-reply: {})", e.schema_path()),
            );
            if let Some(value) = instance.pointer(&path) {
                error = error.with_value(value);
            }
            error
        })
        .collect()
}

fn schema_rule(keyword: &str) -> &'static str {
    const KEYWORDS: &[&str] = &[
        "const",
        "maxItems",
        "maximum",
        "minItems",
        "minLength",
        "minimum",
        "not",
        "pattern",
        "required",
        "type",
    ];
    KEYWORDS
        .iter()
        .find(|k| **k == keyword)
        .copied()
        .unwrap_or("schema")
}

// ---------------------------------------------------------------------------------------------
// C# response model (output)
// ---------------------------------------------------------------------------------------------

/// The C# service's response body (A.7), camelCase, every property written (System.Text.Json
/// writes nulls). Field order here is the order on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsharpResponse {
    pub success: bool,
    pub message: Option<String>,
    /// The worker's error text, verbatim; `None` on success.
    pub error: Option<String>,
    pub images: Vec<CsharpImage>,
    pub metrics: Option<CsharpMetrics>,
    /// The worker's `features_used`, as reported; `None` when not reported.
    pub features_used: Option<Map<String, Value>>,
}

/// One image of [`CsharpResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsharpImage {
    pub path: String,
    pub filename: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub seed: Option<i64>,
    /// Facts without a property of their own: `model_used`, `scheduler`, `guidance_scale`,
    /// `image_base64`. Dictionary keys: not re-cased by C#.
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsharpMetrics {
    pub generation_time_seconds: Option<f64>,
    pub load_time_seconds: Option<f64>,
    pub preprocessing_time_seconds: Option<f64>,
    pub postprocessing_time_seconds: Option<f64>,
    pub inference_steps: Option<u32>,
    pub pipeline_type: Option<String>,
    pub memory_usage: Option<CsharpMemoryUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CsharpMemoryUsage {
    #[serde(rename = "gpuMemoryMB")]
    pub gpu_memory_mb: Option<f64>,
    #[serde(rename = "systemMemoryMB")]
    pub system_memory_mb: Option<f64>,
    #[serde(rename = "peakMemoryMB")]
    pub peak_memory_mb: Option<f64>,
}

impl CsharpResponse {
    /// The response as JSON, in wire order.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| internal(format!("response serialisation: {e}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping
// ---------------------------------------------------------------------------------------------

/// What became of the reply fields that have no place in the C# response: known fields with the
/// reason (`reported`), unknown properties as warnings. Paths are JSON Pointers into the reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyReport {
    pub shape: ReplyShape,
    pub reported: Vec<Reported>,
    pub warnings: Vec<Warning>,
}

impl ReplyReport {
    fn new(shape: ReplyShape) -> Self {
        ReplyReport {
            shape,
            reported: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn reported(&mut self, path: &str, value: &impl Serialize, reason: &'static str) {
        self.reported.push(Reported {
            path: path.to_owned(),
            value: serde_json::to_value(value).unwrap_or(Value::Null),
            reason,
        });
    }

    fn unknown(&mut self, base: &str, extra: &Map<String, Value>) {
        for name in extra.keys() {
            self.warnings.push(Warning {
                path: pointer_push(base, name),
                message: format!(
                    "unknown property ({} reply): no C# place, not mapped",
                    self.shape.name()
                ),
            });
        }
    }
}

/// The result of [`map_reply`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyMapping {
    pub response: CsharpResponse,
    pub report: ReplyReport,
}

/// Maps a Python reply (any shape of [`REPLY_SHAPES`]) to the C# response (B.7).
///
/// * `images[i].path` ← the image's path; `filename` ← its last component (`/` or `\`).
/// * `width`/`height` ← the image's own, else `data.dimensions`, else `null`.
/// * `seed` ← `seeds[i]`; else `seed + i`. B.7 says "else `seed`", which read literally would
///   give every image of a batch image 0's seed; B.8 fixes that image *i* of a batch was drawn
///   with `seed + i`, so that is the seed a C# client needs to reproduce image *i* alone. A batch
///   whose `seed + i` would pass 2147483647 must report `seeds`; otherwise that is an error.
/// * `metrics.generationTimeSeconds` ← `processing_time` | `total_time` |
///   `generation_time_seconds` (two present and different: an error naming both);
///   `inferenceSteps` ← `inference_steps`; `pipelineType` = [`PIPELINE_TYPE`]; load, pre- and
///   post-processing times and memory use are not reported by workers: `null`.
/// * `featuresUsed` ← `features_used`, verbatim; `null` when absent.
/// * `model_used`, `scheduler`, `guidance_scale` and `images_base64[i]` (as `image_base64`) go
///   into each image's `metadata`.
/// * The error shape: `success: false`, `error` verbatim, no images.
/// * `request_id`, `timestamp` and unknown properties have no C# place: listed in the report.
///
/// Errors: every schema violation of the reply, or every conflict found (each naming both
/// paths), all at once.
pub fn map_reply(reply: &Value) -> Result<ReplyMapping> {
    let typed = PythonReply::from_value(reply)?;
    map_python_reply(&typed)
}

/// [`map_reply`] after validation: the conflicts the schema cannot express (lengths,
/// disagreeing timings, a wrong `filename`, seed overflow) are checked here.
fn map_python_reply(reply: &PythonReply) -> Result<ReplyMapping> {
    let mut report = ReplyReport::new(reply.shape());
    let mut errors = Vec::new();
    let response = match reply {
        PythonReply::Envelope(r) => map_envelope(r, &mut report, &mut errors),
        PythonReply::Error(r) => map_error(r, &mut report),
        PythonReply::LegacyFile(r) => map_legacy_file(r, &mut report, &mut errors),
        PythonReply::LegacyImages(r) => map_legacy_images(r, &mut report, &mut errors),
    };
    if !errors.is_empty() {
        return Err(Errors { errors });
    }
    check_response(&response)?;
    Ok(ReplyMapping { response, report })
}

/// Reads, maps and serialises one reply: the `sdxl-transform response` command.
pub fn transform_reply(bytes: &[u8]) -> Result<Value> {
    let reply = parse_json(bytes)?;
    map_reply(&reply)?.response.to_value()
}

fn map_envelope(
    reply: &EnvelopeReply,
    report: &mut ReplyReport,
    errors: &mut Vec<FieldError>,
) -> CsharpResponse {
    report_envelope_ids(reply, report);
    report.unknown("", &reply.extra);
    let data = &reply.data;
    report.unknown("/data", &data.extra);
    if let Some(dimensions) = &data.dimensions {
        report.unknown("/data/dimensions", &dimensions.extra);
    }

    let count = data.images.len();
    let seeds = image_seeds(count, data.seeds.as_deref(), data.seed, "/data", errors);
    if let (Some(seeds), Some(seed)) = (&data.seeds, data.seed) {
        if seeds.first() != Some(&seed) {
            report.reported(
                "/data/seed",
                &seed,
                "differs from /data/seeds/0: C# images carry each image's seed from /data/seeds, \
                 so this base seed has no C# place",
            );
        }
    }
    if let Some(encoded) = &data.images_base64 {
        if encoded.len() != count {
            errors.push(
                FieldError::new(
                    "/data/images_base64",
                    "conflict",
                    format!(
                        "{} encoded images for the {count} paths of /data/images; each image \
                         needs exactly one",
                        encoded.len()
                    ),
                )
                .with_value(&Value::from(encoded.len())),
            );
        }
    }
    let generation_time = generation_time(&data.facts, "/data", errors);
    let size = data.dimensions.as_ref().map(|d| (d.width, d.height));
    let images = data
        .images
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mut metadata = facts_metadata(&data.facts);
            if let Some(encoded) = data.images_base64.as_ref().and_then(|all| all.get(i)) {
                metadata.insert("image_base64".into(), Value::String(encoded.clone()));
            }
            CsharpImage {
                path: path.clone(),
                filename: file_name(path).to_owned(),
                width: size.map(|s| s.0),
                height: size.map(|s| s.1),
                seed: seeds.get(i).copied().flatten(),
                metadata: Some(metadata),
            }
        })
        .collect();
    CsharpResponse {
        success: true,
        message: reply.message.clone(),
        error: None,
        images,
        metrics: Some(metrics(generation_time, data.facts.inference_steps)),
        features_used: data.facts.features_used.clone(),
    }
}

fn map_error(reply: &ErrorReply, report: &mut ReplyReport) -> CsharpResponse {
    report_error_ids(reply, report);
    report.unknown("", &reply.extra);
    CsharpResponse {
        success: false,
        message: reply.message.clone(),
        error: Some(reply.error.clone()),
        images: Vec::new(),
        metrics: Some(metrics(None, None)),
        features_used: None,
    }
}

fn map_legacy_file(
    reply: &LegacyFileReply,
    report: &mut ReplyReport,
    errors: &mut Vec<FieldError>,
) -> CsharpResponse {
    report.unknown("", &reply.extra);
    let generation_time = generation_time(&reply.facts, "", errors);
    let image = CsharpImage {
        path: reply.output_path.clone(),
        filename: file_name(&reply.output_path).to_owned(),
        width: reply.width,
        height: reply.height,
        seed: reply.seed,
        metadata: Some(facts_metadata(&reply.facts)),
    };
    CsharpResponse {
        success: true,
        message: reply.message.clone(),
        error: None,
        images: vec![image],
        metrics: Some(metrics(generation_time, reply.facts.inference_steps)),
        features_used: reply.facts.features_used.clone(),
    }
}

fn map_legacy_images(
    reply: &LegacyImagesReply,
    report: &mut ReplyReport,
    errors: &mut Vec<FieldError>,
) -> CsharpResponse {
    report.unknown("", &reply.extra);
    let generation_time = generation_time(&reply.facts, "", errors);
    let images = reply
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let base = format!("/images/{i}");
            report.unknown(&base, &image.extra);
            let filename = file_name(&image.path);
            if let Some(given) = &image.filename {
                if given != filename {
                    errors.push(
                        FieldError::new(
                            format!("{base}/filename"),
                            "conflict",
                            format!(
                                "filename {given:?} is not the file name of {base}/path \
                                 ({filename:?})"
                            ),
                        )
                        .with_value(&Value::String(given.clone())),
                    );
                }
            }
            CsharpImage {
                path: image.path.clone(),
                filename: filename.to_owned(),
                width: image.width,
                height: image.height,
                seed: image.seed,
                metadata: Some(facts_metadata(&reply.facts)),
            }
        })
        .collect();
    CsharpResponse {
        success: true,
        message: reply.message.clone(),
        error: None,
        images,
        metrics: Some(metrics(generation_time, reply.facts.inference_steps)),
        features_used: reply.facts.features_used.clone(),
    }
}

const NO_REQUEST_ID: &str = "the C# response has no request id: C# pairs replies with \
    requests lock-step (PROTOCOL A.8); checking it is the framing layer's job";
const NO_TIMESTAMP: &str = "the C# response has no timestamp";

fn report_envelope_ids(reply: &EnvelopeReply, report: &mut ReplyReport) {
    report.reported("/request_id", &reply.request_id, NO_REQUEST_ID);
    if let Some(timestamp) = &reply.timestamp {
        report.reported("/timestamp", timestamp, NO_TIMESTAMP);
    }
}

fn report_error_ids(reply: &ErrorReply, report: &mut ReplyReport) {
    if let Some(request_id) = &reply.request_id {
        report.reported("/request_id", request_id, NO_REQUEST_ID);
    }
    if let Some(timestamp) = &reply.timestamp {
        report.reported("/timestamp", timestamp, NO_TIMESTAMP);
    }
}

/// The file name of a path: its last component, with `/` and `\` both separators (workers run
/// on Linux and Windows).
pub fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The seed of each of `count` images (B.8): `seeds[i]`, else `seed + i`, else unknown.
fn image_seeds(
    count: usize,
    seeds: Option<&[i64]>,
    seed: Option<i64>,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Option<i64>> {
    if let Some(seeds) = seeds {
        if seeds.len() != count {
            errors.push(
                FieldError::new(
                    format!("{base}/seeds"),
                    "conflict",
                    format!(
                        "{} seeds for the {count} images of {base}/images; B.8 needs one seed \
                         per image, in the same order",
                        seeds.len()
                    ),
                )
                .with_value(&Value::from(seeds.to_vec())),
            );
        }
        return seeds.iter().copied().map(Some).collect();
    }
    let Some(seed) = seed else {
        return vec![None; count];
    };
    let last_index = count.saturating_sub(1);
    let last = seed.saturating_add(i64::try_from(last_index).unwrap_or(i64::MAX));
    if last > MAX_SEED {
        errors.push(
            FieldError::new(
                format!("{base}/seed"),
                "range",
                format!(
                    "image {last_index} of {base}/images used seed + {last_index} = {last} \
                     (B.8), beyond 2147483647, which C# cannot hold; such a batch must report \
                     {base}/seeds"
                ),
            )
            .with_value(&Value::from(seed)),
        );
    }
    (0..count)
        .map(|i| Some(seed.saturating_add(i64::try_from(i).unwrap_or(i64::MAX))))
        .collect()
}

/// The generation time from whichever of the three synonyms is present; two present with
/// different values is an error naming both.
fn generation_time(
    facts: &GenerationFacts,
    base: &str,
    errors: &mut Vec<FieldError>,
) -> Option<f64> {
    let present: Vec<(&str, f64)> = [
        ("processing_time", facts.processing_time),
        ("total_time", facts.total_time),
        ("generation_time_seconds", facts.generation_time_seconds),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect();
    let (first_name, first) = *present.first()?;
    for (name, value) in &present[1..] {
        if *value != first {
            errors.push(
                FieldError::new(
                    format!("{base}/{name}"),
                    "conflict",
                    format!(
                        "{base}/{name} ({value}) and {base}/{first_name} ({first}) both give the \
                         generation time and disagree"
                    ),
                )
                .with_value(&Value::from(*value)),
            );
        }
    }
    Some(first)
}

fn facts_metadata(facts: &GenerationFacts) -> Map<String, Value> {
    let mut metadata = Map::new();
    if let Some(model) = &facts.model_used {
        metadata.insert("model_used".into(), Value::String(model.clone()));
    }
    if let Some(scheduler) = &facts.scheduler {
        metadata.insert("scheduler".into(), Value::String(scheduler.clone()));
    }
    if let Some(guidance) = facts.guidance_scale {
        metadata.insert("guidance_scale".into(), Value::from(guidance));
    }
    metadata
}

fn metrics(generation_time: Option<f64>, inference_steps: Option<u32>) -> CsharpMetrics {
    CsharpMetrics {
        generation_time_seconds: generation_time,
        load_time_seconds: None,
        preprocessing_time_seconds: None,
        postprocessing_time_seconds: None,
        inference_steps,
        pipeline_type: Some(PIPELINE_TYPE.to_owned()),
        memory_usage: None,
    }
}

fn internal(message: String) -> Errors {
    FieldError::new("", "internal", message).into()
}

/// In debug builds every mapped response is checked against the csharp-response schema; a
/// violation is a bug of this module, returned as an `internal` error rather than a panic.
fn check_response(response: &CsharpResponse) -> Result<()> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let value = response.to_value()?;
    Schema::CsharpResponse.validate(&value).map_err(|e| Errors {
        errors: e
            .errors
            .into_iter()
            .map(|v| {
                FieldError::new(
                    "",
                    "internal",
                    format!(
                        "the mapped C# response breaks the csharp-response schema at {:?}: {}",
                        v.path, v.message
                    ),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_names_use_both_separators() {
        assert_eq!(file_name("/out/run 1/a.png"), "a.png");
        assert_eq!(file_name("C:\\out\\b.png"), "b.png");
        assert_eq!(file_name("mixed\\dir/c.png"), "c.png");
        assert_eq!(file_name("plain.png"), "plain.png");
    }

    #[test]
    fn every_documented_shape_example_maps_as_that_shape() {
        for doc in REPLY_SHAPES {
            let reply: Value = serde_json::from_str(doc.example).expect("example is JSON");
            assert!(Schema::PythonReply.is_valid(&reply), "{}", doc.shape.name());
            assert_eq!(ReplyShape::detect(&reply), Some(doc.shape));
            let mapping = map_reply(&reply).expect("example maps");
            assert_eq!(mapping.report.shape, doc.shape);
            assert_eq!(mapping.response.success, doc.shape != ReplyShape::Error);
        }
    }

    #[test]
    fn integral_floats_are_integers() {
        let reply = json!({"success": true, "output_path": "a.png", "seed": 7.0, "width": 1024.0});
        let mapping = map_reply(&reply).expect("maps");
        assert_eq!(mapping.response.images[0].seed, Some(7));
        assert_eq!(mapping.response.images[0].width, Some(1024));
    }

    #[test]
    fn flattened_facts_are_not_reported_as_unknown() {
        let reply = json!({"success": true, "output_path": "a.png", "scheduler": "DDIMScheduler",
                           "odd": 1});
        let mapping = map_reply(&reply).expect("maps");
        assert!(mapping.report.reported.is_empty());
        let paths: Vec<&str> = mapping
            .report
            .warnings
            .iter()
            .map(|w| w.path.as_str())
            .collect();
        assert_eq!(paths, ["/odd"]);
    }

    #[test]
    fn every_shape_validator_compiles() {
        for shape in ReplyShape::ALL {
            let _ = shape_validator(shape);
        }
    }
}
