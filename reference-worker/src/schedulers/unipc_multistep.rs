//! diffusers' `UniPCMultistepScheduler` (0.42.1): the unified predictor-corrector of "UniPC"
//! (Zhao et al. 2023). Tables in NumPy float64 with float32 casts where diffusers casts (int64
//! timesteps, float32 sigmas); every solver coefficient as the same torch ops on 0-d float32
//! tensors, the order-3+ coefficients `rhos` through the same `torch.linalg.solve` (LAPACK
//! `gesv`) on the same float32 matrices, and the history sums through the same `torch.einsum`.
//!
//! Refused, with a config error: `use_flow_sigmas` / `flow_prediction` (flow-matching models),
//! `use_beta_sigmas` (scipy), `use_dynamic_shifting` (needs a `mu` the SDXL pipeline never
//! passes; diffusers raises) and `solver_p` (a scheduler object, not a JSON value).

use tch::{Device, Kind, Tensor};

use super::discrete::{self, usage};
use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::thresholding::DynamicThresholding;
use super::{numpy, sigmas, PredictionType, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::Result;
use crate::generator::Generator;

const NAME: &str = "UniPCMultistepScheduler";

/// `solver_type`: the B(h) of the UniPC paper (Appendix F).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    /// `B(h) = h` (for unconditional sampling, few steps).
    Bh1,
    /// `B(h) = e^h - 1` (the default; also what `midpoint`, `heun` and `logrho` become).
    Bh2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

/// How `set_timesteps` turns timesteps into sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// `np.interp` of the training sigmas at the timesteps.
    Interpolated,
    Karras,
    Exponential,
}

/// The constructor arguments of `UniPCMultistepScheduler.__init__` that shape sampling, with
/// its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct UniPcConfig {
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: Option<DynamicThresholding>,
    pub predict_x0: bool,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    /// `disable_corrector`: step indices whose following step skips the corrector.
    pub disable_corrector: Vec<i64>,
    pub sigma_schedule: SigmaSchedule,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub final_sigmas_type: FinalSigmasType,
    pub rescale_betas_zero_snr: bool,
}

impl UniPcConfig {
    /// Reads the keys with `UniPCMultistepScheduler`'s own defaults and diffusers' checks.
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let use_karras_sigmas = c.bool_or("use_karras_sigmas", false)?;
        let use_exponential_sigmas = c.bool_or("use_exponential_sigmas", false)?;
        let use_beta_sigmas = c.bool_or("use_beta_sigmas", false)?;
        if [use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas]
            .iter()
            .filter(|&&flag| flag)
            .count()
            > 1
        {
            return Err(c.invalid(
                "use_karras_sigmas",
                "Only one of `config.use_beta_sigmas`, `config.use_exponential_sigmas`, \
                 `config.use_karras_sigmas` can be used.",
            ));
        }
        if use_beta_sigmas {
            return Err(c.invalid(
                "use_beta_sigmas",
                "beta sigmas (scipy.stats.beta.ppf) are not supported by the reference worker",
            ));
        }
        let use_flow_sigmas = c.bool_or("use_flow_sigmas", false)?;
        if c.raw("shift_terminal").is_some_and(|v| !v.is_null()) && !use_flow_sigmas {
            return Err(c.invalid(
                "shift_terminal",
                "`shift_terminal` is only supported when `use_flow_sigmas=True`.",
            ));
        }
        if use_flow_sigmas {
            return Err(c.invalid(
                "use_flow_sigmas",
                "flow-matching sigmas are for flow-matching models, not supported by the SDXL \
                 reference worker",
            ));
        }
        if c.bool_or("use_dynamic_shifting", false)? {
            return Err(c.invalid(
                "use_dynamic_shifting",
                "`mu` must be passed when `use_dynamic_shifting` is set to be `True` (the SDXL \
                 pipeline never passes it)",
            ));
        }
        if c.raw("solver_p").is_some_and(|v| !v.is_null()) {
            return Err(c.invalid(
                "solver_p",
                "a predictor scheduler object cannot be given in a config; not supported",
            ));
        }
        if c.opt_string("prediction_type")?.as_deref() == Some("flow_prediction") {
            return Err(c.invalid(
                "prediction_type",
                "`flow_prediction` (flow-matching models) is not supported by the SDXL reference \
                 worker",
            ));
        }
        let solver_order = c.usize_or("solver_order", 2)?;
        if solver_order == 0 {
            return Err(c.invalid(
                "solver_order",
                "must be at least 1 (diffusers fails in step with 0)",
            ));
        }
        let solver_type = match c.string_or("solver_type", "bh2")?.as_str() {
            "bh1" => SolverType::Bh1,
            // diffusers re-registers these as bh2
            "bh2" | "midpoint" | "heun" | "logrho" => SolverType::Bh2,
            other => {
                return Err(c.invalid(
                    "solver_type",
                    format!("{other} is not implemented for UniPCMultistepScheduler"),
                ))
            }
        };
        let final_sigmas_type = match c.string_or("final_sigmas_type", "zero")?.as_str() {
            "zero" => FinalSigmasType::Zero,
            "sigma_min" => FinalSigmasType::SigmaMin,
            other => {
                return Err(c.invalid(
                    "final_sigmas_type",
                    format!(
                        "`final_sigmas_type` must be one of 'zero', or 'sigma_min', but got {other}"
                    ),
                ))
            }
        };
        let sigma_schedule = if use_karras_sigmas {
            SigmaSchedule::Karras
        } else if use_exponential_sigmas {
            SigmaSchedule::Exponential
        } else {
            SigmaSchedule::Interpolated
        };
        Ok(Self {
            solver_order,
            prediction_type: PredictionType::from_config(c)?,
            thresholding: DynamicThresholding::from_config(c)?,
            predict_x0: c.bool_or("predict_x0", true)?,
            solver_type,
            lower_order_final: c.bool_or("lower_order_final", true)?,
            disable_corrector: disable_corrector(c)?,
            sigma_schedule,
            sigma_min: c.opt_f64("sigma_min")?,
            sigma_max: c.opt_f64("sigma_max")?,
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            final_sigmas_type,
            rescale_betas_zero_snr: c.bool_or("rescale_betas_zero_snr", false)?,
        })
    }
}

/// `disable_corrector`: a list of integers (default empty).
fn disable_corrector(c: &ConfigFile) -> Result<Vec<i64>> {
    const EXPECTED: &str = "`disable_corrector` should be a list of integers";
    match c.raw("disable_corrector") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_i64()
                    .ok_or_else(|| c.invalid("disable_corrector", EXPECTED))
            })
            .collect(),
        Some(_) => Err(c.invalid("disable_corrector", EXPECTED)),
    }
}

#[derive(Debug)]
pub struct UniPCMultistepScheduler {
    config: UniPcConfig,
    num_train_timesteps: usize,
    /// float32 `alphas_cumprod` (the last one 2**-24 with zero-SNR rescaling).
    alphas_cumprod: Tensor,
    /// int64 `timesteps` after `set_timesteps` (float32 training timesteps before).
    timesteps: Tensor,
    timestep_values: Vec<f64>,
    /// float32 `sigmas` (one more than `timesteps` after `set_timesteps`).
    sigmas: Tensor,
    num_inference_steps: Option<usize>,
    /// `model_outputs`: the converted model outputs of the last `solver_order` steps, oldest
    /// first (`None` until filled).
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    /// `last_sample`: the sample of the previous step, which the corrector refines.
    last_sample: Option<Tensor>,
    /// `this_order`: the order of the previous predictor step (the corrector's order).
    this_order: usize,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

/// The B(h) terms of one UniPC update (`multistep_uni_p_bh_update` / `_c_`).
struct BhTerms {
    h_phi_1: Tensor,
    b_h: Tensor,
    /// `R`: `[order, order]`, row `i` is `rks ** i`.
    r: Tensor,
    /// `b`: `[order]`.
    b: Tensor,
}

impl UniPCMultistepScheduler {
    /// `UniPCMultistepScheduler(**config)`: `config` is the merged `from_config` view.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = UniPcConfig::from_file(c)?;
        let schedule = TrainingSchedule::from_config(c, TrainingDefaults::COMMON)?;
        let alphas_cumprod = schedule.alphas_cumprod;
        if config.rescale_betas_zero_snr {
            // "Close to 0 without being 0 so first sigma is not inf"
            let _ = alphas_cumprod.f_get(-1)?.f_fill_(2f64.powi(-24))?;
        }
        let n = schedule.num_train_timesteps;
        // np.linspace(0, T - 1, T, dtype=np.float32)[::-1]
        let timestep_values: Vec<f64> = numpy::linspace(0.0, (n - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| f64::from(t as f32))
            .collect();
        let timesteps_f32: Vec<f32> = timestep_values.iter().map(|&t| t as f32).collect();
        let solver_order = config.solver_order;
        Ok(Self {
            num_train_timesteps: n,
            sigmas: train_sigmas(&alphas_cumprod)?,
            alphas_cumprod,
            timesteps: Tensor::from_slice(&timesteps_f32),
            timestep_values,
            num_inference_steps: None,
            model_outputs: (0..solver_order).map(|_| None).collect(),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 0,
            step_index: None,
            begin_index: None,
            config,
        })
    }

    pub fn config(&self) -> &UniPcConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    /// The timesteps of `set_timesteps` before any sigma conversion (NumPy int64 values):
    ///
    /// ```text
    /// linspace: np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
    /// leading:  (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1] + steps_offset
    /// trailing: np.arange(T, 0, -(T / n)).round() - 1
    /// ```
    fn spaced_timesteps(&self, n: usize) -> Vec<i64> {
        let t = self.num_train_timesteps;
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                let mut values: Vec<i64> = numpy::linspace(0.0, (t - 1) as f64, n + 1)
                    .into_iter()
                    .rev()
                    .map(|v| v.round_ties_even() as i64)
                    .collect();
                values.pop();
                values
            }
            TimestepSpacing::Leading => {
                let step_ratio = t / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * step_ratio + self.config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => discrete::trailing_f64(t, n)
                .into_iter()
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect(),
        }
    }

    /// `index_for_timestep`: the position of `timestep` in the schedule, the second one when it
    /// occurs twice. (diffusers falls back to the last index for a timestep that is not in the
    /// schedule; that is misuse here.)
    fn index_for_timestep(&self, timestep: f64) -> Result<usize> {
        let indices: Vec<usize> = self
            .timestep_values
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == timestep)
            .map(|(i, _)| i)
            .collect();
        let position = if indices.len() > 1 { 1 } else { 0 };
        indices
            .get(position)
            .copied()
            .ok_or_else(|| usage(NAME, format!("timestep {timestep} is not in the schedule")))
    }

    /// `self.sigmas[index]` (0-d float32).
    fn sigma_at(&self, index: usize) -> Result<Tensor> {
        Ok(self.sigmas.f_get(index as i64)?)
    }

    /// `model_outputs[-(back + 1)]`.
    fn model_output_back(&self, back: usize) -> Result<&Tensor> {
        let len = self.model_outputs.len();
        self.model_outputs
            .get(len.wrapping_sub(back + 1))
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                usage(
                    NAME,
                    "the multistep history is shorter than the solver order",
                )
            })
    }

    /// `alpha_t, sigma_t = _sigma_to_alpha_sigma_t(sigmas[index])`, then
    /// `lambda_t = torch.log(alpha_t) - torch.log(sigma_t)`.
    fn alpha_sigma_lambda(&self, index: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let (alpha, sigma) = sigma_to_alpha_sigma_t(&self.sigma_at(index)?)?;
        let lambda = alpha.f_log()?.f_sub(&sigma.f_log()?)?;
        Ok((alpha, sigma, lambda))
    }

    /// `convert_model_output(model_output, sample=sample)`: the data prediction `x0` with
    /// `predict_x0` (thresholded when configured), else the noise prediction.
    fn convert_model_output(&self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let index = self.step_index.unwrap_or_default();
        let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(&self.sigma_at(index)?)?;
        if self.config.predict_x0 {
            let x0_pred = match self.config.prediction_type {
                // (sample - sigma_t * model_output) / alpha_t
                PredictionType::Epsilon => sample
                    .f_sub(&sigma_t.f_mul(model_output)?)?
                    .f_div(&alpha_t)?,
                PredictionType::Sample => model_output.shallow_clone(),
                // alpha_t * sample - sigma_t * model_output
                PredictionType::VPrediction => alpha_t
                    .f_mul(sample)?
                    .f_sub(&sigma_t.f_mul(model_output)?)?,
            };
            match self.config.thresholding {
                Some(thresholding) => thresholding.apply(&x0_pred),
                None => Ok(x0_pred),
            }
        } else {
            Ok(match self.config.prediction_type {
                PredictionType::Epsilon => model_output.shallow_clone(),
                // (sample - alpha_t * model_output) / sigma_t
                PredictionType::Sample => sample
                    .f_sub(&alpha_t.f_mul(model_output)?)?
                    .f_div(&sigma_t)?,
                // alpha_t * model_output + sigma_t * sample
                PredictionType::VPrediction => alpha_t
                    .f_mul(model_output)?
                    .f_add(&sigma_t.f_mul(sample)?)?,
            })
        }
    }

    /// The part `multistep_uni_p_bh_update` and `multistep_uni_c_bh_update` share: `rks` (with
    /// the final 1), `hh`, `h_phi_1`, `B_h`, and the `R`, `b` of the linear system:
    ///
    /// ```text
    /// hh = -h if predict_x0 else h
    /// h_phi_1 = torch.expm1(hh); h_phi_k = h_phi_1 / hh - 1; factorial_i = 1
    /// B_h = hh (bh1) or torch.expm1(hh) (bh2)
    /// for i in range(1, order + 1):
    ///     R.append(torch.pow(rks, i - 1)); b.append(h_phi_k * factorial_i / B_h)
    ///     factorial_i *= i + 1; h_phi_k = h_phi_k / hh - 1 / factorial_i
    /// ```
    fn bh_terms(&self, h: &Tensor, mut rks: Vec<Tensor>, order: usize) -> Result<BhTerms> {
        rks.push(Tensor::ones([], (Kind::Float, Device::Cpu)));
        let rks = Tensor::f_stack(&rks, 0)?;
        let hh = if self.config.predict_x0 {
            h.f_neg()?
        } else {
            h.shallow_clone()
        };
        let h_phi_1 = hh.f_expm1()?;
        let mut h_phi_k = h_phi_1.f_div(&hh)?.f_sub_scalar(1)?;
        let mut factorial_i: i64 = 1;
        let b_h = match self.config.solver_type {
            SolverType::Bh1 => hh.shallow_clone(),
            SolverType::Bh2 => hh.f_expm1()?,
        };
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order as i64 {
            r.push(rks.f_pow_tensor_scalar(i - 1)?);
            b.push(h_phi_k.f_mul_scalar(factorial_i)?.f_div(&b_h)?);
            factorial_i *= i + 1;
            h_phi_k = h_phi_k.f_div(&hh)?.f_sub_scalar(1.0 / factorial_i as f64)?;
        }
        Ok(BhTerms {
            h_phi_1,
            b_h,
            r: Tensor::f_stack(&r, 0)?,
            b: Tensor::f_stack(&b, 0)?,
        })
    }

    /// `multistep_uni_p_bh_update(model_output, sample=sample, order=order)`: the predictor,
    /// from `sigmas[step_index]` to `sigmas[step_index + 1]`.
    fn uni_p_bh_update(&self, x: &Tensor, order: usize) -> Result<Tensor> {
        let step_index = self.step_index.unwrap_or_default();
        let m0 = self.model_output_back(0)?;
        let (alpha_t, sigma_t, lambda_t) = self.alpha_sigma_lambda(step_index + 1)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.alpha_sigma_lambda(step_index)?;
        let h = lambda_t.f_sub(&lambda_s0)?;

        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let mi = self.model_output_back(i)?;
            let (_, _, lambda_si) = self.alpha_sigma_lambda(step_index - i)?;
            let rk = lambda_si.f_sub(&lambda_s0)?.f_div(&h)?;
            d1s.push(mi.f_sub(m0)?.f_div(&rk)?);
            rks.push(rk);
        }
        let terms = self.bh_terms(&h, rks, order)?;

        let rhos_p = if d1s.is_empty() {
            None
        } else if order == 2 {
            Some(Tensor::ones([1], (x.kind(), Device::Cpu)).f_mul_scalar(0.5)?)
        } else {
            // torch.linalg.solve(R[:-1, :-1], b[:-1])
            let k = order as i64 - 1;
            let r = terms.r.f_slice(0, 0, k, 1)?.f_slice(1, 0, k, 1)?;
            let b = terms.b.f_slice(0, 0, k, 1)?;
            Some(Tensor::f_linalg_solve(&r, &b, true)?.f_to_kind(x.kind())?)
        };
        let (scale, coeff) = if self.config.predict_x0 {
            // sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
            (sigma_t.f_div(&sigma_s0)?, alpha_t)
        } else {
            // alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0
            (alpha_t.f_div(&alpha_s0)?, sigma_t)
        };
        let x_t_ = scale
            .f_mul(x)?
            .f_sub(&coeff.f_mul(&terms.h_phi_1)?.f_mul(m0)?)?;
        let coeff_b_h = coeff.f_mul(&terms.b_h)?;
        // x_t = x_t_ - {alpha,sigma}_t * B_h * pred_res
        let x_t = match rhos_p {
            Some(rhos_p) => {
                let d1s = Tensor::f_stack(&d1s, 1)?;
                let pred_res = Tensor::f_einsum("k,bkc...->bc...", &[&rhos_p, &d1s], None::<i64>)?;
                x_t_.f_sub(&coeff_b_h.f_mul(&pred_res)?)?
            }
            // pred_res = 0
            None => x_t_.f_sub(&coeff_b_h.f_mul_scalar(0)?)?,
        };
        Ok(x_t.f_to_kind(x.kind())?)
    }

    /// `multistep_uni_c_bh_update(this_model_output, last_sample=..., this_sample=...,
    /// order=...)`: the corrector, refining the sample the previous predictor reached with the
    /// model output there.
    /// (`this_sample` only names the device in diffusers, so it is not a parameter here.)
    fn uni_c_bh_update(&self, model_t: &Tensor, x: &Tensor, order: usize) -> Result<Tensor> {
        let step_index = self.step_index.unwrap_or_default();
        let m0 = self.model_output_back(0)?;
        let (alpha_t, sigma_t, lambda_t) = self.alpha_sigma_lambda(step_index)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.alpha_sigma_lambda(step_index - 1)?;
        let h = lambda_t.f_sub(&lambda_s0)?;

        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let mi = self.model_output_back(i)?;
            let (_, _, lambda_si) = self.alpha_sigma_lambda(step_index - (i + 1))?;
            let rk = lambda_si.f_sub(&lambda_s0)?.f_div(&h)?;
            d1s.push(mi.f_sub(m0)?.f_div(&rk)?);
            rks.push(rk);
        }
        let terms = self.bh_terms(&h, rks, order)?;

        let rhos_c = if order == 1 {
            Tensor::ones([1], (x.kind(), Device::Cpu)).f_mul_scalar(0.5)?
        } else {
            Tensor::f_linalg_solve(&terms.r, &terms.b, true)?.f_to_kind(x.kind())?
        };
        let (scale, coeff) = if self.config.predict_x0 {
            (sigma_t.f_div(&sigma_s0)?, alpha_t)
        } else {
            (alpha_t.f_div(&alpha_s0)?, sigma_t)
        };
        let x_t_ = scale
            .f_mul(x)?
            .f_sub(&coeff.f_mul(&terms.h_phi_1)?.f_mul(m0)?)?;
        let len = rhos_c.size()[0];
        let d1_t = model_t.f_sub(m0)?;
        let last_term = rhos_c.f_get(len - 1)?.f_mul(&d1_t)?;
        // corr_res + rhos_c[-1] * D1_t
        let correction = if d1s.is_empty() {
            // corr_res = 0: 0 + tensor
            last_term.f_add_scalar(0)?
        } else {
            let d1s = Tensor::f_stack(&d1s, 1)?;
            let rhos = rhos_c.f_slice(0, 0, len - 1, 1)?;
            let corr_res = Tensor::f_einsum("k,bkc...->bc...", &[&rhos, &d1s], None::<i64>)?;
            corr_res.f_add(&last_term)?
        };
        // x_t = x_t_ - {alpha,sigma}_t * B_h * (corr_res + rhos_c[-1] * D1_t)
        let x_t = x_t_.f_sub(&coeff.f_mul(&terms.b_h)?.f_mul(&correction)?)?;
        Ok(x_t.f_to_kind(x.kind())?)
    }
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32 torch ops.
fn train_sigmas(alphas_cumprod: &Tensor) -> Result<Tensor> {
    Ok(discrete::one_minus(alphas_cumprod)?
        .f_div(alphas_cumprod)?
        .f_pow_tensor_scalar(0.5)?)
}

/// `_sigma_to_alpha_sigma_t(sigma)`: `alpha_t = 1 / ((sigma**2 + 1) ** 0.5)` (Python's `1 / t`
/// is `t.reciprocal() * 1`), `sigma_t = sigma * alpha_t`.
fn sigma_to_alpha_sigma_t(sigma: &Tensor) -> Result<(Tensor, Tensor)> {
    let alpha_t = sigma
        .f_pow_tensor_scalar(2)?
        .f_add_scalar(1)?
        .f_pow_tensor_scalar(0.5)?
        .f_reciprocal()?;
    let sigma_t = sigma.f_mul(&alpha_t)?;
    Ok((alpha_t, sigma_t))
}

impl Scheduler for UniPCMultistepScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn order(&self) -> usize {
        1
    }

    /// `set_timesteps(num_inference_steps)`: the spaced timesteps, then the sigmas (interpolated
    /// in the training sigmas, or Karras / exponential with timesteps back from `_sigma_to_t`),
    /// the final sigma appended, all cast to float32; timesteps cast to int64.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        if num_inference_steps == 0 {
            return Err(usage(NAME, "num_inference_steps must be at least 1"));
        }
        let n = num_inference_steps;
        let timesteps = self.spaced_timesteps(n);
        // np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5): float32, ascending in t.
        let train: Vec<f32> = Vec::<f32>::try_from(&train_sigmas(&self.alphas_cumprod)?)?;
        let (timesteps, sigmas, sigma_last): (Vec<i64>, Vec<f64>, f64) =
            match self.config.sigma_schedule {
                SigmaSchedule::Interpolated => {
                    let xp: Vec<f64> = (0..train.len()).map(|i| i as f64).collect();
                    let fp: Vec<f64> = train.iter().map(|&s| f64::from(s)).collect();
                    let x: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
                    let sigma_last = match self.config.final_sigmas_type {
                        FinalSigmasType::Zero => 0.0,
                        // ((1 - alphas_cumprod[0]) / alphas_cumprod[0]) ** 0.5, a float32 0-d
                        FinalSigmasType::SigmaMin => {
                            let first = self.alphas_cumprod.f_get(0)?;
                            train_sigmas(&first)?.f_double_value(&[])?
                        }
                    };
                    (timesteps, numpy::interp(&x, &xp, &fp), sigma_last)
                }
                SigmaSchedule::Karras | SigmaSchedule::Exponential => {
                    let log_sigmas: Vec<f32> = train.iter().map(|&s| numpy::log_f32(s)).collect();
                    let flipped: Vec<f64> = train.iter().rev().map(|&s| f64::from(s)).collect();
                    let karras = self.config.sigma_schedule == SigmaSchedule::Karras;
                    let (min, max) = (self.config.sigma_min, self.config.sigma_max);
                    let sigmas = if karras {
                        sigmas::karras(&flipped, n, min, max)
                    } else {
                        sigmas::exponential(&flipped, n, min, max)
                    };
                    let timesteps = sigmas
                        .iter()
                        .map(|&sigma| {
                            let t = sigmas::sigma_to_t(sigma, &log_sigmas);
                            // Karras rounds (np.round); exponential truncates in .to(torch.int64)
                            if karras {
                                t.round_ties_even() as i64
                            } else {
                                t as i64
                            }
                        })
                        .collect();
                    let sigma_last = match self.config.final_sigmas_type {
                        FinalSigmasType::Zero => 0.0,
                        FinalSigmasType::SigmaMin => sigmas[sigmas.len() - 1],
                    };
                    (timesteps, sigmas, sigma_last)
                }
            };
        // np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        let sigmas_f32: Vec<f32> = sigmas
            .iter()
            .chain(std::iter::once(&sigma_last))
            .map(|&s| s as f32)
            .collect();
        self.sigmas = Tensor::from_slice(&sigmas_f32);
        self.timesteps = discrete::int64_tensor(&timesteps);
        self.timestep_values = timesteps.iter().map(|&t| t as f64).collect();
        self.num_inference_steps = Some(timesteps.len());
        self.model_outputs = (0..self.config.solver_order).map(|_| None).collect();
        self.lower_order_nums = 0;
        self.last_sample = None;
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

    /// `scale_model_input` returns the sample unchanged.
    fn scale_model_input(&mut self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    /// `step(model_output, timestep, sample)`: the corrector (UniC) on `sample` with this model
    /// output, unless disabled for this step or it is the first; then the history shift and the
    /// predictor (UniP) of order `min(solver_order, steps left, steps taken + 1)`.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        if self.num_inference_steps.is_none() {
            return Err(usage(
                NAME,
                "Number of inference steps is 'None', you need to run 'set_timesteps' after \
                 creating the scheduler",
            ));
        }
        let step_index = match (self.step_index, self.begin_index) {
            (Some(index), _) | (None, Some(index)) => index,
            (None, None) => self.index_for_timestep(timestep)?,
        };
        let len = self.timestep_values.len();
        if step_index >= len {
            return Err(usage(
                NAME,
                format!(
                    "step index {step_index} is past the end of the schedule ({len} timesteps); \
                     call set_timesteps before denoising again"
                ),
            ));
        }
        self.step_index = Some(step_index);

        let use_corrector = step_index > 0
            && !self
                .config
                .disable_corrector
                .contains(&(step_index as i64 - 1))
            && self.last_sample.is_some();
        let model_output_convert = self.convert_model_output(model_output, sample)?;
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last_sample), true) => {
                self.uni_c_bh_update(&model_output_convert, last_sample, self.this_order)?
            }
            _ => sample.shallow_clone(),
        };

        self.model_outputs.remove(0);
        self.model_outputs.push(Some(model_output_convert));

        let order = self.config.solver_order;
        let this_order = if self.config.lower_order_final {
            order.min(len - step_index)
        } else {
            order
        };
        self.this_order = this_order.min(self.lower_order_nums + 1);
        let prev_sample = self.uni_p_bh_update(&sample, self.this_order)?;
        self.last_sample = Some(sample);

        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(step_index + 1);
        Ok(prev_sample)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schedulers::discrete::{is_invalid, is_usage, test_config};

    fn zeros() -> Tensor {
        Tensor::zeros([1, 4, 2, 2], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn unsupported_options_are_refused() {
        for (options, key) in [
            (json!({ "use_flow_sigmas": true }), "use_flow_sigmas"),
            (
                json!({ "prediction_type": "flow_prediction" }),
                "prediction_type",
            ),
            (json!({ "use_beta_sigmas": true }), "use_beta_sigmas"),
            (
                json!({ "use_dynamic_shifting": true }),
                "use_dynamic_shifting",
            ),
            (json!({ "shift_terminal": 0.5 }), "shift_terminal"),
            (json!({ "solver_type": "foo" }), "solver_type"),
            (json!({ "final_sigmas_type": "foo" }), "final_sigmas_type"),
            (json!({ "solver_order": 0 }), "solver_order"),
            (
                json!({ "use_karras_sigmas": true, "use_exponential_sigmas": true }),
                "use_karras_sigmas",
            ),
        ] {
            let c = test_config(options.clone());
            assert!(
                is_invalid(UniPCMultistepScheduler::from_config(&c), key),
                "{options}"
            );
        }
    }

    #[test]
    fn misuse_is_a_usage_error() {
        let mut s = UniPCMultistepScheduler::from_config(&test_config(json!({}))).unwrap();
        let x = zeros();
        assert!(is_usage(s.step(&x, 999.0, &x, &mut [])));
        s.set_timesteps(3).unwrap();
        assert!(is_usage(s.step(&x, 998.0, &x, &mut [])));
        for t in s.timestep_values() {
            let _ = s.step(&x, t, &x, &mut []).unwrap();
        }
        assert!(is_usage(s.step(&x, 0.0, &x, &mut [])));
    }

    /// diffusers raises `torch.linalg.solve: The solver failed because the input matrix is
    /// singular` on the last step here (the final sigma is 0); so do we, without panicking.
    #[test]
    fn a_singular_solve_is_an_error() {
        let c = test_config(json!({
            "use_karras_sigmas": true, "solver_order": 3, "lower_order_final": false
        }));
        let mut s = UniPCMultistepScheduler::from_config(&c).unwrap();
        s.set_timesteps(12).unwrap();
        let mut sample = Tensor::ones([1, 4, 2, 2], (Kind::Float, Device::Cpu));
        let timesteps = s.timestep_values();
        let (last, rest) = timesteps.split_last().unwrap();
        for &t in rest {
            let output = sample.f_mul_scalar(0.1).unwrap();
            sample = s.step(&output, t, &sample, &mut []).unwrap();
        }
        assert!(s.step(&sample, *last, &sample, &mut []).is_err());
    }
}
