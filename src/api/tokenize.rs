//! `POST /v1/tokenize` and `POST /v1/detokenize`: the model's own tokenizer over HTTP, so
//! clients can count tokens against the context window before they send a request.

use axum::extract::State;
use axum::Json;

use super::error::ApiError;
use super::json::ApiJson;
use super::state::AppState;
use super::wire::completion::{
    DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
};
use crate::ids::TokenId;
use crate::tokenizer::ChatInput;

pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let model = state.model(&req.model)?;
    let tok = &model.tokenizer;
    let ids = match (req.prompt, req.messages) {
        (Some(text), None) => tok.encode(&text, req.add_special_tokens.unwrap_or(true))?,
        (None, Some(messages)) => {
            let messages = super::chat::template_messages(&messages)?;
            tok.encode_chat(&ChatInput {
                messages,
                tools: None,
                add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
                kwargs: Default::default(),
                now: None,
            })?
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of `prompt` (text) or `messages` (a conversation)",
                "prompt",
            ))
        }
    };
    Ok(Json(TokenizeResponse {
        count: ids.len(),
        tokens: ids.into_iter().map(|t| t.0).collect(),
        max_model_len: model.max_context(),
    }))
}

pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let model = state.model(&req.model)?;
    let vocab = model.handle.limits().vocab_size;
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid(
            format!("token id {bad} is outside the vocabulary of {vocab} tokens"),
            "tokens",
        ));
    }
    let ids: Vec<TokenId> = req.tokens.into_iter().map(TokenId).collect();
    Ok(Json(DetokenizeResponse {
        prompt: model.tokenizer.decode(&ids, false)?,
    }))
}
