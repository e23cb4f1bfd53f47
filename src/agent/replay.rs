//! Rebuilding an agent's memory from a transcript the client carries (the OpenAI endpoint with
//! `model: "agent:<name>"`): each customer message is classified again, and each agent reply
//! is read for what the policy did, by the fixed words the policy writes (clarifying
//! questions, detail questions, notices, handoffs); anything else was an answer.
//! Depends on `turn` (its fixed replies), `details`, `memory` and `intent`.

use super::details;
use super::intent::IntentError;
use super::memory::{Attempt, Memory, TriageProgress};
use super::turn::{
    AgentRuntime, ACKNOWLEDGEMENT, CLARIFY_CONFIDENCE, CLARIFY_GROUNDING, CLARIFY_SCOPE,
    LANGUAGE_NOTICE,
};

/// What an agent reply was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Clarify,
    Collect,
    Notice,
    Acknowledge,
    Handoff,
    Answer,
}

fn asked_detail(rt: &AgentRuntime, reply: &str) -> Option<(String, String)> {
    rt.def.triage.iter().find_map(|t| {
        t.collect
            .iter()
            .find(|d| reply.contains(&details::question(d)))
            .map(|d| (t.name.get_ref().clone(), d.clone()))
    })
}

pub fn kind_of(rt: &AgentRuntime, reply: &str) -> ReplyKind {
    let r = reply.trim_start();
    if [CLARIFY_SCOPE, CLARIFY_GROUNDING, CLARIFY_CONFIDENCE]
        .iter()
        .any(|p| r.starts_with(p))
    {
        ReplyKind::Clarify
    } else if r.starts_with(LANGUAGE_NOTICE) {
        ReplyKind::Notice
    } else if r.starts_with(ACKNOWLEDGEMENT) {
        ReplyKind::Acknowledge
    } else if r.starts_with(super::handoff::HANDOFF_OPENING) {
        ReplyKind::Handoff
    } else if asked_detail(rt, r).is_some() {
        ReplyKind::Collect
    } else {
        ReplyKind::Answer
    }
}

/// The memory the agent would have after `turns`: (customer message, the agent's reply).
pub fn memory_from(rt: &AgentRuntime, turns: &[(String, String)]) -> Result<Memory, IntentError> {
    let floor = *rt.def.thresholds.intent_floor.get_ref();
    let mut m = Memory::default();
    for (customer, reply) in turns {
        m.customer_turns += 1;
        for (k, v) in details::scan(customer) {
            m.details.entry(k.to_string()).or_insert(v);
        }
        if let Some(t) = m.triage.as_mut() {
            if let Some(asking) = t.asking.take() {
                if let Some(v) = details::parse(&asking, customer) {
                    t.collected.insert(asking.clone(), v.clone());
                    m.details.insert(asking, v);
                }
            }
        }
        let intent = rt.intents.classify(customer, None)?;
        let in_scope = intent.in_scope(floor).map(str::to_string);
        if let Some(i) = &in_scope {
            m.note_intent(i, intent.confidence());
        }
        m.agent_replies += 1;
        match kind_of(rt, reply) {
            ReplyKind::Clarify | ReplyKind::Notice => m.clarifications += 1,
            ReplyKind::Acknowledge => m.note_confirmation(),
            ReplyKind::Handoff => {}
            ReplyKind::Collect => {
                if let Some((intent, detail)) = asked_detail(rt, reply) {
                    let t = m.triage.get_or_insert_with(|| TriageProgress {
                        intent,
                        ..TriageProgress::default()
                    });
                    t.asking = Some(detail);
                }
            }
            ReplyKind::Answer => {
                if let Some(i) = in_scope {
                    m.note_answer(Attempt {
                        intent: i,
                        answer: super::text::clip(reply, 300),
                        sources: Vec::new(),
                    });
                }
            }
        }
    }
    Ok(m)
}
