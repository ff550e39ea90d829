//! The VAE mid-block's self-attention: diffusers' `Attention` built with
//! `_from_deprecated_attn_block=True` (one head of `in_channels`, a group norm in front, the
//! residual added back, divided by `rescale_output_factor`), run by `AttnProcessor2_0`, i.e.
//! `F.scaled_dot_product_attention`.

use tch::Tensor;

use super::layers::{GroupNorm, Linear, ParamLoader};
use crate::error::Result;

#[derive(Debug)]
pub struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    rescale_output_factor: f64,
}

impl VaeAttention {
    /// `channels` is the query dim; `attention_head_dim = channels` makes one head. Checkpoints
    /// saved before diffusers renamed the layers (`query`, `key`, `value`, `proj_attn`) load too,
    /// as diffusers converts them.
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let deprecated = !params.has(&format!("{prefix}.to_q.weight"))
            && params.has(&format!("{prefix}.query.weight"));
        let name =
            |new: &str, old: &str| format!("{prefix}.{}", if deprecated { old } else { new });
        let head_dim = channels;
        Ok(Self {
            group_norm: GroupNorm::load(
                params,
                &format!("{prefix}.group_norm"),
                groups,
                channels,
                eps,
            )?,
            to_q: Linear::load(params, &name("to_q", "query"), channels, channels)?,
            to_k: Linear::load(params, &name("to_k", "key"), channels, channels)?,
            to_v: Linear::load(params, &name("to_v", "value"), channels, channels)?,
            to_out: Linear::load(params, &name("to_out.0", "proj_attn"), channels, channels)?,
            heads: (channels / head_dim) as i64,
            rescale_output_factor: 1.0,
        })
    }

    /// `AttnProcessor2_0.__call__` for a 4-D input without mask or encoder states, op for op
    /// (the views and transposes decide which GEMM path `F.linear` takes).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let residual = input;
        let size = input.size();
        let (batch, channel, height, width) = (size[0], size[1], size[2], size[3]);
        let hidden = input
            .f_view([batch, channel, height * width])?
            .f_transpose(1, 2)?;
        let hidden = self
            .group_norm
            .forward(&hidden.f_transpose(1, 2)?)?
            .f_transpose(1, 2)?;
        let query = self.to_q.forward(&hidden)?;
        let key = self.to_k.forward(&hidden)?;
        let value = self.to_v.forward(&hidden)?;
        let inner_dim = key.size()[2];
        let head_dim = inner_dim / self.heads;
        let split = |t: &Tensor| -> Result<Tensor> {
            Ok(t.f_view([batch, -1, self.heads, head_dim])?
                .f_transpose(1, 2)?)
        };
        let (query, key, value) = (split(&query)?, split(&key)?, split(&value)?);
        let hidden = Tensor::f_scaled_dot_product_attention(
            &query,
            &key,
            &value,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        )?;
        let hidden = hidden
            .f_transpose(1, 2)?
            .f_reshape([batch, -1, self.heads * head_dim])?
            .f_to_kind(query.kind())?;
        let hidden = self.to_out.forward(&hidden)?;
        // to_out[1] is dropout(p=0): the identity in eval mode
        let hidden = hidden
            .f_transpose(-1, -2)?
            .f_reshape([batch, channel, height, width])?;
        Ok(hidden
            .f_add(residual)?
            .f_div_scalar(self.rescale_output_factor)?)
    }
}
