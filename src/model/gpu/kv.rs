//! One layer's paged KV cache in GPU memory: a key and a value buffer of
//! `num_blocks * block_size` rows of `num_kv_heads * head_dim` elements, in the cache dtype.
//!
//! Owns the device buffers and block copies; which block belongs to whom is the engine's
//! business. Depends on candle's CUDA backend only.

use candle_core::cuda::cudarc::driver::{result, CudaSlice, DevicePtr};
use candle_core::CudaDevice;
use half::{bf16, f16};

use crate::model::error::{ModelError, Result};
use crate::model::kv_cache::{KvCacheSpec, KvDtype};

pub enum CudaKv {
    Bf16 {
        k: CudaSlice<bf16>,
        v: CudaSlice<bf16>,
        row_len: usize,
    },
    F16 {
        k: CudaSlice<f16>,
        v: CudaSlice<f16>,
        row_len: usize,
    },
    F32 {
        k: CudaSlice<f32>,
        v: CudaSlice<f32>,
        row_len: usize,
    },
}

/// Borrowed key and value buffers, typed, for a kernel launch.
pub enum KvSlices<'a> {
    Bf16(&'a CudaSlice<bf16>, &'a CudaSlice<bf16>),
    F16(&'a CudaSlice<f16>, &'a CudaSlice<f16>),
    F32(&'a CudaSlice<f32>, &'a CudaSlice<f32>),
}

impl CudaKv {
    /// A zeroed layer; zeroing also commits the memory, so the engine's budget is real.
    pub fn zeros(spec: &KvCacheSpec, dev: &CudaDevice) -> Result<Self> {
        let row_len = spec.num_kv_heads * spec.head_dim;
        let n = spec
            .num_slots()
            .checked_mul(row_len)
            .ok_or_else(|| ModelError::KvCache("size overflows".into()))?;
        let oom = |e: candle_core::Error| {
            ModelError::KvCache(format!(
                "cannot allocate {} bytes of GPU memory for a layer's keys and values: {e}; lower --gpu-memory-utilization or --kv-cache-memory",
                2 * n * spec.dtype.size_in_bytes()
            ))
        };
        Ok(match spec.dtype {
            KvDtype::Bf16 => Self::Bf16 {
                k: dev.alloc_zeros(n).map_err(oom)?,
                v: dev.alloc_zeros(n).map_err(oom)?,
                row_len,
            },
            KvDtype::F16 => Self::F16 {
                k: dev.alloc_zeros(n).map_err(oom)?,
                v: dev.alloc_zeros(n).map_err(oom)?,
                row_len,
            },
            KvDtype::F32 => Self::F32 {
                k: dev.alloc_zeros(n).map_err(oom)?,
                v: dev.alloc_zeros(n).map_err(oom)?,
                row_len,
            },
        })
    }

    pub fn row_len(&self) -> usize {
        match self {
            Self::Bf16 { row_len, .. } | Self::F16 { row_len, .. } | Self::F32 { row_len, .. } => {
                *row_len
            }
        }
    }

    /// The suffix of this cache dtype's kernels.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Self::Bf16 { .. } => "bf16",
            Self::F16 { .. } => "f16",
            Self::F32 { .. } => "f32",
        }
    }

    /// The buffers for a launch; a launch that writes them takes the cache `&mut` as well.
    pub fn slices(&self) -> KvSlices<'_> {
        match self {
            Self::Bf16 { k, v, .. } => KvSlices::Bf16(k, v),
            Self::F16 { k, v, .. } => KvSlices::F16(k, v),
            Self::F32 { k, v, .. } => KvSlices::F32(k, v),
        }
    }

    /// Copies the `len` elements at element offset `src` of both buffers to offset `dst`,
    /// queued on the device's stream like every kernel, so it lands between steps in order.
    pub fn copy_within(&mut self, src: usize, dst: usize, len: usize) -> Result<()> {
        fn copy<T>(buf: &CudaSlice<T>, src: usize, dst: usize, len: usize) -> Result<()> {
            let stream = buf.stream().clone();
            let fail = |e| ModelError::KvCache(format!("block copy on the GPU failed: {e}"));
            // The raw driver call below does not bind the context the way cudarc's safe calls do.
            stream.context().bind_to_thread().map_err(fail)?;
            let size = std::mem::size_of::<T>();
            let (base, _guard) = buf.device_ptr(&stream);
            // SAFETY: both ranges lie inside `buf` (checked by the caller against the block
            // count) and do not overlap (distinct blocks).
            unsafe {
                result::memcpy_dtod_async(
                    base + (dst * size) as u64,
                    base + (src * size) as u64,
                    len * size,
                    stream.cu_stream(),
                )
            }
            .map_err(fail)
        }
        match self {
            Self::Bf16 { k, v, .. } => copy(k, src, dst, len).and(copy(v, src, dst, len)),
            Self::F16 { k, v, .. } => copy(k, src, dst, len).and(copy(v, src, dst, len)),
            Self::F32 { k, v, .. } => copy(k, src, dst, len).and(copy(v, src, dst, len)),
        }
    }

    /// The buffers copied to the host, widened to f32 (tests compare them with the CPU cache).
    pub fn to_host_f32(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        fn host<T: candle_core::cuda::cudarc::driver::DeviceRepr + Copy + Default>(
            buf: &CudaSlice<T>,
            widen: impl Fn(T) -> f32,
        ) -> Result<Vec<f32>> {
            let v = buf
                .stream()
                .clone_dtoh(buf)
                .map_err(|e| ModelError::KvCache(format!("reading the GPU cache failed: {e}")))?;
            Ok(v.into_iter().map(widen).collect())
        }
        Ok(match self {
            Self::Bf16 { k, v, .. } => (host(k, f32::from)?, host(v, f32::from)?),
            Self::F16 { k, v, .. } => (host(k, f32::from)?, host(v, f32::from)?),
            Self::F32 { k, v, .. } => (host(k, |x| x)?, host(v, |x| x)?),
        })
    }
}
