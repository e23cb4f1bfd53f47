//! CPU kernels: the dense linear layer over mapped weights, and paged attention over the KV
//! cache blocks.
//!
//! Plain slices in, plain slices out: nothing here knows about candle tensors, files or
//! sequences. Parallelism is rayon's global pool, which candle's CPU ops share, so the two never
//! oversubscribe the cores.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_rows;
#[cfg(target_arch = "x86_64")]
pub mod gemm;
pub mod linear;
#[cfg(target_arch = "x86_64")]
pub mod packed;
#[cfg(target_arch = "x86_64")]
pub mod panels;
pub mod simd;
#[cfg(target_arch = "x86_64")]
mod softmax;
pub mod tuning;

/// The output matrix's pointer, handed to the tasks of a parallel kernel. Each kernel gives
/// every task a disjoint set of output columns (`gemm::run_blocks`, `packed::gemm_parallel`,
/// `panels::gemm`), which is what makes sharing it across threads sound.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: see the type's doc: no two tasks write the same element.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for OutPtr {}
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for OutPtr {}

/// The mask of the first `count` lanes (at most 16) of a 16-lane vector.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn first_lanes(count: usize) -> std::arch::x86_64::__mmask16 {
    ((1u32 << count) - 1) as std::arch::x86_64::__mmask16
}

/// The lanes of 16-lane vector `v` of a row that holds `cols` real columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn column_lanes(cols: usize, v: usize) -> std::arch::x86_64::__mmask16 {
    first_lanes(cols.saturating_sub(v * 16).min(16))
}

/// Deterministic values in [-1, 1] for the kernels' tests.
#[cfg(test)]
pub(crate) fn pseudo(n: usize, seed: u32) -> Vec<f32> {
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
