//! diffusers' `EulerDiscreteScheduler` (0.42.1), SDXL's default: tables in NumPy float64 and
//! float32 where diffusers builds them, `scale_model_input` and `step` as the same torch ops on
//! 0-d float32 sigma tensors (so dtype promotion and rounding match too).
//!
//! `step` follows the `s_churn = 0` path the SDXL pipeline takes (it never passes `s_churn`), so
//! it draws no noise.

use tch::{Device, Kind, Tensor};

use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::{k_discrete, numpy, sigmas, PredictionType, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;

const NAME: &str = "EulerDiscreteScheduler";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterpolationType {
    Linear,
    LogLinear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestepType {
    Discrete,
    Continuous,
}

/// The constructor arguments of `EulerDiscreteScheduler.__init__` that shape sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct EulerDiscreteConfig {
    pub prediction_type: PredictionType,
    pub interpolation_type: InterpolationType,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_spacing: TimestepSpacing,
    pub timestep_type: TimestepType,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    pub final_sigmas_type: FinalSigmasType,
}

impl EulerDiscreteConfig {
    /// Reads the keys with `EulerDiscreteScheduler`'s own defaults.
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        if c.bool_or("use_beta_sigmas", false)? {
            return Err(c.invalid(
                "use_beta_sigmas",
                "beta sigmas (scipy.stats.beta.ppf) are not supported by the reference worker",
            ));
        }
        let use_karras_sigmas = c.bool_or("use_karras_sigmas", false)?;
        let use_exponential_sigmas = c.bool_or("use_exponential_sigmas", false)?;
        if use_karras_sigmas && use_exponential_sigmas {
            return Err(c.invalid(
                "use_karras_sigmas",
                "only one of use_karras_sigmas and use_exponential_sigmas can be set",
            ));
        }
        let interpolation_type = match c.string_or("interpolation_type", "linear")?.as_str() {
            "linear" => InterpolationType::Linear,
            "log_linear" => InterpolationType::LogLinear,
            other => {
                return Err(c.invalid(
                    "interpolation_type",
                    format!("`{other}` is not one of linear, log_linear"),
                ))
            }
        };
        let final_sigmas_type = match c.string_or("final_sigmas_type", "zero")?.as_str() {
            "zero" => FinalSigmasType::Zero,
            "sigma_min" => FinalSigmasType::SigmaMin,
            other => {
                return Err(c.invalid(
                    "final_sigmas_type",
                    format!("`{other}` is not one of zero, sigma_min"),
                ))
            }
        };
        let timestep_type = match c.string_or("timestep_type", "discrete")?.as_str() {
            "discrete" => TimestepType::Discrete,
            "continuous" => TimestepType::Continuous,
            other => {
                return Err(c.invalid(
                    "timestep_type",
                    format!("`{other}` is not one of discrete, continuous"),
                ))
            }
        };
        Ok(Self {
            prediction_type: PredictionType::from_config(c)?,
            interpolation_type,
            use_karras_sigmas,
            use_exponential_sigmas,
            sigma_min: c.opt_f64("sigma_min")?,
            sigma_max: c.opt_f64("sigma_max")?,
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            timestep_type,
            steps_offset: c.usize_or("steps_offset", 0)?,
            rescale_betas_zero_snr: c.bool_or("rescale_betas_zero_snr", false)?,
            final_sigmas_type,
        })
    }

    /// diffusers' "EDM" branch: timesteps `0.25 * log(sigma)` instead of training steps.
    fn continuous_v(&self) -> bool {
        self.timestep_type == TimestepType::Continuous
            && self.prediction_type == PredictionType::VPrediction
    }
}

#[derive(Debug)]
pub struct EulerDiscreteScheduler {
    config: EulerDiscreteConfig,
    num_train_timesteps: usize,
    /// float32 `alphas_cumprod` (with the zero-SNR tweak when configured).
    alphas_cumprod: Tensor,
    /// float32 `timesteps`, as diffusers leaves them.
    timesteps: Tensor,
    timestep_values: Vec<f32>,
    /// float32 `sigmas` (one more than `timesteps`, normally; see `set_timesteps`).
    sigmas: Tensor,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl EulerDiscreteScheduler {
    /// `EulerDiscreteScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = EulerDiscreteConfig::from_file(c)?;
        let schedule = TrainingSchedule::from_config(c, TrainingDefaults::COMMON)?;
        let alphas_cumprod = schedule.alphas_cumprod;
        if config.rescale_betas_zero_snr {
            // "Close to 0 without being 0 so first sigma is not inf"
            let _ = alphas_cumprod.f_get(-1)?.f_fill_(2f64.powi(-24))?;
        }
        let n = schedule.num_train_timesteps;
        let sigmas = train_sigmas(&alphas_cumprod)?.f_flip([0])?;
        let timestep_values: Vec<f32> = numpy::linspace(0.0, (n - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect();
        let mut scheduler = Self {
            num_train_timesteps: n,
            alphas_cumprod,
            timesteps: Tensor::from_slice(&timestep_values),
            timestep_values,
            sigmas: Tensor::f_cat(
                &[&sigmas, &Tensor::zeros([1], (Kind::Float, Device::Cpu))],
                0,
            )?,
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
            config,
        };
        if scheduler.config.continuous_v() {
            let sigmas: Vec<f32> = Vec::<f32>::try_from(&sigmas)?;
            scheduler.set_continuous_timesteps(&sigmas)?;
        }
        Ok(scheduler)
    }

    pub fn config(&self) -> &EulerDiscreteConfig {
        &self.config
    }

    /// float32 sigmas of the current schedule.
    pub fn sigmas(&self) -> &Tensor {
        &self.sigmas
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    pub fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    /// `torch.Tensor([0.25 * sigma.log() for sigma in sigmas])`: one 0-d op per sigma, as the
    /// list comprehension does (the scalar path of torch's log kernel).
    fn set_continuous_timesteps(&mut self, sigmas: &[f32]) -> Result<()> {
        let mut values = Vec::with_capacity(sigmas.len());
        for &sigma in sigmas {
            let t = Tensor::from(sigma).f_log()?.f_mul_scalar(0.25)?;
            values.push(t.f_double_value(&[])? as f32);
        }
        self.timesteps = Tensor::from_slice(&values);
        self.timestep_values = values;
        Ok(())
    }

    /// `index_for_timestep`: the position of `timestep` in the schedule; the second one when it
    /// occurs twice (diffusers' rule for starting mid-schedule).
    fn index_for_timestep(&self, timestep: f64) -> Result<usize> {
        let indices: Vec<usize> = self
            .timestep_values
            .iter()
            .enumerate()
            .filter(|(_, &t)| f64::from(t) == timestep)
            .map(|(i, _)| i)
            .collect();
        let position = if indices.len() > 1 { 1 } else { 0 };
        indices
            .get(position)
            .copied()
            .ok_or_else(|| Error::SchedulerUsage {
                scheduler: NAME,
                message: format!("timestep {timestep} is not in the schedule"),
            })
    }

    fn init_step_index(&mut self, timestep: f64) -> Result<usize> {
        let index = match self.begin_index {
            Some(begin) => begin,
            None => self.index_for_timestep(timestep)?,
        };
        self.step_index = Some(index);
        Ok(index)
    }

    /// `self.sigmas[index]` as the 0-d float32 tensor diffusers computes with.
    fn sigma_at(&self, index: usize) -> Result<Tensor> {
        let len = self.sigmas.size()[0] as usize;
        if index >= len {
            return Err(Error::SchedulerUsage {
                scheduler: NAME,
                message: format!(
                    "step index {index} is past the end of the schedule ({len} sigmas); \
                     call set_timesteps before denoising again"
                ),
            });
        }
        Ok(self.sigmas.f_get(index as i64)?)
    }
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32 torch ops, ascending in `t`.
fn train_sigmas(alphas_cumprod: &Tensor) -> Result<Tensor> {
    Ok(alphas_cumprod
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_div(alphas_cumprod)?
        .f_pow_tensor_scalar(0.5)?)
}

impl Scheduler for EulerDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(Error::SchedulerUsage {
                scheduler: NAME,
                message: "num_inference_steps must be at least 1".to_owned(),
            });
        }
        let config = &self.config;
        let n_train = self.num_train_timesteps;
        self.num_inference_steps = Some(num_inference_steps);

        // Timesteps as NumPy float32 values (held in f64, which holds them exactly).
        let mut timesteps: Vec<f64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => {
                numpy::linspace(0.0, (n_train - 1) as f64, num_inference_steps)
                    .into_iter()
                    .rev()
                    .map(|t| f64::from(t as f32))
                    .collect()
            }
            TimestepSpacing::Leading => {
                let step_ratio = n_train / num_inference_steps;
                (0..num_inference_steps)
                    .rev()
                    .map(|i| f64::from((i * step_ratio) as f32 + config.steps_offset as f32))
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let step_ratio = n_train as f64 / num_inference_steps as f64;
                numpy::arange(n_train as f64, 0.0, -step_ratio)
                    .into_iter()
                    .map(|t| f64::from(t.round_ties_even() as f32 - 1.0))
                    .collect()
            }
        };

        // np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5): float32, ascending.
        let train_sigmas: Vec<f32> = Vec::<f32>::try_from(&train_sigmas(&self.alphas_cumprod)?)?;
        let log_sigmas: Vec<f32> = train_sigmas.iter().map(|&s| numpy::log_f32(s)).collect();
        let mut sigmas: Vec<f64> = match config.interpolation_type {
            InterpolationType::Linear => {
                let xp: Vec<f64> = (0..train_sigmas.len()).map(|i| i as f64).collect();
                let fp: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
                numpy::interp(&timesteps, &xp, &fp)
            }
            InterpolationType::LogLinear => {
                // torch.linspace(np.log(sigmas[-1]), np.log(sigmas[0]), n + 1).exp().numpy()
                let start = f64::from(numpy::log_f32(train_sigmas[train_sigmas.len() - 1]));
                let end = f64::from(numpy::log_f32(train_sigmas[0]));
                let values = Tensor::f_linspace(
                    start,
                    end,
                    num_inference_steps as i64 + 1,
                    (Kind::Float, Device::Cpu),
                )?
                .f_exp()?;
                Vec::<f32>::try_from(&values)?
                    .into_iter()
                    .map(f64::from)
                    .collect()
            }
        };

        if config.use_karras_sigmas || config.use_exponential_sigmas {
            sigmas = if config.use_karras_sigmas {
                sigmas::karras(
                    &sigmas,
                    num_inference_steps,
                    config.sigma_min,
                    config.sigma_max,
                )
            } else {
                sigmas::exponential(
                    &sigmas,
                    num_inference_steps,
                    config.sigma_min,
                    config.sigma_max,
                )
            };
            timesteps = sigmas
                .iter()
                .map(|&sigma| sigmas::sigma_to_t(sigma, &log_sigmas))
                .collect();
        }

        let sigma_last = match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => train_sigmas_at_zero(&self.alphas_cumprod)?,
        };
        // np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        let sigmas_f32: Vec<f32> = sigmas
            .iter()
            .chain(std::iter::once(&sigma_last))
            .map(|&s| s as f32)
            .collect();
        self.sigmas = Tensor::from_slice(&sigmas_f32);

        if config.continuous_v() {
            self.set_continuous_timesteps(&sigmas_f32[..sigmas_f32.len() - 1])?;
        } else {
            let values: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
            self.timesteps = Tensor::from_slice(&values);
            self.timestep_values = values;
        }
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
        self.timestep_values.iter().map(|&t| f64::from(t)).collect()
    }

    fn init_noise_sigma(&self) -> Result<f64> {
        k_discrete::init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = match self.step_index {
            Some(index) => index,
            None => self.init_step_index(timestep)?,
        };
        k_discrete::scale_by_sigma(sample, &self.sigma_at(index)?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        let index = match self.step_index {
            Some(index) => index,
            None => self.init_step_index(timestep)?,
        };
        // Upcast to avoid precision issues when computing prev_sample.
        let sample = sample.f_to_kind(Kind::Float)?;
        let sigma = self.sigma_at(index)?;
        let next_sigma = self.sigma_at(index + 1)?;
        // s_churn = 0: gamma = 0.0, sigma_hat = sigma * (gamma + 1)
        let sigma_hat = sigma.f_mul_scalar(1.0)?;

        let pred_original_sample = match self.config.prediction_type {
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::Epsilon => sample.f_sub(&sigma_hat.f_mul(model_output)?)?,
            PredictionType::VPrediction => {
                // model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
                let sigma_sq_plus_one = sigma.f_pow_tensor_scalar(2)?.f_add_scalar(1)?;
                let c_out = sigma
                    .f_neg()?
                    .f_div(&sigma_sq_plus_one.f_pow_tensor_scalar(0.5)?)?;
                model_output
                    .f_mul(&c_out)?
                    .f_add(&sample.f_div(&sigma_sq_plus_one)?)?
            }
        };
        let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma_hat)?;
        let dt = next_sigma.f_sub(&sigma_hat)?;
        let prev_sample = sample.f_add(&derivative.f_mul(&dt)?)?;
        let prev_sample = prev_sample.f_to_kind(model_output.kind())?;
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}

/// `((1 - alphas_cumprod[0]) / alphas_cumprod[0]) ** 0.5` (a 0-d float32 tensor in diffusers).
fn train_sigmas_at_zero(alphas_cumprod: &Tensor) -> Result<f64> {
    let first = alphas_cumprod.f_get(0)?;
    Ok(first
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_div(&first)?
        .f_pow_tensor_scalar(0.5)?
        .f_double_value(&[])?)
}
