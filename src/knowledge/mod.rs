//! The knowledge base: an organisation's documents and tickets, parsed, chunked, embedded and
//! searched by BM25, by vector and by both fused; and uploaded files, kept as they came and
//! attached to collections.
//!
//! SQLite is the source of truth (collections, documents, chunks with their text and
//! embeddings). Each collection's usearch index is derived from it, saved beside it, and
//! rebuilt whenever it is missing or does not match; its keyword (BM25) index is derived from
//! it in memory at open. A collection records its embedding model
//! and dimension and never mixes two. Must not depend on the engine, the API or a concrete
//! model: embeddings come through the [`Embedder`] trait.

mod attach;
mod bm25;
mod chunk;
mod error;
mod files;
mod filter;
pub mod formats;
mod index;
mod ingest;
mod kb;
mod lock;
mod schema;
mod search;
mod store;
mod types;

pub use attach::{attribute_tag, file_source, random_id};
pub use chunk::{chunk_sections, ChunkParams, ChunkPiece};
pub use error::{KnowledgeError, Result};
pub use files::{CollectionFile, FileCounts, FileRecord, ListWindow};
pub use ingest::{IngestEvent, IngestOptions, IngestReport};
pub use kb::{CollectionParams, KnowledgeBase, OpenMode};
pub use search::{SearchHit, SearchMode, SearchRequest, RRF_K};
pub use store::Store;
pub use types::{ChunkRecord, Collection, DocumentRecord, Quantization, SearchFilter};

/// Scores (query, passage) pairs jointly: a cross-encoder that reorders the best fused hits.
pub trait Rerank: Send + Sync {
    fn model_id(&self) -> &str;
    /// One score per passage; higher is more relevant.
    fn rerank(&self, query: &str, passages: &[String]) -> std::result::Result<Vec<f32>, String>;
}

/// Turns text into vectors for the knowledge base.
pub trait Embedder: Send + Sync {
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// The longest input, in tokens, special tokens included.
    fn max_input_tokens(&self) -> usize;
    /// Tokens of `text` without special tokens.
    fn count_tokens(&self, text: &str) -> usize;
    /// Special tokens added to every input.
    fn special_tokens(&self) -> usize;
    fn embed_documents(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String>;
    fn embed_query(&self, text: &str) -> std::result::Result<Vec<f32>, String>;
    /// Many queries at once; the default embeds them one by one.
    fn embed_queries(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, String> {
        texts.iter().map(|t| self.embed_query(t)).collect()
    }
}
