//! The self-attention block of a decoder layer: projections, optional per-head q/k norm,
//! rotary embedding, the KV-cache write and paged attention.
//!
//! Depends on `layers`, `kv_cache` and the CPU kernels. Invariant: the keys and values of this
//! step are written to the cache before attention reads it, so prefill, chunked prefill, a
//! prefix-cache hit and decode are one code path.

use candle_core::{Device, Tensor};

use super::config::ModelConfig;
use super::cpu::attention::{paged_attention, write_slots, AttentionShape, SeqAttention};
use super::cpu::simd::Element;
use super::error::Result;
use super::kv_cache::LayerKv;
use super::layers::{with_f32, Linear, RmsNorm};
use super::weights::Weights;

pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    sliding_window: Option<usize>,
}

/// What every layer's attention needs from the batch, computed once per step.
pub struct StepContext<'a> {
    pub cos: Tensor,
    pub sin: Tensor,
    pub seqs: Vec<SeqAttention<'a>>,
    pub slot_mapping: &'a [u32],
    pub block_size: usize,
}

impl Attention {
    pub fn load(
        w: &Weights,
        prefix: &str,
        cfg: &ModelConfig,
        layer: usize,
        device: &Device,
    ) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let q = cfg.num_attention_heads * hd;
        let kv = cfg.num_key_value_heads * hd;
        let norm = |name: &str| -> Result<Option<RmsNorm>> {
            if cfg.qk_norm {
                Ok(Some(RmsNorm::load(
                    w,
                    &format!("{prefix}.{name}.weight"),
                    hd,
                    cfg.rms_norm_eps,
                    device,
                )?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            q_proj: Linear::load(w, &format!("{prefix}.q_proj"), h, q, cfg.qkv_bias, device)?,
            k_proj: Linear::load(w, &format!("{prefix}.k_proj"), h, kv, cfg.qkv_bias, device)?,
            v_proj: Linear::load(w, &format!("{prefix}.v_proj"), h, kv, cfg.qkv_bias, device)?,
            o_proj: Linear::load(w, &format!("{prefix}.o_proj"), q, h, cfg.o_bias, device)?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            num_heads: cfg.num_attention_heads,
            num_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
            sliding_window: cfg.sliding_windows.get(layer).copied().flatten(),
        })
    }

    /// Per-head norm (when the model has one), then rotary; `x` is `[rows, heads * head_dim]`.
    fn position(
        &self,
        x: Tensor,
        heads: usize,
        norm: Option<&RmsNorm>,
        step: &StepContext<'_>,
    ) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let mut x = x.reshape((rows, heads, self.head_dim))?;
        if let Some(n) = norm {
            x = n.forward(&x)?;
        }
        let x =
            candle_nn::rotary_emb::rope_thd(&x.unsqueeze(0)?.contiguous()?, &step.cos, &step.sin)?;
        Ok(x.reshape((rows, heads * self.head_dim))?)
    }

    pub fn forward(&self, x: &Tensor, step: &StepContext<'_>, kv: &mut LayerKv) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let q = self.position(
            self.q_proj.forward(x)?,
            self.num_heads,
            self.q_norm.as_ref(),
            step,
        )?;
        let k = self.position(
            self.k_proj.forward(x)?,
            self.num_kv_heads,
            self.k_norm.as_ref(),
            step,
        )?;
        let v = self.v_proj.forward(x)?;
        let shape = AttentionShape {
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            block_size: step.block_size,
            scale: (self.head_dim as f32).powf(-0.5),
            sliding_window: self.sliding_window,
        };
        #[cfg(feature = "cuda")]
        if let LayerKv::Cuda(_) = kv {
            return Err(crate::model::error::ModelError::KvCache(
                "the CPU decoder needs a KV cache in host memory".into(),
            ));
        }
        let mut out = vec![0f32; rows * self.num_heads * self.head_dim];
        with_f32(&k, |ks| {
            with_f32(&v, |vs| {
                with_f32(&q, |qs| {
                    let new = StepRows {
                        q: qs,
                        k: ks,
                        v: vs,
                    };
                    match kv {
                        LayerKv::F32 { k, v } => {
                            write_and_attend((k, v), new, step, shape, &mut out)
                        }
                        LayerKv::F16 { k, v } => {
                            write_and_attend((k, v), new, step, shape, &mut out)
                        }
                        LayerKv::Bf16 { k, v } => {
                            write_and_attend((k, v), new, step, shape, &mut out)
                        }
                        // Refused before the closures.
                        #[cfg(feature = "cuda")]
                        LayerKv::Cuda(_) => {}
                    }
                })
            })
        })???;
        let attn = Tensor::from_vec(out, (rows, self.num_heads * self.head_dim), x.device())?;
        self.o_proj.forward(&attn)
    }
}

/// This step's rows, f32: queries `[rows, heads * head_dim]`, keys and values
/// `[rows, kv_heads * head_dim]`.
struct StepRows<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

/// Writes this step's keys and values into one layer's cache, then attends over it.
fn write_and_attend<T: Element>(
    (k_cache, v_cache): (&mut [T], &mut [T]),
    new: StepRows<'_>,
    step: &StepContext<'_>,
    shape: AttentionShape,
    out: &mut [f32],
) {
    let kv_row = shape.num_kv_heads * shape.head_dim;
    write_slots(k_cache, new.k, step.slot_mapping, kv_row);
    write_slots(v_cache, new.v, step.slot_mapping, kv_row);
    paged_attention(new.q, k_cache, v_cache, &step.seqs, shape, out);
}
