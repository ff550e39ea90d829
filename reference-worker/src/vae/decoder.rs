//! diffusers' VAE `Decoder` (`norm_type="group"`): conv_in, mid block, `UpDecoderBlock2D`s with
//! `layers_per_block + 1` resnets each, group norm, SiLU, conv_out.

use tch::Tensor;

use super::blocks::{UNetMidBlock2D, UpDecoderBlock2D};
use super::layers::{Activation, Conv2d, GroupNorm, ParamLoader};
use super::resnet::BlockSettings;
use crate::config::AutoencoderKLConfig;
use crate::error::Result;

#[derive(Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn load(
        params: &ParamLoader,
        config: &AutoencoderKLConfig,
        settings: BlockSettings,
    ) -> Result<Self> {
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let last = reversed[0];
        let first = reversed[reversed.len() - 1];
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut output_channel = reversed[0];
        for (i, &block_channels) in reversed.iter().enumerate() {
            let prev_output_channel = output_channel;
            output_channel = block_channels;
            up_blocks.push(UpDecoderBlock2D::load(
                params,
                &format!("decoder.up_blocks.{i}"),
                prev_output_channel,
                output_channel,
                config.layers_per_block + 1,
                i != reversed.len() - 1,
                settings,
            )?);
        }
        Ok(Self {
            conv_in: Conv2d::load(
                params,
                "decoder.conv_in",
                config.latent_channels,
                last,
                3,
                1,
                1,
            )?,
            mid_block: UNetMidBlock2D::load(
                params,
                "decoder.mid_block",
                last,
                config.mid_block_add_attention,
                settings,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                params,
                "decoder.conv_norm_out",
                settings.groups,
                first,
                settings.eps,
            )?,
            conv_out: Conv2d::load(
                params,
                "decoder.conv_out",
                first,
                config.out_channels,
                3,
                1,
                1,
            )?,
        })
    }

    pub fn forward(&self, sample: &Tensor) -> Result<Tensor> {
        let hidden = self.conv_in.forward(sample)?;
        let mut hidden = self.mid_block.forward(&hidden)?;
        for block in &self.up_blocks {
            hidden = block.forward(&hidden)?;
        }
        let hidden = self.conv_norm_out.forward(&hidden)?;
        // conv_act is nn.SiLU() whatever act_fn says
        let hidden = Activation::Silu.forward(&hidden)?;
        self.conv_out.forward(&hidden)
    }
}
