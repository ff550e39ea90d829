//! diffusers' `DDIMScheduler` (0.42.1): int64 timesteps, `alphas_cumprod` in float32 torch ops,
//! and `step` as the same torch ops on 0-d float32 tensors (`alphas_cumprod[t]`), with the
//! `eta = 0.0` the SDXL pipeline passes (`prepare_extra_step_kwargs`), so it draws no noise.

use tch::Tensor;

use super::discrete::{self, one_minus, usage};
use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::thresholding::DynamicThresholding;
use super::{PredictionType, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::Result;
use crate::generator::Generator;

const NAME: &str = "DDIMScheduler";

/// The pipeline's `eta` (DDIM's η: 0 is deterministic DDIM).
const ETA: f64 = 0.0;

/// The constructor arguments of `DDIMScheduler.__init__` that shape sampling, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DdimConfig {
    pub prediction_type: PredictionType,
    /// `clip_sample` (default true) with `clip_sample_range` (default 1.0).
    pub clip_sample: Option<f64>,
    pub thresholding: Option<DynamicThresholding>,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl DdimConfig {
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let clip_sample_range = c.f64_or("clip_sample_range", 1.0)?;
        Ok(Self {
            prediction_type: PredictionType::from_config(c)?,
            clip_sample: c.bool_or("clip_sample", true)?.then_some(clip_sample_range),
            thresholding: DynamicThresholding::from_config(c)?,
            set_alpha_to_one: c.bool_or("set_alpha_to_one", true)?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            timestep_spacing: TimestepSpacing::from_config(c, "leading")?,
            rescale_betas_zero_snr: c.bool_or("rescale_betas_zero_snr", false)?,
        })
    }
}

#[derive(Debug)]
pub struct DDIMScheduler {
    config: DdimConfig,
    num_train_timesteps: usize,
    /// float32 `alphas_cumprod`.
    alphas_cumprod: Tensor,
    /// `final_alpha_cumprod`: `torch.tensor(1.0)` or `alphas_cumprod[0]` (0-d float32).
    final_alpha_cumprod: Tensor,
    /// int64 `timesteps`.
    timesteps: Tensor,
    timestep_values: Vec<i64>,
    num_inference_steps: Option<usize>,
}

impl DDIMScheduler {
    /// `DDIMScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = DdimConfig::from_file(c)?;
        let schedule = TrainingSchedule::from_config(c, TrainingDefaults::COMMON)?;
        let n = schedule.num_train_timesteps;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            Tensor::from(1.0f32)
        } else {
            schedule.alphas_cumprod.f_get(0)?
        };
        // np.arange(0, num_train_timesteps)[::-1]
        let timestep_values: Vec<i64> = (0..n as i64).rev().collect();
        Ok(Self {
            config,
            num_train_timesteps: n,
            alphas_cumprod: schedule.alphas_cumprod,
            final_alpha_cumprod,
            timesteps: discrete::int64_tensor(&timestep_values),
            timestep_values,
            num_inference_steps: None,
        })
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    /// `alphas_cumprod[t] if t >= 0 else final_alpha_cumprod` (0-d float32).
    fn alpha_prod(&self, t: i64) -> Result<Tensor> {
        if t >= 0 {
            Ok(self.alphas_cumprod.f_get(t)?)
        } else {
            Ok(self.final_alpha_cumprod.shallow_clone())
        }
    }
}

impl Scheduler for DDIMScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    /// `set_timesteps`: [`discrete::ddim_timesteps`], after diffusers' check that there are no
    /// more steps than training timesteps.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = discrete::ddim_schedule(
            NAME,
            self.config.timestep_spacing,
            self.num_train_timesteps,
            num_inference_steps,
            self.config.steps_offset,
        )?;
        self.num_inference_steps = Some(num_inference_steps);
        self.timesteps = discrete::int64_tensor(&timesteps);
        self.timestep_values = timesteps;
        Ok(())
    }

    fn timesteps(&self) -> &Tensor {
        &self.timesteps
    }

    fn timestep_values(&self) -> Vec<f64> {
        self.timestep_values.iter().map(|&t| t as f64).collect()
    }

    fn init_noise_sigma(&self) -> Result<f64> {
        Ok(1.0)
    }

    /// DDIM has no `set_begin_index`: ignored, as the pipeline's `hasattr` check does.
    fn set_begin_index(&mut self, _begin_index: usize) {}

    /// `scale_model_input` returns the sample unchanged.
    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    /// `step(model_output, timestep, sample, eta=0.0)` (no `use_clipped_model_output`, no
    /// variance noise: `eta > 0` is false).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        let n = self.num_inference_steps.ok_or_else(|| {
            usage(
                NAME,
                "Number of inference steps is 'None', you need to run 'set_timesteps' after \
                 creating the scheduler",
            )
        })?;
        let n_train = self.num_train_timesteps;
        let t = discrete::table_index(NAME, timestep, n_train)?;
        // prev_timestep = timestep - num_train_timesteps // num_inference_steps
        let prev_t = t - (n_train / n) as i64;
        let alpha_prod_t = self.alphas_cumprod.f_get(t)?;
        let alpha_prod_t_prev = self.alpha_prod(prev_t)?;
        let beta_prod_t = one_minus(&alpha_prod_t)?;

        let (pred_original_sample, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => {
                // (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
                let x0 = sample
                    .f_sub(&beta_prod_t.f_pow_tensor_scalar(0.5)?.f_mul(model_output)?)?
                    .f_div(&alpha_prod_t.f_pow_tensor_scalar(0.5)?)?;
                (x0, model_output.shallow_clone())
            }
            PredictionType::Sample => {
                // (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
                let eps = sample
                    .f_sub(&alpha_prod_t.f_pow_tensor_scalar(0.5)?.f_mul(model_output)?)?
                    .f_div(&beta_prod_t.f_pow_tensor_scalar(0.5)?)?;
                (model_output.shallow_clone(), eps)
            }
            PredictionType::VPrediction => {
                let sqrt_alpha = alpha_prod_t.f_pow_tensor_scalar(0.5)?;
                let sqrt_beta = beta_prod_t.f_pow_tensor_scalar(0.5)?;
                // (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
                let x0 = sqrt_alpha
                    .f_mul(sample)?
                    .f_sub(&sqrt_beta.f_mul(model_output)?)?;
                // (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
                let eps = sqrt_alpha
                    .f_mul(model_output)?
                    .f_add(&sqrt_beta.f_mul(sample)?)?;
                (x0, eps)
            }
        };
        let pred_original_sample = match (self.config.thresholding, self.config.clip_sample) {
            (Some(thresholding), _) => thresholding.apply(&pred_original_sample)?,
            (None, Some(range)) => pred_original_sample.f_clamp(-range, range)?,
            (None, None) => pred_original_sample,
        };

        // _get_variance(timestep, prev_timestep)
        let beta_prod_t_prev = one_minus(&alpha_prod_t_prev)?;
        let variance = beta_prod_t_prev
            .f_div(&beta_prod_t)?
            .f_mul(&one_minus(&alpha_prod_t.f_div(&alpha_prod_t_prev)?)?)?;
        // std_dev_t = eta * variance ** (0.5)
        let std_dev_t = variance.f_pow_tensor_scalar(0.5)?.f_mul_scalar(ETA)?;
        // (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
        let pred_sample_direction = one_minus(&alpha_prod_t_prev)?
            .f_sub(&std_dev_t.f_pow_tensor_scalar(2)?)?
            .f_pow_tensor_scalar(0.5)?
            .f_mul(&pred_epsilon)?;
        // alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
        let prev_sample = alpha_prod_t_prev
            .f_pow_tensor_scalar(0.5)?
            .f_mul(&pred_original_sample)?
            .f_add(&pred_sample_direction)?;
        Ok(prev_sample)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tch::Kind;

    use super::*;
    use crate::schedulers::discrete::{is_usage, test_config};

    #[test]
    fn misuse_is_a_usage_error() {
        let mut s = DDIMScheduler::from_config(&test_config(json!({}))).unwrap();
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
        assert!(is_usage(s.step(&x, 1.0, &x, &mut [])));
        assert!(is_usage(s.set_timesteps(0)));
        // diffusers: "`num_inference_steps`: 1001 cannot be larger than ..."
        assert!(is_usage(s.set_timesteps(1001)));
        // leading with steps_offset 1 reaches timestep 1000 (an IndexError in diffusers' step)
        assert!(is_usage(s.set_timesteps(1000)));
        s.set_timesteps(4).unwrap();
        assert_eq!(s.timesteps().kind(), Kind::Int64);
        assert!(is_usage(s.step(&x, 1000.0, &x, &mut [])));
        assert!(s.step(&x, 751.0, &x, &mut []).is_ok());
    }
}
