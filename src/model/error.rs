//! The one error type of the `model` module: loading, validation and forward failures.
//!
//! Every variant that comes from a file names the file and, where there is one, the field or
//! tensor, so that the message alone tells an operator what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
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
    #[error("{path}: field `{field}`: {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{path}: unknown model_type `{model_type}`; supported: {supported}")]
    UnknownModelType {
        path: PathBuf,
        model_type: String,
        supported: String,
    },
    #[error("{path}: not a valid safetensors file: {problem}")]
    Safetensors { path: PathBuf, problem: String },
    #[error("{dir}: tensor `{name}` is missing from the weights")]
    MissingTensor { dir: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16")]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{dir}: no model weights found (expected model.safetensors, model.safetensors.index.json or *.safetensors)")]
    NoWeights { dir: PathBuf },
    #[error("model `{model}` not found: {detail}")]
    NotFound { model: String, detail: String },
    #[error("invalid forward batch: {0}")]
    Batch(String),
    #[error("KV cache: {0}")]
    KvCache(String),
    #[error("device: {0}")]
    Device(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
