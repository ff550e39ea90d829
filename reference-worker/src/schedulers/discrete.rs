//! Helpers the schedulers with integer (int64) timesteps share: DDIM, DDPM, PNDM and UniPC
//! index `alphas_cumprod` (or their sigma table) with the training timestep itself, so their
//! schedules are NumPy int64 arrays and `step` receives one of those integers.

use tch::Tensor;

use super::{numpy, TimestepSpacing};
use crate::error::{Error, Result};

/// The inference timesteps of `DDIMScheduler.set_timesteps` and `DDPMScheduler.set_timesteps`
/// (the same code in both), descending, as NumPy computes them:
///
/// ```text
/// linspace: np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
/// leading:  (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + steps_offset
/// trailing: np.round(np.arange(T, 0, -(T / n))).astype(np.int64) - 1
/// ```
///
/// `n` must be at least 1 (diffusers divides by it).
pub fn ddim_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Vec<i64> {
    let (t, n) = (num_train_timesteps, num_inference_steps);
    match spacing {
        TimestepSpacing::Linspace => numpy::linspace(0.0, (t - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|v| v.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let step_ratio = t / n;
            (0..n)
                .rev()
                .map(|i| (i * step_ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => trailing_f64(t, n)
            .into_iter()
            .map(|v| v.round_ties_even() as i64 - 1)
            .collect(),
    }
}

/// `np.arange(T, 0, -(T / n))` (float64), the start of every "trailing" schedule.
pub fn trailing_f64(num_train_timesteps: usize, num_inference_steps: usize) -> Vec<f64> {
    let step_ratio = num_train_timesteps as f64 / num_inference_steps as f64;
    numpy::arange(num_train_timesteps as f64, 0.0, -step_ratio)
}

/// `torch.from_numpy(timesteps)` for an int64 schedule.
/// DDIM's and DDPM's `set_timesteps(num_inference_steps)` (the same code in both classes): the
/// zero-step and more-steps-than-training checks, [`ddim_timesteps`], [`check_schedule`].
pub fn ddim_schedule(
    scheduler: &'static str,
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Result<Vec<i64>> {
    if num_inference_steps == 0 {
        return Err(usage(scheduler, "num_inference_steps must be at least 1"));
    }
    let n_train = num_train_timesteps;
    if num_inference_steps > n_train {
        return Err(usage(
            scheduler,
            format!(
                "`num_inference_steps`: {num_inference_steps} cannot be larger than \
                 `self.config.train_timesteps`: {n_train} as the unet model trained with this \
                 scheduler can only handle maximal {n_train} timesteps."
            ),
        ));
    }
    let timesteps = ddim_timesteps(spacing, n_train, num_inference_steps, steps_offset);
    check_schedule(scheduler, &timesteps, n_train)?;
    Ok(timesteps)
}

pub fn int64_tensor(values: &[i64]) -> Tensor {
    Tensor::from_slice(values)
}

/// The training timestep `timestep` (a value of an int64 schedule, passed as `f64`) as an index
/// into a table of `len` entries, or the usage error that stands for diffusers' `IndexError`.
pub fn table_index(scheduler: &'static str, timestep: f64, len: usize) -> Result<i64> {
    if timestep.fract() != 0.0 || timestep < 0.0 || timestep >= len as f64 {
        return Err(Error::SchedulerUsage {
            scheduler,
            message: format!(
                "timestep {timestep} is not a training timestep (an integer in 0..{len})"
            ),
        });
    }
    Ok(timestep as i64)
}

/// `1 - x` for a tensor, as Python's `1 - tensor` (`torch.rsub`) computes it in float32.
pub fn one_minus(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_rsub_scalar(1)?)
}

/// A usage error of `scheduler`.
pub fn usage(scheduler: &'static str, message: impl Into<String>) -> Error {
    Error::SchedulerUsage {
        scheduler,
        message: message.into(),
    }
}

/// Refuses a schedule with a timestep outside the `len` training timesteps (e.g. "leading"
/// with `steps_offset` and as many steps as training timesteps), which diffusers accepts in
/// `set_timesteps` but fails on with an `IndexError` in the first `step`.
pub fn check_schedule(scheduler: &'static str, timesteps: &[i64], len: usize) -> Result<()> {
    match timesteps.iter().find(|&&t| t < 0 || t >= len as i64) {
        Some(t) => Err(Error::SchedulerUsage {
            scheduler,
            message: format!(
                "the schedule holds timestep {t}, outside the {len} training timesteps \
                 (diffusers fails with an IndexError in step)"
            ),
        }),
        None => Ok(()),
    }
}

/// The SDXL base `scheduler_config.json` (the tiny fixture model's) with `overrides`, for the
/// schedulers' unit tests.
#[cfg(test)]
pub(crate) fn test_config(overrides: serde_json::Value) -> crate::config::ConfigFile {
    let base = serde_json::json!({
        "_class_name": "EulerDiscreteScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "interpolation_type": "linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "sample_max_value": 1.0,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "trained_betas": null,
        "use_karras_sigmas": false
    });
    let file = crate::config::ConfigFile::parse(
        std::path::Path::new("scheduler_config.json"),
        &base.to_string(),
    )
    .expect("the base config");
    let overrides = overrides.as_object().cloned().unwrap_or_default();
    file.with_overrides(&overrides, "test options")
}

/// Whether `result` is a [`Error::SchedulerUsage`].
#[cfg(test)]
pub(crate) fn is_usage<T>(result: Result<T>) -> bool {
    matches!(result, Err(Error::SchedulerUsage { .. }))
}

/// Whether `result` is a config error about `key`.
#[cfg(test)]
pub(crate) fn is_invalid<T>(result: Result<T>, key: &str) -> bool {
    matches!(result, Err(Error::InvalidValue { key: k, .. }) if k == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_timesteps_follow_numpy() {
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Leading, 1000, 4, 1),
            vec![751, 501, 251, 1]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Trailing, 1000, 3, 0),
            vec![999, 666, 332]
        );
        assert_eq!(
            ddim_timesteps(TimestepSpacing::Linspace, 1000, 3, 0),
            vec![999, 500, 0]
        );
    }

    #[test]
    fn out_of_table_schedules_are_refused() {
        assert!(check_schedule("X", &[999, 0], 1000).is_ok());
        assert!(is_usage(check_schedule("X", &[1000, 1], 1000)));
        assert!(is_usage(table_index("X", 12.5, 1000)));
        assert!(is_usage(table_index("X", -1.0, 1000)));
    }
}
