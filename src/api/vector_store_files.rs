//! The files of an OpenAI vector store (`/v1/vector_stores/{id}/files` and `/file_batches`):
//! attaching uploaded files to a collection, listing and detaching them, and batches of them.
//!
//! Ingestion runs inside the request, so a file is `completed` or `failed` when the call
//! returns; a file that cannot be ingested is reported through its status and `last_error`,
//! as OpenAI does, not as an HTTP error. Batches are kept in memory only (their files'
//! statuses are in the store): a batch id outlives neither a restart nor the last 10,000
//! batches. Depends on `vector_stores` for the chunking strategy; must not be depended on.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::kb_shared::{blocking, check_attributes, query, window_slice, ListQuery, Page};
use super::state::AppState;
use super::vector_stores::{check_chunking, ChunkingStrategy};
use crate::knowledge::{
    file_source, random_id, Collection, CollectionFile, FileCounts, KnowledgeBase, KnowledgeError,
};

const MAX_BATCH_FILES: usize = 500;
const MAX_BATCHES_KEPT: usize = 10_000;

#[derive(Debug, Serialize)]
pub struct VectorStoreFileObject {
    pub id: String,
    pub object: &'static str,
    pub usage_bytes: u64,
    pub created_at: i64,
    pub vector_store_id: String,
    pub status: String,
    pub last_error: Option<Value>,
    pub chunking_strategy: Value,
    pub attributes: Map<String, Value>,
}

fn file_object(
    kb: &KnowledgeBase,
    c: &Collection,
    row: CollectionFile,
) -> Result<VectorStoreFileObject, KnowledgeError> {
    Ok(VectorStoreFileObject {
        usage_bytes: kb
            .store()
            .source_usage_bytes(c.id, &file_source(&row.file_id))?,
        id: row.file_id,
        object: "vector_store.file",
        created_at: row.created_at,
        vector_store_id: c.name.clone(),
        status: row.status,
        last_error: row.last_error,
        chunking_strategy: json!({"type": "static", "static": {
            "max_chunk_size_tokens": c.chunk_tokens,
            "chunk_overlap_tokens": c.chunk_overlap}}),
        attributes: row.attributes,
    })
}

fn not_attached(store: &str, file_id: &str) -> ApiError {
    ApiError::NotFound(format!("file `{file_id}` is not in vector store `{store}`"))
}

/// The attachment row, or 404.
fn attached(kb: &KnowledgeBase, c: &Collection, file_id: &str) -> Result<CollectionFile, ApiError> {
    kb.store()
        .collection_file(c.id, file_id)?
        .ok_or_else(|| not_attached(&c.name, file_id))
}

fn status_filter(filter: Option<&str>) -> Result<Option<String>, ApiError> {
    match filter {
        None | Some("") => Ok(None),
        Some(s @ ("in_progress" | "completed" | "failed" | "cancelled")) => Ok(Some(s.into())),
        Some(other) => Err(ApiError::invalid(
            format!(
                "`filter` `{other}` is not a status; use in_progress, completed, failed or \
                 cancelled"
            ),
            "filter",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachFile {
    pub file_id: String,
    pub attributes: Option<Map<String, Value>>,
    pub chunking_strategy: Option<ChunkingStrategy>,
}

pub async fn attach(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AttachFile>,
) -> Result<Json<VectorStoreFileObject>, ApiError> {
    let kb = state.knowledge()?;
    let attributes = req.attributes.unwrap_or_default();
    check_attributes(&attributes)?;
    let (file_id, chunking) = (req.file_id, req.chunking_strategy);
    let object = blocking(move || {
        let c = kb.store().collection(&id)?;
        check_chunking(&c, chunking)?;
        let row = kb.attach_file(&c.name, &file_id, &attributes)?;
        Ok(file_object(&kb, &c, row)?)
    })
    .await?;
    Ok(Json(object))
}

pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<VectorStoreFileObject>>, ApiError> {
    let kb = state.knowledge()?;
    let q = query(q)?;
    let window = q.window(20, 100)?;
    let status = status_filter(q.filter.as_deref())?;
    let (files, has_more) = blocking(move || {
        let c = kb.store().collection(&id)?;
        let (rows, has_more) = kb
            .store()
            .collection_files(c.id, status.as_deref(), &window)?;
        let files = rows
            .into_iter()
            .map(|row| file_object(&kb, &c, row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((files, has_more))
    })
    .await?;
    Ok(Json(Page::new(files, has_more, |f| f.id.as_str())))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Path((id, file_id)): Path<(String, String)>,
) -> Result<Json<VectorStoreFileObject>, ApiError> {
    let kb = state.knowledge()?;
    let object = blocking(move || {
        let c = kb.store().collection(&id)?;
        let row = attached(&kb, &c, &file_id)?;
        Ok(file_object(&kb, &c, row)?)
    })
    .await?;
    Ok(Json(object))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    pub attributes: Option<Map<String, Value>>,
}

/// New attributes are new tags on the file's documents, so the file is ingested again.
pub async fn update(
    State(state): State<AppState>,
    Path((id, file_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateFile>,
) -> Result<Json<VectorStoreFileObject>, ApiError> {
    let kb = state.knowledge()?;
    let attributes = req.attributes.unwrap_or_default();
    check_attributes(&attributes)?;
    let object = blocking(move || {
        let c = kb.store().collection(&id)?;
        attached(&kb, &c, &file_id)?;
        let row = kb.attach_file(&c.name, &file_id, &attributes)?;
        Ok(file_object(&kb, &c, row)?)
    })
    .await?;
    Ok(Json(object))
}

/// Takes the file's documents out of the store; the uploaded file itself stays.
pub async fn detach(
    State(state): State<AppState>,
    Path((id, file_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let file_id = blocking(move || {
        let c = kb.store().collection(&id)?;
        attached(&kb, &c, &file_id)?;
        kb.detach_file(&c.name, &file_id)?;
        Ok(file_id)
    })
    .await?;
    Ok(Json(
        json!({"id": file_id, "object": "vector_store.file.deleted", "deleted": true}),
    ))
}

/// The text extracted from the file, one item per document it gave.
pub async fn content(
    State(state): State<AppState>,
    Path((id, file_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let texts = blocking(move || {
        let c = kb.store().collection(&id)?;
        attached(&kb, &c, &file_id)?;
        Ok(kb.file_texts(&c.name, &file_id)?)
    })
    .await?;
    let data: Vec<Value> = texts
        .into_iter()
        .map(|text| json!({"type": "text", "text": text}))
        .collect();
    Ok(Json(json!({
        "object": "vector_store.file_content.page",
        "data": data,
        "has_more": false,
        "next_page": null,
    })))
}

/// A batch as remembered: its store, its files in order, and when it was made.
#[derive(Debug, Clone)]
struct Batch {
    vector_store_id: String,
    file_ids: Vec<String>,
    created_at: i64,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn batches() -> &'static Mutex<HashMap<String, Batch>> {
    static BATCHES: OnceLock<Mutex<HashMap<String, Batch>>> = OnceLock::new();
    BATCHES.get_or_init(Default::default)
}

fn remember(id: &str, batch: Batch) {
    let mut all = batches().lock().unwrap_or_else(|p| p.into_inner());
    if all.len() >= MAX_BATCHES_KEPT {
        let oldest = all
            .iter()
            .min_by_key(|(_, b)| b.created_at)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            all.remove(&k);
        }
    }
    all.insert(id.to_string(), batch);
}

fn recall(store: &str, batch_id: &str) -> Result<Batch, ApiError> {
    batches()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(batch_id)
        .filter(|b| b.vector_store_id == store)
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "file batch `{batch_id}` does not exist in vector store `{store}`"
            ))
        })
}

#[derive(Debug, Serialize)]
pub struct BatchObject {
    pub id: String,
    pub object: &'static str,
    pub vector_store_id: String,
    pub status: &'static str,
    pub file_counts: FileCounts,
    pub created_at: i64,
}

/// The batch's counts, read from its files' current statuses; a file detached since counts as
/// cancelled.
fn batch_object(
    kb: &KnowledgeBase,
    c: &Collection,
    batch_id: &str,
    batch: &Batch,
) -> Result<BatchObject, ApiError> {
    let mut counts = FileCounts::default();
    for file_id in &batch.file_ids {
        let status = kb.store().collection_file(c.id, file_id)?.map(|r| r.status);
        match status.as_deref() {
            Some("in_progress") => counts.in_progress += 1,
            Some("completed") => counts.completed += 1,
            Some("failed") => counts.failed += 1,
            _ => counts.cancelled += 1,
        }
        counts.total += 1;
    }
    Ok(BatchObject {
        id: batch_id.to_string(),
        object: "vector_store.files_batch",
        vector_store_id: c.name.clone(),
        status: if counts.in_progress > 0 {
            "in_progress"
        } else {
            "completed"
        },
        file_counts: counts,
        created_at: batch.created_at,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    pub file_id: String,
    pub attributes: Option<Map<String, Value>>,
    pub chunking_strategy: Option<ChunkingStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    pub file_ids: Option<Vec<String>>,
    pub files: Option<Vec<BatchFile>>,
    /// For every file of `file_ids`, and those of `files` that give none of their own.
    pub attributes: Option<Map<String, Value>>,
    pub chunking_strategy: Option<ChunkingStrategy>,
}

pub async fn create_batch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateBatch>,
) -> Result<Json<BatchObject>, ApiError> {
    let kb = state.knowledge()?;
    let shared = req.attributes.unwrap_or_default();
    check_attributes(&shared)?;
    let mut entries: Vec<(String, Map<String, Value>, Option<ChunkingStrategy>)> = req
        .file_ids
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f, shared.clone(), req.chunking_strategy))
        .collect();
    for f in req.files.unwrap_or_default() {
        let attributes = f.attributes.unwrap_or_else(|| shared.clone());
        check_attributes(&attributes)?;
        entries.push((
            f.file_id,
            attributes,
            f.chunking_strategy.or(req.chunking_strategy),
        ));
    }
    if entries.is_empty() {
        return Err(ApiError::invalid(
            "name at least one file, in `file_ids` or `files`",
            "file_ids",
        ));
    }
    if entries.len() > MAX_BATCH_FILES {
        return Err(ApiError::invalid(
            format!(
                "the batch has {} files; at most {MAX_BATCH_FILES} are allowed",
                entries.len()
            ),
            "file_ids",
        ));
    }
    let object = blocking(move || {
        let c = kb.store().collection(&id)?;
        // Every file is checked before any is ingested, so a bad batch changes nothing.
        for (file_id, _, chunking) in &entries {
            kb.store().file(file_id)?;
            check_chunking(&c, *chunking)?;
        }
        for (file_id, attributes, _) in &entries {
            kb.attach_file(&c.name, file_id, attributes)?;
        }
        let batch_id = random_id("vsfb_");
        let mut file_ids: Vec<String> = Vec::with_capacity(entries.len());
        for (file_id, _, _) in entries {
            if !file_ids.contains(&file_id) {
                file_ids.push(file_id);
            }
        }
        let batch = Batch {
            vector_store_id: c.name.clone(),
            file_ids,
            created_at: unix_now(),
        };
        let object = batch_object(&kb, &c, &batch_id, &batch)?;
        remember(&batch_id, batch);
        Ok(object)
    })
    .await?;
    Ok(Json(object))
}

pub async fn retrieve_batch(
    State(state): State<AppState>,
    Path((id, batch_id)): Path<(String, String)>,
) -> Result<Json<BatchObject>, ApiError> {
    let kb = state.knowledge()?;
    let batch = recall(&id, &batch_id)?;
    let object = blocking(move || {
        let c = kb.store().collection(&id)?;
        batch_object(&kb, &c, &batch_id, &batch)
    })
    .await?;
    Ok(Json(object))
}

/// Batches finish inside the request that makes them: there is never anything to cancel.
pub async fn cancel_batch(
    state: State<AppState>,
    path: Path<(String, String)>,
) -> Result<Json<BatchObject>, ApiError> {
    retrieve_batch(state, path).await
}

pub async fn list_batch_files(
    State(state): State<AppState>,
    Path((id, batch_id)): Path<(String, String)>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<VectorStoreFileObject>>, ApiError> {
    let kb = state.knowledge()?;
    let q = query(q)?;
    let window = q.window(20, 100)?;
    let status = status_filter(q.filter.as_deref())?;
    let batch = recall(&id, &batch_id)?;
    let (files, has_more) = blocking(move || {
        let c = kb.store().collection(&id)?;
        let mut rows = Vec::new();
        for file_id in &batch.file_ids {
            if let Some(row) = kb.store().collection_file(c.id, file_id)? {
                if status.as_deref().is_none_or(|s| s == row.status) {
                    rows.push(row);
                }
            }
        }
        if window.descending {
            rows.reverse();
        }
        let (page, has_more) = window_slice(rows, &window, |r| r.file_id.as_str())?;
        let files = page
            .into_iter()
            .map(|row| file_object(&kb, &c, row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((files, has_more))
    })
    .await?;
    Ok(Json(Page::new(files, has_more, |f| f.id.as_str())))
}
