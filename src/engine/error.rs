//! The engine's error type.

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the prompt is empty; give at least one token")]
    EmptyPrompt,
    #[error("the prompt has {prompt_len} tokens but the model's context is {max_context}; shorten the prompt")]
    PromptTooLong {
        prompt_len: usize,
        max_context: usize,
    },
    #[error(
        "prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) is {} tokens, over the model's context of {max_context}; lower max_tokens or shorten the prompt",
        prompt_len + max_tokens
    )]
    ContextExceeded {
        prompt_len: usize,
        max_tokens: usize,
        max_context: usize,
    },
    #[error("the prompt has {prompt_len} tokens but the KV cache holds {capacity} in all; shorten the prompt or give the cache more memory (--kv-cache-memory)")]
    PromptExceedsKvCache { prompt_len: usize, capacity: usize },
    #[error("the engine is overloaded: {queue_len} requests are already waiting; retry later")]
    Overloaded { queue_len: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the engine has stopped")]
    EngineStopped,
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The requested JSON schema or grammar cannot be compiled.
    #[error("{0}")]
    Grammar(String),
    #[error("invalid sampling parameter: {0}")]
    Sampling(String),
    #[error("generation stopped by the receiver: {0}")]
    Stopped(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(ModelError::Candle(e))
    }
}
