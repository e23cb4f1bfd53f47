//! Cross-encoder rerankers: a (query, passage) pair in, one relevance score out, from a
//! sequence-classification checkpoint with a single label (ms-marco MiniLM-style BERT, or
//! bge-reranker-style XLM-RoBERTa).
//!
//! Owns pair tokenization (the tokenizer's own pair template and truncation) and the scoring
//! head: the first token's state through `dense`, tanh, then the one-output projection. BERT
//! names these `pooler.dense` and `classifier`; RoBERTa `classifier.dense` and
//! `classifier.out_proj`. Scores are raw logits, as the checkpoint was trained.
//! Depends on `model::encoder` and `tokenizers`.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use super::error::{EmbeddingError, Result};
use crate::model::encoder::{Encoder, EncoderConfig};
use crate::model::layers::Linear;
use crate::model::Weights;

/// Pairs per forward: bounds activation memory.
const MAX_BATCH_TOKENS: usize = 8192;

struct Head {
    dense: Linear,
    out: Linear,
}

pub struct Reranker {
    id: String,
    tokenizer: Tokenizer,
    encoder: Encoder,
    head: Head,
    forward_lock: Mutex<()>,
}

impl std::fmt::Debug for Reranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reranker({})", self.id)
    }
}

fn load_head(w: &Weights, hidden: usize, dir: &Path) -> Result<Head> {
    let device = Device::Cpu;
    let pairs = [
        ("bert.pooler.dense", "classifier"),
        ("pooler.dense", "classifier"),
        ("classifier.dense", "classifier.out_proj"),
    ];
    let Some((dense, out)) = pairs
        .iter()
        .find(|(d, o)| w.contains(&format!("{d}.weight")) && w.contains(&format!("{o}.weight")))
    else {
        return Err(EmbeddingError::Unsupported {
            path: dir.to_path_buf(),
            problem: "no classification head found (expected pooler.dense + classifier, or \
                      classifier.dense + classifier.out_proj)"
                .into(),
        });
    };
    let out_view = w.get(&format!("{out}.weight"))?;
    if out_view.shape.first() != Some(&1) {
        return Err(EmbeddingError::Unsupported {
            path: dir.to_path_buf(),
            problem: format!(
                "the classifier has {:?} outputs; a reranker has exactly one",
                out_view.shape.first()
            ),
        });
    }
    Ok(Head {
        dense: Linear::load(w, dense, hidden, hidden, true, &device)?,
        out: Linear::load(w, out, hidden, 1, true, &device)?,
    })
}

impl Reranker {
    /// Loads a checkpoint folder (config.json, safetensors, tokenizer.json); `max_length`
    /// caps the pair's tokens [default: the model's maximum, at most 512].
    pub fn load(dir: &Path, id: Option<String>, max_length: Option<usize>) -> Result<Self> {
        let config = EncoderConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::open_dir(dir)?;
        let hidden = config.hidden_size;
        let max_len = max_length.unwrap_or(512).min(config.max_input_len());
        let encoder = Encoder::load(config, &weights, &Device::Cpu)?;
        let head = load_head(&weights, hidden, dir)?;
        let tok_path = dir.join("tokenizer.json");
        let tok_error = |e: &dyn std::fmt::Display| EmbeddingError::Tokenizer {
            path: tok_path.clone(),
            message: e.to_string(),
        };
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| tok_error(&e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| tok_error(&e))?;
        let id = id.unwrap_or_else(|| super::folder_name(dir));
        Ok(Self {
            id,
            tokenizer,
            encoder,
            head,
            forward_lock: Mutex::new(()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token ids and types of one pair, as the model reads them.
    pub fn encode_pair(&self, query: &str, passage: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let enc = self.tokenizer.encode((query, passage), true).map_err(|e| {
            EmbeddingError::Tokenize {
                index: 0,
                message: e.to_string(),
            }
        })?;
        Ok((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()))
    }

    /// One raw score per passage; higher is more relevant.
    pub fn score(&self, query: &str, passages: &[String]) -> Result<Vec<f32>> {
        let pairs = passages
            .iter()
            .map(|p| self.encode_pair(query, p))
            .collect::<Result<Vec<_>>>()?;
        let lens: Vec<usize> = pairs.iter().map(|p| p.0.len()).collect();
        let mut scores = Vec::with_capacity(pairs.len());
        for range in super::token_batches(&lens, MAX_BATCH_TOKENS) {
            scores.extend(self.forward_batch(&pairs[range])?);
        }
        Ok(scores)
    }

    fn forward_batch(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<f32>> {
        let seq_lens: Vec<usize> = pairs.iter().map(|p| p.0.len()).collect();
        let ids: Vec<u32> = pairs.iter().flat_map(|p| p.0.iter().copied()).collect();
        let types: Vec<u32> = pairs.iter().flat_map(|p| p.1.iter().copied()).collect();
        let hidden = {
            let _one_at_a_time = self.forward_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.encoder.forward_typed(&ids, Some(&types), &seq_lens)?
        };
        let mut firsts = Vec::with_capacity(pairs.len());
        let mut row = 0;
        for len in &seq_lens {
            firsts.push(hidden.narrow(0, row, 1)?);
            row += len;
        }
        let cls = Tensor::cat(&firsts, 0)?;
        let x = self.head.dense.forward(&cls)?.tanh()?;
        let out = self.head.out.forward(&x)?;
        Ok(out.flatten_all()?.to_vec1()?)
    }
}
