//! The HTTP edge: OpenAI's wire types in and out, every route, and the middleware around them.
//!
//! Owns the translation between the wire and the domain (`GenerateRequest`, `TextEvent`) and
//! the single mapping of errors to OpenAI's error JSON (`error`). May use `engine` (through its
//! handle only), `tokenizer`, `text_stream`, `embedding` and `knowledge`; nothing in the crate
//! may depend on `api`.
//!
//! Invariant: every response, including 404, 405, 413, 429, 500 and 503, is either the route's
//! own body or an OpenAI-shaped error object.

mod agent_admin;
mod agent_chat;
mod agents;
pub mod auth;
mod chat;
mod chat_stream;
mod completions;
mod embeddings;
pub mod error;
mod files;
mod generation;
pub mod guard;
mod json;
mod kb_admin;
mod kb_shared;
pub mod metrics;
mod models;
mod openapi;
mod openapi_agents;
mod openapi_kb;
pub mod state;
mod tokenize;
mod tool_output;
mod vector_store_files;
mod vector_store_search;
mod vector_stores;
pub mod wire;

use std::any::Any;

use axum::extract::{DefaultBodyLimit, OriginalUri, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;
pub use state::{
    AppState, HttpLimits, Lifecycle, ModelRegistry, SamplingDefaults, ServedEmbedder, ServedModel,
};

/// Who may call from a browser. Off (no CORS headers) unless origins are given.
#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    /// Exact origins (`https://support.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
}

pub fn router(state: AppState, cors: &CorsConfig) -> Router {
    layered(routes(), state, cors)
}

fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*id}", get(models::get_model))
        .route("/v1/tokenize", post(tokenize::tokenize))
        .route("/v1/detokenize", post(tokenize::detokenize))
        .merge(knowledge_routes())
        .merge(agent_routes())
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::metrics_route))
        .route("/openapi.json", get(openapi::openapi_route))
}

/// Support agents: conversations for customers, definitions and the handoff queue for admins.
fn agent_routes() -> Router<AppState> {
    const CONV: &str = "/v1/agents/{agent}/conversations/{id}";
    Router::new()
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/{agent}/conversations", post(agents::start))
        .route(CONV, get(agents::transcript))
        .route(&format!("{CONV}/messages"), post(agents::message))
        .route(&format!("{CONV}/csat"), post(agents::csat))
        .route("/v1/agents/{agent}/analytics", get(agents::analytics))
        .route("/admin/agents", get(agent_admin::list_definitions))
        .route(
            "/admin/agents/{name}",
            get(agent_admin::get_definition)
                .put(agent_admin::put_definition)
                .delete(agent_admin::delete_definition),
        )
        .route(
            "/admin/agents/{name}/examples",
            post(agent_admin::add_examples),
        )
        .route("/admin/handoffs", get(agent_admin::list_handoffs))
        .route("/admin/handoffs/{id}", get(agent_admin::get_handoff))
        .route("/admin/handoffs/{id}/claim", post(agent_admin::claim))
        .route("/admin/handoffs/{id}/reply", post(agent_admin::reply))
        .route("/admin/handoffs/{id}/resolve", post(agent_admin::resolve))
}

/// Files, vector stores (OpenAI's shapes) and the knowledge base's admin routes.
fn knowledge_routes() -> Router<AppState> {
    use self::vector_store_files as vsf;
    const STORE: &str = "/v1/vector_stores/{vector_store_id}";
    const COLLECTION: &str = "/admin/kb/collections/{name}";
    Router::new()
        .route("/v1/files", post(files::upload).get(files::list))
        .route(
            "/v1/files/{file_id}",
            get(files::retrieve).delete(files::delete),
        )
        .route("/v1/files/{file_id}/content", get(files::content))
        .route(
            "/v1/vector_stores",
            post(vector_stores::create).get(vector_stores::list),
        )
        .route(
            STORE,
            get(vector_stores::retrieve)
                .post(vector_stores::modify)
                .delete(vector_stores::delete),
        )
        .route(
            &format!("{STORE}/search"),
            post(vector_store_search::search),
        )
        .route(&format!("{STORE}/files"), post(vsf::attach).get(vsf::list))
        .route(
            &format!("{STORE}/files/{{file_id}}"),
            get(vsf::retrieve).post(vsf::update).delete(vsf::detach),
        )
        .route(
            &format!("{STORE}/files/{{file_id}}/content"),
            get(vsf::content),
        )
        .route(&format!("{STORE}/file_batches"), post(vsf::create_batch))
        .route(
            &format!("{STORE}/file_batches/{{batch_id}}"),
            get(vsf::retrieve_batch),
        )
        .route(
            &format!("{STORE}/file_batches/{{batch_id}}/cancel"),
            post(vsf::cancel_batch),
        )
        .route(
            &format!("{STORE}/file_batches/{{batch_id}}/files"),
            get(vsf::list_batch_files),
        )
        .route(
            "/admin/kb/collections",
            get(kb_admin::list_collections).post(kb_admin::create_collection),
        )
        .route(
            COLLECTION,
            get(kb_admin::get_collection).delete(kb_admin::delete_collection),
        )
        .route(
            &format!("{COLLECTION}/documents"),
            get(kb_admin::list_documents).post(kb_admin::upload_document),
        )
        .route(
            &format!("{COLLECTION}/documents/{{id}}"),
            delete(kb_admin::delete_document),
        )
        .route(&format!("{COLLECTION}/search"), post(kb_admin::search))
        .route(&format!("{COLLECTION}/rebuild"), post(kb_admin::rebuild))
}

/// `routes` inside the middleware every request passes (guard, body limit, panic catching,
/// CORS), with the JSON fallbacks for unknown routes and methods.
fn layered(routes: Router<AppState>, state: AppState, cors: &CorsConfig) -> Router {
    let limit = state.inner.limits.max_body_bytes;
    let router = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state);
    match cors_layer(cors) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn cors_layer(cors: &CorsConfig) -> Option<CorsLayer> {
    if cors.allowed_origins.is_empty() {
        return None;
    }
    let origins = if cors.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers(tower_http::cors::Any),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.inner.lifecycle.is_shutting_down() {
        return ApiError::ShuttingDown.into_response();
    }
    if !state.inner.lifecycle.is_ready() {
        return ApiError::NotReady.into_response();
    }
    let models: Vec<&str> = match state.registry() {
        Ok(r) => r.list.iter().map(|m| m.id.as_str()).collect(),
        Err(e) => return e.into_response(),
    };
    Json(json!({"status": "ready", "models": models})).into_response()
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!(
        "no route {}; the API lives under /v1 (see /openapi.json)",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// A handler that panicked: a 500 with an error body and a log line, never a dropped
/// connection. The panic message is logged, not sent: it may quote internal state.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::Internal("the request handler failed unexpectedly; the server logged it".into())
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_with_an_error_body() {
        let state = AppState::new(
            auth::ApiKeys::default(),
            HttpLimits::default(),
            Arc::new(Lifecycle::default()),
        );
        let routes = Router::new().route(
            "/v1/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                "unreachable"
            }),
        );
        let app = layered(routes, state, &CorsConfig::default());
        let response = app
            .oneshot(
                Request::get("/v1/boom")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("a response, not a dropped connection");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body["error"]["type"], "server_error");
        assert!(!body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("boom"));
    }

    #[tokio::test]
    async fn cors_is_off_by_default_and_on_for_listed_origins() {
        let state = || {
            AppState::new(
                auth::ApiKeys::default(),
                HttpLimits::default(),
                Arc::new(Lifecycle::default()),
            )
        };
        let preflight = || {
            Request::builder()
                .method("OPTIONS")
                .uri("/v1/models")
                .header("origin", "https://support.example.com")
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .expect("request")
        };
        let off = router(state(), &CorsConfig::default())
            .oneshot(preflight())
            .await
            .expect("response");
        assert!(off.headers().get("access-control-allow-origin").is_none());
        let cors = CorsConfig {
            allowed_origins: vec!["https://support.example.com".into()],
        };
        let on = router(state(), &cors)
            .oneshot(preflight())
            .await
            .expect("response");
        assert_eq!(
            on.headers()["access-control-allow-origin"],
            "https://support.example.com"
        );
    }
}
