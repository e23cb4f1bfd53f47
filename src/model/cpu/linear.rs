//! `y = x · Wᵀ` on the CPU, with `W` (`[n, k]`, row-major, f32/f16/bf16) read in place from
//! the mapped weights file.
//!
//! Two regimes: a few rows of `x` (decode) are memory-bound, so each weight row is streamed
//! once and dotted with every row of `x` while it sits in L1; many rows (prefill) are
//! compute-bound and go through a blocked GEMM. Depends only on `simd` and the `gemm` crate.

use half::{bf16, f16};
use rayon::prelude::*;

use super::simd::Element;

/// Rows of `x` at or above which the GEMM path wins over streaming dot products.
const GEMM_MIN_ROWS: usize = 16;
/// Output features converted to f32 at a time on the GEMM path for 16-bit weights: a panel of
/// this many rows stays in L2 while the GEMM reuses it for every row of `x`.
const PANEL_ROWS: usize = 256;
const TASKS_PER_THREAD: usize = 8;

/// A weight matrix as the kernels read it.
#[derive(Clone, Copy)]
pub enum MatRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

/// `out[t, j] = Σ_i x[t, i] · w[j, i]` for `t < rows`, `j < n`, `i < k`.
pub fn linear(x: &[f32], rows: usize, k: usize, w: MatRef<'_>, n: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), rows * k);
    debug_assert_eq!(out.len(), rows * n);
    if rows >= GEMM_MIN_ROWS {
        #[cfg(target_arch = "x86_64")]
        match w {
            MatRef::F32(w) if super::gemm::available_f32() => {
                return super::gemm::gemm_f32(x, rows, k, w, n, out)
            }
            MatRef::Bf16(w) if super::gemm::available_bf16() => {
                return super::gemm::gemm_bf16(x, rows, k, w, n, out)
            }
            _ => {}
        }
        match w {
            MatRef::F32(w) => gemm_f32(x, rows, k, w, n, out),
            MatRef::F16(w) => gemm_widened(x, rows, k, w, n, out),
            MatRef::Bf16(w) => gemm_widened(x, rows, k, w, n, out),
        }
    } else {
        #[cfg(target_arch = "x86_64")]
        if let MatRef::Bf16(w) = w {
            if super::gemm::available_bf16() {
                return streamed_bf16(x, rows, k, w, n, out);
            }
        }
        match w {
            MatRef::F32(w) => streamed(x, rows, k, w, n, out),
            MatRef::F16(w) => streamed(x, rows, k, w, n, out),
            MatRef::Bf16(w) => streamed(x, rows, k, w, n, out),
        }
    }
}

fn streamed<T: Element>(x: &[f32], rows: usize, k: usize, w: &[T], n: usize, out: &mut [f32]) {
    streamed_with(x, w, out, Dims { rows, k, n }, T::dot)
}

/// bf16 weights with the bf16 dot-product instruction: the activations are rounded to bf16
/// once, exactly as the prefill GEMM does, so decode and prefill compute the same products.
#[cfg(target_arch = "x86_64")]
fn streamed_bf16(x: &[f32], rows: usize, k: usize, w: &[bf16], n: usize, out: &mut [f32]) {
    use super::gemm::{dot_bf16, round_to_bf16};
    streamed_with(&round_to_bf16(x), w, out, Dims { rows, k, n }, dot_bf16)
}

/// The sizes of one product: `rows` of activations, `k` inputs, `n` outputs.
#[derive(Clone, Copy)]
struct Dims {
    rows: usize,
    k: usize,
    n: usize,
}

/// Each task owns a contiguous run of weight rows and reads them in memory order, the pattern
/// hardware prefetchers follow best. With several rows of `x`, the result is built transposed
/// (`[n, rows]`) so that tasks write disjoint slices, then turned around.
fn streamed_with<A: Sync, T: Sync>(
    x: &[A],
    w: &[T],
    out: &mut [f32],
    dims: Dims,
    dot: fn(&[A], &[T]) -> f32,
) {
    let Dims { rows, k, n } = dims;
    let threads = rayon::current_num_threads().max(1);
    let per_task = n.div_ceil(threads * TASKS_PER_THREAD).max(16);
    let work = |(chunk_idx, dst): (usize, &mut [f32])| {
        let j0 = chunk_idx * per_task;
        for (jj, dst_row) in dst.chunks_exact_mut(rows).enumerate() {
            let wr = &w[(j0 + jj) * k..(j0 + jj + 1) * k];
            for (t, d) in dst_row.iter_mut().enumerate() {
                *d = dot(&x[t * k..(t + 1) * k], wr);
            }
        }
    };
    if rows == 1 {
        out.par_chunks_mut(per_task).enumerate().for_each(work);
        return;
    }
    let mut transposed = vec![0f32; n * rows];
    transposed
        .par_chunks_mut(per_task * rows)
        .enumerate()
        .for_each(work);
    for (j, col) in transposed.chunks_exact(rows).enumerate() {
        for (t, v) in col.iter().enumerate() {
            out[t * n + j] = *v;
        }
    }
}

/// Writes columns `j0..j0 + dims.n` of `out` (row stride `ld_out`) from an f32 panel of
/// `dims.n` weight rows.
fn gemm_panel(x: &[f32], w: &[f32], out: &mut [f32], dims: Dims, (j0, ld_out): (usize, usize)) {
    let Dims {
        rows,
        k,
        n: n_panel,
    } = dims;
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    debug_assert!(out.len() >= (rows - 1) * ld_out + j0 + n_panel);
    // SAFETY: the strides describe x as [rows, k] row-major, w as the transpose of a row-major
    // [n_panel, k] matrix, and out as [rows, ld_out] row-major starting at column j0; all the
    // addressed elements are inside the slices (asserted above and by the callers' lengths).
    unsafe {
        gemm::gemm(
            rows,
            n_panel,
            k,
            out.as_mut_ptr().add(j0),
            1,
            ld_out as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

fn gemm_f32(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    gemm_panel(x, w, out, Dims { rows, k, n }, (0, n));
}

/// 16-bit weights are widened one panel at a time, so the f32 copy stays cache-sized.
fn gemm_widened<T: Element>(x: &[f32], rows: usize, k: usize, w: &[T], n: usize, out: &mut [f32]) {
    let mut panel = vec![0f32; PANEL_ROWS * k];
    let mut j0 = 0;
    while j0 < n {
        let nb = PANEL_ROWS.min(n - j0);
        let src = &w[j0 * k..(j0 + nb) * k];
        panel[..nb * k]
            .par_chunks_mut(k)
            .zip(src.par_chunks(k))
            .for_each(|(d, s)| {
                for (d, s) in d.iter_mut().zip(s) {
                    *d = s.to_f32();
                }
            });
        gemm_panel(x, &panel[..nb * k], out, Dims { rows, k, n: nb }, (j0, n));
        j0 += nb;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * n];
        for t in 0..rows {
            for j in 0..n {
                out[t * n + j] = (0..k)
                    .map(|i| x[t * k + i] as f64 * w[j * k + i] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_regime_and_dtype_matches_a_plain_loop() {
        // k, n and rows off every tile and vector width, so the masked tails run too.
        let (k, n) = (1100, 301);
        let w = pseudo(n * k, 7);
        let w_bf: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
        let w_bf_f32: Vec<f32> = w_bf.iter().map(|v| v.to_f32()).collect();
        let w_h: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
        let w_h_f32: Vec<f32> = w_h.iter().map(|v| v.to_f32()).collect();
        for rows in [1, 3, 15, 16, 41] {
            let x = pseudo(rows * k, rows as u32);
            // With the bf16 dot-product instruction, activations are rounded to bf16 once; the
            // reference does the same.
            let x_bf: Vec<f32> = x.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
            let bf16_gemm = cfg!(target_arch = "x86_64") && {
                #[cfg(target_arch = "x86_64")]
                let a = super::super::gemm::available_bf16();
                #[cfg(not(target_arch = "x86_64"))]
                let a = false;
                a
            };
            let mut out = vec![0f32; rows * n];
            for (mat, wref, xref) in [
                (MatRef::F32(&w), &w, &x),
                (
                    MatRef::Bf16(&w_bf),
                    &w_bf_f32,
                    if bf16_gemm { &x_bf } else { &x },
                ),
                (MatRef::F16(&w_h), &w_h_f32, &x),
            ] {
                linear(&x, rows, k, mat, n, &mut out);
                let expect = reference(xref, rows, k, wref, n);
                let max = out
                    .iter()
                    .zip(&expect)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(max < 2e-4, "rows {rows}: max diff {max}");
            }
        }
    }
}
