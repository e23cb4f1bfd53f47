//! Plain text files (.txt, .text, .rst): the whole file is one section.
//!
//! Owns: plain-text decoding. Depends on nothing else in the crate (only the
//! shared helpers of `formats`).
//!
//! Invariant: the text is the file's own UTF-8 text (BOM dropped, outer
//! blank lines trimmed); invalid UTF-8 is an error, never replaced.

use std::path::Path;

use super::{
    decode_utf8, title_from_path, trim_blank_lines, FormatError, ParsedDocument, Section,
    SourceType,
};

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedDocument, FormatError> {
    let text = decode_utf8(path, bytes)?;
    let mut doc = ParsedDocument::new("", title_from_path(path), SourceType::Text);
    let body = trim_blank_lines(text);
    if !body.is_empty() {
        doc.sections.push(Section {
            heading_path: Vec::new(),
            text: body.to_string(),
        });
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_section_titled_by_stem() {
        let doc = parse(
            Path::new("kb/Shipping times.txt"),
            b"\xEF\xBB\xBF\n\n  Orders ship in 2 days.\n\n",
        )
        .unwrap();
        assert_eq!(doc.title, "Shipping times");
        assert_eq!(doc.key, "");
        assert_eq!(doc.source_type, SourceType::Text);
        assert_eq!(doc.sections.len(), 1);
        assert_eq!(doc.sections[0].text, "  Orders ship in 2 days.");
        assert!(doc.sections[0].heading_path.is_empty());
    }

    #[test]
    fn invalid_utf8_reports_offset() {
        let err = parse(Path::new("bad.txt"), b"caf\xE9 latin-1").unwrap_err();
        match &err {
            FormatError::InvalidUtf8 { offset, path } => {
                assert_eq!(*offset, 3);
                assert_eq!(path, Path::new("bad.txt"));
            }
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
        assert!(err.to_string().contains("bad.txt"));
        assert!(err.to_string().contains("offset 3"));
    }

    #[test]
    fn empty_file_has_no_sections() {
        let doc = parse(Path::new("empty.txt"), b"  \n").unwrap();
        assert!(doc.sections.is_empty());
    }
}
