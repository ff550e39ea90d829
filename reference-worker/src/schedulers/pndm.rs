//! diffusers' `PNDMScheduler` (0.42.1), pseudo numerical methods for diffusion models: with
//! `skip_prk_steps` (SDXL's config) a linear multistep method (PLMS) whose first step is taken
//! twice (Heun-like warm-up); without, three Runge-Kutta warm-up steps of four model evaluations
//! each (PRK) fill the history before PLMS takes over. int64 timesteps; `alphas_cumprod` in
//! float32 torch ops; every step as the same torch ops on 0-d float32 tensors.

use tch::Tensor;

use super::discrete::{self, one_minus, usage};
use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::{numpy, PredictionType, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::Result;
use crate::generator::Generator;

const NAME: &str = "PNDMScheduler";

/// `pndm_order`: the PRK warm-up covers the last four timesteps of `_timesteps`.
const PNDM_ORDER: usize = 4;

/// The constructor arguments of `PNDMScheduler.__init__` that shape sampling, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PndmConfig {
    pub skip_prk_steps: bool,
    pub set_alpha_to_one: bool,
    /// `epsilon` or `v_prediction` (diffusers' `_get_prev_sample` raises for `sample`).
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl PndmConfig {
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let prediction_type = PredictionType::from_config(c)?;
        if prediction_type == PredictionType::Sample {
            return Err(c.invalid(
                "prediction_type",
                "PNDMScheduler takes `epsilon` or `v_prediction` (diffusers raises \"prediction_type \
                 given as sample must be one of `epsilon` or `v_prediction`\" in step)",
            ));
        }
        Ok(Self {
            skip_prk_steps: c.bool_or("skip_prk_steps", false)?,
            set_alpha_to_one: c.bool_or("set_alpha_to_one", false)?,
            prediction_type,
            timestep_spacing: TimestepSpacing::from_config(c, "leading")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
        })
    }
}

#[derive(Debug)]
pub struct PNDMScheduler {
    config: PndmConfig,
    num_train_timesteps: usize,
    /// float32 `alphas_cumprod`.
    alphas_cumprod: Tensor,
    /// `final_alpha_cumprod`: `torch.tensor(1.0)` or `alphas_cumprod[0]` (0-d float32).
    final_alpha_cumprod: Tensor,
    num_inference_steps: Option<usize>,
    /// `prk_timesteps` (empty with `skip_prk_steps`).
    prk_timesteps: Vec<i64>,
    /// int64 `timesteps`: the PRK timesteps, then the PLMS ones (empty before `set_timesteps`,
    /// where diffusers has `None`).
    timesteps: Tensor,
    timestep_values: Vec<i64>,
    /// `counter`: model evaluations so far.
    counter: usize,
    /// `cur_model_output` (the PRK weighted sum; `None` where diffusers holds the int 0).
    cur_model_output: Option<Tensor>,
    /// `cur_sample`: the sample the current PRK step (or the PLMS warm-up) started from.
    cur_sample: Option<Tensor>,
    /// `ets`: past model outputs (the last four are used).
    ets: Vec<Tensor>,
}

impl PNDMScheduler {
    /// `PNDMScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = PndmConfig::from_file(c)?;
        let schedule = TrainingSchedule::from_config(c, TrainingDefaults::COMMON)?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            Tensor::from(1.0f32)
        } else {
            schedule.alphas_cumprod.f_get(0)?
        };
        Ok(Self {
            config,
            num_train_timesteps: schedule.num_train_timesteps,
            alphas_cumprod: schedule.alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps: None,
            prk_timesteps: Vec::new(),
            timesteps: discrete::int64_tensor(&[]),
            timestep_values: Vec::new(),
            counter: 0,
            cur_model_output: None,
            cur_sample: None,
            ets: Vec::new(),
        })
    }

    pub fn config(&self) -> &PndmConfig {
        &self.config
    }

    /// `_timesteps` of `set_timesteps`, ascending:
    ///
    /// ```text
    /// linspace: np.linspace(0, T - 1, n).round().astype(np.int64)
    /// leading:  (np.arange(0, n) * (T // n)).round() + steps_offset
    /// trailing: np.round(np.arange(T, 0, -(T / n)))[::-1].astype(np.int64) - 1
    /// ```
    fn base_timesteps(&self, n: usize) -> Vec<i64> {
        let t = self.num_train_timesteps;
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace => numpy::linspace(0.0, (t - 1) as f64, n)
                .into_iter()
                .map(|v| v.round_ties_even() as i64)
                .collect(),
            TimestepSpacing::Leading => (0..n)
                .map(|i| (i * (t / n) + self.config.steps_offset) as i64)
                .collect(),
            TimestepSpacing::Trailing => discrete::trailing_f64(t, n)
                .into_iter()
                .rev()
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect(),
        }
    }

    fn num_inference_steps(&self) -> Result<usize> {
        self.num_inference_steps.ok_or_else(|| {
            usage(
                NAME,
                "Number of inference steps is 'None', you need to run 'set_timesteps' after \
                 creating the scheduler",
            )
        })
    }

    /// `step_prk`: one of the four evaluations of a Runge-Kutta step; the sample moves from
    /// `cur_sample` by half a step (evaluations 1 and 2) or a whole one (3 and 4).
    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let n = self.num_inference_steps()?;
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            (self.num_train_timesteps / n / 2) as i64
        };
        let prev_timestep = timestep - diff_to_prev;
        let timestep = self.prk_timesteps[self.counter / 4 * 4];

        let model_output = match self.counter % 4 {
            0 => {
                // self.cur_model_output += 1 / 6 * model_output  (cur_model_output is 0 here)
                self.cur_model_output =
                    Some(model_output.f_mul_scalar(1.0 / 6.0)?.f_add_scalar(0)?);
                self.ets.push(model_output.shallow_clone());
                self.cur_sample = Some(sample.shallow_clone());
                model_output.shallow_clone()
            }
            1 | 2 => {
                // self.cur_model_output += 1 / 3 * model_output
                let third = model_output.f_mul_scalar(1.0 / 3.0)?;
                self.cur_model_output = Some(match self.cur_model_output.take() {
                    Some(sum) => sum.f_add(&third)?,
                    None => third.f_add_scalar(0)?,
                });
                model_output.shallow_clone()
            }
            _ => {
                // model_output = self.cur_model_output + 1 / 6 * model_output
                let sixth = model_output.f_mul_scalar(1.0 / 6.0)?;
                match self.cur_model_output.take() {
                    Some(sum) => sum.f_add(&sixth)?,
                    None => sixth.f_add_scalar(0)?,
                }
            }
        };
        let cur_sample = self
            .cur_sample
            .as_ref()
            .map_or_else(|| sample.shallow_clone(), Tensor::shallow_clone);
        let prev_sample =
            self.get_prev_sample(&cur_sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev_sample)
    }

    /// `step_plms`: the linear multistep update from the last (up to) four model outputs.
    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: i64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let n = self.num_inference_steps()?;
        if !self.config.skip_prk_steps && self.ets.len() < 3 {
            return Err(usage(
                NAME,
                "PNDMScheduler can only be run AFTER scheduler has been run in 'prk' mode for at \
                 least 12 iterations",
            ));
        }
        let ratio = (self.num_train_timesteps / n) as i64;
        let mut timestep = timestep;
        let mut prev_timestep = timestep - ratio;
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.shallow_clone());
        } else {
            prev_timestep = timestep;
            timestep += ratio;
        }

        let ets = &self.ets;
        let e = |back: usize| &ets[ets.len() - back];
        let mut sample = sample.shallow_clone();
        let model_output = if ets.len() == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            model_output.shallow_clone()
        } else if ets.len() == 1 && self.counter == 1 {
            // (model_output + self.ets[-1]) / 2, from the sample of the first step
            let averaged = model_output.f_add(e(1))?.f_div_scalar(2)?;
            sample = self
                .cur_sample
                .take()
                .ok_or_else(|| usage(NAME, "the PLMS warm-up lost its first sample"))?;
            averaged
        } else if ets.len() == 2 {
            // (3 * self.ets[-1] - self.ets[-2]) / 2
            e(1).f_mul_scalar(3)?.f_sub(e(2))?.f_div_scalar(2)?
        } else if ets.len() == 3 {
            // (23 * self.ets[-1] - 16 * self.ets[-2] + 5 * self.ets[-3]) / 12
            e(1).f_mul_scalar(23)?
                .f_sub(&e(2).f_mul_scalar(16)?)?
                .f_add(&e(3).f_mul_scalar(5)?)?
                .f_div_scalar(12)?
        } else {
            // (1 / 24) * (55 * self.ets[-1] - 59 * self.ets[-2] + 37 * self.ets[-3] - 9 * self.ets[-4])
            e(1).f_mul_scalar(55)?
                .f_sub(&e(2).f_mul_scalar(59)?)?
                .f_add(&e(3).f_mul_scalar(37)?)?
                .f_sub(&e(4).f_mul_scalar(9)?)?
                .f_mul_scalar(1.0 / 24.0)?
        };
        let prev_sample = self.get_prev_sample(&sample, timestep, prev_timestep, &model_output)?;
        self.counter += 1;
        Ok(prev_sample)
    }

    /// `_get_prev_sample`: formula (9) of the PNDM paper, from `timestep` to `prev_timestep`.
    fn get_prev_sample(
        &self,
        sample: &Tensor,
        timestep: i64,
        prev_timestep: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        let t = discrete::table_index(NAME, timestep as f64, self.num_train_timesteps)?;
        let alpha_prod_t = self.alphas_cumprod.f_get(t)?;
        let alpha_prod_t_prev = if prev_timestep >= 0 {
            let prev = discrete::table_index(NAME, prev_timestep as f64, self.num_train_timesteps)?;
            self.alphas_cumprod.f_get(prev)?
        } else {
            self.final_alpha_cumprod.shallow_clone()
        };
        let beta_prod_t = one_minus(&alpha_prod_t)?;
        let beta_prod_t_prev = one_minus(&alpha_prod_t_prev)?;
        let model_output = match self.config.prediction_type {
            // (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
            PredictionType::VPrediction => alpha_prod_t
                .f_pow_tensor_scalar(0.5)?
                .f_mul(model_output)?
                .f_add(&beta_prod_t.f_pow_tensor_scalar(0.5)?.f_mul(sample)?)?,
            _ => model_output.shallow_clone(),
        };
        // (alpha_prod_t_prev / alpha_prod_t) ** (0.5)
        let sample_coeff = alpha_prod_t_prev
            .f_div(&alpha_prod_t)?
            .f_pow_tensor_scalar(0.5)?;
        // alpha_prod_t * beta_prod_t_prev ** (0.5)
        //     + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev) ** (0.5)
        let model_output_denom_coeff = alpha_prod_t
            .f_mul(&beta_prod_t_prev.f_pow_tensor_scalar(0.5)?)?
            .f_add(
                &alpha_prod_t
                    .f_mul(&beta_prod_t)?
                    .f_mul(&alpha_prod_t_prev)?
                    .f_pow_tensor_scalar(0.5)?,
            )?;
        // sample_coeff * sample
        //     - (alpha_prod_t_prev - alpha_prod_t) * model_output / model_output_denom_coeff
        Ok(sample_coeff.f_mul(sample)?.f_sub(
            &alpha_prod_t_prev
                .f_sub(&alpha_prod_t)?
                .f_mul(&model_output)?
                .f_div(&model_output_denom_coeff)?,
        )?)
    }
}

impl Scheduler for PNDMScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    /// `set_timesteps(num_inference_steps)`:
    ///
    /// ```text
    /// skip_prk_steps: prk_timesteps = []
    ///                 plms_timesteps = concat(_ts[:-1], _ts[-2:-1], _ts[-1:])[::-1]
    /// else:           prk = _ts[-4:].repeat(2) + tile([0, T // n // 2], 4)
    ///                 prk_timesteps = prk[:-1].repeat(2)[1:-1][::-1]
    ///                 plms_timesteps = _ts[:-3][::-1]
    /// timesteps = concat(prk_timesteps, plms_timesteps)
    /// ```
    ///
    /// Without `skip_prk_steps` fewer than four steps fail as NumPy's broadcast does in diffusers.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(usage(NAME, "num_inference_steps must be at least 1"));
        }
        let n = num_inference_steps;
        let base = self.base_timesteps(n);
        let (prk, plms): (Vec<i64>, Vec<i64>) = if self.config.skip_prk_steps {
            let len = base.len();
            let mut plms: Vec<i64> = base[..len - 1].to_vec();
            if len >= 2 {
                plms.push(base[len - 2]);
            }
            plms.push(base[len - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if base.len() < PNDM_ORDER {
                return Err(usage(
                    NAME,
                    format!(
                        "operands could not be broadcast together with shapes ({},) (8,) \
                         (without skip_prk_steps the Runge-Kutta warm-up needs at least \
                         {PNDM_ORDER} steps)",
                        2 * base.len()
                    ),
                ));
            }
            let half = (self.num_train_timesteps / n / 2) as i64;
            let last: Vec<i64> = base[base.len() - PNDM_ORDER..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            let repeated: Vec<i64> = last[..last.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            let mut prk = repeated[1..repeated.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..base.len() - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        let timesteps: Vec<i64> = prk.iter().chain(&plms).copied().collect();
        discrete::check_schedule(NAME, &timesteps, self.num_train_timesteps)?;
        self.num_inference_steps = Some(n);
        self.timestep_values = timesteps;
        self.timesteps = discrete::int64_tensor(&self.timestep_values);
        self.prk_timesteps = prk;
        self.ets.clear();
        self.counter = 0;
        self.cur_model_output = None;
        self.cur_sample = None;
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

    /// PNDM has no `set_begin_index`: ignored, as the pipeline's `hasattr` check does.
    fn set_begin_index(&mut self, _begin_index: usize) {}

    /// `scale_model_input` returns the sample unchanged.
    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    /// `step`: `step_prk` for the first `len(prk_timesteps)` calls (without `skip_prk_steps`),
    /// `step_plms` after.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        let timestep = discrete::table_index(NAME, timestep, self.num_train_timesteps)?;
        if self.counter < self.prk_timesteps.len() && !self.config.skip_prk_steps {
            self.step_prk(model_output, timestep, sample)
        } else {
            self.step_plms(model_output, timestep, sample)
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
    fn refusals_follow_diffusers() {
        let c = test_config(json!({ "prediction_type": "sample" }));
        assert!(is_invalid(
            PNDMScheduler::from_config(&c),
            "prediction_type"
        ));
        // diffusers: "operands could not be broadcast together with shapes (6,) (8,)"
        let c = test_config(json!({ "skip_prk_steps": false }));
        let mut s = PNDMScheduler::from_config(&c).unwrap();
        assert!(is_usage(s.set_timesteps(3)));
        s.set_timesteps(4).unwrap();
        assert_eq!(s.timestep_values().len(), 13);
    }

    #[test]
    fn step_before_set_timesteps_is_a_usage_error() {
        let mut s = PNDMScheduler::from_config(&test_config(json!({}))).unwrap();
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, tch::Device::Cpu));
        assert!(is_usage(s.step(&x, 1.0, &x, &mut [])));
    }
}
