//! `TextStream`: an engine's token stream as text. Each sample's tokens go through the
//! incremental detokenizer and the stop-string matcher; a matched stop string ends that sample
//! with `Stop` (the engine is told to stop it at once) and is left out of the text.
//!
//! The meeting point of `engine` (tokens) and `tokenizer` (text), for the API and the CLI.
//! Neither of those two modules may depend on this one.

use crate::engine::{EngineEvent, FinishReason, TokenOutput, TokenStream};
use crate::tokenizer::{
    IncrementalDetokenizer, StopOutput, StopStrings, Tokenizer, TokenizerError,
};

/// What happened to one sample.
#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    /// Prompt tokens served by the prefix cache.
    Admitted {
        num_cached_tokens: usize,
    },
    /// New text of sample `index` (possibly empty while a stop string might be starting), with
    /// the token that produced it.
    Delta {
        index: usize,
        text: String,
        token: TokenOutput,
    },
    /// Sample `index` is done; `text` is what was held back until now.
    Finished {
        index: usize,
        text: String,
        reason: FinishReason,
    },
    Failed(String),
}

struct SampleText {
    detok: IncrementalDetokenizer,
    stops: StopStrings,
    done: bool,
}

pub struct TextStream<'t> {
    tokens: TokenStream,
    tokenizer: &'t Tokenizer,
    samples: Vec<SampleText>,
}

impl<'t> TextStream<'t> {
    /// `n` samples; `skip_special_tokens` as in the OpenAI API (true by default there).
    pub fn new(
        tokens: TokenStream,
        tokenizer: &'t Tokenizer,
        n: usize,
        stop: &[String],
        skip_special_tokens: bool,
    ) -> Self {
        let samples = (0..n)
            .map(|_| SampleText {
                detok: IncrementalDetokenizer::new(skip_special_tokens),
                stops: StopStrings::new(stop.to_vec()),
                done: false,
            })
            .collect();
        Self {
            tokens,
            tokenizer,
            samples,
        }
    }

    /// The next event, `None` at the end. Blocking: for threads outside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Result<TextEvent, TokenizerError>> {
        loop {
            let event = self.tokens.blocking_next()?;
            if let Some(out) = self.translate(event).transpose() {
                return Some(out);
            }
        }
    }

    /// As `blocking_next`, for async callers.
    pub async fn next(&mut self) -> Option<Result<TextEvent, TokenizerError>> {
        loop {
            let event = self.tokens.next().await?;
            if let Some(out) = self.translate(event).transpose() {
                return Some(out);
            }
        }
    }

    /// `None` for events about a sample that a stop string already ended.
    fn translate(&mut self, event: EngineEvent) -> Result<Option<TextEvent>, TokenizerError> {
        Ok(match event {
            EngineEvent::Admitted { num_cached_tokens } => {
                Some(TextEvent::Admitted { num_cached_tokens })
            }
            EngineEvent::Failed(m) => Some(TextEvent::Failed(m)),
            EngineEvent::Token(token) => {
                let index = token.index;
                let Some(s) = self.samples.get_mut(index).filter(|s| !s.done) else {
                    return Ok(None);
                };
                let piece = s.detok.push(self.tokenizer, token.token)?;
                match s.stops.push(&piece) {
                    StopOutput::Text(text) => Some(TextEvent::Delta { index, text, token }),
                    StopOutput::Stopped { text, .. } => {
                        s.done = true;
                        self.tokens.cancel_sample(index);
                        Some(TextEvent::Finished {
                            index,
                            text,
                            reason: FinishReason::Stop,
                        })
                    }
                }
            }
            EngineEvent::Finished { index, reason } => {
                let Some(s) = self.samples.get_mut(index).filter(|s| !s.done) else {
                    return Ok(None);
                };
                s.done = true;
                let tail = s.detok.finish(self.tokenizer)?;
                let (text, reason) = match s.stops.push(&tail) {
                    StopOutput::Stopped { text, .. } => (text, FinishReason::Stop),
                    StopOutput::Text(mut text) => match s.stops.finish() {
                        StopOutput::Stopped { text: t, .. } => {
                            text.push_str(&t);
                            (text, FinishReason::Stop)
                        }
                        StopOutput::Text(t) => {
                            text.push_str(&t);
                            (text, reason)
                        }
                    },
                };
                Some(TextEvent::Finished {
                    index,
                    text,
                    reason,
                })
            }
        })
    }
}
