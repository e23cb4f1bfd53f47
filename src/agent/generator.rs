//! How an agent asks a model for text: a trait the server implements over its engines, and a
//! scripted one tests drive. The agent is a client of the engine like any HTTP handler; it
//! never reaches into the inference loop.
//! Depends on nothing else in the crate.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

impl PromptMessage {
    pub fn new(role: &'static str, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The model to use; `None`: the server's default chat model.
    pub model: Option<String>,
    pub messages: Vec<PromptMessage>,
    pub max_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    /// The model that wrote it.
    pub model: String,
    /// exp(mean log-probability) of the generated tokens, in 0..1.
    pub likelihood: f32,
    pub num_tokens: usize,
    /// Prompt tokens served by the prefix cache.
    pub num_cached_tokens: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GenerationError {
    /// The prompt leaves too little room: the caller may shorten it and try again.
    #[error("the prompt ({prompt_tokens} tokens) and the answer ({max_tokens}) exceed the model's context of {context} tokens")]
    TooLong {
        prompt_tokens: usize,
        max_tokens: usize,
        context: usize,
    },
    /// This model cannot take the request now (not served, overloaded): try the next one.
    #[error("model unavailable: {0}")]
    Unavailable(String),
    #[error("generation failed: {0}")]
    Failed(String),
}

pub trait Generator: Send + Sync {
    fn generate(&self, request: &GenerationRequest) -> Result<Generation, GenerationError>;
}
