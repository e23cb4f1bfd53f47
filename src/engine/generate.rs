//! One sequence, start to finish: prefill the prompt, then decode until a stop token or the
//! token limit. This drives `enclave generate`; the batching engine serves many at once.
//!
//! Invariant: the prompt plus `max_tokens` fits the model's context before anything runs, so a
//! request either fails at once with both numbers or runs to a clean finish.

use std::time::Instant;

use super::error::EngineError;
use super::sampler::{Sampler, SamplingParams};
use super::sequence::FinishReason;
use crate::ids::{BlockId, TokenId};
use crate::model::{CausalLm, ForwardBatch, KvCache, KvDtype, LogitsRows, SequenceChunk};

#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// `None` means the rest of the context.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop_token_ids: Vec<TokenId>,
    pub block_size: usize,
    pub kv_dtype: KvDtype,
}

#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// Generated tokens, the stop token (if any) included.
    pub tokens: Vec<TokenId>,
    pub finish_reason: FinishReason,
    pub prompt_len: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// Runs the whole generation; `on_token` sees each token as it is sampled and may stop the run
/// by returning an error message (a closed pipe, say).
pub fn generate(
    model: &dyn CausalLm,
    prompt: &[TokenId],
    params: &GenerateParams,
    on_token: &mut dyn FnMut(TokenId) -> Result<(), String>,
) -> Result<GenerateOutput, EngineError> {
    let max_context = model.config().max_position_embeddings;
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if prompt.len() >= max_context {
        return Err(EngineError::PromptTooLong {
            prompt_len: prompt.len(),
            max_context,
        });
    }
    let max_tokens = params.max_tokens.unwrap_or(max_context - prompt.len());
    if prompt.len() + max_tokens > max_context {
        return Err(EngineError::ContextExceeded {
            prompt_len: prompt.len(),
            max_tokens,
            max_context,
        });
    }
    let vocab_size = model.config().vocab_size;
    let mut sampler = Sampler::new(params.sampling.clone(), prompt, 0, vocab_size)?;
    let bs = params.block_size;
    let num_blocks = (prompt.len() + max_tokens).div_ceil(bs).max(1);
    let mut cache = KvCache::new_on(
        model.kv_cache_spec(num_blocks, bs, params.kv_dtype),
        &model.device(),
    )?;
    let table: Vec<BlockId> = (0..num_blocks as u32).map(BlockId).collect();

    let started = Instant::now();
    let mut tokens = Vec::new();
    let mut step = |tokens_now: &[TokenId],
                    done: usize,
                    cache: &mut KvCache|
     -> Result<TokenId, EngineError> {
        let chunk = SequenceChunk {
            tokens: tokens_now,
            num_computed_tokens: done,
            block_table: &table,
        };
        let logits = model.forward(
            &ForwardBatch::from_chunks(&[chunk], bs, LogitsRows::LastOfEachSequence),
            cache,
        )?;
        Ok(sampler.sample(&logits.get(0)?.to_vec1::<f32>()?).token)
    };
    let mut next = step(prompt, 0, &mut cache)?;
    let prefill_secs = started.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let finish_reason = loop {
        tokens.push(next);
        on_token(next).map_err(EngineError::Stopped)?;
        if params.stop_token_ids.contains(&next) {
            break FinishReason::Stop;
        }
        if tokens.len() >= max_tokens {
            break FinishReason::Length;
        }
        next = step(
            std::slice::from_ref(&next),
            prompt.len() + tokens.len() - 1,
            &mut cache,
        )?;
    };
    Ok(GenerateOutput {
        tokens,
        finish_reason,
        prompt_len: prompt.len(),
        prefill_secs,
        decode_secs: decode_start.elapsed().as_secs_f64(),
    })
}
