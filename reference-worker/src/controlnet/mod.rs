//! SDXL ControlNet: diffusers' `ControlNetModel` on libtorch, built from the UNet's own blocks
//! and layers (`crate::unet`); the request's units; and what `StableDiffusionXLControlNetPipeline`
//! does with them in the denoising loop (guidance start/end, conditioning scale,
//! `MultiControlNetModel`'s sum of several nets' residuals).
//!
//! Weights are found by diffusers' state-dict names; a folder that is not a ControlNet (a UNet, a
//! LoRA file), a missing, wrong-shaped or unused tensor is an error naming the file and the key
//! or tensor.

mod embedding;
pub mod model;
pub mod stack;
pub mod units;

pub use embedding::ControlNetConditioningEmbedding;
pub use model::{ChannelOrder, ControlNetModel, ControlNetOutput};
pub use stack::{ControlNetCache, ControlNetLocator, ControlNetStack, RenderShape};
pub use units::{units_from_v2_data, ControlNetUnit, Preprocessor};
