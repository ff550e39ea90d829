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

/// A mapped message before it is JSON: the envelope with its `data` still typed. It serialises
/// to the same text as the [`Envelope`] it becomes ([`Message::into_envelope`]), key order
/// included; the request mapping validates and writes it without building a `Value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub message_type: &'static str,
    pub request_id: String,
    pub data: Data,
}

/// The `data` of a [`Message`].
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `inference_request` (boxed: the message is moved whole several times, its data once).
    Inference(Box<InferenceData>),
    /// `validate_request`: `{"request": …}`.
    ValidateRequest(Box<InferenceData>),
    /// The other commands' small bodies.
    Json(Value),
}

impl Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Inference(data) => data.serialize(serializer),
            Data::ValidateRequest(data) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("request", data)?;
                map.end()
            }
            Data::Json(value) => value.serialize(serializer),
        }
    }
}

impl Message {
    /// The envelope, its `data` built as JSON (the strings moved, not copied).
    pub fn into_envelope(self) -> Envelope {
        Envelope {
            message_type: self.message_type.to_owned(),
            request_id: self.request_id,
            data: self.data.into_json(),
        }
    }
}

impl IntoJson for Data {
    fn into_json(self) -> Value {
        match self {
            Data::Inference(data) => data.into_json(),
            Data::ValidateRequest(data) => {
                let mut o = Object::with_capacity(1);
                put(&mut o, "request", *data);
                Value::Object(o)
            }
            Data::Json(value) => value,
        }
    }
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

/// Building the `Value` of a request directly, the strings moved in: the same JSON as the
/// derived `Serialize` (`serde_json::to_value`) gives, key order included, without copying
/// every string and growing every map. The request mapping checks the two agree in debug builds.
pub trait IntoJson {
    fn into_json(self) -> Value;
}

type Object = serde_json::Map<String, Value>;

fn put<T: IntoJson>(object: &mut Object, key: &str, value: T) {
    object.insert(key.to_owned(), value.into_json());
}

fn put_some<T: IntoJson>(object: &mut Object, key: &str, value: Option<T>) {
    if let Some(value) = value {
        put(object, key, value);
    }
}

macro_rules! into_json_as_from {
    ($($t:ty),*) => {
        $(impl IntoJson for $t {
            fn into_json(self) -> Value {
                Value::from(self)
            }
        })*
    };
}

into_json_as_from!(String, bool, u32, i64, f64);

impl<T: IntoJson> IntoJson for Vec<T> {
    fn into_json(self) -> Value {
        // A new vector of the right size (collecting would reuse this one's memory in place
        // and then shrink it, a reallocation).
        let mut items = Vec::with_capacity(self.len());
        items.extend(self.into_iter().map(IntoJson::into_json));
        Value::Array(items)
    }
}

impl IntoJson for InferenceData {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(24);
        put(&mut o, "worker_type", self.worker_type);
        put(&mut o, "prompt", self.prompt);
        put_some(&mut o, "negative_prompt", self.negative_prompt);
        put_some(&mut o, "model_name", self.model_name);
        put(&mut o, "hyperparameters", self.hyperparameters);
        put(&mut o, "dimensions", self.dimensions);
        put_some(&mut o, "scheduler", self.scheduler);
        put_some(&mut o, "scheduler_options", self.scheduler_options);
        put_some(&mut o, "models", self.models);
        put_some(&mut o, "lora", self.lora);
        // `controlnet` is usually the first of `controlnets` again (for v1 workers): then its
        // JSON is a copy of that one's (copying a map keeps its keys' hashes).
        let first_again = self.controlnet.is_some()
            && self.controlnet.as_ref() == self.controlnets.as_ref().and_then(|u| u.first());
        let controlnets = self.controlnets.map(IntoJson::into_json);
        let controlnet = match (&controlnets, first_again) {
            (Some(Value::Array(units)), true) => units.first().cloned(),
            _ => self.controlnet.map(IntoJson::into_json),
        };
        if let Some(controlnet) = controlnet {
            o.insert("controlnet".to_owned(), controlnet);
        }
        if let Some(controlnets) = controlnets {
            o.insert("controlnets".to_owned(), controlnets);
        }
        put_some(&mut o, "textual_inversions", self.textual_inversions);
        put_some(&mut o, "clip_skip", self.clip_skip);
        put_some(&mut o, "prompt_attention", self.prompt_attention);
        put_some(&mut o, "init_image", self.init_image);
        put_some(&mut o, "mask_image", self.mask_image);
        put_some(&mut o, "refiner", self.refiner);
        put(&mut o, "output", self.output);
        put(&mut o, "batch", self.batch);
        put_some(&mut o, "precision", self.precision);
        put(&mut o, "metadata", self.metadata);
        Value::Object(o)
    }
}

impl IntoJson for Hyperparameters {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(4);
        put(&mut o, "num_inference_steps", self.num_inference_steps);
        put(&mut o, "guidance_scale", self.guidance_scale);
        put(&mut o, "seed", self.seed);
        put_some(&mut o, "strength", self.strength);
        Value::Object(o)
    }
}

impl IntoJson for Dimensions {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(2);
        put(&mut o, "width", self.width);
        put(&mut o, "height", self.height);
        Value::Object(o)
    }
}

impl IntoJson for SchedulerOptions {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(2);
        put_some(&mut o, "use_karras_sigmas", self.use_karras_sigmas);
        put_some(&mut o, "timestep_spacing", self.timestep_spacing);
        Value::Object(o)
    }
}

impl IntoJson for Models {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(3);
        put(&mut o, "base", self.base);
        put_some(&mut o, "refiner", self.refiner);
        put_some(&mut o, "vae", self.vae);
        Value::Object(o)
    }
}

impl IntoJson for Lora {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(2);
        put(&mut o, "enabled", self.enabled);
        put(&mut o, "models", self.models);
        Value::Object(o)
    }
}

impl IntoJson for LoraModel {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(3);
        put(&mut o, "name", self.name);
        put(&mut o, "weight", self.weight);
        put_some(&mut o, "adapter_name", self.adapter_name);
        Value::Object(o)
    }
}

impl IntoJson for ControlNetUnit {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(8);
        put(&mut o, "enabled", self.enabled);
        put_some(&mut o, "type", self.kind);
        put_some(&mut o, "model_path", self.model_path);
        put(&mut o, "conditioning_scale", self.conditioning_scale);
        put(&mut o, "control_image", self.control_image);
        put(&mut o, "guidance_start", self.guidance_start);
        put(&mut o, "guidance_end", self.guidance_end);
        put_some(&mut o, "preprocessor", self.preprocessor);
        Value::Object(o)
    }
}

impl IntoJson for Preprocessor {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(2);
        put(&mut o, "enabled", self.enabled);
        put_some(&mut o, "resolution", self.resolution);
        Value::Object(o)
    }
}

impl IntoJson for TextualInversion {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(2);
        put_some(&mut o, "token", self.token);
        put(&mut o, "path", self.path);
        Value::Object(o)
    }
}

impl IntoJson for Refiner {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(1);
        put(&mut o, "denoising_start", self.denoising_start);
        Value::Object(o)
    }
}

impl IntoJson for Output {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(5);
        put(&mut o, "format", self.format);
        put(&mut o, "quality", self.quality);
        put_some(&mut o, "save_path", self.save_path);
        put_some(&mut o, "upscale", self.upscale);
        put_some(&mut o, "return_base64", self.return_base64);
        Value::Object(o)
    }
}

impl IntoJson for Upscale {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(3);
        put(&mut o, "enabled", self.enabled);
        put_some(&mut o, "factor", self.factor);
        put_some(&mut o, "method", self.method);
        Value::Object(o)
    }
}

impl IntoJson for Batch {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(3);
        put(&mut o, "size", self.size);
        put_some(&mut o, "parallel", self.parallel);
        put_some(&mut o, "seeds", self.seeds);
        Value::Object(o)
    }
}

impl IntoJson for Precision {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(6);
        put_some(&mut o, "dtype", self.dtype);
        put_some(&mut o, "cpu_offload", self.cpu_offload);
        put_some(
            &mut o,
            "sequential_cpu_offload",
            self.sequential_cpu_offload,
        );
        put_some(&mut o, "attention_slicing", self.attention_slicing);
        put_some(&mut o, "vae_slicing", self.vae_slicing);
        put_some(&mut o, "xformers", self.xformers);
        Value::Object(o)
    }
}

impl IntoJson for Metadata {
    fn into_json(self) -> Value {
        let mut o = Object::with_capacity(4);
        put(&mut o, "request_id", self.request_id);
        put_some(&mut o, "priority", self.priority);
        put_some(&mut o, "timeout", self.timeout);
        put_some(&mut o, "tags", self.tags);
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set (and none): the same JSON text as `Serialize`.
    #[test]
    fn into_json_is_serialize() {
        let unit = ControlNetUnit {
            enabled: true,
            kind: Some("canny".into()),
            model_path: Some("c".into()),
            conditioning_scale: 0.5,
            control_image: "i.png".into(),
            guidance_start: 0.0,
            guidance_end: 1.0,
            preprocessor: Some(Preprocessor {
                enabled: false,
                resolution: Some(512),
            }),
        };
        let full = InferenceData {
            worker_type: "w".into(),
            prompt: "p \"q\"".into(),
            negative_prompt: Some("n".into()),
            model_name: Some("m".into()),
            hyperparameters: Hyperparameters {
                num_inference_steps: 30,
                guidance_scale: 7.5,
                seed: -1,
                strength: Some(0.25),
            },
            dimensions: Dimensions {
                width: 1024,
                height: 768,
            },
            scheduler: Some("EulerDiscreteScheduler".into()),
            scheduler_options: Some(SchedulerOptions {
                use_karras_sigmas: Some(true),
                timestep_spacing: Some("leading".into()),
            }),
            models: Some(Models {
                base: "b".into(),
                refiner: Some("r".into()),
                vae: Some("v".into()),
            }),
            lora: Some(Lora {
                enabled: true,
                models: vec![LoraModel {
                    name: "l".into(),
                    weight: -1.5,
                    adapter_name: Some("a".into()),
                }],
            }),
            controlnet: Some(unit.clone()),
            controlnets: Some(vec![unit.clone(), unit]),
            textual_inversions: Some(vec![TextualInversion {
                token: Some("<t>".into()),
                path: "t.pt".into(),
            }]),
            clip_skip: Some(2),
            prompt_attention: Some("compel".into()),
            init_image: Some("init".into()),
            mask_image: Some("mask".into()),
            refiner: Some(Refiner {
                denoising_start: 0.8,
            }),
            output: Output {
                format: "png".into(),
                quality: 95,
                save_path: Some("s".into()),
                upscale: Some(Upscale {
                    enabled: true,
                    factor: Some(2.0),
                    method: Some("x".into()),
                }),
                return_base64: Some(false),
            },
            batch: Batch {
                size: 2,
                parallel: Some(true),
                seeds: Some(vec![1, -2]),
            },
            precision: Some(Precision {
                dtype: Some("float16".into()),
                cpu_offload: Some(true),
                sequential_cpu_offload: Some(false),
                attention_slicing: Some(true),
                vae_slicing: Some(true),
                xformers: Some(false),
            }),
            metadata: Metadata {
                request_id: "id".into(),
                priority: Some("high".into()),
                timeout: Some(60),
                tags: Some(vec!["a".into()]),
            },
        };
        let empty = InferenceData {
            worker_type: String::new(),
            prompt: String::new(),
            negative_prompt: None,
            model_name: None,
            hyperparameters: Hyperparameters {
                num_inference_steps: 0,
                guidance_scale: f64::NAN,
                seed: 0,
                strength: None,
            },
            dimensions: Dimensions {
                width: 0,
                height: 0,
            },
            scheduler: None,
            scheduler_options: Some(SchedulerOptions::default()),
            models: None,
            lora: None,
            controlnet: None,
            controlnets: Some(Vec::new()),
            textual_inversions: None,
            clip_skip: None,
            prompt_attention: None,
            init_image: None,
            mask_image: None,
            refiner: None,
            output: Output {
                format: String::new(),
                quality: 0,
                save_path: None,
                upscale: None,
                return_base64: None,
            },
            batch: Batch {
                size: 0,
                parallel: None,
                seeds: None,
            },
            precision: Some(Precision::default()),
            metadata: Metadata {
                request_id: String::new(),
                priority: None,
                timeout: None,
                tags: None,
            },
        };
        for data in [full, empty] {
            let expected = serde_json::to_string(&serde_json::to_value(&data).unwrap()).unwrap();
            assert_eq!(serde_json::to_string(&data.into_json()).unwrap(), expected);
        }
    }
}
