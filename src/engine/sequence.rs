//! `Sequence`: one stream of tokens as the scheduler sees it (prompt, generated tokens, how many
//! are in the KV cache) and the limits that end it.
//!
//! Plain data; depends only on `ids`. Invariant: `num_computed_tokens < tokens.len()` while the
//! sequence waits or runs (the last token's logits are always still to come).

use crate::ids::{SeqId, TokenId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token (or, in a text stream, a stop string).
    Stop,
    /// `max_tokens`, the context length or the KV cache capacity.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceStatus {
    Waiting,
    Running,
    Finished(FinishReason),
}

/// What ends a sequence besides cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceLimits {
    /// Generated tokens at most (already bounded by the context length).
    pub max_tokens: usize,
    /// The request's stop tokens plus, unless it ignores EOS, the model's.
    pub stop_token_ids: Vec<TokenId>,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    tokens: Vec<TokenId>,
    prompt_len: usize,
    pub num_computed_tokens: usize,
    pub status: SequenceStatus,
    pub limits: SequenceLimits,
    /// Sequences this one stands for until its first token is sampled: the n samples of one
    /// request share a prefill, then fork.
    pub num_seats: usize,
    /// Prompt tokens found in the prefix cache at first admission.
    pub num_cached_tokens: Option<usize>,
    pub num_preemptions: u32,
}

impl Sequence {
    pub fn new(id: SeqId, prompt: Vec<TokenId>, limits: SequenceLimits) -> Self {
        Self {
            id,
            prompt_len: prompt.len(),
            tokens: prompt,
            num_computed_tokens: 0,
            status: SequenceStatus::Waiting,
            limits,
            num_seats: 1,
            num_cached_tokens: None,
            num_preemptions: 0,
        }
    }

    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn output(&self) -> &[TokenId] {
        &self.tokens[self.prompt_len..]
    }

    /// Tokens still to be written to the KV cache before the next sampling.
    pub fn num_uncomputed_tokens(&self) -> usize {
        self.tokens.len() - self.num_computed_tokens
    }

    /// Appends a sampled token and says whether the sequence is now finished.
    pub fn append(&mut self, token: TokenId) -> Option<FinishReason> {
        self.tokens.push(token);
        let reason = if self.limits.stop_token_ids.contains(&token) {
            Some(FinishReason::Stop)
        } else if self.output().len() >= self.limits.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        if let Some(r) = reason {
            self.status = SequenceStatus::Finished(r);
        }
        reason
    }

    /// Another sample of the same prompt, taken just before this one appends its first token:
    /// it shares the computed prefill and appends its own token.
    pub fn fork(&self, id: SeqId) -> Self {
        let mut child = self.clone();
        child.id = id;
        child.num_seats = 1;
        child
    }

    /// Back to waiting with nothing computed: its blocks were taken and it will be recomputed.
    pub fn preempt(&mut self) {
        self.num_computed_tokens = 0;
        self.status = SequenceStatus::Waiting;
        self.num_preemptions += 1;
    }
}
