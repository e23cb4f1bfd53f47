//! Launching our CUDA kernels (`kernels/cuda/*.cu`) on candle tensors and the device KV cache.
//!
//! Owns grids, argument order and the checks that make a launch safe: dtype, device, shape,
//! and rows that are contiguous inside (a row stride is allowed, so the parts of a fused QKV
//! output are read in place). Depends on `kv` and candle's CUDA backend only.

use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda::WrapErr;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};
use half::bf16;

use super::kv::{CudaKv, KvSlices};
use crate::model::cpu::attention::AttentionShape;
use crate::model::error::{ModelError, Result};

const CACHE_MODULE: &str = "enclave_cache";
const ATTENTION_MODULE: &str = "enclave_attention";
const FUSED_MODULE: &str = "enclave_fused";
/// Threads per block of the attention kernel (`WARPS * 32` in attention.cu).
const ATTENTION_THREADS: u32 = 128;
/// Query heads one attention block serves per KV head (`MAX_GROUP` in attention.cu).
const ATTENTION_MAX_GROUP: usize = 8;
/// Largest head the attention kernel holds in registers (`MAX_HEAD_DIM` in attention.cu).
pub const MAX_HEAD_DIM: usize = 256;

fn bad(m: String) -> ModelError {
    ModelError::Device(m)
}

pub fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d.clone()),
        d => Err(bad(format!("expected a CUDA tensor, found one on {d:?}"))),
    }
}

/// A 2-D bf16 tensor's layout as a kernel reads it: first element and row stride.
struct Rows {
    rows: usize,
    cols: usize,
    start: usize,
    stride: usize,
}

fn rows_of(t: &Tensor, what: &str) -> Result<Rows> {
    if t.dtype() != DType::BF16 {
        return Err(bad(format!("{what}: expected bf16, found {:?}", t.dtype())));
    }
    let (rows, cols) = t.dims2()?;
    let l = t.layout();
    let stride = l.stride();
    if cols > 1 && stride[1] != 1 {
        return Err(bad(format!("{what}: rows must be contiguous inside")));
    }
    Ok(Rows {
        rows,
        cols,
        start: l.start_offset(),
        stride: if rows > 1 { stride[0] } else { cols },
    })
}

/// Runs `f` on a CUDA tensor's storage, as `dtype` elements from its start offset on.
fn with_view<T, R>(
    t: &Tensor,
    start: usize,
    f: impl FnOnce(CudaView<'_, T>) -> Result<R>,
) -> Result<R>
where
    T: candle_core::cuda::CudaDType,
{
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => f(s.as_cuda_slice::<T>()?.slice(start..)),
        _ => Err(bad("expected a CUDA tensor".into())),
    }
}

fn wrap(slice: CudaSlice<bf16>, dev: &CudaDevice, shape: (usize, usize)) -> Tensor {
    Tensor::from_storage(
        Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())),
        shape,
        BackpropOp::none(),
        false,
    )
}

fn grid(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Writes this step's keys and values (`[rows, kv_heads * head_dim]` each, bf16) into the
/// cache at `slots` (`[rows]`, u32 on the device; `u32::MAX` skips a row).
///
/// # Safety
/// Every slot other than `u32::MAX` must be below the cache's slot count: the slots live on
/// the device, so they cannot be checked here (`ForwardBatch::validate` checks them).
pub unsafe fn reshape_and_cache(
    k: &Tensor,
    v: &Tensor,
    slots: &Tensor,
    cache: &mut CudaKv,
) -> Result<()> {
    let (kr, vr) = (rows_of(k, "keys")?, rows_of(v, "values")?);
    if kr.rows != vr.rows || kr.cols != vr.cols || kr.cols != cache.row_len() {
        return Err(bad(format!(
            "keys {}x{}, values {}x{} and cache rows of {} disagree",
            kr.rows,
            kr.cols,
            vr.rows,
            vr.cols,
            cache.row_len()
        )));
    }
    if slots.dtype() != DType::U32 || slots.dims1()? != kr.rows {
        return Err(bad("slot mapping must be u32, one per row".into()));
    }
    if kr.rows == 0 {
        return Ok(());
    }
    let dev = cuda_device(k)?;
    let name = format!("reshape_and_cache_{}", cache.dtype_name());
    let func = dev.get_or_load_custom_func(&name, CACHE_MODULE, enclave_kernels::CACHE)?;
    let (k_stride, v_stride, row_len) = (kr.stride as i64, vr.stride as i64, kr.cols as i32);
    with_view::<bf16, _>(k, kr.start, |kv| {
        with_view::<bf16, _>(v, vr.start, |vv| {
            with_view::<u32, _>(slots, slots.layout().start_offset(), |sv| {
                let mut b = func.builder();
                b.arg(&kv).arg(&vv).arg(&k_stride).arg(&v_stride);
                match cache.slices() {
                    KvSlices::Bf16(kc, vc) => b.arg(kc).arg(vc),
                    KvSlices::F16(kc, vc) => b.arg(kc).arg(vc),
                    KvSlices::F32(kc, vc) => b.arg(kc).arg(vc),
                };
                b.arg(&sv).arg(&row_len);
                // SAFETY: slots are in range (the caller's contract) and each pointer covers
                // `rows` rows of its stride.
                unsafe { b.launch(grid(kr.rows, 256)) }.w()?;
                Ok(())
            })
        })
    })
}

/// What paged attention needs besides the queries: per row, its sequence and position; per
/// sequence, its block table padded to `max_blocks`.
pub struct AttentionMeta<'a> {
    pub row_seq: &'a Tensor,
    pub row_pos: &'a Tensor,
    pub block_tables: &'a Tensor,
    pub max_blocks: usize,
    /// Heads, head size, block size, scale and window: the same as the CPU kernel's.
    pub shape: AttentionShape,
}

/// Causal attention of every query row (`[rows, num_heads * head_dim]`, bf16) over its
/// sequence's cached positions up to its own. Returns `[rows, num_heads * head_dim]`, bf16.
///
/// # Safety
/// Each row's sequence must be a row of the block tables, its position must be covered by that
/// sequence's table, and every block id must be inside the cache: the metadata lives on the
/// device, so it cannot be checked here (`ForwardBatch::validate` checks it).
pub unsafe fn paged_attention(
    q: &Tensor,
    cache: &CudaKv,
    meta: &AttentionMeta<'_>,
) -> Result<Tensor> {
    let m = &meta.shape;
    let qr = rows_of(q, "queries")?;
    if qr.cols != m.num_heads * m.head_dim
        || m.head_dim > MAX_HEAD_DIM
        || m.num_kv_heads == 0
        || !m.num_heads.is_multiple_of(m.num_kv_heads)
        || cache.row_len() != m.num_kv_heads * m.head_dim
    {
        return Err(bad(format!(
            "attention shape: {} query columns for {} heads ({} KV heads) of {} (at most {MAX_HEAD_DIM}), cache rows of {}",
            qr.cols,
            m.num_heads,
            m.num_kv_heads,
            m.head_dim,
            cache.row_len()
        )));
    }
    let index = |t: &Tensor| t.dtype() == DType::U32 && t.is_contiguous();
    if !(index(meta.row_seq) && index(meta.row_pos) && index(meta.block_tables))
        || meta.row_seq.dims1()? != qr.rows
        || meta.row_pos.dims1()? != qr.rows
        || meta.block_tables.dims2()?.1 != meta.max_blocks
    {
        return Err(bad(format!(
            "attention metadata: row sequences, row positions ({} rows) and block tables ({} columns) must be contiguous u32",
            qr.rows, meta.max_blocks
        )));
    }
    if qr.rows == 0 {
        return Err(bad("attention of no query rows".into()));
    }
    let dev = cuda_device(q)?;
    // SAFETY: every element is written by the kernel before it is read.
    let out = unsafe { dev.alloc::<bf16>(qr.rows * qr.cols) }?;
    // The kernel keeps head_dim / 32 elements per lane in registers, compiled for three sizes.
    let bucket = match m.head_dim {
        0..=64 => 64,
        65..=128 => 128,
        _ => 256,
    };
    let name = format!("paged_attention_{}_{bucket}", cache.dtype_name());
    let chunks = (m.num_heads / m.num_kv_heads).div_ceil(ATTENTION_MAX_GROUP);
    let func = dev.get_or_load_custom_func(&name, ATTENTION_MODULE, enclave_kernels::ATTENTION)?;
    let q_stride = qr.stride as i64;
    let ints = [
        meta.max_blocks as i32,
        m.num_heads as i32,
        m.num_kv_heads as i32,
        m.head_dim as i32,
        m.block_size as i32,
    ];
    let window = m.sliding_window.unwrap_or(0) as i32;
    let cfg = LaunchConfig {
        grid_dim: (qr.rows as u32, (m.num_kv_heads * chunks) as u32, 1),
        block_dim: (ATTENTION_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    with_view::<bf16, _>(q, qr.start, |qv| {
        with_view::<u32, _>(
            meta.block_tables,
            meta.block_tables.layout().start_offset(),
            |tables| {
                with_view::<u32, _>(meta.row_seq, meta.row_seq.layout().start_offset(), |seqs| {
                    with_view::<u32, _>(meta.row_pos, meta.row_pos.layout().start_offset(), |pos| {
                        let mut b = func.builder();
                        b.arg(&out).arg(&qv).arg(&q_stride);
                        match cache.slices() {
                            KvSlices::Bf16(kc, vc) => b.arg(kc).arg(vc),
                            KvSlices::F16(kc, vc) => b.arg(kc).arg(vc),
                            KvSlices::F32(kc, vc) => b.arg(kc).arg(vc),
                        };
                        b.arg(&tables).arg(&ints[0]).arg(&seqs).arg(&pos);
                        b.arg(&ints[1]).arg(&ints[2]).arg(&ints[3]).arg(&ints[4]);
                        b.arg(&m.scale).arg(&window);
                        // SAFETY: the host checked each row's sequence, position and block table
                        // against the cache (`ForwardBatch::validate`) before building them.
                        unsafe { b.launch(cfg) }.w()?;
                        Ok(())
                    })
                })
            },
        )
    })?;
    Ok(wrap(out, &dev, (qr.rows, qr.cols)))
}

/// `(x + add, rms_norm(x + add) * weight)`, both bf16 `[rows, cols]`; with no `add`, the
/// first is `x` itself.
pub fn add_rms_norm(
    x: &Tensor,
    add: Option<&Tensor>,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let x = x.contiguous()?;
    let xr = rows_of(&x, "residual")?;
    let add = add.map(|a| a.contiguous()).transpose()?;
    if let Some(a) = &add {
        let ar = rows_of(a, "addend")?;
        if (ar.rows, ar.cols) != (xr.rows, xr.cols) {
            return Err(bad("residual and addend differ in shape".into()));
        }
    }
    let weight = weight.contiguous()?;
    if weight.dtype() != DType::BF16 || weight.dims1()? != xr.cols {
        return Err(bad(
            "norm weight must be bf16 with one element per column".into()
        ));
    }
    let n = xr.rows * xr.cols;
    if n == 0 {
        return Err(bad("RMSNorm of an empty tensor".into()));
    }
    let dev = cuda_device(&x)?;
    // SAFETY: written by the kernel before any read.
    let out = unsafe { dev.alloc::<bf16>(n) }?;
    let residual = match &add {
        // SAFETY: as above.
        Some(_) => Some(unsafe { dev.alloc::<bf16>(n) }?),
        None => None,
    };
    let func =
        dev.get_or_load_custom_func("add_rms_norm_bf16", FUSED_MODULE, enclave_kernels::FUSED)?;
    let (cols, null) = (xr.cols as i32, 0u64);
    with_view::<bf16, _>(&x, xr.start, |xv| {
        with_view::<bf16, _>(&weight, weight.layout().start_offset(), |wv| {
            let run = |addv: Option<CudaView<'_, bf16>>| -> Result<()> {
                let mut b = func.builder();
                b.arg(&xv);
                match &addv {
                    Some(a) => b.arg(a),
                    None => b.arg(&null),
                };
                match &residual {
                    Some(r) => b.arg(r),
                    None => b.arg(&null),
                };
                b.arg(&out).arg(&wv).arg(&cols).arg(&eps);
                // SAFETY: all buffers hold `rows * cols` elements; null pointers are checked
                // by the kernel.
                unsafe { b.launch(grid(xr.rows, 256)) }.w()?;
                Ok(())
            };
            match &add {
                Some(a) => with_view::<bf16, _>(a, a.layout().start_offset(), |av| run(Some(av))),
                None => run(None),
            }
        })
    })?;
    let shape = (xr.rows, xr.cols);
    let residual = match residual {
        Some(r) => wrap(r, &dev, shape),
        None => x,
    };
    Ok((residual, wrap(out, &dev, shape)))
}

/// Rotary embedding (rotate-half layout) of `x`, `[rows, heads * head_dim]` bf16, by per-row
/// `cos`/`sin` tables (`[rows, half]`, f32). Returns a contiguous bf16 tensor.
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<Tensor> {
    let xr = rows_of(x, "rotary input")?;
    let (crows, half) = cos.dims2()?;
    if heads == 0
        || xr.cols % heads != 0
        || crows != xr.rows
        || sin.dims2()? != (crows, half)
        || cos.dtype() != DType::F32
        || sin.dtype() != DType::F32
        || 2 * half > xr.cols / heads
    {
        return Err(bad(format!(
            "rotary: {}x{} input for {heads} heads with cos/sin of {crows}x{half}",
            xr.rows, xr.cols
        )));
    }
    if xr.rows == 0 || xr.cols == 0 {
        return Err(bad("rotary of an empty tensor".into()));
    }
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    let dev = cuda_device(x)?;
    // SAFETY: written by the kernel before any read.
    let out = unsafe { dev.alloc::<bf16>(xr.rows * xr.cols) }?;
    {
        let func =
            dev.get_or_load_custom_func("rotary_bf16", FUSED_MODULE, enclave_kernels::FUSED)?;
        let stride = xr.stride as i64;
        let ints = [heads as i32, (xr.cols / heads) as i32, half as i32];
        with_view::<bf16, _>(x, xr.start, |xv| {
            with_view::<f32, _>(&cos, cos.layout().start_offset(), |cv| {
                with_view::<f32, _>(&sin, sin.layout().start_offset(), |sv| {
                    let mut b = func.builder();
                    b.arg(&xv).arg(&stride).arg(&out).arg(&cv).arg(&sv);
                    b.arg(&ints[0]).arg(&ints[1]).arg(&ints[2]);
                    // SAFETY: shapes checked above.
                    unsafe { b.launch(grid(xr.rows, 256)) }.w()?;
                    Ok(())
                })
            })
        })?;
    }
    Ok(wrap(out, &dev, (xr.rows, xr.cols)))
}

/// `silu(gate) * up` from one `[rows, 2 * inter]` bf16 tensor (gate columns first).
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    let gate_up = gate_up.contiguous()?;
    let gr = rows_of(&gate_up, "gate/up")?;
    if gr.cols % 2 != 0 {
        return Err(bad("gate/up must have an even number of columns".into()));
    }
    let inter = gr.cols / 2;
    let n = gr.rows * inter;
    if n == 0 {
        return Err(bad("SiLU product of an empty tensor".into()));
    }
    let dev = cuda_device(&gate_up)?;
    // SAFETY: written by the kernel before any read.
    let out = unsafe { dev.alloc::<bf16>(n) }?;
    {
        let func =
            dev.get_or_load_custom_func("silu_mul_bf16", FUSED_MODULE, enclave_kernels::FUSED)?;
        let (rows, inter_i) = (gr.rows as i64, inter as i32);
        let blocks = n.div_ceil(256).min(65_535 * 8) as u32;
        with_view::<bf16, _>(&gate_up, gr.start, |gv| {
            let mut b = func.builder();
            b.arg(&gv).arg(&out).arg(&rows).arg(&inter_i);
            // SAFETY: the kernel's grid-stride loop stays inside `rows * inter`.
            unsafe {
                b.launch(LaunchConfig {
                    grid_dim: (blocks, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                })
            }
            .w()?;
            Ok(())
        })?;
    }
    Ok(wrap(out, &dev, (gr.rows, inter)))
}
