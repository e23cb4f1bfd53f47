//! The checks behind [`Definition::parse`]: names, ranges, cross-references and what the
//! server must offer, each failure naming the file, the line and the key at fault.
//!
//! Split from `definition` for size; the format and its defaults stay there. Depends on
//! `definition` and toml's spans only: what it needs of the running server comes through a
//! [`Catalog`], so checking a file never needs the server.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::definition::{
    day_index, parse_clock, parse_offset, valid_name, Catalog, Definition, DefinitionError,
    HandoffConfig, KnowledgeConfig, Thresholds, MAX_NAME_LEN,
};

/// 1-based line of the span's start.
pub(super) fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key written on the span's line (`key = …`), or `-` when the line holds none.
pub(super) fn key_at(text: &str, span: &Range<usize>) -> String {
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

/// Checks a parsed definition; the first problem found is the error.
pub(super) fn check(
    d: &Definition,
    text: &str,
    file: &Path,
    catalog: &dyn Catalog,
) -> Result<(), DefinitionError> {
    Checker {
        text,
        file,
        catalog,
    }
    .check(d)
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
