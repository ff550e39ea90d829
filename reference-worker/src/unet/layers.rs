//! The torch.nn layers the UNet is built from (`nn.Linear`, `nn.Conv2d`, `nn.GroupNorm`,
//! `nn.LayerNorm`, diffusers' `get_activation`), each calling the same ATen op as its PyTorch
//! module, and the weight loader that hands them their tensors by diffusers' state-dict names.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::lora::{LayerShape, LoraSlot, LoraTarget, LoraTargets};
use crate::weights::ComponentWeights;

/// Hands out the tensors of one component by name and remembers which ones were taken, so that
/// [`WeightLoader::finish`] can reject tensors the model does not use; collects the LoRA-able
/// layers (`Linear`, `Conv2d`) by module name.
pub(crate) struct WeightLoader<'w> {
    weights: &'w ComponentWeights,
    kind: Kind,
    config_path: PathBuf,
    used: RefCell<BTreeSet<String>>,
    lora_targets: RefCell<LoraTargets>,
}

impl<'w> WeightLoader<'w> {
    pub(crate) fn new(weights: &'w ComponentWeights, kind: Kind, config_path: &Path) -> Self {
        Self {
            weights,
            kind,
            config_path: config_path.to_owned(),
            used: RefCell::new(BTreeSet::new()),
            lora_targets: RefCell::new(LoraTargets::default()),
        }
    }

    /// The loader at the root of the state dict.
    pub(crate) fn root(&self) -> Params<'_, 'w> {
        Params {
            loader: self,
            prefix: String::new(),
        }
    }

    /// Fails when the weights hold tensors that no layer asked for; otherwise returns the
    /// LoRA-able layers.
    pub(crate) fn finish(self) -> Result<LoraTargets> {
        let lora_targets = self.lora_targets.into_inner();
        let used = self.used.into_inner();
        let unused: Vec<String> = self
            .weights
            .names()
            .filter(|name| !used.contains(*name))
            .map(str::to_owned)
            .collect();
        let Some(first) = unused.first() else {
            return Ok(lora_targets);
        };
        let path = self
            .weights
            .files()
            .iter()
            .find(|file| file.info(first).is_some())
            .map(|file| file.path().to_owned())
            .unwrap_or_default();
        Err(Error::UnusedTensors {
            path,
            tensors: unused,
        })
    }
}

/// A position in the state dict (`down_blocks.1.attentions.0`): the prefix of the names below it.
#[derive(Clone)]
pub(crate) struct Params<'l, 'w> {
    loader: &'l WeightLoader<'w>,
    prefix: String,
}

impl Params<'_, '_> {
    /// The child `name` (a module attribute or a `ModuleList` index).
    pub(crate) fn sub(&self, name: impl Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            loader: self.loader,
            prefix,
        }
    }

    /// The tensor `name` below this position, which must have shape `shape`.
    pub(crate) fn tensor(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let full = self.sub(name).prefix;
        let tensor = self
            .loader
            .weights
            .tensor_shaped(&full, shape, self.loader.kind)?;
        self.loader.used.borrow_mut().insert(full);
        Ok(tensor)
    }

    /// Registers the layer at this position as a LoRA target; its forward pass reads the slot.
    fn lora_target(&self, shape: LayerShape, weight: &Tensor, bias: Option<&Tensor>) -> LoraSlot {
        let target = LoraTarget::new(shape, weight, bias);
        let slot = target.slot.clone();
        self.loader
            .lora_targets
            .borrow_mut()
            .insert(self.prefix.clone(), target);
        slot
    }

    /// An error about config.json key `key` (sizes that the layers cannot be built from).
    pub(crate) fn config_error(&self, key: &str, message: impl Into<String>) -> Error {
        Error::InvalidValue {
            path: self.loader.config_path.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Converts a size from config.json to the `i64` libtorch wants.
pub(crate) fn dim(size: usize) -> i64 {
    // Sizes come from JSON integers checked to fit in usize; a model with a dimension beyond
    // i64 cannot exist in memory.
    i64::try_from(size).expect("a model dimension fits in i64")
}

/// `nn.Linear`, with peft's unfused LoRA branches when a LoRA adapts it.
#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: LoraSlot,
}

impl Linear {
    pub(crate) fn load(
        p: &Params,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let (in_features, out_features) = (dim(in_features), dim(out_features));
        let weight = p.tensor("weight", &[out_features, in_features])?;
        let bias = if bias {
            Some(p.tensor("bias", &[out_features])?)
        } else {
            None
        };
        let shape = LayerShape::Linear {
            in_features,
            out_features,
        };
        Ok(Self {
            lora: p.lora_target(shape, &weight, bias.as_ref()),
            weight,
            bias,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let result = xs.f_linear(&self.weight, self.bias.as_ref())?;
        self.lora.add_branches(result, |down, up| {
            Ok(xs
                .f_linear::<&Tensor>(down, None)?
                .f_linear::<&Tensor>(up, None)?)
        })
    }
}

/// `nn.Conv2d` with a square kernel, bias and zero padding, with peft's unfused LoRA branches
/// (a conv with the same kernel, stride and padding, then a 1×1 conv) when a LoRA adapts it.
#[derive(Debug)]
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
    lora: LoraSlot,
}

impl Conv2d {
    pub(crate) fn load(
        p: &Params,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let kernel = dim(kernel_size);
        let weight = p.tensor(
            "weight",
            &[dim(out_channels), dim(in_channels), kernel, kernel],
        )?;
        let bias = p.tensor("bias", &[dim(out_channels)])?;
        let shape = LayerShape::Conv2d {
            in_channels: dim(in_channels),
            out_channels: dim(out_channels),
            kernel_size: kernel,
            stride: dim(stride),
            padding: dim(padding),
        };
        Ok(Self {
            lora: p.lora_target(shape, &weight, Some(&bias)),
            weight,
            bias,
            stride: dim(stride),
            padding: dim(padding),
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (stride, padding) = ([self.stride, self.stride], [self.padding, self.padding]);
        let result = xs.f_conv2d(&self.weight, Some(&self.bias), stride, padding, [1, 1], 1)?;
        self.lora.add_branches(result, |down, up| {
            Ok(xs
                .f_conv2d::<&Tensor>(down, None, stride, padding, [1, 1], 1)?
                .f_conv2d::<&Tensor>(up, None, [1, 1], [0, 0], [1, 1], 1)?)
        })
    }
}

/// `nn.GroupNorm` with affine parameters.
#[derive(Debug)]
pub(crate) struct GroupNorm {
    num_groups: i64,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl GroupNorm {
    /// `groups_key` names the config.json key the group count came from, for the error when it
    /// does not divide `channels` (torch refuses such a GroupNorm too).
    pub(crate) fn load(
        p: &Params,
        num_groups: usize,
        channels: usize,
        eps: f64,
        groups_key: &str,
    ) -> Result<Self> {
        if num_groups == 0 || channels % num_groups != 0 {
            return Err(p.config_error(
                groups_key,
                format!(
                    "{num_groups} groups do not divide the {channels} channels of `{}`",
                    p.prefix
                ),
            ));
        }
        Ok(Self {
            num_groups: dim(num_groups),
            weight: p.tensor("weight", &[dim(channels)])?,
            bias: p.tensor("bias", &[dim(channels)])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // torch.nn.functional.group_norm passes torch.backends.cudnn.enabled, true by default.
        Ok(xs.f_group_norm(
            self.num_groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )?)
    }
}

/// `nn.LayerNorm` over the last dimension, with elementwise affine parameters.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    dim: i64,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub(crate) fn load(p: &Params, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            dim: dim(size),
            weight: p.tensor("weight", &[dim(size)])?,
            bias: p.tensor("bias", &[dim(size)])?,
            eps,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.f_layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )?)
    }
}

/// diffusers' `get_activation`: the modules of its `ACT2CLS` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `nn.SiLU` ("silu" and "swish").
    Silu,
    /// `nn.Mish`.
    Mish,
    /// `nn.GELU` (exact, `approximate="none"`).
    Gelu,
    /// `nn.ReLU`.
    Relu,
}

impl Activation {
    /// Parses a config value the way `get_activation` does (case-insensitively); `None` for a
    /// name diffusers does not know either.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name.to_lowercase().as_str() {
            "silu" | "swish" => Some(Self::Silu),
            "mish" => Some(Self::Mish),
            "gelu" => Some(Self::Gelu),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    pub(crate) fn forward(self, xs: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Silu => xs.f_silu()?,
            Self::Mish => xs.f_mish()?,
            Self::Gelu => xs.f_gelu("none")?,
            Self::Relu => xs.f_relu()?,
        })
    }
}
