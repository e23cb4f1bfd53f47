//! Attention for a few query rows (decode) straight from the cache blocks, bit-identical to the
//! matrix-product path of `attention`, without gathering and transposing the whole context.
//!
//! The matrix-product path computes each score with the tile kernel (one 16-lane FMA chain
//! along `head_dim`, then the tile's reduction tree) and each output element as a 16-lane FMA
//! chain over positions, lane `i % 16`, in chunks of `KC` positions from a chunk-aligned start,
//! each chunk reduced by the same tree. This file performs exactly those operations, in the
//! same order, reading keys and values in place. Zero probabilities (masked positions) add
//! exact zeros in both. Only built for x86-64 with AVX-512; depends on `simd` and `gemm`.

use std::arch::x86_64::*;

use super::gemm::KC;
use super::simd::Element;

/// The tile kernel's reduction of one 16-lane accumulator.
fn tree(lanes: &[f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|j| lanes[j] + lanes[j + 8]);
    ((h[0] + h[1]) + (h[2] + h[3])) + ((h[4] + h[5]) + (h[6] + h[7]))
}

/// `Σ a[i]·b[i]` exactly as the tile kernel computes one element (`a.len() <= KC`).
///
/// # Safety
/// AVX-512F must be present; `b` at least as long as `a`.
#[target_feature(enable = "avx512f")]
unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let k = a.len();
    let mut acc = _mm512_setzero_ps();
    let mut kk = 0;
    while kk + 16 <= k {
        let (x, y) = (
            _mm512_loadu_ps(a.as_ptr().add(kk)),
            _mm512_loadu_ps(b.as_ptr().add(kk)),
        );
        acc = _mm512_fmadd_ps(x, y, acc);
        kk += 16;
    }
    if kk < k {
        let m: __mmask16 = (1u16 << (k - kk)) - 1;
        let (x, y) = (
            _mm512_maskz_loadu_ps(m, a.as_ptr().add(kk)),
            _mm512_maskz_loadu_ps(m, b.as_ptr().add(kk)),
        );
        acc = _mm512_fmadd_ps(x, y, acc);
    }
    let mut lanes = [0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
    tree(&lanes)
}

/// `acc[d] = fma(p, v[d], acc[d])`: the tile kernel's step for one position's lane.
///
/// # Safety
/// AVX-512F must be present; `v` at least as long as `acc`.
#[target_feature(enable = "avx512f")]
unsafe fn fma_lane(acc: &mut [f32], p: f32, v: &[f32]) {
    let n = acc.len();
    let pv = _mm512_set1_ps(p);
    let mut d = 0;
    while d + 16 <= n {
        let a = _mm512_loadu_ps(acc.as_ptr().add(d));
        let x = _mm512_loadu_ps(v.as_ptr().add(d));
        _mm512_storeu_ps(acc.as_mut_ptr().add(d), _mm512_fmadd_ps(pv, x, a));
        d += 16;
    }
    for i in d..n {
        acc[i] = p.mul_add(v[i], acc[i]);
    }
}

/// Turns raw scores into probabilities over `lo..=hi`, zeroing the rest.
pub(crate) fn softmax_visible(row: &mut [f32], lo: usize, hi: usize, scale: f32) {
    let visible = &mut row[lo..=hi];
    let max = visible
        .iter()
        .fold(f32::NEG_INFINITY, |m, s| m.max(*s * scale));
    let mut sum = 0f32;
    for s in visible.iter_mut() {
        *s = (*s * scale - max).exp();
        sum += *s;
    }
    visible.iter_mut().for_each(|s| *s /= sum);
    row[..lo].fill(0.0);
    row[hi + 1..].fill(0.0);
}

/// Where one (sequence, key/value head) pair's rows read the cache.
pub(crate) struct HeadView<'a, T> {
    pub k_cache: &'a [T],
    pub v_cache: &'a [T],
    pub block_table: &'a [u32],
    pub block_size: usize,
    /// Elements per cache slot (all key/value heads), and this head's offset in a slot.
    pub kv_row: usize,
    pub kv_off: usize,
    pub head_dim: usize,
}

impl<T: Element> HeadView<'_, T> {
    fn at(&self, pos: usize) -> usize {
        let bs = self.block_size;
        (self.block_table[pos / bs] as usize * bs + pos % bs) * self.kv_row + self.kv_off
    }
}

/// One query row of every head of a group (`queries` is `[group, head_dim]`) at position
/// `pos`, attending to `lo..=pos`, written to `out` (`[group, head_dim]`). Each key and value
/// row is widened once for the whole group. `start` is the chunk-aligned first position the
/// matrix-product path would gather.
pub(crate) fn attend_row<T: Element>(
    view: &HeadView<'_, T>,
    queries: &[f32],
    (start, lo, pos): (usize, usize, usize),
    scale: f32,
    out: &mut [f32],
) {
    let hd = view.head_dim;
    let group = queries.len() / hd;
    debug_assert!(hd <= KC && start <= lo && lo <= pos);
    let cols = pos + 1 - start;
    let mut scores = vec![0f32; group * cols];
    let mut widened = vec![0f32; hd];
    for i in lo - start..cols {
        let at = view.at(start + i);
        for (w, k) in widened.iter_mut().zip(&view.k_cache[at..at + hd]) {
            *w = k.to_f32();
        }
        for (g, q) in queries.chunks_exact(hd).enumerate() {
            // SAFETY: callers check AVX-512F; both slices are `hd` long.
            scores[g * cols + i] = unsafe { dot(q, &widened) };
        }
    }
    for row in scores.chunks_exact_mut(cols) {
        softmax_visible(row, lo - start, pos - start, scale);
    }
    // Per head, 16 lanes of `hd` partial sums.
    let mut acc = vec![0f32; group * 16 * hd];
    for c in 0..cols.div_ceil(KC) {
        acc.fill(0.0);
        for j in c * KC..cols.min((c + 1) * KC) {
            let at = view.at(start + j);
            for (w, v) in widened.iter_mut().zip(&view.v_cache[at..at + hd]) {
                *w = v.to_f32();
            }
            let lane = j % 16;
            for g in 0..group {
                let a = &mut acc[(g * 16 + lane) * hd..(g * 16 + lane + 1) * hd];
                // SAFETY: callers check AVX-512F; the lane and `widened` are `hd` long.
                unsafe { fma_lane(a, scores[g * cols + j], &widened) };
            }
        }
        for (g, o) in out.chunks_exact_mut(hd).enumerate() {
            for (d, o) in o.iter_mut().enumerate() {
                let lanes: [f32; 16] = std::array::from_fn(|l| acc[(g * 16 + l) * hd + d]);
                let r = tree(&lanes);
                *o = if c == 0 { r } else { *o + r };
            }
        }
    }
}
