//! Models: finding them on disk, loading their weights and computing logits for a packed batch
//! of ragged sequences against a paged KV cache.
//!
//! A model is a pure function of (weights, `ForwardBatch`, `KvCache`): it never sees a
//! request, a sequence or a block allocator. Must not depend on `engine`, `tokenizer` or any
//! serving layer.

pub mod arch;
pub mod attention;
pub mod batch;
pub mod config;
pub mod cpu;
pub mod device;
pub mod encoder;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod kv_cache;
pub mod layers;
pub mod resident;
pub mod rope;
pub mod source;
pub mod weights;

use candle_core::{Device, Tensor};

pub use batch::{ForwardBatch, LogitsRows, SequenceChunk};
pub use config::{Architecture, GenerationDefaults, ModelConfig};
pub use device::DeviceSpec;
pub use error::ModelError;
pub use kv_cache::{KvCache, KvCacheSpec, KvDtype};
pub use weights::{WeightDtype, WeightResidency, Weights};

/// A causal language model over the paged KV cache.
pub trait CausalLm: Send + Sync {
    fn config(&self) -> &ModelConfig;

    /// The dtype the large matrices are stored in.
    fn weight_dtype(&self) -> WeightDtype;

    /// Where the weights live and the forward runs; the KV cache is allocated there too.
    fn device(&self) -> Device {
        Device::Cpu
    }

    /// Writes this step's keys and values into `kv_cache` and returns f32 logits,
    /// `[rows, vocab_size]`, for the rows `batch.logits_rows` selects.
    fn forward(&self, batch: &ForwardBatch, kv_cache: &mut KvCache) -> Result<Tensor, ModelError>;

    /// The cache geometry this model needs, for `num_blocks` blocks of `block_size` tokens.
    fn kv_cache_spec(&self, num_blocks: usize, block_size: usize, dtype: KvDtype) -> KvCacheSpec {
        let c = self.config();
        KvCacheSpec {
            num_layers: c.num_hidden_layers,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            block_size,
            num_blocks,
            dtype,
        }
    }
}

/// Loads the architecture named by `config.json` in `dir` over its mapped weights.
pub fn load_causal_lm(
    dir: &std::path::Path,
    device: &Device,
) -> Result<Box<dyn CausalLm>, ModelError> {
    let cfg = ModelConfig::from_file(&config::config_path(dir))?;
    load_causal_lm_with(&cfg, dir, device)
}

/// As `load_causal_lm`, for a caller that has already parsed `dir`'s `config.json`.
pub fn load_causal_lm_with(
    cfg: &ModelConfig,
    dir: &std::path::Path,
    device: &Device,
) -> Result<Box<dyn CausalLm>, ModelError> {
    arch::load(cfg, &Weights::open_dir(dir)?, device)
}
