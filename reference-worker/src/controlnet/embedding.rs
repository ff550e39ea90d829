//! diffusers' `ControlNetConditioningEmbedding`: the small convolutional encoder that brings the
//! conditioning image down to the latents' size and the first block's width.

use tch::Tensor;

use crate::error::Result;
use crate::unet::layers::{Conv2d, Params};

/// `conv_in` (3×3), then per step a 3×3 convolution and a stride-2 3×3 convolution, each followed
/// by SiLU, then `conv_out` (3×3) to `conditioning_embedding_channels`.
#[derive(Debug)]
pub struct ControlNetConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ControlNetConditioningEmbedding {
    /// `block_out_channels` has at least one entry (checked by the caller against config.json).
    pub(crate) fn load(
        p: &Params,
        conditioning_embedding_channels: usize,
        conditioning_channels: usize,
        block_out_channels: &[usize],
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(2 * block_out_channels.len());
        for (i, pair) in block_out_channels.windows(2).enumerate() {
            let (channel_in, channel_out) = (pair[0], pair[1]);
            let b = p.sub("blocks");
            blocks.push(Conv2d::load(
                &b.sub(2 * i),
                channel_in,
                channel_in,
                3,
                1,
                1,
            )?);
            blocks.push(Conv2d::load(
                &b.sub(2 * i + 1),
                channel_in,
                channel_out,
                3,
                2,
                1,
            )?);
        }
        let last = block_out_channels[block_out_channels.len() - 1];
        Ok(Self {
            conv_in: Conv2d::load(
                &p.sub("conv_in"),
                conditioning_channels,
                block_out_channels[0],
                3,
                1,
                1,
            )?,
            blocks,
            conv_out: Conv2d::load(
                &p.sub("conv_out"),
                last,
                conditioning_embedding_channels,
                3,
                1,
                1,
            )?,
        })
    }

    /// How many times the embedding halves the image size.
    pub fn downsampling_steps(&self) -> usize {
        self.blocks.len() / 2
    }

    pub fn forward(&self, conditioning: &Tensor) -> Result<Tensor> {
        let mut embedding = self.conv_in.forward(conditioning)?.f_silu()?;
        for block in &self.blocks {
            embedding = block.forward(&embedding)?.f_silu()?;
        }
        self.conv_out.forward(&embedding)
    }
}
