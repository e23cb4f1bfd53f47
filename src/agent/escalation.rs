//! Recognising an agent's hard-escalation topics in a customer message: by the content words
//! of a configured phrase, in order, with at most `MAX_GAP` other words between them, or, with an embedding model, by similarity to a phrase above
//! the agent's `escalation_similarity`. Checked before anything else, on every message.
//! Depends on `intent`, `text` and the policy's `EscalationHit`.

use std::sync::Arc;

use super::definition::Definition;
use super::intent::{IntentError, IntentIndex};
use super::lexical::terms;
use super::policy::EscalationHit;
use crate::knowledge::Embedder;

/// Words a customer may put inside a phrase ("used my *credit* card") and still match it.
const MAX_GAP: usize = 3;

/// Whether `phrase`'s terms occur in `text`'s terms in order, with `MAX_GAP` others at most
/// between them in all.
fn loosely_contains(text: &[String], phrase: &[String]) -> bool {
    if phrase.is_empty() {
        return false;
    }
    (0..text.len()).any(|start| {
        if text[start] != phrase[0] {
            return false;
        }
        let (mut i, mut gap) = (start + 1, 0);
        for p in &phrase[1..] {
            while i < text.len() && &text[i] != p {
                i += 1;
                gap += 1;
            }
            if i == text.len() || gap > MAX_GAP {
                return false;
            }
            i += 1;
        }
        true
    })
}

pub struct EscalationMatcher {
    phrases: Vec<(String, String, Vec<String>)>,
    index: Option<IntentIndex>,
    min_similarity: f32,
}

impl EscalationMatcher {
    pub fn build(
        def: &Definition,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self, IntentError> {
        let mut phrases = Vec::new();
        for e in &def.escalations {
            for p in e.phrases.get_ref().iter().filter(|p| !p.trim().is_empty()) {
                phrases.push((e.topic.get_ref().clone(), p.clone(), terms(p)));
            }
        }
        let index = match embedder {
            Some(e) if !phrases.is_empty() => Some(IntentIndex::build(
                phrases
                    .iter()
                    .map(|(t, p, _)| (t.clone(), p.clone()))
                    .collect(),
                Some(e),
            )?),
            _ => None,
        };
        Ok(Self {
            phrases,
            index,
            min_similarity: *def.thresholds.escalation_similarity.get_ref(),
        })
    }

    /// The topic `text` raises, if any; `vector` is the message's embedding when known.
    pub fn check(
        &self,
        text: &str,
        vector: Option<&[f32]>,
    ) -> Result<Option<EscalationHit>, IntentError> {
        let w = terms(text);
        if let Some((topic, phrase, _)) = self
            .phrases
            .iter()
            .find(|(_, _, p)| loosely_contains(&w, p))
        {
            return Ok(Some(EscalationHit {
                topic: topic.clone(),
                phrase: phrase.clone(),
                method: "phrase",
                similarity: 1.0,
            }));
        }
        let Some(index) = &self.index else {
            return Ok(None);
        };
        let m = index.classify(text, vector)?;
        let Some(topic) = m.intent.filter(|_| m.similarity >= self.min_similarity) else {
            return Ok(None);
        };
        let phrase = m.nearest_example.clone().unwrap_or_default();
        Ok(Some(EscalationHit {
            topic,
            phrase,
            method: "similarity",
            similarity: m.similarity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_with_a_few_extra_words_in_order() {
        let p = terms("someone used my card without permission");
        assert!(loosely_contains(
            &terms("Someone used my credit card without my permission!"),
            &p
        ));
        assert!(!loosely_contains(
            &terms("permission to use my card, someone said"),
            &p
        ));
        assert!(!loosely_contains(
            &terms("someone at the store used a very old and worn card reader without asking permission"),
            &p
        ));
    }
}
