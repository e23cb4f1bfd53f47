//! `POST /v1/completions`: the legacy text completion endpoint. The prompt is text, several
//! texts, token ids or several lists of them; each prompt runs as its own engine request and
//! its `n` samples are choices `prompt_index * n + sample`. Echo, logprobs and streaming.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;

use super::error::ApiError;
use super::generation::{
    closing_events, finish_reason, new_id, stream_failure, text_events, token_text, unix_now,
    SamplingFields,
};
use super::guard::RequestRecord;
use super::json::ApiJson;
use super::state::{AppState, ServedModel};
use super::wire::common::{StopSpec, Usage};
use super::wire::completion::{
    Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, PromptInput,
};
use crate::engine::sampler::MAX_LOGPROBS;
use crate::engine::{GenerateRequest, TokenOutput};
use crate::ids::TokenId;
use crate::text_stream::TextEvent;

/// One prompt, as ids and as the text echo repeats.
struct Prompt {
    ids: Vec<TokenId>,
    text: String,
}

fn prompts(model: &ServedModel, input: PromptInput) -> Result<Vec<Prompt>, ApiError> {
    let tok = &model.tokenizer;
    let from_text = |s: String| -> Result<Prompt, ApiError> {
        Ok(Prompt {
            ids: tok.encode(&s, true)?,
            text: s,
        })
    };
    let from_ids = |ids: Vec<u32>| -> Result<Prompt, ApiError> {
        let ids: Vec<TokenId> = ids.into_iter().map(TokenId).collect();
        let text = tok.decode(&ids, false).unwrap_or_default();
        Ok(Prompt { ids, text })
    };
    let out: Vec<Prompt> = match input {
        PromptInput::Text(s) => vec![from_text(s)?],
        PromptInput::Texts(v) => v.into_iter().map(from_text).collect::<Result<_, _>>()?,
        PromptInput::Tokens(v) => vec![from_ids(v)?],
        PromptInput::TokenLists(v) => v.into_iter().map(from_ids).collect::<Result<_, _>>()?,
    };
    if out.is_empty() {
        return Err(ApiError::invalid(
            "prompt must not be an empty list",
            "prompt",
        ));
    }
    Ok(out)
}

fn refuse_unsupported(req: &CompletionRequest, n: usize) -> Result<(), ApiError> {
    if req.best_of.is_some_and(|b| b != n) {
        return Err(ApiError::unsupported(
            "best_of",
            "ranking extra samples server-side is not offered; ask for `n` samples instead",
        ));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_null()) {
        return Err(ApiError::unsupported(
            "suffix",
            "insertion needs a fill-in-the-middle model",
        ));
    }
    if req.echo == Some(true) && req.logprobs.is_some() {
        return Err(ApiError::unsupported(
            "logprobs",
            "logprobs of echoed prompt tokens are not computed; drop `echo` or `logprobs`",
        ));
    }
    match req.logprobs {
        Some(k) if k as usize > MAX_LOGPROBS => Err(ApiError::invalid(
            format!("logprobs must be at most {MAX_LOGPROBS}, got {k}"),
            "logprobs",
        )),
        _ => Ok(()),
    }
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let model = state.model(&req.model)?;
    record.update(|r| r.model = Some(model.id.clone()));
    let n = req.n.unwrap_or(1);
    refuse_unsupported(&req, n)?;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options is only allowed with stream: true",
            "stream_options",
        ));
    }
    let include_usage = req
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
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
        logprobs: req.logprobs.map(|k| k as usize),
    }
    .resolve(&model)?;
    let stop = StopSpec::into_vec(req.stop.clone())?;
    let prompts = prompts(&model, req.prompt.clone())?;
    let echo = req.echo.unwrap_or(false);
    let mut merged = Vec::with_capacity(prompts.len());
    let mut run = CompletionRun {
        id: new_id("cmpl-"),
        created: unix_now(),
        model: model.id.clone(),
        n,
        logprobs: req.logprobs.is_some(),
        echo: Vec::new(),
        prompt_tokens: 0,
    };
    for (p, prompt) in prompts.into_iter().enumerate() {
        let mut request = GenerateRequest::new(prompt.ids, sampling.clone());
        request.max_tokens = Some(req.max_tokens.unwrap_or(16) as usize);
        request.n = n;
        request.ignore_eos = req.ignore_eos.unwrap_or(false);
        run.prompt_tokens += request.prompt.len();
        let tokens = model.handle.generate(request)?;
        let events = text_events(
            model.clone(),
            tokens,
            n,
            stop.clone(),
            req.skip_special_tokens.unwrap_or(true),
        );
        merged.push(events.map(move |e| (p, e)).boxed());
        run.echo
            .push(if echo { prompt.text } else { String::new() });
    }
    let events = futures_util::stream::select_all(merged).boxed();
    let asm = Assembler::new(run, model, record);
    if stream {
        Ok(stream_completion(asm, events, include_usage))
    } else {
        Ok(Json(collect_completion(asm, events).await?).into_response())
    }
}

struct CompletionRun {
    id: String,
    created: u64,
    model: String,
    n: usize,
    logprobs: bool,
    /// Per prompt: the text echo puts before each of its choices (empty without echo).
    echo: Vec<String>,
    prompt_tokens: usize,
}

type Tagged = futures_util::stream::BoxStream<
    'static,
    (usize, Result<TextEvent, crate::tokenizer::TokenizerError>),
>;

struct Assembler {
    run: CompletionRun,
    model: std::sync::Arc<ServedModel>,
    record: RequestRecord,
    /// Characters (not bytes, as OpenAI counts them) of each choice's text, for `text_offset`.
    offsets: Vec<usize>,
    completion_tokens: usize,
    cached_tokens: usize,
}

impl Assembler {
    fn new(run: CompletionRun, model: std::sync::Arc<ServedModel>, record: RequestRecord) -> Self {
        let offsets = (0..run.echo.len() * run.n)
            .map(|i| run.echo[i / run.n].chars().count())
            .collect();
        Self {
            run,
            model,
            record,
            offsets,
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

    fn on_event(
        &mut self,
        prompt: usize,
        event: TextEvent,
    ) -> Result<Option<CompletionChoice>, ApiError> {
        let n = self.run.n;
        Ok(match event {
            TextEvent::Admitted { num_cached_tokens } => {
                self.cached_tokens += num_cached_tokens;
                None
            }
            TextEvent::Failed(m) => return Err(stream_failure(m)),
            TextEvent::Delta { index, text, token } => {
                self.completion_tokens += 1;
                let index = prompt * n + index;
                let logprobs = self.run.logprobs.then(|| self.logprobs(index, &token));
                if let Some(o) = self.offsets.get_mut(index) {
                    *o += text.chars().count();
                }
                Some(CompletionChoice {
                    index,
                    text,
                    logprobs,
                    finish_reason: None,
                })
            }
            TextEvent::Finished {
                index,
                text,
                reason,
            } => Some(CompletionChoice {
                index: prompt * n + index,
                text,
                logprobs: None,
                finish_reason: Some(finish_reason(reason)),
            }),
        })
    }

    fn logprobs(&self, index: usize, token: &TokenOutput) -> CompletionLogprobs {
        let tok = &self.model.tokenizer;
        let top: BTreeMap<String, f32> = token
            .top_logprobs
            .iter()
            .map(|&(id, lp)| (token_text(tok, id), lp))
            .collect();
        CompletionLogprobs {
            tokens: vec![token_text(tok, token.token)],
            token_logprobs: vec![token.logprob.unwrap_or(0.0)],
            top_logprobs: vec![top],
            text_offset: vec![self.offsets.get(index).copied().unwrap_or(0)],
        }
    }

    fn record_usage(&self) {
        let u = self.usage();
        self.record.update(|r| {
            r.prompt_tokens = u.prompt_tokens;
            r.completion_tokens = u.completion_tokens;
            r.cached_tokens = u.prompt_tokens_details.cached_tokens;
        });
    }

    fn echo_of(&self, index: usize) -> String {
        self.run.echo[index / self.run.n].clone()
    }
}

async fn collect_completion(
    mut asm: Assembler,
    mut events: Tagged,
) -> Result<Completion, ApiError> {
    let num_choices = asm.run.echo.len() * asm.run.n;
    let mut choices: Vec<CompletionChoice> = (0..num_choices)
        .map(|index| CompletionChoice {
            index,
            text: asm.echo_of(index),
            logprobs: asm.run.logprobs.then(CompletionLogprobs::default),
            finish_reason: Some("stop"),
        })
        .collect();
    while let Some((prompt, event)) = events.next().await {
        let Some(c) = asm.on_event(prompt, event.map_err(ApiError::from)?)? else {
            continue;
        };
        let Some(out) = choices.get_mut(c.index) else {
            continue;
        };
        out.text.push_str(&c.text);
        if let (Some(all), Some(lp)) = (out.logprobs.as_mut(), c.logprobs) {
            all.tokens.extend(lp.tokens);
            all.token_logprobs.extend(lp.token_logprobs);
            all.top_logprobs.extend(lp.top_logprobs);
            all.text_offset.extend(lp.text_offset);
        }
        if c.finish_reason.is_some() {
            out.finish_reason = c.finish_reason;
        }
    }
    asm.record_usage();
    Ok(Completion {
        id: asm.run.id.clone(),
        object: "text_completion",
        created: asm.run.created,
        model: asm.run.model.clone(),
        system_fingerprint: None,
        choices,
        usage: Some(asm.usage()),
    })
}

fn stream_completion(mut asm: Assembler, mut events: Tagged, include_usage: bool) -> Response {
    let body = async_stream::stream! {
        let chunk = |asm: &Assembler, choices: Vec<CompletionChoice>, usage: Option<Usage>| {
            let c = Completion {
                id: asm.run.id.clone(),
                object: "text_completion",
                created: asm.run.created,
                model: asm.run.model.clone(),
                system_fingerprint: None,
                choices,
                usage,
            };
            Event::default().data(serde_json::to_string(&c).unwrap_or_default())
        };
        for index in 0..asm.run.echo.len() * asm.run.n {
            let text = asm.echo_of(index);
            if !text.is_empty() {
                let c = CompletionChoice { index, text, logprobs: None, finish_reason: None };
                yield Ok::<Event, Infallible>(chunk(&asm, vec![c], None));
            }
        }
        let mut failed = None;
        while let Some((prompt, event)) = events.next().await {
            match event.map_err(ApiError::from).and_then(|e| asm.on_event(prompt, e)) {
                Ok(Some(c)) if !c.text.is_empty() || c.logprobs.is_some() || c.finish_reason.is_some() => {
                    yield Ok(chunk(&asm, vec![c], None));
                }
                Ok(_) => {}
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
