//! diffusers' `ResnetBlock2D` as the VAE uses it: no time embedding (`temb_channels=None`),
//! `pre_norm`, a 1×1 `conv_shortcut` when the channel count changes.

use tch::Tensor;

use super::layers::{Activation, Conv2d, GroupNorm, ParamLoader};
use crate::error::Result;

/// The norm settings every VAE block shares: `resnet_groups = norm_num_groups`,
/// `resnet_eps = 1e-6`, `resnet_act_fn = act_fn`.
#[derive(Debug, Clone, Copy)]
pub struct BlockSettings {
    pub groups: usize,
    pub eps: f64,
    pub activation: Activation,
}

#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    activation: Activation,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        settings: BlockSettings,
    ) -> Result<Self> {
        let conv_shortcut = if in_channels != out_channels {
            Some(Conv2d::load(
                params,
                &format!("{prefix}.conv_shortcut"),
                in_channels,
                out_channels,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(
                params,
                &format!("{prefix}.norm1"),
                settings.groups,
                in_channels,
                settings.eps,
            )?,
            conv1: Conv2d::load(
                params,
                &format!("{prefix}.conv1"),
                in_channels,
                out_channels,
                3,
                1,
                1,
            )?,
            norm2: GroupNorm::load(
                params,
                &format!("{prefix}.norm2"),
                settings.groups,
                out_channels,
                settings.eps,
            )?,
            conv2: Conv2d::load(
                params,
                &format!("{prefix}.conv2"),
                out_channels,
                out_channels,
                3,
                1,
                1,
            )?,
            conv_shortcut,
            activation: settings.activation,
            output_scale_factor: 1.0,
        })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let hidden = self.norm1.forward(input)?;
        let hidden = self.activation.forward(&hidden)?;
        let hidden = self.conv1.forward(&hidden)?;
        let hidden = self.norm2.forward(&hidden)?;
        let hidden = self.activation.forward(&hidden)?;
        // dropout(p=0) in eval mode is the identity
        let hidden = self.conv2.forward(&hidden)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(input)?,
            None => input.shallow_clone(),
        };
        Ok(shortcut
            .f_add(&hidden)?
            .f_div_scalar(self.output_scale_factor)?)
    }
}
