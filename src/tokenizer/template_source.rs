//! Source-level adjustments that make a Jinja2 chat template behave the same under minijinja.
//!
//! Owns `prepare_source`. Depends on nothing; it must not depend on minijinja (it works on the
//! template text before compilation) and must never change what a template renders, only
//! where minijinja and Jinja2 differ:
//!
//! - transformers' `{% generation %}...{% endgeneration %}` (an extension that only records
//!   where assistant text is) becomes `{% if true %}...{% endif %}`, whitespace control kept;
//! - a `{% for x in EXPR %}` loop iterates `(EXPR)|__py_iterable`, because Python raises
//!   `TypeError` when a loop iterates `None` where minijinja silently iterates nothing.
//!
//! Invariant: text outside `{% %}` tags, and every tag not named above, is copied unchanged.

/// The filter the rewritten `for` loops call; registered by `chat_template`.
pub(crate) const PY_ITERABLE_FILTER: &str = "__py_iterable";

/// Applies the adjustments described in the module documentation.
pub(crate) fn prepare_source(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 64);
    let mut rest = source;
    loop {
        let Some(start) = next_opening(rest) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let (kind_close, is_block) = match &tail[..2] {
            "{#" => ("#}", false),
            "{{" => ("}}", false),
            _ => ("%}", true),
        };
        let Some(end) = find_close(tail, kind_close) else {
            out.push_str(tail);
            return out;
        };
        let tag = &tail[..end + 2];
        if is_block && block_word(&tag[2..end]) == "raw" {
            // Everything up to `{% endraw %}` is literal text.
            let raw_end = find_endraw(tail).unwrap_or(tail.len());
            out.push_str(&tail[..raw_end]);
            rest = &tail[raw_end..];
            continue;
        }
        if is_block {
            out.push_str("{%");
            out.push_str(&rewrite_block(&tag[2..end]));
            out.push_str("%}");
        } else {
            out.push_str(tag);
        }
        rest = &tail[end + 2..];
    }
}

fn next_opening(s: &str) -> Option<usize> {
    ["{%", "{{", "{#"].iter().filter_map(|o| s.find(o)).min()
}

/// The index of `close` in `tag`, skipping string literals (a comment has none).
fn find_close(tag: &str, close: &str) -> Option<usize> {
    if close == "#}" {
        return tag.find(close);
    }
    let bytes = tag.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 2;
    while i + 1 < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if tag[i..].starts_with(close) => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

fn find_endraw(tail: &str) -> Option<usize> {
    let mut offset = 0;
    while let Some(pos) = tail[offset..].find("{%") {
        let start = offset + pos;
        let end = start + tail[start..].find("%}")?;
        if block_word(&tail[start + 2..end]) == "endraw" {
            return Some(start);
        }
        offset = end + 2;
    }
    None
}

/// The statement keyword of a block tag's inside (`for`, `if`, `generation`...).
fn block_word(inner: &str) -> &str {
    let body = inner.trim_start_matches(['-', '+']).trim_start();
    let len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    &body[..len]
}

/// Rewrites the inside of one `{% ... %}` tag (without the delimiters).
fn rewrite_block(inner: &str) -> String {
    let lead = inner.len() - inner.trim_start_matches(['-', '+']).len();
    let trail = inner.len() - inner.trim_end_matches(['-', '+']).len();
    if lead + trail > inner.len() {
        return inner.to_string();
    }
    let (head, body, foot) = (
        &inner[..lead],
        &inner[lead..inner.len() - trail],
        &inner[inner.len() - trail..],
    );
    let new_body = match block_word(body) {
        "generation" => Some(body.replacen("generation", "if true", 1)),
        "endgeneration" => Some(body.replacen("endgeneration", "endif", 1)),
        "for" => rewrite_for(body),
        _ => None,
    };
    match new_body {
        Some(b) => format!("{head}{b}{foot}"),
        None => inner.to_string(),
    }
}

/// `for TARGET in ITER [if COND] [recursive]` → `for TARGET in (ITER)|__py_iterable ...`.
fn rewrite_for(body: &str) -> Option<String> {
    let words = top_level_words(body);
    let in_pos = words.iter().find(|(_, w)| *w == "in").map(|(i, _)| *i)?;
    let iter_start = in_pos + 2;
    let iter_end = words
        .iter()
        .find(|(i, w)| *i > in_pos && (*w == "if" || *w == "recursive"))
        .map_or(body.len(), |(i, _)| *i);
    let iter = body[iter_start..iter_end].trim();
    if iter.is_empty() {
        return None;
    }
    Some(format!(
        "{} ({iter})|{PY_ITERABLE_FILTER} {}",
        &body[..iter_start],
        &body[iter_end..]
    ))
}

/// The identifiers outside strings and brackets, with their byte offsets.
fn top_level_words(body: &str) -> Vec<(usize, &str)> {
    let bytes = body.as_bytes();
    let mut words = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match b {
            b'\'' | b'"' => quote = Some(b),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let preceded_by_dot = start > 0 && bytes[start - 1] == b'.';
                if depth == 0 && !preceded_by_dot {
                    words.push((start, &body[start..i]));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::prepare_source;

    #[test]
    fn for_loops_get_the_iterable_check() {
        assert_eq!(
            prepare_source("{%- for m in messages[1:] if m.role != 'in' -%}x{% endfor %}"),
            "{%- for m in (messages[1:])|__py_iterable if m.role != 'in' -%}x{% endfor %}"
        );
        assert_eq!(
            prepare_source("{% for k, v in d.items() %}{% endfor %}"),
            "{% for k, v in (d.items())|__py_iterable %}{% endfor %}"
        );
    }

    #[test]
    fn generation_becomes_a_plain_block() {
        assert_eq!(
            prepare_source("{%- generation -%}a{% endgeneration %}"),
            "{%- if true -%}a{% endif %}"
        );
    }

    #[test]
    fn other_text_is_untouched() {
        let src = "{{ '{% for x in y %}' }}{# for a in b #}{% raw %}{% for a in b %}{% endraw %}";
        assert_eq!(prepare_source(src), src);
    }
}
