//! Attention for a few query rows (decode) straight from the cache blocks, bit-identical to the
//! matrix-product path of `attention`, without gathering and transposing the whole context.
//!
//! The matrix-product path computes each score with the tile kernel (one 16-lane FMA chain
//! along `head_dim`, then the tile's reduction tree) and each output element as a 16-lane FMA
//! chain over positions, lane `i % 16`, in chunks of `KC` positions from a chunk-aligned start,
//! each chunk reduced by the same tree. This file performs exactly those operations, in the
//! same order, reading keys and values in place, and both share `softmax`. Zero probabilities
//! (masked positions) add exact zeros in both. Only built for x86-64 with AVX-512; depends on
//! `simd`, `gemm` and `softmax`.

use std::arch::x86_64::*;

use super::gemm::KC;
use super::simd::Element;
use super::softmax::softmax_visible;

/// The tile kernel's reduction of one 16-lane accumulator.
fn tree(lanes: &[f32; 16]) -> f32 {
    let h: [f32; 8] = std::array::from_fn(|j| lanes[j] + lanes[j + 8]);
    ((h[0] + h[1]) + (h[2] + h[3])) + ((h[4] + h[5]) + (h[6] + h[7]))
}

/// The tile kernel's 16 accumulator lanes of `Σ a[i]·b[i]` before their reduction
/// (`a.len() <= KC`).
///
/// # Safety
/// AVX-512F must be present; `b` at least as long as `a`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dot_lanes(a: &[f32], b: &[f32]) -> __m512 {
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
    acc
}

/// `tree` of each of 16 accumulators at once: lane `i` of the result is `tree(acc[i])`, with
/// exactly the tree's additions (floating-point addition is commutative, so only the pairing
/// matters). Each level adds the halves that the tree pairs, two accumulators per vector
/// first, then four, eight and sixteen.
///
/// # Safety
/// AVX-512F must be present.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tree16(acc: &[__m512; 16]) -> __m512 {
    // Level 1: `h[j] = l[j] + l[j + 8]`; vector k holds accumulators 2k and 2k+1, 8 lanes each.
    let h: [__m512; 8] = std::array::from_fn(|k| {
        let (a, b) = (acc[2 * k], acc[2 * k + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // Adjacent lanes summed, the two operands' results side by side.
    let pairs = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_permutex2var_ps(x, even, y),
            _mm512_permutex2var_ps(x, odd, y),
        )
    };
    // Level 2: `h0+h1`, `h2+h3`, `h4+h5`, `h6+h7`, four accumulators per vector.
    let q: [__m512; 4] = std::array::from_fn(|k| pairs(h[2 * k], h[2 * k + 1]));
    // Level 3: the two halves' sums, eight accumulators per vector.
    let r = [pairs(q[0], q[1]), pairs(q[2], q[3])];
    // Level 4: the whole sum, all sixteen in order.
    pairs(r[0], r[1])
}

/// `acc[d] = fma(p, v[d], acc[d])`: the tile kernel's step for one position's lane.
///
/// # Safety
/// AVX-512F must be present; `v` at least as long as `acc`.
#[inline]
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
/// `pos`, attending to `lo..=pos`, written to `out` (`[group, head_dim]`). Keys are widened 16
/// positions at a time and each value row once for the whole group. `start` is the
/// chunk-aligned first position the matrix-product path would gather.
///
/// # Safety
/// AVX-512F must be present.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn attend_row<T: Element>(
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
    // Positions past the last are zero keys; their scores are computed and dropped.
    let mut keys = vec![0f32; 16 * hd];
    let mut i0 = lo - start;
    while i0 < cols {
        let n = (cols - i0).min(16);
        for (i, w) in keys.chunks_exact_mut(hd).take(n).enumerate() {
            let at = view.at(start + i0 + i);
            for (w, k) in w.iter_mut().zip(&view.k_cache[at..at + hd]) {
                *w = k.to_f32();
            }
        }
        keys[n * hd..].fill(0.0);
        for (g, q) in queries.chunks_exact(hd).enumerate() {
            let lanes: [__m512; 16] =
                std::array::from_fn(|i| dot_lanes(q, &keys[i * hd..(i + 1) * hd]));
            let m = ((1u32 << n) - 1) as __mmask16;
            _mm512_mask_storeu_ps(scores.as_mut_ptr().add(g * cols + i0), m, tree16(&lanes));
        }
        i0 += n;
    }
    for row in scores.chunks_exact_mut(cols) {
        softmax_visible(row, lo - start, pos - start, scale);
    }
    // Per head, 16 lanes of `hd` partial sums.
    let mut acc = vec![0f32; group * 16 * hd];
    let mut widened = vec![0f32; hd];
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
                fma_lane(a, scores[g * cols + j], &widened);
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
