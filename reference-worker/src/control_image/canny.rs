//! The `canny` preprocessor: OpenCV's `cv2.Canny(image, low, high)` (aperture 3, L1 gradient
//! magnitude, `imgproc/src/canny.cpp`) on the RGB image, as diffusers' ControlNet recipe calls it
//! (`cv2.Canny(np.array(image), 100, 200)`, the edges repeated into three channels).
//!
//! On a three-channel image OpenCV computes 3×3 Sobel derivatives per channel (border:
//! replicate), and at each pixel keeps the channel with the largest `|dx| + |dy|` (the first one
//! on ties). Non-maximum suppression compares the magnitude with its two neighbours across the
//! gradient direction (sector boundaries at tan 22.5° in 15-bit fixed point, strict `>` on one
//! side and `>=` on the other, both strict on the diagonals); pixels above `high` seed edges that
//! grow through 8-connected pixels above `low` (hysteresis).

use crate::image::RgbImage;

/// The thresholds diffusers' SDXL ControlNet examples pass (`low_threshold = 100`,
/// `high_threshold = 200`); the protocol has no field for them.
pub const LOW_THRESHOLD: f64 = 100.0;
pub const HIGH_THRESHOLD: f64 = 200.0;

/// `CANNY_SHIFT`: the fixed-point bits of the sector test.
const CANNY_SHIFT: u32 = 15;

/// The edge map of `image` (`cv2.Canny(np.array(image), low, high)`): 255 on edges, 0 elsewhere,
/// as an RGB image with the three channels equal.
pub fn canny(image: &RgbImage, low_threshold: f64, high_threshold: f64) -> RgbImage {
    let edges = canny_edges(image, low_threshold, high_threshold);
    RgbImage {
        width: image.width,
        height: image.height,
        pixels: edges.iter().flat_map(|&v| [v; 3]).collect(),
    }
}

/// The single-channel edge map, row by row.
pub fn canny_edges(image: &RgbImage, low_threshold: f64, high_threshold: f64) -> Vec<u8> {
    let (cols, rows) = (image.width as usize, image.height as usize);
    let (low_threshold, high_threshold) = if low_threshold > high_threshold {
        (high_threshold, low_threshold)
    } else {
        (low_threshold, high_threshold)
    };
    // cvFloor
    let low = low_threshold.floor() as i32;
    let high = high_threshold.floor() as i32;
    if cols == 0 || rows == 0 {
        return Vec::new();
    }
    let (dx, dy, mag) = strongest_gradient(image);

    // The map has a one-pixel frame: 0 = may be an edge, 1 = not an edge, 2 = edge.
    let mapstep = cols + 2;
    let mut map = vec![1_u8; mapstep * (rows + 2)];
    let mut stack: Vec<usize> = Vec::new();
    let tg22 = (0.414_213_562_373_095_05_f64 * f64::from(1_u32 << CANNY_SHIFT) + 0.5) as i32;
    // magnitude outside the image is 0
    let mag_at = |i: isize, j: isize| -> i32 {
        if i < 0 || j < 0 || i as usize >= rows || j as usize >= cols {
            0
        } else {
            mag[i as usize * cols + j as usize]
        }
    };
    for i in 0..rows {
        for j in 0..cols {
            let m = mag[i * cols + j];
            let cell = (i + 1) * mapstep + j + 1;
            let (ii, jj) = (i as isize, j as isize);
            let is_peak = m > low && {
                let xs = i32::from(dx[i * cols + j]);
                let ys = i32::from(dy[i * cols + j]);
                let x = xs.abs();
                let y = ys.abs() << CANNY_SHIFT;
                let tg22x = x * tg22;
                if y < tg22x {
                    m > mag_at(ii, jj - 1) && m >= mag_at(ii, jj + 1)
                } else {
                    let tg67x = tg22x + (x << (CANNY_SHIFT + 1));
                    if y > tg67x {
                        m > mag_at(ii - 1, jj) && m >= mag_at(ii + 1, jj)
                    } else {
                        let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                        m > mag_at(ii - 1, jj - s) && m > mag_at(ii + 1, jj + s)
                    }
                }
            };
            if !is_peak {
                map[cell] = 1;
            } else if m > high {
                map[cell] = 2;
                stack.push(cell);
            } else {
                map[cell] = 0;
            }
        }
    }

    // hysteresis: grow the edges through the 8-neighbourhood
    let neighbours = [
        -1_isize,
        1,
        -(mapstep as isize) - 1,
        -(mapstep as isize),
        -(mapstep as isize) + 1,
        mapstep as isize - 1,
        mapstep as isize,
        mapstep as isize + 1,
    ];
    while let Some(cell) = stack.pop() {
        for offset in neighbours {
            let next = (cell as isize + offset) as usize;
            if map[next] == 0 {
                map[next] = 2;
                stack.push(next);
            }
        }
    }

    let mut edges = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        let row = &map[(i + 1) * mapstep + 1..(i + 1) * mapstep + 1 + cols];
        edges.extend(row.iter().map(|&v| if v == 2 { 255 } else { 0 }));
    }
    edges
}

/// Per pixel, the Sobel derivatives of the channel with the largest L1 magnitude, and that
/// magnitude.
fn strongest_gradient(image: &RgbImage) -> (Vec<i16>, Vec<i16>, Vec<i32>) {
    let (cols, rows) = (image.width as usize, image.height as usize);
    let px = |y: isize, x: isize, c: usize| -> i32 {
        // BORDER_REPLICATE
        let y = y.clamp(0, rows as isize - 1) as usize;
        let x = x.clamp(0, cols as isize - 1) as usize;
        i32::from(image.pixels[(y * cols + x) * 3 + c])
    };
    let mut dx = vec![0_i16; rows * cols];
    let mut dy = vec![0_i16; rows * cols];
    let mut mag = vec![0_i32; rows * cols];
    for y in 0..rows {
        for x in 0..cols {
            let (yi, xi) = (y as isize, x as isize);
            let mut best: Option<(i32, i32, i32)> = None;
            for c in 0..3 {
                let gx = (px(yi - 1, xi + 1, c) - px(yi - 1, xi - 1, c))
                    + 2 * (px(yi, xi + 1, c) - px(yi, xi - 1, c))
                    + (px(yi + 1, xi + 1, c) - px(yi + 1, xi - 1, c));
                let gy = (px(yi + 1, xi - 1, c) - px(yi - 1, xi - 1, c))
                    + 2 * (px(yi + 1, xi, c) - px(yi - 1, xi, c))
                    + (px(yi + 1, xi + 1, c) - px(yi - 1, xi + 1, c));
                let m = gx.abs() + gy.abs();
                if best.is_none_or(|(bm, _, _)| m > bm) {
                    best = Some((m, gx, gy));
                }
            }
            let (m, gx, gy) = best.unwrap_or_default();
            let at = y * cols + x;
            mag[at] = m;
            // |Sobel| ≤ 4 × 255: fits CV_16S
            dx[at] = gx as i16;
            dy[at] = gy as i16;
        }
    }
    (dx, dy, mag)
}
