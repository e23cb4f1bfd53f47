//! Small text helpers shared by the format parsers.
//!
//! Owns: strict UTF-8 decoding with byte offsets, title fallbacks from file
//! names (Notion page ids stripped), slugs, tag lists and blank-line
//! trimming. Depends on nothing else in the crate.
//!
//! Invariant: pure functions of their input; none panics on any string.

use std::path::Path;

use super::FormatError;

/// Strict UTF-8 decoding (a leading BOM is dropped); the error carries the
/// offset of the first bad byte in the original bytes.
pub(super) fn decode_utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, FormatError> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let (skip, body) = match bytes.strip_prefix(BOM) {
        Some(rest) => (BOM.len(), rest),
        None => (0, bytes),
    };
    std::str::from_utf8(body).map_err(|e| FormatError::InvalidUtf8 {
        path: path.to_path_buf(),
        offset: skip + e.valid_up_to(),
    })
}

/// The title a file gets when its contents name none: the file stem, less a
/// trailing 32-hex-digit page id as Notion exports append.
pub(super) fn title_from_path(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    strip_notion_id(&stem).to_string()
}

fn strip_notion_id(stem: &str) -> &str {
    let trimmed = stem.trim_end();
    let Some(split) = trimmed.len().checked_sub(32) else {
        return trimmed;
    };
    let (head, id) = trimmed.split_at_checked(split).unwrap_or((trimmed, ""));
    let is_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let head_ok = head.is_empty() || head.ends_with([' ', '-', '_']);
    if is_id && head_ok && !head.trim().is_empty() {
        head.trim_end_matches([' ', '-', '_'])
    } else {
        trimmed
    }
}

/// Lowercase ASCII slug of a title ("How do I reset?" → "how-do-i-reset").
pub(super) fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_alphanumeric() {
            slug.extend(c.to_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 80 {
            break;
        }
    }
    slug.trim_end_matches('-').to_string()
}

/// Splits a tag list written as "a, b; c" or "[a, b]" into clean tags.
pub(super) fn split_tags(raw: &str) -> Vec<String> {
    let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split([',', ';'])
        .map(|t| t.trim().trim_matches(['"', '\'']).trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Drops leading blank lines and trailing whitespace, keeping the
/// indentation of the first line.
pub(super) fn trim_blank_lines(text: &str) -> &str {
    let end = text.trim_end();
    let mut start = 0;
    for line in end.split_inclusive('\n') {
        if !line.trim().is_empty() {
            break;
        }
        start += line.len();
    }
    &end[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notion_ids_are_stripped_from_titles() {
        let p = Path::new("export/Refund policy 3f2a9c0d1e2b4a5c8d7e6f5a4b3c2d1e.md");
        assert_eq!(title_from_path(p), "Refund policy");
        assert_eq!(title_from_path(Path::new("Plain name.md")), "Plain name");
        let bare = "3f2a9c0d1e2b4a5c8d7e6f5a4b3c2d1e";
        assert_eq!(strip_notion_id(bare), bare);
        assert_eq!(
            strip_notion_id("héllo wörld ünïcode"),
            "héllo wörld ünïcode"
        );
    }

    #[test]
    fn utf8_offsets_and_bom() {
        let p = Path::new("a.txt");
        assert_eq!(decode_utf8(p, b"\xEF\xBB\xBFhi").unwrap(), "hi");
        match decode_utf8(p, b"\xEF\xBB\xBFok\xFFno") {
            Err(FormatError::InvalidUtf8 { offset, .. }) => assert_eq!(offset, 5),
            other => panic!("expected InvalidUtf8, got {other:?}"),
        }
    }

    #[test]
    fn slugs_and_tags() {
        assert_eq!(
            slugify("How do I reset my password?"),
            "how-do-i-reset-my-password"
        );
        assert_eq!(
            split_tags("[billing, 'refunds'; vip]"),
            ["billing", "refunds", "vip"]
        );
    }
}
