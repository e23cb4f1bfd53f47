//! The pre-norm decoder (Llama, Mistral, Qwen2/2.5, Qwen3) on one GPU, in bf16.
//!
//! Same families and flags as `arch::decoder`, laid out for the GPU: query, key and value are
//! one matmul, gate and up another; the residual add is fused into the following RMSNorm; the
//! pending MLP output is added by the next layer's norm. Weights are uploaded once at load, as
//! bf16 whatever their file dtype. Depends on `gpu::kernels`, `gpu::kv` and the model's config,
//! weights and rope; never on the engine.

use candle_core::{DType, Device, Tensor};

use super::kernels::{self, AttentionMeta};
use super::kv::CudaKv;
use crate::model::batch::ForwardBatch;
use crate::model::config::ModelConfig;
use crate::model::cpu::attention::AttentionShape;
use crate::model::error::{ModelError, Result};
use crate::model::kv_cache::{KvCache, LayerKv};
use crate::model::rope::Rope;
use crate::model::weights::{WeightDtype, WeightView, Weights};
use crate::model::CausalLm;

/// A `[out, in]` bf16 matrix on the device and its optional bias.
struct GpuLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl GpuLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

struct GpuLayer {
    input_layernorm: Tensor,
    qkv_proj: GpuLinear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    o_proj: GpuLinear,
    post_attention_layernorm: Tensor,
    gate_up_proj: GpuLinear,
    down_proj: GpuLinear,
    sliding_window: Option<usize>,
}

pub struct CudaDecoderLm {
    cfg: ModelConfig,
    embed_tokens: Tensor,
    layers: Vec<GpuLayer>,
    norm: Tensor,
    lm_head: Tensor,
    rope: Rope,
    device: Device,
    weight_dtype: WeightDtype,
}

/// Uploads one tensor as bf16 with the given shape.
fn upload(view: &WeightView, shape: &[usize], device: &Device) -> Result<Tensor> {
    view.expect_shape(shape)?;
    let dtype = match view.dtype {
        WeightDtype::F32 => DType::F32,
        WeightDtype::F16 => DType::F16,
        WeightDtype::Bf16 => DType::BF16,
    };
    let host = Tensor::from_raw_buffer(view.bytes(), dtype, shape, &Device::Cpu)?;
    Ok(host.to_dtype(DType::BF16)?.to_device(device)?)
}

/// Parts stacked along the first dimension; a single part is used as uploaded, since `cat`
/// would copy it.
fn stack(parts: Vec<Tensor>) -> Result<Tensor> {
    match <[Tensor; 1]>::try_from(parts) {
        Ok([t]) => Ok(t),
        Err(parts) => Ok(Tensor::cat(&parts, 0)?),
    }
}

struct Loader<'a> {
    w: &'a Weights,
    device: &'a Device,
}

impl Loader<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        upload(&self.w.get(name)?, shape, self.device)
    }

    /// Several `[out_i, in]` projections stacked into one `[sum out_i, in]` linear layer.
    fn fused(
        &self,
        prefix: &str,
        parts: &[(&str, usize)],
        inp: usize,
        bias: bool,
    ) -> Result<GpuLinear> {
        let weights = parts
            .iter()
            .map(|(n, out)| self.get(&format!("{prefix}.{n}.weight"), &[*out, inp]))
            .collect::<Result<Vec<_>>>()?;
        let bias = if bias {
            let b = parts
                .iter()
                .map(|(n, out)| self.get(&format!("{prefix}.{n}.bias"), &[*out]))
                .collect::<Result<Vec<_>>>()?;
            Some(stack(b)?)
        } else {
            None
        };
        Ok(GpuLinear {
            weight: stack(weights)?,
            bias,
        })
    }

    fn layer(&self, cfg: &ModelConfig, i: usize) -> Result<GpuLayer> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let p = format!("model.layers.{i}");
        let a = format!("{p}.self_attn");
        let norm = |name: &str| -> Result<Option<Tensor>> {
            cfg.qk_norm
                .then(|| self.get(&format!("{a}.{name}.weight"), &[hd]))
                .transpose()
        };
        Ok(GpuLayer {
            input_layernorm: self.get(&format!("{p}.input_layernorm.weight"), &[h])?,
            qkv_proj: self.fused(
                &a,
                &[("q_proj", q), ("k_proj", kv), ("v_proj", kv)],
                h,
                cfg.qkv_bias,
            )?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            o_proj: self.fused(&a, &[("o_proj", h)], q, cfg.o_bias)?,
            post_attention_layernorm: self
                .get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            gate_up_proj: self.fused(
                &format!("{p}.mlp"),
                &[
                    ("gate_proj", cfg.intermediate_size),
                    ("up_proj", cfg.intermediate_size),
                ],
                h,
                cfg.mlp_bias,
            )?,
            down_proj: self.fused(
                &format!("{p}.mlp"),
                &[("down_proj", h)],
                cfg.intermediate_size,
                cfg.mlp_bias,
            )?,
            sliding_window: cfg.sliding_windows.get(i).copied().flatten(),
        })
    }
}

/// One step's metadata on the device, shared by every layer.
struct Step {
    cos: Tensor,
    sin: Tensor,
    slots: Tensor,
    row_seq: Tensor,
    row_pos: Tensor,
    block_tables: Tensor,
    max_blocks: usize,
    block_size: usize,
}

impl Step {
    fn new(batch: &ForwardBatch, rope: &Rope, block_size: usize, device: &Device) -> Result<Self> {
        let n = batch.num_tokens();
        let (cos, sin) = rope.cos_sin(&batch.positions, device)?;
        let (tables, max_blocks) = batch.padded_block_tables();
        Ok(Self {
            cos,
            sin,
            slots: Tensor::from_slice(&batch.slot_mapping, n, device)?,
            row_seq: Tensor::from_vec(batch.row_sequences(), n, device)?,
            row_pos: Tensor::from_slice(&batch.positions, n, device)?,
            block_tables: Tensor::from_vec(tables, (batch.num_seqs(), max_blocks), device)?,
            max_blocks,
            block_size,
        })
    }
}

impl CudaDecoderLm {
    pub fn load(cfg: &ModelConfig, w: &Weights, device: &Device) -> Result<Self> {
        if !device.is_cuda() {
            return Err(ModelError::Device(
                "the GPU decoder needs a CUDA device".into(),
            ));
        }
        if cfg.head_dim > kernels::MAX_HEAD_DIM {
            return Err(ModelError::Device(format!(
                "head_dim {} is above the {} the CUDA attention kernel supports",
                cfg.head_dim,
                kernels::MAX_HEAD_DIM
            )));
        }
        let ld = Loader { w, device };
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed_tokens = ld.get("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ld.layer(cfg, i))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            ld.get("lm_head.weight", &[v, h])?
        };
        // Uploads and fusions were queued on this thread's stream; the engine computes on
        // another thread, whose stream does not wait for this one.
        device.synchronize()?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm: ld.get("model.norm.weight", &[h])?,
            lm_head,
            rope: Rope::new(cfg),
            device: device.clone(),
            weight_dtype: w.dominant_dtype().unwrap_or(WeightDtype::Bf16),
        })
    }

    fn attention(
        &self,
        layer: &GpuLayer,
        x: &Tensor,
        step: &Step,
        kv: &mut CudaKv,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (rows, hd) = (x.dim(0)?, c.head_dim);
        let (nq, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps as f32;
        let qkv = layer.qkv_proj.forward(x)?;
        let mut q = qkv.narrow(1, 0, nq * hd)?;
        let mut k = qkv.narrow(1, nq * hd, nkv * hd)?;
        let v = qkv.narrow(1, (nq + nkv) * hd, nkv * hd)?;
        let head_norm = |t: &Tensor, heads: usize, w: &Tensor| -> Result<Tensor> {
            let t = t.contiguous()?.reshape((rows * heads, hd))?;
            let (_, normed) = kernels::add_rms_norm(&t, None, w, eps)?;
            Ok(normed.reshape((rows, heads * hd))?)
        };
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = head_norm(&q, nq, qn)?;
            k = head_norm(&k, nkv, kn)?;
        }
        let q = kernels::rotary(&q, &step.cos, &step.sin, nq)?;
        let k = kernels::rotary(&k, &step.cos, &step.sin, nkv)?;
        // SAFETY: `forward` validated the batch against the cache, so every slot, block id and
        // position in `step` is in range.
        unsafe { kernels::reshape_and_cache(&k, &v, &step.slots, kv) }?;
        let meta = AttentionMeta {
            row_seq: &step.row_seq,
            row_pos: &step.row_pos,
            block_tables: &step.block_tables,
            max_blocks: step.max_blocks,
            shape: AttentionShape {
                num_heads: nq,
                num_kv_heads: nkv,
                head_dim: hd,
                block_size: step.block_size,
                scale: (hd as f32).powf(-0.5),
                sliding_window: layer.sliding_window,
            },
        };
        // SAFETY: as above.
        let out = unsafe { kernels::paged_attention(&q, kv, &meta) }?;
        layer.o_proj.forward(&out)
    }
}

impl CausalLm for CudaDecoderLm {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn weight_dtype(&self) -> WeightDtype {
        self.weight_dtype
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn forward(&self, batch: &ForwardBatch, kv_cache: &mut KvCache) -> Result<Tensor> {
        let spec = *kv_cache.spec();
        crate::model::arch::check_cache_fits(&self.cfg, &spec)?;
        batch.validate(spec.block_size, spec.num_blocks, self.cfg.vocab_size)?;
        let step = Step::new(batch, &self.rope, spec.block_size, &self.device)?;
        let eps = self.cfg.rms_norm_eps as f32;
        let ids: Vec<u32> = batch.input_ids.iter().map(|t| t.0).collect();
        let ids = Tensor::from_vec(ids, batch.num_tokens(), &self.device)?;
        let mut residual = self.embed_tokens.index_select(&ids, 0)?;
        let mut pending: Option<Tensor> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            let LayerKv::Cuda(kv) = kv_cache.layer_mut(i) else {
                return Err(ModelError::KvCache(
                    "the GPU decoder needs a KV cache in GPU memory".into(),
                ));
            };
            let (r, h) =
                kernels::add_rms_norm(&residual, pending.as_ref(), &layer.input_layernorm, eps)?;
            let attn = self.attention(layer, &h, &step, kv)?;
            let (r, h) =
                kernels::add_rms_norm(&r, Some(&attn), &layer.post_attention_layernorm, eps)?;
            residual = r;
            let act = kernels::silu_mul(&layer.gate_up_proj.forward(&h)?)?;
            pending = Some(layer.down_proj.forward(&act)?);
        }
        let rows = Tensor::new(batch.logits_indices(), &self.device)?;
        let last = residual.index_select(&rows, 0)?;
        let last_add = pending.map(|p| p.index_select(&rows, 0)).transpose()?;
        let (_, h) = kernels::add_rms_norm(&last, last_add.as_ref(), &self.norm, eps)?;
        let logits = h.matmul(&self.lm_head.t()?)?;
        Ok(logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)
    }
}
