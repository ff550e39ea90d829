//! diffusers' `UNet2DConditionModel` (`diffusers/models/unets/unet_2d_condition.py`), built from
//! `unet/config.json` and run with SDXL's `added_cond_kwargs` (`text_embeds`, `time_ids`).

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::blocks::{
    CrossAttnDownBlock2D, CrossAttnSettings, CrossAttnUpBlock2D, DownBlock2D,
    UNetMidBlock2DCrossAttn, UpBlock2D, UpChannels,
};
use super::embeddings::{TimestepEmbedding, Timesteps};
use super::layers::{dim, Activation, Conv2d, GroupNorm, Params, WeightLoader};
use super::resnet::{ResnetSettings, TimeEmbeddingNorm};
use crate::config::{ConfigFile, UNet2DConditionConfig};
use crate::controlnet::ControlNetOutput;
use crate::error::{Error, Result};
use crate::lora::LoraTargets;
use crate::weights::ComponentWeights;

/// The down block types this implementation builds (after diffusers strips a `UNetRes` prefix).
pub const DOWN_BLOCK_TYPES: [&str; 2] = ["DownBlock2D", "CrossAttnDownBlock2D"];
/// The up block types this implementation builds.
pub const UP_BLOCK_TYPES: [&str; 2] = ["UpBlock2D", "CrossAttnUpBlock2D"];
/// The mid block types this implementation builds (`mid_block_type: null` means none).
pub const MID_BLOCK_TYPES: [&str; 1] = ["UNetMidBlock2DCrossAttn"];

/// A down block of either type; the ControlNet builds the same ones ([`load_down_blocks`]).
#[derive(Debug)]
pub(crate) enum DownBlock {
    Plain(DownBlock2D),
    CrossAttn(CrossAttnDownBlock2D),
}

impl DownBlock {
    /// The block's output and its skip connections (`res_samples`).
    pub(crate) fn forward(
        &self,
        sample: &Tensor,
        emb: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        match self {
            Self::Plain(block) => block.forward(sample, emb),
            Self::CrossAttn(block) => block.forward(sample, emb, encoder_hidden_states),
        }
    }
}

/// What `get_down_block` is called with, per block, by the UNet and by the ControlNet.
pub(crate) struct DownBlocksSpec<'a> {
    pub block_types: &'a [&'static str],
    pub block_out_channels: &'a [usize],
    pub layers_per_block: &'a [usize],
    pub transformer_layers_per_block: &'a [usize],
    pub cross_attention_dim: &'a [usize],
    pub heads: &'a [usize],
    pub only_cross_attention: &'a [bool],
    pub downsample_padding: usize,
    pub use_linear_projection: bool,
}

/// The down blocks below `p.down_blocks`, as `UNet2DConditionModel.__init__` and
/// `ControlNetModel.__init__` both build them; `resnet(in, out)` gives a block's first resnet.
pub(crate) fn load_down_blocks(
    p: &Params,
    spec: &DownBlocksSpec,
    resnet: impl Fn(usize, usize) -> ResnetSettings,
) -> Result<Vec<DownBlock>> {
    let boc = spec.block_out_channels;
    let blocks = boc.len();
    let mut down_blocks = Vec::with_capacity(blocks);
    let mut output_channel = boc[0];
    for (i, block_type) in spec.block_types.iter().enumerate() {
        let input_channel = output_channel;
        output_channel = boc[i];
        let is_final_block = i == blocks - 1;
        let downsample_padding = (!is_final_block).then_some(spec.downsample_padding);
        let p = p.sub("down_blocks").sub(i);
        let settings = resnet(input_channel, output_channel);
        down_blocks.push(match *block_type {
            "DownBlock2D" => DownBlock::Plain(DownBlock2D::load(
                &p,
                spec.layers_per_block[i],
                settings,
                downsample_padding,
            )?),
            _ => DownBlock::CrossAttn(CrossAttnDownBlock2D::load(
                &p,
                spec.layers_per_block[i],
                spec.transformer_layers_per_block[i],
                settings,
                CrossAttnSettings {
                    heads: spec.heads[i],
                    cross_attention_dim: spec.cross_attention_dim[i],
                    use_linear_projection: spec.use_linear_projection,
                    only_cross_attention: spec.only_cross_attention[i],
                },
                downsample_padding,
            )?),
        });
    }
    Ok(down_blocks)
}

#[derive(Debug)]
enum UpBlock {
    Plain(UpBlock2D),
    CrossAttn(CrossAttnUpBlock2D),
}

impl UpBlock {
    fn num_resnets(&self) -> usize {
        match self {
            Self::Plain(block) => block.num_resnets(),
            Self::CrossAttn(block) => block.num_resnets(),
        }
    }
}

/// SDXL's `addition_embed_type: "text_time"`: the pooled text embedding and the sinusoidal
/// embeddings of the micro-conditioning `time_ids`, projected and added to the time embedding.
#[derive(Debug)]
pub(crate) struct TextTimeEmbedding {
    add_time_proj: Timesteps,
    add_embedding: TimestepEmbedding,
    pub(crate) addition_time_embed_dim: i64,
    pub(crate) projection_input_dim: i64,
}

impl TextTimeEmbedding {
    /// `add_time_proj` and `add_embedding` below `p`; `add_embedding`'s activation is the
    /// default "silu", not `act_fn`, in the UNet and in the ControlNet.
    pub(crate) fn load(
        p: &Params,
        addition_time_embed_dim: usize,
        projection_input_dim: usize,
        time_embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        Ok(Self {
            add_time_proj: Timesteps::new(
                dim(addition_time_embed_dim),
                flip_sin_to_cos,
                freq_shift,
            ),
            add_embedding: TimestepEmbedding::load(
                &p.sub("add_embedding"),
                projection_input_dim,
                time_embed_dim,
                Activation::Silu,
                None,
            )?,
            addition_time_embed_dim: dim(addition_time_embed_dim),
            projection_input_dim: dim(projection_input_dim),
        })
    }

    /// `aug_emb`: `time_ids` flattened through `add_time_proj`, reshaped per sample, after
    /// `text_embeds`, converted to `kind` (the time embedding's), through `add_embedding`.
    pub(crate) fn forward(
        &self,
        text_embeds: &Tensor,
        time_ids: &Tensor,
        kind: Kind,
    ) -> Result<Tensor> {
        let time_embeds = self.add_time_proj.forward(&time_ids.f_flatten(0, -1)?)?;
        let time_embeds = time_embeds.f_reshape([text_embeds.size()[0], -1])?;
        let add_embeds = Tensor::f_cat(&[text_embeds, &time_embeds], -1)?.f_to_kind(kind)?;
        self.add_embedding.forward(&add_embeds)
    }
}

/// The SDXL UNet: `forward` gives the model output (noise prediction) for a latent batch.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    config: UNet2DConditionConfig,
    dir: PathBuf,
    /// The dtype of the weights and of the computation (float32 for now).
    kind: Kind,
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TextTimeEmbedding>,
    time_embed_act: Option<Activation>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<UNetMidBlock2DCrossAttn>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_act: Activation,
    conv_out: Conv2d,
    num_upsamplers: u32,
    /// The `encoder_hidden_states` width every cross-attention takes.
    cross_attention_dims: Vec<usize>,
    /// Every `Linear` and `Conv2d`, by diffusers' module name.
    lora_targets: LoraTargets,
    /// config.json's `layers_per_block` when it is one number (not a list).
    scalar_layers_per_block: Option<usize>,
}

impl UNet2DConditionModel {
    /// Loads the UNet of a diffusers `unet/` folder: `config.json` and its safetensors weights,
    /// as float32 (diffusers' `from_pretrained(..., torch_dtype=torch.float32)`).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_kind(dir, Kind::Float)
    }

    /// Like [`Self::load`] with the weights converted to `kind` (diffusers' `torch_dtype`); the
    /// inputs `forward` takes must then be of that kind too.
    pub fn load_with_kind(dir: &Path, kind: Kind) -> Result<Self> {
        let config_path = dir.join("config.json");
        let file = ConfigFile::read(&config_path)?;
        let config = UNet2DConditionConfig::from_file(&file)?;
        let plan = Plan::new(&file, &config)?;
        let weights = ComponentWeights::open_dir(dir)?;
        let loader = WeightLoader::new(&weights, kind, &config_path);
        let mut model = Self::build(&loader.root(), config, &plan, dir, kind)?;
        model.lora_targets = loader.finish()?;
        model.scalar_layers_per_block = file
            .raw("layers_per_block")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| usize::try_from(n).ok());
        Ok(model)
    }

    /// The layers a LoRA may adapt (every `Linear` and `Conv2d`), by diffusers' module name.
    pub fn lora_targets(&self) -> &LoraTargets {
        &self.lora_targets
    }

    /// config.json's `layers_per_block` when it is one number, as diffusers' mapping of SGM
    /// block names needs it.
    pub fn scalar_layers_per_block(&self) -> Option<usize> {
        self.scalar_layers_per_block
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// The dtype of the weights and of the computation.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn build(
        p: &Params,
        config: UNet2DConditionConfig,
        plan: &Plan,
        dir: &Path,
        kind: Kind,
    ) -> Result<Self> {
        let c = &config;
        let boc = &c.block_out_channels;
        let blocks = boc.len();
        let conv_in_kernel = c.conv_in_kernel;
        let conv_in = Conv2d::load(
            &p.sub("conv_in"),
            c.in_channels,
            boc[0],
            conv_in_kernel,
            1,
            conv_in_kernel.saturating_sub(1) / 2,
        )?;

        // time_embedding_type "positional"
        let time_embed_dim = c.time_embedding_dim.unwrap_or(boc[0] * 4);
        let time_proj = Timesteps::new(dim(boc[0]), c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::load(
            &p.sub("time_embedding"),
            boc[0],
            time_embed_dim,
            plan.act,
            plan.timestep_post_act,
        )?;

        let add_embedding = match (
            c.addition_time_embed_dim,
            c.projection_class_embeddings_input_dim,
        ) {
            (Some(addition_time_embed_dim), Some(projection_input_dim)) if plan.text_time => {
                Some(TextTimeEmbedding::load(
                    p,
                    addition_time_embed_dim,
                    projection_input_dim,
                    time_embed_dim,
                    c.flip_sin_to_cos,
                    c.freq_shift,
                )?)
            }
            _ => None,
        };

        let resnet =
            |in_channels: usize, out_channels: usize, output_scale_factor: f64| ResnetSettings {
                in_channels,
                out_channels,
                temb_channels: time_embed_dim,
                groups: c.norm_num_groups,
                eps: c.norm_eps,
                act: plan.act,
                time_embedding_norm: plan.time_embedding_norm,
                output_scale_factor,
            };
        let heads = c.heads_per_block();
        let cross = |i: usize, only_cross_attention: bool| CrossAttnSettings {
            heads: heads[i],
            cross_attention_dim: c.cross_attention_dim[i],
            use_linear_projection: c.use_linear_projection,
            only_cross_attention,
        };
        let mut cross_attention_dims: Vec<usize> = plan
            .down_block_types
            .iter()
            .zip(&c.cross_attention_dim)
            .filter(|(block_type, _)| **block_type != "DownBlock2D")
            .map(|(_, &width)| width)
            .collect();

        let down_blocks = load_down_blocks(
            p,
            &DownBlocksSpec {
                block_types: &plan.down_block_types,
                block_out_channels: boc,
                layers_per_block: &c.layers_per_block,
                transformer_layers_per_block: &c.transformer_layers_per_block,
                cross_attention_dim: &c.cross_attention_dim,
                heads,
                only_cross_attention: &c.only_cross_attention,
                downsample_padding: c.downsample_padding,
                use_linear_projection: c.use_linear_projection,
            },
            |input_channel, output_channel| resnet(input_channel, output_channel, 1.0),
        )?;

        let last = blocks - 1;
        let mid_block = match plan.mid_block {
            false => None,
            true => {
                cross_attention_dims.push(c.cross_attention_dim[last]);
                Some(UNetMidBlock2DCrossAttn::load(
                    &p.sub("mid_block"),
                    c.transformer_layers_per_block[last],
                    resnet(boc[last], boc[last], c.mid_block_scale_factor),
                    // UNetMidBlock2DCrossAttn takes no only_cross_attention
                    cross(last, false),
                )?)
            }
        };

        let mut up_blocks = Vec::with_capacity(blocks);
        let mut num_upsamplers = 0;
        let mut output_channel = boc[last];
        for (i, block_type) in plan.up_block_types.iter().enumerate() {
            // the reversed per-block lists
            let r = last - i;
            let is_final_block = i == last;
            let prev_output_channel = output_channel;
            output_channel = boc[r];
            let input_channel = boc[last - (i + 1).min(last)];
            let add_upsample = !is_final_block;
            if add_upsample {
                num_upsamplers += 1;
            }
            let channels = UpChannels {
                in_channels: input_channel,
                out_channels: output_channel,
                prev_output_channel,
            };
            let num_layers = c.layers_per_block[r] + 1;
            let p = p.sub("up_blocks").sub(i);
            let settings = resnet(0, output_channel, 1.0);
            up_blocks.push(match *block_type {
                "UpBlock2D" => UpBlock::Plain(UpBlock2D::load(
                    &p,
                    num_layers,
                    channels,
                    settings,
                    add_upsample,
                )?),
                _ => {
                    cross_attention_dims.push(c.cross_attention_dim[r]);
                    UpBlock::CrossAttn(CrossAttnUpBlock2D::load(
                        &p,
                        num_layers,
                        c.transformer_layers_per_block[r],
                        channels,
                        settings,
                        cross(r, c.only_cross_attention[r]),
                        add_upsample,
                    )?)
                }
            });
        }

        let conv_norm_out = GroupNorm::load(
            &p.sub("conv_norm_out"),
            c.norm_num_groups,
            boc[0],
            c.norm_eps,
            "norm_num_groups",
        )?;
        let conv_out_kernel = c.conv_out_kernel;
        let conv_out = Conv2d::load(
            &p.sub("conv_out"),
            boc[0],
            c.out_channels,
            conv_out_kernel,
            1,
            conv_out_kernel.saturating_sub(1) / 2,
        )?;

        cross_attention_dims.dedup();
        Ok(Self {
            dir: dir.to_owned(),
            kind,
            conv_in,
            time_proj,
            time_embedding,
            add_embedding,
            time_embed_act: plan.time_embed_act,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_act: plan.act,
            conv_out,
            num_upsamplers,
            cross_attention_dims,
            config,
            lora_targets: LoraTargets::default(),
            scalar_layers_per_block: None,
        })
    }

    /// One UNet evaluation, as diffusers' `UNet2DConditionModel.forward` with
    /// `added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}`:
    ///
    /// - `sample`: `[batch, in_channels, height, width]` latents, in the model's dtype;
    /// - `timestep`: a 0-d tensor or a 1-d tensor of 1 or `batch` timesteps (any numeric dtype);
    /// - `encoder_hidden_states`: `[batch, tokens, cross_attention_dim]`;
    /// - `text_embeds`: `[batch, width]` pooled text embeddings;
    /// - `time_ids`: `batch * n` micro-conditioning values (SDXL: `[batch, 6]`), where
    ///   `width + n * addition_time_embed_dim == projection_class_embeddings_input_dim`.
    ///
    /// `text_embeds` and `time_ids` are ignored by a UNet without `addition_embed_type`, as
    /// diffusers ignores `added_cond_kwargs` there.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        text_embeds: &Tensor,
        time_ids: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_control(
            sample,
            timestep,
            encoder_hidden_states,
            text_embeds,
            time_ids,
            None,
        )
    }

    /// [`Self::forward`] with a ControlNet's residuals, as diffusers'
    /// `down_block_additional_residuals` / `mid_block_additional_residual`: each is added to the
    /// matching skip connection after the down blocks, the mid residual to the mid block's
    /// output. Their number and shapes must be the skip connections' (an error otherwise, where
    /// diffusers' `zip` would drop the extra ones).
    pub fn forward_with_control(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        text_embeds: &Tensor,
        time_ids: &Tensor,
        control: Option<&ControlNetOutput>,
    ) -> Result<Tensor> {
        self.check_inputs(
            sample,
            timestep,
            encoder_hidden_states,
            text_embeds,
            time_ids,
        )?;
        tch::no_grad(|| {
            self.forward_checked(
                sample,
                timestep,
                encoder_hidden_states,
                text_embeds,
                time_ids,
                control,
            )
        })
    }

    fn forward_checked(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        text_embeds: &Tensor,
        time_ids: &Tensor,
        control: Option<&ControlNetOutput>,
    ) -> Result<Tensor> {
        let size = sample.size();
        let batch = size[0];
        // Inputs that are not a multiple of the overall upsampling factor make each upsampler
        // target the size of the matching skip connection instead of scaling by 2.
        let default_overall_up_factor = 2_i64.pow(self.num_upsamplers);
        let forward_upsample_size = size[2..].iter().any(|d| d % default_overall_up_factor != 0);

        // 0. center input if necessary
        let mut sample = if self.config.center_input_sample {
            sample.f_mul_scalar(2)?.f_sub_scalar(1.0)?
        } else {
            sample.shallow_clone()
        };

        // 1. time
        let timesteps = if timestep.dim() == 0 {
            timestep.f_unsqueeze(0)?
        } else {
            timestep.shallow_clone()
        };
        let timesteps = timesteps.f_expand([batch], false)?;
        let t_emb = self
            .time_proj
            .forward(&timesteps)?
            .f_to_kind(sample.kind())?;
        let mut emb = self.time_embedding.forward(&t_emb)?;

        if let Some(add) = &self.add_embedding {
            let aug_emb = add.forward(text_embeds, time_ids, emb.kind())?;
            emb = emb.f_add(&aug_emb)?;
        }
        if let Some(act) = self.time_embed_act {
            emb = act.forward(&emb)?;
        }

        // 2. pre-process
        sample = self.conv_in.forward(&sample)?;

        // 3. down
        let mut down_block_res_samples = vec![sample.shallow_clone()];
        for block in &self.down_blocks {
            let (hidden_states, res_samples) =
                block.forward(&sample, &emb, encoder_hidden_states)?;
            sample = hidden_states;
            down_block_res_samples.extend(res_samples);
        }
        if let Some(control) = control {
            self.check_residuals(&down_block_res_samples, &sample, control)?;
            // down_block_res_sample + down_block_additional_residual, skip by skip
            down_block_res_samples = down_block_res_samples
                .iter()
                .zip(&control.down_block_res_samples)
                .map(|(sample, residual)| sample.f_add(residual))
                .collect::<Result<_, _>>()?;
        }

        // 4. mid
        if let Some(mid_block) = &self.mid_block {
            sample = mid_block.forward(&sample, &emb, encoder_hidden_states)?;
        }
        if let Some(control) = control {
            sample = sample.f_add(&control.mid_block_res_sample)?;
        }

        // 5. up
        let mut upsample_size = None;
        for (i, block) in self.up_blocks.iter().enumerate() {
            let is_final_block = i == self.up_blocks.len() - 1;
            let split = down_block_res_samples.len() - block.num_resnets();
            let res_samples = down_block_res_samples.split_off(split);
            if !is_final_block && forward_upsample_size {
                let last = down_block_res_samples
                    .last()
                    .expect("the down path leaves a skip connection for every upsampler");
                let (_, _, height, width) = last.size4()?;
                upsample_size = Some([height, width]);
            }
            sample = match block {
                UpBlock::Plain(block) => {
                    block.forward(&sample, res_samples, &emb, upsample_size)?
                }
                UpBlock::CrossAttn(block) => block.forward(
                    &sample,
                    res_samples,
                    &emb,
                    encoder_hidden_states,
                    upsample_size,
                )?,
            };
        }

        // 6. post-process
        let sample = self.conv_norm_out.forward(&sample)?;
        let sample = self.conv_act.forward(&sample)?;
        self.conv_out.forward(&sample)
    }

    /// ControlNet residuals must match the skip connections (and the mid block's output, which
    /// has `sample`'s shape: the mid block keeps the last down block's size) one for one.
    fn check_residuals(
        &self,
        skips: &[Tensor],
        sample: &Tensor,
        control: &ControlNetOutput,
    ) -> Result<()> {
        let model = format!("UNet2DConditionModel ({})", self.dir.display());
        let residuals = &control.down_block_res_samples;
        let shapes = |tensors: &[Tensor]| tensors.iter().map(Tensor::size).collect::<Vec<_>>();
        if residuals.len() != skips.len() {
            return Err(Error::BadInput {
                model,
                input: "down_block_additional_residuals",
                actual: vec![residuals.len() as i64],
                kind: format!("{:?}", shapes(residuals)),
                message: format!(
                    "{} ControlNet residuals for {} skip connections {:?}",
                    residuals.len(),
                    skips.len(),
                    shapes(skips)
                ),
            });
        }
        for (i, (skip, residual)) in skips.iter().zip(residuals).enumerate() {
            if skip.size() != residual.size() || residual.kind() != self.kind {
                return Err(Error::BadInput {
                    model,
                    input: "down_block_additional_residuals",
                    actual: residual.size(),
                    kind: format!("{:?}", residual.kind()),
                    message: format!(
                        "residual {i} does not fit skip connection {i} {:?} ({:?})",
                        skip.size(),
                        self.kind
                    ),
                });
            }
        }
        let mid = &control.mid_block_res_sample;
        if mid.size() != sample.size() || mid.kind() != self.kind {
            return Err(Error::BadInput {
                model,
                input: "mid_block_additional_residual",
                actual: mid.size(),
                kind: format!("{:?}", mid.kind()),
                message: format!(
                    "expected the down path's output shape {:?} ({:?})",
                    sample.size(),
                    self.kind
                ),
            });
        }
        Ok(())
    }

    /// Rejects inputs whose shapes the model cannot take, with a message naming the input.
    fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        text_embeds: &Tensor,
        time_ids: &Tensor,
    ) -> Result<()> {
        let model = format!("UNet2DConditionModel ({})", self.dir.display());
        let bad = |input: &'static str, tensor: &Tensor, message: String| Error::BadInput {
            model: model.clone(),
            input,
            actual: tensor.size(),
            kind: format!("{:?}", tensor.kind()),
            message,
        };
        let c = &self.config;

        let size = sample.size();
        if size.len() != 4 || size[1] != dim(c.in_channels) || size[2] == 0 || size[3] == 0 {
            return Err(bad(
                "sample",
                sample,
                format!("expected [batch, {}, height, width]", c.in_channels),
            ));
        }
        if sample.kind() != self.kind {
            return Err(bad(
                "sample",
                sample,
                format!("expected dtype {:?}, the model's", self.kind),
            ));
        }
        let batch = size[0];
        if batch == 0 {
            return Err(bad("sample", sample, "the batch is empty".to_owned()));
        }

        let t = timestep.size();
        let timestep_ok = t.is_empty() || (t.len() == 1 && (t[0] == 1 || t[0] == batch));
        if !timestep_ok || !is_real(timestep.kind()) {
            return Err(bad(
                "timestep",
                timestep,
                format!("expected a real 0-d tensor or a 1-d tensor of 1 or {batch} (the batch) timesteps"),
            ));
        }

        let e = encoder_hidden_states.size();
        let widths_ok = self
            .cross_attention_dims
            .iter()
            .all(|&w| e.last() == Some(&dim(w)));
        if e.len() != 3 || e[0] != batch || e[1] == 0 || !widths_ok {
            let widths: Vec<String> = self
                .cross_attention_dims
                .iter()
                .map(usize::to_string)
                .collect();
            return Err(bad(
                "encoder_hidden_states",
                encoder_hidden_states,
                format!("expected [{batch}, tokens, {}]", widths.join(" | ")),
            ));
        }
        if encoder_hidden_states.kind() != self.kind {
            return Err(bad(
                "encoder_hidden_states",
                encoder_hidden_states,
                format!("expected dtype {:?}, the model's", self.kind),
            ));
        }

        let Some(add) = &self.add_embedding else {
            return Ok(());
        };
        let te = text_embeds.size();
        if te.len() != 2 || te[0] != batch || !text_embeds.is_floating_point() {
            return Err(bad(
                "text_embeds",
                text_embeds,
                format!("expected a floating-point [{batch}, width] tensor (addition_embed_type \"text_time\")"),
            ));
        }
        let numel: i64 = time_ids.size().iter().product();
        let ids_per_sample = numel / batch;
        let width = te[1] + ids_per_sample * add.addition_time_embed_dim;
        if numel == 0
            || numel % batch != 0
            || width != add.projection_input_dim
            || !is_real(time_ids.kind())
        {
            return Err(bad(
                "time_ids",
                time_ids,
                format!(
                    "expected {batch} (the batch) × n real values with text_embeds' width {} + n × \
                     addition_time_embed_dim {} = projection_class_embeddings_input_dim {}",
                    te[1], add.addition_time_embed_dim, add.projection_input_dim
                ),
            ));
        }
        Ok(())
    }
}

/// What config.json asks for, checked against what this implementation builds; every refusal
/// names config.json and the key.
struct Plan {
    down_block_types: Vec<&'static str>,
    up_block_types: Vec<&'static str>,
    mid_block: bool,
    text_time: bool,
    act: Activation,
    time_embed_act: Option<Activation>,
    timestep_post_act: Option<Activation>,
    time_embedding_norm: TimeEmbeddingNorm,
}

impl Plan {
    fn new(file: &ConfigFile, c: &UNet2DConditionConfig) -> Result<Self> {
        let unsupported = |key: &str, what: String| {
            file.invalid(
                key,
                format!("{what} is not implemented by the reference worker"),
            )
        };
        let block_type = |key: &str, name: &str, known: &[&'static str]| -> Result<&'static str> {
            let stripped = name.strip_prefix("UNetRes").unwrap_or(name);
            known
                .iter()
                .copied()
                .find(|k| *k == stripped)
                .ok_or_else(|| {
                    unsupported(
                        key,
                        format!("block type `{name}` (implemented: {})", known.join(", ")),
                    )
                })
        };
        let down_block_types = c
            .down_block_types
            .iter()
            .map(|name| block_type("down_block_types", name, &DOWN_BLOCK_TYPES))
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = c
            .up_block_types
            .iter()
            .map(|name| block_type("up_block_types", name, &UP_BLOCK_TYPES))
            .collect::<Result<Vec<_>>>()?;
        let mid_block = match &c.mid_block_type {
            None => false,
            Some(name) => {
                block_type("mid_block_type", name, &MID_BLOCK_TYPES)?;
                true
            }
        };

        if c.num_attention_heads.is_some() {
            return Err(file.invalid(
                "num_attention_heads",
                "must be null: diffusers 0.42.1 refuses it and reads `attention_head_dim` as the \
                 number of heads",
            ));
        }
        if c.time_embedding_type != "positional" {
            return Err(unsupported(
                "time_embedding_type",
                format!("`{}`", c.time_embedding_type),
            ));
        }
        if let Some(class_embed_type) = &c.class_embed_type {
            return Err(unsupported(
                "class_embed_type",
                format!("`{class_embed_type}`"),
            ));
        }
        if c.num_class_embeds.is_some() {
            return Err(unsupported(
                "num_class_embeds",
                "a class embedding".to_owned(),
            ));
        }
        if c.class_embeddings_concat {
            return Err(unsupported("class_embeddings_concat", "true".to_owned()));
        }
        let text_time = match c.addition_embed_type.as_deref() {
            None => false,
            Some("text_time") => true,
            Some(other) => return Err(unsupported("addition_embed_type", format!("`{other}`"))),
        };
        if c.encoder_hid_dim.is_some() {
            return Err(unsupported(
                "encoder_hid_dim",
                "an encoder_hid_proj".to_owned(),
            ));
        }
        if let Some(kind) = &c.encoder_hid_dim_type {
            return Err(unsupported("encoder_hid_dim_type", format!("`{kind}`")));
        }
        if c.time_cond_proj_dim.is_some() {
            return Err(unsupported(
                "time_cond_proj_dim",
                "a timestep condition projection".to_owned(),
            ));
        }
        if c.dual_cross_attention {
            return Err(unsupported("dual_cross_attention", "true".to_owned()));
        }
        if c.attention_type != "default" {
            return Err(unsupported(
                "attention_type",
                format!("`{}`", c.attention_type),
            ));
        }
        if file
            .raw("reverse_transformer_layers_per_block")
            .is_some_and(|value| !value.is_null())
        {
            return Err(unsupported(
                "reverse_transformer_layers_per_block",
                "an asymmetric UNet".to_owned(),
            ));
        }
        let time_embedding_norm = match c.resnet_time_scale_shift.as_str() {
            "default" => TimeEmbeddingNorm::Default,
            "scale_shift" => TimeEmbeddingNorm::ScaleShift,
            other => return Err(unsupported("resnet_time_scale_shift", format!("`{other}`"))),
        };
        let activation = |key: &str, name: &str| {
            Activation::from_name(name).ok_or_else(|| {
                file.invalid(key, format!("unknown activation `{name}` (diffusers knows swish, silu, mish, gelu, relu)"))
            })
        };
        let optional_activation = |key: &str, name: &Option<String>| {
            name.as_deref().map(|n| activation(key, n)).transpose()
        };

        for (key, values) in [
            ("layers_per_block", &c.layers_per_block),
            (
                "transformer_layers_per_block",
                &c.transformer_layers_per_block,
            ),
            ("attention_head_dim", &c.attention_head_dim),
            ("cross_attention_dim", &c.cross_attention_dim),
        ] {
            if values.len() != c.block_out_channels.len() {
                return Err(file.invalid(
                    key,
                    format!(
                        "has {} entries but there are {} blocks",
                        values.len(),
                        c.block_out_channels.len()
                    ),
                ));
            }
        }
        for (i, (&channels, &heads)) in c
            .block_out_channels
            .iter()
            .zip(c.heads_per_block())
            .enumerate()
        {
            if channels == 0 {
                return Err(file.invalid("block_out_channels", format!("entry {i} is 0")));
            }
            if heads == 0 || heads > channels {
                return Err(file.invalid(
                    "attention_head_dim",
                    format!("entry {i} asks for {heads} heads over {channels} channels (the number of heads, in diffusers' naming)"),
                ));
            }
        }
        for (key, kernel) in [
            ("conv_in_kernel", c.conv_in_kernel),
            ("conv_out_kernel", c.conv_out_kernel),
        ] {
            if kernel == 0 {
                return Err(file.invalid(key, "must be positive"));
            }
        }
        if c.time_embedding_dim == Some(0) {
            return Err(file.invalid("time_embedding_dim", "must be positive"));
        }

        Ok(Self {
            down_block_types,
            up_block_types,
            mid_block,
            text_time,
            act: activation("act_fn", &c.act_fn)?,
            time_embed_act: optional_activation("time_embedding_act_fn", &c.time_embedding_act_fn)?,
            timestep_post_act: optional_activation("timestep_post_act", &c.timestep_post_act)?,
            time_embedding_norm,
        })
    }
}

/// Integer and floating-point dtypes: what timesteps and time ids may be (they are converted to
/// float32 like `timesteps[:, None].float()`).
fn is_real(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Uint8
            | Kind::Int8
            | Kind::Int16
            | Kind::Int
            | Kind::Int64
            | Kind::Half
            | Kind::Float
            | Kind::Double
            | Kind::BFloat16
    )
}
