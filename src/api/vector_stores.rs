//! OpenAI's vector stores (`/v1/vector_stores`) over knowledge-base collections: create, list,
//! retrieve, modify and delete. A vector store's id is its collection's name, so
//! collections made with the CLI are vector stores too.
//!
//! Owns the wire shape of a vector store and the chunking-strategy mapping. Search is in
//! `vector_store_search`, a store's files in `vector_store_files`; this module must not depend
//! on either.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::kb_shared::{blocking, check_metadata, query, window_slice, ListQuery, Page};
use super::state::AppState;
use crate::embedding::EmbeddingModel;
use crate::knowledge::{
    random_id, Collection, CollectionParams, FileCounts, KnowledgeBase, KnowledgeError,
};

const MAX_FILE_IDS: usize = 500;
const MAX_NAME_CHARS: usize = 256;

#[derive(Debug, Serialize)]
pub struct VectorStoreObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub name: String,
    pub usage_bytes: u64,
    pub file_counts: FileCounts,
    /// Ingestion finishes before a request returns, so a store is always ready.
    pub status: &'static str,
    pub expires_after: Option<Value>,
    pub expires_at: Option<i64>,
    pub last_active_at: i64,
    pub metadata: Value,
}

pub fn store_object(
    kb: &KnowledgeBase,
    c: &Collection,
) -> Result<VectorStoreObject, KnowledgeError> {
    Ok(VectorStoreObject {
        id: c.name.clone(),
        object: "vector_store",
        created_at: c.created_at,
        name: c
            .metadata
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(c.name.as_str())
            .to_string(),
        usage_bytes: kb.store().collection_usage_bytes(c.id)?,
        file_counts: kb.store().collection_file_counts(c.id)?,
        status: "completed",
        expires_after: None,
        expires_at: None,
        last_active_at: c.created_at,
        metadata: c
            .metadata
            .get("metadata")
            .filter(|m| m.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
    })
}

/// OpenAI's `chunking_strategy`. Chunking is a collection's, fixed when it is created.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChunkingStrategy {
    Auto,
    Static {
        #[serde(rename = "static")]
        settings: StaticChunking,
    },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticChunking {
    pub max_chunk_size_tokens: usize,
    pub chunk_overlap_tokens: usize,
}

/// A file may name a chunking strategy only when it is what its store already uses.
pub fn check_chunking(c: &Collection, strategy: Option<ChunkingStrategy>) -> Result<(), ApiError> {
    match strategy {
        None | Some(ChunkingStrategy::Auto) => Ok(()),
        Some(ChunkingStrategy::Static { settings: s })
            if s.max_chunk_size_tokens == c.chunk_tokens
                && s.chunk_overlap_tokens == c.chunk_overlap =>
        {
            Ok(())
        }
        Some(ChunkingStrategy::Static { .. }) => Err(ApiError::unsupported(
            "chunking_strategy",
            &format!(
                "chunking is set per vector store when it is created; `{}` uses \
                 max_chunk_size_tokens {} and chunk_overlap_tokens {}",
                c.name, c.chunk_tokens, c.chunk_overlap
            ),
        )),
    }
}

/// Chunk-size errors name the wire field they came from.
fn chunking_error(e: KnowledgeError) -> ApiError {
    let about_chunking = matches!(
        &e,
        KnowledgeError::InvalidArgument { field, .. }
            if field == "chunk_tokens" || field == "chunk_overlap"
    );
    if about_chunking {
        ApiError::invalid(e.to_string(), "chunking_strategy")
    } else {
        e.into()
    }
}

fn refuse_expiry(expires_after: &Option<Value>) -> Result<(), ApiError> {
    match expires_after {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::unsupported(
            "expires_after",
            "vector stores here do not expire",
        )),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            format!("`name` is longer than {MAX_NAME_CHARS} characters"),
            "name",
        ));
    }
    Ok(())
}

/// New stores use the first embedding model served.
fn default_embedder(state: &AppState) -> Result<Arc<EmbeddingModel>, ApiError> {
    state
        .registry()?
        .embedders
        .values()
        .next()
        .map(|e| e.model.clone())
        .ok_or_else(|| ApiError::InvalidRequest {
            message: "vector stores need an embedding model: start the server with \
                      --embedding-model FOLDER"
                .into(),
            param: None,
            code: Some("embedding_model_unavailable"),
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    pub name: Option<String>,
    pub description: Option<String>,
    pub file_ids: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub chunking_strategy: Option<ChunkingStrategy>,
    pub expires_after: Option<Value>,
}

pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateStore>,
) -> Result<Json<VectorStoreObject>, ApiError> {
    let kb = state.knowledge()?;
    let model = default_embedder(&state)?;
    refuse_expiry(&req.expires_after)?;
    let mut metadata = Map::new();
    if let Some(m) = req.metadata {
        check_metadata(&m)?;
        metadata.insert("metadata".into(), Value::Object(m));
    }
    if let Some(name) = req.name {
        check_name(&name)?;
        metadata.insert("name".into(), Value::String(name));
    }
    if let Some(d) = req.description {
        metadata.insert("description".into(), Value::String(d));
    }
    let (chunk_tokens, chunk_overlap) = match req.chunking_strategy {
        None | Some(ChunkingStrategy::Auto) => (None, None),
        Some(ChunkingStrategy::Static { settings }) => (
            Some(settings.max_chunk_size_tokens),
            Some(settings.chunk_overlap_tokens),
        ),
    };
    let file_ids = req.file_ids.unwrap_or_default();
    if file_ids.len() > MAX_FILE_IDS {
        return Err(ApiError::invalid(
            format!(
                "`file_ids` has {} ids; at most {MAX_FILE_IDS} are allowed",
                file_ids.len()
            ),
            "file_ids",
        ));
    }
    let store = blocking(move || {
        // Unknown files are refused before anything is created.
        for id in &file_ids {
            kb.store().file(id)?;
        }
        let params = CollectionParams {
            chunk_tokens,
            chunk_overlap,
            metadata,
            ..Default::default()
        };
        let path = model.dir().display().to_string();
        let c = kb
            .create_collection(&random_id("vs_"), model.id(), Some(path), params)
            .map_err(chunking_error)?;
        for id in &file_ids {
            kb.attach_file(&c.name, id, &Map::new())?;
        }
        Ok(store_object(&kb, &c)?)
    })
    .await?;
    Ok(Json(store))
}

pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<VectorStoreObject>>, ApiError> {
    let kb = state.knowledge()?;
    let window = query(q)?.window(20, 100)?;
    let (stores, has_more) = blocking(move || {
        let mut all = kb.store().collections()?;
        all.sort_by_key(|c| c.id);
        if window.descending {
            all.reverse();
        }
        let (page, has_more) = window_slice(all, &window, |c| c.name.as_str())?;
        let stores = page
            .iter()
            .map(|c| store_object(&kb, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((stores, has_more))
    })
    .await?;
    Ok(Json(Page::new(stores, has_more, |s| s.id.as_str())))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<VectorStoreObject>, ApiError> {
    let kb = state.knowledge()?;
    let store = blocking(move || {
        let c = kb.store().collection(&id)?;
        Ok(store_object(&kb, &c)?)
    })
    .await?;
    Ok(Json(store))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifyStore {
    pub name: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub expires_after: Option<Value>,
}

pub async fn modify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ModifyStore>,
) -> Result<Json<VectorStoreObject>, ApiError> {
    let kb = state.knowledge()?;
    refuse_expiry(&req.expires_after)?;
    if let Some(m) = &req.metadata {
        check_metadata(m)?;
    }
    if let Some(n) = &req.name {
        check_name(n)?;
    }
    let store = blocking(move || {
        let c = kb.store().collection(&id)?;
        let mut metadata = c.metadata.clone();
        if let Some(n) = req.name {
            metadata.insert("name".into(), Value::String(n));
        }
        if let Some(m) = req.metadata {
            metadata.insert("metadata".into(), Value::Object(m));
        }
        kb.store().set_collection_metadata(c.id, &metadata)?;
        let c = kb.store().collection(&id)?;
        Ok(store_object(&kb, &c)?)
    })
    .await?;
    Ok(Json(store))
}

/// Deleting a store keeps its files: they may be in other stores.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let c = blocking(move || Ok(kb.delete_collection(&id)?)).await?;
    Ok(Json(
        json!({"id": c.name, "object": "vector_store.deleted", "deleted": true}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_strategies_parse_from_openai_json() {
        let s: ChunkingStrategy = serde_json::from_value(json!({"type": "static",
            "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 20}}))
        .unwrap_or(ChunkingStrategy::Auto);
        assert!(matches!(
            s,
            ChunkingStrategy::Static { settings } if settings.max_chunk_size_tokens == 200
        ));
        assert!(serde_json::from_value::<ChunkingStrategy>(json!({"type": "other"})).is_err());
    }
}
