//! diffusers' VAE `Encoder` (`double_z=True`): conv_in, `DownEncoderBlock2D`s, mid block,
//! group norm, SiLU, conv_out to `2 * latent_channels` (mean and log-variance).

use tch::Tensor;

use super::blocks::{DownEncoderBlock2D, UNetMidBlock2D};
use super::layers::{Activation, Conv2d, GroupNorm, ParamLoader};
use super::resnet::BlockSettings;
use crate::config::AutoencoderKLConfig;
use crate::error::Result;

#[derive(Debug)]
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn load(
        params: &ParamLoader,
        config: &AutoencoderKLConfig,
        settings: BlockSettings,
    ) -> Result<Self> {
        let channels = &config.block_out_channels;
        let last = channels[channels.len() - 1];
        let mut down_blocks = Vec::with_capacity(channels.len());
        let mut output_channel = channels[0];
        for (i, &block_channels) in channels.iter().enumerate() {
            let input_channel = output_channel;
            output_channel = block_channels;
            down_blocks.push(DownEncoderBlock2D::load(
                params,
                &format!("encoder.down_blocks.{i}"),
                input_channel,
                output_channel,
                config.layers_per_block,
                i != channels.len() - 1,
                settings,
            )?);
        }
        Ok(Self {
            conv_in: Conv2d::load(
                params,
                "encoder.conv_in",
                config.in_channels,
                channels[0],
                3,
                1,
                1,
            )?,
            down_blocks,
            mid_block: UNetMidBlock2D::load(
                params,
                "encoder.mid_block",
                last,
                config.mid_block_add_attention,
                settings,
            )?,
            conv_norm_out: GroupNorm::load(
                params,
                "encoder.conv_norm_out",
                settings.groups,
                last,
                settings.eps,
            )?,
            conv_out: Conv2d::load(
                params,
                "encoder.conv_out",
                last,
                2 * config.latent_channels,
                3,
                1,
                1,
            )?,
        })
    }

    pub fn forward(&self, sample: &Tensor) -> Result<Tensor> {
        let mut hidden = self.conv_in.forward(sample)?;
        for block in &self.down_blocks {
            hidden = block.forward(&hidden)?;
        }
        let hidden = self.mid_block.forward(&hidden)?;
        let hidden = self.conv_norm_out.forward(&hidden)?;
        // conv_act is nn.SiLU() whatever act_fn says
        let hidden = Activation::Silu.forward(&hidden)?;
        self.conv_out.forward(&hidden)
    }
}
