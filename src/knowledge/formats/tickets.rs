//! Support tickets from record files: one document per conversation.
//!
//! Owns: the three ticket shapes (one row per turn grouped by conversation
//! id; one row per conversation with a `transcript`; JSON objects with a
//! `turns`/`messages` list), role normalisation (Customer/Agent), and the
//! rendering "Customer: …\nAgent: …". Depends on nothing else in the crate
//! (only `records` and the shared helpers of `formats`).
//!
//! Invariant: conversations keep their order of first appearance and their
//! turns keep file order; keys are "conv-<id>"; metadata always has
//! "csat" (number or null), "intent" (string or null) and "turns".

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::records::{apply_common, value_text, Record, CONVERSATION_ID, ROLE, TEXT, TURNS};
use super::{FormatError, ParsedDocument, Section, SourceType};

/// How tickets are laid out in the rows.
/// Column names are looked up per record, in the priority order of the
/// `records` lists (so `conversation_id` wins over a per-message `id`).
pub(super) enum Shape {
    TurnRows,
    Transcripts,
    Nested,
}

struct Ticket {
    id: String,
    subject: Option<String>,
    /// (normalised role, or none for unattributed text; text)
    turns: Vec<(Option<String>, String)>,
    csat: Option<Value>,
    intent: Option<String>,
    doc: ParsedDocument,
}

impl Ticket {
    fn new(id: String) -> Self {
        Ticket {
            doc: ParsedDocument::new(format!("conv-{id}"), String::new(), SourceType::Ticket),
            id,
            subject: None,
            turns: Vec::new(),
            csat: None,
            intent: None,
        }
    }

    /// Ticket-level fields: the first non-empty value wins.
    fn absorb(&mut self, record: &Record) {
        self.subject = self.subject.take().or_else(|| record.text(&["subject"]));
        self.intent = self.intent.take().or_else(|| record.text(&["intent"]));
        if self.csat.is_none() {
            self.csat = record.fields.get("csat").and_then(csat_number);
        }
        apply_common(&mut self.doc, record);
    }

    fn into_doc(self) -> Option<ParsedDocument> {
        let counted = self.turns.iter().filter(|(role, _)| role.is_some()).count();
        let rendered: Vec<String> = self
            .turns
            .into_iter()
            .map(|(role, text)| match role {
                Some(role) => format!("{role}: {text}"),
                None => text,
            })
            .collect();
        let rendered_len = rendered.len();
        if rendered_len == 0 {
            return None;
        }
        let mut doc = self.doc;
        doc.title = self
            .subject
            .unwrap_or_else(|| format!("Ticket {}", self.id));
        doc.sections.push(Section {
            heading_path: Vec::new(),
            text: rendered.join("\n"),
        });
        doc.metadata
            .insert("csat".into(), self.csat.unwrap_or(Value::Null));
        doc.metadata.insert(
            "intent".into(),
            self.intent.map_or(Value::Null, Value::String),
        );
        let turns = if counted == 0 { rendered_len } else { counted };
        doc.metadata.insert("turns".into(), turns.into());
        Some(doc)
    }
}

pub(super) fn build(
    path: &Path,
    records: &[Record],
    shape: &Shape,
) -> Result<Vec<ParsedDocument>, FormatError> {
    let mut order: Vec<Ticket> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (n, record) in records.iter().enumerate() {
        let id = match (shape, record.text(CONVERSATION_ID)) {
            (_, Some(id)) => id,
            (Shape::TurnRows, None) => {
                return Err(record.at.error(path, "turn row has no conversation id"));
            }
            (_, None) => format!("row-{}", n + 1),
        };
        let slot = *index.entry(id.clone()).or_insert_with(|| {
            order.push(Ticket::new(id));
            order.len() - 1
        });
        let ticket = &mut order[slot];
        ticket.absorb(record);
        match shape {
            Shape::TurnRows => {
                if let Some(text) = record.text(TEXT) {
                    let role = record.text(ROLE).unwrap_or_default();
                    ticket.turns.push((Some(normalize_role(&role)), text));
                }
            }
            Shape::Transcripts => {
                if let Some(transcript) = record.text(&["transcript"]) {
                    ticket.turns.extend(split_transcript(&transcript));
                }
            }
            Shape::Nested => match TURNS
                .iter()
                .find_map(|k| record.fields.get(*k).map(|v| (*k, v)))
            {
                Some((turns, Value::Array(items))) => {
                    for (i, item) in items.iter().enumerate() {
                        let found = nested_turns(item).ok_or_else(|| {
                            record
                                .at
                                .error(path, format!("{turns}[{i}] is not a turn object or string"))
                        })?;
                        ticket.turns.extend(found);
                    }
                }
                Some((_, Value::Null)) | None => {}
                Some((turns, _)) => {
                    return Err(record.at.error(path, format!("'{turns}' is not a list")))
                }
            },
        }
    }
    Ok(order.into_iter().filter_map(Ticket::into_doc).collect())
}

/// The turns in one entry of a `turns`/`messages` list (none for an empty
/// turn); `None` when the entry is neither an object nor a string.
fn nested_turns(item: &Value) -> Option<Vec<(Option<String>, String)>> {
    match item {
        Value::String(s) => Some(split_transcript(s)),
        Value::Object(map) => {
            let find = |names: &[&str]| {
                map.iter()
                    .find(|(k, _)| names.contains(&k.to_lowercase().as_str()))
                    .and_then(|(_, v)| value_text(v))
            };
            let role = find(ROLE).unwrap_or_default();
            Some(
                find(TEXT)
                    .map(|text| (Some(normalize_role(&role)), text))
                    .into_iter()
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Splits "Customer: …\nAgent: …" into turns; lines without a known role
/// prefix continue the previous turn.
fn split_transcript(transcript: &str) -> Vec<(Option<String>, String)> {
    let mut turns: Vec<(Option<String>, String)> = Vec::new();
    for line in transcript.lines() {
        let prefixed = line.split_once(':').and_then(|(role, rest)| {
            let role = role.trim();
            is_role_word(role).then(|| (normalize_role(role), rest.trim().to_string()))
        });
        match (prefixed, turns.last_mut()) {
            (Some((role, text)), _) => turns.push((Some(role), text)),
            (None, Some((_, text))) => {
                text.push('\n');
                text.push_str(line);
            }
            (None, None) if line.trim().is_empty() => {}
            (None, None) => turns.push((None, line.to_string())),
        }
    }
    for (_, text) in &mut turns {
        let trimmed = text.trim_end().len();
        text.truncate(trimmed);
    }
    turns
}

const CUSTOMER: &[&str] = &[
    "customer", "user", "client", "end-user", "end user", "enduser", "end_user",
];
const AGENT: &[&str] = &["agent", "assistant", "support", "staff", "rep"];

fn is_role_word(role: &str) -> bool {
    let lower = role.to_lowercase();
    CUSTOMER.contains(&lower.as_str())
        || AGENT.contains(&lower.as_str())
        || matches!(lower.as_str(), "system" | "bot")
}

/// customer/user/client/end-user → Customer; agent/assistant/support/
/// staff/rep → Agent; other roles capitalised; empty → Unknown.
pub(super) fn normalize_role(raw: &str) -> String {
    let lower = raw.trim().to_lowercase();
    if CUSTOMER.contains(&lower.as_str()) {
        return "Customer".into();
    }
    if AGENT.contains(&lower.as_str()) {
        return "Agent".into();
    }
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "Unknown".into(),
    }
}

/// A CSAT score as a JSON number; text that is not a number gives `None`.
fn csat_number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Some(i.into());
            }
            s.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::{parse_csv, parse_json, parse_jsonl};
    use super::super::KindHint;
    use super::*;

    #[test]
    fn per_turn_csv_groups_by_conversation() {
        let src = "conversation_id,role,message,csat,intent,tags,subject\n\
                   c1,user,My order is late,,,,Late order\n\
                   c2,customer,Can I change my email?,,account,login,\n\
                   c1,assistant,Sorry! It ships today.,4,shipping,\"orders, delay\",\n\
                   c2,Staff,Yes - under Settings.,4.5,,,\n\
                   c1,bot,Anything else?,,,,\n";
        let docs = parse_csv(Path::new("tickets.csv"), src.as_bytes(), KindHint::Auto).unwrap();
        assert_eq!(docs.len(), 2);
        let c1 = &docs[0];
        assert_eq!(c1.key, "conv-c1");
        assert_eq!(c1.title, "Late order");
        assert_eq!(c1.source_type, SourceType::Ticket);
        assert_eq!(
            c1.sections[0].text,
            "Customer: My order is late\nAgent: Sorry! It ships today.\nBot: Anything else?"
        );
        assert_eq!(c1.metadata["csat"], 4);
        assert_eq!(c1.metadata["intent"], "shipping");
        assert_eq!(c1.metadata["turns"], 3);
        assert_eq!(c1.tags, ["orders", "delay"]);
        let c2 = &docs[1];
        assert_eq!(c2.title, "Ticket c2");
        assert_eq!(c2.metadata["csat"], 4.5);
        assert_eq!(c2.metadata["intent"], "account");
        assert_eq!(
            c2.sections[0].text,
            "Customer: Can I change my email?\nAgent: Yes - under Settings."
        );
    }

    #[test]
    fn transcript_column() {
        let src = "ticket_id,transcript,csat\n\
                   T-9,\"Customer: Hi, the app crashes.\nIt happens on login.\nAgent: Which version?\nUser: 2.3\",bad\n\
                   T-10,,\n";
        let docs = parse_csv(Path::new("t.csv"), src.as_bytes(), KindHint::Tickets).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].key, "conv-T-9");
        assert_eq!(docs[0].title, "Ticket T-9");
        assert_eq!(docs[0].sections[0].text, "Customer: Hi, the app crashes.\nIt happens on login.\nAgent: Which version?\nCustomer: 2.3");
        assert_eq!(docs[0].metadata["turns"], 3);
        assert_eq!(docs[0].metadata["csat"], Value::Null);
        assert_eq!(docs[0].metadata["intent"], Value::Null);
    }

    #[test]
    fn jsonl_tickets_with_turns() {
        let src = r#"{"id": 123, "messages": [{"role": "user", "content": "Refund please"}, {"speaker": "agent", "text": "Done."}, {"role": "system", "content": ""}], "csat": 5, "intent": "refund", "tags": ["billing"], "language": "en"}
{"ticket_id": "124", "turns": [{"role": "End-User", "text": "Hello?"}]}"#;
        let docs = parse_jsonl(Path::new("t.jsonl"), src.as_bytes(), KindHint::Auto).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].key, "conv-123");
        assert_eq!(docs[0].title, "Ticket 123");
        assert_eq!(
            docs[0].sections[0].text,
            "Customer: Refund please\nAgent: Done."
        );
        assert_eq!(docs[0].metadata["csat"], 5);
        assert_eq!(docs[0].metadata["turns"], 2);
        assert_eq!(docs[0].tags, ["billing"]);
        assert_eq!(docs[0].language.as_deref(), Some("en"));
        assert_eq!(docs[1].key, "conv-124");
        assert_eq!(docs[1].sections[0].text, "Customer: Hello?");
    }

    #[test]
    fn json_array_and_bad_turns() {
        let docs = parse_json(
            Path::new("t.json"),
            br#"[{"conversation_id": "a", "turns": ["Agent: hi"]}]"#,
            KindHint::Auto,
        )
        .unwrap();
        assert_eq!(docs[0].sections[0].text, "Agent: hi");
        let err = parse_json(
            Path::new("t.json"),
            br#"[{"id": 1, "turns": [5]}]"#,
            KindHint::Auto,
        )
        .unwrap_err();
        assert!(
            matches!(err, FormatError::JsonItem { index: 1, .. }),
            "{err:?}"
        );
        let err = parse_csv(
            Path::new("t.csv"),
            b"conversation_id,role,text\n,user,hi\n",
            KindHint::Auto,
        )
        .unwrap_err();
        assert!(
            matches!(err, FormatError::Record { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn roles() {
        assert_eq!(normalize_role("END-USER"), "Customer");
        assert_eq!(normalize_role(" Rep "), "Agent");
        assert_eq!(normalize_role("supervisor"), "Supervisor");
        assert_eq!(normalize_role(""), "Unknown");
    }
}
