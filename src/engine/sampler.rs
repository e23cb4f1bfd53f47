//! Choosing each sequence's next token from its row of logits.
//!
//! Owns `SamplingParams` (with their validation) and `Sampler`, the per-sequence state: the
//! penalty counts and a seedable generator. One step is: logit bias, then penalties (on a copy
//! of the row), then the grammar mask of constrained decoding, then greedy argmax, or
//! temperature, top-k, top-p, min-p and a draw.
//! Plain CPU code over a logits slice; depends on nothing but `ids` and the engine's error.
//!
//! Invariant: the same seed, prompt, parameters and logits give the same tokens. Nothing
//! iterates a hash map, ties go to the lower token id, and sample `i` of a request draws from
//! its own generator seeded from (seed, i). One step costs O(vocabulary), never a sort of it.

mod distribution;
mod lanes;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::error::EngineError;
use super::grammar::GrammarMatcher;
use crate::ids::TokenId;
use distribution::{log_sum_exp, top_n, Scaled, Truncation};

pub use distribution::argmax;

/// The most `top_logprobs` a request may ask for (OpenAI's limit).
pub const MAX_LOGPROBS: usize = 20;
pub const MAX_LOGIT_BIAS: f32 = 100.0;
pub const MAX_PRESENCE_OR_FREQUENCY_PENALTY: f32 = 2.0;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; in
    /// (0, 1], 1 keeps all.
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; `None` keeps all.
    pub top_k: Option<usize>,
    /// Drop tokens whose probability is below `min_p` times the largest; in [0, 1], 0 keeps all.
    pub min_p: f32,
    /// Hugging Face semantics over the prompt and the output: a seen token's logit is divided
    /// by it when positive and multiplied by it otherwise. Above 0; 1 is off.
    pub repetition_penalty: f32,
    /// OpenAI semantics over the output: subtracted once from every token generated so far.
    pub presence_penalty: f32,
    /// OpenAI semantics over the output: subtracted once per time a token was generated.
    pub frequency_penalty: f32,
    /// Added to the logits of these tokens (each in [-100, 100], each token at most once).
    pub logit_bias: Vec<(TokenId, f32)>,
    pub seed: Option<u64>,
    /// `Some(k)`: report the chosen token's logprob and the `k` most likely tokens' (k <= 20).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks every parameter; `vocab_size` bounds the token ids of `logit_bias`.
    pub fn validate(&self, vocab_size: usize) -> Result<(), EngineError> {
        let t = self.temperature;
        check(t.is_finite() && t >= 0.0, || {
            format!("temperature must be a finite number of at least 0 (0 is greedy), got {t}")
        })?;
        let p = self.top_p;
        check(p > 0.0 && p <= 1.0, || {
            format!("top_p must be in (0, 1] (1 turns it off), got {p}")
        })?;
        check(self.top_k != Some(0), || {
            "top_k must be at least 1 (leave it unset to turn it off), got 0".to_string()
        })?;
        let m = self.min_p;
        check((0.0..=1.0).contains(&m), || {
            format!("min_p must be in [0, 1] (0 turns it off), got {m}")
        })?;
        let r = self.repetition_penalty;
        check(r.is_finite() && r > 0.0, || {
            format!("repetition_penalty must be a finite number above 0 (1 turns it off), got {r}")
        })?;
        let limit = MAX_PRESENCE_OR_FREQUENCY_PENALTY;
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            check((-limit..=limit).contains(&v), || {
                format!("{name} must be in [-{limit}, {limit}] (0 turns it off), got {v}")
            })?;
        }
        self.validate_logit_bias(vocab_size)?;
        if let Some(k) = self.logprobs {
            check(k <= MAX_LOGPROBS, || {
                format!("logprobs must be at most {MAX_LOGPROBS}, got {k}")
            })?;
        }
        Ok(())
    }

    fn validate_logit_bias(&self, vocab_size: usize) -> Result<(), EngineError> {
        let limit = MAX_LOGIT_BIAS;
        for &(token, bias) in &self.logit_bias {
            check((token.0 as usize) < vocab_size, || {
                format!("logit_bias names token {token}, outside the vocabulary of {vocab_size} tokens (ids 0 to {})", vocab_size.saturating_sub(1))
            })?;
            check((-limit..=limit).contains(&bias), || {
                format!("logit_bias for token {token} must be in [-{limit}, {limit}], got {bias}")
            })?;
        }
        let mut ids: Vec<TokenId> = self.logit_bias.iter().map(|&(t, _)| t).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(EngineError::Sampling(format!(
                "logit_bias names token {} more than once",
                w[0]
            )));
        }
        Ok(())
    }

    /// A temperature whose reciprocal overflows is greedy in the limit, and sampling with it
    /// would turn the largest logit into NaN.
    fn is_greedy(&self) -> bool {
        !self.temperature.recip().is_finite()
    }

    fn truncation(&self) -> Truncation {
        Truncation {
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
        }
    }
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), EngineError> {
    if ok {
        Ok(())
    } else {
        Err(EngineError::Sampling(message()))
    }
}

/// One sampled token, with its logprobs when they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: TokenId,
    /// The chosen token's logprob; `Some` exactly when `SamplingParams::logprobs` is.
    pub logprob: Option<f32>,
    /// The most likely tokens with their logprobs, best first, ties by lower id.
    pub top_logprobs: Vec<(TokenId, f32)>,
}

/// The sampling state of one sequence. Not `Clone`: a copy would repeat the same random
/// draws; use `fork` to start another sample of the same request.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    penalties: Penalties,
    rng: SmallRng,
    grammar: Option<Constraint>,
}

/// A sample's grammar: live, or failed (llguidance gave up), when only EOS may follow so the
/// sample ends rather than going on unconstrained.
enum Constraint {
    Active(Box<GrammarMatcher>),
    Failed { eos: Vec<u32> },
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Active(_) => f.write_str("Active"),
            Self::Failed { .. } => f.write_str("Failed"),
        }
    }
}

impl Constraint {
    fn fork(&self) -> Self {
        match self {
            Self::Active(m) => match m.fork() {
                Ok(f) => Self::Active(Box::new(f)),
                Err(_) => Self::Failed { eos: m.eos_ids() },
            },
            Self::Failed { eos } => Self::Failed { eos: eos.clone() },
        }
    }

    fn mask(&mut self, row: &mut [f32]) {
        if let Self::Active(m) = self {
            match m.mask_logits(row) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "constrained decoding failed; ending the sample");
                    *self = Self::Failed { eos: m.eos_ids() };
                }
            }
        }
        if let Self::Failed { eos } = self {
            for (i, x) in row.iter_mut().enumerate() {
                if !eos.contains(&(i as u32)) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }

    fn consume(&mut self, token: TokenId) {
        if let Self::Active(m) = self {
            if let Err(e) = m.consume(token.0) {
                tracing::warn!(error = %e, "constrained decoding failed; ending the sample");
                *self = Self::Failed { eos: m.eos_ids() };
            }
        }
    }
}

impl Sampler {
    /// `stream_index` distinguishes the n samples of one request: sample i with seed s draws
    /// from a generator seeded from (s, i), so the same seed and request give the same n
    /// outputs.
    pub fn new(
        params: SamplingParams,
        prompt: &[TokenId],
        stream_index: u64,
        vocab_size: usize,
    ) -> Result<Self, EngineError> {
        params.validate(vocab_size)?;
        Ok(Self {
            penalties: Penalties::new(&params, prompt),
            rng: stream_rng(params.seed, stream_index),
            params,
            grammar: None,
        })
    }

    /// Constrains every token this sampler (and its forks) draws to the matcher's grammar.
    pub fn with_grammar(mut self, matcher: Option<GrammarMatcher>) -> Self {
        self.grammar = matcher.map(|m| Constraint::Active(Box::new(m)));
        self
    }

    /// Another sample of the same request: the same penalty state so far (prompt and output
    /// counts), its own generator for `stream_index` (from (seed, index) when seeded, from the
    /// OS otherwise). Lets one prefill feed n samples.
    pub fn fork(&self, stream_index: u64) -> Sampler {
        Sampler {
            params: self.params.clone(),
            penalties: self.penalties.clone(),
            rng: stream_rng(self.params.seed, stream_index),
            grammar: self.grammar.as_ref().map(Constraint::fork),
        }
    }

    /// Samples from one row of logits (one entry per vocabulary token) and records the token
    /// as generated, for the penalties.
    ///
    /// Logprobs are the log-softmax of the logits after bias and penalties but before
    /// temperature and truncation: they describe the model's distribution as adjusted by the
    /// request, not the narrower one the token was drawn from (as OpenAI and vLLM report them).
    /// NaN logits count as impossible tokens; a row with no finite logit gives token 0 and
    /// logprobs of negative infinity.
    pub fn sample(&mut self, logits: &[f32]) -> SampledToken {
        let mut row = self.adjusted_row(logits);
        if let Some(g) = &mut self.grammar {
            g.mask(&mut row);
        }
        let (token, log_norm) = self.choose(&row);
        if let Some(g) = &mut self.grammar {
            g.consume(token);
        }
        let (logprob, top_logprobs) = match self.params.logprobs {
            None => (None, Vec::new()),
            Some(n) => logprobs(&row, token, n, log_norm.or_else(|| log_sum_exp(&row))),
        };
        self.penalties.record(token);
        SampledToken {
            token,
            logprob,
            top_logprobs,
        }
    }

    /// The token, and `ln Σ exp(row)` when drawing computed it on the way: at temperature 1
    /// the draw's probabilities are the softmax's, which saves a second pass of `exp`.
    fn choose(&mut self, row: &[f32]) -> (TokenId, Option<f64>) {
        let scaled = if self.params.is_greedy() {
            None
        } else {
            Scaled::new(row, self.params.temperature)
        };
        let Some(scaled) = scaled else {
            return (argmax(row), None);
        };
        let log_norm = (self.params.logprobs.is_some() && self.params.temperature == 1.0)
            .then(|| scaled.log_sum_exp_at_temperature_one());
        let token = scaled.draw(&self.params.truncation(), self.rng.random::<f64>());
        (token, log_norm)
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The row after logit bias, then penalties (the order vLLM uses). NaN becomes negative
    /// infinity and positive infinity the largest finite value, so later arithmetic on the row
    /// never produces NaN.
    fn adjusted_row(&self, logits: &[f32]) -> Vec<f32> {
        let mut row: Vec<f32> = logits.iter().map(|&x| tame(x)).collect();
        for &(token, bias) in &self.params.logit_bias {
            if let Some(x) = row.get_mut(token.0 as usize) {
                *x = tame(*x + bias);
            }
        }
        self.penalties.apply(&self.params, &mut row);
        row
    }
}

/// The chosen token's logprob and the `n` most likely, given `ln Σ exp(row)` (`None` when no
/// logit is finite).
fn logprobs(
    row: &[f32],
    token: TokenId,
    n: usize,
    log_norm: Option<f64>,
) -> (Option<f32>, Vec<(TokenId, f32)>) {
    let logprob = |x: f32| log_norm.map_or(f32::NEG_INFINITY, |l| (f64::from(x) - l) as f32);
    let chosen = row
        .get(token.0 as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let top = top_n(row, n).into_iter().map(|(t, x)| (t, logprob(x)));
    (Some(logprob(chosen)), top.collect())
}

fn tame(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x.min(f32::MAX)
    }
}

/// What the penalties need, kept up to date one token at a time. Only what the request's
/// penalties use is kept, so a sequence without penalties holds nothing.
#[derive(Debug, Clone)]
struct Penalties {
    /// Distinct tokens of the prompt and the output, sorted; only with a repetition penalty.
    seen: Option<Vec<TokenId>>,
    /// Times each token was generated; only with a presence or frequency penalty.
    output_counts: Option<BTreeMap<TokenId, u32>>,
}

impl Penalties {
    fn new(params: &SamplingParams, prompt: &[TokenId]) -> Self {
        let seen = (params.repetition_penalty != 1.0).then(|| {
            let mut seen = prompt.to_vec();
            seen.sort_unstable();
            seen.dedup();
            seen
        });
        let counted = params.presence_penalty != 0.0 || params.frequency_penalty != 0.0;
        Self {
            seen,
            output_counts: counted.then(BTreeMap::new),
        }
    }

    fn record(&mut self, token: TokenId) {
        if let Some(seen) = &mut self.seen {
            if let Err(at) = seen.binary_search(&token) {
                seen.insert(at, token);
            }
        }
        if let Some(counts) = &mut self.output_counts {
            *counts.entry(token).or_insert(0) += 1;
        }
    }

    fn apply(&self, params: &SamplingParams, row: &mut [f32]) {
        if let Some(seen) = &self.seen {
            let r = params.repetition_penalty;
            for t in seen {
                if let Some(x) = row.get_mut(t.0 as usize) {
                    *x = tame(if *x > 0.0 { *x / r } else { *x * r });
                }
            }
        }
        if let Some(counts) = &self.output_counts {
            for (t, &n) in counts {
                if let Some(x) = row.get_mut(t.0 as usize) {
                    let penalty = params.presence_penalty + n as f32 * params.frequency_penalty;
                    *x = tame(*x - penalty);
                }
            }
        }
    }
}

/// The generator of sample `stream_index`. Half of the 256-bit state comes from the seed and
/// half from the index, each spread by `seed_from_u64`, so distinct (seed, index) pairs start
/// far apart even when the numbers are close.
fn stream_rng(seed: Option<u64>, stream_index: u64) -> SmallRng {
    let Some(seed) = seed else {
        return SmallRng::from_os_rng();
    };
    let mut state = [0u8; 32];
    let mut from_seed = SmallRng::seed_from_u64(seed);
    let mut from_index = SmallRng::seed_from_u64(stream_index);
    for (i, chunk) in state.chunks_exact_mut(8).enumerate() {
        let source = if i < 2 {
            &mut from_seed
        } else {
            &mut from_index
        };
        chunk.copy_from_slice(&source.next_u64().to_le_bytes());
    }
    SmallRng::from_seed(state)
}
