//! An agent's definition: one TOML file per agent, parsed and checked here.
//!
//! Owns the file format (every key, its type and its range) and the error that names the file,
//! the line and the key at fault. Checks that need the running server (does the collection
//! exist, is the model served) take a [`Catalog`] so this module depends on nothing but serde
//! and toml. Invariant: a `Definition` that left `load` is valid; nothing downstream re-checks.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

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
        Checker {
            text,
            file,
            catalog,
        }
        .check(&def)?;
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

    pub fn owns(&self, name: &str) -> bool {
        self.intents.iter().any(|i| i.name.get_ref() == name)
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

/// 1-based line of the span's start.
fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key written on the span's line (`key = …`), or `-` when the line holds none.
fn key_at(text: &str, span: &Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => k.trim().to_string(),
        _ => line
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string(),
    }
}

struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    catalog: &'a dyn Catalog,
}

impl Checker<'_> {
    fn fail(&self, span: Range<usize>, key: &str, problem: impl Into<String>) -> DefinitionError {
        DefinitionError {
            file: self.file.to_path_buf(),
            line: line_of(self.text, &span),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    fn check(&self, d: &Definition) -> Result<(), DefinitionError> {
        if !valid_name(d.name.get_ref()) {
            return Err(self.fail(
                d.name.span(),
                "name",
                format!(
                    "`{}` is not a valid agent name; use 1 to {MAX_NAME_LEN} lowercase letters, \
                     digits, `-` or `_`",
                    d.name.get_ref()
                ),
            ));
        }
        if d.languages.get_ref().is_empty() {
            return Err(self.fail(
                d.languages.span(),
                "languages",
                "name at least one language",
            ));
        }
        self.check_intents(d)?;
        self.check_knowledge(&d.knowledge)?;
        self.check_models(d)?;
        self.check_thresholds(&d.thresholds)?;
        self.check_handoff(&d.handoff)
    }

    fn check_intents(&self, d: &Definition) -> Result<(), DefinitionError> {
        let mut seen = BTreeSet::new();
        let named = d
            .intents
            .iter()
            .map(|i| ("intents", &i.name, &i.examples))
            .chain(d.triage.iter().map(|t| ("triage", &t.name, &t.examples)))
            .chain(
                d.escalations
                    .iter()
                    .map(|e| ("escalations", &e.topic, &e.phrases)),
            );
        for (section, name, examples) in named {
            let key = if section == "escalations" {
                "topic"
            } else {
                "name"
            };
            if !valid_name(name.get_ref()) {
                return Err(self.fail(
                    name.span(),
                    key,
                    format!(
                        "`{}` is not a valid name; use lowercase letters, digits, `-` or `_`",
                        name.get_ref()
                    ),
                ));
            }
            if !seen.insert(name.get_ref().clone()) {
                return Err(self.fail(
                    name.span(),
                    key,
                    format!(
                        "`{}` is defined twice; names must be unique",
                        name.get_ref()
                    ),
                ));
            }
            let what = if section == "escalations" {
                "phrases"
            } else {
                "examples"
            };
            if examples.get_ref().iter().all(|e| e.trim().is_empty()) {
                return Err(self.fail(
                    examples.span(),
                    what,
                    format!("`{}` needs at least one non-empty entry", name.get_ref()),
                ));
            }
        }
        for t in &d.triage {
            for c in &t.collect {
                if !valid_name(c) {
                    return Err(self.fail(
                        t.name.span(),
                        "collect",
                        format!("`{c}` is not a valid detail name; use snake_case"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_knowledge(&self, k: &KnowledgeConfig) -> Result<(), DefinitionError> {
        for c in k.collections.get_ref() {
            if !self.catalog.has_collection(c) {
                return Err(self.fail(
                    k.collections.span(),
                    "collections",
                    format!(
                        "no collection `{c}` in the knowledge base; create it with `enclave kb \
                         create {c}` or remove it here"
                    ),
                ));
            }
        }
        self.range(&k.top_k, "top_k", 1, 20)?;
        self.range(
            &k.full_context_max_tokens,
            "full_context_max_tokens",
            0,
            1_000_000,
        )
    }

    fn check_models(&self, d: &Definition) -> Result<(), DefinitionError> {
        let m = &d.models;
        let named = m
            .default
            .iter()
            .map(|s| ("default", s))
            .chain(m.fallback.iter().map(|s| ("fallback", s)))
            .chain(m.routes.iter().map(|r| ("model", &r.model)));
        for (key, model) in named {
            if !self.catalog.has_model(model.get_ref()) {
                return Err(self.fail(
                    model.span(),
                    key,
                    format!(
                        "no model `{}` is served; start the server with `--model` for it, or \
                         name a served model",
                        model.get_ref()
                    ),
                ));
            }
        }
        let known: BTreeSet<&str> = d.intent_names().collect();
        for r in &m.routes {
            if let Some(i) = r
                .intents
                .get_ref()
                .iter()
                .find(|i| !known.contains(i.as_str()))
            {
                return Err(self.fail(
                    r.intents.span(),
                    "intents",
                    format!("the route names intent `{i}`, which this agent does not define"),
                ));
            }
        }
        self.range(&m.max_answer_tokens, "max_answer_tokens", 16, 4096)
    }

    fn check_thresholds(&self, t: &Thresholds) -> Result<(), DefinitionError> {
        for (key, v) in [
            ("confidence_floor", &t.confidence_floor),
            ("intent_floor", &t.intent_floor),
            ("retrieval_floor", &t.retrieval_floor),
            ("escalation_similarity", &t.escalation_similarity),
        ] {
            let x = *v.get_ref();
            if !(0.0..=1.0).contains(&x) {
                return Err(self.fail(
                    v.span(),
                    key,
                    format!("{x} is out of range; it must be between 0 and 1"),
                ));
            }
        }
        self.range(&t.max_clarifications, "max_clarifications", 0, 10)?;
        self.range(&t.max_turns, "max_turns", 1, 500)?;
        self.range(&t.loop_limit, "loop_limit", 1, 20)
    }

    fn range(
        &self,
        v: &Spanned<usize>,
        key: &str,
        min: usize,
        max: usize,
    ) -> Result<(), DefinitionError> {
        let x = *v.get_ref();
        if x < min || x > max {
            return Err(self.fail(
                v.span(),
                key,
                format!("{x} is out of range; it must be between {min} and {max}"),
            ));
        }
        Ok(())
    }

    fn check_handoff(&self, h: &HandoffConfig) -> Result<(), DefinitionError> {
        if !valid_name(h.queue.get_ref()) {
            return Err(self.fail(
                h.queue.span(),
                "queue",
                "use lowercase letters, digits, `-` or `_` for the queue name",
            ));
        }
        if let Some(w) = &h.webhook {
            let url = w.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(self.fail(
                    w.span(),
                    "webhook",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        let Some(b) = &h.business_hours else {
            return Ok(());
        };
        if parse_offset(b.utc_offset.get_ref()).is_none() {
            return Err(self.fail(
                b.utc_offset.span(),
                "utc_offset",
                format!(
                    "`{}` is not an offset like +01:00 or -05:00",
                    b.utc_offset.get_ref()
                ),
            ));
        }
        for (key, v) in [("open", &b.open), ("close", &b.close)] {
            if parse_clock(v.get_ref()).is_none() {
                return Err(self.fail(
                    v.span(),
                    key,
                    format!("`{}` is not a time like 09:00", v.get_ref()),
                ));
            }
        }
        if let Some(d) = b.days.get_ref().iter().find(|d| day_index(d).is_none()) {
            return Err(self.fail(
                b.days.span(),
                "days",
                format!("`{d}` is not a day; use mon, tue, wed, thu, fri, sat or sun"),
            ));
        }
        Ok(())
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
