//! `prompt_attention: "compel"`: the `compel` library (2.5.1) in its SDXL mode,
//!
//! ```python
//! Compel(tokenizer=[pipe.tokenizer, pipe.tokenizer_2],
//!        text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
//!        returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
//!        requires_pooled=[False, True])
//! ```
//!
//! (with `textual_inversion_manager=DiffusersTextualInversionManager(pipe)` when the request has
//! textual inversions), its arithmetic reproduced op for op. Per encoder ("provider"):
//!
//! 1. the prompt parses into weighted fragments ([`compel_syntax`](super::compel_syntax));
//! 2. each fragment is tokenized alone (truncated to `model_max_length - 2` tokens, no BOS/EOS;
//!    with textual inversions, decoded, `maybe_convert_prompt`ed and encoded again with the
//!    *first* tokenizer, as compel's diffusers manager does), the tokens concatenated, each with
//!    its fragment's weight; the first `model_max_length - 2` make one chunk
//!    `[BOS] tokens [EOS] pad…` (weights 1 for the added tokens), attention mask all ones;
//! 3. `z = hidden_states[-2]` of that chunk; if a weight differs from 1,
//!    `z = where(w == 1, z, empty + (z - empty) * w)` with `empty` the hidden state of
//!    `[BOS, EOS, pad…]` and `w` float32 per token;
//! 4. for each fragment weighted below 1 (in order), the same with that fragment's tokens masked
//!    out of the attention (`attention_mask = 0` there: the CLIP encoder then runs with the boolean
//!    causal-and-padding mask), blended in with lerp weight `tan((1 - max(w, 1e-5)) · π/2)`;
//!    the blend is `Σ e_i · (l_i / Σ l)` with `l_0 = 1` for the unmasked embedding;
//! 5. the result is cast to the encoder's dtype; the encoders' results are concatenated on the
//!    features.
//!
//! The pooled embedding is `text_embeds` of the second encoder for the *raw* prompt text (syntax
//! characters included), tokenized as `tokenizer(prompt, truncation=True)` padded with the
//! tokenizer's pad token, without an attention mask. compel offers no clip skip; with `clip_skip`
//! this worker (and the oracle, which patches compel's hidden-state pick) reads
//! `hidden_states[-(clip_skip + 2)]` in steps 3–4 for the positive prompt, `empty` included.

use std::f64::consts::PI;

use tch::{Kind, Tensor};

use super::compel_syntax::{self, Fragment};
use super::textual_inversion::maybe_convert_prompt;
use super::{no_projection, ClipTokenizer, EncoderView, PromptEmbeddings};
use crate::error::{Error, Result};

/// Encodes `prompt` as compel does (see the module docs).
pub(crate) fn encode(
    views: &[EncoderView],
    prompt: &str,
    layer_from_end: usize,
    with_textual_inversions: bool,
) -> Result<PromptEmbeddings> {
    let fragments = compel_syntax::parse(prompt)?;
    let manager = if with_textual_inversions {
        views.first().map(EncoderView::tokenizer)
    } else {
        None
    };
    let mut embeds = Vec::with_capacity(views.len());
    for view in views {
        embeds.push(provider_embeddings(
            view,
            &fragments,
            layer_from_end,
            manager,
        )?);
    }
    // requires_pooled=[False, True]: the second provider's pooled embeddings.
    let pooled_view = views
        .iter()
        .rev()
        .find(|view| view.model.has_projection())
        .ok_or_else(no_projection)?;
    let ids = padded_token_ids(pooled_view, prompt, manager)?;
    let mut output = pooled_view.run(&ids, None)?;
    let pooled_prompt_embeds = output.text_embeds.take().ok_or_else(no_projection)?;
    Ok(PromptEmbeddings {
        prompt_embeds: Tensor::f_cat(&embeds, -1)?,
        pooled_prompt_embeds,
    })
}

/// `get_token_ids([text], include_start_and_end_markers=False)` with `truncate=True`.
fn token_ids(view: &EncoderView, text: &str, manager: Option<&ClipTokenizer>) -> Result<Vec<i64>> {
    let limit = view.tokenizer().model_max_length() - 2;
    let mut ids = view.tokenizer().encode_plain(text)?;
    ids.truncate(limit);
    if let Some(first_tokenizer) = manager {
        // DiffusersTextualInversionManager.expand_textual_inversion_token_ids_if_necessary.
        if !ids.is_empty() {
            let decoded = first_tokenizer.decode(&ids)?;
            let converted = maybe_convert_prompt(&decoded, first_tokenizer)?;
            ids = first_tokenizer.encode_plain(&converted)?;
        }
        ids.truncate(limit);
    }
    Ok(ids)
}

/// `get_token_ids([text], padding="max_length", truncation_override=True)`.
fn padded_token_ids(
    view: &EncoderView,
    text: &str,
    manager: Option<&ClipTokenizer>,
) -> Result<Vec<i64>> {
    let tokenizer = view.tokenizer();
    let mut ids = vec![i64::from(tokenizer.bos_token_id())];
    ids.extend(token_ids(view, text, manager)?);
    ids.push(i64::from(tokenizer.eos_token_id()));
    ids.resize(
        tokenizer.model_max_length(),
        i64::from(tokenizer.pad_token_id()),
    );
    Ok(ids)
}

/// `EmbeddingsProvider.get_embeddings_for_weighted_prompt_fragments` for one prompt.
fn provider_embeddings(
    view: &EncoderView,
    fragments: &[Fragment],
    layer_from_end: usize,
    manager: Option<&ClipTokenizer>,
) -> Result<Tensor> {
    let tokenizer = view.tokenizer();
    let max = tokenizer.model_max_length();
    let per_fragment: Vec<Vec<i64>> = fragments
        .iter()
        .map(|fragment| token_ids(view, &fragment.text, manager))
        .collect::<Result<_>>()?;
    // get_token_ids_and_expand_weights + _chunk_and_pad_token_ids (truncating: one chunk).
    let mut content = Vec::new();
    let mut content_weights = Vec::new();
    for (ids, fragment) in per_fragment.iter().zip(fragments) {
        content.extend_from_slice(ids);
        content_weights.extend(std::iter::repeat_n(fragment.weight, ids.len()));
    }
    content.truncate(max - 2);
    content_weights.truncate(max - 2);
    let mut ids = vec![i64::from(tokenizer.bos_token_id())];
    ids.extend_from_slice(&content);
    ids.push(i64::from(tokenizer.eos_token_id()));
    let mut weights = vec![1.0];
    weights.extend_from_slice(&content_weights);
    weights.push(1.0);
    ids.resize(max, i64::from(tokenizer.pad_token_id()));
    weights.resize(max, 1.0);
    let mask = vec![1i64; max];

    let mut empty = None;
    let base = weighted_embedding(view, &ids, &weights, &mask, layer_from_end, &mut empty)?;
    let mut embeddings = vec![base.f_unsqueeze(0)?];
    let mut lerp_weights = vec![1.0f64];
    let ranges = fragment_ranges(tokenizer, &ids, &per_fragment, fragments)?;
    for (index, range) in ranges.iter().enumerate() {
        let weight = fragments[index].weight;
        if weight >= 1.0 {
            continue;
        }
        let Some((start, end)) = range else {
            return Err(Error::Unsupported {
                path: "/data/prompt".into(),
                reason: format!(
                    "compel cannot down-weight the fragment {:?}: it has no tokens",
                    fragments[index].text
                ),
            });
        };
        let mut without = mask.clone();
        for value in &mut without[*start..=*end] {
            *value = 0;
        }
        let embedding =
            weighted_embedding(view, &ids, &weights, &without, layer_from_end, &mut empty)?;
        embeddings.push(embedding.f_unsqueeze(0)?);
        let weight = weight.max(1e-5);
        lerp_weights.push(((1.0 - weight) * PI / 2.0).tan());
    }
    // apply_embedding_weights(embeddings, per_embedding_weights, normalize=True).
    let embeddings = Tensor::f_cat(&embeddings, 1)?;
    let lerp = Tensor::from_slice(&lerp_weights).f_to_kind(embeddings.kind())?;
    let lerp = lerp.f_div(&lerp.f_sum(None::<Kind>)?)?;
    let reshaped = lerp.f_reshape([-1, 1, 1])?;
    let blended =
        embeddings
            .f_mul(&reshaped)?
            .f_sum_dim_intlist(&[1i64][..], false, None::<Kind>)?;
    let lerped = blended.f_squeeze_dim(0)?;
    Ok(lerped
        .f_unsqueeze(0)?
        .f_to_kind(view.model.token_embedding().kind())?)
}

/// `build_weighted_embedding_tensor` for one chunk; `empty` caches the provider's `empty_z`.
fn weighted_embedding(
    view: &EncoderView,
    ids: &[i64],
    weights: &[f64],
    mask: &[i64],
    layer_from_end: usize,
    empty: &mut Option<Tensor>,
) -> Result<Tensor> {
    let mut output = view.run(ids, Some(mask))?;
    let z = view.hidden_state(&mut output, layer_from_end)?;
    let count = to_i64(weights.len());
    let expanded = Tensor::from_slice(weights)
        .f_to_kind(Kind::Float)?
        .f_reshape([count, 1])?
        .f_expand(z.size(), false)?;
    let identity = expanded.f_eq(1.0)?;
    if identity.f_all()?.int64_value(&[]) != 0 {
        return Ok(z);
    }
    let empty_z = match empty {
        Some(empty_z) => empty_z.shallow_clone(),
        None => {
            let tokenizer = view.tokenizer();
            let mut empty_ids = vec![
                i64::from(tokenizer.bos_token_id()),
                i64::from(tokenizer.eos_token_id()),
            ];
            empty_ids.resize(
                tokenizer.model_max_length(),
                i64::from(tokenizer.pad_token_id()),
            );
            let mut output = view.run(&empty_ids, None)?;
            let empty_z = view.hidden_state(&mut output, layer_from_end)?;
            *empty = Some(empty_z.shallow_clone());
            empty_z
        }
    };
    let delta = z.f_sub(&empty_z)?;
    let weighted = empty_z.f_add(&delta.f_mul(&expanded)?)?;
    Ok(z.f_where_self(&identity, &weighted)?)
}

/// `_get_token_ranges_for_fragments` with `truncate=True`: each fragment's first and last
/// position in the chunk, `None` for a fragment without tokens.
fn fragment_ranges(
    tokenizer: &ClipTokenizer,
    ids: &[i64],
    per_fragment: &[Vec<i64>],
    fragments: &[Fragment],
) -> Result<Vec<Option<(usize, usize)>>> {
    let max = tokenizer.model_max_length();
    let last = ids.len() - 1;
    let mut ranges = Vec::with_capacity(per_fragment.len());
    let mut start = 0usize;
    for (index, fragment_ids) in per_fragment.iter().enumerate() {
        if fragment_ids.is_empty() {
            ranges.push(None);
            continue;
        }
        if start >= max - 1 {
            break;
        }
        loop {
            if start >= last {
                start = last;
                break;
            }
            if ids[start] == fragment_ids[0] {
                break;
            }
            start += 1;
        }
        let mut end = start;
        let mut matched = 0;
        loop {
            if end >= last {
                end = last;
                break;
            }
            if ids[end] == fragment_ids[matched] {
                matched += 1;
                if matched == fragment_ids.len() {
                    break;
                }
                end += 1;
            } else {
                return Err(Error::Unsupported {
                    path: "/data/prompt".into(),
                    reason: format!(
                        "compel: token sequence mismatch for fragment {index} {:?}",
                        fragments[index].text
                    ),
                });
            }
        }
        ranges.push(Some((start, end)));
        start = end + 1;
    }
    Ok(ranges)
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
