//! diffusers' `KDPM2AncestralDiscreteScheduler` (0.42.1): DPM-Solver-2 with ancestral sampling.
//! Each step goes from `sigma` to the log-midpoint of `sigma` and `sigma_down` (first model
//! evaluation), then to `sigma_down` with the midpoint's derivative plus fresh noise times
//! `sigma_up` (second evaluation), the noise drawn with `randn_tensor(model_output.shape,
//! generator=...)`. `sigmas_up`, `sigmas_down` and `sigmas_interpol` are built with the same
//! float32 torch ops on the whole table as diffusers' `set_timesteps`.

use tch::Tensor;

use super::k_discrete;
use super::kdpm2_discrete::{timestep_tensor, KDPM2DiscreteConfig};
use super::Scheduler;
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::noise::randn_tensor;

const NAME: &str = "KDPM2AncestralDiscreteScheduler";

/// `KDPM2AncestralDiscreteScheduler.__init__` takes the same arguments as
/// `KDPM2DiscreteScheduler.__init__`.
pub type KDPM2AncestralDiscreteConfig = KDPM2DiscreteConfig;

#[derive(Debug)]
pub struct KDPM2AncestralDiscreteScheduler {
    config: KDPM2AncestralDiscreteConfig,
    num_train_timesteps: usize,
    /// float32 training sigmas, ascending.
    train_sigmas: Vec<f32>,
    /// `np.log` of them (float32; also `self.log_sigmas`).
    log_sigmas: Vec<f32>,
    /// float32 or float64 `timesteps` (float64 with Karras or exponential sigmas).
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// The four float32 tables, each `cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])`.
    sigmas: Tensor,
    sigmas_interpol: Tensor,
    sigmas_up: Tensor,
    sigmas_down: Tensor,
    num_inference_steps: Option<usize>,
    /// `self.sample`: `None` is `state_in_first_order`.
    sample: Option<Tensor>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl KDPM2AncestralDiscreteScheduler {
    /// `KDPM2AncestralDiscreteScheduler(**config)`: `config` is the merged `from_config` view.
    /// Like `__init__`, builds the schedule of `set_timesteps(num_train_timesteps)`; `step` still
    /// needs a `set_timesteps` call first.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = KDPM2AncestralDiscreteConfig::from_file(c)?;
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
            sigmas_up: k_discrete::empty(),
            sigmas_down: k_discrete::empty(),
            num_inference_steps: None,
            sample: None,
            step_index: None,
            begin_index: None,
        };
        scheduler.build(schedule.num_train_timesteps)?;
        Ok(scheduler)
    }

    pub fn config(&self) -> &KDPM2AncestralDiscreteConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// `state_in_first_order`.
    pub fn state_in_first_order(&self) -> bool {
        self.sample.is_none()
    }

    /// The body of `set_timesteps(num_inference_steps)`.
    fn build(&mut self, num_inference_steps: usize) -> Result<()> {
        let (timesteps, double, sigmas) = self.config.base_schedule(
            self.num_train_timesteps,
            num_inference_steps,
            &self.train_sigmas,
            &self.log_sigmas,
        );
        let sigmas_t = k_discrete::f32_tensor(&sigmas);
        let len = sigmas.len() as i64;
        // sigmas_next = sigmas.roll(-1); sigmas_next[-1] = 0.0
        let sigmas_next = sigmas_t.f_roll([-1], [0])?;
        let _ = sigmas_next.f_get(-1)?.f_fill_(0.0)?;
        // sigmas_up = (sigmas_next**2 * (sigmas**2 - sigmas_next**2) / sigmas**2) ** 0.5
        let next_sq = sigmas_next.f_pow_tensor_scalar(2)?;
        let sigmas_up = next_sq
            .f_mul(&sigmas_t.f_pow_tensor_scalar(2)?.f_sub(&next_sq)?)?
            .f_div(&sigmas_t.f_pow_tensor_scalar(2)?)?
            .f_pow_tensor_scalar(0.5)?;
        // sigmas_down = (sigmas_next**2 - sigmas_up**2) ** 0.5; sigmas_down[-1] = 0.0
        let sigmas_down = next_sq
            .f_sub(&sigmas_up.f_pow_tensor_scalar(2)?)?
            .f_pow_tensor_scalar(0.5)?;
        let _ = sigmas_down.f_get(-1)?.f_fill_(0.0)?;
        // sigmas_interpol = sigmas.log().lerp(sigmas_down.log(), 0.5).exp();
        // sigmas_interpol[-2:] = 0.0
        let sigmas_interpol = sigmas_t
            .f_log()?
            .f_lerp(&sigmas_down.f_log()?, 0.5)?
            .f_exp()?;
        let tail = (len - 2).max(0);
        let _ = sigmas_interpol
            .f_narrow(0, tail, len - tail)?
            .f_fill_(0.0)?;

        let interleave = |t: &Tensor| -> Result<(Tensor, Vec<f32>)> {
            let values = Vec::<f32>::try_from(t)?;
            Ok((
                k_discrete::f32_tensor(&k_discrete::interleave(&values, values.len())),
                values,
            ))
        };
        let interpol: Vec<f32>;
        (self.sigmas_interpol, interpol) = interleave(&sigmas_interpol)?;
        self.sigmas = k_discrete::f32_tensor(&k_discrete::interleave(&sigmas, sigmas.len()));
        self.sigmas_up = interleave(&sigmas_up)?.0;
        self.sigmas_down = interleave(&sigmas_down)?.0;

        // timesteps_interpol = np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas_interpol])
        let timesteps_interpol: Vec<f32> = interpol
            .iter()
            .map(|&s| k_discrete::sigma_to_t_f32(s, &self.log_sigmas))
            .collect();
        // cat([timesteps[:1], stack((timesteps_interpol[:-2], timesteps[1:]), -1).flatten()])
        let mut interleaved = vec![timesteps[0]];
        for j in 1..timesteps.len() {
            interleaved.push(f64::from(timesteps_interpol[j - 1]));
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

    fn table_at(&self, table: &Tensor, what: &str, index: usize) -> Result<Tensor> {
        k_discrete::at(NAME, table, what, index)
    }
}

impl Scheduler for KDPM2AncestralDiscreteScheduler {
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
    /// `sigmas_interpol[i - 1]` in the second.
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        let sigma = if self.sample.is_none() {
            self.table_at(&self.sigmas, "the sigmas", index)?
        } else {
            let previous = k_discrete::previous(NAME, index)?;
            self.table_at(&self.sigmas_interpol, "sigmas_interpol", previous)?
        };
        k_discrete::scale_by_sigma(sample, &sigma)
    }

    /// diffusers' `step`, op for op. First order: `sigma = sigmas[i]`, `sigma_interpol =
    /// sigmas_interpol[i]`, an Euler step from `sigma_hat` to `sigma_interpol`, keeping `sample`.
    /// Second order: `sigma = sigmas[i - 1]`, `sigma_interpol = sigmas_interpol[i - 1]`,
    /// `sigma_up = sigmas_up[i - 1]`, `sigma_down = sigmas_down[i - 1]`; `x0` at `sigma_interpol`,
    /// `derivative = (sample - x0) / sigma_interpol` applied to the kept sample with `dt =
    /// sigma_down - sigma_hat`, then `+ randn_tensor(model_output.shape, dtype=model_output.dtype,
    /// generator) * sigma_up`. No dtype casts (diffusers has none here).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        generators: &mut [Generator],
    ) -> Result<Tensor> {
        let index = self.current_index(timestep)?;
        let first = self.sample.is_none();
        // First order reads sigmas_up[i] and sigmas_down[i - 1] too, but uses neither.
        let (sigma, sigma_interpol, second) = if first {
            (
                self.table_at(&self.sigmas, "the sigmas", index)?,
                self.table_at(&self.sigmas_interpol, "sigmas_interpol", index)?,
                None,
            )
        } else {
            let previous = k_discrete::previous(NAME, index)?;
            (
                self.table_at(&self.sigmas, "the sigmas", previous)?,
                self.table_at(&self.sigmas_interpol, "sigmas_interpol", previous)?,
                Some((
                    self.table_at(&self.sigmas_up, "sigmas_up", previous)?,
                    self.table_at(&self.sigmas_down, "sigmas_down", previous)?,
                )),
            )
        };
        // gamma = 0; sigma_hat = sigma * (gamma + 1)
        let sigma_hat = sigma.f_mul_scalar(1)?;
        let sigma_input = if first { &sigma_hat } else { &sigma_interpol };
        let pred_original_sample =
            self.config
                .prediction_type
                .x0(model_output, sample, sigma_input)?;

        let prev_sample = match (self.sample.take(), second) {
            (Some(kept), Some((sigma_up, sigma_down))) => {
                // 2. second order: to sigma_down, then noise times sigma_up
                let derivative = sample
                    .f_sub(&pred_original_sample)?
                    .f_div(&sigma_interpol)?;
                let dt = sigma_down.f_sub(&sigma_hat)?;
                let prev_sample = kept.f_add(&derivative.f_mul(&dt)?)?;
                let noise = randn_tensor(&model_output.size(), generators, model_output.kind())?;
                // Drawn on the CPU (CPU generators), then moved to the output's device.
                let noise = noise.f_to_device(model_output.device())?;
                prev_sample.f_add(&noise.f_mul(&sigma_up)?)?
            }
            _ => {
                // 1. first order: from sigma_hat to sigma_interpol
                let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma_hat)?;
                let dt = sigma_interpol.f_sub(&sigma_hat)?;
                self.sample = Some(sample.shallow_clone());
                sample.f_add(&derivative.f_mul(&dt)?)?
            }
        };
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}
