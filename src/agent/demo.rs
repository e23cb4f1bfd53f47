//! The built-in demo agent, `demo-retail`: a retailer's support agent whose intents are the
//! subflows of ABCD (the Action-Based Conversations Dataset, ASAPP Research, MIT licence) and
//! whose knowledge is ABCD's agent guidelines, one document per subflow. Both are compiled
//! into the binary, so a fresh machine serves it with nothing else installed.
//!
//! With an embedding model, the guidelines are kept in the knowledge base's `demo-retail`
//! collection (re-ingested only when they change) and searched hybrid; without one, BM25 over
//! the same documents in memory. Depends on `definition`, `retrieval` and `knowledge`.

use std::path::Path;

use serde_json::Value;

use super::definition::{Catalog, Definition, DefinitionError};
use std::sync::Arc;

use super::retrieval::{KbRetriever, LexicalRetriever, MemoryDocument, Retriever};
use crate::knowledge::{
    CollectionParams, IngestOptions, KnowledgeBase, KnowledgeError, SearchMode,
};

pub const DEMO_AGENT: &str = "demo-retail";
pub const DEMO_COLLECTION: &str = "demo-retail";
const DEFINITION: &str = include_str!("demo/demo-retail.toml");
const GUIDELINES: &str = include_str!("demo/abcd-guidelines.json");

/// The demo's catalog: its own collection always exists (in the knowledge base or in memory).
struct DemoCatalog<'a>(&'a dyn Catalog);

impl Catalog for DemoCatalog<'_> {
    fn has_collection(&self, name: &str) -> bool {
        name == DEMO_COLLECTION || self.0.has_collection(name)
    }
    fn has_model(&self, name: &str) -> bool {
        self.0.has_model(name)
    }
}

pub fn definition(catalog: &dyn Catalog) -> Result<(Definition, String), DefinitionError> {
    let def = Definition::parse(
        DEFINITION,
        Path::new("<built-in>/demo-retail.toml"),
        &DemoCatalog(catalog),
    )?;
    Ok((def, DEFINITION.to_string()))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// One Markdown document per ABCD subflow: its flow, instructions and each step.
pub fn documents() -> Vec<MemoryDocument> {
    let Ok(Value::Object(flows)) = serde_json::from_str::<Value>(GUIDELINES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (flow, fv) in &flows {
        let Some(subflows) = fv["subflows"].as_object() else {
            continue;
        };
        for (sub, sv) in subflows {
            let mut md = format!("{flow}: {}\n\n", text(&fv["description"]));
            for line in sv["instructions"].as_array().into_iter().flatten() {
                md.push_str(text(line));
                md.push_str("\n\n");
            }
            for a in sv["actions"].as_array().into_iter().flatten() {
                let button = text(&a["button"]);
                let heading = if button.is_empty() || button == "N/A" {
                    "Step"
                } else {
                    button
                };
                md.push_str(&format!("## {heading}\n\n{}\n\n", text(&a["text"])));
                for s in a["subtext"].as_array().into_iter().flatten() {
                    md.push_str(&format!("- {}\n", text(s)));
                }
                md.push('\n');
            }
            out.push(MemoryDocument {
                title: sub.clone(),
                source: format!("abcd-guidelines/{flow}/{sub}"),
                text: md,
            });
        }
    }
    out
}

/// Where the demo's knowledge is searched: the knowledge base (hybrid, its documents ingested
/// first) when there is one with an embedding model; else BM25 over the documents in memory.
pub fn retriever(
    kb: Option<&Arc<KnowledgeBase>>,
    model_id: Option<&str>,
) -> Result<Arc<dyn Retriever>, KnowledgeError> {
    let (Some(kb), Some(model_id)) = (kb, model_id) else {
        return Ok(Arc::new(LexicalRetriever::new(documents())));
    };
    let written = ingest(kb, model_id)?;
    tracing::info!(documents = written, "demo-retail knowledge ingested");
    Ok(Arc::new(KbRetriever {
        kb: kb.clone(),
        collections: vec![DEMO_COLLECTION.to_string()],
        mode: SearchMode::Hybrid,
    }))
}

/// Puts the demo's documents in the knowledge base (creating the collection with the first
/// embedding model), re-embedding only those that changed. Returns the documents written.
pub fn ingest(kb: &KnowledgeBase, model_id: &str) -> Result<usize, KnowledgeError> {
    if kb.store().collection(DEMO_COLLECTION).is_err() {
        kb.create_collection(DEMO_COLLECTION, model_id, None, CollectionParams::default())?;
    }
    let options = IngestOptions::default();
    let mut written = 0;
    for d in documents() {
        let body = format!("# {}\n\n{}", d.title, d.text);
        let r = kb.ingest_bytes(
            DEMO_COLLECTION,
            &d.source,
            &format!("{}.md", d.title),
            body.as_bytes(),
            &options,
        )?;
        written += r.documents_added + r.documents_updated;
    }
    if written > 0 {
        kb.save_index(DEMO_COLLECTION)?;
    }
    Ok(written)
}
