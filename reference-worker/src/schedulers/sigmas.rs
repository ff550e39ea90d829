//! The sigma-schedule helpers the k-diffusion style schedulers share (Euler, Euler ancestral,
//! Heun, KDPM2, LMS, DPM-Solver): `_sigma_to_t`, `_convert_to_karras`, `_convert_to_exponential`,
//! in NumPy float64 with NumPy's float32 steps where diffusers has them.

use super::numpy;

/// `_sigma_to_t(sigma, log_sigmas)`: the fractional training timestep of `sigma`, by linear
/// interpolation in log-sigma. `log_sigmas` is `np.log` of the float32 training sigmas (float32).
///
/// Mind the dtypes: `log_sigma` is float64, the table float32, and `low - high` is a float32
/// subtraction before the float64 division, as NumPy's promotion rules make it.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = if sigma.is_nan() {
        sigma
    } else {
        sigma.max(1e-10).ln()
    };
    // np.cumsum(dists >= 0).argmax(): the last index whose log-sigma is <= log_sigma, else 0.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&log_s| log_sigma - f64::from(log_s) >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = (f64::from(low) - log_sigma) / f64::from(low - high);
    let w = w.clamp(0.0, 1.0); // np.clip: NaN stays NaN
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// `_convert_to_karras(in_sigmas, num_inference_steps)` (rho = 7), float64. `sigma_min` and
/// `sigma_max` are the config's, when it sets them; else the ends of `in_sigmas`.
pub fn karras(
    in_sigmas: &[f64],
    num_inference_steps: usize,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
) -> Vec<f64> {
    let sigma_min = sigma_min.unwrap_or(in_sigmas[in_sigmas.len() - 1]);
    let sigma_max = sigma_max.unwrap_or(in_sigmas[0]);
    let rho = 7.0_f64;
    let ramp = numpy::linspace(0.0, 1.0, num_inference_steps);
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    ramp.iter()
        .map(|&r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// `_convert_to_exponential(in_sigmas, num_inference_steps)`, float64.
pub fn exponential(
    in_sigmas: &[f64],
    num_inference_steps: usize,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
) -> Vec<f64> {
    let sigma_min = sigma_min.unwrap_or(in_sigmas[in_sigmas.len() - 1]);
    let sigma_max = sigma_max.unwrap_or(in_sigmas[0]);
    numpy::linspace(sigma_max.ln(), sigma_min.ln(), num_inference_steps)
        .into_iter()
        .map(f64::exp)
        .collect()
}
