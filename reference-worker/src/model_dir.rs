//! A diffusers pipeline folder (`model_index.json` + one folder per component), read component by
//! component with the config type each class calls for.

use std::path::{Path, PathBuf};

use crate::config::{
    AutoencoderKLConfig, ClipTextConfig, ModelIndex, SchedulerConfig, UNet2DConditionConfig,
};
use crate::error::{Error, Result};
use crate::weights::ComponentWeights;

/// The typed config of one component, by its diffusers / transformers class.
#[derive(Debug, Clone)]
pub enum ComponentConfig {
    UNet(Box<UNet2DConditionConfig>),
    Vae(AutoencoderKLConfig),
    TextEncoder(ClipTextConfig),
    Scheduler(Box<SchedulerConfig>),
    /// A tokenizer folder: the path of its `tokenizer.json`.
    Tokenizer(PathBuf),
}

/// One component as `model_index.json` lists it.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub library: String,
    pub class: String,
    pub dir: PathBuf,
}

impl Component {
    /// Reads the component's config file(s), chosen by its class.
    pub fn config(&self) -> Result<ComponentConfig> {
        let file = |name: &str| self.dir.join(name);
        match self.class.as_str() {
            "UNet2DConditionModel" => Ok(ComponentConfig::UNet(Box::new(
                UNet2DConditionConfig::read(&file("config.json"))?,
            ))),
            "AutoencoderKL" => Ok(ComponentConfig::Vae(AutoencoderKLConfig::read(&file(
                "config.json",
            ))?)),
            "CLIPTextModel" | "CLIPTextModelWithProjection" => Ok(ComponentConfig::TextEncoder(
                ClipTextConfig::read(&file("config.json"))?,
            )),
            "CLIPTokenizer" | "CLIPTokenizerFast" => {
                let tokenizer = file("tokenizer.json");
                if !tokenizer.is_file() {
                    return Err(Error::MissingFile {
                        path: self.dir.clone(),
                        what: "tokenizer.json".to_owned(),
                    });
                }
                Ok(ComponentConfig::Tokenizer(tokenizer))
            }
            class if class.ends_with("Scheduler") => Ok(ComponentConfig::Scheduler(Box::new(
                SchedulerConfig::read(&file("scheduler_config.json"))?,
            ))),
            other => Err(Error::InvalidValue {
                path: self.dir.with_file_name("model_index.json"),
                key: self.name.clone(),
                message: format!("component class `{other}` is not supported"),
            }),
        }
    }

    /// Whether the component has weights (models do; tokenizers and schedulers do not).
    pub fn has_weights(&self) -> bool {
        !matches!(self.class.as_str(), "CLIPTokenizer" | "CLIPTokenizerFast")
            && !self.class.ends_with("Scheduler")
    }

    pub fn weights(&self) -> Result<ComponentWeights> {
        ComponentWeights::open_dir(&self.dir)
    }
}

/// A diffusers pipeline folder.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
    pub index: ModelIndex,
}

impl ModelDir {
    pub fn open(root: &Path) -> Result<Self> {
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(Error::MissingFile {
                path: root.to_owned(),
                what: "model_index.json (not a diffusers pipeline folder)".to_owned(),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            index: ModelIndex::read(&index_path)?,
        })
    }

    pub fn components(&self) -> impl Iterator<Item = Component> + '_ {
        self.index
            .components
            .iter()
            .map(|(name, library, class)| Component {
                name: name.clone(),
                library: library.clone(),
                class: class.clone(),
                dir: self.root.join(name),
            })
    }
}
