//! Word documents (.docx): `word/document.xml` paragraphs as text, with
//! Title/Heading1..Heading6 paragraphs starting sections.
//!
//! Owns: the WordprocessingML reading (paragraphs `w:p`, runs `w:r`, text
//! `w:t`, `w:tab`, `w:br`, styles `w:pStyle`, outline levels, list items)
//! and the `docProps/core.xml` title and language. Depends on nothing else
//! in the crate (the zip is read through `archive::SafeZip`, so DOCX gets
//! the same zip-bomb limits as archives).
//!
//! Invariant: XML is read as a stream (no tree, no recursion, no custom
//! entity expansion); malformed XML or a zip without `word/document.xml`
//! is `FormatError::Malformed`.

use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::archive::SafeZip;
use super::{
    decode_utf8, title_from_path, trim_blank_lines, FormatError, ParseLimits, ParsedDocument,
    Section, SourceType,
};

const FORMAT: &str = "DOCX";
const DOCUMENT: &str = "word/document.xml";
const CORE: &str = "docProps/core.xml";

pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    limits: &ParseLimits,
) -> Result<ParsedDocument, FormatError> {
    let mut zip = SafeZip::open(path, bytes, limits, FORMAT)?;
    let index = zip.index_of(DOCUMENT).ok_or_else(|| {
        FormatError::malformed(
            path,
            FORMAT,
            format!("{DOCUMENT} is missing (not a Word document)"),
        )
    })?;
    let body = zip.read(index)?;
    let core = match zip.index_of(CORE) {
        Some(i) => Some(zip.read(i)?),
        None => None,
    };

    let mut doc = ParsedDocument::new("", String::new(), SourceType::Docx);
    let mut core_title = None;
    if let Some(core) = core {
        let (title, language) = read_core(&path.join(CORE), &core)?;
        core_title = title;
        doc.language = language;
    }
    let body = read_body(&path.join(DOCUMENT), &body)?;
    doc.sections = body.sections;
    doc.title = core_title
        .or(body.title_style)
        .or(body.first_h1)
        .unwrap_or_else(|| title_from_path(path));
    Ok(doc)
}

fn xml_error(path: &Path, reader: &Reader<&[u8]>, e: quick_xml::Error) -> FormatError {
    FormatError::malformed(
        path,
        FORMAT,
        format!("XML error at byte {}: {e}", reader.error_position()),
    )
}

/// `dc:title` and `dc:language` of `docProps/core.xml`.
fn read_core(path: &Path, bytes: &[u8]) -> Result<(Option<String>, Option<String>), FormatError> {
    let text = decode_utf8(path, bytes)?;
    let mut reader = Reader::from_str(text);
    let (mut title, mut language) = (String::new(), String::new());
    let mut current: Option<&'static str> = None;
    loop {
        match reader.read_event() {
            Err(e) => return Err(xml_error(path, &reader, e)),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                current = match e.local_name().as_ref() {
                    "title" => Some("title"),
                    "language" => Some("language"),
                    _ => None,
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Text(t)) => match current {
                Some("title") => title.push_str(&t.xml10_content()),
                Some(_) => language.push_str(&t.xml10_content()),
                None => {}
            },
            Ok(Event::GeneralRef(r)) => {
                if let (Some(which), Some(s)) = (current, resolve_ref(&r)) {
                    if which == "title" {
                        title.push_str(&s)
                    } else {
                        language.push_str(&s)
                    }
                }
            }
            _ => {}
        }
    }
    let clean = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    Ok((clean(title), clean(language)))
}

fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Some(c.to_string()),
        Ok(None) => quick_xml::escape::resolve_predefined_entity(r).map(str::to_string),
        Err(_) => None,
    }
}

#[derive(Default)]
struct Body {
    sections: Vec<Section>,
    stack: Vec<(usize, String)>,
    lines: Vec<String>,
    title_style: Option<String>,
    first_h1: Option<String>,
}

#[derive(Default)]
struct Paragraph {
    text: String,
    level: Option<usize>,
    is_title: bool,
    is_list: bool,
}

impl Body {
    fn flush(&mut self) {
        let text = self.lines.join("\n");
        let text = trim_blank_lines(&text);
        if !text.is_empty() {
            self.sections.push(Section {
                heading_path: self.stack.iter().map(|(_, h)| h.clone()).collect(),
                text: text.to_string(),
            });
        }
        self.lines.clear();
    }

    fn finish(&mut self, p: Paragraph) {
        let text = p.text.trim_end().to_string();
        match p.level {
            Some(level) if !text.trim().is_empty() => {
                let heading = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if p.is_title && self.title_style.is_none() {
                    self.title_style = Some(heading.clone());
                }
                if level == 1 && self.first_h1.is_none() {
                    self.first_h1 = Some(heading.clone());
                }
                self.flush();
                while self.stack.last().is_some_and(|(l, _)| *l >= level) {
                    self.stack.pop();
                }
                self.stack.push((level, heading));
            }
            _ if p.is_list && !text.trim().is_empty() => {
                self.lines.push(format!("- {}", text.trim_start()))
            }
            _ => self.lines.push(text),
        }
    }
}

fn read_body(path: &Path, bytes: &[u8]) -> Result<Body, FormatError> {
    let text = decode_utf8(path, bytes)?;
    let mut reader = Reader::from_str(text);
    let mut body = Body::default();
    let mut para: Option<Paragraph> = None;
    let (mut in_ppr, mut in_run, mut in_text) = (false, 0usize, false);
    loop {
        let event = reader
            .read_event()
            .map_err(|e| xml_error(path, &reader, e))?;
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = e.local_name();
            match name.as_ref() {
                "p" => {
                    para = Some(Paragraph::default());
                    if empty {
                        body.finish(para.take().unwrap_or_default());
                    }
                }
                "pPr" if !empty => in_ppr = true,
                "r" if !empty => in_run += 1,
                "t" if !empty && in_run > 0 => in_text = true,
                "tab" if in_run > 0 => push(&mut para, "\t"),
                "br" | "cr" if in_run > 0 => push(&mut para, "\n"),
                "pStyle" if in_ppr => {
                    if let (Some(p), Some(style)) = (para.as_mut(), attr(e, "val")) {
                        p.is_title = style.eq_ignore_ascii_case("title");
                        p.level = p.level.or(style_level(&style));
                    }
                }
                "outlineLvl" if in_ppr => {
                    let level = attr(e, "val").and_then(|v| v.trim().parse::<usize>().ok());
                    if let (Some(p), Some(level @ 0..=5)) = (para.as_mut(), level) {
                        p.level = p.level.or(Some(level + 1));
                    }
                }
                "numPr" if in_ppr => {
                    if let Some(p) = para.as_mut() {
                        p.is_list = true;
                    }
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::End(e) => match e.local_name().as_ref() {
                "p" => {
                    if let Some(p) = para.take() {
                        body.finish(p);
                    }
                }
                "pPr" => in_ppr = false,
                "r" => in_run = in_run.saturating_sub(1),
                "t" => in_text = false,
                _ => {}
            },
            Event::Text(t) if in_text => push(&mut para, &t.xml10_content()),
            Event::CData(t) if in_text => push(&mut para, &t.xml10_content()),
            Event::GeneralRef(r) if in_text => {
                if let Some(s) = resolve_ref(&r) {
                    push(&mut para, &s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    body.flush();
    Ok(body)
}

fn push(para: &mut Option<Paragraph>, text: &str) {
    if let Some(p) = para.as_mut() {
        p.text.push_str(text);
    }
}

fn attr(e: &BytesStart<'_>, local: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Heading level of a paragraph style id: "Title" → 1, "Heading1" or
/// "heading 3" → 1..6.
fn style_level(style: &str) -> Option<usize> {
    let lower = style.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(1);
    }
    match lower.strip_prefix("heading")?.parse::<usize>() {
        Ok(level @ 1..=6) => Some(level),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::archive::tests::build_zip;
    use super::*;

    const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

    fn para(style: Option<&str>, runs: &str) -> String {
        let ppr = style.map_or(String::new(), |s| {
            format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#)
        });
        format!("<w:p>{ppr}{runs}</w:p>")
    }

    fn run(text: &str) -> String {
        format!(r#"<w:r><w:rPr><w:b/></w:rPr><w:t xml:space="preserve">{text}</w:t></w:r>"#)
    }

    fn docx(body: &str, core_title: Option<&str>) -> Vec<u8> {
        let document = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {W}><w:body>{body}<w:sectPr/></w:body></w:document>"#
        );
        let core = core_title.map(|t| {
            format!(r#"<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{t}</dc:title><dc:language>fr-FR</dc:language></cp:coreProperties>"#)
        });
        let mut members: Vec<(&str, &[u8])> = vec![
            ("[Content_Types].xml", b"<Types/>"),
            ("word/document.xml", document.as_bytes()),
        ];
        if let Some(core) = &core {
            members.push(("docProps/core.xml", core.as_bytes()));
        }
        build_zip(&members)
    }

    #[test]
    fn headings_start_sections() {
        let body = [
            para(None, &run("Preface text.")),
            para(Some("Heading1"), &run("Returns")),
            para(None, &format!("{}{}", run("Send it back"), run(" within 30 days."))),
            para(None, r#"<w:r><w:t>Col A</w:t><w:tab/><w:t>Col B</w:t><w:br/><w:t>next &amp; last</w:t></w:r>"#),
            para(Some("Heading2"), &run("Damaged items")),
            r#"<w:p><w:pPr><w:pStyle w:val="ListParagraph"/><w:numPr><w:ilvl w:val="0"/></w:numPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Photo of the box</w:t></w:r></w:p>"#.to_string(),
            para(Some("Heading1"), &run("Exchanges")),
            "<w:p/>".to_string(),
            para(None, &run("Free within 14 days.")),
        ]
        .concat();
        let bytes = docx(&body, Some("Returns &amp; exchanges"));
        let doc = parse(
            Path::new("policies/returns.docx"),
            &bytes,
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(doc.title, "Returns & exchanges");
        assert_eq!(doc.language.as_deref(), Some("fr-FR"));
        assert_eq!(doc.source_type, SourceType::Docx);
        let paths: Vec<String> = doc
            .sections
            .iter()
            .map(|s| s.heading_path.join(" > "))
            .collect();
        assert_eq!(
            paths,
            ["", "Returns", "Returns > Damaged items", "Exchanges"]
        );
        assert_eq!(doc.sections[0].text, "Preface text.");
        assert_eq!(
            doc.sections[1].text,
            "Send it back within 30 days.\nCol A\tCol B\nnext & last"
        );
        assert_eq!(doc.sections[2].text, "- Photo of the box");
        assert_eq!(doc.sections[3].text, "Free within 14 days.");
    }

    #[test]
    fn title_falls_back_to_title_style_then_heading() {
        let bytes = docx(
            &[
                para(Some("Title"), &run("Onboarding guide")),
                para(None, &run("Hi")),
            ]
            .concat(),
            None,
        );
        let doc = parse(Path::new("x.docx"), &bytes, &ParseLimits::default()).unwrap();
        assert_eq!(doc.title, "Onboarding guide");
        assert_eq!(doc.sections[0].heading_path, ["Onboarding guide"]);
        let bytes = docx(&para(None, &run("Just text")), None);
        let doc = parse(
            Path::new("dir/Plain doc.docx"),
            &bytes,
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(doc.title, "Plain doc");
        assert!(doc.language.is_none());
    }

    #[test]
    fn broken_docx_is_malformed() {
        let not_word = build_zip(&[("hello.txt", b"hi")]);
        let err = parse(Path::new("a.docx"), &not_word, &ParseLimits::default()).unwrap_err();
        assert!(
            matches!(err, FormatError::Malformed { format: "DOCX", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("a.docx"));

        let bad_xml = build_zip(&[("word/document.xml", b"<w:document><w:body><w:p></w:body>")]);
        let err = parse(Path::new("b.docx"), &bad_xml, &ParseLimits::default()).unwrap_err();
        assert!(matches!(err, FormatError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string().contains("b.docx/word/document.xml"),
            "{err}"
        );

        let err = parse(Path::new("c.docx"), b"garbage", &ParseLimits::default()).unwrap_err();
        assert!(matches!(err, FormatError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn style_ids() {
        assert_eq!(style_level("Heading3"), Some(3));
        assert_eq!(style_level("heading 2"), Some(2));
        assert_eq!(style_level("Title"), Some(1));
        assert_eq!(style_level("Heading9"), None);
        assert_eq!(style_level("Normal"), None);
    }
}
