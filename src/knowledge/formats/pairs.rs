//! FAQ pairs and macros (saved replies) from record files: one document
//! per row.
//!
//! Owns: the row-to-document mapping for both (title = question or macro
//! title; text = "Q: …\nA: …" or the macro body), unique keys, and extra
//! columns kept as metadata. Depends on nothing else in the crate (only
//! `records` and the shared helpers of `formats`).
//!
//! Invariant: keys are unique within a file (title slug, "-2", "-3"… on
//! repeats, "row-<n>" for titles without letters or digits); a half-filled
//! row is an error naming its line, a fully blank row is skipped.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::records::{apply_common, value_text, Record, LANGUAGE, MACRO_BODY, MACRO_TITLE};
use super::{slugify, FormatError, ParsedDocument, Section, SourceType};

/// FAQ pairs and macros: one document per row, keyed by a unique title
/// slug (or "row-<n>" when the title has no letters or digits).
pub(super) fn build(
    path: &Path,
    records: &[Record],
    source_type: SourceType,
) -> Result<Vec<ParsedDocument>, FormatError> {
    let (title_cols, body_cols, what) = match source_type {
        SourceType::Faq => (&["question"][..], &["answer"][..], "FAQ row"),
        _ => (MACRO_TITLE, MACRO_BODY, "macro row"),
    };
    let used: Vec<&str> = title_cols
        .iter()
        .chain(body_cols)
        .chain(LANGUAGE)
        .chain(&["tags", "url"])
        .copied()
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut docs = Vec::new();
    for (n, record) in records.iter().enumerate() {
        let (title, body) = match (record.text(title_cols), record.text(body_cols)) {
            (None, None) => continue,
            (Some(t), Some(b)) => (t, b),
            (None, Some(_)) => {
                return Err(record
                    .at
                    .error(path, format!("{what} has no {}", title_cols[0])))
            }
            (Some(_), None) => {
                return Err(record
                    .at
                    .error(path, format!("{what} has no {}", body_cols[0])))
            }
        };
        let slug = slugify(&title);
        let base = if slug.is_empty() {
            format!("row-{}", n + 1)
        } else {
            slug
        };
        let count = seen.entry(base.clone()).or_insert(0);
        *count += 1;
        let key = if *count == 1 {
            base
        } else {
            format!("{base}-{count}")
        };
        let text = match source_type {
            SourceType::Faq => format!("Q: {title}\nA: {body}"),
            _ => body,
        };
        let mut doc = ParsedDocument::new(key, title, source_type);
        doc.sections.push(Section {
            heading_path: Vec::new(),
            text,
        });
        apply_common(&mut doc, record);
        for (column, value) in &record.fields {
            if !used.contains(&column.as_str()) {
                if let Some(v) = value_text(value) {
                    doc.metadata.insert(column.clone(), Value::String(v));
                }
            }
        }
        docs.push(doc);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::super::records::parse_csv;
    use super::super::records::parse_jsonl;
    use super::super::KindHint;
    use super::*;

    fn csv(src: &str, hint: KindHint) -> Result<Vec<ParsedDocument>, FormatError> {
        parse_csv(Path::new("kb/data.csv"), src.as_bytes(), hint)
    }

    #[test]
    fn faq_csv() {
        let docs = csv("Question,Answer,Category,Tags,Language\n\"How do I reset my password?\",\"Use the link, then check mail.\",account,\"login; security\",en\n,,,,\nWhat is SSO?,Single sign-on.,account,,\n", KindHint::Auto).unwrap();
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d.title, "How do I reset my password?");
        assert_eq!(d.key, "how-do-i-reset-my-password");
        assert_eq!(d.source_type, SourceType::Faq);
        assert_eq!(
            d.sections[0].text,
            "Q: How do I reset my password?\nA: Use the link, then check mail."
        );
        assert_eq!(d.tags, ["login", "security"]);
        assert_eq!(d.language.as_deref(), Some("en"));
        assert_eq!(d.metadata["category"], "account");
        assert_eq!(docs[1].key, "what-is-sso");
    }

    #[test]
    fn faq_jsonl() {
        let src = "{\"question\": \"Do you ship abroad?\", \"answer\": \"Yes, to the EU.\", \"tags\": [\"shipping\"], \"url\": \"https://kb/x\"}\n\n{\"question\": \"Do you ship abroad?\", \"answer\": \"Also UK.\"}\n";
        let docs = parse_jsonl(Path::new("faq.jsonl"), src.as_bytes(), KindHint::Auto).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].title, "Do you ship abroad?");
        assert_eq!(
            docs[0].sections[0].text,
            "Q: Do you ship abroad?\nA: Yes, to the EU."
        );
        assert_eq!(docs[0].tags, ["shipping"]);
        assert_eq!(docs[0].url.as_deref(), Some("https://kb/x"));
        assert_eq!(docs[1].key, "do-you-ship-abroad-2");
    }

    #[test]
    fn macros_csv_semicolon() {
        let docs = csv("id;Name;Body;tags\n7;Refund approved;Hi {{name}}, your refund is on its way.;billing\n", KindHint::Auto).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].source_type, SourceType::Macro);
        assert_eq!(docs[0].title, "Refund approved");
        assert_eq!(docs[0].key, "refund-approved");
        assert_eq!(
            docs[0].sections[0].text,
            "Hi {{name}}, your refund is on its way."
        );
        assert_eq!(docs[0].metadata["id"], "7");
    }
}
