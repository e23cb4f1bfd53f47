//! The paged KV cache: per layer, one key and one value buffer of `num_blocks` fixed-size
//! blocks.
//!
//! Owns the memory only; which block belongs to which sequence is the engine's business (the
//! block manager), and reaches the model as block tables and a slot mapping. Invariant: every
//! layer has the same geometry, given by its `KvCacheSpec`.

use half::{bf16, f16};

use super::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    F16,
    Bf16,
}

impl KvDtype {
    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "float32" => Some(Self::F32),
            "f16" | "float16" => Some(Self::F16),
            "bf16" | "bfloat16" => Some(Self::Bf16),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheSpec {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    pub dtype: KvDtype,
}

impl KvCacheSpec {
    /// Bytes one token occupies across every layer, keys and values.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype.size_in_bytes()
    }

    pub fn bytes_per_block(&self) -> usize {
        self.bytes_per_token() * self.block_size
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
}

/// One layer's keys and values, `[num_blocks, block_size, num_kv_heads, head_dim]` each, in
/// host memory or (CUDA builds) in GPU memory.
pub enum LayerKv {
    F32 {
        k: Vec<f32>,
        v: Vec<f32>,
    },
    F16 {
        k: Vec<f16>,
        v: Vec<f16>,
    },
    Bf16 {
        k: Vec<bf16>,
        v: Vec<bf16>,
    },
    #[cfg(feature = "cuda")]
    Cuda(super::gpu::kv::CudaKv),
}

pub struct KvCache {
    spec: KvCacheSpec,
    layers: Vec<LayerKv>,
}

impl KvCache {
    /// A cache in host memory.
    pub fn new(spec: KvCacheSpec) -> Result<Self> {
        Self::new_on(spec, &candle_core::Device::Cpu)
    }

    /// A cache where `device`'s model computes: host memory for the CPU, GPU memory for CUDA.
    pub fn new_on(spec: KvCacheSpec, device: &candle_core::Device) -> Result<Self> {
        if spec.block_size == 0 || spec.num_blocks == 0 {
            return Err(ModelError::KvCache(format!(
                "block_size ({}) and num_blocks ({}) must both be positive",
                spec.block_size, spec.num_blocks
            )));
        }
        let n = spec
            .num_slots()
            .checked_mul(spec.num_kv_heads * spec.head_dim)
            .ok_or_else(|| ModelError::KvCache("size overflows".into()))?;
        match device {
            candle_core::Device::Cpu => {}
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(d) => {
                let layers = (0..spec.num_layers)
                    .map(|_| super::gpu::kv::CudaKv::zeros(&spec, d).map(LayerKv::Cuda))
                    .collect::<Result<Vec<_>>>()?;
                // The zeroing was queued on this thread's stream; the engine's forward runs on
                // another thread, whose stream does not wait for this one.
                device.synchronize()?;
                return Ok(Self { spec, layers });
            }
            other => {
                return Err(ModelError::KvCache(format!(
                    "no KV cache for a model on {other:?}"
                )))
            }
        }
        // Zeroed allocations are lazily committed by the OS, so an unused tail costs nothing.
        let layers = (0..spec.num_layers)
            .map(|_| match spec.dtype {
                KvDtype::F32 => LayerKv::F32 {
                    k: vec![0.0; n],
                    v: vec![0.0; n],
                },
                KvDtype::F16 => LayerKv::F16 {
                    k: vec![f16::ZERO; n],
                    v: vec![f16::ZERO; n],
                },
                KvDtype::Bf16 => LayerKv::Bf16 {
                    k: vec![bf16::ZERO; n],
                    v: vec![bf16::ZERO; n],
                },
            })
            .collect();
        Ok(Self { spec, layers })
    }

    pub fn spec(&self) -> &KvCacheSpec {
        &self.spec
    }

    /// Copies every layer's keys and values of block `src` into block `dst` (copy-on-write of a
    /// block that forked sequences share).
    pub fn copy_block(&mut self, src: usize, dst: usize) -> Result<()> {
        let n = self.spec.num_blocks;
        if src >= n || dst >= n {
            return Err(ModelError::KvCache(format!(
                "block copy {src} -> {dst} is outside the cache of {n} blocks"
            )));
        }
        let len = self.spec.block_size * self.spec.num_kv_heads * self.spec.head_dim;
        fn copy<T: Copy>(buf: &mut [T], src: usize, dst: usize, len: usize) {
            buf.copy_within(src * len..(src + 1) * len, dst * len);
        }
        for layer in &mut self.layers {
            match layer {
                LayerKv::F32 { k, v } => {
                    copy(k, src, dst, len);
                    copy(v, src, dst, len);
                }
                LayerKv::F16 { k, v } => {
                    copy(k, src, dst, len);
                    copy(v, src, dst, len);
                }
                LayerKv::Bf16 { k, v } => {
                    copy(k, src, dst, len);
                    copy(v, src, dst, len);
                }
                #[cfg(feature = "cuda")]
                LayerKv::Cuda(kv) => kv.copy_within(src * len, dst * len, len)?,
            }
        }
        Ok(())
    }

    /// Writes every page once, so the cache's memory is committed at start and resident size
    /// stays flat under load instead of growing with the first long requests.
    pub fn commit(&mut self) {
        const PAGE_ELEMS: usize = 1024;
        fn touch<T: Copy>(buf: &mut [T]) {
            let zero = buf.first().copied();
            if let Some(z) = zero {
                for i in (0..buf.len()).step_by(PAGE_ELEMS) {
                    // Volatile so the store of an unchanged value is not optimized away.
                    // SAFETY: `i` is inside `buf`.
                    unsafe { std::ptr::write_volatile(buf.as_mut_ptr().add(i), z) };
                }
            }
        }
        for layer in &mut self.layers {
            match layer {
                LayerKv::F32 { k, v } => {
                    touch(k);
                    touch(v);
                }
                LayerKv::F16 { k, v } => {
                    touch(k);
                    touch(v);
                }
                LayerKv::Bf16 { k, v } => {
                    touch(k);
                    touch(v);
                }
                // Zeroed on allocation, so already committed.
                #[cfg(feature = "cuda")]
                LayerKv::Cuda(_) => {}
            }
        }
    }

    pub fn layer_mut(&mut self, layer: usize) -> &mut LayerKv {
        &mut self.layers[layer]
    }
}
