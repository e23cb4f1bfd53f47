//! What an agent remembers of one conversation between turns: counts the policy reads
//! (customer turns, clarifying questions asked, answers per intent), triage in progress, the
//! customer's details and what was tried. Stored as JSON beside the conversation and rebuilt
//! from nothing but the transcript when a client carries the history itself.
//! Depends on `definition` only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::definition::Definition;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TriageProgress {
    pub intent: String,
    pub collected: BTreeMap<String, String>,
    /// The detail the agent asked for last, which the next message answers.
    pub asking: Option<String>,
    /// Times the current detail was asked for without a usable answer.
    #[serde(default)]
    pub retries: usize,
}

impl TriageProgress {
    /// The first detail of the intent's list not yet collected.
    pub fn next_missing<'d>(&self, def: &'d Definition) -> Option<&'d String> {
        def.triage_intent(&self.intent)?
            .collect
            .iter()
            .find(|d| !self.collected.contains_key(*d))
    }
}

/// An answer the agent gave, for the handoff packet's "what was tried".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub intent: String,
    pub answer: String,
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    pub customer_turns: usize,
    pub clarifications: usize,
    /// Answers given per intent since the customer last confirmed one.
    pub answered: BTreeMap<String, usize>,
    pub last_answered: Option<String>,
    /// The first in-scope intent, and the latest with its confidence.
    pub primary_intent: Option<String>,
    pub last_intent: Option<(String, f32)>,
    pub triage: Option<TriageProgress>,
    /// Details the customer gave (email, order id, …).
    pub details: BTreeMap<String, String>,
    pub attempts: Vec<Attempt>,
    pub agent_replies: usize,
    pub confirmed: bool,
}

impl Memory {
    pub fn times_answered(&self, intent: &str) -> usize {
        self.answered.get(intent).copied().unwrap_or(0)
    }

    pub fn agent_replied(&self) -> bool {
        self.agent_replies > 0
    }

    pub fn from_json(v: &serde_json::Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub fn note_intent(&mut self, intent: &str, confidence: f32) {
        if self.primary_intent.is_none() {
            self.primary_intent = Some(intent.to_string());
        }
        self.last_intent = Some((intent.to_string(), confidence));
    }

    pub fn note_answer(&mut self, attempt: Attempt) {
        *self.answered.entry(attempt.intent.clone()).or_default() += 1;
        self.last_answered = Some(attempt.intent.clone());
        self.attempts.push(attempt);
    }

    pub fn note_confirmation(&mut self) {
        self.confirmed = true;
        self.answered.clear();
    }
}
