//! Where an agent's passages come from: the knowledge base's hybrid search over the agent's
//! collections, or, with no embedding model loaded, BM25 over a fixed set of documents held
//! in memory (the built-in demo's).
//!
//! Owns the passage score the policy compares with the retrieval floor: the vector's cosine
//! similarity when there is one, else the share of the question's terms the passage holds, so
//! both kinds of retrieval speak the same 0..1 scale. Depends on `knowledge` and `lexical`.

use std::sync::Arc;

use serde::Serialize;

use super::lexical::{terms, LexicalIndex};
use crate::knowledge::{KnowledgeBase, SearchFilter, SearchMode, SearchRequest};

/// A retrieved passage with what a citation needs.
#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    pub title: String,
    pub source: String,
    pub heading: Option<String>,
    pub span: Option<(usize, usize)>,
    pub text: String,
    /// 0..1; see the module doc.
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
#[error("retrieval failed: {0}")]
pub struct RetrievalError(pub String);

pub trait Retriever: Send + Sync {
    /// `hybrid` or `bm25`, for the start-up log and the recorded decisions.
    fn method(&self) -> &'static str;
    fn search(&self, query: &str, top_k: usize) -> Result<Vec<Passage>, RetrievalError>;
    /// Every document, in a fixed order, for full-context prompts.
    fn full_text(&self) -> Result<Vec<Passage>, RetrievalError>;
    /// `full_text`'s estimated size in prompt tokens, without necessarily loading it.
    fn full_text_tokens(&self) -> Result<usize, RetrievalError> {
        Ok(estimated_tokens(&self.full_text()?))
    }
}

/// Bytes per token assumed when sizing full-context knowledge: English text runs about four;
/// three keeps the estimate on the safe side.
pub const BYTES_PER_TOKEN: usize = 3;

/// The estimated prompt tokens of `passages`: each title and text, rounded up per passage.
pub fn estimated_tokens(passages: &[Passage]) -> usize {
    passages
        .iter()
        .map(|p| (p.title.len() + p.text.len()).div_ceil(BYTES_PER_TOKEN))
        .sum()
}

/// The share of `query`'s terms found in `text`.
pub fn coverage(query: &str, text: &str) -> f32 {
    let q = terms(query);
    if q.is_empty() {
        return 0.0;
    }
    let t: std::collections::HashSet<String> = terms(text).into_iter().collect();
    q.iter().filter(|x| t.contains(*x)).count() as f32 / q.len() as f32
}

/// Hybrid search over knowledge-base collections.
pub struct KbRetriever {
    pub kb: Arc<KnowledgeBase>,
    pub collections: Vec<String>,
    pub mode: SearchMode,
}

impl Retriever for KbRetriever {
    fn method(&self) -> &'static str {
        match self.mode {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Bm25 => "bm25",
            SearchMode::Vector => "vector",
        }
    }

    fn search(&self, query: &str, top_k: usize) -> Result<Vec<Passage>, RetrievalError> {
        if self.collections.is_empty() {
            return Ok(Vec::new());
        }
        let hits = self
            .kb
            .search(&SearchRequest {
                collections: self.collections.clone(),
                query: query.to_string(),
                top_k,
                filter: SearchFilter::default(),
                mode: self.mode,
            })
            .map_err(|e| RetrievalError(e.to_string()))?;
        let mut out: Vec<Passage> = hits
            .into_iter()
            .map(|h| {
                let lexical = coverage(query, &h.chunk.text);
                let score = h.vector_score.unwrap_or(0.0).max(lexical).clamp(0.0, 1.0);
                Passage {
                    title: h.chunk.title,
                    source: h.chunk.url.unwrap_or(h.chunk.source),
                    heading: (!h.chunk.heading_path.is_empty()).then_some(h.chunk.heading_path),
                    span: Some((h.chunk.char_start, h.chunk.char_end)),
                    text: h.chunk.text,
                    score,
                }
            })
            .collect();
        // The fused order stays; only the scores the policy reads are ours.
        out.truncate(top_k);
        Ok(out)
    }

    fn full_text(&self) -> Result<Vec<Passage>, RetrievalError> {
        let store = self.kb.store();
        let mut out = Vec::new();
        for name in &self.collections {
            let c = store
                .collection(name)
                .map_err(|e| RetrievalError(e.to_string()))?;
            let docs = store
                .collection_texts(c.id)
                .map_err(|e| RetrievalError(e.to_string()))?;
            out.extend(docs.into_iter().map(|(title, source, text)| Passage {
                title,
                source,
                heading: None,
                span: Some((0, text.chars().count())),
                text,
                score: 1.0,
            }));
        }
        Ok(out)
    }

    /// Summed in SQLite, so sizing a large collection does not read it all into memory.
    fn full_text_tokens(&self) -> Result<usize, RetrievalError> {
        let store = self.kb.store();
        let mut total = 0;
        for name in &self.collections {
            let c = store
                .collection(name)
                .map_err(|e| RetrievalError(e.to_string()))?;
            total += store
                .collection_text_tokens(c.id, BYTES_PER_TOKEN)
                .map_err(|e| RetrievalError(e.to_string()))?;
        }
        Ok(total)
    }
}

/// A document held in memory.
#[derive(Debug, Clone)]
pub struct MemoryDocument {
    pub title: String,
    pub source: String,
    pub text: String,
}

/// BM25 over documents held in memory, split into paragraphs-sized passages.
pub struct LexicalRetriever {
    docs: Vec<MemoryDocument>,
    /// (document, start, end) character spans of each passage.
    passages: Vec<(usize, usize, usize)>,
    index: LexicalIndex,
}

/// Passages are about this many characters: a few paragraphs of a guideline.
const PASSAGE_CHARS: usize = 900;

impl LexicalRetriever {
    pub fn new(docs: Vec<MemoryDocument>) -> Self {
        let mut passages = Vec::new();
        let mut index = LexicalIndex::default();
        for (d, doc) in docs.iter().enumerate() {
            for (start, end) in paragraph_spans(&doc.text, PASSAGE_CHARS) {
                let body: String = doc.text.chars().skip(start).take(end - start).collect();
                index.push(&format!("{}\n{body}", doc.title));
                passages.push((d, start, end));
            }
        }
        Self {
            docs,
            passages,
            index,
        }
    }
}

/// Character spans of runs of whole paragraphs, each up to `max` characters (a longer
/// paragraph is its own span).
fn paragraph_spans(text: &str, max: usize) -> Vec<(usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    let (mut start, mut i) = (0, 0);
    let mut last_break = None;
    while i < chars.len() {
        if chars[i] == '\n' && chars.get(i + 1) == Some(&'\n') {
            if i - start > max {
                if let Some(b) = last_break.filter(|b| *b > start) {
                    spans.push((start, b));
                    start = b;
                }
            }
            last_break = Some(i + 2);
        }
        i += 1;
    }
    if chars.len() - start > max {
        if let Some(b) = last_break.filter(|b| *b > start && *b < chars.len()) {
            spans.push((start, b));
            start = b;
        }
    }
    if start < chars.len() {
        spans.push((start, chars.len()));
    }
    spans
}

impl Retriever for LexicalRetriever {
    fn method(&self) -> &'static str {
        "bm25"
    }

    fn search(&self, query: &str, top_k: usize) -> Result<Vec<Passage>, RetrievalError> {
        Ok(self
            .index
            .search(query, top_k)
            .into_iter()
            .map(|(i, _)| {
                let (d, start, end) = self.passages[i];
                let doc = &self.docs[d];
                let text: String = doc.text.chars().skip(start).take(end - start).collect();
                let score = coverage(query, &format!("{}\n{text}", doc.title));
                Passage {
                    title: doc.title.clone(),
                    source: doc.source.clone(),
                    heading: None,
                    span: Some((start, end)),
                    text,
                    score,
                }
            })
            .collect())
    }

    fn full_text(&self) -> Result<Vec<Passage>, RetrievalError> {
        Ok(self
            .docs
            .iter()
            .map(|d| Passage {
                title: d.title.clone(),
                source: d.source.clone(),
                heading: None,
                span: Some((0, d.text.chars().count())),
                text: d.text.clone(),
                score: 1.0,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraph_spans_cover_the_text_in_order() {
        let text = format!(
            "{}\n\n{}\n\n{}",
            "a".repeat(500),
            "b".repeat(500),
            "c".repeat(100)
        );
        let spans = paragraph_spans(&text, 900);
        assert_eq!(spans.first().map(|s| s.0), Some(0));
        assert_eq!(spans.last().map(|s| s.1), Some(text.chars().count()));
        for w in spans.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        assert!(spans.len() >= 2, "{spans:?}");
    }
}
