//! diffusers' attention stack as the SDXL UNet uses it: `Attention` run by `AttnProcessor2_0`
//! (`attention_processor.py`), `GEGLU` / `FeedForward` (`activations.py`, `attention.py`),
//! `BasicTransformerBlock` (`attention.py`) and the continuous-input `Transformer2DModel`
//! (`transformers/transformer_2d.py`).

use tch::Tensor;

use super::layers::{dim, GroupNorm, LayerNorm, Linear, Params};
use crate::error::Result;

/// `Attention` with diffusers' UNet defaults (no bias on q/k/v, bias on `to_out.0`, no norms,
/// `rescale_output_factor` 1, no residual), computed as `AttnProcessor2_0` does.
#[derive(Debug)]
pub struct Attention {
    heads: i64,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    rescale_output_factor: f64,
}

impl Attention {
    /// `cross_attention_dim`: the width of the key/value input; `None` for self-attention.
    pub(crate) fn load(
        p: &Params,
        query_dim: usize,
        cross_attention_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
    ) -> Result<Self> {
        let inner_dim = dim_head * heads;
        let kv_dim = cross_attention_dim.unwrap_or(query_dim);
        Ok(Self {
            heads: dim(heads),
            to_q: Linear::load(&p.sub("to_q"), query_dim, inner_dim, false)?,
            to_k: Linear::load(&p.sub("to_k"), kv_dim, inner_dim, false)?,
            to_v: Linear::load(&p.sub("to_v"), kv_dim, inner_dim, false)?,
            to_out: Linear::load(&p.sub("to_out").sub(0), inner_dim, query_dim, true)?,
            rescale_output_factor: 1.0,
        })
    }

    /// `hidden_states` `[batch, tokens, query_dim]`; `encoder_hidden_states` (cross-attention)
    /// `[batch, keys, cross_attention_dim]`.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: Option<&Tensor>,
    ) -> Result<Tensor> {
        let batch_size = encoder_hidden_states.unwrap_or(hidden_states).size()[0];

        let query = self.to_q.forward(hidden_states)?;
        let encoder_hidden_states = encoder_hidden_states.unwrap_or(hidden_states);
        let key = self.to_k.forward(encoder_hidden_states)?;
        let value = self.to_v.forward(encoder_hidden_states)?;

        let inner_dim = key.size()[key.dim() - 1];
        let head_dim = inner_dim / self.heads;
        let split_heads = |xs: &Tensor| -> Result<Tensor> {
            Ok(xs
                .f_view([batch_size, -1, self.heads, head_dim])?
                .f_transpose(1, 2)?)
        };
        let query = split_heads(&query)?;
        let key = split_heads(&key)?;
        let value = split_heads(&value)?;

        let hidden_states = Tensor::f_scaled_dot_product_attention(
            &query,
            &key,
            &value,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        )?;
        let hidden_states = hidden_states
            .f_transpose(1, 2)?
            .f_reshape([batch_size, -1, self.heads * head_dim])?
            .f_to_kind(query.kind())?;

        let hidden_states = self.to_out.forward(&hidden_states)?;
        // to_out.1 is dropout: identity in eval mode
        Ok(hidden_states.f_div_scalar(self.rescale_output_factor)?)
    }
}

/// `GEGLU`: a linear projection to twice the width, halves gated by exact GELU.
#[derive(Debug)]
pub struct Geglu {
    proj: Linear,
}

impl Geglu {
    pub(crate) fn load(p: &Params, dim_in: usize, dim_out: usize) -> Result<Self> {
        Ok(Self {
            proj: Linear::load(&p.sub("proj"), dim_in, dim_out * 2, true)?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let hidden_states = self.proj.forward(hidden_states)?;
        let chunks = hidden_states.f_chunk(2, -1)?;
        let (hidden_states, gate) = (&chunks[0], &chunks[1]);
        Ok(hidden_states.f_mul(&gate.f_gelu("none")?)?)
    }
}

/// `FeedForward` with `activation_fn="geglu"`, `mult=4`: `net.0` (GEGLU), `net.1` (dropout),
/// `net.2` (linear).
#[derive(Debug)]
pub struct FeedForward {
    geglu: Geglu,
    out: Linear,
}

impl FeedForward {
    pub(crate) fn load(p: &Params, dim_in: usize) -> Result<Self> {
        let inner_dim = dim_in * 4;
        Ok(Self {
            geglu: Geglu::load(&p.sub("net").sub(0), dim_in, inner_dim)?,
            out: Linear::load(&p.sub("net").sub(2), inner_dim, dim_in, true)?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let hidden_states = self.geglu.forward(hidden_states)?;
        self.out.forward(&hidden_states)
    }
}

/// `BasicTransformerBlock` with `norm_type="layer_norm"`: self-attention, cross-attention and
/// feed-forward, each pre-normed by a LayerNorm (eps 1e-5, elementwise affine) and residual.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

/// `BasicTransformerBlock`'s `norm_eps` default, which `Transformer2DModel` keeps.
const TRANSFORMER_NORM_EPS: f64 = 1e-5;

impl BasicTransformerBlock {
    pub(crate) fn load(
        p: &Params,
        dim_: usize,
        heads: usize,
        head_dim: usize,
        cross_attention_dim: usize,
        only_cross_attention: bool,
    ) -> Result<Self> {
        let attn1_cross = only_cross_attention.then_some(cross_attention_dim);
        Ok(Self {
            norm1: LayerNorm::load(&p.sub("norm1"), dim_, TRANSFORMER_NORM_EPS)?,
            attn1: Attention::load(&p.sub("attn1"), dim_, attn1_cross, heads, head_dim)?,
            norm2: LayerNorm::load(&p.sub("norm2"), dim_, TRANSFORMER_NORM_EPS)?,
            attn2: Attention::load(
                &p.sub("attn2"),
                dim_,
                Some(cross_attention_dim),
                heads,
                head_dim,
            )?,
            norm3: LayerNorm::load(&p.sub("norm3"), dim_, TRANSFORMER_NORM_EPS)?,
            ff: FeedForward::load(&p.sub("ff"), dim_)?,
            only_cross_attention,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        let norm_hidden_states = self.norm1.forward(hidden_states)?;
        let attn_output = self.attn1.forward(
            &norm_hidden_states,
            self.only_cross_attention.then_some(encoder_hidden_states),
        )?;
        let hidden_states = attn_output.f_add(hidden_states)?;

        let norm_hidden_states = self.norm2.forward(&hidden_states)?;
        let attn_output = self
            .attn2
            .forward(&norm_hidden_states, Some(encoder_hidden_states))?;
        let hidden_states = attn_output.f_add(&hidden_states)?;

        let norm_hidden_states = self.norm3.forward(&hidden_states)?;
        let ff_output = self.ff.forward(&norm_hidden_states)?;
        Ok(ff_output.f_add(&hidden_states)?)
    }
}

/// How `Transformer2DModel` maps between the feature map and the token sequence.
#[derive(Debug)]
enum Projection {
    /// `use_linear_projection`: flatten, then `nn.Linear` (and the reverse on the way out).
    Linear(Linear),
    /// 1×1 `nn.Conv2d` on the feature map, then flatten.
    Conv(super::layers::Conv2d),
}

/// The sizes and settings of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerSettings {
    pub heads: usize,
    pub in_channels: usize,
    pub num_layers: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
}

/// `Transformer2DModel` on continuous input: GroupNorm (eps 1e-6), `proj_in`, the transformer
/// blocks, `proj_out`, plus the input as residual.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

/// `Transformer2DModel`'s GroupNorm eps, fixed in diffusers' `_init_continuous_input`.
const TRANSFORMER_GROUP_NORM_EPS: f64 = 1e-6;

impl Transformer2DModel {
    pub(crate) fn load(p: &Params, s: TransformerSettings) -> Result<Self> {
        // The blocks call it as Transformer2DModel(num_attention_heads, out_channels // heads, ...).
        let head_dim = s.in_channels / s.heads;
        let inner_dim = s.heads * head_dim;
        let projection = |name: &str, from: usize, to: usize| -> Result<Projection> {
            let p = p.sub(name);
            Ok(if s.use_linear_projection {
                Projection::Linear(Linear::load(&p, from, to, true)?)
            } else {
                Projection::Conv(super::layers::Conv2d::load(&p, from, to, 1, 1, 0)?)
            })
        };
        Ok(Self {
            norm: GroupNorm::load(
                &p.sub("norm"),
                s.norm_num_groups,
                s.in_channels,
                TRANSFORMER_GROUP_NORM_EPS,
                "norm_num_groups",
            )?,
            proj_in: projection("proj_in", s.in_channels, inner_dim)?,
            transformer_blocks: (0..s.num_layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        &p.sub("transformer_blocks").sub(i),
                        inner_dim,
                        s.heads,
                        head_dim,
                        s.cross_attention_dim,
                        s.only_cross_attention,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: projection("proj_out", inner_dim, s.in_channels)?,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        let (batch, _, height, width) = hidden_states.size4()?;
        let residual = hidden_states;

        let hidden_states = self.norm.forward(hidden_states)?;
        let to_tokens = |xs: &Tensor, inner_dim: i64| -> Result<Tensor> {
            Ok(xs
                .f_permute([0, 2, 3, 1])?
                .f_reshape([batch, height * width, inner_dim])?)
        };
        let (mut hidden_states, inner_dim) = match &self.proj_in {
            Projection::Conv(proj_in) => {
                let hidden_states = proj_in.forward(&hidden_states)?;
                let inner_dim = hidden_states.size()[1];
                (to_tokens(&hidden_states, inner_dim)?, inner_dim)
            }
            Projection::Linear(proj_in) => {
                let inner_dim = hidden_states.size()[1];
                let hidden_states = to_tokens(&hidden_states, inner_dim)?;
                (proj_in.forward(&hidden_states)?, inner_dim)
            }
        };

        for block in &self.transformer_blocks {
            hidden_states = block.forward(&hidden_states, encoder_hidden_states)?;
        }

        let to_map = |xs: &Tensor| -> Result<Tensor> {
            Ok(xs
                .f_reshape([batch, height, width, inner_dim])?
                .f_permute([0, 3, 1, 2])?
                .f_contiguous()?)
        };
        let hidden_states = match &self.proj_out {
            Projection::Conv(proj_out) => proj_out.forward(&to_map(&hidden_states)?)?,
            Projection::Linear(proj_out) => to_map(&proj_out.forward(&hidden_states)?)?,
        };
        Ok(hidden_states.f_add(residual)?)
    }
}
