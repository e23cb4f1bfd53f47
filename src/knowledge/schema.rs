//! The SQLite schema of the knowledge store and its migrations.
//!
//! SQLite is the source of truth: every chunk keeps its text and its embedding here, so the
//! vector index beside the database can always be rebuilt from it. Depends on rusqlite only.

use rusqlite::Connection;

use super::error::Result;

/// Bumped with each migration; stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 2;

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

/// Keyword search moved to an index derived in memory (`bm25`): the FTS5 table only cost
/// ingest time and disk. A collection's document and chunk counts are kept by triggers in the
/// same transaction as each write, since counting them on every search cost milliseconds.
const V2: &str = r#"
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;

ALTER TABLE collections ADD COLUMN num_documents INTEGER NOT NULL DEFAULT 0;
ALTER TABLE collections ADD COLUMN num_chunks INTEGER NOT NULL DEFAULT 0;
UPDATE collections SET
    num_documents = (SELECT COUNT(*) FROM documents d WHERE d.collection_id = collections.id),
    num_chunks = (SELECT COUNT(*) FROM chunks k WHERE k.collection_id = collections.id);
CREATE TRIGGER documents_counted AFTER INSERT ON documents BEGIN
    UPDATE collections SET num_documents = num_documents + 1 WHERE id = new.collection_id;
END;
CREATE TRIGGER documents_uncounted AFTER DELETE ON documents BEGIN
    UPDATE collections SET num_documents = num_documents - 1 WHERE id = old.collection_id;
END;
CREATE TRIGGER chunks_counted AFTER INSERT ON chunks BEGIN
    UPDATE collections SET num_chunks = num_chunks + 1 WHERE id = new.collection_id;
END;
CREATE TRIGGER chunks_uncounted AFTER DELETE ON chunks BEGIN
    UPDATE collections SET num_chunks = num_chunks - 1 WHERE id = old.collection_id;
END;
"#;

/// Every migration in order: entry `i` takes a database from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2];

pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT num_documents, num_chunks FROM collections WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn a_version_one_store_loses_its_fts_table_and_keeps_counts() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let document = "INSERT INTO documents (collection_id, source, source_type, title, content,
                 content_hash, created_at, updated_at) VALUES (1, ?, 'text', 't', 'x', 'h', 0, 0)";
        let chunk = "INSERT INTO chunks (document_id, collection_id, position, heading_path, text,
                 token_count, char_start, char_end, embedding) VALUES (?, 1, 0, '', 'x', 1, 0, 1, x'')";
        conn.execute(
            "INSERT INTO collections (name, embedding_model, dimension, quantization,
                 chunk_tokens, chunk_overlap, created_at) VALUES ('c', 'm', 2, 'f32', 64, 8, 0)",
            [],
        )
        .unwrap();
        conn.execute(document, ["a"]).unwrap();
        conn.execute(chunk, [1]).unwrap();
        conn.execute(chunk, [1]).unwrap();

        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let fts: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'chunks_fts%' OR name IN ('chunks_ai', 'chunks_ad')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(fts, 0, "no FTS table or trigger is left");
        assert_eq!(counts(&conn), (1, 2), "counted at migration");

        conn.execute(document, ["b"]).unwrap();
        conn.execute(chunk, [2]).unwrap();
        assert_eq!(counts(&conn), (2, 3));
        // Deleting a document cascades to its chunks, and the cascade is counted too.
        conn.execute("DELETE FROM documents WHERE id = 1", [])
            .unwrap();
        assert_eq!(counts(&conn), (1, 1));
        migrate(&mut conn).unwrap();
        assert_eq!(counts(&conn), (1, 1), "a second open changes nothing");
    }
}
