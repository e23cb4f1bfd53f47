//! Enclave's CUDA kernels as PTX text, compiled from `cuda/*.cu` by the build script.
//!
//! Owns the kernel sources and their entry-point names only; launching them (shapes, grids,
//! pointers) is the model's business. Depends on nothing.

/// Writing a step's keys and values into their paged-cache slots.
pub const CACHE: &str = include_str!(concat!(env!("OUT_DIR"), "/cache.ptx"));
/// Paged attention over block tables, for decode and (varlen, causal) prefill rows alike.
pub const ATTENTION: &str = include_str!(concat!(env!("OUT_DIR"), "/attention.ptx"));
/// Fused residual add + RMSNorm, rotary embedding, and SiLU-gated product.
pub const FUSED: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
