//! The SQLite knowledge store: one writer connection and a pool of readers over one WAL
//! database, so searches run while an ingest writes.
//!
//! Owns every SQL statement outside the schema. Each document is written in one transaction
//! (its row, tags, chunks, and the collection's generation), so a killed
//! process leaves every document either whole or absent. Depends on rusqlite and `types`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::error::{KnowledgeError, Result};
use super::schema;
use super::types::{ChunkRecord, Collection, DocumentRecord, NewCollection, NewDocument};

pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// A document already stored: what change detection compares against.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    pub id: i64,
    pub source: String,
    pub doc_key: String,
    pub content_hash: String,
}

/// What a committed document write changed in the vector index.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub document_id: i64,
    pub removed_chunks: Vec<i64>,
    pub added_chunks: Vec<(i64, Vec<f32>)>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn embedding_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn blob_to_embedding(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn json_map(text: String) -> Map<String, Value> {
    serde_json::from_str(&text).unwrap_or_default()
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| KnowledgeError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut writer = Connection::open(path)?;
        schema::configure(&writer)?;
        schema::migrate(&mut writer)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a pooled read connection.
    pub fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path)?;
                schema::configure(&c)?;
                c
            }
        };
        let out = f(&conn);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        out
    }

    pub fn write<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R>) -> Result<R> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    pub fn create_collection(&self, c: &NewCollection) -> Result<Collection> {
        self.write(|conn| {
            let exists: Option<i64> = conn
                .query_row(
                    "SELECT id FROM collections WHERE name = ?",
                    [&c.name],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(KnowledgeError::CollectionExists(c.name.clone()));
            }
            conn.execute(
                "INSERT INTO collections (name, embedding_model, embedding_path, dimension,
                    quantization, chunk_tokens, chunk_overlap, metadata, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    c.name,
                    c.embedding_model,
                    c.embedding_path,
                    c.dimension as i64,
                    c.quantization.as_str(),
                    c.chunk_tokens as i64,
                    c.chunk_overlap as i64,
                    Value::Object(c.metadata.clone()).to_string(),
                    now()
                ],
            )?;
            Ok(())
        })?;
        self.collection(&c.name)
    }

    pub fn collection(&self, name: &str) -> Result<Collection> {
        self.read(|conn| {
            conn.query_row(
                &format!("{COLLECTION_SELECT} WHERE c.name = ?"),
                [name],
                collection_row,
            )
            .optional()?
            .ok_or_else(|| KnowledgeError::NoSuchCollection(name.into()))
        })
    }

    pub fn collections(&self) -> Result<Vec<Collection>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{COLLECTION_SELECT} ORDER BY c.name"))?;
            let rows = stmt.query_map([], collection_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn delete_collection(&self, name: &str) -> Result<Collection> {
        let c = self.collection(name)?;
        self.write(|conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM collections WHERE id = ?", [c.id])?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(c)
    }

    pub fn set_collection_metadata(&self, id: i64, metadata: &Map<String, Value>) -> Result<()> {
        self.write(|conn| {
            conn.execute(
                "UPDATE collections SET metadata = ? WHERE id = ?",
                params![Value::Object(metadata.clone()).to_string(), id],
            )?;
            Ok(())
        })
    }

    /// Every stored document of a collection whose source is `source` or lies under it
    /// (`source/…`): what a re-ingest of that path compares against.
    pub fn documents_under(&self, collection_id: i64, source: &str) -> Result<Vec<StoredDocument>> {
        let prefix = format!("{}/%", like_escape(source.trim_end_matches('/')));
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, source, doc_key, content_hash FROM documents
                 WHERE collection_id = ? AND (source = ? OR source LIKE ? ESCAPE '\\')",
            )?;
            let rows = stmt.query_map(params![collection_id, source, prefix], |r| {
                Ok(StoredDocument {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    doc_key: r.get(2)?,
                    content_hash: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Writes (or replaces) one document with its chunks, in one transaction.
    pub fn upsert_document(&self, collection_id: i64, doc: &NewDocument) -> Result<WriteOutcome> {
        self.write(|conn| {
            let tx = conn.transaction()?;
            let existing: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT id, version FROM documents
                     WHERE collection_id = ? AND source = ? AND doc_key = ?",
                    params![collection_id, doc.source, doc.doc_key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let mut out = WriteOutcome::default();
            let ts = now();
            let metadata = Value::Object(doc.metadata.clone()).to_string();
            let document_id = if let Some((id, version)) = existing {
                out.removed_chunks = chunk_ids_of(&tx, id)?;
                tx.execute("DELETE FROM chunks WHERE document_id = ?", [id])?;
                tx.execute("DELETE FROM document_tags WHERE document_id = ?", [id])?;
                tx.execute(
                    "UPDATE documents SET source_type = ?, title = ?, url = ?, language = ?,
                        content = ?, content_hash = ?, metadata = ?, version = ?, updated_at = ?
                     WHERE id = ?",
                    params![
                        doc.source_type,
                        doc.title,
                        doc.url,
                        doc.language,
                        doc.content,
                        doc.content_hash,
                        metadata,
                        version + 1,
                        ts,
                        id
                    ],
                )?;
                id
            } else {
                tx.execute(
                    "INSERT INTO documents (collection_id, source, doc_key, source_type, title,
                        url, language, content, content_hash, metadata, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    params![
                        collection_id,
                        doc.source,
                        doc.doc_key,
                        doc.source_type,
                        doc.title,
                        doc.url,
                        doc.language,
                        doc.content,
                        doc.content_hash,
                        metadata,
                        ts,
                        ts
                    ],
                )?;
                tx.last_insert_rowid()
            };
            for tag in &doc.tags {
                tx.execute(
                    "INSERT OR IGNORE INTO document_tags (document_id, tag) VALUES (?, ?)",
                    params![document_id, tag],
                )?;
            }
            {
                let mut insert = tx.prepare(
                    "INSERT INTO chunks (document_id, collection_id, position, heading_path,
                        text, token_count, char_start, char_end, embedding)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )?;
                for c in &doc.chunks {
                    insert.execute(params![
                        document_id,
                        collection_id,
                        c.position as i64,
                        c.heading_path,
                        c.text,
                        c.token_count as i64,
                        c.char_start as i64,
                        c.char_end as i64,
                        embedding_to_blob(&c.embedding)
                    ])?;
                    out.added_chunks
                        .push((tx.last_insert_rowid(), c.embedding.clone()));
                }
            }
            bump_generation(&tx, collection_id)?;
            tx.commit()?;
            out.document_id = document_id;
            Ok(out)
        })
    }

    /// Deletes documents; returns the ids of the chunks that went with them.
    pub fn delete_documents(&self, collection_id: i64, ids: &[i64]) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|conn| {
            let tx = conn.transaction()?;
            let mut removed = Vec::new();
            for &id in ids {
                let owned: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM documents WHERE id = ? AND collection_id = ?",
                        params![id, collection_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if owned.is_none() {
                    continue;
                }
                removed.extend(chunk_ids_of(&tx, id)?);
                tx.execute("DELETE FROM chunks WHERE document_id = ?", [id])?;
                tx.execute(
                    "DELETE FROM documents WHERE id = ? AND collection_id = ?",
                    params![id, collection_id],
                )?;
            }
            bump_generation(&tx, collection_id)?;
            tx.commit()?;
            Ok(removed)
        })
    }

    /// Every document's title, source or URL and full text, in id order: what a
    /// full-context prompt holds.
    pub fn collection_texts(&self, collection_id: i64) -> Result<Vec<(String, String, String)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT title, COALESCE(url, source), content FROM documents
                 WHERE collection_id = ? ORDER BY id",
            )?;
            let rows =
                stmt.query_map([collection_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The estimated prompt tokens of `collection_texts`: each document's title and content
    /// bytes divided by `bytes_per_token`, rounded up per document.
    pub fn collection_text_tokens(
        &self,
        collection_id: i64,
        bytes_per_token: usize,
    ) -> Result<usize> {
        let per = bytes_per_token.max(1) as i64;
        self.read(|conn| {
            let n: i64 = conn.query_row(
                "SELECT COALESCE(SUM((LENGTH(CAST(title AS BLOB)) + LENGTH(CAST(content AS BLOB))
                                      + ?2 - 1) / ?2), 0)
                 FROM documents WHERE collection_id = ?1",
                params![collection_id, per],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
    }

    pub fn documents(
        &self,
        collection: &Collection,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<DocumentRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "{DOCUMENT_SELECT} WHERE d.collection_id = ? ORDER BY d.id LIMIT ? OFFSET ?"
            ))?;
            let rows = stmt
                .query_map(params![collection.id, limit as i64, offset as i64], |r| {
                    document_row(r, &collection.name)
                })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn document(&self, collection: &Collection, id: i64) -> Result<DocumentRecord> {
        self.read(|conn| {
            conn.query_row(
                &format!("{DOCUMENT_SELECT} WHERE d.collection_id = ? AND d.id = ?"),
                params![collection.id, id],
                |r| document_row(r, &collection.name),
            )
            .optional()?
            .ok_or(KnowledgeError::NoSuchDocument(id))
        })
    }

    /// The document's extracted text, as chunk spans index it.
    pub fn document_content(&self, id: i64) -> Result<String> {
        self.read(|conn| {
            conn.query_row("SELECT content FROM documents WHERE id = ?", [id], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or(KnowledgeError::NoSuchDocument(id))
        })
    }

    pub fn chunk_count(&self, collection_id: i64) -> Result<usize> {
        self.read(|conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM chunks WHERE collection_id = ?",
                [collection_id],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
    }

    /// Streams every (chunk id, embedding) of a collection to `f`, for index rebuilds.
    pub fn for_each_embedding(
        &self,
        collection_id: i64,
        mut f: impl FnMut(i64, Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT id, embedding FROM chunks WHERE collection_id = ? ORDER BY id")?;
            let mut rows = stmt.query([collection_id])?;
            while let Some(r) = rows.next()? {
                let blob: Vec<u8> = r.get(1)?;
                f(r.get(0)?, blob_to_embedding(&blob))?;
            }
            Ok(())
        })
    }

    /// Every chunk's heading path and text, in id order: what the keyword index is built from.
    pub fn for_each_chunk_text(
        &self,
        collection_id: i64,
        mut f: impl FnMut(i64, &str, &str),
    ) -> Result<()> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, heading_path, text FROM chunks WHERE collection_id = ? ORDER BY id",
            )?;
            let mut rows = stmt.query([collection_id])?;
            while let Some(r) = rows.next()? {
                f(
                    r.get(0)?,
                    r.get_ref(1)?.as_str().unwrap_or(""),
                    r.get_ref(2)?.as_str().unwrap_or(""),
                );
            }
            Ok(())
        })
    }

    /// Chunks by id, in the order given, with their citation fields.
    pub fn chunks(&self, ids: &[i64]) -> Result<Vec<ChunkRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_id: HashMap<i64, ChunkRecord> = self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT k.id, k.document_id, c.name, d.title, d.source, d.url, d.source_type,
                        d.language, k.heading_path, k.text, k.position, k.char_start, k.char_end,
                        k.token_count, d.metadata,
                        (SELECT group_concat(tag, char(31)) FROM document_tags t
                          WHERE t.document_id = d.id)
                 FROM chunks k JOIN documents d ON d.id = k.document_id
                      JOIN collections c ON c.id = k.collection_id
                 WHERE k.id IN ({})",
                placeholders(ids.len())
            ))?;
            let rows = stmt.query_map(params_from_iter(ids), |r| {
                let tags: Option<String> = r.get(15)?;
                Ok(ChunkRecord {
                    chunk_id: r.get(0)?,
                    document_id: r.get(1)?,
                    collection: r.get(2)?,
                    title: r.get(3)?,
                    source: r.get(4)?,
                    url: r.get(5)?,
                    source_type: r.get(6)?,
                    language: r.get(7)?,
                    heading_path: r.get(8)?,
                    text: r.get(9)?,
                    position: r.get::<_, i64>(10)? as usize,
                    char_start: r.get::<_, i64>(11)? as usize,
                    char_end: r.get::<_, i64>(12)? as usize,
                    token_count: r.get::<_, i64>(13)? as usize,
                    metadata: json_map(r.get(14)?),
                    tags: split_tags(tags),
                })
            })?;
            let mut map = HashMap::new();
            for row in rows {
                let row = row?;
                map.insert(row.chunk_id, row);
            }
            Ok(map)
        })?;
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn split_tags(tags: Option<String>) -> Vec<String> {
    let mut v: Vec<String> = tags
        .map(|t| t.split('\u{1f}').map(str::to_string).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn chunk_ids_of(conn: &Connection, document_id: i64) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT id FROM chunks WHERE document_id = ?")?;
    let rows = stmt.query_map([document_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
}

fn bump_generation(conn: &Connection, collection_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE collections SET generation = generation + 1 WHERE id = ?",
        [collection_id],
    )?;
    Ok(())
}

const COLLECTION_SELECT: &str = "SELECT c.id, c.name, c.embedding_model, c.embedding_path,
    c.dimension, c.quantization, c.chunk_tokens, c.chunk_overlap, c.metadata, c.generation,
    c.created_at, c.num_documents, c.num_chunks
    FROM collections c";

fn collection_row(r: &Row<'_>) -> rusqlite::Result<Collection> {
    let quantization: String = r.get(5)?;
    Ok(Collection {
        id: r.get(0)?,
        name: r.get(1)?,
        embedding_model: r.get(2)?,
        embedding_path: r.get(3)?,
        dimension: r.get::<_, i64>(4)? as usize,
        quantization: quantization.parse().unwrap_or_default(),
        chunk_tokens: r.get::<_, i64>(6)? as usize,
        chunk_overlap: r.get::<_, i64>(7)? as usize,
        metadata: json_map(r.get(8)?),
        generation: r.get(9)?,
        created_at: r.get(10)?,
        num_documents: r.get::<_, i64>(11)? as usize,
        num_chunks: r.get::<_, i64>(12)? as usize,
    })
}

const DOCUMENT_SELECT: &str = "SELECT d.id, d.source, d.doc_key, d.source_type, d.title, d.url,
    d.language, d.content_hash, d.metadata, d.version, d.created_at, d.updated_at,
    (SELECT COUNT(*) FROM chunks k WHERE k.document_id = d.id),
    (SELECT group_concat(tag, char(31)) FROM document_tags t WHERE t.document_id = d.id)
    FROM documents d";

fn document_row(r: &Row<'_>, collection: &str) -> rusqlite::Result<DocumentRecord> {
    Ok(DocumentRecord {
        id: r.get(0)?,
        collection: collection.to_string(),
        source: r.get(1)?,
        doc_key: r.get(2)?,
        source_type: r.get(3)?,
        title: r.get(4)?,
        url: r.get(5)?,
        language: r.get(6)?,
        content_hash: r.get(7)?,
        metadata: json_map(r.get(8)?),
        version: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        num_chunks: r.get::<_, i64>(12)? as usize,
        tags: split_tags(r.get(13)?),
    })
}
