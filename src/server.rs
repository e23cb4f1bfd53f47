//! `enclave serve` wiring: bind the listener, load every model and spawn its engine, install
//! them in the API state, and shut down gracefully on SIGTERM or Ctrl-C (stop accepting, let
//! in-flight requests finish up to a timeout, return so the process exits 0).
//!
//! The listener is bound before the models load, so `/health` answers at once and `/ready`
//! turns 200 when loading is done. Owns no request logic; depends on `api`, `bundle`, `engine`
//! and `config`. The server never opens a connection of its own: its only socket is the
//! listening one.

use std::net::SocketAddr;
use std::sync::Arc;

use std::future::IntoFuture;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::demo::{self, DEMO_AGENT};
use crate::agent::registry::{self, BuildContext};
use crate::agent::{AgentError, AgentService, SupportStore, SystemClock};
use crate::agent_engine::{EngineGenerator, EngineModel};
use crate::api::auth::{ApiKeys, KeyDigest, KeyHashError};
use crate::api::{
    router, AppState, CorsConfig, HttpLimits, Lifecycle, ModelRegistry, SamplingDefaults,
    ServedEmbedder, ServedModel,
};
use crate::bundle::{resolve_model, BundleError, ModelBundle};
use crate::config::serve::{EngineOptions, ModelEntry, ServeConfig};
use crate::config::PathsConfig;
use crate::embedding::{EmbeddingModel, Reranker};
use crate::engine::grammar::GrammarVocab;
use crate::engine::{spawn_engine, EngineConfig, EngineError, KvCacheMemory};
use crate::knowledge::{Embedder, KnowledgeBase, OpenMode};
use crate::model::{DeviceSpec, KvDtype};
use crate::tokenizer::tool_calls::ToolCallFormat;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}; pick another --port or --host")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    KeyHash(#[from] KeyHashError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("loading model `{name}`: {source}")]
    Load { name: String, source: BundleError },
    #[error("starting the engine for `{name}`: {source}")]
    Engine { name: String, source: EngineError },
    #[error("loading embedding model: {0}")]
    Embedding(#[from] crate::embedding::EmbeddingError),
    #[error("knowledge base: {0}")]
    Knowledge(#[from] crate::knowledge::KnowledgeError),
    #[error("{0}")]
    Agent(#[from] crate::agent::AgentError),
    #[error("two models are served under the name `{0}`; give one of them another name")]
    DuplicateName(String),
    #[error("the server failed: {0}")]
    Serve(String),
}

/// The engine settings, with the same defaults as `enclave bench`.
pub fn engine_config(o: &EngineOptions) -> Result<EngineConfig, ServerError> {
    let d = EngineConfig::default();
    let kv_cache_memory = match &o.kv_cache_memory {
        Some(s) => s.parse::<KvCacheMemory>().map_err(ServerError::Config)?,
        None => d.kv_cache_memory,
    };
    let kv_dtype = match &o.kv_cache_dtype {
        Some(s) => KvDtype::parse(s).ok_or_else(|| {
            ServerError::Config(format!(
                "`{s}` is not a KV cache dtype; use f32, bf16 or f16"
            ))
        })?,
        None => d.kv_dtype,
    };
    let device = match &o.device {
        Some(s) => s.parse::<DeviceSpec>().map_err(ServerError::Config)?,
        None => d.device,
    };
    let config = EngineConfig {
        device,
        gpu_memory_utilization: o.gpu_memory_utilization.unwrap_or(d.gpu_memory_utilization),
        max_num_seqs: o.max_num_seqs.unwrap_or(d.max_num_seqs),
        max_num_batched_tokens: o.max_num_batched_tokens.unwrap_or(d.max_num_batched_tokens),
        block_size: o.block_size.unwrap_or(d.block_size),
        kv_cache_memory,
        kv_dtype,
        enable_prefix_caching: o.enable_prefix_caching.unwrap_or(d.enable_prefix_caching),
        max_queue_len: o.max_queue_len.unwrap_or(d.max_queue_len),
    };
    config
        .validate()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    Ok(config)
}

/// Loads one model and spawns its engine; returns every name it answers to.
pub fn load_model(
    paths: &PathsConfig,
    entry: &ModelEntry,
    engine: &EngineConfig,
) -> Result<(Vec<String>, ServedModel), ServerError> {
    let spec = entry.path.as_deref().unwrap_or("(built-in)");
    let load = |source| ServerError::Load {
        name: spec.to_string(),
        source,
    };
    let source = resolve_model(paths, entry.path.as_deref()).map_err(load)?;
    let device = engine
        .device
        .open()
        .map_err(|e| load(BundleError::from(e)))?;
    let bundle = ModelBundle::load(&source, &device).map_err(load)?;
    if bundle.is_builtin() {
        tracing::warn!("{}", crate::builtin_model::NOTICE);
    }
    let id = entry.name.clone().unwrap_or_else(|| source.name.clone());
    let tool_call_format = match &entry.tool_call_parser {
        Some(name) => Some(ToolCallFormat::parse_name(name).ok_or_else(|| {
            ServerError::Config(format!(
                "model `{id}`: tool_call_parser `{name}` is not known; use hermes, llama3_json or mistral"
            ))
        })?),
        None => bundle
            .tokenizer
            .chat_template_for(true)
            .ok()
            .and_then(|t| ToolCallFormat::detect(t.source())),
    };
    let g = &bundle.generation;
    let sampled = g.do_sample != Some(false);
    let defaults = SamplingDefaults {
        temperature: g.temperature.filter(|_| sampled).map(|t| t as f32),
        top_p: g.top_p.filter(|_| sampled).map(|p| p as f32),
        top_k: g.top_k.filter(|_| sampled),
        repetition_penalty: g.repetition_penalty.map(|r| r as f32),
    };
    let (bytes, special) = bundle.tokenizer.token_bytes();
    let eos: Vec<u32> = bundle.stop_token_ids.iter().map(|t| t.0).collect();
    let grammar_vocab = GrammarVocab::new(bytes, special, eos).map_err(|e| {
        ServerError::Config(format!("model `{id}`: preparing constrained decoding: {e}"))
    })?;
    let tokenizer = Arc::new(bundle.tokenizer);
    let handle = spawn_engine(bundle.model, engine.clone(), bundle.stop_token_ids.clone())
        .map_err(|source| ServerError::Engine {
            name: id.clone(),
            source,
        })?;
    handle.set_grammar_vocab(Arc::new(grammar_vocab));
    tracing::info!(model = %id, dir = %source.dir.display(), tool_call_format = ?tool_call_format, "model loaded");
    let mut names = vec![id.clone()];
    names.extend(entry.aliases.iter().cloned());
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok((
        names,
        ServedModel {
            id,
            handle,
            tokenizer,
            created,
            tool_call_format,
            defaults,
        },
    ))
}

fn load_all(
    paths: &PathsConfig,
    config: &ServeConfig,
    engine: &EngineConfig,
) -> Result<ModelRegistry, ServerError> {
    let mut models = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in &config.models {
        let (names, model) = load_model(paths, entry, engine)?;
        if let Some(dup) = names.iter().find(|n| !seen.insert((*n).clone())) {
            return Err(ServerError::DuplicateName(dup.clone()));
        }
        models.push((names, Arc::new(model)));
    }
    let mut embedders = Vec::new();
    for entry in &config.embedding_models {
        let (names, model) = load_embedding_model(entry)?;
        if let Some(dup) = names.iter().find(|n| !seen.insert((*n).clone())) {
            return Err(ServerError::DuplicateName(dup.clone()));
        }
        embedders.push((
            names,
            Arc::new(ServedEmbedder {
                model: Arc::new(model),
                created: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            }),
        ));
    }
    Ok(ModelRegistry::new(models).with_embedders(embedders))
}

/// Loads a sentence-transformers folder; its names are NAME (or the folder name) and aliases.
pub fn load_embedding_model(
    entry: &ModelEntry,
) -> Result<(Vec<String>, EmbeddingModel), ServerError> {
    let path = entry.path.as_deref().unwrap_or_default();
    let started = std::time::Instant::now();
    let model = EmbeddingModel::load(std::path::Path::new(path), entry.name.clone())?;
    tracing::info!(
        model = model.id(),
        dimension = model.dimension(),
        max_input_tokens = model.max_input_len(),
        pooling = model.layout().pooling.name(),
        normalize = model.layout().normalize,
        secs = started.elapsed().as_secs_f32(),
        "embedding model loaded"
    );
    let mut names = vec![model.id().to_string()];
    names.extend(entry.aliases.iter().cloned());
    Ok((names, model))
}

/// Opens the knowledge base with every served embedding model, when there is one. The
/// directory lock makes a second server (or a writing `enclave kb`) on the same data fail fast.
fn open_knowledge(
    paths: &PathsConfig,
    registry: &ModelRegistry,
    reranker: Option<String>,
) -> Result<Option<Arc<KnowledgeBase>>, ServerError> {
    let mut embedders: Vec<Arc<dyn Embedder>> = Vec::new();
    for e in registry.embedders.values() {
        if !embedders.iter().any(|x| x.model_id() == e.model.id()) {
            embedders.push(e.model.clone());
        }
    }
    if embedders.is_empty() {
        return Ok(None);
    }
    let dir = paths.knowledge_dir();
    let kb = KnowledgeBase::open(&dir, embedders, OpenMode::ReadWrite)?;
    if let Some(spec) = &reranker {
        let (name, path) = crate::config::serve::split_named(spec);
        let r = Reranker::load(std::path::Path::new(path), name, None)?;
        tracing::info!(reranker = r.id(), "knowledge-base searches are reranked");
        kb.set_reranker(Arc::new(r));
    }
    tracing::info!(dir = %dir.display(), collections = kb.store().collections()?.len(), "knowledge base open");
    Ok(Some(Arc::new(kb)))
}

/// The agents' generator over every served chat model, the first being the default.
pub fn engine_generator(registry: &ModelRegistry) -> EngineGenerator {
    EngineGenerator::new(
        registry
            .list
            .iter()
            .map(|m| EngineModel {
                names: registry
                    .by_name
                    .iter()
                    .filter(|(_, x)| Arc::ptr_eq(x, m))
                    .map(|(n, _)| n.clone())
                    .collect(),
                handle: m.handle.clone(),
                tokenizer: m.tokenizer.clone(),
            })
            .collect(),
    )
}

/// Opens the support store, builds the built-in demo agent (unless turned off or overridden
/// by a file of the same name) and every agent in the agents folder.
pub fn start_agents(
    paths: &PathsConfig,
    config: &ServeConfig,
    registry: &ModelRegistry,
    kb: Option<Arc<KnowledgeBase>>,
) -> Result<Arc<AgentService>, ServerError> {
    let embedder: Option<Arc<dyn Embedder>> = registry
        .embedders
        .values()
        .next()
        .map(|e| e.model.clone() as Arc<dyn Embedder>);
    let dir = config
        .agents_dir
        .clone()
        .unwrap_or_else(|| paths.agents_dir());
    let store = SupportStore::open(&paths.support_db()).map_err(AgentError::from)?;
    let mut service = AgentService::new(
        store,
        Arc::new(engine_generator(registry)),
        Arc::new(SystemClock),
        Some(dir.clone()),
    );
    service.build_context = BuildContext {
        embedder: embedder.clone(),
        kb: kb.clone(),
    };
    service.model_names = registry.by_name.keys().cloned().collect();
    service.resolution_window_ms = i64::from(config.resolution_window_days) * 24 * 3_600_000;
    let catalog = service.catalog();
    let matching = if embedder.is_some() {
        "embeddings"
    } else {
        "BM25"
    };
    if config.demo_agent && !dir.join(format!("{DEMO_AGENT}.toml")).is_file() {
        let (def, text) = demo::definition(&catalog).map_err(AgentError::from)?;
        let retriever = demo::retriever(kb.as_ref(), embedder.as_ref().map(|e| e.model_id()))?;
        let rt = registry::build(
            def,
            text,
            &service.build_context,
            &service.store,
            Some(retriever),
        )?;
        service.install(rt);
    }
    if embedder.is_none() {
        tracing::warn!(
            "no embedding model: agents match intents and retrieve knowledge with BM25 alone; \
             start with --embedding-model FOLDER to use embeddings as well"
        );
    }
    for (def, text) in registry::read_dir(&dir, &catalog)? {
        let rt = registry::build(def, text, &service.build_context, &service.store, None)?;
        service.install(rt);
    }
    for rt in service.agents() {
        tracing::info!(
            agent = rt.def.name(),
            intents = rt.intents.len(),
            intent_matching = matching,
            knowledge = if rt.full_context.is_some() {
                "full_context"
            } else {
                rt.retriever.as_ref().map_or("none", |r| r.method())
            },
            "support agent ready"
        );
    }
    Ok(Arc::new(service))
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Serves `app` on `listener` (over TLS when configured) until `stop` turns true, then lets
/// open requests finish.
fn spawn_server(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServerError> {
    let mut drained = stop;
    let Some(tls) = tls else {
        return Ok(tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = drained.wait_for(|stop| *stop).await;
                })
                .into_future(),
        ));
    };
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        let _ = drained.wait_for(|stop| *stop).await;
        on_stop.graceful_shutdown(None);
    });
    let listener = listener
        .into_std()
        .map_err(|e| ServerError::Serve(e.to_string()))?;
    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)
        .map_err(|e| ServerError::Serve(e.to_string()))?
        .handle(handle);
    Ok(tokio::spawn(server.serve(app.into_make_service())))
}

/// Runs the server until a termination signal (then drains) or a fatal error.
/// `on_listening` is told the bound address before any model loads.
pub async fn run(
    config: ServeConfig,
    paths: PathsConfig,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let digests = config
        .api_key_hashes
        .iter()
        .map(|h| KeyDigest::parse(h))
        .collect::<Result<Vec<_>, _>>()?;
    // Bad engine settings and TLS files fail before the port is taken.
    let engine = engine_config(&config.engine)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::tls::server_config(cert, key)?),
        None => None,
    };
    let lifecycle = Arc::new(Lifecycle::default());
    let state = AppState::new(
        ApiKeys::new(digests),
        HttpLimits {
            max_body_bytes: config.max_body_bytes,
            max_concurrent_per_key: config.max_concurrent_per_key,
        },
        lifecycle.clone(),
    );
    let app = router(
        state.clone(),
        &CorsConfig {
            allowed_origins: config.cors_origins.clone(),
        },
    );
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: addr.clone(),
        source,
    })?;
    on_listening(local);

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = spawn_server(listener, app, tls, stop_rx.clone())?;
    let signal_tx = stop_tx.clone();
    let signal_lifecycle = lifecycle.clone();
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutting down: no new requests; finishing those in flight");
        signal_lifecycle.begin_shutdown();
        let _ = signal_tx.send(true);
    });

    let (load_paths, load_config) = (paths.clone(), config.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        let registry = load_all(&load_paths, &load_config, &engine)?;
        let kb = open_knowledge(&load_paths, &registry, load_config.reranker.clone())?;
        let agents = start_agents(&load_paths, &load_config, &registry, kb.clone())?;
        Ok::<_, ServerError>((registry, kb, agents))
    })
    .await
    .map_err(|e| ServerError::Serve(e.to_string()))?;
    match loaded {
        Ok((registry, kb, agents)) => {
            if let Some(kb) = kb {
                state.install_knowledge(kb);
            }
            state.install_agents(agents);
            state.install_models(registry)
        }
        Err(e) => {
            lifecycle.begin_shutdown();
            let _ = stop_tx.send(true);
            return Err(e);
        }
    }
    tracing::info!(%local, "ready");

    let timeout = config.shutdown_timeout;
    let mut stopping = stop_rx;
    let deadline = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        result = server => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServerError::Serve(e.to_string())),
            Err(e) => Err(ServerError::Serve(e.to_string())),
        },
        _ = deadline => {
            tracing::warn!(timeout_secs = timeout.as_secs(), "requests still in flight at the shutdown timeout; exiting anyway");
            Ok(())
        }
    }
}
