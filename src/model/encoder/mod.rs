//! BERT-family encoders (BERT, RoBERTa, XLM-RoBERTa): token ids in, one hidden state per token
//! out, for sentence embeddings and cross-encoder rerankers.
//!
//! Sequences are packed back to back with no padding: attention runs per sequence over its own
//! rows, so a short text in a batch of long ones costs only its own tokens, and a text's
//! vectors never depend on what it was batched with. Pure compute over mapped weights; must not
//! depend on tokenizers, requests or anything above `model`.

mod config;
mod dense;
mod ops;
mod vmath;

use candle_core::{Device, Tensor};

pub use config::{EncoderConfig, HiddenAct, PositionScheme, SUPPORTED_ENCODERS};

use super::error::{ModelError, Result};
use super::layers::{with_f32, Embedding};
use super::weights::Weights;
use dense::Dense;

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Accepts both `weight`/`bias` and the older `gamma`/`beta` names.
    fn load(w: &Weights, prefix: &str, len: usize, eps: f64, _device: &Device) -> Result<Self> {
        let (wn, bn) = if w.contains(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        let vector = |name: &str| -> Result<Vec<f32>> {
            let view = w.get(&format!("{prefix}.{name}"))?;
            view.expect_shape(&[len])?;
            Ok(view.to_f32_vec())
        };
        Ok(Self {
            weight: vector(wn)?,
            bias: vector(bn)?,
            eps: eps as f32,
        })
    }

    /// `LayerNorm(x + residual)` over rows.
    fn forward(&self, x: &[f32], residual: Option<&[f32]>) -> Vec<f32> {
        ops::add_layer_norm(
            x,
            residual,
            &self.weight,
            &self.bias,
            self.eps,
            self.weight.len(),
        )
    }
}

struct EncoderLayer {
    /// Query, key and value as one layer: `[rows, 3 · hidden]`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

impl EncoderLayer {
    fn load(w: &Weights, prefix: &str, c: &EncoderConfig, device: &Device) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let dense = |names: &[&str], n_in, n_out| {
            let prefixes: Vec<String> = names.iter().map(|n| format!("{prefix}.{n}")).collect();
            Dense::load(w, &prefixes, n_in, n_out, device)
        };
        let lin = |name: &str, n_in, n_out| dense(&[name], n_in, n_out);
        let eps = c.layer_norm_eps;
        Ok(Self {
            qkv: dense(
                &[
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                ],
                h,
                h,
            )?,
            attention_out: lin("attention.output.dense", h, h)?,
            attention_norm: LayerNorm::load(
                w,
                &format!("{prefix}.attention.output.LayerNorm"),
                h,
                eps,
                device,
            )?,
            intermediate: lin("intermediate.dense", h, i)?,
            output: lin("output.dense", i, h)?,
            output_norm: LayerNorm::load(w, &format!("{prefix}.output.LayerNorm"), h, eps, device)?,
        })
    }
}

/// A loaded encoder. `forward` is safe to call from several threads, but on the CPU callers
/// should run one at a time: each call already uses every core.
pub struct Encoder {
    config: EncoderConfig,
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_types: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
    device: Device,
}

/// Checkpoints are saved with or without the task model's prefix.
const PREFIXES: [&str; 4] = ["", "bert.", "roberta.", "model."];

impl Encoder {
    pub fn load(config: EncoderConfig, weights: &Weights, device: &Device) -> Result<Self> {
        let prefix = PREFIXES
            .iter()
            .find(|p| weights.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .copied()
            .ok_or_else(|| {
                // Reports the unprefixed name: the first place an operator would look.
                weights
                    .get("embeddings.word_embeddings.weight")
                    .err()
                    .unwrap_or(ModelError::Batch("encoder weights not found".into()))
            })?;
        let c = &config;
        let h = c.hidden_size;
        let word_embeddings = Embedding::load(
            weights,
            &format!("{prefix}embeddings.word_embeddings.weight"),
            c.vocab_size,
            h,
        )?;
        let position_embeddings = Embedding::load(
            weights,
            &format!("{prefix}embeddings.position_embeddings.weight"),
            c.max_position_embeddings,
            h,
        )?;
        let types = Embedding::load(
            weights,
            &format!("{prefix}embeddings.token_type_embeddings.weight"),
            c.type_vocab_size,
            h,
        )?;
        let embedding_norm = LayerNorm::load(
            weights,
            &format!("{prefix}embeddings.LayerNorm"),
            h,
            c.layer_norm_eps,
            device,
        )?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| EncoderLayer::load(weights, &format!("{prefix}encoder.layer.{i}"), c, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            word_embeddings,
            position_embeddings,
            token_types: types,
            embedding_norm,
            layers,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// `ids` holds the sequences back to back, `seq_lens` their lengths. Returns the last
    /// hidden state, `[ids.len(), hidden_size]`, f32.
    pub fn forward(&self, ids: &[u32], seq_lens: &[usize]) -> Result<Tensor> {
        self.forward_typed(ids, None, seq_lens)
    }

    /// As `forward`, with a token type per id (a cross-encoder's second segment is type 1);
    /// `None` is type 0 throughout.
    pub fn forward_typed(
        &self,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        seq_lens: &[usize],
    ) -> Result<Tensor> {
        self.check_batch(ids, seq_lens)?;
        let zeros;
        let type_ids = match type_ids {
            Some(t) => {
                let max = self.config.type_vocab_size as u32;
                if t.len() != ids.len() || t.iter().any(|&x| x >= max) {
                    return Err(ModelError::Batch(format!(
                        "token types must be one per id and below {max}"
                    )));
                }
                t
            }
            None => {
                zeros = vec![0u32; ids.len()];
                &zeros
            }
        };
        let positions: Vec<u32> = seq_lens
            .iter()
            .flat_map(|&len| (0..len).map(|i| self.config.position_id(i) as u32))
            .collect();
        let words = self.word_embeddings.forward(ids, &self.device)?;
        let pos = self.position_embeddings.forward(&positions, &self.device)?;
        let types = self.token_types.forward(type_ids, &self.device)?;
        let sum = (words + pos)?;
        let mut h = with_f32(&sum, |x| {
            with_f32(&types, |t| self.embedding_norm.forward(x, Some(t)))
        })??;
        for layer in &self.layers {
            h = self.layer_forward(layer, &h, seq_lens)?;
        }
        let rows = ids.len();
        Ok(Tensor::from_vec(
            h,
            (rows, self.config.hidden_size),
            &self.device,
        )?)
    }

    fn check_batch(&self, ids: &[u32], seq_lens: &[usize]) -> Result<()> {
        if seq_lens.iter().sum::<usize>() != ids.len() {
            return Err(ModelError::Batch(format!(
                "sequence lengths sum to {}, but {} ids were given",
                seq_lens.iter().sum::<usize>(),
                ids.len()
            )));
        }
        let max = self.config.max_input_len();
        if let Some(len) = seq_lens.iter().find(|&&l| l > max || l == 0) {
            return Err(ModelError::Batch(format!(
                "a sequence of {len} tokens is outside 1..={max}, the encoder's input range"
            )));
        }
        if let Some(id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(ModelError::Batch(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// One layer over `h`, `[rows, hidden]`, on plain rows: no tensor copies between steps.
    fn layer_forward(&self, l: &EncoderLayer, h: &[f32], seq_lens: &[usize]) -> Result<Vec<f32>> {
        let c = &self.config;
        let rows = h.len() / c.hidden_size;
        let qkv = l.qkv.forward_rows(h, rows)?;
        let ctx = ops::attention(&qkv, seq_lens, c.num_attention_heads, c.head_dim());
        let attn = l.attention_out.forward_rows(&ctx, rows)?;
        let h = l.attention_norm.forward(&attn, Some(h));
        let mut inter = l.intermediate.forward_rows(&h, rows)?;
        ops::activate(&mut inter, c.hidden_act);
        let out = l.output.forward_rows(&inter, rows)?;
        Ok(l.output_norm.forward(&out, Some(&h)))
    }
}
