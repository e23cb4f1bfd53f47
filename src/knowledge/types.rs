//! Plain records of the knowledge store: collections, documents, chunks and search filters.
//! Data only; depends on serde.

use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::KnowledgeError;

/// How vectors are stored in a collection's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    #[default]
    F32,
    F16,
    I8,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::I8 => "i8",
        }
    }
}

impl FromStr for Quantization {
    type Err = KnowledgeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "i8" => Ok(Self::I8),
            other => Err(KnowledgeError::InvalidArgument {
                field: "quantization".into(),
                problem: format!("`{other}`; expected f32, f16 or i8"),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Collection {
    pub id: i64,
    pub name: String,
    pub embedding_model: String,
    /// The folder the model was loaded from when the collection was made: a hint for CLI
    /// commands, never a silent substitute for a different model.
    pub embedding_path: Option<String>,
    pub dimension: usize,
    pub quantization: Quantization,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub metadata: Map<String, Value>,
    /// Bumped by every committed change; the index file records the one it reflects.
    pub generation: i64,
    pub created_at: i64,
    pub num_documents: usize,
    pub num_chunks: usize,
}

#[derive(Debug, Clone)]
pub struct NewCollection {
    pub name: String,
    pub embedding_model: String,
    pub embedding_path: Option<String>,
    pub dimension: usize,
    pub quantization: Quantization,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentRecord {
    pub id: i64,
    pub collection: String,
    pub source: String,
    pub doc_key: String,
    pub source_type: String,
    pub title: String,
    pub url: Option<String>,
    pub language: Option<String>,
    pub content_hash: String,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub version: i64,
    pub num_chunks: usize,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewChunk {
    pub position: usize,
    pub heading_path: String,
    pub text: String,
    pub token_count: usize,
    /// Character span of `text` within the document's content.
    pub char_start: usize,
    pub char_end: usize,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct NewDocument {
    pub source: String,
    pub doc_key: String,
    pub source_type: String,
    pub title: String,
    pub url: Option<String>,
    pub language: Option<String>,
    pub content: String,
    pub content_hash: String,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub chunks: Vec<NewChunk>,
}

/// Restricts a search. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub source_types: Vec<String>,
    /// A chunk matches when its document carries every one of these tags.
    pub tags: Vec<String>,
    pub languages: Vec<String>,
}

impl SearchFilter {
    pub fn is_empty(&self) -> bool {
        self.source_types.is_empty() && self.tags.is_empty() && self.languages.is_empty()
    }
}

/// A chunk with what a citation needs.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkRecord {
    pub chunk_id: i64,
    pub document_id: i64,
    pub collection: String,
    pub title: String,
    pub source: String,
    pub url: Option<String>,
    pub source_type: String,
    pub language: Option<String>,
    pub heading_path: String,
    pub text: String,
    pub position: usize,
    pub char_start: usize,
    pub char_end: usize,
    pub token_count: usize,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
}
