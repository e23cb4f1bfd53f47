//! What every handler shares: the served models by name (aliases included), the server's
//! lifecycle flags and its request metrics. Built once by the server wiring; read-only after,
//! apart from atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::auth::ApiKeys;
use super::error::ApiError;
use super::guard::ConcurrencyLimiter;
use super::metrics::ApiMetrics;
use crate::agent::AgentService;
use crate::embedding::EmbeddingModel;
use crate::engine::EngineHandle;
use crate::knowledge::KnowledgeBase;
use crate::tokenizer::tool_calls::ToolCallFormat;
use crate::tokenizer::Tokenizer;

/// One model as the API serves it.
pub struct ServedModel {
    /// The id clients send in `model` (the first name; aliases map to the same model).
    pub id: String,
    pub handle: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// Seconds since the epoch when it was loaded, for `/v1/models`.
    pub created: u64,
    /// How this model writes tool calls; `None`: its template shows no tool-call syntax.
    pub tool_call_format: Option<ToolCallFormat>,
    /// Sampling defaults from the model's generation_config.json.
    pub defaults: SamplingDefaults,
}

/// The model's own defaults, used where a request leaves a field out.
#[derive(Debug, Clone, Copy, Default)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
}

impl ServedModel {
    pub fn max_context(&self) -> usize {
        self.handle.limits().max_context
    }
}

/// Readiness and shutdown, flipped by the server wiring and read by every request.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl Lifecycle {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.is_shutting_down()
    }
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Limits the HTTP layer enforces itself.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    /// Requests one API key may have in flight; 0 is no limit.
    pub max_concurrent_per_key: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_concurrent_per_key: 0,
        }
    }
}

/// An embedding model as the API serves it.
pub struct ServedEmbedder {
    pub model: Arc<EmbeddingModel>,
    pub created: u64,
}

/// The served models, installed once they have loaded.
#[derive(Default)]
pub struct ModelRegistry {
    /// Every name a model answers to, aliases included.
    pub by_name: BTreeMap<String, Arc<ServedModel>>,
    /// The models in the order they were given, each once.
    pub list: Vec<Arc<ServedModel>>,
    /// Embedding models by every name they answer to.
    pub embedders: BTreeMap<String, Arc<ServedEmbedder>>,
}

impl ModelRegistry {
    pub fn new(models: Vec<(Vec<String>, Arc<ServedModel>)>) -> Self {
        let mut by_name = BTreeMap::new();
        let mut list = Vec::new();
        for (names, model) in models {
            for name in names {
                by_name.insert(name, model.clone());
            }
            list.push(model);
        }
        Self {
            by_name,
            list,
            embedders: BTreeMap::new(),
        }
    }

    pub fn with_embedders(mut self, embedders: Vec<(Vec<String>, Arc<ServedEmbedder>)>) -> Self {
        for (names, e) in embedders {
            for name in names {
                self.embedders.insert(name, e.clone());
            }
        }
        self
    }
}

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<AppInner>,
}

pub struct AppInner {
    registry: OnceLock<ModelRegistry>,
    /// Opened once the embedding models are in; absent without one.
    knowledge: OnceLock<Arc<KnowledgeBase>>,
    agents: OnceLock<Arc<AgentService>>,
    pub keys: ApiKeys,
    pub limits: HttpLimits,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: ApiMetrics,
    pub limiter: ConcurrencyLimiter,
}

impl AppState {
    pub fn new(keys: ApiKeys, limits: HttpLimits, lifecycle: Arc<Lifecycle>) -> Self {
        Self {
            inner: Arc::new(AppInner {
                registry: OnceLock::new(),
                knowledge: OnceLock::new(),
                agents: OnceLock::new(),
                keys,
                limits,
                lifecycle,
                metrics: ApiMetrics::default(),
                limiter: ConcurrencyLimiter::default(),
            }),
        }
    }

    /// Makes the models servable and the server ready. Only the first call has effect.
    pub fn install_models(&self, registry: ModelRegistry) {
        let _ = self.inner.registry.set(registry);
        self.inner.lifecycle.set_ready();
    }

    /// Makes the knowledge routes servable. Call before `install_models`.
    pub fn install_knowledge(&self, kb: Arc<KnowledgeBase>) {
        let _ = self.inner.knowledge.set(kb);
    }

    /// Makes the agent routes servable. Call before `install_models`.
    pub fn install_agents(&self, agents: Arc<AgentService>) {
        let _ = self.inner.agents.set(agents);
    }

    /// The support agents; 503 while the server loads.
    pub fn agents(&self) -> Result<Arc<AgentService>, ApiError> {
        self.registry()?;
        self.inner
            .agents
            .get()
            .cloned()
            .ok_or_else(|| ApiError::NotFound("this server runs no support agents".into()))
    }

    /// The agents, when installed; for metrics.
    pub fn agents_if_any(&self) -> Option<&Arc<AgentService>> {
        self.inner.agents.get()
    }

    /// The knowledge base; a clear 400 when the server runs without an embedding model.
    pub fn knowledge(&self) -> Result<Arc<KnowledgeBase>, ApiError> {
        self.registry()?;
        self.inner
            .knowledge
            .get()
            .cloned()
            .ok_or_else(|| ApiError::InvalidRequest {
                message: "the knowledge base needs an embedding model: start the server with \
                      --embedding-model FOLDER"
                    .into(),
                param: None,
                code: Some("embedding_model_unavailable"),
            })
    }

    /// The served models; `NotReady` while they load.
    pub fn registry(&self) -> Result<&ModelRegistry, ApiError> {
        self.inner.registry.get().ok_or(ApiError::NotReady)
    }

    pub fn model(&self, name: &str) -> Result<Arc<ServedModel>, ApiError> {
        let registry = self.registry()?;
        if let Some(m) = registry.by_name.get(name) {
            return Ok(m.clone());
        }
        if registry.embedders.contains_key(name) {
            return Err(ApiError::invalid(
                format!("`{name}` is an embedding model; use it with /v1/embeddings"),
                "model",
            ));
        }
        Err(ApiError::ModelNotFound(name.to_string()))
    }

    pub fn embedding_model(&self, name: &str) -> Result<Arc<EmbeddingModel>, ApiError> {
        let registry = self.registry()?;
        if let Some(e) = registry.embedders.get(name) {
            return Ok(e.model.clone());
        }
        if registry.by_name.contains_key(name) {
            let loaded: Vec<&str> = registry.embedders.keys().map(String::as_str).collect();
            return Err(ApiError::invalid(
                format!(
                    "`{name}` is a chat model, not an embedding model; embedding models served \
                     here: {}",
                    if loaded.is_empty() {
                        "none (start with --embedding-model)".to_string()
                    } else {
                        loaded.join(", ")
                    }
                ),
                "model",
            ));
        }
        Err(ApiError::ModelNotFound(name.to_string()))
    }
}
