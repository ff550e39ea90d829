//! The tch reference worker: renders what diffusers' `StableDiffusionXLPipeline` renders for the
//! same request and weights (PROTOCOL B.9), on libtorch from the project venv's torch wheel.

pub mod config;
pub mod control_image;
pub mod controlnet;
pub mod error;
pub mod generator;
pub mod image;
pub mod lora;
pub mod model_dir;
pub mod noise;
pub mod pipeline;
pub mod schedulers;
pub mod text;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::{Error, Result};
pub use generator::Generator;
