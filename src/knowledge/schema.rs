//! The SQLite schema of the knowledge store and its migrations.
//!
//! SQLite is the source of truth: every chunk keeps its text and its embedding here, so the
//! vector index beside the database can always be rebuilt from it. Depends on rusqlite only.

use rusqlite::Connection;

use super::error::Result;

/// Bumped with each migration; stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

const V1: &str = r#"
CREATE TABLE collections (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    embedding_model TEXT NOT NULL,
    embedding_path  TEXT,
    dimension       INTEGER NOT NULL CHECK (dimension > 0),
    quantization    TEXT NOT NULL,
    chunk_tokens    INTEGER NOT NULL,
    chunk_overlap   INTEGER NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    generation      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

CREATE TABLE documents (
    id            INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    source        TEXT NOT NULL,
    doc_key       TEXT NOT NULL DEFAULT '',
    source_type   TEXT NOT NULL,
    title         TEXT NOT NULL,
    url           TEXT,
    language      TEXT,
    content       TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (collection_id, source, doc_key)
);
CREATE INDEX documents_by_source ON documents(collection_id, source);

CREATE TABLE document_tags (
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tag         TEXT NOT NULL,
    PRIMARY KEY (document_id, tag)
);
CREATE INDEX document_tags_by_tag ON document_tags(tag);

CREATE TABLE chunks (
    id            INTEGER PRIMARY KEY,
    document_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    heading_path  TEXT NOT NULL,
    text          TEXT NOT NULL,
    token_count   INTEGER NOT NULL,
    char_start    INTEGER NOT NULL,
    char_end      INTEGER NOT NULL,
    embedding     BLOB NOT NULL
);
CREATE INDEX chunks_by_document ON chunks(document_id);
CREATE INDEX chunks_by_collection ON chunks(collection_id);

CREATE VIRTUAL TABLE chunks_fts USING fts5(
    heading_path, text, content='chunks', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, heading_path, text) VALUES (new.id, new.heading_path, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, heading_path, text)
        VALUES ('delete', old.id, old.heading_path, old.text);
END;

CREATE TABLE files (
    id         TEXT PRIMARY KEY,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- An uploaded file attached to a collection (OpenAI's vector-store file): its documents are
-- stored with source 'file:<file_id>'.
CREATE TABLE collection_files (
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    file_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    last_error    TEXT,
    attributes    TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (collection_id, file_id)
);
"#;

/// Opens-time setup for every connection: WAL so readers never wait on the writer, foreign
/// keys for the cascades, and a busy timeout so a second process waits instead of failing.
pub fn configure(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(V1)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
    }
    Ok(())
}
