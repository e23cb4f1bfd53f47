//! HTML pages (.html, .htm): the main content as heading-delimited text.
//!
//! Owns: choosing the content root (`<main>`/`role=main`, else top-level
//! `<article>`s, else `<body>`), dropping page chrome (scripts, styles,
//! navigation, page header/footer, asides, forms, embeds, hidden
//! elements), and flattening the rest to text with h1–h6 sections.
//! Depends on nothing else in the crate (only the shared helpers of
//! `formats`); parsing is html5ever's, through `scraper`.
//!
//! Invariant: the tree is walked iteratively (no recursion, so deep nesting
//! cannot overflow the stack); text inside dropped elements never reaches a
//! section.

use std::path::Path;

use ego_tree::iter::Edge;
use ego_tree::NodeRef;
use scraper::node::Element;
use scraper::{Html, Node};

use super::{
    decode_utf8, title_from_path, trim_blank_lines, FormatError, ParsedDocument, Section,
    SourceType,
};

/// Elements whose whole subtree is page chrome or not text.
const DROPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "aside", "form", "svg", "iframe", "head",
    "button", "select", "object", "embed", "canvas", "math",
];
const DROPPED_ROLES: &[&str] = &["navigation", "banner", "contentinfo", "search"];
/// Elements that end a line.
#[rustfmt::skip]
const BLOCKS: &[&str] = &[
    "address", "blockquote", "dd", "details", "dialog", "div", "dl", "dt", "fieldset",
    "figcaption", "figure", "hr", "li", "ol", "p", "pre", "section", "summary", "table", "tbody",
    "thead", "tfoot", "tr", "ul", "main", "article", "header", "footer", "caption", "body",
];
/// Blocks followed by a blank line (paragraph-like).
const PARAGRAPHS: &[&str] = &[
    "p",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "blockquote",
    "figure",
];

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedDocument, FormatError> {
    let source = decode_utf8(path, bytes)?;
    let html = Html::parse_document(source);
    let mut doc = ParsedDocument::new("", String::new(), SourceType::Html);
    let mut title = None;
    for node in html.tree.root().descendants() {
        let Some(el) = node.value().as_element() else {
            continue;
        };
        match el.name() {
            "html" if doc.language.is_none() => {
                doc.language = el
                    .attr("lang")
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from);
            }
            "title" if title.is_none() => {
                title = Some(collapse(&plain_text(node))).filter(|t| !t.is_empty());
            }
            "link" if doc.url.is_none() => {
                let canonical = el.attr("rel").is_some_and(|rel| {
                    rel.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("canonical"))
                });
                if canonical {
                    doc.url = el
                        .attr("href")
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(String::from);
                }
            }
            _ => {}
        }
    }

    let mut walker = Walker::default();
    for root in content_roots(&html) {
        walker.walk(root);
    }
    walker.flush();
    doc.sections = walker.sections;
    doc.title = title
        .or(walker.first_h1)
        .unwrap_or_else(|| title_from_path(path));
    Ok(doc)
}

/// `<main>` (or role=main) if any, else the outermost `<article>`s, else the
/// whole document.
fn content_roots(html: &Html) -> Vec<NodeRef<'_, Node>> {
    let elements = || {
        html.tree
            .root()
            .descendants()
            .filter(|n| n.value().as_element().is_some_and(|e| !is_dropped(e)))
    };
    let is_main = |e: &Element| e.name() == "main" || role_is(e, "main");
    if let Some(main) = elements().find(|n| n.value().as_element().is_some_and(is_main)) {
        return vec![main];
    }
    let is_article = |n: &NodeRef<'_, Node>| {
        n.value()
            .as_element()
            .is_some_and(|e| e.name() == "article")
    };
    let articles: Vec<_> = elements()
        .filter(is_article)
        .filter(|n| !n.ancestors().any(|a| is_article(&a)))
        .collect();
    if !articles.is_empty() {
        return articles;
    }
    vec![html.tree.root()]
}

fn role_is(el: &Element, role: &str) -> bool {
    el.attr("role")
        .is_some_and(|r| r.trim().eq_ignore_ascii_case(role))
}

fn is_dropped(el: &Element) -> bool {
    DROPPED.contains(&el.name())
        || DROPPED_ROLES.iter().any(|r| role_is(el, r))
        || el.attr("hidden").is_some()
        || el.attr("aria-hidden").is_some_and(|v| v.trim() == "true")
}

/// All text below `node`, unfiltered (for `<title>`).
fn plain_text(node: NodeRef<'_, Node>) -> String {
    node.descendants()
        .filter_map(|n| n.value().as_text().map(|t| t.to_string()))
        .collect()
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Default)]
struct Walker {
    sections: Vec<Section>,
    stack: Vec<(usize, String)>,
    out: String,
    pending_space: bool,
    /// Open `<pre>` elements: whitespace is kept verbatim inside.
    pre_depth: usize,
    /// Open sectioning elements: a `<header>`/`<footer>` inside one belongs
    /// to the content, outside one it is the page's banner/footer.
    sectioning_depth: usize,
    /// Heading being collected: its level and text so far.
    heading: Option<(usize, String)>,
    first_h1: Option<String>,
}

impl Walker {
    fn walk(&mut self, root: NodeRef<'_, Node>) {
        let mut skipping: Option<ego_tree::NodeId> = None;
        for edge in root.traverse() {
            match edge {
                Edge::Open(node) => {
                    if skipping.is_some() {
                        continue;
                    }
                    match node.value() {
                        Node::Element(el) if self.drops(el) => skipping = Some(node.id()),
                        Node::Element(el) => self.open(el),
                        Node::Text(t) => self.text(t),
                        _ => {}
                    }
                }
                Edge::Close(node) => {
                    if skipping == Some(node.id()) {
                        skipping = None;
                    } else if skipping.is_none() {
                        if let Node::Element(el) = node.value() {
                            self.close(el);
                        }
                    }
                }
            }
        }
    }

    fn drops(&self, el: &Element) -> bool {
        is_dropped(el) || (matches!(el.name(), "header" | "footer") && self.sectioning_depth == 0)
    }

    fn open(&mut self, el: &Element) {
        let name = el.name();
        if let Some(level) = heading_level(name) {
            self.flush();
            self.heading = Some((level, String::new()));
            return;
        }
        match name {
            "main" | "article" | "section" => self.sectioning_depth += 1,
            "pre" => self.pre_depth += 1,
            "br" => self.newline(false),
            "td" | "th" if !self.at_line_start() => {
                self.out.push_str(" | ");
                self.pending_space = false;
            }
            "li" => {
                self.newline(false);
                self.out.push_str("- ");
            }
            _ => {}
        }
        if BLOCKS.contains(&name) && name != "li" {
            self.newline(false);
        }
    }

    fn close(&mut self, el: &Element) {
        let name = el.name();
        if heading_level(name).is_some() {
            if let Some((level, raw)) = self.heading.take() {
                let text = collapse(&raw);
                if level == 1 && self.first_h1.is_none() && !text.is_empty() {
                    self.first_h1 = Some(text.clone());
                }
                while self.stack.last().is_some_and(|(l, _)| *l >= level) {
                    self.stack.pop();
                }
                self.stack.push((level, text));
            }
            return;
        }
        match name {
            "main" | "article" | "section" => {
                self.sectioning_depth = self.sectioning_depth.saturating_sub(1)
            }
            "pre" => self.pre_depth = self.pre_depth.saturating_sub(1),
            _ => {}
        }
        if BLOCKS.contains(&name) {
            self.newline(PARAGRAPHS.contains(&name));
        }
    }

    fn text(&mut self, text: &str) {
        if let Some((_, heading)) = self.heading.as_mut() {
            heading.push_str(text);
            return;
        }
        if self.pre_depth > 0 {
            self.out.push_str(text);
            self.pending_space = false;
            return;
        }
        for c in text.chars() {
            if c.is_whitespace() {
                self.pending_space = true;
            } else {
                if self.pending_space && !self.at_line_start() {
                    self.out.push(' ');
                }
                self.pending_space = false;
                self.out.push(c);
            }
        }
    }

    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    /// Ends the current line; `blank` also leaves an empty line after it.
    fn newline(&mut self, blank: bool) {
        self.pending_space = false;
        if self.out.is_empty() {
            return;
        }
        if !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        if blank && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn flush(&mut self) {
        let text = trim_blank_lines(&self.out);
        if !text.is_empty() {
            let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
            self.sections.push(Section {
                heading_path: self.stack.iter().map(|(_, h)| h.clone()).collect(),
                text: lines.join("\n"),
            });
        }
        self.out.clear();
        self.pending_space = false;
    }
}

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html>
<html lang="en-GB"><head><title>Reset your password &amp; more</title>
<link rel="canonical" href="https://help.example.com/reset">
<style>.x{color:red}</style><script>var secret = "SCRIPT_TEXT";</script></head>
<body>
<header><a href="/">HEADER_TEXT</a></header>
<nav><ul><li>NAV_TEXT</li></ul></nav>
<div role="navigation">ROLE_NAV_TEXT</div>
<main>
  <article>
    <header><h1>Reset   your password</h1></header>
    <p>Open <b>Settings</b>&nbsp;and   click
       <em>Reset</em>.</p>
    <h2>On mobile</h2>
    <ol><li>Tap the menu</li><li>Tap &quot;Reset&quot;</li></ol>
    <pre>  code   kept
    as is</pre>
    <h3>Android</h3><p>Same steps.<br>Second line.</p>
    <h2>Still stuck?</h2>
    <table><tr><th>Plan</th><th>Contact</th></tr><tr><td>Pro</td><td>chat</td></tr></table>
    <form><input value="FORM_TEXT"><label>FORM_LABEL</label></form>
    <aside>ASIDE_TEXT</aside>
    <p hidden>HIDDEN_TEXT</p>
  </article>
</main>
<footer>FOOTER_TEXT</footer>
<script>SECOND_SCRIPT</script>
</body></html>"#;

    #[test]
    fn keeps_main_content_with_sections() {
        let doc = parse(Path::new("reset.html"), PAGE.as_bytes()).unwrap();
        assert_eq!(doc.title, "Reset your password & more");
        assert_eq!(doc.language.as_deref(), Some("en-GB"));
        assert_eq!(doc.url.as_deref(), Some("https://help.example.com/reset"));
        let paths: Vec<String> = doc
            .sections
            .iter()
            .map(|s| s.heading_path.join(" > "))
            .collect();
        assert_eq!(
            paths,
            [
                "Reset your password",
                "Reset your password > On mobile",
                "Reset your password > On mobile > Android",
                "Reset your password > Still stuck?",
            ]
        );
        assert_eq!(doc.sections[0].text, "Open Settings and click Reset.");
        assert!(doc.sections[1]
            .text
            .contains("- Tap the menu\n- Tap \"Reset\""));
        assert!(doc.sections[1].text.contains("  code   kept\n    as is"));
        assert_eq!(doc.sections[2].text, "Same steps.\nSecond line.");
        assert_eq!(doc.sections[3].text, "Plan | Contact\nPro | chat");
    }

    #[test]
    fn drops_chrome_text() {
        let doc = parse(Path::new("reset.html"), PAGE.as_bytes()).unwrap();
        let all = doc.full_text();
        for absent in [
            "SCRIPT_TEXT",
            "SECOND_SCRIPT",
            "HEADER_TEXT",
            "NAV_TEXT",
            "ROLE_NAV_TEXT",
            "FOOTER_TEXT",
            "FORM_TEXT",
            "FORM_LABEL",
            "ASIDE_TEXT",
            "HIDDEN_TEXT",
            "color:red",
        ] {
            assert!(!all.contains(absent), "{absent} leaked into {all:?}");
        }
    }

    #[test]
    fn without_main_uses_body_minus_chrome() {
        let src = "<html><body><header>TOP</header><nav>MENU</nav><h1>FAQ</h1><div>Answer one</div><div>Answer two</div><footer>BOTTOM</footer></body></html>";
        let doc = parse(Path::new("kb/faq page.htm"), src.as_bytes()).unwrap();
        assert_eq!(doc.title, "FAQ");
        assert_eq!(doc.sections.len(), 1);
        assert_eq!(doc.sections[0].heading_path, ["FAQ"]);
        assert_eq!(doc.sections[0].text, "Answer one\nAnswer two");
        let untitled = parse(Path::new("kb/plain page.htm"), b"<p>hi</p>").unwrap();
        assert_eq!(untitled.title, "plain page");
        assert!(untitled.language.is_none());
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut src = String::new();
        for _ in 0..5_000 {
            src.push_str("<div>");
        }
        src.push_str("deep text");
        let doc = parse(Path::new("deep.html"), src.as_bytes()).unwrap();
        assert!(doc.full_text().contains("deep text"));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let err = parse(Path::new("x.html"), b"<p>\xFF</p>").unwrap_err();
        assert!(matches!(err, FormatError::InvalidUtf8 { offset: 3, .. }));
    }
}
