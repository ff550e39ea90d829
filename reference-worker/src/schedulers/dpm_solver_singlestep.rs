//! diffusers' `DPMSolverSinglestepScheduler` (0.42.1): single-step DPM-Solver(++) of orders 1–3,
//! where each group of `order` steps restarts from the sample at its first step. The order of
//! every step comes from `get_order_list`, including diffusers' own adjustments in
//! `set_timesteps`: `lower_order_final` is switched on (for good: `register_to_config`) when the
//! step count is not a multiple of `solver_order`, or when `final_sigmas_type` is `zero`, and the
//! last step is of order 1 with `final_sigmas_type="zero"`.
//!
//! The class takes no `timestep_spacing`, `steps_offset` or `rescale_betas_zero_snr`
//! (`from_config` ignores them): its timesteps are always `linspace(0, T - 1 - clipped, n + 1)`.
//! Shared pieces are in [`super::dpm_common`]; `sde-dpmsolver++` draws its noise with diffusers'
//! `randn_tensor` over the step's generator list, in the model output's dtype.

use tch::Tensor;

use super::dpm_common::{self, divided, empty_history, DpmClass, DpmConfig, DpmTraining, Point};
use super::euler_discrete::FinalSigmasType;
use super::{numpy, Scheduler};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::noise::randn_tensor;

const NAME: &str = "DPMSolverSinglestepScheduler";

#[derive(Debug)]
pub struct DPMSolverSinglestepScheduler {
    config: DpmConfig,
    training: DpmTraining,
    /// int64 after `set_timesteps` (float32 as `__init__` leaves them).
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// float32 `sigmas` (one more than the timesteps after `set_timesteps`).
    sigmas: Tensor,
    /// `self.model_outputs`, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    /// `self.sample`: the sample at the start of the current single-step group.
    sample: Option<Tensor>,
    order_list: Vec<usize>,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

/// `get_order_list(num_inference_steps)`: the solver order of each step.
pub fn get_order_list(
    num_inference_steps: usize,
    solver_order: usize,
    lower_order_final: bool,
    final_sigmas_type: FinalSigmasType,
) -> Result<Vec<usize>> {
    let steps = num_inference_steps;
    let repeat = |pattern: &[usize], times: usize| -> Vec<usize> {
        pattern
            .iter()
            .copied()
            .cycle()
            .take(pattern.len() * times)
            .collect()
    };
    let mut orders = match (lower_order_final, solver_order) {
        (true, 3) => match steps % 3 {
            0 => [
                repeat(&[1, 2, 3], (steps / 3).saturating_sub(1)),
                vec![1, 2, 1],
            ]
            .concat(),
            1 => [repeat(&[1, 2, 3], steps / 3), vec![1]].concat(),
            _ => [repeat(&[1, 2, 3], steps / 3), vec![1, 2]].concat(),
        },
        (true, 2) => {
            if steps % 2 == 0 {
                [repeat(&[1, 2], (steps / 2).saturating_sub(1)), vec![1, 1]].concat()
            } else {
                [repeat(&[1, 2], steps / 2), vec![1]].concat()
            }
        }
        (false, 3) => repeat(&[1, 2, 3], steps / 3),
        (false, 2) => repeat(&[1, 2], steps / 2),
        (_, 1) => vec![1; steps],
        (_, order) => {
            return Err(Error::SchedulerUsage {
                scheduler: NAME,
                message: format!("Order > 3 is not supported by this scheduler (got {order})"),
            })
        }
    };
    if final_sigmas_type == FinalSigmasType::Zero {
        match orders.last_mut() {
            Some(last) => *last = 1,
            None => {
                return Err(Error::SchedulerUsage {
                    scheduler: NAME,
                    message: format!(
                        "no solver steps for {steps} inference steps (diffusers fails with an \
                         IndexError here)"
                    ),
                })
            }
        }
    }
    Ok(orders)
}

impl DPMSolverSinglestepScheduler {
    /// `DPMSolverSinglestepScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = DpmConfig::from_file(c, DpmClass::Singlestep, false)?;
        let training = DpmTraining::from_config(c, DpmClass::Singlestep)?;
        let (timesteps, timestep_values, sigmas) = training.initial_tables()?;
        let order_list = get_order_list(
            training.num_train_timesteps,
            config.solver_order,
            config.lower_order_final,
            config.final_sigmas_type,
        )?;
        Ok(Self {
            model_outputs: empty_history(config.solver_order),
            config,
            training,
            timesteps,
            timestep_values,
            sigmas,
            sample: None,
            order_list,
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
        })
    }

    pub fn config(&self) -> &DpmConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// The solver order of each step of the current schedule.
    pub fn order_list(&self) -> &[usize] {
        &self.order_list
    }

    fn usage(message: impl Into<String>) -> Error {
        Error::SchedulerUsage {
            scheduler: NAME,
            message: message.into(),
        }
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
        Point::at(&self.sigmas, index, self.config.use_flow_sigmas)
    }

    /// The `k`-th most recent model output (`self.model_outputs[-k]`).
    fn recent(&self, k: usize) -> Option<&Tensor> {
        self.model_outputs
            .len()
            .checked_sub(k)
            .and_then(|i| self.model_outputs[i].as_ref())
    }

    fn recent_or_err(&self, k: usize) -> Result<&Tensor> {
        self.recent(k)
            .ok_or_else(|| Self::usage(format!("no model output {k} steps back")))
    }

    /// `singlestep_dpm_solver_second_order_update(self.model_outputs, sample=self.sample, ...)`:
    /// from `s1` (the group's start) to `t`, with `D0 = m1`.
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
        let (m0, m1) = (self.recent_or_err(1)?, self.recent_or_err(2)?);
        let step = s1.step_to(&t)?;
        let h_0 = s0.lambda.f_sub(&s1.lambda)?;
        let r0 = h_0.f_div(&step.h)?;
        let d1 = divided(&r0, &m0.f_sub(m1)?)?;
        step.second_order(
            self.config.algorithm_type,
            self.config.solver_type,
            sample,
            m1,
            &d1,
            noise,
        )
    }

    /// `singlestep_dpm_solver_third_order_update(self.model_outputs, sample=self.sample, ...)`:
    /// from `s2` (the group's start) to `t`, with `D0 = m2`.
    fn third_order(&self, index: usize, sample: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
        if index < 2 {
            return Err(Self::usage("a third-order update before the third step"));
        }
        let algorithm = self.config.algorithm_type;
        let t = self.point(index + 1)?;
        let s0 = self.point(index)?;
        let s1 = self.point(index - 1)?;
        let s2 = self.point(index - 2)?;
        let (m0, m1, m2) = (
            self.recent_or_err(1)?,
            self.recent_or_err(2)?,
            self.recent_or_err(3)?,
        );
        let step = s2.step_to(&t)?;
        let h_0 = s0.lambda.f_sub(&s2.lambda)?;
        let h_1 = s1.lambda.f_sub(&s2.lambda)?;
        let r0 = h_0.f_div(&step.h)?;
        let r1 = h_1.f_div(&step.h)?;
        // D1_0, D1_1 = (1.0 / r1) * (m1 - m2), (1.0 / r0) * (m0 - m2)
        let d1_0 = divided(&r1, &m1.f_sub(m2)?)?;
        let d1_1 = divided(&r0, &m0.f_sub(m2)?)?;
        let r_diff = r0.f_sub(&r1)?;
        let (d1, d2);
        let mut terms = vec![step.d0_term(algorithm, m2)?];
        match self.config.solver_type {
            dpm_common::SolverType::Midpoint => {
                terms.push(step.d1_heun_term(algorithm, &d1_1)?);
            }
            dpm_common::SolverType::Heun => {
                // D1 = (r0 * D1_0 - r1 * D1_1) / (r0 - r1); D2 = 2.0 * (D1_1 - D1_0) / (r0 - r1)
                d1 = r0.f_mul(&d1_0)?.f_sub(&r1.f_mul(&d1_1)?)?.f_div(&r_diff)?;
                d2 = d1_1.f_sub(&d1_0)?.f_mul_scalar(2.0)?.f_div(&r_diff)?;
                terms.push(step.d1_heun_term(algorithm, &d1)?);
                terms.push(step.d2_term(algorithm, &d2)?);
            }
        }
        terms.extend(step.noise_term(algorithm, noise)?);
        dpm_common::combine(&step.sample_coefficient(algorithm)?, sample, &terms)
    }
}

impl Scheduler for DPMSolverSinglestepScheduler {
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
        let n = num_inference_steps;
        self.num_inference_steps = Some(n);
        // Clipping the minimum of all lambda(t) for numerical stability.
        let clipped_idx = self.training.clipped_idx(self.config.lambda_min_clipped)?;
        let end = self.training.num_train_timesteps as f64 - 1.0 - clipped_idx as f64;
        // np.linspace(0, T - 1 - clipped_idx, n + 1).round()[::-1][:-1].astype(np.int64)
        let spaced: Vec<i64> = numpy::linspace(0.0, end, n + 1)[1..]
            .iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect();
        let (sigmas, timesteps) = self.training.schedule(&self.config, &spaced, n, true)?;
        let timesteps = dpm_common::to_int64(&timesteps);
        self.sigmas = Tensor::from_slice(&sigmas);
        self.timesteps = Tensor::from_slice(&timesteps);
        self.timestep_values = timesteps.iter().map(|&t| t as f64).collect();
        self.model_outputs = empty_history(self.config.solver_order);
        self.sample = None;

        // diffusers' adjustments, kept in the config (register_to_config) as diffusers does.
        if !self.config.lower_order_final && n % self.config.solver_order != 0 {
            self.config.lower_order_final = true;
        }
        if !self.config.lower_order_final && self.config.final_sigmas_type == FinalSigmasType::Zero
        {
            self.config.lower_order_final = true;
        }
        self.order_list = get_order_list(
            n,
            self.config.solver_order,
            self.config.lower_order_final,
            self.config.final_sigmas_type,
        )?;
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
        let sigma = self
            .sigmas
            .f_get(index as i64)
            .map_err(|_| Self::usage(format!("step index {index} is past the schedule")))?;
        let model_output =
            dpm_common::convert_model_output(&self.config, model_output, sample, &sigma)?;
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(model_output.shallow_clone());
        }

        let algorithm = self.config.algorithm_type;
        let noise = if algorithm.is_sde() {
            Some(randn_tensor(
                &model_output.size(),
                generators,
                model_output.kind(),
            )?)
        } else {
            None
        };

        let mut order = *self.order_list.get(index).ok_or_else(|| {
            Self::usage(format!(
                "step index {index} is past the end of the schedule ({} steps); call \
                 set_timesteps before denoising again",
                self.order_list.len()
            ))
        })?;
        // For img2img denoising might start with order>1 which is not possible
        while order > 1 && self.recent(order).is_none() {
            order -= 1;
        }
        // For single-step solvers, we use the initial value at each time with order = 1.
        if order == 1 {
            self.sample = Some(sample.shallow_clone());
        }
        let group_sample = self
            .sample
            .as_ref()
            .ok_or_else(|| Self::usage("a higher-order step before any first-order step"))?
            .shallow_clone();
        let noise = noise.as_ref();
        let prev_sample = match order {
            1 => {
                let target = self.point(index + 1)?;
                let base = self.point(index)?;
                base.step_to(&target)?.first_order(
                    algorithm,
                    &model_output,
                    &group_sample,
                    noise,
                )?
            }
            2 => self.second_order(index, &group_sample, noise)?,
            _ => self.third_order(index, &group_sample, noise)?,
        };
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_lists_match_diffusers() {
        let zero = FinalSigmasType::Zero;
        let min = FinalSigmasType::SigmaMin;
        assert_eq!(
            get_order_list(7, 2, true, zero).unwrap(),
            [1, 2, 1, 2, 1, 2, 1]
        );
        assert_eq!(get_order_list(6, 2, true, min).unwrap(), [1, 2, 1, 2, 1, 1]);
        assert_eq!(get_order_list(6, 3, true, min).unwrap(), [1, 2, 3, 1, 2, 1]);
        assert_eq!(
            get_order_list(7, 3, true, min).unwrap(),
            [1, 2, 3, 1, 2, 3, 1]
        );
        assert_eq!(
            get_order_list(8, 3, true, min).unwrap(),
            [1, 2, 3, 1, 2, 3, 1, 2]
        );
        assert_eq!(
            get_order_list(6, 3, false, zero).unwrap(),
            [1, 2, 3, 1, 2, 1]
        );
        assert_eq!(get_order_list(3, 1, false, min).unwrap(), [1, 1, 1]);
        assert!(get_order_list(6, 4, true, min).is_err());
    }
}

#[cfg(test)]
mod scheduler_tests {
    use std::path::Path;

    use super::*;

    fn build(json: &str) -> Result<DPMSolverSinglestepScheduler> {
        DPMSolverSinglestepScheduler::from_config(&ConfigFile::parse(
            Path::new("scheduler_config.json"),
            json,
        )?)
    }

    #[test]
    fn lower_order_final_stays_switched_on() {
        let mut s =
            build(r#"{"lower_order_final": false, "final_sigmas_type": "sigma_min"}"#).unwrap();
        s.set_timesteps(6).unwrap();
        assert_eq!(s.order_list(), [1, 2, 1, 2, 1, 2]);
        s.set_timesteps(7).unwrap();
        assert_eq!(s.order_list(), [1, 2, 1, 2, 1, 2, 1]);
        // register_to_config(lower_order_final=True) persists.
        s.set_timesteps(6).unwrap();
        assert_eq!(s.order_list(), [1, 2, 1, 2, 1, 1]);
    }

    #[test]
    fn refuses_what_diffusers_refuses() {
        for json in [
            r#"{"solver_order": 4}"#,
            r#"{"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"}"#,
            r#"{"algorithm_type": "dpmsolver"}"#,
            r#"{"use_beta_sigmas": true}"#,
        ] {
            assert!(build(json).is_err(), "{json} accepted");
        }
    }
}
