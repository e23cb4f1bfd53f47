//! An agent's definition: one TOML file per agent, parsed and checked here.
//!
//! Owns the file format (every key, its type and its range) and the error that names the file,
//! the line and the key at fault; the checks themselves are in `validate`. Checks that need the
//! running server (does the collection exist, is the model served) take a [`Catalog`] so this
//! module depends on nothing but serde and toml. Invariant: a `Definition` that left `load` is
//! valid; nothing downstream re-checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::validate::{self, key_at, line_of};

/// Where a definition's problem is: the file, the 1-based line, the key.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: `{key}`: {problem}", file.display())]
pub struct DefinitionError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Formality {
    Formal,
    #[default]
    Neutral,
    Friendly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EmojiPolicy {
    #[default]
    Never,
    Sparing,
    Allowed,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tone {
    #[serde(default)]
    pub formality: Formality,
    #[serde(default = "yes")]
    pub contractions: bool,
    #[serde(default)]
    pub emoji: EmojiPolicy,
    /// How to apologise.
    #[serde(default)]
    pub apology: String,
    /// How to deliver bad news.
    #[serde(default)]
    pub bad_news: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(default)]
    pub persona: String,
    #[serde(default)]
    pub tone: Tone,
}

/// An intent the agent answers itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedIntent {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    pub examples: Spanned<Vec<String>>,
}

/// An intent the agent only triages: it collects `collect`, then hands off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageIntent {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub collect: Vec<String>,
    pub examples: Spanned<Vec<String>>,
}

/// A topic that always goes to a human, whatever the confidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub topic: Spanned<String>,
    #[serde(default)]
    pub description: String,
    pub phrases: Spanned<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RetrievalMode {
    /// Retrieve the best passages per turn.
    Rag,
    /// The whole collection in the prompt, served from the prefix cache after the first turn.
    FullContext,
    /// Full context when the collections fit `full_context_max_tokens`, else RAG.
    #[default]
    Auto,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    #[serde(default = "no_collections")]
    pub collections: Spanned<Vec<String>>,
    #[serde(default)]
    pub mode: RetrievalMode,
    #[serde(default = "default_full_context_tokens")]
    pub full_context_max_tokens: Spanned<usize>,
    #[serde(default = "default_top_k")]
    pub top_k: Spanned<usize>,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            collections: Spanned::new(0..0, Vec::new()),
            mode: RetrievalMode::default(),
            full_context_max_tokens: default_full_context_tokens(),
            top_k: default_top_k(),
        }
    }
}

fn no_collections() -> Spanned<Vec<String>> {
    unspanned(Vec::new())
}
fn default_full_context_tokens() -> Spanned<usize> {
    Spanned::new(0..0, 3000)
}
fn default_top_k() -> Spanned<usize> {
    Spanned::new(0..0, 3)
}

/// A stronger (or cheaper) model for some intents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    pub intents: Spanned<Vec<String>>,
    pub model: Spanned<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// `None`: the server's first chat model.
    #[serde(default)]
    pub default: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<ModelRoute>,
    /// Tried in order when the chosen model cannot take the request.
    #[serde(default)]
    pub fallback: Vec<Spanned<String>>,
    /// Longest answer, in tokens.
    #[serde(default = "default_answer_tokens")]
    pub max_answer_tokens: Spanned<usize>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            default: None,
            routes: Vec::new(),
            fallback: Vec::new(),
            max_answer_tokens: default_answer_tokens(),
        }
    }
}

fn default_answer_tokens() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Below this combined confidence the agent clarifies, then hands off.
    #[serde(default = "default_confidence_floor")]
    pub confidence_floor: Spanned<f32>,
    /// Below this intent similarity a message is out of scope.
    #[serde(default = "default_intent_floor")]
    pub intent_floor: Spanned<f32>,
    /// Below this retrieval score no passage grounds an answer.
    #[serde(default = "default_retrieval_floor")]
    pub retrieval_floor: Spanned<f32>,
    /// A message this similar to an escalation phrase escalates even without its exact words.
    #[serde(default = "default_escalation_similarity")]
    pub escalation_similarity: Spanned<f32>,
    #[serde(default = "default_max_clarifications")]
    pub max_clarifications: Spanned<usize>,
    #[serde(default = "default_max_turns")]
    pub max_turns: Spanned<usize>,
    /// Customer turns on the same unresolved intent before the agent hands off.
    #[serde(default = "default_loop_limit")]
    pub loop_limit: Spanned<usize>,
}

fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}
fn default_confidence_floor() -> Spanned<f32> {
    unspanned(0.35)
}
fn default_intent_floor() -> Spanned<f32> {
    unspanned(0.44)
}
fn default_retrieval_floor() -> Spanned<f32> {
    unspanned(0.25)
}
fn default_escalation_similarity() -> Spanned<f32> {
    unspanned(0.8)
}
fn default_max_clarifications() -> Spanned<usize> {
    unspanned(1)
}
fn default_max_turns() -> Spanned<usize> {
    unspanned(20)
}
fn default_loop_limit() -> Spanned<usize> {
    unspanned(2)
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            confidence_floor: default_confidence_floor(),
            intent_floor: default_intent_floor(),
            retrieval_floor: default_retrieval_floor(),
            escalation_similarity: default_escalation_similarity(),
            max_clarifications: default_max_clarifications(),
            max_turns: default_max_turns(),
            loop_limit: default_loop_limit(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// `+HH:MM` or `-HH:MM` from UTC.
    pub utc_offset: Spanned<String>,
    /// `mon` … `sun`.
    pub days: Spanned<Vec<String>>,
    /// `HH:MM`, local.
    pub open: Spanned<String>,
    pub close: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WaitMethod {
    /// `base_minutes` plus `minutes_per_waiting` for each conversation already waiting.
    #[default]
    QueueLength,
    /// Always `base_minutes`.
    Fixed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitEstimate {
    #[serde(default)]
    pub method: WaitMethod,
    #[serde(default = "default_base_minutes")]
    pub base_minutes: u32,
    #[serde(default = "default_minutes_per_waiting")]
    pub minutes_per_waiting: u32,
}

fn default_base_minutes() -> u32 {
    2
}
fn default_minutes_per_waiting() -> u32 {
    4
}

impl Default for WaitEstimate {
    fn default() -> Self {
        Self {
            method: WaitMethod::default(),
            base_minutes: default_base_minutes(),
            minutes_per_waiting: default_minutes_per_waiting(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffConfig {
    #[serde(default = "default_queue")]
    pub queue: Spanned<String>,
    /// `None`: staffed around the clock.
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
    #[serde(default)]
    pub wait_estimate: WaitEstimate,
    /// An on-prem URL the packet is POSTed to.
    #[serde(default)]
    pub webhook: Option<Spanned<String>>,
}

fn default_queue() -> Spanned<String> {
    unspanned("support".to_string())
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            queue: default_queue(),
            business_hours: None,
            wait_estimate: WaitEstimate::default(),
            webhook: None,
        }
    }
}

/// One agent, as its file says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: Spanned<String>,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub greeting: String,
    /// ISO 639-1 codes the agent answers in; the first is its default.
    #[serde(default = "default_languages")]
    pub languages: Spanned<Vec<String>>,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub intents: Vec<OwnedIntent>,
    #[serde(default)]
    pub triage: Vec<TriageIntent>,
    #[serde(default)]
    pub escalations: Vec<Escalation>,
    #[serde(default)]
    pub knowledge: KnowledgeConfig,
    #[serde(default)]
    pub models: ModelsConfig,
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default)]
    pub handoff: HandoffConfig,
}

fn default_languages() -> Spanned<Vec<String>> {
    unspanned(vec!["en".to_string()])
}

/// What the server can offer an agent: checked at load so a typo fails there, not mid-chat.
pub trait Catalog {
    fn has_collection(&self, name: &str) -> bool;
    fn has_model(&self, name: &str) -> bool;
}

/// A catalog that accepts everything: for checking a file's own consistency alone.
pub struct AnyCatalog;

impl Catalog for AnyCatalog {
    fn has_collection(&self, _: &str) -> bool {
        true
    }
    fn has_model(&self, _: &str) -> bool {
        true
    }
}

pub const MAX_NAME_LEN: usize = 64;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Whether `name` may name an agent, an intent or a topic: lowercase ASCII, digits, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses `HH:MM` into minutes since midnight.
pub fn parse_clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

/// Parses `+HH:MM` / `-HH:MM` into minutes east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let minutes = parse_clock(&s[1..])? as i32;
    (minutes <= 14 * 60).then_some(sign * minutes)
}

pub fn day_index(day: &str) -> Option<usize> {
    DAYS.iter().position(|d| *d == day)
}

impl Definition {
    /// Parses and checks `text`, read from `file`.
    pub fn parse(text: &str, file: &Path, catalog: &dyn Catalog) -> Result<Self, DefinitionError> {
        let def: Definition = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            DefinitionError {
                file: file.to_path_buf(),
                line: line_of(text, &span),
                key: key_at(text, &span),
                problem: e.message().trim().to_string(),
            }
        })?;
        validate::check(&def, text, file, catalog)?;
        Ok(def)
    }

    /// Reads and checks one agent file. The file's stem must be the agent's name.
    pub fn load(file: &Path, catalog: &dyn Catalog) -> Result<Self, DefinitionError> {
        let text = std::fs::read_to_string(file).map_err(|e| DefinitionError {
            file: file.to_path_buf(),
            line: 0,
            key: "-".into(),
            problem: format!("cannot read the file: {e}"),
        })?;
        let def = Self::parse(&text, file, catalog)?;
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem != def.name.get_ref() {
            return Err(DefinitionError {
                file: file.to_path_buf(),
                line: line_of(&text, &def.name.span()),
                key: "name".into(),
                problem: format!(
                    "the agent is called `{}` but its file is `{stem}.toml`; rename one so they \
                     agree",
                    def.name.get_ref()
                ),
            });
        }
        Ok(def)
    }

    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// Every intent name, owned first.
    pub fn intent_names(&self) -> impl Iterator<Item = &str> {
        self.intents
            .iter()
            .map(|i| i.name.get_ref().as_str())
            .chain(self.triage.iter().map(|t| t.name.get_ref().as_str()))
    }

    pub fn triage_intent(&self, name: &str) -> Option<&TriageIntent> {
        self.triage.iter().find(|t| t.name.get_ref() == name)
    }

    /// The model routed for `intent`, else the default.
    pub fn model_for(&self, intent: Option<&str>) -> Option<&str> {
        intent
            .and_then(|i| {
                self.models
                    .routes
                    .iter()
                    .find(|r| r.intents.get_ref().iter().any(|n| n == i))
            })
            .map(|r| r.model.get_ref().as_str())
            .or(self.models.default.as_ref().map(|d| d.get_ref().as_str()))
    }
}

/// Intent name → examples, owned and triaged alike.
pub fn labelled_examples(d: &Definition) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for i in &d.intents {
        out.insert(i.name.get_ref().clone(), i.examples.get_ref().clone());
    }
    for t in &d.triage {
        out.insert(t.name.get_ref().clone(), t.examples.get_ref().clone());
    }
    out
}
