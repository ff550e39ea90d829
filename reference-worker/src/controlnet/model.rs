//! diffusers' `ControlNetModel` (`diffusers/models/controlnets/controlnet.py`): the UNet's time
//! embeddings, `conv_in`, down blocks and mid block (the same block code as the UNet's), plus the
//! conditioning embedding added after `conv_in` and one zero-initialised 1×1 convolution per skip
//! connection and for the mid block, whose outputs (scaled) are the residuals the UNet adds.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::embedding::ControlNetConditioningEmbedding;
use crate::config::{ConfigFile, ControlNetConfig};
use crate::error::{Error, Result};
use crate::unet::blocks::{CrossAttnSettings, UNetMidBlock2DCrossAttn};
use crate::unet::embeddings::{TimestepEmbedding, Timesteps};
use crate::unet::layers::{dim, Activation, Conv2d, Params, WeightLoader};
use crate::unet::model::{
    load_down_blocks, DownBlock, DownBlocksSpec, TextTimeEmbedding, DOWN_BLOCK_TYPES,
};
use crate::unet::resnet::{ResnetSettings, TimeEmbeddingNorm};
use crate::weights::ComponentWeights;

/// A ControlNet's output: one residual per UNet skip connection (`down_block_res_samples`) and
/// one for the mid block, already multiplied by the conditioning scale.
#[derive(Debug)]
pub struct ControlNetOutput {
    pub down_block_res_samples: Vec<Tensor>,
    pub mid_block_res_sample: Tensor,
}

impl ControlNetOutput {
    /// `MultiControlNetModel`'s merge: `samples_prev + samples_curr` for each skip connection and
    /// `mid_block_res_sample += mid_sample`, in the order the nets run.
    pub fn merge(self, next: ControlNetOutput) -> Result<Self> {
        let down_block_res_samples = self
            .down_block_res_samples
            .iter()
            .zip(&next.down_block_res_samples)
            .map(|(prev, curr)| prev.f_add(curr))
            .collect::<Result<_, _>>()?;
        let mid_block_res_sample = self
            .mid_block_res_sample
            .f_add(&next.mid_block_res_sample)?;
        Ok(Self {
            down_block_res_samples,
            mid_block_res_sample,
        })
    }
}

/// The conditioning image's channel order (`controlnet_conditioning_channel_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    /// The image's channels are flipped (`torch.flip(controlnet_cond, dims=[1])`) first.
    Bgr,
}

/// An SDXL ControlNet loaded from a diffusers folder.
#[derive(Debug)]
pub struct ControlNetModel {
    config: ControlNetConfig,
    dir: PathBuf,
    kind: Kind,
    channel_order: ChannelOrder,
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TextTimeEmbedding>,
    controlnet_cond_embedding: ControlNetConditioningEmbedding,
    down_blocks: Vec<DownBlock>,
    controlnet_down_blocks: Vec<Conv2d>,
    mid_block: UNetMidBlock2DCrossAttn,
    controlnet_mid_block: Conv2d,
}

impl ControlNetModel {
    /// Loads `dir/config.json` and its safetensors weights converted to `kind` (diffusers'
    /// `ControlNetModel.from_pretrained(dir, torch_dtype=kind)`). A path that is not a folder,
    /// a folder of another class (a UNet), or weights that do not fit the config are errors
    /// naming the file and the key or tensor.
    pub fn load(dir: &Path, kind: Kind) -> Result<Self> {
        if !dir.is_dir() {
            let found = if dir.is_file() {
                "a file (a single-file checkpoint or a LoRA?), not a folder".to_owned()
            } else {
                "no such folder".to_owned()
            };
            return Err(Error::NotAModelFolder {
                path: dir.to_owned(),
                expected: "a diffusers ControlNetModel folder (config.json + \
                           diffusion_pytorch_model.safetensors)",
                found,
            });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            let found = if dir.join("adapter_config.json").is_file() {
                "a folder with adapter_config.json (a PEFT LoRA?) and no config.json"
            } else if dir.join("model_index.json").is_file() {
                "a pipeline folder (model_index.json), not one model's"
            } else {
                "a folder without config.json"
            };
            return Err(Error::NotAModelFolder {
                path: dir.to_owned(),
                expected: "a diffusers ControlNetModel folder (config.json + \
                           diffusion_pytorch_model.safetensors)",
                found: found.to_owned(),
            });
        }
        let file = ConfigFile::read(&config_path)?;
        let config = ControlNetConfig::from_file(&file)?;
        let plan = Plan::new(&file, &config)?;
        let weights = ComponentWeights::open_dir(dir)?;
        let loader = WeightLoader::new(&weights, kind, &config_path);
        let model = Self::build(&loader.root(), config, &plan, dir, kind)?;
        loader.finish()?;
        Ok(model)
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// How much smaller than the conditioning image the latents are: the conditioning
    /// embedding halves the image once per stride-2 convolution (×8 for SDXL's VAE).
    pub fn conditioning_downsampling(&self) -> i64 {
        1 << self.controlnet_cond_embedding.downsampling_steps()
    }

    fn build(
        p: &Params,
        config: ControlNetConfig,
        plan: &Plan,
        dir: &Path,
        kind: Kind,
    ) -> Result<Self> {
        let c = &config;
        let boc = &c.block_out_channels;
        let blocks = boc.len();
        let conv_in = Conv2d::load(&p.sub("conv_in"), c.in_channels, boc[0], 3, 1, 1)?;

        let time_embed_dim = boc[0] * 4;
        let time_proj = Timesteps::new(dim(boc[0]), c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::load(
            &p.sub("time_embedding"),
            boc[0],
            time_embed_dim,
            plan.act,
            None,
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
        let controlnet_cond_embedding = ControlNetConditioningEmbedding::load(
            &p.sub("controlnet_cond_embedding"),
            boc[0],
            c.conditioning_channels,
            &c.conditioning_embedding_out_channels,
        )?;

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
        let layers_per_block = vec![c.layers_per_block; blocks];
        let cross_attention_dim = vec![c.cross_attention_dim; blocks];
        let down_blocks = load_down_blocks(
            p,
            &DownBlocksSpec {
                block_types: &plan.down_block_types,
                block_out_channels: boc,
                layers_per_block: &layers_per_block,
                transformer_layers_per_block: &c.transformer_layers_per_block,
                cross_attention_dim: &cross_attention_dim,
                heads,
                only_cross_attention: &c.only_cross_attention,
                downsample_padding: c.downsample_padding,
                use_linear_projection: c.use_linear_projection,
            },
            |input_channel, output_channel| resnet(input_channel, output_channel, 1.0),
        )?;

        // One 1×1 convolution per skip connection: conv_in's output, each resnet's, each
        // downsampler's.
        let zero_convs = p.sub("controlnet_down_blocks");
        let mut channels = vec![boc[0]];
        for (i, &output_channel) in boc.iter().enumerate() {
            channels.extend(std::iter::repeat_n(output_channel, c.layers_per_block));
            if i != blocks - 1 {
                channels.push(output_channel);
            }
        }
        let controlnet_down_blocks = channels
            .iter()
            .enumerate()
            .map(|(i, &width)| Conv2d::load(&zero_convs.sub(i), width, width, 1, 1, 0))
            .collect::<Result<_>>()?;

        let last = blocks - 1;
        let mid_block = UNetMidBlock2DCrossAttn::load(
            &p.sub("mid_block"),
            c.transformer_layers_per_block[last],
            resnet(boc[last], boc[last], c.mid_block_scale_factor),
            CrossAttnSettings {
                heads: heads[last],
                cross_attention_dim: c.cross_attention_dim,
                use_linear_projection: c.use_linear_projection,
                only_cross_attention: false,
            },
        )?;
        let controlnet_mid_block = Conv2d::load(
            &p.sub("controlnet_mid_block"),
            boc[last],
            boc[last],
            1,
            1,
            0,
        )?;

        Ok(Self {
            dir: dir.to_owned(),
            kind,
            channel_order: plan.channel_order,
            conv_in,
            time_proj,
            time_embedding,
            add_embedding,
            controlnet_cond_embedding,
            down_blocks,
            controlnet_down_blocks,
            mid_block,
            controlnet_mid_block,
            config,
        })
    }

    /// One ControlNet evaluation, as diffusers' `ControlNetModel.forward` with guess mode off and
    /// `added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}`. The inputs are
    /// the UNet's (`sample`, `timestep`, `encoder_hidden_states`, `text_embeds`, `time_ids`) plus
    /// `controlnet_cond`, the prepared conditioning image `[batch, conditioning_channels, height ×
    /// 8, width × 8]` (for a ×8 embedding), and `conditioning_scale`, which multiplies every
    /// residual (a Python float in diffusers: `sample * conditioning_scale`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        text_embeds: &Tensor,
        time_ids: &Tensor,
    ) -> Result<ControlNetOutput> {
        self.check_inputs(sample, encoder_hidden_states, controlnet_cond)?;
        tch::no_grad(|| {
            self.forward_checked(
                sample,
                timestep,
                encoder_hidden_states,
                controlnet_cond,
                conditioning_scale,
                text_embeds,
                time_ids,
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_checked(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
        conditioning_scale: f64,
        text_embeds: &Tensor,
        time_ids: &Tensor,
    ) -> Result<ControlNetOutput> {
        let controlnet_cond = match self.channel_order {
            ChannelOrder::Rgb => controlnet_cond.shallow_clone(),
            ChannelOrder::Bgr => controlnet_cond.f_flip([1])?,
        };

        // 1. time
        let batch = sample.size()[0];
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

        // 2. pre-process
        let sample = self.conv_in.forward(sample)?;
        let controlnet_cond = self.controlnet_cond_embedding.forward(&controlnet_cond)?;
        let mut sample = sample.f_add(&controlnet_cond)?;

        // 3. down
        let mut down_block_res_samples = vec![sample.shallow_clone()];
        for block in &self.down_blocks {
            let (hidden_states, res_samples) =
                block.forward(&sample, &emb, encoder_hidden_states)?;
            sample = hidden_states;
            down_block_res_samples.extend(res_samples);
        }

        // 4. mid
        let sample = self
            .mid_block
            .forward(&sample, &emb, encoder_hidden_states)?;

        // 5. control net blocks, 6. scaling
        let down_block_res_samples = down_block_res_samples
            .iter()
            .zip(&self.controlnet_down_blocks)
            .map(|(res, block)| Ok(block.forward(res)?.f_mul_scalar(conditioning_scale)?))
            .collect::<Result<Vec<_>>>()?;
        let mid_block_res_sample = self
            .controlnet_mid_block
            .forward(&sample)?
            .f_mul_scalar(conditioning_scale)?;
        Ok(ControlNetOutput {
            down_block_res_samples,
            mid_block_res_sample,
        })
    }

    /// The checks the UNet's forward does not already make for the shared inputs: the
    /// conditioning image must reach the latents' size through the embedding, in the model's
    /// dtype.
    fn check_inputs(
        &self,
        sample: &Tensor,
        encoder_hidden_states: &Tensor,
        controlnet_cond: &Tensor,
    ) -> Result<()> {
        let model = format!("ControlNetModel ({})", self.dir.display());
        let bad = |input: &'static str, tensor: &Tensor, message: String| Error::BadInput {
            model: model.clone(),
            input,
            actual: tensor.size(),
            kind: format!("{:?}", tensor.kind()),
            message,
        };
        let s = sample.size();
        if s.len() != 4 || s[1] != dim(self.config.in_channels) || sample.kind() != self.kind {
            return Err(bad(
                "sample",
                sample,
                format!(
                    "expected [batch, {}, height, width] in {:?}",
                    self.config.in_channels, self.kind
                ),
            ));
        }
        let e = encoder_hidden_states.size();
        if e.len() != 3
            || e[0] != s[0]
            || e[2] != dim(self.config.cross_attention_dim)
            || encoder_hidden_states.kind() != self.kind
        {
            return Err(bad(
                "encoder_hidden_states",
                encoder_hidden_states,
                format!(
                    "expected [{}, tokens, {}] in {:?}",
                    s[0], self.config.cross_attention_dim, self.kind
                ),
            ));
        }
        let factor = self.conditioning_downsampling();
        let expected = [
            s[0],
            dim(self.config.conditioning_channels),
            s[2] * factor,
            s[3] * factor,
        ];
        if controlnet_cond.size() != expected || controlnet_cond.kind() != self.kind {
            return Err(bad(
                "controlnet_cond",
                controlnet_cond,
                format!("expected {expected:?} in {:?}", self.kind),
            ));
        }
        Ok(())
    }
}

/// What config.json asks for, checked against what this implementation builds; every refusal
/// names config.json and the key.
struct Plan {
    down_block_types: Vec<&'static str>,
    text_time: bool,
    act: Activation,
    time_embedding_norm: TimeEmbeddingNorm,
    channel_order: ChannelOrder,
}

impl Plan {
    fn new(file: &ConfigFile, c: &ControlNetConfig) -> Result<Self> {
        let unsupported = |key: &str, what: String| {
            file.invalid(
                key,
                format!("{what} is not implemented by the reference worker"),
            )
        };
        let down_block_types = c
            .down_block_types
            .iter()
            .map(|name| {
                let stripped = name.strip_prefix("UNetRes").unwrap_or(name);
                DOWN_BLOCK_TYPES
                    .iter()
                    .copied()
                    .find(|known| *known == stripped)
                    .ok_or_else(|| {
                        unsupported(
                            "down_block_types",
                            format!(
                                "block type `{name}` (implemented: {})",
                                DOWN_BLOCK_TYPES.join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        match c.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            Some(other) => {
                return Err(unsupported(
                    "mid_block_type",
                    format!("`{other}` (implemented: UNetMidBlock2DCrossAttn)"),
                ))
            }
            None => {
                return Err(file.invalid(
                    "mid_block_type",
                    "a ControlNet needs a mid block (diffusers refuses null)",
                ))
            }
        }
        let text_time = match c.addition_embed_type.as_deref() {
            None => false,
            Some("text_time") => true,
            Some(other) => return Err(unsupported("addition_embed_type", format!("`{other}`"))),
        };
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
        if c.encoder_hid_dim.is_some() || c.encoder_hid_dim_type.is_some() {
            return Err(unsupported(
                "encoder_hid_dim",
                "an encoder_hid_proj".to_owned(),
            ));
        }
        if c.global_pool_conditions {
            return Err(unsupported(
                "global_pool_conditions",
                "true (pooled residuals and the guess mode it forces)".to_owned(),
            ));
        }
        let channel_order = match c.controlnet_conditioning_channel_order.as_str() {
            "rgb" => ChannelOrder::Rgb,
            "bgr" => ChannelOrder::Bgr,
            other => {
                return Err(file.invalid(
                    "controlnet_conditioning_channel_order",
                    format!("`{other}` is neither `rgb` nor `bgr`"),
                ))
            }
        };
        let time_embedding_norm = match c.resnet_time_scale_shift.as_str() {
            "default" => TimeEmbeddingNorm::Default,
            "scale_shift" => TimeEmbeddingNorm::ScaleShift,
            other => return Err(unsupported("resnet_time_scale_shift", format!("`{other}`"))),
        };
        let act = Activation::from_name(&c.act_fn).ok_or_else(|| {
            file.invalid(
                "act_fn",
                format!(
                    "unknown activation `{}` (diffusers knows swish, silu, mish, gelu, relu)",
                    c.act_fn
                ),
            )
        })?;
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
        if c.conditioning_embedding_out_channels.contains(&0) {
            return Err(file.invalid("conditioning_embedding_out_channels", "an entry is 0"));
        }
        Ok(Self {
            down_block_types,
            text_time,
            act,
            time_embedding_norm,
            channel_order,
        })
    }
}
