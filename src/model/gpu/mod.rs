//! The CUDA path (feature `cuda`): a decoder whose activations and weights are bf16 tensors on
//! one GPU, matmuls through cuBLAS, and our own kernels (`kernels/`) for the paged KV cache,
//! attention and the fused element-wise passes.
//!
//! Same contract as the CPU decoder: a pure function of (weights, `ForwardBatch`, `KvCache`),
//! returning f32 logits on the host. Must not depend on `engine` or anything above it.

pub mod decoder;
pub mod kernels;
pub mod kv;
