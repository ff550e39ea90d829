//! Text-to-image, as diffusers' `StableDiffusionXLPipeline.__call__` does it (PROTOCOL B.9):
//! encode the prompt, draw the latents image by image from per-image CPU generators (B.8),
//! denoise with classifier-free guidance, decode with the VAE, post-process to 8-bit RGB. With
//! ControlNet units, as `StableDiffusionXLControlNetPipeline.__call__`: the conditioning images
//! are prepared before the loop and each step's UNet call takes the ControlNets' residuals.
//!
//! The order of operations and the dtypes follow diffusers 0.42.1 line by line, so the images are
//! the same pixels diffusers renders on the same weights.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value};
use tch::{Kind, Tensor};

use crate::config::{ModelIndex, SchedulerConfig};
use crate::controlnet::{
    units_from_v2_data, ControlNetCache, ControlNetLocator, ControlNetStack, ControlNetUnit,
    RenderShape,
};
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::image::{postprocess, RgbImage};
use crate::lora::{self, AdapterTargets, Component, LoraAdapter, LoraSpec, LoraTargets};
use crate::noise::randn_tensor;
use crate::schedulers::scheduler_for;
use crate::text::{PromptAttention, PromptOptions, TextEncoders, TextualInversion};
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;

/// What one inference request asks the pipeline for (the fields of a Python v2 `data` object
/// this worker renders; [`RenderRequest::from_v2_data`] refuses the ones it does not render yet).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderRequest {
    pub prompt: String,
    /// `None` is diffusers' `None` (zeros with `force_zeros_for_empty_prompt`); `Some("")` is an
    /// empty prompt, encoded.
    pub negative_prompt: Option<String>,
    pub num_inference_steps: usize,
    pub guidance_scale: f64,
    pub width: i64,
    pub height: i64,
    /// One seed per image (`seed + i`, or `batch.seeds`).
    pub seeds: Vec<u64>,
    /// A diffusers class name; `None`: the model's own scheduler class.
    pub scheduler: Option<String>,
    pub scheduler_options: Map<String, Value>,
    /// `precision.dtype`: the dtype the pipeline is loaded and run in (diffusers' `torch_dtype`),
    /// `Kind::Float` (the default) or `Kind::BFloat16`.
    pub kind: Kind,
    /// `clip_skip`: layers skipped from the end of both text encoders, positive prompt only.
    pub clip_skip: Option<usize>,
    /// `prompt_attention`: the prompt weighting syntax.
    pub prompt_attention: PromptAttention,
    /// `textual_inversions`, in request order.
    pub textual_inversions: Vec<TextualInversionRef>,
    /// `controlnets` (or `controlnet`): the enabled ControlNet units, in order.
    pub controlnets: Vec<ControlNetUnit>,
    /// `lora.models` when `lora.enabled` is not false, in order (see [`crate::lora`]).
    pub loras: Vec<LoraSpec>,
}

/// One `textual_inversions[]` entry: an SDXL embedding file (`clip_l` + `clip_g`) and its token.
///
/// `path` is a path on the worker's file system, as the request gives it: absolute, or relative to
/// the worker process's working directory (as Python's `open` and diffusers read it); `token`
/// absent means the file's stem (docs/decisions.md).
#[derive(Debug, Clone, PartialEq)]
pub struct TextualInversionRef {
    pub token: Option<String>,
    pub path: PathBuf,
}

/// Defaults for fields a (schema-valid) v2 request may leave out: the C# side's documented ones,
/// which the transformer also applies (PROTOCOL B.3 / issue 2).
pub mod defaults {
    pub const STEPS: usize = 25;
    pub const GUIDANCE_SCALE: f64 = 7.5;
    pub const SIZE: i64 = 1024;
}

/// The `data` fields this worker renders; any other field that is set is refused with its path,
/// so nothing is silently ignored.
const RENDERED: &[&str] = &[
    "worker_type",
    "prompt",
    "negative_prompt",
    "model_name",
    "hyperparameters",
    "dimensions",
    "scheduler",
    "scheduler_options",
    "models",
    "output",
    "batch",
    "metadata",
    "precision",
    "textual_inversions",
    "clip_skip",
    "prompt_attention",
    "controlnet",
    "controlnets",
    "lora",
];

/// Where `lora.models` sits in a request, for errors about one LoRA.
pub const LORA_MODELS_POINTER: &str = "/data/lora/models";

impl RenderRequest {
    /// Reads a schema-valid v2 `data` object. `random_seed` is called when the seed is −1.
    pub fn from_v2_data(data: &Value, random_seed: impl FnOnce(usize) -> u64) -> Result<Self> {
        let unsupported = |path: String, why: &str| Error::Unsupported {
            path,
            reason: why.to_owned(),
        };
        let Some(fields) = data.as_object() else {
            return Err(unsupported("/data".into(), "not an object"));
        };
        for (key, value) in fields {
            if !RENDERED.contains(&key.as_str()) && !is_off(value) {
                return Err(unsupported(
                    format!("/data/{key}"),
                    "the reference worker does not render this feature yet",
                ));
            }
        }
        if let Some(upscale) = data.pointer("/output/upscale") {
            if upscale.get("enabled").and_then(Value::as_bool) == Some(true) {
                return Err(unsupported(
                    "/data/output/upscale".into(),
                    "upscaling is not implemented yet",
                ));
            }
        }
        let kind = match data.pointer("/precision/dtype").and_then(Value::as_str) {
            None | Some("float32") => Kind::Float,
            Some("bfloat16") => Kind::BFloat16,
            Some(other) => {
                return Err(unsupported(
                    "/data/precision/dtype".into(),
                    &format!("{other} is not rendered on CPU (float32 or bfloat16)"),
                ))
            }
        };
        for component in ["refiner", "vae"] {
            if let Some(path) = data
                .pointer(&format!("/models/{component}"))
                .and_then(Value::as_str)
            {
                return Err(unsupported(
                    format!("/data/models/{component}"),
                    &format!("a separate {component} ({path}) is not implemented yet"),
                ));
            }
        }
        let prompt = data["prompt"].as_str().unwrap_or_default().to_owned();
        let negative_prompt = data
            .get("negative_prompt")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let hyper = &data["hyperparameters"];
        let num_inference_steps = hyper["num_inference_steps"]
            .as_u64()
            .map_or(defaults::STEPS, |n| n as usize);
        let guidance_scale = hyper["guidance_scale"]
            .as_f64()
            .unwrap_or(defaults::GUIDANCE_SCALE);
        let width = data
            .pointer("/dimensions/width")
            .and_then(Value::as_i64)
            .unwrap_or(defaults::SIZE);
        let height = data
            .pointer("/dimensions/height")
            .and_then(Value::as_i64)
            .unwrap_or(defaults::SIZE);
        let batch = data
            .pointer("/batch/size")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        let seeds: Vec<u64> = match data.pointer("/batch/seeds").and_then(Value::as_array) {
            Some(seeds) => {
                if seeds.len() != batch {
                    return Err(unsupported(
                        "/data/batch/seeds".into(),
                        &format!("{} seeds for a batch of {batch}", seeds.len()),
                    ));
                }
                seeds
                    .iter()
                    .map(|s| s.as_u64().unwrap_or_default())
                    .collect()
            }
            None => {
                let seed = hyper["seed"].as_i64().unwrap_or(-1);
                let first = if seed < 0 {
                    random_seed(batch)
                } else {
                    seed as u64
                };
                (0..batch as u64).map(|i| first + i).collect()
            }
        };
        let clip_skip = data
            .get("clip_skip")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        let prompt_attention = match data.get("prompt_attention").and_then(Value::as_str) {
            None => PromptAttention::None,
            Some(name) => PromptAttention::from_name(name).ok_or_else(|| {
                unsupported(
                    "/data/prompt_attention".into(),
                    &format!("`{name}` is not one of none, a1111, compel"),
                )
            })?,
        };
        let textual_inversions = data
            .get("textual_inversions")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let path = item.get("path").and_then(Value::as_str).ok_or_else(|| {
                            unsupported(
                                format!("/data/textual_inversions/{i}/path"),
                                "a textual inversion needs a file path",
                            )
                        })?;
                        Ok(TextualInversionRef {
                            token: item.get("token").and_then(Value::as_str).map(str::to_owned),
                            path: PathBuf::from(path),
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let loras = read_loras(data.get("lora"));
        Ok(RenderRequest {
            prompt,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            width,
            height,
            seeds,
            scheduler: data
                .get("scheduler")
                .and_then(Value::as_str)
                .map(str::to_owned),
            scheduler_options: data
                .get("scheduler_options")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            kind,
            clip_skip,
            prompt_attention,
            textual_inversions,
            controlnets: units_from_v2_data(data)?,
            loras,
        })
    }
}

fn dimension_error() -> Error {
    Error::Unsupported {
        path: "/data/dimensions".into(),
        reason: "width and height must be positive".into(),
    }
}

/// `data.lora` of a schema-valid request: its models unless `enabled` is false.
fn read_loras(lora: Option<&Value>) -> Vec<LoraSpec> {
    let Some(lora) = lora else {
        return Vec::new();
    };
    if lora.get("enabled").and_then(Value::as_bool) == Some(false) {
        return Vec::new();
    }
    lora.get("models")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|model| LoraSpec {
            name: model["name"].as_str().unwrap_or_default().to_owned(),
            weight: model["weight"].as_f64().unwrap_or(1.0),
            adapter_name: model
                .get("adapter_name")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
        .collect()
}

/// A feature field that is present but switched off or empty (`lora.enabled: false`, `[]`,
/// `prompt_attention: "none"`) asks for nothing.
fn is_off(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::String(s) => s == "none",
        Value::Object(map) => {
            map.get("enabled").and_then(Value::as_bool) == Some(false)
                && map
                    .get("models")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
        }
        _ => false,
    }
}

/// The loaded SDXL pipeline (components of a diffusers folder).
pub struct Pipeline {
    root: PathBuf,
    text: TextEncoders,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler_config: SchedulerConfig,
    default_scheduler: String,
    controlnet_locator: ControlNetLocator,
    /// ControlNet models kept between renders (a `serve` process reads each folder once).
    controlnets: RefCell<ControlNetCache>,
    /// What relative LoRA names are joined to (`None`: the working directory).
    lora_dir: Option<PathBuf>,
}

/// The LoRAs a render applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedLora {
    pub adapter_name: String,
    pub path: PathBuf,
    pub weight: f64,
    /// How many layers it adapts.
    pub modules: usize,
}

/// What a render produced.
pub struct Rendered {
    pub images: Vec<RgbImage>,
    pub seeds: Vec<u64>,
    pub scheduler: String,
    /// UNet forward passes the denoising loop made (one per scheduler timestep; Heun and KDPM2
    /// have about two per step, as in diffusers).
    pub unet_evaluations: usize,
    pub seconds: f64,
    /// diffusers' warnings (e.g. a prompt truncated at 77 tokens), for the log.
    pub warnings: Vec<String>,
    /// The LoRAs applied, in the request's order.
    pub loras: Vec<AppliedLora>,
}

impl Pipeline {
    /// Loads the pipeline in float32.
    pub fn load(root: &Path) -> Result<Self> {
        Self::load_with_kind(root, Kind::Float)
    }

    /// `from_pretrained(root, torch_dtype=kind)`: every component's weights converted to `kind`
    /// (float32 or bfloat16). Requests must ask for the same kind ([`RenderRequest::kind`]).
    pub fn load_with_kind(root: &Path, kind: Kind) -> Result<Self> {
        let index = ModelIndex::read(&root.join("model_index.json"))?;
        let scheduler_config =
            SchedulerConfig::read(&root.join("scheduler/scheduler_config.json"))?;
        let default_scheduler = index
            .components
            .iter()
            .find(|(name, _, _)| name == "scheduler")
            .map(|(_, _, class)| class.clone())
            .ok_or_else(|| Error::Unsupported {
                path: root.join("model_index.json").display().to_string(),
                reason: "the pipeline has no scheduler component".to_owned(),
            })?;
        Ok(Pipeline {
            root: root.to_path_buf(),
            text: TextEncoders::load_with_kind(root, kind)?,
            unet: UNet2DConditionModel::load_with_kind(&root.join("unet"), kind)?,
            vae: AutoencoderKL::load_with_kind(&root.join("vae"), kind)?,
            scheduler_config,
            default_scheduler,
            controlnet_locator: ControlNetLocator::default(),
            controlnets: RefCell::new(ControlNetCache::default()),
            lora_dir: None,
        })
    }

    /// Where a ControlNet unit without `model_path` finds its model: `<dir>/<type>`.
    pub fn set_controlnet_dir(&mut self, dir: Option<PathBuf>) {
        self.controlnet_locator.controlnet_dir = dir;
    }

    /// The folder relative LoRA names are resolved in (`None`: the working directory).
    pub fn set_lora_dir(&mut self, lora_dir: Option<PathBuf>) {
        self.lora_dir = lora_dir;
    }

    pub fn lora_dir(&self) -> Option<&Path> {
        self.lora_dir.as_deref()
    }

    /// The LoRA-able layers of a component (`None` for a text encoder the pipeline lacks).
    pub fn lora_targets(&self, component: Component) -> Option<&LoraTargets> {
        match component {
            Component::Unet => Some(self.unet.lora_targets()),
            Component::TextEncoder | Component::TextEncoder2 => {
                self.text.lora_targets(component.name())
            }
        }
    }

    /// What a LoRA file is read against.
    pub fn adapter_targets(&self) -> AdapterTargets<'_> {
        AdapterTargets {
            unet: self.unet.lora_targets(),
            text_encoder: self.text.lora_targets(Component::TextEncoder.name()),
            text_encoder_2: self.text.lora_targets(Component::TextEncoder2.name()),
            layers_per_block: self.unet.scalar_layers_per_block(),
        }
    }

    /// diffusers' `load_lora_weights` for each LoRA, then `set_adapters(names, weights)`: drops
    /// whatever was active, reads the files and adds their branches to the layers, in order.
    /// The base weights are not touched; [`Self::clear_loras`] returns to the base model. On an
    /// error nothing stays active.
    pub fn activate_loras(&self, loras: &[LoraSpec]) -> Result<Vec<AppliedLora>> {
        self.clear_loras();
        let result = self.add_loras(loras);
        if result.is_err() {
            self.clear_loras();
        }
        result
    }

    fn add_loras(&self, loras: &[LoraSpec]) -> Result<Vec<AppliedLora>> {
        let resolved = lora::resolve_all(loras, self.lora_dir.as_deref(), LORA_MODELS_POINTER)?;
        let targets = self.adapter_targets();
        let adapters = resolved
            .iter()
            .map(|(_, path, _)| LoraAdapter::load(path, &targets, self.kind()))
            .collect::<Result<Vec<_>>>()?;
        let mut applied = Vec::with_capacity(adapters.len());
        for ((adapter_name, path, weight), adapter) in resolved.into_iter().zip(&adapters) {
            for module in adapter.modules() {
                let target = self
                    .lora_targets(module.component)
                    .and_then(|targets| targets.get(&module.module))
                    .ok_or_else(|| Error::LoraKey {
                        path: path.clone(),
                        key: module.down_key.clone(),
                        message: format!("no module `{}`", module.module),
                    })?;
                target.slot.push(lora::layer::Branch {
                    down: module.down.shallow_clone(),
                    up: module.up.shallow_clone(),
                    scaling: module.scaling(weight),
                });
            }
            applied.push(AppliedLora {
                adapter_name,
                path,
                weight,
                modules: adapter.modules().len(),
            });
        }
        Ok(applied)
    }

    /// Drops every active LoRA branch (`unload_lora_weights`).
    pub fn clear_loras(&self) {
        for component in Component::ALL {
            if let Some(targets) = self.lora_targets(component) {
                targets.clear();
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The dtype the pipeline was loaded in.
    pub fn kind(&self) -> Kind {
        self.unet.kind()
    }

    /// Renders one request; image *i* is exactly diffusers' image *i* for the same request. The
    /// request's LoRAs are active during the render only.
    pub fn render(&self, request: &RenderRequest) -> Result<Rendered> {
        let started = Instant::now();
        let _guard = tch::no_grad_guard();
        if request.kind != self.kind() {
            return Err(Error::Unsupported {
                path: "/data/precision/dtype".into(),
                reason: format!(
                    "the pipeline was loaded as {:?}, the request asks for {:?}",
                    self.kind(),
                    request.kind
                ),
            });
        }
        let loras = self.activate_loras(&request.loras)?;
        let rendered = self.render_active(request, started);
        self.clear_loras();
        let mut rendered = rendered?;
        rendered.loras = loras;
        Ok(rendered)
    }

    /// [`Self::render`] with the request's LoRAs active.
    fn render_active(&self, request: &RenderRequest, started: Instant) -> Result<Rendered> {
        let class = request
            .scheduler
            .clone()
            .unwrap_or_else(|| self.default_scheduler.clone());
        let mut scheduler =
            scheduler_for(&class, &self.scheduler_config, &request.scheduler_options)?;
        let vae_scale_factor = self.vae.config().scale_factor() as i64;
        if request.width % vae_scale_factor != 0 || request.height % vae_scale_factor != 0 {
            return Err(Error::Unsupported {
                path: "/data/dimensions".into(),
                reason: format!("width and height must be multiples of {vae_scale_factor}"),
            });
        }
        let n = request.seeds.len() as i64;
        let do_cfg =
            request.guidance_scale > 1.0 && self.unet.config().time_cond_proj_dim.is_none();

        // load_textual_inversion, for this request only.
        let textual_inversions = request
            .textual_inversions
            .iter()
            .enumerate()
            .map(|(i, ti)| {
                TextualInversion::load(&ti.path, ti.token.as_deref()).map_err(|error| {
                    Error::Unsupported {
                        path: format!("/data/textual_inversions/{i}"),
                        reason: error.to_string(),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = PromptOptions {
            clip_skip: request.clip_skip,
            prompt_attention: request.prompt_attention,
            textual_inversions: &textual_inversions,
        };

        // 3. encode_prompt (num_images_per_prompt = n): repeat(1, n, 1).view(n, seq, -1).
        let encoded = self.text.encode_prompt_with(
            &request.prompt,
            request.negative_prompt.as_deref(),
            do_cfg,
            &options,
        )?;
        let repeat_embeds = |t: &Tensor| -> Result<Tensor> {
            let size = t.size();
            Ok(t.f_repeat([1, n, 1])?.f_view([n, size[1], -1])?)
        };
        let repeat_pooled =
            |t: &Tensor| -> Result<Tensor> { Ok(t.f_repeat([1, n])?.f_view([n, -1])?) };
        let mut prompt_embeds = repeat_embeds(&encoded.positive.prompt_embeds)?;
        let mut add_text_embeds = repeat_pooled(&encoded.positive.pooled_prompt_embeds)?;

        // 4. timesteps.
        scheduler.set_timesteps(request.num_inference_steps)?;
        let timesteps = scheduler.timestep_values();

        // 5. latents: one draw per image from its own generator, times init_noise_sigma.
        let latent_channels = self.unet.config().in_channels as i64;
        let shape = [
            n,
            latent_channels,
            request.height / vae_scale_factor,
            request.width / vae_scale_factor,
        ];
        let mut generators = request
            .seeds
            .iter()
            .map(|s| Generator::new(*s))
            .collect::<Result<Vec<_>>>()?;
        // prepare_latents(..., prompt_embeds.dtype): randn drawn in that dtype directly.
        let latents = randn_tensor(&shape, &mut generators, prompt_embeds.kind())?;
        let mut latents = latents.f_mul_scalar(scheduler.init_noise_sigma()?)?;

        // 7. added time ids: (original_size, crops_coords_top_left, target_size), as
        // torch.tensor([...], dtype=prompt_embeds.dtype).
        let (h, w) = (request.height as f32, request.width as f32);
        let add_time_ids = Tensor::from_slice(&[h, w, 0.0, 0.0, h, w])
            .f_view([1, 6])?
            .f_to_kind(prompt_embeds.kind())?;
        let mut add_time_ids_all = add_time_ids.shallow_clone();
        if do_cfg {
            let negative = encoded.negative.as_ref().ok_or_else(|| {
                Error::Torch("encode_prompt returned no negative embeddings with guidance".into())
            })?;
            prompt_embeds =
                Tensor::f_cat(&[repeat_embeds(&negative.prompt_embeds)?, prompt_embeds], 0)?;
            add_text_embeds = Tensor::f_cat(
                &[
                    repeat_pooled(&negative.pooled_prompt_embeds)?,
                    add_text_embeds,
                ],
                0,
            )?;
            add_time_ids_all = Tensor::f_cat(&[&add_time_ids, &add_time_ids], 0)?;
        }
        let add_time_ids_all = add_time_ids_all.f_repeat([n, 1])?;

        // 4. prepare image (ControlNet), 7.1 controlnet_keep (per step, in the stack)
        let mut cache = self.controlnets.borrow_mut();
        let control = if request.controlnets.is_empty() {
            None
        } else {
            Some(ControlNetStack::prepare(
                &mut cache,
                &self.controlnet_locator,
                &request.controlnets,
                RenderShape {
                    width: u32::try_from(request.width).map_err(|_| dimension_error())?,
                    height: u32::try_from(request.height).map_err(|_| dimension_error())?,
                    vae_scale_factor: vae_scale_factor as u32,
                    batch: n,
                    kind: self.kind(),
                    do_cfg,
                    timesteps: timesteps.len(),
                },
            )?)
        };

        // 8. denoising loop.
        let timestep_tensor = scheduler.timesteps().shallow_clone();
        let mut unet_evaluations = 0;
        for (i, t) in timesteps.iter().enumerate() {
            let latent_model_input = if do_cfg {
                Tensor::f_cat(&[&latents, &latents], 0)?
            } else {
                latents.shallow_clone()
            };
            let latent_model_input = scheduler.scale_model_input(&latent_model_input, *t)?;
            let timestep = timestep_tensor.f_get(i as i64)?;
            let residuals = match &control {
                Some(control) => control.residuals(
                    i,
                    &latent_model_input,
                    &timestep,
                    &prompt_embeds,
                    &add_text_embeds,
                    &add_time_ids_all,
                )?,
                None => None,
            };
            let noise_pred = self.unet.forward_with_control(
                &latent_model_input,
                &timestep,
                &prompt_embeds,
                &add_text_embeds,
                &add_time_ids_all,
                residuals.as_ref(),
            )?;
            unet_evaluations += 1;
            let noise_pred = if do_cfg {
                let chunks = noise_pred.f_chunk(2, 0)?;
                let (uncond, text) = (&chunks[0], &chunks[1]);
                uncond.f_add(&text.f_sub(uncond)?.f_mul_scalar(request.guidance_scale)?)?
            } else {
                noise_pred
            };
            latents = scheduler.step(&noise_pred, *t, &latents, &mut generators)?;
        }

        // 9. decode and post-process.
        let latents = latents.f_div_scalar(self.vae.config().scaling_factor)?;
        let image = self.vae.decode(&latents)?;
        let images = postprocess(&image)?;
        Ok(Rendered {
            images,
            seeds: request.seeds.clone(),
            scheduler: class,
            unet_evaluations,
            seconds: started.elapsed().as_secs_f64(),
            warnings: encoded.truncation_warnings,
            loras: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(precision: Value) -> Value {
        json!({"prompt": "a cat", "hyperparameters": {"seed": 1}, "precision": precision})
    }

    #[test]
    fn precision_dtype_selects_the_kind() {
        let kind = |precision| RenderRequest::from_v2_data(&data(precision), |_| 0).map(|r| r.kind);
        assert_eq!(kind(Value::Null).unwrap(), Kind::Float);
        assert_eq!(kind(json!({"dtype": "float32"})).unwrap(), Kind::Float);
        assert_eq!(kind(json!({"dtype": "bfloat16"})).unwrap(), Kind::BFloat16);
        match kind(json!({"dtype": "float16"})) {
            Err(Error::Unsupported { path, .. }) => assert_eq!(path, "/data/precision/dtype"),
            other => panic!("float16 on CPU should be refused, got {other:?}"),
        }
    }

    #[test]
    fn issue_6_fields_are_read() {
        let mut value = data(Value::Null);
        value["clip_skip"] = json!(2);
        value["prompt_attention"] = json!("compel");
        value["textual_inversions"] = json!([
            {"path": "a.safetensors", "token": "<a>"},
            {"path": "/abs/b.safetensors"}
        ]);
        let request = RenderRequest::from_v2_data(&value, |_| 0).unwrap();
        assert_eq!(request.clip_skip, Some(2));
        assert_eq!(request.prompt_attention, PromptAttention::Compel);
        assert_eq!(
            request.textual_inversions,
            vec![
                TextualInversionRef {
                    token: Some("<a>".into()),
                    path: PathBuf::from("a.safetensors")
                },
                TextualInversionRef {
                    token: None,
                    path: PathBuf::from("/abs/b.safetensors")
                },
            ]
        );
        let mut value = data(Value::Null);
        value["prompt_attention"] = json!("none");
        value["textual_inversions"] = json!([]);
        let request = RenderRequest::from_v2_data(&value, |_| 0).unwrap();
        assert_eq!(request.prompt_attention, PromptAttention::None);
        assert!(request.textual_inversions.is_empty());
        assert_eq!(request.clip_skip, None);
        value["prompt_attention"] = json!("sd-webui");
        match RenderRequest::from_v2_data(&value, |_| 0) {
            Err(Error::Unsupported { path, .. }) => assert_eq!(path, "/data/prompt_attention"),
            other => panic!("an unknown syntax should be refused, got {other:?}"),
        }
    }
}
