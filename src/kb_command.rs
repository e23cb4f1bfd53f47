//! `enclave kb`: create, fill, list, search, prune and rebuild knowledge-base collections from
//! the command line. Part of the binary, so it may use `anyhow`.
//!
//! Writing commands take the knowledge directory's lock and fail with one line when a running
//! server holds it; `list` and `search` only read.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use enclave::config::serve::split_named;
use enclave::config::PathsConfig;
use enclave::embedding::{EmbeddingModel, Reranker};
use enclave::knowledge::formats::KindHint;
use enclave::knowledge::{
    Collection, CollectionParams, Embedder, IngestEvent, IngestOptions, KnowledgeBase, OpenMode,
    SearchFilter, SearchMode, SearchRequest,
};

#[derive(Args)]
pub struct KbArgs {
    #[command(subcommand)]
    command: KbCommand,
}

#[derive(Subcommand)]
enum KbCommand {
    /// Create a collection, bound for good to one embedding model and its dimension
    Create(CreateArgs),
    /// Ingest files or folders (recursively): Markdown, text, HTML, PDF, DOCX, CSV/JSONL tickets, macros or FAQs, zip exports. Re-ingesting re-embeds only what changed and drops what was deleted
    Add(AddArgs),
    /// List collections, or with a name, that collection's documents
    List(ListArgs),
    /// Search one or more collections (comma-separated) by hybrid, BM25 or vector search
    Search(SearchArgs),
    /// Delete a collection, or some of its documents
    Remove(RemoveArgs),
    /// Rebuild a collection's vector index from the SQLite store
    Rebuild(RebuildArgs),
}

#[derive(Args)]
struct ModelArg {
    /// The collection's embedding model folder (sentence-transformers layout); NAME=FOLDER to give its id [default: the folder recorded when the collection was created]
    #[arg(long)]
    embedding_model: Option<String>,
}

#[derive(Args)]
struct CreateArgs {
    name: String,
    /// The embedding model folder (sentence-transformers layout); NAME=FOLDER to give its id
    #[arg(long)]
    embedding_model: String,
    /// How the index stores vectors: f32, f16 or i8
    #[arg(long, default_value = "f32")]
    quantization: String,
    /// Tokens per chunk, special tokens and heading context included [default: the model's maximum, at most 256]
    #[arg(long)]
    chunk_tokens: Option<usize>,
    /// Tokens repeated between consecutive chunks [default: 32]
    #[arg(long)]
    chunk_overlap: Option<usize>,
}

#[derive(Args)]
struct AddArgs {
    collection: String,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// How to read CSV/JSONL/JSON records: auto (by their columns), tickets, macros or faq
    #[arg(long, default_value = "auto")]
    kind: String,
    /// A tag for every document ingested, repeatable
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[command(flatten)]
    model: ModelArg,
}

#[derive(Args)]
struct ListArgs {
    collection: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SearchArgs {
    /// One collection, or several separated by commas
    collections: String,
    query: String,
    /// Hits to return (1 to 100)
    #[arg(short = 'k', long, default_value_t = 5)]
    top_k: usize,
    /// hybrid (BM25 and vector, fused), bm25 or vector
    #[arg(long, default_value = "hybrid")]
    mode: String,
    /// Only these source types (markdown, text, html, pdf, docx, ticket, macro, faq), repeatable
    #[arg(long = "source-type")]
    source_types: Vec<String>,
    /// Only documents with every one of these tags, repeatable
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only documents in these languages, repeatable
    #[arg(long = "language")]
    languages: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// A cross-encoder folder ([NAME=]FOLDER) that reorders the best hits
    #[arg(long)]
    reranker: Option<String>,
    #[command(flatten)]
    model: ModelArg,
}

#[derive(Args)]
struct RemoveArgs {
    collection: String,
    /// Remove only this document (an id from `kb list COLLECTION`), repeatable
    #[arg(long = "document")]
    documents: Vec<i64>,
}

#[derive(Args)]
struct RebuildArgs {
    collection: String,
}

/// Loads `NAME=FOLDER` or `FOLDER`.
fn load_model(spec: &str) -> Result<Arc<EmbeddingModel>> {
    let (name, path) = split_named(spec);
    let model = EmbeddingModel::load(Path::new(path), name)?;
    Ok(Arc::new(model))
}

/// The model for existing collections: the flag's, else each collection's recorded folder.
fn models_for(
    kb_dir: &Path,
    flag: Option<&str>,
    names: &[String],
) -> Result<Vec<Arc<dyn Embedder>>> {
    if let Some(spec) = flag {
        return Ok(vec![load_model(spec)? as Arc<dyn Embedder>]);
    }
    let store = KnowledgeBase::open_store(kb_dir)?;
    let mut out: Vec<Arc<dyn Embedder>> = Vec::new();
    for name in names {
        let c = store.collection(name)?;
        if out.iter().any(|e| e.model_id() == c.embedding_model) {
            continue;
        }
        let Some(path) = &c.embedding_path else {
            bail!(
                "collection `{name}` records no model folder; pass --embedding-model {}=FOLDER",
                c.embedding_model
            );
        };
        let spec = format!("{}={path}", c.embedding_model);
        out.push(load_model(&spec).with_context(|| {
            format!(
                "loading `{}` from {path}, where collection `{name}` was created; pass \
                 --embedding-model if it has moved",
                c.embedding_model
            )
        })?);
    }
    Ok(out)
}

pub fn run(paths: &PathsConfig, args: KbArgs) -> Result<()> {
    let dir = paths.knowledge_dir();
    match args.command {
        KbCommand::Create(a) => create(&dir, a),
        KbCommand::Add(a) => add(&dir, a),
        KbCommand::List(a) => list(&dir, a),
        KbCommand::Search(a) => search(&dir, a),
        KbCommand::Remove(a) => remove(&dir, a),
        KbCommand::Rebuild(a) => {
            let e = models_for(&dir, None, std::slice::from_ref(&a.collection)).unwrap_or_default();
            let kb = KnowledgeBase::open(&dir, e, OpenMode::ReadWrite)?;
            let n = kb.rebuild(&a.collection)?;
            println!("rebuilt `{}`: {n} vectors", a.collection);
            Ok(())
        }
    }
}

fn create(dir: &Path, a: CreateArgs) -> Result<()> {
    let model = load_model(&a.embedding_model)?;
    let folder = model
        .dir()
        .canonicalize()
        .unwrap_or_else(|_| model.dir().to_path_buf());
    let id = model.id().to_string();
    let kb = KnowledgeBase::open(dir, vec![model as Arc<dyn Embedder>], OpenMode::ReadWrite)?;
    let c = kb.create_collection(
        &a.name,
        &id,
        Some(folder.to_string_lossy().into_owned()),
        CollectionParams {
            quantization: a.quantization.parse()?,
            chunk_tokens: a.chunk_tokens,
            chunk_overlap: a.chunk_overlap,
            ..Default::default()
        },
    )?;
    println!(
        "created `{}`: model {} ({} dimensions), {} index, chunks of {} tokens overlapping {}",
        c.name,
        c.embedding_model,
        c.dimension,
        c.quantization.as_str(),
        c.chunk_tokens,
        c.chunk_overlap
    );
    Ok(())
}

fn progress_bar(total: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn add(dir: &Path, a: AddArgs) -> Result<()> {
    let kind: KindHint = a.kind.parse().map_err(|e| anyhow::anyhow!("--kind: {e}"))?;
    let embedders = models_for(
        dir,
        a.model.embedding_model.as_deref(),
        std::slice::from_ref(&a.collection),
    )?;
    let kb = KnowledgeBase::open(dir, embedders, OpenMode::ReadWrite)?;
    let options = IngestOptions {
        kind,
        tags: a.tags,
        ..Default::default()
    };
    let mut failed = 0;
    for path in &a.paths {
        let bar = progress_bar(0);
        let mut on_event = |e: &IngestEvent| match e {
            IngestEvent::Planned { files } => bar.set_length(*files as u64),
            IngestEvent::FileDone { .. } => bar.inc(1),
            IngestEvent::FileFailed { path, error } => {
                bar.suspend(|| eprintln!("skipped {path}: {error}"));
                bar.inc(1);
            }
            IngestEvent::MemberFailed { path, error } => {
                bar.suspend(|| eprintln!("skipped {path}: {error}"))
            }
            IngestEvent::DocumentWritten { title, .. } => bar.set_message(title.clone()),
        };
        let r = kb.ingest_path(&a.collection, path, &options, &mut on_event)?;
        bar.finish_and_clear();
        failed += r.errors.len();
        println!(
            "{}: {} files; documents {} added, {} updated, {} unchanged, {} removed; {} chunks \
             written; {} errors",
            path.display(),
            r.files,
            r.documents_added,
            r.documents_updated,
            r.documents_unchanged,
            r.documents_removed,
            r.chunks_written,
            r.errors.len()
        );
    }
    if failed > 0 {
        bail!(
            "{failed} files could not be ingested (listed above); fix or remove them and run again"
        );
    }
    Ok(())
}

fn print_collection(c: &Collection) {
    println!(
        "{:<24} {:>6} docs {:>8} chunks  {} ({}d, {})",
        c.name,
        c.num_documents,
        c.num_chunks,
        c.embedding_model,
        c.dimension,
        c.quantization.as_str()
    );
}

fn list(dir: &Path, a: ListArgs) -> Result<()> {
    let store = KnowledgeBase::open_store(dir)?;
    match a.collection {
        None => {
            let cs = store.collections()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&cs)?);
            } else if cs.is_empty() {
                println!("no collections yet; create one with `enclave kb create NAME --embedding-model FOLDER`");
            } else {
                cs.iter().for_each(print_collection);
            }
        }
        Some(name) => {
            let c = store.collection(&name)?;
            let docs = store.documents(&c, usize::MAX >> 1, 0)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&docs)?);
            } else {
                print_collection(&c);
                for d in docs {
                    println!(
                        "{:>6}  {:<8} {:>4} chunks  v{}  {}  ({}{})",
                        d.id,
                        d.source_type,
                        d.num_chunks,
                        d.version,
                        d.title,
                        d.source,
                        if d.doc_key.is_empty() {
                            String::new()
                        } else {
                            format!(" #{}", d.doc_key)
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

fn search(dir: &Path, a: SearchArgs) -> Result<()> {
    let collections: Vec<String> = a
        .collections
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mode: SearchMode = a.mode.parse()?;
    let embedders = if mode == SearchMode::Bm25 {
        Vec::new()
    } else {
        models_for(dir, a.model.embedding_model.as_deref(), &collections)?
    };
    let kb = KnowledgeBase::open(dir, embedders, OpenMode::ReadOnly)?;
    if let Some(spec) = &a.reranker {
        let (name, path) = split_named(spec);
        kb.set_reranker(Arc::new(Reranker::load(Path::new(path), name, None)?));
    }
    let hits = kb.search(&SearchRequest {
        collections,
        query: a.query,
        top_k: a.top_k,
        filter: SearchFilter {
            source_types: a.source_types,
            tags: a.tags,
            languages: a.languages,
        },
        mode,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no matches");
    }
    for (i, h) in hits.iter().enumerate() {
        let c = &h.chunk;
        println!(
            "{}. [{:.4}] {} — {} (chars {}..{})",
            i + 1,
            h.score,
            c.title,
            c.url.as_deref().unwrap_or(&c.source),
            c.char_start,
            c.char_end
        );
        if !c.heading_path.is_empty() {
            println!("   {}", c.heading_path);
        }
        let preview: String = c.text.chars().take(240).collect();
        println!("   {}", preview.replace('\n', " "));
    }
    Ok(())
}

fn remove(dir: &Path, a: RemoveArgs) -> Result<()> {
    let kb = KnowledgeBase::open(dir, Vec::new(), OpenMode::ReadWrite)?;
    if a.documents.is_empty() {
        let c = kb.delete_collection(&a.collection)?;
        println!(
            "deleted collection `{}` ({} documents, {} chunks)",
            c.name, c.num_documents, c.num_chunks
        );
    } else {
        let chunks = kb.remove_documents(&a.collection, &a.documents)?;
        println!(
            "removed {} documents ({chunks} chunks) from `{}`",
            a.documents.len(),
            a.collection
        );
    }
    Ok(())
}
