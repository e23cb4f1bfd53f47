//! `EngineHandle`: how the rest of the program talks to an engine thread. A request goes in
//! over a bounded channel and comes back as a `TokenStream` of `EngineEvent`s.
//!
//! Requests are checked here, before they queue, so a bad one fails at once with both numbers.
//! Dropping a stream (or cancelling it) tells the engine to free the request's blocks before
//! its next step. Depends on the engine's plain types only; never on the core loop's state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use tokio::sync::mpsc as events;

use super::error::EngineError;
use super::grammar::{GrammarMatcher, GrammarSpec, GrammarVocab};
use super::metrics::{EngineMetrics, MetricsSnapshot};
use super::sampler::SamplingParams;
use super::sequence::FinishReason;
use crate::ids::TokenId;

/// Identifies one request (its n samples) to its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Most samples one request may ask for.
pub const MAX_N: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub prompt: Vec<TokenId>,
    /// `None`: the rest of the context.
    pub max_tokens: Option<usize>,
    /// Independent samples of the prompt; they share its prefill and its blocks.
    pub n: usize,
    pub sampling: SamplingParams,
    /// Stop tokens besides the model's end-of-sequence tokens.
    pub stop_token_ids: Vec<TokenId>,
    /// Keep generating through the model's end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Constrain every sample's output to this grammar (JSON, a schema).
    pub grammar: Option<GrammarSpec>,
}

impl GenerateRequest {
    pub fn new(prompt: Vec<TokenId>, sampling: SamplingParams) -> Self {
        Self {
            prompt,
            max_tokens: None,
            n: 1,
            sampling,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            grammar: None,
        }
    }
}

/// One sampled token of sample `index`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOutput {
    pub index: usize,
    pub token: TokenId,
    pub logprob: Option<f32>,
    pub top_logprobs: Vec<(TokenId, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// The request left the queue; this many prompt tokens came from the prefix cache.
    Admitted {
        num_cached_tokens: usize,
    },
    Token(TokenOutput),
    /// Sample `index` is done; once every sample is, the stream ends.
    Finished {
        index: usize,
        reason: FinishReason,
    },
    /// The request failed inside the engine; the stream ends.
    Failed(String),
}

/// What the engine thread receives.
pub(crate) struct Submission {
    pub id: RequestId,
    pub request: GenerateRequest,
    /// `max_tokens` resolved against the context.
    pub max_tokens: usize,
    pub events: events::UnboundedSender<EngineEvent>,
    /// The request's grammar, compiled by the caller's thread rather than the engine's.
    pub grammar: Option<GrammarMatcher>,
}

pub(crate) enum Cancel {
    Request(RequestId),
    Sample(RequestId, usize),
}

/// Fixed facts about the engine that requests are checked against.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    pub max_context: usize,
    pub vocab_size: usize,
    pub kv_capacity_tokens: usize,
    pub max_queue_len: usize,
    /// Samples of one request run side by side, so `n` cannot exceed it.
    pub max_num_seqs: usize,
}

struct Shared {
    submit: mpsc::SyncSender<Submission>,
    cancel: mpsc::Sender<Cancel>,
    /// Requests submitted and not yet admitted by the scheduler.
    queued: Arc<AtomicUsize>,
    next_id: AtomicU64,
    limits: EngineLimits,
    metrics: Arc<EngineMetrics>,
    grammar_vocab: OnceLock<Arc<GrammarVocab>>,
}

/// Cheap to clone; every clone talks to the same engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl EngineHandle {
    pub(crate) fn new(
        submit: mpsc::SyncSender<Submission>,
        cancel: mpsc::Sender<Cancel>,
        queued: Arc<AtomicUsize>,
        limits: EngineLimits,
        metrics: Arc<EngineMetrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                submit,
                cancel,
                queued,
                next_id: AtomicU64::new(1),
                limits,
                metrics,
                grammar_vocab: OnceLock::new(),
            }),
        }
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.shared.limits
    }

    /// Enables constrained decoding (`GenerateRequest::grammar`) with the model's token bytes.
    /// Only the first call has effect.
    pub fn set_grammar_vocab(&self, vocab: Arc<GrammarVocab>) {
        let _ = self.shared.grammar_vocab.set(vocab);
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Checks the request and queues it. Fails at once, never waits: a bad request with the
    /// numbers at fault, a full queue with `Overloaded`.
    pub fn generate(&self, request: GenerateRequest) -> Result<TokenStream, EngineError> {
        let max_tokens = self.check(&request)?;
        let grammar = self.compile_grammar(&request)?;
        let s = &self.shared;
        let queue_len = s.queued.fetch_add(1, Ordering::SeqCst);
        if queue_len >= s.limits.max_queue_len {
            s.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Overloaded { queue_len });
        }
        let id = RequestId(s.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = events::unbounded_channel();
        let n = request.n;
        let sent = s.submit.try_send(Submission {
            id,
            request,
            max_tokens,
            events: tx,
            grammar,
        });
        if let Err(e) = sent {
            s.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(match e {
                mpsc::TrySendError::Full(_) => EngineError::Overloaded { queue_len },
                mpsc::TrySendError::Disconnected(_) => EngineError::EngineStopped,
            });
        }
        Ok(TokenStream {
            id,
            events: rx,
            cancel: s.cancel.clone(),
            open: vec![true; n],
        })
    }

    fn compile_grammar(&self, r: &GenerateRequest) -> Result<Option<GrammarMatcher>, EngineError> {
        let Some(spec) = &r.grammar else {
            return Ok(None);
        };
        if r.ignore_eos {
            return Err(EngineError::InvalidRequest(
                "ignore_eos cannot be combined with a JSON constraint: a complete document ends with the end-of-sequence token".into(),
            ));
        }
        let vocab = self.shared.grammar_vocab.get().ok_or_else(|| {
            EngineError::InvalidRequest("constrained decoding is not set up for this model".into())
        })?;
        GrammarMatcher::new(vocab, spec)
            .map(Some)
            .map_err(|e| EngineError::Grammar(e.to_string()))
    }

    /// The resolved `max_tokens`, or why the request cannot run.
    fn check(&self, r: &GenerateRequest) -> Result<usize, EngineError> {
        let l = &self.shared.limits;
        let prompt_len = r.prompt.len();
        if prompt_len == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt_len >= l.max_context {
            return Err(EngineError::PromptTooLong {
                prompt_len,
                max_context: l.max_context,
            });
        }
        let max_tokens = r.max_tokens.unwrap_or(l.max_context - prompt_len);
        if max_tokens == 0 {
            return Err(EngineError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        if prompt_len + max_tokens > l.max_context {
            return Err(EngineError::ContextExceeded {
                prompt_len,
                max_tokens,
                max_context: l.max_context,
            });
        }
        // The prompt and its first generated token must fit the cache together.
        if prompt_len + 1 > l.kv_capacity_tokens {
            return Err(EngineError::PromptExceedsKvCache {
                prompt_len,
                capacity: l.kv_capacity_tokens,
            });
        }
        let max_n = MAX_N.min(l.max_num_seqs);
        if r.n == 0 || r.n > max_n {
            return Err(EngineError::InvalidRequest(format!(
                "n must be between 1 and {max_n}, got {}",
                r.n
            )));
        }
        if let Some(t) = r
            .prompt
            .iter()
            .chain(&r.stop_token_ids)
            .find(|t| t.0 as usize >= l.vocab_size)
        {
            return Err(EngineError::InvalidRequest(format!(
                "token id {} is outside the vocabulary of {}",
                t.0, l.vocab_size
            )));
        }
        r.sampling.validate(l.vocab_size)?;
        Ok(max_tokens)
    }
}

/// The events of one request. Dropping it before the end cancels the request.
pub struct TokenStream {
    id: RequestId,
    events: events::UnboundedReceiver<EngineEvent>,
    cancel: mpsc::Sender<Cancel>,
    /// Which samples have not finished.
    open: Vec<bool>,
}

impl TokenStream {
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The next event, or `None` once every sample has finished (or the request failed).
    pub async fn next(&mut self) -> Option<EngineEvent> {
        if self.is_done() {
            return None;
        }
        let e = self.events.recv().await;
        self.track(e)
    }

    /// As `next`, for callers outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<EngineEvent> {
        if self.is_done() {
            return None;
        }
        let e = self.events.blocking_recv();
        self.track(e)
    }

    fn track(&mut self, e: Option<EngineEvent>) -> Option<EngineEvent> {
        match &e {
            Some(EngineEvent::Finished { index, .. }) => {
                if let Some(o) = self.open.get_mut(*index) {
                    *o = false;
                }
            }
            Some(EngineEvent::Failed(_)) | None => self.open.iter_mut().for_each(|o| *o = false),
            _ => {}
        }
        e.or(Some(EngineEvent::Failed("the engine stopped".into())))
    }

    pub fn is_done(&self) -> bool {
        !self.open.iter().any(|o| *o)
    }

    /// Stops one sample (a stop string matched, say); the others go on.
    pub fn cancel_sample(&mut self, index: usize) {
        if let Some(o) = self.open.get_mut(index).filter(|o| **o) {
            *o = false;
            let _ = self.cancel.send(Cancel::Sample(self.id, index));
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if !self.is_done() {
            // The engine may already be gone; then there is nothing left to free.
            let _ = self.cancel.send(Cancel::Request(self.id));
        }
    }
}
