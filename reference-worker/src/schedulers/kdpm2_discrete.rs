//! diffusers' `KDPM2DiscreteScheduler` (0.42.1): k-diffusion's DPM-Solver-2, two model
//! evaluations per step, the second at the log-midpoint sigma `sigmas_interpol` (and at its
//! timestep, found with `_sigma_to_t`). Tables in NumPy float64 / float32 and torch float32
//! exactly where diffusers builds them; `step` as the same torch ops on 0-d float32 tensors.
//!
//! Mind the dtypes diffusers leaves: the timesteps are float64 with Karras or exponential sigmas
//! (`np.array([...])` of `_sigma_to_t`'s float64 values), float32 otherwise; the interpolated
//! timesteps come from `_sigma_to_t` run on torch float32 tensors (see
//! [`k_discrete::sigma_to_t_f32`]).

use tch::Tensor;

use super::euler_ancestral_discrete::AncestralPrediction;
use super::k_discrete::{self, SigmaKind, TrainingOptions, KDPM_DEFAULTS};
use super::{Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;

const NAME: &str = "KDPM2DiscreteScheduler";

/// The constructor arguments of `KDPM2DiscreteScheduler.__init__` and
/// `KDPM2AncestralDiscreteScheduler.__init__` (the same list) that shape sampling, the training
/// schedule aside. `prediction_type="sample"` raises NotImplementedError in both `step`s, so it is
/// refused when the scheduler is built.
#[derive(Debug, Clone, PartialEq)]
pub struct KDPM2DiscreteConfig {
    pub prediction_type: AncestralPrediction,
    pub sigmas: SigmaKind,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl KDPM2DiscreteConfig {
    /// Reads the keys with the KDPM2 classes' own defaults.
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        Ok(Self {
            prediction_type: AncestralPrediction::from_config(c)?,
            sigmas: SigmaKind::from_config(c)?,
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
        })
    }

    /// The KDPM2 classes' training schedule (no `rescale_betas_zero_snr`, no `exp` betas).
    pub fn training_options() -> TrainingOptions {
        TrainingOptions {
            defaults: KDPM_DEFAULTS,
            rescale_betas_zero_snr: false,
            exp_beta_schedule: false,
        }
    }

    /// The first half of both classes' `set_timesteps`: the spaced timesteps and their sigmas
    /// (`np.interp`, or Karras with `_sigma_to_t(...).round()` timesteps, or exponential), as
    /// `(timesteps, float64 timesteps?, float32 sigmas with the final 0)`.
    pub fn base_schedule(
        &self,
        num_train_timesteps: usize,
        num_inference_steps: usize,
        train_sigmas: &[f32],
        log_sigmas: &[f32],
    ) -> (Vec<f64>, bool, Vec<f32>) {
        let mut timesteps = k_discrete::spaced_timesteps(
            self.timestep_spacing,
            num_train_timesteps,
            num_inference_steps,
            self.steps_offset,
        );
        let mut sigmas = k_discrete::interp_sigmas(&timesteps, train_sigmas);
        let double = if let Some((converted, converted_timesteps)) =
            self.sigmas
                .convert(&sigmas, num_inference_steps, log_sigmas)
        {
            sigmas = converted;
            timesteps = converted_timesteps;
            if self.sigmas == SigmaKind::Karras {
                // np.array([...]).round(): half to even
                for t in &mut timesteps {
                    *t = t.round_ties_even();
                }
            }
            true
        } else {
            false
        };
        (timesteps, double, k_discrete::sigmas_with_zero(&sigmas))
    }
}

/// The interleaved timesteps as diffusers' tensor (float64 when `double`, else float32: the
/// interpolated timesteps are cast `.to(dtype=timesteps.dtype)`) and its values.
pub fn timestep_tensor(values: &[f64], double: bool) -> (Tensor, Vec<f64>) {
    if double {
        (Tensor::from_slice(values), values.to_vec())
    } else {
        let narrow: Vec<f32> = values.iter().map(|&t| t as f32).collect();
        let values = narrow.iter().map(|&t| f64::from(t)).collect();
        (k_discrete::f32_tensor(&narrow), values)
    }
}

#[derive(Debug)]
pub struct KDPM2DiscreteScheduler {
    config: KDPM2DiscreteConfig,
    num_train_timesteps: usize,
    /// float32 training sigmas, ascending.
    train_sigmas: Vec<f32>,
    /// `np.log` of them (float32; also `self.log_sigmas`).
    log_sigmas: Vec<f32>,
    /// float32 or float64 `timesteps` (see the module doc).
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// float32 `sigmas`: `cat([s[:1], s[1:].repeat_interleave(2), s[-1:]])`.
    sigmas: Tensor,
    /// float32 `sigmas_interpol`, interleaved the same way (the first is NaN, as in diffusers).
    sigmas_interpol: Tensor,
    num_inference_steps: Option<usize>,
    /// `self.sample`: `None` is `state_in_first_order`.
    sample: Option<Tensor>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl KDPM2DiscreteScheduler {
    /// `KDPM2DiscreteScheduler(**config)`: `config` is the merged `from_config` view. Like
    /// `__init__`, builds the schedule of `set_timesteps(num_train_timesteps)`; `step` still needs
    /// a `set_timesteps` call first.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = KDPM2DiscreteConfig::from_file(c)?;
        let schedule = k_discrete::training_schedule(c, KDPM2DiscreteConfig::training_options())?;
        let train_sigmas = k_discrete::train_sigmas(&schedule.alphas_cumprod)?;
        let mut scheduler = Self {
            config,
            num_train_timesteps: schedule.num_train_timesteps,
            log_sigmas: k_discrete::log_sigmas(&train_sigmas),
            train_sigmas,
            timesteps: k_discrete::empty(),
            timestep_values: Vec::new(),
            sigmas: k_discrete::empty(),
            sigmas_interpol: k_discrete::empty(),
            num_inference_steps: None,
            sample: None,
            step_index: None,
            begin_index: None,
        };
        scheduler.build(schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    pub fn config(&self) -> &KDPM2DiscreteConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// `state_in_first_order`.
    pub fn state_in_first_order(&self) -> bool {
        self.sample.is_none()
    }

    /// `sigmas_interpol` (float32, interleaved).
    pub fn sigmas_interpol(&self) -> &Tensor {
        &self.sigmas_interpol
    }

    /// The body of `set_timesteps(num_inference_steps)`.
    fn build(&mut self, num_inference_steps: usize) -> Result<()> {
        let (timesteps, double, sigmas) = self.config.base_schedule(
            self.num_train_timesteps,
            num_inference_steps,
            &self.train_sigmas,
            &self.log_sigmas,
        );
        // sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()
        let sigmas_t = k_discrete::f32_tensor(&sigmas);
        let interpol = sigmas_t
            .f_log()?
            .f_lerp(&sigmas_t.f_roll([1], [0])?.f_log()?, 0.5)?
            .f_exp()?;
        let interpol: Vec<f32> = Vec::<f32>::try_from(&interpol)?;
        self.sigmas = k_discrete::f32_tensor(&k_discrete::interleave(&sigmas, sigmas.len()));
        self.sigmas_interpol =
            k_discrete::f32_tensor(&k_discrete::interleave(&interpol, interpol.len()));

        // timesteps_interpol = np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas_interpol])
        let timesteps_interpol: Vec<f32> = interpol
            .iter()
            .map(|&s| k_discrete::sigma_to_t_f32(s, &self.log_sigmas))
            .collect();
        // cat([timesteps[:1], stack((timesteps_interpol[1:-1], timesteps[1:]), -1).flatten()])
        let mut interleaved = vec![timesteps[0]];
        for j in 1..timesteps.len() {
            interleaved.push(f64::from(timesteps_interpol[j]));
            interleaved.push(timesteps[j]);
        }
        let (tensor, values) = timestep_tensor(&interleaved, double);
        self.timesteps = tensor;
        self.timestep_values = values;
        self.sample = None;
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

    fn interpol_at(&self, index: usize) -> Result<Tensor> {
        k_discrete::at(NAME, &self.sigmas_interpol, "sigmas_interpol", index)
    }
}

impl Scheduler for KDPM2DiscreteScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        2
    }

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

    /// `sample / ((sigma**2 + 1) ** 0.5)` with `sigma = sigmas[i]` in the first order,
    /// `sigmas_interpol[i]` in the second.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        let sigma = if self.sample.is_none() {
            self.sigma_at(index)?
        } else {
            self.interpol_at(index)?
        };
        k_discrete::scale_by_sigma(sample, &sigma)
    }

    /// diffusers' `step`, op for op. First order: `sigma = sigmas[i]`, `sigma_interpol =
    /// sigmas_interpol[i + 1]`, an Euler step from `sigma_hat` to `sigma_interpol`, keeping
    /// `sample`. Second order: `sigma = sigmas[i - 1]`, `sigma_interpol = sigmas_interpol[i]`,
    /// `sigma_next = sigmas[i]`; `x0` at `sigma_interpol`, `derivative = (sample - x0) /
    /// sigma_interpol` applied to the kept sample with `dt = sigma_next - sigma_hat`.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        let first = self.sample.is_none();
        let (sigma, sigma_interpol, sigma_next) = if first {
            (
                self.sigma_at(index)?,
                self.interpol_at(index + 1)?,
                self.sigma_at(index + 1)?,
            )
        } else {
            let previous = k_discrete::previous(NAME, index)?;
            (
                self.sigma_at(previous)?,
                self.interpol_at(index)?,
                self.sigma_at(index)?,
            )
        };
        // gamma = 0; sigma_hat = sigma * (gamma + 1)
        let sigma_hat = sigma.f_mul_scalar(1)?;
        let sigma_input = if first { &sigma_hat } else { &sigma_interpol };
        let pred_original_sample =
            self.config
                .prediction_type
                .x0(model_output, sample, sigma_input)?;

        let prev_sample = match self.sample.take() {
            None => {
                // 1. first order: from sigma_hat to sigma_interpol
                let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma_hat)?;
                let dt = sigma_interpol.f_sub(&sigma_hat)?;
                self.sample = Some(sample.shallow_clone());
                sample.f_add(&derivative.f_mul(&dt)?)?
            }
            Some(kept) => {
                // 2. second order: DPM-Solver-2
                let derivative = sample
                    .f_sub(&pred_original_sample)?
                    .f_div(&sigma_interpol)?;
                let dt = sigma_next.f_sub(&sigma_hat)?;
                kept.f_add(&derivative.f_mul(&dt)?)?
            }
        };
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}
