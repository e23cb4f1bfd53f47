//! The OpenAPI description of the support-agent routes: conversations, messages (SSE or
//! JSON), transcripts, CSAT and analytics for customers; definitions, examples and the handoff
//! queue for admins. `openapi` merges these into the one document.
//!
//! Must describe every status and field those routes can send: the client suites fuzz the
//! server against this document. Must not depend on the handlers.

use serde_json::{json, Map, Value};

use super::openapi::{error_responses, json_body, ok_json};

const ERRORS: [&str; 7] = ["400", "401", "404", "409", "413", "429", "503"];

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

fn object() -> Value {
    json!({"type": "object"})
}

fn op(id: &str, params: Vec<Value>, body: Option<Value>, ok: Vec<(&str, Value)>) -> Value {
    let mut responses = error_responses(&ERRORS);
    for (code, v) in ok {
        responses.insert(code.into(), v);
    }
    let mut o = Map::new();
    o.insert("operationId".into(), json!(id));
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    if let Some(b) = body {
        o.insert("requestBody".into(), b);
    }
    o.insert("responses".into(), Value::Object(responses));
    Value::Object(o)
}

fn strict(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "additionalProperties": false, "properties": properties, "required": required})
}

fn customer_paths(p: &mut Map<String, Value>) {
    let agent = || path_param("agent");
    let conv = || vec![path_param("agent"), path_param("id")];
    p.insert(
        "/v1/agents".into(),
        json!({"get": op("listAgents", vec![], None, vec![("200", ok_json("The agents served", object()))])}),
    );
    let start = strict(
        json!({"contact_id": {"type": "string", "minLength": 1, "maxLength": 200},
               "metadata": {"type": "object"}}),
        &[],
    );
    p.insert(
        "/v1/agents/{agent}/conversations".into(),
        json!({"post": op("startConversation", vec![agent()], Some(json!({"required": false,
            "content": {"application/json": {"schema": start}}})),
            vec![("200", ok_json("The conversation, with the agent's greeting", object()))])}),
    );
    p.insert(
        "/v1/agents/{agent}/conversations/{id}".into(),
        json!({"get": op("getConversation", conv(), None,
            vec![("200", ok_json("The transcript, decisions, handoff and CSAT", object()))])}),
    );
    let message = strict(
        json!({"content": {"type": "string", "minLength": 1, "maxLength": 4000},
               "stream": {"type": "boolean"}}),
        &["content"],
    );
    p.insert(
        "/v1/agents/{agent}/conversations/{id}/messages".into(),
        json!({"post": op("postMessage", conv(), Some(json_body(message)),
            vec![("200", json!({"description": "The agent's turn: SSE events (message.delta, message.citations, message.completed, handoff, done), or JSON with stream: false",
                "content": {"text/event-stream": {"schema": {"type": "string"}}, "application/json": {"schema": object()}}}))])}),
    );
    let csat = strict(
        json!({"score": {"type": "integer", "minimum": 1, "maximum": 5},
               "comment": {"type": "string", "maxLength": 2000},
               "resolved": {"type": "boolean"}}),
        &["score"],
    );
    p.insert(
        "/v1/agents/{agent}/conversations/{id}/csat".into(),
        json!({"post": op("rateConversation", conv(), Some(json_body(csat)),
            vec![("200", ok_json("Recorded", object()))])}),
    );
    let when = json!({"type": "string"});
    p.insert(
        "/v1/agents/{agent}/analytics".into(),
        json!({"get": op("agentAnalytics", vec![agent(), query_param("from", when.clone()), query_param("to", when)], None,
            vec![("200", ok_json("Outcomes and aggregates per agent and per intent, and coverage gaps", object()))])}),
    );
}

fn admin_paths(p: &mut Map<String, Value>) {
    let name = || vec![path_param("name")];
    let id = || vec![path_param("id")];
    p.insert(
        "/admin/agents".into(),
        json!({"get": op("listAgentDefinitions", vec![], None, vec![("200", ok_json("Every agent's definition", object()))])}),
    );
    let toml = json!({"description": "The definition as TOML",
                      "content": {"application/toml": {"schema": {"type": "string"}}}});
    p.insert(
        "/admin/agents/{name}".into(),
        json!({
            "get": op("getAgentDefinition", name(), None, vec![("200", toml.clone())]),
            "put": op("putAgentDefinition", name(),
                Some(json!({"required": true, "description": "The definition, as TOML text",
                    "content": {"text/plain": {"schema": {"type": "string"}}}})),
                vec![("200", ok_json("Replaced", object())), ("201", ok_json("Created", object()))]),
            "delete": op("deleteAgentDefinition", name(), None, vec![("200", ok_json("Deleted", object()))]),
        }),
    );
    let examples = strict(
        json!({"examples": {"type": "array", "items": strict(
                  json!({"intent": {"type": "string"}, "text": {"type": "string"}}), &["intent", "text"])},
               "tickets": {"type": "string"},
               "filename": {"type": "string"},
               "source": {"type": "string"}}),
        &[],
    );
    p.insert(
        "/admin/agents/{name}/examples".into(),
        json!({"post": op("addIntentExamples", name(), Some(json_body(examples)),
            vec![("200", ok_json("Added", object()))])}),
    );
    p.insert(
        "/admin/handoffs".into(),
        json!({"get": op("listHandoffs", vec![
                query_param("queue", json!({"type": "string"})),
                query_param("status", json!({"enum": ["waiting", "claimed", "resolved"]})),
                query_param("limit", json!({"type": "integer", "minimum": 1, "maximum": 500}))], None,
            vec![("200", ok_json("Handoffs, oldest first", object()))])}),
    );
    p.insert(
        "/admin/handoffs/{id}".into(),
        json!({"get": op("getHandoff", id(), None, vec![("200", ok_json("The handoff and its packet", object()))])}),
    );
    let by = strict(
        json!({"by": {"type": "string", "minLength": 1, "maxLength": 200}}),
        &["by"],
    );
    p.insert(
        "/admin/handoffs/{id}/claim".into(),
        json!({"post": op("claimHandoff", id(), Some(json_body(by)), vec![("200", ok_json("Claimed", object()))])}),
    );
    let reply = strict(
        json!({"by": {"type": "string", "minLength": 1}, "content": {"type": "string", "minLength": 1, "maxLength": 4000}}),
        &["by", "content"],
    );
    p.insert(
        "/admin/handoffs/{id}/reply".into(),
        json!({"post": op("replyToHandoff", id(), Some(json_body(reply)), vec![("200", ok_json("The reply as stored", object()))])}),
    );
    p.insert(
        "/admin/handoffs/{id}/resolve".into(),
        json!({"post": op("resolveHandoff", id(), None, vec![("200", ok_json("Resolved", object()))])}),
    );
}

pub fn paths() -> Map<String, Value> {
    let mut p = Map::new();
    customer_paths(&mut p);
    admin_paths(&mut p);
    p
}
