//! The one error type of the `embedding` module: a model folder that cannot be used, and input
//! that cannot be embedded.

use std::path::PathBuf;

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{dir}: not a sentence-transformers folder: {problem}")]
    Layout { dir: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Unsupported { path: PathBuf, problem: String },
    #[error("{path}: cannot load the tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("cannot tokenize input {index}: {message}")]
    Tokenize { index: usize, message: String },
    #[error("input {index}: {problem}")]
    Input { index: usize, problem: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for EmbeddingError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(ModelError::Candle(e))
    }
}

pub type Result<T> = std::result::Result<T, EmbeddingError>;
