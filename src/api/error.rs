//! `ApiError`: every way an HTTP request can fail, and the one place where a failure becomes a
//! status code and OpenAI's error body `{"error": {"message", "type", "param", "code"}}`.
//!
//! Other modules' errors (engine, tokenizer) are translated here and nowhere else, so the same
//! fault always gets the same status. Must not depend on handlers or on server wiring.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::knowledge::KnowledgeError;
use crate::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, has the wrong type or an out-of-range value.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    #[error("the model `{0}` does not exist; GET /v1/models lists the models served here")]
    ModelNotFound(String),
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the server is shutting down; retry on another instance or later")]
    ShuttingDown,
    #[error("the server is not ready yet: models are still loading")]
    NotReady,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// A field the server understands but does not support.
    pub fn unsupported(param: &str, why: &str) -> Self {
        Self::InvalidRequest {
            message: format!("`{param}` is not supported: {why}"),
            param: Some(param.to_string()),
            code: Some("unsupported_parameter"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest { .. } | Self::ContextLengthExceeded(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ShuttingDown | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. }
            | Self::ContextLengthExceeded(_)
            | Self::ModelNotFound(_)
            | Self::NotFound(_)
            | Self::Conflict(_)
            | Self::PayloadTooLarge { .. }
            | Self::MethodNotAllowed { .. } => "invalid_request_error",
            Self::Unauthorized(_) => "authentication_error",
            Self::RateLimited { .. } => "rate_limit_error",
            Self::ShuttingDown | Self::NotReady => "service_unavailable",
            Self::Internal(_) => "server_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { code, .. } => *code,
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::ContextLengthExceeded(_) => Some("context_length_exceeded"),
            Self::Unauthorized(_) => Some("invalid_api_key"),
            Self::RateLimited { .. } => Some("rate_limit_exceeded"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::NotFound(_) => Some("not_found"),
            Self::Conflict(_) => Some("conflict"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::ShuttingDown | Self::NotReady | Self::Internal(_) => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) => Some("model"),
            Self::ContextLengthExceeded(_) => Some("messages"),
            _ => None,
        }
    }

    /// The error object itself, also sent inside a stream that fails after its headers.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.to_string(),
            "type": self.kind(),
            "param": self.param(),
            "code": self.code(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Internal(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Self::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

/// Sampling messages start with the name of the parameter at fault.
fn leading_param(message: &str) -> Option<String> {
    let word: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (word.contains('_') || matches!(word.as_str(), "temperature" | "n" | "seed" | "logprobs"))
        .then_some(word)
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::PromptTooLong { .. }
            | EngineError::ContextExceeded { .. }
            | EngineError::PromptExceedsKvCache { .. } => {
                Self::ContextLengthExceeded(e.to_string())
            }
            EngineError::EmptyPrompt => Self::invalid(e.to_string(), "messages"),
            EngineError::InvalidRequest(m) | EngineError::Sampling(m) => Self::InvalidRequest {
                param: leading_param(&m),
                message: m,
                code: None,
            },
            EngineError::Overloaded { .. } => Self::RateLimited {
                message: e.to_string(),
                retry_after_secs: 1,
            },
            EngineError::EngineStopped => Self::ShuttingDown,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<KnowledgeError> for ApiError {
    fn from(e: KnowledgeError) -> Self {
        use KnowledgeError as K;
        match &e {
            K::NoSuchCollection(_) | K::NoSuchDocument(_) | K::NoSuchFile(_) => {
                Self::NotFound(e.to_string())
            }
            K::CollectionExists(_) => Self::Conflict(e.to_string()),
            K::InvalidName { .. } => Self::invalid(e.to_string(), "name"),
            K::InvalidArgument { field, .. } => Self::invalid(e.to_string(), field.clone()),
            K::EmbedderMissing { .. } | K::DimensionMismatch { .. } => Self::InvalidRequest {
                message: e.to_string(),
                param: None,
                code: Some("embedding_model_unavailable"),
            },
            K::Format(_) => Self::InvalidRequest {
                message: e.to_string(),
                param: Some("file".into()),
                code: Some("unsupported_file"),
            },
            K::Locked { .. } => Self::Conflict(e.to_string()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<TokenizerError> for ApiError {
    fn from(e: TokenizerError) -> Self {
        // Chat templates raise their own errors on input they reject (a system turn the model
        // does not take, say): that is the caller's input, not our fault.
        match e {
            TokenizerError::TemplateRender { .. }
            | TokenizerError::TemplateRaised { .. }
            | TokenizerError::InvalidChatInput { .. } => Self::invalid(e.to_string(), "messages"),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::agent::AgentError> for ApiError {
    fn from(e: crate::agent::AgentError) -> Self {
        use crate::agent::store::StoreError as S;
        use crate::agent::AgentError as A;
        match &e {
            A::NoAgent(_) | A::WrongAgent { .. } => {
                Self::NotFound(format!("{e}; GET /v1/agents lists the agents served here"))
            }
            A::Store(S::NoConversation(_) | S::NoHandoff(_)) => Self::NotFound(e.to_string()),
            A::Store(S::Conflict(_)) => Self::Conflict(e.to_string()),
            A::InvalidMessage(_) => Self::invalid(e.to_string(), "content"),
            A::InvalidArgument(_) => Self::InvalidRequest {
                message: e.to_string(),
                param: None,
                code: None,
            },
            A::Definition(d) => Self::InvalidRequest {
                message: e.to_string(),
                param: Some(d.key.clone()),
                code: Some("invalid_agent_definition"),
            },
            _ => Self::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_errors_name_their_parameter() {
        let e: ApiError =
            EngineError::Sampling("top_p must be in (0, 1] (1 turns it off), got 2".into()).into();
        assert_eq!(e.param(), Some("top_p"));
        let e: ApiError = EngineError::Sampling("temperature must be ...".into()).into();
        assert_eq!(e.param(), Some("temperature"));
        let e: ApiError = EngineError::InvalidRequest("token id 9 is outside".into()).into();
        assert_eq!(e.param(), None);
    }

    #[test]
    fn overload_is_429_with_retry_after() {
        let r = ApiError::from(EngineError::Overloaded { queue_len: 3 }).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn context_errors_carry_the_numbers_and_the_code() {
        let e = ApiError::from(EngineError::PromptTooLong {
            prompt_len: 5000,
            max_context: 4096,
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["error"]["code"], "context_length_exceeded");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("5000") && message.contains("4096"),
            "{message}"
        );
    }
}
