//! What the knowledge base does with uploaded files: keeps their bytes under
//! `<kb dir>/files/<file id>`, attaches them to collections (ingesting them, their attributes
//! becoming tags) and detaches them (removing what was ingested).
//!
//! Owns two rules: a file's bytes are on disk whole (written to a temporary name, then renamed)
//! before its row exists, so a listed file can always be read; and an attached file's documents
//! are stored under the source `file:<file id>`, so detaching removes exactly them. Ingestion
//! goes through `KnowledgeBase::ingest_bytes` like any other upload. Must not depend on the
//! API layer.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::error::{KnowledgeError, Result};
use super::files::{CollectionFile, FileRecord};
use super::ingest::IngestOptions;
use super::kb::KnowledgeBase;
use super::store::now;

/// The source an attached file's documents are stored under.
pub fn file_source(file_id: &str) -> String {
    format!("file:{file_id}")
}

/// `prefix` and 24 random hex digits: unguessable enough that ids never collide in practice.
pub fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// The tag an attribute becomes on every document of its file (`team=billing`), so that
/// attribute filters are tag filters. Whole numbers read the same whether a client sent `1` or
/// `1.0`. Objects, arrays and null have no tag.
pub fn attribute_tag(key: &str, value: &Value) -> Option<String> {
    let rendered = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                format!("{}", f as i64)
            }
            _ => n.to_string(),
        },
        _ => return None,
    };
    Some(format!("{key}={rendered}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KnowledgeError + '_ {
    move |source| KnowledgeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl KnowledgeBase {
    fn files_dir(&self) -> PathBuf {
        self.dir().join("files")
    }

    /// Keeps an uploaded file under a new id.
    pub fn save_file(&self, filename: &str, purpose: &str, bytes: &[u8]) -> Result<FileRecord> {
        let record = FileRecord {
            id: random_id("file-"),
            filename: filename.into(),
            purpose: purpose.into(),
            bytes: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
            created_at: now(),
        };
        let dir = self.files_dir();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let path = dir.join(&record.id);
        let tmp = dir.join(format!(".{}.tmp", record.id));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error(&path)(e));
        }
        if let Err(e) = self.store.insert_file(&record) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(record)
    }

    /// The bytes of an uploaded file.
    pub fn read_file(&self, id: &str) -> Result<Vec<u8>> {
        self.store.file(id)?;
        let path = self.files_dir().join(id);
        std::fs::read(&path).map_err(io_error(&path))
    }

    /// Deletes an uploaded file, detaching it (and its documents) from every collection first.
    pub fn delete_file(&self, id: &str) -> Result<FileRecord> {
        self.store.file(id)?;
        for collection in self.store.file_attachments(id)? {
            self.detach_file(&collection, id)?;
        }
        let record = self.store.delete_file(id)?;
        let path = self.files_dir().join(id);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "cannot remove an uploaded file: {e}");
            }
        }
        Ok(record)
    }

    /// Ingests an uploaded file into a collection, its attributes becoming tags on its
    /// documents, and records the outcome. A file that cannot be parsed, or whose ingestion
    /// fails, is recorded as `failed` with the reason rather than returned as an error: the
    /// collection's other files are unaffected and the caller reads the status.
    pub fn attach_file(
        &self,
        collection: &str,
        file_id: &str,
        attributes: &Map<String, Value>,
    ) -> Result<CollectionFile> {
        let c = self.store.collection(collection)?;
        let file = self.store.file(file_id)?;
        self.store
            .set_collection_file(c.id, file_id, "in_progress", None, attributes)?;
        let options = IngestOptions {
            tags: attributes
                .iter()
                .filter_map(|(k, v)| attribute_tag(k, v))
                .collect(),
            ..Default::default()
        };
        let source = file_source(file_id);
        let outcome = self.read_file(file_id).and_then(|bytes| {
            self.ingest_bytes(collection, &source, &file.filename, &bytes, &options)
        });
        let (status, error) = match outcome {
            Ok(report) if report.errors.is_empty() => ("completed", None),
            Ok(report) => {
                let message = report
                    .errors
                    .iter()
                    .map(|(_, e)| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    "failed",
                    Some(json!({"code": "invalid_file", "message": message})),
                )
            }
            Err(e) => {
                tracing::warn!(
                    collection,
                    file_id,
                    "ingesting an attached file failed: {e}"
                );
                (
                    "failed",
                    Some(json!({"code": "server_error", "message": e.to_string()})),
                )
            }
        };
        self.store
            .set_collection_file(c.id, file_id, status, error.as_ref(), attributes)
    }

    /// Removes a file's documents from a collection, and the attachment; false when the file
    /// was not attached.
    pub fn detach_file(&self, collection: &str, file_id: &str) -> Result<bool> {
        let c = self.store.collection(collection)?;
        let source = file_source(file_id);
        let ids: Vec<i64> = self
            .store
            .documents_under(c.id, &source)?
            .into_iter()
            .filter(|d| d.source == source)
            .map(|d| d.id)
            .collect();
        self.remove_documents(collection, &ids)?;
        self.store.delete_collection_file(c.id, file_id)
    }

    /// The extracted text of each document ingested from an attached file, in store order.
    pub fn file_texts(&self, collection: &str, file_id: &str) -> Result<Vec<String>> {
        let c = self.store.collection(collection)?;
        let source = file_source(file_id);
        let mut ids: Vec<i64> = self
            .store
            .documents_under(c.id, &source)?
            .into_iter()
            .filter(|d| d.source == source)
            .map(|d| d.id)
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| self.store.document_content(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_tags_read_the_same_for_equal_values() {
        assert_eq!(
            attribute_tag("team", &json!("billing")).as_deref(),
            Some("team=billing")
        );
        assert_eq!(
            attribute_tag("n", &json!(1)),
            attribute_tag("n", &json!(1.0))
        );
        assert_eq!(attribute_tag("x", &json!(1.5)).as_deref(), Some("x=1.5"));
        assert_eq!(attribute_tag("b", &json!(true)).as_deref(), Some("b=true"));
        assert_eq!(attribute_tag("o", &json!({"a": 1})), None);
    }

    #[test]
    fn random_ids_have_the_prefix_and_24_hex_digits() {
        let id = random_id("file-");
        let rest = id.strip_prefix("file-").unwrap_or_default();
        assert_eq!(rest.len(), 24);
        assert!(rest.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
