//! The torch.nn layers the VAE is built from, loaded by diffusers' parameter names and called
//! through the same ATen ops as their `forward` (`F.conv2d`, `F.group_norm`, `F.linear`), so
//! libtorch takes the same kernels.

use std::cell::RefCell;
use std::collections::BTreeSet;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::weights::ComponentWeights;

/// Reads parameters by name, converted to the model's kind, remembering which ones the model
/// used, so tensors the config does not account for are reported rather than silently ignored.
pub struct ParamLoader<'w> {
    weights: &'w ComponentWeights,
    kind: Kind,
    used: RefCell<BTreeSet<String>>,
}

impl<'w> ParamLoader<'w> {
    pub fn new(weights: &'w ComponentWeights, kind: Kind) -> Self {
        Self {
            weights,
            kind,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// `name`, which must have shape `shape`, converted to the loader's kind as `from_pretrained`
    /// does for `torch_dtype` (the stored tensor's `.to(dtype)`).
    pub fn get(&self, name: &str, shape: &[i64]) -> Result<Tensor> {
        let tensor = self.weights.tensor_shaped(name, shape, self.kind)?;
        self.used.borrow_mut().insert(name.to_owned());
        Ok(tensor)
    }

    pub fn has(&self, name: &str) -> bool {
        self.weights.info(name).is_some()
    }

    /// Fails when the weights hold tensors no layer asked for.
    pub fn finish(self) -> Result<()> {
        let used = self.used.into_inner();
        let unused: Vec<String> = self
            .weights
            .names()
            .filter(|name| !used.contains(*name))
            .map(str::to_owned)
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let path = self
            .weights
            .files()
            .first()
            .map(|file| file.path().to_owned())
            .unwrap_or_default();
        Err(Error::UnusedTensors {
            path,
            tensors: unused,
        })
    }
}

/// `nn.Conv2d(in, out, kernel_size, stride, padding)` with a bias.
#[derive(Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (i, o, k) = (in_channels as i64, out_channels as i64, kernel_size as i64);
        Ok(Self {
            weight: params.get(&format!("{prefix}.weight"), &[o, i, k, k])?,
            bias: params.get(&format!("{prefix}.bias"), &[o])?,
            stride: stride as i64,
            padding: padding as i64,
        })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Ok(input.f_conv2d(
            &self.weight,
            Some(&self.bias),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )?)
    }
}

/// `nn.GroupNorm(num_groups, num_channels, eps, affine=True)`.
#[derive(Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    num_groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        num_groups: usize,
        num_channels: usize,
        eps: f64,
    ) -> Result<Self> {
        let c = num_channels as i64;
        Ok(Self {
            weight: params.get(&format!("{prefix}.weight"), &[c])?,
            bias: params.get(&format!("{prefix}.bias"), &[c])?,
            num_groups: num_groups as i64,
            eps,
        })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Ok(input.f_group_norm(
            self.num_groups,
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )?)
    }
}

/// `nn.Linear(in, out)` with a bias.
#[derive(Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub fn load(
        params: &ParamLoader,
        prefix: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let (i, o) = (in_features as i64, out_features as i64);
        Ok(Self {
            weight: params.get(&format!("{prefix}.weight"), &[o, i])?,
            bias: params.get(&format!("{prefix}.bias"), &[o])?,
        })
    }

    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Ok(input.f_linear(&self.weight, Some(&self.bias))?)
    }
}

/// diffusers' `get_activation(act_fn)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    Mish,
    Gelu,
    Relu,
}

impl Activation {
    /// The activation named `name`, or `None` when diffusers does not know it either.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "swish" | "silu" => Some(Self::Silu),
            "mish" => Some(Self::Mish),
            "gelu" => Some(Self::Gelu),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    pub fn forward(self, input: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Silu => input.f_silu()?,
            Self::Mish => input.f_mish()?,
            Self::Gelu => input.f_gelu("none")?,
            Self::Relu => input.f_relu()?,
        })
    }
}
