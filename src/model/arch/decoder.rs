//! The pre-norm decoder shared by Llama (2, 3, 3.1, 3.2), Mistral, Qwen2/2.5 and Qwen3.
//!
//! The families differ only in flags the config already resolved (qkv bias, q/k norm, sliding
//! window, rope scaling, tied embeddings), so one forward serves them all; a family whose
//! block differs in shape (Gemma's extra norms, MoE feed-forwards) gets its own file beside
//! this one. Tensor names are Hugging Face's.

use candle_core::{Device, Tensor};

use crate::model::attention::{Attention, StepContext};
use crate::model::batch::ForwardBatch;
use crate::model::config::ModelConfig;
use crate::model::cpu::attention::SeqAttention;
use crate::model::error::Result;
use crate::model::kv_cache::KvCache;
use crate::model::layers::{Embedding, Linear, Mlp, RmsNorm};
use crate::model::rope::Rope;
use crate::model::weights::{WeightDtype, Weights};
use crate::model::CausalLm;

struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

pub struct DecoderLm {
    cfg: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    device: Device,
}

impl DecoderLm {
    pub fn load(cfg: &ModelConfig, w: &Weights, device: &Device) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let embed_tokens = Embedding::load(w, "model.embed_tokens.weight", cfg.vocab_size, h)?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(DecoderLayer {
                    input_layernorm: RmsNorm::load(
                        w,
                        &format!("{p}.input_layernorm.weight"),
                        h,
                        eps,
                        device,
                    )?,
                    self_attn: Attention::load(w, &format!("{p}.self_attn"), cfg, i, device)?,
                    post_attention_layernorm: RmsNorm::load(
                        w,
                        &format!("{p}.post_attention_layernorm.weight"),
                        h,
                        eps,
                        device,
                    )?,
                    mlp: Mlp::load(
                        w,
                        &format!("{p}.mlp"),
                        h,
                        cfg.intermediate_size,
                        cfg.mlp_bias,
                        device,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_view(embed_tokens.view().clone(), None, w.residency())?
        } else {
            Linear::load(w, "lm_head", h, cfg.vocab_size, false, device)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::load(w, "model.norm.weight", h, eps, device)?,
            lm_head,
            rope: Rope::new(cfg),
            device: device.clone(),
        })
    }
}

impl CausalLm for DecoderLm {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn weight_dtype(&self) -> WeightDtype {
        self.lm_head.weight_dtype()
    }

    fn forward(&self, batch: &ForwardBatch, kv_cache: &mut KvCache) -> Result<Tensor> {
        let spec = *kv_cache.spec();
        super::check_cache_fits(&self.cfg, &spec)?;
        batch.validate(spec.block_size, spec.num_blocks, self.cfg.vocab_size)?;
        let tables: Vec<Vec<u32>> = batch
            .block_tables
            .iter()
            .map(|t| t.iter().map(|b| b.0).collect())
            .collect();
        let (cos, sin) = self.rope.cos_sin(&batch.positions, &self.device)?;
        let step = StepContext {
            cos,
            sin,
            seqs: (0..batch.num_seqs())
                .map(|s| SeqAttention {
                    query_start: batch.cu_seqlens[s] as usize,
                    query_len: (batch.cu_seqlens[s + 1] - batch.cu_seqlens[s]) as usize,
                    context_len: batch.context_lens[s] as usize,
                    block_table: &tables[s],
                })
                .collect(),
            slot_mapping: &batch.slot_mapping,
            block_size: spec.block_size,
        };
        let ids: Vec<u32> = batch.input_ids.iter().map(|t| t.0).collect();
        let mut x = self.embed_tokens.forward(&ids, &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let attn = layer.self_attn.forward(
                &layer.input_layernorm.forward(&x)?,
                &step,
                kv_cache.layer_mut(i),
            )?;
            x = (x + attn)?;
            let mlp = layer
                .mlp
                .forward(&layer.post_attention_layernorm.forward(&x)?)?;
            x = (x + mlp)?;
        }
        let rows = Tensor::new(batch.logits_indices(), &self.device)?;
        let last = self.norm.forward(&x.index_select(&rows, 0)?)?;
        self.lm_head.forward(&last)
    }
}
