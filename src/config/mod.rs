//! Resolved configuration: where data, models and the Hugging Face cache live.
//!
//! Raw options (CLI flags, which may come from `ENCLAVE_*` variables through clap) are resolved
//! here once; this is the only module that reads the environment, and only for the standard
//! locations (`XDG_DATA_HOME`, `HOME`, `HF_HOME`, `HF_HUB_CACHE`). Everything below receives
//! plain paths.

pub mod serve;

use std::path::PathBuf;

use crate::model::source::ModelLocator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathsConfig {
    /// Runtime data (databases, indexes, agents, the built-in test model). Never in the source
    /// tree.
    pub data_dir: PathBuf,
    /// Folders of models found at start.
    pub models_dir: PathBuf,
    pub hf_hub_cache: Option<PathBuf>,
}

impl PathsConfig {
    pub fn resolve(data_dir: Option<PathBuf>, models_dir: Option<PathBuf>) -> Self {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let data_dir = data_dir
            .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("enclave")))
            .or_else(|| home.as_ref().map(|h| h.join(".local/share/enclave")))
            .unwrap_or_else(|| PathBuf::from("enclave-data"));
        let hf_hub_cache = env("HF_HUB_CACHE")
            .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| home.map(|h| h.join(".cache/huggingface/hub")));
        Self {
            data_dir,
            models_dir: models_dir.unwrap_or_else(|| PathBuf::from("models")),
            hf_hub_cache,
        }
    }

    pub fn locator(&self) -> ModelLocator {
        ModelLocator {
            models_dir: self.models_dir.clone(),
            hf_hub_cache: self.hf_hub_cache.clone(),
        }
    }

    /// The knowledge base: its SQLite store, vector indexes and uploaded files.
    pub fn knowledge_dir(&self) -> PathBuf {
        self.data_dir.join("knowledge")
    }

    /// Agent definitions, one TOML file per agent, unless `--agents-dir` says otherwise.
    pub fn agents_dir(&self) -> PathBuf {
        self.data_dir.join("agents")
    }

    /// Conversations, handoffs, CSAT and imported intent examples.
    pub fn support_db(&self) -> PathBuf {
        self.data_dir.join("support.sqlite3")
    }

    /// Where the built-in random test model is written on first use.
    pub fn builtin_model_dir(&self) -> PathBuf {
        self.data_dir
            .join("models")
            .join(crate::builtin_model::BUILTIN_MODEL_NAME)
    }
}
