//! `ApiJson<T>`: the request-body extractor. Unlike axum's own, every failure (unreadable
//! JSON, a missing field, a wrong type, an unknown field, a body over the size limit) becomes
//! an OpenAI-shaped `ApiError` naming the parameter at fault, so SDKs can parse it.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(e, limit))?;
        parse(&bytes).map(ApiJson)
    }
}

/// The configured body limit, put in the request's extensions so the error can quote it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub(super) fn body_error(e: BytesRejection, limit: Option<usize>) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge {
            limit: limit.unwrap_or_default(),
        };
    }
    ApiError::InvalidRequest {
        message: format!("could not read the request body: {e}"),
        param: None,
        code: None,
    }
}

/// Deserializes `bytes`, naming the failing field by its path (`messages[1].content`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::InvalidRequest {
                message: format!("the request body is not valid JSON: {inner}"),
                param: None,
                code: None,
            };
        }
        let message = inner.to_string();
        // A missing field is reported at the enclosing object, with its name in the message
        // (an unknown one already has its own path).
        let named = message
            .split_once("missing field `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(field, _)| field.to_string());
        let param = match (named, path.as_str()) {
            (Some(field), ".") => Some(field),
            (Some(field), p) => Some(format!("{p}.{field}")),
            (None, ".") => None,
            (None, p) => Some(p.to_string()),
        };
        let message = match &param {
            Some(p) => format!("invalid `{p}`: {message}"),
            None => format!("invalid request body: {message}"),
        };
        ApiError::InvalidRequest {
            message,
            param,
            code: None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        temperature: Option<f32>,
        messages: Vec<Msg>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    fn param_of(body: &str) -> Option<String> {
        match parse::<Req>(body.as_bytes()) {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_parameter_at_fault() {
        assert_eq!(param_of(r#"{"messages": []}"#).as_deref(), Some("model"));
        assert_eq!(
            param_of(r#"{"model": "m", "temperature": "hot", "messages": []}"#).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param_of(r#"{"model": "m", "messages": [{"role": 3}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of(r#"{"model": "m", "messages": [], "suffix": "x"}"#).as_deref(),
            Some("suffix")
        );
        assert_eq!(param_of("{not json"), None);
    }
}
