//! `GET /openapi.json`: an OpenAPI 3.1 description of every route, written by hand beside the
//! wire types it describes. The client suites fuzz the server against it, so a route or field
//! added without its description here is caught there.

use axum::Json;
use serde_json::{json, Value};

pub(super) fn error_responses(codes: &[&str]) -> serde_json::Map<String, Value> {
    let describe = |code: &str| match code {
        "400" => {
            "Invalid request: bad JSON, a missing field, a wrong type or an out-of-range value"
        }
        "401" => "Missing or wrong API key",
        "404" => "Unknown model, route, file, vector store, collection or document",
        "409" => "Conflict: the name is taken, or the knowledge base is in use by another process",
        "413" => "Request body over the size limit",
        "429" => "Overloaded, or too many concurrent requests for this key",
        "503" => "Shutting down, or not ready",
        _ => "Error",
    };
    codes
        .iter()
        .map(|c| {
            (
                c.to_string(),
                json!({"description": describe(c),
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            )
        })
        .collect()
}

fn generation_responses(ok: Value) -> Value {
    let mut r = error_responses(&["400", "401", "404", "413", "429", "503"]);
    r.insert("200".into(), ok);
    Value::Object(r)
}

fn stop_schema() -> Value {
    json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}, {"type": "null"}]})
}

fn sampling_properties() -> serde_json::Map<String, Value> {
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let mut p = serde_json::Map::new();
    for (k, t) in [
        ("temperature", "number"),
        ("top_p", "number"),
        ("presence_penalty", "number"),
        ("frequency_penalty", "number"),
        ("min_p", "number"),
        ("repetition_penalty", "number"),
        ("seed", "integer"),
        ("top_k", "integer"),
        ("n", "integer"),
        ("max_tokens", "integer"),
        ("stream", "boolean"),
        ("ignore_eos", "boolean"),
        ("skip_special_tokens", "boolean"),
        ("user", "string"),
    ] {
        p.insert(k.into(), nullable(t));
    }
    p.insert("stop".into(), stop_schema());
    p.insert(
        "logit_bias".into(),
        json!({"type": ["object", "null"], "additionalProperties": {"type": "number"}}),
    );
    p.insert(
        "stream_options".into(),
        json!({"type": ["object", "null"], "properties": {"include_usage": {"type": ["boolean", "null"]}}}),
    );
    p
}

fn chat_request() -> Value {
    let mut p = sampling_properties();
    p.insert("model".into(), json!({"type": "string"}));
    p.insert("messages".into(), json!({"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/ChatMessage"}}));
    p.insert(
        "max_completion_tokens".into(),
        json!({"type": ["integer", "null"]}),
    );
    p.insert("logprobs".into(), json!({"type": ["boolean", "null"]}));
    p.insert("top_logprobs".into(), json!({"type": ["integer", "null"]}));
    p.insert("tools".into(), json!({"type": ["array", "null"], "items": {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"}, "parameters": {"type": "object"}, "strict": {"type": "boolean"}}}}}}));
    p.insert("tool_choice".into(), json!({"oneOf": [
        {"type": "string", "enum": ["none", "auto", "required"]},
        {"type": "object", "required": ["type", "function"], "properties": {"type": {"const": "function"}, "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}},
        {"type": "null"}]}));
    p.insert(
        "parallel_tool_calls".into(),
        json!({"type": ["boolean", "null"]}),
    );
    p.insert("response_format".into(), json!({"oneOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
        {"type": "object", "required": ["type", "json_schema"], "properties": {"type": {"const": "json_schema"},
            "json_schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "schema": {"type": "object"}, "strict": {"type": ["boolean", "null"]}}}}},
        {"type": "null"}]}));
    json!({"type": "object", "required": ["model", "messages"], "properties": p})
}

fn completion_request() -> Value {
    let mut p = sampling_properties();
    p.insert("model".into(), json!({"type": "string"}));
    p.insert("prompt".into(), json!({"oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer", "minimum": 0}},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}}]}));
    p.insert("logprobs".into(), json!({"type": ["integer", "null"]}));
    p.insert("echo".into(), json!({"type": ["boolean", "null"]}));
    p.insert("best_of".into(), json!({"type": ["integer", "null"]}));
    p.insert("suffix".into(), json!({"type": ["string", "null"]}));
    json!({"type": "object", "required": ["model", "prompt"], "properties": p})
}

fn schemas() -> Value {
    let usage = json!({"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer"}}}}});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["message", "type", "param", "code"], "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
        "ChatMessage": {"type": "object", "required": ["role"], "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}, "text": {"type": "string"}}}}]},
            "name": {"type": "string"}, "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}}}},
        "ToolCall": {"type": "object", "required": ["id", "type", "function"], "properties": {
            "id": {"type": "string"}, "type": {"const": "function"},
            "function": {"type": "object", "required": ["name", "arguments"], "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}},
        "Usage": usage,
        "ChatCompletion": {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"], "properties": {
                "index": {"type": "integer"},
                "message": {"type": "object", "required": ["role"], "properties": {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
                    "refusal": {"type": "null"}, "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}}}},
                "logprobs": {"type": ["object", "null"]},
                "finish_reason": {"enum": ["stop", "length", "tool_calls"]}}}},
            "usage": {"$ref": "#/components/schemas/Usage"}}},
        "Completion": {"type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
            "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object", "required": ["index", "text"], "properties": {
                "index": {"type": "integer"}, "text": {"type": "string"}, "logprobs": {"type": ["object", "null"]},
                "finish_reason": {"enum": ["stop", "length", null]}}}},
            "usage": {"$ref": "#/components/schemas/Usage"}}},
        "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
            "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": {"type": "string"},
            "max_model_len": {"type": "integer"}, "root": {"type": "string"}}},
    })
}

pub(super) fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

pub(super) fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn sse_or(schema_ref: &str) -> Value {
    json!({"description": "The result, or with `stream: true` a server-sent event stream of chunks ending in `data: [DONE]`",
           "content": {"application/json": {"schema": {"$ref": schema_ref}}, "text/event-stream": {"schema": {"type": "string"}}}})
}

pub fn document() -> Value {
    let bearer = json!([{"bearer": []}]);
    let open = json!([]);
    let plain_ok = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"type": "object"}}}});
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Enclave", "version": env!("CARGO_PKG_VERSION"),
                 "description": "OpenAI-compatible inference API of an on-prem Enclave server."},
        "security": bearer,
        "paths": {
            "/v1/chat/completions": {"post": {"operationId": "createChatCompletion",
                "requestBody": json_body(chat_request()),
                "responses": generation_responses(sse_or("#/components/schemas/ChatCompletion"))}},
            "/v1/completions": {"post": {"operationId": "createCompletion",
                "requestBody": json_body(completion_request()),
                "responses": generation_responses(sse_or("#/components/schemas/Completion"))}},
            "/v1/models": {"get": {"operationId": "listModels", "responses": {
                "200": ok_json("Every served model name", json!({"type": "object", "required": ["object", "data"], "properties": {
                    "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}})),
                "401": error_responses(&["401"])["401"]}}},
            "/v1/models/{model}": {"get": {"operationId": "retrieveModel",
                "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok_json("The model", json!({"$ref": "#/components/schemas/Model"})),
                    "401": error_responses(&["401"])["401"], "404": error_responses(&["404"])["404"]}}},
            "/v1/embeddings": {"post": {"operationId": "createEmbedding",
                "requestBody": json_body(json!({"type": "object", "required": ["model", "input"], "additionalProperties": false, "properties": {
                    "model": {"type": "string"},
                    "input": {"oneOf": [
                        {"type": "string", "minLength": 1},
                        {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string", "minLength": 1}},
                        {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                        {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}}]},
                    "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                    "dimensions": {"type": "integer", "minimum": 1},
                    "user": {"type": "string"}}})),
                "responses": generation_responses(ok_json("One vector per input, in order", json!({"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
                    "object": {"type": "string", "enum": ["list"]},
                    "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
                        "object": {"type": "string", "enum": ["embedding"]}, "index": {"type": "integer"},
                        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}}},
                    "model": {"type": "string"},
                    "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
                        "prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}})))}},
            "/v1/tokenize": {"post": {"operationId": "tokenize",
                "requestBody": json_body(json!({"type": "object", "required": ["model"], "properties": {
                    "model": {"type": "string"}, "prompt": {"type": "string"}, "add_special_tokens": {"type": "boolean"},
                    "messages": {"type": "array", "items": {"$ref": "#/components/schemas/ChatMessage"}}, "add_generation_prompt": {"type": "boolean"}}})),
                "responses": generation_responses(ok_json("Token ids", json!({"type": "object", "required": ["tokens", "count", "max_model_len"], "properties": {
                    "tokens": {"type": "array", "items": {"type": "integer"}}, "count": {"type": "integer"}, "max_model_len": {"type": "integer"}}})))}},
            "/v1/detokenize": {"post": {"operationId": "detokenize",
                "requestBody": json_body(json!({"type": "object", "required": ["model", "tokens"], "properties": {
                    "model": {"type": "string"}, "tokens": {"type": "array", "items": {"type": "integer", "minimum": 0}}}})),
                "responses": generation_responses(ok_json("The text", json!({"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}})))}},
            "/health": {"get": {"operationId": "health", "security": open, "responses": {"200": plain_ok("The process is alive")}}},
            "/ready": {"get": {"operationId": "ready", "security": open, "responses": {
                "200": plain_ok("Every model is loaded"), "503": error_responses(&["503"])["503"]}}},
            "/metrics": {"get": {"operationId": "metrics", "security": open, "responses": {
                "200": {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": open, "responses": {"200": plain_ok("This document")}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(super::openapi_kb::paths());
        paths.extend(super::openapi_agents::paths());
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(super::openapi_kb::schemas());
    }
    doc
}

pub async fn openapi_route() -> Json<Value> {
    Json(document())
}
