//! Whole-row passes written so the compiler turns them into SIMD: max, sums and `exp`.
//!
//! A sampling step is a handful of passes over a ~152k-entry row, and a plain loop that folds
//! into one accumulator (or calls libm's `expf`) runs one element per instruction latency. Here
//! each pass keeps independent lanes, combined in a fixed order at the end, so results are
//! still deterministic. Depends on nothing.

/// Independent accumulators per pass: enough to fill the vector units and hide add latency.
const LANES: usize = 8;

/// The largest entry, or negative infinity for an empty row; NaN entries are skipped.
pub(super) fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            // `x > lane` is false for NaN, so NaN never replaces a value.
            *lane = if x > *lane { x } else { *lane };
        }
    }
    lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// `Σ f(x)` accumulated in f64, so a 152k-entry row loses no precision.
pub(super) fn sum_f64(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    // Mapping a block first and summing it after lets each loop vectorize; fused, they do not.
    const BLOCK: usize = 256;
    let mut lanes = [0f64; LANES];
    let mut mapped = [0f32; BLOCK];
    let blocks = values.chunks_exact(BLOCK);
    let rest = blocks.remainder();
    for block in blocks {
        for (m, &x) in mapped.iter_mut().zip(block) {
            *m = f(x);
        }
        for chunk in mapped.chunks_exact(LANES) {
            for (lane, &m) in lanes.iter_mut().zip(chunk) {
                *lane += f64::from(m);
            }
        }
    }
    let mut total: f64 = lanes.iter().sum();
    for &x in rest {
        total += f64::from(f(x));
    }
    total
}

/// `e^x` for `x <= 0` (NaN-free), to within a few parts in 10^7; exactly 0 where the true
/// value is below the smallest normal float, so a token at negative infinity stays impossible.
///
/// Branch-free, so loops over it vectorize, unlike libm's `expf`: `x = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial for `e^r`, and `2^n` built in the exponent
/// bits.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    const MIN: f32 = -87.0;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 split so that `n * LN2_HI` is exact for the small integers `n` here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = if x > MIN { x } else { MIN };
    let rounded = xc * std::f32::consts::LOG2_E + ROUND;
    let n = rounded - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let poly = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `rounded` holds `n` in its low mantissa bits (`ROUND`'s bits are 0x4b40_0000), so 2^n
    // comes from integer arithmetic alone; `n as i32` would not vectorize.
    let scale = f32::from_bits(rounded.to_bits().wrapping_sub(0x4b40_0000 - 127) << 23);
    if x > MIN {
        poly * scale
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_exp_over_its_range() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            assert!(
                ((got - want) / want).abs() < 5e-7,
                "exp({x}) = {got}, want {want}"
            );
            x -= 0.001_37;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn max_and_sum_cover_the_remainder_and_skip_nan() {
        let mut v: Vec<f32> = (0..37).map(|i| i as f32).collect();
        v[3] = f32::NAN;
        assert_eq!(max(&v), 36.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        v[3] = 3.0;
        assert_eq!(sum_f64(&v, |x| x), (0..37).sum::<i32>() as f64);
    }
}
