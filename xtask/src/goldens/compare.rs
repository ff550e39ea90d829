//! Golden comparison (issue 7): a per-pixel bound plus a structural score, and the diff images and
//! report written when they fail.
//!
//! The bound: every 8-bit sample within [`Tolerance::max_abs_diff`] of the golden, and the mean
//! SSIM of the luma (image-compare's `MSSIMSimple`, 8×8 windows) at least
//! [`Tolerance::min_ssim`]. Renders on one machine are bit-identical run to run and across thread
//! counts (see `goldens/mod.rs`), so the bound only has to absorb what another CPU's float kernels
//! may change: a step of one or two in a few samples. Any real change of a 4×4 block moves some
//! sample by far more than that (the test below perturbs one block by 16 levels and fails).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use serde_json::{json, Value};

/// What a golden comparison allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest allowed |golden − actual| of any 8-bit sample.
    pub max_abs_diff: u8,
    /// Smallest allowed mean SSIM of the two luma images.
    pub min_ssim: f64,
}

pub const TOLERANCE: Tolerance = Tolerance {
    max_abs_diff: 2,
    min_ssim: 0.995,
};

impl Tolerance {
    pub fn to_json(self) -> Value {
        json!({"max_abs_diff": self.max_abs_diff, "min_ssim": self.min_ssim})
    }

    pub fn from_json(value: &Value) -> Result<Self> {
        let max_abs_diff = value["max_abs_diff"]
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .context("tolerance.max_abs_diff must be an integer 0..255")?;
        let min_ssim = value["min_ssim"]
            .as_f64()
            .filter(|v| (0.0..=1.0).contains(v))
            .context("tolerance.min_ssim must be a number in 0..1")?;
        Ok(Self {
            max_abs_diff,
            min_ssim,
        })
    }
}

/// How an image compares with its golden.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub max_abs_diff: u8,
    /// Samples (pixel × channel) beyond the bound.
    pub samples_over: usize,
    pub ssim: f64,
    pub pass: bool,
}

impl Verdict {
    pub fn identical(&self) -> bool {
        self.max_abs_diff == 0
    }
}

pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let image = image::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(image.into_rgb8())
}

/// Compares `actual` with `expected` under `tolerance`; images of different sizes are an error.
pub fn compare(expected: &RgbImage, actual: &RgbImage, tolerance: Tolerance) -> Result<Verdict> {
    if expected.dimensions() != actual.dimensions() {
        bail!(
            "the golden is {}×{}, the render is {}×{}",
            expected.width(),
            expected.height(),
            actual.width(),
            actual.height()
        );
    }
    let mut max_abs_diff = 0u8;
    let mut samples_over = 0;
    for (e, a) in expected.as_raw().iter().zip(actual.as_raw()) {
        let d = e.abs_diff(*a);
        max_abs_diff = max_abs_diff.max(d);
        if d > tolerance.max_abs_diff {
            samples_over += 1;
        }
    }
    let ssim = if max_abs_diff == 0 {
        1.0
    } else {
        let luma = |image: &RgbImage| image::DynamicImage::ImageRgb8(image.clone()).into_luma8();
        image_compare::gray_similarity_structure(
            &image_compare::Algorithm::MSSIMSimple,
            &luma(expected),
            &luma(actual),
        )
        .map_err(|e| anyhow::anyhow!("SSIM: {e}"))?
        .score
    };
    Ok(Verdict {
        max_abs_diff,
        samples_over,
        ssim,
        pass: samples_over == 0 && ssim >= tolerance.min_ssim,
    })
}

/// |expected − actual| per sample, scaled ×8 so a difference of a few levels shows; samples
/// beyond `bound` painted pure red so they stand out.
pub fn diff_image(expected: &RgbImage, actual: &RgbImage, bound: u8) -> RgbImage {
    RgbImage::from_fn(expected.width(), expected.height(), |x, y| {
        let e = expected.get_pixel(x, y);
        let a = actual.get_pixel(x, y);
        let d: [u8; 3] = std::array::from_fn(|c| e[c].abs_diff(a[c]));
        if d.iter().any(|&v| v > bound) {
            Rgb([255, 0, 0])
        } else {
            Rgb(d.map(|v| v.saturating_mul(8)))
        }
    })
}

/// One failing image for the report.
pub struct Failure {
    pub case: String,
    pub png: String,
    /// What went wrong, when there is no image pair to show (missing, extra, unreadable).
    pub problem: Option<String>,
    pub verdict: Option<Verdict>,
    pub images: Option<(RgbImage, RgbImage)>,
}

/// Writes expected / actual / diff PNGs for each failure under `dir/<png stem>/` and `dir/report.md`;
/// returns the report's path.
pub fn write_report(dir: &Path, failures: &[Failure], tolerance: Tolerance) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut report = String::from("# Golden check failures\n\n");
    let _ = writeln!(
        report,
        "Bound: every 8-bit sample within {} of the golden and luma mean SSIM ≥ {}.\n",
        tolerance.max_abs_diff, tolerance.min_ssim
    );
    let _ = writeln!(
        report,
        "| case | image | max abs diff | samples over | SSIM | files |\n|---|---|---|---|---|---|"
    );
    for failure in failures {
        let stem = failure.png.trim_end_matches(".png");
        let files = match &failure.images {
            Some((expected, actual)) => {
                let folder = dir.join(stem);
                std::fs::create_dir_all(&folder)?;
                for (name, image) in [
                    ("expected.png", expected.clone()),
                    ("actual.png", actual.clone()),
                    (
                        "diff.png",
                        diff_image(expected, actual, tolerance.max_abs_diff),
                    ),
                ] {
                    let path = folder.join(name);
                    image
                        .save(&path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                format!("[expected]({stem}/expected.png) [actual]({stem}/actual.png) [diff]({stem}/diff.png)")
            }
            None => String::new(),
        };
        match (&failure.verdict, &failure.problem) {
            (Some(v), _) => {
                let _ = writeln!(
                    report,
                    "| {} | {} | {} | {} | {:.5} | {files} |",
                    failure.case, failure.png, v.max_abs_diff, v.samples_over, v.ssim
                );
            }
            (None, Some(problem)) => {
                let _ = writeln!(
                    report,
                    "| {} | {} | {problem} | | | {files} |",
                    failure.case, failure.png
                );
            }
            (None, None) => {}
        }
    }
    let path = dir.join("report.md");
    std::fs::write(&path, report).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth image with texture, like a render.
    fn picture(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let v = |k: u32| ((x * 7 + y * 5 + k * 31) % 200 + 20) as u8;
            Rgb([v(0), v(1), v(2)])
        })
    }

    #[test]
    fn identical_images_pass_with_ssim_one() {
        let a = picture(64, 48);
        let verdict = compare(&a, &a.clone(), TOLERANCE).unwrap();
        assert!(verdict.pass && verdict.identical());
        assert_eq!(verdict.ssim, 1.0);
    }

    #[test]
    fn a_one_level_change_everywhere_passes() {
        let a = picture(64, 48);
        let mut b = a.clone();
        for (i, sample) in b.iter_mut().enumerate() {
            if i % 3 == 0 {
                *sample = sample.saturating_add(1);
            }
        }
        let verdict = compare(&a, &b, TOLERANCE).unwrap();
        assert!(verdict.pass, "{verdict:?}");
        assert_eq!(verdict.max_abs_diff, 1);
    }

    #[test]
    fn a_changed_4x4_block_anywhere_fails() {
        let a = picture(64, 48);
        for (bx, by) in [(0, 0), (60, 44), (31, 17)] {
            let mut b = a.clone();
            for y in by..by + 4 {
                for x in bx..bx + 4 {
                    let p = b.get_pixel_mut(x, y);
                    p[1] = p[1].wrapping_add(16);
                }
            }
            let verdict = compare(&a, &b, TOLERANCE).unwrap();
            assert!(!verdict.pass, "block at {bx},{by}: {verdict:?}");
            assert_eq!(verdict.samples_over, 16);
        }
    }

    #[test]
    fn different_sizes_are_an_error() {
        let error = compare(&picture(8, 8), &picture(8, 9), TOLERANCE).unwrap_err();
        assert!(error.to_string().contains("8×8"), "{error}");
    }

    #[test]
    fn the_report_has_the_three_images_per_failure() {
        let dir = tempfile_dir();
        let a = picture(16, 16);
        let mut b = a.clone();
        b.get_pixel_mut(3, 3)[0] ^= 0x80;
        let verdict = compare(&a, &b, TOLERANCE).unwrap();
        let report = write_report(
            &dir,
            &[Failure {
                case: "case".into(),
                png: "case.png".into(),
                problem: None,
                verdict: Some(verdict),
                images: Some((a, b)),
            }],
            TOLERANCE,
        )
        .unwrap();
        let text = std::fs::read_to_string(&report).unwrap();
        assert!(text.contains("case/diff.png"), "{text}");
        for name in ["expected.png", "actual.png", "diff.png"] {
            assert!(dir.join("case").join(name).is_file(), "{name}");
        }
        let diff = read_rgb(&dir.join("case/diff.png")).unwrap();
        assert_eq!(diff.get_pixel(3, 3), &Rgb([255, 0, 0]));
        assert_eq!(diff.get_pixel(0, 0), &Rgb([0, 0, 0]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "xtask-golden-report-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
