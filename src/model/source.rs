//! Finding model folders: a path, a folder name under the models directory, or a Hugging Face
//! repo id resolved from the local cache without any network request.
//!
//! Depends on `config` and `weights` only (to describe a model without loading it). The cache
//! location is passed in: nothing here reads the environment.

use std::path::{Path, PathBuf};

use super::config::ModelConfig;
use super::error::{ModelError, Result};
use super::weights::Weights;

/// A model folder and the name it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub name: String,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ModelLocator {
    /// Every subfolder holding a `config.json` is a model named after the folder.
    pub models_dir: PathBuf,
    /// The `hub` folder of the Hugging Face cache (`models--org--name/snapshots/...`).
    pub hf_hub_cache: Option<PathBuf>,
}

impl ModelLocator {
    /// Model folders under `models_dir`, sorted by name. A missing directory holds none.
    pub fn discover(&self) -> Vec<ModelSource> {
        let Ok(entries) = std::fs::read_dir(&self.models_dir) else {
            return vec![];
        };
        let mut found: Vec<ModelSource> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("config.json").is_file())
            .filter_map(|dir| {
                let name = dir.file_name()?.to_str()?.to_string();
                Some(ModelSource { name, dir })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    /// `spec` is a folder path, a name under `models_dir`, or a repo id (`org/name`) in the
    /// local Hugging Face cache, tried in that order.
    pub fn resolve(&self, spec: &str) -> Result<ModelSource> {
        let as_path = Path::new(spec);
        if as_path.join("config.json").is_file() {
            let name = as_path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| spec.to_string());
            return Ok(ModelSource {
                name,
                dir: as_path.to_path_buf(),
            });
        }
        if as_path.is_dir() {
            return Err(ModelError::NotFound {
                model: spec.to_string(),
                detail: format!("{} has no config.json; a model folder needs config.json, weights and tokenizer files", as_path.display()),
            });
        }
        if let Some(found) = self.discover().into_iter().find(|m| m.name == spec) {
            return Ok(found);
        }
        if let Some(dir) = self.cached_snapshot(spec) {
            return Ok(ModelSource {
                name: spec.to_string(),
                dir,
            });
        }
        let cache = self
            .hf_hub_cache
            .as_ref()
            .map_or("no Hugging Face cache configured".to_string(), |c| {
                format!("not in the Hugging Face cache at {}", c.display())
            });
        Err(ModelError::NotFound {
            model: spec.to_string(),
            detail: format!(
                "not a folder, not a model under {}, and {cache}; copy the model folder into {} or pass its path",
                self.models_dir.display(),
                self.models_dir.display()
            ),
        })
    }

    fn cached_snapshot(&self, repo_id: &str) -> Option<PathBuf> {
        if repo_id.split('/').count() != 2 {
            return None;
        }
        let cache = hf_hub::Cache::new(self.hf_hub_cache.clone()?);
        let config = cache.model(repo_id.to_string()).get("config.json")?;
        config.parent().map(Path::to_path_buf)
    }
}

/// What `enclave models` shows: read from `config.json` and the weight headers only.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub source: ModelSource,
    pub architecture: String,
    pub num_parameters: u64,
    pub dtype: String,
    pub max_position_embeddings: usize,
}

impl ModelInfo {
    pub fn read(source: &ModelSource) -> Result<Self> {
        let cfg = ModelConfig::from_file(&source.dir.join("config.json"))?;
        let weights = Weights::open_dir(&source.dir)?;
        Ok(Self {
            source: source.clone(),
            architecture: cfg.architecture.name().to_string(),
            num_parameters: cfg.num_parameters(),
            dtype: weights
                .dominant_dtype()
                .map_or("?".into(), |d| d.name().to_string()),
            max_position_embeddings: cfg.max_position_embeddings,
        })
    }
}
