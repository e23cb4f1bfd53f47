//! What the chat and text completion endpoints share: turning OpenAI sampling fields into
//! `SamplingParams` (request value, else the model's generation_config.json, else OpenAI's
//! default), running a request as a stream of `TextEvent`s owned by the response, and the ids,
//! clocks and logprob rendering both endpoints use.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;

use super::error::ApiError;
use super::state::ServedModel;
use crate::engine::{FinishReason, SamplingParams, TokenStream};
use crate::ids::TokenId;
use crate::text_stream::{TextEvent, TextStream};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// OpenAI's upper limit; hotter than this is noise for any model.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// The sampling fields common to both endpoints, as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub seed: Option<i64>,
    pub logprobs: Option<usize>,
}

impl SamplingFields {
    pub fn resolve(self, model: &ServedModel) -> Result<SamplingParams, ApiError> {
        let d = &model.defaults;
        let top_k = match self.top_k {
            None => d.top_k,
            // -1 is the common spelling of "off" among OpenAI-compatible servers.
            Some(-1) => None,
            Some(k) if k >= 1 => Some(k as usize),
            Some(k) => {
                return Err(ApiError::invalid(
                    format!("top_k must be at least 1, or -1 to turn it off; got {k}"),
                    "top_k",
                ))
            }
        };
        if let Some(t) = self
            .temperature
            .filter(|t| !(0.0..=MAX_TEMPERATURE).contains(t))
        {
            return Err(ApiError::invalid(
                format!("temperature must be between 0 and {MAX_TEMPERATURE}, got {t}"),
                "temperature",
            ));
        }
        let mut logit_bias = Vec::new();
        for (key, bias) in self.logit_bias.unwrap_or_default() {
            let id: u32 = key.parse().map_err(|_| {
                ApiError::invalid(
                    format!("logit_bias keys must be token ids, got `{key}`"),
                    "logit_bias",
                )
            })?;
            logit_bias.push((TokenId(id), bias));
        }
        let params = SamplingParams {
            temperature: self.temperature.or(d.temperature).unwrap_or(1.0),
            top_p: self.top_p.or(d.top_p).unwrap_or(1.0),
            top_k,
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self
                .repetition_penalty
                .or(d.repetition_penalty)
                .unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            logit_bias,
            seed: self.seed.map(|s| s as u64),
            logprobs: self.logprobs,
        };
        params
            .validate(model.handle.limits().vocab_size)
            .map_err(ApiError::from)?;
        Ok(params)
    }
}

pub type TextEvents = Pin<Box<dyn Stream<Item = Result<TextEvent, TokenizerError>> + Send>>;

/// The request's text events, owning everything they borrow, so a response body can carry
/// them. Dropping the stream cancels the request in the engine.
pub fn text_events(
    model: Arc<ServedModel>,
    tokens: TokenStream,
    n: usize,
    stop: Vec<String>,
    skip_special_tokens: bool,
) -> TextEvents {
    Box::pin(async_stream::stream! {
        let tokenizer = model.tokenizer.clone();
        let mut text = TextStream::new(tokens, &tokenizer, n, &stop, skip_special_tokens);
        while let Some(event) = text.next().await {
            yield event;
        }
    })
}

pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// `prefix` and 24 random hex digits, the shape of OpenAI's ids.
pub fn new_id(prefix: &str) -> String {
    let a: u64 = rand::random();
    let b: u32 = rand::random();
    format!("{prefix}{a:016x}{b:08x}")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One token as text for logprobs. A token that is only part of a character shows as the
/// replacement character, as OpenAI shows it; `bytes` then says what it really was.
pub fn token_text(tokenizer: &Tokenizer, token: TokenId) -> String {
    tokenizer.decode(&[token], false).unwrap_or_default()
}

/// Engine and tokenizer failures in the middle of a request.
pub fn stream_failure(message: String) -> ApiError {
    ApiError::Internal(format!("generation failed: {message}"))
}

/// The end of an SSE response: the error that cut it short (its headers are gone, so it is
/// sent as an event), or else the usage chunk if the client asked for one; then `[DONE]`.
pub fn closing_events(
    failed: Option<ApiError>,
    usage: Option<axum::response::sse::Event>,
) -> Vec<axum::response::sse::Event> {
    use axum::response::sse::Event;
    let mut events: Vec<Event> = match failed {
        Some(e) => vec![Event::default().data(e.body().to_string())],
        None => usage.into_iter().collect(),
    };
    events.push(Event::default().data("[DONE]"));
    events
}
