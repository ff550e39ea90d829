//! ControlNet conditioning images: read from a request's `control_image` (a file path or base64
//! image data), decoded as `diffusers.utils.load_image` does, optionally turned into an edge map
//! (the `canny` preprocessor), then prepared as `StableDiffusionXLControlNetPipeline.prepare_image`
//! prepares them: `VaeImageProcessor(do_convert_rgb=True, do_normalize=False).preprocess`, which
//! resizes with Pillow's Lanczos filter to the render size and scales the bytes to [0, 1].
//!
//! Where the string points (docs/decisions.md): an existing file (a relative path is relative to
//! the worker's working directory, as for the upstream Python worker's `open`); otherwise base64
//! of the image file's bytes, bare or as a `data:image/...;base64,` URL, whitespace ignored.

mod base64;
pub mod canny;
mod decode;
pub mod resample;

use std::path::Path;

use tch::{Kind, Tensor};

pub use decode::{decode_rgb, Format};

use crate::error::{Error, Result};
use crate::image::RgbImage;

/// Reads the image a `control_image` value names; errors name `pointer` (the field's JSON
/// Pointer) and say what the value was taken for.
pub fn load_control_image(value: &str, pointer: &str) -> Result<RgbImage> {
    let invalid = |rule: &'static str, message: String| Error::InvalidRequest {
        path: pointer.to_owned(),
        rule,
        message,
    };
    let path = Path::new(value);
    let (bytes, what) = if path.is_file() {
        let bytes = std::fs::read(path)
            .map_err(|e| invalid("io", format!("cannot read {}: {e}", path.display())))?;
        (bytes, format!("the file {}", path.display()))
    } else {
        let payload = match value.strip_prefix("data:") {
            Some(url) => match url.split_once(";base64,") {
                Some((_, payload)) => payload,
                None => {
                    return Err(invalid(
                        "format",
                        "a data: URL must be `data:<type>;base64,<data>`".to_owned(),
                    ))
                }
            },
            None => value,
        };
        match base64::decode(payload) {
            Some(bytes) => (bytes, "the base64 data".to_owned()),
            None => {
                let cwd = std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "(unknown)".to_owned());
                return Err(invalid(
                    "not_found",
                    format!(
                        "neither an existing file (relative paths are resolved against the \
                         worker's working directory, {cwd}) nor base64 image data"
                    ),
                ));
            }
        }
    };
    decode_rgb(&bytes).map_err(|message| invalid("image", format!("{what} is {message}")))
}

/// `control_image_processor.preprocess(image, height=height, width=width)` for one RGB image:
/// the size rounded down to a multiple of `vae_scale_factor` (`get_default_height_width`),
/// resized to it with Pillow's Lanczos filter (no resize at that size already),
/// `np.array(image).astype(np.float32) / 255.0`, as a `[1, 3, height, width]` float32 tensor.
pub fn preprocess(
    image: &RgbImage,
    width: u32,
    height: u32,
    vae_scale_factor: u32,
) -> Result<Tensor> {
    let factor = vae_scale_factor.max(1);
    let (width, height) = (width - width % factor, height - height % factor);
    let resized = resample::resize_lanczos(image, width, height);
    let values: Vec<f32> = resized
        .pixels
        .iter()
        .map(|&byte| f32::from(byte) / 255.0)
        .collect();
    Ok(Tensor::f_from_slice(&values)?
        .f_view([1, i64::from(height), i64::from(width), 3])?
        .f_permute([0, 3, 1, 2])?
        .f_contiguous()?)
}

/// `prepare_image` after `preprocess`: repeated for each of the `batch` images
/// (`repeat_interleave`), converted to the ControlNet's dtype, and doubled (unconditional and
/// conditional halves) under classifier-free guidance.
pub fn prepare(image: &Tensor, batch: i64, kind: Kind, do_cfg: bool) -> Result<Tensor> {
    let image = image
        .f_repeat_interleave_self_int(batch, Some(0), None)?
        .f_to_kind(kind)?;
    if do_cfg {
        Ok(Tensor::f_cat(&[&image, &image], 0)?)
    } else {
        Ok(image)
    }
}
