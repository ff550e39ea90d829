//! Image bytes to 8-bit RGB, as `diffusers.utils.load_image` leaves a PIL image:
//! `PIL.Image.open`, `PIL.ImageOps.exif_transpose`, `.convert("RGB")`.
//!
//! PNG and WebP are decoded by the `image` crate, JPEG by libjpeg-turbo's decoder (the `mozjpeg`
//! crate), so that the pixels are Pillow's: PNG and lossless WebP are exact by nature, lossy WebP
//! decoding is specified to the bit, and JPEG decoding (IDCT, chroma upsampling, YCbCr → RGB) is
//! the same libjpeg-turbo code Pillow links. `convert("RGB")` drops alpha without blending,
//! repeats grey, and expands palettes; 16-bit RGB(A) keeps the high byte of each sample, as
//! Pillow's `RGB;16B` unpacker does.
//!
//! Not decoded (an error that says so): other formats (GIF, BMP, TIFF, ...), 16-bit greyscale
//! PNGs (Pillow's `I;16` mode, whose conversion to RGB clips rather than scales), CMYK / YCCK
//! JPEGs. The orientation comes from EXIF only (Pillow also reads XMP's `tiff:Orientation` when
//! EXIF has none).

use std::cell::Cell;
use std::ffi::CStr;
use std::io::Cursor;
use std::os::raw::c_int;

use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder};

use crate::image::RgbImage;

/// The container formats this worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    WebP,
}

impl Format {
    /// The format of `bytes` from its signature, as `PIL.Image.open` finds it (not from a file
    /// name).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::WebP)
        } else {
            None
        }
    }
}

/// Decodes `bytes` (PNG, JPEG or WebP), applies its EXIF orientation and converts it to RGB. The
/// error is a sentence for the request's error message.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    match Format::sniff(bytes) {
        Some(Format::Png) => {
            let decoder = PngDecoder::new(Cursor::new(bytes))
                .map_err(|e| format!("not a readable PNG: {e}"))?;
            from_image_decoder(decoder, "PNG")
        }
        Some(Format::WebP) => {
            let decoder = WebPDecoder::new(Cursor::new(bytes))
                .map_err(|e| format!("not a readable WebP: {e}"))?;
            from_image_decoder(decoder, "WebP")
        }
        Some(Format::Jpeg) => decode_jpeg(bytes),
        None => Err(format!(
            "not a PNG, JPEG or WebP image (the file starts with {})",
            hex_prefix(bytes)
        )),
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing: it is empty".to_owned();
    }
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", shown.join(" "))
}

fn from_image_decoder(mut decoder: impl ImageDecoder, format: &str) -> Result<RgbImage, String> {
    let orientation = decoder
        .orientation()
        .map_err(|e| format!("corrupt {format} metadata: {e}"))?;
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| format!("corrupt {format} data: {e}"))?;
    image.apply_orientation(orientation);
    to_rgb(image, format)
}

/// `convert("RGB")` of the mode Pillow opens the image in.
fn to_rgb(image: DynamicImage, format: &str) -> Result<RgbImage, String> {
    let (width, height) = (image.width(), image.height());
    let pixels: Vec<u8> = match image {
        DynamicImage::ImageRgb8(rgb) => rgb.into_raw(),
        DynamicImage::ImageRgba8(rgba) => drop_alpha(rgba.as_raw(), 4),
        DynamicImage::ImageLuma8(grey) => grey.as_raw().iter().flat_map(|&v| [v; 3]).collect(),
        DynamicImage::ImageLumaA8(grey) => grey
            .as_raw()
            .chunks_exact(2)
            .flat_map(|la| [la[0]; 3])
            .collect(),
        DynamicImage::ImageRgb16(rgb) => high_bytes(rgb.as_raw(), 3),
        DynamicImage::ImageRgba16(rgba) => high_bytes(rgba.as_raw(), 4),
        other => {
            return Err(format!(
                "a {format} with {:?} samples is not supported (8-bit grey, RGB, RGBA or \
                 palette images, or 16-bit RGB(A), are)",
                other.color()
            ))
        }
    };
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

fn drop_alpha(samples: &[u8], channels: usize) -> Vec<u8> {
    samples
        .chunks_exact(channels)
        .flat_map(|px| [px[0], px[1], px[2]])
        .collect()
}

fn high_bytes(samples: &[u16], channels: usize) -> Vec<u8> {
    samples
        .chunks_exact(channels)
        .flat_map(|px| [px[0] >> 8, px[1] >> 8, px[2] >> 8].map(|v| v as u8))
        .collect()
}

thread_local! {
    /// Set by [`jpeg_emit_message`] when libjpeg ran out of data (`JWRN_JPEG_EOF`).
    static JPEG_TRUNCATED: Cell<bool> = const { Cell::new(false) };
}

/// libjpeg's standard error manager, except that a fatal error unwinds (without the panic hook,
/// caught in [`decode_jpeg`]) and warnings are only looked at for truncation.
fn jpeg_error_manager() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: jpeg_error_mgr is a C struct of function pointers, integers and raw pointers, for
    // which all-zero is a valid value; jpeg_std_error fills it in.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(jpeg_error_exit);
    err.emit_message = Some(jpeg_emit_message);
    err
}

/// Warnings (level −1) are corrupt data libjpeg works around, as Pillow lets it; running out of
/// data is the one Pillow fails on ("image file is truncated").
unsafe extern "C-unwind" fn jpeg_emit_message(
    cinfo: &mut mozjpeg_sys::jpeg_common_struct,
    level: c_int,
) {
    // SAFETY: libjpeg calls this with its cinfo, whose `err` is the manager installed above.
    let code = unsafe { cinfo.err.as_ref() }.map(|err| err.msg_code);
    if level < 0 && code == Some(mozjpeg_sys::JWRN_JPEG_EOF as c_int) {
        JPEG_TRUNCATED.with(|flag| flag.set(true));
    }
}

unsafe extern "C-unwind" fn jpeg_error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    // SAFETY: as above; the message table is libjpeg's static array of C strings, indexed up to
    // `last_jpeg_message`.
    let message = unsafe { cinfo.err.as_ref() }.and_then(|err| {
        let code = err.msg_code;
        if err.jpeg_message_table.is_null() || code < 0 || code > err.last_jpeg_message {
            return None;
        }
        let text = unsafe { *err.jpeg_message_table.offset(code as isize) };
        (!text.is_null()).then(|| {
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        })
    });
    std::panic::resume_unwind(Box::new(
        message.unwrap_or_else(|| "libjpeg gave up".to_owned()),
    ));
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    JPEG_TRUNCATED.with(|flag| flag.set(false));
    // libjpeg reports a corrupt file by unwinding out of its error handler; it is caught here and
    // becomes the error.
    let decoded =
        std::panic::catch_unwind(|| -> Result<(RgbImage, Option<Orientation>), String> {
            let decompress = mozjpeg::Decompress::with_markers(&[mozjpeg::Marker::APP(1)])
                .with_err(jpeg_error_manager())
                .from_mem(bytes)
                .map_err(|e| format!("not a readable JPEG: {e}"))?;
            let orientation = decompress
                .markers()
                .filter(|marker| marker.marker == mozjpeg::Marker::APP(1))
                .find_map(|marker| marker.data.strip_prefix(b"Exif\0\0"))
                .and_then(Orientation::from_exif_chunk);
            match decompress.color_space() {
                mozjpeg::ColorSpace::JCS_GRAYSCALE
                | mozjpeg::ColorSpace::JCS_YCbCr
                | mozjpeg::ColorSpace::JCS_RGB => {}
                other => {
                    return Err(format!(
                        "a {other:?} JPEG is not supported (greyscale, YCbCr and RGB JPEGs are)"
                    ))
                }
            }
            let (width, height) = (decompress.width(), decompress.height());
            let mut rgb = decompress.rgb().map_err(|e| format!("corrupt JPEG: {e}"))?;
            let pixels = rgb
                .read_scanlines::<u8>()
                .map_err(|e| format!("corrupt JPEG data: {e}"))?;
            rgb.finish()
                .map_err(|e| format!("corrupt JPEG data: {e}"))?;
            let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
                return Err(format!("a JPEG of {width}×{height} pixels is too large"));
            };
            Ok((
                RgbImage {
                    width,
                    height,
                    pixels,
                },
                orientation,
            ))
        });
    if JPEG_TRUNCATED.with(Cell::get) {
        return Err("a truncated JPEG (the data ends before the image does)".to_owned());
    }
    let (image, orientation) = match decoded {
        Ok(result) => result?,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "libjpeg gave up".to_owned());
            return Err(format!("corrupt JPEG: {message}"));
        }
    };
    match orientation {
        None | Some(Orientation::NoTransforms) => Ok(image),
        Some(orientation) => {
            let buffer = image::RgbImage::from_raw(image.width, image.height, image.pixels)
                .ok_or_else(|| "the JPEG decoder returned a short image".to_owned())?;
            let mut dynamic = DynamicImage::ImageRgb8(buffer);
            dynamic.apply_orientation(orientation);
            to_rgb(dynamic, "JPEG")
        }
    }
}
