//! Labelled intent examples from past tickets: each resolved conversation with an intent
//! label gives its customer's first message as an example of that intent. Tickets are read by
//! the knowledge base's ticket formats (CSV or JSONL, a row per turn, a transcript column or a
//! turns array).
//! Depends on `knowledge::formats` only.

use std::collections::BTreeSet;
use std::path::Path;

use crate::knowledge::formats::{parse_bytes, FormatError, KindHint, ParseLimits};

/// The rendered transcript names customer turns so.
const CUSTOMER: &str = "Customer: ";

/// `(intent, first customer message)` for every ticket labelled with one of `intents`; also
/// the number of tickets skipped (no label, an unknown label, or no customer turn).
pub fn examples_from_tickets(
    filename: &str,
    bytes: &[u8],
    intents: &BTreeSet<String>,
) -> Result<(Vec<(String, String)>, usize), FormatError> {
    let parsed = parse_bytes(
        Path::new(filename),
        bytes,
        KindHint::Tickets,
        &ParseLimits::default(),
    )?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for d in parsed.documents {
        let intent = d
            .metadata
            .get("intent")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let first = d
            .sections
            .iter()
            .flat_map(|s| s.text.lines())
            .find_map(|l| l.strip_prefix(CUSTOMER))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        match (intent, first) {
            (Some(i), Some(t)) if intents.contains(&i) => out.push((i, t)),
            _ => skipped += 1,
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_customer_turns_become_examples_of_known_intents() {
        let csv = "conversation_id,role,message,intent\n\
                   1,customer,I never got my parcel,shipping_missing\n\
                   1,agent,Sorry! Let me check.,shipping_missing\n\
                   1,customer,thanks,shipping_missing\n\
                   2,customer,what is the meaning of life,philosophy\n\
                   3,agent,Hello?,\n";
        let known: BTreeSet<String> = ["shipping_missing".to_string()].into();
        let (ex, skipped) = examples_from_tickets("t.csv", csv.as_bytes(), &known).unwrap();
        assert_eq!(
            ex,
            vec![(
                "shipping_missing".to_string(),
                "I never got my parcel".to_string()
            )]
        );
        assert_eq!(skipped, 2);
    }
}
