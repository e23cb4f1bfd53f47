//! `enclave serve`'s configuration: command-line flags, a TOML file and `ENCLAVE_*` environment
//! variables, resolved once into `ServeConfig`. A flag beats the file, and the file beats the
//! environment; a list (models, key hashes, origins) comes whole from the first source that
//! sets it.
//!
//! Values stay plain data here (strings for sizes and dtypes, checked by whoever builds the
//! engine) so that configuration depends on no other module. The only module, with `config`,
//! that reads the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Env {
        name: String,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Engine settings, each optional until resolved.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineOptions {
    pub max_num_seqs: Option<usize>,
    pub max_num_batched_tokens: Option<usize>,
    /// Bytes (`4GiB`) or a share of free memory (`0.2`).
    pub kv_cache_memory: Option<String>,
    pub kv_cache_dtype: Option<String>,
    pub block_size: Option<usize>,
    pub enable_prefix_caching: Option<bool>,
    pub max_queue_len: Option<usize>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: Option<String>,
    /// On a GPU, the share of its memory the engine may fill.
    pub gpu_memory_utilization: Option<f64>,
}

/// One model to serve, as the config file gives it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// A folder, a folder name under the models folder, or a repo id in the local cache.
    /// Left out: the built-in test model.
    pub path: Option<String>,
    /// The id clients send; defaults to the folder or repo name.
    pub name: Option<String>,
    /// More names for the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `hermes`, `llama3_json` or `mistral`; overrides what the chat template shows.
    pub tool_call_parser: Option<String>,
}

/// `NAME=SPEC` → (Some(NAME), SPEC); a `=` inside a path (after a `/`) is not a name.
pub fn split_named(flag: &str) -> (Option<String>, &str) {
    match flag.split_once('=') {
        Some((n, p)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), p),
        _ => (None, flag),
    }
}

impl ModelEntry {
    /// `--model SPEC` or `--model NAME=SPEC`.
    pub fn from_flag(flag: &str) -> Self {
        let (name, path) = split_named(flag);
        Self {
            path: Some(path.to_string()),
            name,
            aliases: Vec::new(),
            tool_call_parser: None,
        }
    }
}

/// Every option of `serve`, from any one source.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Sentence-transformers folders served at /v1/embeddings (and used by the knowledge base).
    #[serde(default)]
    pub embedding_models: Vec<ModelEntry>,
    /// A cross-encoder folder (`[NAME=]FOLDER`) that reorders knowledge-base search hits.
    pub reranker: Option<String>,
    /// Agent definitions (one TOML file each); default: `agents` in the data directory.
    pub agents_dir: Option<PathBuf>,
    /// Serve the built-in `demo-retail` agent (default true).
    pub demo_agent: Option<bool>,
    /// An answer counts as resolved when its contact does not return with the same intent
    /// within this many days (default 7).
    pub resolution_window_days: Option<u32>,
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default)]
    pub api_key_hashes: Vec<String>,
    pub max_concurrent_per_key: Option<usize>,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    pub max_body_bytes: Option<usize>,
    pub shutdown_timeout_secs: Option<u64>,
    pub log_format: Option<String>,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub engine: EngineOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Chat models. Empty from every source means the built-in test model, unless embedding
    /// models are given: then the server runs with those alone.
    pub models: Vec<ModelEntry>,
    pub embedding_models: Vec<ModelEntry>,
    pub reranker: Option<String>,
    /// `None`: the data directory's `agents` folder.
    pub agents_dir: Option<PathBuf>,
    pub demo_agent: bool,
    pub resolution_window_days: u32,
    pub host: String,
    pub port: u16,
    pub api_key_hashes: Vec<String>,
    pub max_concurrent_per_key: usize,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// (certificate chain, private key) PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub engine: EngineOptions,
}

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;

impl ServeOptions {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// `ENCLAVE_*` variables. Lists are comma-separated.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn num<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<T>, ConfigError> {
            get(name)
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::Env {
                        name: name.into(),
                        value: v.clone(),
                        message: "expected a whole number".into(),
                    })
                })
                .transpose()
        }
        let list = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        fn boolean(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<bool>, ConfigError> {
            match get(name).as_deref() {
                None => Ok(None),
                Some("1" | "true" | "yes") => Ok(Some(true)),
                Some("0" | "false" | "no") => Ok(Some(false)),
                Some(v) => Err(ConfigError::Env {
                    name: name.into(),
                    value: v.into(),
                    message: "expected true or false".into(),
                }),
            }
        }
        let enable_prefix_caching = boolean(&get, "ENCLAVE_ENABLE_PREFIX_CACHING")?;
        Ok(Self {
            models: list("ENCLAVE_MODELS")
                .iter()
                .map(|m| ModelEntry::from_flag(m))
                .collect(),
            embedding_models: list("ENCLAVE_EMBEDDING_MODELS")
                .iter()
                .map(|m| ModelEntry::from_flag(m))
                .collect(),
            reranker: get("ENCLAVE_RERANKER"),
            agents_dir: get("ENCLAVE_AGENTS_DIR").map(PathBuf::from),
            demo_agent: boolean(&get, "ENCLAVE_DEMO_AGENT")?,
            resolution_window_days: num(&get, "ENCLAVE_RESOLUTION_WINDOW_DAYS")?,
            host: get("ENCLAVE_HOST"),
            port: num(&get, "ENCLAVE_PORT")?,
            api_key_hashes: list("ENCLAVE_API_KEY_HASHES"),
            max_concurrent_per_key: num(&get, "ENCLAVE_MAX_CONCURRENT_PER_KEY")?,
            cors_origins: list("ENCLAVE_CORS_ORIGINS"),
            max_body_bytes: num(&get, "ENCLAVE_MAX_BODY_BYTES")?,
            shutdown_timeout_secs: num(&get, "ENCLAVE_SHUTDOWN_TIMEOUT_SECS")?,
            log_format: get("ENCLAVE_LOG_FORMAT"),
            tls_cert: get("ENCLAVE_TLS_CERT").map(PathBuf::from),
            tls_key: get("ENCLAVE_TLS_KEY").map(PathBuf::from),
            engine: EngineOptions {
                max_num_seqs: num(&get, "ENCLAVE_MAX_NUM_SEQS")?,
                max_num_batched_tokens: num(&get, "ENCLAVE_MAX_NUM_BATCHED_TOKENS")?,
                kv_cache_memory: get("ENCLAVE_KV_CACHE_MEMORY"),
                kv_cache_dtype: get("ENCLAVE_KV_CACHE_DTYPE"),
                block_size: num(&get, "ENCLAVE_BLOCK_SIZE")?,
                enable_prefix_caching,
                max_queue_len: num(&get, "ENCLAVE_MAX_QUEUE_LEN")?,
                device: get("ENCLAVE_DEVICE"),
                gpu_memory_utilization: num(&get, "ENCLAVE_GPU_MEMORY_UTILIZATION")?,
            },
        })
    }

    /// `self` wins over `other`, field by field (a list as a whole).
    pub fn or(self, other: Self) -> Self {
        let list = |a: Vec<String>, b: Vec<String>| if a.is_empty() { b } else { a };
        let e = self.engine;
        let o = other.engine;
        Self {
            models: if self.models.is_empty() {
                other.models
            } else {
                self.models
            },
            embedding_models: if self.embedding_models.is_empty() {
                other.embedding_models
            } else {
                self.embedding_models
            },
            reranker: self.reranker.or(other.reranker),
            agents_dir: self.agents_dir.or(other.agents_dir),
            demo_agent: self.demo_agent.or(other.demo_agent),
            resolution_window_days: self.resolution_window_days.or(other.resolution_window_days),
            host: self.host.or(other.host),
            port: self.port.or(other.port),
            api_key_hashes: list(self.api_key_hashes, other.api_key_hashes),
            max_concurrent_per_key: self.max_concurrent_per_key.or(other.max_concurrent_per_key),
            cors_origins: list(self.cors_origins, other.cors_origins),
            max_body_bytes: self.max_body_bytes.or(other.max_body_bytes),
            shutdown_timeout_secs: self.shutdown_timeout_secs.or(other.shutdown_timeout_secs),
            log_format: self.log_format.or(other.log_format),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            engine: EngineOptions {
                max_num_seqs: e.max_num_seqs.or(o.max_num_seqs),
                max_num_batched_tokens: e.max_num_batched_tokens.or(o.max_num_batched_tokens),
                kv_cache_memory: e.kv_cache_memory.or(o.kv_cache_memory),
                kv_cache_dtype: e.kv_cache_dtype.or(o.kv_cache_dtype),
                block_size: e.block_size.or(o.block_size),
                enable_prefix_caching: e.enable_prefix_caching.or(o.enable_prefix_caching),
                max_queue_len: e.max_queue_len.or(o.max_queue_len),
                device: e.device.or(o.device),
                gpu_memory_utilization: e.gpu_memory_utilization.or(o.gpu_memory_utilization),
            },
        }
    }

    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let log_format = match self.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "log format `{other}` is not known; use text or json"
                )))
            }
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "TLS needs both a certificate (--tls-cert) and its private key (--tls-key)"
                        .into(),
                ))
            }
        };
        let models = if self.models.is_empty() && self.embedding_models.is_empty() {
            vec![ModelEntry {
                path: None,
                name: None,
                aliases: Vec::new(),
                tool_call_parser: None,
            }]
        } else {
            self.models
        };
        if self.reranker.is_some() && self.embedding_models.is_empty() {
            return Err(ConfigError::Invalid(
                "a reranker reorders knowledge-base searches, which need an embedding model: \
                 add --embedding-model"
                    .into(),
            ));
        }
        if let Some(e) = self.embedding_models.iter().find(|e| e.path.is_none()) {
            return Err(ConfigError::Invalid(format!(
                "embedding model {:?} has no path; give the folder it was saved to",
                e.name.as_deref().unwrap_or("")
            )));
        }
        Ok(ServeConfig {
            models,
            reranker: self.reranker,
            embedding_models: self.embedding_models,
            agents_dir: self.agents_dir,
            demo_agent: self.demo_agent.unwrap_or(true),
            resolution_window_days: match self.resolution_window_days.unwrap_or(7) {
                0 => {
                    return Err(ConfigError::Invalid(
                        "the resolution window must be at least 1 day".into(),
                    ))
                }
                d => d,
            },
            host: self.host.unwrap_or_else(|| DEFAULT_HOST.into()),
            port: self.port.unwrap_or(DEFAULT_PORT),
            api_key_hashes: self.api_key_hashes,
            max_concurrent_per_key: self.max_concurrent_per_key.unwrap_or(0),
            cors_origins: self.cors_origins,
            max_body_bytes: self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            shutdown_timeout: Duration::from_secs(
                self.shutdown_timeout_secs
                    .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
            ),
            log_format,
            tls,
            engine: self.engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_the_environment() {
        let cli = ServeOptions {
            port: Some(9000),
            ..Default::default()
        };
        let file: ServeOptions = toml::from_str(
            "port = 7000\nhost = \"0.0.0.0\"\n[engine]\nmax_num_seqs = 8\n[[models]]\npath = \"qwen\"\naliases = [\"support\"]\n",
        )
        .expect("valid config");
        let env = ServeOptions::from_vars(vars(&[
            ("ENCLAVE_HOST", "10.0.0.1"),
            ("ENCLAVE_MAX_NUM_SEQS", "4"),
            ("ENCLAVE_BLOCK_SIZE", "32"),
            ("ENCLAVE_API_KEY_HASHES", "sha256:a, sha256:b"),
        ]))
        .expect("valid env");
        let c = cli.or(file).or(env).resolve().expect("resolves");
        assert_eq!(c.port, 9000);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.engine.max_num_seqs, Some(8));
        assert_eq!(c.engine.block_size, Some(32));
        assert_eq!(c.api_key_hashes, vec!["sha256:a", "sha256:b"]);
        assert_eq!(c.models[0].aliases, vec!["support"]);
    }

    #[test]
    fn defaults_serve_the_built_in_model_on_loopback() {
        let c = ServeOptions::default().resolve().expect("resolves");
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 8080));
        assert_eq!(c.models.len(), 1);
        assert_eq!(c.models[0].path, None);
        assert_eq!(c.max_concurrent_per_key, 0);
        assert!(c.cors_origins.is_empty());
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = ServeOptions::from_vars(vars(&[("ENCLAVE_PORT", "eighty")])).unwrap_err();
        assert!(e.to_string().contains("ENCLAVE_PORT"), "{e}");
        let e = toml::from_str::<ServeOptions>("prot = 1").unwrap_err();
        assert!(e.to_string().contains("prot"), "{e}");
    }

    #[test]
    fn model_flags_take_an_optional_name() {
        let m = ModelEntry::from_flag("support=/srv/models/qwen");
        assert_eq!(
            (m.name.as_deref(), m.path.as_deref()),
            (Some("support"), Some("/srv/models/qwen"))
        );
        let m = ModelEntry::from_flag("Qwen/Qwen2.5-0.5B-Instruct");
        assert_eq!(m.name, None);
    }
}
