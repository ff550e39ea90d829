//! The UNet's down, mid and up blocks (`diffusers/models/unets/unet_2d_blocks.py`) and their
//! resamplers, `Downsample2D` (`downsampling.py`) and `Upsample2D` (`upsampling.py`).

use tch::Tensor;

use super::attention::{Transformer2DModel, TransformerSettings};
use super::layers::{Conv2d, Params};
use super::resnet::{ResnetBlock2D, ResnetSettings};
use crate::error::Result;

/// `Downsample2D(use_conv=True, name="op")`: a stride-2 3×3 convolution; with `padding=0` the
/// input is first padded by one zero row and column at the bottom and right.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_bottom_right: bool,
}

impl Downsample2D {
    pub(crate) fn load(p: &Params, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&p.sub("conv"), channels, channels, 3, 2, padding)?,
            pad_bottom_right: padding == 0,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        if self.pad_bottom_right {
            return self
                .conv
                .forward(&hidden_states.f_constant_pad_nd([0, 1, 0, 1])?);
        }
        self.conv.forward(hidden_states)
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour upsampling, then a 3×3 convolution.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub(crate) fn load(p: &Params, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&p.sub("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// `output_size`: the size the UNet forces when the input is not a multiple of its overall
    /// upsampling factor; otherwise the scale factor is 2.
    pub fn forward(&self, hidden_states: &Tensor, output_size: Option<[i64; 2]>) -> Result<Tensor> {
        let hidden_states = match output_size {
            // F.interpolate(size=output_size, mode="nearest")
            Some(size) => hidden_states.f_upsample_nearest2d(size, None, None)?,
            // F.interpolate(scale_factor=2.0, mode="nearest"): output size floor(in * 2.0), and
            // the scale factors themselves handed to the kernel
            None => {
                let (_, _, height, width) = hidden_states.size4()?;
                hidden_states.f_upsample_nearest2d([height * 2, width * 2], 2.0, 2.0)?
            }
        };
        self.conv.forward(&hidden_states)
    }
}

/// Settings shared by the transformers of one block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrossAttnSettings {
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
}

fn transformer(
    p: &Params,
    index: usize,
    channels: usize,
    num_layers: usize,
    groups: usize,
    cross: CrossAttnSettings,
) -> Result<Transformer2DModel> {
    Transformer2DModel::load(
        &p.sub("attentions").sub(index),
        TransformerSettings {
            heads: cross.heads,
            in_channels: channels,
            num_layers,
            cross_attention_dim: cross.cross_attention_dim,
            norm_num_groups: groups,
            use_linear_projection: cross.use_linear_projection,
            only_cross_attention: cross.only_cross_attention,
        },
    )
}

/// `DownBlock2D`: resnets, then an optional downsampler; every output is a skip connection.
#[derive(Debug)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    /// `resnet`: the settings of the first resnet (later ones take `out_channels` in).
    pub(crate) fn load(
        p: &Params,
        num_layers: usize,
        resnet: ResnetSettings,
        downsample_padding: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            resnets: down_resnets(p, num_layers, resnet)?,
            downsampler: downsample_padding
                .map(|padding| {
                    Downsample2D::load(&p.sub("downsamplers").sub(0), resnet.out_channels, padding)
                })
                .transpose()?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, temb: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let mut output_states = Vec::with_capacity(self.resnets.len() + 1);
        let mut hidden_states = hidden_states.shallow_clone();
        for resnet in &self.resnets {
            hidden_states = resnet.forward(&hidden_states, temb)?;
            output_states.push(hidden_states.shallow_clone());
        }
        if let Some(downsampler) = &self.downsampler {
            hidden_states = downsampler.forward(&hidden_states)?;
            output_states.push(hidden_states.shallow_clone());
        }
        Ok((hidden_states, output_states))
    }
}

fn down_resnets(
    p: &Params,
    num_layers: usize,
    first: ResnetSettings,
) -> Result<Vec<ResnetBlock2D>> {
    (0..num_layers)
        .map(|i| {
            let settings = ResnetSettings {
                in_channels: if i == 0 {
                    first.in_channels
                } else {
                    first.out_channels
                },
                ..first
            };
            ResnetBlock2D::load(&p.sub("resnets").sub(i), settings)
        })
        .collect()
}

/// `CrossAttnDownBlock2D`: (resnet, transformer) pairs, then an optional downsampler.
#[derive(Debug)]
pub struct CrossAttnDownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl CrossAttnDownBlock2D {
    pub(crate) fn load(
        p: &Params,
        num_layers: usize,
        transformer_layers: usize,
        resnet: ResnetSettings,
        cross: CrossAttnSettings,
        downsample_padding: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            resnets: down_resnets(p, num_layers, resnet)?,
            attentions: (0..num_layers)
                .map(|i| {
                    transformer(
                        p,
                        i,
                        resnet.out_channels,
                        transformer_layers,
                        resnet.groups,
                        cross,
                    )
                })
                .collect::<Result<_>>()?,
            downsampler: downsample_padding
                .map(|padding| {
                    Downsample2D::load(&p.sub("downsamplers").sub(0), resnet.out_channels, padding)
                })
                .transpose()?,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        temb: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut output_states = Vec::with_capacity(self.resnets.len() + 1);
        let mut hidden_states = hidden_states.shallow_clone();
        for (resnet, attn) in self.resnets.iter().zip(&self.attentions) {
            hidden_states = resnet.forward(&hidden_states, temb)?;
            hidden_states = attn.forward(&hidden_states, encoder_hidden_states)?;
            output_states.push(hidden_states.shallow_clone());
        }
        if let Some(downsampler) = &self.downsampler {
            hidden_states = downsampler.forward(&hidden_states)?;
            output_states.push(hidden_states.shallow_clone());
        }
        Ok((hidden_states, output_states))
    }
}

/// `UNetMidBlock2DCrossAttn` (one layer, as the UNet builds it): resnet, then (transformer,
/// resnet) pairs.
#[derive(Debug)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// `resnet.in_channels == resnet.out_channels`: the mid block keeps the width.
    pub(crate) fn load(
        p: &Params,
        transformer_layers: usize,
        resnet: ResnetSettings,
        cross: CrossAttnSettings,
    ) -> Result<Self> {
        const NUM_LAYERS: usize = 1;
        let attentions = (0..NUM_LAYERS)
            .map(|i| {
                transformer(
                    p,
                    i,
                    resnet.out_channels,
                    transformer_layers,
                    resnet.groups,
                    cross,
                )
            })
            .collect::<Result<_>>()?;
        let resnets = (0..=NUM_LAYERS)
            .map(|i| ResnetBlock2D::load(&p.sub("resnets").sub(i), resnet))
            .collect::<Result<_>>()?;
        Ok(Self {
            resnets,
            attentions,
        })
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        temb: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        let mut hidden_states = self.resnets[0].forward(hidden_states, temb)?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            hidden_states = attn.forward(&hidden_states, encoder_hidden_states)?;
            hidden_states = resnet.forward(&hidden_states, temb)?;
        }
        Ok(hidden_states)
    }
}

/// The channel counts of an up block, named as in `get_up_block`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpChannels {
    /// The width of the skip connection the last resnet takes.
    pub in_channels: usize,
    pub out_channels: usize,
    /// The width of the previous block's output, which the first resnet takes.
    pub prev_output_channel: usize,
}

fn up_resnets(
    p: &Params,
    num_layers: usize,
    channels: UpChannels,
    template: ResnetSettings,
) -> Result<Vec<ResnetBlock2D>> {
    (0..num_layers)
        .map(|i| {
            let res_skip_channels = if i == num_layers - 1 {
                channels.in_channels
            } else {
                channels.out_channels
            };
            let resnet_in_channels = if i == 0 {
                channels.prev_output_channel
            } else {
                channels.out_channels
            };
            let settings = ResnetSettings {
                in_channels: resnet_in_channels + res_skip_channels,
                out_channels: channels.out_channels,
                ..template
            };
            ResnetBlock2D::load(&p.sub("resnets").sub(i), settings)
        })
        .collect()
}

/// Takes the last skip connection off the stack and concatenates it after `hidden_states`.
fn cat_skip(hidden_states: &Tensor, res_hidden_states: &mut Vec<Tensor>) -> Result<Tensor> {
    // The UNet hands each up block exactly as many skip connections as it has resnets.
    let skip = res_hidden_states
        .pop()
        .expect("one skip connection per up-block resnet");
    Ok(Tensor::f_cat(&[hidden_states, &skip], 1)?)
}

/// `UpBlock2D`: resnets on (hidden states ⧺ skip connection), then an optional upsampler.
#[derive(Debug)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock2D {
    pub(crate) fn load(
        p: &Params,
        num_layers: usize,
        channels: UpChannels,
        resnet: ResnetSettings,
        add_upsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            resnets: up_resnets(p, num_layers, channels, resnet)?,
            upsampler: add_upsample
                .then(|| Upsample2D::load(&p.sub("upsamplers").sub(0), channels.out_channels))
                .transpose()?,
        })
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    /// `res_hidden_states`: this block's skip connections, the last one taken first.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        mut res_hidden_states: Vec<Tensor>,
        temb: &Tensor,
        upsample_size: Option<[i64; 2]>,
    ) -> Result<Tensor> {
        let mut hidden_states = hidden_states.shallow_clone();
        for resnet in &self.resnets {
            hidden_states = cat_skip(&hidden_states, &mut res_hidden_states)?;
            hidden_states = resnet.forward(&hidden_states, temb)?;
        }
        match &self.upsampler {
            Some(upsampler) => upsampler.forward(&hidden_states, upsample_size),
            None => Ok(hidden_states),
        }
    }
}

/// `CrossAttnUpBlock2D`: (resnet on hidden states ⧺ skip connection, transformer) pairs, then an
/// optional upsampler.
#[derive(Debug)]
pub struct CrossAttnUpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl CrossAttnUpBlock2D {
    pub(crate) fn load(
        p: &Params,
        num_layers: usize,
        transformer_layers: usize,
        channels: UpChannels,
        resnet: ResnetSettings,
        cross: CrossAttnSettings,
        add_upsample: bool,
    ) -> Result<Self> {
        Ok(Self {
            resnets: up_resnets(p, num_layers, channels, resnet)?,
            attentions: (0..num_layers)
                .map(|i| {
                    transformer(
                        p,
                        i,
                        channels.out_channels,
                        transformer_layers,
                        resnet.groups,
                        cross,
                    )
                })
                .collect::<Result<_>>()?,
            upsampler: add_upsample
                .then(|| Upsample2D::load(&p.sub("upsamplers").sub(0), channels.out_channels))
                .transpose()?,
        })
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    pub fn forward(
        &self,
        hidden_states: &Tensor,
        mut res_hidden_states: Vec<Tensor>,
        temb: &Tensor,
        encoder_hidden_states: &Tensor,
        upsample_size: Option<[i64; 2]>,
    ) -> Result<Tensor> {
        let mut hidden_states = hidden_states.shallow_clone();
        for (resnet, attn) in self.resnets.iter().zip(&self.attentions) {
            hidden_states = cat_skip(&hidden_states, &mut res_hidden_states)?;
            hidden_states = resnet.forward(&hidden_states, temb)?;
            hidden_states = attn.forward(&hidden_states, encoder_hidden_states)?;
        }
        match &self.upsampler {
            Some(upsampler) => upsampler.forward(&hidden_states, upsample_size),
            None => Ok(hidden_states),
        }
    }
}
