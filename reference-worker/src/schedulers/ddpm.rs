//! diffusers' `DDPMScheduler` (0.42.1): int64 timesteps, `alphas_cumprod` in float32 torch ops,
//! and `step` as the same torch ops on 0-d float32 tensors. It is stochastic: every step but the
//! last (`t > 0`) adds `variance ** 0.5 * randn_tensor(model_output.shape, generator=...)`, drawn
//! from the step's generator list exactly as diffusers' `randn_tensor` does (image *i* from
//! generator *i*, after whatever the pipeline drew from it before).

use tch::{Device, Kind, Tensor};

use super::discrete::{self, one_minus, usage};
use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::thresholding::DynamicThresholding;
use super::{PredictionType, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::Result;
use crate::generator::Generator;
use crate::noise::randn_tensor;

const NAME: &str = "DDPMScheduler";

/// `variance_type`: how `_get_variance` turns the posterior variance into the noise scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarianceType {
    /// β̃_t, the posterior variance, clamped at 1e-20 (the default).
    FixedSmall,
    /// `exp(0.5 * log(β̃_t))`, used as the standard deviation itself.
    FixedSmallLog,
    /// β_t.
    FixedLarge,
    /// `log(β_t)`, then `** 0.5` in `step` (NaN, as in diffusers).
    FixedLargeLog,
}

/// The constructor arguments of `DDPMScheduler.__init__` that shape sampling, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpmConfig {
    pub variance_type: VarianceType,
    /// `clip_sample` (default true) with `clip_sample_range` (default 1.0).
    pub clip_sample: Option<f64>,
    pub prediction_type: PredictionType,
    pub thresholding: Option<DynamicThresholding>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl DdpmConfig {
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let variance_type = match c.string_or("variance_type", "fixed_small")?.as_str() {
            "fixed_small" => VarianceType::FixedSmall,
            "fixed_small_log" => VarianceType::FixedSmallLog,
            "fixed_large" => VarianceType::FixedLarge,
            "fixed_large_log" => VarianceType::FixedLargeLog,
            learned @ ("learned" | "learned_range") => {
                return Err(c.invalid(
                    "variance_type",
                    format!(
                        "`{learned}` needs a model that predicts its variance (twice the latent \
                         channels); SDXL's UNet does not, and diffusers fails in `step` with it"
                    ),
                ))
            }
            other => {
                return Err(c.invalid(
                    "variance_type",
                    format!(
                        "`{other}` is not one of fixed_small, fixed_small_log, fixed_large, \
                         fixed_large_log"
                    ),
                ))
            }
        };
        let clip_sample_range = c.f64_or("clip_sample_range", 1.0)?;
        Ok(Self {
            variance_type,
            clip_sample: c.bool_or("clip_sample", true)?.then_some(clip_sample_range),
            prediction_type: PredictionType::from_config(c)?,
            thresholding: DynamicThresholding::from_config(c)?,
            timestep_spacing: TimestepSpacing::from_config(c, "leading")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
        })
    }
}

#[derive(Debug)]
pub struct DDPMScheduler {
    config: DdpmConfig,
    num_train_timesteps: usize,
    /// float32 `alphas_cumprod`.
    alphas_cumprod: Tensor,
    /// int64 `timesteps` (every training timestep, descending, until `set_timesteps`).
    timesteps: Tensor,
    timestep_values: Vec<i64>,
    num_inference_steps: Option<usize>,
}

impl DDPMScheduler {
    /// `DDPMScheduler(**config)`: `config` is the merged `from_config` view. Besides the common
    /// beta schedules DDPM takes `sigmoid` and `laplace`.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = DdpmConfig::from_file(c)?;
        let schedule = TrainingSchedule::from_config_with(
            c,
            TrainingDefaults::COMMON,
            |name, n, beta_start, beta_end| match name {
                "linear" | "scaled_linear" | "squaredcos_cap_v2" => Ok(None),
                _ => match extra_betas(name, n, beta_start, beta_end)? {
                    Some(betas) => Ok(Some(betas)),
                    None => Err(c.invalid(
                        "beta_schedule",
                        format!(
                            "`{name}` is not one of linear, scaled_linear, squaredcos_cap_v2, \
                             sigmoid, laplace"
                        ),
                    )),
                },
            },
        )?;
        let n = schedule.num_train_timesteps;
        // torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())
        let timestep_values: Vec<i64> = (0..n as i64).rev().collect();
        Ok(Self {
            config,
            num_train_timesteps: n,
            alphas_cumprod: schedule.alphas_cumprod,
            timesteps: discrete::int64_tensor(&timestep_values),
            timestep_values,
            num_inference_steps: None,
        })
    }

    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    /// `previous_timestep(timestep)`: the next entry of the schedule after the first occurrence
    /// of `t` (-1 after the last); `t - 1` before `set_timesteps`.
    fn previous_timestep(&self, t: i64) -> Result<i64> {
        if self.num_inference_steps.is_none() {
            return Ok(t - 1);
        }
        let index = self
            .timestep_values
            .iter()
            .position(|&v| v == t)
            .ok_or_else(|| usage(NAME, format!("timestep {t} is not in the schedule")))?;
        Ok(self.timestep_values.get(index + 1).copied().unwrap_or(-1))
    }

    /// `alphas_cumprod[t] if t >= 0 else self.one` (0-d float32).
    fn alpha_prod(&self, t: i64) -> Result<Tensor> {
        if t >= 0 {
            Ok(self.alphas_cumprod.f_get(t)?)
        } else {
            Ok(Tensor::from(1.0f32))
        }
    }

    /// `_get_variance(t)` for the fixed variance types (0-d float32).
    fn variance(&self, alpha_prod_t: &Tensor, alpha_prod_t_prev: &Tensor) -> Result<Tensor> {
        // current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev
        let current_beta_t = one_minus(&alpha_prod_t.f_div(alpha_prod_t_prev)?)?;
        // (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, clamped at 1e-20
        let variance = one_minus(alpha_prod_t_prev)?
            .f_div(&one_minus(alpha_prod_t)?)?
            .f_mul(&current_beta_t)?
            .f_clamp_min(1e-20)?;
        Ok(match self.config.variance_type {
            VarianceType::FixedSmall => variance,
            VarianceType::FixedSmallLog => variance.f_log()?.f_mul_scalar(0.5)?.f_exp()?,
            VarianceType::FixedLarge => current_beta_t,
            VarianceType::FixedLargeLog => current_beta_t.f_log()?,
        })
    }
}

/// DDPM's own beta schedules: `sigmoid` (`torch.sigmoid(torch.linspace(-6, 6, n)) * (beta_end -
/// beta_start) + beta_start`) and `laplace` (`betas_for_alpha_bar(n, alpha_transform_type=
/// "laplace")`).
fn extra_betas(schedule: &str, n: usize, beta_start: f64, beta_end: f64) -> Result<Option<Tensor>> {
    match schedule {
        "sigmoid" => Ok(Some(
            Tensor::f_linspace(-6.0, 6.0, n as i64, (Kind::Float, Device::Cpu))?
                .f_sigmoid()?
                .f_mul_scalar(beta_end - beta_start)?
                .f_add_scalar(beta_start)?,
        )),
        "laplace" => {
            let alpha_bar = |t: f64| {
                let lmb = -0.5 * 1f64.copysign(0.5 - t) * (1.0 - 2.0 * (0.5 - t).abs() + 1e-6).ln();
                let snr = lmb.exp();
                (snr / (1.0 + snr)).sqrt()
            };
            let betas: Vec<f64> = (0..n)
                .map(|i| {
                    let t1 = i as f64 / n as f64;
                    let t2 = (i + 1) as f64 / n as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect();
            Ok(Some(Tensor::from_slice(&betas).f_to_kind(Kind::Float)?))
        }
        _ => Ok(None),
    }
}

impl Scheduler for DDPMScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    /// `set_timesteps(num_inference_steps)`: [`discrete::ddim_timesteps`] (the same code as
    /// DDIM's), after diffusers' check that there are no more steps than training timesteps.
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

    /// DDPM has no `set_begin_index`: ignored, as the pipeline's `hasattr` check does.
    fn set_begin_index(&mut self, _begin_index: usize) {}

    /// `scale_model_input` returns the sample unchanged.
    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    /// `step(model_output, timestep, sample, generator=generators)`.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        generators: &mut [Generator],
    ) -> Result<Tensor> {
        let t = discrete::table_index(NAME, timestep, self.num_train_timesteps)?;
        let prev_t = self.previous_timestep(t)?;
        let alpha_prod_t = self.alphas_cumprod.f_get(t)?;
        let alpha_prod_t_prev = self.alpha_prod(prev_t)?;
        let beta_prod_t = one_minus(&alpha_prod_t)?;
        let beta_prod_t_prev = one_minus(&alpha_prod_t_prev)?;
        let current_alpha_t = alpha_prod_t.f_div(&alpha_prod_t_prev)?;
        let current_beta_t = one_minus(&current_alpha_t)?;

        let pred_original_sample = match self.config.prediction_type {
            // (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            PredictionType::Epsilon => sample
                .f_sub(&beta_prod_t.f_pow_tensor_scalar(0.5)?.f_mul(model_output)?)?
                .f_div(&alpha_prod_t.f_pow_tensor_scalar(0.5)?)?,
            PredictionType::Sample => model_output.shallow_clone(),
            // (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            PredictionType::VPrediction => alpha_prod_t
                .f_pow_tensor_scalar(0.5)?
                .f_mul(sample)?
                .f_sub(&beta_prod_t.f_pow_tensor_scalar(0.5)?.f_mul(model_output)?)?,
        };
        let pred_original_sample = match (self.config.thresholding, self.config.clip_sample) {
            (Some(thresholding), _) => thresholding.apply(&pred_original_sample)?,
            (None, Some(range)) => pred_original_sample.f_clamp(-range, range)?,
            (None, None) => pred_original_sample,
        };

        // (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
        let pred_original_sample_coeff = alpha_prod_t_prev
            .f_pow_tensor_scalar(0.5)?
            .f_mul(&current_beta_t)?
            .f_div(&beta_prod_t)?;
        // current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
        let current_sample_coeff = current_alpha_t
            .f_pow_tensor_scalar(0.5)?
            .f_mul(&beta_prod_t_prev)?
            .f_div(&beta_prod_t)?;
        let pred_prev_sample = pred_original_sample_coeff
            .f_mul(&pred_original_sample)?
            .f_add(&current_sample_coeff.f_mul(sample)?)?;

        if t > 0 {
            let variance_noise =
                randn_tensor(&model_output.size(), generators, model_output.kind())?;
            let variance = self.variance(&alpha_prod_t, &alpha_prod_t_prev)?;
            let variance = match self.config.variance_type {
                VarianceType::FixedSmallLog => variance.f_mul(&variance_noise)?,
                _ => variance.f_pow_tensor_scalar(0.5)?.f_mul(&variance_noise)?,
            };
            Ok(pred_prev_sample.f_add(&variance)?)
        } else {
            // pred_prev_sample + 0 (diffusers' `variance = 0`)
            Ok(pred_prev_sample.f_add_scalar(0)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tch::Kind;

    use super::*;
    use crate::schedulers::discrete::{is_invalid, is_usage, test_config};

    #[test]
    fn learned_variances_and_unknown_schedules_are_refused() {
        for variance in ["learned", "learned_range", "fixed_medium"] {
            let c = test_config(json!({ "variance_type": variance }));
            assert!(is_invalid(DDPMScheduler::from_config(&c), "variance_type"));
        }
        let c = test_config(json!({ "beta_schedule": "cubic" }));
        assert!(is_invalid(DDPMScheduler::from_config(&c), "beta_schedule"));
        for schedule in ["sigmoid", "laplace"] {
            let c = test_config(json!({ "beta_schedule": schedule }));
            assert!(DDPMScheduler::from_config(&c).is_ok());
        }
    }

    #[test]
    fn a_timestep_outside_the_schedule_is_a_usage_error() {
        let mut s = DDPMScheduler::from_config(&test_config(json!({}))).unwrap();
        s.set_timesteps(4).unwrap();
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
        let mut generators = [Generator::new(0).unwrap()];
        assert!(is_usage(s.step(&x, 500.0, &x, &mut generators)));
        assert!(s.step(&x, 751.0, &x, &mut generators).is_ok());
    }
}
