//! [`KnowledgeBase`]: the store, each collection's vector index and the embedders, opened
//! together from one directory.
//!
//! Owns the rule that a collection is only ever embedded by the model it was created with
//! (checked by id and dimension; a missing model is an error, never a fallback), and the
//! start-up check that rebuilds any index that is missing or does not match the store. Each
//! collection's keyword index is built from the store at open. Depends on `store`, `index`,
//! `bm25` and the `Embedder` trait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use super::bm25::Bm25Index;
use super::error::{KnowledgeError, Result};
use super::index::{Staleness, VectorIndex};
use super::lock::DirLock;
use super::store::Store;
use super::types::{Collection, NewCollection, Quantization};
use super::{Embedder, Rerank};

/// Whether this process may change the knowledge base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Takes the directory lock; rebuilt indexes are saved.
    ReadWrite,
    /// No lock; stale indexes are rebuilt in memory only.
    ReadOnly,
}

#[derive(Debug, Clone)]
pub struct CollectionParams {
    pub quantization: Quantization,
    /// Default: the model's maximum input, capped at 256.
    pub chunk_tokens: Option<usize>,
    pub chunk_overlap: Option<usize>,
    pub metadata: Map<String, Value>,
}

impl Default for CollectionParams {
    fn default() -> Self {
        Self {
            quantization: Quantization::F32,
            chunk_tokens: None,
            chunk_overlap: None,
            metadata: Map::new(),
        }
    }
}

pub struct KnowledgeBase {
    dir: PathBuf,
    pub(super) store: Store,
    pub(super) indexes: RwLock<HashMap<i64, Arc<CollectionIndex>>>,
    embedders: RwLock<HashMap<String, Arc<dyn Embedder>>>,
    reranker: RwLock<Option<Arc<dyn Rerank>>>,
    mode: OpenMode,
    _lock: Option<DirLock>,
}

/// A collection's two derived indexes, changed together so that vector and keyword search
/// always see the same chunks.
pub(super) struct CollectionIndex {
    pub vectors: VectorIndex,
    pub terms: Bm25Index,
}

impl CollectionIndex {
    pub fn add(&self, chunk: i64, heading: &str, text: &str, vector: &[f32]) -> Result<()> {
        self.vectors.add(chunk, vector)?;
        self.terms.add(chunk, heading, text);
        Ok(())
    }

    pub fn remove(&self, chunk: i64) -> Result<()> {
        self.vectors.remove(chunk)?;
        self.terms.remove(chunk);
        Ok(())
    }
}

pub const DEFAULT_CHUNK_TOKENS: usize = 256;
pub const DEFAULT_CHUNK_OVERLAP: usize = 32;

fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(KnowledgeError::InvalidName {
            name: name.into(),
            problem: "use 1 to 128 letters, digits, `-`, `_` or `.`, not starting with `.`".into(),
        })
    }
}

impl KnowledgeBase {
    /// Opens (or creates) the knowledge base in `dir` and checks every collection's index.
    pub fn open(dir: &Path, embedders: Vec<Arc<dyn Embedder>>, mode: OpenMode) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| KnowledgeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = match mode {
            OpenMode::ReadWrite => Some(DirLock::acquire(dir)?),
            OpenMode::ReadOnly => None,
        };
        let store = Self::open_store(dir)?;
        let kb = Self {
            dir: dir.to_path_buf(),
            store,
            indexes: RwLock::new(HashMap::new()),
            embedders: RwLock::new(
                embedders
                    .into_iter()
                    .map(|e| (e.model_id().to_string(), e))
                    .collect(),
            ),
            reranker: RwLock::new(None),
            mode,
            _lock: lock,
        };
        for c in kb.store.collections()? {
            kb.open_index(&c)?;
        }
        Ok(kb)
    }

    /// The store alone, without loading any vector index: for reading collections and
    /// documents.
    pub fn open_store(dir: &Path) -> Result<Store> {
        Store::open(&dir.join("kb.sqlite3"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mode(&self) -> OpenMode {
        self.mode
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn add_embedder(&self, e: Arc<dyn Embedder>) {
        self.embedders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.model_id().to_string(), e);
    }

    /// From now on, searches reorder their best fused hits with `reranker`.
    pub fn set_reranker(&self, reranker: Arc<dyn Rerank>) {
        *self.reranker.write().unwrap_or_else(|p| p.into_inner()) = Some(reranker);
    }

    pub fn reranker(&self) -> Option<Arc<dyn Rerank>> {
        self.reranker
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn embedder_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .embedders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    pub fn index_path(&self, c: &Collection) -> PathBuf {
        self.dir.join("indexes").join(format!("{}.usearch", c.id))
    }

    /// Loads the saved vector index, or rebuilds it from SQLite (saving it when writable), and
    /// builds the keyword index.
    fn open_index(&self, c: &Collection) -> Result<Arc<CollectionIndex>> {
        let path = self.index_path(c);
        let index = match VectorIndex::load(
            &path,
            &c.name,
            c.dimension,
            c.quantization,
            c.generation,
            c.num_chunks,
        ) {
            Ok(index) => index,
            Err(why) => {
                if !matches!(why, Staleness::Missing) || c.num_chunks > 0 {
                    tracing::warn!(
                        collection = %c.name,
                        path = %path.display(),
                        "rebuilding the vector index from the store: {why}"
                    );
                }
                self.build_vectors(c)?
            }
        };
        let index = Arc::new(CollectionIndex {
            vectors: index,
            terms: self.build_terms(c)?,
        });
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.id, Arc::clone(&index));
        Ok(index)
    }

    fn build_vectors(&self, c: &Collection) -> Result<VectorIndex> {
        let index = VectorIndex::new(&c.name, c.dimension, c.quantization)?;
        self.store
            .for_each_embedding(c.id, |id, v| index.add(id, &v))?;
        if self.mode == OpenMode::ReadWrite {
            index.save(&self.index_path(c), c.generation)?;
        }
        Ok(index)
    }

    fn build_terms(&self, c: &Collection) -> Result<Bm25Index> {
        const BATCH: usize = 4096;
        let index = Bm25Index::new();
        let mut batch = Vec::with_capacity(BATCH);
        self.store.for_each_chunk_text(c.id, |id, heading, text| {
            batch.push((id, heading.to_string(), text.to_string()));
            if batch.len() == BATCH {
                index.add_many(&batch);
                batch.clear();
            }
        })?;
        index.add_many(&batch);
        Ok(index)
    }

    /// Rebuilds a collection's indexes from the store; returns the number of vectors.
    pub fn rebuild(&self, name: &str) -> Result<usize> {
        let c = self.store.collection(name)?;
        let index = Arc::new(CollectionIndex {
            vectors: self.build_vectors(&c)?,
            terms: self.build_terms(&c)?,
        });
        let n = index.vectors.len();
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(c.id, index);
        Ok(n)
    }

    pub(super) fn index(&self, c: &Collection) -> Result<Arc<CollectionIndex>> {
        let found = self
            .indexes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.id)
            .cloned();
        match found {
            Some(i) => Ok(i),
            None => self.open_index(c),
        }
    }

    /// Saves a collection's index at the store's current generation.
    pub fn save_index(&self, name: &str) -> Result<()> {
        if self.mode == OpenMode::ReadOnly {
            return Ok(());
        }
        let c = self.store.collection(name)?;
        self.index(&c)?
            .vectors
            .save(&self.index_path(&c), c.generation)
    }

    /// The embedder a collection was built with, checked against its dimension.
    pub fn embedder_for(&self, c: &Collection) -> Result<Arc<dyn Embedder>> {
        let e = self
            .embedders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&c.embedding_model)
            .cloned()
            .ok_or_else(|| KnowledgeError::EmbedderMissing {
                collection: c.name.clone(),
                model: c.embedding_model.clone(),
            })?;
        if e.dimension() != c.dimension {
            return Err(KnowledgeError::DimensionMismatch {
                collection: c.name.clone(),
                model: c.embedding_model.clone(),
                expected: c.dimension,
                actual: e.dimension(),
            });
        }
        Ok(e)
    }

    pub fn create_collection(
        &self,
        name: &str,
        embedding_model: &str,
        embedding_path: Option<String>,
        params: CollectionParams,
    ) -> Result<Collection> {
        valid_name(name)?;
        let e = self
            .embedders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(embedding_model)
            .cloned()
            .ok_or_else(|| KnowledgeError::InvalidArgument {
                field: "embedding_model".into(),
                problem: format!(
                    "`{embedding_model}` is not loaded (loaded: {})",
                    self.embedder_ids().join(", ")
                ),
            })?;
        let max = e.max_input_tokens();
        let chunk_tokens = params.chunk_tokens.unwrap_or(DEFAULT_CHUNK_TOKENS.min(max));
        if chunk_tokens < 32 || chunk_tokens > max {
            return Err(KnowledgeError::InvalidArgument {
                field: "chunk_tokens".into(),
                problem: format!("{chunk_tokens}; must be between 32 and the model's {max}"),
            });
        }
        let chunk_overlap = params.chunk_overlap.unwrap_or(DEFAULT_CHUNK_OVERLAP);
        if chunk_overlap.saturating_mul(2) > chunk_tokens {
            return Err(KnowledgeError::InvalidArgument {
                field: "chunk_overlap".into(),
                problem: format!("{chunk_overlap}; must be at most half of chunk_tokens"),
            });
        }
        let c = self.store.create_collection(&NewCollection {
            name: name.into(),
            embedding_model: embedding_model.into(),
            embedding_path,
            dimension: e.dimension(),
            quantization: params.quantization,
            chunk_tokens,
            chunk_overlap,
            metadata: params.metadata,
        })?;
        self.open_index(&c)?;
        Ok(c)
    }

    pub fn delete_collection(&self, name: &str) -> Result<Collection> {
        let c = self.store.delete_collection(name)?;
        self.indexes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.id);
        let path = self.index_path(&c);
        for p in [
            path.clone(),
            PathBuf::from(format!("{}.meta.json", path.display())),
        ] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), "cannot remove index file: {e}");
                }
            }
        }
        Ok(c)
    }

    /// Removes documents (by id) from a collection and its index.
    pub fn remove_documents(&self, name: &str, ids: &[i64]) -> Result<usize> {
        let c = self.store.collection(name)?;
        let removed = self.store.delete_documents(c.id, ids)?;
        let index = self.index(&c)?;
        for id in &removed {
            index.remove(*id)?;
        }
        self.save_index(name)?;
        Ok(removed.len())
    }
}
