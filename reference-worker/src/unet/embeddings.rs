//! diffusers' `get_timestep_embedding`, `Timesteps` and `TimestepEmbedding`
//! (`diffusers/models/embeddings.py`).

use tch::{Kind, Tensor};

use super::layers::{Activation, Linear, Params};
use crate::error::Result;

/// `get_timestep_embedding`: sinusoidal embeddings of a 1-d tensor of (possibly fractional)
/// timesteps, `[N] -> [N, embedding_dim]`, computed in float32 with diffusers' exact sequence of
/// operations (the exponent is built in float32 from `-ln(max_period)` and divided by
/// `half_dim - downscale_freq_shift`, then `exp`, the product with the timesteps, `scale`, sin
/// and cos concatenated, optionally swapped, and a zero column when the size is odd).
pub fn get_timestep_embedding(
    timesteps: &Tensor,
    embedding_dim: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    scale: f64,
    max_period: f64,
) -> Result<Tensor> {
    let half_dim = embedding_dim / 2;
    let exponent = Tensor::f_arange_start(0, half_dim, (Kind::Float, timesteps.device()))?
        .f_mul_scalar(-max_period.ln())?;
    let exponent = exponent.f_div_scalar(half_dim as f64 - downscale_freq_shift)?;

    let emb = exponent.f_exp()?;
    let emb = timesteps
        .f_unsqueeze(1)?
        .f_to_kind(Kind::Float)?
        .f_mul(&emb.f_unsqueeze(0)?)?;
    let emb = emb.f_mul_scalar(scale)?;

    let emb = Tensor::f_cat(&[emb.f_sin()?, emb.f_cos()?], -1)?;
    let emb = if flip_sin_to_cos {
        Tensor::f_cat(
            &[
                emb.f_narrow(1, half_dim, half_dim)?,
                emb.f_narrow(1, 0, half_dim)?,
            ],
            -1,
        )?
    } else {
        emb
    };
    if embedding_dim % 2 == 1 {
        return Ok(emb.f_constant_pad_nd([0, 1, 0, 0])?);
    }
    Ok(emb)
}

/// `Timesteps`: the weightless sinusoidal projection (always float32, as in diffusers).
#[derive(Debug, Clone)]
pub struct Timesteps {
    num_channels: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
    /// diffusers' `scale` argument; the UNet always leaves it at its default, 1.
    scale: f64,
}

impl Timesteps {
    pub fn new(num_channels: i64, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
            scale: 1.0,
        }
    }

    pub fn forward(&self, timesteps: &Tensor) -> Result<Tensor> {
        get_timestep_embedding(
            timesteps,
            self.num_channels,
            self.flip_sin_to_cos,
            self.downscale_freq_shift,
            self.scale,
            10000.0,
        )
    }
}

/// `TimestepEmbedding`: `linear_1`, activation, `linear_2`, optional post-activation.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    act: Activation,
    linear_2: Linear,
    post_act: Option<Activation>,
}

impl TimestepEmbedding {
    pub(crate) fn load(
        p: &Params,
        in_channels: usize,
        time_embed_dim: usize,
        act: Activation,
        post_act: Option<Activation>,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(&p.sub("linear_1"), in_channels, time_embed_dim, true)?,
            act,
            linear_2: Linear::load(&p.sub("linear_2"), time_embed_dim, time_embed_dim, true)?,
            post_act,
        })
    }

    pub fn forward(&self, sample: &Tensor) -> Result<Tensor> {
        let sample = self.linear_1.forward(sample)?;
        let sample = self.act.forward(&sample)?;
        let sample = self.linear_2.forward(&sample)?;
        match self.post_act {
            Some(post_act) => post_act.forward(&sample),
            None => Ok(sample),
        }
    }
}
