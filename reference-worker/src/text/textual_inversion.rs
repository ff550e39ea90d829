//! Textual inversion for SDXL as diffusers 0.42.1 does it.
//!
//! An SDXL embedding file is one safetensors file with two tensors: `clip_l` for `text_encoder`
//! (CLIP ViT-L) and `clip_g` for `text_encoder_2` (OpenCLIP bigG), each `[vectors, hidden_size]`
//! (or `[hidden_size]` for one vector). diffusers' SDXL recipe loads each half with
//! `pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
//! tokenizer=pipe.tokenizer_2)` (and `clip_l` into `text_encoder`/`tokenizer`), which per encoder:
//!
//! 1. refuses a token already in the tokenizer's vocabulary (added tokens included), and a
//!    multi-vector token whose `token_1` is;
//! 2. names the vectors `token`, `token_1`, …, `token_{n-1}`;
//! 3. refuses vectors whose last dimension is not the encoder's `hidden_size`;
//! 4. resizes the token-embedding table to `len(tokenizer) + n` rows (keeping the first rows),
//!    adds the tokens (`tokenizer.add_tokens(token)`: not special, normalized) and writes each
//!    vector, converted to the table's dtype, into its token's row.
//!
//! Before tokenizing, the pipeline's `maybe_convert_prompt` rewrites a prompt for each tokenizer:
//! for every distinct token of `tokenizer.tokenize(prompt)` that is an added token, `prompt.replace
//! (token, "token token_1 … token_k")` with as many `token_i` as that tokenizer has (diffusers
//! walks a Python `set`, whose order varies; this worker takes the tokens in order of first
//! appearance, which only matters when one embedding's token contains another's).
//!
//! A request's embeddings never change the loaded pipeline: [`TextEncoders`](super::TextEncoders)
//! builds extended copies of the tokenizers and tables for the one request.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::ClipTokenizer;
use crate::error::{Error, Result};
use crate::weights::SafetensorsFile;

/// The tensor of an SDXL embedding file for `text_encoder`.
pub const CLIP_L: &str = "clip_l";
/// The tensor of an SDXL embedding file for `text_encoder_2`.
pub const CLIP_G: &str = "clip_g";

/// One SDXL textual-inversion embedding, read from its file.
#[derive(Debug)]
pub struct TextualInversion {
    path: PathBuf,
    token: String,
    /// `clip_l`, `[vectors, hidden_size]`, as stored (converted to f64 exactly or as torch does).
    clip_l: Tensor,
    /// `clip_g`, `[vectors, hidden_size]`.
    clip_g: Tensor,
}

impl TextualInversion {
    /// Reads `path` (an SDXL embedding file: `clip_l` and `clip_g`); the token is `token`, or the
    /// file's stem when the request names none (docs/decisions.md).
    pub fn load(path: &Path, token: Option<&str>) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let token = match token {
            Some(token) => token.to_owned(),
            None => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().to_string())
                .filter(|stem| !stem.is_empty())
                .ok_or_else(|| Error::InvalidTextualInversion {
                    path: path.to_owned(),
                    tensor: None,
                    message: "no token given and the file name has no stem to use as one".into(),
                })?,
        };
        if token.trim().is_empty() {
            return Err(Error::InvalidTextualInversion {
                path: path.to_owned(),
                tensor: None,
                message: format!("the token {token:?} is blank"),
            });
        }
        let vectors = |name: &str| -> Result<Tensor> {
            let info = file
                .info(name)
                .ok_or_else(|| Error::InvalidTextualInversion {
                    path: path.to_owned(),
                    tensor: Some(name.to_owned()),
                    message: format!(
                        "missing: an SDXL embedding file holds `{CLIP_L}` (text_encoder) and \
                     `{CLIP_G}` (text_encoder_2); this one has {}",
                        describe_names(file.names())
                    ),
                })?;
            let shape = info.shape.clone();
            let tensor = file.tensor(name, Kind::Double)?;
            match shape.as_slice() {
                [dim] if *dim > 0 => Ok(tensor.view([1, *dim])),
                [vectors, dim] if *vectors > 0 && *dim > 0 => Ok(tensor),
                _ => Err(Error::InvalidTextualInversion {
                    path: path.to_owned(),
                    tensor: Some(name.to_owned()),
                    message: format!(
                        "has shape {shape:?}; expected [vectors, hidden_size] or [hidden_size]"
                    ),
                }),
            }
        };
        let clip_l = vectors(CLIP_L)?;
        let clip_g = vectors(CLIP_G)?;
        Ok(Self {
            path: path.to_owned(),
            token,
            clip_l,
            clip_g,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The vectors for the text encoder component `encoder` (`text_encoder` → `clip_l`,
    /// `text_encoder_2` → `clip_g`), with the tensor's name.
    pub fn vectors_for(&self, encoder: &str) -> Option<(&'static str, &Tensor)> {
        match encoder {
            "text_encoder" => Some((CLIP_L, &self.clip_l)),
            "text_encoder_2" => Some((CLIP_G, &self.clip_g)),
            _ => None,
        }
    }

    /// How many vectors (tokens) the embedding has for `encoder`.
    pub fn vector_count(&self, encoder: &str) -> usize {
        self.vectors_for(encoder)
            .map_or(0, |(_, vectors)| vectors.size()[0] as usize)
    }
}

fn describe_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<String> = names.map(|name| format!("`{name}`")).collect();
    names.sort();
    if names.is_empty() {
        "no tensors".to_owned()
    } else {
        names.join(", ")
    }
}

/// `load_textual_inversion` for one encoder, every embedding in request order: returns the
/// extended tokenizer and token-embedding table.
pub(crate) fn extend_encoder(
    encoder_name: &str,
    tokenizer: &ClipTokenizer,
    table: &Tensor,
    textual_inversions: &[TextualInversion],
) -> Result<(ClipTokenizer, Tensor)> {
    let mut tokenizer = tokenizer.clone();
    let mut table = table.shallow_clone();
    for (index, ti) in textual_inversions.iter().enumerate() {
        if let Some(earlier) = textual_inversions[..index]
            .iter()
            .find(|earlier| earlier.token == ti.token)
        {
            return Err(Error::InvalidTextualInversion {
                path: ti.path.clone(),
                tensor: None,
                message: format!(
                    "the token `{}` is also the token of {}",
                    ti.token,
                    earlier.path.display()
                ),
            });
        }
        let Some((tensor, vectors)) = ti.vectors_for(encoder_name) else {
            continue;
        };
        let in_vocabulary = |token: &str| tokenizer.token_id(token).is_some();
        if in_vocabulary(&ti.token) {
            return Err(Error::InvalidTextualInversion {
                path: ti.path.clone(),
                tensor: Some(tensor.to_owned()),
                message: format!(
                    "the token `{}` is already in the vocabulary of {} ({encoder_name}); choose \
                     another token",
                    ti.token,
                    tokenizer.path().display()
                ),
            });
        }
        let count = vectors.size()[0];
        let first_extra = format!("{}_1", ti.token);
        if count > 1 && in_vocabulary(&first_extra) {
            return Err(Error::InvalidTextualInversion {
                path: ti.path.clone(),
                tensor: Some(tensor.to_owned()),
                message: format!(
                    "the multi-vector token `{}` needs `{first_extra}`, which is already in the \
                     vocabulary of {}",
                    ti.token,
                    tokenizer.path().display()
                ),
            });
        }
        let [rows, hidden] = table.size()[..] else {
            return Err(Error::Torch(format!(
                "{encoder_name}: the token-embedding table is not two-dimensional"
            )));
        };
        if vectors.size()[1] != hidden {
            return Err(Error::InvalidTextualInversion {
                path: ti.path.clone(),
                tensor: Some(tensor.to_owned()),
                message: format!(
                    "has shape {:?}: {encoder_name} has hidden_size {hidden}, so each vector must \
                     have {hidden} values",
                    vectors.size()
                ),
            });
        }
        let tokens: Vec<String> = std::iter::once(ti.token.clone())
            .chain((1..count).map(|i| format!("{}_{i}", ti.token)))
            .collect();
        // text_encoder.resize_token_embeddings(len(tokenizer) + len(tokens)).
        let new_rows = tokenizer.len() as i64 + count;
        let kept = rows.min(new_rows);
        let resized = Tensor::f_zeros([new_rows, hidden], (table.kind(), table.device()))?;
        resized
            .f_narrow(0, 0, kept)?
            .f_copy_(&table.f_narrow(0, 0, kept)?)?;
        let (extended, ids) = tokenizer.with_added_tokens(&tokens)?;
        let mut written = vec![false; (new_rows - kept) as usize];
        for (row, id) in ids.iter().enumerate() {
            let id = i64::from(*id);
            if id >= new_rows {
                return Err(Error::InvalidTextualInversion {
                    path: ti.path.clone(),
                    tensor: Some(tensor.to_owned()),
                    message: format!(
                        "token `{}` got id {id}, outside the resized table of {new_rows} rows",
                        tokens[row]
                    ),
                });
            }
            if id >= kept {
                written[(id - kept) as usize] = true;
            }
            let vector = vectors
                .f_narrow(0, row as i64, 1)?
                .f_to_kind(table.kind())?;
            resized.f_narrow(0, id, 1)?.f_copy_(&vector)?;
        }
        if let Some(unwritten) = written.iter().position(|w| !w) {
            // transformers fills new rows with random values; only rows an embedding writes are
            // reproducible.
            return Err(Error::InvalidTextualInversion {
                path: ti.path.clone(),
                tensor: Some(tensor.to_owned()),
                message: format!(
                    "row {} of {encoder_name}'s resized token embeddings would keep transformers' \
                     random initialization (the tokenizer has {} entries, the table {rows} rows)",
                    kept + unwritten as i64,
                    tokenizer.len()
                ),
            });
        }
        tokenizer = extended;
        table = resized;
    }
    Ok((tokenizer, table))
}

/// diffusers' `_maybe_convert_prompt(prompt, tokenizer)`: every added token of the prompt that
/// has `token_1`, `token_2`, … added too is replaced (as text, everywhere in the prompt) by
/// `"token token_1 token_2 …"`.
pub fn maybe_convert_prompt(prompt: &str, tokenizer: &ClipTokenizer) -> Result<String> {
    let tokens = tokenizer.tokens(prompt)?;
    let mut unique: Vec<&String> = Vec::new();
    for token in &tokens {
        if !unique.contains(&token) {
            unique.push(token);
        }
    }
    let mut converted = prompt.to_owned();
    for token in unique {
        if !tokenizer.is_added_token(token) {
            continue;
        }
        let mut replacement = token.clone();
        let mut i = 1;
        loop {
            let next = format!("{token}_{i}");
            if !tokenizer.is_added_token(&next) {
                break;
            }
            replacement.push(' ');
            replacement.push_str(&next);
            i += 1;
        }
        if i > 1 {
            converted = converted.replace(token.as_str(), &replacement);
        }
    }
    Ok(converted)
}
