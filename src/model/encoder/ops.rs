//! The encoder's steps outside its linear layers, on plain f32 rows and in parallel:
//! per-sequence attention, residual add with LayerNorm, and the GELU and ReLU activations.
//!
//! Candle runs these single-threaded on the CPU; for a batch of a few thousand tokens that
//! alone took longer than the GEMMs. Depends on rayon only. Invariant: each row's result
//! depends on that row alone, so batching never changes a text's vector.

use rayon::prelude::*;

use super::config::HiddenAct;
use super::vmath;

/// Rows handled per rayon task: enough work to amortise the scheduling.
const ROWS_PER_TASK: usize = 16;

/// `LayerNorm(x + residual)` over rows of `hidden`.
pub fn add_layer_norm(
    x: &[f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    hidden: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(hidden * ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, block)| {
            let base = task * hidden * ROWS_PER_TASK;
            for (r, row) in block.chunks_mut(hidden).enumerate() {
                let start = base + r * hidden;
                let xs = &x[start..start + hidden];
                match residual {
                    Some(res) => row
                        .iter_mut()
                        .zip(xs.iter().zip(&res[start..start + hidden]))
                        .for_each(|(o, (a, b))| *o = a + b),
                    None => row.copy_from_slice(xs),
                }
                let mean = row.iter().sum::<f32>() / hidden as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / hidden as f32;
                let inv = 1.0 / (var + eps).sqrt();
                row.iter_mut()
                    .zip(weight.iter().zip(bias))
                    .for_each(|(v, (w, b))| *v = (*v - mean) * inv * w + b);
            }
        });
    out
}

/// `a · bᵀ` for row-major `a` `[m, k]` and `b` `[n, k]`, on the calling thread.
fn matmul_t(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::model::cpu::packed;
        // Packing costs one pass over `b`; the dot-product tiles of `gemm` would instead
        // reduce horizontally every 32 elements of `k` here (head_dim is that short).
        if packed::available() {
            let b = packed::PackedB::new(b, n, k);
            packed::gemm_packed(a, m, k, &b, out, 0..b.panels());
            return;
        }
    }
    for (i, row) in out.chunks_mut(n).enumerate() {
        let x = &a[i * k..(i + 1) * k];
        for (j, o) in row.iter_mut().enumerate() {
            *o = x
                .iter()
                .zip(&b[j * k..(j + 1) * k])
                .map(|(p, q)| p * q)
                .sum();
        }
    }
}

/// Full (bidirectional) attention within each sequence, one task per (sequence, head).
/// `qkv` is `[tokens, 3 · heads · head_dim]` (query, key, value side by side); returns the
/// context as `[tokens, heads · head_dim]`.
pub fn attention(qkv: &[f32], seq_lens: &[usize], heads: usize, head_dim: usize) -> Vec<f32> {
    let hidden = heads * head_dim;
    let stride = 3 * hidden;
    let (q, k, v) = (qkv, &qkv[hidden..], &qkv[2 * hidden..]);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut starts = Vec::with_capacity(seq_lens.len());
    let mut at = 0;
    for &len in seq_lens {
        starts.push(at);
        at += len;
    }
    let tasks: Vec<(usize, usize, usize)> = starts
        .iter()
        .zip(seq_lens)
        .flat_map(|(&start, &len)| (0..heads).map(move |h| (start, len, h)))
        .collect();
    let outputs: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(start, len, h)| {
            let col = h * head_dim;
            let at = |i: usize| (start + i) * stride + col;
            let mut qh = Vec::with_capacity(len * head_dim);
            let mut kh = Vec::with_capacity(len * head_dim);
            let mut vt = vec![0f32; head_dim * len];
            for i in 0..len {
                let r = at(i);
                qh.extend(q[r..r + head_dim].iter().map(|x| x * scale));
                kh.extend_from_slice(&k[r..r + head_dim]);
                for (c, x) in v[r..r + head_dim].iter().enumerate() {
                    vt[c * len + i] = *x;
                }
            }
            let mut scores = vec![0f32; len * len];
            matmul_t(&qh, len, head_dim, &kh, len, &mut scores);
            vmath::softmax_rows(&mut scores, len);
            let mut ctx = vec![0f32; len * head_dim];
            matmul_t(&scores, len, len, &vt, head_dim, &mut ctx);
            ctx
        })
        .collect();
    let mut out = vec![0f32; qkv.len() / 3];
    for (&(start, len, h), ctx) in tasks.iter().zip(outputs) {
        for i in 0..len {
            let dst = (start + i) * hidden + h * head_dim;
            out[dst..dst + head_dim].copy_from_slice(&ctx[i * head_dim..(i + 1) * head_dim]);
        }
    }
    out
}

/// Applies the activation in place.
pub fn activate(x: &mut [f32], act: HiddenAct) {
    x.par_chunks_mut(4096).for_each(|chunk| match act {
        HiddenAct::Gelu => vmath::gelu_erf_slice(chunk),
        HiddenAct::GeluTanh => chunk.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
        HiddenAct::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (K * (x + 0.044_715 * x * x * x)).tanh())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_a_row_has_zero_mean_and_unit_variance_before_the_affine() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let out = add_layer_norm(&x, Some(&[1.0; 4]), &[1.0; 4], &[0.0; 4], 0.0, 4);
        let mean: f32 = out.iter().sum::<f32>() / 4.0;
        let var: f32 = out.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{out:?}");
    }
}
