//! C# → Python v2 (PROTOCOL B.2–B.6): one function per C# section, strict values (B.3), every
//! field mapped, defaulted or reported.

use std::fmt;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{json, Value};

use crate::csharp::{
    self, Action, Body, CsMessage, CsRequest, Dialect, Locations, PromptWeighting,
};
use crate::error::{parse_document, parse_text_hashed, utf8, Errors, FieldError, Result};
use crate::flat::Flat;
use crate::json::{content_hash, Json};
use crate::python::{self, Data, Envelope, InferenceData};
use crate::read::Ctx;
use crate::report::{DefaultApplied, Mapped, MappingReport, Reported};
use crate::{commands, schedulers, Schema};

/// The C# side's documented defaults for fields a request may leave out.
pub mod defaults {
    pub const STEPS: u32 = 25;
    pub const GUIDANCE_SCALE: f64 = 7.5;
    pub const WIDTH: u32 = 1024;
    pub const HEIGHT: u32 = 1024;
    pub const SEED: i64 = -1;
    pub const BATCH_SIZE: u32 = 1;
    pub const OUTPUT_FORMAT: &str = "png";
    pub const QUALITY: u32 = 95;
    /// diffusers' `controlnet_conditioning_scale`, `control_guidance_start`/`_end` defaults.
    pub const CONTROLNET_SCALE: f64 = 1.0;
    pub const CONTROLNET_START: f64 = 0.0;
    pub const CONTROLNET_END: f64 = 1.0;
    /// diffusers' `set_adapters` weight default.
    pub const LORA_WEIGHT: f64 = 1.0;
}

/// Limits of PROTOCOL B.3.
pub mod limits {
    pub const PROMPT_MAX_CHARS: usize = 2000;
    pub const STEPS: (i64, i64) = (1, 150);
    pub const GUIDANCE: (f64, f64) = (1.0, 30.0);
    pub const STRENGTH: (f64, f64) = (0.0, 1.0);
    pub const SEED_MAX: i64 = 2_147_483_647;
    pub const SIZE: (i64, i64) = (256, 2048);
    pub const SIZE_MULTIPLE: i64 = 8;
    pub const BATCH: (i64, i64) = (1, 8);
    pub const LORA_WEIGHT: (f64, f64) = (-2.0, 2.0);
    pub const CONTROLNET_WEIGHT: (f64, f64) = (0.0, 2.0);
    pub const QUALITY: (i64, i64) = (1, 100);
    pub const UPSCALE_FACTOR: (f64, f64) = (1.0, 8.0);
}

/// Options of a mapping run.
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// The `request_id` to use when the message carries no `session_id`. When unset, one is
    /// derived from the message's content (16 hex digits), so the mapping stays a pure function.
    pub request_id: Option<String>,
}

/// A mapped message: the Python v2 envelope and what became of each field.
///
/// The message is kept as the mapping made it ([`python::Message`], already checked against the
/// v2 schema); its [`Envelope`] (with `data` as a `Value`) is built when first asked for, and
/// [`Mapping::write_json`] writes the JSON text without it. `'a`: the input, which a
/// [`transform_request`] mapping borrows for its report (see [`Report`]).
pub struct Mapping<'a> {
    typed: python::Message,
    envelope: OnceLock<Envelope>,
    /// The mapping report; [`transform_request`] builds it when first read.
    pub report: Report<'a>,
}

impl<'a> Mapping<'a> {
    fn new(typed: python::Message, report: Report<'a>) -> Mapping<'a> {
        Mapping {
            typed,
            envelope: OnceLock::new(),
            report,
        }
    }

    /// The Python v2 envelope (built now if it was not).
    pub fn message(&self) -> &Envelope {
        self.envelope
            .get_or_init(|| self.typed.clone().into_envelope())
    }

    /// The Python v2 envelope, owned.
    pub fn into_message(self) -> Envelope {
        match self.envelope.into_inner() {
            Some(envelope) => envelope,
            None => self.typed.into_envelope(),
        }
    }

    /// The message as the mapping made it (`data` typed).
    pub fn typed(&self) -> &python::Message {
        &self.typed
    }

    pub fn message_json(&self) -> Value {
        serde_json::to_value(self.message()).unwrap_or(Value::Null)
    }

    /// Writes the message's JSON text (the same text as serialising [`Mapping::message`]),
    /// compact or pretty, without building its `Value`.
    pub fn write_json<W: std::io::Write>(&self, writer: W, pretty: bool) -> serde_json::Result<()> {
        if pretty {
            serde_json::to_writer_pretty(writer, &self.typed)
        } else {
            serde_json::to_writer(writer, &self.typed)
        }
    }
}

impl Clone for Mapping<'_> {
    fn clone(&self) -> Self {
        Mapping {
            typed: self.typed.clone(),
            envelope: self.envelope.clone(),
            report: self.report.clone(),
        }
    }
}

impl PartialEq for Mapping<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.typed == other.typed && self.report == other.report
    }
}

impl fmt::Debug for Mapping<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("message", self.message())
            .field("report", &self.report)
            .finish()
    }
}

/// A [`MappingReport`] that may be built on first use: reads as the report itself (`Deref`,
/// `Serialize`, equality), the same report in every way as one built with the message.
///
/// The report names every field of the message with its JSON Pointers, most of the work of a
/// mapping; a caller that only forwards the message never reads it. [`transform_request`] keeps
/// the input and, when the report is first read, maps it once more recording everything: the
/// mapping is a pure function of the input and the options, so it is the same report. Until
/// then it borrows the input (`'a`): copying it would be a fair part of a mapping's cost.
pub struct Report<'a> {
    report: OnceLock<MappingReport>,
    /// The input and options to map again, when not built yet.
    source: Option<(&'a [u8], MapOptions)>,
}

impl<'a> Report<'a> {
    /// A report already built.
    pub fn ready(report: MappingReport) -> Self {
        Report {
            report: OnceLock::from(report),
            source: None,
        }
    }

    fn deferred(bytes: &'a [u8], options: &MapOptions) -> Self {
        Report {
            report: OnceLock::new(),
            source: Some((bytes, options.clone())),
        }
    }

    /// The report (built now if it was not).
    pub fn get(&self) -> &MappingReport {
        self.report.get_or_init(|| {
            let Some(source) = &self.source else {
                return MappingReport::default();
            };
            let (bytes, options) = source;
            // The input mapped before; mapping it again, recording, gives the same result.
            let mapped =
                parse_document(bytes).and_then(|input| map_document(&input, None, options, true));
            debug_assert!(mapped.is_ok(), "a mapped input maps again");
            mapped.map(|(_, report)| report).unwrap_or_default()
        })
    }

    /// The report, owned.
    pub fn into_inner(self) -> MappingReport {
        self.get();
        self.report.into_inner().unwrap_or_default()
    }
}

impl std::ops::Deref for Report<'_> {
    type Target = MappingReport;

    fn deref(&self) -> &MappingReport {
        self.get()
    }
}

impl From<MappingReport> for Report<'_> {
    fn from(report: MappingReport) -> Self {
        Report::ready(report)
    }
}

impl Clone for Report<'_> {
    fn clone(&self) -> Self {
        Report::ready(self.get().clone())
    }
}

impl PartialEq for Report<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl serde::Serialize for Report<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

/// Bytes in (any accepted C# message), Python v2 out.
///
/// The input is mapped without recording where each field came from; the report is built when
/// first read (see [`Report`]). The usual HTTP body is read straight from its text, without
/// building its document (`csharp::http_body`); anything else, or an input with errors, is
/// parsed into its document and read fully. An input with errors is mapped a second time,
/// recording, for the errors' paths.
pub fn transform_request<'a>(bytes: &'a [u8], options: &MapOptions) -> Result<Mapping<'a>> {
    let text = utf8(bytes)?;
    // Whether the mapping without recording was tried (and found errors).
    let mut failed = false;
    if let Some((request, hash)) = csharp::http_body(text) {
        let message = CsMessage::http_body(request, Locations::new());
        match map_message(Ctx::unrecorded(), message, || hash, options) {
            Ok((message, _)) => return Ok(Mapping::new(message, Report::deferred(bytes, options))),
            Err(_) => failed = true,
        }
    }
    let (input, compact_hash) = parse_text_hashed(text)?;
    if !failed {
        if let Ok((message, _)) = map_document(&input, compact_hash, options, false) {
            return Ok(Mapping::new(message, Report::deferred(bytes, options)));
        }
    }
    let (message, report) = map_document(&input, compact_hash, options, true)?;
    Ok(Mapping::new(message, Report::ready(report)))
}

/// Maps one C# message to the Python v2 envelope; all errors of the message at once.
pub fn map_request(input: &Value, options: &MapOptions) -> Result<Mapping<'static>> {
    let (message, report) = map_document(&Json::from_value(input), None, options, true)?;
    Ok(Mapping::new(message, Report::ready(report)))
}

/// The mapping of a parsed message. `compact_hash`: its [`content_hash`], if
/// known (taken while parsing). `record`: build the report and the errors' paths; without, the
/// report is empty and an error only says that there are errors (map again, recording).
fn map_document(
    input: &Json<'_>,
    compact_hash: Option<u64>,
    options: &MapOptions,
    record: bool,
) -> Result<(python::Message, MappingReport)> {
    let mut ctx = if record {
        Ctx::default()
    } else {
        Ctx::unrecorded()
    };
    let parsed = csharp::parse_document(&mut ctx, input);
    let Some(message) = parsed else {
        return Err(Errors { errors: ctx.errors });
    };
    map_message(
        ctx,
        message,
        || compact_hash.unwrap_or_else(|| content_hash(input)),
        options,
    )
}

/// The mapping of a C# message read with `ctx` (which says whether to record). `content_hash`:
/// the input's [`content_hash`], asked for when the request id is derived.
fn map_message(
    ctx: Ctx,
    mut message: CsMessage,
    content_hash: impl FnOnce() -> u64,
    options: &MapOptions,
) -> Result<(python::Message, MappingReport)> {
    let record = ctx.record;
    let command = commands::by_action(message.action);
    let mut mapper = Mapper {
        ctx,
        locations: &message.locations,
        report: MappingReport {
            dialect: message.dialect.name(),
            action: command.action,
            message_type: command.message_type,
            // Sized for a full generate request, so the report does not regrow while filling.
            mapped: Vec::with_capacity(if record { message.locations.len() } else { 0 }),
            defaults: Vec::with_capacity(if record { 16 } else { 0 }),
            ..MappingReport::default()
        },
        dialect: message.dialect,
    };
    let request_id = mapper.request_id(&message, content_hash, options);
    let data = mapper.map_body(&mut message.body, message.action, &request_id);
    let Mapper {
        ctx, mut report, ..
    } = mapper;
    if !ctx.errors.is_empty() {
        return Err(Errors {
            errors: without_redundant_required(ctx.errors),
        });
    }
    report.warnings = ctx.warnings;
    let message = python::Message {
        message_type: command.message_type,
        request_id,
        data,
    };
    // The output must satisfy the v2 schema; a failure here is a bug of this crate, reported
    // as such instead of sending an invalid message on. Checked on its flat document (no
    // `Value`); only a failure builds the `Value`, for the schema's own error messages.
    let valid = is_valid_output(&message);
    if !valid {
        return Err(output_violates_schema(&message));
    }
    Ok((message, report))
}

thread_local! {
    /// The flat document of the last message validated on this thread, its buffers kept for
    /// the next one.
    static OUTPUT: std::cell::RefCell<Flat> = std::cell::RefCell::new(Flat::default());
}

/// Whether the mapped message satisfies the v2 schema, checked on its flat document.
fn is_valid_output(message: &python::Message) -> bool {
    let check = |flat: &mut Flat| {
        flat.rewrite(message).is_ok() && Schema::PythonRequest.is_valid_flat(flat)
    };
    OUTPUT.with(|kept| match kept.try_borrow_mut() {
        Ok(mut flat) => check(&mut flat),
        // Not while it is in use (validation does not map again): a document of its own.
        Err(_) => check(&mut Flat::default()),
    })
}

/// The errors of a mapped message that fails the v2 schema (a bug of this crate).
#[cold]
fn output_violates_schema(message: &python::Message) -> Errors {
    let json = serde_json::to_value(message).unwrap_or(Value::Null);
    let errors = match Schema::PythonRequest.validate(&json) {
        Err(errors) => errors.errors,
        Ok(()) => vec![FieldError::new(
            "",
            "schema",
            "its flat document fails the v2 schema, its Value passes",
        )],
    };
    Errors {
        errors: errors
            .into_iter()
            .map(|mut e| {
                e.rule = "internal";
                e.message = format!(
                    "mapped output violates the v2 schema at {}: {}",
                    e.path, e.message
                );
                e.path = String::new();
                e
            })
            .collect(),
    }
}

struct Mapper<'m> {
    ctx: Ctx,
    locations: &'m Locations,
    report: MappingReport,
    dialect: Dialect,
}

/// An input value together with the canonical field it belongs to.
type Field<'v, 's, T> = (Option<&'v T>, &'s str);

impl Mapper<'_> {
    // ---- bookkeeping -------------------------------------------------------------------

    /// Where a canonical field is in the input (its canonical pointer when absent).
    fn loc(&self, canonical: &str) -> String {
        match self.locations.get(canonical) {
            Some(path) => path.clone(),
            None => self.absent_path(canonical),
        }
    }

    /// The pointer a missing field would have had in this message's dialect.
    fn absent_path(&self, canonical: &str) -> String {
        let prefix = match self.dialect {
            Dialect::HttpBody | Dialect::Action => "",
            Dialect::ActionRequest => "/request",
            Dialect::ActionRequestData => "/request_data",
            Dialect::ActionParameters => {
                return match crate::csharp::GENERATE_IMAGE_PARAMETERS
                    .iter()
                    .find(|(_, c)| *c == canonical)
                {
                    Some((parameter, _)) => format!("/parameters/{parameter}"),
                    None => format!("/parameters{canonical}"),
                };
            }
        };
        format!("{prefix}{canonical}")
    }

    /// A pointer built from its parts, or an empty string when not recording (it then only
    /// serves errors, which a recording pass reports again).
    fn path(&self, parts: fmt::Arguments<'_>) -> String {
        if self.ctx.record {
            parts.to_string()
        } else {
            String::new()
        }
    }

    fn mapped(&mut self, canonical: &str, to: fmt::Arguments<'_>) {
        if !self.ctx.record {
            return;
        }
        if let Some(from) = self.locations.get(canonical) {
            self.report.mapped.push(Mapped {
                from: from.clone(),
                to: to.to_string(),
            });
        }
    }

    fn defaulted<T: Serialize + ?Sized>(
        &mut self,
        to: fmt::Arguments<'_>,
        value: &T,
        reason: &'static str,
    ) {
        if !self.ctx.record {
            return;
        }
        self.report.defaults.push(DefaultApplied {
            to: to.to_string(),
            value: json!(value),
            reason,
        });
    }

    fn reported<T: Serialize + ?Sized>(
        &mut self,
        canonical: &str,
        value: &T,
        reason: &'static str,
    ) {
        if !self.ctx.record {
            return;
        }
        if let Some(path) = self.locations.get(canonical) {
            self.report.reported.push(Reported {
                path: path.clone(),
                value: json!(value),
                reason,
            });
        }
    }

    fn error(
        &mut self,
        canonical: &str,
        rule: &'static str,
        message: String,
        value: Option<Value>,
    ) {
        let mut error = FieldError::new(self.loc(canonical), rule, message);
        if let Some(value) = value {
            error = error.with_value(&value);
        }
        self.ctx.error(error);
    }

    /// One value that two shapes of the request may carry; both present and different is an
    /// error naming both paths (PROTOCOL B.1).
    fn either<'v, T: PartialEq + serde::Serialize>(
        &mut self,
        a: Field<'v, '_, T>,
        b: Field<'v, '_, T>,
        to: fmt::Arguments<'_>,
    ) -> Option<&'v T> {
        match (a.0, b.0) {
            (Some(x), Some(y)) => {
                if x != y {
                    let (pa, pb) = (self.loc(a.1), self.loc(b.1));
                    self.ctx.error(
                        FieldError::new(
                            pb.clone(),
                            "conflict",
                            format!("{pa} and {pb} both set this field, to different values"),
                        )
                        .with_value(&json!([x, y])),
                    );
                }
                self.mapped(a.1, to);
                self.mapped(b.1, to);
                Some(x)
            }
            (Some(x), None) => {
                self.mapped(a.1, to);
                Some(x)
            }
            (None, Some(y)) => {
                self.mapped(b.1, to);
                Some(y)
            }
            (None, None) => None,
        }
    }

    fn int_range(&mut self, canonical: &str, value: i64, (lo, hi): (i64, i64)) -> bool {
        if value < lo || value > hi {
            self.error(
                canonical,
                "range",
                format!("must be between {lo} and {hi}"),
                Some(json!(value)),
            );
            return false;
        }
        true
    }

    fn num_range(&mut self, canonical: &str, value: f64, (lo, hi): (f64, f64)) -> bool {
        if !(lo..=hi).contains(&value) {
            self.error(
                canonical,
                "range",
                format!("must be between {lo:?} and {hi:?}"),
                Some(json!(value)),
            );
            return false;
        }
        true
    }

    fn text(&mut self, canonical: &str, value: &str, required_non_blank: bool) {
        if required_non_blank && value.trim().is_empty() {
            self.error(
                canonical,
                "blank",
                "must not be empty or only whitespace".into(),
                Some(json!(value)),
            );
        }
        // A text of at most that many bytes has at most that many characters: counted only
        // when longer.
        let chars = if value.len() > limits::PROMPT_MAX_CHARS {
            value.chars().count()
        } else {
            value.len()
        };
        if chars > limits::PROMPT_MAX_CHARS {
            self.error(
                canonical,
                "max_length",
                format!(
                    "{chars} characters; at most {} allowed",
                    limits::PROMPT_MAX_CHARS
                ),
                Some(json!(value)),
            );
        }
    }

    fn request_id(
        &mut self,
        message: &CsMessage,
        content_hash: impl FnOnce() -> u64,
        options: &MapOptions,
    ) -> String {
        if let Some(session_id) = &message.session_id {
            self.mapped("/session_id", format_args!("/request_id"));
            return session_id.clone();
        }
        if let Some(id) = &options.request_id {
            return id.clone();
        }
        let id = content_id(content_hash());
        self.defaulted(
            format_args!("/request_id"),
            &id,
            "no session_id in the message: derived from its content (XXH3-64 of its compact JSON), so equal messages map equally",
        );
        id
    }

    // ---- messages ----------------------------------------------------------------------

    /// The message's `data`. Strings of the request are moved into it (the request is not used
    /// after this).
    fn map_body(&mut self, body: &mut Body, action: Action, request_id: &str) -> Data {
        Data::Json(match body {
            Body::Generate(request) => {
                return Data::Inference(Box::new(
                    self.inference(request, request_id, "/data", action),
                ));
            }
            Body::ValidateRequest(request) => {
                return Data::ValidateRequest(Box::new(self.inference(
                    request,
                    request_id,
                    "/data/request",
                    action,
                )));
            }
            Body::Initialize {
                device_index,
                device_id,
            } => {
                let mut data = serde_json::Map::new();
                if let Some(index) = device_index {
                    self.mapped("/device_index", format_args!("/data/device_index"));
                    if *index < 0 {
                        self.error(
                            "/device_index",
                            "range",
                            "must be 0 or more".into(),
                            Some(json!(index)),
                        );
                    }
                    data.insert("device_index".into(), json!(index));
                }
                if let Some(id) = device_id {
                    self.mapped("/device_id", format_args!("/data/device_id"));
                    data.insert("device_id".into(), json!(id));
                }
                Value::Object(data)
            }
            Body::LoadModel {
                model_path,
                model_type,
                model_id,
            } => {
                let mut data = serde_json::Map::new();
                match model_path {
                    Some(path) if !path.trim().is_empty() => {
                        self.mapped("/model_path", format_args!("/data/model_path"));
                        data.insert("model_path".into(), json!(path));
                    }
                    Some(path) => self.error(
                        "/model_path",
                        "blank",
                        "must not be empty".into(),
                        Some(json!(path)),
                    ),
                    None => self.error(
                        "/model_path",
                        "required",
                        "`load_model` needs `model_path`".into(),
                        None,
                    ),
                }
                if let Some(kind) = model_type {
                    self.mapped("/model_type", format_args!("/data/model_type"));
                    data.insert("model_type".into(), json!(kind));
                }
                if let Some(id) = model_id {
                    self.mapped("/model_id", format_args!("/data/model_id"));
                    data.insert("model_id".into(), json!(id));
                }
                Value::Object(data)
            }
            Body::UnloadModel { model_id } => {
                let mut data = serde_json::Map::new();
                if let Some(id) = model_id {
                    self.mapped("/model_id", format_args!("/data/model_id"));
                    data.insert("model_id".into(), json!(id));
                }
                Value::Object(data)
            }
            Body::NoFields => json!({}),
        })
    }

    /// The `generate_sdxl_enhanced` request (or `generate_image`'s parameters) → `data`.
    fn inference(
        &mut self,
        r: &mut CsRequest,
        request_id: &str,
        out: &str,
        action: Action,
    ) -> InferenceData {
        let h = &mut r.hyperparameters;
        let c = &mut r.conditioning;
        let prompt = self
            .either(
                (c.prompt.as_ref(), "/conditioning/prompt"),
                (h.prompt.as_ref(), "/hyperparameters/prompt"),
                format_args!("{out}/prompt"),
            )
            .is_some();
        let from_conditioning = c.prompt.is_some();
        let prompt = prompt.then(|| take_either(&mut c.prompt, &mut h.prompt));
        let prompt = match prompt.flatten() {
            Some(p) => {
                let canonical = if from_conditioning {
                    "/conditioning/prompt"
                } else {
                    "/hyperparameters/prompt"
                };
                self.text(canonical, &p, true);
                p
            }
            None => {
                self.error(
                    "/conditioning/prompt",
                    "required",
                    "a prompt is required".into(),
                    None,
                );
                String::new()
            }
        };
        let negative_prompt = self
            .either(
                (c.negative_prompt.as_ref(), "/conditioning/negativePrompt"),
                (
                    h.negative_prompt.as_ref(),
                    "/hyperparameters/negativePrompt",
                ),
                format_args!("{out}/negative_prompt"),
            )
            .is_some();
        let from_conditioning = c.negative_prompt.is_some();
        let negative_prompt = negative_prompt
            .then(|| take_either(&mut c.negative_prompt, &mut h.negative_prompt))
            .flatten();
        if let Some(n) = &negative_prompt {
            let canonical = if from_conditioning {
                "/conditioning/negativePrompt"
            } else {
                "/hyperparameters/negativePrompt"
            };
            self.text(canonical, n, false);
        }
        let (model_name, models) = self.models(r, out, action);
        let hyperparameters = self.hyperparameters(r, out);
        let dimensions = self.dimensions(r, out);
        let (scheduler, scheduler_options) = self.scheduler(r, out);
        let lora = self.loras(r, out);
        let controlnets = self.control_nets(r, out);
        let controlnet = controlnets
            .as_ref()
            .and_then(|units| units.first().cloned());
        let textual_inversions = self.textual_inversions(r, out);
        let prompt_attention = self.prompt_attention(r, out);
        let (init_image, mask_image) = self.images(r, out);
        let output = self.output(r, out);
        let batch = self.batch(r, out);
        let precision = self.precision(r, out);
        self.reported_only(r);
        InferenceData {
            worker_type: "enhanced_sdxl_worker".into(),
            prompt,
            negative_prompt,
            model_name,
            hyperparameters,
            dimensions,
            scheduler,
            scheduler_options,
            models,
            lora,
            controlnet,
            controlnets,
            textual_inversions,
            clip_skip: None,
            prompt_attention,
            init_image,
            mask_image,
            refiner: None,
            output,
            batch,
            precision,
            metadata: python::Metadata {
                request_id: request_id.to_string(),
                priority: None,
                timeout: None,
                tags: None,
            },
        }
    }

    // ---- sections ----------------------------------------------------------------------

    fn models(
        &mut self,
        r: &mut CsRequest,
        out: &str,
        action: Action,
    ) -> (Option<String>, Option<python::Models>) {
        let m = &mut r.model;
        let base = match &mut m.base {
            Some(base) if !base.trim().is_empty() => {
                self.mapped("/model/base", format_args!("{out}/model_name"));
                self.mapped("/model/base", format_args!("{out}/models/base"));
                std::mem::take(base)
            }
            Some(base) => {
                self.error(
                    "/model/base",
                    "blank",
                    "the base model must not be empty".into(),
                    Some(json!(base)),
                );
                return (None, None);
            }
            None if action == Action::GenerateImage => {
                // generate_image renders with the model loaded by an earlier load_model.
                return (None, None);
            }
            None => {
                self.error(
                    "/model/base",
                    "required",
                    "the base model (`model.base`) is required".into(),
                    None,
                );
                return (None, None);
            }
        };
        let mut optional =
            |canonical: &'static str, name: &str, value: &mut Option<String>| -> Option<String> {
                match value {
                    Some(v) if !v.is_empty() => {
                        self.mapped(canonical, format_args!("{out}/models/{name}"));
                        value.take()
                    }
                    Some(v) => {
                        self.reported(
                        canonical,
                        &v,
                        "empty string: C#'s \"not set\"; the base model's own component is used",
                    );
                        None
                    }
                    None => None,
                }
            };
        let refiner = optional("/model/refiner", "refiner", &mut m.refiner);
        let vae = optional("/model/vae", "vae", &mut m.vae);
        (
            Some(base.clone()),
            Some(python::Models { base, refiner, vae }),
        )
    }

    fn hyperparameters(&mut self, r: &mut CsRequest, out: &str) -> python::Hyperparameters {
        let h = &r.hyperparameters;
        let steps = match r.scheduler.steps {
            Some(steps) => {
                self.mapped(
                    "/scheduler/steps",
                    format_args!("{out}/hyperparameters/num_inference_steps"),
                );
                self.int_range("/scheduler/steps", steps, limits::STEPS);
                steps.clamp(0, u32::MAX as i64) as u32
            }
            None => {
                self.defaulted(
                    format_args!("{out}/hyperparameters/num_inference_steps"),
                    &defaults::STEPS,
                    "C# default Steps = 25",
                );
                defaults::STEPS
            }
        };
        let guidance = self.either(
            (h.guidance_scale.as_ref(), "/hyperparameters/guidanceScale"),
            (
                r.scheduler.guidance_scale.as_ref(),
                "/scheduler/guidanceScale",
            ),
            format_args!("{out}/hyperparameters/guidance_scale"),
        );
        let guidance_scale = match guidance.copied() {
            Some(g) => {
                let canonical = if h.guidance_scale.is_some() {
                    "/hyperparameters/guidanceScale"
                } else {
                    "/scheduler/guidanceScale"
                };
                self.num_range(canonical, g, limits::GUIDANCE);
                g
            }
            None => {
                self.defaulted(
                    format_args!("{out}/hyperparameters/guidance_scale"),
                    &defaults::GUIDANCE_SCALE,
                    "C# default GuidanceScale = 7.5",
                );
                defaults::GUIDANCE_SCALE
            }
        };
        let seed = match h.seed {
            Some(seed) => {
                self.mapped(
                    "/hyperparameters/seed",
                    format_args!("{out}/hyperparameters/seed"),
                );
                if seed != -1 && !(0..=limits::SEED_MAX).contains(&seed) {
                    self.error(
                        "/hyperparameters/seed",
                        "range",
                        format!("must be -1 (random) or between 0 and {}", limits::SEED_MAX),
                        Some(json!(seed)),
                    );
                }
                seed
            }
            None => {
                self.defaulted(
                    format_args!("{out}/hyperparameters/seed"),
                    &defaults::SEED,
                    "C# Seed is int? and null/absent means random: -1, the worker picks and reports one",
                );
                defaults::SEED
            }
        };
        let strength = r.conditioning.img2img_strength.inspect(|s| {
            self.mapped(
                "/conditioning/img2ImgStrength",
                format_args!("{out}/hyperparameters/strength"),
            );
            self.num_range("/conditioning/img2ImgStrength", *s, limits::STRENGTH);
        });
        python::Hyperparameters {
            num_inference_steps: steps,
            guidance_scale,
            seed,
            strength,
        }
    }

    fn dimensions(&mut self, r: &mut CsRequest, out: &str) -> python::Dimensions {
        let mut side =
            |canonical: &'static str, name: &str, value: Option<i64>, default: u32| -> u32 {
                match value {
                    Some(v) => {
                        self.mapped(canonical, format_args!("{out}/dimensions/{name}"));
                        if self.int_range(canonical, v, limits::SIZE)
                            && v % limits::SIZE_MULTIPLE != 0
                        {
                            self.error(
                                canonical,
                                "multiple_of",
                                format!("must be a multiple of {}", limits::SIZE_MULTIPLE),
                                Some(json!(v)),
                            );
                        }
                        v.clamp(0, u32::MAX as i64) as u32
                    }
                    None => {
                        self.defaulted(
                            format_args!("{out}/dimensions/{name}"),
                            &default,
                            "C# default 1024×1024",
                        );
                        default
                    }
                }
            };
        let width = side(
            "/hyperparameters/width",
            "width",
            r.hyperparameters.width,
            defaults::WIDTH,
        );
        let height = side(
            "/hyperparameters/height",
            "height",
            r.hyperparameters.height,
            defaults::HEIGHT,
        );
        python::Dimensions { width, height }
    }

    fn scheduler(
        &mut self,
        r: &mut CsRequest,
        out: &str,
    ) -> (Option<String>, Option<python::SchedulerOptions>) {
        let s = &r.scheduler;
        let class = s.kind.as_ref().and_then(|name| {
            self.mapped("/scheduler/type", format_args!("{out}/scheduler"));
            let class = schedulers::class_for(name);
            if class.is_none() {
                self.error(
                    "/scheduler/type",
                    "unknown_scheduler",
                    format!(
                        "unknown scheduler `{name}`; accepted names (any casing): {}",
                        schedulers::accepted_names().join(", ")
                    ),
                    Some(json!(name)),
                );
            }
            class.map(str::to_string)
        });
        let mut options = python::SchedulerOptions::default();
        if let Some(karras) = s.use_karras_sigmas {
            self.mapped(
                "/scheduler/useKarrasSigmas",
                format_args!("{out}/scheduler_options/use_karras_sigmas"),
            );
            options.use_karras_sigmas = Some(karras);
        }
        if let Some(spacing) = &s.timestep_spacing {
            self.mapped(
                "/scheduler/timestepSpacing",
                format_args!("{out}/scheduler_options/timestep_spacing"),
            );
            let lower = spacing.to_ascii_lowercase();
            if python::TIMESTEP_SPACINGS.contains(&lower.as_str()) {
                options.timestep_spacing = Some(lower);
            } else {
                self.error(
                    "/scheduler/timestepSpacing",
                    "enum",
                    format!("must be one of {}", python::TIMESTEP_SPACINGS.join(", ")),
                    Some(json!(spacing)),
                );
            }
        }
        let options = (options != python::SchedulerOptions::default()).then_some(options);
        (class, options)
    }

    fn loras(&mut self, r: &mut CsRequest, out: &str) -> Option<python::Lora> {
        let loras = r.conditioning.loras.as_mut()?;
        let mut models = Vec::with_capacity(loras.len());
        for (i, lora) in loras.iter_mut().enumerate() {
            let base = self.path(format_args!("/conditioning/loras/{i}"));
            let to = self.path(format_args!("{out}/lora/models/{i}"));
            let name_at = &self.path(format_args!("{base}/name"));
            let path_at = &self.path(format_args!("{base}/modelPath"));
            let name = self.either(
                (lora.name.as_ref(), name_at),
                (lora.model_path.as_ref(), path_at),
                format_args!("{to}/name"),
            );
            let name = match name {
                Some(n) if !n.trim().is_empty() => {
                    take_either(&mut lora.name, &mut lora.model_path).unwrap_or_default()
                }
                Some(n) => {
                    let at = if lora.name.is_some() {
                        name_at
                    } else {
                        path_at
                    };
                    self.error(
                        at,
                        "blank",
                        "a LoRA needs a non-empty name or model path".into(),
                        Some(json!(n)),
                    );
                    String::new()
                }
                None => {
                    self.error(
                        name_at,
                        "required",
                        "a LoRA needs `name` (or `modelPath`)".into(),
                        None,
                    );
                    String::new()
                }
            };
            let scale_at = &self.path(format_args!("{base}/scale"));
            let weight_at = &self.path(format_args!("{base}/weight"));
            let weight = match self.either(
                (lora.scale.as_ref(), scale_at),
                (lora.weight.as_ref(), weight_at),
                format_args!("{to}/weight"),
            ) {
                Some(w) => {
                    let at = if lora.scale.is_some() {
                        scale_at
                    } else {
                        weight_at
                    };
                    self.num_range(at, *w, limits::LORA_WEIGHT);
                    *w
                }
                None => {
                    self.defaulted(
                        format_args!("{to}/weight"),
                        &defaults::LORA_WEIGHT,
                        "no scale given: diffusers' adapter weight default 1.0",
                    );
                    defaults::LORA_WEIGHT
                }
            };
            let adapter_name = lora.adapter_name.take().inspect(|_| {
                self.mapped(
                    &self.path(format_args!("{base}/adapterName")),
                    format_args!("{to}/adapter_name"),
                );
            });
            models.push(python::LoraModel {
                name,
                weight,
                adapter_name,
            });
        }
        Some(python::Lora {
            enabled: !models.is_empty(),
            models,
        })
    }

    fn control_nets(
        &mut self,
        r: &mut CsRequest,
        out: &str,
    ) -> Option<Vec<python::ControlNetUnit>> {
        let units = r.conditioning.control_nets.as_mut()?;
        let mut mapped = Vec::with_capacity(units.len());
        for (i, unit) in units.iter_mut().enumerate() {
            let base = self.path(format_args!("/conditioning/controlNets/{i}"));
            let to = self.path(format_args!("{out}/controlnets/{i}"));
            let image_at = &self.path(format_args!("{base}/image"));
            let cond_at = &self.path(format_args!("{base}/conditioningImage"));
            let image = match self.either(
                (unit.image.as_ref(), image_at),
                (unit.conditioning_image.as_ref(), cond_at),
                format_args!("{to}/control_image"),
            ) {
                Some(img) if !img.trim().is_empty() => {
                    take_either(&mut unit.image, &mut unit.conditioning_image).unwrap_or_default()
                }
                Some(img) => {
                    let at = if unit.image.is_some() {
                        image_at
                    } else {
                        cond_at
                    };
                    self.error(
                        at,
                        "blank",
                        "a ControlNet unit needs a conditioning image (path or base64)".into(),
                        Some(json!(img)),
                    );
                    String::new()
                }
                None => {
                    self.error(image_at, "required", "a ControlNet unit needs a conditioning image (`image` or `conditioningImage`)".into(), None);
                    String::new()
                }
            };
            let kind = unit.kind.take().inspect(|_| {
                self.mapped(
                    &self.path(format_args!("{base}/type")),
                    format_args!("{to}/type"),
                )
            });
            let model_path = unit.model_path.take().inspect(|_| {
                self.mapped(
                    &self.path(format_args!("{base}/modelPath")),
                    format_args!("{to}/model_path"),
                )
            });
            if kind.is_none() && model_path.is_none() {
                self.error(
                    &self.path(format_args!("{base}/type")),
                    "required",
                    "a ControlNet unit needs `type` or `modelPath`".into(),
                    None,
                );
            }
            let mut number = |name: &str,
                              py: &str,
                              value: Option<f64>,
                              default: f64,
                              reason: &'static str|
             -> f64 {
                match value {
                    Some(v) => {
                        self.mapped(
                            &self.path(format_args!("{base}/{name}")),
                            format_args!("{to}/{py}"),
                        );
                        v
                    }
                    None => {
                        self.defaulted(format_args!("{to}/{py}"), &default, reason);
                        default
                    }
                }
            };
            let scale = number(
                "weight",
                "conditioning_scale",
                unit.weight,
                defaults::CONTROLNET_SCALE,
                "diffusers' controlnet_conditioning_scale default 1.0",
            );
            let start = number(
                "guidanceStart",
                "guidance_start",
                unit.guidance_start,
                defaults::CONTROLNET_START,
                "diffusers' control_guidance_start default 0.0",
            );
            let end = number(
                "guidanceEnd",
                "guidance_end",
                unit.guidance_end,
                defaults::CONTROLNET_END,
                "diffusers' control_guidance_end default 1.0",
            );
            self.num_range(
                &self.path(format_args!("{base}/weight")),
                scale,
                limits::CONTROLNET_WEIGHT,
            );
            let start_ok = self.num_range(
                &self.path(format_args!("{base}/guidanceStart")),
                start,
                (0.0, 1.0),
            );
            let end_ok = self.num_range(
                &self.path(format_args!("{base}/guidanceEnd")),
                end,
                (0.0, 1.0),
            );
            if start_ok && end_ok && start >= end {
                self.error(
                    &self.path(format_args!("{base}/guidanceEnd")),
                    "order",
                    format!("guidanceStart ({start}) must be less than guidanceEnd ({end})"),
                    Some(json!(end)),
                );
            }
            mapped.push(python::ControlNetUnit {
                enabled: true,
                kind,
                model_path,
                conditioning_scale: scale,
                control_image: image,
                guidance_start: start,
                guidance_end: end,
                preprocessor: None,
            });
        }
        if !mapped.is_empty() && self.ctx.record {
            // v1 workers read only `controlnet`: the first unit, repeated there.
            let path = self.loc("/conditioning/controlNets/0");
            self.ctx.warn(
                path,
                format!(
                    "also sent as {out}/controlnet for v1 workers, which read only the first unit"
                ),
            );
        }
        Some(mapped)
    }

    fn textual_inversions(
        &mut self,
        r: &mut CsRequest,
        out: &str,
    ) -> Option<Vec<python::TextualInversion>> {
        let items = r.conditioning.textual_inversions.as_mut()?;
        let mut mapped = Vec::with_capacity(items.len());
        for (i, ti) in items.iter_mut().enumerate() {
            let base = self.path(format_args!("/conditioning/textualInversions/{i}"));
            let to = self.path(format_args!("{out}/textual_inversions/{i}"));
            let path = match &mut ti.path {
                Some(p) if !p.trim().is_empty() => {
                    let p = std::mem::take(p);
                    self.mapped(
                        &self.path(format_args!("{base}/path")),
                        format_args!("{to}/path"),
                    );
                    p
                }
                Some(p) => {
                    self.error(
                        &self.path(format_args!("{base}/path")),
                        "blank",
                        "a textual inversion needs a file path".into(),
                        Some(json!(p)),
                    );
                    String::new()
                }
                None => {
                    self.error(
                        &self.path(format_args!("{base}/path")),
                        "required",
                        "a textual inversion needs `path`".into(),
                        None,
                    );
                    String::new()
                }
            };
            let token = ti.token.take().inspect(|_| {
                self.mapped(
                    &self.path(format_args!("{base}/token")),
                    format_args!("{to}/token"),
                )
            });
            mapped.push(python::TextualInversion { token, path });
        }
        Some(mapped)
    }

    fn prompt_attention(&mut self, r: &mut CsRequest, out: &str) -> Option<String> {
        let weighting = r.hyperparameters.prompt_weighting.as_ref()?;
        self.mapped(
            "/hyperparameters/promptWeighting",
            format_args!("{out}/prompt_attention"),
        );
        match weighting {
            // C#'s PromptWeighting is a boolean: true selects compel's syntax (what diffusers
            // users mean by prompt weighting), false none.
            PromptWeighting::Enabled(true) => Some("compel".into()),
            PromptWeighting::Enabled(false) => Some("none".into()),
            PromptWeighting::Syntax(name) => {
                let lower = name.to_ascii_lowercase();
                if python::PROMPT_ATTENTION.contains(&lower.as_str()) {
                    Some(lower)
                } else {
                    self.error(
                        "/hyperparameters/promptWeighting",
                        "enum",
                        format!(
                            "must be a boolean or one of {}",
                            python::PROMPT_ATTENTION.join(", ")
                        ),
                        Some(json!(name)),
                    );
                    None
                }
            }
        }
    }

    fn images(&mut self, r: &mut CsRequest, out: &str) -> (Option<String>, Option<String>) {
        let c = &mut r.conditioning;
        let mut image =
            |canonical: &'static str, name: &str, value: &mut Option<String>| match value {
                Some(v) if !v.is_empty() => {
                    self.mapped(canonical, format_args!("{out}/{name}"));
                    value.take()
                }
                Some(v) => {
                    self.reported(canonical, &v, "empty string: C#'s \"no image\"");
                    None
                }
                None => None,
            };
        let init = image("/conditioning/initImage", "init_image", &mut c.init_image);
        let mask = image(
            "/conditioning/inpaintMask",
            "mask_image",
            &mut c.inpaint_mask,
        );
        if mask.is_some() && init.is_none() {
            self.error(
                "/conditioning/inpaintMask",
                "requires",
                "an inpaint mask needs an init image (`initImage`)".into(),
                None,
            );
        }
        (init, mask)
    }

    fn output(&mut self, r: &mut CsRequest, out: &str) -> python::Output {
        let pp = &r.postprocessing;
        let o = &r.output;
        // Both shapes are normalised first ("PNG" and "png" agree), then compared.
        let pp_format = pp
            .output_format
            .as_ref()
            .and_then(|f| self.output_format("/postprocessing/outputFormat", f));
        let o_format = o
            .format
            .as_ref()
            .and_then(|f| self.output_format("/output/format", f));
        let format = match self
            .either(
                (pp_format.as_ref(), "/postprocessing/outputFormat"),
                (o_format.as_ref(), "/output/format"),
                format_args!("{out}/output/format"),
            )
            .is_some()
        {
            true => pp_format.or(o_format).unwrap_or_default(),
            false => {
                if pp.output_format.is_none() && o.format.is_none() {
                    self.defaulted(
                        format_args!("{out}/output/format"),
                        &defaults::OUTPUT_FORMAT,
                        "C# default OutputFormat = PNG",
                    );
                }
                defaults::OUTPUT_FORMAT.to_string()
            }
        };
        let quality = match self.either(
            (pp.quality.as_ref(), "/postprocessing/quality"),
            (o.quality.as_ref(), "/output/quality"),
            format_args!("{out}/output/quality"),
        ) {
            Some(q) => {
                let canonical = if pp.quality.is_some() {
                    "/postprocessing/quality"
                } else {
                    "/output/quality"
                };
                self.int_range(canonical, *q, limits::QUALITY);
                (*q).clamp(0, u32::MAX as i64) as u32
            }
            None => {
                self.defaulted(
                    format_args!("{out}/output/quality"),
                    &defaults::QUALITY,
                    "C# default Quality = 95",
                );
                defaults::QUALITY
            }
        };
        let save_path =
            r.output.save_path.take().inspect(|_| {
                self.mapped("/output/savePath", format_args!("{out}/output/save_path"))
            });
        let upscale = self.upscale(r, out);
        python::Output {
            format,
            quality,
            save_path,
            upscale,
            return_base64: None,
        }
    }

    /// `png`, `jpeg` (or `jpg`), `webp`, any casing.
    fn output_format(&mut self, canonical: &str, value: &str) -> Option<String> {
        // (Matching ignoring ASCII case is matching the ASCII-lowercased value.)
        let known = ["png", "jpeg", "jpg", "webp"];
        match known.into_iter().find(|k| value.eq_ignore_ascii_case(k)) {
            Some("png") => Some("png".into()),
            Some("jpeg" | "jpg") => Some("jpeg".into()),
            Some(_) => Some("webp".into()),
            None => {
                self.error(
                    canonical,
                    "enum",
                    "must be one of png, jpeg (jpg), webp (any casing)".into(),
                    Some(json!(value)),
                );
                None
            }
        }
    }

    fn upscale(&mut self, r: &mut CsRequest, out: &str) -> Option<python::Upscale> {
        let to = self.path(format_args!("{out}/output/upscale"));
        if let Some(steps) = &mut r.post_processing_steps {
            let mut upscale = None;
            for (i, step) in steps.iter_mut().enumerate() {
                let base = self.path(format_args!("/postprocessing/{i}"));
                match step.kind.as_deref() {
                    Some(kind) if kind.eq_ignore_ascii_case("upscale") => {
                        self.mapped(
                            &self.path(format_args!("{base}/type")),
                            format_args!("{to}/enabled"),
                        );
                        if upscale.is_some() {
                            self.error(
                                &self.path(format_args!("{base}/type")),
                                "duplicate",
                                "only one Upscale step is supported".into(),
                                Some(json!(kind)),
                            );
                        }
                        let factor = step.factor.inspect(|f| {
                            self.mapped(
                                &self.path(format_args!("{base}/factor")),
                                format_args!("{to}/factor"),
                            );
                            self.num_range(
                                &self.path(format_args!("{base}/factor")),
                                *f,
                                limits::UPSCALE_FACTOR,
                            );
                        });
                        let method = step.model.take().inspect(|_| {
                            self.mapped(
                                &self.path(format_args!("{base}/model")),
                                format_args!("{to}/method"),
                            )
                        });
                        upscale = Some(python::Upscale {
                            enabled: true,
                            factor,
                            method,
                        });
                    }
                    Some(kind) => self.error(
                        &self.path(format_args!("{base}/type")),
                        "enum",
                        "unknown post-processing step; known: Upscale".into(),
                        Some(json!(kind)),
                    ),
                    None => self.error(
                        &self.path(format_args!("{base}/type")),
                        "required",
                        "a post-processing step needs `type`".into(),
                        None,
                    ),
                }
            }
            return upscale;
        }
        let pp = &mut r.postprocessing;
        if pp.upscaler.is_none() && pp.upscale_factor.is_none() {
            return None;
        }
        let enabled = match &pp.upscaler {
            Some(name) => {
                self.mapped("/postprocessing/upscaler", format_args!("{to}/method"));
                !(name.is_empty() || name.eq_ignore_ascii_case("none"))
            }
            None => false,
        };
        let factor = pp.upscale_factor.inspect(|f| {
            self.mapped("/postprocessing/upscaleFactor", format_args!("{to}/factor"));
            self.num_range("/postprocessing/upscaleFactor", *f, limits::UPSCALE_FACTOR);
        });
        Some(python::Upscale {
            enabled,
            factor,
            method: if enabled { pp.upscaler.take() } else { None },
        })
    }

    fn batch(&mut self, r: &mut CsRequest, out: &str) -> python::Batch {
        let size = match r.hyperparameters.batch_size {
            Some(size) => {
                self.mapped(
                    "/hyperparameters/batchSize",
                    format_args!("{out}/batch/size"),
                );
                self.int_range("/hyperparameters/batchSize", size, limits::BATCH);
                size.clamp(0, u32::MAX as i64) as u32
            }
            None => {
                self.defaulted(
                    format_args!("{out}/batch/size"),
                    &defaults::BATCH_SIZE,
                    "C# default BatchSize = 1",
                );
                defaults::BATCH_SIZE
            }
        };
        python::Batch {
            size,
            parallel: None,
            seeds: None,
        }
    }

    fn precision(&mut self, r: &mut CsRequest, out: &str) -> Option<python::Precision> {
        let p = &r.performance;
        let to = self.path(format_args!("{out}/precision"));
        let mut precision = python::Precision::default();
        if let Some(dtype) = &p.dtype {
            self.mapped("/performance/dtype", format_args!("{to}/dtype"));
            // (The spellings are lowercase: matching ignoring ASCII case is matching the
            // ASCII-lowercased value.)
            match python::DTYPES
                .iter()
                .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(dtype)))
            {
                Some((torch, _)) => precision.dtype = Some(torch.to_string()),
                None => self.error(
                    "/performance/dtype",
                    "enum",
                    "must be one of fp16, bf16, fp32 (or float16, bfloat16, float32)".into(),
                    Some(json!(dtype)),
                ),
            }
        }
        precision.xformers = self
            .either(
                (p.xformers.as_ref(), "/performance/xformers"),
                (p.enable_xformers.as_ref(), "/performance/enableXformers"),
                format_args!("{to}/xformers"),
            )
            .copied();
        let mut flag = |canonical: &'static str, name: &str, value: Option<bool>| {
            value.inspect(|_| self.mapped(canonical, format_args!("{to}/{name}")))
        };
        precision.attention_slicing = flag(
            "/performance/attentionSlicing",
            "attention_slicing",
            p.attention_slicing,
        );
        precision.cpu_offload = flag("/performance/cpuOffload", "cpu_offload", p.cpu_offload);
        precision.sequential_cpu_offload = flag(
            "/performance/sequentialCpuOffload",
            "sequential_cpu_offload",
            p.sequential_cpu_offload,
        );
        if let Some(options) = &p.memory_optimizations {
            for (i, option) in options.iter().enumerate() {
                let canonical = self.path(format_args!("/performance/memoryOptimizations/{i}"));
                let slot = match option.to_ascii_lowercase().as_str() {
                    "attention_slicing" => {
                        Some(("attention_slicing", &mut precision.attention_slicing))
                    }
                    "vae_slicing" => Some(("vae_slicing", &mut precision.vae_slicing)),
                    "cpu_offload" => Some(("cpu_offload", &mut precision.cpu_offload)),
                    "sequential_cpu_offload" => Some((
                        "sequential_cpu_offload",
                        &mut precision.sequential_cpu_offload,
                    )),
                    "xformers" => Some(("xformers", &mut precision.xformers)),
                    _ => None,
                };
                match slot {
                    Some((name, slot)) => {
                        if *slot == Some(false) {
                            let at = self.loc(&canonical);
                            self.ctx.error(FieldError::new(
                                at,
                                "conflict",
                                format!("`{option}` is listed but its own flag says false"),
                            ));
                        }
                        *slot = Some(true);
                        self.mapped(&canonical, format_args!("{to}/{name}"));
                    }
                    None => self.error(
                        &canonical,
                        "enum",
                        "unknown memory optimisation; known: attention_slicing, vae_slicing, cpu_offload, sequential_cpu_offload, xformers".into(),
                        Some(json!(option)),
                    ),
                }
            }
        }
        (precision != python::Precision::default()).then_some(precision)
    }

    /// C# fields with no place in the v2 request, each with the reason (PROTOCOL B.2).
    fn reported_only(&mut self, r: &mut CsRequest) {
        const COMPONENT: &str = "v2 has no per-component override: the worker loads the tokenizers and text encoders of `models.base`";
        const DEVICE: &str = "device placement is the worker's, chosen at initialize_request (device_index/device_id); a generate request does not move the model";
        let m = &r.model;
        for (canonical, value) in [
            ("/model/tokenizer", &m.tokenizer),
            ("/model/textEncoder", &m.text_encoder),
            ("/model/textEncoder2", &m.text_encoder2),
        ] {
            if let Some(v) = value {
                let reason = if v.is_empty() {
                    "empty string: C#'s \"not set\"; the base model's own component is used"
                } else {
                    COMPONENT
                };
                self.reported(canonical, &v, reason);
            }
        }
        if let Some(v) = r.scheduler.snr_weighting {
            self.reported(
                "/scheduler/snrWeighting",
                &v,
                "min-SNR weighting is a training loss option; it has no effect on inference",
            );
        }
        let c = &r.conditioning;
        if let Some(v) = c.mask_blur {
            if v < 0 {
                self.error(
                    "/conditioning/maskBlur",
                    "range",
                    "must be 0 or more".into(),
                    Some(json!(v)),
                );
            }
            self.reported(
                "/conditioning/maskBlur",
                &v,
                "v2 has no mask blur field: the mask is used as sent (diffusers' default, no blur)",
            );
        }
        if let Some(images) = &c.reference_images {
            self.reported(
                "/conditioning/referenceImages",
                &images,
                "v2 has no reference-image (IP-Adapter) field",
            );
        }
        let p = &r.performance;
        if let Some(v) = &p.device {
            self.reported("/performance/device", &v, DEVICE);
        }
        if let Some(v) = &p.device_id {
            self.reported("/performance/deviceId", &v, DEVICE);
        }
        if let Some(v) = &p.device_ids {
            self.reported("/performance/deviceIds", &v, DEVICE);
        }
        if let Some(v) = &p.compilation {
            self.reported(
                "/performance/compilation",
                &v,
                "torch.compile is a worker start-up choice, not a per-request field in v2",
            );
        }
        let pp = &r.postprocessing;
        if let Some(v) = pp.safety_checker {
            self.reported(
                "/postprocessing/safetyChecker",
                &v,
                "SDXL pipelines have no safety checker; nothing to switch",
            );
        }
        if let Some(v) = pp.auto_contrast {
            self.reported(
                "/postprocessing/autoContrast",
                &v,
                "v2 has no auto-contrast step",
            );
        }
        if let Some(v) = pp.watermark {
            self.reported("/postprocessing/watermark", &v, "v2 has no watermark field; the reference renders with add_watermarker=False (PROTOCOL B.9)");
        }
    }
}

/// The value [`Mapper::either`] chose (the first when present, else the second), moved out.
fn take_either(first: &mut Option<String>, second: &mut Option<String>) -> Option<String> {
    first.take().or_else(|| second.take())
}

/// A field that was present but unreadable (wrong type) is not also "missing".
fn without_redundant_required(errors: Vec<FieldError>) -> Vec<FieldError> {
    let other_paths: std::collections::HashSet<String> = errors
        .iter()
        .filter(|e| e.rule != "required")
        .map(|e| e.path.clone())
        .collect();
    errors
        .into_iter()
        .filter(|e| e.rule != "required" || !other_paths.contains(&e.path))
        .collect()
}

/// 16 hex digits of the message's [`content_hash`] (XXH3-64 of its compact JSON, as
/// `serde_json::to_writer` writes it), which is taken as the text is read, not built.
fn content_id(hash: u64) -> String {
    // `format!("{hash:016x}")`, without the formatting machinery.
    let digits = b"0123456789abcdef";
    let mut id = String::with_capacity(16);
    for i in (0..16).rev() {
        id.push(char::from(digits[((hash >> (i * 4)) & 0xf) as usize]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id is XXH3-64 of serde_json's compact text of the message, however it is read.
    #[test]
    fn content_id_hashes_serde_json_s_compact_text() {
        // XXH3-64 itself (seed 0): its published value for the empty input.
        assert_eq!(
            content_id(xxhash_rust::xxh3::xxh3_64(b"")),
            "2d06800538d394c2"
        );
        for text in [
            r#"{"model":{"base":"m"},"conditioning":{"prompt":"p"}}"#,
            "{ \"model\" : {\n  \"base\":\"m\" } ,\t\"conditioning\":{\"prompt\":\"p\"}\r\n}",
            r#"{"a":[1,-2,3.5,1e21,-0.0,0.1,1E2,null,true,false,"",{}],"b":{"c":[]},"é東":"x\"y\\z\n\u0001\u007f\u00e9\/"}"#,
            r#"[]"#,
            r#""s""#,
            r#"{"a":1,"a":2}"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let compact = serde_json::to_vec(&value).unwrap();
            let expected = content_id(xxhash_rust::xxh3::xxh3_64(&compact));
            let (document, hash) = Json::parse_hashed(text).unwrap();
            assert_eq!(content_id(content_hash(&document)), expected, "{text}");
            if let Some(hash) = hash {
                assert_eq!(content_id(hash), expected, "{text}");
            }
            assert_eq!(content_id(content_hash(&value)), expected);
        }
    }

    /// The one-pass reading of an HTTP body takes the same hash, whatever the layout.
    #[test]
    fn an_http_body_read_in_one_pass_has_the_document_s_content_id() {
        let compact = r#"{"model":{"base":"m","vae":null},"hyperparameters":{"seed":7,"guidanceScale":7.5},"conditioning":{"prompt":"a \"p\"","loras":[{"name":"l","scale":0.5}]},"extra":[1,{"x":null}]}"#;
        let spaced = "{\n  \"model\": { \"base\": \"m\", \"vae\": null },\n  \"hyperparameters\": {\"seed\" : 7,\"guidanceScale\":7.5},\r\n\t\"conditioning\": {\"prompt\": \"a \\\"p\\\"\", \"loras\": [ {\"name\":\"l\", \"scale\":0.5} ] },\n  \"extra\": [1, {\"x\": null}]\n}\n";
        let value: Value = serde_json::from_str(compact).unwrap();
        let expected = xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(&value).unwrap());
        for text in [compact, spaced] {
            let (_, hash) = csharp::http_body(text).expect("an HTTP body");
            assert_eq!(hash, expected, "{text}");
        }
    }
}
