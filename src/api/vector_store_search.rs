//! `POST /v1/vector_stores/{id}/search`: OpenAI's vector-store search over a collection, by
//! hybrid (BM25 and vector, rank-fused) search.
//!
//! Owns the wire shape of search results, the score scale (fused rank scores normalised to
//! 0..1) and the translation of OpenAI's attribute filters into tag filters, refusing those
//! that tags cannot express. Must not depend on the other vector-store routes.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::kb_shared::blocking;
use super::state::AppState;
use crate::knowledge::{
    attribute_tag, ChunkRecord, SearchFilter, SearchMode, SearchRequest, RRF_K,
};

/// The fused score of a chunk ranked first by both methods: what normalises scores to 0..1.
const BEST_RRF: f64 = 2.0 / (RRF_K + 1.0);

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SearchQuery {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingOptions {
    pub ranker: Option<String>,
    pub score_threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub query: SearchQuery,
    pub max_num_results: Option<usize>,
    pub filters: Option<Value>,
    pub ranking_options: Option<RankingOptions>,
    pub rewrite_query: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct TextContent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct SearchResult {
    /// Null for chunks that did not come from an uploaded file (a CLI ingest, say).
    pub file_id: Option<String>,
    pub filename: String,
    /// Over 0..1: the fused rank score (1 is first for both BM25 and vectors), or the
    /// reranker's probability when one is set.
    pub score: f64,
    pub attributes: Map<String, Value>,
    pub content: Vec<TextContent>,
}

#[derive(Debug, Serialize)]
pub struct SearchPage {
    pub object: &'static str,
    pub search_query: Vec<String>,
    pub data: Vec<SearchResult>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

/// OpenAI's attribute filters that are tag filters: `eq`, alone or under `and`. Anything else
/// is refused rather than ignored, so no search silently returns what a filter excludes.
fn filter_tags(filter: &Value, tags: &mut Vec<String>) -> Result<(), ApiError> {
    let unsupported = || {
        ApiError::unsupported(
            "filters",
            "only `eq` comparisons of an attribute with a string, number or boolean, alone or \
             combined with `and`, are supported",
        )
    };
    match filter.get("type").and_then(Value::as_str) {
        Some("eq") => {
            let key = filter
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(unsupported)?;
            let value = filter.get("value").ok_or_else(unsupported)?;
            tags.push(attribute_tag(key, value).ok_or_else(unsupported)?);
        }
        Some("and") => {
            let parts = filter
                .get("filters")
                .and_then(Value::as_array)
                .ok_or_else(unsupported)?;
            for part in parts {
                filter_tags(part, tags)?;
            }
        }
        _ => return Err(unsupported()),
    }
    Ok(())
}

fn fallback_filename(chunk: &ChunkRecord) -> String {
    chunk
        .metadata
        .get("file_name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| chunk.title.clone())
}

pub async fn search(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SearchBody>,
) -> Result<Json<SearchPage>, ApiError> {
    let kb = state.knowledge()?;
    let queries = match req.query {
        SearchQuery::One(q) => vec![q],
        SearchQuery::Many(qs) => qs,
    };
    let text = queries.join(" ");
    if text.trim().is_empty() {
        return Err(ApiError::invalid("`query` must not be empty", "query"));
    }
    let top_k = req.max_num_results.unwrap_or(10);
    if !(1..=50).contains(&top_k) {
        return Err(ApiError::invalid(
            format!("`max_num_results` must be between 1 and 50, got {top_k}"),
            "max_num_results",
        ));
    }
    if req.rewrite_query == Some(true) {
        return Err(ApiError::unsupported(
            "rewrite_query",
            "queries are searched as given",
        ));
    }
    let mut threshold = 0.0;
    if let Some(r) = &req.ranking_options {
        if let Some(ranker) = r.ranker.as_deref() {
            if !matches!(ranker, "none" | "auto" | "default-2024-11-15") {
                return Err(ApiError::invalid(
                    format!("`ranking_options.ranker` `{ranker}` is not known; use none or auto"),
                    "ranking_options.ranker",
                ));
            }
        }
        if let Some(t) = r.score_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(ApiError::invalid(
                    "`ranking_options.score_threshold` must be between 0 and 1",
                    "ranking_options.score_threshold",
                ));
            }
            threshold = t;
        }
    }
    let mut tags = Vec::new();
    if let Some(f) = req.filters.as_ref().filter(|f| !f.is_null()) {
        filter_tags(f, &mut tags)?;
    }
    let data = blocking(move || {
        let c = kb.store().collection(&id)?;
        let hits = kb.search(&SearchRequest {
            collections: vec![c.name.clone()],
            query: text,
            top_k,
            filter: SearchFilter {
                tags,
                ..Default::default()
            },
            mode: SearchMode::Hybrid,
        })?;
        // (filename, attributes) per file, looked up once per search.
        let mut files: HashMap<String, (String, Map<String, Value>)> = HashMap::new();
        let mut data = Vec::new();
        for hit in hits {
            // A cross-encoder's logit goes through the logistic function, the scale it was
            // trained on; a fused rank score is divided by the best one possible.
            let score = match hit.rerank_score {
                Some(logit) => 1.0 / (1.0 + (-(logit as f64)).exp()),
                None => (hit.score / BEST_RRF).clamp(0.0, 1.0),
            };
            if score < threshold {
                continue;
            }
            let file_id = hit.chunk.source.strip_prefix("file:").map(str::to_string);
            let (filename, attributes) = match &file_id {
                Some(fid) => match files.get(fid) {
                    Some(known) => known.clone(),
                    None => {
                        let filename = kb
                            .store()
                            .file(fid)
                            .map(|f| f.filename)
                            .unwrap_or_else(|_| fallback_filename(&hit.chunk));
                        let attributes = kb
                            .store()
                            .collection_file(c.id, fid)?
                            .map(|r| r.attributes)
                            .unwrap_or_default();
                        files.insert(fid.clone(), (filename.clone(), attributes.clone()));
                        (filename, attributes)
                    }
                },
                None => (fallback_filename(&hit.chunk), Map::new()),
            };
            data.push(SearchResult {
                file_id,
                filename,
                score,
                attributes,
                content: vec![TextContent {
                    kind: "text",
                    text: hit.chunk.text,
                }],
            });
        }
        Ok(data)
    })
    .await?;
    Ok(Json(SearchPage {
        object: "vector_store.search_results.page",
        search_query: queries,
        data,
        has_more: false,
        next_page: None,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tags_of(filter: Value) -> Result<Vec<String>, ApiError> {
        let mut tags = Vec::new();
        filter_tags(&filter, &mut tags).map(|()| tags)
    }

    #[test]
    fn eq_filters_and_their_conjunctions_become_tags() {
        let one = tags_of(json!({"type": "eq", "key": "team", "value": "billing"}));
        assert_eq!(one.ok(), Some(vec!["team=billing".to_string()]));
        let both = tags_of(json!({"type": "and", "filters": [
            {"type": "eq", "key": "team", "value": "billing"},
            {"type": "eq", "key": "tier", "value": 2}]}));
        assert_eq!(
            both.ok(),
            Some(vec!["team=billing".to_string(), "tier=2".to_string()])
        );
    }

    #[test]
    fn other_filters_are_refused_not_ignored() {
        for f in [
            json!({"type": "ne", "key": "team", "value": "billing"}),
            json!({"type": "or", "filters": []}),
            json!({"type": "eq", "key": "team", "value": ["a", "b"]}),
            json!({"type": "and", "filters": [{"type": "gt", "key": "n", "value": 1}]}),
        ] {
            assert!(tags_of(f).is_err());
        }
    }
}
