//! The training noise schedule every diffusers scheduler starts from: `betas` from the config's
//! `beta_schedule` (or `trained_betas`), then `alphas_cumprod`, computed with the same torch ops in
//! float32 as the schedulers' `__init__` (`torch.linspace`, `torch.cumprod`, ...).

use tch::{Kind, Tensor};

use crate::config::ConfigFile;
use crate::error::Result;

/// A scheduler class's defaults for the keys of the training schedule (they differ a little
/// between classes; `from_config` fills absent keys with the target class's defaults).
#[derive(Debug, Clone, Copy)]
pub struct TrainingDefaults {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: &'static str,
}

impl TrainingDefaults {
    /// The defaults most diffusers schedulers share (DDPM's, Euler's, DPM-Solver's, ...).
    pub const COMMON: Self = Self {
        num_train_timesteps: 1000,
        beta_start: 0.0001,
        beta_end: 0.02,
        beta_schedule: "linear",
    };
}

/// `num_train_timesteps`, `betas` and `alphas_cumprod` as a scheduler's `__init__` leaves them.
#[derive(Debug)]
pub struct TrainingSchedule {
    pub num_train_timesteps: usize,
    /// float32, `[num_train_timesteps]`.
    pub betas: Tensor,
    /// float32, `[num_train_timesteps]`: `torch.cumprod(1.0 - betas, dim=0)`.
    pub alphas_cumprod: Tensor,
}

impl TrainingSchedule {
    /// Reads `num_train_timesteps`, `beta_start`, `beta_end`, `beta_schedule`, `trained_betas`
    /// and `rescale_betas_zero_snr` from `config` (absent keys take `defaults`).
    pub fn from_config(config: &ConfigFile, defaults: TrainingDefaults) -> Result<Self> {
        let num_train_timesteps =
            config.usize_or("num_train_timesteps", defaults.num_train_timesteps)?;
        if num_train_timesteps < 2 {
            return Err(config.invalid("num_train_timesteps", "must be at least 2"));
        }
        let beta_start = config.f64_or("beta_start", defaults.beta_start)?;
        let beta_end = config.f64_or("beta_end", defaults.beta_end)?;
        let beta_schedule = config.string_or("beta_schedule", defaults.beta_schedule)?;
        let n = num_train_timesteps as i64;
        let betas = if let Some(trained) = config.opt_f64s("trained_betas")? {
            if trained.len() != num_train_timesteps {
                return Err(config.invalid(
                    "trained_betas",
                    format!(
                        "has {} values but num_train_timesteps is {num_train_timesteps}",
                        trained.len()
                    ),
                ));
            }
            // torch.tensor(trained_betas, dtype=torch.float32)
            Tensor::from_slice(&trained).f_to_kind(Kind::Float)?
        } else {
            match beta_schedule.as_str() {
                "linear" => {
                    Tensor::f_linspace(beta_start, beta_end, n, (Kind::Float, tch::Device::Cpu))?
                }
                "scaled_linear" => Tensor::f_linspace(
                    beta_start.powf(0.5),
                    beta_end.powf(0.5),
                    n,
                    (Kind::Float, tch::Device::Cpu),
                )?
                .f_pow_tensor_scalar(2)?,
                "squaredcos_cap_v2" => betas_for_alpha_bar(num_train_timesteps, 0.999)?,
                other => {
                    return Err(config.invalid(
                        "beta_schedule",
                        format!("`{other}` is not one of linear, scaled_linear, squaredcos_cap_v2"),
                    ))
                }
            }
        };
        let betas = if config.bool_or("rescale_betas_zero_snr", false)? {
            rescale_zero_terminal_snr(&betas)?
        } else {
            betas
        };
        let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
        let alphas_cumprod = alphas.f_cumprod(0, Kind::Float)?;
        Ok(Self {
            num_train_timesteps,
            betas,
            alphas_cumprod,
        })
    }
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform, in Python floats (f64), then
/// `torch.tensor(betas, dtype=torch.float32)`.
fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Result<Tensor> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powf(2.0)
    };
    let n = num_diffusion_timesteps as f64;
    let betas: Vec<f64> = (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect();
    Ok(Tensor::from_slice(&betas).f_to_kind(Kind::Float)?)
}

/// diffusers' `rescale_zero_terminal_snr`, op for op in float32.
fn rescale_zero_terminal_snr(betas: &Tensor) -> Result<Tensor> {
    let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
    let alphas_cumprod = alphas.f_cumprod(0, Kind::Float)?;
    let alphas_bar_sqrt = alphas_cumprod.f_sqrt()?;
    let first = alphas_bar_sqrt.f_get(0)?.copy();
    let last = alphas_bar_sqrt.f_get(-1)?.copy();
    let shifted = alphas_bar_sqrt.f_sub(&last)?;
    let scaled = shifted.f_mul(&first.f_div(&first.f_sub(&last)?)?)?;
    let alphas_bar = scaled.f_pow_tensor_scalar(2)?;
    let n = alphas_bar.size()[0];
    let ratios = alphas_bar
        .f_slice(0, 1, n, 1)?
        .f_div(&alphas_bar.f_slice(0, 0, n - 1, 1)?)?;
    let alphas = Tensor::f_cat(&[alphas_bar.f_slice(0, 0, 1, 1)?, ratios], 0)?;
    Ok(alphas.f_neg()?.f_add_scalar(1.0)?)
}

impl TrainingSchedule {
    /// Like [`Self::from_config`], for the classes that take more `beta_schedule`s than the
    /// common three: `extra(beta_schedule)` returns the float32 betas of a schedule only that
    /// class knows (e.g. DDPM's `sigmoid` and `laplace`), or `None` to fall back to
    /// [`Self::from_config`]. `trained_betas` still wins, and `rescale_betas_zero_snr` and the
    /// `cumprod` apply to the class's betas as to the others.
    pub fn from_config_with(
        config: &ConfigFile,
        defaults: TrainingDefaults,
        extra: impl Fn(&str, usize, f64, f64) -> Result<Option<Tensor>>,
    ) -> Result<Self> {
        let beta_schedule = config.string_or("beta_schedule", defaults.beta_schedule)?;
        if config.opt_f64s("trained_betas")?.is_some() {
            return Self::from_config(config, defaults);
        }
        let num_train_timesteps =
            config.usize_or("num_train_timesteps", defaults.num_train_timesteps)?;
        if num_train_timesteps < 2 {
            return Err(config.invalid("num_train_timesteps", "must be at least 2"));
        }
        let beta_start = config.f64_or("beta_start", defaults.beta_start)?;
        let beta_end = config.f64_or("beta_end", defaults.beta_end)?;
        let Some(betas) = extra(&beta_schedule, num_train_timesteps, beta_start, beta_end)? else {
            return Self::from_config(config, defaults);
        };
        let betas = if config.bool_or("rescale_betas_zero_snr", false)? {
            rescale_zero_terminal_snr(&betas)?
        } else {
            betas
        };
        let alphas = betas.f_neg()?.f_add_scalar(1.0)?;
        let alphas_cumprod = alphas.f_cumprod(0, Kind::Float)?;
        Ok(Self {
            num_train_timesteps,
            betas,
            alphas_cumprod,
        })
    }
}
