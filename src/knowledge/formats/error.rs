//! The one error type of the `formats` module.
//!
//! Owns: `FormatError`, the reasons a knowledge-base file cannot be turned
//! into documents. Depends on nothing else in the crate.
//!
//! Invariant: every variant names the file it is about (and, where it
//! applies, the archive member, line, byte offset or limit), so a message
//! alone tells an operator what to fix.

use std::path::PathBuf;

/// Why a file (or an archive member) could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is {size} bytes, over the limit of {limit} bytes", .path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },

    #[error("{} is not a supported knowledge-base format", .path.display())]
    Unsupported { path: PathBuf },

    #[error("{} is not valid UTF-8 (first bad byte at offset {offset})", .path.display())]
    InvalidUtf8 { path: PathBuf, offset: usize },

    #[error("{} is a malformed {format} file: {reason}", .path.display())]
    Malformed {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },

    #[error("{} is an encrypted PDF that cannot be opened without a password", .path.display())]
    EncryptedPdf { path: PathBuf },

    #[error("{} has no text layer (scanned or image-only PDF); OCR it first", .path.display())]
    NoText { path: PathBuf },

    #[error("{} has {entries} archive entries, over the limit of {limit}", .path.display())]
    TooManyEntries {
        path: PathBuf,
        entries: usize,
        limit: usize,
    },

    #[error("{} declares {declared} uncompressed bytes, over the limit of {limit}", .path.display())]
    ArchiveTooLarge {
        path: PathBuf,
        declared: u64,
        limit: u64,
    },

    #[error("{}: member '{member}' expands {ratio}:1, over the limit of {limit}:1 (zip bomb?)", .path.display())]
    CompressionRatio {
        path: PathBuf,
        member: String,
        ratio: u64,
        limit: u64,
    },

    #[error("{}: member '{member}' inflates past its declared size of {declared} bytes (zip bomb?)", .path.display())]
    SizeMismatch {
        path: PathBuf,
        member: String,
        declared: u64,
    },

    #[error("{} line {line}: {reason}", .path.display())]
    Record {
        path: PathBuf,
        line: u64,
        reason: String,
    },

    #[error("{} item {index}: {reason}", .path.display())]
    JsonItem {
        path: PathBuf,
        index: usize,
        reason: String,
    },

    #[error(
        "{} has an unrecognised record layout (columns: {}); expected FAQ (question, answer), \
         macros (title|name, body|text|content) or tickets (conversation id, role, text / transcript / turns)",
        .path.display(), .columns.join(", ")
    )]
    UnknownRecordLayout { path: PathBuf, columns: Vec<String> },

    #[error("unknown source type '{value}'")]
    UnknownSourceType { value: String },

    #[error("unknown record kind '{value}' (expected auto, tickets, macros or faq)")]
    UnknownKindHint { value: String },
}

impl FormatError {
    pub(super) fn malformed(
        path: &std::path::Path,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        FormatError::Malformed {
            path: path.to_path_buf(),
            format,
            reason: reason.into(),
        }
    }
}
