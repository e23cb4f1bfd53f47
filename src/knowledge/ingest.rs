//! Ingestion: files and folders (or uploaded bytes) parsed, chunked, embedded and written,
//! one transaction per document.
//!
//! Owns change detection: a document's content hash covers everything that reaches its chunks,
//! so re-ingesting a folder re-embeds only what changed, and documents whose file (or whose
//! record inside a file) is gone are removed. A file that fails to parse is reported and its
//! stored documents are kept. Embedding is batched across documents; each document is still
//! committed on its own, so a killed process leaves every document whole or absent.
//! Depends on `formats`, `chunk`, `store`, the collection's indexes and the `Embedder` trait.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::chunk::{chunk_sections, ChunkParams};
use super::error::{KnowledgeError, Result};
use super::formats::{self, KindHint, ParseLimits, ParsedDocument};
use super::kb::KnowledgeBase;
use super::store::StoredDocument;
use super::types::{Collection, NewChunk, NewDocument};
use super::Embedder;

/// Chunks embedded per call, across documents.
const EMBED_BATCH_CHUNKS: usize = 128;
/// The index is saved at least this often during a long ingest.
const SAVE_EVERY_CHUNKS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub kind: KindHint,
    /// Added to every document ingested.
    pub tags: Vec<String>,
    pub limits: ParseLimits,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            kind: KindHint::Auto,
            tags: Vec::new(),
            limits: ParseLimits::default(),
        }
    }
}

/// Progress, reported as ingestion goes.
#[derive(Debug, Clone)]
pub enum IngestEvent {
    /// The files found, before any is parsed.
    Planned {
        files: usize,
    },
    FileDone {
        path: String,
        documents: usize,
    },
    FileFailed {
        path: String,
        error: String,
    },
    /// One member of an archive could not be read; the archive's other members go on.
    MemberFailed {
        path: String,
        error: String,
    },
    DocumentWritten {
        source: String,
        title: String,
        chunks: usize,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestReport {
    pub files: usize,
    pub documents_added: usize,
    pub documents_updated: usize,
    pub documents_unchanged: usize,
    pub documents_removed: usize,
    pub chunks_written: usize,
    /// (path or archive member, message) for each file that could not be ingested.
    pub errors: Vec<(String, String)>,
}

struct Pending {
    doc: NewDocument,
    texts: Vec<String>,
    existed: bool,
}

/// One ingest run: the collection, its embedder, and what has been done so far.
struct Run<'a> {
    kb: &'a KnowledgeBase,
    collection: Collection,
    embedder: Arc<dyn Embedder>,
    options: &'a IngestOptions,
    report: IngestReport,
    pending: Vec<Pending>,
    pending_chunks: usize,
    since_save: usize,
    progress: &'a mut dyn FnMut(&IngestEvent),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn walk(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = e.file_type()?;
        if kind.is_dir() {
            walk(&e.path(), out)?;
        } else if kind.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

impl KnowledgeBase {
    /// Ingests a file or, recursively, a folder. Documents that came from under `path` before
    /// and are gone now are removed.
    pub fn ingest_path(
        &self,
        collection: &str,
        path: &Path,
        options: &IngestOptions,
        progress: &mut dyn FnMut(&IngestEvent),
    ) -> Result<IngestReport> {
        let root = path.canonicalize().map_err(|source| KnowledgeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut files = Vec::new();
        if root.is_dir() {
            walk(&root, &mut files).map_err(|source| KnowledgeError::Io {
                path: root.clone(),
                source,
            })?;
            files.retain(|f| formats::detect(f, options.kind).is_some());
        } else {
            files.push(root.clone());
        }
        let mut run = self.start_run(collection, options, progress)?;
        (run.progress)(&IngestEvent::Planned { files: files.len() });
        let root_source = root.to_string_lossy().into_owned();
        let stored = self
            .store
            .documents_under(run.collection.id, &root_source)?;
        let mut by_source: HashMap<String, Vec<StoredDocument>> = HashMap::new();
        for d in stored {
            by_source.entry(d.source.clone()).or_default().push(d);
        }
        let mut seen_sources = HashSet::new();
        for file in &files {
            let source = file.to_string_lossy().into_owned();
            seen_sources.insert(source.clone());
            let result = formats::parse_file(file, options.kind, &options.limits);
            let known = by_source.remove(&source).unwrap_or_default();
            run.file(&source, result, known)?;
        }
        // Whatever remains was stored from a file that no longer exists.
        let gone: Vec<i64> = by_source
            .into_values()
            .flatten()
            .filter(|d| !seen_sources.contains(&d.source))
            .map(|d| d.id)
            .collect();
        run.remove(&gone)?;
        run.finish()
    }

    /// Ingests one uploaded file. `source` names it in the store (an upload id, say).
    pub fn ingest_bytes(
        &self,
        collection: &str,
        source: &str,
        filename: &str,
        bytes: &[u8],
        options: &IngestOptions,
    ) -> Result<IngestReport> {
        let mut ignore = |_: &IngestEvent| {};
        let mut run = self.start_run(collection, options, &mut ignore)?;
        let known = self.store.documents_under(run.collection.id, source)?;
        let known = known.into_iter().filter(|d| d.source == source).collect();
        let result =
            formats::parse_bytes(Path::new(filename), bytes, options.kind, &options.limits);
        run.file(source, result, known)?;
        run.finish()
    }

    fn start_run<'a>(
        &'a self,
        collection: &str,
        options: &'a IngestOptions,
        progress: &'a mut dyn FnMut(&IngestEvent),
    ) -> Result<Run<'a>> {
        let collection = self.store.collection(collection)?;
        let embedder = self.embedder_for(&collection)?;
        Ok(Run {
            kb: self,
            collection,
            embedder,
            options,
            report: IngestReport::default(),
            pending: Vec::new(),
            pending_chunks: 0,
            since_save: 0,
            progress,
        })
    }
}

impl Run<'_> {
    fn file(
        &mut self,
        source: &str,
        parsed: std::result::Result<formats::ParseOutput, formats::FormatError>,
        known: Vec<StoredDocument>,
    ) -> Result<()> {
        self.report.files += 1;
        let output = match parsed {
            Ok(o) => o,
            Err(e) => {
                let error = e.to_string();
                self.report.errors.push((source.to_string(), error.clone()));
                (self.progress)(&IngestEvent::FileFailed {
                    path: source.into(),
                    error,
                });
                return Ok(());
            }
        };
        for (member, e) in &output.member_errors {
            let name = format!("{source}/{member}");
            self.report.errors.push((name.clone(), e.to_string()));
            (self.progress)(&IngestEvent::MemberFailed {
                path: name,
                error: e.to_string(),
            });
        }
        let mut known: HashMap<String, StoredDocument> =
            known.into_iter().map(|d| (d.doc_key.clone(), d)).collect();
        let failed_members: HashSet<&str> = output
            .member_errors
            .iter()
            .map(|(m, _)| m.as_str())
            .collect();
        let count = output.documents.len();
        for parsed in output.documents {
            let previous = known.remove(&parsed.key);
            self.document(source, parsed, previous)?;
        }
        // Records gone from the file go; a member that failed to parse keeps its old version.
        let from_failed = |key: &str| {
            failed_members.iter().any(|m| {
                key == *m
                    || key
                        .strip_prefix(*m)
                        .is_some_and(|rest| rest.starts_with('#'))
            })
        };
        let gone: Vec<i64> = known
            .into_values()
            .filter(|d| !from_failed(&d.doc_key))
            .map(|d| d.id)
            .collect();
        self.remove(&gone)?;
        (self.progress)(&IngestEvent::FileDone {
            path: source.into(),
            documents: count,
        });
        Ok(())
    }

    fn document(
        &mut self,
        source: &str,
        parsed: ParsedDocument,
        previous: Option<StoredDocument>,
    ) -> Result<()> {
        let mut tags = parsed.tags.clone();
        tags.extend(self.options.tags.iter().cloned());
        tags.sort();
        tags.dedup();
        let hash = content_hash(&parsed, &tags);
        if previous.as_ref().is_some_and(|p| p.content_hash == hash) {
            self.report.documents_unchanged += 1;
            return Ok(());
        }
        let e = &self.embedder;
        let specials = e.special_tokens();
        let params = ChunkParams {
            max_tokens: self.collection.chunk_tokens.saturating_sub(specials),
            overlap_tokens: self.collection.chunk_overlap,
        };
        let count = |t: &str| e.count_tokens(t);
        let (content, pieces) = chunk_sections(&parsed.sections, params, &count);
        let texts: Vec<String> = pieces.iter().map(|p| p.embedding_text()).collect();
        let chunks = pieces
            .into_iter()
            .zip(&texts)
            .enumerate()
            .map(|(position, (p, t))| NewChunk {
                position,
                token_count: e.count_tokens(t) + specials,
                heading_path: p.heading_path,
                text: p.text,
                char_start: p.char_start,
                char_end: p.char_end,
                embedding: Vec::new(),
            })
            .collect();
        let mut metadata = parsed.metadata;
        metadata.insert("file_name".into(), json!(file_name(source)));
        let doc = NewDocument {
            source: source.into(),
            doc_key: parsed.key,
            source_type: parsed.source_type.as_str().into(),
            title: parsed.title,
            url: parsed.url,
            language: parsed.language,
            content,
            content_hash: hash,
            metadata,
            tags,
            chunks,
        };
        self.pending_chunks += texts.len();
        self.pending.push(Pending {
            doc,
            texts,
            existed: previous.is_some(),
        });
        if self.pending_chunks >= EMBED_BATCH_CHUNKS {
            self.flush()?;
        }
        Ok(())
    }

    /// Embeds every pending document's chunks in one call, then commits each document.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = self.pending.iter().flat_map(|p| p.texts.clone()).collect();
        let vectors =
            self.embedder
                .embed_documents(&texts)
                .map_err(|message| KnowledgeError::Embedding {
                    model: self.embedder.model_id().into(),
                    message,
                })?;
        let mut vectors = vectors.into_iter();
        let index = self.kb.index(&self.collection)?;
        for mut p in std::mem::take(&mut self.pending) {
            for c in &mut p.doc.chunks {
                c.embedding = vectors.next().unwrap_or_default();
            }
            let outcome = self.kb.store.upsert_document(self.collection.id, &p.doc)?;
            for id in &outcome.removed_chunks {
                index.remove(*id)?;
            }
            // Chunks are stored in the order given, so ids and chunks line up.
            for ((id, v), c) in outcome.added_chunks.iter().zip(&p.doc.chunks) {
                index.add(*id, &c.heading_path, &c.text, v)?;
            }
            if p.existed {
                self.report.documents_updated += 1;
            } else {
                self.report.documents_added += 1;
            }
            self.report.chunks_written += p.doc.chunks.len();
            self.since_save += p.doc.chunks.len();
            (self.progress)(&IngestEvent::DocumentWritten {
                source: p.doc.source.clone(),
                title: p.doc.title.clone(),
                chunks: p.doc.chunks.len(),
            });
        }
        self.pending_chunks = 0;
        if self.since_save >= SAVE_EVERY_CHUNKS {
            self.kb.save_index(&self.collection.name)?;
            self.since_save = 0;
        }
        Ok(())
    }

    fn remove(&mut self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let removed = self.kb.store.delete_documents(self.collection.id, ids)?;
        let index = self.kb.index(&self.collection)?;
        for id in removed {
            index.remove(id)?;
        }
        self.report.documents_removed += ids.len();
        Ok(())
    }

    fn finish(mut self) -> Result<IngestReport> {
        self.flush()?;
        self.kb.save_index(&self.collection.name)?;
        Ok(self.report)
    }
}

fn file_name(source: &str) -> String {
    Path::new(source)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| source.to_string())
}

/// Covers everything that reaches the stored document and its chunks.
fn content_hash(doc: &ParsedDocument, tags: &[String]) -> String {
    let sections: Vec<Value> = doc
        .sections
        .iter()
        .map(|s| json!([s.heading_path, s.text]))
        .collect();
    let canonical = json!({
        "title": doc.title,
        "type": doc.source_type.as_str(),
        "sections": sections,
        "metadata": doc.metadata,
        "tags": tags,
        "url": doc.url,
        "language": doc.language,
    });
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}
