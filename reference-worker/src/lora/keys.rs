//! diffusers 0.42.1's LoRA key conversions, ported line by line so that every key lands on the
//! module diffusers puts it on (or fails where diffusers fails):
//!
//! - `_maybe_map_sgm_blocks_to_diffusers` (kohya-ss SDXL files name blocks as SGM's UNet does:
//!   `input_blocks_4_1_…`), including the order of the dict it builds, which decides diffusers'
//!   tie-breaks between equally common alphas (Python's set iteration order of the block ids);
//! - `_convert_non_diffusers_lora_to_diffusers` with `_convert_unet_lora_key`,
//!   `_convert_text_encoder_lora_key` and `_get_alpha_name`;
//! - `convert_unet_state_dict_to_peft`, `convert_state_dict_to_diffusers` and
//!   `convert_state_dict_to_peft` (`utils/state_dict_utils.py`).
//!
//! Where diffusers drops keys with only a log message (SGM and diffusers block names mixed), this
//! module refuses the file instead: nothing is silently skipped.

use std::collections::{HashMap, HashSet};

use super::Component;

/// Why a key cannot be converted: the file's key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyProblem {
    pub(crate) key: String,
    pub(crate) message: String,
}

impl KeyProblem {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

const SGM_PATTERNS: [&str; 3] = ["input_blocks", "middle_block", "output_blocks"];
const NOT_SGM_PATTERNS: [&str; 3] = ["down_blocks", "mid_block", "up_blocks"];
const INNER_BLOCK_MAP: [&str; 3] = ["resnets", "attentions", "upsamplers"];
const DELIMITER: &str = "_";
const BLOCK_SLICE_POS: usize = 5;

/// `_maybe_map_sgm_blocks_to_diffusers(state_dict, unet_config)` on the keys of a kohya-ss file,
/// in the file's order (safetensors' `load_file` gives them sorted). Returns `(new key, file
/// key)` in the order of the dict diffusers builds. `layers_per_block` is config.json's value
/// when it is one number (diffusers does arithmetic on it; a list fails there).
pub(crate) fn map_sgm_blocks(
    keys: &[String],
    layers_per_block: Option<usize>,
) -> Result<Vec<(String, String)>, KeyProblem> {
    let mut first_sgm = None;
    let mut first_not_sgm = None;
    for key in keys {
        if SGM_PATTERNS.iter().any(|p| key.contains(p)) {
            first_sgm.get_or_insert(key);
        } else if NOT_SGM_PATTERNS.iter().any(|p| key.contains(p)) {
            first_not_sgm.get_or_insert(key);
        }
    }
    let Some(first_sgm) = first_sgm else {
        return Ok(keys.iter().map(|k| (k.clone(), k.clone())).collect());
    };
    if let Some(first_not_sgm) = first_not_sgm {
        return Err(KeyProblem::new(
            first_sgm,
            format!(
                "the file mixes SGM block names (input_blocks, middle_block, output_blocks) with \
                 diffusers ones (`{first_not_sgm}`); diffusers would drop every SGM key and load \
                 the rest, so the file is refused"
            ),
        ));
    }
    let Some(layers_per_block) = layers_per_block else {
        return Err(KeyProblem::new(
            first_sgm,
            "SGM block names need the UNet's layers_per_block as one number (diffusers computes \
             block indices from it), but config.json gives a list",
        ));
    };
    let per_block = layers_per_block as i64 + 1;

    let mut remaining: Vec<&String> = Vec::new();
    let mut new_keys: Vec<(String, String)> = Vec::new();
    let (mut input_ids, mut middle_ids, mut output_ids) = (Vec::new(), Vec::new(), Vec::new());
    for layer in keys {
        let passes = layer.contains("text")
            || !SGM_PATTERNS.iter().any(|p| layer.contains(p))
            || layer.contains(&format!("input_blocks{DELIMITER}0{DELIMITER}0"));
        if passes {
            new_keys.push((layer.clone(), layer.clone()));
            continue;
        }
        remaining.push(layer);
        let parts: Vec<&str> = layer.split(DELIMITER).collect();
        let id_part = parts[..BLOCK_SLICE_POS.min(parts.len())]
            .last()
            .copied()
            .unwrap_or_default();
        let layer_id = python_int(id_part).ok_or_else(|| {
            KeyProblem::new(
                layer,
                format!("block number `{id_part}` is not a number (diffusers: int() fails)"),
            )
        })?;
        if layer.contains(SGM_PATTERNS[0]) {
            input_ids.push(layer_id);
        } else if layer.contains(SGM_PATTERNS[1]) {
            middle_ids.push(layer_id);
        } else {
            output_ids.push(layer_id);
        }
    }

    let blocks_of = |pattern: &str, ids: &[i64]| -> Vec<(i64, Vec<&String>)> {
        python_set_order(ids)
            .into_iter()
            .map(|id| {
                let needle = format!("{pattern}{DELIMITER}{id}");
                let members = remaining
                    .iter()
                    .copied()
                    .filter(|key| key.contains(&needle))
                    .collect();
                (id, members)
            })
            .collect()
    };
    let input_blocks = blocks_of(SGM_PATTERNS[0], &input_ids);
    let middle_blocks = blocks_of(SGM_PATTERNS[1], &middle_ids);
    let output_blocks = blocks_of(SGM_PATTERNS[2], &output_ids);

    let mut popped: HashSet<String> = HashSet::new();
    let mut pop = |key: &str| -> Result<(), KeyProblem> {
        if !popped.insert(key.to_owned()) {
            return Err(KeyProblem::new(
                key,
                "two SGM blocks claim this key (diffusers matches block numbers as substrings \
                 and fails with a KeyError)",
            ));
        }
        Ok(())
    };
    let inner_index = |key: &str, parts: &[&str]| -> Result<i64, KeyProblem> {
        let part = parts.get(BLOCK_SLICE_POS).copied().ok_or_else(|| {
            KeyProblem::new(key, "too few `_`-separated parts for an SGM block name")
        })?;
        python_int(part).ok_or_else(|| {
            KeyProblem::new(key, format!("inner block number `{part}` is not a number"))
        })
    };
    let inner_block = |key: &str, index: i64| -> Result<&'static str, KeyProblem> {
        python_index(&INNER_BLOCK_MAP, index).ok_or_else(|| {
            KeyProblem::new(
                key,
                format!("inner block number {index} is not one of resnets, attentions, upsamplers"),
            )
        })
    };

    for (i, members) in &input_blocks {
        let block_id = (i - 1).div_euclid(per_block);
        let layer_in_block_id = (i - 1).rem_euclid(per_block);
        for key in members {
            let parts: Vec<&str> = key.split(DELIMITER).collect();
            let has_op = key.contains("op");
            let inner = if has_op {
                "downsamplers"
            } else {
                inner_block(key, inner_index(key, &parts)?)?
            };
            if has_op {
                // diffusers still parses the inner block number
                inner_index(key, &parts)?;
            }
            let layer = if has_op {
                "0".to_owned()
            } else {
                layer_in_block_id.to_string()
            };
            let new_key = join_parts(&parts, 4, &[&block_id.to_string(), inner, &layer], 6);
            pop(key)?;
            new_keys.push((new_key, (*key).clone()));
        }
    }
    for (i, members) in &middle_blocks {
        let key_part: [&str; 2] = match i {
            0 => [INNER_BLOCK_MAP[0], "0"],
            1 => [INNER_BLOCK_MAP[1], "0"],
            2 => [INNER_BLOCK_MAP[0], "1"],
            other => {
                let key = members.first().map_or("", |k| k.as_str());
                return Err(KeyProblem::new(
                    key,
                    format!("invalid middle block id {other}"),
                ));
            }
        };
        for key in members {
            let parts: Vec<&str> = key.split(DELIMITER).collect();
            let new_key = join_parts(&parts, 4, &key_part, 5);
            pop(key)?;
            new_keys.push((new_key, (*key).clone()));
        }
    }
    for (i, members) in &output_blocks {
        let block_id = i.div_euclid(per_block);
        let layer_in_block_id = i.rem_euclid(per_block);
        for key in members {
            let parts: Vec<&str> = key.split(DELIMITER).collect();
            let inner_index = inner_index(key, &parts)?;
            let inner = inner_block(key, inner_index)?;
            let layer = if inner_index < 2 {
                layer_in_block_id.to_string()
            } else {
                "0".to_owned()
            };
            let new_key = join_parts(&parts, 4, &[&block_id.to_string(), inner, &layer], 6);
            pop(key)?;
            new_keys.push((new_key, (*key).clone()));
        }
    }
    if let Some(left) = remaining.iter().find(|key| !popped.contains(key.as_str())) {
        return Err(KeyProblem::new(
            left,
            "no SGM block claims this key (diffusers: \"all state dict entries have to be \
             converted\")",
        ));
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (new_key, key) in &new_keys {
        if let Some(other) = seen.insert(new_key, key) {
            return Err(KeyProblem::new(
                key,
                format!("maps to `{new_key}` as `{other}` does"),
            ));
        }
    }
    Ok(new_keys)
}

/// `delimiter.join(parts[:head] + middle + parts[tail:])`.
fn join_parts(parts: &[&str], head: usize, middle: &[&str], tail: usize) -> String {
    let mut joined: Vec<&str> = parts[..head.min(parts.len())].to_vec();
    joined.extend_from_slice(middle);
    joined.extend_from_slice(&parts[tail.min(parts.len())..]);
    joined.join(DELIMITER)
}

/// Python's `int(text)` for the ASCII forms block numbers take (optional sign, digits).
fn python_int(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `list[index]` with Python's negative indices.
fn python_index<T: Copy>(list: &[T], index: i64) -> Option<T> {
    let len = list.len() as i64;
    let position = if index < 0 { len + index } else { index };
    usize::try_from(position)
        .ok()
        .and_then(|p| list.get(p).copied())
}

/// The iteration order of a CPython 3.11 `set` of ints after `add`ing `inserted` in turn
/// (`setobject.c`: `set_add_entry`, `set_table_resize`, `set_insert_clean`; `hash(i) == i` but
/// `hash(-1) == -2`). diffusers iterates the sets of SGM block ids, so its dict order, and with
/// it the tie-break between equally common alphas, follows this order.
pub(crate) fn python_set_order(inserted: &[i64]) -> Vec<i64> {
    const MINSIZE: usize = 8;
    const LINEAR_PROBES: usize = 9;
    const PERTURB_SHIFT: u32 = 5;
    let hash = |key: i64| -> u64 { (if key == -1 { -2 } else { key }) as u64 };

    fn insert_clean(table: &mut [Option<i64>], key: i64, hash: u64) {
        let mask = table.len() - 1;
        let mut perturb = hash;
        let mut i = (hash as usize) & mask;
        loop {
            if table[i].is_none() {
                table[i] = Some(key);
                return;
            }
            if i + LINEAR_PROBES <= mask {
                for j in 1..=LINEAR_PROBES {
                    if table[i + j].is_none() {
                        table[i + j] = Some(key);
                        return;
                    }
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i
                .wrapping_mul(5)
                .wrapping_add(1)
                .wrapping_add(perturb as usize))
                & mask;
        }
    }

    let mut table: Vec<Option<i64>> = vec![None; MINSIZE];
    let mut used = 0usize;
    for &key in inserted {
        let key_hash = hash(key);
        let mask = table.len() - 1;
        let mut perturb = key_hash;
        let mut i = (key_hash as usize) & mask;
        let slot = 'search: loop {
            let probes = if i + LINEAR_PROBES <= mask {
                LINEAR_PROBES
            } else {
                0
            };
            for j in 0..=probes {
                match table[i + j] {
                    None => break 'search Some(i + j),
                    Some(existing) if existing == key => break 'search None,
                    Some(_) => {}
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i
                .wrapping_mul(5)
                .wrapping_add(1)
                .wrapping_add(perturb as usize))
                & mask;
        };
        let Some(slot) = slot else { continue };
        table[slot] = Some(key);
        used += 1;
        // No deletions: fill == used.
        if used * 5 >= mask * 3 {
            let minused = used * 4;
            let mut size = MINSIZE;
            while size <= minused {
                size <<= 1;
            }
            let old = std::mem::replace(&mut table, vec![None; size]);
            for key in old.into_iter().flatten() {
                insert_clean(&mut table, key, hash(key));
            }
        }
    }
    table.into_iter().flatten().collect()
}

/// One kohya-ss module after `_convert_non_diffusers_lora_to_diffusers`: the component, the
/// diffusers-format names of its halves, its file keys, and its `.alpha` under the name
/// `_get_alpha_name` gives it.
#[derive(Debug, Clone)]
pub(crate) struct KohyaModule {
    pub(crate) component: Component,
    /// e.g. `down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight`
    pub(crate) down_name: String,
    pub(crate) up_name: String,
    pub(crate) down_key: String,
    pub(crate) up_key: String,
    /// (`unet.down_blocks….alpha`, file key of the `.alpha` tensor)
    pub(crate) alpha: Option<(String, String)>,
}

/// `_convert_non_diffusers_lora_to_diffusers` on the SGM-mapped `(key, file key)` list: the
/// modules in diffusers' processing order. Keys it leaves over (an up without its down, an alpha
/// without its module, other suffixes) are an error, as in diffusers.
pub(crate) fn convert_kohya(mapped: &[(String, String)]) -> Result<Vec<KohyaModule>, KeyProblem> {
    let file_keys: HashMap<&str, &String> = mapped
        .iter()
        .map(|(key, file_key)| (key.as_str(), file_key))
        .collect();
    let mut consumed: HashSet<String> = HashSet::new();
    let mut seen_names: HashMap<(Component, String), String> = HashMap::new();
    let mut modules: Vec<KohyaModule> = Vec::new();
    for (key, file_key) in mapped {
        if !key.ends_with("lora_down.weight") {
            continue;
        }
        let lora_name = key.split('.').next().unwrap_or_default();
        let up = format!("{lora_name}.lora_up.weight");
        let alpha = format!("{lora_name}.alpha");
        let (component, down_name) = if lora_name.starts_with("lora_unet_") {
            (Component::Unet, convert_unet_lora_key(key))
        } else if lora_name.starts_with("lora_te_") || lora_name.starts_with("lora_te1_") {
            (
                Component::TextEncoder,
                convert_text_encoder_lora_key(key, lora_name),
            )
        } else if lora_name.starts_with("lora_te2_") {
            (
                Component::TextEncoder2,
                convert_text_encoder_lora_key(key, lora_name),
            )
        } else {
            return Err(KeyProblem::new(
                file_key,
                "not a kohya-ss module (lora_unet_, lora_te_, lora_te1_ or lora_te2_)",
            ));
        };
        let Some(up_key) = file_keys
            .get(up.as_str())
            .filter(|_| !consumed.contains(&up))
            .map(|k| (*k).clone())
        else {
            return Err(KeyProblem::new(
                file_key,
                format!("has no `{up}` (every lora_down needs its lora_up)"),
            ));
        };
        consumed.insert(key.clone());
        consumed.insert(up);
        let up_name = down_name.replace(".down.", ".up.");
        let alpha_entry = match file_keys.get(alpha.as_str()) {
            Some(alpha_file_key) => {
                let entry = (alpha_name(&down_name, component), (*alpha_file_key).clone());
                consumed.insert(alpha);
                Some(entry)
            }
            None => None,
        };
        if let Some(other) = seen_names.insert((component, down_name.clone()), file_key.clone()) {
            return Err(KeyProblem::new(
                file_key,
                format!(
                    "converts to `{down_name}` as `{other}` does (diffusers would keep only one)"
                ),
            ));
        }
        modules.push(KohyaModule {
            component,
            down_name,
            up_name,
            down_key: file_key.clone(),
            up_key,
            alpha: alpha_entry,
        });
    }
    let left: Vec<&String> = mapped
        .iter()
        .filter(|(key, _)| !consumed.contains(key))
        .map(|(_, file_key)| file_key)
        .collect();
    // An up without its down says most; then an orphaned alpha; then anything else.
    let rank = |key: &String| {
        if key.ends_with(".lora_up.weight") {
            0
        } else if key.ends_with(".alpha") {
            1
        } else {
            2
        }
    };
    if let Some(key) = left.iter().copied().min_by_key(|key| rank(key)) {
        let message = match rank(key) {
            0 => "a lora_up without its lora_down",
            1 => "an alpha without its lora_down/lora_up module",
            _ => "not a kohya-ss LoRA tensor (.lora_down.weight, .lora_up.weight, .alpha)",
        };
        return Err(KeyProblem::new(key, message));
    }
    Ok(modules)
}

/// `_convert_unet_lora_key`.
pub(crate) fn convert_unet_lora_key(key: &str) -> String {
    let mut name = key.replace("lora_unet_", "").replace('_', ".");
    let replace = |name: &mut String, from: &str, to: &str| *name = name.replace(from, to);
    replace(&mut name, "input.blocks.0.0", "conv_in");
    replace(&mut name, "out.2", "conv_out");
    for (from, to) in [
        ("input.blocks", "down_blocks"),
        ("down.blocks", "down_blocks"),
        ("middle.block", "mid_block"),
        ("mid.block", "mid_block"),
        ("output.blocks", "up_blocks"),
        ("up.blocks", "up_blocks"),
        ("transformer.blocks", "transformer_blocks"),
        ("to.q.lora", "to_q_lora"),
        ("to.k.lora", "to_k_lora"),
        ("to.v.lora", "to_v_lora"),
        ("to.out.0.lora", "to_out_lora"),
        ("proj.in", "proj_in"),
        ("proj.out", "proj_out"),
        ("emb.layers", "time_emb_proj"),
        ("conv.in", "conv_in"),
        ("conv.out", "conv_out"),
        ("time.embed.0", "time_embedding.linear_1"),
        ("time.embed.2", "time_embedding.linear_2"),
        ("label.emb.0.0", "add_embedding.linear_1"),
        ("label.emb.0.2", "add_embedding.linear_2"),
        ("time.embedding.linear.1", "time_embedding.linear_1"),
        ("time.embedding.linear.2", "time_embedding.linear_2"),
    ] {
        replace(&mut name, from, to);
    }
    if name.contains("emb") && !name.contains("time.emb.proj") {
        name = remove_last_dotted_number(&name);
    }
    if name.contains(".in.") {
        replace(&mut name, "in.layers.2", "conv1");
    }
    if name.contains(".out.") {
        replace(&mut name, "out.layers.3", "conv2");
    }
    if name.contains("downsamplers") || name.contains("upsamplers") {
        replace(&mut name, "op", "conv");
    }
    if name.contains("skip") {
        replace(&mut name, "skip.connection", "conv_shortcut");
    }
    if name.contains("time.emb.proj") {
        replace(&mut name, "time.emb.proj", "time_emb_proj");
    }
    if name.contains("conv.shortcut") {
        replace(&mut name, "conv.shortcut", "conv_shortcut");
    }
    if name.contains("transformer_blocks") && (name.contains("attn1") || name.contains("attn2")) {
        replace(&mut name, "attn1", "attn1.processor");
        replace(&mut name, "attn2", "attn2.processor");
    }
    name
}

/// `re.sub(r"\.\d+(?=\D*$)", "", name, count=1)`: drops the last run of digits when a `.` comes
/// right before it (e.g. `time_emb_proj.1.lora…` → `time_emb_proj.lora…`).
fn remove_last_dotted_number(name: &str) -> String {
    let bytes = name.as_bytes();
    let Some(last_digit) = bytes.iter().rposition(u8::is_ascii_digit) else {
        return name.to_owned();
    };
    let start = bytes[..=last_digit]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    if start == 0 || bytes[start - 1] != b'.' {
        return name.to_owned();
    }
    format!("{}{}", &name[..start - 1], &name[last_digit + 1..])
}

/// `_convert_text_encoder_lora_key`.
pub(crate) fn convert_text_encoder_lora_key(key: &str, lora_name: &str) -> String {
    let key_to_replace = if lora_name.starts_with("lora_te_") {
        "lora_te_"
    } else if lora_name.starts_with("lora_te1_") {
        "lora_te1_"
    } else {
        "lora_te2_"
    };
    let mut name = key.replace(key_to_replace, "").replace('_', ".");
    for (from, to) in [
        ("text.model", "text_model"),
        ("self.attn", "self_attn"),
        ("q.proj.lora", "to_q_lora"),
        ("k.proj.lora", "to_k_lora"),
        ("v.proj.lora", "to_v_lora"),
        ("out.proj.lora", "to_out_lora"),
        ("text.projection", "text_projection"),
    ] {
        name = name.replace(from, to);
    }
    if !(name.contains("self_attn") || name.contains("text_projection")) && name.contains("mlp") {
        name = name.replace(".lora.", ".lora_linear_layer.");
    }
    name
}

/// `_get_alpha_name`: `unet.` / `text_encoder.` / `text_encoder_2.` + the part of the module's
/// diffusers name before `.lora.` (the whole name when it has none, e.g. the attention
/// projections' `to_q_lora.down.weight`) + `.alpha`.
fn alpha_name(down_name: &str, component: Component) -> String {
    let stem = down_name.split(".lora.").next().unwrap_or(down_name);
    format!("{}.{stem}.alpha", component.name())
}

/// `KEYS_TO_ALWAYS_REPLACE` then the first pattern of `mapping` found in the key
/// (`convert_state_dict`).
fn convert_with(name: &str, mapping: &[(&str, &str)]) -> String {
    let mut name = name.replace(".processor.", ".");
    if let Some((from, to)) = mapping.iter().find(|(from, _)| name.contains(from)) {
        name = name.replace(from, to);
    }
    name
}

const UNET_TO_DIFFUSERS: [(&str, &str); 11] = [
    (".to_out_lora.up", ".to_out.0.lora_B"),
    (".to_out_lora.down", ".to_out.0.lora_A"),
    (".to_q_lora.down", ".to_q.lora_A"),
    (".to_q_lora.up", ".to_q.lora_B"),
    (".to_k_lora.down", ".to_k.lora_A"),
    (".to_k_lora.up", ".to_k.lora_B"),
    (".to_v_lora.down", ".to_v.lora_A"),
    (".to_v_lora.up", ".to_v.lora_B"),
    (".lora.up", ".lora_B"),
    (".lora.down", ".lora_A"),
    (
        ".to_out.lora_magnitude_vector",
        ".to_out.0.lora_magnitude_vector",
    ),
];

const DIFFUSERS_TO_PEFT: [(&str, &str); 12] = [
    (".q_proj.lora_linear_layer.up", ".q_proj.lora_B"),
    (".q_proj.lora_linear_layer.down", ".q_proj.lora_A"),
    (".k_proj.lora_linear_layer.up", ".k_proj.lora_B"),
    (".k_proj.lora_linear_layer.down", ".k_proj.lora_A"),
    (".v_proj.lora_linear_layer.up", ".v_proj.lora_B"),
    (".v_proj.lora_linear_layer.down", ".v_proj.lora_A"),
    (".out_proj.lora_linear_layer.up", ".out_proj.lora_B"),
    (".out_proj.lora_linear_layer.down", ".out_proj.lora_A"),
    (".lora_linear_layer.up", ".lora_B"),
    (".lora_linear_layer.down", ".lora_A"),
    (
        "text_projection.lora.down.weight",
        "text_projection.lora_A.weight",
    ),
    (
        "text_projection.lora.up.weight",
        "text_projection.lora_B.weight",
    ),
];

const DIFFUSERS_OLD_TO_PEFT: [(&str, &str); 10] = [
    (".to_q_lora.up", ".q_proj.lora_B"),
    (".to_q_lora.down", ".q_proj.lora_A"),
    (".to_k_lora.up", ".k_proj.lora_B"),
    (".to_k_lora.down", ".k_proj.lora_A"),
    (".to_v_lora.up", ".v_proj.lora_B"),
    (".to_v_lora.down", ".v_proj.lora_A"),
    (".to_out_lora.up", ".out_proj.lora_B"),
    (".to_out_lora.down", ".out_proj.lora_A"),
    (".lora_linear_layer.up", ".lora_B"),
    (".lora_linear_layer.down", ".lora_A"),
];

const PEFT_TO_DIFFUSERS: [(&str, &str); 16] = [
    (".q_proj.lora_B", ".q_proj.lora_linear_layer.up"),
    (".q_proj.lora_A", ".q_proj.lora_linear_layer.down"),
    (".k_proj.lora_B", ".k_proj.lora_linear_layer.up"),
    (".k_proj.lora_A", ".k_proj.lora_linear_layer.down"),
    (".v_proj.lora_B", ".v_proj.lora_linear_layer.up"),
    (".v_proj.lora_A", ".v_proj.lora_linear_layer.down"),
    (".out_proj.lora_B", ".out_proj.lora_linear_layer.up"),
    (".out_proj.lora_A", ".out_proj.lora_linear_layer.down"),
    ("to_k.lora_A", "to_k.lora.down"),
    ("to_k.lora_B", "to_k.lora.up"),
    ("to_q.lora_A", "to_q.lora.down"),
    ("to_q.lora_B", "to_q.lora.up"),
    ("to_v.lora_A", "to_v.lora.down"),
    ("to_v.lora_B", "to_v.lora.up"),
    ("to_out.0.lora_A", "to_out.0.lora.down"),
    ("to_out.0.lora_B", "to_out.0.lora.up"),
];

const DIFFUSERS_OLD_TO_DIFFUSERS: [(&str, &str); 12] = [
    (".to_q_lora.up", ".q_proj.lora_linear_layer.up"),
    (".to_q_lora.down", ".q_proj.lora_linear_layer.down"),
    (".to_k_lora.up", ".k_proj.lora_linear_layer.up"),
    (".to_k_lora.down", ".k_proj.lora_linear_layer.down"),
    (".to_v_lora.up", ".v_proj.lora_linear_layer.up"),
    (".to_v_lora.down", ".v_proj.lora_linear_layer.down"),
    (".to_out_lora.up", ".out_proj.lora_linear_layer.up"),
    (".to_out_lora.down", ".out_proj.lora_linear_layer.down"),
    (
        ".to_k.lora_magnitude_vector",
        ".k_proj.lora_magnitude_vector",
    ),
    (
        ".to_v.lora_magnitude_vector",
        ".v_proj.lora_magnitude_vector",
    ),
    (
        ".to_q.lora_magnitude_vector",
        ".q_proj.lora_magnitude_vector",
    ),
    (
        ".to_out.lora_magnitude_vector",
        ".out_proj.lora_magnitude_vector",
    ),
];

/// `convert_unet_state_dict_to_peft`.
pub(crate) fn unet_to_peft(name: &str) -> String {
    convert_with(name, &UNET_TO_DIFFUSERS)
}

/// What `_load_lora_into_text_encoder` does to a text encoder's keys:
/// `convert_state_dict_to_diffusers` then `convert_state_dict_to_peft`, each inferring the
/// state dict's type from all of its keys. `Err` carries diffusers' "Could not automatically
/// infer state dict type".
pub(crate) fn text_encoder_to_peft(names: &[String]) -> Result<Vec<String>, String> {
    let any = |names: &[String], needle: &str| names.iter().any(|n| n.contains(needle));
    let cannot_infer = |step: &str| {
        format!(
            "diffusers' {step} cannot infer the text encoder state dict's type (it needs \
             `to_out_lora` keys, `lora_linear_layer` keys or, for PEFT files, `.lora_A.weight` \
             keys plus an attention output projection)"
        )
    };
    let diffusers: Vec<String> = if any(names, "to_out_lora") {
        names
            .iter()
            .map(|n| convert_with(n, &DIFFUSERS_OLD_TO_DIFFUSERS))
            .collect()
    } else if any(names, ".lora_A.weight") {
        names
            .iter()
            .map(|n| convert_with(n, &PEFT_TO_DIFFUSERS))
            .collect()
    } else if any(names, "lora_linear_layer") {
        names.to_vec()
    } else {
        return Err(cannot_infer("convert_state_dict_to_diffusers"));
    };
    if any(&diffusers, "to_out_lora") {
        Ok(diffusers
            .iter()
            .map(|n| convert_with(n, &DIFFUSERS_OLD_TO_PEFT))
            .collect())
    } else if any(&diffusers, "lora_linear_layer") {
        Ok(diffusers
            .iter()
            .map(|n| convert_with(n, &DIFFUSERS_TO_PEFT))
            .collect())
    } else {
        Err(cannot_infer("convert_state_dict_to_peft"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_keys_as_diffusers_converts_them() {
        let cases = [
            (
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
            ),
            (
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_down.weight",
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight",
            ),
            (
                "lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight",
                "down_blocks.0.resnets.0.time_emb_proj.lora.down.weight",
            ),
            (
                "lora_unet_down_blocks_0_resnets_0_emb_layers_1.lora_down.weight",
                "down_blocks.0.resnets.0.time_emb_proj.lora.down.weight",
            ),
            (
                "lora_unet_down_blocks_0_resnets_0_in_layers_2.lora_down.weight",
                "down_blocks.0.resnets.0.conv1.lora.down.weight",
            ),
            (
                "lora_unet_up_blocks_0_resnets_1_skip_connection.lora_down.weight",
                "up_blocks.0.resnets.1.conv_shortcut.lora.down.weight",
            ),
            (
                "lora_unet_down_blocks_0_downsamplers_0_op.lora_down.weight",
                "down_blocks.0.downsamplers.0.conv.lora.down.weight",
            ),
            ("lora_unet_input_blocks_0_0.lora_down.weight", "conv_in.lora.down.weight"),
            ("lora_unet_out_2.lora_down.weight", "conv_out.lora.down.weight"),
            (
                "lora_unet_time_embed_0.lora_down.weight",
                "time_embedding.linear_1.lora.down.weight",
            ),
            (
                "lora_unet_label_emb_0_2.lora_down.weight",
                "add_embedding.linear_2.lora.down.weight",
            ),
            // diffusers' SDXL heuristic eats the layer index of add_embedding's diffusers name:
            (
                "lora_unet_add_embedding_linear_1.lora_down.weight",
                "add.embedding.linear.lora.down.weight",
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(convert_unet_lora_key(key), expected, "{key}");
        }
    }

    #[test]
    fn text_encoder_keys_as_diffusers_converts_them() {
        let key = "lora_te1_text_model_encoder_layers_0_self_attn_out_proj.lora_down.weight";
        assert_eq!(
            convert_text_encoder_lora_key(
                key,
                "lora_te1_text_model_encoder_layers_0_self_attn_out_proj"
            ),
            "text_model.encoder.layers.0.self_attn.to_out_lora.down.weight"
        );
        let key = "lora_te2_text_model_encoder_layers_3_mlp_fc1.lora_down.weight";
        assert_eq!(
            convert_text_encoder_lora_key(key, "lora_te2_text_model_encoder_layers_3_mlp_fc1"),
            "text_model.encoder.layers.3.mlp.fc1.lora_linear_layer.down.weight"
        );
        let names = [
            "text_model.encoder.layers.0.self_attn.to_out_lora.down.weight".to_owned(),
            "text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight".to_owned(),
        ];
        assert_eq!(
            text_encoder_to_peft(&names).unwrap(),
            [
                "text_model.encoder.layers.0.self_attn.out_proj.lora_A.weight",
                "text_model.encoder.layers.0.mlp.fc1.lora_B.weight"
            ]
        );
        // q_proj alone: diffusers cannot tell the format
        let names = ["text_model.encoder.layers.0.self_attn.to_q_lora.down.weight".to_owned()];
        assert!(text_encoder_to_peft(&names).is_err());
    }

    #[test]
    fn last_dotted_number_as_the_regex_removes_it() {
        assert_eq!(
            remove_last_dotted_number("a.time_emb_proj.1.lora.w"),
            "a.time_emb_proj.lora.w"
        );
        assert_eq!(remove_last_dotted_number("a.1.b.22x"), "a.1.bx");
        assert_eq!(remove_last_dotted_number("linear_1.lora"), "linear_1.lora");
        assert_eq!(remove_last_dotted_number("attn1.x"), "attn1.x");
        assert_eq!(remove_last_dotted_number("none"), "none");
    }

    /// Orders printed by CPython 3.11 for `s = set(); [s.add(i) for i in inserted]; list(s)`.
    #[test]
    fn set_order_is_cpythons() {
        let cases: [(&[i64], &[i64]); 10] = [
            (&[4, 5, 7, 8], &[8, 4, 5, 7]),
            (&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 2, 3, 4, 5, 6, 7, 8]),
            (&[8, 1], &[8, 1]),
            (&[9, 1, 17], &[9, 1, 17]),
            (&[16, 0, 8], &[16, 0, 8]),
            (&[-1, 7, 6], &[6, -1, 7]),
            (&[40, 3, 35, 11, 2, 19], &[2, 35, 3, 40, 11, 19]),
            (&[5, 5, 13, 21], &[13, 21, 5]),
            (&[33, 1, 65, 97, 129, 2, 3], &[65, 33, 129, 1, 97, 2, 3]),
            (&[100, 36, 4, 68], &[100, 4, 36, 68]),
        ];
        for (inserted, expected) in cases {
            assert_eq!(python_set_order(inserted), expected, "{inserted:?}");
        }
    }
}
