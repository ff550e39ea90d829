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
//! A request can change how prompts become embeddings ([`PromptOptions`], issue 6):
//!
//! - **textual inversions** ([`textual_inversion`]): extra tokens and token-embedding rows in both
//!   encoders, for this request only; prompts (positive and negative) go through diffusers'
//!   `maybe_convert_prompt` first;
//! - **`clip_skip`** (diffusers' SDXL semantics): the positive prompt reads
//!   `hidden_states[-(clip_skip + 2)]` of both encoders instead of `hidden_states[-2]`; the negative
//!   prompt and the pooled embeddings are unaffected; `clip_skip: 0` is the default;
//! - **`prompt_attention`**: `none` (diffusers' own encoding), `a1111` ([`a1111`]) or `compel`
//!   ([`compel`]); both weightings read the same hidden state as clip skip selects, and apply to
//!   the negative prompt too (an absent negative prompt stays diffusers' zeros).
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

pub mod a1111;
mod clip;
pub mod compel;
pub mod compel_syntax;
pub mod textual_inversion;
mod tokenizer;

pub use clip::{Activation, ClipTextModel, ClipTextOutput};
pub use textual_inversion::TextualInversion;
pub use tokenizer::{ClipTokenizer, TokenizedPrompt};

use std::borrow::Cow;
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
        self.encode_prompt_with(
            prompt,
            negative_prompt,
            do_classifier_free_guidance,
            &PromptOptions::default(),
        )
    }

    /// [`Self::encode_prompt`] with a request's textual inversions, clip skip and prompt
    /// weighting (see the module docs).
    pub fn encode_prompt_with(
        &self,
        prompt: &str,
        negative_prompt: Option<&str>,
        do_classifier_free_guidance: bool,
        options: &PromptOptions,
    ) -> Result<EncodedPrompt> {
        let views = self.views(options.textual_inversions)?;
        let skip = options.clip_skip.unwrap_or(0);
        let positive_layer = PENULTIMATE + skip;
        let with_ti = !options.textual_inversions.is_empty();
        let (positive, truncation_warnings) = match options.prompt_attention {
            PromptAttention::None => encode_plain(&views, prompt, positive_layer)?,
            PromptAttention::A1111 => (a1111::encode(&views, prompt, positive_layer)?, Vec::new()),
            PromptAttention::Compel => (
                compel::encode(&views, prompt, positive_layer, with_ti)?,
                Vec::new(),
            ),
        };
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
            let text = negative_prompt.unwrap_or("");
            let negative = match (options.prompt_attention, negative_prompt) {
                (PromptAttention::A1111, _) => a1111::encode(&views, text, PENULTIMATE)?,
                // compel encodes a given negative prompt; without one the pipeline encodes "".
                (PromptAttention::Compel, Some(text)) => {
                    compel::encode(&views, text, PENULTIMATE, with_ti)?
                }
                _ => encode_plain(&views, text, PENULTIMATE)?.0,
            };
            Some(negative)
        };
        let (positive, negative) = match (options.prompt_attention, negative) {
            (PromptAttention::A1111, Some(negative)) => {
                let (positive, negative) = a1111::pad_to_same_length(&views, positive, negative)?;
                (positive, Some(negative))
            }
            (_, negative) => (positive, negative),
        };
        Ok(EncodedPrompt {
            positive,
            negative,
            truncation_warnings,
        })
    }

    /// The encoders as one request sees them: with its textual inversions' tokens and rows.
    fn views<'a>(
        &'a self,
        textual_inversions: &[TextualInversion],
    ) -> Result<Vec<EncoderView<'a>>> {
        self.encoders
            .iter()
            .map(|encoder| {
                let (tokenizer, table) = if textual_inversions.is_empty() {
                    (Cow::Borrowed(&encoder.tokenizer), None)
                } else {
                    let (tokenizer, table) = textual_inversion::extend_encoder(
                        &encoder.name,
                        &encoder.tokenizer,
                        encoder.model.token_embedding(),
                        textual_inversions,
                    )?;
                    (Cow::Owned(tokenizer), Some(table))
                };
                Ok(EncoderView {
                    name: &encoder.name,
                    dir: &encoder.dir,
                    tokenizer,
                    table,
                    model: &encoder.model,
                })
            })
            .collect()
    }
}

/// How a request asks for its prompts to be weighted (`data.prompt_attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptAttention {
    /// diffusers' own `encode_prompt`.
    #[default]
    None,
    /// AUTOMATIC1111's emphasis syntax ([`a1111`]).
    A1111,
    /// compel's syntax in its SDXL mode ([`compel`]).
    Compel,
}

impl PromptAttention {
    /// The v2 request's name (`none`, `a1111`, `compel`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Self::None),
            "a1111" => Some(Self::A1111),
            "compel" => Some(Self::Compel),
            _ => None,
        }
    }
}

/// What a request changes in the text encoding.
#[derive(Debug, Default)]
pub struct PromptOptions<'a> {
    /// diffusers' `clip_skip` (`None` and `Some(0)` read `hidden_states[-2]`).
    pub clip_skip: Option<usize>,
    pub prompt_attention: PromptAttention,
    pub textual_inversions: &'a [TextualInversion],
}

/// One tokenizer and text encoder as a request sees them.
pub(crate) struct EncoderView<'a> {
    name: &'a str,
    dir: &'a Path,
    tokenizer: Cow<'a, ClipTokenizer>,
    /// The token-embedding table with the request's textual inversions, if it has any.
    table: Option<Tensor>,
    model: &'a ClipTextModel,
}

impl EncoderView<'_> {
    pub(crate) fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// `text_encoder(ids[None], attention_mask, output_hidden_states=True)`.
    pub(crate) fn run(
        &self,
        ids: &[i64],
        attention_mask: Option<&[i64]>,
    ) -> Result<ClipTextOutput> {
        let length = to_i64(ids.len());
        let input_ids = Tensor::from_slice(ids).reshape([1, length]);
        let mask = attention_mask.map(|mask| Tensor::from_slice(mask).reshape([1, length]));
        self.model
            .forward_with(&input_ids, self.table.as_ref(), mask.as_ref())
    }

    /// `output.hidden_states[-layer_from_end]`.
    pub(crate) fn hidden_state(
        &self,
        output: &mut ClipTextOutput,
        layer_from_end: usize,
    ) -> Result<Tensor> {
        let count = output.hidden_states.len();
        let index = count
            .checked_sub(layer_from_end)
            .ok_or_else(|| Error::InvalidValue {
                path: self.dir.join("config.json"),
                key: "num_hidden_layers".to_owned(),
                message: format!(
                    "hidden_states[-{layer_from_end}] does not exist (clip_skip {}): {} has {count}",
                    layer_from_end.saturating_sub(PENULTIMATE),
                    self.name
                ),
            })?;
        Ok(output.hidden_states.swap_remove(index))
    }
}

/// diffusers' own encoding of one prompt (`maybe_convert_prompt`, pad to `model_max_length`,
/// truncate), concatenating `hidden_states[-layer_from_end]`; the pooled embeddings come from the
/// first encoder with a projection (diffusers: the first output whose `[0]` is two-dimensional).
fn encode_plain(
    views: &[EncoderView],
    prompt: &str,
    layer_from_end: usize,
) -> Result<(PromptEmbeddings, Vec<String>)> {
    let mut embeds = Vec::with_capacity(views.len());
    let mut pooled = None;
    let mut warnings = Vec::new();
    for view in views {
        let prompt = textual_inversion::maybe_convert_prompt(prompt, view.tokenizer())?;
        let tokenized = view.tokenizer().tokenize(&prompt)?;
        if let Some(removed) = &tokenized.removed_text {
            warnings.push(format!(
                "The following part of your input was truncated because CLIP can only handle \
                 sequences up to {} tokens: {removed:?}",
                view.tokenizer().model_max_length()
            ));
        }
        let mut output = view.run(&tokenized.input_ids, None)?;
        if pooled.is_none() {
            pooled = output.text_embeds.take();
        }
        embeds.push(view.hidden_state(&mut output, layer_from_end)?);
    }
    let pooled_prompt_embeds = pooled.ok_or_else(no_projection)?;
    Ok((
        PromptEmbeddings {
            prompt_embeds: Tensor::f_cat(&embeds, -1)?,
            pooled_prompt_embeds,
        },
        warnings,
    ))
}

/// `TextEncoders::load` checks that one encoder has a projection.
pub(crate) fn no_projection() -> Error {
    Error::Torch("no text encoder with a projection produced pooled embeddings".into())
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
