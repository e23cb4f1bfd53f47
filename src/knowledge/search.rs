//! Search: BM25, vector, or both fused by reciprocal rank fusion, over one or more
//! collections, with metadata filters and citation fields on every hit.
//!
//! Owns the fusion rule: each list contributes `1 / (RRF_K + rank)` per chunk, so a chunk
//! found by both methods outranks one found well by only one, and neither method's score scale
//! matters. Depends on `store`, `filter`, the collection's indexes and the `Embedder` trait.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde::Serialize;

use super::bm25::query_terms;
use super::error::{KnowledgeError, Result};
use super::kb::KnowledgeBase;
use super::types::{ChunkRecord, SearchFilter};
use super::Rerank;

/// The customary RRF constant: damps the head of each list so one method cannot dominate.
pub const RRF_K: f64 = 60.0;
/// Candidates each method contributes per requested hit.
const CANDIDATES_PER_HIT: usize = 5;
const MIN_CANDIDATES: usize = 50;
pub const MAX_TOP_K: usize = 100;
/// Fused hits a reranker reorders per requested hit (at least `MIN_RERANK`): a cross-encoder
/// costs a forward per pair, so it sees the head of the list, not all of it.
const RERANK_PER_HIT: usize = 3;
const MIN_RERANK: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    #[default]
    Hybrid,
    Bm25,
    Vector,
}

impl FromStr for SearchMode {
    type Err = KnowledgeError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "bm25" | "keyword" => Ok(Self::Bm25),
            "vector" | "semantic" => Ok(Self::Vector),
            other => Err(KnowledgeError::InvalidArgument {
                field: "mode".into(),
                problem: format!("`{other}`; expected hybrid, bm25 or vector"),
            }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub collections: Vec<String>,
    pub query: String,
    pub top_k: usize,
    pub filter: SearchFilter,
    pub mode: SearchMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// The reranker's score when one is set; else the fused score in hybrid mode, BM25 or
    /// cosine similarity otherwise. Higher is better.
    pub score: f64,
    pub rerank_score: Option<f32>,
    pub bm25_rank: Option<usize>,
    pub bm25_score: Option<f64>,
    pub vector_rank: Option<usize>,
    pub vector_score: Option<f32>,
    #[serde(flatten)]
    pub chunk: ChunkRecord,
}

#[derive(Default)]
struct Candidate {
    bm25: Option<(usize, f64)>,
    vector: Option<(usize, f32)>,
}

impl KnowledgeBase {
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        if req.top_k == 0 || req.top_k > MAX_TOP_K {
            return Err(KnowledgeError::InvalidArgument {
                field: "top_k".into(),
                problem: format!("{}; must be between 1 and {MAX_TOP_K}", req.top_k),
            });
        }
        if req.collections.is_empty() {
            return Err(KnowledgeError::InvalidArgument {
                field: "collections".into(),
                problem: "name at least one collection".into(),
            });
        }
        let collections = req
            .collections
            .iter()
            .map(|n| self.store.collection(n))
            .collect::<Result<Vec<_>>>()?;
        let depth = (req.top_k * CANDIDATES_PER_HIT).max(MIN_CANDIDATES);
        // Both methods rank only the chunks that pass the filter, found once per collection.
        let allowed: Vec<Option<HashSet<i64>>> = collections
            .iter()
            .map(|c| {
                (!req.filter.is_empty())
                    .then(|| self.store.filtered_chunk_ids(c.id, &req.filter))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let mut candidates: HashMap<i64, Candidate> = HashMap::new();
        if req.mode != SearchMode::Vector {
            let terms = query_terms(&req.query);
            let mut hits = Vec::new();
            for (c, allowed) in collections.iter().zip(&allowed) {
                hits.extend(self.index(c)?.terms.search(&terms, depth, allowed.as_ref()));
            }
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (rank, (id, score)) in hits.into_iter().take(depth).enumerate() {
                candidates.entry(id).or_default().bm25 = Some((rank + 1, score));
            }
        }
        if req.mode != SearchMode::Bm25 {
            let mut hits = Vec::new();
            let mut queries: HashMap<String, Vec<f32>> = HashMap::new();
            for (c, allowed) in collections.iter().zip(&allowed) {
                let e = self.embedder_for(c)?;
                let q = match queries.get(e.model_id()) {
                    Some(q) => q.clone(),
                    None => {
                        let q = e.embed_query(&req.query).map_err(|message| {
                            KnowledgeError::Embedding {
                                model: e.model_id().into(),
                                message,
                            }
                        })?;
                        queries.insert(e.model_id().into(), q.clone());
                        q
                    }
                };
                hits.extend(self.index(c)?.vectors.search(&q, depth, allowed.as_ref())?);
            }
            hits.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (rank, (id, sim)) in hits.into_iter().take(depth).enumerate() {
                candidates.entry(id).or_default().vector = Some((rank + 1, sim));
            }
        }
        let mut ranked: Vec<(i64, f64, Candidate)> = candidates
            .into_iter()
            .map(|(id, c)| (id, score(&c, req.mode), c))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let reranker = self.reranker();
        let keep = match reranker {
            Some(_) => (req.top_k * RERANK_PER_HIT).max(MIN_RERANK),
            None => req.top_k,
        };
        ranked.truncate(keep);
        let ids: Vec<i64> = ranked.iter().map(|r| r.0).collect();
        let records = self.store.chunks(&ids)?;
        let mut by_id: HashMap<i64, ChunkRecord> =
            records.into_iter().map(|r| (r.chunk_id, r)).collect();
        let mut hits: Vec<SearchHit> = ranked
            .into_iter()
            .filter_map(|(id, score, c)| {
                Some(SearchHit {
                    score,
                    rerank_score: None,
                    bm25_rank: c.bm25.map(|b| b.0),
                    bm25_score: c.bm25.map(|b| b.1),
                    vector_rank: c.vector.map(|v| v.0),
                    vector_score: c.vector.map(|v| v.1),
                    chunk: by_id.remove(&id)?,
                })
            })
            .collect();
        if let Some(r) = reranker {
            rerank(r.as_ref(), &req.query, &mut hits)?;
        }
        hits.truncate(req.top_k);
        Ok(hits)
    }
}

fn rerank(r: &dyn Rerank, query: &str, hits: &mut [SearchHit]) -> Result<()> {
    let passages: Vec<String> = hits
        .iter()
        .map(|h| {
            if h.chunk.heading_path.is_empty() {
                h.chunk.text.clone()
            } else {
                format!("{}\n{}", h.chunk.heading_path, h.chunk.text)
            }
        })
        .collect();
    let scores = r
        .rerank(query, &passages)
        .map_err(|message| KnowledgeError::Embedding {
            model: r.model_id().into(),
            message,
        })?;
    for (h, s) in hits.iter_mut().zip(scores) {
        h.rerank_score = Some(s);
        h.score = s as f64;
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(())
}

fn score(c: &Candidate, mode: SearchMode) -> f64 {
    match mode {
        SearchMode::Bm25 => c.bm25.map_or(f64::MIN, |b| b.1),
        SearchMode::Vector => c.vector.map_or(f64::MIN, |v| v.1 as f64),
        SearchMode::Hybrid => {
            let rrf = |rank: usize| 1.0 / (RRF_K + rank as f64);
            c.bm25.map_or(0.0, |b| rrf(b.0)) + c.vector.map_or(0.0, |v| rrf(v.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_both_methods_find_outranks_one_found_first_by_only_one() {
        let both = Candidate {
            bm25: Some((3, 1.0)),
            vector: Some((3, 0.5)),
        };
        let one = Candidate {
            bm25: Some((1, 9.0)),
            vector: None,
        };
        assert!(score(&both, SearchMode::Hybrid) > score(&one, SearchMode::Hybrid));
        assert!(score(&one, SearchMode::Bm25) > score(&both, SearchMode::Bm25));
    }
}
