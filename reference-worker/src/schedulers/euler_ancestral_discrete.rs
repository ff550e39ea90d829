//! diffusers' `EulerAncestralDiscreteScheduler` (0.42.1): Euler steps down to `sigma_down`, then
//! fresh noise times `sigma_up` drawn with `randn_tensor(model_output.shape, generator=...)`.
//! Tables in NumPy float64 / float32 where diffusers builds them, `scale_model_input` and `step`
//! as the same torch ops on 0-d float32 sigma tensors.

use tch::{Kind, Tensor};

use super::k_discrete::{self, TrainingOptions};
use super::noise_schedule::TrainingDefaults;
use super::{numpy, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::noise::randn_tensor;

const NAME: &str = "EulerAncestralDiscreteScheduler";

/// `prediction_type` as this class's `step` takes it: `sample` raises NotImplementedError there,
/// so it is refused when the scheduler is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AncestralPrediction {
    Epsilon,
    VPrediction,
}

impl AncestralPrediction {
    /// `prediction_type` for the classes whose `step` implements only epsilon and v_prediction
    /// (Euler ancestral, KDPM2, KDPM2 ancestral).
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        match c.string_or("prediction_type", "epsilon")?.as_str() {
            "epsilon" => Ok(Self::Epsilon),
            "v_prediction" => Ok(Self::VPrediction),
            "sample" => Err(c.invalid(
                "prediction_type",
                "prediction_type not implemented yet: sample (diffusers raises \
                 NotImplementedError in step)",
            )),
            other => Err(c.invalid(
                "prediction_type",
                format!(
                    "prediction_type given as {other} must be one of `epsilon`, or `v_prediction`"
                ),
            )),
        }
    }

    /// `pred_original_sample` for `sigma_input`.
    pub fn x0(self, model_output: &Tensor, sample: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        match self {
            Self::Epsilon => k_discrete::epsilon_x0(model_output, sample, sigma),
            Self::VPrediction => k_discrete::v_prediction_x0(model_output, sample, sigma),
        }
    }
}

/// The constructor arguments of `EulerAncestralDiscreteScheduler.__init__` that shape sampling
/// (the training schedule aside).
#[derive(Debug, Clone, PartialEq)]
pub struct EulerAncestralDiscreteConfig {
    pub prediction_type: AncestralPrediction,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
}

impl EulerAncestralDiscreteConfig {
    /// Reads the keys with `EulerAncestralDiscreteScheduler`'s own defaults (it takes no
    /// `use_karras_sigmas` & co: `from_config` ignores them).
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        Ok(Self {
            prediction_type: AncestralPrediction::from_config(c)?,
            timestep_spacing: super::TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            rescale_betas_zero_snr: c.bool_or("rescale_betas_zero_snr", false)?,
        })
    }
}

#[derive(Debug)]
pub struct EulerAncestralDiscreteScheduler {
    config: EulerAncestralDiscreteConfig,
    num_train_timesteps: usize,
    /// float32 training sigmas `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, ascending.
    train_sigmas: Vec<f32>,
    /// `timesteps`: float64 training steps after `__init__`, float32 after `set_timesteps`.
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// float32 `sigmas` (one more than `timesteps`, the last 0).
    sigmas: Tensor,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl EulerAncestralDiscreteScheduler {
    /// `EulerAncestralDiscreteScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = EulerAncestralDiscreteConfig::from_file(c)?;
        let schedule = k_discrete::training_schedule(
            c,
            TrainingOptions {
                defaults: TrainingDefaults::COMMON,
                rescale_betas_zero_snr: true,
                exp_beta_schedule: false,
            },
        )?;
        if config.rescale_betas_zero_snr {
            k_discrete::zero_snr_tweak(&schedule.alphas_cumprod)?;
        }
        let n = schedule.num_train_timesteps;
        let train_sigmas = k_discrete::train_sigmas(&schedule.alphas_cumprod)?;
        // np.concatenate([sigmas[::-1], [0.0]]).astype(np.float32)
        let sigmas: Vec<f32> = train_sigmas
            .iter()
            .rev()
            .copied()
            .chain(std::iter::once(0.0))
            .collect();
        // np.linspace(0, n - 1, n, dtype=float)[::-1]: float64
        let timestep_values: Vec<f64> = numpy::linspace(0.0, (n - 1) as f64, n)
            .into_iter()
            .rev()
            .collect();
        Ok(Self {
            config,
            num_train_timesteps: n,
            train_sigmas,
            timesteps: Tensor::from_slice(&timestep_values),
            timestep_values,
            sigmas: k_discrete::f32_tensor(&sigmas),
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
        })
    }

    pub fn config(&self) -> &EulerAncestralDiscreteConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// `_init_step_index(timestep)` when the step index is not set yet; the current index.
    fn current_index(&mut self, timestep: f64) -> Result<usize> {
        if self.num_inference_steps.is_none() {
            return Err(k_discrete::not_set(NAME));
        }
        if let Some(index) = self.step_index {
            return Ok(index);
        }
        let index = match self.begin_index {
            Some(begin) => begin,
            None => k_discrete::index_for_timestep(NAME, &self.timestep_values, timestep)?,
        };
        self.step_index = Some(index);
        Ok(index)
    }

    fn sigma_at(&self, index: usize) -> Result<Tensor> {
        k_discrete::at(NAME, &self.sigmas, "the sigmas", index)
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    /// `set_timesteps(num_inference_steps)`: spaced float32 timesteps, `np.interp` sigmas,
    /// `np.concatenate([sigmas, [0.0]]).astype(np.float32)`.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(Error::SchedulerUsage {
                scheduler: NAME,
                message: "num_inference_steps must be at least 1".to_owned(),
            });
        }
        let timesteps = k_discrete::spaced_timesteps(
            self.config.timestep_spacing,
            self.num_train_timesteps,
            num_inference_steps,
            self.config.steps_offset,
        );
        let sigmas = k_discrete::interp_sigmas(&timesteps, &self.train_sigmas);
        self.sigmas = k_discrete::f32_tensor(&k_discrete::sigmas_with_zero(&sigmas));
        let values: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        self.timesteps = k_discrete::f32_tensor(&values);
        self.timestep_values = timesteps;
        self.num_inference_steps = Some(num_inference_steps);
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &Tensor {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&Tensor> {
        Some(&self.sigmas)
    }

    fn timestep_values(&self) -> Vec<f64> {
        self.timestep_values.clone()
    }

    fn init_noise_sigma(&self) -> Result<f64> {
        k_discrete::init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// `sample / ((sigma**2 + 1) ** 0.5)` with `sigma = self.sigmas[self.step_index]`.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        k_discrete::scale_by_sigma(sample, &self.sigma_at(index)?)
    }

    /// diffusers' `step`, op for op: `sample.to(float32)`, `pred_original_sample`,
    /// `sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5`,
    /// `sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5`, the Euler step to `sigma_down`, then
    /// `+ randn_tensor(model_output.shape, dtype=model_output.dtype, generator) * sigma_up`, cast
    /// back to `model_output.dtype`.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        generators: &mut [Generator],
    ) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        let sigma = self.sigma_at(index)?;
        let sigma_to = self.sigma_at(index + 1)?;
        // Upcast to avoid precision issues when computing prev_sample.
        let sample = sample.f_to_kind(Kind::Float)?;
        let pred_original_sample = self
            .config
            .prediction_type
            .x0(model_output, &sample, &sigma)?;

        let sigma_from = &sigma;
        let from_sq = sigma_from.f_pow_tensor_scalar(2)?;
        let to_sq = sigma_to.f_pow_tensor_scalar(2)?;
        let sigma_up = to_sq
            .f_mul(&from_sq.f_sub(&to_sq)?)?
            .f_div(&from_sq)?
            .f_pow_tensor_scalar(0.5)?;
        let sigma_down = to_sq
            .f_sub(&sigma_up.f_pow_tensor_scalar(2)?)?
            .f_pow_tensor_scalar(0.5)?;

        // 2. Convert to an ODE derivative
        let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma)?;
        let dt = sigma_down.f_sub(&sigma)?;
        let prev_sample = sample.f_add(&derivative.f_mul(&dt)?)?;

        let noise = randn_tensor(&model_output.size(), generators, model_output.kind())?;
        // Drawn on the CPU (the generators are CPU generators), then moved to the output's device.
        let noise = noise.f_to_device(model_output.device())?;
        let prev_sample = prev_sample.f_add(&noise.f_mul(&sigma_up)?)?;
        let prev_sample = prev_sample.f_to_kind(model_output.kind())?;
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}
