//! diffusers' `HeunDiscreteScheduler` (0.42.1): Heun's second-order method, two model evaluations
//! per step. `set_timesteps` repeats every timestep but the first (`timesteps[1:]
//! .repeat_interleave(2)`) and every sigma but the ends; `step` alternates between the Euler
//! predictor (which keeps `prev_derivative`, `dt` and `sample`) and the corrector that averages
//! the two derivatives. Tables in NumPy float64 / float32 where diffusers builds them, `step` as
//! the same torch ops on 0-d float32 sigma tensors.

use tch::Tensor;

use super::k_discrete::{self, SigmaKind, TrainingOptions, KDPM_DEFAULTS};
use super::{Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;

const NAME: &str = "HeunDiscreteScheduler";

/// `prediction_type` as Heun's `step` reads it (`sample` is implemented here; the old name
/// `original_sample` is not, and is diffusers' ValueError).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeunPrediction {
    Epsilon,
    VPrediction,
    Sample,
}

/// The constructor arguments of `HeunDiscreteScheduler.__init__` that shape sampling (the
/// training schedule aside).
#[derive(Debug, Clone, PartialEq)]
pub struct HeunDiscreteConfig {
    pub prediction_type: HeunPrediction,
    pub sigmas: SigmaKind,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl HeunDiscreteConfig {
    /// Reads the keys with `HeunDiscreteScheduler`'s own defaults.
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let prediction_type = match c.string_or("prediction_type", "epsilon")?.as_str() {
            "epsilon" => HeunPrediction::Epsilon,
            "v_prediction" => HeunPrediction::VPrediction,
            "sample" => HeunPrediction::Sample,
            other => {
                return Err(c.invalid(
                    "prediction_type",
                    format!(
                        "prediction_type given as {other} must be one of `epsilon`, or \
                         `v_prediction`"
                    ),
                ))
            }
        };
        Ok(Self {
            prediction_type,
            sigmas: SigmaKind::from_config(c)?,
            clip_sample: c.bool_or("clip_sample", false)?,
            clip_sample_range: c.f64_or("clip_sample_range", 1.0)?,
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
        })
    }
}

/// What the first-order (predictor) call leaves for the second-order (corrector) one.
#[derive(Debug)]
struct FirstOrder {
    prev_derivative: Tensor,
    dt: Tensor,
    sample: Tensor,
}

#[derive(Debug)]
pub struct HeunDiscreteScheduler {
    config: HeunDiscreteConfig,
    num_train_timesteps: usize,
    /// float32 training sigmas, ascending.
    train_sigmas: Vec<f32>,
    /// `np.log` of them (float32).
    log_sigmas: Vec<f32>,
    /// float32 `timesteps`: `cat([t[:1], t[1:].repeat_interleave(2)])`.
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// float32 `sigmas`: `cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])`.
    sigmas: Tensor,
    num_inference_steps: Option<usize>,
    /// `None` is diffusers' `state_in_first_order` (`self.dt is None`).
    first_order: Option<FirstOrder>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl HeunDiscreteScheduler {
    /// `HeunDiscreteScheduler(**config)`: `config` is the merged `from_config` view. Like
    /// `__init__`, builds the schedule of `set_timesteps(num_train_timesteps)`; `step` still needs
    /// a `set_timesteps` call first.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = HeunDiscreteConfig::from_file(c)?;
        let schedule = k_discrete::training_schedule(
            c,
            TrainingOptions {
                defaults: KDPM_DEFAULTS,
                rescale_betas_zero_snr: false,
                exp_beta_schedule: true,
            },
        )?;
        let train_sigmas = k_discrete::train_sigmas(&schedule.alphas_cumprod)?;
        let mut scheduler = Self {
            config,
            num_train_timesteps: schedule.num_train_timesteps,
            log_sigmas: k_discrete::log_sigmas(&train_sigmas),
            train_sigmas,
            timesteps: k_discrete::empty(),
            timestep_values: Vec::new(),
            sigmas: k_discrete::empty(),
            num_inference_steps: None,
            first_order: None,
            step_index: None,
            begin_index: None,
        };
        scheduler.build(schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    pub fn config(&self) -> &HeunDiscreteConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// `state_in_first_order`.
    pub fn state_in_first_order(&self) -> bool {
        self.first_order.is_none()
    }

    /// The body of `set_timesteps(num_inference_steps)`.
    fn build(&mut self, num_inference_steps: usize) -> Result<()> {
        let mut timesteps = k_discrete::spaced_timesteps(
            self.config.timestep_spacing,
            self.num_train_timesteps,
            num_inference_steps,
            self.config.steps_offset,
        );
        let mut sigmas = k_discrete::interp_sigmas(&timesteps, &self.train_sigmas);
        if let Some((converted, converted_timesteps)) =
            self.config
                .sigmas
                .convert(&sigmas, num_inference_steps, &self.log_sigmas)
        {
            sigmas = converted;
            timesteps = converted_timesteps;
        }
        let sigmas = k_discrete::sigmas_with_zero(&sigmas);
        self.sigmas = k_discrete::f32_tensor(&k_discrete::interleave(&sigmas, sigmas.len() - 1));
        // cat([timesteps[:1], timesteps[1:].repeat_interleave(2)]).to(dtype=torch.float32)
        let mut interleaved = vec![timesteps[0]];
        for &t in &timesteps[1..] {
            interleaved.push(t);
            interleaved.push(t);
        }
        let values: Vec<f32> = interleaved.iter().map(|&t| t as f32).collect();
        self.timesteps = k_discrete::f32_tensor(&values);
        self.timestep_values = values.into_iter().map(f64::from).collect();
        self.first_order = None;
        self.step_index = None;
        self.begin_index = None;
        Ok(())
    }

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

impl Scheduler for HeunDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        2
    }

    /// `set_timesteps(num_inference_steps)`: spaced timesteps, `np.interp` sigmas (or Karras /
    /// exponential ones with `_sigma_to_t` timesteps), `astype(np.float32)`, then the interleaving.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(Error::SchedulerUsage {
                scheduler: NAME,
                message: "num_inference_steps must be at least 1".to_owned(),
            });
        }
        self.build(num_inference_steps)?;
        self.num_inference_steps = Some(num_inference_steps);
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

    /// diffusers' `step`, op for op. First order: `sigma = sigmas[i]`, `sigma_next =
    /// sigmas[i + 1]`, `derivative = (sample - x0) / sigma_hat`, `dt = sigma_next - sigma_hat`,
    /// kept with `sample`. Second order: `sigma = sigmas[i - 1]`, `sigma_next = sigmas[i]`, `x0`
    /// from `sigma_next`, `derivative = (prev_derivative + (sample - x0) / sigma_next) / 2` applied
    /// to the kept sample with the kept `dt`. No noise, no dtype casts (diffusers has none here).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        let first = self.first_order.is_none();
        let (sigma, sigma_next) = if first {
            (self.sigma_at(index)?, self.sigma_at(index + 1)?)
        } else {
            // index >= 1 here: the first call of a schedule is always first order.
            (
                self.sigma_at(k_discrete::previous(NAME, index)?)?,
                self.sigma_at(index)?,
            )
        };
        // gamma = 0; sigma_hat = sigma * (gamma + 1)
        let sigma_hat = sigma.f_mul_scalar(1)?;
        let sigma_input = if first { &sigma_hat } else { &sigma_next };
        let pred_original_sample = match self.config.prediction_type {
            HeunPrediction::Epsilon => k_discrete::epsilon_x0(model_output, sample, sigma_input)?,
            HeunPrediction::VPrediction => {
                k_discrete::v_prediction_x0(model_output, sample, sigma_input)?
            }
            HeunPrediction::Sample => model_output.shallow_clone(),
        };
        let pred_original_sample = if self.config.clip_sample {
            let range = self.config.clip_sample_range;
            pred_original_sample.f_clamp(-range, range)?
        } else {
            pred_original_sample
        };

        let prev_sample = match self.first_order.take() {
            None => {
                // 1. first order (Euler)
                let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma_hat)?;
                let dt = sigma_next.f_sub(&sigma_hat)?;
                let prev_sample = sample.f_add(&derivative.f_mul(&dt)?)?;
                self.first_order = Some(FirstOrder {
                    prev_derivative: derivative,
                    dt,
                    sample: sample.shallow_clone(),
                });
                prev_sample
            }
            Some(kept) => {
                // 2. second order (Heun)
                let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma_next)?;
                let derivative = kept.prev_derivative.f_add(&derivative)?.f_div_scalar(2)?;
                kept.sample.f_add(&derivative.f_mul(&kept.dt)?)?
            }
        };
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}
