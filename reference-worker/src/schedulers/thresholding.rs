//! diffusers' dynamic thresholding (`_threshold_sample`, from Imagen), which DDIM, DDPM and
//! UniPC apply to the predicted `x_0` when the config sets `thresholding`.

use tch::{Kind, Tensor};

use crate::config::ConfigFile;
use crate::error::Result;

/// `thresholding=True` with its `dynamic_thresholding_ratio` and `sample_max_value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicThresholding {
    pub ratio: f64,
    pub sample_max_value: f64,
}

impl DynamicThresholding {
    /// `Some` when the config sets `thresholding` (default false); diffusers' defaults for the
    /// other two keys are 0.995 and 1.0 in every class that takes them.
    pub fn from_config(c: &ConfigFile) -> Result<Option<Self>> {
        if !c.bool_or("thresholding", false)? {
            return Ok(None);
        }
        Ok(Some(Self {
            ratio: c.f64_or("dynamic_thresholding_ratio", 0.995)?,
            sample_max_value: c.f64_or("sample_max_value", 1.0)?,
        }))
    }

    /// `_threshold_sample(sample)`, op for op:
    ///
    /// ```text
    /// sample = sample.reshape(batch_size, channels * np.prod(remaining_dims))   # float32 at least
    /// s = torch.quantile(sample.abs(), ratio, dim=1)
    /// s = torch.clamp(s, min=1, max=sample_max_value).unsqueeze(1)
    /// sample = (torch.clamp(sample, -s, s) / s).reshape(shape).to(dtype)
    /// ```
    pub fn apply(&self, sample: &Tensor) -> Result<Tensor> {
        let kind = sample.kind();
        let shape = sample.size();
        let upcast = match kind {
            Kind::Float | Kind::Double => sample.shallow_clone(),
            _ => sample.f_to_kind(Kind::Float)?,
        };
        let rest: i64 = shape.iter().skip(1).product();
        let flat = upcast.f_reshape([shape[0], rest])?;
        let s = flat
            .f_abs()?
            .f_quantile_scalar(self.ratio, 1, false, "linear")?
            .f_clamp(1.0, self.sample_max_value)?
            .f_unsqueeze(1)?;
        let clamped = flat.f_clamp_tensor(Some(&s.f_neg()?), Some(&s))?;
        Ok(clamped.f_div(&s)?.f_reshape(&shape)?.f_to_kind(kind)?)
    }
}
