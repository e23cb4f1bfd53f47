//! Token-aware chunking: a document's sections become chunks that fit the embedding model,
//! overlap a little, and carry their heading path as context.
//!
//! Each chunk is one contiguous span of the document's content (the section texts joined by
//! blank lines), so a citation's character span points at exactly the text that was embedded.
//! Splits fall at line and sentence ends where possible, then at words, and only for a single
//! overlong word inside it. Depends on `formats::Section` and a token-counting function.

use super::formats::Section;

/// Separates sections in a document's content.
pub const SECTION_SEPARATOR: &str = "\n\n";
/// Joins a heading path for display and for the embedded context line.
pub const HEADING_SEPARATOR: &str = " > ";

#[derive(Debug, Clone, Copy)]
pub struct ChunkParams {
    /// Tokens one chunk may take when embedded, heading context and special tokens included.
    pub max_tokens: usize,
    /// Tokens of the previous chunk's end repeated at the next one's start.
    pub overlap_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkPiece {
    pub heading_path: String,
    pub text: String,
    /// Character (not byte) span of `text` in the content.
    pub char_start: usize,
    pub char_end: usize,
}

impl ChunkPiece {
    /// What is embedded: the heading path as a context line, then the text.
    pub fn embedding_text(&self) -> String {
        if self.heading_path.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n{}", self.heading_path, self.text)
        }
    }
}

/// A byte range of a section's text with its token count.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
}

/// The smallest budget kept for text when the heading path is long.
const MIN_TEXT_BUDGET: usize = 16;

/// `count` returns the tokens of a text without special tokens.
pub fn chunk_sections(
    sections: &[Section],
    params: ChunkParams,
    count: &dyn Fn(&str) -> usize,
) -> (String, Vec<ChunkPiece>) {
    let mut content = String::new();
    let mut content_chars = 0;
    let mut pieces = Vec::new();
    for section in sections {
        let text = section.text.trim_end();
        if text.trim().is_empty() {
            continue;
        }
        if !content.is_empty() {
            content.push_str(SECTION_SEPARATOR);
            content_chars += SECTION_SEPARATOR.chars().count();
        }
        let heading = section.heading_path.join(HEADING_SEPARATOR);
        let heading_tokens = if heading.is_empty() {
            0
        } else {
            count(&heading) + 1
        };
        let budget = params
            .max_tokens
            .saturating_sub(heading_tokens)
            .max(MIN_TEXT_BUDGET);
        let units = split_units(text, budget, count);
        for (start, end) in pack(&units, budget, params.overlap_tokens) {
            let char_start = content_chars + text[..start].chars().count();
            let slice = &text[start..end];
            pieces.push(ChunkPiece {
                heading_path: heading.clone(),
                text: slice.to_string(),
                char_start,
                char_end: char_start + slice.chars().count(),
            });
        }
        content.push_str(text);
        content_chars += text.chars().count();
    }
    (content, pieces)
}

/// Greedy packing of units into spans of at most `budget` tokens, each span starting with up
/// to `overlap` tokens of the previous one's last units.
fn pack(units: &[Unit], budget: usize, overlap: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let mut j = i;
        let mut tokens = 0;
        while j < units.len() && (j == i || tokens + units[j].tokens <= budget) {
            tokens += units[j].tokens;
            j += 1;
        }
        spans.push((units[i].start, units[j - 1].end));
        if j == units.len() {
            break;
        }
        let mut k = j;
        let mut carried = 0;
        while k - 1 > i && carried + units[k - 1].tokens <= overlap {
            k -= 1;
            carried += units[k].tokens;
        }
        i = k;
    }
    spans
}

/// Sentence-sized units; anything over `budget` is split at words, then at characters.
fn split_units(text: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> Vec<Unit> {
    let mut units = Vec::new();
    for (start, end) in sentence_ranges(text) {
        let tokens = count(&text[start..end]);
        if tokens <= budget {
            units.push(Unit { start, end, tokens });
            continue;
        }
        for (ws, we) in word_ranges(text, start, end) {
            let tokens = count(&text[ws..we]);
            if tokens <= budget {
                units.push(Unit {
                    start: ws,
                    end: we,
                    tokens,
                });
            } else {
                units.extend(char_windows(text, ws, we, budget, count));
            }
        }
    }
    units
}

/// Trimmed, non-empty ranges ending at a line break or after `.`, `!`, `?` (and their
/// full-width forms) followed by whitespace.
fn sentence_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_space = chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        let ends =
            c == '\n' || (matches!(c, '.' | '!' | '?' | '。' | '！' | '？') && next_is_space);
        if ends {
            push_trimmed(text, start, i + c.len_utf8(), &mut out);
            start = i + c.len_utf8();
        }
    }
    push_trimmed(text, start, text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let s = &text[start..end];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    if lead + trail < s.len() {
        out.push((start + lead, end - trail));
    }
}

fn word_ranges(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut word_start = None;
    for (i, c) in text[start..end].char_indices() {
        match (c.is_whitespace(), word_start) {
            (true, Some(ws)) => {
                out.push((start + ws, start + i));
                word_start = None;
            }
            (false, None) => word_start = Some(i),
            _ => {}
        }
    }
    if let Some(ws) = word_start {
        out.push((start + ws, end));
    }
    out
}

/// Splits one overlong word into windows of at most `budget` tokens, at char boundaries.
fn char_windows(
    text: &str,
    start: usize,
    end: usize,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Unit> {
    let bounds: Vec<usize> = text[start..end]
        .char_indices()
        .map(|(i, _)| start + i)
        .chain(std::iter::once(end))
        .collect();
    let mut out = Vec::new();
    let mut a = 0;
    while a + 1 < bounds.len() {
        // Binary search the longest window from `a` that fits.
        let (mut lo, mut hi) = (a + 1, bounds.len() - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if count(&text[bounds[a]..bounds[mid]]) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let tokens = count(&text[bounds[a]..bounds[lo]]);
        out.push(Unit {
            start: bounds[a],
            end: bounds[lo],
            tokens,
        });
        a = lo;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn section(path: &[&str], text: &str) -> Section {
        Section {
            heading_path: path.iter().map(|s| s.to_string()).collect(),
            text: text.into(),
        }
    }

    #[test]
    fn chunks_fit_overlap_and_span_the_content_exactly() {
        let text = (0..40)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let sections = [section(&["Guide", "Refunds"], &text)];
        let params = ChunkParams {
            max_tokens: 30,
            overlap_tokens: 5,
        };
        let (content, pieces) = chunk_sections(&sections, params, &words);
        assert!(pieces.len() > 5);
        for p in &pieces {
            assert_eq!(p.heading_path, "Guide > Refunds");
            assert!(words(&p.embedding_text()) <= 30, "{}", p.embedding_text());
            let span: String = content
                .chars()
                .skip(p.char_start)
                .take(p.char_end - p.char_start)
                .collect();
            assert_eq!(span, p.text);
        }
        for pair in pieces.windows(2) {
            assert!(
                pair[1].char_start < pair[0].char_end,
                "consecutive chunks overlap"
            );
            assert!(
                pair[1].char_start > pair[0].char_start,
                "chunking always advances"
            );
        }
        assert!(pieces.last().unwrap().text.ends_with("number 39 is here."));
    }

    #[test]
    fn an_overlong_word_is_split_without_losing_characters() {
        let long = "x".repeat(100);
        let count = |s: &str| s.chars().count().div_ceil(10);
        let (_, pieces) = chunk_sections(
            &[section(&[], &long)],
            ChunkParams {
                max_tokens: 3,
                overlap_tokens: 0,
            },
            &count,
        );
        assert_eq!(
            pieces.iter().map(|p| p.text.as_str()).collect::<String>(),
            long
        );
        assert!(pieces.iter().all(|p| count(&p.text) <= MIN_TEXT_BUDGET));
    }

    #[test]
    fn spans_count_characters_not_bytes_across_sections() {
        let sections = [section(&["Été"], "Café crème."), section(&[], "Déjà vu.")];
        let (content, pieces) = chunk_sections(
            &sections,
            ChunkParams {
                max_tokens: 50,
                overlap_tokens: 0,
            },
            &words,
        );
        assert_eq!(content, "Café crème.\n\nDéjà vu.");
        assert_eq!((pieces[1].char_start, pieces[1].char_end), (13, 21));
    }
}
