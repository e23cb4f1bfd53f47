//! Intent classification by nearest neighbours over an agent's labelled examples.
//!
//! With an embedding model, examples and messages are embedded and compared by cosine
//! similarity; without one, BM25 over the examples stands in, and the match strength is the
//! share of the message's terms the best example holds. Either way the result is an intent, a
//! similarity in 0..1 that is compared with the agent's floor (out of scope below it), and the
//! neighbours behind the vote, so the decision can be explained afterwards.
//! Depends on `lexical` and the knowledge module's `Embedder` trait only.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::lexical::LexicalIndex;
use crate::knowledge::Embedder;

/// Neighbours that vote (BM25) or are reported (embeddings).
pub const K: usize = 10;
/// Closest examples per intent averaged in the embedding score, and their weight against the
/// intent's centroid. Chosen on banking77 and CLINC150 train splits.
const NEAREST_PER_INTENT: usize = 2;
const NEAREST_WEIGHT: f32 = 0.7;
/// BM25's match strength (the share of the message's terms the best example holds) runs on
/// another scale than embedding similarity; the agent's `intent_floor` is multiplied by this
/// for it. On CLINC150 the floor that keeps in-scope accuracy (chosen the same way as the
/// embedding floor) is 0.28 against 0.44.
pub const BM25_FLOOR_SCALE: f32 = 0.64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMethod {
    Vector,
    Bm25,
}

/// What the classifier found for one message.
#[derive(Debug, Clone, Serialize)]
pub struct IntentMatch {
    /// The winning intent, whether or not it clears the floor.
    pub intent: Option<String>,
    /// Similarity of the winning intent's nearest example (0..1).
    pub similarity: f32,
    /// The winning intent's share of the neighbours' votes.
    pub vote_share: f32,
    pub method: MatchMethod,
    /// The nearest examples: (intent, similarity), best first.
    pub neighbours: Vec<(String, f32)>,
    /// The winning intent's nearest example.
    pub nearest_example: Option<String>,
}

impl IntentMatch {
    /// The intent when it clears `floor`; `None` is out of scope.
    pub fn in_scope(&self, floor: f32) -> Option<&str> {
        self.intent
            .as_deref()
            .filter(|_| self.similarity >= self.effective_floor(floor))
    }

    /// The agent's floor on this match's scale.
    pub fn effective_floor(&self, floor: f32) -> f32 {
        match self.method {
            MatchMethod::Vector => floor,
            MatchMethod::Bm25 => floor * BM25_FLOOR_SCALE,
        }
    }

    /// The confidence the policy combines. With embeddings the score already weighs the
    /// intent's nearest examples against its centroid; BM25's coverage is damped when the
    /// neighbours disagree.
    pub fn confidence(&self) -> f32 {
        match self.method {
            MatchMethod::Vector => self.similarity,
            MatchMethod::Bm25 => self.similarity * (0.5 + 0.5 * self.vote_share),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("embedding failed: {0}")]
pub struct IntentError(pub String);

pub struct IntentIndex {
    labels: Vec<String>,
    texts: Vec<String>,
    vectors: Option<Vec<Vec<f32>>>,
    /// Each intent's unit-length mean example vector, by intent name (sorted).
    centroids: Vec<(String, Vec<f32>)>,
    lexical: LexicalIndex,
    embedder: Option<Arc<dyn Embedder>>,
}

impl IntentIndex {
    /// Indexes `(intent, example)` pairs; embeds them when an embedder is given.
    pub fn build(
        examples: Vec<(String, String)>,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self, IntentError> {
        let (labels, texts): (Vec<String>, Vec<String>) = examples
            .into_iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .unzip();
        let vectors = match &embedder {
            Some(e) if !texts.is_empty() => Some(e.embed_queries(&texts).map_err(IntentError)?),
            _ => None,
        };
        let lexical = LexicalIndex::new(texts.iter().map(String::as_str));
        let centroids = vectors
            .as_ref()
            .map(|v| centroids(&labels, v))
            .unwrap_or_default();
        Ok(Self {
            labels,
            texts,
            vectors,
            centroids,
            lexical,
            embedder,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn method(&self) -> MatchMethod {
        if self.vectors.is_some() {
            MatchMethod::Vector
        } else {
            MatchMethod::Bm25
        }
    }

    /// Embeds `text` as the classifier would; `None` without an embedder.
    pub fn embed(&self, text: &str) -> Result<Option<Vec<f32>>, IntentError> {
        match &self.embedder {
            Some(e) => e.embed_query(text).map(Some).map_err(IntentError),
            None => Ok(None),
        }
    }

    /// Embeds `texts` in one batch; `None` without an embedder.
    pub fn embed_many(&self, texts: &[String]) -> Result<Option<Vec<Vec<f32>>>, IntentError> {
        match &self.embedder {
            Some(e) if !texts.is_empty() => e.embed_queries(texts).map(Some).map_err(IntentError),
            Some(_) => Ok(Some(Vec::new())),
            None => Ok(None),
        }
    }

    /// Classifies `text`, given its embedding when the caller already has it.
    pub fn classify(&self, text: &str, vector: Option<&[f32]>) -> Result<IntentMatch, IntentError> {
        let hits = match (&self.vectors, vector) {
            (Some(_), Some(q)) => return Ok(self.score(q)),
            (Some(_), None) => match self.embed(text)? {
                Some(q) => return Ok(self.score(&q)),
                None => Vec::new(),
            },
            (None, _) => self
                .lexical
                .search(text, K)
                .into_iter()
                .map(|(i, _)| (i, self.lexical.coverage(text, i)))
                .collect(),
        };
        Ok(self.vote(hits))
    }

    /// The embedding rule: each intent scores `NEAREST_WEIGHT` times the mean similarity of
    /// its `NEAREST_PER_INTENT` closest examples plus the rest times the similarity to its
    /// centroid; the best score wins and is the match's similarity. The nearest examples
    /// catch paraphrases, the centroid steadies intents whose examples vary; together they
    /// beat a majority vote of the nearest ten on both banking77 and CLINC150 (see README).
    fn score(&self, q: &[f32]) -> IntentMatch {
        let Some(vs) = &self.vectors else {
            return self.vote(Vec::new());
        };
        let sims: Vec<f32> = vs.iter().map(|v| dot(v, q)).collect();
        let mut best_per: HashMap<&str, [f32; NEAREST_PER_INTENT]> = HashMap::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (i, &s) in sims.iter().enumerate() {
            let l = self.labels[i].as_str();
            *counts.entry(l).or_default() += 1;
            let top = best_per
                .entry(l)
                .or_insert([f32::NEG_INFINITY; NEAREST_PER_INTENT]);
            if let Some(slot) = top.iter().position(|t| s > *t) {
                top[slot..].rotate_right(1);
                top[slot] = s;
            }
        }
        let mut winner: Option<(&str, f32)> = None;
        for (label, centroid) in &self.centroids {
            let (Some(top), Some(&n)) = (best_per.get(label.as_str()), counts.get(label.as_str()))
            else {
                continue;
            };
            let m = n.min(NEAREST_PER_INTENT);
            let nearest = top[..m].iter().sum::<f32>() / m as f32;
            let score = NEAREST_WEIGHT * nearest + (1.0 - NEAREST_WEIGHT) * dot(q, centroid);
            if winner.is_none_or(|w| score > w.1) {
                winner = Some((label, score));
            }
        }
        let hits = nearest(vs, q, K);
        let neighbours = hits
            .iter()
            .take(5)
            .map(|&(i, s)| (self.labels[i].clone(), s))
            .collect();
        let Some((intent, score)) = winner else {
            return self.vote(Vec::new());
        };
        IntentMatch {
            nearest_example: hits
                .iter()
                .find(|(i, _)| self.labels[*i] == intent)
                .map(|(i, _)| self.texts[*i].clone()),
            intent: Some(intent.to_string()),
            similarity: score.clamp(0.0, 1.0),
            vote_share: hits
                .iter()
                .filter(|(i, _)| self.labels[*i] == intent)
                .count() as f32
                / hits.len().max(1) as f32,
            method: MatchMethod::Vector,
            neighbours,
        }
    }

    fn vote(&self, hits: Vec<(usize, f32)>) -> IntentMatch {
        let mut tally: HashMap<&str, (usize, f32, f32)> = HashMap::new();
        for &(i, s) in &hits {
            let e = tally
                .entry(self.labels[i].as_str())
                .or_insert((0, 0.0, 0.0));
            e.0 += 1;
            e.1 += s;
            e.2 = e.2.max(s);
        }
        let winner = tally
            .iter()
            .max_by(|a, b| {
                a.1 .0
                    .cmp(&b.1 .0)
                    .then(a.1 .1.total_cmp(&b.1 .1))
                    .then(b.0.cmp(a.0))
            })
            .map(|(l, v)| (l.to_string(), *v));
        let method = self.method();
        let neighbours = hits
            .iter()
            .take(5)
            .map(|&(i, s)| (self.labels[i].clone(), s))
            .collect();
        match winner {
            Some((intent, (votes, _, best))) => IntentMatch {
                nearest_example: hits
                    .iter()
                    .find(|(i, _)| self.labels[*i] == intent)
                    .map(|(i, _)| self.texts[*i].clone()),
                intent: Some(intent),
                similarity: best.clamp(0.0, 1.0),
                vote_share: votes as f32 / hits.len().max(1) as f32,
                method,
                neighbours,
            },
            None => IntentMatch {
                nearest_example: None,
                intent: None,
                similarity: 0.0,
                vote_share: 0.0,
                method,
                neighbours,
            },
        }
    }
}

/// Unit-length mean vector of each label's examples, sorted by label.
fn centroids(labels: &[String], vectors: &[Vec<f32>]) -> Vec<(String, Vec<f32>)> {
    let mut sums: std::collections::BTreeMap<&str, Vec<f32>> = std::collections::BTreeMap::new();
    for (l, v) in labels.iter().zip(vectors) {
        let sum = sums.entry(l.as_str()).or_insert_with(|| vec![0.0; v.len()]);
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    sums.into_iter()
        .map(|(l, mut v)| {
            let norm = dot(&v, &v).sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            (l.to_string(), v)
        })
        .collect()
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The `k` rows of `index` nearest to `q` (unit vectors), best first.
fn nearest(index: &[Vec<f32>], q: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut sims: Vec<(usize, f32)> = index
        .iter()
        .enumerate()
        .map(|(i, v)| (i, dot(v, q)))
        .collect();
    if sims.is_empty() {
        return sims;
    }
    let nth = k.min(sims.len()) - 1;
    sims.select_nth_unstable_by(nth, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    sims.truncate(k);
    sims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    sims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<(String, String)> {
        [
            ("reset_password", "I forgot my password"),
            ("reset_password", "how can I reset my password"),
            ("reset_password", "password reset link not arriving"),
            ("order_status", "where is my order"),
            ("order_status", "my package has not arrived yet"),
            ("order_status", "track my order please"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn bm25_fallback_votes_and_scores_coverage() {
        let idx = IntentIndex::build(examples(), None).unwrap();
        assert_eq!(idx.method(), MatchMethod::Bm25);
        let m = idx.classify("I need to reset my password", None).unwrap();
        assert_eq!(m.intent.as_deref(), Some("reset_password"));
        assert!(m.in_scope(0.45).is_some(), "{m:?}");
        let oos = idx
            .classify("what's the weather like in Paris", None)
            .unwrap();
        assert!(oos.in_scope(0.45).is_none(), "{oos:?}");
    }
}
