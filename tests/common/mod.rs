//! Shared helpers for the integration tests: fixture paths, reference tensors, and running a
//! model over prompts with scattered KV blocks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

mod paths;
#[allow(unused_imports)]
pub use paths::{minilm_dir, shared_data};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use enclave::ids::{BlockId, TokenId};
use enclave::model::{CausalLm, ForwardBatch, KvCache, KvDtype, LogitsRows, SequenceChunk};

pub const VARIANTS: &[&str] = &[
    "llama3_scaled",
    "llama2_untied_mha",
    "mistral_swa",
    "qwen2_bias_tied",
    "qwen3_qknorm",
];

/// The source tree: where the tests were built, or `ENCLAVE_SOURCE_DIR` for test binaries
/// carried to another machine (the GPU runs).
pub fn source_dir() -> PathBuf {
    std::env::var_os("ENCLAVE_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixture_model(variant: &str) -> PathBuf {
    source_dir().join("tests/fixtures/models").join(variant)
}

pub struct Reference {
    pub tensors: HashMap<String, Tensor>,
    pub num_prompts: usize,
}

impl Reference {
    pub fn load(variant: &str) -> Result<Self> {
        let path = fixture_model(variant).join("reference.safetensors");
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| path.display().to_string())?;
        let num_prompts = (0..)
            .take_while(|i| tensors.contains_key(&format!("p{i}.input_ids")))
            .count();
        Ok(Self {
            tensors,
            num_prompts,
        })
    }

    pub fn ids(&self, key: &str) -> Result<Vec<TokenId>> {
        let t = self.tensors.get(key).with_context(|| key.to_string())?;
        Ok(t.to_vec1::<i64>()?
            .into_iter()
            .map(|v| TokenId(v as u32))
            .collect())
    }

    pub fn logits(&self, key: &str) -> Result<Tensor> {
        Ok(self
            .tensors
            .get(key)
            .with_context(|| key.to_string())?
            .clone())
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// A cache big enough for the fixtures, and block tables that deliberately do not follow
/// each other, so that every test exercises the paging.
pub struct Pager {
    pub cache: KvCache,
    next: u32,
    pub block_size: usize,
}

impl Pager {
    pub fn new(
        model: &dyn CausalLm,
        block_size: usize,
        num_blocks: usize,
        dtype: KvDtype,
    ) -> Result<Self> {
        Ok(Self {
            cache: KvCache::new_on(
                model.kv_cache_spec(num_blocks, block_size, dtype),
                &model.device(),
            )?,
            next: 0,
            block_size,
        })
    }

    /// A block table of `n` blocks spread over the cache in a strided order.
    pub fn table(&mut self, n: usize) -> Vec<BlockId> {
        let total = self.cache.spec().num_blocks as u32;
        (0..n)
            .map(|_| {
                self.next += 1;
                BlockId((self.next * 7) % total)
            })
            .collect()
    }
}

/// Each prompt as a whole prefill chunk over its block table.
pub fn prefill_chunks<'a>(
    prompts: &'a [Vec<TokenId>],
    tables: &'a [Vec<BlockId>],
) -> Vec<SequenceChunk<'a>> {
    prompts
        .iter()
        .zip(tables)
        .map(|(p, t)| SequenceChunk {
            tokens: p,
            num_computed_tokens: 0,
            block_table: t,
        })
        .collect()
}

/// Runs one prompt alone: prefill with every row's logits, then the teacher-forced decode
/// steps. Returns (prefill logits, decode logits per step).
pub fn run_alone(
    model: &dyn CausalLm,
    prompt: &[TokenId],
    decode: &[TokenId],
    block_size: usize,
) -> Result<(Tensor, Vec<Tensor>)> {
    let mut pager = Pager::new(model, block_size, 64, KvDtype::F32)?;
    let table = pager.table((prompt.len() + decode.len()).div_ceil(block_size));
    let chunk = SequenceChunk {
        tokens: prompt,
        num_computed_tokens: 0,
        block_table: &table,
    };
    let prefill = model.forward(
        &ForwardBatch::from_chunks(&[chunk], block_size, LogitsRows::All),
        &mut pager.cache,
    )?;
    let mut steps = Vec::new();
    for (j, tok) in decode.iter().enumerate() {
        let chunk = SequenceChunk {
            tokens: std::slice::from_ref(tok),
            num_computed_tokens: prompt.len() + j,
            block_table: &table,
        };
        let b = ForwardBatch::from_chunks(&[chunk], block_size, LogitsRows::LastOfEachSequence);
        steps.push(model.forward(&b, &mut pager.cache)?.squeeze(0)?);
    }
    Ok((prefill, steps))
}
