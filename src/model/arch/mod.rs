//! Architecture dispatch: from a parsed config and mapped weights to a `CausalLm`.
//!
//! One file per block shape; today every supported family shares `decoder`. A CUDA device
//! gets the same families from `gpu::decoder`.

pub mod decoder;

use candle_core::Device;

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::kv_cache::KvCacheSpec;
use super::weights::Weights;
use super::CausalLm;

pub fn load(cfg: &ModelConfig, weights: &Weights, device: &Device) -> Result<Box<dyn CausalLm>> {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        return Ok(Box::new(crate::model::gpu::decoder::CudaDecoderLm::load(
            cfg, weights, device,
        )?));
    }
    if !device.is_cpu() {
        return Err(ModelError::Device(format!(
            "models run on the CPU or, in a CUDA build, an NVIDIA GPU; not on {device:?}"
        )));
    }
    Ok(Box::new(decoder::DecoderLm::load(cfg, weights, device)?))
}

/// Refuses a cache whose geometry is not this model's.
pub fn check_cache_fits(cfg: &ModelConfig, spec: &KvCacheSpec) -> Result<()> {
    if spec.num_layers != cfg.num_hidden_layers
        || spec.num_kv_heads != cfg.num_key_value_heads
        || spec.head_dim != cfg.head_dim
    {
        return Err(ModelError::KvCache(format!(
            "cache geometry {spec:?} does not fit this model ({} layers, {} KV heads of {})",
            cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
        )));
    }
    Ok(())
}
