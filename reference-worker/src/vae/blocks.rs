//! The VAE's blocks: `UNetMidBlock2D` (resnet, [attention, resnet]), `DownEncoderBlock2D` with
//! `Downsample2D`, and `UpDecoderBlock2D` with `Upsample2D`.

use tch::Tensor;

use super::attention::VaeAttention;
use super::layers::{Conv2d, ParamLoader};
use super::resnet::{BlockSettings, ResnetBlock2D};
use crate::error::Result;

/// `UNetMidBlock2D(num_layers=1, add_attention=mid_block_add_attention)`.
#[derive(Debug)]
pub struct UNetMidBlock2D {
    first: ResnetBlock2D,
    /// `(attention or None, resnet)` pairs.
    layers: Vec<(Option<VaeAttention>, ResnetBlock2D)>,
}

impl UNetMidBlock2D {
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        channels: usize,
        add_attention: bool,
        settings: BlockSettings,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::load(
                params,
                &format!("{prefix}.resnets.{i}"),
                channels,
                channels,
                settings,
            )
        };
        let attention = if add_attention {
            Some(VaeAttention::load(
                params,
                &format!("{prefix}.attentions.0"),
                channels,
                settings.groups,
                settings.eps,
            )?)
        } else {
            None
        };
        Ok(Self {
            first: resnet(0)?,
            layers: vec![(attention, resnet(1)?)],
        })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut hidden = self.first.forward(input)?;
        for (attention, resnet) in &self.layers {
            if let Some(attention) = attention {
                hidden = attention.forward(&hidden)?;
            }
            hidden = resnet.forward(&hidden)?;
        }
        Ok(hidden)
    }
}

/// `DownEncoderBlock2D`: `num_layers` resnets, then (except in the last block) a
/// `Downsample2D(use_conv=True, padding=0)`: pad right and bottom by one, 3×3 conv, stride 2.
#[derive(Debug)]
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Conv2d>,
}

impl DownEncoderBlock2D {
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        add_downsample: bool,
        settings: BlockSettings,
    ) -> Result<Self> {
        let resnets = (0..num_layers)
            .map(|i| {
                ResnetBlock2D::load(
                    params,
                    &format!("{prefix}.resnets.{i}"),
                    if i == 0 { in_channels } else { out_channels },
                    out_channels,
                    settings,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsampler = if add_downsample {
            Some(Conv2d::load(
                params,
                &format!("{prefix}.downsamplers.0.conv"),
                out_channels,
                out_channels,
                3,
                2,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsampler,
        })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut hidden = input.shallow_clone();
        for resnet in &self.resnets {
            hidden = resnet.forward(&hidden)?;
        }
        if let Some(conv) = &self.downsampler {
            // F.pad(hidden, (0, 1, 0, 1), mode="constant", value=0)
            hidden = hidden.f_constant_pad_nd([0, 1, 0, 1])?;
            hidden = conv.forward(&hidden)?;
        }
        Ok(hidden)
    }
}

/// `UpDecoderBlock2D`: `num_layers` resnets, then (except in the last block) an
/// `Upsample2D(use_conv=True)`: nearest-neighbour ×2, 3×3 conv.
#[derive(Debug)]
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Conv2d>,
}

impl UpDecoderBlock2D {
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        num_layers: usize,
        add_upsample: bool,
        settings: BlockSettings,
    ) -> Result<Self> {
        let resnets = (0..num_layers)
            .map(|i| {
                ResnetBlock2D::load(
                    params,
                    &format!("{prefix}.resnets.{i}"),
                    if i == 0 { in_channels } else { out_channels },
                    out_channels,
                    settings,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if add_upsample {
            Some(Conv2d::load(
                params,
                &format!("{prefix}.upsamplers.0.conv"),
                out_channels,
                out_channels,
                3,
                1,
                1,
            )?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut hidden = input.shallow_clone();
        for resnet in &self.resnets {
            hidden = resnet.forward(&hidden)?;
        }
        if let Some(conv) = &self.upsampler {
            // F.interpolate(hidden, scale_factor=2.0, mode="nearest")
            let size = hidden.size();
            hidden = hidden.f_upsample_nearest2d([size[2] * 2, size[3] * 2], 2.0, 2.0)?;
            hidden = conv.forward(&hidden)?;
        }
        Ok(hidden)
    }
}
