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
pub mod tuning;
