//! Wiring: the server's engines as the agents' [`Generator`]. A request renders the model's
//! own chat template, runs greedily (an agent's answer must be reproducible) with the chosen
//! tokens' log-probabilities, and is read to the end before the agent sees it.
//!
//! Lives outside `agent` so that the agent layer depends on the `Generator` trait alone, and
//! outside `api` so that nothing here depends on the HTTP edge.

use std::sync::Arc;

use serde_json::json;

use crate::agent::{Generation, GenerationError, GenerationRequest, Generator};
use crate::engine::{EngineError, EngineHandle, GenerateRequest, SamplingParams};
use crate::text_stream::{TextEvent, TextStream};
use crate::tokenizer::{ChatInput, Tokenizer};

/// One chat model, under every name it answers to.
pub struct EngineModel {
    pub names: Vec<String>,
    pub handle: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
}

pub struct EngineGenerator {
    models: Vec<EngineModel>,
}

impl EngineGenerator {
    /// The first model is the default.
    pub fn new(models: Vec<EngineModel>) -> Self {
        Self { models }
    }

    pub fn model_names(&self) -> Vec<String> {
        self.models.iter().flat_map(|m| m.names.clone()).collect()
    }

    fn pick(&self, name: Option<&str>) -> Result<&EngineModel, GenerationError> {
        match name {
            Some(n) => self
                .models
                .iter()
                .find(|m| m.names.iter().any(|x| x == n))
                .ok_or_else(|| GenerationError::Unavailable(format!("no model `{n}` is served"))),
            None => self.models.first().ok_or_else(|| {
                GenerationError::Unavailable("no chat model is served; start with --model".into())
            }),
        }
    }
}

fn engine_error(e: EngineError) -> GenerationError {
    match e {
        EngineError::ContextExceeded {
            prompt_len,
            max_tokens,
            max_context,
        } => GenerationError::TooLong {
            prompt_tokens: prompt_len,
            max_tokens,
            context: max_context,
        },
        EngineError::PromptTooLong {
            prompt_len,
            max_context,
        } => GenerationError::TooLong {
            prompt_tokens: prompt_len,
            max_tokens: 0,
            context: max_context,
        },
        e @ (EngineError::Overloaded { .. } | EngineError::EngineStopped) => {
            GenerationError::Unavailable(e.to_string())
        }
        other => GenerationError::Failed(other.to_string()),
    }
}

impl Generator for EngineGenerator {
    fn generate(&self, req: &GenerationRequest) -> Result<Generation, GenerationError> {
        let m = self.pick(req.model.as_deref())?;
        let input = ChatInput {
            messages: req
                .messages
                .iter()
                .map(|p| json!({ "role": p.role, "content": p.content }))
                .collect(),
            add_generation_prompt: true,
            ..ChatInput::default()
        };
        let prompt = m
            .tokenizer
            .encode_chat(&input)
            .map_err(|e| GenerationError::Failed(e.to_string()))?;
        let context = m.handle.limits().max_context;
        if prompt.len() + req.max_tokens > context {
            return Err(GenerationError::TooLong {
                prompt_tokens: prompt.len(),
                max_tokens: req.max_tokens,
                context,
            });
        }
        let sampling = SamplingParams {
            temperature: 0.0,
            logprobs: Some(0),
            ..SamplingParams::default()
        };
        let mut request = GenerateRequest::new(prompt, sampling);
        request.max_tokens = Some(req.max_tokens);
        let tokens = m.handle.generate(request).map_err(engine_error)?;
        let mut stream = TextStream::new(tokens, &m.tokenizer, 1, &[], true);
        let (mut text, mut logprob_sum, mut n, mut cached) = (String::new(), 0.0f64, 0usize, 0);
        while let Some(event) = stream.blocking_next() {
            match event.map_err(|e| GenerationError::Failed(e.to_string()))? {
                TextEvent::Admitted { num_cached_tokens } => cached = num_cached_tokens,
                TextEvent::Delta { text: t, token, .. } => {
                    text.push_str(&t);
                    logprob_sum += token.logprob.unwrap_or(0.0) as f64;
                    n += 1;
                }
                TextEvent::Finished { text: t, .. } => text.push_str(&t),
                TextEvent::Failed(e) => return Err(GenerationError::Failed(e)),
            }
        }
        let likelihood = if n == 0 {
            0.0
        } else {
            (logprob_sum / n as f64).exp() as f32
        };
        Ok(Generation {
            text,
            model: m.names.first().cloned().unwrap_or_default(),
            likelihood,
            num_tokens: n,
            num_cached_tokens: cached,
        })
    }
}
