//! The agent's policy: every decision about a customer turn, made by code from measured
//! signals, never by the model, and each returned with its reason.
//!
//! Order of precedence, fixed: hard-escalation topics, an explicit request for a human, the
//! turn limit, a message in a language the agent does not speak, loops (the customer says the
//! last answer did not help, repeats a message, or asks about an intent answered `loop_limit`
//! times without resolution), a confirmation, triage in progress, out of scope, triage
//! intents, and only then an answer; after retrieval the grounding floor; after generation the
//! confidence floor. Below a floor the agent clarifies up to `max_clarifications` times and
//! then hands off; it never guesses. Because this is code, nothing a customer writes (an
//! "ignore your instructions" included) can change it.
//! Depends on `definition`, `intent` and `memory` only.

use serde::Serialize;
use serde_json::{json, Value};

use super::definition::Definition;
use super::intent::IntentMatch;
use super::memory::Memory;

/// What the agent does with a turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Retrieve, generate, and check grounding and confidence before answering.
    Answer { intent: String },
    /// Ask the customer to clarify.
    Clarify { kind: ClarifyKind },
    /// Ask for the next detail a triage intent needs.
    Collect { intent: String, detail: String },
    /// Acknowledge a confirmation that the problem is solved.
    Acknowledge,
    /// Reply politely that the agent works in other languages.
    UnsupportedLanguage { detected: String },
    /// Hand the conversation to a human.
    Handoff { reason: HandoffReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClarifyKind {
    OutOfScope,
    NoGrounding,
    LowConfidence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HandoffReason {
    HardEscalation { topic: String },
    CustomerRequest,
    TurnLimit,
    Loop { signal: String },
    OutOfScope,
    NoGrounding,
    LowConfidence,
    Triage { intent: String },
    UnsupportedLanguage,
    GenerationFailed,
}

impl HandoffReason {
    /// A stable label, for metrics and analytics.
    pub fn label(&self) -> String {
        match self {
            Self::HardEscalation { topic } => format!("hard_escalation:{topic}"),
            Self::CustomerRequest => "customer_request".into(),
            Self::TurnLimit => "turn_limit".into(),
            Self::Loop { .. } => "loop".into(),
            Self::OutOfScope => "out_of_scope".into(),
            Self::NoGrounding => "no_grounding".into(),
            Self::LowConfidence => "low_confidence".into(),
            Self::Triage { intent } => format!("triage:{intent}"),
            Self::UnsupportedLanguage => "unsupported_language".into(),
            Self::GenerationFailed => "generation_failed".into(),
        }
    }
}

/// A decision and why, as recorded in the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    pub reason: String,
    pub detail: Value,
}

/// How an escalation topic was recognised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationHit {
    pub topic: String,
    /// The phrase from the definition that matched.
    pub phrase: String,
    /// `phrase` (its words occur in order) or `similarity`.
    pub method: &'static str,
    pub similarity: f32,
}

/// Everything measured about the customer's message before any generation.
#[derive(Debug, Clone)]
pub struct Signals {
    pub escalation: Option<EscalationHit>,
    pub human_request: Option<String>,
    pub language: Option<&'static str>,
    pub not_helped: Option<String>,
    /// The earlier customer message this one nearly repeats, and how similar it is.
    pub repeat_of: Option<(String, f32)>,
    pub confirms: bool,
    pub intent: IntentMatch,
}

fn decide(action: Action, reason: impl Into<String>, detail: Value) -> Decision {
    Decision {
        action,
        reason: reason.into(),
        detail,
    }
}

/// Clarify while the budget lasts, then hand off for the same cause.
fn clarify_or_handoff(
    def: &Definition,
    memory: &Memory,
    kind: ClarifyKind,
    handoff: HandoffReason,
    why: &str,
    detail: Value,
) -> Decision {
    let max = *def.thresholds.max_clarifications.get_ref();
    if memory.clarifications < max {
        decide(
            Action::Clarify { kind },
            format!(
                "{why}; clarifying question {} of {max}",
                memory.clarifications + 1
            ),
            detail,
        )
    } else {
        decide(
            Action::Handoff { reason: handoff },
            format!("{why}, and the {max} clarifying question(s) allowed are used"),
            detail,
        )
    }
}

/// The decision for a customer message, before retrieval and generation.
pub fn before_generation(def: &Definition, memory: &Memory, s: &Signals) -> Decision {
    if let Some(e) = &s.escalation {
        return decide(
            Action::Handoff {
                reason: HandoffReason::HardEscalation {
                    topic: e.topic.clone(),
                },
            },
            format!(
                "hard-escalation topic `{}` (matched \"{}\" by {}); always handled by a human",
                e.topic, e.phrase, e.method
            ),
            json!({ "escalation": e }),
        );
    }
    if let Some(p) = &s.human_request {
        return decide(
            Action::Handoff {
                reason: HandoffReason::CustomerRequest,
            },
            format!("the customer asked for a human (\"{p}\")"),
            json!({ "phrase": p }),
        );
    }
    let max_turns = *def.thresholds.max_turns.get_ref();
    if memory.customer_turns + 1 > max_turns {
        return decide(
            Action::Handoff {
                reason: HandoffReason::TurnLimit,
            },
            format!("the conversation passed the limit of {max_turns} customer turns"),
            json!({ "turns": memory.customer_turns + 1, "max_turns": max_turns }),
        );
    }
    if let Some(lang) = s.language.filter(|l| !speaks(def, l)) {
        let detail = json!({ "detected": lang, "languages": def.languages.get_ref() });
        let max = *def.thresholds.max_clarifications.get_ref();
        if memory.clarifications >= max {
            return decide(
                Action::Handoff {
                    reason: HandoffReason::UnsupportedLanguage,
                },
                format!("the message is in a language the agent does not speak ({lang})"),
                detail,
            );
        }
        return decide(
            Action::UnsupportedLanguage {
                detected: lang.to_string(),
            },
            format!(
                "the message looks written in {lang}; the agent answers in {}",
                def.languages.get_ref().join(", ")
            ),
            detail,
        );
    }
    if let Some(d) = loop_signal(def, memory, s) {
        return d;
    }
    if s.confirms && memory.last_answered.is_some() {
        return decide(
            Action::Acknowledge,
            "the customer confirmed the last answer solved the problem",
            json!({ "intent": memory.last_answered }),
        );
    }
    if let Some(t) = &memory.triage {
        if let Some(next) = t.next_missing(def) {
            return decide(
                Action::Collect {
                    intent: t.intent.clone(),
                    detail: next.clone(),
                },
                format!("triage of `{}`: still need `{next}`", t.intent),
                json!({ "collected": t.collected }),
            );
        }
    }
    intent_decision(def, memory, &s.intent)
}

fn speaks(def: &Definition, detected: &str) -> bool {
    let langs = def.languages.get_ref();
    match detected {
        "en" => langs.iter().any(|l| l == "en"),
        // Any Latin-script language the agent speaks besides English may be what we saw.
        "other-latin" => langs.iter().any(|l| l != "en"),
        _ => false,
    }
}

fn loop_signal(def: &Definition, memory: &Memory, s: &Signals) -> Option<Decision> {
    let loop_handoff = |signal: &str, reason: String, detail: Value| {
        decide(
            Action::Handoff {
                reason: HandoffReason::Loop {
                    signal: signal.into(),
                },
            },
            reason,
            detail,
        )
    };
    if let Some(p) = s.not_helped.as_ref().filter(|_| memory.agent_replied()) {
        return Some(loop_handoff(
            "not_helped",
            format!("the customer said the last reply did not help (\"{p}\")"),
            json!({ "phrase": p }),
        ));
    }
    if let Some((earlier, sim)) = &s.repeat_of {
        return Some(loop_handoff(
            "repeated_message",
            format!("the customer repeated an earlier message (similarity {sim:.2})"),
            json!({ "earlier": earlier, "similarity": sim }),
        ));
    }
    let floor = *def.thresholds.intent_floor.get_ref();
    let limit = *def.thresholds.loop_limit.get_ref();
    let intent = s.intent.in_scope(floor)?;
    let answered = memory.times_answered(intent);
    (answered >= limit).then(|| {
        loop_handoff(
            "same_intent_unresolved",
            format!("`{intent}` was answered {answered} times and the customer is still asking"),
            json!({ "intent": intent, "times_answered": answered, "loop_limit": limit }),
        )
    })
}

fn intent_decision(def: &Definition, memory: &Memory, m: &IntentMatch) -> Decision {
    let floor = *def.thresholds.intent_floor.get_ref();
    let detail = json!({ "intent": m });
    let Some(intent) = m.in_scope(floor) else {
        return clarify_or_handoff(
            def,
            memory,
            ClarifyKind::OutOfScope,
            HandoffReason::OutOfScope,
            &format!(
                "out of scope: the nearest intent{} is {:.2} similar, below the floor {:.2}",
                m.intent
                    .as_deref()
                    .map(|i| format!(" `{i}`"))
                    .unwrap_or_default(),
                m.similarity,
                m.effective_floor(floor)
            ),
            detail,
        );
    };
    if let Some(t) = def.triage_intent(intent) {
        return match t.collect.first() {
            Some(first) => decide(
                Action::Collect {
                    intent: intent.to_string(),
                    detail: first.clone(),
                },
                format!("`{intent}` is triaged: collecting its details before the handoff"),
                detail,
            ),
            None => decide(
                Action::Handoff {
                    reason: HandoffReason::Triage {
                        intent: intent.to_string(),
                    },
                },
                format!("`{intent}` is triaged and needs no details: handing off"),
                detail,
            ),
        };
    }
    decide(
        Action::Answer {
            intent: intent.to_string(),
        },
        format!(
            "`{intent}` is owned by the agent (similarity {:.2})",
            m.similarity
        ),
        detail,
    )
}

/// After triage collected every detail.
pub fn triage_complete(intent: &str, collected: &Value) -> Decision {
    decide(
        Action::Handoff {
            reason: HandoffReason::Triage {
                intent: intent.to_string(),
            },
        },
        format!("triage of `{intent}` collected every detail: handing off"),
        json!({ "collected": collected }),
    )
}

/// After retrieval: an owned answer needs a passage that clears the retrieval floor.
pub fn grounding(def: &Definition, memory: &Memory, best: Option<(f32, &str)>) -> Option<Decision> {
    let floor = *def.thresholds.retrieval_floor.get_ref();
    match best {
        Some((score, _)) if score >= floor => None,
        _ => Some(clarify_or_handoff(
            def,
            memory,
            ClarifyKind::NoGrounding,
            HandoffReason::NoGrounding,
            &format!(
                "no passage clears the retrieval floor {floor:.2} (best {}); the agent does not \
                 answer from the model's memory",
                best.map(|(s, t)| format!("{s:.2}, \"{t}\""))
                    .unwrap_or_else(|| "none".into())
            ),
            json!({ "best": best.map(|b| b.0), "floor": floor }),
        )),
    }
}

/// The three signals of an answer's confidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Confidence {
    pub intent: f32,
    pub retrieval: f32,
    /// exp(mean log-probability) of the answer's tokens under the model that wrote it.
    pub likelihood: f32,
    /// Their geometric mean: one weak signal pulls it down, however strong the others.
    pub combined: f32,
}

impl Confidence {
    pub fn new(intent: f32, retrieval: f32, likelihood: f32) -> Self {
        let clamp = |x: f32| x.clamp(1e-6, 1.0);
        let combined = (clamp(intent) * clamp(retrieval) * clamp(likelihood)).cbrt();
        Self {
            intent,
            retrieval,
            likelihood,
            combined,
        }
    }
}

/// After generation: answer only when the combined confidence clears the floor.
pub fn after_generation(def: &Definition, memory: &Memory, c: &Confidence) -> Option<Decision> {
    let floor = *def.thresholds.confidence_floor.get_ref();
    (c.combined < floor).then(|| {
        clarify_or_handoff(
            def,
            memory,
            ClarifyKind::LowConfidence,
            HandoffReason::LowConfidence,
            &format!(
                "confidence {:.2} (intent {:.2}, retrieval {:.2}, likelihood {:.2}) is below the \
                 floor {floor:.2}",
                c.combined, c.intent, c.retrieval, c.likelihood
            ),
            json!({ "confidence": c, "floor": floor }),
        )
    })
}
