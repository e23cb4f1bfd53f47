//! Uploaded files and their attachment to collections, as stored: the `files` and
//! `collection_files` tables and their records. An attached file's documents are stored under
//! the source `file:<file id>` (see `attach`).
//!
//! Owns every SQL statement on those two tables. Lists page by rowid, which SQLite hands out
//! increasing, so pages follow creation order. Must not depend on the API layer.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{KnowledgeError, Result};
use super::store::{now, Store};

/// An uploaded file.
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: u64,
    pub sha256: String,
    pub created_at: i64,
}

/// A file attached to a collection, with how its ingestion went.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionFile {
    pub collection_id: i64,
    pub file_id: String,
    /// `in_progress`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `{code, message}` when the status is `failed`.
    pub last_error: Option<Value>,
    pub attributes: Map<String, Value>,
    pub created_at: i64,
}

/// Attached files of a collection by status.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FileCounts {
    pub in_progress: usize,
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub total: usize,
}

/// One page of a list, in creation order or its reverse. `after` and `before` are ids of
/// items in the same list; the page holds the items strictly between them.
#[derive(Debug, Clone)]
pub struct ListWindow {
    pub limit: usize,
    pub after: Option<String>,
    pub before: Option<String>,
    pub descending: bool,
}

fn file_row(r: &Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        id: r.get(0)?,
        filename: r.get(1)?,
        purpose: r.get(2)?,
        bytes: r.get::<_, i64>(3)?.max(0) as u64,
        sha256: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const FILE_SELECT: &str = "SELECT id, filename, purpose, bytes, sha256, created_at FROM files";

fn collection_file_row(r: &Row<'_>) -> rusqlite::Result<CollectionFile> {
    let last_error: Option<String> = r.get(3)?;
    let attributes: String = r.get(4)?;
    Ok(CollectionFile {
        collection_id: r.get(0)?,
        file_id: r.get(1)?,
        status: r.get(2)?,
        last_error: last_error.and_then(|t| serde_json::from_str(&t).ok()),
        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
        created_at: r.get(5)?,
    })
}

const COLLECTION_FILE_SELECT: &str = "SELECT collection_id, file_id, status, last_error,
    attributes, created_at FROM collection_files";

/// The row order of a cursor, or a clear error when the cursor names no item of the list.
fn cursor_rowid(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    field: &str,
    id: &str,
) -> Result<i64> {
    conn.query_row(sql, args, |r| r.get(0))
        .optional()?
        .ok_or_else(|| KnowledgeError::InvalidArgument {
            field: field.into(),
            problem: format!("`{id}` is not an item of this list"),
        })
}

/// One page of `select` (a query ending in its WHERE conditions, with their arguments): the
/// window's cursors (ids resolved to rowids by `lookup`, a query whose last parameter is the
/// id, with the arguments before it), its order and limit, and whether more rows follow.
fn page<T>(
    conn: &Connection,
    (mut sql, mut args): (String, Vec<SqlValue>),
    (lookup, lookup_args): (&str, Vec<SqlValue>),
    window: &ListWindow,
    row: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<(Vec<T>, bool)> {
    let (after_sql, before_sql, order) = window_sql(window);
    for (cursor, field, condition) in [
        (window.after.as_deref(), "after", after_sql),
        (window.before.as_deref(), "before", before_sql),
    ] {
        if let Some(id) = cursor {
            let mut key = lookup_args.clone();
            key.push(id.to_string().into());
            let rowid = cursor_rowid(conn, lookup, params_from_iter(key), field, id)?;
            sql.push_str(&format!(" AND {condition}"));
            args.push(rowid.into());
        }
    }
    sql.push_str(&format!(" ORDER BY rowid {order} LIMIT ?"));
    args.push((window.limit as i64 + 1).into());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), row)?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let more = out.len() > window.limit;
    out.truncate(window.limit);
    Ok((out, more))
}

/// `AND` conditions on `rowid` for a window's cursors, and the order to list in. Rows are
/// listed by rowid: SQLite hands them out increasing, so it is creation order.
fn window_sql(window: &ListWindow) -> (&'static str, &'static str, &'static str) {
    if window.descending {
        ("rowid < ?", "rowid > ?", "DESC")
    } else {
        ("rowid > ?", "rowid < ?", "ASC")
    }
}

impl Store {
    pub fn insert_file(&self, f: &FileRecord) -> Result<()> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO files (id, filename, purpose, bytes, sha256, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    f.id,
                    f.filename,
                    f.purpose,
                    f.bytes as i64,
                    f.sha256,
                    f.created_at
                ],
            )?;
            Ok(())
        })
    }

    pub fn file(&self, id: &str) -> Result<FileRecord> {
        self.read(|conn| {
            conn.query_row(&format!("{FILE_SELECT} WHERE id = ?"), [id], file_row)
                .optional()?
                .ok_or_else(|| KnowledgeError::NoSuchFile(id.into()))
        })
    }

    /// One page of the files (with `purpose` only, when given) and whether more follow.
    pub fn files(
        &self,
        purpose: Option<&str>,
        window: &ListWindow,
    ) -> Result<(Vec<FileRecord>, bool)> {
        self.read(|conn| {
            let mut sql = format!("{FILE_SELECT} WHERE 1 = 1");
            let mut args: Vec<SqlValue> = Vec::new();
            if let Some(p) = purpose {
                sql.push_str(" AND purpose = ?");
                args.push(p.to_string().into());
            }
            let lookup = ("SELECT rowid FROM files WHERE id = ?", Vec::new());
            page(conn, (sql, args), lookup, window, file_row)
        })
    }

    /// Deletes a file's row and its attachment rows (not the documents ingested from it).
    pub fn delete_file(&self, id: &str) -> Result<FileRecord> {
        let record = self.file(id)?;
        self.write(|conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM collection_files WHERE file_id = ?", [id])?;
            tx.execute("DELETE FROM files WHERE id = ?", [id])?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(record)
    }

    /// The names of the collections a file is attached to.
    pub fn file_attachments(&self, file_id: &str) -> Result<Vec<String>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT c.name FROM collection_files f JOIN collections c ON c.id = f.collection_id
                 WHERE f.file_id = ? ORDER BY c.name",
            )?;
            let rows = stmt.query_map([file_id], |r| r.get::<_, String>(0))?;
            let out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(out)
        })
    }

    /// Records an attachment (or its new status); the first attachment's time is kept.
    pub fn set_collection_file(
        &self,
        collection_id: i64,
        file_id: &str,
        status: &str,
        last_error: Option<&Value>,
        attributes: &Map<String, Value>,
    ) -> Result<CollectionFile> {
        self.write(|conn| {
            conn.execute(
                "INSERT INTO collection_files
                    (collection_id, file_id, status, last_error, attributes, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (collection_id, file_id) DO UPDATE SET
                    status = excluded.status, last_error = excluded.last_error,
                    attributes = excluded.attributes",
                params![
                    collection_id,
                    file_id,
                    status,
                    last_error.map(|v| v.to_string()),
                    Value::Object(attributes.clone()).to_string(),
                    now()
                ],
            )?;
            let row = conn.query_row(
                &format!("{COLLECTION_FILE_SELECT} WHERE collection_id = ? AND file_id = ?"),
                params![collection_id, file_id],
                collection_file_row,
            )?;
            Ok(row)
        })
    }

    pub fn collection_file(
        &self,
        collection_id: i64,
        file_id: &str,
    ) -> Result<Option<CollectionFile>> {
        self.read(|conn| {
            let row = conn
                .query_row(
                    &format!("{COLLECTION_FILE_SELECT} WHERE collection_id = ? AND file_id = ?"),
                    params![collection_id, file_id],
                    collection_file_row,
                )
                .optional()?;
            Ok(row)
        })
    }

    /// One page of a collection's attached files (with `status` only, when given) and
    /// whether more follow.
    pub fn collection_files(
        &self,
        collection_id: i64,
        status: Option<&str>,
        window: &ListWindow,
    ) -> Result<(Vec<CollectionFile>, bool)> {
        self.read(|conn| {
            let mut sql = format!("{COLLECTION_FILE_SELECT} WHERE collection_id = ?");
            let mut args: Vec<SqlValue> = vec![collection_id.into()];
            if let Some(s) = status {
                sql.push_str(" AND status = ?");
                args.push(s.to_string().into());
            }
            let lookup = (
                "SELECT rowid FROM collection_files WHERE collection_id = ? AND file_id = ?",
                vec![collection_id.into()],
            );
            page(conn, (sql, args), lookup, window, collection_file_row)
        })
    }

    /// Removes an attachment row; false when there was none.
    pub fn delete_collection_file(&self, collection_id: i64, file_id: &str) -> Result<bool> {
        self.write(|conn| {
            let n = conn.execute(
                "DELETE FROM collection_files WHERE collection_id = ? AND file_id = ?",
                params![collection_id, file_id],
            )?;
            Ok(n > 0)
        })
    }

    pub fn collection_file_counts(&self, collection_id: i64) -> Result<FileCounts> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT status, COUNT(*) FROM collection_files WHERE collection_id = ?
                 GROUP BY status",
            )?;
            let rows = stmt.query_map([collection_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut counts = FileCounts::default();
            for row in rows {
                let (status, n) = row?;
                let n = n.max(0) as usize;
                match status.as_str() {
                    "in_progress" => counts.in_progress += n,
                    "completed" => counts.completed += n,
                    "failed" => counts.failed += n,
                    _ => counts.cancelled += n,
                }
                counts.total += n;
            }
            Ok(counts)
        })
    }

    /// Bytes of chunk text stored in a collection.
    pub fn collection_usage_bytes(&self, collection_id: i64) -> Result<u64> {
        self.read(|conn| {
            let n: i64 = conn.query_row(
                "SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM chunks
                 WHERE collection_id = ?",
                [collection_id],
                |r| r.get(0),
            )?;
            Ok(n.max(0) as u64)
        })
    }

    /// Bytes of chunk text stored from one source of a collection.
    pub fn source_usage_bytes(&self, collection_id: i64, source: &str) -> Result<u64> {
        self.read(|conn| {
            let n: i64 = conn.query_row(
                "SELECT COALESCE(SUM(LENGTH(CAST(k.text AS BLOB))), 0)
                 FROM chunks k JOIN documents d ON d.id = k.document_id
                 WHERE d.collection_id = ? AND d.source = ?",
                params![collection_id, source],
                |r| r.get(0),
            )?;
            Ok(n.max(0) as u64)
        })
    }
}
