//! One collection's vector index: usearch HNSW over cosine distance, derived from SQLite and
//! saved beside it.
//!
//! Owns the index file and its sidecar (`<file>.meta.json`: the store generation and chunk
//! count the file reflects). Saves are atomic: a temporary file, fsync, then rename, index
//! first and sidecar second, so a crash leaves either the old pair or a sidecar that no longer
//! matches, and a mismatch means "rebuild from SQLite". Depends on usearch and `types`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use usearch::ffi::{IndexOptions, MetricKind, ScalarKind};
use usearch::Index;

use super::error::{KnowledgeError, Result};
use super::types::Quantization;

/// Room added at a time, so inserts do not reallocate the graph on every document.
const GROWTH: usize = 1024;
/// Candidates HNSW explores per query: well above the top-k asked for, for recall.
const EXPANSION_SEARCH: usize = 128;

pub struct VectorIndex {
    collection: String,
    dimension: usize,
    quantization: Quantization,
    /// usearch searches concurrently, but growing the graph must be exclusive.
    index: RwLock<Index>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sidecar {
    generation: i64,
    count: usize,
    dimension: usize,
    quantization: String,
}

/// Why a saved index cannot be used as it is.
#[derive(Debug)]
pub enum Staleness {
    Missing,
    Unreadable(String),
    Mismatch(String),
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => write!(f, "the index file is missing"),
            Self::Unreadable(e) => write!(f, "the index file cannot be read ({e})"),
            Self::Mismatch(e) => write!(f, "the index file does not match the store ({e})"),
        }
    }
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".meta.json");
    PathBuf::from(name)
}

fn options(dimension: usize, quantization: Quantization) -> IndexOptions {
    IndexOptions {
        dimensions: dimension,
        metric: MetricKind::Cos,
        quantization: match quantization {
            Quantization::F32 => ScalarKind::F32,
            Quantization::F16 => ScalarKind::F16,
            Quantization::I8 => ScalarKind::I8,
        },
        connectivity: 16,
        expansion_add: 128,
        expansion_search: EXPANSION_SEARCH,
        multi: false,
    }
}

impl VectorIndex {
    pub fn new(collection: &str, dimension: usize, quantization: Quantization) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| KnowledgeError::Index {
            collection: collection.into(),
            message: e.to_string(),
        };
        let index = Index::new(&options(dimension, quantization)).map_err(|e| err(&e))?;
        index.reserve(GROWTH).map_err(|e| err(&e))?;
        Ok(Self {
            collection: collection.into(),
            dimension,
            quantization,
            index: RwLock::new(index),
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> KnowledgeError {
        KnowledgeError::Index {
            collection: self.collection.clone(),
            message: message.to_string(),
        }
    }

    pub fn len(&self) -> usize {
        self.index.read().unwrap_or_else(|p| p.into_inner()).size()
    }

    pub fn add(&self, key: i64, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dimension {
            return Err(self.error(format!(
                "vector has {} dimensions, the index {}",
                vector.len(),
                self.dimension
            )));
        }
        let index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if index.size() + 1 > index.capacity() {
            index
                .reserve(index.capacity() + GROWTH.max(index.capacity() / 2))
                .map_err(|e| self.error(e))?;
        }
        index.add(key as u64, vector).map_err(|e| self.error(e))
    }

    pub fn remove(&self, key: i64) -> Result<()> {
        let index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.remove(key as u64).map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Nearest chunks, best first, as (chunk id, cosine similarity). With `allowed`, only
    /// those chunks are considered.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&HashSet<i64>>,
    ) -> Result<Vec<(i64, f32)>> {
        if query.len() != self.dimension {
            return Err(self.error(format!(
                "query has {} dimensions, the index {}",
                query.len(),
                self.dimension
            )));
        }
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        if index.size() == 0 || k == 0 {
            return Ok(Vec::new());
        }
        let matches = match allowed {
            None => index.search(query, k),
            Some(set) => index.filtered_search(query, k, |key| set.contains(&(key as i64))),
        }
        .map_err(|e| self.error(e))?;
        Ok(matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &d)| (key as i64, 1.0 - d))
            .collect())
    }

    /// Writes the index and its sidecar atomically, recording `generation`.
    pub fn save(&self, path: &Path, generation: i64) -> Result<()> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let io = |path: &Path, source| KnowledgeError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let tmp = path.with_extension("usearch.tmp");
        let tmp_str = tmp.to_string_lossy();
        index.save(&tmp_str).map_err(|e| self.error(e))?;
        let count = index.size();
        drop(index);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
        let sidecar = Sidecar {
            generation,
            count,
            dimension: self.dimension,
            quantization: self.quantization.as_str().into(),
        };
        let meta = sidecar_path(path);
        let meta_tmp = meta.with_extension("json.tmp");
        let body = serde_json::to_vec(&sidecar).map_err(|e| self.error(e))?;
        std::fs::File::create(&meta_tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()))
            .map_err(|e| io(&meta_tmp, e))?;
        std::fs::rename(&meta_tmp, &meta).map_err(|e| io(&meta, e))?;
        if let Some(dir) = path.parent() {
            // The renames are durable only once the directory entry is.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Loads a saved index if it reflects exactly `generation` and `count` chunks.
    pub fn load(
        path: &Path,
        collection: &str,
        dimension: usize,
        quantization: Quantization,
        generation: i64,
        count: usize,
    ) -> std::result::Result<Self, Staleness> {
        if !path.is_file() {
            return Err(Staleness::Missing);
        }
        let meta = sidecar_path(path);
        let sidecar: Sidecar = std::fs::read(&meta)
            .map_err(|e| Staleness::Unreadable(format!("{}: {e}", meta.display())))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| Staleness::Unreadable(format!("{}: {e}", meta.display())))
            })?;
        let want = Sidecar {
            generation,
            count,
            dimension,
            quantization: quantization.as_str().into(),
        };
        if sidecar != want {
            return Err(Staleness::Mismatch(format!(
                "file records generation {} with {} vectors, the store is at generation {} \
                 with {} chunks",
                sidecar.generation, sidecar.count, generation, count
            )));
        }
        let index = Index::new(&options(dimension, quantization))
            .map_err(|e| Staleness::Unreadable(e.to_string()))?;
        index
            .load(&path.to_string_lossy())
            .map_err(|e| Staleness::Unreadable(e.to_string()))?;
        if index.size() != count || index.dimensions() != dimension {
            return Err(Staleness::Mismatch(format!(
                "file holds {} vectors of {} dimensions",
                index.size(),
                index.dimensions()
            )));
        }
        index
            .reserve(index.size() + GROWTH)
            .map_err(|e| Staleness::Unreadable(e.to_string()))?;
        Ok(Self {
            collection: collection.into(),
            dimension,
            quantization,
            index: RwLock::new(index),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize, dim: usize) -> Vec<f32> {
        let mut v = vec![0.01; dim];
        v[i % dim] = 1.0;
        v
    }

    #[test]
    fn search_finds_the_nearest_and_honours_the_allow_list() {
        let idx = VectorIndex::new("t", 8, Quantization::F32).unwrap();
        for i in 0..8 {
            idx.add(i as i64 + 100, &unit(i, 8)).unwrap();
        }
        let hits = idx.search(&unit(3, 8), 2, None).unwrap();
        assert_eq!(hits[0].0, 103);
        assert!(hits[0].1 > 0.99);
        let allowed: HashSet<i64> = [105, 106].into();
        let hits = idx.search(&unit(3, 8), 2, Some(&allowed)).unwrap();
        assert!(hits.iter().all(|(k, _)| allowed.contains(k)), "{hits:?}");
        idx.remove(103).unwrap();
        assert_ne!(idx.search(&unit(3, 8), 1, None).unwrap()[0].0, 103);
    }

    #[test]
    fn a_saved_index_loads_only_at_its_own_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.usearch");
        let idx = VectorIndex::new("t", 4, Quantization::F16).unwrap();
        idx.add(1, &unit(1, 4)).unwrap();
        idx.save(&path, 7).unwrap();
        let back = VectorIndex::load(&path, "t", 4, Quantization::F16, 7, 1).unwrap();
        assert_eq!(back.search(&unit(1, 4), 1, None).unwrap()[0].0, 1);
        assert!(matches!(
            VectorIndex::load(&path, "t", 4, Quantization::F16, 8, 1),
            Err(Staleness::Mismatch(_))
        ));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            VectorIndex::load(&path, "t", 4, Quantization::F16, 7, 1),
            Err(Staleness::Unreadable(_))
        ));
        assert!(matches!(
            VectorIndex::load(&dir.path().join("none"), "t", 4, Quantization::F16, 7, 1),
            Err(Staleness::Missing)
        ));
    }
}
