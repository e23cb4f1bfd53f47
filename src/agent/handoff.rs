//! Warm handoff: the packet a human picks the conversation up from, the wait estimate the
//! customer is given, the message that tells them, and delivery to an on-prem webhook.
//!
//! The packet says what the customer needs without anyone re-reading the chat: a summary
//! (written by the model, or extracted from the transcript when generation fails), the intent
//! and its confidence, the customer's details, the answers tried and their sources, what is
//! still open, the reason, and the whole transcript. Depends on `definition`, `memory`,
//! `store` types and `text`.

use chrono::{Datelike, Timelike};
use serde::Serialize;
use serde_json::{json, Value};

use super::definition::{day_index, parse_clock, parse_offset, HandoffConfig, WaitMethod};
use super::memory::Memory;
use super::policy::Decision;
use super::store::{ConversationRecord, MessageRecord};
use super::text::clip;

/// When a human can be expected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitEstimate {
    pub minutes: u32,
    pub open_now: bool,
    /// When the team is next in, as `ddd HH:MM` local, when it is not now.
    pub opens: Option<String>,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Minutes until the team is next in (0 when it is in now), by the configured hours.
fn minutes_until_open(cfg: &HandoffConfig, now_ms: i64) -> (u32, Option<String>) {
    let Some(b) = &cfg.business_hours else {
        return (0, None);
    };
    let (Some(offset), Some(open), Some(close)) = (
        parse_offset(b.utc_offset.get_ref()),
        parse_clock(b.open.get_ref()),
        parse_clock(b.close.get_ref()),
    ) else {
        return (0, None);
    };
    let days: Vec<usize> = b
        .days
        .get_ref()
        .iter()
        .filter_map(|d| day_index(d))
        .collect();
    let Some(local) = chrono::DateTime::from_timestamp_millis(now_ms + offset as i64 * 60_000)
    else {
        return (0, None);
    };
    let today = local.weekday().num_days_from_monday() as usize;
    let minute = local.hour() * 60 + local.minute();
    if days.contains(&today) && minute >= open && minute < close {
        return (0, None);
    }
    for ahead in 0..8u32 {
        let day = (today + ahead as usize) % 7;
        if !days.contains(&day) || (ahead == 0 && minute >= open) {
            continue;
        }
        let wait = ahead * 24 * 60 + open - minute;
        return (
            wait,
            Some(format!("{} {}", DAY_NAMES[day], b.open.get_ref())),
        );
    }
    (0, None)
}

pub fn estimate_wait(cfg: &HandoffConfig, waiting: usize, now_ms: i64) -> WaitEstimate {
    let w = &cfg.wait_estimate;
    let queue = match w.method {
        WaitMethod::Fixed => w.base_minutes,
        WaitMethod::QueueLength => w.base_minutes + w.minutes_per_waiting * waiting as u32,
    };
    let (closed_for, opens) = minutes_until_open(cfg, now_ms);
    WaitEstimate {
        minutes: closed_for + queue,
        open_now: closed_for == 0,
        opens,
    }
}

/// How every handoff message begins.
pub const HANDOFF_OPENING: &str = "I'm passing this to a colleague who can help.";

/// What the customer is told.
pub fn customer_message(wait: &WaitEstimate) -> String {
    let when = if wait.open_now {
        format!("The wait is about {} minutes.", wait.minutes.max(1))
    } else {
        format!(
            "Our team is away right now and back {}; they'll pick this up then.",
            wait.opens.as_deref().unwrap_or("soon")
        )
    };
    format!(
        "{HANDOFF_OPENING} {when} They'll see everything we've \
         discussed, so you won't need to repeat yourself."
    )
}

/// A summary built from the transcript alone, used when the model cannot write one.
pub fn extractive_summary(transcript: &[MessageRecord], memory: &Memory, reason: &str) -> String {
    let customer: Vec<&MessageRecord> =
        transcript.iter().filter(|m| m.role == "customer").collect();
    let mut s = String::new();
    if let Some(first) = customer.first() {
        s.push_str(&format!(
            "The customer wrote: \"{}\".",
            clip(&first.text, 200)
        ));
    }
    if let Some((intent, c)) = &memory.last_intent {
        s.push_str(&format!(" Intent: {intent} (confidence {c:.2})."));
    }
    if !memory.attempts.is_empty() {
        let sources: Vec<&str> = memory
            .attempts
            .iter()
            .flat_map(|a| a.sources.iter().map(String::as_str))
            .collect();
        s.push_str(&format!(
            " The agent answered {} time(s){}.",
            memory.attempts.len(),
            if sources.is_empty() {
                String::new()
            } else {
                format!(", citing {}", sources.join(", "))
            }
        ));
    }
    if customer.len() > 1 {
        if let Some(last) = customer.last() {
            s.push_str(&format!(" Latest message: \"{}\".", clip(&last.text, 200)));
        }
    }
    s.push_str(&format!(" Handed off because {reason}."));
    s.trim().to_string()
}

/// Inputs of a packet.
pub struct PacketParts<'a> {
    pub conversation: &'a ConversationRecord,
    pub transcript: &'a [MessageRecord],
    pub memory: &'a Memory,
    pub decision: &'a Decision,
    pub reason_label: &'a str,
    pub summary: String,
    pub summary_source: &'static str,
    pub queue: &'a str,
    pub wait: &'a WaitEstimate,
    /// The contact's earlier conversations with this agent, newest first.
    pub previous: &'a [ConversationRecord],
}

pub fn packet(p: &PacketParts<'_>) -> Value {
    let last_customer = p
        .transcript
        .iter()
        .rev()
        .find(|m| m.role == "customer")
        .map(|m| m.text.as_str())
        .unwrap_or("");
    let sources: Vec<&String> = {
        let mut v: Vec<&String> = p.memory.attempts.iter().flat_map(|a| &a.sources).collect();
        v.dedup();
        v
    };
    let intent = p
        .memory
        .last_intent
        .as_ref()
        .map(|(i, c)| json!({"name": i, "confidence": c}));
    let unresolved = match (&p.memory.last_intent, p.memory.confirmed) {
        (_, true) => {
            "The customer confirmed an earlier answer; check what they need now.".to_string()
        }
        (Some((i, _)), false) => format!(
            "`{i}` is unresolved. Latest: \"{}\"",
            clip(last_customer, 300)
        ),
        (None, false) => format!(
            "The request is unclassified. Latest: \"{}\"",
            clip(last_customer, 300)
        ),
    };
    json!({
        "conversation_id": p.conversation.id,
        "agent": p.conversation.agent,
        "queue": p.queue,
        "summary": p.summary,
        "summary_source": p.summary_source,
        "intent": intent,
        "customer": {
            "contact_id": p.conversation.contact_id,
            "details": p.memory.details,
            "previous_conversations": p.previous.iter().map(|c| json!({
                "id": c.id,
                "created_at": c.created_at,
                "status": c.status,
                "primary_intent": c.primary_intent,
                "handoff_reason": c.handoff_reason,
            })).collect::<Vec<_>>(),
        },
        "tried": p.memory.attempts,
        "sources": sources,
        "unresolved": unresolved,
        "reason": {
            "label": p.reason_label,
            "explanation": p.decision.reason,
            "detail": p.decision.detail,
        },
        "wait": p.wait,
        "transcript": p.transcript.iter().map(|m| json!({
            "role": m.role, "kind": m.kind, "text": m.text, "at": m.created_at,
        })).collect::<Vec<_>>(),
    })
}

/// POSTs the packet to the webhook, once, with a short timeout; the outcome is recorded, not
/// retried, so a dead webhook never holds up the customer.
pub fn deliver(url: &str, packet: &Value) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent
        .post(url)
        .header("content-type", "application/json")
        .send(packet.to_string())
    {
        Ok(resp) if resp.status().is_success() => format!("delivered ({})", resp.status().as_u16()),
        Ok(resp) => format!("refused ({})", resp.status().as_u16()),
        Err(e) => format!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::definition::{AnyCatalog, Definition};

    fn cfg(extra: &str) -> HandoffConfig {
        let text = format!("name = \"a\"\n[handoff]\nqueue = \"q\"\n{extra}");
        Definition::parse(&text, std::path::Path::new("a.toml"), &AnyCatalog)
            .unwrap()
            .handoff
    }

    #[test]
    fn wait_grows_with_the_queue_and_waits_for_opening_hours() {
        let c = cfg("[handoff.wait_estimate]\nbase_minutes = 2\nminutes_per_waiting = 5\n");
        assert_eq!(estimate_wait(&c, 3, 0).minutes, 17);
        let c = cfg(
            "[handoff.business_hours]\nutc_offset = \"+00:00\"\ndays = [\"mon\"]\nopen = \"09:00\"\nclose = \"17:00\"\n",
        );
        // 1970-01-01 was a Thursday; 00:00 UTC. Next Monday 09:00 is 4 days and 9 hours on.
        let w = estimate_wait(&c, 0, 0);
        assert!(!w.open_now);
        assert_eq!(w.minutes, 4 * 24 * 60 + 9 * 60 + 2);
        assert_eq!(w.opens.as_deref(), Some("mon 09:00"));
        // Monday 1970-01-05 10:00 UTC: open.
        let monday_ten = (4 * 24 + 10) * 3_600_000;
        assert!(estimate_wait(&c, 0, monday_ten).open_now);
    }
}
