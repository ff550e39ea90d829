//! `prompt_attention: "a1111"`: AUTOMATIC1111's emphasis syntax and its "Original" weighting,
//! applied to diffusers' two SDXL text encoders. The reference implementation this worker is
//! tested against is `fixtures/oracle/prompts.py` (`encode_a1111`); the semantics:
//!
//! **Syntax** (scanned left to right; the first rule that matches at a position wins):
//!
//! | text | meaning |
//! |---|---|
//! | `\(` `\)` `\[` `\]` `\\` | that character, as text |
//! | `\` (any other) | dropped |
//! | `(` … `)` | weights inside × 1.1 |
//! | `[` … `]` | weights inside × 1/1.1 |
//! | `(` … `:1.3)` | weights inside × 1.3 (`:` then `[+-]?[.0-9]+` then `)`) |
//! | an unmatched `)` `]`, a `:` or a `:w)` outside `(` | text |
//! | `(` or `[` never closed | applies from where it opened to the end |
//! | `BREAK` (a whole word, surrounding whitespace dropped) | starts a new 75-token chunk |
//!
//! Weights multiply in the order the brackets close (so `((a:1.3))` is `1.3 × 1.1`), then
//! neighbouring pieces of equal weight are joined; an empty prompt is one empty piece of weight 1.
//! A `:w)` whose number does not parse is an error.
//!
//! **Tokens**: each piece is tokenized alone (`tokenizer(text, add_special_tokens=False)`, no
//! truncation), every token carrying its piece's weight. Tokens fill chunks of 75; when a chunk
//! is full and a comma (`,</w>`) was among its last 20 tokens, the tokens after that comma move to
//! the next chunk. Each chunk is `[BOS] + 75 tokens (padded with EOS) + [EOS]`, weights 1 at the
//! added positions; after the first EOS, positions hold the tokenizer's pad token (tokenizer_2's
//! `!`). Textual-inversion tokens (after `maybe_convert_prompt` on the whole prompt) are ordinary
//! tokens here.
//!
//! **Embeddings**, per encoder and chunk: `z = hidden_states[-2]` (`-(clip_skip + 2)` for a
//! positive prompt with clip skip) of the chunk's ids; `mean = z.mean()`; `z = z * weights`
//! (float32 weights, one per token); `z = z * (mean / z.mean())`. Chunks are concatenated along
//! the sequence (77 × chunks tokens), the two encoders along the features; the pooled embedding is
//! `text_embeds` of the first chunk. A negative prompt uses the same syntax; when the positive and
//! negative prompts have different chunk counts, the shorter is extended with chunks of the empty
//! prompt's embeddings.

use tch::{Kind, Tensor};

use super::compel_syntax::is_python_space;
use super::textual_inversion::maybe_convert_prompt;
use super::{no_projection, ClipTokenizer, EncoderView, PromptEmbeddings, PENULTIMATE};
use crate::error::{Error, Result};

/// A1111's `chunk_length`.
pub const CHUNK_LENGTH: usize = 75;
/// A1111's default `comma_padding_backtrack`.
const COMMA_BACKTRACK: usize = 20;
const ROUND: f64 = 1.1;
/// `BREAK` is kept as a piece with this weight until chunking, as A1111 does.
const BREAK_WEIGHT: f64 = -1.0;

/// One weighted piece of a parsed prompt (`("BREAK", -1.0)` marks a forced chunk break).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub text: String,
    pub weight: f64,
}

/// Parses A1111's emphasis syntax into weighted pieces (see the module docs).
pub fn parse(prompt: &str) -> Result<Vec<Piece>> {
    let chars: Vec<char> = prompt.chars().collect();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |pieces: &mut Vec<Piece>, from: usize, by: f64| {
        for piece in &mut pieces[from..] {
            piece.weight *= by;
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\\' {
            match next {
                Some(escaped @ ('(' | ')' | '[' | ']' | '\\')) => {
                    pieces.push(Piece {
                        text: escaped.to_string(),
                        weight: 1.0,
                    });
                    i += 2;
                }
                _ => {
                    pieces.push(Piece {
                        text: String::new(),
                        weight: 1.0,
                    });
                    i += 1;
                }
            }
            continue;
        }
        match c {
            '(' => {
                round.push(pieces.len());
                i += 1;
                continue;
            }
            '[' => {
                square.push(pieces.len());
                i += 1;
                continue;
            }
            _ => {}
        }
        if c == ':' {
            // `:([+-]?[.\d]+)\)`
            let mut j = i + 1;
            if matches!(chars.get(j), Some('+' | '-')) {
                j += 1;
            }
            let digits_start = j;
            while chars
                .get(j)
                .is_some_and(|d| *d == '.' || d.is_ascii_digit())
            {
                j += 1;
            }
            if j > digits_start && chars.get(j) == Some(&')') {
                let number: String = chars[i + 1..j].iter().collect();
                let text: String = chars[i..=j].iter().collect();
                i = j + 1;
                if let Some(open) = round.pop() {
                    let weight = number.parse::<f64>().map_err(|_| Error::Unsupported {
                        path: "/data/prompt".into(),
                        reason: format!("a1111 weight `{text}`: `{number}` is not a number"),
                    })?;
                    multiply(&mut pieces, open, weight);
                } else {
                    push_text(&mut pieces, &text);
                }
                continue;
            }
        }
        match c {
            ')' if !round.is_empty() => {
                let open = round.pop().unwrap_or_default();
                multiply(&mut pieces, open, ROUND);
                i += 1;
            }
            ']' if !square.is_empty() => {
                let open = square.pop().unwrap_or_default();
                multiply(&mut pieces, open, 1.0 / ROUND);
                i += 1;
            }
            ')' | ']' | ':' => {
                push_text(&mut pieces, &c.to_string());
                i += 1;
            }
            _ => {
                // `[^\\()\[\]:]+`
                let start = i;
                while i < chars.len() && !matches!(chars[i], '\\' | '(' | ')' | '[' | ']' | ':') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                push_text(&mut pieces, &text);
            }
        }
    }
    for open in round {
        multiply(&mut pieces, open, ROUND);
    }
    for open in square {
        multiply(&mut pieces, open, 1.0 / ROUND);
    }
    if pieces.is_empty() {
        pieces.push(Piece {
            text: String::new(),
            weight: 1.0,
        });
    }
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match merged.last_mut() {
            Some(last) if last.weight == piece.weight => last.text.push_str(&piece.text),
            _ => merged.push(piece),
        }
    }
    Ok(merged)
}

/// A text run, split at `\s*\bBREAK\b\s*` with a BREAK piece between the parts.
fn push_text(pieces: &mut Vec<Piece>, text: &str) {
    let chars: Vec<char> = text.chars().collect();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut part_start = 0;
    let mut search = 0;
    let keyword: Vec<char> = "BREAK".chars().collect();
    while search + keyword.len() <= chars.len() {
        let at = search;
        let bounded = chars[at..at + keyword.len()] == keyword[..]
            && (at == 0 || !is_word(chars[at - 1]))
            && chars.get(at + keyword.len()).is_none_or(|c| !is_word(*c));
        if !bounded {
            search += 1;
            continue;
        }
        let mut start = at;
        while start > part_start && is_python_space(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + keyword.len();
        while end < chars.len() && is_python_space(chars[end]) {
            end += 1;
        }
        pieces.push(Piece {
            text: chars[part_start..start].iter().collect(),
            weight: 1.0,
        });
        pieces.push(Piece {
            text: "BREAK".into(),
            weight: BREAK_WEIGHT,
        });
        part_start = end;
        search = end.max(at + 1);
    }
    pieces.push(Piece {
        text: chars[part_start..].iter().collect(),
        weight: 1.0,
    });
}

/// One chunk: `CHUNK_LENGTH + 2` ids and their weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ids: Vec<i64>,
    pub weights: Vec<f64>,
}

/// A1111's `tokenize_line` on parsed pieces with one tokenizer, and `process_tokens`' padding
/// after the first EOS.
pub fn chunks(pieces: &[Piece], tokenizer: &ClipTokenizer) -> Result<Vec<Chunk>> {
    let bos = i64::from(tokenizer.bos_token_id());
    let eos = i64::from(tokenizer.eos_token_id());
    let pad = i64::from(tokenizer.pad_token_id());
    let comma = tokenizer.token_id(",</w>").map(i64::from);
    let mut done: Vec<Chunk> = Vec::new();
    let mut ids: Vec<i64> = Vec::new();
    let mut weights: Vec<f64> = Vec::new();
    let mut last_comma: Option<usize> = None;
    let finish = |ids: &mut Vec<i64>, weights: &mut Vec<f64>, done: &mut Vec<Chunk>| {
        let missing = CHUNK_LENGTH.saturating_sub(ids.len());
        ids.extend(std::iter::repeat_n(eos, missing));
        weights.extend(std::iter::repeat_n(1.0, missing));
        let mut chunk_ids = Vec::with_capacity(CHUNK_LENGTH + 2);
        chunk_ids.push(bos);
        chunk_ids.append(ids);
        chunk_ids.push(eos);
        let mut chunk_weights = Vec::with_capacity(CHUNK_LENGTH + 2);
        chunk_weights.push(1.0);
        chunk_weights.append(weights);
        chunk_weights.push(1.0);
        if eos != pad {
            if let Some(first) = chunk_ids.iter().position(|&id| id == eos) {
                for id in &mut chunk_ids[first + 1..] {
                    *id = pad;
                }
            }
        }
        done.push(Chunk {
            ids: chunk_ids,
            weights: chunk_weights,
        });
    };
    for piece in pieces {
        if piece.text == "BREAK" && piece.weight == BREAK_WEIGHT {
            finish(&mut ids, &mut weights, &mut done);
            last_comma = None;
            continue;
        }
        for token in tokenizer.encode_plain(&piece.text)? {
            if Some(token) == comma {
                last_comma = Some(ids.len());
            } else if let Some(at) = last_comma
                .filter(|at| ids.len() == CHUNK_LENGTH && ids.len() - at <= COMMA_BACKTRACK)
            {
                let moved_ids = ids.split_off(at + 1);
                let moved_weights = weights.split_off(at + 1);
                finish(&mut ids, &mut weights, &mut done);
                ids = moved_ids;
                weights = moved_weights;
                last_comma = None;
            }
            if ids.len() == CHUNK_LENGTH {
                finish(&mut ids, &mut weights, &mut done);
                last_comma = None;
            }
            ids.push(token);
            weights.push(piece.weight);
        }
    }
    if !ids.is_empty() || done.is_empty() {
        finish(&mut ids, &mut weights, &mut done);
    }
    Ok(done)
}

/// Encodes `prompt` with every encoder (see the module docs), reading
/// `hidden_states[-layer_from_end]`.
pub(crate) fn encode(
    views: &[EncoderView],
    prompt: &str,
    layer_from_end: usize,
) -> Result<PromptEmbeddings> {
    let mut per_encoder = Vec::with_capacity(views.len());
    let mut pooled = None;
    let mut chunk_count = None;
    for view in views {
        let converted = maybe_convert_prompt(prompt, view.tokenizer())?;
        let pieces = parse(&converted)?;
        let chunks = chunks(&pieces, view.tokenizer())?;
        match chunk_count {
            None => chunk_count = Some(chunks.len()),
            Some(count) if count != chunks.len() => {
                return Err(Error::Unsupported {
                    path: "/data/prompt".into(),
                    reason: format!(
                        "the a1111 prompt makes {count} chunks with one tokenizer and {} with \
                         {}; the two encoders' embeddings cannot be concatenated",
                        chunks.len(),
                        view.tokenizer().path().display()
                    ),
                })
            }
            Some(_) => {}
        }
        let mut zs = Vec::with_capacity(chunks.len());
        for (index, chunk) in chunks.iter().enumerate() {
            let mut output = view.run(&chunk.ids, None)?;
            if index == 0 && pooled.is_none() {
                pooled = output.text_embeds.take();
            }
            let z = view.hidden_state(&mut output, layer_from_end)?;
            zs.push(emphasis(&z, &chunk.weights)?);
        }
        per_encoder.push(Tensor::f_cat(&zs, 1)?);
    }
    let kind = views
        .first()
        .map_or(Kind::Float, |view| view.model.token_embedding().kind());
    Ok(PromptEmbeddings {
        prompt_embeds: Tensor::f_cat(&per_encoder, -1)?.f_to_kind(kind)?,
        pooled_prompt_embeds: pooled.ok_or_else(no_projection)?,
    })
}

/// A1111's "Original" emphasis on one chunk `z` (`[1, tokens, hidden]`).
fn emphasis(z: &Tensor, weights: &[f64]) -> Result<Tensor> {
    let original_mean = z.f_mean(None::<Kind>)?;
    let count = i64::try_from(weights.len()).unwrap_or(i64::MAX);
    let multipliers = Tensor::from_slice(weights)
        .f_to_kind(Kind::Float)?
        .f_reshape([1, count, 1])?
        .f_expand(z.size(), false)?;
    let z = z.f_mul(&multipliers)?;
    let new_mean = z.f_mean(None::<Kind>)?;
    Ok(z.f_mul(&original_mean.f_div(&new_mean)?)?)
}

/// Extends the shorter of the positive and negative embeddings with chunks of the empty
/// prompt's (`hidden_states[-2]`), so both have as many tokens.
pub(crate) fn pad_to_same_length(
    views: &[EncoderView],
    positive: PromptEmbeddings,
    negative: PromptEmbeddings,
) -> Result<(PromptEmbeddings, PromptEmbeddings)> {
    let length = |e: &PromptEmbeddings| e.prompt_embeds.size()[1];
    if length(&positive) == length(&negative) {
        return Ok((positive, negative));
    }
    let empty = encode(views, "", PENULTIMATE)?.prompt_embeds;
    let chunk = empty.size()[1];
    let target = length(&positive).max(length(&negative));
    let pad = |e: PromptEmbeddings| -> Result<PromptEmbeddings> {
        let missing = (target - length(&e)) / chunk;
        if missing == 0 {
            return Ok(e);
        }
        let mut parts = vec![e.prompt_embeds];
        parts.extend((0..missing).map(|_| empty.shallow_clone()));
        Ok(PromptEmbeddings {
            prompt_embeds: Tensor::f_cat(&parts, 1)?,
            pooled_prompt_embeds: e.pooled_prompt_embeds,
        })
    };
    Ok((pad(positive)?, pad(negative)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(prompt: &str) -> Vec<(String, f64)> {
        parse(prompt)
            .unwrap()
            .into_iter()
            .map(|p| (p.text, p.weight))
            .collect()
    }

    #[test]
    fn a1111_doc_examples() {
        assert_eq!(pairs("normal text"), vec![("normal text".into(), 1.0)]);
        assert_eq!(
            pairs("an (important) word"),
            vec![
                ("an ".into(), 1.0),
                ("important".into(), 1.1),
                (" word".into(), 1.0)
            ]
        );
        assert_eq!(pairs("(unbalanced"), vec![("unbalanced".into(), 1.1)]);
        assert_eq!(pairs("\\(literal\\]"), vec![("(literal]".into(), 1.0)]);
        assert_eq!(
            pairs("(unnecessary)(parens)"),
            vec![("unnecessaryparens".into(), 1.1)]
        );
        let hill = 0.5 * 1.1;
        assert_eq!(
            pairs("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            vec![
                ("a ".into(), 1.0),
                ("house".into(), 1.3 * 1.1 * 1.1),
                (" ".into(), 1.1),
                ("on".into(), 1.0 / 1.1 * 1.1),
                (" a ".into(), 1.1),
                ("hill".into(), hill),
                (", sun, ".into(), 1.1),
                ("sky".into(), 1.1 * 1.1 * 1.1 * 1.1),
                (".".into(), 1.1),
            ]
        );
    }

    #[test]
    fn break_splits_and_bad_weights_fail() {
        assert_eq!(
            pairs("a cat BREAK a dog"),
            vec![
                ("a cat".into(), 1.0),
                ("BREAK".into(), -1.0),
                ("a dog".into(), 1.0)
            ]
        );
        assert_eq!(pairs("BREAKFAST"), vec![("BREAKFAST".into(), 1.0)]);
        assert_eq!(pairs(""), vec![(String::new(), 1.0)]);
        assert_eq!(pairs("a:1.2)"), vec![("a:1.2)".into(), 1.0)]);
        assert!(parse("(a:1.2.3)").is_err());
    }
}
