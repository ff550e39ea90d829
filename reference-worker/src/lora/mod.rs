//! LoRA, as diffusers 0.42.1 applies it in the pipeline the oracle runs:
//! `pipe.load_lora_weights(path, adapter_name=name)` for each LoRA of the request, then
//! `pipe.set_adapters([names…], adapter_weights=[weights…])` (peft 0.21.2 underneath).
//!
//! # Which file (`data.lora.models[i].name`)
//!
//! `name` is a path to a `.safetensors` file, as the C# side's `ModelPath` /`Name` and the
//! transformer carry it through unchanged (PROTOCOL B.1). An absolute path is used as it is; a
//! relative one is joined to the worker's LoRA folder (`--lora-dir`; without it, the worker's
//! working directory, the same base relative model paths have). When that names no file and
//! `name` does not end in `.safetensors`, `<name>.safetensors` is tried too, so bare names such
//! as `style_lora` (the upstream samples' spelling) find `style_lora.safetensors` in the LoRA
//! folder. A folder, a missing file or a non-safetensors file is an error naming the request
//! path (`/data/lora/models/<i>/name`) and every path tried. `fixtures/oracle/render.py` resolves
//! names the same way before calling diffusers.
//!
//! Other fields: `weight` (default 1.0, diffusers' `adapter_weights` default) is the adapter
//! weight; `adapter_name` (default `default_<i>`, `i` the model's index) names the adapter; two
//! models with one adapter name are an error, as in diffusers. `enabled: false` renders without
//! LoRA; an absent `enabled` with models present means enabled.
//!
//! # Layouts
//!
//! Both key layouts diffusers reads ([`Layout`]): kohya-ss (`lora_unet_…`, `lora_te1_…`,
//! `lora_te2_…`, `.lora_down.weight` / `.lora_up.weight` / `.alpha`, with SGM block names as
//! kohya-ss writes them for SDXL or diffusers block names), and diffusers / PEFT
//! (`unet.….lora_A.weight`, `text_encoder.…`, `text_encoder_2.…`, optionally with
//! `lora_adapter_metadata`). Keys are converted by a line-by-line port of diffusers' own
//! conversions ([`keys`]), so each lands on the module diffusers puts it on; ranks and alphas are
//! what peft ends up with, quirks included ([`config`]). Every key must land on a `Linear` or
//! `Conv2d` of the UNet or a text encoder with the right shapes; where diffusers would only log
//! (unknown keys, DoRA magnitudes, SGM and diffusers names mixed) the worker refuses the file
//! with an error naming it, the key and the shapes.
//!
//! # Arithmetic
//!
//! peft's unfused forward, per LoRA-adapted layer ([`layer`]):
//! `result = base(x); for each adapter in order: result = result + B(A(x)) * scaling`, with
//! `scaling = weight * lora_alpha / r` computed in f64 as Python does (rsLoRA:
//! `/ sqrt(r)`), `A` and `B` the file's tensors converted to the pipeline's dtype (peft casts
//! the adapter to the base layer's dtype), a conv `A` with the base layer's kernel, stride and
//! padding and a 1×1 conv `B`. The halves are flagged `requires_grad` like peft's Parameters
//! (no graph is built under no-grad): ATen's matmul reads that flag when it decides how to
//! multiply a strided input (Transformer2DModel's `proj_in` gets one), and the two ways round
//! differently. The halves also sit at the address peft computes with: diffusers keeps the tensors
//! `safetensors.torch.load_file` returns, views into the page-aligned mapped file, unless it
//! converts their dtype, and the CPU BLAS kernels round by the data's alignment (a `[1, k]`
//! input, the time embedding's at batch 1, changes in the last bit), so an unconverted half is
//! placed at its file offset modulo 64
//! ([`SafetensorsFile::tensor_as_mapped`](crate::weights::SafetensorsFile::tensor_as_mapped)).
//! The base weights are never modified, so switching or dropping
//! LoRAs between requests needs no reload and leaves no drift: an empty slot computes exactly
//! `base(x)`.

mod adapter;
pub(crate) mod config;
pub(crate) mod keys;
pub mod layer;

use std::path::{Path, PathBuf};

pub use adapter::{AdapterModule, AdapterTargets, Layout, LoraAdapter, METADATA_KEY};
pub use layer::{LayerShape, LoraSlot, LoraTarget, LoraTargets};

use crate::error::{Error, Result};

/// The models a LoRA can adapt, by diffusers' component names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Unet,
    TextEncoder,
    TextEncoder2,
}

impl Component {
    /// In diffusers' loading order (`load_lora_into_unet`, then the text encoders).
    pub const ALL: [Component; 3] = [Self::Unet, Self::TextEncoder, Self::TextEncoder2];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// One entry of `data.lora.models`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The file, as the request names it (see the module docs for how it resolves).
    pub name: String,
    /// The adapter weight (`set_adapters(..., adapter_weights=[weight])`), −2..2.
    pub weight: f64,
    /// `None`: `default_<i>`.
    pub adapter_name: Option<String>,
}

impl LoraSpec {
    /// The adapter name diffusers gets for the `index`-th LoRA of a request.
    pub fn adapter_name(&self, index: usize) -> String {
        self.adapter_name
            .clone()
            .unwrap_or_else(|| format!("default_{index}"))
    }
}

/// The file `name` resolves to (module docs, "Which file"), or every path tried.
pub fn resolve_path(
    name: &str,
    lora_dir: Option<&Path>,
) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let given = Path::new(name);
    let base = if given.is_absolute() {
        given.to_path_buf()
    } else {
        lora_dir.unwrap_or(Path::new("")).join(given)
    };
    let mut tried = vec![base.clone()];
    if base.is_file() {
        return Ok(base);
    }
    if !name.ends_with(".safetensors") {
        let mut with_extension = base.into_os_string();
        with_extension.push(".safetensors");
        let with_extension = PathBuf::from(with_extension);
        if with_extension.is_file() {
            return Ok(with_extension);
        }
        tried.push(with_extension);
    }
    Err(tried)
}

/// Resolves the request's LoRAs (`pointer` is the JSON Pointer of `data.lora.models`) and checks
/// the adapter names: `(adapter name, path, weight)` per LoRA.
pub fn resolve_all(
    loras: &[LoraSpec],
    lora_dir: Option<&Path>,
    pointer: &str,
) -> Result<Vec<(String, PathBuf, f64)>> {
    let mut resolved: Vec<(String, PathBuf, f64)> = Vec::with_capacity(loras.len());
    for (index, spec) in loras.iter().enumerate() {
        let adapter_name = spec.adapter_name(index);
        if let Some(other) = resolved
            .iter()
            .position(|(name, _, _)| *name == adapter_name)
        {
            return Err(Error::InvalidRequest {
                path: format!("{pointer}/{index}/adapter_name"),
                rule: "unique",
                message: format!(
                    "adapter name `{adapter_name}` is already used by {pointer}/{other} \
                     (diffusers refuses to load two adapters under one name)"
                ),
            });
        }
        let path = resolve_path(&spec.name, lora_dir).map_err(|tried| {
            let is_dir = tried.first().is_some_and(|p| p.is_dir());
            let tried: Vec<String> = tried.iter().map(|p| format!("`{}`", p.display())).collect();
            Error::InvalidRequest {
                path: format!("{pointer}/{index}/name"),
                rule: "lora_file",
                message: if is_dir {
                    format!(
                        "LoRA `{}` is a folder; name the .safetensors file in it",
                        spec.name
                    )
                } else {
                    format!(
                        "LoRA `{}` not found (tried {})",
                        spec.name,
                        tried.join(", ")
                    )
                },
            }
        })?;
        resolved.push((adapter_name, path, spec.weight));
    }
    Ok(resolved)
}
