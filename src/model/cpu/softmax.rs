//! The attention softmax over one row of scores, 16 lanes at a time with AVX-512.
//!
//! A long prompt's prefill turns `heads · n² / 2` scores into probabilities: for a 2,000-token
//! prompt on a 24-layer model that is 700 million exponentials, which a scalar `expf`, a
//! sequential max and a sequential sum made a large share of the prefill. Every path of the
//! attention (whole-context matrix products and the in-place decode rows) calls this one
//! function on the same visible range, so its result, whatever its rounding, is the same for a
//! query row however the sequence was chunked. Only built for x86-64; depends only on `cpu`'s
//! lane masks.

use std::arch::x86_64::*;

use super::first_lanes;

/// Turns raw scores into probabilities over `lo..=hi` (after multiplying by `scale`, which is
/// positive), zeroing the rest of the row.
///
/// # Safety
/// AVX-512F must be present; `lo <= hi < row.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn softmax_visible(row: &mut [f32], lo: usize, hi: usize, scale: f32) {
    softmax(&mut row[lo..=hi], scale);
    row[..lo].fill(0.0);
    row[hi + 1..].fill(0.0);
}

/// `v[i] = exp(v[i]·scale − max) / Σ` in place.
#[target_feature(enable = "avx512f")]
unsafe fn softmax(v: &mut [f32], scale: f32) {
    let n = v.len();
    let p = v.as_mut_ptr();
    let sc = _mm512_set1_ps(scale);
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut mx = neg_inf;
    let mut i = 0;
    while i + 16 <= n {
        mx = _mm512_max_ps(mx, _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), sc));
        i += 16;
    }
    if i < n {
        let s = _mm512_mask_loadu_ps(neg_inf, first_lanes(n - i), p.add(i));
        mx = _mm512_max_ps(mx, _mm512_mul_ps(s, sc));
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    // The same rounding as the max: the largest score maps to exactly 0, every other below.
    let shifted = |s: __m512| _mm512_sub_ps(_mm512_mul_ps(s, sc), mx);
    let mut sum = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let e = exp_nonpositive(shifted(_mm512_loadu_ps(p.add(i))));
        _mm512_storeu_ps(p.add(i), e);
        sum = _mm512_add_ps(sum, e);
        i += 16;
    }
    if i < n {
        let m = first_lanes(n - i);
        let e = exp_nonpositive(shifted(_mm512_maskz_loadu_ps(m, p.add(i))));
        _mm512_mask_storeu_ps(p.add(i), m, e);
        sum = _mm512_mask_add_ps(sum, m, sum, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
        i += 16;
    }
    if i < n {
        let m = first_lanes(n - i);
        let e = _mm512_maskz_loadu_ps(m, p.add(i));
        _mm512_mask_storeu_ps(p.add(i), m, _mm512_mul_ps(e, inv));
    }
}

/// `exp(x)` for `x <= 0` (a masked tail lane may hold anything; its result is discarded),
/// within 2 ulp: `x = n·ln2 + r` with `|r| <= ln2/2`, a degree-7 Taylor polynomial for `e^r`
/// (truncation error below 6e-9), and `scalef` for the `2^n`, which also gives the denormals
/// and the exact zero below `e^-104`.
#[target_feature(enable = "avx512f")]
unsafe fn exp_nonpositive(x: __m512) -> __m512 {
    // Cody-Waite split of ln 2: the high part has few enough bits that `n·LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut poly = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(poly, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    #[test]
    fn exp_matches_f64_within_two_ulp_down_to_underflow() {
        if !avx512() {
            return;
        }
        let mut x = 0f32;
        let mut checked = 0;
        while x > -110.0 {
            let xs: [f32; 16] = std::array::from_fn(|l| x - l as f32 * 0.0137);
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above.
            unsafe {
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    exp_nonpositive(_mm512_loadu_ps(xs.as_ptr())),
                )
            };
            for (g, x) in got.iter().zip(xs) {
                let want = (x as f64).exp();
                if want < f32::MIN_POSITIVE as f64 {
                    // Denormal range: absolute error of a denormal's spacing or two.
                    assert!(
                        (*g as f64 - want).abs() <= 3e-45,
                        "exp({x}) = {g}, want {want}"
                    );
                } else {
                    let ulp = (want as f32).to_bits().abs_diff(g.to_bits());
                    assert!(ulp <= 2, "exp({x}) = {g}, want {want} ({ulp} ulp)");
                }
                checked += 1;
            }
            x -= 0.173;
        }
        assert!(checked > 10_000);
        // SAFETY: AVX-512F checked above.
        let zero = unsafe { _mm512_reduce_add_ps(exp_nonpositive(_mm512_set1_ps(-200.0))) };
        assert_eq!(zero, 0.0);
        // SAFETY: as above.
        let one = unsafe { _mm512_reduce_max_ps(exp_nonpositive(_mm512_setzero_ps())) };
        assert_eq!(one, 1.0);
    }

    #[test]
    fn probabilities_match_f64_and_the_masked_range_is_zero() {
        if !avx512() {
            return;
        }
        for len in [1usize, 7, 16, 17, 40, 333] {
            for lo in [0usize, 3] {
                if lo >= len {
                    continue;
                }
                let raw: Vec<f32> = crate::model::cpu::pseudo(len, len as u32)
                    .iter()
                    .map(|v| v * 30.0)
                    .collect();
                let hi = len - 1 - lo / 2;
                let scale = 0.125;
                let mut row = raw.clone();
                // SAFETY: AVX-512F checked above; lo <= hi < len.
                unsafe { softmax_visible(&mut row, lo, hi, scale) };
                let max = raw[lo..=hi]
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, s| m.max(*s as f64 * scale as f64));
                let e: Vec<f64> = raw[lo..=hi]
                    .iter()
                    .map(|s| (*s as f64 * scale as f64 - max).exp())
                    .collect();
                let total: f64 = e.iter().sum();
                for (i, p) in row.iter().enumerate() {
                    if i < lo || i > hi {
                        assert_eq!(*p, 0.0, "len {len} lo {lo}: masked {i} = {p}");
                    } else {
                        let want = e[i - lo] / total;
                        assert!(
                            (*p as f64 - want).abs() <= 2e-6 * want.max(1e-3),
                            "len {len} lo {lo}: p[{i}] = {p}, want {want}"
                        );
                    }
                }
            }
        }
    }
}
