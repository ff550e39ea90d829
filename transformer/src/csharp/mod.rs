//! The C# side: every dialect the Enhanced Services send (PROTOCOL A.1–A.3, A.5), read into one
//! typed model.
//!
//! The model is the union of the dialects: the camelCase HTTP body, the PascalCase body inside
//! the stdin action envelope (same names, other casing) and the seed document's shape (which
//! names some things differently: `LoRAs[{ModelPath, Weight}]`, `Output{…}`, a `PostProcessing`
//! list). Where two shapes of one field exist both are kept here; [`crate::request_map`] resolves
//! them and reports a conflict when both are present and differ (PROTOCOL B.1).

mod parse;
mod quick;
mod write;

use std::collections::BTreeMap;

pub use parse::parse_message;
pub(crate) use parse::{parse_document, GENERATE_IMAGE_PARAMETERS};
pub(crate) use quick::http_body;
pub use write::{to_json, Casing};

/// Where each canonical field (a JSON Pointer in the camelCase HTTP shape, e.g.
/// `/conditioning/loras/0/weight`) was found in the input. Errors are reported at the input's
/// pointer; a field absent from the input has no entry.
pub type Locations = BTreeMap<String, String>;

/// The C# `EnhancedSDXLRequest` (all dialects).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsRequest {
    pub model: Model,
    pub scheduler: Scheduler,
    pub hyperparameters: Hyperparameters,
    pub conditioning: Conditioning,
    pub performance: Performance,
    /// The HTTP body's `postprocessing` object.
    pub postprocessing: Postprocessing,
    /// The seed document's `PostProcessing` list (`[{Type:"Upscale", Factor, Model}]`).
    pub post_processing_steps: Option<Vec<PostProcessingStep>>,
    /// The seed document's `Output` object.
    pub output: Output,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    pub base: Option<String>,
    pub refiner: Option<String>,
    pub vae: Option<String>,
    pub tokenizer: Option<String>,
    pub text_encoder: Option<String>,
    pub text_encoder2: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scheduler {
    pub kind: Option<String>,
    pub steps: Option<i64>,
    pub snr_weighting: Option<bool>,
    pub use_karras_sigmas: Option<bool>,
    pub timestep_spacing: Option<String>,
    /// The legacy stdin example puts `GuidanceScale` here.
    pub guidance_scale: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hyperparameters {
    pub guidance_scale: Option<f64>,
    /// `int?`: `None` (absent or null) means random, like −1.
    pub seed: Option<i64>,
    pub batch_size: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub negative_prompt: Option<String>,
    pub prompt: Option<String>,
    pub prompt_weighting: Option<PromptWeighting>,
}

/// `promptWeighting` is a boolean in the C# model; a syntax name is accepted too.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptWeighting {
    Enabled(bool),
    Syntax(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditioning {
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub loras: Option<Vec<Lora>>,
    pub control_nets: Option<Vec<ControlNet>>,
    pub textual_inversions: Option<Vec<TextualInversion>>,
    pub init_image: Option<String>,
    pub inpaint_mask: Option<String>,
    pub mask_blur: Option<i64>,
    pub img2img_strength: Option<f64>,
    pub reference_images: Option<Vec<String>>,
}

/// A LoRA: HTTP shape `{name, scale, adapterName}`, seed shape `{ModelPath, Weight}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lora {
    pub name: Option<String>,
    pub model_path: Option<String>,
    pub scale: Option<f64>,
    pub weight: Option<f64>,
    pub adapter_name: Option<String>,
}

/// A ControlNet unit: HTTP shape `{type, weight, image, guidanceStart, guidanceEnd}`, seed shape
/// `{ModelPath, ConditioningImage, Weight}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlNet {
    pub kind: Option<String>,
    pub model_path: Option<String>,
    pub image: Option<String>,
    pub conditioning_image: Option<String>,
    pub weight: Option<f64>,
    pub guidance_start: Option<f64>,
    pub guidance_end: Option<f64>,
}

/// A textual inversion: a path string, or `{token, path}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextualInversion {
    pub token: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Performance {
    pub dtype: Option<String>,
    pub xformers: Option<bool>,
    pub attention_slicing: Option<bool>,
    pub cpu_offload: Option<bool>,
    pub sequential_cpu_offload: Option<bool>,
    pub device: Option<String>,
    pub device_ids: Option<Vec<i64>>,
    pub compilation: Option<String>,
    /// Older HTTP samples: `deviceId`, `enableXformers`, `memoryOptimizations[]`.
    pub device_id: Option<String>,
    pub enable_xformers: Option<bool>,
    pub memory_optimizations: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Postprocessing {
    pub upscaler: Option<String>,
    pub upscale_factor: Option<f64>,
    pub output_format: Option<String>,
    pub quality: Option<i64>,
    pub safety_checker: Option<bool>,
    pub auto_contrast: Option<bool>,
    pub watermark: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostProcessingStep {
    pub kind: Option<String>,
    pub factor: Option<f64>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub format: Option<String>,
    pub quality: Option<i64>,
    pub save_path: Option<String>,
}

/// The actions C# sends in its stdin envelope (PROTOCOL A.5), plus the HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Initialize,
    LoadModel,
    UnloadModel,
    GenerateImage,
    GenerateSdxlEnhanced,
    GetCapabilities,
    ValidateRequest,
    GetStatus,
    GetModelInfo,
    CleanupMemory,
    Stop,
    Shutdown,
}

/// What the message asks for, with the fields of its command.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Generate(Box<CsRequest>),
    Initialize {
        device_index: Option<i64>,
        device_id: Option<String>,
    },
    LoadModel {
        model_path: Option<String>,
        model_type: Option<String>,
        model_id: Option<String>,
    },
    UnloadModel {
        model_id: Option<String>,
    },
    ValidateRequest(Box<CsRequest>),
    /// Commands without fields (status, capabilities, model info, cleanup, shutdown).
    NoFields,
}

/// Which wire shape the message arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The HTTP body (`POST /api/EnhancedSDXL/generate`), any casing.
    HttpBody,
    /// `{"action": …, "request": {…}}` (the current stdin envelope).
    ActionRequest,
    /// `{"action": …, "request_data": {…}}` (older docs).
    ActionRequestData,
    /// `{"action": "generate_image", "parameters": {…}}`.
    ActionParameters,
    /// `{"action": …}` with the command's fields beside it (or none).
    Action,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::HttpBody => "http-body",
            Dialect::ActionRequest => "action-envelope/request",
            Dialect::ActionRequestData => "action-envelope/request_data",
            Dialect::ActionParameters => "action-envelope/parameters",
            Dialect::Action => "action-envelope",
        }
    }
}

/// A C# message read from JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct CsMessage {
    pub dialect: Dialect,
    pub action: Action,
    pub session_id: Option<String>,
    pub body: Body,
    pub locations: Locations,
}

impl CsMessage {
    /// The HTTP body (`POST /api/EnhancedSDXL/generate`): a generate request, no session.
    pub(crate) fn http_body(request: Box<CsRequest>, locations: Locations) -> CsMessage {
        CsMessage {
            dialect: Dialect::HttpBody,
            action: Action::GenerateSdxlEnhanced,
            session_id: None,
            body: Body::Generate(request),
            locations,
        }
    }
}
