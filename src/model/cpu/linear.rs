//! `y = x · Wᵀ` on the CPU, with `W` (`[n, k]`, f32/f16/bf16) read in place from the loaded
//! weights, row-major as stored or bf16 repacked into column panels at load.
//!
//! Invariant: batch invariance. A row of `x` gives the same bits whatever other rows share the
//! call, so a sequence's tokens never depend on what else the engine batched with it (seeded
//! sampling reproduces, and batched output equals one-sequence output exactly). Every row
//! count of one matrix therefore takes the same path, with a per-element summation order
//! fixed by that path: the panel kernel for packed bf16 (see `panels`), the AVX-512 tile GEMM
//! for row-major weights (see `gemm`), or, without AVX-512, one dot product per element. Both
//! kernels stream each weight once per call, so decode (a few rows) stays memory-bound and
//! prefill compute-bound on the same code. Depends only on `simd`, `gemm` and `panels`.

use half::{bf16, f16};
use rayon::prelude::*;

use super::simd::Element;

const TASKS_PER_THREAD: usize = 8;

/// A weight matrix as the kernels read it.
#[derive(Clone, Copy)]
pub enum MatRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    /// bf16 weights repacked into column panels at load (see `panels`).
    #[cfg(target_arch = "x86_64")]
    Panels(&'a [u16], super::panels::PanelShape),
}

/// `out[t, j] = Σ_i x[t, i] · w[j, i]` for `t < rows`, `j < n`, `i < k`.
pub fn linear(x: &[f32], rows: usize, k: usize, w: MatRef<'_>, n: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), rows * k);
    debug_assert_eq!(out.len(), rows * n);
    #[cfg(target_arch = "x86_64")]
    {
        use super::gemm;
        match w {
            MatRef::Bf16(w) if gemm::available_bf16() => {
                return gemm::gemm_bf16(x, rows, k, w, n, out)
            }
            MatRef::F32(w) if gemm::available_f32() => {
                return gemm::gemm_f32(x, rows, k, w, n, out)
            }
            MatRef::Bf16(w) if gemm::available_wide() => {
                return gemm::gemm_wide(x, rows, k, w, n, out)
            }
            MatRef::F16(w) if gemm::available_wide() => {
                return gemm::gemm_wide(x, rows, k, w, n, out)
            }
            _ => {}
        }
    }
    match w {
        MatRef::F32(w) => streamed(x, rows, k, w, n, out),
        MatRef::F16(w) => streamed(x, rows, k, w, n, out),
        MatRef::Bf16(w) => streamed(x, rows, k, w, n, out),
        // Packed only where the panel kernel runs (`panels::available`).
        #[cfg(target_arch = "x86_64")]
        MatRef::Panels(packed, shape) => {
            debug_assert_eq!((shape.n, shape.k), (n, k));
            super::panels::gemm(x, rows, packed, shape, out)
        }
    }
}

/// The portable path: each task owns a contiguous run of weight rows and reads them in memory
/// order, dotting each with every row of `x` while it sits in L1. With several rows of `x`, the
/// result is built transposed (`[n, rows]`) so that tasks write disjoint slices, then turned
/// around.
fn streamed<T: Element>(x: &[f32], rows: usize, k: usize, w: &[T], n: usize, out: &mut [f32]) {
    let threads = rayon::current_num_threads().max(1);
    let per_task = n.div_ceil(threads * TASKS_PER_THREAD).max(16);
    let work = |(chunk_idx, dst): (usize, &mut [f32])| {
        let j0 = chunk_idx * per_task;
        for (jj, dst_row) in dst.chunks_exact_mut(rows).enumerate() {
            let wr = &w[(j0 + jj) * k..(j0 + jj + 1) * k];
            for (t, d) in dst_row.iter_mut().enumerate() {
                *d = T::dot(&x[t * k..(t + 1) * k], wr);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::pseudo;

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

    #[test]
    fn a_row_gives_the_same_bits_in_any_batch() {
        let (k, n) = (1100, 301);
        let w = pseudo(n * k, 5);
        let w_bf: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
        let w_h: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
        let x = pseudo(37 * k, 9);
        for mat in [MatRef::F32(&w), MatRef::Bf16(&w_bf), MatRef::F16(&w_h)] {
            let mut all = vec![0f32; 37 * n];
            linear(&x, 37, k, mat, n, &mut all);
            for (start, rows) in [(0, 1), (5, 3), (20, 16), (36, 1)] {
                let mut part = vec![0f32; rows * n];
                linear(
                    &x[start * k..(start + rows) * k],
                    rows,
                    k,
                    mat,
                    n,
                    &mut part,
                );
                assert!(
                    part == all[start * n..(start + rows) * n],
                    "rows {start}..{} differ from the same rows in a batch of 37",
                    start + rows
                );
            }
        }
    }
}
