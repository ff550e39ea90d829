//! Reading one LoRA file into per-module halves, ranks and alphas, the way
//! `StableDiffusionXLPipeline.load_lora_weights` reads it (see the module docs of
//! [`crate::lora`]).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tch::Kind;

use super::config::LoraConfig;
use super::keys::{self, KeyProblem};
use super::layer::{LayerShape, LoraTargets};
use super::Component;
use crate::error::{Error, Result};
use crate::weights::SafetensorsFile;

/// The header entry diffusers' `save_lora_weights` writes the LoraConfig of each component to.
pub const METADATA_KEY: &str = "lora_adapter_metadata";

const KOHYA_PREFIXES: [&str; 4] = ["lora_te_", "lora_unet_", "lora_te1_", "lora_te2_"];

/// The two key layouts diffusers reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// kohya-ss: `lora_unet_…`, `lora_te1_…`, `lora_te2_…` with `.lora_down.weight`,
    /// `.lora_up.weight` and optional `.alpha` (SGM or diffusers block names).
    Kohya,
    /// diffusers / PEFT: `unet.<module>.lora_A.weight`, `text_encoder.…`, `text_encoder_2.…`,
    /// with the LoraConfig in the header's `lora_adapter_metadata` or derived from the ranks.
    Peft,
}

/// What a LoRA is loaded against: the LoRA-able layers of the pipeline's models.
#[derive(Debug, Clone, Copy)]
pub struct AdapterTargets<'a> {
    pub unet: &'a LoraTargets,
    /// `CLIPTextModel` (transformers 5 has no `text_model.` level: module names start at
    /// `encoder.`).
    pub text_encoder: Option<&'a LoraTargets>,
    /// `CLIPTextModelWithProjection` (`text_model.encoder.…`, `text_projection`).
    pub text_encoder_2: Option<&'a LoraTargets>,
    /// `layers_per_block` of the UNet's config.json when it is one number (SGM block names are
    /// mapped with it).
    pub layers_per_block: Option<usize>,
}

impl AdapterTargets<'_> {
    fn of(&self, component: Component) -> Option<&LoraTargets> {
        match component {
            Component::Unet => Some(self.unet),
            Component::TextEncoder => self.text_encoder,
            Component::TextEncoder2 => self.text_encoder_2,
        }
    }
}

/// One module of a LoRA: its two halves in the model's dtype, its rank and alpha as peft has them.
#[derive(Debug)]
pub struct AdapterModule {
    pub component: Component,
    /// The module name in its model (`down_blocks.1.attentions.0.proj_in`).
    pub module: String,
    /// The file's tensor names of the two halves.
    pub down_key: String,
    pub up_key: String,
    pub rank: i64,
    /// peft's `lora_alpha` for the module (a Python number).
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub(crate) down: tch::Tensor,
    pub(crate) up: tch::Tensor,
}

impl AdapterModule {
    /// peft's `set_scale(adapter, weight)`: `weight * lora_alpha / r` (`/ sqrt(r)` with rsLoRA),
    /// evaluated left to right in Python floats.
    pub fn scaling(&self, weight: f64) -> f64 {
        if self.use_rslora {
            weight * self.lora_alpha / (self.rank as f64).sqrt()
        } else {
            weight * self.lora_alpha / self.rank as f64
        }
    }
}

/// A LoRA file, read and checked against the model.
#[derive(Debug)]
pub struct LoraAdapter {
    path: PathBuf,
    layout: Layout,
    modules: Vec<AdapterModule>,
}

/// What [`read_kohya`] / [`read_peft`] find: the modules, and the LoRA config per component.
struct Read {
    found: Vec<Found>,
    configs: Vec<(Component, LoraConfig)>,
}

/// A PEFT module's halves as the file has them: the down half's key, the up half's key and
/// converted name.
struct Halves {
    module: String,
    down: Option<String>,
    up: Option<(String, String)>,
}

/// One module found in the file, before its tensors are read.
struct Found {
    component: Component,
    module: String,
    down_key: String,
    up_key: String,
}

impl LoraAdapter {
    /// Reads `path` (a safetensors file) as a LoRA for `targets`, its halves converted to `kind`.
    pub fn load(path: &Path, targets: &AdapterTargets, kind: Kind) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let keys: Vec<String> = file.names().map(str::to_owned).collect();
        let Some(first) = keys.first() else {
            return Err(Error::NotALora {
                path: path.to_owned(),
                message: "the file holds no tensors".to_owned(),
            });
        };
        if let Some(key) = keys
            .iter()
            .find(|k| k.contains("dora_scale") || k.contains("lora_magnitude_vector"))
        {
            return Err(key_error(
                path,
                key,
                "a DoRA magnitude: DoRA is not rendered (diffusers drops kohya-ss `dora_scale` \
                 keys with a warning and renders the plain LoRA instead)",
            ));
        }
        let metadata = adapter_metadata(&file)?;
        let is_kohya = |k: &String| KOHYA_PREFIXES.iter().any(|p| k.starts_with(p));
        let (layout, found, configs) = if keys.iter().all(is_kohya) {
            let read = read_kohya(&file, &keys, targets, metadata.as_ref())?;
            (Layout::Kohya, read.found, read.configs)
        } else {
            if let Some(key) = keys.iter().find(|k| !k.contains("lora")) {
                if keys.iter().all(|k| !k.contains("lora")) {
                    return Err(Error::NotALora {
                        path: path.to_owned(),
                        message: format!(
                            "no tensor name contains `lora` (e.g. `{first}`); LoRA tensors are \
                             named lora_unet_…/lora_te1_…/lora_te2_… (kohya-ss) or \
                             unet.….lora_A.weight (diffusers/PEFT)"
                        ),
                    });
                }
                return Err(key_error(
                    path,
                    key,
                    "not a LoRA tensor (diffusers refuses a file whose keys do not all contain \
                     `lora`)",
                ));
            }
            if let Some(key) = keys.iter().find(|k| is_kohya(k)) {
                let other = keys.iter().find(|k| !is_kohya(k)).unwrap_or(first);
                return Err(key_error(
                    path,
                    key,
                    format!(
                        "a kohya-ss key in a file whose other keys are not (e.g. `{other}`): one \
                         layout per file"
                    ),
                ));
            }
            let read = read_peft(&file, &keys, targets, metadata.as_ref())?;
            (Layout::Peft, read.found, read.configs)
        };
        let mut modules = Vec::with_capacity(found.len());
        for entry in found {
            let config = configs
                .iter()
                .find(|(component, _)| *component == entry.component)
                .map(|(_, config)| config)
                .ok_or_else(|| {
                    key_error(path, &entry.down_key, "no LoRA config for its component")
                })?;
            modules.push(build_module(&file, targets, config, entry, kind)?);
        }
        for (component, config) in &configs {
            check_untouched_targets(path, *component, config, targets, &modules)?;
        }
        Ok(Self {
            path: path.to_owned(),
            layout,
            modules,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn modules(&self) -> &[AdapterModule] {
        &self.modules
    }
}

fn key_error(path: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::LoraKey {
        path: path.to_owned(),
        key: key.to_owned(),
        message: message.into(),
    }
}

fn problem(path: &Path, problem: KeyProblem) -> Error {
    key_error(path, &problem.key, problem.message)
}

/// The header's `lora_adapter_metadata`, parsed.
fn adapter_metadata(file: &SafetensorsFile) -> Result<Option<Map<String, Value>>> {
    let Some(raw) = file.metadata().get(METADATA_KEY) else {
        return Ok(None);
    };
    let bad = |message: String| Error::LoraMetadata {
        path: file.path().to_owned(),
        key: METADATA_KEY.to_owned(),
        message,
    };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(other) => Err(bad(format!("not a JSON object: {other}"))),
        Err(error) => Err(bad(format!("not JSON: {error}"))),
    }
}

/// The component's entries of the metadata (`unet.r` → `r`); `None` without metadata.
fn component_metadata(
    path: &Path,
    metadata: Option<&Map<String, Value>>,
    component: Component,
) -> Result<Option<LoraConfig>> {
    let Some(metadata) = metadata else {
        return Ok(None);
    };
    let prefix = format!("{}.", component.name());
    let entries: Map<String, Value> = metadata
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_owned(), v.clone())))
        .collect();
    if entries.is_empty() {
        return Err(Error::LoraMetadata {
            path: path.to_owned(),
            key: format!("{prefix}*"),
            message: format!(
                "the file has {} weights but its metadata no `{prefix}` entries (diffusers would \
                 build a default LoraConfig)",
                component.name()
            ),
        });
    }
    LoraConfig::from_metadata(&entries)
        .map(Some)
        .map_err(|(key, message)| Error::LoraMetadata {
            path: path.to_owned(),
            key: format!("{prefix}{key}"),
            message,
        })
}

/// A kohya-ss file: SGM mapping, diffusers' renaming, then the same per-component conversion
/// diffusers applies before handing the state dict to peft.
fn read_kohya(
    file: &SafetensorsFile,
    keys: &[String],
    targets: &AdapterTargets,
    metadata: Option<&Map<String, Value>>,
) -> Result<Read> {
    let path = file.path();
    let mapped =
        keys::map_sgm_blocks(keys, targets.layers_per_block).map_err(|p| problem(path, p))?;
    let modules = keys::convert_kohya(&mapped).map_err(|p| problem(path, p))?;
    let mut found = Vec::new();
    let mut configs = Vec::new();
    for component in Component::ALL {
        let own: Vec<&keys::KohyaModule> = modules
            .iter()
            .filter(|m| m.component == component)
            .collect();
        let Some(first) = own.first() else { continue };
        let model = targets.of(component).ok_or_else(|| {
            key_error(
                path,
                &first.down_key,
                format!("the pipeline has no {}", component.name()),
            )
        })?;
        // (peft name of the down half, of the up half) per module, in the dict's order
        let peft_names: Vec<(String, String)> = match component {
            Component::Unet => own
                .iter()
                .map(|m| {
                    (
                        keys::unet_to_peft(&m.down_name),
                        keys::unet_to_peft(&m.up_name),
                    )
                })
                .collect(),
            _ => {
                let names: Vec<String> = own
                    .iter()
                    .flat_map(|m| [m.down_name.clone(), m.up_name.clone()])
                    .collect();
                let converted = keys::text_encoder_to_peft(&names)
                    .map_err(|message| key_error(path, &first.down_key, message))?;
                converted
                    .chunks(2)
                    .map(|pair| {
                        let strip = |n: &String| strip_text_model(component, n);
                        (strip(&pair[0]), strip(&pair[1]))
                    })
                    .collect()
            }
        };
        let mut ranks: Vec<(String, i64)> = Vec::new();
        for (module, (down, up)) in own.iter().zip(&peft_names) {
            let name = module_of(down, ".lora_A.weight")
                .filter(|name| module_of(up, ".lora_B.weight").as_deref() == Some(name.as_str()))
                .ok_or_else(|| {
                    key_error(
                        path,
                        &module.down_key,
                        format!(
                            "diffusers converts it to `{down}` / `{up}`, which name no LoRA layer"
                        ),
                    )
                })?;
            check_module_exists(path, model, component, &name, &module.down_key, down)?;
            if component == Component::Unet {
                if let Some(rank) = up_rank(file, &module.up_key) {
                    ranks.push((format!("^{up}"), rank));
                }
            }
            found.push(Found {
                component,
                module: name,
                down_key: module.down_key.clone(),
                up_key: module.up_key.clone(),
            });
        }
        if component != Component::Unet {
            let ups: Vec<(&str, &str)> = peft_names
                .iter()
                .zip(&own)
                .map(|((_, up), m)| (up.as_str(), m.up_key.as_str()))
                .collect();
            ranks = text_encoder_ranks(file, model, &ups);
        }
        let mut alphas: Vec<(String, f64)> = Vec::new();
        for module in &own {
            if let Some((name, alpha_key)) = &module.alpha {
                let value = alpha_value(file, alpha_key)?;
                let name = name
                    .strip_prefix(&format!("{}.", component.name()))
                    .unwrap_or(name)
                    .to_owned();
                // network_alphas.update(): a repeated name keeps its place and takes the value
                match alphas.iter_mut().find(|(n, _)| *n == name) {
                    Some(entry) => entry.1 = value,
                    None => alphas.push((name, value)),
                }
            }
        }
        let config = match component_metadata(path, metadata, component)? {
            Some(_) if !alphas.is_empty() => {
                return Err(Error::LoraMetadata {
                    path: path.to_owned(),
                    key: METADATA_KEY.to_owned(),
                    message: "a kohya-ss file with `.alpha` tensors and LoRA metadata: \
                              diffusers refuses both at once"
                        .to_owned(),
                });
            }
            Some(config) => config,
            None => LoraConfig::from_state_dict(&ranks, &alphas, component == Component::Unet)
                .ok_or_else(|| no_rank_dict(path, component, &first.down_key))?,
        };
        configs.push((component, config));
    }
    Ok(Read { found, configs })
}

/// A diffusers / PEFT file: keys by component prefix, diffusers' per-component conversion.
fn read_peft(
    file: &SafetensorsFile,
    keys: &[String],
    targets: &AdapterTargets,
    metadata: Option<&Map<String, Value>>,
) -> Result<Read> {
    let path = file.path();
    if let Some(key) = keys.iter().find(|k| {
        Component::ALL
            .iter()
            .all(|c| !k.starts_with(&format!("{}.", c.name())))
    }) {
        return Err(key_error(
            path,
            key,
            "belongs to no component: diffusers / PEFT LoRA keys start with `unet.`, \
             `text_encoder.` or `text_encoder_2.`",
        ));
    }
    let mut found = Vec::new();
    let mut configs = Vec::new();
    for component in Component::ALL {
        let prefix = format!("{}.", component.name());
        // (name without the prefix, file key), in the file's order
        let own: Vec<(String, &String)> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(|name| (name.to_owned(), k)))
            .collect();
        let Some((first_name, first_key)) = own.first() else {
            continue;
        };
        let model = targets.of(component).ok_or_else(|| {
            key_error(
                path,
                first_key,
                format!("the pipeline has no {}", component.name()),
            )
        })?;
        let names: Vec<String> = own.iter().map(|(name, _)| name.clone()).collect();
        let converted: Vec<String> = match component {
            Component::Unet => {
                if first_name.contains("lora_A") {
                    names
                } else {
                    names.iter().map(|n| keys::unet_to_peft(n)).collect()
                }
            }
            _ => keys::text_encoder_to_peft(&names)
                .map_err(|message| key_error(path, first_key, message))?
                .iter()
                .map(|n| strip_text_model(component, n))
                .collect(),
        };
        // module → (down file key, up file key, up peft name)
        let mut halves: Vec<Halves> = Vec::new();
        for ((_, file_key), name) in own.iter().zip(&converted) {
            let (module, is_down) = if let Some(m) = module_of(name, ".lora_A.weight") {
                (m, true)
            } else if let Some(m) = module_of(name, ".lora_B.weight") {
                (m, false)
            } else if name.ends_with(".lora_B.bias") {
                return Err(key_error(
                    path,
                    file_key,
                    "a lora_B bias (peft's lora_bias) is not rendered",
                ));
            } else {
                return Err(key_error(
                    path,
                    file_key,
                    format!(
                        "diffusers converts it to `{name}`, which is not a `.lora_A.weight` or \
                         `.lora_B.weight`"
                    ),
                ));
            };
            let index = match halves.iter().position(|h| h.module == module) {
                Some(index) => index,
                None => {
                    halves.push(Halves {
                        module: module.clone(),
                        down: None,
                        up: None,
                    });
                    halves.len() - 1
                }
            };
            if is_down {
                halves[index].down = Some((*file_key).clone());
            } else {
                halves[index].up = Some(((*file_key).clone(), name.clone()));
            }
        }
        let mut ranks: Vec<(String, i64)> = Vec::new();
        let mut ups: Vec<(String, String)> = Vec::new();
        for Halves { module, down, up } in halves {
            let (down_key, (up_key, up_name)) = match (down, up) {
                (Some(down), Some(up)) => (down, up),
                (Some(down), None) => {
                    return Err(key_error(path, &down, "a lora_A without its lora_B"))
                }
                (None, Some((up, _))) => {
                    return Err(key_error(path, &up, "a lora_B without its lora_A"))
                }
                (None, None) => unreachable!("a module enters the list with one of its halves"),
            };
            check_module_exists(path, model, component, &module, &down_key, &module)?;
            if component == Component::Unet {
                if let Some(rank) = up_rank(file, &up_key) {
                    ranks.push((format!("^{up_name}"), rank));
                }
            }
            ups.push((up_name, up_key.clone()));
            found.push(Found {
                component,
                module,
                down_key,
                up_key,
            });
        }
        if component != Component::Unet {
            let ups: Vec<(&str, &str)> =
                ups.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
            ranks = text_encoder_ranks(file, model, &ups);
        }
        let config = match component_metadata(path, metadata, component)? {
            Some(config) => config,
            None => LoraConfig::from_state_dict(&ranks, &[], component == Component::Unet)
                .ok_or_else(|| no_rank_dict(path, component, first_key))?,
        };
        configs.push((component, config));
    }
    Ok(Read { found, configs })
}

/// `CLIPTextModel` has no `text_model` attribute in transformers 5: diffusers removes the prefix
/// older files carry.
fn strip_text_model(component: Component, name: &str) -> String {
    match component {
        Component::TextEncoder => name.strip_prefix("text_model.").unwrap_or(name).to_owned(),
        _ => name.to_owned(),
    }
}

/// `name` without `suffix`, if it ends with it.
fn module_of(name: &str, suffix: &str) -> Option<String> {
    name.strip_suffix(suffix)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}

fn check_module_exists(
    path: &Path,
    model: &LoraTargets,
    component: Component,
    module: &str,
    key: &str,
    converted: &str,
) -> Result<()> {
    if model.get(module).is_some() {
        return Ok(());
    }
    Err(key_error(
        path,
        key,
        format!(
            "the {} has no Linear or Conv2d module `{module}` (diffusers reads the key as \
             `{converted}`)",
            component.name()
        ),
    ))
}

/// `lora_B.shape[1]` when the tensor has at least two dimensions (diffusers' rank dict).
fn up_rank(file: &SafetensorsFile, up_key: &str) -> Option<i64> {
    file.info(up_key)
        .filter(|info| info.shape.len() > 1)
        .map(|info| info.shape[1])
}

/// diffusers' text encoder rank dict: the model's q/k/v/out projections and MLP layers in
/// `named_modules()` order whose `lora_B.weight` the state dict has.
fn text_encoder_ranks(
    file: &SafetensorsFile,
    model: &LoraTargets,
    ups: &[(&str, &str)],
) -> Vec<(String, i64)> {
    let mut modules: Vec<(&str, usize)> = model
        .iter()
        .filter(|(name, _)| {
            [".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
        })
        .map(|(name, target)| (name, target.order))
        .collect();
    modules.sort_by_key(|(_, order)| *order);
    modules
        .into_iter()
        .filter_map(|(name, _)| {
            let key = format!("{name}.lora_B.weight");
            let (_, file_key) = ups.iter().find(|(up, _)| *up == key)?;
            file.info(file_key)
                .map(|info| (key, info.shape.get(1).copied().unwrap_or_default()))
        })
        .collect()
}

fn no_rank_dict(path: &Path, component: Component, key: &str) -> Error {
    key_error(
        path,
        key,
        format!(
            "diffusers finds no rank for the {} (its rank dict only looks at q/k/v/out \
             projections and fc1/fc2 with a 2-D lora_B) and fails",
            component.name()
        ),
    )
}

/// An `.alpha` tensor's value, as `tensor.item()` gives it.
fn alpha_value(file: &SafetensorsFile, key: &str) -> Result<f64> {
    let tensor = file.tensor(key, Kind::Double)?;
    if tensor.numel() != 1 {
        return Err(key_error(
            file.path(),
            key,
            format!(
                "an alpha must be one number, the tensor has shape {:?}",
                tensor.size()
            ),
        ));
    }
    let value = tensor.f_view([-1])?.f_double_value(&[0])?;
    if !value.is_finite() {
        return Err(key_error(
            file.path(),
            key,
            format!("alpha {value} is not finite"),
        ));
    }
    Ok(value)
}

/// Checks one module's halves against its layer and its config, and reads them.
fn build_module(
    file: &SafetensorsFile,
    targets: &AdapterTargets,
    config: &LoraConfig,
    found: Found,
    kind: Kind,
) -> Result<AdapterModule> {
    let path = file.path();
    let target = targets
        .of(found.component)
        .and_then(|model| model.get(&found.module))
        .ok_or_else(|| key_error(path, &found.down_key, "no such module"))?;
    if !config.targets(&found.module) {
        return Err(key_error(
            path,
            &found.down_key,
            format!(
                "module `{}` is not in the metadata's target_modules (or is excluded): diffusers \
                 would not load these weights",
                found.module
            ),
        ));
    }
    let shape_of = |key: &str| {
        file.info(key)
            .map(|info| info.shape.clone())
            .unwrap_or_default()
    };
    let (down_shape, up_shape) = (shape_of(&found.down_key), shape_of(&found.up_key));
    let layer = match target.shape {
        LayerShape::Linear { .. } => "Linear",
        LayerShape::Conv2d { .. } => "Conv2d",
    };
    let module = format!("{}.{}", found.component.name(), found.module);
    let shape_error =
        |tensor: &str, actual: &[i64], expected: Vec<i64>, reason: String| Error::LoraShape {
            path: path.to_owned(),
            tensor: tensor.to_owned(),
            actual: actual.to_vec(),
            expected,
            reason: format!("{reason} `{module}`").into(),
        };
    let down_rank = down_shape.first().copied();
    let up_rank = up_shape.get(1).copied();
    let rank = match (down_rank, up_rank) {
        (Some(down), Some(up)) if down == up => down,
        (Some(_), Some(_)) => {
            return Err(Error::LoraRank {
                path: path.to_owned(),
                down: found.down_key.as_str().into(),
                down_shape,
                up: found.up_key.as_str().into(),
                up_shape,
            })
        }
        (Some(down), None) => {
            return Err(shape_error(
                &found.up_key,
                &up_shape,
                target.shape.up_shape(down),
                format!("the up half of a LoRA for the {layer}"),
            ))
        }
        (None, _) => {
            return Err(shape_error(
                &found.down_key,
                &down_shape,
                target.shape.down_shape(up_rank.unwrap_or(1)),
                format!("the down half of a LoRA for the {layer}"),
            ))
        }
    };
    let expected_down = target.shape.down_shape(rank);
    if down_shape != expected_down {
        return Err(shape_error(
            &found.down_key,
            &down_shape,
            expected_down,
            format!("the down half of a rank-{rank} LoRA for the {layer}"),
        ));
    }
    let expected_up = target.shape.up_shape(rank);
    if up_shape != expected_up {
        return Err(shape_error(
            &found.up_key,
            &up_shape,
            expected_up,
            format!("the up half of a rank-{rank} LoRA for the {layer}"),
        ));
    }
    let (r, lora_alpha) = config
        .module(&found.module)
        .map_err(|message| key_error(path, &found.down_key, message))?;
    if r != rank {
        return Err(shape_error(
            &found.up_key,
            &up_shape,
            target.shape.up_shape(r),
            format!(
                "the up half at r = {r}, the rank the adapter's LoRA config gives (diffusers fails \
                 to load this tensor), for the {layer}"
            ),
        ));
    }
    // peft's lora_A / lora_B are trainable Parameters: `requires_grad` is set even under
    // `torch.no_grad()`, and ATen's matmul reads that flag to decide whether to fold a strided
    // 3-D input into one matrix (a copy, then mm) or to run a batched product, which round
    // differently (Transformer2DModel's `proj_in` gets such an input). Same flag, same path.
    // peft keeps the tensors `load_file` returned (views into the mapped file) when no dtype
    // conversion is needed, and BLAS rounds by their alignment: same address modulo 64.
    let half = |key: &str| -> Result<tch::Tensor> {
        Ok(file.tensor_as_mapped(key, kind)?.set_requires_grad(true))
    };
    Ok(AdapterModule {
        component: found.component,
        down: half(&found.down_key)?,
        up: half(&found.up_key)?,
        module: found.module,
        down_key: found.down_key,
        up_key: found.up_key,
        rank,
        lora_alpha,
        use_rslora: config.use_rslora,
    })
}

/// With metadata, peft also gives LoRA layers to targeted modules the file has no weights for.
/// Their `lora_B` starts at zero (they add nothing) unless `init_lora_weights` is false: then they
/// would add random values, which is refused.
fn check_untouched_targets(
    path: &Path,
    component: Component,
    config: &LoraConfig,
    targets: &AdapterTargets,
    modules: &[AdapterModule],
) -> Result<()> {
    if config.zero_init || config.target_modules.is_none() {
        return Ok(());
    }
    let Some(model) = targets.of(component) else {
        return Ok(());
    };
    for (name, _) in model.iter() {
        let loaded = modules
            .iter()
            .any(|m| m.component == component && m.module == name);
        if !loaded && config.targets(name) {
            return Err(Error::LoraMetadata {
                path: path.to_owned(),
                key: format!("{}.init_lora_weights", component.name()),
                message: format!(
                    "false, and target_modules covers `{name}`, which the file has no weights \
                     for: peft would give it random weights"
                ),
            });
        }
    }
    Ok(())
}
