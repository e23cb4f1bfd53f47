//! Admin routes for support agents: their definitions (read, write, delete; a written file is
//! checked before it is saved, and errors name the line and key), labelled examples imported
//! from transcripts, and the handoff queue humans work from (list, claim, reply, resolve).
//!
//! Behind the API-key guard like every `/admin` route. Depends on `agent` only.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::kb_shared::{blocking, query};
use super::state::AppState;
use crate::agent::registry;

pub async fn list_definitions(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    let data: Vec<Value> = agents
        .agents()
        .iter()
        .map(
            |rt| json!({ "id": rt.def.name(), "object": "agent.definition", "definition": rt.def }),
        )
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// The definition's TOML text, as written.
pub async fn get_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rt = state.agents()?.agent(&name)?;
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        rt.source.clone(),
    )
        .into_response())
}

/// Creates or replaces an agent from a TOML body.
pub async fn put_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let agents = state.agents()?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::invalid("the definition must be UTF-8 TOML text", "body"))?;
    if !crate::agent::definition::valid_name(&name) {
        return Err(ApiError::invalid(
            format!(
                "`{name}` is not a valid agent name; use lowercase letters, digits, `-` or `_`"
            ),
            "name",
        ));
    }
    blocking(move || {
        let catalog = agents.catalog();
        let created =
            registry::put_definition(&agents, &name, &text, &catalog, &agents.build_context)?;
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((
            status,
            Json(json!({ "id": name, "object": "agent.definition", "created": created })),
        )
            .into_response())
    })
    .await
}

pub async fn delete_definition(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || {
        registry::delete_definition(&agents, &name)?;
        Ok(Json(
            json!({ "id": name, "object": "agent.definition.deleted", "deleted": true }),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub intent: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamplesRequest {
    #[serde(default)]
    pub examples: Vec<Example>,
    /// A ticket export (CSV or JSONL text) whose labelled conversations give examples.
    pub tickets: Option<String>,
    /// The export's file name, whose extension says its format [default: tickets.csv].
    pub filename: Option<String>,
    /// Where they came from (a ticket export, say).
    pub source: Option<String>,
}

/// Adds labelled examples: given directly, or taken from a ticket export (each labelled
/// conversation's first customer message).
pub async fn add_examples(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ExamplesRequest>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    let rt = agents.agent(&name)?;
    let known: Vec<&str> = rt.def.intent_names().collect();
    let mut rows = Vec::new();
    for (i, e) in req.examples.iter().enumerate() {
        if !known.contains(&e.intent.as_str()) {
            return Err(ApiError::invalid(
                format!("examples[{i}]: agent `{name}` has no intent `{}`", e.intent),
                format!("examples[{i}].intent"),
            ));
        }
        let text = e.text.trim();
        if text.is_empty() || text.chars().count() > crate::agent::service::MAX_MESSAGE_CHARS {
            return Err(ApiError::invalid(
                format!(
                    "examples[{i}]: the text must be 1 to {} characters",
                    crate::agent::service::MAX_MESSAGE_CHARS
                ),
                format!("examples[{i}].text"),
            ));
        }
        rows.push((e.intent.clone(), text.to_string()));
    }
    let mut skipped_tickets = 0;
    if let Some(t) = &req.tickets {
        let filename = req.filename.as_deref().unwrap_or("tickets.csv");
        let known = rt.def.intent_names().map(str::to_string).collect();
        let (found, skipped) =
            crate::agent::import::examples_from_tickets(filename, t.as_bytes(), &known)
                .map_err(|e| ApiError::invalid(e.to_string(), "tickets"))?;
        rows.extend(found);
        skipped_tickets = skipped;
    }
    if rows.is_empty() {
        return Err(ApiError::invalid(
            "no examples: give `examples`, or `tickets` with conversations labelled by this \
             agent's intents",
            "examples",
        ));
    }
    let source = req.source.unwrap_or_else(|| "api".into());
    blocking(move || {
        let added = agents
            .store
            .add_examples(&name, &source, &rows)
            .map_err(crate::agent::AgentError::from)?;
        agents.rebuild(&name)?;
        Ok(Json(json!({
            "agent": name,
            "added": added,
            "duplicates": rows.len() - added,
            "tickets_skipped": skipped_tickets,
        })))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffQuery {
    pub queue: Option<String>,
    /// waiting, claimed or resolved.
    pub status: Option<String>,
    pub limit: Option<usize>,
}

pub async fn list_handoffs(
    State(state): State<AppState>,
    q: Result<Query<HandoffQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    if let Some(s) = q
        .status
        .as_deref()
        .filter(|s| !["waiting", "claimed", "resolved"].contains(s))
    {
        return Err(ApiError::invalid(
            format!("status `{s}` is not one of waiting, claimed, resolved"),
            "status",
        ));
    }
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::invalid(
            "`limit` must be between 1 and 500",
            "limit",
        ));
    }
    let agents = state.agents()?;
    blocking(move || {
        let data = agents
            .store
            .handoffs(q.queue.as_deref(), q.status.as_deref(), limit)
            .map_err(crate::agent::AgentError::from)?;
        Ok(Json(json!({ "object": "list", "data": data })))
    })
    .await
}

pub async fn get_handoff(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || {
        Ok(Json(json!(agents
            .store
            .handoff(&id)
            .map_err(crate::agent::AgentError::from)?)))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Who claims it.
    pub by: String,
}

pub async fn claim(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || Ok(Json(json!(agents.claim(&id, &req.by)?)))).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    pub by: String,
    pub content: String,
}

pub async fn reply(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReplyRequest>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || {
        Ok(Json(json!(agents.human_reply(
            &id,
            &req.by,
            &req.content
        )?)))
    })
    .await
}

pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || Ok(Json(json!(agents.resolve(&id)?)))).await
}
