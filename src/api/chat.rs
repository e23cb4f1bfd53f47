//! `POST /v1/chat/completions`: checks the request, renders the conversation with the model's
//! chat template, submits it to the model's engine, and answers with one JSON body or an SSE
//! stream (`chat_stream`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::chat_stream::{collect_chat, stream_chat, ChatRun};
use super::error::ApiError;
use super::generation::{new_id, text_events, unix_now, SamplingFields};
use super::guard::RequestRecord;
use super::json::ApiJson;
use super::state::{AppState, ServedModel};
use super::tool_output::ToolMode;
use super::wire::chat::{
    ChatCompletionRequest, ChatMessage, MessageContent, ResponseFormat, ToolChoice,
};
use super::wire::common::StopSpec;
use crate::engine::sampler::MAX_LOGPROBS;
use crate::engine::{EngineError, GenerateRequest};
use crate::tokenizer::ChatInput;

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if let Some(agent) = req.model.strip_prefix("agent:") {
        record.update(|r| r.model = Some(req.model.clone()));
        return super::agent_chat::agent_chat(state, agent.to_string(), req).await;
    }
    let model = state.model(&req.model)?;
    record.update(|r| r.model = Some(model.id.clone()));
    refuse_unsupported(&req)?;
    let stream = req.stream.unwrap_or(false);
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options is only allowed with stream: true",
            "stream_options",
        ));
    }
    let tool_mode = tool_mode(&model, &req)?;
    let top_logprobs = logprobs_count(req.logprobs, req.top_logprobs)?;
    let prompt = render_prompt(&model, &req, &tool_mode)?;
    let n = req.n.unwrap_or(1);
    let stop = StopSpec::into_vec(req.stop.clone())?;
    let max_tokens = req.max_completion_tokens.or(req.max_tokens);
    let sampling = SamplingFields {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        repetition_penalty: req.repetition_penalty,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias.clone(),
        seed: req.seed,
        logprobs: top_logprobs,
    }
    .resolve(&model)?;
    let constraint = constraint(&req, &tool_mode)?;
    let mut request = GenerateRequest::new(prompt, sampling);
    request.max_tokens = max_tokens.map(|t| t as usize);
    request.n = n;
    request.ignore_eos = req.ignore_eos.unwrap_or(false);
    request.grammar = constraint;
    let prompt_tokens = request.prompt.len();
    let forced_tool = matches!(tool_mode, ToolMode::Named(_) | ToolMode::Required);
    let tokens = model.handle.generate(request).map_err(|e| match e {
        EngineError::Grammar(m) => ApiError::invalid(
            m,
            if forced_tool {
                "tools"
            } else {
                "response_format"
            },
        ),
        other => other.into(),
    })?;
    let events = text_events(
        model.clone(),
        tokens,
        n,
        stop,
        req.skip_special_tokens.unwrap_or(true),
    );
    let run = ChatRun {
        id: new_id("chatcmpl-"),
        created: unix_now(),
        model: model.clone(),
        n,
        prompt_tokens,
        logprobs: top_logprobs.is_some(),
        tool_mode,
        record,
    };
    if stream {
        Ok(stream_chat(run, events, include_usage))
    } else {
        Ok(Json(collect_chat(run, events).await?).into_response())
    }
}

/// Fields OpenAI defines that this server cannot honour: refused, never silently ignored.
fn refuse_unsupported(req: &ChatCompletionRequest) -> Result<(), ApiError> {
    if let Some(m) = &req.modalities {
        if m.iter().any(|m| m != "text") {
            return Err(ApiError::unsupported(
                "modalities",
                "only text output is offered",
            ));
        }
    }
    let refused = [
        ("audio", req.audio.is_some(), "audio output is not offered"),
        (
            "prediction",
            req.prediction.is_some(),
            "predicted outputs are not offered",
        ),
        (
            "web_search_options",
            req.web_search_options.is_some(),
            "this server never reaches the internet",
        ),
        (
            "functions",
            req.functions.is_some(),
            "use `tools`, which replaced it",
        ),
        (
            "function_call",
            req.function_call.is_some(),
            "use `tool_choice`, which replaced it",
        ),
        (
            "reasoning_effort",
            req.reasoning_effort.is_some(),
            "the served models take no reasoning budget",
        ),
    ];
    match refused.into_iter().find(|(_, set, _)| *set) {
        Some((param, _, why)) => Err(ApiError::unsupported(param, why)),
        None => Ok(()),
    }
}

/// `Some(k)` when logprobs were asked for, with `k` alternatives per token.
fn logprobs_count(logprobs: Option<bool>, top: Option<u32>) -> Result<Option<usize>, ApiError> {
    match (logprobs.unwrap_or(false), top) {
        (false, Some(k)) if k > 0 => Err(ApiError::invalid(
            "top_logprobs needs logprobs: true",
            "top_logprobs",
        )),
        (false, _) => Ok(None),
        (true, Some(k)) if k as usize > MAX_LOGPROBS => Err(ApiError::invalid(
            format!("top_logprobs must be at most {MAX_LOGPROBS}, got {k}"),
            "top_logprobs",
        )),
        (true, k) => Ok(Some(k.unwrap_or(0) as usize)),
    }
}

fn tool_mode(model: &ServedModel, req: &ChatCompletionRequest) -> Result<ToolMode, ApiError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    if let Some(t) = tools.iter().find(|t| t.kind != "function") {
        return Err(ApiError::invalid(
            format!("tool type `{}` is not supported; use `function`", t.kind),
            "tools",
        ));
    }
    let has = |name: &str| tools.iter().any(|t| t.function.name == name);
    let mode = match &req.tool_choice {
        None if tools.is_empty() => return Ok(ToolMode::Off),
        Some(ToolChoice::Mode(m)) if m == "none" => return Ok(ToolMode::Off),
        _ if tools.is_empty() => {
            return Err(ApiError::invalid(
                "tool_choice needs `tools` to choose from",
                "tool_choice",
            ))
        }
        None => "auto",
        Some(ToolChoice::Mode(m)) => m.as_str(),
        Some(ToolChoice::Named(named)) => {
            if !has(&named.function.name) {
                return Err(ApiError::invalid(
                    format!(
                        "tool_choice names the function `{}`, which is not in `tools`",
                        named.function.name
                    ),
                    "tool_choice",
                ));
            }
            return Ok(ToolMode::Named(named.function.name.clone()));
        }
    };
    match mode {
        "required" => Ok(ToolMode::Required),
        "auto" => model.tool_call_format.map(ToolMode::Auto).ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "the chat template of `{}` shows no tool-call syntax, so calls cannot be read from its output; set `tool_call_parser` for it in the config file, or force a call with tool_choice",
                    model.id
                ),
                "tools",
            )
        }),
        other => Err(ApiError::invalid(
            format!("tool_choice must be none, auto, required or a named function, got `{other}`"),
            "tool_choice",
        )),
    }
}

/// The constrained-decoding grammar the request needs, if any.
fn constraint(
    req: &ChatCompletionRequest,
    mode: &ToolMode,
) -> Result<Option<crate::engine::grammar::GrammarSpec>, ApiError> {
    use crate::engine::grammar::{required_tool_calls_schema, GrammarSpec};
    let tools = req.tools.as_deref().unwrap_or_default();
    let params_of = |t: &super::wire::chat::Tool| {
        t.function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
    };
    let tool_spec = match mode {
        ToolMode::Named(name) => tools
            .iter()
            .find(|t| &t.function.name == name)
            .map(|t| GrammarSpec::JsonSchema(params_of(t))),
        ToolMode::Required => {
            let params: Vec<Value> = tools.iter().map(params_of).collect();
            let named: Vec<(&str, &Value)> = tools
                .iter()
                .zip(&params)
                .map(|(t, p)| (t.function.name.as_str(), p))
                .collect();
            let schema = required_tool_calls_schema(&named)
                .map_err(|e| ApiError::invalid(e.to_string(), "tools"))?;
            Some(GrammarSpec::JsonSchema(schema))
        }
        _ => None,
    };
    let format_spec = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(GrammarSpec::JsonObject),
        Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
            Some(schema) => Some(GrammarSpec::JsonSchema(schema.clone())),
            None => Some(GrammarSpec::JsonObject),
        },
    };
    match (tool_spec, format_spec) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "a forced tool_choice and a JSON response_format cannot be combined: the output is either the call or the JSON",
            "response_format",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn content_text(content: &MessageContent, param: &str) -> Result<String, ApiError> {
    match content {
        MessageContent::Text(s) => Ok(s.clone()),
        MessageContent::Parts(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => texts.push(t.as_str()),
                    ("text", None) => {
                        return Err(ApiError::invalid("a text part needs `text`", param))
                    }
                    (other, _) => {
                        return Err(ApiError::unsupported(
                            param,
                            &format!(
                                "content parts of type `{other}`; the served models read text only"
                            ),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
    }
}

/// The conversation as chat templates expect it: `developer` becomes `system` (templates
/// predate it), and tool-call arguments become objects (templates serialize them again).
pub(super) fn template_messages(messages: &[ChatMessage]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}].content");
        let mut obj = Map::new();
        match m {
            ChatMessage::System { content, name } | ChatMessage::Developer { content, name } => {
                obj.insert("role".into(), "system".into());
                obj.insert("content".into(), content_text(content, &param)?.into());
                if let Some(n) = name {
                    obj.insert("name".into(), n.clone().into());
                }
            }
            ChatMessage::User { content, name } => {
                obj.insert("role".into(), "user".into());
                obj.insert("content".into(), content_text(content, &param)?.into());
                if let Some(n) = name {
                    obj.insert("name".into(), n.clone().into());
                }
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
                ..
            } => {
                obj.insert("role".into(), "assistant".into());
                let text = match content {
                    Some(c) => content_text(c, &param)?,
                    None => String::new(),
                };
                obj.insert("content".into(), text.into());
                if let Some(calls) = tool_calls.as_ref().filter(|c| !c.is_empty()) {
                    let calls: Vec<Value> = calls
                        .iter()
                        .map(|c| {
                            let args = serde_json::from_str::<Value>(&c.function.arguments)
                                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.function.name, "arguments": args}})
                        })
                        .collect();
                    obj.insert("tool_calls".into(), calls.into());
                }
            }
            ChatMessage::Tool {
                content,
                tool_call_id,
            } => {
                obj.insert("role".into(), "tool".into());
                obj.insert("content".into(), content_text(content, &param)?.into());
                obj.insert("tool_call_id".into(), tool_call_id.clone().into());
            }
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

fn render_prompt(
    model: &Arc<ServedModel>,
    req: &ChatCompletionRequest,
    mode: &ToolMode,
) -> Result<Vec<crate::ids::TokenId>, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", "messages"));
    }
    let tools = match (mode, &req.tools) {
        (ToolMode::Off, _) | (_, None) => None,
        (_, Some(tools)) => Some(
            tools
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect(),
        ),
    };
    let input = ChatInput {
        messages: template_messages(&req.messages)?,
        tools,
        add_generation_prompt: true,
        kwargs: Default::default(),
        now: None,
    };
    Ok(model.tokenizer.encode_chat(&input)?)
}
