//! `POST /v1/embeddings`: sentence embeddings from the locally loaded embedding models, in
//! OpenAI's shape (float arrays or base64 of little-endian f32).
//!
//! Texts longer than the model's input are truncated, as sentence-transformers does; token
//! arrays are used as given and must fit. The forward runs on a blocking thread so the async
//! runtime keeps serving other requests.

use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::guard::RequestRecord;
use super::json::ApiJson;
use super::state::AppState;
use crate::embedding::{EmbeddingError, EmbeddingInput};

/// OpenAI's limit on inputs per request.
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InputField {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted for compatibility; not used.
    #[serde(default)]
    #[allow(dead_code)]
    pub user: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct EmbeddingObject {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

fn inputs(value: Value) -> Result<Vec<EmbeddingInput>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "`input` must be a string, an array of strings, an array of token ids or an array \
             of token-id arrays",
            "input",
        )
    };
    let field: InputField = serde_json::from_value(value).map_err(|_| bad())?;
    let inputs: Vec<EmbeddingInput> = match field {
        InputField::One(s) => vec![EmbeddingInput::Text(s)],
        InputField::Many(v) => v.into_iter().map(EmbeddingInput::Text).collect(),
        InputField::Tokens(t) => vec![EmbeddingInput::Tokens(t)],
        InputField::ManyTokens(v) => v.into_iter().map(EmbeddingInput::Tokens).collect(),
    };
    if inputs.is_empty() {
        return Err(ApiError::invalid("`input` must not be empty", "input"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid(
            format!(
                "`input` has {} items; at most {MAX_INPUTS} are allowed",
                inputs.len()
            ),
            "input",
        ));
    }
    for (i, input) in inputs.iter().enumerate() {
        let empty = match input {
            EmbeddingInput::Text(s) => s.is_empty(),
            EmbeddingInput::Tokens(t) => t.is_empty(),
        };
        if empty {
            return Err(ApiError::invalid(
                format!("input {i} is empty; every input needs at least one character or token"),
                "input",
            ));
        }
    }
    Ok(inputs)
}

fn encode(v: Vec<f32>, base64: bool) -> EmbeddingVector {
    if base64 {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        EmbeddingVector::Float(v)
    }
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    ApiJson(req): ApiJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingResponse>, ApiError> {
    let model = state.embedding_model(&req.model)?;
    record.update(|r| r.model = Some(req.model.clone()));
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("`encoding_format` `{other}` is not known; use float or base64"),
                "encoding_format",
            ))
        }
    };
    if let Some(d) = req.dimensions {
        if d != model.dimension() {
            return Err(ApiError::unsupported(
                "dimensions",
                &format!(
                    "`{}` gives {}-dimensional vectors and cannot shorten them",
                    req.model,
                    model.dimension()
                ),
            ));
        }
    }
    let inputs = inputs(req.input)?;
    let worker = model.clone();
    let out = tokio::task::spawn_blocking(move || worker.embed(&inputs))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            EmbeddingError::Input { .. } | EmbeddingError::Tokenize { .. } => {
                ApiError::invalid(e.to_string(), "input")
            }
            other => ApiError::Internal(other.to_string()),
        })?;
    record.update(|r| r.prompt_tokens = out.num_tokens);
    Ok(Json(EmbeddingResponse {
        object: "list",
        data: out
            .vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingObject {
                object: "embedding",
                index,
                embedding: encode(v, base64),
            })
            .collect(),
        model: req.model,
        usage: EmbeddingUsage {
            prompt_tokens: out.num_tokens,
            total_tokens: out.num_tokens,
        },
    }))
}
