//! The model side of LoRA: every `nn.Linear` / `nn.Conv2d` of the UNet and the text encoders
//! carries a [`LoraSlot`] and is listed, by its diffusers / transformers module name, in its
//! model's [`LoraTargets`]. Activating a LoRA fills slots; the layer's forward pass then adds the
//! branches exactly as peft's unfused `LoraLayer.forward` does:
//!
//! ```text
//! result = base_layer(x)
//! for adapter in active_adapters:            # the request's order
//!     result = result + lora_B(lora_A(x)) * scaling
//! ```
//!
//! The base weights are never written: dropping a LoRA empties the slots, and the layer computes
//! `base_layer(x)` alone again, bit for bit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tch::Tensor;

use crate::error::Result;

/// The kind and sizes of a layer a LoRA module may adapt, which fix its two halves' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerShape {
    /// `nn.Linear(in_features, out_features)`: `lora_A` is `[r, in]`, `lora_B` `[out, r]`.
    Linear { in_features: i64, out_features: i64 },
    /// `nn.Conv2d` with a square kernel: peft's `lora_A` is a conv with the base layer's kernel,
    /// stride and padding (`[r, in, k, k]`), `lora_B` a 1×1 conv (`[out, r, 1, 1]`).
    Conv2d {
        in_channels: i64,
        out_channels: i64,
        kernel_size: i64,
        stride: i64,
        padding: i64,
    },
}

impl LayerShape {
    /// The shape `lora_A` (kohya's `lora_down`) must have at rank `rank`.
    pub fn down_shape(&self, rank: i64) -> Vec<i64> {
        match *self {
            Self::Linear { in_features, .. } => vec![rank, in_features],
            Self::Conv2d {
                in_channels,
                kernel_size,
                ..
            } => vec![rank, in_channels, kernel_size, kernel_size],
        }
    }

    /// The shape `lora_B` (kohya's `lora_up`) must have at rank `rank`.
    pub fn up_shape(&self, rank: i64) -> Vec<i64> {
        match *self {
            Self::Linear { out_features, .. } => vec![out_features, rank],
            Self::Conv2d { out_channels, .. } => vec![out_channels, rank, 1, 1],
        }
    }
}

/// One active LoRA module on a layer: its two halves (in the model's dtype) and the scale peft
/// multiplies their output by (`weight · lora_alpha / r`, as `set_scale` computes it in Python
/// floats).
#[derive(Debug)]
pub(crate) struct Branch {
    pub(crate) down: Tensor,
    pub(crate) up: Tensor,
    pub(crate) scaling: f64,
}

/// The active LoRA branches of one layer, shared between the layer and its model's
/// [`LoraTargets`]. A `Mutex` (not a `RefCell`) keeps the models `Send`.
#[derive(Debug, Clone, Default)]
pub struct LoraSlot(Arc<Mutex<Vec<Branch>>>);

impl LoraSlot {
    /// `result` plus every branch, in activation order: `result + forward(down, up) * scaling`,
    /// where `forward` applies the two halves to the layer's input (peft's
    /// `lora_B(lora_A(dropout(x)))`, dropout being the identity).
    pub(crate) fn add_branches(
        &self,
        result: Tensor,
        forward: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let branches = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut result = result;
        for branch in branches.iter() {
            let lora = forward(&branch.down, &branch.up)?.f_mul_scalar(branch.scaling)?;
            result = result.f_add(&lora)?;
        }
        Ok(result)
    }

    pub(crate) fn push(&self, branch: Branch) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(branch);
    }

    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many LoRA branches the layer adds now.
    pub fn active(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A layer a LoRA may adapt.
#[derive(Debug)]
pub struct LoraTarget {
    pub shape: LayerShape,
    pub(crate) slot: LoraSlot,
    /// Registration index: the layers are registered in `named_modules()` order.
    pub(crate) order: usize,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl LoraTarget {
    pub(crate) fn new(shape: LayerShape, weight: &Tensor, bias: Option<&Tensor>) -> Self {
        Self {
            shape,
            slot: LoraSlot::default(),
            order: 0,
            weight: weight.shallow_clone(),
            bias: bias.map(Tensor::shallow_clone),
        }
    }

    /// The layer's base weight (the tensor the layer computes with, not a copy).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The layer's base bias, if it has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// How many LoRA branches the layer adds now.
    pub fn active_branches(&self) -> usize {
        self.slot.active()
    }
}

/// The LoRA-able layers of one model by module name (`down_blocks.1.attentions.0.proj_in`,
/// `text_model.encoder.layers.3.mlp.fc1`), as diffusers' and transformers' `named_modules()`
/// name them.
#[derive(Debug, Default)]
pub struct LoraTargets(BTreeMap<String, LoraTarget>);

impl LoraTargets {
    /// Registers a layer; layers are registered in their model's `named_modules()` order.
    pub(crate) fn insert(&mut self, name: String, mut target: LoraTarget) {
        target.order = self.0.len();
        self.0.insert(name, target);
    }

    pub fn get(&self, name: &str) -> Option<&LoraTarget> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &LoraTarget)> {
        self.0.iter().map(|(name, target)| (name.as_str(), target))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops every active branch: the model computes with its base weights alone.
    pub fn clear(&self) {
        for target in self.0.values() {
            target.slot.clear();
        }
    }
}
