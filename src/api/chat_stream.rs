//! A chat request's text events as OpenAI chunks. One assembler turns events into per-choice
//! deltas (content, tool calls, logprobs, finish reasons); the streaming response sends each
//! delta as an SSE chunk, and the whole response folds the same deltas into messages, so the
//! two forms always carry the same output.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::error::ApiError;
use super::generation::{
    closing_events, finish_reason, new_id, stream_failure, token_text, TextEvents,
};
use super::guard::RequestRecord;
use super::state::ServedModel;
use super::tool_output::{OutputParser, ToolMode};
use super::wire::chat::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatLogprobs, ChunkChoice,
    ChunkDelta, FunctionCall, FunctionCallDelta, TokenLogprob, ToolCall, ToolCallDeltaWire,
    TopLogprob,
};
use super::wire::common::Usage;
use crate::engine::TokenOutput;
use crate::text_stream::TextEvent;
use crate::tokenizer::tool_calls::ToolCallDelta;

/// What a chat request's response needs besides its events.
pub struct ChatRun {
    pub id: String,
    pub created: u64,
    pub model: Arc<ServedModel>,
    pub n: usize,
    pub prompt_tokens: usize,
    pub logprobs: bool,
    pub tool_mode: ToolMode,
    pub record: RequestRecord,
}

struct ChoiceState {
    parser: OutputParser,
    call_ids: Vec<String>,
}

struct Assembler {
    run: ChatRun,
    choices: Vec<ChoiceState>,
    completion_tokens: usize,
    cached_tokens: usize,
}

impl Assembler {
    fn new(run: ChatRun) -> Self {
        let choices = (0..run.n)
            .map(|_| ChoiceState {
                parser: OutputParser::new(run.tool_mode.clone()),
                call_ids: Vec::new(),
            })
            .collect();
        Self {
            run,
            choices,
            completion_tokens: 0,
            cached_tokens: 0,
        }
    }

    fn usage(&self) -> Usage {
        Usage::new(
            self.run.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
        )
    }

    /// The chunks one event produces (none for a token whose text is held back).
    fn on_event(&mut self, event: TextEvent) -> Result<Vec<ChunkChoice>, ApiError> {
        match event {
            TextEvent::Admitted { num_cached_tokens } => {
                self.cached_tokens = num_cached_tokens;
                Ok(Vec::new())
            }
            TextEvent::Failed(m) => Err(stream_failure(m)),
            TextEvent::Delta { index, text, token } => {
                self.completion_tokens += 1;
                let logprobs = self.run.logprobs.then(|| self.logprobs(&token));
                let Some(choice) = self.choices.get_mut(index) else {
                    return Ok(Vec::new());
                };
                let deltas = choice.parser.push(&text);
                Ok(delta_chunk(index, deltas, logprobs, choice)
                    .into_iter()
                    .collect())
            }
            TextEvent::Finished {
                index,
                text,
                reason,
            } => {
                let Some(choice) = self.choices.get_mut(index) else {
                    return Ok(Vec::new());
                };
                let mut deltas = choice.parser.push(&text);
                deltas.extend(choice.parser.finish());
                let mut out: Vec<_> = delta_chunk(index, deltas, None, choice)
                    .into_iter()
                    .collect();
                let reason = if choice.parser.saw_tool_call() {
                    "tool_calls"
                } else {
                    finish_reason(reason)
                };
                self.run.record.update(|r| r.finish = Some(reason));
                out.push(ChunkChoice {
                    index,
                    delta: ChunkDelta::default(),
                    logprobs: None,
                    finish_reason: Some(reason),
                });
                Ok(out)
            }
        }
    }

    fn logprobs(&self, token: &TokenOutput) -> ChatLogprobs {
        let tok = &self.run.model.tokenizer;
        let entry = |id, logprob| {
            let text = token_text(tok, id);
            TopLogprob {
                bytes: text.as_bytes().to_vec(),
                token: text,
                logprob,
            }
        };
        let chosen = entry(token.token, token.logprob.unwrap_or(0.0));
        ChatLogprobs {
            content: vec![TokenLogprob {
                token: chosen.token,
                logprob: chosen.logprob,
                bytes: chosen.bytes,
                top_logprobs: Some(
                    token
                        .top_logprobs
                        .iter()
                        .map(|&(id, lp)| entry(id, lp))
                        .collect(),
                ),
            }],
            refusal: None,
        }
    }

    fn record_usage(&self) {
        let u = self.usage();
        self.run.record.update(|r| {
            r.prompt_tokens = u.prompt_tokens;
            r.completion_tokens = u.completion_tokens;
            r.cached_tokens = u.prompt_tokens_details.cached_tokens;
        });
    }
}

/// Content and tool-call deltas of one choice as one chunk; `None` when there is nothing.
fn delta_chunk(
    index: usize,
    deltas: Vec<ToolCallDelta>,
    logprobs: Option<ChatLogprobs>,
    choice: &mut ChoiceState,
) -> Option<ChunkChoice> {
    let mut delta = ChunkDelta::default();
    for d in deltas {
        match d {
            ToolCallDelta::Content(text) => delta
                .content
                .get_or_insert_with(String::new)
                .push_str(&text),
            ToolCallDelta::Start { index, name } => {
                let id = new_id("call_");
                choice.call_ids.push(id.clone());
                delta.tool_calls.push(ToolCallDeltaWire {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionCallDelta {
                        name: Some(name),
                        arguments: String::new(),
                    },
                });
            }
            ToolCallDelta::Arguments { index, text } => delta.tool_calls.push(ToolCallDeltaWire {
                index,
                id: None,
                kind: None,
                function: FunctionCallDelta {
                    name: None,
                    arguments: text,
                },
            }),
        }
    }
    if delta.content.is_none() && delta.tool_calls.is_empty() && logprobs.is_none() {
        return None;
    }
    Some(ChunkChoice {
        index,
        delta,
        logprobs,
        finish_reason: None,
    })
}

/// Folds every chunk into whole messages: the non-streaming response.
pub async fn collect_chat(
    run: ChatRun,
    mut events: TextEvents,
) -> Result<ChatCompletion, ApiError> {
    let mut asm = Assembler::new(run);
    let mut choices: Vec<ChatChoice> = (0..asm.run.n)
        .map(|index| ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content: None,
                refusal: None,
                tool_calls: Vec::new(),
            },
            logprobs: None,
            finish_reason: "stop",
        })
        .collect();
    while let Some(event) = events.next().await {
        for c in asm.on_event(event.map_err(ApiError::from)?)? {
            let Some(out) = choices.get_mut(c.index) else {
                continue;
            };
            fold(out, c, asm.run.logprobs);
        }
    }
    asm.record_usage();
    for c in &mut choices {
        // As OpenAI answers: null content only beside tool calls, otherwise a string.
        if c.message.content.is_none() && c.message.tool_calls.is_empty() {
            c.message.content = Some(String::new());
        }
    }
    Ok(ChatCompletion {
        id: asm.run.id.clone(),
        object: "chat.completion",
        created: asm.run.created,
        model: asm.run.model.id.clone(),
        system_fingerprint: None,
        choices,
        usage: asm.usage(),
    })
}

fn fold(out: &mut ChatChoice, c: ChunkChoice, want_logprobs: bool) {
    if let Some(text) = c.delta.content {
        out.message
            .content
            .get_or_insert_with(String::new)
            .push_str(&text);
    }
    for t in c.delta.tool_calls {
        match (t.id, t.function.name) {
            (Some(id), Some(name)) => out.message.tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: t.function.arguments,
                },
            }),
            _ => {
                if let Some(call) = out.message.tool_calls.get_mut(t.index) {
                    call.function.arguments.push_str(&t.function.arguments);
                }
            }
        }
    }
    if let Some(lp) = c.logprobs {
        out.logprobs
            .get_or_insert_with(ChatLogprobs::default)
            .content
            .extend(lp.content);
    } else if want_logprobs && out.logprobs.is_none() {
        out.logprobs = Some(ChatLogprobs::default());
    }
    if let Some(reason) = c.finish_reason {
        out.finish_reason = reason;
    }
}

/// The SSE response: a role chunk per choice, then deltas as they come, the usage chunk if
/// asked for, and `[DONE]`. A failure after the headers went out is sent as an error event.
pub fn stream_chat(run: ChatRun, mut events: TextEvents, include_usage: bool) -> Response {
    let body = async_stream::stream! {
        let mut asm = Assembler::new(run);
        let chunk = |asm: &Assembler, choices: Vec<ChunkChoice>, usage: Option<Usage>| {
            let c = ChatCompletionChunk {
                id: asm.run.id.clone(),
                object: "chat.completion.chunk",
                created: asm.run.created,
                model: asm.run.model.id.clone(),
                system_fingerprint: None,
                choices,
                usage: include_usage.then_some(usage),
            };
            Event::default().data(serde_json::to_string(&c).unwrap_or_default())
        };
        for index in 0..asm.run.n {
            let role = ChunkChoice {
                index,
                delta: ChunkDelta { role: Some("assistant"), content: Some(String::new()), tool_calls: Vec::new() },
                logprobs: None,
                finish_reason: None,
            };
            yield Ok::<Event, Infallible>(chunk(&asm, vec![role], None));
        }
        let mut failed = None;
        while let Some(event) = events.next().await {
            match event.map_err(ApiError::from).and_then(|e| asm.on_event(e)) {
                Ok(choices) => {
                    for c in choices {
                        yield Ok(chunk(&asm, vec![c], None));
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        asm.record_usage();
        let usage = include_usage.then(|| chunk(&asm, Vec::new(), Some(asm.usage())));
        for event in closing_events(failed, usage) {
            yield Ok(event);
        }
    };
    Sse::new(body).into_response()
}
