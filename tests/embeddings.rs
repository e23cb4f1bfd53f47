//! Sentence embeddings against sentence-transformers: the vectors saved by
//! `tests/fixtures/embeddings/make_fixtures.py` (PyTorch, independent of this code) must be
//! reproduced to cosine ≥ 0.9999, with the same token ids, for each architecture variant:
//! BERT with mean pooling (the real all-MiniLM-L6-v2), BERT with CLS pooling (BGE-style) and
//! XLM-RoBERTa with mean pooling (multilingual-E5-style, positions offset by the padding index).

use std::path::{Path, PathBuf};

use enclave::embedding::{EmbeddingInput, EmbeddingModel, Reranker};
use serde_json::Value;

mod common;
use common::minilm_dir;

const MIN_COSINE: f32 = 0.9999;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embeddings")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn check_against_reference(dir: &Path, reference: &str) {
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(reference)).unwrap())
            .unwrap();
    let model = EmbeddingModel::load(dir, None).unwrap();
    assert_eq!(model.dimension(), r["dimension"].as_u64().unwrap() as usize);
    let texts: Vec<String> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(r["embeddings"].clone()).unwrap();

    // Tokenization first, so a mismatch is told apart from a numerics one.
    let inputs: Vec<EmbeddingInput> = texts.iter().cloned().map(EmbeddingInput::Text).collect();
    let by_ids: Vec<EmbeddingInput> = ids.iter().cloned().map(EmbeddingInput::Tokens).collect();
    let got = model.embed(&inputs).unwrap();
    let got_from_ids = model.embed(&by_ids).unwrap();
    assert_eq!(
        got.num_tokens,
        ids.iter().map(Vec::len).sum::<usize>(),
        "{reference}: token counts differ from sentence-transformers'"
    );
    for (i, (g, w)) in got.vectors.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        assert!(
            c >= MIN_COSINE,
            "{reference}: text {i} {:?}: cosine {c} < {MIN_COSINE}",
            texts[i]
        );
        assert_eq!(g, &got_from_ids.vectors[i], "{reference}: text {i} by ids");
        if r["normalize"].as_bool().unwrap() {
            let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-5,
                "{reference}: text {i} norm {norm}"
            );
        }
    }
    // Batched output equals one text at a time, exactly: sequences are packed, not padded.
    for (i, text) in texts.iter().enumerate() {
        let alone = model.embed(&[EmbeddingInput::Text(text.clone())]).unwrap();
        assert_eq!(
            alone.vectors[0], got.vectors[i],
            "{reference}: text {i} alone"
        );
    }
}

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    check_against_reference(&minilm_dir(), "all-minilm-l6-v2.reference.json");
}

#[test]
fn bert_with_cls_pooling_matches_sentence_transformers() {
    check_against_reference(
        &fixtures().join("tiny-bert-cls"),
        "tiny-bert-cls.reference.json",
    );
}

#[test]
fn xlm_roberta_with_offset_positions_matches_sentence_transformers() {
    check_against_reference(
        &fixtures().join("tiny-xlmr-mean"),
        "tiny-xlmr-mean.reference.json",
    );
}

#[test]
fn token_arrays_outside_the_vocabulary_or_too_long_are_refused() {
    let model = EmbeddingModel::load(&fixtures().join("tiny-bert-cls"), None).unwrap();
    let too_big = EmbeddingInput::Tokens(vec![model.vocab_size() as u32]);
    let err = model.embed(&[too_big]).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let too_long = EmbeddingInput::Tokens(vec![1; model.max_input_len() + 1]);
    let err = model.embed(&[too_long]).unwrap_err().to_string();
    assert!(err.contains("maximum"), "{err}");
}

#[test]
fn a_folder_without_sentence_transformers_files_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddingModel::load(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("modules.json is missing"), "{err}");
}

fn check_reranker(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rerankers");
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.reference.json"))).unwrap(),
    )
    .unwrap();
    let max_length = r["max_length"].as_u64().unwrap() as usize;
    let model = Reranker::load(&dir.join(name), None, Some(max_length)).unwrap();
    let pairs: Vec<(String, String)> = serde_json::from_value(r["pairs"].clone()).unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone()).unwrap();
    let types: Vec<Vec<u32>> = serde_json::from_value(r["token_type_ids"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(r["scores"].clone()).unwrap();
    for (i, (q, p)) in pairs.iter().enumerate() {
        let (got_ids, got_types) = model.encode_pair(q, p).unwrap();
        assert_eq!(
            got_ids, ids[i],
            "{name}: pair {i} ids (longest-first truncation)"
        );
        assert_eq!(got_types, types[i], "{name}: pair {i} token types");
    }
    // One query per call, as search uses it; every pair of the fixture in turn.
    for (i, (q, p)) in pairs.iter().enumerate() {
        let got = model.score(q, std::slice::from_ref(p)).unwrap()[0];
        assert!(
            (got - want[i]).abs() <= 1e-4,
            "{name}: pair {i}: score {got}, transformers {}",
            want[i]
        );
    }
    let query = &pairs[0].0;
    let passages: Vec<String> = pairs.iter().map(|p| p.1.clone()).collect();
    let batched = model.score(query, &passages).unwrap();
    for (i, p) in passages.iter().enumerate() {
        assert_eq!(
            batched[i],
            model.score(query, std::slice::from_ref(p)).unwrap()[0]
        );
    }
}

#[test]
fn bert_cross_encoder_scores_match_transformers() {
    check_reranker("tiny-bert-reranker");
}

#[test]
fn xlm_roberta_cross_encoder_scores_match_transformers() {
    check_reranker("tiny-xlmr-reranker");
}
