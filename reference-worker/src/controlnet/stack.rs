//! The ControlNets of one render, ready for the denoising loop: each unit's model (loaded once
//! per process and kept, [`ControlNetCache`]) and its prepared conditioning image; per step, the
//! residuals the UNet adds (`MultiControlNetModel.forward` when there are several).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tch::{Kind, Tensor};

use super::model::{ControlNetModel, ControlNetOutput};
use super::units::{controlnet_keep, ControlNetUnit, Preprocessor};
use crate::control_image::{self, canny};
use crate::error::{Error, Result};

/// ControlNet models loaded by earlier requests, so that `serve` reads a folder once. An entry is
/// reloaded when the folder's files change (size or modification time).
#[derive(Default)]
pub struct ControlNetCache {
    entries: Vec<CacheEntry>,
}

struct CacheEntry {
    dir: PathBuf,
    kind: Kind,
    fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
    model: ControlNetModel,
}

/// At most this many models stay loaded between requests.
const CACHE_CAPACITY: usize = 4;

impl ControlNetCache {
    /// Finds `dir`'s model in `kind`, loading it if it is not cached (or changed), and appends
    /// its index to `in_use`. Making room never evicts a model `in_use` holds, and the indices
    /// there follow the entries that move.
    fn load(&mut self, dir: &Path, kind: Kind, in_use: &mut Vec<usize>) -> Result<()> {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        let fingerprint = fingerprint(&canonical);
        if let Some(index) = self
            .entries
            .iter()
            .position(|e| e.dir == canonical && e.kind == kind && e.fingerprint == fingerprint)
        {
            in_use.push(index);
            return Ok(());
        }
        let model = ControlNetModel::load(dir, kind)?;
        if self.entries.len() >= CACHE_CAPACITY {
            if let Some(evict) = (0..self.entries.len()).find(|i| !in_use.contains(i)) {
                self.entries.remove(evict);
                for index in in_use.iter_mut().filter(|index| **index > evict) {
                    *index -= 1;
                }
            }
        }
        self.entries.push(CacheEntry {
            dir: canonical,
            kind,
            fingerprint,
            model,
        });
        in_use.push(self.entries.len() - 1);
        Ok(())
    }

    /// How many models are loaded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The files of a folder with their sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((entry.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// How the worker finds a unit's model when the request gives only its `type`.
#[derive(Debug, Clone, Default)]
pub struct ControlNetLocator {
    /// `--controlnet-dir`: `<dir>/<type>` is the model of a unit without `model_path`.
    pub controlnet_dir: Option<PathBuf>,
}

impl ControlNetLocator {
    /// `model_path` (relative to the working directory), else `<controlnet_dir>/<type>`.
    pub fn model_dir(&self, unit: &ControlNetUnit) -> Result<PathBuf> {
        if let Some(path) = &unit.model_path {
            return Ok(PathBuf::from(path));
        }
        match (&self.controlnet_dir, &unit.kind) {
            (Some(dir), Some(kind)) if is_plain_name(kind) => Ok(dir.join(kind)),
            (Some(_), Some(kind)) => Err(Error::InvalidRequest {
                path: format!("{}/type", unit.pointer),
                rule: "pattern",
                message: format!(
                    "`{kind}` cannot name a folder of the ControlNet directory (letters, digits, \
                     `.`, `_`, `-`)"
                ),
            }),
            (None, kind) => Err(Error::InvalidRequest {
                path: format!("{}/model_path", unit.pointer),
                rule: "required",
                message: format!(
                    "no model_path, and the worker was started without --controlnet-dir to find \
                     {} in",
                    kind.as_deref()
                        .map_or("a model".to_owned(), |k| format!("the `{k}` model"))
                ),
            }),
            (Some(_), None) => Err(Error::InvalidRequest {
                path: format!("{}/model_path", unit.pointer),
                rule: "required",
                message: "a ControlNet unit needs `model_path` or `type`".to_owned(),
            }),
        }
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// One unit, prepared.
struct PreparedNet {
    /// Index into the cache's entries.
    model: usize,
    /// `prepare_image`'s output: `[2 × batch (with CFG) or batch, 3, height, width]`.
    image: Tensor,
    conditioning_scale: f64,
    guidance_start: f64,
    guidance_end: f64,
}

/// The ControlNets of one render.
pub struct ControlNetStack<'c> {
    cache: &'c ControlNetCache,
    nets: Vec<PreparedNet>,
    timesteps: usize,
}

/// What the units are prepared for.
#[derive(Debug, Clone, Copy)]
pub struct RenderShape {
    pub width: u32,
    pub height: u32,
    /// The pipeline's `vae_scale_factor` (the control image processor's).
    pub vae_scale_factor: u32,
    /// Images per prompt.
    pub batch: i64,
    pub kind: Kind,
    pub do_cfg: bool,
    /// `len(timesteps)` of the scheduler.
    pub timesteps: usize,
}

impl<'c> ControlNetStack<'c> {
    /// Loads (or finds in `cache`) each unit's model and prepares its image: read, preprocessed
    /// if asked, resized and scaled as `prepare_image` does, repeated for the batch and CFG.
    pub fn prepare(
        cache: &'c mut ControlNetCache,
        locator: &ControlNetLocator,
        units: &[ControlNetUnit],
        shape: RenderShape,
    ) -> Result<Self> {
        // every model first: loading one may move the others' cache entries
        let mut in_use = Vec::with_capacity(units.len());
        let mut dirs = Vec::with_capacity(units.len());
        for unit in units {
            let dir = locator.model_dir(unit)?;
            cache.load(&dir, shape.kind, &mut in_use)?;
            dirs.push(dir);
        }
        let mut nets = Vec::with_capacity(units.len());
        for ((unit, dir), &model) in units.iter().zip(&dirs).zip(&in_use) {
            let channels = cache.entries[model].model.config().conditioning_channels;
            if channels != 3 {
                return Err(Error::InvalidRequest {
                    path: format!("{}/model_path", unit.pointer),
                    rule: "model",
                    message: format!(
                        "{} takes {channels}-channel conditioning; control images are RGB",
                        dir.display()
                    ),
                });
            }
            let image = control_image::load_control_image(
                &unit.control_image,
                &format!("{}/control_image", unit.pointer),
            )?;
            let image = match unit.preprocessor {
                None => image,
                Some(Preprocessor::Canny {
                    low_threshold,
                    high_threshold,
                }) => canny::canny(&image, low_threshold, high_threshold),
            };
            let image = control_image::preprocess(
                &image,
                shape.width,
                shape.height,
                shape.vae_scale_factor,
            )?;
            let image = control_image::prepare(&image, shape.batch, shape.kind, shape.do_cfg)?;
            nets.push(PreparedNet {
                model,
                image,
                conditioning_scale: unit.conditioning_scale,
                guidance_start: unit.guidance_start,
                guidance_end: unit.guidance_end,
            });
        }
        Ok(Self {
            cache,
            nets,
            timesteps: shape.timesteps,
        })
    }

    /// The residuals for denoising step `step` (index into the scheduler's timesteps): every net
    /// run on the UNet's inputs with `conditioning_scale * controlnet_keep[step]`, summed in
    /// order. A net whose keep factor is 0 still runs (its residuals are zeros), as in diffusers.
    pub fn residuals(
        &self,
        step: usize,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        text_embeds: &Tensor,
        time_ids: &Tensor,
    ) -> Result<Option<ControlNetOutput>> {
        let mut merged: Option<ControlNetOutput> = None;
        for net in &self.nets {
            let keep = controlnet_keep(step, self.timesteps, net.guidance_start, net.guidance_end);
            let output = self.cache.entries[net.model].model.forward(
                sample,
                timestep,
                encoder_hidden_states,
                &net.image,
                net.conditioning_scale * keep,
                text_embeds,
                time_ids,
            )?;
            merged = Some(match merged {
                None => output,
                Some(previous) => previous.merge(output)?,
            });
        }
        Ok(merged)
    }
}
