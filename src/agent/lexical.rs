//! An in-memory BM25 index over short texts: intent examples, and the built-in demo's
//! knowledge when no embedding model is loaded.
//!
//! Owns its tokenization (words, function words dropped, a light suffix strip) and the BM25
//! scoring constants. Small by design: it holds thousands of texts, not millions; the knowledge
//! base's own BM25 index serves the large collections. Depends on `text` only.

use std::collections::HashMap;

use super::text::words;

const K1: f32 = 1.2;
const B: f32 = 0.75;

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "im", "ive", "me", "my", "you", "your", "is", "are", "was", "were",
    "be", "been", "to", "of", "and", "or", "in", "on", "at", "for", "it", "its", "this", "that",
    "with", "do", "does", "did", "can", "could", "would", "will", "should", "have", "has", "had",
    "what", "how", "why", "when", "so", "but", "if", "there", "from", "about", "just", "please",
    "hi", "hello", "hey", "thanks", "thank", "we", "us", "our", "they", "them", "am", "any",
];

/// Index terms of `text`. Numbers and single characters are left out: an order number or the
/// pieces of an email address say nothing about what the text is about.
pub fn terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| w.chars().count() > 1 && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(stem)
        .collect()
}

/// Folds the commonest English inflections, so "refunds", "refunded" and "refunding" meet.
fn stem(w: String) -> String {
    for suffix in ["ing", "ed", "es", "s"] {
        if w.len() > suffix.len() + 3 && w.ends_with(suffix) && !w.ends_with("ss") {
            return w[..w.len() - suffix.len()].to_string();
        }
    }
    w
}

#[derive(Debug, Default)]
pub struct LexicalIndex {
    docs: Vec<HashMap<String, u32>>,
    lens: Vec<u32>,
    df: HashMap<String, u32>,
    total_len: u64,
}

impl LexicalIndex {
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = Self::default();
        for t in texts {
            index.push(t);
        }
        index
    }

    pub fn push(&mut self, text: &str) {
        let mut tf: HashMap<String, u32> = HashMap::new();
        let ts = terms(text);
        for t in &ts {
            *tf.entry(t.clone()).or_default() += 1;
        }
        for t in tf.keys() {
            *self.df.entry(t.clone()).or_default() += 1;
        }
        self.lens.push(ts.len() as u32);
        self.total_len += ts.len() as u64;
        self.docs.push(tf);
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The `k` best documents for `query` with their BM25 scores, best first; documents
    /// sharing no term with the query are left out.
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let q = terms(query);
        if q.is_empty() || self.docs.is_empty() {
            return Vec::new();
        }
        let n = self.docs.len() as f32;
        let avg = (self.total_len as f32 / n).max(1.0);
        let mut scores: Vec<(usize, f32)> = self
            .docs
            .iter()
            .enumerate()
            .filter_map(|(i, tf)| {
                let mut s = 0.0;
                for t in &q {
                    let Some(&f) = tf.get(t) else { continue };
                    let df = self.df.get(t).copied().unwrap_or(0) as f32;
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    let f = f as f32;
                    let norm = K1 * (1.0 - B + B * self.lens[i] as f32 / avg);
                    s += idf * f * (K1 + 1.0) / (f + norm);
                }
                (s > 0.0).then_some((i, s))
            })
            .collect();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scores.truncate(k);
        scores
    }

    /// The share of the query's terms found in document `doc`: a calibrated 0..1 match
    /// strength, where raw BM25 has no fixed scale.
    pub fn coverage(&self, query: &str, doc: usize) -> f32 {
        let q = terms(query);
        let Some(tf) = self.docs.get(doc) else {
            return 0.0;
        };
        if q.is_empty() {
            return 0.0;
        }
        q.iter().filter(|t| tf.contains_key(*t)).count() as f32 / q.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_prefers_rare_shared_terms() {
        let idx = LexicalIndex::new([
            "how do I reset my password",
            "where is my order",
            "my order arrived damaged and I want a refund",
        ]);
        let hits = idx.search("refund for a damaged jacket", 3);
        assert_eq!(hits[0].0, 2);
        assert_eq!(
            hits.len(),
            1,
            "documents sharing no term are left out: {hits:?}"
        );
        assert!(idx.coverage("refunds please", 2) > 0.99, "inflections meet");
    }
}
