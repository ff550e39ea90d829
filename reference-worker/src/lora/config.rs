//! The LoraConfig diffusers builds for one component, and peft's per-module rank and alpha.
//!
//! Without `lora_adapter_metadata`, diffusers derives the config from the state dict
//! (`get_peft_kwargs`): `r` is the most common rank and `lora_alpha` the most common alpha (ties
//! go to the value seen first), every other module gets an entry in `rank_pattern` /
//! `alpha_pattern`; without alphas, `lora_alpha = r` and `alpha_pattern = rank_pattern`. peft then
//! looks each module up with `get_pattern_key`: the first pattern `p` with
//! `re.match(rf"(.*\.)?({p})$", module)`. The alpha patterns diffusers writes for kohya-ss files
//! are not module names for the attention projections (`…attn1.processor.to_q_lora.down.weight`)
//! and for the text encoders' attention (`…self_attn`), and carry a `text_model.` prefix the first
//! text encoder's module names lack in transformers 5, so those modules get the most common alpha
//! whatever their own `.alpha` says; this module reproduces that.
//!
//! With metadata, the config is the metadata's (`r`, `lora_alpha`, `rank_pattern`,
//! `alpha_pattern`, `use_rslora`, `target_modules`, `exclude_modules`); fields that would change
//! what peft computes in ways this worker does not reproduce (DoRA, LoRA biases, dropout,
//! regex targets, …) are refused.

use serde_json::{Map, Value};

/// One component's LoRA config, as peft sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoraConfig {
    pub(crate) r: i64,
    pub(crate) lora_alpha: f64,
    pub(crate) rank_pattern: Vec<(String, i64)>,
    pub(crate) alpha_pattern: Vec<(String, f64)>,
    pub(crate) use_rslora: bool,
    /// `None`: every module of the file is a target (diffusers lists them itself).
    pub(crate) target_modules: Option<Vec<String>>,
    pub(crate) exclude_modules: Vec<String>,
    /// `init_lora_weights` leaves `lora_B` zero (a targeted module without weights in the file
    /// then adds exactly nothing).
    pub(crate) zero_init: bool,
}

/// A dict insertion: a new key goes last, an existing one keeps its place and takes the value.
fn dict_insert<V>(entries: &mut Vec<(String, V)>, key: String, value: V) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => entries.push((key, value)),
    }
}

/// `collections.Counter(values).most_common()[0][0]`: the most frequent value, the first seen
/// among equally frequent ones.
fn most_common<T: PartialEq + Copy>(values: &[T]) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for &value in values {
        match counts.iter_mut().find(|(v, _)| *v == value) {
            Some(entry) => entry.1 += 1,
            None => counts.push((value, 1)),
        }
    }
    let best = counts.iter().map(|(_, count)| *count).max()?;
    counts
        .into_iter()
        .find(|(_, count)| *count == best)
        .map(|(v, _)| v)
}

impl LoraConfig {
    /// `get_peft_kwargs(rank_dict, network_alpha_dict, …, is_unet)`: `ranks` are the rank dict's
    /// `(key, rank)` in its order (`^…lora_B.weight` for the UNet, `….lora_B.weight` for text
    /// encoders), `alphas` the component's network alphas `(name, alpha)` without the component
    /// prefix. `None` when the rank dict is empty (diffusers fails on it).
    pub(crate) fn from_state_dict(
        ranks: &[(String, i64)],
        alphas: &[(String, f64)],
        is_unet: bool,
    ) -> Option<Self> {
        let rank_values: Vec<i64> = ranks.iter().map(|(_, r)| *r).collect();
        let mut r = *rank_values.first()?;
        let mut lora_alpha = r as f64;
        let mut rank_pattern: Vec<(String, i64)> = Vec::new();
        let mut alpha_pattern: Vec<(String, f64)> = Vec::new();
        let has_alphas = !alphas.is_empty();
        let distinct = |values: &[i64]| values.iter().any(|v| *v != values[0]);
        if distinct(&rank_values) {
            r = most_common(&rank_values)?;
            for (key, rank) in ranks.iter().filter(|(_, rank)| *rank != r) {
                let module = key.split(".lora_B.").next().unwrap_or(key).to_owned();
                dict_insert(&mut rank_pattern, module, *rank);
            }
            if !has_alphas {
                lora_alpha = r as f64;
                alpha_pattern = rank_pattern
                    .iter()
                    .map(|(key, rank)| (key.clone(), *rank as f64))
                    .collect();
            }
        }
        if has_alphas {
            let values: Vec<f64> = alphas.iter().map(|(_, a)| *a).collect();
            if values.iter().any(|v| *v != values[0]) {
                lora_alpha = most_common(&values)?;
                for (key, alpha) in alphas.iter().filter(|(_, a)| *a != lora_alpha) {
                    let pattern = if is_unet {
                        key.split(".lora_A.")
                            .next()
                            .unwrap_or(key)
                            .replace(".alpha", "")
                    } else {
                        let stem = key.split(".down.").next().unwrap_or(key);
                        let parts: Vec<&str> = stem.split('.').collect();
                        parts[..parts.len() - 1].join(".")
                    };
                    dict_insert(&mut alpha_pattern, pattern, *alpha);
                }
            } else {
                lora_alpha = values[0];
            }
        }
        Some(Self {
            r,
            lora_alpha,
            rank_pattern,
            alpha_pattern,
            use_rslora: false,
            target_modules: None,
            exclude_modules: Vec::new(),
            zero_init: true,
        })
    }

    /// `LoraConfig(**metadata)` for one component (`metadata`: the `lora_adapter_metadata`
    /// entries of the component, prefix removed). `Err((field, message))`.
    pub(crate) fn from_metadata(metadata: &Map<String, Value>) -> Result<Self, (String, String)> {
        let bad = |key: &str, message: String| (key.to_owned(), message);
        let mut config = Self {
            r: 8,
            lora_alpha: 8.0,
            rank_pattern: Vec::new(),
            alpha_pattern: Vec::new(),
            use_rslora: false,
            target_modules: None,
            exclude_modules: Vec::new(),
            zero_init: true,
        };
        let integer = |key: &str, value: &Value| {
            value
                .as_i64()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(key, format!("must be a positive integer, found {value}")))
        };
        let number = |key: &str, value: &Value| {
            value
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(key, format!("must be a finite number, found {value}")))
        };
        let strings = |key: &str, value: &Value| -> Result<Vec<String>, (String, String)> {
            match value {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str().map(str::to_owned).ok_or_else(|| {
                            bad(key, format!("entries must be module names, found {item}"))
                        })
                    })
                    .collect(),
                Value::String(_) => Err(bad(
                    key,
                    "a regular expression (peft full-matches it) is not reproduced; list the \
                     module names"
                        .to_owned(),
                )),
                other => Err(bad(key, format!("must be a list of names, found {other}"))),
            }
        };
        let mut has_targets = false;
        for (key, value) in metadata {
            match key.as_str() {
                "r" => config.r = integer(key, value)?,
                "lora_alpha" => config.lora_alpha = number(key, value)?,
                "rank_pattern" | "alpha_pattern" => {
                    let Some(entries) = value.as_object() else {
                        return Err(bad(key, format!("must be an object, found {value}")));
                    };
                    for (pattern, entry) in entries {
                        check_pattern(pattern).map_err(|message| bad(key, message))?;
                        if key == "rank_pattern" {
                            config
                                .rank_pattern
                                .push((pattern.clone(), integer(key, entry)?));
                        } else {
                            config
                                .alpha_pattern
                                .push((pattern.clone(), number(key, entry)?));
                        }
                    }
                }
                "use_rslora" => {
                    config.use_rslora = value
                        .as_bool()
                        .ok_or_else(|| bad(key, format!("must be a boolean, found {value}")))?
                }
                "target_modules" => {
                    has_targets = !value.is_null();
                    config.target_modules = Some(strings(key, value)?);
                }
                "exclude_modules" => config.exclude_modules = strings(key, value)?,
                "init_lora_weights" => {
                    config.zero_init = match value {
                        Value::Bool(true) => true,
                        Value::String(s) if s == "gaussian" => true,
                        Value::Bool(false) => false,
                        other => {
                            return Err(bad(
                                key,
                                format!(
                                    "{other}: peft initialises (and for some methods rewrites the \
                                     base weights) in ways not reproduced; true, \"gaussian\" or \
                                     false only"
                                ),
                            ))
                        }
                    }
                }
                "lora_dropout" => {
                    if number(key, value)? != 0.0 {
                        return Err(bad(
                            key,
                            format!(
                                "{value}: peft's freshly injected dropout layers are in training \
                                 mode, so diffusers would drop random activations at inference; \
                                 not reproducible"
                            ),
                        ));
                    }
                }
                // Training and bookkeeping fields: no effect on an unfused forward pass.
                "task_type"
                | "peft_type"
                | "auto_mapping"
                | "peft_version"
                | "base_model_name_or_path"
                | "revision"
                | "inference_mode"
                | "bias"
                | "loftq_config"
                | "megatron_core"
                | "qalora_group_size"
                | "ensure_weight_tying" => {}
                // Fields that change the computation: only their defaults are rendered.
                "fan_in_fan_out" | "use_dora" | "lora_bias" | "use_qalora" => {
                    if value.as_bool() != Some(false) {
                        return Err(bad(key, format!("{value} is not rendered (only false)")));
                    }
                }
                "modules_to_save"
                | "layers_to_transform"
                | "layers_pattern"
                | "trainable_token_indices"
                | "layer_replication"
                | "target_parameters"
                | "velora_config"
                | "alora_invocation_tokens"
                | "use_bdlora"
                | "arrow_config"
                | "kasa_config"
                | "monteclora_config"
                | "megatron_config"
                | "lora_ga_config"
                | "eva_config"
                | "corda_config" => {
                    let unset = match value {
                        Value::Null => true,
                        Value::Array(items) => items.is_empty(),
                        Value::Object(entries) => entries.is_empty(),
                        _ => false,
                    };
                    if !unset {
                        return Err(bad(key, format!("{value} is not rendered (only null)")));
                    }
                }
                _ => {
                    return Err(bad(
                        key,
                        "not a peft 0.21 LoraConfig field this worker knows".to_owned(),
                    ))
                }
            }
        }
        if !has_targets {
            return Err((
                "target_modules".to_owned(),
                "missing or null: peft would pick default targets by model type".to_owned(),
            ));
        }
        Ok(config)
    }

    /// peft's `_create_and_replace`: the module's `(r, lora_alpha)` from the patterns (first
    /// matching key) or the defaults. `Err` for a pattern this worker cannot match like `re`.
    pub(crate) fn module(&self, module: &str) -> Result<(i64, f64), String> {
        let mut r = self.r;
        for (pattern, rank) in &self.rank_pattern {
            if pattern_matches(pattern, module)? {
                r = *rank;
                break;
            }
        }
        let mut alpha = self.lora_alpha;
        for (pattern, value) in &self.alpha_pattern {
            if pattern_matches(pattern, module)? {
                alpha = *value;
                break;
            }
        }
        Ok((r, alpha))
    }

    /// peft's `check_target_module_exists` for list-valued `target_modules` / `exclude_modules`.
    pub(crate) fn targets(&self, module: &str) -> bool {
        let matches = |name: &String| module == name || module.ends_with(&format!(".{name}"));
        if self.exclude_modules.iter().any(matches) {
            return false;
        }
        self.target_modules
            .as_ref()
            .is_none_or(|targets| targets.iter().any(matches))
    }
}

const REGEX_SPECIALS: &str = "^$*+?()[]{}|\\";

/// Refuses patterns using regex syntax beyond what [`pattern_matches`] reproduces.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_prefix('^').unwrap_or(pattern);
    match body.chars().find(|c| REGEX_SPECIALS.contains(*c)) {
        Some(c) => Err(format!(
            "pattern `{pattern}` uses the regular-expression character `{c}`; only `.` (any \
             character) and a leading `^` are reproduced"
        )),
        None => Ok(()),
    }
}

/// `re.match(rf"(.*\.)?({pattern})$", key)` for patterns whose only regex syntax is `.` (any
/// character) and a leading `^`.
pub(crate) fn pattern_matches(pattern: &str, key: &str) -> Result<bool, String> {
    check_pattern(pattern)?;
    let (anchored, body) = match pattern.strip_prefix('^') {
        Some(body) => (true, body),
        None => (false, pattern),
    };
    let body: Vec<char> = body.chars().collect();
    let key: Vec<char> = key.chars().collect();
    let fits_from = |start: usize| {
        key.len() - start == body.len()
            && body
                .iter()
                .zip(&key[start..])
                .all(|(p, k)| (*p == '.' && *k != '\n') || p == k)
    };
    if anchored {
        return Ok(fits_from(0));
    }
    let newline_before = |start: usize| key[..start].contains(&'\n');
    Ok((0..=key.len())
        .filter(|&start| start == 0 || (key[start - 1] == '.' && !newline_before(start - 1)))
        .any(fits_from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_match_like_peft_get_pattern_key() {
        let m = |p, k| pattern_matches(p, k).unwrap();
        assert!(m("conv1", "down_blocks.0.resnets.1.conv1"));
        assert!(m("conv1", "conv1"));
        assert!(!m("conv1", "down_blocks.0.resnets.1.xconv1"));
        assert!(!m("conv1", "down_blocks.0.resnets.1.conv1.x"));
        assert!(m(
            "attn2.to_k",
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
        ));
        // `.` is any character
        assert!(m(
            "attn2.to_k",
            "mid_block.attentions.0.transformer_blocks.0.attn2_to_k"
        ));
        assert!(m("^conv_in", "conv_in"));
        assert!(!m("^resnets.1.conv1", "down_blocks.0.resnets.1.conv1"));
        assert!(!m(
            "text_model.encoder.layers.0.self_attn",
            "text_model.encoder.layers.0.self_attn.q_proj"
        ));
        assert!(pattern_matches("conv(1|2)", "conv1").is_err());
    }

    #[test]
    fn state_dict_config_is_get_peft_kwargs() {
        let ranks = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
            list.iter().map(|(k, r)| (k.to_string(), *r)).collect()
        };
        // no alphas: alpha follows the rank everywhere
        let config = LoraConfig::from_state_dict(
            &ranks(&[
                ("^a.lora_B.weight", 4),
                ("^b.lora_B.weight", 2),
                ("^c.lora_B.weight", 4),
            ]),
            &[],
            true,
        )
        .unwrap();
        assert_eq!((config.r, config.lora_alpha), (4, 4.0));
        assert_eq!(config.rank_pattern, [("^b".to_owned(), 2)]);
        assert_eq!(config.module("b").unwrap(), (2, 2.0));
        assert_eq!(config.module("a").unwrap(), (4, 4.0));
        // alphas: the most common wins, ties to the first seen
        let alphas = vec![
            ("x.alpha".to_owned(), 8.0),
            ("y.alpha".to_owned(), 2.0),
            ("z.alpha".to_owned(), 2.0),
            ("w.alpha".to_owned(), 8.0),
        ];
        let config =
            LoraConfig::from_state_dict(&ranks(&[("^x.lora_B.weight", 4)]), &alphas, true).unwrap();
        assert_eq!(config.lora_alpha, 8.0);
        assert_eq!(
            config.alpha_pattern,
            [("y".to_owned(), 2.0), ("z".to_owned(), 2.0)]
        );
        // text encoders: the pattern drops the last part before `.down.`
        let alphas = vec![
            (
                "text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight.alpha"
                    .to_owned(),
                1.0,
            ),
            (
                "text_model.encoder.layers.0.self_attn.to_q_lora.down.weight.alpha".to_owned(),
                2.0,
            ),
            (
                "text_model.encoder.layers.1.self_attn.to_q_lora.down.weight.alpha".to_owned(),
                2.0,
            ),
        ];
        let config =
            LoraConfig::from_state_dict(&ranks(&[("q.lora_B.weight", 4)]), &alphas, false).unwrap();
        assert_eq!(
            config.alpha_pattern,
            [("text_model.encoder.layers.0.mlp.fc1".to_owned(), 1.0)]
        );
        assert!(LoraConfig::from_state_dict(&[], &[], true).is_none());
    }

    #[test]
    fn metadata_config_refuses_what_is_not_rendered() {
        let parse = |value: Value| LoraConfig::from_metadata(value.as_object().unwrap());
        let config = parse(json!({"r": 4, "lora_alpha": 2, "use_rslora": true,
            "target_modules": ["to_q"], "rank_pattern": {"conv1": 2}}))
        .unwrap();
        assert_eq!(
            (config.r, config.lora_alpha, config.use_rslora),
            (4, 2.0, true)
        );
        assert!(config.targets("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"));
        assert!(!config.targets("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"));
        for (field, value) in [
            ("use_dora", json!(true)),
            ("lora_bias", json!(true)),
            ("lora_dropout", json!(0.1)),
            ("layers_to_transform", json!([1])),
            ("init_lora_weights", json!("pissa")),
            ("target_modules", json!("to_.*")),
            ("no_such_field", json!(1)),
        ] {
            let mut metadata = json!({"r": 4, "lora_alpha": 4, "target_modules": ["to_q"]});
            metadata[field] = value;
            let (key, _) = parse(metadata).unwrap_err();
            assert_eq!(key, field);
        }
        let (key, _) = parse(json!({"r": 4})).unwrap_err();
        assert_eq!(key, "target_modules");
    }
}
