//! The one error type of the `knowledge` module.

use std::path::PathBuf;

use super::formats::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("knowledge store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("collection `{0}` does not exist")]
    NoSuchCollection(String),
    #[error("collection `{0}` already exists")]
    CollectionExists(String),
    #[error("document {0} does not exist")]
    NoSuchDocument(i64),
    #[error("file `{0}` does not exist")]
    NoSuchFile(String),
    #[error("invalid collection name `{name}`: {problem}")]
    InvalidName { name: String, problem: String },
    #[error(
        "collection `{collection}` was built with embedding model `{model}`, which is not \
         loaded; start with --embedding-model pointing at that model's folder"
    )]
    EmbedderMissing { collection: String, model: String },
    #[error(
        "embedding model `{model}` gives {actual}-dimensional vectors, but collection \
         `{collection}` holds {expected}-dimensional ones"
    )]
    DimensionMismatch {
        collection: String,
        model: String,
        expected: usize,
        actual: usize,
    },
    #[error("embedding model `{model}`: {message}")]
    Embedding { model: String, message: String },
    #[error("vector index of `{collection}`: {message}")]
    Index { collection: String, message: String },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("invalid value for `{field}`: {problem}")]
    InvalidArgument { field: String, problem: String },
    #[error(
        "{path} is in use by another Enclave process (a running server?); stop it, or make \
         the change through its HTTP admin routes"
    )]
    Locked { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, KnowledgeError>;
