//! diffusers' `AutoencoderKL` (0.42.1): the SDXL VAE. `decode` turns (already unscaled) latents
//! into images in [-1, 1]; `encode` gives the latent distribution of an image (for img2img).
//! Every size comes from `vae/config.json`.

mod attention;
mod blocks;
mod decoder;
mod encoder;
mod layers;
mod resnet;

use std::path::Path;

use tch::{Kind, Tensor};

use crate::config::AutoencoderKLConfig;
use crate::error::{Error, Result};
use crate::generator::Generator;
use crate::noise::randn_tensor;
use crate::weights::ComponentWeights;

use decoder::Decoder;
use encoder::Encoder;
use layers::{Activation, Conv2d, ParamLoader};
use resnet::BlockSettings;

/// The eps of every VAE group norm (diffusers passes `resnet_eps=1e-6` throughout).
const VAE_NORM_EPS: f64 = 1e-6;

#[derive(Debug)]
pub struct AutoencoderKL {
    config: AutoencoderKLConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    /// The dtype of every parameter (diffusers' `vae.dtype`).
    kind: Kind,
    /// Where the model came from, for error messages.
    name: String,
}

impl AutoencoderKL {
    /// Loads `dir` (a diffusers `vae/` folder: `config.json` and the safetensors weights) as a
    /// float32 model.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_kind(dir, Kind::Float)
    }

    /// Like [`Self::load`] with the weights converted to `kind` (diffusers' `torch_dtype`):
    /// float32 or bfloat16 (the worker renders on CPU, where float16 is not offered).
    pub fn load_with_kind(dir: &Path, kind: Kind) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !matches!(kind, Kind::Float | Kind::BFloat16) {
            return Err(Error::Unsupported {
                path: dir.display().to_string(),
                reason: format!("the VAE runs in float32 or bfloat16, not {kind:?}"),
            });
        }
        let config = AutoencoderKLConfig::read(&config_path)?;
        let invalid = |key: &str, message: String| Error::InvalidValue {
            path: config_path.clone(),
            key: key.to_owned(),
            message,
        };
        for (key, types, expected) in [
            (
                "down_block_types",
                &config.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &config.up_block_types, "UpDecoderBlock2D"),
        ] {
            if let Some(other) = types.iter().find(|t| t.as_str() != expected) {
                return Err(invalid(
                    key,
                    format!("`{other}` is not supported (only {expected})"),
                ));
            }
        }
        let activation = Activation::from_name(&config.act_fn).ok_or_else(|| {
            invalid(
                "act_fn",
                format!(
                    "`{}` is not one of silu, swish, mish, gelu, relu",
                    config.act_fn
                ),
            )
        })?;
        if let Some(&channels) = config
            .block_out_channels
            .iter()
            .find(|&&c| c % config.norm_num_groups != 0)
        {
            return Err(invalid(
                "norm_num_groups",
                format!(
                    "{} groups do not divide {channels} channels of block_out_channels",
                    config.norm_num_groups
                ),
            ));
        }
        let settings = BlockSettings {
            groups: config.norm_num_groups,
            eps: VAE_NORM_EPS,
            activation,
        };

        let weights = ComponentWeights::open_dir(dir)?;
        let params = ParamLoader::new(&weights, kind);
        let latent = config.latent_channels;
        let encoder = Encoder::load(&params, &config, settings)?;
        let decoder = Decoder::load(&params, &config, settings)?;
        let quant_conv = if config.use_quant_conv {
            Some(Conv2d::load(
                &params,
                "quant_conv",
                2 * latent,
                2 * latent,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(Conv2d::load(
                &params,
                "post_quant_conv",
                latent,
                latent,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        params.finish()?;
        Ok(Self {
            config,
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            kind,
            name: format!("AutoencoderKL ({})", dir.display()),
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// The parameters' dtype (diffusers' `vae.dtype`).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `vae.decode(latents).sample`: `latents` `[B, latent_channels, h, w]` in the VAE's dtype, already
    /// divided by `scaling_factor` as the pipeline does; returns `[B, out_channels, 8h, 8w]`
    /// (for SDXL's four blocks) in about [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_input(latents, "latents", self.config.latent_channels)?;
        let _guard = tch::no_grad_guard();
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents)?,
            None => latents.shallow_clone(),
        };
        self.decoder.forward(&z)
    }

    /// `vae.encode(image).latent_dist`: `image` `[B, in_channels, H, W]` in the VAE's dtype, in
    /// [-1, 1].
    pub fn encode(&self, image: &Tensor) -> Result<DiagonalGaussian> {
        self.check_input(image, "image", self.config.in_channels)?;
        let _guard = tch::no_grad_guard();
        let encoded = self.encoder.forward(image)?;
        let parameters = match &self.quant_conv {
            Some(conv) => conv.forward(&encoded)?,
            None => encoded,
        };
        DiagonalGaussian::new(parameters)
    }

    fn check_input(&self, input: &Tensor, name: &'static str, channels: usize) -> Result<()> {
        let size = input.size();
        let problem = if size.len() != 4 {
            Some("expected 4 dimensions [batch, channels, height, width]".to_owned())
        } else if size[1] != channels as i64 {
            Some(format!("expected {channels} channels"))
        } else if size[0] == 0 || size[2] == 0 || size[3] == 0 {
            Some("expected a non-empty batch and spatial size".to_owned())
        } else if input.kind() != self.kind {
            Some(format!("expected {:?}, the VAE's dtype", self.kind))
        } else {
            None
        };
        match problem {
            Some(message) => Err(Error::BadInput {
                model: self.name.clone(),
                input: name,
                actual: size,
                kind: format!("{:?}", input.kind()),
                message,
            }),
            None => Ok(()),
        }
    }
}

/// diffusers' `DiagonalGaussianDistribution` (not deterministic): `mean` and `logvar` are the two
/// halves of the encoder output along channels, `logvar` clamped to [-30, 20].
#[derive(Debug)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    pub logvar: Tensor,
    pub std: Tensor,
    pub var: Tensor,
}

impl DiagonalGaussian {
    pub fn new(parameters: Tensor) -> Result<Self> {
        let halves = parameters.f_chunk(2, 1)?;
        let [mean, logvar]: [Tensor; 2] = halves.try_into().map_err(|halves: Vec<Tensor>| {
            Error::Torch(format!(
                "DiagonalGaussian: chunk(2, dim=1) gave {} parts for shape {:?}",
                halves.len(),
                parameters.size()
            ))
        })?;
        let logvar = logvar.f_clamp(-30.0, 20.0)?;
        let std = logvar.f_mul_scalar(0.5)?.f_exp()?;
        let var = logvar.f_exp()?;
        Ok(Self {
            mean,
            logvar,
            std,
            var,
        })
    }

    /// `sample(generator)`: `mean + std * randn_tensor(mean.shape, generator)`.
    pub fn sample(&self, generators: &mut [Generator]) -> Result<Tensor> {
        let noise = randn_tensor(&self.mean.size(), generators, self.mean.kind())?;
        Ok(self.mean.f_add(&self.std.f_mul(&noise)?)?)
    }

    /// `mode()`: the mean.
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }
}
