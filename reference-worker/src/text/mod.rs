//! The text side of SDXL: both CLIP tokenizers and text encoders, and diffusers 0.42.1's
//! `StableDiffusionXLPipeline.encode_prompt` for one prompt.
//!
//! ```text
//! prompt ─ tokenizer   ─ CLIPTextModel               ─ hidden_states[-2] ─┐
//!        └ tokenizer_2 ─ CLIPTextModelWithProjection ─ hidden_states[-2] ─┴ concat(-1) → prompt_embeds
//!                                                    └ text_embeds                    → pooled_prompt_embeds
//! ```
//!
//! Negative side (PROTOCOL B.9), only with classifier-free guidance: no negative prompt and
//! `force_zeros_for_empty_prompt` (model_index.json) → zeros shaped like the positive embeddings;
//! otherwise the negative prompt (an absent one as `""`) is encoded like the positive one.
//!
//! Use:
//! ```no_run
//! # fn main() -> reference_worker::Result<()> {
//! use reference_worker::text::TextEncoders;
//! let encoders = TextEncoders::load(std::path::Path::new("fixtures/models/tiny-sdxl"))?;
//! let guidance_scale = 7.5;
//! let encoded = encoders.encode_prompt("a photo of a cat", None, guidance_scale > 1.0)?;
//! for warning in &encoded.truncation_warnings {
//!     eprintln!("{warning}");
//! }
//! # Ok(()) }
//! ```

mod clip;
mod tokenizer;

pub use clip::{Activation, ClipTextModel, ClipTextOutput};
pub use tokenizer::{ClipTokenizer, TokenizedPrompt};

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::lora::LoraTargets;
use crate::model_dir::{Component, ModelDir};

/// SDXL's embeddings of one prompt (batch of one; the pipeline repeats them per image).
#[derive(Debug)]
pub struct PromptEmbeddings {
    /// `[1, model_max_length, hidden_size_1 + hidden_size_2]`.
    pub prompt_embeds: Tensor,
    /// `[1, projection_dim]` of the encoder with projection.
    pub pooled_prompt_embeds: Tensor,
}

/// What [`TextEncoders::encode_prompt`] returns: diffusers' four tensors, grouped.
#[derive(Debug)]
pub struct EncodedPrompt {
    /// `prompt_embeds`, `pooled_prompt_embeds`.
    pub positive: PromptEmbeddings,
    /// `negative_prompt_embeds`, `negative_pooled_prompt_embeds`; `None` without guidance.
    pub negative: Option<PromptEmbeddings>,
    /// diffusers' warning, once per tokenizer that truncated the (positive) prompt, with its
    /// text; diffusers truncates a negative prompt silently.
    pub truncation_warnings: Vec<String>,
}

/// One tokenizer and the text encoder it feeds, by their component names.
#[derive(Debug)]
struct TextEncoder {
    name: String,
    dir: PathBuf,
    tokenizer: ClipTokenizer,
    model: ClipTextModel,
}

/// The pipeline's text encoders in diffusers' order: `(tokenizer, text_encoder)` when the folder
/// has them (SDXL base), then `(tokenizer_2, text_encoder_2)`.
#[derive(Debug)]
pub struct TextEncoders {
    encoders: Vec<TextEncoder>,
    force_zeros_for_empty_prompt: bool,
}

/// diffusers' SDXL pipelines index hidden states from the penultimate layer: `hidden_states[-2]`
/// without clip skip, `hidden_states[-(clip_skip + 2)]` with it.
const PENULTIMATE: usize = 2;

impl TextEncoders {
    /// Loads the tokenizers and text encoders of the diffusers folder `model_dir` in float32.
    pub fn load(model_dir: &Path) -> Result<Self> {
        Self::load_with_kind(model_dir, Kind::Float)
    }

    /// Like [`Self::load`] with the weights converted to `kind` (diffusers' `torch_dtype`).
    pub fn load_with_kind(model_dir: &Path, kind: Kind) -> Result<Self> {
        let dir = ModelDir::open(model_dir)?;
        let index_path = dir.root.join("model_index.json");
        let component = |name: &str| dir.components().find(|component| component.name == name);
        let mut encoders = Vec::new();
        for (tokenizer_name, encoder_name) in [
            ("tokenizer", "text_encoder"),
            ("tokenizer_2", "text_encoder_2"),
        ] {
            let Some(encoder) = component(encoder_name) else {
                if encoder_name == "text_encoder_2" {
                    return Err(Error::MissingKey {
                        path: index_path,
                        key: encoder_name.to_owned(),
                    });
                }
                continue;
            };
            let tokenizer = component(tokenizer_name).ok_or_else(|| Error::MissingKey {
                path: index_path.clone(),
                key: tokenizer_name.to_owned(),
            })?;
            encoders.push(load_encoder(&index_path, &tokenizer, &encoder, kind)?);
        }

        // diffusers concatenates the encoders' hidden states on the last dimension: their
        // sequence lengths must agree.
        if let Some(first) = encoders.first() {
            let length = first.tokenizer.model_max_length();
            if let Some(other) = encoders
                .iter()
                .find(|encoder| encoder.tokenizer.model_max_length() != length)
            {
                return Err(Error::InvalidValue {
                    path: model_dir.join(&other.name).join("tokenizer_config.json"),
                    key: "model_max_length".to_owned(),
                    message: format!(
                        "{} differs from {length} in {}'s tokenizer_config.json; the two encoders' \
                         hidden states cannot be concatenated",
                        other.tokenizer.model_max_length(),
                        first.name
                    ),
                });
            }
        }
        if !encoders
            .iter()
            .any(|encoder| encoder.model.has_projection())
        {
            return Err(Error::InvalidValue {
                path: index_path,
                key: "text_encoder_2".to_owned(),
                message: "SDXL needs a CLIPTextModelWithProjection for the pooled embeddings"
                    .to_owned(),
            });
        }
        Ok(Self {
            encoders,
            force_zeros_for_empty_prompt: dir.index.force_zeros_for_empty_prompt,
        })
    }

    /// `model_index.json`'s `force_zeros_for_empty_prompt`.
    pub fn force_zeros_for_empty_prompt(&self) -> bool {
        self.force_zeros_for_empty_prompt
    }

    /// The tokenizers in diffusers' order.
    pub fn tokenizers(&self) -> impl Iterator<Item = &ClipTokenizer> {
        self.encoders.iter().map(|encoder| &encoder.tokenizer)
    }

    /// The text encoders in diffusers' order.
    pub fn models(&self) -> impl Iterator<Item = &ClipTextModel> {
        self.encoders.iter().map(|encoder| &encoder.model)
    }

    /// The LoRA-able layers of the text encoder component `name` (`text_encoder`,
    /// `text_encoder_2`), if the pipeline has it.
    pub fn lora_targets(&self, name: &str) -> Option<&LoraTargets> {
        self.encoders
            .iter()
            .find(|encoder| encoder.name == name)
            .map(|encoder| encoder.model.lora_targets())
    }

    /// diffusers' `pipe.encode_prompt(prompt, num_images_per_prompt=1,
    /// do_classifier_free_guidance=..., negative_prompt=...)` for one prompt (`prompt_2` and
    /// `negative_prompt_2` default to the same text, as diffusers does). The caller decides
    /// `do_classifier_free_guidance` as the pipeline does: `guidance_scale > 1` and the UNet has
    /// no `time_cond_proj_dim`.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        negative_prompt: Option<&str>,
        do_classifier_free_guidance: bool,
    ) -> Result<EncodedPrompt> {
        let (positive, truncation_warnings) = self.encode(prompt, PENULTIMATE)?;
        let negative = if !do_classifier_free_guidance {
            None
        } else if negative_prompt.is_none() && self.force_zeros_for_empty_prompt {
            Some(PromptEmbeddings {
                prompt_embeds: positive.prompt_embeds.zeros_like(),
                pooled_prompt_embeds: positive.pooled_prompt_embeds.zeros_like(),
            })
        } else {
            // diffusers: `negative_prompt = negative_prompt or ""`, and the negative side always
            // reads `hidden_states[-2]`, even with clip skip.
            let (negative, _silently_truncated) =
                self.encode(negative_prompt.unwrap_or(""), PENULTIMATE)?;
            Some(negative)
        };
        Ok(EncodedPrompt {
            positive,
            negative,
            truncation_warnings,
        })
    }

    /// Tokenizes and encodes `prompt` with every encoder, concatenating
    /// `hidden_states[-layer_from_end]`; the pooled embeddings come from the first encoder with a
    /// projection (diffusers: the first output whose `[0]` is two-dimensional).
    fn encode(
        &self,
        prompt: &str,
        layer_from_end: usize,
    ) -> Result<(PromptEmbeddings, Vec<String>)> {
        let mut embeds = Vec::with_capacity(self.encoders.len());
        let mut pooled = None;
        let mut warnings = Vec::new();
        for encoder in &self.encoders {
            let tokenized = encoder.tokenizer.tokenize(prompt)?;
            if let Some(removed) = &tokenized.removed_text {
                warnings.push(format!(
                    "The following part of your input was truncated because CLIP can only handle \
                     sequences up to {} tokens: {removed:?}",
                    encoder.tokenizer.model_max_length()
                ));
            }
            let length = to_i64(tokenized.input_ids.len());
            let input_ids = Tensor::from_slice(&tokenized.input_ids).reshape([1, length]);
            let mut output = encoder.model.forward(&input_ids)?;
            if pooled.is_none() {
                pooled = output.text_embeds.take();
            }
            let count = output.hidden_states.len();
            let index = count
                .checked_sub(layer_from_end)
                .ok_or_else(|| Error::InvalidValue {
                    path: encoder.dir.join("config.json"),
                    key: "num_hidden_layers".to_owned(),
                    message: format!(
                        "hidden_states[-{layer_from_end}] does not exist: the encoder has {count}"
                    ),
                })?;
            embeds.push(output.hidden_states.swap_remove(index));
        }
        let pooled_prompt_embeds =
            pooled.expect("TextEncoders::load checks that one encoder has a projection");
        Ok((
            PromptEmbeddings {
                prompt_embeds: Tensor::cat(&embeds, -1),
                pooled_prompt_embeds,
            },
            warnings,
        ))
    }
}

fn load_encoder(
    index_path: &Path,
    tokenizer: &Component,
    encoder: &Component,
    kind: Kind,
) -> Result<TextEncoder> {
    if !matches!(
        tokenizer.class.as_str(),
        "CLIPTokenizer" | "CLIPTokenizerFast"
    ) {
        return Err(Error::InvalidValue {
            path: index_path.to_owned(),
            key: tokenizer.name.clone(),
            message: format!("tokenizer class `{}` is not supported", tokenizer.class),
        });
    }
    let with_projection = match encoder.class.as_str() {
        "CLIPTextModel" => false,
        "CLIPTextModelWithProjection" => true,
        other => {
            return Err(Error::InvalidValue {
                path: index_path.to_owned(),
                key: encoder.name.clone(),
                message: format!("text encoder class `{other}` is not supported"),
            })
        }
    };
    let clip_tokenizer = ClipTokenizer::load(&tokenizer.dir)?;
    let model = ClipTextModel::load(&encoder.dir, with_projection, kind)?;
    let max_positions = model.config().max_position_embeddings;
    if clip_tokenizer.model_max_length() > max_positions {
        return Err(Error::InvalidValue {
            path: tokenizer.dir.join("tokenizer_config.json"),
            key: "model_max_length".to_owned(),
            message: format!(
                "{} is more than the max_position_embeddings {max_positions} of {}",
                clip_tokenizer.model_max_length(),
                encoder.dir.join("config.json").display()
            ),
        });
    }
    Ok(TextEncoder {
        name: encoder.name.clone(),
        dir: encoder.dir.clone(),
        tokenizer: clip_tokenizer,
        model,
    })
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
