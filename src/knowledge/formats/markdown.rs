//! Markdown files (.md, .markdown, .mdx): front matter plus sections split
//! at ATX (`#`..`######`) and setext (`===` / `---` underlined) headings.
//!
//! Owns: the small front-matter reader (`key: value`, `tags: [a, b]`,
//! `tags: a, b`, and `- item` lists) and the heading splitter. Depends on
//! nothing else in the crate (only the shared helpers of `formats`).
//!
//! Invariant: section text is the source text between headings, verbatim
//! (markdown syntax kept); fenced code blocks are copied whole and a `#`
//! line inside a fence is never a heading.

use std::path::Path;

use super::{
    decode_utf8, split_tags, title_from_path, trim_blank_lines, FormatError, ParsedDocument,
    Section, SourceType,
};

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedDocument, FormatError> {
    let text = decode_utf8(path, bytes)?;
    let (front, body) = split_front_matter(text);
    let mut doc = ParsedDocument::new("", String::new(), SourceType::Markdown);
    let mut title = None;
    for (key, value) in front {
        match key.as_str() {
            "title" => title = Some(value).filter(|v| !v.is_empty()),
            "lang" | "language" => doc.language = Some(value).filter(|v| !v.is_empty()),
            "tags" | "keywords" => doc.tags.extend(split_tags(&value)),
            "url" | "source" => doc.url = Some(value).filter(|v| !v.is_empty()),
            _ => {
                doc.metadata.insert(key, serde_json::Value::String(value));
            }
        }
    }
    let (sections, first_h1) = split_sections(body);
    doc.sections = sections;
    doc.title = title.or(first_h1).unwrap_or_else(|| title_from_path(path));
    Ok(doc)
}

/// Splits `---`-delimited front matter off the top. Returns lowercased keys
/// with unquoted values; list items (`- x`) join their key's value with ", ".
fn split_front_matter(text: &str) -> (Vec<(String, String)>, &str) {
    let mut lines = text.split_inclusive('\n');
    let Some(first) = lines.next() else {
        return (Vec::new(), text);
    };
    if first.trim_end() != "---" {
        return (Vec::new(), text);
    }
    let mut offset = first.len();
    let mut raw = Vec::new();
    let mut closed = false;
    for line in lines {
        offset += line.len();
        let t = line.trim_end();
        if t == "---" || t == "..." {
            closed = true;
            break;
        }
        raw.push(t);
    }
    if !closed {
        return (Vec::new(), text);
    }
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in raw {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("- ") {
            if let Some((_, value)) = entries.last_mut() {
                if !value.is_empty() {
                    value.push_str(", ");
                }
                value.push_str(unquote(item.trim()));
            }
            continue;
        }
        if let Some((key, value)) = trimmed.split_once(':') {
            let key = key.trim().to_ascii_lowercase();
            if !key.is_empty() && !key.contains(' ') {
                entries.push((key, unquote(value.trim()).to_string()));
            }
        }
    }
    (entries, &text[offset..])
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

struct Splitter<'a> {
    sections: Vec<Section>,
    stack: Vec<(usize, String)>,
    lines: Vec<&'a str>,
    /// Index in `lines` where the current paragraph began (setext candidate).
    para_start: Option<usize>,
    first_h1: Option<String>,
}

impl<'a> Splitter<'a> {
    fn flush(&mut self) {
        let joined = self.lines.join("\n");
        let text = trim_blank_lines(&joined);
        if !text.is_empty() {
            self.sections.push(Section {
                heading_path: self.stack.iter().map(|(_, h)| h.clone()).collect(),
                text: text.to_string(),
            });
        }
        self.lines.clear();
        self.para_start = None;
    }

    fn heading(&mut self, level: usize, text: String) {
        self.flush();
        while self.stack.last().is_some_and(|(l, _)| *l >= level) {
            self.stack.pop();
        }
        if level == 1 && self.first_h1.is_none() && !text.is_empty() {
            self.first_h1 = Some(text.clone());
        }
        self.stack.push((level, text));
    }
}

/// Returns the sections and the first H1, if any.
fn split_sections(body: &str) -> (Vec<Section>, Option<String>) {
    let mut s = Splitter {
        sections: Vec::new(),
        stack: Vec::new(),
        lines: Vec::new(),
        para_start: None,
        first_h1: None,
    };
    let mut fence: Option<(u8, usize)> = None;
    for raw in body.lines() {
        if let Some((ch, len)) = fence {
            s.lines.push(raw);
            if closes_fence(raw, ch, len) {
                fence = None;
            }
            continue;
        }
        if let Some(open) = opens_fence(raw) {
            fence = Some(open);
            s.para_start = None;
            s.lines.push(raw);
            continue;
        }
        if let Some((level, text)) = atx_heading(raw) {
            s.heading(level, text);
            continue;
        }
        if let (Some(start), Some(level)) = (s.para_start, setext_level(raw)) {
            let text = s.lines[start..]
                .iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ");
            s.lines.truncate(start);
            s.heading(level, text);
            continue;
        }
        if raw.trim().is_empty() {
            s.para_start = None;
        } else if s.para_start.is_none() && starts_paragraph(raw) {
            s.para_start = Some(s.lines.len());
        } else if !starts_paragraph(raw) {
            s.para_start = None;
        }
        s.lines.push(raw);
    }
    s.flush();
    (s.sections, s.first_h1)
}

/// Leading spaces, or `None` when the line is indented as code (4+).
fn indent_ok(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(' ');
    (line.len() - rest.len() <= 3).then_some(rest)
}

fn opens_fence(line: &str) -> Option<(u8, usize)> {
    let rest = indent_ok(line)?;
    let ch = *rest.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = rest.bytes().take_while(|&b| b == ch).count();
    if len < 3 || (ch == b'`' && rest[len..].contains('`')) {
        return None;
    }
    Some((ch, len))
}

fn closes_fence(line: &str, ch: u8, len: usize) -> bool {
    let Some(rest) = indent_ok(line) else {
        return false;
    };
    let run = rest.bytes().take_while(|&b| b == ch).count();
    run >= len && rest[run..].trim().is_empty()
}

fn atx_heading(line: &str) -> Option<(usize, String)> {
    let rest = indent_ok(line)?;
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None;
    }
    let mut text = after.trim();
    let stripped = text.trim_end_matches('#');
    if stripped.is_empty() || stripped.ends_with([' ', '\t']) {
        text = stripped.trim_end();
    }
    Some((level, text.to_string()))
}

fn setext_level(line: &str) -> Option<usize> {
    let rest = indent_ok(line)?.trim_end();
    let ch = rest.bytes().next()?;
    if !rest.bytes().all(|b| b == ch) {
        return None;
    }
    match ch {
        b'=' => Some(1),
        b'-' => Some(2),
        _ => None,
    }
}

/// Whether a non-blank line can start a paragraph that a setext underline
/// turns into a heading (list items, quotes, tables and code cannot).
fn starts_paragraph(line: &str) -> bool {
    let Some(rest) = indent_ok(line) else {
        return false;
    };
    let list_marker = rest.starts_with("- ") || rest.starts_with("* ") || rest.starts_with("+ ");
    let ordered = {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && (rest[digits..].starts_with(". ") || rest[digits..].starts_with(") "))
    };
    !(list_marker
        || ordered
        || rest.starts_with('>')
        || rest.starts_with('|')
        || rest.starts_with('<'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(src: &str) -> ParsedDocument {
        parse(Path::new("docs/Getting started.md"), src.as_bytes()).unwrap()
    }

    #[test]
    fn sections_follow_heading_stack() {
        let doc = md("Intro line.\n\n# Billing\n\nWe bill monthly.\n\n## Refunds\n\nWithin 30 days.\n\n### Partial ###\nPro rata.\n\n## Invoices\nPDF by email.\n\n# Support\nEmail us.\n");
        assert_eq!(doc.title, "Billing");
        let paths: Vec<Vec<&str>> = doc
            .sections
            .iter()
            .map(|s| s.heading_path.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            paths,
            vec![
                vec![],
                vec!["Billing"],
                vec!["Billing", "Refunds"],
                vec!["Billing", "Refunds", "Partial"],
                vec!["Billing", "Invoices"],
                vec!["Support"],
            ]
        );
        assert_eq!(doc.sections[0].text, "Intro line.");
        assert_eq!(doc.sections[2].text, "Within 30 days.");
        assert_eq!(doc.sections[3].text, "Pro rata.");
    }

    #[test]
    fn headings_inside_fences_are_code() {
        let src = "# Setup\n\n```bash\n# install the agent\n## not a heading\n```\n\n~~~~\n# also code\n~~~\nstill code\n~~~~\nafter\n";
        let doc = md(src);
        assert_eq!(doc.sections.len(), 1);
        assert_eq!(doc.sections[0].heading_path, ["Setup"]);
        let text = &doc.sections[0].text;
        assert!(text.contains("```bash\n# install the agent\n## not a heading\n```"));
        assert!(text.contains("# also code\n~~~\nstill code\n~~~~\nafter"));
    }

    #[test]
    fn setext_headings_and_thematic_breaks() {
        let doc = md("Account\n=======\nManage it.\n\nPasswords\n---------\nReset them.\n\n---\n\n- item\n---\n");
        assert_eq!(doc.title, "Account");
        assert_eq!(doc.sections[0].heading_path, ["Account"]);
        assert_eq!(doc.sections[0].text, "Manage it.");
        assert_eq!(doc.sections[1].heading_path, ["Account", "Passwords"]);
        assert!(doc.sections[1]
            .text
            .starts_with("Reset them.\n\n---\n\n- item\n---"));
    }

    #[test]
    fn front_matter_fields() {
        let src = "---\ntitle: \"Refund policy\"\nlang: de\ntags: [billing, refunds]\nurl: https://help.example.com/refunds\nowner: finance\n---\n# Ignored for title\nBody.\n";
        let doc = md(src);
        assert_eq!(doc.title, "Refund policy");
        assert_eq!(doc.language.as_deref(), Some("de"));
        assert_eq!(doc.tags, ["billing", "refunds"]);
        assert_eq!(doc.url.as_deref(), Some("https://help.example.com/refunds"));
        assert_eq!(doc.metadata["owner"], "finance");
        assert_eq!(doc.sections[0].heading_path, ["Ignored for title"]);
        assert!(!doc.full_text().contains("lang: de"));

        let listed = md("---\ntags: a, b\nkeywords:\n  - c\n  - 'd'\nsource: kb://x\n---\ntext\n");
        assert_eq!(listed.tags, ["a", "b", "c", "d"]);
        assert_eq!(listed.url.as_deref(), Some("kb://x"));
        assert_eq!(listed.title, "Getting started");
    }

    #[test]
    fn unclosed_front_matter_is_body_text() {
        let doc = md("---\ntitle: x\nno end\n");
        assert_eq!(doc.title, "Getting started");
        assert!(doc.full_text().contains("title: x"));
    }

    #[test]
    fn hashtags_and_indented_code_are_not_headings() {
        let doc = md("#hashtag\n    # indented code\ntext");
        assert_eq!(doc.sections.len(), 1);
        assert!(doc.sections[0].heading_path.is_empty());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let err = parse(Path::new("x.md"), b"# ok\n\xC3\x28").unwrap_err();
        assert!(matches!(err, FormatError::InvalidUtf8 { offset: 5, .. }));
    }
}
