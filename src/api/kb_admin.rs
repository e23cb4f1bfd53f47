//! The knowledge base's admin routes (`/admin/kb/...`): collections, their documents, search
//! with every filter and mode, and index rebuilds, in Enclave's own JSON rather than OpenAI's.
//! The guard already requires the bearer key on `/admin/*`.
//!
//! Must not depend on the OpenAI-shaped knowledge routes (files, vector stores).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::json::{body_error, ApiJson};
use super::kb_shared::{blocking, query};
use super::state::AppState;
use crate::knowledge::formats::KindHint;
use crate::knowledge::{
    Collection, CollectionParams, IngestOptions, IngestReport, Quantization, SearchFilter,
    SearchHit, SearchMode, SearchRequest,
};

const DEFAULT_DOCUMENTS: usize = 100;
const MAX_DOCUMENTS: usize = 1000;

pub async fn list_collections(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let collections = blocking(move || Ok(kb.store().collections()?)).await?;
    Ok(Json(json!({"object": "list", "data": collections})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub name: String,
    /// Default: the first embedding model served.
    pub embedding_model: Option<String>,
    pub quantization: Option<String>,
    pub chunk_tokens: Option<usize>,
    pub chunk_overlap: Option<usize>,
    pub metadata: Option<Map<String, Value>>,
}

pub async fn create_collection(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateCollection>,
) -> Result<Json<Collection>, ApiError> {
    let kb = state.knowledge()?;
    let registry = state.registry()?;
    let served =
        match req.embedding_model.as_deref() {
            Some(name) => registry.embedders.get(name).ok_or_else(|| {
                let loaded: Vec<&str> = registry.embedders.keys().map(String::as_str).collect();
                ApiError::invalid(
                    format!(
                        "embedding model `{name}` is not served here; served: {}",
                        loaded.join(", ")
                    ),
                    "embedding_model",
                )
            })?,
            None => registry.embedders.values().next().ok_or_else(|| {
                ApiError::invalid("no embedding model is served", "embedding_model")
            })?,
        };
    let model = served.model.clone();
    let quantization = match req.quantization.as_deref() {
        Some(q) => q.parse::<Quantization>()?,
        None => Quantization::default(),
    };
    let params = CollectionParams {
        quantization,
        chunk_tokens: req.chunk_tokens,
        chunk_overlap: req.chunk_overlap,
        metadata: req.metadata.unwrap_or_default(),
    };
    let name = req.name;
    let collection = blocking(move || {
        let path = model.dir().display().to_string();
        Ok(kb.create_collection(&name, model.id(), Some(path), params)?)
    })
    .await?;
    Ok(Json(collection))
}

pub async fn get_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Collection>, ApiError> {
    let kb = state.knowledge()?;
    let collection = blocking(move || Ok(kb.store().collection(&name)?)).await?;
    Ok(Json(collection))
}

pub async fn delete_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let c = blocking(move || Ok(kb.delete_collection(&name)?)).await?;
    Ok(Json(json!({"name": c.name, "deleted": true})))
}

#[derive(Debug, Deserialize)]
pub struct DocumentsQuery {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

pub async fn list_documents(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<DocumentsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_DOCUMENTS);
    if limit == 0 || limit > MAX_DOCUMENTS {
        return Err(ApiError::invalid(
            format!("`limit` must be between 1 and {MAX_DOCUMENTS}, got {limit}"),
            "limit",
        ));
    }
    // SQLite takes a signed offset; none beyond it could name a row anyway.
    let offset = q.offset.unwrap_or(0).min(i64::MAX as usize);
    let documents = blocking(move || {
        let c = kb.store().collection(&name)?;
        Ok(kb.store().documents(&c, limit, offset)?)
    })
    .await?;
    Ok(Json(json!({
        "object": "list",
        "data": documents,
        "limit": limit,
        "offset": offset,
    })))
}

/// `filename` (required: its extension picks the parser), `kind`, and any number of `tag`s.
fn upload_options(pairs: Vec<(String, String)>) -> Result<(String, IngestOptions), ApiError> {
    let mut filename = None;
    let mut options = IngestOptions::default();
    for (key, value) in pairs {
        match key.as_str() {
            "filename" => filename = Some(value),
            "kind" => {
                options.kind = value
                    .parse::<KindHint>()
                    .map_err(|e| ApiError::invalid(e.to_string(), "kind"))?
            }
            "tag" | "tags" => options.tags.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            ),
            other => {
                return Err(ApiError::invalid(
                    format!("unknown query parameter `{other}`; use filename, kind or tag"),
                    other,
                ))
            }
        }
    }
    let filename = filename
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "name the uploaded file with `?filename=`; its extension picks the parser",
                "filename",
            )
        })?;
    Ok((filename, options))
}

/// Ingests the request body as one file. Uploading the same filename again updates what it
/// gave before (its documents share the source `upload:<filename>`).
pub async fn upload_document(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestReport>, ApiError> {
    let kb = state.knowledge()?;
    let (filename, options) = upload_options(query(q)?)?;
    let bytes = body.map_err(|e| body_error(e, Some(state.inner.limits.max_body_bytes)))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "the request body is empty; send the file's bytes as the body",
            "file",
        ));
    }
    let report = blocking(move || {
        let source = format!("upload:{filename}");
        Ok(kb.ingest_bytes(&name, &source, &filename, &bytes, &options)?)
    })
    .await?;
    let ingested = report.documents_added + report.documents_updated + report.documents_unchanged;
    if ingested == 0 {
        if let Some((_, error)) = report.errors.first() {
            return Err(ApiError::InvalidRequest {
                message: error.clone(),
                param: Some("file".into()),
                code: Some("unsupported_file"),
            });
        }
    }
    Ok(Json(report))
}

pub async fn delete_document(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::invalid(format!("`{id}` is not a document id"), "id"))?;
    blocking(move || {
        let c = kb.store().collection(&name)?;
        kb.store().document(&c, id)?;
        kb.remove_documents(&name, &[id])?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSearch {
    pub query: String,
    pub top_k: Option<usize>,
    pub mode: Option<String>,
    #[serde(default)]
    pub source_types: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub languages: Vec<String>,
}

pub async fn search(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<AdminSearch>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    if req.query.trim().is_empty() {
        return Err(ApiError::invalid("`query` must not be empty", "query"));
    }
    let mode = match req.mode.as_deref() {
        Some(m) => m.parse::<SearchMode>()?,
        None => SearchMode::Hybrid,
    };
    let request = SearchRequest {
        collections: vec![name],
        query: req.query,
        top_k: req.top_k.unwrap_or(10),
        filter: SearchFilter {
            source_types: req.source_types,
            tags: req.tags,
            languages: req.languages,
        },
        mode,
    };
    let hits: Vec<SearchHit> = blocking(move || Ok(kb.search(&request)?)).await?;
    Ok(Json(json!({"object": "list", "data": hits})))
}

pub async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let vectors = blocking(move || Ok(kb.rebuild(&name)?)).await?;
    Ok(Json(json!({"vectors": vectors})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn upload_options_read_filename_kind_and_repeated_tags() {
        let parsed = upload_options(pairs(&[
            ("filename", "faq.md"),
            ("kind", "faq"),
            ("tag", "public"),
            ("tag", "en,billing"),
        ]));
        let Ok((filename, options)) = parsed else {
            panic!("valid options were refused");
        };
        assert_eq!(filename, "faq.md");
        assert_eq!(options.kind, KindHint::Faq);
        assert_eq!(options.tags, vec!["public", "en", "billing"]);
        assert!(upload_options(pairs(&[("kind", "faq")])).is_err());
        assert!(upload_options(pairs(&[("filename", "a.md"), ("kind", "novel")])).is_err());
        assert!(upload_options(pairs(&[("filename", "a.md"), ("bogus", "1")])).is_err());
    }
}
