//! What diffusers' k-diffusion style samplers `EulerAncestralDiscreteScheduler`,
//! `HeunDiscreteScheduler`, `KDPM2DiscreteScheduler` and `KDPM2AncestralDiscreteScheduler` share
//! (diffusers 0.42.1, where each class carries its own "Copied from" copy of these): the training
//! schedule with the class's own defaults, the spaced timesteps of `set_timesteps`, the sigma
//! table, the `use_*_sigmas` choice, `index_for_timestep`, and the small torch expressions of
//! `scale_model_input` and `step`, as the same torch ops on 0-d float32 tensors.

use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

use super::noise_schedule::{TrainingDefaults, TrainingSchedule};
use super::{numpy, sigmas, TimestepSpacing};
use crate::config::ConfigFile;
use crate::error::{Error, Result};

/// The training-schedule defaults of `HeunDiscreteScheduler`, `KDPM2DiscreteScheduler` and
/// `KDPM2AncestralDiscreteScheduler` (`beta_start=0.00085, beta_end=0.012`, "sensible defaults").
pub const KDPM_DEFAULTS: TrainingDefaults = TrainingDefaults {
    num_train_timesteps: 1000,
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "linear",
};

/// The `__init__` keys of the training schedule a class takes besides the common ones.
#[derive(Debug, Clone, Copy)]
pub struct TrainingOptions {
    pub defaults: TrainingDefaults,
    /// Whether `__init__` takes `rescale_betas_zero_snr` (Euler ancestral); when it does not, the
    /// key is ignored, as `from_config` ignores keys the class does not take.
    pub rescale_betas_zero_snr: bool,
    /// Whether `beta_schedule="exp"` (`betas_for_alpha_bar(..., alpha_transform_type="exp")`) is
    /// accepted (Heun).
    pub exp_beta_schedule: bool,
}

/// `betas` and `alphas_cumprod` as the class's `__init__` builds them (`rescale_betas_zero_snr`
/// included where the class takes it, but not its `alphas_cumprod[-1] = 2**-24`, which is
/// [`zero_snr_tweak`]).
pub fn training_schedule(c: &ConfigFile, options: TrainingOptions) -> Result<TrainingSchedule> {
    let ignored_zero_snr;
    let c = if !options.rescale_betas_zero_snr && c.raw("rescale_betas_zero_snr").is_some() {
        let mut overrides = Map::new();
        overrides.insert("rescale_betas_zero_snr".to_owned(), Value::Bool(false));
        ignored_zero_snr = c.with_overrides(
            &overrides,
            "rescale_betas_zero_snr ignored (not an option of this scheduler)",
        );
        &ignored_zero_snr
    } else {
        c
    };
    let exp = options.exp_beta_schedule
        && c.opt_f64s("trained_betas")?.is_none()
        && c.string_or("beta_schedule", options.defaults.beta_schedule)? == "exp";
    if !exp {
        return TrainingSchedule::from_config(c, options.defaults);
    }
    let num_train_timesteps =
        c.usize_or("num_train_timesteps", options.defaults.num_train_timesteps)?;
    if num_train_timesteps < 2 {
        return Err(c.invalid("num_train_timesteps", "must be at least 2"));
    }
    let betas = exp_betas(num_train_timesteps)?;
    let alphas_cumprod = betas
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_cumprod(0, Kind::Float)?;
    Ok(TrainingSchedule {
        num_train_timesteps,
        betas,
        alphas_cumprod,
    })
}

/// `betas_for_alpha_bar(n, max_beta=0.999, alpha_transform_type="exp")`: Python floats, then
/// `torch.tensor(betas, dtype=torch.float32)`.
fn exp_betas(num_diffusion_timesteps: usize) -> Result<Tensor> {
    let alpha_bar = |t: f64| (t * -12.0).exp();
    let n = num_diffusion_timesteps as f64;
    let betas: Vec<f64> = (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
        })
        .collect();
    Ok(Tensor::from_slice(&betas).f_to_kind(Kind::Float)?)
}

/// `self.alphas_cumprod[-1] = 2**-24` after `rescale_betas_zero_snr` ("close to 0 without being 0
/// so first sigma is not inf").
pub fn zero_snr_tweak(alphas_cumprod: &Tensor) -> Result<()> {
    let _ = alphas_cumprod.f_get(-1)?.f_fill_(2f64.powi(-24))?;
    Ok(())
}

/// `np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)`: float32 torch ops,
/// ascending in the training timestep.
pub fn train_sigmas(alphas_cumprod: &Tensor) -> Result<Vec<f32>> {
    let sigmas = alphas_cumprod
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_div(alphas_cumprod)?
        .f_pow_tensor_scalar(0.5)?;
    Ok(Vec::<f32>::try_from(&sigmas)?)
}

/// `np.log(sigmas)` of the float32 training sigmas (NumPy's float32 kernel).
pub fn log_sigmas(train_sigmas: &[f32]) -> Vec<f32> {
    train_sigmas.iter().map(|&s| numpy::log_f32(s)).collect()
}

/// `np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)`: float64.
pub fn interp_sigmas(timesteps: &[f64], train_sigmas: &[f32]) -> Vec<f64> {
    let xp: Vec<f64> = (0..train_sigmas.len()).map(|i| i as f64).collect();
    let fp: Vec<f64> = train_sigmas.iter().map(|&s| f64::from(s)).collect();
    numpy::interp(timesteps, &xp, &fp)
}

/// The timesteps of `set_timesteps(num_inference_steps)` for `timestep_spacing`, as the NumPy
/// float32 array diffusers builds (each value exact in f64):
///
/// - linspace: `np.linspace(0, T - 1, n, dtype=np.float32)[::-1]`
/// - leading: `(np.arange(0, n) * (T // n)).round()[::-1].astype(np.float32) + steps_offset`
/// - trailing: `np.arange(T, 0, -T / n).round().astype(np.float32) - 1`
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let n_train = num_train_timesteps;
    match spacing {
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
                .map(|i| f64::from((i * step_ratio) as f32 + steps_offset as f32))
                .collect()
        }
        TimestepSpacing::Trailing => {
            let step_ratio = n_train as f64 / num_inference_steps as f64;
            numpy::arange(n_train as f64, 0.0, -step_ratio)
                .into_iter()
                .map(|t| f64::from(t.round_ties_even() as f32 - 1.0))
                .collect()
        }
    }
}

/// Which of `use_karras_sigmas` / `use_exponential_sigmas` (/ `use_beta_sigmas`) reshapes the
/// interpolated sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigmaKind {
    /// `np.interp` of the training sigmas at the spaced timesteps.
    Interpolated,
    /// `_convert_to_karras` (rho = 7).
    Karras,
    /// `_convert_to_exponential`.
    Exponential,
}

impl SigmaKind {
    /// Reads the three flags with diffusers' `__init__` checks: more than one set is diffusers'
    /// ValueError; `use_beta_sigmas` needs `scipy.stats.beta.ppf`, which this worker does not
    /// reproduce, so it is refused rather than ignored.
    pub fn from_config(c: &ConfigFile) -> Result<Self> {
        let beta = c.bool_or("use_beta_sigmas", false)?;
        let exponential = c.bool_or("use_exponential_sigmas", false)?;
        let karras = c.bool_or("use_karras_sigmas", false)?;
        if [beta, exponential, karras].iter().filter(|&&b| b).count() > 1 {
            let key = if karras {
                "use_karras_sigmas"
            } else {
                "use_exponential_sigmas"
            };
            return Err(c.invalid(
                key,
                "Only one of `config.use_beta_sigmas`, `config.use_exponential_sigmas`, \
                 `config.use_karras_sigmas` can be used.",
            ));
        }
        if beta {
            return Err(c.invalid(
                "use_beta_sigmas",
                "beta sigmas (scipy.stats.beta.ppf) are not supported by the reference worker",
            ));
        }
        Ok(if karras {
            Self::Karras
        } else if exponential {
            Self::Exponential
        } else {
            Self::Interpolated
        })
    }

    /// `sigmas = self._convert_to_*(in_sigmas=sigmas, ...)` and `timesteps = np.array([
    /// self._sigma_to_t(sigma, log_sigmas) for sigma in sigmas])` (float64); `None` for the
    /// interpolated sigmas, which keep the spaced timesteps. These classes' configs have no
    /// `sigma_min` / `sigma_max`, so the ends of `sigmas` are used.
    pub fn convert(
        self,
        sigmas: &[f64],
        num_inference_steps: usize,
        log_sigmas: &[f32],
    ) -> Option<(Vec<f64>, Vec<f64>)> {
        let converted = match self {
            Self::Interpolated => return None,
            Self::Karras => sigmas::karras(sigmas, num_inference_steps, None, None),
            Self::Exponential => sigmas::exponential(sigmas, num_inference_steps, None, None),
        };
        let timesteps = converted
            .iter()
            .map(|&sigma| sigmas::sigma_to_t(sigma, log_sigmas))
            .collect();
        Some((converted, timesteps))
    }
}

/// `_sigma_to_t(sigma, log_sigmas)` as KDPM2's `set_timesteps` calls it for the interpolated
/// sigmas: there `sigma` is a 0-d float32 torch tensor and `log_sigmas` a float32 torch tensor, so
/// `np.log(np.maximum(sigma, 1e-10))` is NumPy's float32 log (on the 0-d array, wrapped back into
/// a tensor) and the rest (`dists`, `w`, `np.clip`, `(1 - w) * low_idx + w * high_idx`) are
/// float32 torch ops: each one IEEE float32 operation, as here.
pub fn sigma_to_t_f32(sigma: f32, log_sigmas: &[f32]) -> f32 {
    // np.maximum propagates NaN; 1e-10 is a weak Python float, so float32.
    let clamped = if sigma.is_nan() {
        sigma
    } else {
        sigma.max(1e-10_f32)
    };
    let log_sigma = numpy::log_f32(clamped);
    // np.cumsum(dists >= 0).argmax(): the last index with a non-negative distance, else 0.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&log_s| log_sigma - log_s >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = (low - log_sigma) / (low - high);
    // torch.clamp / np.clip: NaN stays NaN.
    let w = if w.is_nan() { w } else { w.clamp(0.0, 1.0) };
    (1.0 - w) * low_idx as f32 + w * high_idx as f32
}

/// `torch.cat([x[:1], x[1:end].repeat_interleave(2), x[-1:]])`: Heun uses `end = len - 1`,
/// KDPM2 `end = len`.
pub fn interleave<T: Copy>(values: &[T], end: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(2 * values.len());
    out.push(values[0]);
    for &v in &values[1..end] {
        out.push(v);
        out.push(v);
    }
    out.push(values[values.len() - 1]);
    out
}

/// `init_noise_sigma`: `sigmas.max()` for linspace and trailing spacing, else
/// `(sigmas.max() ** 2 + 1) ** 0.5` (float32 torch ops).
pub fn init_noise_sigma(sigmas: &Tensor, spacing: TimestepSpacing) -> Result<f64> {
    let max_sigma = sigmas.f_max()?;
    let value = match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
        TimestepSpacing::Leading => max_sigma
            .f_pow_tensor_scalar(2)?
            .f_add_scalar(1)?
            .f_pow_tensor_scalar(0.5)?,
    };
    Ok(value.f_double_value(&[])?)
}

/// `sample / ((sigma**2 + 1) ** 0.5)`, `sigma` a 0-d float32 tensor.
pub fn scale_by_sigma(sample: &Tensor, sigma: &Tensor) -> Result<Tensor> {
    let divisor = sigma
        .f_pow_tensor_scalar(2)?
        .f_add_scalar(1)?
        .f_pow_tensor_scalar(0.5)?;
    Ok(sample.f_div(&divisor)?)
}

/// `sample - sigma * model_output` (epsilon prediction).
pub fn epsilon_x0(model_output: &Tensor, sample: &Tensor, sigma: &Tensor) -> Result<Tensor> {
    Ok(sample.f_sub(&sigma.f_mul(model_output)?)?)
}

/// `model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))` (v-prediction:
/// `* c_out + input * c_skip`).
pub fn v_prediction_x0(model_output: &Tensor, sample: &Tensor, sigma: &Tensor) -> Result<Tensor> {
    let c_out = sigma.f_neg()?.f_div(
        &sigma
            .f_pow_tensor_scalar(2)?
            .f_add_scalar(1)?
            .f_pow_tensor_scalar(0.5)?,
    )?;
    let c_skip_div = sigma.f_pow_tensor_scalar(2)?.f_add_scalar(1)?;
    Ok(model_output
        .f_mul(&c_out)?
        .f_add(&sample.f_div(&c_skip_div)?)?)
}

/// `index_for_timestep(timestep)`: the position of `timestep` in `schedule`; the second one when
/// it occurs more than once (diffusers' rule for starting mid-schedule).
pub fn index_for_timestep(
    scheduler: &'static str,
    schedule: &[f64],
    timestep: f64,
) -> Result<usize> {
    let indices: Vec<usize> = schedule
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i)
        .collect();
    let position = if indices.len() > 1 { 1 } else { 0 };
    indices
        .get(position)
        .copied()
        .ok_or_else(|| Error::SchedulerUsage {
            scheduler,
            message: format!("timestep {timestep} is not in the schedule"),
        })
}

/// `table[index]` as the 0-d float32 tensor diffusers computes with; an index past the end (more
/// `step` calls than timesteps) is a usage error, not a panic.
pub fn at(scheduler: &'static str, table: &Tensor, what: &str, index: usize) -> Result<Tensor> {
    let len = table.size()[0] as usize;
    if index >= len {
        return Err(Error::SchedulerUsage {
            scheduler,
            message: format!(
                "step index {index} is past the end of {what} ({len} values); call \
                 set_timesteps before denoising again"
            ),
        });
    }
    Ok(table.f_get(index as i64)?)
}

/// `index - 1` for the second-order half of a step (never 0 there; an error rather than a panic).
pub fn previous(scheduler: &'static str, index: usize) -> Result<usize> {
    index.checked_sub(1).ok_or_else(|| Error::SchedulerUsage {
        scheduler,
        message: "a second-order step at step index 0".to_owned(),
    })
}

/// The usage error for `scale_model_input` / `step` before `set_timesteps`.
pub fn not_set(scheduler: &'static str) -> Error {
    Error::SchedulerUsage {
        scheduler,
        message: "set_timesteps must be called before scale_model_input and step".to_owned(),
    }
}

/// A float32 1-d tensor of `values`.
pub fn f32_tensor(values: &[f32]) -> Tensor {
    Tensor::from_slice(values)
}

/// `torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))`.
pub fn sigmas_with_zero(sigmas: &[f64]) -> Vec<f32> {
    sigmas
        .iter()
        .chain(std::iter::once(&0.0))
        .map(|&s| s as f32)
        .collect()
}

/// An empty float32 tensor (tables a class has not built yet).
pub fn empty() -> Tensor {
    Tensor::zeros([0], (Kind::Float, Device::Cpu))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;
    use tch::{Kind, Tensor};

    use super::super::{scheduler_for, Scheduler};
    use super::*;
    use crate::config::SchedulerConfig;
    use crate::generator::Generator;

    const CLASSES: [&str; 4] = [
        "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
    ];

    fn base() -> SchedulerConfig {
        let text = json!({
            "_class_name": "EulerDiscreteScheduler",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "num_train_timesteps": 1000,
            "steps_offset": 1,
            "timestep_spacing": "leading"
        })
        .to_string();
        SchedulerConfig::from_file(
            ConfigFile::parse(Path::new("scheduler_config.json"), &text).expect("config"),
        )
        .expect("scheduler config")
    }

    fn build(class: &str, options: Value) -> Result<Box<dyn Scheduler>> {
        scheduler_for(class, &base(), options.as_object().expect("an object"))
    }

    fn is_usage(result: Result<Tensor>) -> bool {
        matches!(result, Err(Error::SchedulerUsage { .. }))
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let sample = Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu));
        for class in CLASSES {
            let mut generators = vec![Generator::new(1).expect("generator")];
            let mut s = build(class, json!({})).expect(class);
            let t = s.timestep_values()[0];
            assert!(is_usage(s.scale_model_input(&sample, t)), "{class}");
            assert!(
                is_usage(s.step(&sample, t, &sample, &mut generators)),
                "{class}"
            );
            s.set_timesteps(3).expect(class);
            assert!(is_usage(s.scale_model_input(&sample, 12345.5)), "{class}");
            let timesteps = s.timestep_values();
            let mut x = sample.shallow_clone();
            for &t in &timesteps {
                x = s.step(&sample, t, &x, &mut generators).expect(class);
            }
            // Past the schedule: an error once a table runs out (KDPM2 has spare entries).
            let mut failed = false;
            for _ in 0..10 {
                match s.step(&sample, timesteps[0], &x, &mut generators) {
                    Ok(next) => x = next,
                    Err(Error::SchedulerUsage { .. }) => {
                        failed = true;
                        break;
                    }
                    Err(other) => panic!("{class}: {other}"),
                }
            }
            assert!(failed, "{class}: stepping past the schedule did not fail");
            assert!(s.set_timesteps(0).is_err(), "{class}");
        }
    }

    #[test]
    fn configurations_diffusers_refuses_or_we_cannot_reproduce_are_errors() {
        for class in CLASSES {
            assert!(
                build(class, json!({"timestep_spacing": "bogus"})).is_err(),
                "{class}"
            );
            assert!(
                build(class, json!({"prediction_type": "bogus"})).is_err(),
                "{class}"
            );
            assert!(
                build(class, json!({"beta_schedule": "bogus"})).is_err(),
                "{class}"
            );
        }
        for class in &CLASSES[1..] {
            assert!(
                build(class, json!({"use_beta_sigmas": true})).is_err(),
                "{class}"
            );
            assert!(
                build(
                    class,
                    json!({"use_karras_sigmas": true, "use_exponential_sigmas": true})
                )
                .is_err(),
                "{class}"
            );
        }
        // step raises NotImplementedError for `sample` except in Heun, which has no old name.
        for class in [CLASSES[0], CLASSES[2], CLASSES[3]] {
            assert!(
                build(class, json!({"prediction_type": "sample"})).is_err(),
                "{class}"
            );
            assert!(
                build(class, json!({"beta_schedule": "exp"})).is_err(),
                "{class}"
            );
        }
        assert!(build(CLASSES[1], json!({"prediction_type": "sample"})).is_ok());
        assert!(build(CLASSES[1], json!({"prediction_type": "original_sample"})).is_err());
        assert!(build(CLASSES[1], json!({"beta_schedule": "exp"})).is_ok());
        // Options a class does not take are ignored, as from_config does.
        assert!(build(CLASSES[0], json!({"use_beta_sigmas": true})).is_ok());
        assert!(build(CLASSES[2], json!({"rescale_betas_zero_snr": "yes"})).is_ok());
    }

    #[test]
    fn sigma_to_t_f32_edges() {
        let log_sigmas: Vec<f32> = [0.1f32, 0.5, 1.0, 5.0]
            .iter()
            .map(|&s| numpy::log_f32(s))
            .collect();
        assert!(sigma_to_t_f32(f32::NAN, &log_sigmas).is_nan());
        assert_eq!(sigma_to_t_f32(0.0, &log_sigmas), 0.0);
        assert_eq!(sigma_to_t_f32(100.0, &log_sigmas), 3.0);
        assert_eq!(sigma_to_t_f32(1.0, &log_sigmas), 2.0);
    }

    #[test]
    fn interleave_like_repeat_interleave() {
        assert_eq!(interleave(&[1, 2, 3, 0], 4), vec![1, 2, 2, 3, 3, 0, 0, 0]);
        assert_eq!(interleave(&[1, 2, 3, 0], 3), vec![1, 2, 2, 3, 3, 0]);
        assert_eq!(interleave(&[1, 0], 1), vec![1, 0]);
    }
}
