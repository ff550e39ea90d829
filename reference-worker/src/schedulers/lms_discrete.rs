//! diffusers' `LMSDiscreteScheduler` (0.42.1): the linear multistep method of k-diffusion on the
//! sigma schedule, tables in NumPy float64 and float32 where diffusers builds them, and `step` as
//! the same torch ops on 0-d float32 sigma tensors.
//!
//! The multistep coefficients are integrals of Lagrange basis polynomials over one sigma interval,
//! which diffusers computes with `scipy.integrate.quad(..., epsrel=1e-4)` on an integrand that runs
//! float32 tensor arithmetic; [`lms_coefficient`] reproduces that (see [`quadpack_qk21`]).
//!
//! `step` uses diffusers' default `order=4`, which `StableDiffusionXLPipeline` never overrides
//! ([`LMSDiscreteScheduler::step_with_order`] takes another).

use tch::Tensor;

use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::{k_discrete, numpy, sigmas, without_keys, PredictionType, Scheduler, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};
use crate::generator::Generator;

const NAME: &str = "LMSDiscreteScheduler";

/// diffusers' default `order` of `LMSDiscreteScheduler.step`.
pub const DEFAULT_LMS_ORDER: usize = 4;

/// Which sigma schedule `set_timesteps` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaSchedule {
    /// `np.interp` of the training sigmas at the timesteps.
    Interpolated,
    Karras,
    Exponential,
}

/// The constructor arguments of `LMSDiscreteScheduler.__init__` that shape sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct LmsDiscreteConfig {
    pub prediction_type: PredictionType,
    pub sigma_schedule: SigmaSchedule,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl LmsDiscreteConfig {
    /// Reads the keys with `LMSDiscreteScheduler`'s own defaults, with its `__init__` checks.
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let use_karras_sigmas = c.bool_or("use_karras_sigmas", false)?;
        let use_exponential_sigmas = c.bool_or("use_exponential_sigmas", false)?;
        let use_beta_sigmas = c.bool_or("use_beta_sigmas", false)?;
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
        if use_beta_sigmas {
            return Err(c.invalid(
                "use_beta_sigmas",
                "beta sigmas (scipy.stats.beta.ppf) are not supported by the reference worker",
            ));
        }
        let sigma_schedule = if use_karras_sigmas {
            SigmaSchedule::Karras
        } else if use_exponential_sigmas {
            SigmaSchedule::Exponential
        } else {
            SigmaSchedule::Interpolated
        };
        Ok(Self {
            prediction_type: PredictionType::from_config(c)?,
            sigma_schedule,
            timestep_spacing: TimestepSpacing::from_config(c, "linspace")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
        })
    }
}

#[derive(Debug)]
pub struct LMSDiscreteScheduler {
    config: LmsDiscreteConfig,
    num_train_timesteps: usize,
    /// float32 `np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)`, ascending in `t`.
    train_sigmas: Vec<f32>,
    /// float32 `timesteps`.
    timesteps: Tensor,
    timestep_values: Vec<f32>,
    /// float32 `sigmas` (one more than the timesteps: a final 0).
    sigmas: Tensor,
    /// The same values, for the coefficient integrals.
    sigma_values: Vec<f32>,
    /// `self.derivatives`: the last (at most `order`) ODE derivatives, oldest first.
    derivatives: Vec<Tensor>,
    num_inference_steps: Option<usize>,
    step_index: Option<usize>,
    begin_index: Option<usize>,
}

impl LMSDiscreteScheduler {
    /// `LMSDiscreteScheduler(**config)`: `config` is the merged `from_config` view. As diffusers'
    /// `__init__` does, this ends with `set_timesteps(num_train_timesteps)`.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let config = LmsDiscreteConfig::from_file(c)?;
        // LMSDiscreteScheduler.__init__ takes no `rescale_betas_zero_snr`: from_config drops it.
        let c = without_keys(c, &["rescale_betas_zero_snr"]);
        let schedule = TrainingSchedule::from_config(&c, TrainingDefaults::COMMON)?;
        let alphas_cumprod = schedule.alphas_cumprod;
        let train_sigmas = Vec::<f32>::try_from(
            &alphas_cumprod
                .f_neg()?
                .f_add_scalar(1.0)?
                .f_div(&alphas_cumprod)?
                .f_pow_tensor_scalar(0.5)?,
        )?;
        let mut scheduler = Self {
            config,
            num_train_timesteps: schedule.num_train_timesteps,
            train_sigmas,
            timesteps: Tensor::from_slice(&[0f32; 0]),
            timestep_values: Vec::new(),
            sigmas: Tensor::from_slice(&[0f32; 0]),
            sigma_values: Vec::new(),
            derivatives: Vec::new(),
            num_inference_steps: None,
            step_index: None,
            begin_index: None,
        };
        scheduler.set_timesteps(scheduler.num_train_timesteps)?;
        Ok(scheduler)
    }

    pub fn config(&self) -> &LmsDiscreteConfig {
        &self.config
    }

    pub fn step_index(&self) -> Option<usize> {
        self.step_index
    }

    pub fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn usage(message: impl Into<String>) -> Error {
        Error::SchedulerUsage {
            scheduler: NAME,
            message: message.into(),
        }
    }

    /// `index_for_timestep`: the position of `timestep` in the schedule; the second one when it
    /// occurs twice. diffusers raises `IndexError` when it is not there.
    fn index_for_timestep(&self, timestep: f64) -> Result<usize> {
        let indices: Vec<usize> = self
            .timestep_values
            .iter()
            .enumerate()
            .filter(|(_, &t)| f64::from(t) == timestep)
            .map(|(i, _)| i)
            .collect();
        let position = if indices.len() > 1 { 1 } else { 0 };
        indices
            .get(position)
            .copied()
            .ok_or_else(|| Self::usage(format!("timestep {timestep} is not in the schedule")))
    }

    fn init_step_index(&mut self, timestep: f64) -> Result<usize> {
        let index = match self.begin_index {
            Some(begin) => begin,
            None => self.index_for_timestep(timestep)?,
        };
        self.step_index = Some(index);
        Ok(index)
    }

    /// `self.sigmas[index]` as the 0-d float32 tensor diffusers computes with.
    fn sigma_at(&self, index: usize) -> Result<Tensor> {
        let len = self.sigma_values.len();
        if index >= len {
            return Err(Self::usage(format!(
                "step index {index} is past the end of the schedule ({len} sigmas); call \
                 set_timesteps before denoising again"
            )));
        }
        Ok(self.sigmas.f_get(index as i64)?)
    }

    /// `step(model_output, timestep, sample, order=order)`.
    pub fn step_with_order(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        order: usize,
    ) -> Result<Tensor> {
        if order == 0 {
            return Err(Self::usage("the linear multistep order must be at least 1"));
        }
        let index = match self.step_index {
            Some(index) => index,
            None => self.init_step_index(timestep)?,
        };
        if index + 1 >= self.sigma_values.len() {
            return Err(Self::usage(format!(
                "step index {index} is past the end of the schedule ({} timesteps); call \
                 set_timesteps before denoising again",
                self.sigma_values.len() - 1
            )));
        }
        let sigma = self.sigma_at(index)?;

        // 1. compute predicted original sample (x_0) from sigma-scaled predicted noise
        let pred_original_sample = match self.config.prediction_type {
            PredictionType::Epsilon => sample.f_sub(&sigma.f_mul(model_output)?)?,
            PredictionType::VPrediction => {
                // model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
                let c_out = sigma.f_neg()?.f_div(
                    &sigma
                        .f_pow_tensor_scalar(2)?
                        .f_add_scalar(1)?
                        .f_pow_tensor_scalar(0.5)?,
                )?;
                let c_skip_div = sigma.f_pow_tensor_scalar(2)?.f_add_scalar(1)?;
                model_output
                    .f_mul(&c_out)?
                    .f_add(&sample.f_div(&c_skip_div)?)?
            }
            PredictionType::Sample => model_output.shallow_clone(),
        };

        // 2. Convert to an ODE derivative
        let derivative = sample.f_sub(&pred_original_sample)?.f_div(&sigma)?;
        self.derivatives.push(derivative);
        if self.derivatives.len() > order {
            drop(self.derivatives.remove(0));
        }

        // 3. Compute linear multistep coefficients
        let order = (index + 1).min(order);
        let coefficients = (0..order)
            .map(|current| lms_coefficient(&self.sigma_values, order, index, current))
            .collect::<Result<Vec<f64>>>()?;

        // 4. prev_sample = sample + sum(coeff * derivative for coeff, derivative in
        //    zip(lms_coeffs, reversed(self.derivatives))); Python's sum starts from the int 0.
        let mut total: Option<Tensor> = None;
        for (coefficient, derivative) in coefficients.iter().zip(self.derivatives.iter().rev()) {
            let term = derivative.f_mul_scalar(*coefficient)?;
            total = Some(match total {
                None => term.f_add_scalar(0)?,
                Some(total) => total.f_add(&term)?,
            });
        }
        let prev_sample = match total {
            Some(total) => sample.f_add(&total)?,
            None => sample.f_add_scalar(0)?,
        };
        self.step_index = Some(index + 1);
        Ok(prev_sample)
    }
}

/// `get_lms_coefficient(order, t, current_order)`:
///
/// ```python
/// def lms_derivative(tau):
///     prod = 1.0
///     for k in range(order):
///         if current_order == k:
///             continue
///         prod *= (tau - self.sigmas[t - k]) / (self.sigmas[t - current_order] - self.sigmas[t - k])
///     return prod
/// integrate.quad(lms_derivative, self.sigmas[t], self.sigmas[t + 1], epsrel=1e-4)[0]
/// ```
///
/// The integrand is float32 tensor arithmetic on 0-d tensors: `tau` (a Python float) is rounded
/// to float32 first, as torch does with a Python scalar operand, and `1.0 * tensor` is exact; with
/// `order == 1` it is the Python float `1.0`. `quad` swaps the bounds when `b < a` and negates the
/// result, returns 0 for `a == b`, and otherwise runs QUADPACK's `dqagse`, whose first pass is
/// [`quadpack_qk21`] on the whole interval. That pass is exact for these polynomials up to rounding,
/// so `dqagse` accepts it (see [`dqagse_first_pass`]). Against SciPy 1.17 this held for every
/// coefficient of every step of 1–150-step schedules (each spacing, Karras and exponential
/// sigmas, linear and cosine betas; 150 is the protocol's maximum); it first fails around 1000
/// steps, where QUADPACK bisects, which this does not reproduce: the step then fails rather than
/// return another value.
pub fn lms_coefficient(
    sigmas: &[f32],
    order: usize,
    t: usize,
    current_order: usize,
) -> Result<f64> {
    let integrand = |tau: f64| -> f64 {
        let tau = tau as f32;
        let mut prod: Option<f32> = None;
        for k in 0..order {
            if k == current_order {
                continue;
            }
            let factor = (tau - sigmas[t - k]) / (sigmas[t - current_order] - sigmas[t - k]);
            prod = Some(match prod {
                None => 1.0f32 * factor,
                Some(prod) => prod * factor,
            });
        }
        prod.map_or(1.0, f64::from)
    };
    let a = f64::from(sigmas[t]);
    let b = f64::from(sigmas[t + 1]);
    if a == b {
        return Ok(0.0);
    }
    let flip = b < a;
    let (lower, upper) = if flip { (b, a) } else { (a, b) };
    let value = dqagse_first_pass(integrand, lower, upper, 1.49e-8, 1e-4).ok_or_else(|| {
        Error::SchedulerUsage {
            scheduler: NAME,
            message: format!(
                "the LMS coefficient (order {order}, step {t}, term {current_order}) needs \
                 QUADPACK's adaptive subdivision, which the reference worker does not reproduce"
            ),
        }
    })?;
    Ok(if flip { -value } else { value })
}

/// The outcome of QUADPACK's `dqk21` on one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Qk21 {
    pub result: f64,
    pub abserr: f64,
    pub resabs: f64,
    pub resasc: f64,
}

// The 21-point Gauss–Kronrod abscissae and weights of QUADPACK's `dqk21`, written as in SciPy's
// `__quadpack.c` (the same decimal literals, so the same doubles).
#[allow(clippy::excessive_precision)]
const QK21_WG: [f64; 5] = [
    0.066671344308688137593568809893332,
    0.149451349150580593145776339657697,
    0.219086362515982043995534934228163,
    0.269266719309996355091226921569469,
    0.295524224714752870173892994651338,
];
#[allow(clippy::excessive_precision)]
const QK21_XGK: [f64; 11] = [
    0.995657163025808080735527280689003,
    0.973906528517171720077964012084452,
    0.930157491355708226001207180059508,
    0.865063366688984510732096688423493,
    0.780817726586416897063717578345042,
    0.679409568299024406234327365114874,
    0.562757134668604683339000099272694,
    0.433395394129247190799265943165784,
    0.294392862701460198131126603103866,
    0.148874338981631210884826001129720,
    0.000000000000000000000000000000000,
];
#[allow(clippy::excessive_precision)]
const QK21_WGK: [f64; 11] = [
    0.011694638867371874278064396062192,
    0.032558162307964727478818972459390,
    0.054755896574351996031381300244580,
    0.075039674810919952767043140916190,
    0.093125454583697605535065465083366,
    0.109387158802297641899210590325805,
    0.123491976262065851077958109831074,
    0.134709217311473325928054001771707,
    0.142775938577060080797094273138717,
    0.147739104901338491374841515972068,
    0.149445554002916905664936468389821,
];
const EPMACH: f64 = f64::EPSILON;
const UFLOW: f64 = f64::MIN_POSITIVE;

/// QUADPACK's `dqk21` (SciPy's C translation, `scipy/integrate/__quadpack.c`) in float64, operation
/// for operation: the integrand at the centre, then the Gauss abscissae (`xgk[1], xgk[3], ...`,
/// which feed both sums) in pairs `centr - absc`, `centr + absc`, then the Kronrod-only ones, each
/// pair summed before it is weighted; and the error estimate from the Gauss–Kronrod difference.
// The loops index several arrays with QUADPACK's own index arithmetic (`jtw = 2 * j + 1`).
#[allow(clippy::needless_range_loop)]
pub fn quadpack_qk21(f: impl Fn(f64) -> f64, a: f64, b: f64) -> Qk21 {
    let centr = 0.5 * (a + b);
    let hlgth = 0.5 * (b - a);
    let dhlgth = hlgth.abs();
    let mut fv1 = [0.0f64; 10];
    let mut fv2 = [0.0f64; 10];

    let fc = f(centr);
    let mut resg = 0.0;
    let mut resk = QK21_WGK[10] * fc;
    let mut resabs = resk.abs();
    for j in 0..5 {
        let jtw = 2 * j + 1;
        let absc = hlgth * QK21_XGK[jtw];
        let fval1 = f(centr - absc);
        let fval2 = f(centr + absc);
        fv1[jtw] = fval1;
        fv2[jtw] = fval2;
        let fsum = fval1 + fval2;
        resg += QK21_WG[j] * fsum;
        resk += QK21_WGK[jtw] * fsum;
        resabs += QK21_WGK[jtw] * (fval1.abs() + fval2.abs());
    }
    for j in 0..5 {
        let jtwm1 = 2 * j;
        let absc = hlgth * QK21_XGK[jtwm1];
        let fval1 = f(centr - absc);
        let fval2 = f(centr + absc);
        fv1[jtwm1] = fval1;
        fv2[jtwm1] = fval2;
        let fsum = fval1 + fval2;
        resk += QK21_WGK[jtwm1] * fsum;
        resabs += QK21_WGK[jtwm1] * (fval1.abs() + fval2.abs());
    }
    let reskh = resk * 0.5;
    let mut resasc = QK21_WGK[10] * (fc - reskh).abs();
    for j in 0..10 {
        resasc += QK21_WGK[j] * ((fv1[j] - reskh).abs() + (fv2[j] - reskh).abs());
    }
    let result = resk * hlgth;
    let resabs = resabs * dhlgth;
    let resasc = resasc * dhlgth;
    let mut abserr = ((resk - resg) * hlgth).abs();
    if resasc != 0.0 && abserr != 0.0 {
        abserr = resasc * 1f64.min((200.0 * abserr / resasc).powf(1.5));
    }
    if resabs > UFLOW / (50.0 * EPMACH) {
        abserr = (EPMACH * 50.0 * resabs).max(abserr);
    }
    Qk21 {
        result,
        abserr,
        resabs,
        resasc,
    }
}

/// QUADPACK's `dqagse` up to its first accuracy test: the [`quadpack_qk21`] result when `dqagse`
/// returns it as is (accepted, or flagged as roundoff-limited, `ier = 2`, which `quad` only warns
/// about), `None` when it would go on to bisect the interval.
pub fn dqagse_first_pass(
    f: impl Fn(f64) -> f64,
    a: f64,
    b: f64,
    epsabs: f64,
    epsrel: f64,
) -> Option<f64> {
    let Qk21 {
        result,
        abserr,
        resabs: defabs,
        resasc: resabs,
    } = quadpack_qk21(f, a, b);
    let dres = result.abs();
    let errbnd = epsabs.max(epsrel * dres);
    let roundoff = abserr <= 100.0 * EPMACH * defabs && abserr > errbnd;
    if roundoff || (abserr <= errbnd && abserr != resabs) || abserr == 0.0 {
        Some(result)
    } else {
        None
    }
}

impl Scheduler for LMSDiscreteScheduler {
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
        let config = &self.config;
        let n_train = self.num_train_timesteps;
        self.num_inference_steps = Some(num_inference_steps);

        // Timesteps as NumPy float32 values (held in f64, which holds them exactly).
        let mut timesteps: Vec<f64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => {
                numpy::linspace(0.0, (n_train - 1) as f64, num_inference_steps)
                    .into_iter()
                    .rev()
                    .map(|t| f64::from(t as f32))
                    .collect()
            }
            TimestepSpacing::Leading => {
                let step_ratio = n_train / num_inference_steps;
                (0..num_inference_steps)
                    .rev()
                    .map(|i| f64::from((i * step_ratio) as f32 + config.steps_offset as f32))
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let step_ratio = n_train as f64 / num_inference_steps as f64;
                numpy::arange(n_train as f64, 0.0, -step_ratio)
                    .into_iter()
                    .map(|t| f64::from(t.round_ties_even() as f32 - 1.0))
                    .collect()
            }
        };

        let log_sigmas: Vec<f32> = self
            .train_sigmas
            .iter()
            .map(|&s| numpy::log_f32(s))
            .collect();
        let xp: Vec<f64> = (0..self.train_sigmas.len()).map(|i| i as f64).collect();
        let fp: Vec<f64> = self.train_sigmas.iter().map(|&s| f64::from(s)).collect();
        let mut sigmas = numpy::interp(&timesteps, &xp, &fp);
        match config.sigma_schedule {
            SigmaSchedule::Interpolated => {}
            SigmaSchedule::Karras | SigmaSchedule::Exponential => {
                sigmas = if config.sigma_schedule == SigmaSchedule::Karras {
                    sigmas::karras(&sigmas, num_inference_steps, None, None)
                } else {
                    sigmas::exponential(&sigmas, num_inference_steps, None, None)
                };
                timesteps = sigmas
                    .iter()
                    .map(|&sigma| sigmas::sigma_to_t(sigma, &log_sigmas))
                    .collect();
            }
        }

        // np.concatenate([sigmas, [0.0]]).astype(np.float32)
        let sigma_values: Vec<f32> = sigmas
            .iter()
            .chain(std::iter::once(&0.0))
            .map(|&s| s as f32)
            .collect();
        self.sigmas = Tensor::from_slice(&sigma_values);
        self.sigma_values = sigma_values;
        let values: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        self.timesteps = Tensor::from_slice(&values);
        self.timestep_values = values;
        self.step_index = None;
        self.begin_index = None;
        self.derivatives.clear();
        Ok(())
    }

    fn timesteps(&self) -> &Tensor {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&Tensor> {
        Some(&self.sigmas)
    }

    fn timestep_values(&self) -> Vec<f64> {
        self.timestep_values.iter().map(|&t| f64::from(t)).collect()
    }

    fn init_noise_sigma(&self) -> Result<f64> {
        k_discrete::init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn set_begin_index(&mut self, begin_index: usize) {
        self.begin_index = Some(begin_index);
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let index = match self.step_index {
            Some(index) => index,
            None => self.init_step_index(timestep)?,
        };
        k_discrete::scale_by_sigma(sample, &self.sigma_at(index)?)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _generators: &mut [Generator],
    ) -> Result<Tensor> {
        self.step_with_order(model_output, timestep, sample, DEFAULT_LMS_ORDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qk21_integrates_polynomials_exactly() {
        // Degree 3, well within the 21-point Kronrod rule's exactness (degree 31).
        let r = quadpack_qk21(|x| x.powi(3) - 2.0 * x, 0.0, 2.0);
        assert!((r.result - 0.0).abs() < 1e-14, "{r:?}");
        let r = quadpack_qk21(|_| 1.0, 1.0, 3.0);
        assert_eq!(r.result, 2.0);
    }

    #[test]
    fn order_one_coefficient_is_the_interval() {
        let sigmas = [3.0f32, 1.0, 0.0];
        let c = lms_coefficient(&sigmas, 1, 0, 0).unwrap();
        assert_eq!(c, -2.0);
        let c = lms_coefficient(&[1.0f32, 1.0], 1, 0, 0).unwrap();
        assert_eq!(c, 0.0);
    }
}

#[cfg(test)]
mod scheduler_tests {
    use std::path::Path;

    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn a_timestep_outside_the_schedule_is_a_usage_error() {
        let c = ConfigFile::parse(Path::new("scheduler_config.json"), "{}").unwrap();
        let mut scheduler = LMSDiscreteScheduler::from_config(&c).unwrap();
        scheduler.set_timesteps(5).unwrap();
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, Device::Cpu));
        let error = scheduler.step(&x, 12345.0, &x, &mut []).unwrap_err();
        assert!(matches!(error, Error::SchedulerUsage { .. }), "{error}");
    }
}
