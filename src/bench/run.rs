//! Driving a workload: each request through a backend (this process's engine, or any
//! OpenAI-compatible server over HTTP), all at once or at a fixed concurrency, timing the
//! first token and every token after it.
//!
//! Depends on `engine` (handle only) and `tokenizer`; the HTTP side speaks the OpenAI
//! streaming wire format and nothing else, so it measures other servers the same way.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::workload::{BenchPrompt, BenchRequest};
use super::BenchError;
use crate::engine::{EngineEvent, EngineHandle, GenerateRequest, SamplingParams};
use crate::tokenizer::{ChatInput, Tokenizer};

/// One request as the client saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTiming {
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Submission to first token.
    pub ttft: Duration,
    /// Gaps between consecutive tokens.
    pub itls: Vec<Duration>,
    /// Submission to last token.
    pub latency: Duration,
}

pub trait Backend: Sync {
    fn run(&self, request: &BenchRequest) -> Result<RequestTiming, BenchError>;
}

/// Token arrival times, turned into a timing at the end.
struct Clock {
    start: Instant,
    last: Option<Instant>,
    ttft: Duration,
    itls: Vec<Duration>,
    tokens: usize,
}

impl Clock {
    fn start() -> Self {
        Self {
            start: Instant::now(),
            last: None,
            ttft: Duration::ZERO,
            itls: Vec::new(),
            tokens: 0,
        }
    }

    fn token(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self.ttft = now - self.start,
            Some(prev) => self.itls.push(now - prev),
        }
        self.last = Some(now);
        self.tokens += 1;
    }

    fn finish(self, prompt_tokens: usize) -> RequestTiming {
        RequestTiming {
            prompt_tokens,
            output_tokens: self.tokens,
            ttft: self.ttft,
            latency: self.last.map_or(Duration::ZERO, |l| l - self.start),
            itls: self.itls,
        }
    }
}

/// This process's engine, with the model's tokenizer for chat prompts.
pub struct EngineBackend<'a> {
    pub handle: &'a EngineHandle,
    pub tokenizer: &'a Tokenizer,
    pub ignore_eos: bool,
}

impl Backend for EngineBackend<'_> {
    fn run(&self, request: &BenchRequest) -> Result<RequestTiming, BenchError> {
        let prompt = match &request.prompt {
            BenchPrompt::Tokens(t) => t.clone(),
            BenchPrompt::Chat(messages) => self.tokenizer.encode_chat(&ChatInput {
                messages: messages.clone(),
                tools: None,
                add_generation_prompt: true,
                kwargs: Default::default(),
                now: None,
            })?,
        };
        let prompt_tokens = prompt.len();
        let mut clock = Clock::start();
        let mut stream = self.handle.generate(GenerateRequest {
            max_tokens: Some(request.max_tokens),
            ignore_eos: self.ignore_eos,
            grammar: None,
            ..GenerateRequest::new(prompt, SamplingParams::greedy())
        })?;
        while let Some(event) = stream.blocking_next() {
            match event {
                EngineEvent::Token(_) => clock.token(),
                EngineEvent::Failed(m) => return Err(BenchError::Request(m)),
                EngineEvent::Admitted { .. } | EngineEvent::Finished { .. } => {}
            }
        }
        Ok(clock.finish(prompt_tokens))
    }
}

/// An OpenAI-compatible server: chat prompts go to `/v1/chat/completions`, token prompts to
/// `/v1/completions`, both streamed, greedy, with `ignore_eos` (an extension that vLLM and
/// llama.cpp's server accept).
pub struct HttpBackend {
    pub base_url: String,
    pub model: String,
    pub ignore_eos: bool,
}

impl HttpBackend {
    fn body(&self, request: &BenchRequest) -> (String, Value) {
        let base = self.base_url.trim_end_matches('/');
        let mut body = json!({
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
            "ignore_eos": self.ignore_eos,
        });
        let path = match &request.prompt {
            BenchPrompt::Chat(messages) => {
                body["messages"] = Value::Array(messages.clone());
                "chat/completions"
            }
            BenchPrompt::Tokens(t) => {
                body["prompt"] = t.iter().map(|t| t.0).collect();
                "completions"
            }
        };
        (format!("{base}/v1/{path}"), body)
    }
}

/// Whether a streamed chunk carries generated text (a token), and its usage if it has one.
fn read_chunk(chunk: &Value) -> (bool, Option<usize>) {
    let choice = &chunk["choices"][0];
    let text = choice["delta"]["content"]
        .as_str()
        .or_else(|| choice["text"].as_str());
    let prompt_tokens = chunk["usage"]["prompt_tokens"].as_u64().map(|n| n as usize);
    (text.is_some_and(|t| !t.is_empty()), prompt_tokens)
}

impl Backend for HttpBackend {
    fn run(&self, request: &BenchRequest) -> Result<RequestTiming, BenchError> {
        let (url, body) = self.body(request);
        let mut clock = Clock::start();
        let response = ureq::post(&url)
            .send_json(&body)
            .map_err(|e| BenchError::Http(format!("{url}: {e}")))?;
        let reader = BufReader::new(response.into_body().into_reader());
        let mut prompt_tokens = match &request.prompt {
            BenchPrompt::Tokens(t) => t.len(),
            BenchPrompt::Chat(_) => 0,
        };
        for line in reader.lines() {
            let line = line.map_err(|e| BenchError::Http(format!("{url}: {e}")))?;
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data.trim() == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data)
                .map_err(|e| BenchError::Http(format!("{url}: a chunk is not JSON: {e}")))?;
            let (token, usage) = read_chunk(&chunk);
            if token {
                clock.token();
            }
            if let Some(p) = usage {
                prompt_tokens = p;
            }
        }
        Ok(clock.finish(prompt_tokens))
    }
}

/// Every request's timing, in submission order, and the run's wall time.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub timings: Vec<RequestTiming>,
    pub elapsed: Duration,
}

/// Runs every request; `concurrency` 0 submits them all at once.
pub fn run(
    backend: &dyn Backend,
    requests: &[BenchRequest],
    concurrency: usize,
) -> Result<RunOutput, BenchError> {
    let workers = if concurrency == 0 {
        requests.len()
    } else {
        concurrency.min(requests.len())
    };
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(requests.len()));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = requests.get(i) else { break };
                let t = backend.run(r);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, t));
            });
        }
    });
    let elapsed = start.elapsed();
    let mut done = results.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    let timings = done
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunOutput { timings, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_count_tokens_only_when_they_carry_text() {
        let chat = json!({"choices": [{"delta": {"content": "hi"}}]});
        let role = json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]});
        let completion = json!({"choices": [{"text": "x"}]});
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 157}});
        assert_eq!(read_chunk(&chat), (true, None));
        assert_eq!(read_chunk(&role), (false, None));
        assert_eq!(read_chunk(&completion), (true, None));
        assert_eq!(read_chunk(&usage), (false, Some(157)));
    }
}
