//! Constrained decoding: forcing a sample's output to match a JSON schema, any JSON object,
//! or a tool-call shape, by masking the logits of every token that would break the grammar.
//!
//! Owns: the bridge to `llguidance` (grammar compilation, per-step token masks), the
//! per-model vocabulary it needs ([`GrammarVocab`], from the token bytes the tokenizer module
//! provides), the JSON formatting policy (see [`JSON_WHITESPACE`]) and the schema built for
//! `tool_choice: "required"`.
//!
//! Must not depend on: our tokenizer module, the model, tensors or the scheduler. It sees
//! token ids, token bytes and a plain `&mut [f32]` of logits, so the engine decides where
//! masking happens (CPU copy of the logits row) and the API decides which spec to build.
//!
//! Invariant: a matcher only ever allows tokens whose bytes keep the output a prefix of a
//! document matching the grammar, and allows an EOS token only when the output so far is a
//! complete document; so a sample that stops on EOS is valid, one cut by `max_tokens` may not be.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Map, Value};

/// Whitespace allowed between JSON tokens, at most once per gap: one space.
///
/// llguidance's default (`whitespace_flexible`) is an unbounded run of whitespace, and a weak
/// model (or a strong one in a bad state) can spend its whole budget on newlines and tabs.
/// Even a bounded run per gap lets greedy decoding waste most of the output on it. One space
/// per gap keeps the output in the `{"a": 1, "b": [2, 3]}` style that models read and write
/// well, and makes its length depend on the content alone.
pub const JSON_WHITESPACE: &str = r"\x20";

#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    /// The client's schema cannot be compiled (unsupported keyword, unsatisfiable, too
    /// large): the API answers 400 with this message.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// The token bytes or EOS ids handed to [`GrammarVocab::new`] are unusable.
    #[error("grammar vocabulary: {0}")]
    Vocab(String),
    /// A step failed: a token outside the mask, or llguidance gave up (e.g. its per-step
    /// lexer budget ran out). The sample cannot continue under the constraint.
    #[error("grammar matcher: {0}")]
    Matcher(String),
}

/// The vocabulary as llguidance needs it: each token id's bytes, built once per model and
/// shared (`Arc`) by every request.
pub struct GrammarVocab {
    factory: ParserFactory,
    n_tokens: usize,
    eos: Vec<TokenId>,
}

impl std::fmt::Debug for GrammarVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarVocab")
            .field("n_tokens", &self.n_tokens)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

/// The trie is the whole tokenizer as far as masking goes; llguidance asks the env to
/// tokenize only when it forces text, which we never enable.
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    // Greedy tokenization is not what the model would produce; saying so stops llguidance
    // from forcing tokens on the model's behalf.
    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// toktrie packs a token id into 24 bits, with one value reserved for "no token".
const MAX_VOCAB: usize = (1 << 24) - 1;
/// toktrie stores a bounded number of parents per trie node; 1024-byte tokens exist (GLM-4).
const MAX_TOKEN_LEN: usize = 1024;

impl GrammarVocab {
    /// `tokens[i]` = the exact bytes token id i decodes to; `special[i]` marks control
    /// tokens, which are stored behind toktrie's 0xFF marker so no grammar text can match
    /// them; `eos` = the ids that end generation (allowed exactly when the grammar is
    /// complete).
    pub fn new(
        tokens: Vec<Vec<u8>>,
        special: Vec<bool>,
        eos: Vec<u32>,
    ) -> Result<Self, GrammarError> {
        let n_tokens = tokens.len();
        if n_tokens == 0 || n_tokens > MAX_VOCAB {
            return Err(GrammarError::Vocab(format!(
                "{n_tokens} tokens (need 1..={MAX_VOCAB})"
            )));
        }
        if special.len() != n_tokens {
            return Err(GrammarError::Vocab(format!(
                "{} special flags for {n_tokens} tokens",
                special.len()
            )));
        }
        if eos.is_empty() {
            return Err(GrammarError::Vocab("no EOS token".into()));
        }
        if let Some(bad) = eos.iter().find(|&&t| t as usize >= n_tokens) {
            return Err(GrammarError::Vocab(format!(
                "EOS id {bad} outside the {n_tokens}-token vocabulary"
            )));
        }
        let mut words = tokens;
        for (id, (word, &is_special)) in words.iter_mut().zip(&special).enumerate() {
            if is_special || word.is_empty() {
                // An empty special name would be the bare marker, shared by every such
                // token; giving each its id keeps them distinct and still unmatchable.
                let name = if word.is_empty() {
                    format!("<[{id}]>").into_bytes()
                } else {
                    std::mem::take(word)
                };
                *word = std::iter::once(TokTrie::SPECIAL_TOKEN_MARKER)
                    .chain(name)
                    .collect();
            }
            if word.len() > MAX_TOKEN_LEN {
                return Err(GrammarError::Vocab(format!(
                    "token {id} is {} bytes (max {MAX_TOKEN_LEN})",
                    word.len()
                )));
            }
        }
        // n_tokens <= MAX_VOCAB, so the cast is exact.
        let info = TokRxInfo::new(n_tokens as u32, eos[0]);
        // toktrie asserts on inputs it cannot represent; those are vocabulary errors.
        let env = llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let trie = TokTrie::from(&info, &words).with_eos_tokens(&eos);
            let env: TokEnv = Arc::new(TrieEnv { trie });
            Ok(env)
        }))
        .map_err(|e| GrammarError::Vocab(short_error(&e)))?;
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Vocab(e.to_string()))?;
        // llguidance would otherwise print grammar warnings to stderr per request.
        factory.quiet();
        Ok(Self {
            factory,
            n_tokens,
            eos,
        })
    }

    /// Number of token ids the tokenizer defines (the model's logits row may be longer).
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    fn is_eos(&self, token: u32) -> bool {
        self.eos.contains(&token)
    }
}

/// What a sample's output must be. Schemas are compiled strictly: a keyword llguidance cannot
/// enforce is an `InvalidSchema` error, never silently ignored, so EOS-terminated output
/// always validates. Object properties come out in the order the schema lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// OpenAI `response_format: {type: "json_schema"}`, and named `tool_choice` (the
    /// function's `parameters`). A boolean schema is accepted too (`true` = any JSON value).
    JsonSchema(Value),
    /// OpenAI `response_format: {type: "json_object"}`: any JSON object.
    JsonObject,
}

impl GrammarSpec {
    /// The schema llguidance compiles: the client's, with our formatting options replacing
    /// any `x-guidance` it carried (formatting is server policy, not a request knob).
    fn to_schema(&self) -> Result<Value, GrammarError> {
        let mut schema = match self {
            GrammarSpec::JsonObject => json!({ "type": "object" }),
            GrammarSpec::JsonSchema(Value::Bool(true)) => json!({}),
            GrammarSpec::JsonSchema(Value::Bool(false)) => {
                return Err(GrammarError::InvalidSchema(
                    "schema `false` matches nothing".into(),
                ))
            }
            GrammarSpec::JsonSchema(v @ Value::Object(_)) => v.clone(),
            GrammarSpec::JsonSchema(_) => {
                return Err(GrammarError::InvalidSchema(
                    "a schema must be an object or a boolean".into(),
                ))
            }
        };
        if let Value::Object(map) = &mut schema {
            map.insert(
                "x-guidance".into(),
                json!({ "whitespace_pattern": JSON_WHITESPACE }),
            );
        }
        Ok(schema)
    }
}

/// llguidance reports panics with a backtrace appended; the API and logs want the message.
fn short_error(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    match s.find("\n<backtrace>") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// One sample's matcher: which tokens may come next; fed each sampled token.
pub struct GrammarMatcher {
    vocab: Arc<GrammarVocab>,
    matcher: Matcher,
    /// Mask for the current state, kept so that `consume` can check the sampled token
    /// without another parser walk, and a repeated `mask_logits` costs nothing.
    mask: Option<SimpleVob>,
    accepting: bool,
    /// An EOS was consumed: the sample is over and only EOS may follow.
    finished: bool,
}

impl GrammarMatcher {
    /// Compiles the grammar; a schema llguidance rejects is `InvalidSchema` with its
    /// message (the API returns it as a 400).
    pub fn new(vocab: &Arc<GrammarVocab>, spec: &GrammarSpec) -> Result<Self, GrammarError> {
        let grammar = TopLevelGrammar::from_json_schema(spec.to_schema()?);
        // Schema compilation runs on client input; a panic in it must not take the engine down.
        let parser = llguidance::panic_utils::catch_unwind(std::panic::AssertUnwindSafe(|| {
            vocab.factory.create_parser(grammar)
        }))
        .map_err(|e| GrammarError::InvalidSchema(short_error(&e)))?;
        let mut matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::InvalidSchema(short_error(&e)));
        }
        let accepting = matcher.is_accepting().map_err(matcher_error)?;
        Ok(Self {
            vocab: Arc::clone(vocab),
            matcher,
            mask: None,
            accepting,
            finished: false,
        })
    }

    /// Sets logits of disallowed tokens to -inf in place. `logits.len()` is the model's
    /// vocabulary, which may be longer than the tokenizer's: ids past the tokenizer are
    /// always disallowed. When the grammar is complete only EOS is allowed.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), GrammarError> {
        let mask = self.current_mask()?;
        apply_mask(mask, logits);
        Ok(())
    }

    /// Advances by the sampled token. Error if the token was not allowed; the matcher is
    /// left as it was, so the caller may still pick another token.
    pub fn consume(&mut self, token: u32) -> Result<(), GrammarError> {
        if self.vocab.is_eos(token) {
            // llguidance would record the EOS and stop; tracking it here keeps a later
            // `mask_logits` answering "EOS only" instead of failing on a stopped parser.
            if !self.accepting {
                return Err(GrammarError::Matcher(format!(
                    "EOS {token} before the output is complete"
                )));
            }
            self.finished = true;
            self.mask = None;
            return Ok(());
        }
        if self.finished {
            return Err(GrammarError::Matcher(format!("token {token} after EOS")));
        }
        if token as usize >= self.vocab.n_tokens {
            return Err(GrammarError::Matcher(format!(
                "token {token} outside the {}-token vocabulary",
                self.vocab.n_tokens
            )));
        }
        let allowed = match &self.mask {
            Some(mask) => mask.is_allowed(token),
            // Checked before consuming because a rejected token would leave llguidance's
            // matcher in a permanent error state.
            None => {
                self.matcher
                    .validate_tokens(&[token])
                    .map_err(matcher_error)?
                    == 1
            }
        };
        if !allowed {
            return Err(GrammarError::Matcher(format!(
                "token {token} is not allowed by the grammar here"
            )));
        }
        self.mask = None;
        self.matcher.consume_token(token).map_err(matcher_error)?;
        self.accepting = self.matcher.is_accepting().map_err(matcher_error)?;
        Ok(())
    }

    /// The ids that end generation; all a sample may emit once its matcher has failed.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.vocab.eos.to_vec()
    }

    /// True when the output so far is a complete document (EOS would be allowed).
    pub fn is_accepting(&self) -> bool {
        self.accepting || self.finished
    }

    /// Independent copy (for n > 1 samples forked from one prompt).
    pub fn fork(&self) -> Result<Self, GrammarError> {
        if let Some(e) = self.matcher.get_error() {
            return Err(GrammarError::Matcher(e));
        }
        Ok(Self {
            vocab: Arc::clone(&self.vocab),
            // A shallow clone would share the lexer cache behind a mutex, serializing
            // forks that are masked on different threads.
            matcher: self.matcher.deep_clone(),
            mask: self.mask.clone(),
            accepting: self.accepting,
            finished: self.finished,
        })
    }

    fn current_mask(&mut self) -> Result<&SimpleVob, GrammarError> {
        if self.mask.is_none() {
            let mask = if self.finished {
                self.matcher
                    .tok_env()
                    .map_err(matcher_error)?
                    .tok_trie()
                    .eos_token_set()
            } else {
                self.matcher.compute_mask_or_eos().map_err(matcher_error)?
            };
            self.mask = Some(mask);
        }
        // Filled just above when it was missing.
        self.mask
            .as_ref()
            .ok_or_else(|| GrammarError::Matcher("mask unavailable".into()))
    }
}

fn matcher_error(e: impl std::fmt::Display) -> GrammarError {
    GrammarError::Matcher(short_error(&e))
}

/// Word-at-a-time so the common all-allowed and all-disallowed runs of 32 ids cost one
/// compare; bit `i` of word `w` is token `32 * w + i`.
fn apply_mask(mask: &SimpleVob, logits: &mut [f32]) {
    let words = mask.as_slice();
    for (chunk, &word) in logits.chunks_mut(32).zip(words) {
        match word {
            u32::MAX => {}
            0 => chunk.fill(f32::NEG_INFINITY),
            _ => {
                for (i, l) in chunk.iter_mut().enumerate() {
                    if word & (1 << i) == 0 {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
    }
    let covered = (words.len() * 32).min(logits.len());
    logits[covered..].fill(f32::NEG_INFINITY);
}

/// Schema for `tool_choice: "required"`: a non-empty JSON array of
/// `{"name": <tool name>, "parameters": <that tool's schema>}` objects (vLLM's shape).
///
/// Each tool's schema moves under `$defs` and its local `$ref`s ("#/...") are rewritten to
/// point there, so tools that use their own `$defs` keep working inside the combined schema.
pub fn required_tool_calls_schema(tools: &[(&str, &Value)]) -> Result<Value, GrammarError> {
    if tools.is_empty() {
        return Err(GrammarError::InvalidSchema(
            "tool_choice \"required\" needs at least one tool".into(),
        ));
    }
    let mut defs = Map::new();
    let mut variants = Vec::with_capacity(tools.len());
    for (i, (name, params)) in tools.iter().enumerate() {
        let def = format!("tool_{i}");
        let mut params = (*params).clone();
        rebase_refs(&mut params, &format!("#/$defs/{def}"));
        defs.insert(def.clone(), params);
        variants.push(json!({
            "type": "object",
            "properties": {
                "name": { "const": name },
                "parameters": { "$ref": format!("#/$defs/{def}") },
            },
            "required": ["name", "parameters"],
            "additionalProperties": false,
        }));
    }
    Ok(json!({
        "type": "array",
        "minItems": 1,
        "items": { "anyOf": variants },
        "$defs": defs,
    }))
}

/// Keywords whose values are data, not schemas: a `"$ref"` key inside them is not a reference.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];
/// Keywords whose values map names (which may be anything, even "enum") to schemas.
const NAMED_SCHEMAS: [&str; 5] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

fn rebase_refs(schema: &mut Value, base: &str) {
    let Value::Object(map) = schema else { return };
    for (key, value) in map.iter_mut() {
        match value {
            Value::String(r) if key == "$ref" && r.starts_with('#') => {
                // "#" and "#/..." are JSON pointers from the tool's root.
                *r = format!("{base}{}", &r[1..]);
            }
            _ if DATA_KEYWORDS.contains(&key.as_str()) => {}
            Value::Object(named) if NAMED_SCHEMAS.contains(&key.as_str()) => {
                named.values_mut().for_each(|v| rebase_refs(v, base));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| rebase_refs(v, base)),
            _ => rebase_refs(value, base),
        }
    }
}
