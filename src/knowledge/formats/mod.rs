//! Knowledge-base file formats: turns the bytes of one uploaded file into
//! `ParsedDocument`s (title, heading-delimited sections, metadata).
//!
//! Owns: format detection by extension, the size limits applied before and
//! while reading, and dispatch to one parser per format (markdown, text,
//! html, pdf, docx, records for csv/jsonl/json, zip archives).
//!
//! Depends on nothing else in the crate: no storage, chunking or embedding.
//!
//! Invariant: parsing never panics on file contents and never reads more
//! than the limits allow; every malformed input gives a `FormatError` that
//! names the file.

mod archive;
mod docx;
mod error;
mod html;
mod markdown;
mod pairs;
mod pdf;
mod records;
mod text;
mod tickets;
mod util;

pub use error::FormatError;

use util::{decode_utf8, slugify, split_tags, title_from_path, trim_blank_lines};

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What kind of source a document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Markdown,
    Text,
    Html,
    Pdf,
    Docx,
    Ticket,
    Macro,
    Faq,
}

impl SourceType {
    pub const ALL: [SourceType; 8] = [
        SourceType::Markdown,
        SourceType::Text,
        SourceType::Html,
        SourceType::Pdf,
        SourceType::Docx,
        SourceType::Ticket,
        SourceType::Macro,
        SourceType::Faq,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SourceType::Markdown => "markdown",
            SourceType::Text => "text",
            SourceType::Html => "html",
            SourceType::Pdf => "pdf",
            SourceType::Docx => "docx",
            SourceType::Ticket => "ticket",
            SourceType::Macro => "macro",
            SourceType::Faq => "faq",
        }
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceType {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        SourceType::ALL
            .into_iter()
            .find(|t| t.as_str() == wanted)
            .ok_or_else(|| FormatError::UnknownSourceType {
                value: s.to_string(),
            })
    }
}

/// The text of one heading-delimited section; the enclosing headings are kept
/// in `heading_path` (outermost first) as context, not repeated in `text`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub heading_path: Vec<String>,
    pub text: String,
}

/// One logical document found in a file (a file may hold many: tickets,
/// FAQ rows, archive members).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedDocument {
    /// Stable identity inside its file: "" for one-document files,
    /// "conv-<id>" for a ticket, a title slug or "row-<n>" for a macro/FAQ
    /// row, the member path for archive members.
    pub key: String,
    pub title: String,
    pub source_type: SourceType,
    pub sections: Vec<Section>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub language: Option<String>,
    pub tags: Vec<String>,
    pub url: Option<String>,
}

impl ParsedDocument {
    pub fn new(key: impl Into<String>, title: impl Into<String>, source_type: SourceType) -> Self {
        ParsedDocument {
            key: key.into(),
            title: title.into(),
            source_type,
            sections: Vec::new(),
            metadata: serde_json::Map::new(),
            language: None,
            tags: Vec::new(),
            url: None,
        }
    }

    /// All section texts joined by blank lines (handy for tests and previews).
    pub fn full_text(&self) -> String {
        let texts: Vec<&str> = self.sections.iter().map(|s| s.text.as_str()).collect();
        texts.join("\n\n")
    }
}

/// What the caller says a records file (csv/jsonl/json) holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindHint {
    #[default]
    Auto,
    Tickets,
    Macros,
    Faq,
}

impl KindHint {
    pub fn as_str(&self) -> &'static str {
        match self {
            KindHint::Auto => "auto",
            KindHint::Tickets => "tickets",
            KindHint::Macros => "macros",
            KindHint::Faq => "faq",
        }
    }
}

impl fmt::Display for KindHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KindHint {
    type Err = FormatError;

    /// "auto", "tickets", "macros" or "faq" (singulars and any case too).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(KindHint::Auto),
            "tickets" | "ticket" => Ok(KindHint::Tickets),
            "macros" | "macro" => Ok(KindHint::Macros),
            "faq" | "faqs" => Ok(KindHint::Faq),
            _ => Err(FormatError::UnknownKindHint {
                value: s.to_string(),
            }),
        }
    }
}

/// Resource limits applied to every file and archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseLimits {
    /// Largest file (or archive member) read, in bytes.
    pub max_file_bytes: u64,
    /// Most entries a zip (archive or docx) may list.
    pub max_archive_entries: usize,
    /// Largest total uncompressed size a zip may declare.
    pub max_archive_total_bytes: u64,
    /// Largest uncompressed/compressed ratio of a member over 1 MiB.
    pub max_compression_ratio: u64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_file_bytes: 64 * 1024 * 1024,
            max_archive_entries: 10_000,
            max_archive_total_bytes: 512 * 1024 * 1024,
            max_compression_ratio: 100,
        }
    }
}

/// A file format, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
    Pdf,
    Docx,
    Csv,
    Jsonl,
    /// A JSON array (or object) of records; never a free-form document.
    Json,
    Archive,
}

/// What parsing one file produced. `member_errors` is only ever filled for
/// archives: a member that fails does not fail the archive.
#[derive(Debug, Default)]
pub struct ParseOutput {
    pub documents: Vec<ParsedDocument>,
    pub member_errors: Vec<(String, FormatError)>,
}

/// The format of `path`, by extension; `None` for files to skip quietly.
pub fn detect(path: &Path, _hint: KindHint) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let format = match ext.as_str() {
        "md" | "markdown" | "mdx" => Format::Markdown,
        "txt" | "text" | "rst" => Format::Text,
        "html" | "htm" => Format::Html,
        "pdf" => Format::Pdf,
        "docx" => Format::Docx,
        "csv" => Format::Csv,
        "jsonl" => Format::Jsonl,
        "json" => Format::Json,
        "zip" => Format::Archive,
        _ => return None,
    };
    Some(format)
}

/// Parses bytes already in memory; `path` picks the format and names the
/// file in errors.
pub fn parse_bytes(
    path: &Path,
    bytes: &[u8],
    hint: KindHint,
    limits: &ParseLimits,
) -> Result<ParseOutput, FormatError> {
    let format = detect(path, hint).ok_or_else(|| FormatError::Unsupported {
        path: path.to_path_buf(),
    })?;
    check_size(path, bytes.len() as u64, limits)?;
    if format == Format::Archive {
        return archive::parse(path, bytes, hint, limits);
    }
    Ok(ParseOutput {
        documents: parse_single(path, format, bytes, hint, limits)?,
        member_errors: Vec::new(),
    })
}

/// Reads and parses a file. Its size is checked from metadata before any
/// byte is read, and reading stops at the limit should the file grow.
pub fn parse_file(
    path: &Path,
    hint: KindHint,
    limits: &ParseLimits,
) -> Result<ParseOutput, FormatError> {
    let io_err = |source| FormatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(FormatError::Unsupported {
            path: path.to_path_buf(),
        });
    }
    check_size(path, meta.len(), limits)?;
    if detect(path, hint).is_none() {
        return Err(FormatError::Unsupported {
            path: path.to_path_buf(),
        });
    }
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limits.max_file_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    parse_bytes(path, &bytes, hint, limits)
}

/// Parses one non-archive file.
fn parse_single(
    path: &Path,
    format: Format,
    bytes: &[u8],
    hint: KindHint,
    limits: &ParseLimits,
) -> Result<Vec<ParsedDocument>, FormatError> {
    match format {
        Format::Markdown => markdown::parse(path, bytes).map(|d| vec![d]),
        Format::Text => text::parse(path, bytes).map(|d| vec![d]),
        Format::Html => html::parse(path, bytes).map(|d| vec![d]),
        Format::Pdf => pdf::parse(path, bytes, limits).map(|d| vec![d]),
        Format::Docx => docx::parse(path, bytes, limits).map(|d| vec![d]),
        Format::Csv => records::parse_csv(path, bytes, hint),
        Format::Jsonl => records::parse_jsonl(path, bytes, hint),
        Format::Json => records::parse_json(path, bytes, hint),
        Format::Archive => Err(FormatError::Unsupported {
            path: path.to_path_buf(),
        }),
    }
}

fn check_size(path: &Path, size: u64, limits: &ParseLimits) -> Result<(), FormatError> {
    if size > limits.max_file_bytes {
        return Err(FormatError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: limits.max_file_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_by_extension() {
        let d = |p: &str| detect(Path::new(p), KindHint::Auto);
        assert_eq!(d("a/b.MD"), Some(Format::Markdown));
        assert_eq!(d("x.mdx"), Some(Format::Markdown));
        assert_eq!(d("x.rst"), Some(Format::Text));
        assert_eq!(d("x.htm"), Some(Format::Html));
        assert_eq!(d("x.pdf"), Some(Format::Pdf));
        assert_eq!(d("x.docx"), Some(Format::Docx));
        assert_eq!(d("x.csv"), Some(Format::Csv));
        assert_eq!(d("x.jsonl"), Some(Format::Jsonl));
        assert_eq!(d("x.json"), Some(Format::Json));
        assert_eq!(d("x.zip"), Some(Format::Archive));
        assert_eq!(d("x.png"), None);
        assert_eq!(d("Makefile"), None);
    }

    #[test]
    fn source_type_round_trips() {
        for t in SourceType::ALL {
            assert_eq!(t.as_str().parse::<SourceType>().unwrap(), t);
        }
        assert!(matches!(
            "video".parse::<SourceType>(),
            Err(FormatError::UnknownSourceType { .. })
        ));
    }

    #[test]
    fn kind_hints_parse() {
        for k in [
            KindHint::Auto,
            KindHint::Tickets,
            KindHint::Macros,
            KindHint::Faq,
        ] {
            assert_eq!(k.as_str().parse::<KindHint>().unwrap(), k);
        }
        assert_eq!("Ticket".parse::<KindHint>().unwrap(), KindHint::Tickets);
        let err = "emails".parse::<KindHint>().unwrap_err();
        assert!(err.to_string().contains("emails"));
    }

    #[test]
    fn oversized_file_is_rejected_from_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.md");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(3 * 1024 * 1024 * 1024).unwrap();
        let started = std::time::Instant::now();
        let err = parse_file(&path, KindHint::Auto, &ParseLimits::default()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        match &err {
            FormatError::TooLarge { size, limit, .. } => {
                assert_eq!(*size, 3 * 1024 * 1024 * 1024);
                assert_eq!(*limit, 64 * 1024 * 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains("huge.md"));
    }

    #[test]
    fn parse_file_reads_a_small_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello").unwrap();
        let out = parse_file(&path, KindHint::Auto, &ParseLimits::default()).unwrap();
        assert_eq!(out.documents.len(), 1);
        assert_eq!(out.documents[0].title, "notes");
        let unknown = dir.path().join("image.png");
        std::fs::write(&unknown, "x").unwrap();
        assert!(matches!(
            parse_file(&unknown, KindHint::Auto, &ParseLimits::default()),
            Err(FormatError::Unsupported { .. })
        ));
    }
}
