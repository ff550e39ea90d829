//! diffusers' `DPMSolverMultistepScheduler` (0.42.1): DPM-Solver++(2M) by default
//! (`algorithm_type="dpmsolver++"`, `solver_order=2`, `lower_order_final=True`), and the other
//! algorithms (`dpmsolver`, `sde-dpmsolver`, `sde-dpmsolver++`), orders 1–3, midpoint / Heun
//! rules, Karras / exponential / Lu-lambda / flow sigmas and the final-step options.
//!
//! Tables follow `__init__` and `set_timesteps` (NumPy float64, cast to float32 where diffusers
//! casts; int64 timesteps); `step` is `convert_model_output` plus the update of the chosen order,
//! built in [`super::dpm_common`] from the same torch ops on 0-d float32 tensors. The SDE variants
//! draw their noise with diffusers' `randn_tensor` over the step's generator list (float32), once
//! per step, after the model output is converted.

use tch::{Kind, Tensor};

use super::dpm_common::{self, divided, empty_history, DpmClass, DpmConfig, DpmTraining, Point};
use super::euler_discrete::FinalSigmasType;
use super::{numpy, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::noise::randn_tensor;

const NAME: &str = "DPMSolverMultistepScheduler";

/// The constructor arguments of `DPMSolverMultistepScheduler.__init__`: the DPM-Solver keys both
/// classes take, and the multistep-only ones.
#[derive(Debug, Clone, PartialEq)]
pub struct DpmSolverMultistepConfig {
    pub dpm: DpmConfig,
    pub euler_at_final: bool,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl DpmSolverMultistepConfig {
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let use_lu_lambdas = c.bool_or("use_lu_lambdas", false)?;
        Ok(Self {
            dpm: DpmConfig::from_file(c, DpmClass::Multistep, use_lu_lambdas)?,
            euler_at_final: c.bool_or("euler_at_final", false)?,
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
        })
    }
}

#[derive(Debug)]
pub struct DPMSolverMultistepScheduler {
    config: DpmSolverMultistepConfig,
    training: DpmTraining,
    /// int64 after `set_timesteps` (float32 as `__init__` leaves them).
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// float32 `sigmas` (one more than the timesteps after `set_timesteps`).
    sigmas: Tensor,
    /// `self.model_outputs`: the last `solver_order` converted model outputs, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl DPMSolverMultistepScheduler {
    /// `DPMSolverMultistepScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = DpmSolverMultistepConfig::from_file(c)?;
        let training = DpmTraining::from_config(c, DpmClass::Multistep)?;
        let (timesteps, timestep_values, sigmas) = training.initial_tables()?;
        Ok(Self {
            model_outputs: empty_history(config.dpm.solver_order),
            config,
            training,
            timesteps,
            timestep_values,
            sigmas,
            lower_order_nums: 0,
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
        })
    }

    pub fn config(&self) -> &DpmSolverMultistepConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    fn usage(message: impl Into<String>) -> Error {
        Error::SchedulerUsage {
            scheduler: NAME,
            message: message.into(),
        }
    }

    /// The timesteps of `timestep_spacing` (before any sigma schedule replaces them).
    fn spaced_timesteps(&self, num_inference_steps: usize) -> Result<Vec<i64>> {
        let n_train = self.training.num_train_timesteps;
        // Clipping the minimum of all lambda(t) for numerical stability.
        let clipped_idx = self
            .training
            .clipped_idx(self.config.dpm.lambda_min_clipped)?;
        let last_timestep = n_train as i64 - clipped_idx as i64;
        let n = num_inference_steps;
        Ok(match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                // np.linspace(0, last_timestep - 1, n + 1).round()[::-1][:-1].astype(np.int64)
                let values = numpy::linspace(0.0, (last_timestep - 1) as f64, n + 1);
                values[1..]
                    .iter()
                    .rev()
                    .map(|t| t.round_ties_even() as i64)
                    .collect()
            }
            TimestepSpacing::Leading => {
                // (np.arange(0, n + 1) * (last_timestep // (n + 1))).round()[::-1][:-1] + offset
                let step_ratio = last_timestep.div_euclid(n as i64 + 1);
                (1..=n as i64)
                    .rev()
                    .map(|i| i * step_ratio + self.config.steps_offset as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                // np.arange(last_timestep, 0, -T / n).round().astype(np.int64) - 1
                let step_ratio = n_train as f64 / n as f64;
                numpy::arange(last_timestep as f64, 0.0, -step_ratio)
                    .into_iter()
                    .map(|t| t.round_ties_even() as i64 - 1)
                    .collect()
            }
        })
    }

    fn init_step_index(&mut self, timestep: f64) -> usize {
        let index = match self.begin_index {
            Some(begin) => begin,
            None => dpm_common::index_for_timestep(&self.timestep_values, timestep),
        };
        self.step_index = Some(index);
        index
    }

    fn point(&self, index: usize) -> Result<Point> {
        let len = self.sigmas.size()[0] as usize;
        if index >= len {
            return Err(Self::usage(format!(
                "step index {index} is past the end of the schedule ({len} sigmas); call \
                 set_timesteps before denoising again"
            )));
        }
        Point::at(&self.sigmas, index, self.config.dpm.use_flow_sigmas)
    }

    /// The `k`-th most recent model output (`self.model_outputs[-k]`).
    fn recent(&self, k: usize) -> Result<&Tensor> {
        self.model_outputs
            .len()
            .checked_sub(k)
            .and_then(|i| self.model_outputs[i].as_ref())
            .ok_or_else(|| Self::usage(format!("no model output {k} steps back")))
    }

    /// `multistep_dpm_solver_second_order_update(self.model_outputs, sample=sample, noise=noise)`.
    fn second_order(
        &self,
        index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let previous = index
            .checked_sub(1)
            .ok_or_else(|| Self::usage("a second-order update at the first step"))?;
        let t = self.point(index + 1)?;
        let s0 = self.point(index)?;
        let s1 = self.point(previous)?;
        let (m0, m1) = (self.recent(1)?, self.recent(2)?);
        let step = s0.step_to(&t)?;
        let h_0 = s0.lambda.f_sub(&s1.lambda)?;
        let r0 = h_0.f_div(&step.h)?;
        let d1 = divided(&r0, &m0.f_sub(m1)?)?;
        step.second_order(
            self.config.dpm.algorithm_type,
            self.config.dpm.solver_type,
            sample,
            m0,
            &d1,
            noise,
        )
    }

    /// `multistep_dpm_solver_third_order_update(self.model_outputs, sample=sample, noise=noise)`.
    fn third_order(&self, index: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        if index < 2 {
            return Err(Self::usage("a third-order update before the third step"));
        }
        let algorithm = self.config.dpm.algorithm_type;
        let t = self.point(index + 1)?;
        let s0 = self.point(index)?;
        let s1 = self.point(index - 1)?;
        let s2 = self.point(index - 2)?;
        let (m0, m1, m2) = (self.recent(1)?, self.recent(2)?, self.recent(3)?);
        let step = s0.step_to(&t)?;
        let h_0 = s0.lambda.f_sub(&s1.lambda)?;
        let h_1 = s1.lambda.f_sub(&s2.lambda)?;
        let r0 = h_0.f_div(&step.h)?;
        let r1 = h_1.f_div(&step.h)?;
        // D1_0, D1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
        let d1_0 = divided(&r0, &m0.f_sub(m1)?)?;
        let d1_1 = divided(&r1, &m1.f_sub(m2)?)?;
        let r_sum = r0.f_add(&r1)?;
        let d1_diff = d1_0.f_sub(&d1_1)?;
        // D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1); D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
        let d1 = d1_0.f_add(&r0.f_div(&r_sum)?.f_mul(&d1_diff)?)?;
        let d2 = divided(&r_sum, &d1_diff)?;
        let mut terms = vec![
            step.d0_term(algorithm, m0)?,
            step.d1_heun_term(algorithm, &d1)?,
            step.d2_term(algorithm, &d2)?,
        ];
        terms.extend(step.noise_term(algorithm, noise)?);
        dpm_common::combine(&step.sample_coefficient(algorithm)?, sample, &terms)
    }
}

impl Scheduler for DPMSolverMultistepScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(Self::usage("num_inference_steps must be at least 1"));
        }
        let spaced = self.spaced_timesteps(num_inference_steps)?;
        let round = self.training.beta_schedule != "squaredcos_cap_v2";
        let (sigmas, timesteps) =
            self.training
                .schedule(&self.config.dpm, &spaced, num_inference_steps, round)?;
        let timesteps = dpm_common::to_int64(&timesteps);
        self.sigmas = Tensor::from_slice(&sigmas);
        self.timesteps = Tensor::from_slice(&timesteps);
        self.timestep_values = timesteps.iter().map(|&t| t as f64).collect();
        self.num_inference_steps = Some(timesteps.len());
        self.model_outputs = empty_history(self.config.dpm.solver_order);
        self.lower_order_nums = 0;
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
        Ok(1.0)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    /// diffusers returns the sample unchanged (and does not look the timestep up).
    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        generators: &mut [Generator],
    ) -> Result<Tensor> {
        if self.num_inference_steps.is_none() {
            return Err(Self::usage(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after \
                 creating the scheduler",
            ));
        }
        let index = match self.step_index {
            Some(index) => index,
            None => self.init_step_index(timestep),
        };
        let dpm = &self.config.dpm;
        let len = self.timestep_values.len();
        // Improve numerical stability for small number of steps
        let lower_order_final = index + 1 == len
            && (self.config.euler_at_final
                || (dpm.lower_order_final && len < 15)
                || dpm.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = index + 2 == len && dpm.lower_order_final && len < 15;

        let sigma = self
            .sigmas
            .f_get(index as i64)
            .map_err(|_| Self::usage(format!("step index {index} is past the schedule")))?;
        let model_output = dpm_common::convert_model_output(dpm, model_output, sample, &sigma)?;
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(model_output.shallow_clone());
        }

        // Upcast to avoid precision issues when computing prev_sample
        let sample = sample.f_to_kind(Kind::Float)?;
        let algorithm = dpm.algorithm_type;
        let noise = if algorithm.is_sde() {
            Some(randn_tensor(&model_output.size(), generators, Kind::Float)?)
        } else {
            None
        };

        let solver_order = dpm.solver_order;
        let prev_sample = if solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            let target = self.point(index + 1)?;
            let base = self.point(index)?;
            base.step_to(&target)?
                .first_order(algorithm, &model_output, &sample, noise.as_ref())?
        } else if solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(index, &sample, noise.as_ref())?
        } else {
            self.third_order(index, &sample, noise.as_ref())?
        };
        if self.lower_order_nums < solver_order {
            self.lower_order_nums += 1;
        }
        // Cast sample back to expected dtype
        let prev_sample = prev_sample.f_to_kind(model_output.kind())?;
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::generator::Generator;

    fn build(json: &str) -> Result<DPMSolverMultistepScheduler> {
        DPMSolverMultistepScheduler::from_config(&ConfigFile::parse(
            Path::new("scheduler_config.json"),
            json,
        )?)
    }

    #[test]
    fn step_before_set_timesteps_is_a_usage_error() {
        let mut scheduler = build("{}").unwrap();
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
        let mut generators = [Generator::new(0).unwrap()];
        let error = scheduler.step(&x, 999.0, &x, &mut generators).unwrap_err();
        assert!(matches!(error, Error::SchedulerUsage { .. }), "{error}");
    }

    #[test]
    fn refuses_what_diffusers_refuses() {
        for json in [
            r#"{"algorithm_type": "dpmsolver"}"#,
            r#"{"algorithm_type": "deis"}"#,
            r#"{"algorithm_type": "foo"}"#,
            r#"{"solver_type": "foo"}"#,
            r#"{"use_karras_sigmas": true, "use_exponential_sigmas": true}"#,
            r#"{"use_beta_sigmas": true}"#,
            r#"{"final_sigmas_type": "foo"}"#,
        ] {
            assert!(build(json).is_err(), "{json} accepted");
        }
        assert!(build(r#"{"algorithm_type": "deis", "final_sigmas_type": "sigma_min"}"#).is_ok());
        assert!(build(r#"{"solver_type": "bh2"}"#).is_ok());
    }

    #[test]
    fn steps_past_the_schedule_are_a_usage_error() {
        let mut scheduler = build("{}").unwrap();
        scheduler.set_timesteps(2).unwrap();
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
        let mut generators = [Generator::new(0).unwrap()];
        for t in scheduler.timestep_values() {
            drop(scheduler.step(&x, t, &x, &mut generators).unwrap());
        }
        let error = scheduler.step(&x, 0.0, &x, &mut generators).unwrap_err();
        assert!(matches!(error, Error::SchedulerUsage { .. }), "{error}");
    }
}
