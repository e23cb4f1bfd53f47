//! The decoder's bf16 `C = bf16(A) · Bᵀ` over weights packed once at load into column panels,
//! for every row count: one decode row, sixteen, or a few thousand prompt rows.
//!
//! Layout: `B` (`[n, k]` bf16, as the weights file stores it) becomes `ceil(n / NR)` panels of
//! [`NR`] columns. A panel stores `k` in pairs: for pair `t`, the 32 columns' two values side by
//! side (`[col][2]`), 128 bytes, exactly two zmm registers. One `vdpbf16ps` against a broadcast
//! pair of activations then advances 16 columns of one row by two `k` steps, so the
//! micro-kernel keeps an `MR × 32·NP` block of `C` in registers and never reduces across lanes.
//! This is what lifts prefill from the dot-product tiles' ~60% of the instruction's peak to
//! ~85%, measured on this class of CPU.
//!
//! Numerics (the batch invariance the engine relies on): every `c[i, j]` is
//! `acc = 0; for t in pairs { acc = dpbf16(acc, a[i, 2t..2t+2], b[j, 2t..2t+2]) }`, whatever `m`
//! is, wherever row `i` sits, whichever micro-kernel or thread ran it. Blocking `k` for the
//! caches resumes from the partial sums stored in `C`, which is exact. A sequence's logits are
//! therefore the same bits alone or in any batch.
//!
//! Depends on `gemm` only for its feature check and activation rounding; x86-64 with AVX-512
//! BF16 (check [`available`]).

#![deny(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use half::bf16;
use rayon::prelude::*;

use super::gemm::round_into;
use super::{column_lanes, OutPtr};

/// Columns per panel: two zmm registers of bf16 pairs.
pub const NR: usize = 32;
/// u16 values per `k` pair of a panel.
const PAIR: usize = 2 * NR;
/// Most rows per micro-kernel: `12 × 2` accumulators plus two weight vectors and a broadcast
/// fit in the 32 zmm registers, and each weight load feeds twelve instructions.
const MR: usize = 12;
/// `k` pairs per cache block when there are many rows: the `MC`-row block of `A` it covers
/// (48 rows × 1 KiB) and a panel's slice (64 KiB) stay in L2 while the panels pass.
const KC_PAIRS: usize = 512;
/// Rows of `A` per L2 block.
const MC: usize = 48;
/// Panels per parallel task, at most; a whole number of tasks per thread keeps the threads even.
const TASK_PANELS: usize = 16;

/// Whether this CPU has the instructions: the same set as the bf16 tile kernel's.
pub fn available() -> bool {
    super::gemm::available_bf16()
}

/// The packed shape of an `[n, k]` matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PanelShape {
    pub n: usize,
    pub k: usize,
}

impl PanelShape {
    pub fn panels(self) -> usize {
        self.n.div_ceil(NR)
    }

    /// `k` rounded up to whole pairs (an odd `k` gets a zero partner).
    pub fn pairs(self) -> usize {
        self.k.div_ceil(2)
    }

    /// u16 values in the packed form.
    pub fn len(self) -> usize {
        self.panels() * self.pairs() * PAIR
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    fn panel_stride(self) -> usize {
        self.pairs() * PAIR
    }
}

/// Packs row-major `[n, k]` bf16 `src` into `dst` (`shape.len()` values), panel by panel.
/// `packed_rows(r)` is told after each panel that source rows `..r` are no longer needed, so a
/// caller copying out of a file mapping can drop those pages as it goes.
pub fn pack(src: &[bf16], shape: PanelShape, dst: &mut [u16], mut packed_rows: impl FnMut(usize)) {
    let PanelShape { n, k } = shape;
    assert!(src.len() >= n * k && dst.len() == shape.len());
    for (p, panel) in dst.chunks_exact_mut(shape.panel_stride()).enumerate() {
        let rows = p * NR..((p + 1) * NR).min(n);
        if rows.len() < NR || k % 2 == 1 {
            // Padding columns and the odd pair's partner are zero, so they add nothing.
            panel.fill(0);
        }
        for (col, j) in rows.clone().enumerate() {
            for (t, v) in src[j * k..(j + 1) * k].iter().enumerate() {
                panel[(t / 2) * PAIR + col * 2 + t % 2] = v.to_bits();
            }
        }
        packed_rows(rows.end);
    }
}

/// Rounds `src` rows of `k` to bf16 into rows of `stride` (zero-padded), as the tile kernel
/// rounds its activations.
fn round_rows(src: &[f32], k: usize, stride: usize, dst: &mut [u16]) {
    let round = |(d, s): (&mut [u16], &[f32])| {
        round_into(s, &mut d[..k]);
        d[k..].fill(0);
    };
    if src.len() >= 64 * 1024 {
        dst.par_chunks_mut(stride)
            .zip(src.par_chunks(k))
            .for_each(round);
    } else {
        dst.chunks_mut(stride).zip(src.chunks(k)).for_each(round);
    }
}

/// `c[m, n] = bf16(a[m, k]) · bᵀ` with `b` packed by [`pack`] for `shape`.
/// Requires [`available`].
pub fn gemm(a: &[f32], m: usize, packed: &[u16], shape: PanelShape, c: &mut [f32]) {
    let PanelShape { n, k } = shape;
    assert!(available(), "panels::gemm needs AVX-512 BF16");
    assert!(a.len() >= m * k && packed.len() >= shape.len() && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let lda = 2 * shape.pairs();
    let mut a16 = vec![0u16; m * lda];
    round_rows(&a[..m * k], k, lda, &mut a16);
    let panels = shape.panels();
    let threads = rayon::current_num_threads().max(1);
    let tasks = panels.div_ceil(TASK_PANELS * threads).max(1) * threads;
    let per_task = panels.div_ceil(tasks).max(1);
    let out = OutPtr(c.as_mut_ptr());
    let a16 = &a16;
    (0..panels.div_ceil(per_task))
        .into_par_iter()
        .for_each(|t| {
            let p0 = t * per_task;
            let p1 = (p0 + per_task).min(panels);
            // SAFETY: the features are present (asserted); panels p0..p1 and rows 0..m lie inside
            // `packed`, `a16` and `c` (asserted sizes), and no other task writes these columns.
            unsafe { run_panels(a16, m, lda, packed, shape, p0..p1, out) };
        });
}

/// Rows `0..m` against panels `panels`, blocked for the caches.
///
/// # Safety
/// AVX-512 BF16 present; `a16` holds `m` rows of `lda`; the panels exist in `packed`; `out`
/// points at `[m, n]` whose columns of these panels nobody else touches meanwhile.
unsafe fn run_panels(
    a16: &[u16],
    m: usize,
    lda: usize,
    packed: &[u16],
    shape: PanelShape,
    panels: std::ops::Range<usize>,
    out: OutPtr,
) {
    let pairs = shape.pairs();
    // Few rows stream each panel once from memory, end to end: blocking `k` only pays when
    // a block of `A` is reused across panels.
    let kc = if m <= MC { pairs } else { KC_PAIRS };
    for k0 in (0..pairs).step_by(kc) {
        let kps = kc.min(pairs - k0);
        for m0 in (0..m).step_by(MC) {
            let m1 = (m0 + MC).min(m);
            let mut p = panels.start;
            while p < panels.end {
                let np = group(MR.min(m1 - m0), panels.end - p);
                let mut r = m0;
                while r < m1 {
                    let mr = MR.min(m1 - r);
                    let block = Block {
                        // SAFETY (all offsets): inside the buffers, per this fn's contract.
                        a: unsafe { a16.as_ptr().add(r * lda + 2 * k0) },
                        lda,
                        b: unsafe { packed.as_ptr().add(p * shape.panel_stride() + k0 * PAIR) },
                        panel_stride: shape.panel_stride(),
                        pairs: kps,
                        c: unsafe { out.0.add(r * shape.n + p * NR) },
                        ldc: shape.n,
                        cols: (shape.n - p * NR).min(np * NR),
                        first: k0 == 0,
                    };
                    // SAFETY: per this fn's contract.
                    unsafe { dispatch(block, mr, np) };
                    r += mr;
                }
                p += np;
            }
        }
    }
}

/// Panels per micro-kernel for `mr` rows when `left` panels remain: fewer rows take more
/// panels, so there are always enough independent accumulators to hide the instruction's
/// latency.
fn group(mr: usize, left: usize) -> usize {
    let want = match mr {
        0..=2 => 4,
        3..=5 => 2,
        _ => 1,
    };
    [4, 2, 1]
        .into_iter()
        .find(|g| *g <= want && *g <= left)
        .unwrap_or(1)
}

/// One micro-kernel's operands.
#[derive(Clone, Copy)]
struct Block {
    a: *const u16,
    lda: usize,
    b: *const u16,
    panel_stride: usize,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    /// Valid columns from `c` on (`< 32·NP` only at the matrix's last panel).
    cols: usize,
    first: bool,
}

/// # Safety
/// As `micro`, for `mr` rows and `np` panels.
unsafe fn dispatch(b: Block, mr: usize, np: usize) {
    // SAFETY (every arm): the caller's contract, with the shape the arm names.
    match (mr, np) {
        (1, 4) => unsafe { micro::<1, 4>(b) },
        (2, 4) => unsafe { micro::<2, 4>(b) },
        (1, 2) => unsafe { micro::<1, 2>(b) },
        (2, 2) => unsafe { micro::<2, 2>(b) },
        (3, 2) => unsafe { micro::<3, 2>(b) },
        (4, 2) => unsafe { micro::<4, 2>(b) },
        (5, 2) => unsafe { micro::<5, 2>(b) },
        _ => {
            for g in 0..np {
                let one = Block {
                    b: unsafe { b.b.add(g * b.panel_stride) },
                    c: unsafe { b.c.add(g * NR) },
                    cols: b.cols.saturating_sub(g * NR).min(NR),
                    ..b
                };
                match mr {
                    12 => unsafe { micro::<12, 1>(one) },
                    11 => unsafe { micro::<11, 1>(one) },
                    10 => unsafe { micro::<10, 1>(one) },
                    9 => unsafe { micro::<9, 1>(one) },
                    8 => unsafe { micro::<8, 1>(one) },
                    7 => unsafe { micro::<7, 1>(one) },
                    6 => unsafe { micro::<6, 1>(one) },
                    5 => unsafe { micro::<5, 1>(one) },
                    4 => unsafe { micro::<4, 1>(one) },
                    3 => unsafe { micro::<3, 1>(one) },
                    2 => unsafe { micro::<2, 1>(one) },
                    _ => unsafe { micro::<1, 1>(one) },
                }
            }
        }
    }
}

/// `R` rows × `NP` panels: `R · 2NP` accumulators over `b.pairs` pairs.
///
/// # Safety
/// AVX-512 F/BW/BF16 present; `R` rows of `2·pairs` values at `a` (stride `lda`); `NP` panels
/// of `pairs · 64` values at `b` (stride `panel_stride`); `R` rows of `cols` floats at `c`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn micro<const R: usize, const NP: usize>(blk: Block) {
    let Block {
        a,
        lda,
        b,
        panel_stride,
        pairs,
        c,
        ldc,
        cols,
        first,
    } = blk;
    let full = cols >= NP * NR;
    let mut acc = [[[_mm512_setzero_ps(); 2]; NP]; R];
    if !first {
        for (i, row) in acc.iter_mut().enumerate() {
            for (g, pan) in row.iter_mut().enumerate() {
                for (v, x) in pan.iter_mut().enumerate() {
                    // SAFETY: inside row i of `c`; masked past `cols`.
                    let p = unsafe { c.add(i * ldc + g * NR + v * 16) };
                    *x = if full {
                        unsafe { _mm512_loadu_ps(p) }
                    } else {
                        unsafe { _mm512_maskz_loadu_ps(column_lanes(cols, 2 * g + v), p) }
                    };
                }
            }
        }
    }
    for t in 0..pairs {
        let mut w = [[_mm512_setzero_si512(); 2]; NP];
        for (g, pan) in w.iter_mut().enumerate() {
            // SAFETY: pair t of panel g lies inside the packed matrix.
            let p = unsafe { b.add(g * panel_stride + t * PAIR) };
            pan[0] = unsafe { _mm512_loadu_si512(p.cast()) };
            pan[1] = unsafe { _mm512_loadu_si512(p.add(32).cast()) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: pair t of row i lies inside `a` (rows are padded to whole pairs).
            let pair = unsafe { a.add(i * lda + 2 * t).cast::<i32>().read_unaligned() };
            let av: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(pair)) };
            for (pan, wv) in row.iter_mut().zip(&w) {
                for (x, wv) in pan.iter_mut().zip(wv) {
                    let wv: __m512bh = unsafe { std::mem::transmute(*wv) };
                    *x = _mm512_dpbf16_ps(*x, av, wv);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (g, pan) in row.iter().enumerate() {
            for (v, x) in pan.iter().enumerate() {
                // SAFETY: as for the loads above.
                let p = unsafe { c.add(i * ldc + g * NR + v * 16) };
                if full {
                    unsafe { _mm512_storeu_ps(p, *x) };
                } else {
                    unsafe { _mm512_mask_storeu_ps(p, column_lanes(cols, 2 * g + v), *x) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::pseudo;

    fn bits(v: &[f32]) -> Vec<bf16> {
        v.iter().map(|x| bf16::from_f32(*x)).collect()
    }

    /// The documented arithmetic, one element at a time: pairs in order, each pair's two
    /// products summed and added in f32 (the instruction's own rounding may differ in the last
    /// bit, hence the tolerance in the comparison).
    fn reference(a: &[f32], m: usize, k: usize, b: &[bf16], n: usize) -> Vec<f32> {
        let a16 = bits(a);
        let f = |v: bf16| v.to_f32() as f64;
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|t| f(a16[i * k + t]) * f(b[j * k + t]))
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    /// Where `pack` stored `b[j, t]`.
    fn unpacked(packed: &[u16], shape: PanelShape, j: usize, t: usize) -> u16 {
        packed[(j / NR) * shape.panel_stride() + (t / 2) * PAIR + (j % NR) * 2 + t % 2]
    }

    fn packed(b: &[bf16], shape: PanelShape) -> Vec<u16> {
        let mut out = vec![0u16; shape.len()];
        pack(b, shape, &mut out, |_| {});
        out
    }

    #[test]
    fn packing_keeps_every_value_where_unpacked_finds_it() {
        let shape = PanelShape { n: 70, k: 9 };
        let b: Vec<bf16> = (0..70 * 9).map(|i| bf16::from_bits(i as u16 + 1)).collect();
        let p = packed(&b, shape);
        assert_eq!(p.len(), 3 * 5 * PAIR);
        for j in 0..70 {
            for t in 0..9 {
                assert_eq!(unpacked(&p, shape, j, t), b[j * 9 + t].to_bits());
            }
        }
        // Padding (columns 70..96, the tenth k of every column) is zero.
        let nonzero = p.iter().filter(|v| **v != 0).count();
        assert_eq!(nonzero, 70 * 9);
    }

    #[test]
    fn every_shape_matches_the_reference() {
        if !available() {
            return;
        }
        // Odd k, a partial last panel, k past one cache block, and row counts that exercise
        // every micro-kernel height and panel grouping.
        for (k, n) in [(7, 5), (96, 64), (1100, 301), (1030, 33)] {
            let b = bits(&pseudo(n * k, 3));
            let shape = PanelShape { n, k };
            let p = packed(&b, shape);
            for m in [1, 2, 3, 5, 6, 12, 13, 16, 49, 61] {
                let a = pseudo(m * k, m as u32);
                let mut c = vec![f32::NAN; m * n];
                gemm(&a, m, &p, shape, &mut c);
                let expect = reference(&a, m, k, &b, n);
                for (x, y) in c.iter().zip(&expect) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "k {k} n {n} m {m}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_in_any_batch() {
        if !available() {
            return;
        }
        // k above one cache block, so large batches resume from partial sums in C.
        let (k, n) = (1100, 301);
        let shape = PanelShape { n, k };
        let p = packed(&bits(&pseudo(n * k, 5)), shape);
        let x = pseudo(97 * k, 9);
        let mut all = vec![0f32; 97 * n];
        gemm(&x, 97, &p, shape, &mut all);
        for (start, rows) in [(0, 1), (5, 3), (20, 16), (40, 12), (50, 47), (96, 1)] {
            let mut part = vec![0f32; rows * n];
            gemm(
                &x[start * k..(start + rows) * k],
                rows,
                &p,
                shape,
                &mut part,
            );
            assert!(
                part == all[start * n..(start + rows) * n],
                "rows {start}..{} differ from the same rows in a batch of 97",
                start + rows
            );
        }
    }
}
