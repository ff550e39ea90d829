//! The few NumPy routines diffusers' schedulers build their tables with, reproduced operation by
//! operation so the tables come out bit-identical (ARCHITECTURE.md, "Toolchain": NumPy computes in
//! float64 and the schedulers convert to float32 at set points).
//!
//! Where NumPy's result depends on the CPU, these follow what NumPy does on x86-64 with AVX2 or
//! AVX-512 (every machine this project runs diffusers on); see [`log_f32`].

/// `np.linspace(start, stop, num)` (float64, `endpoint=True`): `i * step + start`, with the last
/// value set to `stop`, as NumPy's `function_base.linspace` computes it.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let delta = stop - start;
    let div = num.saturating_sub(1);
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            for value in &mut y {
                *value = *value / div as f64 * delta;
            }
        } else {
            for value in &mut y {
                *value *= step;
            }
        }
    } else {
        for value in &mut y {
            *value *= delta;
        }
    }
    for value in &mut y {
        *value += start;
    }
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.arange(start, stop, step)` for a float `step`: the length is `ceil((stop - start) / step)`;
/// the first two values are `start` and `start + step`, and the rest `start + i * delta` with
/// `delta = (start + step) - start` (NumPy's `DOUBLE_fill`), which need not equal `step`.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let length = ((stop - start) / step).ceil();
    if length.is_nan() || length <= 0.0 {
        return Vec::new();
    }
    let length = length as usize;
    let next = start + step;
    let delta = next - start;
    (0..length)
        .map(|i| match i {
            0 => start,
            1 => next,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, xp, fp)` for increasing `xp` (NumPy's `arr_interp`): values left of `xp` take
/// `fp[0]`, right of it `fp[-1]`; an exact hit takes `fp[j]`; otherwise
/// `slope * (x - xp[j]) + fp[j]` with `slope = (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])`.
pub fn interp(x: &[f64], xp: &[f64], fp: &[f64]) -> Vec<f64> {
    assert_eq!(xp.len(), fp.len(), "interp: xp and fp differ in length");
    assert!(!xp.is_empty(), "interp: empty xp");
    let last = xp.len() - 1;
    x.iter()
        .map(|&x_val| {
            if x_val.is_nan() {
                return x_val;
            }
            if xp.len() == 1 {
                return fp[0];
            }
            if x_val < xp[0] {
                return fp[0];
            }
            if x_val > xp[last] {
                return fp[last];
            }
            // j with xp[j] <= x < xp[j + 1], or j == last when x == xp[last].
            let j = xp.partition_point(|&v| v <= x_val) - 1;
            if j == last || xp[j] == x_val {
                return fp[j];
            }
            let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
            let result = slope * (x_val - xp[j]) + fp[j];
            if result.is_nan() {
                let other = slope * (x_val - xp[j + 1]) + fp[j + 1];
                if other.is_nan() && fp[j] == fp[j + 1] {
                    return fp[j];
                }
                return other;
            }
            result
        })
        .collect()
}

// NumPy's float32 `log` kernel constants, written as in `npy_math.h` (C rounds the literals to
// f32 just as Rust does), so they can be checked against the source digit for digit.
#[allow(clippy::excessive_precision)]
const LOG_P: [f32; 6] = [
    0.000000000000000000000e+00,
    9.999999999999998702752e-01,
    2.112677543073053063722e+00,
    1.480000633576506585156e+00,
    3.808837741388407920751e-01,
    2.589979117907922693523e-02,
];
#[allow(clippy::excessive_precision)]
const LOG_Q: [f32; 6] = [
    1.000000000000000000000e+00,
    2.612677543073109236779e+00,
    2.453006071784736363091e+00,
    9.864942958519418960339e-01,
    1.546476374983906719538e-01,
    5.875095403124574342950e-03,
];
const SQRT1_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const LOGE2: f32 = std::f32::consts::LN_2;

/// `np.log` on a float32 array, bit for bit.
///
/// NumPy does not call the C library's `logf` here: on x86-64 with AVX2+FMA or AVX-512F it runs its
/// own vector kernel (`simd_log_FLOAT` in `loops_exponent_log.dispatch.c.src`, up to 3.8 ulp from
/// the true value), which disagrees with glibc's `logf` on about a fifth of diffusers' sigmas. This
/// is that kernel for one lane: mantissa in [0.5, 1), a rational minimax polynomial for
/// `log(1 + x)` evaluated with fused multiply-adds, and `exponent * ln 2` fused on at the end.
pub fn log_f32(x_in: f32) -> f32 {
    if x_in.is_nan() {
        return f32::NAN;
    }
    if x_in < 0.0 {
        return -f32::NAN;
    }
    if x_in == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x_in == f32::INFINITY {
        return f32::INFINITY;
    }
    let (mut exponent, mut x) = exponent_and_mantissa(x_in);
    if x <= SQRT1_2 {
        x += x;
        exponent -= 1.0;
    }
    x -= 1.0;
    let mut num = LOG_P[5].mul_add(x, LOG_P[4]);
    num = num.mul_add(x, LOG_P[3]);
    num = num.mul_add(x, LOG_P[2]);
    num = num.mul_add(x, LOG_P[1]);
    num = num.mul_add(x, LOG_P[0]);
    let mut denom = LOG_Q[5].mul_add(x, LOG_Q[4]);
    denom = denom.mul_add(x, LOG_Q[3]);
    denom = denom.mul_add(x, LOG_Q[2]);
    denom = denom.mul_add(x, LOG_Q[1]);
    denom = denom.mul_add(x, LOG_Q[0]);
    exponent.mul_add(LOGE2, num / denom)
}

/// `x = mantissa * 2^exponent` with the mantissa in [0.5, 1) (`getexp + 1` / `getmant` on
/// AVX-512, bit arithmetic with a 2^100 pre-scale for subnormals on AVX2; both agree).
fn exponent_and_mantissa(x: f32) -> (f32, f32) {
    let (x, bias) = if x < f32::MIN_POSITIVE {
        (x * f32::from_bits(0x7180_0000), 100.0) // 2^100
    } else {
        (x, 0.0)
    };
    let bits = x.to_bits();
    let exponent = ((bits >> 23) as i32 - 0x7E) as f32 - bias;
    let mantissa = f32::from_bits((bits & 0x007F_FFFF) | (126 << 23));
    (exponent, mantissa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy_conventions() {
        assert_eq!(linspace(0.0, 1.0, 1), vec![0.0]);
        assert_eq!(linspace(0.0, 1.0, 3), vec![0.0, 0.5, 1.0]);
        assert!(linspace(0.0, 1.0, 0).is_empty());
    }

    #[test]
    fn arange_counts_like_numpy() {
        assert_eq!(
            arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert!(arange(0.0, 1.0, -1.0).is_empty());
    }

    #[test]
    fn interp_edges() {
        let xp = [0.0, 1.0, 2.0];
        let fp = [10.0, 20.0, 40.0];
        assert_eq!(
            interp(&[-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0], &xp, &fp),
            vec![10.0, 10.0, 15.0, 20.0, 30.0, 40.0, 40.0]
        );
    }

    #[test]
    fn log_f32_special_values() {
        assert_eq!(log_f32(1.0), 0.0);
        assert_eq!(log_f32(0.0), f32::NEG_INFINITY);
        assert!(log_f32(-1.0).is_nan());
        assert_eq!(log_f32(f32::INFINITY), f32::INFINITY);
        assert!((log_f32(std::f32::consts::E) - 1.0).abs() < 1e-6);
        assert!((log_f32(1e-40) - (1e-40f64).ln() as f32).abs() < 1e-4);
    }
}
