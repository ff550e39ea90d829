//! The SDXL UNet: diffusers' `UNet2DConditionModel` on libtorch, one file per block kind, each
//! calling the same ATen ops in the same order as diffusers 0.42.1 so that the outputs are the
//! same floats (PROTOCOL B.9).
//!
//! Weights are found by diffusers' state-dict names; a missing, wrong-shaped or unused tensor is
//! an error naming the file and the tensor. Block types other than the ones SDXL uses are refused
//! with an error naming config.json and the key.

pub mod attention;
pub mod blocks;
pub mod embeddings;
pub(crate) mod layers;
pub mod model;
pub mod resnet;

pub use embeddings::get_timestep_embedding;
pub use model::UNet2DConditionModel;
