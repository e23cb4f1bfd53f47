//! Compute-bound `C = A · Bᵀ` for prefill: `A` `[m, k]` f32 activations, `B` `[n, k]` weights
//! (f32, or bf16 through the AVX-512 BF16 dot-product instruction), `C` `[m, n]` f32.
//!
//! Both operands are row-major along `k`, as the weights file stores them, so nothing is packed:
//! 4×4 output tiles accumulate 16-lane dot products along `k`, and are reduced once per `k`
//! chunk. Blocking keeps a block of `B` rows in L2 while every row tile of `A` streams past it.
//! Only built for x86-64; callers check `available` first.

use std::arch::x86_64::*;

use half::bf16;
use rayon::prelude::*;

use super::OutPtr;

/// `k` elements per chunk: a 4-row tile of each operand stays in L1.
pub const KC: usize = 1024;
/// Rows of `a` up to which `b` is streamed once instead of blocked in L2. The loop order never
/// changes a value: each element still sums its `k` chunks in order.
const STREAM_MAX_ROWS: usize = 16;
/// Rows of `B` per block: the block stays in L2 while all of `A` passes.
const NB: usize = 256;

pub fn available_f32() -> bool {
    available_wide()
}

pub fn available_bf16() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    })
}

/// Splits the `n` columns into blocks handled by rayon tasks; each task owns its columns of
/// every row of `c`, so no two tasks write the same element.
fn run_blocks(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    parallel: bool,
    tile: impl Fn(TilePos, OutPtr) + Sync,
) {
    assert!(c.len() >= m * n);
    let out = OutPtr(c.as_mut_ptr());
    // Narrow outputs (the k/v projections) still split across every thread.
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    // Equal-sized blocks, a whole number per thread, so no thread waits on a last odd block.
    let num_blocks = n.div_ceil(NB * threads).max(1) * threads;
    let nb = (n.div_ceil(num_blocks).div_ceil(4) * 4).max(4);
    let blocks: Vec<usize> = (0..n).step_by(nb).collect();
    let block = |&n0: &usize| {
        let n1 = (n0 + nb).min(n);
        if m <= STREAM_MAX_ROWS {
            // Few rows (decode): each group of four `b` rows is read end to end once, in long
            // runs the prefetchers follow, while all of `a` stays in cache.
            // A single row goes one `b` row at a time: one contiguous stream, with
            // out-of-order execution overlapping the rows' dependency chains.
            let cols = if m == 1 { 1 } else { 4 };
            for j0 in (n0..n1).step_by(cols) {
                for k0 in (0..k).step_by(KC) {
                    for m0 in (0..m).step_by(4) {
                        let pos = TilePos {
                            m0,
                            mr: 4.min(m - m0),
                            j0,
                            nr: cols.min(n1 - j0),
                            k0,
                            kc: KC.min(k - k0),
                            prefetch_next: m0 == 0 && j0 + cols < n1,
                        };
                        tile(pos, out);
                    }
                }
            }
            return;
        }
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for m0 in (0..m).step_by(4) {
                let mr = 4.min(m - m0);
                for j0 in (n0..n1).step_by(4) {
                    let pos = TilePos {
                        m0,
                        mr,
                        j0,
                        nr: 4.min(n1 - j0),
                        k0,
                        kc,
                        prefetch_next: false,
                    };
                    tile(pos, out);
                }
            }
        }
    };
    if parallel {
        blocks.par_iter().for_each(block);
    } else {
        blocks.iter().for_each(block);
    }
}

/// The two 256-bit halves of `v`, added.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn half(v: __m512) -> __m256 {
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), high)
}

/// Sums each of the `R×C` accumulators and adds (or stores, for the first chunk) into `c`.
/// Every element goes through the same horizontal-add tree whatever the tile's shape (a short
/// row is padded with zero accumulators), so an output value never depends on where the tiling
/// put it: a row computes the same bits alone or in any batch.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile<const R: usize, const C: usize>(
    acc: &[[__m512; C]; R],
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    for (i, row) in acc.iter().enumerate() {
        let p = c.add(i * ldc);
        let mut four = [_mm512_setzero_ps(); 4];
        four[..C].copy_from_slice(row);
        let ab = _mm256_hadd_ps(half(four[0]), half(four[1]));
        let cd = _mm256_hadd_ps(half(four[2]), half(four[3]));
        let abcd = _mm256_hadd_ps(ab, cd);
        let sums = _mm_add_ps(
            _mm256_castps256_ps128(abcd),
            _mm256_extractf128_ps::<1>(abcd),
        );
        let mut lanes = [0f32; 4];
        _mm_storeu_ps(lanes.as_mut_ptr(), sums);
        for (j, s) in lanes.iter().take(C).enumerate() {
            *p.add(j) = if first { *s } else { *p.add(j) + *s };
        }
    }
}

/// One `k` step of an `R×C` tile: `C` rows of `b` and `R` rows of `a` loaded at the same
/// offset (`$load_a` and `$load_b` read row `$row`), each pair folded into its accumulator by
/// `$madd`. A macro, not a function, so the intrinsics stay inside the caller's
/// `target_feature` context and inline.
macro_rules! tile_step {
    ($acc:ident, $zero:expr, $row:ident, $load_a:expr, $load_b:expr, $madd:ident) => {{
        let mut bv = [$zero; C];
        for ($row, slot) in bv.iter_mut().enumerate() {
            *slot = $load_b;
        }
        for ($row, acc_row) in $acc.iter_mut().enumerate() {
            let av = $load_a;
            for (a, b) in acc_row.iter_mut().zip(&bv) {
                *a = $madd(*a, av, *b);
            }
        }
    }};
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn fma_f32(acc: __m512, a: __m512, b: __m512) -> __m512 {
    _mm512_fmadd_ps(a, b, acc)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dp_bf16(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
    _mm512_dpbf16_ps(acc, a, b)
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_bh(p: *const u16) -> __m512bh {
    std::mem::transmute(_mm512_loadu_si512(p.cast()))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn load_bh_masked(mask: __mmask32, p: *const u16) -> __m512bh {
    std::mem::transmute(_mm512_maskz_loadu_epi16(mask, p.cast()))
}

/// One output tile's operands: `R` rows of `a` and `C` rows of `b` from `k0` on (the pointers
/// already point there), `kc` elements long, summed into `c` (row stride `ldc`); `first`
/// stores instead of adding.
#[derive(Clone, Copy)]
struct Tile<P> {
    a: *const P,
    lda: usize,
    b: *const P,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    first: bool,
    /// Ask for the next tile's `b` rows (the same `k` range) while this one computes: set on
    /// the first row tile of the streaming order, whose `b` comes from memory.
    prefetch_next: bool,
}

/// Where a tile sits: rows `m0..m0 + mr` of `a`, rows `j0..j0 + nr` of `b` (columns of `c`),
/// over `k0..k0 + kc`.
#[derive(Clone, Copy)]
struct TilePos {
    m0: usize,
    mr: usize,
    j0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    prefetch_next: bool,
}

impl<P> Tile<P> {
    /// The tile at `pos` of `c = a · bᵀ`, with `a` `[m, k]`, `b` `[n, k]` and `c` `[m, n]`.
    ///
    /// # Safety
    /// `pos` must lie inside those shapes, so the offset pointers stay inside the buffers.
    unsafe fn at(
        a: *const P,
        b: *const P,
        c: OutPtr,
        (k, n): (usize, usize),
        pos: TilePos,
    ) -> Self {
        Self {
            a: a.add(pos.m0 * k + pos.k0),
            lda: k,
            b: b.add(pos.j0 * k + pos.k0),
            ldb: k,
            kc: pos.kc,
            c: c.0.add(pos.m0 * n + pos.j0),
            ldc: n,
            first: pos.k0 == 0,
            prefetch_next: pos.prefetch_next,
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile_bf16<const R: usize, const C: usize>(t: Tile<u16>) {
    let Tile {
        a,
        lda,
        b,
        ldb,
        kc,
        c,
        ldc,
        first,
        prefetch_next,
    } = t;
    let zero: __m512bh = std::mem::transmute(_mm512_setzero_si512());
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut kk = 0;
    while kk + 32 <= kc {
        if prefetch_next {
            for r in 0..C {
                _mm_prefetch::<_MM_HINT_T1>(b.add((C + r) * ldb + kk).cast());
            }
        }
        tile_step!(
            acc,
            zero,
            r,
            load_bh(a.add(r * lda + kk)),
            load_bh(b.add(r * ldb + kk)),
            dp_bf16
        );
        kk += 32;
    }
    if kk < kc {
        let m: __mmask32 = (1u32 << (kc - kk)) - 1;
        tile_step!(
            acc,
            zero,
            r,
            load_bh_masked(m, a.add(r * lda + kk)),
            load_bh_masked(m, b.add(r * ldb + kk)),
            dp_bf16
        );
    }
    store_tile(&acc, c, ldc, first);
}

/// 16-bit weight formats widened to f32 as they are loaded, for the f32-activation tile.
pub trait WideWeight: Copy + Sync {
    /// Sixteen weights at `p`, as f32.
    ///
    /// # Safety
    /// AVX-512F/BW/VL must be present and `p..p + 16` readable.
    unsafe fn load16(p: *const Self) -> __m512;
    /// The first `count` (< 16) weights at `p`, the rest zero.
    ///
    /// # Safety
    /// As `load16`, for `p..p + count`.
    unsafe fn load_tail(p: *const Self, count: usize) -> __m512;
}

/// f32 weights need no widening: the same tile then serves f32 models.
impl WideWeight for f32 {
    #[inline]
    unsafe fn load16(p: *const Self) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline]
    unsafe fn load_tail(p: *const Self, count: usize) -> __m512 {
        _mm512_maskz_loadu_ps(super::first_lanes(count), p)
    }
}

impl WideWeight for half::f16 {
    #[inline]
    unsafe fn load16(p: *const Self) -> __m512 {
        widen_f16(_mm256_loadu_si256(p.cast()))
    }
    #[inline]
    unsafe fn load_tail(p: *const Self, count: usize) -> __m512 {
        widen_f16(masked_u16x16(p.cast(), count))
    }
}

impl WideWeight for bf16 {
    #[inline]
    unsafe fn load16(p: *const Self) -> __m512 {
        widen_bf16(_mm256_loadu_si256(p.cast()))
    }
    #[inline]
    unsafe fn load_tail(p: *const Self, count: usize) -> __m512 {
        widen_bf16(masked_u16x16(p.cast(), count))
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn masked_u16x16(p: *const u16, count: usize) -> __m256i {
    _mm256_maskz_loadu_epi16(super::first_lanes(count), p.cast())
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn widen_f16(v: __m256i) -> __m512 {
    _mm512_cvtph_ps(v)
}

/// A bf16 is the top half of an f32.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn widen_bf16(v: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
}

/// f32 activations against weights widened to f32 on load: f32 weights, f16 weights, and bf16
/// weights on CPUs without the bf16 dot-product instruction. The tail of `k` goes through
/// masked loads; the main loop does not, since masked loads in the hot loop cost about a fifth
/// of the throughput here.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn tile_wide<W: WideWeight, const R: usize, const C: usize>(
    t: Tile<f32>,
    b: *const W,
    ldb: usize,
) {
    let Tile {
        a,
        lda,
        kc,
        c,
        ldc,
        first,
        ..
    } = t;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut kk = 0;
    while kk + 16 <= kc {
        tile_step!(
            acc,
            _mm512_setzero_ps(),
            r,
            _mm512_loadu_ps(a.add(r * lda + kk)),
            W::load16(b.add(r * ldb + kk)),
            fma_f32
        );
        kk += 16;
    }
    if kk < kc {
        let m: __mmask16 = (1u16 << (kc - kk)) - 1;
        tile_step!(
            acc,
            _mm512_setzero_ps(),
            r,
            _mm512_maskz_loadu_ps(m, a.add(r * lda + kk)),
            W::load_tail(b.add(r * ldb + kk), kc - kk),
            fma_f32
        );
    }
    store_tile(&acc, c, ldc, first);
}

macro_rules! dispatch {
    ($f:ident::<$t:ty>, $mr:expr, $nr:expr, $($args:expr),*) => {
        match ($mr, $nr) {
            (4, 4) => $f::<$t, 4, 4>($($args),*), (4, 3) => $f::<$t, 4, 3>($($args),*), (4, 2) => $f::<$t, 4, 2>($($args),*), (4, 1) => $f::<$t, 4, 1>($($args),*),
            (3, 4) => $f::<$t, 3, 4>($($args),*), (3, 3) => $f::<$t, 3, 3>($($args),*), (3, 2) => $f::<$t, 3, 2>($($args),*), (3, 1) => $f::<$t, 3, 1>($($args),*),
            (2, 4) => $f::<$t, 2, 4>($($args),*), (2, 3) => $f::<$t, 2, 3>($($args),*), (2, 2) => $f::<$t, 2, 2>($($args),*), (2, 1) => $f::<$t, 2, 1>($($args),*),
            (1, 4) => $f::<$t, 1, 4>($($args),*), (1, 3) => $f::<$t, 1, 3>($($args),*), (1, 2) => $f::<$t, 1, 2>($($args),*), _ => $f::<$t, 1, 1>($($args),*),
        }
    };
    ($f:ident, $mr:expr, $nr:expr, $($args:expr),*) => {
        match ($mr, $nr) {
            (4, 4) => $f::<4, 4>($($args),*), (4, 3) => $f::<4, 3>($($args),*), (4, 2) => $f::<4, 2>($($args),*), (4, 1) => $f::<4, 1>($($args),*),
            (3, 4) => $f::<3, 4>($($args),*), (3, 3) => $f::<3, 3>($($args),*), (3, 2) => $f::<3, 2>($($args),*), (3, 1) => $f::<3, 1>($($args),*),
            (2, 4) => $f::<2, 4>($($args),*), (2, 3) => $f::<2, 3>($($args),*), (2, 2) => $f::<2, 2>($($args),*), (2, 1) => $f::<2, 1>($($args),*),
            (1, 4) => $f::<1, 4>($($args),*), (1, 3) => $f::<1, 3>($($args),*), (1, 2) => $f::<1, 2>($($args),*), _ => $f::<1, 1>($($args),*),
        }
    };
}

/// `c = a · bᵀ`; requires `available_f32()`.
pub fn gemm_f32(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
    gemm_wide_with(a, (m, k), b, n, c, true)
}

/// As `gemm_f32`, on the calling thread only (for callers that parallelise around it).
pub fn gemm_f32_serial(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
    gemm_wide_with(a, (m, k), b, n, c, false)
}

/// `c = bf16(a) · bᵀ`: activations are rounded to bf16 once, products accumulate in f32.
/// Requires `available_bf16()`.
pub fn gemm_bf16(a: &[f32], m: usize, k: usize, b: &[bf16], n: usize, c: &mut [f32]) {
    assert!(available_bf16() && a.len() >= m * k && b.len() >= n * k);
    let mut a16 = vec![0u16; m * k];
    a16.par_chunks_mut(k)
        .zip(a.par_chunks(k))
        .for_each(|(d, s)| round_into(s, d));
    let b16: &[u16] = bytes_of_bf16(b);
    run_blocks(m, n, k, c, true, |pos, out| {
        // SAFETY: as in gemm_f32, with AVX-512 BF16 present (asserted).
        unsafe {
            dispatch!(
                tile_bf16,
                pos.mr,
                pos.nr,
                Tile::at(a16.as_ptr(), b16.as_ptr(), out, (k, n), pos)
            )
        }
    });
}

pub fn available_wide() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    })
}

/// `c = a · widen(b)ᵀ` for 16-bit weights; requires `available_wide()`.
pub fn gemm_wide<W: WideWeight>(a: &[f32], m: usize, k: usize, b: &[W], n: usize, c: &mut [f32]) {
    gemm_wide_with(a, (m, k), b, n, c, true)
}

fn gemm_wide_with<W: WideWeight>(
    a: &[f32],
    (m, k): (usize, usize),
    b: &[W],
    n: usize,
    c: &mut [f32],
    parallel: bool,
) {
    assert!(available_wide() && a.len() >= m * k && b.len() >= n * k);
    run_blocks(m, n, k, c, parallel, |pos, out| {
        // SAFETY: the features are present (asserted); run_blocks only yields positions inside
        // [m, k] × [n, k], so the tile reads and writes inside the slices (masked at the tail),
        // and the weight pointer at (j0, k0) stays inside `b`.
        unsafe {
            let t = Tile::at(a.as_ptr(), a.as_ptr(), out, (k, n), pos);
            let bp = b.as_ptr().add(pos.j0 * k + pos.k0);
            dispatch!(tile_wide::<W>, pos.mr, pos.nr, t, bp, k)
        }
    });
}

/// Rounds activations to bf16 (round to nearest even), as every bf16 product here expects.
pub fn round_to_bf16(a: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; a.len()];
    round_into(a, &mut out);
    out
}

pub(super) fn round_into(src: &[f32], dst: &mut [u16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16::from_f32(*s).to_bits();
    }
}

/// The dot product of bf16 activations `x` with one bf16 row `w` (`w.len() >= x.len()`).
/// Requires `available_bf16()`.
pub fn dot_bf16(x: &[u16], w: &[bf16]) -> f32 {
    assert!(available_bf16() && w.len() >= x.len());
    // SAFETY: the features are present and the row lies inside `w` (asserted).
    unsafe { dot_row_bf16(x, bytes_of_bf16(w)) }
}

/// Four accumulators along `k` keep the dot-product latency hidden.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn dot_row_bf16(x: &[u16], w: &[u16]) -> f32 {
    let k = x.len();
    let (px, pw) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut kk = 0;
    while kk + 128 <= k {
        for (u, a) in acc.iter_mut().enumerate() {
            let off = kk + 32 * u;
            *a = dp_bf16(*a, load_bh(px.add(off)), load_bh(pw.add(off)));
        }
        kk += 128;
    }
    while kk < k {
        let mask: __mmask32 = if k - kk >= 32 {
            u32::MAX
        } else {
            (1u32 << (k - kk)) - 1
        };
        let (xv, wv) = (
            load_bh_masked(mask, px.add(kk)),
            load_bh_masked(mask, pw.add(kk)),
        );
        acc[0] = dp_bf16(acc[0], xv, wv);
        kk += 32;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

fn bytes_of_bf16(b: &[bf16]) -> &[u16] {
    // SAFETY: bf16 is a transparent 16-bit value with the same size and alignment as u16.
    unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<u16>(), b.len()) }
}
