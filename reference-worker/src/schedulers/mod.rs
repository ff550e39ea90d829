//! diffusers' schedulers, one module per class, behind one [`Scheduler`] interface shaped after
//! what the SDXL pipelines call:
//!
//! ```text
//! scheduler.set_timesteps(num_inference_steps)
//! latents = randn(...) * scheduler.init_noise_sigma()
//! for t in scheduler.timestep_values():              // order() UNet calls per step for Heun/KDPM2
//!     x = scheduler.scale_model_input(latents, t)
//!     noise_pred = unet(x, t, ...)                    // + classifier-free guidance
//!     latents = scheduler.step(noise_pred, t, latents, generators)
//! ```
//!
//! Schedulers are built as `SchedulerClass.from_config(base_config, **scheduler_options)`
//! (PROTOCOL B.9) by [`scheduler_for`].

pub mod ddim;
pub mod ddpm;
pub mod discrete;
pub mod dpm_common;
pub mod dpm_solver_multistep;
pub mod dpm_solver_singlestep;
pub mod euler_ancestral_discrete;
pub mod euler_discrete;
pub mod heun_discrete;
pub mod k_discrete;
pub mod kdpm2_ancestral_discrete;
pub mod kdpm2_discrete;
pub mod lms_discrete;
pub mod noise_schedule;
pub mod numpy;
pub mod pndm;
pub mod sigmas;
pub mod thresholding;
pub mod unipc_multistep;

use serde_json::{Map, Value};
use tch::Tensor;

use crate::config::{ConfigFile, SchedulerConfig};
use crate::error::{Error, Result};
use crate::generator::Generator;

pub use ddim::DDIMScheduler;
pub use ddpm::DDPMScheduler;
pub use dpm_solver_multistep::DPMSolverMultistepScheduler;
pub use dpm_solver_singlestep::DPMSolverSinglestepScheduler;
pub use euler_ancestral_discrete::EulerAncestralDiscreteScheduler;
pub use euler_discrete::EulerDiscreteScheduler;
pub use heun_discrete::HeunDiscreteScheduler;
pub use kdpm2_ancestral_discrete::KDPM2AncestralDiscreteScheduler;
pub use kdpm2_discrete::KDPM2DiscreteScheduler;
pub use lms_discrete::LMSDiscreteScheduler;
pub use pndm::PNDMScheduler;
pub use unipc_multistep::UniPCMultistepScheduler;

/// One diffusers scheduler, with its state between calls (step index, multistep history).
pub trait Scheduler: Send + std::fmt::Debug {
    /// The diffusers class name, e.g. `EulerDiscreteScheduler`.
    fn class_name(&self) -> &'static str;

    /// diffusers' `order`: model evaluations per solver step (2 for Heun and KDPM2). The
    /// pipeline calls the UNet once per entry of [`Self::timesteps`] regardless.
    fn order(&self) -> usize;

    /// `set_timesteps(num_inference_steps)`: builds the inference schedule and resets the state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// `scheduler.timesteps`, in the dtype diffusers leaves them (float32 for the sigma-based
    /// schedulers, int64 for DDIM, DDPM, PNDM, ...).
    fn timesteps(&self) -> &Tensor;

    /// `scheduler.sigmas` (float32) for the classes that keep a sigma table; `None` for the
    /// others (DDIM, DDPM, PNDM).
    fn sigmas(&self) -> Option<&Tensor> {
        None
    }

    /// The timesteps as numbers, in order (each exactly the value in [`Self::timesteps`]).
    fn timestep_values(&self) -> Vec<f64>;

    /// `init_noise_sigma`: what the initial Gaussian latents are multiplied by. The value is the
    /// float32 (or Python float) diffusers computes, held exactly.
    fn init_noise_sigma(&self) -> Result<f64>;

    /// `set_begin_index(begin_index)`, which img2img pipelines call so the first step does not
    /// search the timestep; schedulers that lack the method in diffusers ignore it, as diffusers'
    /// `hasattr` check does.
    fn set_begin_index(&mut self, begin_index: usize);

    /// `scale_model_input(sample, timestep)`: the UNet input for `timestep`, a value of
    /// [`Self::timestep_values`].
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor>;

    /// `step(model_output, timestep, sample, generator=generators).prev_sample`. Stochastic
    /// schedulers draw their noise as diffusers' `randn_tensor` does with a list of generators:
    /// image *i* of the batch from `generators[i]` (one generator draws for the whole batch).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        generators: &mut [Generator],
    ) -> Result<Tensor>;
}

/// The twelve scheduler classes of PROTOCOL B.4 (diffusers class names), in the table's order.
pub const PROTOCOL_SCHEDULERS: [&str; 12] = [
    "DPMSolverMultistepScheduler",
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverSinglestepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "UniPCMultistepScheduler",
    "PNDMScheduler",
    "DDPMScheduler",
];

/// The schedulers of PROTOCOL B.4 (diffusers class names) this worker implements.
pub const IMPLEMENTED: &[&str] = &[
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "LMSDiscreteScheduler",
];

/// `class_name.from_config(base, **options)`: `options` (the request's `scheduler_options`)
/// override the keys of `scheduler_config.json`; keys the class does not take are ignored, and
/// keys the file lacks take the class's own defaults, as in diffusers.
pub fn scheduler_for(
    class_name: &str,
    base: &SchedulerConfig,
    options: &Map<String, Value>,
) -> Result<Box<dyn Scheduler>> {
    let config = base.file.with_overrides(options, "scheduler_options");
    match class_name {
        "EulerDiscreteScheduler" => Ok(Box::new(EulerDiscreteScheduler::from_config(&config)?)),
        "EulerAncestralDiscreteScheduler" => Ok(Box::new(
            EulerAncestralDiscreteScheduler::from_config(&config)?,
        )),
        "KDPM2DiscreteScheduler" => Ok(Box::new(KDPM2DiscreteScheduler::from_config(&config)?)),
        "KDPM2AncestralDiscreteScheduler" => Ok(Box::new(
            KDPM2AncestralDiscreteScheduler::from_config(&config)?,
        )),
        "HeunDiscreteScheduler" => Ok(Box::new(HeunDiscreteScheduler::from_config(&config)?)),
        "DDIMScheduler" => Ok(Box::new(DDIMScheduler::from_config(&config)?)),
        "DDPMScheduler" => Ok(Box::new(DDPMScheduler::from_config(&config)?)),
        "PNDMScheduler" => Ok(Box::new(PNDMScheduler::from_config(&config)?)),
        "UniPCMultistepScheduler" => Ok(Box::new(UniPCMultistepScheduler::from_config(&config)?)),
        "DPMSolverMultistepScheduler" => {
            Ok(Box::new(DPMSolverMultistepScheduler::from_config(&config)?))
        }
        "DPMSolverSinglestepScheduler" => Ok(Box::new(DPMSolverSinglestepScheduler::from_config(
            &config,
        )?)),
        "LMSDiscreteScheduler" => Ok(Box::new(LMSDiscreteScheduler::from_config(&config)?)),
        _ => Err(Error::UnknownScheduler {
            name: class_name.to_owned(),
            known: IMPLEMENTED.to_vec(),
        }),
    }
}

/// `prediction_type`: what the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    /// `sample` (and its old name `original_sample`).
    Sample,
    VPrediction,
}

impl PredictionType {
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        match c.string_or("prediction_type", "epsilon")?.as_str() {
            "epsilon" => Ok(Self::Epsilon),
            "sample" | "original_sample" => Ok(Self::Sample),
            "v_prediction" => Ok(Self::VPrediction),
            other => Err(c.invalid(
                "prediction_type",
                format!("`{other}` is not one of epsilon, sample, v_prediction"),
            )),
        }
    }
}

/// `timestep_spacing` (Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

impl TimestepSpacing {
    /// Reads `timestep_spacing`, taking `default` (the class's) when absent.
    pub fn from_config(c: &ConfigFile, default: &str) -> Result<Self> {
        match c.string_or("timestep_spacing", default)?.as_str() {
            "linspace" => Ok(Self::Linspace),
            "leading" => Ok(Self::Leading),
            "trailing" => Ok(Self::Trailing),
            other => Err(c.invalid(
                "timestep_spacing",
                format!("`{other}` is not one of linspace, leading, trailing"),
            )),
        }
    }
}

/// `config` without `keys` (set to `null`, which the accessors read as absent): what
/// `from_config` does with keys a class's `__init__` does not take.
pub(crate) fn without_keys(c: &ConfigFile, keys: &[&str]) -> ConfigFile {
    let present: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .filter(|key| c.raw(key).is_some())
        .map(|key| ((*key).to_owned(), serde_json::Value::Null))
        .collect();
    if present.is_empty() {
        c.clone()
    } else {
        c.with_overrides(&present, "keys the scheduler class does not take removed")
    }
}
