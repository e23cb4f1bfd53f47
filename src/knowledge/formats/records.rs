//! Record files (.csv, .jsonl, .json): FAQ pairs, macros/saved replies and
//! support tickets, recognised by their columns or keys unless hinted.
//!
//! Owns: reading rows into `Record`s (lowercased column names, the source
//! line or item number) and layout detection; FAQ/macro documents are
//! built in `pairs`, tickets in `tickets`. Depends on nothing else in the
//! crate (only the shared helpers of `formats`).
//!
//! Invariant: every row error names its line (csv/jsonl) or item (json);
//! a column set matching no layout is `UnknownRecordLayout`, never a guess.

use std::path::Path;

use serde_json::{Map, Value};

use super::{decode_utf8, split_tags, FormatError, KindHint, ParsedDocument, SourceType};
use super::{pairs, tickets};

/// Where a record came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Location {
    Line(u64),
    Item(usize),
}

impl Location {
    pub(super) fn error(self, path: &Path, reason: impl Into<String>) -> FormatError {
        let (path, reason) = (path.to_path_buf(), reason.into());
        match self {
            Location::Line(line) => FormatError::Record { path, line, reason },
            Location::Item(index) => FormatError::JsonItem {
                path,
                index,
                reason,
            },
        }
    }
}

/// One row, keyed by lowercased, trimmed column names.
pub(super) struct Record {
    pub(super) at: Location,
    pub(super) fields: Map<String, Value>,
}

impl Record {
    /// Text of the first of `names` that holds a non-empty value.
    pub(super) fn text(&self, names: &[&str]) -> Option<String> {
        names
            .iter()
            .find_map(|n| self.fields.get(*n).and_then(value_text))
    }

    pub(super) fn tags(&self) -> Vec<String> {
        match self.fields.get("tags") {
            Some(Value::Array(items)) => items.iter().filter_map(value_text).collect(),
            Some(other) => value_text(other)
                .map(|t| split_tags(&t))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// A JSON value as plain text; `None` for null and blank strings.
pub(super) fn value_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.trim().to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(value_text)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    (!text.is_empty()).then_some(text)
}

pub(super) const CONVERSATION_ID: &[&str] = &["conversation_id", "ticket_id", "conversation", "id"];
pub(super) const ROLE: &[&str] = &["role", "speaker", "author", "sender"];
pub(super) const TEXT: &[&str] = &["text", "message", "body", "content"];
pub(super) const TURNS: &[&str] = &["turns", "messages"];
pub(super) const LANGUAGE: &[&str] = &["language", "lang"];
pub(super) const MACRO_TITLE: &[&str] = &["title", "name"];
pub(super) const MACRO_BODY: &[&str] = &["body", "text", "content"];

enum Layout {
    Faq,
    Macros,
    Tickets(tickets::Shape),
}

fn detect_layout(columns: &[String], hint: KindHint) -> Option<Layout> {
    let first = |names: &[&str]| {
        names
            .iter()
            .find(|n| columns.iter().any(|c| c == *n))
            .map(|n| n.to_string())
    };
    let has = |name: &str| columns.iter().any(|c| c == name);
    let ticket = if first(TURNS).is_some() {
        Some(tickets::Shape::Nested)
    } else if first(CONVERSATION_ID).is_some() && first(ROLE).is_some() && first(TEXT).is_some() {
        Some(tickets::Shape::TurnRows)
    } else if has("transcript") {
        Some(tickets::Shape::Transcripts)
    } else {
        None
    };
    let faq = has("question") && has("answer");
    let macros = first(MACRO_TITLE).is_some() && first(MACRO_BODY).is_some();
    let names_conversation = CONVERSATION_ID[..3].iter().any(|n| has(n));
    match hint {
        KindHint::Tickets => ticket.map(Layout::Tickets),
        KindHint::Faq => faq.then_some(Layout::Faq),
        KindHint::Macros => macros.then_some(Layout::Macros),
        KindHint::Auto => ticket
            .map(Layout::Tickets)
            .or(faq.then_some(Layout::Faq))
            .or((macros && !names_conversation).then_some(Layout::Macros)),
    }
}

fn build(
    path: &Path,
    columns: Vec<String>,
    records: Vec<Record>,
    hint: KindHint,
) -> Result<Vec<ParsedDocument>, FormatError> {
    match detect_layout(&columns, hint) {
        Some(Layout::Faq) => pairs::build(path, &records, SourceType::Faq),
        Some(Layout::Macros) => pairs::build(path, &records, SourceType::Macro),
        Some(Layout::Tickets(shape)) => tickets::build(path, &records, &shape),
        None => Err(FormatError::UnknownRecordLayout {
            path: path.to_path_buf(),
            columns,
        }),
    }
}

pub(super) fn parse_csv(
    path: &Path,
    bytes: &[u8],
    hint: KindHint,
) -> Result<Vec<ParsedDocument>, FormatError> {
    let text = decode_utf8(path, bytes)?;
    let header_line = text.lines().next().unwrap_or("");
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| header_line.bytes().filter(|b| b == d).count())
        .filter(|d| header_line.as_bytes().contains(d))
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(1, |p| p.line());
        Location::Line(line).error(path, e.to_string())
    };
    let columns: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(csv_error)?;
        let at = Location::Line(row.position().map_or(0, |p| p.line()));
        let mut fields = Map::new();
        for (column, value) in columns.iter().zip(row.iter()) {
            if !column.is_empty() {
                fields.insert(column.clone(), Value::String(value.to_string()));
            }
        }
        records.push(Record { at, fields });
    }
    build(path, columns, records, hint)
}

pub(super) fn parse_jsonl(
    path: &Path,
    bytes: &[u8],
    hint: KindHint,
) -> Result<Vec<ParsedDocument>, FormatError> {
    let text = decode_utf8(path, bytes)?;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Location::Line(n as u64 + 1);
        let value: Value =
            serde_json::from_str(line).map_err(|e| at.error(path, format!("invalid JSON: {e}")))?;
        records.push(object_record(path, at, value)?);
    }
    let columns = column_union(&records);
    build(path, columns, records, hint)
}

pub(super) fn parse_json(
    path: &Path,
    bytes: &[u8],
    hint: KindHint,
) -> Result<Vec<ParsedDocument>, FormatError> {
    let text = decode_utf8(path, bytes)?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Location::Line(e.line() as u64).error(path, format!("invalid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(map) => match list_inside(&map) {
            Some(key) => match map.get(&key) {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            },
            None => vec![Value::Object(map)],
        },
        other => {
            return Err(FormatError::malformed(
                path,
                "JSON",
                format!("expected an array of records, found {}", kind(&other)),
            ));
        }
    };
    let records = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| object_record(path, Location::Item(i + 1), v))
        .collect::<Result<Vec<_>, _>>()?;
    let columns = column_union(&records);
    build(path, columns, records, hint)
}

/// The key of a wrapper object's only list of records ({"tickets": [...]}),
/// unless the object is itself a ticket with turns.
fn list_inside(map: &Map<String, Value>) -> Option<String> {
    if map
        .keys()
        .any(|k| TURNS.contains(&k.to_lowercase().as_str()))
    {
        return None;
    }
    let mut lists = map
        .iter()
        .filter(|(_, v)| matches!(v, Value::Array(a) if a.iter().all(Value::is_object)));
    let (key, _) = lists.next()?;
    lists.next().is_none().then(|| key.clone())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object_record(path: &Path, at: Location, value: Value) -> Result<Record, FormatError> {
    match value {
        Value::Object(map) => Ok(Record {
            at,
            fields: map
                .into_iter()
                .map(|(k, v)| (k.trim().to_lowercase(), v))
                .collect(),
        }),
        other => Err(at.error(
            path,
            format!("expected a JSON object, found {}", kind(&other)),
        )),
    }
}

fn column_union(records: &[Record]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for record in records {
        for key in record.fields.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    columns
}

/// Fills language, tags and url from the usual columns.
pub(super) fn apply_common(doc: &mut ParsedDocument, record: &Record) {
    doc.language = doc.language.take().or_else(|| record.text(LANGUAGE));
    doc.url = doc.url.take().or_else(|| record.text(&["url"]));
    for tag in record.tags() {
        if !doc.tags.contains(&tag) {
            doc.tags.push(tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(src: &str, hint: KindHint) -> Result<Vec<ParsedDocument>, FormatError> {
        parse_csv(Path::new("kb/data.csv"), src.as_bytes(), hint)
    }

    #[test]
    fn hints_override_detection() {
        let src = "title,body\nGreeting,Hello!\n";
        assert!(matches!(
            csv(src, KindHint::Faq),
            Err(FormatError::UnknownRecordLayout { .. })
        ));
        assert_eq!(csv(src, KindHint::Macros).unwrap()[0].title, "Greeting");
    }

    #[test]
    fn unknown_layout_lists_columns() {
        let err = csv("sku,price\nA1,3\n", KindHint::Auto).unwrap_err();
        match &err {
            FormatError::UnknownRecordLayout { columns, .. } => {
                assert_eq!(columns, &["sku", "price"])
            }
            other => panic!("expected UnknownRecordLayout, got {other:?}"),
        }
        assert!(err.to_string().contains("data.csv"));
        assert!(err.to_string().contains("sku, price"));
    }

    #[test]
    fn row_errors_name_lines() {
        let err = csv("question,answer\nq1,a1\nq2,a2,extra\n", KindHint::Auto).unwrap_err();
        assert!(
            matches!(err, FormatError::Record { line: 3, .. }),
            "{err:?}"
        );
        let err = csv("question,answer\nq1,a1\n,orphan answer\n", KindHint::Auto).unwrap_err();
        assert!(
            matches!(err, FormatError::Record { line: 3, .. }),
            "{err:?}"
        );
        let err = parse_jsonl(
            Path::new("f.jsonl"),
            b"{\"question\":\"q\",\"answer\":\"a\"}\n{broken\n",
            KindHint::Auto,
        )
        .unwrap_err();
        assert!(
            matches!(err, FormatError::Record { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("f.jsonl line 2"));
        let err = parse_jsonl(Path::new("f.jsonl"), b"[1,2]\n", KindHint::Auto).unwrap_err();
        assert!(
            matches!(err, FormatError::Record { line: 1, .. }),
            "{err:?}"
        );
        let err = parse_json(
            Path::new("f.json"),
            b"[{\"question\":\"q\",\"answer\":\"a\"}, 3]",
            KindHint::Auto,
        )
        .unwrap_err();
        assert!(
            matches!(err, FormatError::JsonItem { index: 2, .. }),
            "{err:?}"
        );
        let err = csv("question,answer\nq,caf\u{e9}\n", KindHint::Auto).map(|_| ());
        assert!(err.is_ok());
        let err = parse_csv(
            Path::new("x.csv"),
            b"question,answer\nq,caf\xE9\n",
            KindHint::Auto,
        )
        .unwrap_err();
        assert!(
            matches!(err, FormatError::InvalidUtf8 { offset: 21, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn json_wrappers() {
        let docs = parse_json(
            Path::new("faq.json"),
            br#"{"faqs": [{"Question": "A?", "Answer": "B."}]}"#,
            KindHint::Auto,
        )
        .unwrap();
        assert_eq!(docs[0].title, "A?");
        let err = parse_json(Path::new("n.json"), b"42", KindHint::Auto).unwrap_err();
        assert!(matches!(err, FormatError::Malformed { .. }), "{err:?}");
    }
}
