//! `POST /v1/chat/completions` with `model: "agent:<name>"`: an existing OpenAI client talks to
//! a support agent, carrying the history itself. The agent's reply (its citations listed after
//! the text) comes back as one chat completion, or as a stream of chunks; what the agent did
//! is in the extra `agent` field.
//!
//! Depends on `agent` through `AgentService`, and on the chat wire types.

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde_json::{json, Value};

use super::error::ApiError;
use super::generation::{new_id, unix_now};
use super::kb_shared::blocking;
use super::state::AppState;
use super::wire::chat::{ChatCompletionRequest, ChatMessage, MessageContent};
use crate::agent::TurnReport;

fn text(c: &MessageContent) -> String {
    match c {
        MessageContent::Text(t) => t.clone(),
        MessageContent::Parts(p) => p
            .iter()
            .filter(|p| p.kind == "text")
            .filter_map(|p| p.text.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// The customer's last message and the `(customer, agent)` pairs before it. System and
/// developer messages are ignored: an agent's instructions are its definition, not the
/// client's.
fn split(messages: &[ChatMessage]) -> Result<(Vec<(String, String)>, String), ApiError> {
    let mut turns = Vec::new();
    let mut pending: Option<String> = None;
    let mut last_user = None;
    for m in messages {
        match m {
            ChatMessage::User { content, .. } => {
                if let Some(p) = pending.take() {
                    turns.push((p, String::new()));
                }
                pending = Some(text(content));
                last_user = pending.clone();
            }
            ChatMessage::Assistant { content, .. } => {
                let reply = content.as_ref().map(text).unwrap_or_default();
                turns.push((pending.take().unwrap_or_default(), reply));
                last_user = None;
            }
            ChatMessage::Tool { .. } => {
                return Err(ApiError::unsupported(
                    "messages",
                    "agents do not take tool messages",
                ))
            }
            ChatMessage::System { .. } | ChatMessage::Developer { .. } => {}
        }
    }
    match (last_user, pending) {
        (Some(u), Some(_)) => Ok((turns, u)),
        _ => Err(ApiError::invalid(
            "the last message must be the customer's (role `user`)",
            "messages",
        )),
    }
}

fn content_of(r: &TurnReport) -> String {
    let mut out = String::new();
    for m in &r.messages {
        out.push_str(&m.text);
        if !m.citations.is_empty() {
            out.push_str("\n\nSources:");
            for c in &m.citations {
                out.push_str(&format!("\n[{}] {} ({})", c.index, c.title, c.source));
            }
        }
    }
    out
}

fn agent_field(r: &TurnReport) -> Value {
    json!({
        "kind": r.messages.first().map(|m| m.kind.clone()),
        "citations": r.messages.iter().flat_map(|m| m.citations.clone()).collect::<Vec<_>>(),
        "handoff": r.handoff.as_ref().map(|h| json!({
            "id": h.id, "queue": h.queue, "reason": h.reason, "wait_minutes": h.wait_minutes,
            "conversation_id": h.conversation_id,
        })),
        "decisions": r.decisions,
        "intent": r.intent,
    })
}

pub async fn agent_chat(
    state: AppState,
    agent: String,
    req: ChatCompletionRequest,
) -> Result<Response, ApiError> {
    let agents = state.agents()?;
    agents.agent(&agent)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("n", "an agent gives one reply"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported(
            "tools",
            "an agent's actions are its own",
        ));
    }
    let (turns, message) = split(&req.messages)?;
    crate::agent::AgentService::check_message(&message)?;
    let model = format!("agent:{agent}");
    let report = blocking(move || Ok(agents.stateless_turn(&agent, &turns, &message)?)).await?;
    let (id, created) = (new_id("chatcmpl-"), unix_now());
    let content = content_of(&report);
    let agent_info = agent_field(&report);
    if !req.stream.unwrap_or(false) {
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": content, "refusal": null },
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": { "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0 },
            "agent": agent_info,
        }))
        .into_response());
    }
    let chunk = |delta: Value, finish: Option<&str>, extra: Option<&Value>| {
        let mut v = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        if let Some(e) = extra {
            v["agent"] = e.clone();
        }
        Event::default().data(v.to_string())
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "" }),
        None,
        None,
    )];
    events.push(chunk(json!({ "content": content }), None, None));
    events.push(chunk(json!({}), Some("stop"), Some(&agent_info)));
    events.push(Event::default().data("[DONE]"));
    Ok(Sse::new(stream::iter(
        events.into_iter().map(Ok::<_, std::convert::Infallible>),
    ))
    .into_response())
}
