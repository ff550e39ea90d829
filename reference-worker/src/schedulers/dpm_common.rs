//! What diffusers' `DPMSolverMultistepScheduler` and `DPMSolverSinglestepScheduler` share (0.42.1;
//! most of it is marked `# Copied from` between the two files): the configuration keys both take,
//! the training tables of `__init__` (`alphas_cumprod`, `lambda_t`, the training sigmas), the sigma
//! schedules of `set_timesteps`, `_sigma_to_alpha_sigma_t`, `_threshold_sample`,
//! `convert_model_output`, `dpm_solver_first_order_update`, and the update formulas of order 2 and
//! 3, all as the same torch ops on 0-d float32 tensors so rounding and dtype promotion match.
//!
//! The update formulas are written in diffusers as sums such as
//! `(sigma_t / sigma_s0) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * D0 - 0.5 * (...) * D1`:
//! each term is a 0-d coefficient times a tensor, and the terms are added left to right;
//! [`combine`] evaluates them in that order, with each coefficient built op for op.

use tch::{Kind, Tensor};

use super::euler_discrete::FinalSigmasType;
use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::{numpy, sigmas, without_keys};
use crate::config::ConfigFile;
use crate::error::{Error, Result};

/// `algorithm_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmType {
    /// `dpmsolver`: integrates the noise prediction.
    DpmSolver,
    /// `dpmsolver++` (and `deis`, which diffusers maps to it): integrates the data prediction.
    DpmSolverPlusPlus,
    /// `sde-dpmsolver` (multistep only).
    SdeDpmSolver,
    /// `sde-dpmsolver++`.
    SdeDpmSolverPlusPlus,
}

impl AlgorithmType {
    /// Whether the model output is converted to a data (x0) prediction.
    pub fn predicts_data(self) -> bool {
        matches!(self, Self::DpmSolverPlusPlus | Self::SdeDpmSolverPlusPlus)
    }

    /// Whether `step` draws noise.
    pub fn is_sde(self) -> bool {
        matches!(self, Self::SdeDpmSolver | Self::SdeDpmSolverPlusPlus)
    }
}

/// `solver_type` (`logrho`, `bh1` and `bh2` map to midpoint, as in diffusers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

/// `prediction_type` of the DPM-Solvers, which also take `flow_prediction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpmPredictionType {
    Epsilon,
    Sample,
    VPrediction,
    FlowPrediction,
}

/// Which branch of `set_timesteps` builds the sigmas (diffusers' `if`/`elif` order: Karras, then
/// Lu lambdas (multistep only), exponential, beta, flow, else interpolation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSchedule {
    Interpolated,
    Karras,
    LuLambdas,
    Exponential,
    Flow,
}

/// Dynamic thresholding (`thresholding=True`): `dynamic_thresholding_ratio`, `sample_max_value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholding {
    pub ratio: f64,
    pub sample_max_value: f64,
}

/// The two classes, where their `__init__`s differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpmClass {
    Multistep,
    Singlestep,
}

/// The constructor arguments both DPM-Solver classes take, with each class's defaults and
/// `__init__` checks.
#[derive(Debug, Clone, PartialEq)]
pub struct DpmConfig {
    pub solver_order: usize,
    pub prediction_type: DpmPredictionType,
    pub thresholding: Option<Thresholding>,
    pub algorithm_type: AlgorithmType,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub sigma_schedule: SigmaSchedule,
    /// `use_flow_sigmas`, which also changes `_sigma_to_alpha_sigma_t`.
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    pub lambda_min_clipped: f64,
    /// `variance_type in ["learned", "learned_range"]`: the model output's first 3 channels.
    pub learned_variance: bool,
}

impl DpmConfig {
    /// Reads the shared keys. `use_lu_lambdas` is the multistep-only key (false for singlestep),
    /// needed here because it sits in the middle of the schedule `if`/`elif` chain.
    pub fn from_file(c: &ConfigFile, class: DpmClass, use_lu_lambdas: bool) -> Result<Self> {
        let use_karras_sigmas = c.bool_or("use_karras_sigmas", false)?;
        let use_exponential_sigmas = c.bool_or("use_exponential_sigmas", false)?;
        let use_beta_sigmas = c.bool_or("use_beta_sigmas", false)?;
        let use_flow_sigmas = c.bool_or("use_flow_sigmas", false)?;
        if [use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas]
            .iter()
            .filter(|&&b| b)
            .count()
            > 1
        {
            return Err(c.invalid(
                "use_karras_sigmas",
                "Only one of `config.use_beta_sigmas`, `config.use_exponential_sigmas`, \
                 `config.use_karras_sigmas` can be used.",
            ));
        }
        let sigma_schedule = if use_karras_sigmas {
            SigmaSchedule::Karras
        } else if use_lu_lambdas {
            SigmaSchedule::LuLambdas
        } else if use_exponential_sigmas {
            SigmaSchedule::Exponential
        } else if use_beta_sigmas {
            return Err(c.invalid(
                "use_beta_sigmas",
                "beta sigmas (scipy.stats.beta.ppf) are not supported by the reference worker",
            ));
        } else if use_flow_sigmas {
            SigmaSchedule::Flow
        } else {
            SigmaSchedule::Interpolated
        };

        let algorithm_name = c.string_or("algorithm_type", "dpmsolver++")?;
        let algorithm_type = match (algorithm_name.as_str(), class) {
            ("dpmsolver", _) => AlgorithmType::DpmSolver,
            ("dpmsolver++" | "deis", _) => AlgorithmType::DpmSolverPlusPlus,
            ("sde-dpmsolver", DpmClass::Multistep) => AlgorithmType::SdeDpmSolver,
            ("sde-dpmsolver++", _) => AlgorithmType::SdeDpmSolverPlusPlus,
            (other, _) => {
                return Err(c.invalid(
                    "algorithm_type",
                    format!("{other} is not implemented for {}", class_name(class)),
                ))
            }
        };
        let solver_type = match c.string_or("solver_type", "midpoint")?.as_str() {
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => {
                return Err(c.invalid(
                    "solver_type",
                    format!("{other} is not implemented for {}", class_name(class)),
                ))
            }
        };
        let final_sigmas_name = c.string_or("final_sigmas_type", "zero")?;
        // diffusers tests the name as given (so `deis` counts as not `dpmsolver++` here).
        if !matches!(algorithm_name.as_str(), "dpmsolver++" | "sde-dpmsolver++")
            && final_sigmas_name == "zero"
        {
            return Err(c.invalid(
                "final_sigmas_type",
                format!(
                    "`final_sigmas_type` zero is not supported for `algorithm_type` \
                     {algorithm_name}. Please choose `sigma_min` instead."
                ),
            ));
        }
        let final_sigmas_type = match final_sigmas_name.as_str() {
            "zero" => FinalSigmasType::Zero,
            "sigma_min" => FinalSigmasType::SigmaMin,
            other => {
                return Err(c.invalid(
                    "final_sigmas_type",
                    format!("must be one of 'zero', or 'sigma_min', but got {other}"),
                ))
            }
        };
        let prediction_type = match c.string_or("prediction_type", "epsilon")?.as_str() {
            "epsilon" => DpmPredictionType::Epsilon,
            "sample" => DpmPredictionType::Sample,
            "v_prediction" => DpmPredictionType::VPrediction,
            "flow_prediction" if algorithm_type.predicts_data() => {
                DpmPredictionType::FlowPrediction
            }
            other => {
                return Err(c.invalid(
                    "prediction_type",
                    format!(
                        "prediction_type given as {other} must be one of `epsilon`, `sample`, \
                         `v_prediction` (or `flow_prediction` with dpmsolver++) for the {}",
                        class_name(class)
                    ),
                ))
            }
        };
        let solver_order = c.usize_or("solver_order", 2)?;
        if solver_order == 0 || (class == DpmClass::Singlestep && solver_order > 3) {
            return Err(c.invalid(
                "solver_order",
                match class {
                    DpmClass::Multistep => "must be at least 1",
                    DpmClass::Singlestep => "Order > 3 is not supported by this scheduler",
                },
            ));
        }
        let thresholding = if c.bool_or("thresholding", false)? {
            if class == DpmClass::Singlestep && algorithm_type == AlgorithmType::DpmSolver {
                return Err(c.invalid(
                    "thresholding",
                    "DPMSolverSinglestepScheduler's dpmsolver thresholding indexes `alpha_t` with \
                     the timestep `step` does not pass (None), which cannot work; not reproduced",
                ));
            }
            Some(Thresholding {
                ratio: c.f64_or("dynamic_thresholding_ratio", 0.995)?,
                sample_max_value: c.f64_or("sample_max_value", 1.0)?,
            })
        } else {
            None
        };
        let variance_type = c.opt_string("variance_type")?;
        Ok(Self {
            solver_order,
            prediction_type,
            thresholding,
            algorithm_type,
            solver_type,
            lower_order_final: c
                .bool_or("lower_order_final", matches!(class, DpmClass::Multistep))?,
            sigma_schedule,
            use_flow_sigmas,
            flow_shift: c.f64_or("flow_shift", 1.0)?,
            final_sigmas_type,
            lambda_min_clipped: c.f64_or("lambda_min_clipped", f64::NEG_INFINITY)?,
            learned_variance: matches!(variance_type.as_deref(), Some("learned" | "learned_range")),
        })
    }
}

fn class_name(class: DpmClass) -> &'static str {
    match class {
        DpmClass::Multistep => "DPMSolverMultistepScheduler",
        DpmClass::Singlestep => "DPMSolverSinglestepScheduler",
    }
}

/// The tables of the DPM-Solvers' `__init__`.
#[derive(Debug)]
pub struct DpmTraining {
    pub num_train_timesteps: usize,
    /// `beta_schedule` as configured (the Karras/Lu timesteps are rounded unless it is
    /// `squaredcos_cap_v2`).
    pub beta_schedule: String,
    /// float32 `alphas_cumprod`.
    pub alphas_cumprod: Tensor,
    /// float32 `lambda_t = log(sqrt(alphas_cumprod)) - log(sqrt(1 - alphas_cumprod))`.
    pub lambda_t: Tensor,
    /// float32 `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, ascending in `t` (what
    /// `np.array(...)` of it holds in `set_timesteps`).
    pub train_sigmas: Vec<f32>,
}

impl DpmTraining {
    /// `betas` … `sigmas` as the class's `__init__` computes them. `zero_snr` is the multistep
    /// class's `rescale_betas_zero_snr` (the singlestep class does not take the key).
    pub fn from_config(c: &ConfigFile, class: DpmClass) -> Result<Self> {
        let zero_snr = match class {
            DpmClass::Multistep => c.bool_or("rescale_betas_zero_snr", false)?,
            DpmClass::Singlestep => false,
        };
        let c = match class {
            DpmClass::Multistep => c.clone(),
            DpmClass::Singlestep => without_keys(c, &["rescale_betas_zero_snr"]),
        };
        let schedule = TrainingSchedule::from_config(&c, TrainingDefaults::COMMON)?;
        let alphas_cumprod = schedule.alphas_cumprod;
        if zero_snr {
            // "Close to 0 without being 0 so first sigma is not inf"
            let _ = alphas_cumprod.f_get(-1)?.f_fill_(2f64.powi(-24))?;
        }
        let alpha_t = alphas_cumprod.f_sqrt()?;
        let sigma_t = alphas_cumprod.f_neg()?.f_add_scalar(1)?.f_sqrt()?;
        let lambda_t = alpha_t.f_log()?.f_sub(&sigma_t.f_log()?)?;
        let train_sigmas = Vec::<f32>::try_from(
            &alphas_cumprod
                .f_neg()?
                .f_add_scalar(1)?
                .f_div(&alphas_cumprod)?
                .f_pow_tensor_scalar(0.5)?,
        )?;
        Ok(Self {
            num_train_timesteps: schedule.num_train_timesteps,
            beta_schedule: c.string_or("beta_schedule", TrainingDefaults::COMMON.beta_schedule)?,
            alphas_cumprod,
            lambda_t,
            train_sigmas,
        })
    }

    /// The schedule `__init__` leaves: float32 `timesteps` `linspace(0, T - 1, T)[::-1]` and
    /// the float32 training sigmas (ascending, without a final sigma).
    pub fn initial_tables(&self) -> Result<(Tensor, Vec<f64>, Tensor)> {
        let n = self.num_train_timesteps;
        let values: Vec<f32> = numpy::linspace(0.0, (n - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect();
        let timesteps = Tensor::from_slice(&values);
        let values = values.into_iter().map(f64::from).collect();
        Ok((timesteps, values, Tensor::from_slice(&self.train_sigmas)))
    }

    /// `torch.searchsorted(torch.flip(self.lambda_t, [0]), self.config.lambda_min_clipped)`.
    pub fn clipped_idx(&self, lambda_min_clipped: f64) -> Result<usize> {
        let flipped = self.lambda_t.f_flip([0])?;
        let index = Tensor::f_searchsorted_scalar::<Tensor, _>(
            &flipped,
            lambda_min_clipped,
            false,
            false,
            "left",
            None,
        )?;
        Ok(index.f_int64_value(&[])? as usize)
    }

    /// `((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5` (0-d float32 ops).
    pub fn sigma_min(&self) -> Result<f64> {
        let first = self.alphas_cumprod.f_get(0)?;
        Ok(first
            .f_neg()?
            .f_add_scalar(1)?
            .f_div(&first)?
            .f_pow_tensor_scalar(0.5)?
            .f_double_value(&[])?)
    }

    /// The second half of `set_timesteps`, from the integer timesteps of the spacing on: the
    /// float64 sigmas of `schedule` and the timesteps that go with them (still float64; the
    /// caller converts them to int64 with `.to(torch.int64)`, which truncates), then the final
    /// sigma appended and the sigmas cast to float32.
    ///
    /// `round_karras_lu`: whether the Karras / Lu timesteps are rounded (`.round()`).
    pub fn schedule(
        &self,
        config: &DpmConfig,
        timesteps: &[i64],
        num_inference_steps: usize,
        round_karras_lu: bool,
    ) -> Result<(Vec<f32>, Vec<f64>)> {
        let log_sigmas: Vec<f32> = self
            .train_sigmas
            .iter()
            .map(|&s| numpy::log_f32(s))
            .collect();
        // np.flip(sigmas): float32 training sigmas, descending.
        let flipped: Vec<f64> = self
            .train_sigmas
            .iter()
            .rev()
            .map(|&s| f64::from(s))
            .collect();
        let to_t = |sigmas: &[f64]| -> Vec<f64> {
            sigmas
                .iter()
                .map(|&sigma| sigmas::sigma_to_t(sigma, &log_sigmas))
                .collect()
        };
        let round = |ts: Vec<f64>| -> Vec<f64> {
            if round_karras_lu {
                ts.into_iter().map(f64::round_ties_even).collect()
            } else {
                ts
            }
        };
        let (sigmas, timesteps): (Vec<f64>, Vec<f64>) = match config.sigma_schedule {
            SigmaSchedule::Karras => {
                let sigmas = sigmas::karras(&flipped, num_inference_steps, None, None);
                let ts = round(to_t(&sigmas));
                (sigmas, ts)
            }
            SigmaSchedule::LuLambdas => {
                let lambdas: Vec<f64> = log_sigmas.iter().rev().map(|&l| f64::from(l)).collect();
                let sigmas: Vec<f64> = lu_lambdas(&lambdas, num_inference_steps)
                    .into_iter()
                    .map(f64::exp)
                    .collect();
                let ts = round(to_t(&sigmas));
                (sigmas, ts)
            }
            SigmaSchedule::Exponential => {
                let sigmas = sigmas::exponential(&flipped, num_inference_steps, None, None);
                let ts = to_t(&sigmas);
                (sigmas, ts)
            }
            SigmaSchedule::Flow => {
                let n_train = self.num_train_timesteps as f64;
                let shift = config.flow_shift;
                // alphas = np.linspace(1, 1 / T, n + 1); sigmas = 1.0 - alphas
                // sigmas = np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))[:-1]
                let shifted: Vec<f64> =
                    numpy::linspace(1.0, 1.0 / n_train, num_inference_steps + 1)
                        .into_iter()
                        .map(|alpha| {
                            let sigma = 1.0 - alpha;
                            shift * sigma / (1.0 + (shift - 1.0) * sigma)
                        })
                        .collect();
                let sigmas: Vec<f64> = shifted
                    .into_iter()
                    .rev()
                    .take(num_inference_steps)
                    .collect();
                let ts = sigmas.iter().map(|&s| s * n_train).collect();
                (sigmas, ts)
            }
            SigmaSchedule::Interpolated => {
                let x: Vec<f64> = timesteps.iter().map(|&t| t as f64).collect();
                let xp: Vec<f64> = (0..self.train_sigmas.len()).map(|i| i as f64).collect();
                let fp: Vec<f64> = self.train_sigmas.iter().map(|&s| f64::from(s)).collect();
                (numpy::interp(&x, &xp, &fp), x)
            }
        };
        let sigma_last = match config.final_sigmas_type {
            FinalSigmasType::SigmaMin => self.sigma_min()?,
            FinalSigmasType::Zero => 0.0,
        };
        // np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        let sigmas_f32 = sigmas
            .iter()
            .chain(std::iter::once(&sigma_last))
            .map(|&s| s as f32)
            .collect();
        Ok((sigmas_f32, timesteps))
    }
}

/// `_convert_to_lu(in_lambdas, num_inference_steps)` (rho = 1.0), float64: `x ** 1.0` is `x`
/// exactly, both for Python floats and NumPy's power fast path.
pub fn lu_lambdas(in_lambdas: &[f64], num_inference_steps: usize) -> Vec<f64> {
    let lambda_min = in_lambdas[in_lambdas.len() - 1];
    let lambda_max = in_lambdas[0];
    numpy::linspace(0.0, 1.0, num_inference_steps)
        .into_iter()
        .map(|r| lambda_max + r * (lambda_min - lambda_max))
        .collect()
}

/// float64 timesteps to int64 as `torch.from_numpy(timesteps).to(torch.int64)` does (truncation).
pub fn to_int64(timesteps: &[f64]) -> Vec<i64> {
    timesteps.iter().map(|&t| t as i64).collect()
}

/// `_sigma_to_alpha_sigma_t(sigma)` on a 0-d float32 sigma: `alpha_t = 1 / ((sigma**2 + 1) **
/// 0.5)` (Python's `1 / t` is `t.reciprocal() * 1`), `sigma_t = sigma * alpha_t`; with flow sigmas
/// `alpha_t = 1 - sigma`, `sigma_t = sigma`.
pub fn sigma_to_alpha_sigma_t(sigma: &Tensor, flow: bool) -> Result<(Tensor, Tensor)> {
    if flow {
        return Ok((sigma.f_rsub_scalar(1)?, sigma.shallow_clone()));
    }
    let alpha_t = sigma
        .f_pow_tensor_scalar(2)?
        .f_add_scalar(1)?
        .f_pow_tensor_scalar(0.5)?
        .f_reciprocal()?
        .f_mul_scalar(1)?;
    let sigma_t = sigma.f_mul(&alpha_t)?;
    Ok((alpha_t, sigma_t))
}

/// `torch.log(alpha_t) - torch.log(sigma_t)`.
pub fn lambda(alpha_t: &Tensor, sigma_t: &Tensor) -> Result<Tensor> {
    Ok(alpha_t.f_log()?.f_sub(&sigma_t.f_log()?)?)
}

/// A 0-d coefficient, its sign in the sum, and the tensor it multiplies.
pub struct Term<'a> {
    pub subtract: bool,
    pub coefficient: Tensor,
    pub tensor: &'a Tensor,
}

impl<'a> Term<'a> {
    pub fn plus(coefficient: Tensor, tensor: &'a Tensor) -> Self {
        Self {
            subtract: false,
            coefficient,
            tensor,
        }
    }

    pub fn minus(coefficient: Tensor, tensor: &'a Tensor) -> Self {
        Self {
            subtract: true,
            coefficient,
            tensor,
        }
    }
}

/// `first_coefficient * first ± c1 * t1 ± c2 * t2 ...`, left to right as Python evaluates it.
pub fn combine(first_coefficient: &Tensor, first: &Tensor, terms: &[Term]) -> Result<Tensor> {
    let mut x = first_coefficient.f_mul(first)?;
    for term in terms {
        let product = term.coefficient.f_mul(term.tensor)?;
        x = if term.subtract {
            x.f_sub(&product)?
        } else {
            x.f_add(&product)?
        };
    }
    Ok(x)
}

/// The 0-d quantities of one update step: `alpha_t`, `sigma_t` at the target sigma, the same at
/// the base point `s` the update starts from, and `h = lambda_t - lambda_base`.
pub struct Step {
    pub alpha_t: Tensor,
    pub sigma_t: Tensor,
    pub alpha_s: Tensor,
    pub sigma_s: Tensor,
    pub h: Tensor,
}

impl Step {
    /// `torch.exp(-h) - 1.0`
    fn exp_neg_h_minus_1(&self) -> Result<Tensor> {
        Ok(self.h.f_neg()?.f_exp()?.f_sub_scalar(1.0)?)
    }

    /// `torch.exp(h) - 1.0`
    fn exp_h_minus_1(&self) -> Result<Tensor> {
        Ok(self.h.f_exp()?.f_sub_scalar(1.0)?)
    }

    /// `1.0 - torch.exp(-2.0 * h)` (`1 - ...` with an int is the same float32 op).
    fn one_minus_exp_neg_2h(&self) -> Result<Tensor> {
        Ok(self.h.f_mul_scalar(-2.0)?.f_exp()?.f_rsub_scalar(1.0)?)
    }

    /// The sample's coefficient: `sigma_t / sigma_s` (dpmsolver++), `alpha_t / alpha_s`
    /// (dpmsolver, sde-dpmsolver), `sigma_t / sigma_s * torch.exp(-h)` (sde-dpmsolver++).
    pub fn sample_coefficient(&self, algorithm: AlgorithmType) -> Result<Tensor> {
        Ok(match algorithm {
            AlgorithmType::DpmSolverPlusPlus => self.sigma_t.f_div(&self.sigma_s)?,
            AlgorithmType::DpmSolver | AlgorithmType::SdeDpmSolver => {
                self.alpha_t.f_div(&self.alpha_s)?
            }
            AlgorithmType::SdeDpmSolverPlusPlus => self
                .sigma_t
                .f_div(&self.sigma_s)?
                .f_mul(&self.h.f_neg()?.f_exp()?)?,
        })
    }

    /// The first (D0) term: `- (alpha_t * (torch.exp(-h) - 1.0))` (dpmsolver++), `- (sigma_t *
    /// (torch.exp(h) - 1.0))` (dpmsolver), `+ (alpha_t * (1 - torch.exp(-2.0 * h)))`
    /// (sde-dpmsolver++), `- 2.0 * (sigma_t * (torch.exp(h) - 1.0))` (sde-dpmsolver).
    pub fn d0_term<'a>(&self, algorithm: AlgorithmType, d0: &'a Tensor) -> Result<Term<'a>> {
        Ok(match algorithm {
            AlgorithmType::DpmSolverPlusPlus => {
                Term::minus(self.alpha_t.f_mul(&self.exp_neg_h_minus_1()?)?, d0)
            }
            AlgorithmType::DpmSolver => {
                Term::minus(self.sigma_t.f_mul(&self.exp_h_minus_1()?)?, d0)
            }
            AlgorithmType::SdeDpmSolverPlusPlus => {
                Term::plus(self.alpha_t.f_mul(&self.one_minus_exp_neg_2h()?)?, d0)
            }
            AlgorithmType::SdeDpmSolver => Term::minus(
                self.sigma_t
                    .f_mul(&self.exp_h_minus_1()?)?
                    .f_mul_scalar(2.0)?,
                d0,
            ),
        })
    }

    /// The first-order (D1) correction with the midpoint rule, `0.5 * (D0 coefficient)` (and
    /// `sigma_t * (torch.exp(h) - 1.0)` for sde-dpmsolver), with the D0 term's sign.
    pub fn d1_midpoint_term<'a>(
        &self,
        algorithm: AlgorithmType,
        d1: &'a Tensor,
    ) -> Result<Term<'a>> {
        Ok(match algorithm {
            AlgorithmType::DpmSolverPlusPlus => Term::minus(
                self.alpha_t
                    .f_mul(&self.exp_neg_h_minus_1()?)?
                    .f_mul_scalar(0.5)?,
                d1,
            ),
            AlgorithmType::DpmSolver => Term::minus(
                self.sigma_t
                    .f_mul(&self.exp_h_minus_1()?)?
                    .f_mul_scalar(0.5)?,
                d1,
            ),
            AlgorithmType::SdeDpmSolverPlusPlus => Term::plus(
                self.alpha_t
                    .f_mul(&self.one_minus_exp_neg_2h()?)?
                    .f_mul_scalar(0.5)?,
                d1,
            ),
            AlgorithmType::SdeDpmSolver => {
                Term::minus(self.sigma_t.f_mul(&self.exp_h_minus_1()?)?, d1)
            }
        })
    }

    /// The first-order (D1) term of the Heun rule and of the third-order updates:
    /// `+ (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0))` (dpmsolver++), `- (sigma_t *
    /// ((torch.exp(h) - 1.0) / h - 1.0))` (dpmsolver), `+ (alpha_t * ((1.0 - torch.exp(-2.0 *
    /// h)) / (-2.0 * h) + 1.0))` (sde-dpmsolver++), `- 2.0 * (sigma_t * ((torch.exp(h) - 1.0) /
    /// h - 1.0))` (sde-dpmsolver).
    pub fn d1_heun_term<'a>(&self, algorithm: AlgorithmType, d1: &'a Tensor) -> Result<Term<'a>> {
        Ok(match algorithm {
            AlgorithmType::DpmSolverPlusPlus => Term::plus(
                self.alpha_t.f_mul(
                    &self
                        .exp_neg_h_minus_1()?
                        .f_div(&self.h)?
                        .f_add_scalar(1.0)?,
                )?,
                d1,
            ),
            AlgorithmType::DpmSolver => Term::minus(
                self.sigma_t
                    .f_mul(&self.exp_h_minus_1()?.f_div(&self.h)?.f_sub_scalar(1.0)?)?,
                d1,
            ),
            AlgorithmType::SdeDpmSolverPlusPlus => Term::plus(
                self.alpha_t.f_mul(
                    &self
                        .one_minus_exp_neg_2h()?
                        .f_div(&self.h.f_mul_scalar(-2.0)?)?
                        .f_add_scalar(1.0)?,
                )?,
                d1,
            ),
            AlgorithmType::SdeDpmSolver => Term::minus(
                self.sigma_t
                    .f_mul(&self.exp_h_minus_1()?.f_div(&self.h)?.f_sub_scalar(1.0)?)?
                    .f_mul_scalar(2.0)?,
                d1,
            ),
        })
    }

    /// The second-order (D2) term of the third-order updates:
    ///
    /// * dpmsolver++: `- (alpha_t * ((torch.exp(-h) - 1.0 + h) / h**2 - 0.5))`
    /// * dpmsolver: `- (sigma_t * ((torch.exp(h) - 1.0 - h) / h**2 - 0.5))`
    /// * sde-dpmsolver++:
    ///   `+ (alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5))` (the
    ///   singlestep class writes `+ (-2.0 * h)` and `(-2.0 * h) ** 2`, the same float32 values)
    /// * sde-dpmsolver: diffusers has no third-order update (`x_t` is never assigned): an error.
    pub fn d2_term<'a>(&self, algorithm: AlgorithmType, d2: &'a Tensor) -> Result<Term<'a>> {
        let h_sq = self.h.f_pow_tensor_scalar(2)?;
        Ok(match algorithm {
            AlgorithmType::DpmSolverPlusPlus => Term::minus(
                self.alpha_t.f_mul(
                    &self
                        .exp_neg_h_minus_1()?
                        .f_add(&self.h)?
                        .f_div(&h_sq)?
                        .f_sub_scalar(0.5)?,
                )?,
                d2,
            ),
            AlgorithmType::DpmSolver => Term::minus(
                self.sigma_t.f_mul(
                    &self
                        .exp_h_minus_1()?
                        .f_sub(&self.h)?
                        .f_div(&h_sq)?
                        .f_sub_scalar(0.5)?,
                )?,
                d2,
            ),
            AlgorithmType::SdeDpmSolverPlusPlus => {
                let two_h = self.h.f_mul_scalar(2.0)?;
                Term::plus(
                    self.alpha_t.f_mul(
                        &self
                            .one_minus_exp_neg_2h()?
                            .f_sub(&two_h)?
                            .f_div(&two_h.f_pow_tensor_scalar(2)?)?
                            .f_sub_scalar(0.5)?,
                    )?,
                    d2,
                )
            }
            AlgorithmType::SdeDpmSolver => {
                return Err(Error::SchedulerUsage {
                    scheduler: "DPMSolverMultistepScheduler",
                    message: "diffusers has no third-order sde-dpmsolver update (its \
                              multistep_dpm_solver_third_order_update leaves x_t unassigned); use \
                              solver_order 1 or 2"
                        .to_owned(),
                })
            }
        })
    }

    /// The noise term: `+ sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise`
    /// (sde-dpmsolver++), `+ sigma_t * torch.sqrt(torch.exp(2 * h) - 1.0) * noise`
    /// (sde-dpmsolver); none otherwise.
    pub fn noise_term<'a>(
        &self,
        algorithm: AlgorithmType,
        noise: Option<&'a Tensor>,
    ) -> Result<Option<Term<'a>>> {
        let root = match algorithm {
            AlgorithmType::SdeDpmSolverPlusPlus => self.one_minus_exp_neg_2h()?.f_sqrt()?,
            AlgorithmType::SdeDpmSolver => self
                .h
                .f_mul_scalar(2)?
                .f_exp()?
                .f_sub_scalar(1.0)?
                .f_sqrt()?,
            AlgorithmType::DpmSolver | AlgorithmType::DpmSolverPlusPlus => return Ok(None),
        };
        let noise = noise.ok_or_else(|| Error::SchedulerUsage {
            scheduler: "DPMSolver",
            message: "an SDE update without noise".to_owned(),
        })?;
        Ok(Some(Term::plus(self.sigma_t.f_mul(&root)?, noise)))
    }

    /// `dpm_solver_first_order_update(model_output, sample=sample, noise=noise)`.
    pub fn first_order(
        &self,
        algorithm: AlgorithmType,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut terms = vec![self.d0_term(algorithm, model_output)?];
        terms.extend(self.noise_term(algorithm, noise)?);
        combine(&self.sample_coefficient(algorithm)?, sample, &terms)
    }

    /// The second-order update of both classes from `D0`, `D1` (multistep: base point `s0`, `D0 =
    /// m0`; singlestep: base point `s1`, `D0 = m1`).
    pub fn second_order(
        &self,
        algorithm: AlgorithmType,
        solver_type: SolverType,
        sample: &Tensor,
        d0: &Tensor,
        d1: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut terms = vec![self.d0_term(algorithm, d0)?];
        terms.push(match solver_type {
            SolverType::Midpoint => self.d1_midpoint_term(algorithm, d1)?,
            SolverType::Heun => self.d1_heun_term(algorithm, d1)?,
        });
        terms.extend(self.noise_term(algorithm, noise)?);
        combine(&self.sample_coefficient(algorithm)?, sample, &terms)
    }
}

/// The 0-d sigma, `alpha_t`, `sigma_t` and `lambda` at one index of the schedule.
pub struct Point {
    pub alpha: Tensor,
    pub sigma: Tensor,
    pub lambda: Tensor,
}

impl Point {
    pub fn at(sigmas: &Tensor, index: usize, flow: bool) -> Result<Self> {
        let (alpha, sigma) = sigma_to_alpha_sigma_t(&sigmas.f_get(index as i64)?, flow)?;
        let lambda = lambda(&alpha, &sigma)?;
        Ok(Self {
            alpha,
            sigma,
            lambda,
        })
    }

    /// The update from base point `self` to `target` with `h = lambda_t - lambda_base`.
    pub fn step_to(&self, target: &Point) -> Result<Step> {
        Ok(Step {
            alpha_t: target.alpha.shallow_clone(),
            sigma_t: target.sigma.shallow_clone(),
            alpha_s: self.alpha.shallow_clone(),
            sigma_s: self.sigma.shallow_clone(),
            h: target.lambda.f_sub(&self.lambda)?,
        })
    }
}

/// `(1.0 / r) * x` (Python's `1.0 / r` is `r.reciprocal() * 1.0`).
pub fn divided(r: &Tensor, x: &Tensor) -> Result<Tensor> {
    Ok(r.f_reciprocal()?.f_mul_scalar(1.0)?.f_mul(x)?)
}

/// `_threshold_sample(sample)`: dynamic thresholding per image (quantile of `|x|` over all but
/// the batch dimension, clamped to `[1, sample_max_value]`, then `clamp(x, -s, s) / s`).
pub fn threshold_sample(sample: &Tensor, thresholding: Thresholding) -> Result<Tensor> {
    let kind = sample.kind();
    let shape = sample.size();
    let mut x = sample.shallow_clone();
    if !matches!(kind, Kind::Float | Kind::Double) {
        x = x.f_to_kind(Kind::Float)?;
    }
    let batch = shape[0];
    let rest: i64 = shape[1..].iter().product();
    let x = x.f_reshape([batch, rest])?;
    let s = x
        .f_abs()?
        .f_quantile_scalar(thresholding.ratio, 1, false, "linear")?
        .f_clamp(1.0, thresholding.sample_max_value)?
        .f_unsqueeze(1)?;
    let x = x
        .f_clamp_tensor(Some(&s.f_neg()?), Some(&s))?
        .f_div(&s)?
        .f_reshape(shape.as_slice())?;
    Ok(x.f_to_kind(kind)?)
}

/// `convert_model_output(model_output, sample=sample)` at the 0-d float32 `sigma`: the data
/// prediction for dpmsolver++ / sde-dpmsolver++, the noise prediction for dpmsolver /
/// sde-dpmsolver, thresholded when configured.
pub fn convert_model_output(
    config: &DpmConfig,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: &Tensor,
) -> Result<Tensor> {
    let flow = config.use_flow_sigmas;
    let model_output =
        if config.learned_variance && config.prediction_type == DpmPredictionType::Epsilon {
            model_output.f_narrow(1, 0, 3)?
        } else {
            model_output.shallow_clone()
        };
    if config.algorithm_type.predicts_data() {
        let x0_pred = match config.prediction_type {
            DpmPredictionType::Epsilon => {
                let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(sigma, flow)?;
                sample
                    .f_sub(&sigma_t.f_mul(&model_output)?)?
                    .f_div(&alpha_t)?
            }
            DpmPredictionType::Sample => model_output,
            DpmPredictionType::VPrediction => {
                let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(sigma, flow)?;
                alpha_t
                    .f_mul(sample)?
                    .f_sub(&sigma_t.f_mul(&model_output)?)?
            }
            DpmPredictionType::FlowPrediction => sample.f_sub(&sigma.f_mul(&model_output)?)?,
        };
        match config.thresholding {
            Some(thresholding) => threshold_sample(&x0_pred, thresholding),
            None => Ok(x0_pred),
        }
    } else {
        let epsilon = match config.prediction_type {
            DpmPredictionType::Epsilon => model_output,
            DpmPredictionType::Sample => {
                let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(sigma, flow)?;
                sample
                    .f_sub(&alpha_t.f_mul(&model_output)?)?
                    .f_div(&sigma_t)?
            }
            DpmPredictionType::VPrediction => {
                let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(sigma, flow)?;
                alpha_t
                    .f_mul(&model_output)?
                    .f_add(&sigma_t.f_mul(sample)?)?
            }
            DpmPredictionType::FlowPrediction => {
                unreachable!("flow_prediction is refused with dpmsolver in DpmConfig")
            }
        };
        match config.thresholding {
            Some(thresholding) => {
                // (multistep only; the singlestep class refuses this in DpmConfig)
                let (alpha_t, sigma_t) = sigma_to_alpha_sigma_t(sigma, flow)?;
                let x0_pred = sample.f_sub(&sigma_t.f_mul(&epsilon)?)?.f_div(&alpha_t)?;
                let x0_pred = threshold_sample(&x0_pred, thresholding)?;
                Ok(sample.f_sub(&alpha_t.f_mul(&x0_pred)?)?.f_div(&sigma_t)?)
            }
            None => Ok(epsilon),
        }
    }
}

/// `index_for_timestep` of the DPM-Solvers: the position of `timestep` in `timesteps`, the second
/// one when it occurs more than once, and — unlike the sigma schedulers — the last step when it
/// does not occur at all (diffusers' fallback, reproduced rather than refused).
pub fn index_for_timestep(timesteps: &[f64], timestep: f64) -> usize {
    let indices: Vec<usize> = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i)
        .collect();
    match indices.len() {
        0 => timesteps.len().saturating_sub(1),
        1 => indices[0],
        _ => indices[1],
    }
}

/// `[None] * solver_order`: an empty model-output history.
pub fn empty_history(solver_order: usize) -> Vec<Option<Tensor>> {
    (0..solver_order).map(|_| None).collect()
}
