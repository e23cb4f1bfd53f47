//! Outcomes and aggregates per agent and per intent: deflection, resolution, CSAT, time to
//! resolution, messages per conversation, handoff reasons and coverage gaps.
//!
//! Owns the meaning of "resolved": the customer confirmed it, or the same contact did not come
//! back with the same intent within the resolution window. An answer whose window is still
//! open is `pending`, and one without a contact id cannot be checked, so it is `unverified`:
//! deflection alone is never counted as resolution. Depends on `store` and `text` only.

use std::collections::BTreeMap;

use serde::Serialize;

use super::intent::dot;
use super::memory::Memory;
use super::service::ABANDON_AFTER_MS;
use super::store::{
    ConversationRecord, ConversationStatus, Result, SupportStore, UnansweredRecord,
};
use super::text::{jaccard, words};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Confirmed by the customer, or no return within the window.
    Resolved,
    /// Answered; the window is still open.
    Pending,
    /// Answered, but the contact came back with the same intent within the window.
    Returned,
    /// Answered without a contact id, so a return cannot be seen.
    Unverified,
    HandedOff,
    /// Handed off, and a human resolved it.
    ResolvedByHuman,
    /// The customer left before an answer or a handoff.
    Abandoned,
    /// Still going.
    InProgress,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Aggregate {
    pub conversations: usize,
    pub outcomes: BTreeMap<String, usize>,
    /// Share of conversations the agent kept from humans.
    pub deflection_rate: f64,
    /// Share of conversations resolved by the agent, by the definition above.
    pub resolution_rate: f64,
    pub csat_average: Option<f64>,
    pub csat_count: usize,
    /// Mean seconds from the first message to the resolving answer or the human's resolution.
    pub mean_time_to_resolution_s: Option<f64>,
    pub mean_messages: f64,
    pub handoff_reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CoverageGap {
    pub count: usize,
    pub examples: Vec<String>,
    pub nearest_intents: BTreeMap<String, usize>,
    pub reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentAnalytics {
    pub agent: String,
    pub from: i64,
    pub to: i64,
    pub resolution_window_s: i64,
    pub totals: Aggregate,
    pub intents: BTreeMap<String, Aggregate>,
    pub coverage_gaps: Vec<CoverageGap>,
}

struct Row {
    outcome: Outcome,
    intent: String,
    csat: Option<u8>,
    seconds_to_resolution: Option<f64>,
    messages: usize,
    handoff_reason: Option<String>,
}

fn outcome_of(
    store: &SupportStore,
    c: &ConversationRecord,
    now: i64,
    window: i64,
) -> Result<(Outcome, Option<f64>)> {
    let memory = Memory::from_json(&c.memory);
    let secs = |end: i64| Some((end - c.created_at).max(0) as f64 / 1000.0);
    if c.handoff_reason.is_some() {
        if c.status == ConversationStatus::Resolved {
            let end = store
                .handoff_for(&c.id)?
                .and_then(|h| h.resolved_at)
                .unwrap_or(c.updated_at);
            return Ok((Outcome::ResolvedByHuman, secs(end)));
        }
        return Ok((Outcome::HandedOff, None));
    }
    if memory.attempts.is_empty() {
        let idle = now - c.updated_at >= ABANDON_AFTER_MS;
        return Ok((
            if idle {
                Outcome::Abandoned
            } else {
                Outcome::InProgress
            },
            None,
        ));
    }
    if c.confirmed {
        return Ok((Outcome::Resolved, secs(c.updated_at)));
    }
    let (Some(contact), Some(intent)) = (&c.contact_id, &c.primary_intent) else {
        return Ok((Outcome::Unverified, None));
    };
    let until = (c.updated_at + window).min(now);
    if store.contact_returned(&c.agent, contact, intent, c.created_at, until)? {
        return Ok((Outcome::Returned, None));
    }
    if now - c.updated_at >= window {
        Ok((Outcome::Resolved, secs(c.updated_at)))
    } else {
        Ok((Outcome::Pending, None))
    }
}

fn aggregate<'a>(rows: impl Iterator<Item = &'a Row>) -> Aggregate {
    let mut a = Aggregate::default();
    let (mut csat_sum, mut ttr_sum, mut ttr_n, mut msgs) = (0u64, 0.0, 0usize, 0usize);
    let (mut deflected, mut resolved) = (0usize, 0usize);
    for r in rows {
        a.conversations += 1;
        let name = serde_json::to_value(r.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *a.outcomes.entry(name).or_default() += 1;
        if !matches!(r.outcome, Outcome::HandedOff | Outcome::ResolvedByHuman) {
            deflected += 1;
        }
        if r.outcome == Outcome::Resolved {
            resolved += 1;
        }
        if let Some(s) = r.csat {
            csat_sum += s as u64;
            a.csat_count += 1;
        }
        if let Some(t) = r.seconds_to_resolution {
            ttr_sum += t;
            ttr_n += 1;
        }
        if let Some(h) = &r.handoff_reason {
            *a.handoff_reasons.entry(h.clone()).or_default() += 1;
        }
        msgs += r.messages;
    }
    if a.conversations > 0 {
        let n = a.conversations as f64;
        a.deflection_rate = deflected as f64 / n;
        a.resolution_rate = resolved as f64 / n;
        a.mean_messages = msgs as f64 / n;
    }
    a.csat_average = (a.csat_count > 0).then(|| csat_sum as f64 / a.csat_count as f64);
    a.mean_time_to_resolution_s = (ttr_n > 0).then(|| ttr_sum / ttr_n as f64);
    a
}

/// Questions this similar (cosine, or word overlap without vectors) fall in one gap.
const GAP_COSINE: f32 = 0.7;
const GAP_JACCARD: f32 = 0.5;
const GAP_EXAMPLES: usize = 3;
const MAX_GAPS: usize = 20;

fn similar(a: &UnansweredRecord, b: &UnansweredRecord) -> bool {
    match (&a.vector, &b.vector) {
        (Some(x), Some(y)) if x.len() == y.len() => dot(x, y) >= GAP_COSINE,
        _ => jaccard(&words(&a.text), &words(&b.text)) >= GAP_JACCARD,
    }
}

/// Groups unanswered questions greedily around the first of each group.
pub fn coverage_gaps(records: &[UnansweredRecord]) -> Vec<CoverageGap> {
    let mut groups: Vec<(usize, CoverageGap)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let slot = groups
            .iter_mut()
            .find(|(head, _)| similar(&records[*head], r));
        let gap = match slot {
            Some((_, g)) => g,
            None => {
                groups.push((
                    i,
                    CoverageGap {
                        count: 0,
                        examples: Vec::new(),
                        nearest_intents: BTreeMap::new(),
                        reasons: BTreeMap::new(),
                    },
                ));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        gap.count += 1;
        if gap.examples.len() < GAP_EXAMPLES && !gap.examples.contains(&r.text) {
            gap.examples.push(r.text.clone());
        }
        if let Some(n) = &r.nearest_intent {
            *gap.nearest_intents.entry(n.clone()).or_default() += 1;
        }
        *gap.reasons.entry(r.reason.clone()).or_default() += 1;
    }
    let mut gaps: Vec<CoverageGap> = groups.into_iter().map(|(_, g)| g).collect();
    gaps.sort_by_key(|g| std::cmp::Reverse(g.count));
    gaps.truncate(MAX_GAPS);
    gaps
}

pub fn compute(
    store: &SupportStore,
    agent: &str,
    from: i64,
    to: i64,
    now: i64,
    window: i64,
) -> Result<AgentAnalytics> {
    let mut rows = Vec::new();
    for c in store.conversations_between(agent, from, to)? {
        let messages = store.message_count(&c.id)?;
        let memory = Memory::from_json(&c.memory);
        if memory.customer_turns == 0 {
            continue;
        }
        let (outcome, seconds_to_resolution) = outcome_of(store, &c, now, window)?;
        rows.push(Row {
            outcome,
            intent: c
                .primary_intent
                .clone()
                .unwrap_or_else(|| "out_of_scope".into()),
            csat: store.csat(&c.id)?.map(|r| r.score),
            seconds_to_resolution,
            messages,
            handoff_reason: c.handoff_reason.clone(),
        });
    }
    let mut intents: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        intents.entry(r.intent.clone()).or_default().push(r);
    }
    Ok(AgentAnalytics {
        agent: agent.to_string(),
        from,
        to,
        resolution_window_s: window / 1000,
        totals: aggregate(rows.iter()),
        intents: intents
            .into_iter()
            .map(|(k, v)| (k, aggregate(v.into_iter())))
            .collect(),
        coverage_gaps: coverage_gaps(&store.unanswered_between(agent, from, to)?),
    })
}
