//! The middleware every request passes: request id, shutdown (503), authentication (401),
//! the per-key concurrency limit (429), request counting, and the one log line per request.
//!
//! The log line and the release of the concurrency slot happen when the response body is
//! dropped, so a streamed response is timed to its last byte and holds its slot until then, and
//! a client that disconnects frees it at once. Handlers add the model and token counts to the
//! `RequestRecord` they find in the request's extensions. Prompt text is never logged.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::auth::Caller;
use super::error::ApiError;
use super::json::BodyLimit;
use super::state::AppState;

/// What a handler learned about its request, for the log line and the metrics.
#[derive(Debug, Default, Clone)]
pub struct RecordFields {
    pub model: Option<String>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
    pub finish: Option<&'static str>,
}

/// Shared between the guard and the handler (which may fill it in from a streaming task).
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub request_id: Arc<str>,
    fields: Arc<Mutex<RecordFields>>,
}

impl RequestRecord {
    pub fn update(&self, f: impl FnOnce(&mut RecordFields)) {
        if let Ok(mut fields) = self.fields.lock() {
            f(&mut fields);
        }
    }

    fn snapshot(&self) -> RecordFields {
        self.fields.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Per-caller semaphores for the concurrency limit.
#[derive(Debug, Default)]
pub struct ConcurrencyLimiter {
    slots: Mutex<HashMap<Caller, Arc<Semaphore>>>,
}

impl ConcurrencyLimiter {
    fn try_acquire(&self, caller: Caller, limit: usize) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut slots = self.slots.lock().ok()?;
            slots
                .entry(caller)
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

fn new_request_id() -> String {
    format!("req-{:016x}", rand::random::<u64>())
}

/// Generation and model routes are the API proper; health, readiness, metrics and the
/// OpenAPI document stay open so that probes and scrapers need no key.
fn is_protected(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/admin/")
}

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let inner = &state.inner;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().clone();
    let record = RequestRecord {
        request_id: new_request_id().into(),
        fields: Default::default(),
    };
    let protected = is_protected(req.uri().path());
    let mut permit = None;
    let refused = if protected && inner.lifecycle.is_shutting_down() {
        Some(ApiError::ShuttingDown)
    } else if protected {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match inner.keys.check(auth) {
            Err(why) => Some(ApiError::Unauthorized(why)),
            Ok(caller) if inner.limits.max_concurrent_per_key > 0 => {
                permit = inner
                    .limiter
                    .try_acquire(caller, inner.limits.max_concurrent_per_key);
                permit.is_none().then(|| ApiError::RateLimited {
                    message: format!(
                        "too many concurrent requests for this API key (the limit is {}); retry when one finishes",
                        inner.limits.max_concurrent_per_key
                    ),
                    retry_after_secs: 1,
                })
            }
            Ok(_) => None,
        }
    } else {
        None
    };
    let response = match refused {
        Some(e) => e.into_response(),
        None => {
            req.extensions_mut()
                .insert(BodyLimit(inner.limits.max_body_bytes));
            req.extensions_mut().insert(record.clone());
            next.run(req).await
        }
    };
    let status = response.status().as_u16();
    inner.metrics.count_request(&route, status);
    let (mut parts, body) = response.into_parts();
    if let Ok(v) = HeaderValue::from_str(&record.request_id) {
        parts.headers.insert("x-request-id", v);
    }
    let done = Finished {
        state: state.clone(),
        record,
        method: method.to_string(),
        route,
        status,
        start,
        _permit: permit,
    };
    Response::from_parts(
        parts,
        Body::new(GuardedBody {
            inner: body,
            _done: done,
        }),
    )
}

/// Logs the request and frees its slot when dropped with the response body.
struct Finished {
    state: AppState,
    record: RequestRecord,
    method: String,
    route: String,
    status: u16,
    start: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let f = self.record.snapshot();
        if let Some(model) = &f.model {
            self.state.inner.metrics.observe_e2e(model, elapsed);
        }
        tracing::info!(
            target: "enclave::request",
            request_id = %self.record.request_id,
            method = %self.method,
            route = %self.route,
            status = self.status,
            model = f.model.as_deref().unwrap_or("-"),
            prompt_tokens = f.prompt_tokens,
            completion_tokens = f.completion_tokens,
            cached_tokens = f.cached_tokens,
            finish = f.finish.unwrap_or("-"),
            latency_ms = elapsed.as_secs_f64() * 1e3,
            "request"
        );
    }
}

struct GuardedBody {
    inner: Body,
    // Held for its Drop: the log line and the slot release.
    _done: Finished,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
