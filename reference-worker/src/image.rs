//! Decoded images to PNG files, as diffusers' `VaeImageProcessor.postprocess(output_type="pil")`
//! and PIL's `save` leave them: `(image * 0.5 + 0.5).clamp(0, 1)` in torch, float32 NHWC in NumPy,
//! `(images * 255).round().astype("uint8")`, 8-bit RGB PNG. The PNG bytes differ from PIL's; the
//! pixels do not.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// One 8-bit RGB image, rows top to bottom, `[height][width][3]` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// `postprocess(images, output_type="pil")` for `images` `[B, 3, H, W]` (the VAE output): one
/// [`RgbImage`] per batch entry, with the pixel values PIL holds.
pub fn postprocess(images: &Tensor) -> Result<Vec<RgbImage>> {
    let size = images.size();
    if size.len() != 4 || size[1] != 3 {
        return Err(Error::BadInput {
            model: "VaeImageProcessor.postprocess".to_owned(),
            input: "image",
            actual: size,
            kind: format!("{:?}", images.kind()),
            message: "expected [batch, 3, height, width]".to_owned(),
        });
    }
    let (batch, height, width) = (size[0], size[2], size[3]);
    let (Ok(height_u32), Ok(width_u32)) = (u32::try_from(height), u32::try_from(width)) else {
        return Err(Error::Torch(format!(
            "postprocess: image size {height}x{width} too large"
        )));
    };
    let mut out = Vec::with_capacity(batch as usize);
    for index in 0..batch {
        // _denormalize_conditionally: each image on its own, (x * 0.5 + 0.5).clamp(0, 1)
        let image = images
            .f_get(index)?
            .f_mul_scalar(0.5)?
            .f_add_scalar(0.5)?
            .f_clamp(0, 1)?;
        // pt_to_numpy: .permute(0, 2, 3, 1).float().numpy()
        let hwc = image
            .f_permute([1, 2, 0])?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?
            .f_view([-1])?;
        let values = Vec::<f32>::try_from(&hwc)?;
        let pixels = values.into_iter().map(to_u8).collect();
        out.push(RgbImage {
            width: width_u32,
            height: height_u32,
            pixels,
        });
    }
    Ok(out)
}

/// NumPy's `(value * 255).round().astype("uint8")` on one float32 in [0, 1]: a float32 product,
/// rounded half to even. (NaN, which a clamp lets through, becomes 0 here.)
fn to_u8(value: f32) -> u8 {
    let scaled = (value * 255.0_f32).round_ties_even();
    if scaled.is_nan() {
        0
    } else {
        scaled as u8
    }
}

/// The image as PNG bytes (8-bit RGB, no interlace).
pub fn encode_png(image: &RgbImage) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    write_png(image, &mut bytes)?;
    Ok(bytes)
}

/// Writes `image` to `path` as an 8-bit RGB PNG; errors name the file.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut writer = BufWriter::new(file);
    write_png(image, &mut writer).map_err(|error| match error {
        png::EncodingError::IoError(source) => Error::Io {
            path: path.to_owned(),
            source,
        },
        other => Error::ImageEncode {
            path: path.to_owned(),
            message: other.to_string(),
        },
    })?;
    use std::io::Write as _;
    writer.flush().map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_png<W: std::io::Write>(
    image: &RgbImage,
    out: W,
) -> std::result::Result<(), png::EncodingError> {
    let mut encoder = png::Encoder::new(out, image.width, image.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.pixels)?;
    writer.finish()
}
