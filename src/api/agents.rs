//! The customer side of support agents: list them, start a conversation, send a message (an
//! SSE stream of text deltas, citations and handoff events, or one JSON body), read the
//! transcript, rate it, and read an agent's analytics.
//!
//! Every route runs the agent on the blocking pool: a turn embeds, searches, queries SQLite
//! and reads the engine to the end. Depends on `agent` through `AgentService` only.

use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::{parse, ApiJson};
use super::kb_shared::{blocking, query};
use super::state::AppState;
use crate::agent::TurnReport;
use axum::body::Bytes;

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    let data: Vec<Value> = agents
        .agents()
        .iter()
        .map(|rt| {
            let d = &rt.def;
            json!({
                "id": d.name(),
                "object": "agent",
                "display_name": d.display_name,
                "greeting": d.greeting,
                "languages": d.languages.get_ref(),
                "intents": d.intents.len(),
                "triage_intents": d.triage.len(),
                "escalation_topics": d.escalations.iter().map(|e| e.topic.get_ref()).collect::<Vec<_>>(),
                "intent_matching": rt.intents.method(),
                "retrieval": rt.retriever.as_ref().map(|r| if rt.full_context.is_some() { "full_context" } else { r.method() }),
            })
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub contact_id: Option<String>,
    pub metadata: Option<serde_json::Map<String, Value>>,
}

pub async fn start(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    // The body is optional: a conversation needs nothing to start.
    let req: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        parse(&body)?
    };
    blocking(move || {
        let metadata = Value::Object(req.metadata.unwrap_or_default());
        let (conv, messages) = agents.start(&agent, req.contact_id.as_deref(), &metadata)?;
        let history = match &conv.contact_id {
            Some(c) => agents
                .store
                .contact_history(&agent, c, conv.created_at, 10)
                .map_err(crate::agent::AgentError::from)?
                .into_iter()
                .map(|h| {
                    json!({"id": h.id, "created_at": h.created_at, "status": h.status,
                           "primary_intent": h.primary_intent, "handoff_reason": h.handoff_reason})
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Json(json!({
            "id": conv.id,
            "object": "agent.conversation",
            "agent": conv.agent,
            "contact_id": conv.contact_id,
            "status": conv.status,
            "created_at": conv.created_at,
            "messages": messages,
            "contact_history": history,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    pub content: String,
    /// SSE unless false.
    pub stream: Option<bool>,
}

pub async fn message(
    State(state): State<AppState>,
    Path((agent, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<Response, ApiError> {
    let agents = state.agents()?;
    crate::agent::AgentService::check_message(&req.content)?;
    let content = req.content;
    let report = blocking(move || Ok(agents.post_message(&agent, &id, &content)?)).await?;
    if req.stream == Some(false) {
        return Ok(Json(report_json(&report)).into_response());
    }
    Ok(Sse::new(stream::iter(
        events(&report).into_iter().map(Ok::<_, Infallible>),
    ))
    .into_response())
}

fn report_json(r: &TurnReport) -> Value {
    json!({
        "object": "agent.turn",
        "conversation_id": r.conversation_id,
        "status": r.status,
        "messages": r.messages,
        "handoff": r.handoff.as_ref().map(handoff_event),
        "decisions": r.decisions,
        "intent": r.intent,
    })
}

fn handoff_event(h: &crate::agent::store::HandoffRecord) -> Value {
    json!({
        "id": h.id,
        "queue": h.queue,
        "reason": h.reason,
        "wait_minutes": h.wait_minutes,
        "summary": h.packet["summary"],
    })
}

/// Words, each with the space before it, so the deltas concatenate to the text exactly.
fn deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_whitespace() && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The turn as SSE events: per message, `message.delta`s, then `message.citations` when it
/// cites, then `message.completed`; a `handoff` event when the turn handed off; `done` last.
fn events(r: &TurnReport) -> Vec<Event> {
    let ev = |name: &str, data: Value| Event::default().event(name).data(data.to_string());
    let mut out = Vec::new();
    for m in &r.messages {
        for d in deltas(&m.text) {
            out.push(ev(
                "message.delta",
                json!({ "message_id": m.id, "kind": m.kind, "text": d }),
            ));
        }
        if !m.citations.is_empty() {
            out.push(ev(
                "message.citations",
                json!({ "message_id": m.id, "citations": m.citations }),
            ));
        }
        out.push(ev("message.completed", json!(m)));
    }
    if let Some(h) = &r.handoff {
        out.push(ev("handoff", handoff_event(h)));
    }
    out.push(ev(
        "done",
        json!({ "conversation_id": r.conversation_id, "status": r.status, "intent": r.intent }),
    ));
    out
}

pub async fn transcript(
    State(state): State<AppState>,
    Path((agent, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || {
        let t = agents.transcript(&agent, &id)?;
        let mut v = json!(t);
        v["object"] = json!("agent.conversation");
        Ok(Json(v))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsatRequest {
    pub score: i64,
    pub comment: Option<String>,
    /// The customer's own verdict on whether the problem is solved.
    pub resolved: Option<bool>,
}

pub async fn csat(
    State(state): State<AppState>,
    Path((agent, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<CsatRequest>,
) -> Result<Json<Value>, ApiError> {
    let agents = state.agents()?;
    blocking(move || {
        agents.rate(&agent, &id, req.score, req.comment.as_deref(), req.resolved)?;
        Ok(Json(
            json!({ "conversation_id": id, "score": req.score, "recorded": true }),
        ))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// Unix seconds or RFC 3339; default: the beginning.
    pub from: Option<String>,
    /// Unix seconds or RFC 3339; default: now.
    pub to: Option<String>,
}

fn instant_ms(v: &str, param: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(ApiError::invalid(
        format!("`{v}` is not a time; give Unix seconds, a date (2026-01-31) or RFC 3339"),
        param,
    ))
}

pub async fn analytics(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let agents = state.agents()?;
    let from = q
        .from
        .as_deref()
        .map(|v| instant_ms(v, "from"))
        .transpose()?
        .unwrap_or(0);
    let to = q.to.as_deref().map(|v| instant_ms(v, "to")).transpose()?;
    blocking(move || {
        let to = to.unwrap_or_else(|| agents.now() + 1);
        let a = agents.analytics(&agent, from, to)?;
        let mut v = json!(a);
        v["object"] = json!("agent.analytics");
        Ok(Json(v))
    })
    .await
}
