//! The Python side: the `message_type` envelope, protocol v2 (PROTOCOL A.4 + B.5).
//!
//! Field names and nesting are the worker schema's (snake_case, diffusers' vocabulary). Optional
//! fields are left out when unset, so a v1 worker that ignores unknown fields sees the request it
//! always saw.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"message_type", "request_id", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub message_type: String,
    pub request_id: String,
    pub data: Value,
}

/// `data` of an `inference_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceData {
    pub worker_type: String,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Absent only for `generate_image`, which renders with the model already loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    pub hyperparameters: Hyperparameters,
    pub dimensions: Dimensions,
    /// A diffusers scheduler class name; absent: the model's own `scheduler_config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_options: Option<SchedulerOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Models>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<Lora>,
    /// The first ControlNet unit (v1 compatibility); `controlnets` has them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnet: Option<ControlNetUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnets: Option<Vec<ControlNetUnit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textual_inversions: Option<Vec<TextualInversion>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_skip: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_attention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refiner: Option<Refiner>,
    pub output: Output,
    pub batch: Batch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    /// −1: the worker picks a seed and reports it.
    pub seed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimensions {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SchedulerOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_karras_sigmas: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Models {
    pub base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refiner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lora {
    pub enabled: bool,
    pub models: Vec<LoraModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraModel {
    pub name: String,
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlNetUnit {
    pub enabled: bool,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    pub conditioning_scale: f64,
    pub control_image: String,
    pub guidance_start: f64,
    pub guidance_end: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessor: Option<Preprocessor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextualInversion {
    /// Absent: the token stored in the embedding file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refiner {
    pub denoising_start: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub format: String,
    pub quality: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscale: Option<Upscale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_base64: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upscale {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Precision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_offload: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_cpu_offload: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_slicing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae_slicing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xformers: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// `precision.dtype` values (torch dtype names) and the C# spellings that map to them.
pub const DTYPES: &[(&str, &[&str])] = &[
    ("float16", &["fp16", "float16", "half"]),
    ("bfloat16", &["bf16", "bfloat16"]),
    ("float32", &["fp32", "float32", "float", "full"]),
];

pub const OUTPUT_FORMATS: &[&str] = &["png", "jpeg", "webp"];
pub const TIMESTEP_SPACINGS: &[&str] = &["leading", "trailing", "linspace"];
pub const PROMPT_ATTENTION: &[&str] = &["none", "a1111", "compel"];
