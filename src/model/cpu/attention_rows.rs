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

use super::first_lanes;
use super::gemm::KC;
use super::simd::Element;
use super::softmax::softmax_visible;

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

/// The tile kernel's reduction of each of 16 accumulators at once: lane `i` of the result is
/// `((h0+h1)+(h2+h3))+((h4+h5)+(h6+h7))` over `h[j] = acc[i][j] + acc[i][j+8]`, with exactly
/// the tree's additions (floating-point addition is commutative, so only the pairing
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

/// The cache offsets of consecutive positions, walked block by block: one division when it
/// starts rather than one per position, which for a long context cost more than the products.
struct Slots<'a> {
    block_table: &'a [u32],
    block_size: usize,
    kv_row: usize,
    kv_off: usize,
    block: usize,
    within: usize,
}

impl<'a> Slots<'a> {
    fn from<T>(view: &HeadView<'a, T>, pos: usize) -> Self {
        Slots {
            block_table: view.block_table,
            block_size: view.block_size,
            kv_row: view.kv_row,
            kv_off: view.kv_off,
            block: pos / view.block_size,
            within: pos % view.block_size,
        }
    }

    /// The offset of the current position's row of this head; moves to the next position.
    #[inline]
    fn next_at(&mut self) -> usize {
        let slot = self.block_table[self.block] as usize * self.block_size + self.within;
        self.within += 1;
        if self.within == self.block_size {
            self.within = 0;
            self.block += 1;
        }
        slot * self.kv_row + self.kv_off
    }
}

/// How far ahead of the position being read its cache row is requested. A sequence's blocks
/// lie anywhere in the cache, so the hardware prefetchers lose the stream at every block
/// boundary, and a long context's decode row otherwise waits on memory for most of its keys
/// and values.
const PREFETCH_AHEAD: usize = 32;

/// Requests the rows of positions `PREFETCH_AHEAD` ahead, one per position read.
struct Prefetch<'a> {
    slots: Slots<'a>,
    left: usize,
    row_bytes: usize,
}

impl<'a> Prefetch<'a> {
    /// Runs from `PREFETCH_AHEAD` past `pos` up to (not including) `end`.
    fn ahead_of<T>(view: &HeadView<'a, T>, pos: usize, end: usize) -> Self {
        let from = (pos + PREFETCH_AHEAD).min(end);
        Prefetch {
            slots: Slots::from(view, from),
            left: end - from,
            row_bytes: view.head_dim * std::mem::size_of::<T>(),
        }
    }

    #[inline]
    fn touch<T>(&mut self, cache: &[T]) {
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        let row = cache
            .as_ptr()
            .wrapping_add(self.slots.next_at())
            .cast::<i8>();
        for off in (0..self.row_bytes).step_by(64) {
            // SAFETY: a prefetch is a hint: it never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(off)) };
        }
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
    let mut slots = Slots::from(view, lo);
    let mut ahead = Prefetch::ahead_of(view, lo, start + cols);
    while i0 < cols {
        let n = (cols - i0).min(16);
        for w in keys.chunks_exact_mut(hd).take(n) {
            ahead.touch(view.k_cache);
            let at = slots.next_at();
            for (w, k) in w.iter_mut().zip(&view.k_cache[at..at + hd]) {
                *w = k.to_f32();
            }
        }
        keys[n * hd..].fill(0.0);
        for (g, q) in queries.chunks_exact(hd).enumerate() {
            let lanes: [__m512; 16] =
                std::array::from_fn(|i| dot_lanes(q, &keys[i * hd..(i + 1) * hd]));
            let m = first_lanes(n);
            _mm512_mask_storeu_ps(scores.as_mut_ptr().add(g * cols + i0), m, tree16(&lanes));
        }
        i0 += n;
    }
    for row in scores.chunks_exact_mut(cols) {
        softmax_visible(row, lo - start, pos - start, scale);
    }
    // Each chunk's values widened once, then per head and 16 output columns a register
    // accumulator per lane, reduced by the tile kernel's tree when the chunk ends.
    let mut values = Vec::with_capacity(KC.min(cols) * hd);
    let mut slots = Slots::from(view, start);
    let mut ahead = Prefetch::ahead_of(view, start, start + cols);
    for c in 0..cols.div_ceil(KC) {
        let (j0, j1) = (c * KC, cols.min((c + 1) * KC));
        values.clear();
        for _ in j0..j1 {
            ahead.touch(view.v_cache);
            let at = slots.next_at();
            values.extend(view.v_cache[at..at + hd].iter().map(|v| v.to_f32()));
        }
        for g in 0..group {
            let probs = &scores[g * cols + j0..g * cols + j1];
            for d0 in (0..hd).step_by(16) {
                let m = first_lanes((hd - d0).min(16));
                let r = weighted_values(probs, &values, hd, d0, m);
                let o = out.as_mut_ptr().add(g * hd + d0);
                let r = if c == 0 {
                    r
                } else {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(m, o), r)
                };
                _mm512_mask_storeu_ps(o, m, r);
            }
        }
    }
}

/// `Σ_j probs[j] · values[j, d0..d0 + 16]` (the columns in `m`) as the tile kernel sums one
/// chunk of `P·V`: position `j` goes to lane `j % 16` (chunks start at multiples of 16), each
/// lane an FMA chain in position order, and the lanes meet in the tile's reduction tree.
///
/// # Safety
/// AVX-512F must be present; `values` holds `probs.len()` rows of `hd`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_values(
    probs: &[f32],
    values: &[f32],
    hd: usize,
    d0: usize,
    m: __mmask16,
) -> __m512 {
    let n = probs.len();
    debug_assert!(values.len() >= n * hd);
    let v = values.as_ptr().add(d0);
    let mut acc = [_mm512_setzero_ps(); 16];
    let mut j = 0;
    while j + 16 <= n {
        for (l, a) in acc.iter_mut().enumerate() {
            let row = _mm512_maskz_loadu_ps(m, v.add((j + l) * hd));
            *a = _mm512_fmadd_ps(_mm512_set1_ps(*probs.get_unchecked(j + l)), row, *a);
        }
        j += 16;
    }
    for (l, a) in acc.iter_mut().enumerate().take(n - j) {
        let row = _mm512_maskz_loadu_ps(m, v.add((j + l) * hd));
        *a = _mm512_fmadd_ps(_mm512_set1_ps(*probs.get_unchecked(j + l)), row, *a);
    }
    let h: [__m512; 8] = std::array::from_fn(|i| _mm512_add_ps(acc[i], acc[i + 8]));
    _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(h[0], h[1]), _mm512_add_ps(h[2], h[3])),
        _mm512_add_ps(_mm512_add_ps(h[4], h[5]), _mm512_add_ps(h[6], h[7])),
    )
}
