//! OpenAI's Files API (`/v1/files`): uploads kept by the knowledge base for vector stores to
//! ingest, listed, read back and deleted.
//!
//! Owns the wire shape of a file object and the multipart upload; storage is `knowledge`'s.
//! Must not depend on the vector-store routes.

use axum::body::Bytes;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::kb_shared::{blocking, query, ListQuery, Page};
use super::state::AppState;
use crate::knowledge::FileRecord;

/// OpenAI lists up to 10,000 files a page.
const MAX_LIST: usize = 10_000;
const MAX_PURPOSE_CHARS: usize = 64;
const MAX_FILENAME_CHARS: usize = 255;

#[derive(Debug, Serialize)]
pub struct FileObject {
    pub id: String,
    pub object: &'static str,
    pub bytes: u64,
    pub created_at: i64,
    pub filename: String,
    pub purpose: String,
    /// Stored files are ready at once: ingestion happens when a vector store takes them.
    pub status: &'static str,
    pub expires_at: Option<i64>,
    pub status_details: Option<String>,
}

impl From<FileRecord> for FileObject {
    fn from(f: FileRecord) -> Self {
        Self {
            id: f.id,
            object: "file",
            bytes: f.bytes,
            created_at: f.created_at,
            filename: f.filename,
            purpose: f.purpose,
            status: "processed",
            expires_at: None,
            status_details: None,
        }
    }
}

fn multipart_error(e: MultipartError, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    ApiError::invalid(
        format!("could not read the multipart body: {}", e.body_text()),
        "file",
    )
}

/// Browsers may send a client-side path; only its last part names the file.
fn base_name(filename: &str) -> &str {
    filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(filename)
        .trim()
}

pub async fn upload(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<FileObject>, ApiError> {
    let kb = state.knowledge()?;
    let limit = state.inner.limits.max_body_bytes;
    let mut multipart = multipart.map_err(|_| {
        ApiError::invalid(
            "the body must be multipart/form-data with a `file` part and a `purpose` field",
            "file",
        )
    })?;
    let mut file: Option<(String, Bytes)> = None;
    let mut purpose: Option<String> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        let name = field.name().map(str::to_string);
        match name.as_deref() {
            Some("file") => {
                let filename = field.file_name().map(str::to_string).unwrap_or_default();
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, limit))?;
                file = Some((filename, bytes));
            }
            Some("purpose") => {
                purpose = Some(field.text().await.map_err(|e| multipart_error(e, limit))?);
            }
            // Other fields (`expires_after[...]`, say) are accepted and not used.
            _ => {}
        }
    }
    let Some((filename, bytes)) = file else {
        return Err(ApiError::invalid(
            "the multipart body has no `file` part",
            "file",
        ));
    };
    let filename = base_name(&filename).to_string();
    if filename.is_empty() || filename.chars().count() > MAX_FILENAME_CHARS {
        return Err(ApiError::invalid(
            format!("the `file` part needs a filename of 1 to {MAX_FILENAME_CHARS} characters"),
            "file",
        ));
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            format!("the file `{filename}` is empty"),
            "file",
        ));
    }
    let purpose = purpose.map(|p| p.trim().to_string()).unwrap_or_default();
    if purpose.is_empty() || purpose.chars().count() > MAX_PURPOSE_CHARS {
        return Err(ApiError::invalid(
            format!("`purpose` is required, 1 to {MAX_PURPOSE_CHARS} characters (e.g. assistants)"),
            "purpose",
        ));
    }
    let record = blocking(move || Ok(kb.save_file(&filename, &purpose, &bytes)?)).await?;
    Ok(Json(record.into()))
}

pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<FileObject>>, ApiError> {
    let kb = state.knowledge()?;
    let q = query(q)?;
    let window = q.window(MAX_LIST, MAX_LIST)?;
    let purpose = q.purpose.filter(|p| !p.is_empty());
    let (files, has_more) =
        blocking(move || Ok(kb.store().files(purpose.as_deref(), &window)?)).await?;
    let data: Vec<FileObject> = files.into_iter().map(FileObject::from).collect();
    Ok(Json(Page::new(data, has_more, |f| f.id.as_str())))
}

pub async fn retrieve(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> Result<Json<FileObject>, ApiError> {
    let kb = state.knowledge()?;
    let record = blocking(move || Ok(kb.store().file(&file_id)?)).await?;
    Ok(Json(record.into()))
}

/// Deleting a file also takes it, and what was ingested from it, out of every vector store.
pub async fn delete(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge()?;
    let record = blocking(move || Ok(kb.delete_file(&file_id)?)).await?;
    Ok(Json(
        json!({"id": record.id, "object": "file", "deleted": true}),
    ))
}

pub async fn content(
    State(state): State<AppState>,
    Path(file_id): Path<String>,
) -> Result<Response, ApiError> {
    let kb = state.knowledge()?;
    let bytes = blocking(move || Ok(kb.read_file(&file_id)?)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_part_of_a_client_path_names_the_file() {
        assert_eq!(base_name("C:\\Users\\me\\notes.md"), "notes.md");
        assert_eq!(base_name("a/b/faq.txt"), "faq.txt");
        assert_eq!(base_name("plain.pdf"), "plain.pdf");
        assert_eq!(base_name("dir/"), "");
    }
}
