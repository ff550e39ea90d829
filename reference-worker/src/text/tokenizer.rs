//! transformers' `CLIPTokenizer` as diffusers' SDXL pipeline calls it:
//! `tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length,
//! truncation=True)`.
//!
//! The vocabulary, merges, added tokens, normalizer and pre-tokenizer come from the folder's
//! `tokenizer.json` (what transformers 5.x writes and reads). The special tokens and the length come
//! from `tokenizer_config.json`, as transformers takes them: the post-processor is rebuilt from its
//! `bos_token` / `eos_token` (CLIPTokenizer's `RobertaProcessing`), padding uses its `pad_token`
//! (SDXL's second tokenizer pads with `!`, the first with `<|endoftext|>`) and truncation its
//! `model_max_length`. Truncation keeps room for the two special tokens, as the fast tokenizer
//! does: a long prompt keeps its first `model_max_length - 2` tokens and still ends with EOS.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::ModelWrapper;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::config::ConfigFile;
use crate::error::{Error, Result};

/// transformers' `CLIPTokenizer` defaults, used when `tokenizer_config.json` (and
/// `special_tokens_map.json`) do not name a token.
const DEFAULT_BOS_TOKEN: &str = "<|startoftext|>";
const DEFAULT_EOS_TOKEN: &str = "<|endoftext|>";
const DEFAULT_PAD_TOKEN: &str = "<|endoftext|>";

/// One CLIP tokenizer folder (`tokenizer/` or `tokenizer_2/`).
#[derive(Clone)]
pub struct ClipTokenizer {
    /// The folder's `tokenizer.json`, named in errors.
    path: PathBuf,
    /// Truncates to and pads to `model_max_length` (diffusers' `padding="max_length"` call).
    padded: Tokenizer,
    /// Neither truncates nor pads (diffusers' `padding="longest"` call on one prompt, which it
    /// uses only to warn about truncation).
    untruncated: Tokenizer,
    model_max_length: usize,
    bos_token_id: u32,
    eos_token_id: u32,
    pad_token_id: u32,
    /// BPE's end-of-word suffix (`</w>`), which CLIPTokenizer's `decode` turns into spaces.
    end_of_word_suffix: Option<String>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("path", &self.path)
            .field("model_max_length", &self.model_max_length)
            .field("pad_token_id", &self.pad_token_id)
            .finish()
    }
}

/// A prompt as the pipeline tokenizes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// Exactly `model_max_length` ids: BOS, the prompt's tokens (truncated), EOS, padding.
    pub input_ids: Vec<i64>,
    /// The text that truncation dropped, decoded as diffusers' warning shows it; `None` when the
    /// prompt fits.
    pub removed_text: Option<String>,
}

impl ClipTokenizer {
    /// Loads `dir/tokenizer.json` with the special tokens and length of
    /// `dir/tokenizer_config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: dir.to_owned(),
                what: "tokenizer.json".to_owned(),
            });
        }
        let config_path = dir.join("tokenizer_config.json");
        if !config_path.is_file() {
            return Err(Error::MissingFile {
                path: dir.to_owned(),
                what: "tokenizer_config.json".to_owned(),
            });
        }
        let config = ConfigFile::read(&config_path)?;
        let special_tokens_map = {
            let map_path = dir.join("special_tokens_map.json");
            if map_path.is_file() {
                Some(ConfigFile::read(&map_path)?)
            } else {
                None
            }
        };
        let special_token = |key: &str, default: &str| -> Result<String> {
            if let Some(token) = token_content(&config, key)? {
                return Ok(token);
            }
            if let Some(map) = &special_tokens_map {
                if let Some(token) = token_content(map, key)? {
                    return Ok(token);
                }
            }
            Ok(default.to_owned())
        };
        let bos_token = special_token("bos_token", DEFAULT_BOS_TOKEN)?;
        let eos_token = special_token("eos_token", DEFAULT_EOS_TOKEN)?;
        let pad_token = special_token("pad_token", DEFAULT_PAD_TOKEN)?;
        let model_max_length = config.usize("model_max_length")?;
        if model_max_length < 2 {
            return Err(config.invalid(
                "model_max_length",
                "must leave room for the start and end tokens (at least 2)",
            ));
        }

        let tokenizer_error = |message: String| Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let mut untruncated =
            Tokenizer::from_file(&path).map_err(|error| tokenizer_error(error.to_string()))?;
        let token_id = |token: &str, key: &str| -> Result<u32> {
            untruncated.token_to_id(token).ok_or_else(|| {
                config.invalid(
                    key,
                    format!("`{token}` is not in the vocabulary of {}", path.display()),
                )
            })
        };
        let bos_token_id = token_id(&bos_token, "bos_token")?;
        let eos_token_id = token_id(&eos_token, "eos_token")?;
        let pad_token_id = token_id(&pad_token, "pad_token")?;
        let end_of_word_suffix = match untruncated.get_model() {
            ModelWrapper::BPE(bpe) => bpe.end_of_word_suffix.clone(),
            _ => {
                return Err(tokenizer_error(
                    "the model is not BPE (CLIP uses BPE)".into(),
                ))
            }
        };

        // CLIPTokenizer.__init__ sets this post-processor whatever tokenizer.json holds.
        untruncated.with_post_processor(Some(
            RobertaProcessing::new((eos_token, eos_token_id), (bos_token, bos_token_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        untruncated
            .with_truncation(None)
            .map_err(|error| tokenizer_error(error.to_string()))?;
        untruncated.with_padding(None);

        let mut padded = untruncated.clone();
        padded
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: model_max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|error| tokenizer_error(error.to_string()))?;
        padded.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(model_max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: pad_token_id,
            pad_type_id: 0,
            pad_token,
        }));

        Ok(Self {
            path,
            padded,
            untruncated,
            model_max_length,
            bos_token_id,
            eos_token_id,
            pad_token_id,
            end_of_word_suffix,
        })
    }

    /// The `tokenizer.json` this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `tokenizer_config.json`'s `model_max_length`: the length of every id sequence.
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    pub fn bos_token_id(&self) -> u32 {
        self.bos_token_id
    }

    pub fn eos_token_id(&self) -> u32 {
        self.eos_token_id
    }

    /// `len(tokenizer)`: the vocabulary with the added tokens.
    pub fn len(&self) -> usize {
        self.untruncated.get_vocab_size(true)
    }

    /// Never true for a loaded CLIP tokenizer (its special tokens are in the vocabulary).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of `token` in the vocabulary or among the added tokens (`token in
    /// tokenizer.get_vocab()`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.untruncated.token_to_id(token)
    }

    /// Whether `token` is an added token (`token in tokenizer.added_tokens_encoder`; the special
    /// tokens of `tokenizer.json` are added tokens too).
    pub fn is_added_token(&self, token: &str) -> bool {
        self.untruncated
            .get_added_vocabulary()
            .get_vocab()
            .contains_key(token)
    }

    /// A copy with `tokens` added as `tokenizer.add_tokens(token)` adds a string, one at a time:
    /// not special, `normalized=True`, no stripping, not single-word. Returns the copy and the
    /// tokens' ids.
    pub fn with_added_tokens(&self, tokens: &[String]) -> Result<(Self, Vec<u32>)> {
        let mut copy = self.clone();
        let mut ids = Vec::with_capacity(tokens.len());
        for token in tokens {
            let added = [AddedToken::from(token.clone(), false)];
            copy.untruncated.add_tokens(&added);
            copy.padded.add_tokens(&added);
            let id = copy
                .untruncated
                .token_to_id(token)
                .ok_or_else(|| Error::Tokenizer {
                    path: self.path.clone(),
                    message: format!("could not add the token `{token}`"),
                })?;
            if copy.padded.token_to_id(token) != Some(id) {
                return Err(Error::Tokenizer {
                    path: self.path.clone(),
                    message: format!("the token `{token}` got two different ids"),
                });
            }
            ids.push(id);
        }
        Ok((copy, ids))
    }

    /// `tokenizer.tokenize(text)`: the token strings, without special tokens, untruncated.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let encoding = self
            .untruncated
            .encode(text, false)
            .map_err(|error| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode the prompt: {error}"),
            })?;
        Ok(encoding.get_tokens().to_vec())
    }

    /// `tokenizer(text, truncation=False, add_special_tokens=False).input_ids`.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .untruncated
            .encode(text, false)
            .map_err(|error| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode the prompt: {error}"),
            })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// `tokenizer(prompt, padding="max_length", max_length=model_max_length, truncation=True)`
    /// `.input_ids`, plus what diffusers' truncation warning would show.
    pub fn tokenize(&self, prompt: &str) -> Result<TokenizedPrompt> {
        let input_ids = self.ids(&self.padded, prompt)?;
        // diffusers: `untruncated_ids = tokenizer(prompt, padding="longest")`; it warns when they
        // are at least as long as the padded ids and differ, showing
        // `batch_decode(untruncated_ids[:, model_max_length - 1 : -1])`.
        let untruncated_ids = self.ids(&self.untruncated, prompt)?;
        let removed_text =
            if untruncated_ids.len() >= input_ids.len() && untruncated_ids != input_ids {
                let start = self.model_max_length - 1;
                let end = untruncated_ids.len() - 1;
                let removed = untruncated_ids.get(start..end).unwrap_or_default();
                Some(self.decode(removed)?)
            } else {
                None
            };
        Ok(TokenizedPrompt {
            input_ids,
            removed_text,
        })
    }

    /// Just the padded, truncated ids (what the text encoder sees).
    pub fn input_ids(&self, prompt: &str) -> Result<Vec<i64>> {
        self.ids(&self.padded, prompt)
    }

    fn ids(&self, tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<i64>> {
        let encoding = tokenizer
            .encode(prompt, true)
            .map_err(|error| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode the prompt: {error}"),
            })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// CLIPTokenizer's `decode`: the byte-level decoder's text with the end-of-word suffix turned
    /// into spaces, stripped (special tokens kept, no clean-up of tokenization spaces).
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&id| u32::try_from(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode ids {ids:?}: not token ids"),
            })?;
        let text = self
            .untruncated
            .decode(&ids, false)
            .map_err(|error| Error::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode ids {ids:?}: {error}"),
            })?;
        let text = match &self.end_of_word_suffix {
            Some(suffix) if !suffix.is_empty() => text.replace(suffix.as_str(), " "),
            _ => text,
        };
        Ok(text.trim().to_owned())
    }
}

/// A special token as `tokenizer_config.json` / `special_tokens_map.json` write it: a string, or
/// an `AddedToken` object with its `content`. `None` when absent or null.
fn token_content(config: &ConfigFile, key: &str) -> Result<Option<String>> {
    match config.raw(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(token)) => Ok(Some(token.clone())),
        Some(Value::Object(token)) => match token.get("content") {
            Some(Value::String(content)) => Ok(Some(content.clone())),
            _ => Err(config.invalid(key, "a token object without a string `content`")),
        },
        Some(_) => Err(config.invalid(
            key,
            "should be a token string or an object with a `content` string",
        )),
    }
}
