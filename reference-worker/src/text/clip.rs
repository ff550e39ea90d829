//! transformers 5.x `CLIPTextModel` and `CLIPTextModelWithProjection`, with the same torch ops in
//! the same order (fp32 on CPU gives the same bits).
//!
//! Token + position embeddings; pre-LN encoder layers (causal self-attention through
//! `scaled_dot_product_attention` with `is_causal=True` and no mask, which is what transformers'
//! default `sdpa` attention implementation calls for an unpadded causal text model; then an MLP
//! with the config's `hidden_act`); a final layer norm. `hidden_states` are the embeddings followed
//! by every layer's output, before the final layer norm (transformers records them on each
//! `CLIPEncoderLayer`), so SDXL's `hidden_states[-2]` is the penultimate layer's output.
//!
//! The pooled output is the final-normed hidden state at the EOS token, picked as transformers
//! 5.24 does: with the legacy `eos_token_id == 2` the position of the largest id, otherwise the
//! first position holding `eos_token_id`; `CLIPTextModelWithProjection` projects it with
//! `text_projection` (no bias) into `text_embeds`.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::config::ClipTextConfig;
use crate::error::{Error, Result};
use crate::lora::{LayerShape, LoraSlot, LoraTarget, LoraTargets};
use crate::weights::ComponentWeights;

/// transformers' `CLIPTextConfig.eos_token_id` default, for a config without the key.
const DEFAULT_EOS_TOKEN_ID: usize = 49407;

/// transformers' `ACT2FN` entries a CLIP text config can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: `nn.functional.gelu` (exact erf form).
    Gelu,
    /// `quick_gelu`: `x * sigmoid(1.702 * x)`.
    QuickGelu,
    /// `gelu_pytorch_tanh`: `nn.functional.gelu(approximate="tanh")`.
    GeluTanh,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Self::Gelu => x.gelu("none"),
            Self::QuickGelu => x * (x * 1.702).sigmoid(),
            Self::GeluTanh => x.gelu("tanh"),
        }
    }
}

/// `nn.Linear`, with peft's unfused LoRA branches when a LoRA adapts it.
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: LoraSlot,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let result = x.f_linear(&self.weight, self.bias.as_ref())?;
        self.lora.add_branches(result, |down, up| {
            Ok(x.f_linear::<&Tensor>(down, None)?
                .f_linear::<&Tensor>(up, None)?)
        })
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let size = self.weight.size();
        x.layer_norm(&size, Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// What one forward pass returns (transformers' `BaseModelOutputWithPooling` /
/// `CLIPTextModelOutput` with `output_hidden_states=True`).
#[derive(Debug)]
pub struct ClipTextOutput {
    /// `[batch, seq, hidden]`, after the final layer norm.
    pub last_hidden_state: Tensor,
    /// `[batch, hidden]`: `last_hidden_state` at the EOS position.
    pub pooler_output: Tensor,
    /// `num_hidden_layers + 1` tensors `[batch, seq, hidden]`: the embeddings, then each layer's
    /// output (before the final layer norm).
    pub hidden_states: Vec<Tensor>,
    /// `[batch, projection_dim]`: `text_projection(pooler_output)`, for
    /// `CLIPTextModelWithProjection` only.
    pub text_embeds: Option<Tensor>,
}

/// A CLIP text encoder loaded from a transformers folder (`config.json` + safetensors).
#[derive(Debug)]
pub struct ClipTextModel {
    config: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    activation: Activation,
    eos_token_id: i64,
    /// Every `Linear`, by transformers' module name.
    lora_targets: LoraTargets,
}

impl ClipTextModel {
    /// Loads `dir` (a `text_encoder*/` folder) as `CLIPTextModel`, or as
    /// `CLIPTextModelWithProjection` when `with_projection` (diffusers picks the class from
    /// `model_index.json`, not from the config's `architectures`). Weights are converted to `kind`.
    ///
    /// Tensor names may carry transformers 4's `text_model.` prefix or not (transformers 5 saves
    /// `CLIPTextModel` without it); tensors the model does not use (e.g. an old `position_ids`
    /// buffer) are ignored, as `from_pretrained` ignores unexpected keys.
    pub fn load(dir: &Path, with_projection: bool, kind: Kind) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = ClipTextConfig::read(&config_path)?;
        let activation =
            Activation::from_name(&config.hidden_act).ok_or_else(|| Error::InvalidValue {
                path: config_path.clone(),
                key: "hidden_act".to_owned(),
                message: format!(
                    "activation `{}` is not supported (gelu, quick_gelu, gelu_pytorch_tanh)",
                    config.hidden_act
                ),
            })?;
        let projection_dim = if with_projection {
            Some(config.projection_dim.ok_or_else(|| Error::MissingKey {
                path: config_path.clone(),
                key: "projection_dim".to_owned(),
            })?)
        } else {
            None
        };
        let weights = ComponentWeights::open_dir(dir)?;
        let prefix = if weights
            .info("text_model.embeddings.token_embedding.weight")
            .is_some()
        {
            "text_model."
        } else {
            ""
        };

        let hidden = to_i64(config.hidden_size);
        let intermediate = to_i64(config.intermediate_size);
        let tensor = |name: &str, shape: &[i64]| -> Result<Tensor> {
            weights.tensor_shaped(&format!("{prefix}{name}"), shape, kind)
        };
        // LoRA targets go by the module names of transformers 5 at run time:
        // `CLIPTextModelWithProjection` keeps a `text_model` level, `CLIPTextModel` does not
        // (whatever prefix the weights file uses).
        let module_prefix = if with_projection { "text_model." } else { "" };
        let lora_targets = std::cell::RefCell::new(LoraTargets::default());
        let register = |name: String, weight: &Tensor, bias: Option<&Tensor>| -> LoraSlot {
            let size = weight.size();
            let shape = LayerShape::Linear {
                in_features: size[1],
                out_features: size[0],
            };
            let target = LoraTarget::new(shape, weight, bias);
            let slot = target.slot.clone();
            lora_targets.borrow_mut().insert(name, target);
            slot
        };
        let linear = |name: &str, out: i64, input: i64| -> Result<Linear> {
            let weight = tensor(&format!("{name}.weight"), &[out, input])?;
            let bias = tensor(&format!("{name}.bias"), &[out])?;
            Ok(Linear {
                lora: register(format!("{module_prefix}{name}"), &weight, Some(&bias)),
                weight,
                bias: Some(bias),
            })
        };
        let layer_norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: tensor(&format!("{name}.weight"), &[hidden])?,
                bias: tensor(&format!("{name}.bias"), &[hidden])?,
                eps: config.layer_norm_eps,
            })
        };

        let token_embedding = tensor(
            "embeddings.token_embedding.weight",
            &[to_i64(config.vocab_size), hidden],
        )?;
        let position_embedding = tensor(
            "embeddings.position_embedding.weight",
            &[to_i64(config.max_position_embeddings), hidden],
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| {
                let layer = format!("encoder.layers.{index}");
                let layer_norm1 = layer_norm(&format!("{layer}.layer_norm1"))?;
                // in transformers' `named_modules()` order (CLIPAttention defines k, v, q, out),
                // which diffusers' rank dict follows
                let k_proj = linear(&format!("{layer}.self_attn.k_proj"), hidden, hidden)?;
                let v_proj = linear(&format!("{layer}.self_attn.v_proj"), hidden, hidden)?;
                let q_proj = linear(&format!("{layer}.self_attn.q_proj"), hidden, hidden)?;
                let out_proj = linear(&format!("{layer}.self_attn.out_proj"), hidden, hidden)?;
                Ok(EncoderLayer {
                    layer_norm1,
                    q_proj,
                    k_proj,
                    v_proj,
                    out_proj,
                    layer_norm2: layer_norm(&format!("{layer}.layer_norm2"))?,
                    fc1: linear(&format!("{layer}.mlp.fc1"), intermediate, hidden)?,
                    fc2: linear(&format!("{layer}.mlp.fc2"), hidden, intermediate)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = layer_norm("final_layer_norm")?;
        // `text_projection` sits beside `text_model`, never under the prefix.
        let text_projection = projection_dim
            .map(|projection_dim| -> Result<Linear> {
                let weight = weights.tensor_shaped(
                    "text_projection.weight",
                    &[to_i64(projection_dim), hidden],
                    kind,
                )?;
                Ok(Linear {
                    lora: register("text_projection".to_owned(), &weight, None),
                    weight,
                    bias: None,
                })
            })
            .transpose()?;
        let eos_token_id = to_i64(config.eos_token_id.unwrap_or(DEFAULT_EOS_TOKEN_ID));

        Ok(Self {
            config,
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
            text_projection,
            activation,
            eos_token_id,
            lora_targets: lora_targets.into_inner(),
        })
    }

    /// The layers a LoRA may adapt (every `Linear`), by transformers' module name.
    pub fn lora_targets(&self) -> &LoraTargets {
        &self.lora_targets
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Whether this is a `CLIPTextModelWithProjection`.
    pub fn has_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// `model(input_ids, output_hidden_states=True)` for `input_ids` of shape `[batch, seq]`
    /// (any integer kind), `seq <= max_position_embeddings`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<ClipTextOutput> {
        self.forward_with(input_ids, None, None)
    }

    /// The token-embedding table, `[vocab_size, hidden_size]`, in the model's dtype.
    pub fn token_embedding(&self) -> &Tensor {
        &self.token_embedding
    }

    /// [`Self::forward`] with two of transformers' variations:
    ///
    /// - `token_embedding`: a table to look the ids up in instead of the model's own (what
    ///   `resize_token_embeddings` plus textual-inversion rows make of it; a request's textual
    ///   inversions must not change the shared model);
    /// - `attention_mask`: `model(input_ids, attention_mask)` with a `[batch, seq]` 0/1 mask.
    ///   transformers' `create_causal_mask` drops a mask without zeros (SDPA's `is_causal` path, the
    ///   same as no mask); otherwise it builds the boolean `[batch, 1, seq, seq]` mask
    ///   `key <= query && mask[key]` and SDPA runs with it and `is_causal=False`.
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        token_embedding: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let size = input_ids.size();
        let bad_input = |message: String| Error::BadInput {
            model: "CLIPTextModel".to_owned(),
            input: "input_ids",
            actual: size.clone(),
            kind: format!("{:?}", input_ids.kind()),
            message,
        };
        let &[batch, seq_length] = size.as_slice() else {
            return Err(bad_input("expected [batch, sequence]".to_owned()));
        };
        if !matches!(
            input_ids.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(bad_input("expected integer token ids".to_owned()));
        }
        let max_positions = self.position_embedding.size()[0];
        if seq_length > max_positions {
            return Err(bad_input(format!(
                "the sequence is longer than max_position_embeddings {max_positions}"
            )));
        }
        let input_ids = input_ids.to_kind(Kind::Int64);
        let table = token_embedding.unwrap_or(&self.token_embedding);
        let vocab = table.size()[0];
        let largest = input_ids.max().int64_value(&[]);
        if largest >= vocab || input_ids.min().int64_value(&[]) < 0 {
            return Err(bad_input(format!(
                "token id {largest} is outside the token-embedding table of {vocab} rows"
            )));
        }
        let sdpa_mask = match attention_mask {
            Some(mask) => {
                if mask.size() != size {
                    return Err(bad_input(format!(
                        "attention_mask has shape {:?}, expected the ids' shape",
                        mask.size()
                    )));
                }
                let padding = mask.to_kind(Kind::Bool);
                if padding.all().int64_value(&[]) != 0 {
                    None
                } else {
                    // causal_mask_function & padding_mask_function, broadcast as sdpa_mask does.
                    let positions = Tensor::arange(seq_length, (Kind::Int64, input_ids.device()));
                    let causal = positions
                        .view([1, 1, 1, seq_length])
                        .le_tensor(&positions.view([1, 1, seq_length, 1]));
                    let padding = padding.view([batch, 1, 1, seq_length]);
                    Some(
                        causal
                            .logical_and(&padding)
                            .expand([batch, -1, seq_length, seq_length], false),
                    )
                }
            }
            None => None,
        };

        // CLIPTextEmbeddings: `token_embedding(input_ids) + position_embedding(position_ids)`.
        let inputs_embeds = Tensor::embedding(table, &input_ids, -1, false, false);
        let position_ids = Tensor::arange(max_positions, (Kind::Int64, input_ids.device()))
            .expand([1, -1], false)
            .narrow(1, 0, seq_length);
        let position_embeds =
            Tensor::embedding(&self.position_embedding, &position_ids, -1, false, false);
        let mut hidden_states = inputs_embeds + position_embeds;

        let mut all_hidden_states = Vec::with_capacity(self.layers.len() + 1);
        all_hidden_states.push(hidden_states.shallow_clone());
        for layer in &self.layers {
            hidden_states =
                self.encoder_layer(layer, &hidden_states, sdpa_mask.as_ref(), batch, seq_length)?;
            all_hidden_states.push(hidden_states.shallow_clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(&hidden_states);

        let ids = input_ids.to_kind(Kind::Int);
        let eos_positions = if self.eos_token_id == 2 {
            // transformers keeps the pre-#24773 rule for configs with the legacy id: the EOS
            // token is the largest id of each sequence.
            ids.argmax(-1, false)
        } else {
            ids.eq(self.eos_token_id)
                .to_kind(Kind::Int)
                .argmax(-1, false)
        };
        let rows = Tensor::arange(batch, (Kind::Int64, last_hidden_state.device()));
        let pooler_output = last_hidden_state.index(&[Some(rows), Some(eos_positions)]);
        let text_embeds = self
            .text_projection
            .as_ref()
            .map(|projection| projection.forward(&pooler_output))
            .transpose()?;

        Ok(ClipTextOutput {
            last_hidden_state,
            pooler_output,
            hidden_states: all_hidden_states,
            text_embeds,
        })
    }

    fn encoder_layer(
        &self,
        layer: &EncoderLayer,
        hidden_states: &Tensor,
        mask: Option<&Tensor>,
        batch: i64,
        seq_length: i64,
    ) -> Result<Tensor> {
        let residual = hidden_states;
        let normed = layer.layer_norm1.forward(hidden_states);
        let attention = self.self_attention(layer, &normed, mask, batch, seq_length)?;
        let hidden_states = residual + attention;

        let residual = &hidden_states;
        let normed = layer.layer_norm2.forward(&hidden_states);
        let mlp = layer
            .fc2
            .forward(&self.activation.forward(&layer.fc1.forward(&normed)?))?;
        Ok(residual + mlp)
    }

    /// CLIPAttention with transformers' `sdpa_attention_forward`: no mask and `is_causal=True`
    /// (what `create_causal_mask` and the text model's `is_causal` give for unpadded input), or
    /// the boolean mask and `is_causal=False`; `scale = head_dim ** -0.5`.
    fn self_attention(
        &self,
        layer: &EncoderLayer,
        hidden_states: &Tensor,
        mask: Option<&Tensor>,
        batch: i64,
        seq_length: i64,
    ) -> Result<Tensor> {
        let head_dim = to_i64(self.config.hidden_size / self.config.num_attention_heads);
        let heads = |projection: &Linear| -> Result<Tensor> {
            Ok(projection
                .forward(hidden_states)?
                .view([batch, seq_length, -1, head_dim])
                .transpose(1, 2))
        };
        let queries = heads(&layer.q_proj)?;
        let keys = heads(&layer.k_proj)?;
        let values = heads(&layer.v_proj)?;
        let scale = (head_dim as f64).powf(-0.5);
        let attention = Tensor::scaled_dot_product_attention(
            &queries,
            &keys,
            &values,
            mask,
            0.0,
            mask.is_none(),
            Some(scale),
            false,
        );
        let attention = attention
            .reshape([batch, -1, seq_length, head_dim])
            .transpose(1, 2)
            .contiguous()
            .reshape([batch, seq_length, -1])
            .contiguous();
        layer.out_proj.forward(&attention)
    }
}

/// Config sizes are `usize`; tensor shapes are `i64`. A size beyond `i64` cannot be a real model
/// and would already have failed in the shape check.
fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
