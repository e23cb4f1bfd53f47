//! Element-wise math of the encoder over whole slices: GELU and the attention softmax.
//!
//! libm's `expf` is a call per element, which no compiler can vectorize; with a few hundred
//! million evaluations per batch it was a sixth of an embedding pass. Here `exp` is a short
//! polynomial in plain arithmetic, and the slice loops are compiled a second time for
//! AVX-512 (chosen at run time), where LLVM turns them into 16-lane code. Both builds perform
//! the same operations in the same order, so the results do not depend on the CPU path taken
//! beyond what the instruction set itself rounds alike. Depends on nothing.

/// `exp(x)` to about 2 ulp: `2^n · e^r` with `n = round(x / ln 2)` and a degree-6 polynomial
/// for `e^r` on `|r| ≤ ln 2 / 2` (Cephes' coefficients). Inputs are clamped to the range
/// where the result is a normal float.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · LN2_HI` is exact for every reachable `n`.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 · 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    e_r * scale
}

/// Abramowitz and Stegun 7.1.26: absolute error under 1.5e-7, far inside the tolerance the
/// embeddings are checked to.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-x * x);
    y.copysign(x)
}

#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_erf_loop(xs: &mut [f32]) {
    for v in xs {
        *v = gelu_erf(*v);
    }
}

/// Lanes of the reductions below: sixteen independent chains instead of one, so that they
/// vectorize. The lane a value falls in depends only on its index, so a row's sum is the same
/// whatever the CPU.
const LANES: usize = 16;

#[inline(always)]
fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l = l.max(*x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    lanes.iter().fold(tail, |m, x| m.max(*x))
}

#[inline(always)]
fn sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += *x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Each row of `len` scores becomes its softmax.
#[inline(always)]
fn softmax_loop(scores: &mut [f32], len: usize) {
    for row in scores.chunks_mut(len) {
        let max = max(row);
        for x in row.iter_mut() {
            *x = exp(*x - max);
        }
        let inv = 1.0 / sum(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Defines `$name`, which runs `$body` compiled for AVX-512 when the CPU has it.
macro_rules! multiversion {
    ($(#[$doc:meta])* $name:ident, $wide:ident, ($($arg:ident: $ty:ty),*), $body:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if has_avx512() {
                // SAFETY: AVX-512F is present, checked just above.
                return unsafe { $wide($($arg),*) };
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $wide($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

multiversion!(
    /// GELU (the erf form) in place.
    gelu_erf_slice, gelu_erf_avx512, (xs: &mut [f32]), gelu_erf_loop
);
multiversion!(
    /// Softmax of each `len`-long row of `scores`, in place.
    softmax_rows, softmax_avx512, (scores: &mut [f32], len: usize), softmax_loop
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, libm {want}"
            );
            x += 0.013;
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (3.5, 0.999_999_3),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn wide_and_plain_builds_agree_bit_for_bit() {
        let xs: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let mut wide = xs.clone();
        gelu_erf_slice(&mut wide);
        let mut plain = xs.clone();
        gelu_erf_loop(&mut plain);
        assert_eq!(wide, plain);
        let (mut wide, mut plain) = (xs.clone(), xs.clone());
        // Rows of 77: full lanes and a remainder.
        softmax_rows(&mut wide, 77);
        softmax_loop(&mut plain, 77);
        assert_eq!(wide, plain);
        for row in wide.chunks(77) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
