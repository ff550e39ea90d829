//! Typed component configs, read from diffusers' `config.json` / `scheduler_config.json` and
//! transformers' CLIP `config.json`, with the diffusers / transformers key names.
//!
//! Keys that fix the sizes of a model are required: a config without them is an error naming the
//! file and key, never a silent default. Flags that later library versions added (and that older
//! configs therefore lack) take the library's default, as `from_pretrained` does.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One parsed JSON config file, with typed accessors whose errors name the file and key.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    map: Map<String, Value>,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the contents of `path` (which is only used in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let syntax = |message: String| Error::ConfigSyntax {
            path: path.to_owned(),
            message,
        };
        match serde_json::from_str::<Value>(text).map_err(|e| syntax(e.to_string()))? {
            Value::Object(map) => Ok(Self {
                path: path.to_owned(),
                map,
            }),
            other => Err(syntax(format!("the top level is {}", describe(&other)))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw value of `key`; `None` when absent.
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// This config with `overrides` set on top, as diffusers' `from_config(config, **overrides)`
    /// sees it; errors about the result name this file followed by `label`.
    pub fn with_overrides(&self, overrides: &Map<String, Value>, label: &str) -> Self {
        let mut map = self.map.clone();
        for (key, value) in overrides {
            map.insert(key.clone(), value.clone());
        }
        Self {
            path: PathBuf::from(format!("{} with {label}", self.path.display())),
            map,
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    fn mistyped(&self, key: &str, expected: &'static str, found: &Value) -> Error {
        Error::MistypedKey {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
            found: describe(found),
        }
    }

    pub fn invalid(&self, key: &str, message: impl Into<String>) -> Error {
        Error::InvalidValue {
            path: self.path.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The value of `key`, or `None` when it is absent or `null`.
    fn present(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    fn required(&self, key: &str) -> Result<&Value> {
        match self.map.get(key) {
            Some(value) => Ok(value),
            None => Err(self.missing(key)),
        }
    }

    fn as_usize(&self, key: &str, value: &Value) -> Result<usize> {
        value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.mistyped(key, "a non-negative integer", value))
    }

    fn as_f64(&self, key: &str, value: &Value) -> Result<f64> {
        value
            .as_f64()
            .ok_or_else(|| self.mistyped(key, "a number", value))
    }

    fn as_bool(&self, key: &str, value: &Value) -> Result<bool> {
        value
            .as_bool()
            .ok_or_else(|| self.mistyped(key, "a boolean", value))
    }

    fn as_string(&self, key: &str, value: &Value) -> Result<String> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.mistyped(key, "a string", value))
    }

    fn as_array<'v>(
        &self,
        key: &str,
        value: &'v Value,
        expected: &'static str,
    ) -> Result<&'v [Value]> {
        value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.mistyped(key, expected, value))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.as_usize(key, self.required(key)?)
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.as_f64(key, self.required(key)?)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.as_string(key, self.required(key)?)
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.present(key).map(|v| self.as_usize(key, v)).transpose()
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.present(key).map(|v| self.as_f64(key, v)).transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.present(key).map(|v| self.as_bool(key, v)).transpose()
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.present(key)
            .map(|v| self.as_string(key, v))
            .transpose()
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    pub fn string_or(&self, key: &str, default: &str) -> Result<String> {
        Ok(self.opt_string(key)?.unwrap_or_else(|| default.to_owned()))
    }

    /// A required non-empty list of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let items = self.as_array(key, self.required(key)?, "a list of strings")?;
        let strings = items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                self.mistyped(key, "a list of strings", &Value::Array(items.to_vec()))
            })?;
        if strings.is_empty() {
            return Err(self.invalid(key, "the list is empty"));
        }
        Ok(strings)
    }

    /// A required non-empty list of non-negative integers.
    pub fn usizes(&self, key: &str) -> Result<Vec<usize>> {
        let value = self.required(key)?;
        let items = self.as_array(key, value, "a list of non-negative integers")?;
        let numbers = items
            .iter()
            .map(|item| item.as_u64().and_then(|n| usize::try_from(n).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.mistyped(key, "a list of non-negative integers", value))?;
        if numbers.is_empty() {
            return Err(self.invalid(key, "the list is empty"));
        }
        Ok(numbers)
    }

    /// An optional list of numbers (e.g. `trained_betas`, `latents_mean`).
    pub fn opt_f64s(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        let items = self.as_array(key, value, "a list of numbers")?;
        items
            .iter()
            .map(Value::as_f64)
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| self.mistyped(key, "a list of numbers", value))
    }

    /// diffusers' "int or tuple per block" keys (`attention_head_dim`, `layers_per_block`, ...):
    /// an integer means the same value for each of the `blocks` blocks; a list must have one entry
    /// per block. `None` when absent or null.
    pub fn opt_usize_per_block(&self, key: &str, blocks: usize) -> Result<Option<Vec<usize>>> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        const EXPECTED: &str = "an integer or a list of integers";
        let values = match value {
            Value::Number(_) => vec![self.as_usize(key, value)?; blocks],
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.mistyped(key, EXPECTED, value))?,
            other => return Err(self.mistyped(key, EXPECTED, other)),
        };
        if values.len() != blocks {
            return Err(self.invalid(
                key,
                format!("has {} entries but there are {blocks} blocks", values.len()),
            ));
        }
        Ok(Some(values))
    }

    pub fn usize_per_block(&self, key: &str, blocks: usize) -> Result<Vec<usize>> {
        self.opt_usize_per_block(key, blocks)?
            .ok_or_else(|| self.missing(key))
    }

    /// Like [`Self::opt_usize_per_block`] for booleans (`only_cross_attention`).
    pub fn bool_per_block_or(&self, key: &str, blocks: usize, default: bool) -> Result<Vec<bool>> {
        const EXPECTED: &str = "a boolean or a list of booleans";
        let values = match self.present(key) {
            None => vec![default; blocks],
            Some(Value::Bool(flag)) => vec![*flag; blocks],
            Some(value @ Value::Array(items)) => items
                .iter()
                .map(Value::as_bool)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.mistyped(key, EXPECTED, value))?,
            Some(other) => return Err(self.mistyped(key, EXPECTED, other)),
        };
        if values.len() != blocks {
            return Err(self.invalid(
                key,
                format!("has {} entries but there are {blocks} blocks", values.len()),
            ));
        }
        Ok(values)
    }

    fn positive(&self, key: &str, value: usize) -> Result<usize> {
        if value == 0 {
            return Err(self.invalid(key, "must be positive"));
        }
        Ok(value)
    }
}

/// A JSON value as an error message shows it: its type and, for short values, the value.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    };
    let text = value.to_string();
    if text.chars().count() <= 40 {
        format!("{kind} {text}")
    } else {
        let head: String = text.chars().take(37).collect();
        format!("{kind} {head}...")
    }
}

/// `unet/config.json`: diffusers' `UNet2DConditionModel`.
#[derive(Debug, Clone, PartialEq)]
pub struct UNet2DConditionConfig {
    pub sample_size: Option<usize>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    /// `None` when the config says `null` (no mid block).
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub only_cross_attention: Vec<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    /// As written; diffusers reads it as the number of heads when `num_attention_heads` is null.
    pub attention_head_dim: Vec<usize>,
    pub num_attention_heads: Option<Vec<usize>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: String,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<usize>,
    pub projection_class_embeddings_input_dim: Option<usize>,
    pub time_embedding_type: String,
    pub time_embedding_dim: Option<usize>,
    pub time_cond_proj_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
    pub encoder_hid_dim: Option<usize>,
    pub attention_type: String,
    pub encoder_hid_dim_type: Option<String>,
    pub num_class_embeds: Option<usize>,
    pub class_embeddings_concat: bool,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
}

impl UNet2DConditionConfig {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_file(&ConfigFile::read(path)?)
    }

    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let down_block_types = c.strings("down_block_types")?;
        let up_block_types = c.strings("up_block_types")?;
        let blocks = down_block_types.len();
        if up_block_types.len() != blocks {
            return Err(c.invalid(
                "up_block_types",
                format!(
                    "has {} entries but down_block_types has {blocks}",
                    up_block_types.len()
                ),
            ));
        }
        let block_out_channels = c.usizes("block_out_channels")?;
        if block_out_channels.len() != blocks {
            return Err(c.invalid(
                "block_out_channels",
                format!(
                    "has {} entries but down_block_types has {blocks}",
                    block_out_channels.len()
                ),
            ));
        }
        let config = Self {
            sample_size: c.opt_usize("sample_size")?,
            in_channels: c.positive("in_channels", c.usize("in_channels")?)?,
            out_channels: c.positive("out_channels", c.usize("out_channels")?)?,
            center_input_sample: c.bool_or("center_input_sample", false)?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f64_or("freq_shift", 0.0)?,
            mid_block_type: match c.raw("mid_block_type") {
                None => Some("UNetMidBlock2DCrossAttn".to_owned()),
                Some(_) => c.opt_string("mid_block_type")?,
            },
            only_cross_attention: c.bool_per_block_or("only_cross_attention", blocks, false)?,
            layers_per_block: c.usize_per_block("layers_per_block", blocks)?,
            downsample_padding: c.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: c.f64_or("mid_block_scale_factor", 1.0)?,
            act_fn: c.string_or("act_fn", "silu")?,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            norm_eps: c.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim: c.usize_per_block("cross_attention_dim", blocks)?,
            transformer_layers_per_block: c
                .opt_usize_per_block("transformer_layers_per_block", blocks)?
                .unwrap_or_else(|| vec![1; blocks]),
            attention_head_dim: c.usize_per_block("attention_head_dim", blocks)?,
            num_attention_heads: c.opt_usize_per_block("num_attention_heads", blocks)?,
            dual_cross_attention: c.bool_or("dual_cross_attention", false)?,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
            upcast_attention: c.bool_or("upcast_attention", false)?,
            resnet_time_scale_shift: c.string_or("resnet_time_scale_shift", "default")?,
            class_embed_type: c.opt_string("class_embed_type")?,
            addition_embed_type: c.opt_string("addition_embed_type")?,
            addition_time_embed_dim: c.opt_usize("addition_time_embed_dim")?,
            projection_class_embeddings_input_dim: c
                .opt_usize("projection_class_embeddings_input_dim")?,
            time_embedding_type: c.string_or("time_embedding_type", "positional")?,
            time_embedding_dim: c.opt_usize("time_embedding_dim")?,
            time_cond_proj_dim: c.opt_usize("time_cond_proj_dim")?,
            conv_in_kernel: c.usize_or("conv_in_kernel", 3)?,
            conv_out_kernel: c.usize_or("conv_out_kernel", 3)?,
            encoder_hid_dim: c.opt_usize("encoder_hid_dim")?,
            attention_type: c.string_or("attention_type", "default")?,
            encoder_hid_dim_type: c.opt_string("encoder_hid_dim_type")?,
            num_class_embeds: c.opt_usize("num_class_embeds")?,
            class_embeddings_concat: c.bool_or("class_embeddings_concat", false)?,
            time_embedding_act_fn: c.opt_string("time_embedding_act_fn")?,
            timestep_post_act: c.opt_string("timestep_post_act")?,
            down_block_types,
            up_block_types,
            block_out_channels,
        };
        if config.addition_embed_type.as_deref() == Some("text_time") {
            if config.addition_time_embed_dim.is_none() {
                return Err(c.missing("addition_time_embed_dim"));
            }
            if config.projection_class_embeddings_input_dim.is_none() {
                return Err(c.missing("projection_class_embeddings_input_dim"));
            }
        }
        Ok(config)
    }

    /// Heads per down block, as diffusers computes them: `num_attention_heads or
    /// attention_head_dim` (diffusers' historical naming: `attention_head_dim` holds head counts).
    pub fn heads_per_block(&self) -> &[usize] {
        self.num_attention_heads
            .as_deref()
            .unwrap_or(&self.attention_head_dim)
    }
}

/// A ControlNet folder's `config.json`: diffusers' `ControlNetModel`
/// (`diffusers/models/controlnets/controlnet.py`). The UNet-like keys have the UNet's names and
/// meanings; `cross_attention_dim` is one integer (every block gets the same).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlNetConfig {
    /// `_class_name`: must be `ControlNetModel`.
    pub class_name: String,
    pub in_channels: usize,
    pub conditioning_channels: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    /// `None` when the config says `null` (no mid block, which diffusers refuses).
    pub mid_block_type: Option<String>,
    pub only_cross_attention: Vec<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub act_fn: String,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    pub transformer_layers_per_block: Vec<usize>,
    pub encoder_hid_dim: Option<usize>,
    pub encoder_hid_dim_type: Option<String>,
    /// As written; the number of heads unless `num_attention_heads` is set (diffusers' naming).
    pub attention_head_dim: Vec<usize>,
    pub num_attention_heads: Option<Vec<usize>>,
    pub use_linear_projection: bool,
    pub class_embed_type: Option<String>,
    pub addition_embed_type: Option<String>,
    pub addition_time_embed_dim: Option<usize>,
    pub num_class_embeds: Option<usize>,
    pub resnet_time_scale_shift: String,
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// `rgb`, or `bgr` (the conditioning image's channels are flipped first).
    pub controlnet_conditioning_channel_order: String,
    pub conditioning_embedding_out_channels: Vec<usize>,
    pub global_pool_conditions: bool,
}

impl ControlNetConfig {
    pub const CLASS_NAME: &'static str = "ControlNetModel";

    pub fn read(path: &Path) -> Result<Self> {
        Self::from_file(&ConfigFile::read(path)?)
    }

    /// Reads the keys with `ControlNetModel.__init__`'s defaults; the keys that fix the sizes
    /// (channels, blocks, layers, heads, cross-attention width, conditioning embedding) are
    /// required, as for the UNet. A config of another class is refused first, naming it.
    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let class_name = c.string("_class_name")?;
        if class_name != Self::CLASS_NAME {
            return Err(c.invalid(
                "_class_name",
                format!(
                    "`{class_name}` is not a {}: this folder is not a ControlNet",
                    Self::CLASS_NAME
                ),
            ));
        }
        let down_block_types = c.strings("down_block_types")?;
        let blocks = down_block_types.len();
        let block_out_channels = c.usizes("block_out_channels")?;
        if block_out_channels.len() != blocks {
            return Err(c.invalid(
                "block_out_channels",
                format!(
                    "has {} entries but down_block_types has {blocks}",
                    block_out_channels.len()
                ),
            ));
        }
        let config = Self {
            in_channels: c.positive("in_channels", c.usize("in_channels")?)?,
            conditioning_channels: c.positive(
                "conditioning_channels",
                c.usize_or("conditioning_channels", 3)?,
            )?,
            flip_sin_to_cos: c.bool_or("flip_sin_to_cos", true)?,
            freq_shift: c.f64_or("freq_shift", 0.0)?,
            mid_block_type: match c.raw("mid_block_type") {
                None => Some("UNetMidBlock2DCrossAttn".to_owned()),
                Some(_) => c.opt_string("mid_block_type")?,
            },
            only_cross_attention: c.bool_per_block_or("only_cross_attention", blocks, false)?,
            layers_per_block: c.positive("layers_per_block", c.usize("layers_per_block")?)?,
            downsample_padding: c.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: c.f64_or("mid_block_scale_factor", 1.0)?,
            act_fn: c.string_or("act_fn", "silu")?,
            norm_num_groups: c.usize_or("norm_num_groups", 32)?,
            norm_eps: c.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim: c
                .positive("cross_attention_dim", c.usize("cross_attention_dim")?)?,
            transformer_layers_per_block: c
                .opt_usize_per_block("transformer_layers_per_block", blocks)?
                .unwrap_or_else(|| vec![1; blocks]),
            encoder_hid_dim: c.opt_usize("encoder_hid_dim")?,
            encoder_hid_dim_type: c.opt_string("encoder_hid_dim_type")?,
            attention_head_dim: c.usize_per_block("attention_head_dim", blocks)?,
            num_attention_heads: c.opt_usize_per_block("num_attention_heads", blocks)?,
            use_linear_projection: c.bool_or("use_linear_projection", false)?,
            class_embed_type: c.opt_string("class_embed_type")?,
            addition_embed_type: c.opt_string("addition_embed_type")?,
            addition_time_embed_dim: c.opt_usize("addition_time_embed_dim")?,
            num_class_embeds: c.opt_usize("num_class_embeds")?,
            resnet_time_scale_shift: c.string_or("resnet_time_scale_shift", "default")?,
            projection_class_embeddings_input_dim: c
                .opt_usize("projection_class_embeddings_input_dim")?,
            controlnet_conditioning_channel_order: c
                .string_or("controlnet_conditioning_channel_order", "rgb")?,
            conditioning_embedding_out_channels: c.usizes("conditioning_embedding_out_channels")?,
            global_pool_conditions: c.bool_or("global_pool_conditions", false)?,
            class_name,
            down_block_types,
            block_out_channels,
        };
        if config.addition_embed_type.as_deref() == Some("text_time") {
            if config.addition_time_embed_dim.is_none() {
                return Err(c.missing("addition_time_embed_dim"));
            }
            if config.projection_class_embeddings_input_dim.is_none() {
                return Err(c.missing("projection_class_embeddings_input_dim"));
            }
        }
        Ok(config)
    }

    /// Heads per down block: `num_attention_heads or attention_head_dim`, as diffusers computes
    /// them.
    pub fn heads_per_block(&self) -> &[usize] {
        self.num_attention_heads
            .as_deref()
            .unwrap_or(&self.attention_head_dim)
    }
}

/// `vae/config.json`: diffusers' `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderKLConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: Option<usize>,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl AutoencoderKLConfig {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_file(&ConfigFile::read(path)?)
    }

    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let down_block_types = c.strings("down_block_types")?;
        let up_block_types = c.strings("up_block_types")?;
        let block_out_channels = c.usizes("block_out_channels")?;
        for (key, len) in [
            ("down_block_types", down_block_types.len()),
            ("up_block_types", up_block_types.len()),
        ] {
            if len != block_out_channels.len() {
                return Err(c.invalid(
                    key,
                    format!(
                        "has {len} entries but block_out_channels has {}",
                        block_out_channels.len()
                    ),
                ));
            }
        }
        Ok(Self {
            in_channels: c.positive("in_channels", c.usize("in_channels")?)?,
            out_channels: c.positive("out_channels", c.usize("out_channels")?)?,
            layers_per_block: c.positive("layers_per_block", c.usize("layers_per_block")?)?,
            act_fn: c.string_or("act_fn", "silu")?,
            latent_channels: c.positive("latent_channels", c.usize("latent_channels")?)?,
            norm_num_groups: c.positive("norm_num_groups", c.usize_or("norm_num_groups", 32)?)?,
            sample_size: c.opt_usize("sample_size")?,
            scaling_factor: c.f64("scaling_factor")?,
            shift_factor: c.opt_f64("shift_factor")?,
            latents_mean: c.opt_f64s("latents_mean")?,
            latents_std: c.opt_f64s("latents_std")?,
            force_upcast: c.bool_or("force_upcast", true)?,
            use_quant_conv: c.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: c.bool_or("use_post_quant_conv", true)?,
            mid_block_add_attention: c.bool_or("mid_block_add_attention", true)?,
            down_block_types,
            up_block_types,
            block_out_channels,
        })
    }

    /// Spatial downsampling factor of the encoder: 2^(blocks − 1), as in diffusers'
    /// `vae_scale_factor`.
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// `text_encoder*/config.json`: transformers' `CLIPTextConfig` (for `CLIPTextModel` and
/// `CLIPTextModelWithProjection`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipTextConfig {
    /// transformers' `architectures`, e.g. `["CLIPTextModelWithProjection"]`.
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: Option<usize>,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<usize>,
    pub bos_token_id: Option<usize>,
    pub eos_token_id: Option<usize>,
}

impl ClipTextConfig {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_file(&ConfigFile::read(path)?)
    }

    pub fn from_file(c: &ConfigFile) -> Result<Self> {
        let architectures = match c.raw("architectures") {
            None | Some(Value::Null) => Vec::new(),
            Some(_) => c.strings("architectures")?,
        };
        let config = Self {
            vocab_size: c.positive("vocab_size", c.usize("vocab_size")?)?,
            hidden_size: c.positive("hidden_size", c.usize("hidden_size")?)?,
            intermediate_size: c.positive("intermediate_size", c.usize("intermediate_size")?)?,
            projection_dim: c.opt_usize("projection_dim")?,
            num_hidden_layers: c.positive("num_hidden_layers", c.usize("num_hidden_layers")?)?,
            num_attention_heads: c
                .positive("num_attention_heads", c.usize("num_attention_heads")?)?,
            max_position_embeddings: c.positive(
                "max_position_embeddings",
                c.usize("max_position_embeddings")?,
            )?,
            hidden_act: c.string_or("hidden_act", "quick_gelu")?,
            layer_norm_eps: c.f64_or("layer_norm_eps", 1e-5)?,
            pad_token_id: c.opt_usize("pad_token_id")?,
            bos_token_id: c.opt_usize("bos_token_id")?,
            eos_token_id: c.opt_usize("eos_token_id")?,
            architectures,
        };
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(c.invalid(
                "num_attention_heads",
                format!(
                    "{} heads do not divide hidden_size {}",
                    config.num_attention_heads, config.hidden_size
                ),
            ));
        }
        if config.has_projection() && config.projection_dim.is_none() {
            return Err(c.missing("projection_dim"));
        }
        Ok(config)
    }

    /// Whether this is a `CLIPTextModelWithProjection` (SDXL's second text encoder).
    pub fn has_projection(&self) -> bool {
        self.architectures
            .iter()
            .any(|name| name == "CLIPTextModelWithProjection")
    }
}

/// `scheduler/scheduler_config.json`. The keys every diffusers scheduler shares are typed here;
/// each scheduler reads its own further keys (with its own class's defaults) from [`Self::file`].
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `_class_name`, e.g. `EulerDiscreteScheduler`.
    pub class_name: String,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: String,
    pub timestep_spacing: Option<String>,
    pub steps_offset: usize,
    pub file: ConfigFile,
}

impl SchedulerConfig {
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_file(ConfigFile::read(path)?)
    }

    pub fn from_file(c: ConfigFile) -> Result<Self> {
        Ok(Self {
            class_name: c.string("_class_name")?,
            num_train_timesteps: c
                .positive("num_train_timesteps", c.usize("num_train_timesteps")?)?,
            beta_start: c.f64("beta_start")?,
            beta_end: c.f64("beta_end")?,
            beta_schedule: c.string("beta_schedule")?,
            trained_betas: c.opt_f64s("trained_betas")?,
            prediction_type: c.string_or("prediction_type", "epsilon")?,
            timestep_spacing: c.opt_string("timestep_spacing")?,
            steps_offset: c.usize_or("steps_offset", 0)?,
            file: c,
        })
    }
}

/// `model_index.json`: the pipeline class and its components.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIndex {
    /// `_class_name`, e.g. `StableDiffusionXLPipeline`.
    pub class_name: String,
    /// `(component, library, class)` for each non-null component, in file order.
    pub components: Vec<(String, String, String)>,
    /// Config flags of the pipeline itself (e.g. `force_zeros_for_empty_prompt`).
    pub force_zeros_for_empty_prompt: bool,
}

impl ModelIndex {
    pub fn read(path: &Path) -> Result<Self> {
        let c = ConfigFile::read(path)?;
        let mut components = Vec::new();
        for (key, value) in &c.map {
            if key.starts_with('_') {
                continue;
            }
            let Value::Array(pair) = value else {
                continue; // a pipeline flag such as `force_zeros_for_empty_prompt`
            };
            match pair.as_slice() {
                [Value::Null, Value::Null] => {} // an optional component that is not there
                [Value::String(library), Value::String(class)] => {
                    components.push((key.clone(), library.clone(), class.clone()));
                }
                _ => return Err(c.mistyped(key, "a [library, class] pair of strings", value)),
            }
        }
        Ok(Self {
            class_name: c.string("_class_name")?,
            force_zeros_for_empty_prompt: c.bool_or("force_zeros_for_empty_prompt", true)?,
            components,
        })
    }
}
