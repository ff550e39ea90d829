//! diffusers' `ResnetBlock2D` (`diffusers/models/resnet.py`), as the UNet's blocks build it:
//! no up/down sampling inside, time embedding projected per block, pre-norm.

use tch::Tensor;

use super::layers::{Activation, Conv2d, GroupNorm, Linear, Params};
use crate::error::Result;

/// `resnet_time_scale_shift`: how the time embedding enters the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEmbeddingNorm {
    /// "default": added before `norm2`.
    Default,
    /// "scale_shift": `norm2(h) * (1 + scale) + shift`.
    ScaleShift,
}

/// The sizes and settings of one `ResnetBlock2D`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetSettings {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub act: Activation,
    pub time_embedding_norm: TimeEmbeddingNorm,
    pub output_scale_factor: f64,
}

#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    time_embedding_norm: TimeEmbeddingNorm,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    nonlinearity: Activation,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub(crate) fn load(p: &Params, s: ResnetSettings) -> Result<Self> {
        let time_emb_out = match s.time_embedding_norm {
            TimeEmbeddingNorm::Default => s.out_channels,
            TimeEmbeddingNorm::ScaleShift => 2 * s.out_channels,
        };
        Ok(Self {
            norm1: GroupNorm::load(
                &p.sub("norm1"),
                s.groups,
                s.in_channels,
                s.eps,
                "norm_num_groups",
            )?,
            conv1: Conv2d::load(&p.sub("conv1"), s.in_channels, s.out_channels, 3, 1, 1)?,
            time_emb_proj: Linear::load(
                &p.sub("time_emb_proj"),
                s.temb_channels,
                time_emb_out,
                true,
            )?,
            time_embedding_norm: s.time_embedding_norm,
            norm2: GroupNorm::load(
                &p.sub("norm2"),
                s.groups,
                s.out_channels,
                s.eps,
                "norm_num_groups",
            )?,
            conv2: Conv2d::load(&p.sub("conv2"), s.out_channels, s.out_channels, 3, 1, 1)?,
            // use_in_shortcut defaults to in_channels != conv_2d_out_channels
            conv_shortcut: if s.in_channels != s.out_channels {
                Some(Conv2d::load(
                    &p.sub("conv_shortcut"),
                    s.in_channels,
                    s.out_channels,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            nonlinearity: s.act,
            output_scale_factor: s.output_scale_factor,
        })
    }

    pub fn forward(&self, input_tensor: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let hidden_states = self.norm1.forward(input_tensor)?;
        let hidden_states = self.nonlinearity.forward(&hidden_states)?;
        let hidden_states = self.conv1.forward(&hidden_states)?;

        // skip_time_act is false for every block the UNet builds
        let temb = self.nonlinearity.forward(temb)?;
        let temb = self
            .time_emb_proj
            .forward(&temb)?
            .f_unsqueeze(-1)?
            .f_unsqueeze(-1)?;

        let hidden_states = match self.time_embedding_norm {
            TimeEmbeddingNorm::Default => self.norm2.forward(&hidden_states.f_add(&temb)?)?,
            TimeEmbeddingNorm::ScaleShift => {
                let chunks = temb.f_chunk(2, 1)?;
                let (time_scale, time_shift) = (&chunks[0], &chunks[1]);
                self.norm2
                    .forward(&hidden_states)?
                    .f_mul(&time_scale.f_add_scalar(1)?)?
                    .f_add(time_shift)?
            }
        };
        let hidden_states = self.nonlinearity.forward(&hidden_states)?;
        // dropout: identity in eval mode
        let hidden_states = self.conv2.forward(&hidden_states)?;

        let input_tensor = match &self.conv_shortcut {
            Some(conv_shortcut) => conv_shortcut.forward(input_tensor)?,
            None => input_tensor.shallow_clone(),
        };
        Ok(input_tensor
            .f_add(&hidden_states)?
            .f_div_scalar(self.output_scale_factor)?)
    }
}
