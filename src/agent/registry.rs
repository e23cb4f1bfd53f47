//! Turning definitions into running agents: reading the agents folder, building each agent's
//! intent index, escalation matcher and retriever, and writing definitions the admin API
//! receives (checked first, then saved atomically, then swapped in).
//!
//! Owns the choice of knowledge path: the knowledge base's collections (hybrid search), or
//! the retriever the caller supplies (the demo's in-memory BM25), and the `auto` rule that puts
//! the whole collection in the prompt when it fits the token budget. Depends on `definition`,
//! `intent`, `escalation`, `retrieval`, `turn` and `knowledge`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::definition::{labelled_examples, Catalog, Definition, DefinitionError, RetrievalMode};
use super::escalation::EscalationMatcher;
use super::intent::IntentIndex;
use super::retrieval::{KbRetriever, Retriever};
use super::service::{AgentError, AgentService};
use super::store::SupportStore;
use super::turn::AgentRuntime;
use crate::knowledge::{Embedder, KnowledgeBase, SearchMode};

/// What agents are built with.
#[derive(Clone, Default)]
pub struct BuildContext {
    pub embedder: Option<Arc<dyn Embedder>>,
    pub kb: Option<Arc<KnowledgeBase>>,
}

/// The server's catalog: the knowledge base's collections and the served chat models.
pub struct ServerCatalog {
    pub collections: Vec<String>,
    pub models: Vec<String>,
}

impl Catalog for ServerCatalog {
    fn has_collection(&self, name: &str) -> bool {
        self.collections.iter().any(|c| c == name)
    }
    fn has_model(&self, name: &str) -> bool {
        self.models.iter().any(|m| m == name)
    }
}

/// Builds a runtime. `retriever` overrides the knowledge-base retriever (the demo's).
pub fn build(
    def: Definition,
    source: String,
    ctx: &BuildContext,
    store: &SupportStore,
    retriever: Option<Arc<dyn Retriever>>,
) -> Result<AgentRuntime, AgentError> {
    let mut examples: Vec<(String, String)> = labelled_examples(&def)
        .into_iter()
        .flat_map(|(intent, ex)| ex.into_iter().map(move |e| (intent.clone(), e)))
        .collect();
    let known: std::collections::BTreeSet<String> =
        def.intent_names().map(str::to_string).collect();
    examples.extend(
        store
            .examples(def.name())?
            .into_iter()
            .filter(|(i, _)| known.contains(i)),
    );
    let intents = IntentIndex::build(examples, ctx.embedder.clone())
        .map_err(|e| AgentError::Io(e.to_string()))?;
    let escalations = EscalationMatcher::build(&def, ctx.embedder.clone())
        .map_err(|e| AgentError::Io(e.to_string()))?;
    let retriever: Option<Arc<dyn Retriever>> = match retriever {
        Some(r) => Some(r),
        None if def.knowledge.collections.get_ref().is_empty() => None,
        None => {
            let kb = ctx.kb.clone().ok_or_else(|| {
                AgentError::Io(format!(
                    "agent `{}` uses knowledge collections, which need the knowledge base: \
                     start the server with --embedding-model FOLDER",
                    def.name()
                ))
            })?;
            Some(Arc::new(KbRetriever {
                kb,
                collections: def.knowledge.collections.get_ref().clone(),
                mode: SearchMode::Hybrid,
            }))
        }
    };
    let full_context = match (&retriever, def.knowledge.mode) {
        (None, _) | (Some(_), RetrievalMode::Rag) => None,
        (Some(r), mode) => {
            let io = |e: super::retrieval::RetrievalError| AgentError::Io(e.to_string());
            let budget = *def.knowledge.full_context_max_tokens.get_ref();
            let wanted =
                mode == RetrievalMode::FullContext || r.full_text_tokens().map_err(io)? <= budget;
            if wanted {
                Some(r.full_text().map_err(io)?)
            } else {
                None
            }
        }
    };
    Ok(AgentRuntime {
        def,
        source,
        intents,
        escalations,
        retriever,
        full_context,
    })
}

/// Every `*.toml` in `dir`, sorted by name, parsed and checked. A missing folder has none.
pub fn read_dir(
    dir: &Path,
    catalog: &dyn Catalog,
) -> Result<Vec<(Definition, String)>, AgentError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::Io(format!("{}: {e}", dir.display()))),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let def = Definition::load(&f, catalog)?;
        let text = std::fs::read_to_string(&f)
            .map_err(|e| AgentError::Io(format!("{}: {e}", f.display())))?;
        out.push((def, text));
    }
    Ok(out)
}

/// Checks `text` as agent `name`'s definition, saves it to the agents folder (atomically) and
/// swaps the running agent. Returns whether the agent is new.
pub fn put_definition(
    service: &AgentService,
    name: &str,
    text: &str,
    catalog: &dyn Catalog,
    ctx: &BuildContext,
) -> Result<bool, AgentError> {
    let dir = service.agents_dir.clone().ok_or_else(|| {
        AgentError::InvalidArgument("this server has no agents folder to write to".into())
    })?;
    let file = dir.join(format!("{name}.toml"));
    let def = Definition::parse(text, &file, catalog)?;
    if def.name() != name {
        return Err(AgentError::Definition(DefinitionError {
            file,
            line: 1,
            key: "name".into(),
            problem: format!("the file says `{}` but the URL names `{name}`", def.name()),
        }));
    }
    let rt = build(def, text.to_string(), ctx, &service.store, None)?;
    std::fs::create_dir_all(&dir).map_err(|e| AgentError::Io(format!("{}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".{name}.toml.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)
    };
    write().map_err(|e| AgentError::Io(format!("{}: {e}", file.display())))?;
    let existed = service.agent(name).is_ok();
    service.install(rt);
    Ok(!existed)
}

/// Removes agent `name`'s file and stops serving it; its conversations stay in the store.
pub fn delete_definition(service: &AgentService, name: &str) -> Result<(), AgentError> {
    service.agent(name)?;
    if let Some(dir) = &service.agents_dir {
        let file = dir.join(format!("{name}.toml"));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::Io(format!("{}: {e}", file.display()))),
        }
    }
    service.remove(name);
    Ok(())
}
