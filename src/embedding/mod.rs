//! Sentence embeddings: a sentence-transformers folder (BERT, RoBERTa or XLM-RoBERTa encoder,
//! pooling, optional normalization) loaded from local files and run in batches.
//!
//! Owns tokenization for embeddings (truncation to the model's max length, the folder's
//! lowercasing and prompts), batching, pooling and normalization. Vectors match
//! sentence-transformers' for the same folder. Depends on `model::encoder` and the
//! `tokenizers` crate; must not depend on the engine, the API or the knowledge base (which
//! reaches this through its own `Embedder` trait).

mod error;
mod folder;
mod reranker;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::Device;
use tokenizers::{Tokenizer, TruncationParams};

pub use error::{EmbeddingError, Result};
pub use folder::{FolderLayout, Pooling};
pub use reranker::Reranker;

use crate::model::encoder::{Encoder, EncoderConfig};
use crate::model::Weights;

/// Tokens per forward call: bounds activation memory while keeping the GEMMs large.
const MAX_BATCH_TOKENS: usize = 8192;

/// One input to embed: text, or token ids in the model's vocabulary used as given.
#[derive(Debug, Clone)]
pub enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct EmbeddingOutput {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read, special tokens included (after truncation).
    pub num_tokens: usize,
}

pub struct EmbeddingModel {
    id: String,
    dir: PathBuf,
    layout: FolderLayout,
    /// Truncates to `max_input_len`, as sentence-transformers does.
    tokenizer: Tokenizer,
    /// Counts without truncating, for chunking.
    counter: Tokenizer,
    encoder: Encoder,
    max_input_len: usize,
    /// Special tokens the tokenizer adds to every input ([CLS] and [SEP], say).
    special_tokens: usize,
    /// One forward at a time: each already uses every core.
    forward_lock: Mutex<()>,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddingModel({} at {})", self.id, self.dir.display())
    }
}

impl EmbeddingModel {
    /// Loads the folder; the model's id is `id`, or else the folder's name.
    pub fn load(dir: &Path, id: Option<String>) -> Result<Self> {
        let layout = FolderLayout::read(dir)?;
        let tdir = &layout.transformer_dir;
        let config = EncoderConfig::from_file(&tdir.join("config.json"))?;
        let weights = Weights::open_dir(tdir)?;
        let encoder = Encoder::load(config, &weights, &Device::Cpu)?;
        let max_input_len = layout
            .max_seq_length
            .unwrap_or(usize::MAX)
            .min(encoder.config().max_input_len());
        let tok_path = tdir.join("tokenizer.json");
        let mut counter =
            Tokenizer::from_file(&tok_path).map_err(|e| EmbeddingError::Tokenizer {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        // Folders often ship a fixed padding and a shorter truncation; both belong to the
        // tokenizer's exporter, not to the model.
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| EmbeddingError::Tokenizer {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        let mut tokenizer = counter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_input_len,
                ..Default::default()
            }))
            .map_err(|e| EmbeddingError::Tokenizer {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        let special_tokens = counter
            .encode("", true)
            .map(|e| e.get_ids().len())
            .map_err(|e| EmbeddingError::Tokenizer {
                path: tok_path.clone(),
                message: e.to_string(),
            })?;
        let id = id.unwrap_or_else(|| folder_name(dir));
        Ok(Self {
            id,
            dir: dir.to_path_buf(),
            layout,
            tokenizer,
            counter,
            encoder,
            max_input_len,
            special_tokens,
            forward_lock: Mutex::new(()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn dimension(&self) -> usize {
        self.encoder.config().hidden_size
    }

    pub fn max_input_len(&self) -> usize {
        self.max_input_len
    }

    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    pub fn vocab_size(&self) -> usize {
        self.encoder.config().vocab_size
    }

    pub fn layout(&self) -> &FolderLayout {
        &self.layout
    }

    /// The folder's prompt called `name` (`query`, `passage`, `document`), if it has one.
    pub fn prompt(&self, name: &str) -> Option<&str> {
        self.layout.prompts.get(name).map(String::as_str)
    }

    /// Tokens `text` takes, without special tokens and before any truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let text = self.prepare(text, None);
        self.counter
            .encode(text.as_str(), false)
            .map(|e| e.get_ids().len())
            .map_err(|e| EmbeddingError::Tokenize {
                index: 0,
                message: e.to_string(),
            })
    }

    /// Embeds texts with the folder's prompt `prompt` (when it has one) put in front.
    pub fn embed_texts(&self, texts: &[String], prompt: Option<&str>) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.tokenize(i, &self.prepare(t, prompt)))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.embed_ids(ids)?.vectors)
    }

    pub fn embed(&self, inputs: &[EmbeddingInput]) -> Result<EmbeddingOutput> {
        let ids = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| match input {
                EmbeddingInput::Text(t) => self.tokenize(i, &self.prepare(t, None)),
                EmbeddingInput::Tokens(ids) => self.check_ids(i, ids).map(|()| ids.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        self.embed_ids(ids)
    }

    fn prepare(&self, text: &str, prompt: Option<&str>) -> String {
        let prompt = prompt.and_then(|p| self.prompt(p)).unwrap_or("");
        let text = format!("{prompt}{text}");
        if self.layout.do_lower_case {
            text.to_lowercase()
        } else {
            text
        }
    }

    fn tokenize(&self, index: usize, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbeddingError::Tokenize {
                index,
                message: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    fn check_ids(&self, index: usize, ids: &[u32]) -> Result<()> {
        let problem = if ids.is_empty() {
            "an empty token array cannot be embedded".to_string()
        } else if ids.len() > self.max_input_len {
            format!(
                "{} tokens is more than the model's maximum of {}",
                ids.len(),
                self.max_input_len
            )
        } else if let Some(id) = ids.iter().find(|&&id| id as usize >= self.vocab_size()) {
            format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.vocab_size()
            )
        } else {
            return Ok(());
        };
        Err(EmbeddingError::Input { index, problem })
    }

    /// Sorts by length so each forward packs texts of similar size, then restores order.
    fn embed_ids(&self, ids: Vec<Vec<u32>>) -> Result<EmbeddingOutput> {
        let num_tokens = ids.iter().map(Vec::len).sum();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut vectors = vec![Vec::new(); ids.len()];
        let lens: Vec<usize> = order.iter().map(|&i| ids[i].len()).collect();
        for range in token_batches(&lens, MAX_BATCH_TOKENS) {
            let batch: Vec<&[u32]> = order[range.clone()]
                .iter()
                .map(|&i| ids[i].as_slice())
                .collect();
            for (&i, v) in order[range].iter().zip(self.forward_batch(&batch)?) {
                vectors[i] = v;
            }
        }
        Ok(EmbeddingOutput {
            vectors,
            num_tokens,
        })
    }

    fn forward_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let seq_lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
        let packed: Vec<u32> = batch.iter().flat_map(|s| s.iter().copied()).collect();
        let hidden = {
            let _one_at_a_time = self.forward_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.encoder.forward(&packed, &seq_lens)?
        };
        let hidden: Vec<f32> = hidden.flatten_all()?.to_vec1()?;
        let dim = self.dimension();
        let mut out = Vec::with_capacity(batch.len());
        let mut row = 0;
        for &len in &seq_lens {
            let rows = &hidden[row * dim..(row + len) * dim];
            let mut v = pool(rows, dim, self.layout.pooling);
            if self.layout.normalize {
                normalize(&mut v);
            }
            out.push(v);
            row += len;
        }
        Ok(out)
    }
}

/// Consecutive ranges of `lens` whose sums stay within `budget` (an item over the budget
/// goes alone), so each forward stays bounded in memory.
pub(crate) fn token_batches(lens: &[usize], budget: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < lens.len() && (end == start || tokens + lens[end] <= budget) {
            tokens += lens[end];
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "embedding-model".into())
}

/// `rows` is one text's `[len, dim]` hidden states.
pub fn pool(rows: &[f32], dim: usize, pooling: Pooling) -> Vec<f32> {
    let len = rows.len() / dim;
    match pooling {
        Pooling::Cls => rows[..dim].to_vec(),
        Pooling::Mean => {
            let mut acc = vec![0f32; dim];
            for r in rows.chunks_exact(dim) {
                acc.iter_mut().zip(r).for_each(|(a, x)| *a += x);
            }
            acc.iter_mut().for_each(|a| *a /= len as f32);
            acc
        }
        Pooling::Max => {
            let mut acc = vec![f32::NEG_INFINITY; dim];
            for r in rows.chunks_exact(dim) {
                acc.iter_mut().zip(r).for_each(|(a, &x)| *a = a.max(x));
            }
            acc
        }
    }
}

/// L2 normalization, leaving an all-zero vector as it is (as torch's `normalize` does).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes_over_two_tokens() {
        let rows = [1.0, -2.0, 3.0, 4.0];
        assert_eq!(pool(&rows, 2, Pooling::Cls), vec![1.0, -2.0]);
        assert_eq!(pool(&rows, 2, Pooling::Mean), vec![2.0, 1.0]);
        assert_eq!(pool(&rows, 2, Pooling::Max), vec![3.0, 4.0]);
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
    }
}
