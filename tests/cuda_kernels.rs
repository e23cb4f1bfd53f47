//! Each CUDA kernel against the CPU reference on random inputs (CUDA builds, on a GPU).
//!
//! Tolerances: the kernels read bf16 activations and compute in f32, then round their output
//! to bf16 (8 significant bits, a relative step of 2^-8 ≈ 0.4%). So copies must match bit for
//! bit, and computed outputs must agree within two bf16 steps of the reference's magnitude.
#![cfg(feature = "cuda")]

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use enclave::model::cpu::attention::{paged_attention, write_slots, AttentionShape, SeqAttention};
use enclave::model::gpu::kernels::{self, AttentionMeta};
use enclave::model::gpu::kv::CudaKv;
use enclave::model::{KvCacheSpec, KvDtype};
use half::bf16;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn gpu() -> Result<Device> {
    Ok(Device::new_cuda(0)?)
}

/// Random values already rounded to bf16, so the CPU reference sees what the GPU sees.
fn random_bf16(rng: &mut SmallRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-scale..scale)).to_f32())
        .collect()
}

fn to_gpu_bf16(v: &[f32], shape: (usize, usize), dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?
        .to_dtype(DType::BF16)?
        .to_device(dev)?)
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Within `steps` bf16 rounding steps of the larger magnitude of each pair (plus a floor).
fn assert_close(got: &[f32], want: &[f32], steps: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = steps * (g.abs().max(w.abs()) / 256.0) + 1e-3;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: GPU {g}, CPU {w} (tolerance {tol})"
        );
    }
}

fn spec(
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    num_blocks: usize,
    dtype: KvDtype,
) -> KvCacheSpec {
    KvCacheSpec {
        num_layers: 1,
        num_kv_heads: kv_heads,
        head_dim,
        block_size,
        num_blocks,
        dtype,
    }
}

#[test]
fn reshape_and_cache_writes_every_row_to_its_slot_exactly() -> Result<()> {
    let dev = gpu()?;
    let Device::Cuda(cuda) = &dev else {
        unreachable!()
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let (rows, kv_heads, hd, bs, nb) = (37, 2, 64, 16, 8);
    let row = kv_heads * hd;
    for dtype in [KvDtype::Bf16, KvDtype::F16, KvDtype::F32] {
        let s = spec(kv_heads, hd, bs, nb, dtype);
        // A fused QKV-like buffer: keys and values are column ranges of wider rows.
        let wide = random_bf16(&mut rng, rows * 3 * row, 2.0);
        let fused = to_gpu_bf16(&wide, (rows, 3 * row), &dev)?;
        let (k, v) = (fused.narrow(1, row, row)?, fused.narrow(1, 2 * row, row)?);
        let mut slots: Vec<u32> = (0..(nb * bs) as u32).collect();
        slots.sort_by_key(|x| x.wrapping_mul(2_654_435_761) % 1009);
        slots.truncate(rows);
        slots[5] = u32::MAX; // a padding row is skipped
        let slot_t = Tensor::from_slice(&slots, rows, &dev)?;
        let mut cache = CudaKv::zeros(&s, cuda)?;
        // SAFETY: every slot is below the cache's slot count.
        unsafe { kernels::reshape_and_cache(&k, &v, &slot_t, &mut cache) }?;
        let (gk, gv) = cache.to_host_f32()?;

        let (ks, vs): (Vec<f32>, Vec<f32>) = (
            (0..rows)
                .flat_map(|r| wide[r * 3 * row + row..r * 3 * row + 2 * row].to_vec())
                .collect(),
            (0..rows)
                .flat_map(|r| wide[r * 3 * row + 2 * row..(r + 1) * 3 * row].to_vec())
                .collect(),
        );
        let keep: Vec<usize> = (0..rows).filter(|&r| slots[r] != u32::MAX).collect();
        let pick = |src: &[f32]| {
            keep.iter()
                .flat_map(|&r| src[r * row..(r + 1) * row].to_vec())
                .collect::<Vec<_>>()
        };
        let kept_slots: Vec<u32> = keep.iter().map(|&r| slots[r]).collect();
        // The cache holds each value rounded to its dtype (exact for f32 and bf16; f16 may
        // round the tiniest values, which become subnormal).
        let round = |x: f32| match dtype {
            KvDtype::F32 | KvDtype::Bf16 => x,
            KvDtype::F16 => half::f16::from_f32(x).to_f32(),
        };
        let (mut ck, mut cv) = (
            vec![0f32; s.num_slots() * row],
            vec![0f32; s.num_slots() * row],
        );
        let rounded = |src: &[f32]| pick(src).into_iter().map(round).collect::<Vec<_>>();
        write_slots(&mut ck, &rounded(&ks), &kept_slots, row);
        write_slots(&mut cv, &rounded(&vs), &kept_slots, row);
        assert_eq!(gk, ck, "{dtype:?}: keys");
        assert_eq!(gv, cv, "{dtype:?}: values");
    }
    Ok(())
}

/// A random paged cache, then attention for a mix of a fresh prefill, a prefill chunk after a
/// cached prefix, and decode rows, compared with the CPU kernel.
fn attention_case(
    num_heads: usize,
    kv_heads: usize,
    hd: usize,
    window: Option<usize>,
    dtype: KvDtype,
) -> Result<()> {
    let dev = gpu()?;
    let Device::Cuda(cuda) = &dev else {
        unreachable!()
    };
    let mut rng = SmallRng::seed_from_u64((num_heads * 1000 + hd) as u64);
    let (bs, nb) = (16, 64);
    let s = spec(kv_heads, hd, bs, nb, dtype);
    let row = kv_heads * hd;
    // (context_len, query_len) per sequence.
    let seqs_shape = [(45usize, 45usize), (70, 9), (33, 1), (129, 1), (1, 1)];
    let mut next_block = 0u32;
    let tables: Vec<Vec<u32>> = seqs_shape
        .iter()
        .map(|&(ctx, _)| {
            (0..ctx.div_ceil(bs))
                .map(|_| {
                    next_block += 1;
                    (next_block * 11) % nb as u32
                })
                .collect()
        })
        .collect();
    // Fill every slot the tables reach through the kernel, then attend.
    let mut slots = Vec::new();
    let (mut row_seq, mut row_pos) = (Vec::new(), Vec::new());
    let mut cpu_seqs = Vec::new();
    let mut q_rows = 0;
    for (i, &(ctx, ql)) in seqs_shape.iter().enumerate() {
        for p in 0..ctx {
            slots.push(tables[i][p / bs] * bs as u32 + (p % bs) as u32);
        }
        for p in ctx - ql..ctx {
            row_seq.push(i as u32);
            row_pos.push(p as u32);
        }
        cpu_seqs.push((q_rows, ql, ctx));
        q_rows += ql;
    }
    let n = slots.len();
    let (k, v) = (
        random_bf16(&mut rng, n * row, 1.0),
        random_bf16(&mut rng, n * row, 1.0),
    );
    let mut cache = CudaKv::zeros(&s, cuda)?;
    let (kt, vt) = (
        to_gpu_bf16(&k, (n, row), &dev)?,
        to_gpu_bf16(&v, (n, row), &dev)?,
    );
    let slot_t = Tensor::from_slice(&slots, n, &dev)?;
    // SAFETY: the tables' blocks are below `nb`, so every slot is inside the cache.
    unsafe { kernels::reshape_and_cache(&kt, &vt, &slot_t, &mut cache) }?;
    let q = random_bf16(&mut rng, q_rows * num_heads * hd, 1.0);
    let max_blocks = tables.iter().map(Vec::len).max().unwrap_or(1);
    let mut flat = vec![0u32; tables.len() * max_blocks];
    for (i, t) in tables.iter().enumerate() {
        flat[i * max_blocks..i * max_blocks + t.len()].copy_from_slice(t);
    }
    let (row_seq_t, row_pos_t) = (
        Tensor::from_slice(&row_seq, q_rows, &dev)?,
        Tensor::from_slice(&row_pos, q_rows, &dev)?,
    );
    let tables_t = Tensor::from_slice(&flat, (tables.len(), max_blocks), &dev)?;
    let shape = AttentionShape {
        num_heads,
        num_kv_heads: kv_heads,
        head_dim: hd,
        block_size: bs,
        scale: (hd as f32).powf(-0.5),
        sliding_window: window,
    };
    let meta = AttentionMeta {
        row_seq: &row_seq_t,
        row_pos: &row_pos_t,
        block_tables: &tables_t,
        max_blocks,
        shape,
    };
    let qt = to_gpu_bf16(&q, (q_rows, num_heads * hd), &dev)?;
    // SAFETY: every row's position is covered by its sequence's table, and blocks are below `nb`.
    let got = host_f32(&unsafe { kernels::paged_attention(&qt, &cache, &meta) }?)?;

    let (ck, cv) = cache.to_host_f32()?;
    let seqs: Vec<SeqAttention> = cpu_seqs
        .iter()
        .zip(&tables)
        .map(|(&(start, ql, ctx), t)| SeqAttention {
            query_start: start,
            query_len: ql,
            context_len: ctx,
            block_table: t,
        })
        .collect();
    let mut want = vec![0f32; q_rows * num_heads * hd];
    paged_attention(&q, &ck, &cv, &seqs, shape, &mut want);
    assert_close(
        &got,
        &want,
        2.0,
        &format!("attention {num_heads}/{kv_heads}x{hd} window {window:?} {dtype:?}"),
    );
    Ok(())
}

#[test]
fn paged_attention_matches_the_cpu_for_prefill_chunks_and_decode() -> Result<()> {
    attention_case(8, 2, 64, None, KvDtype::Bf16)?;
    attention_case(4, 4, 128, None, KvDtype::F32)?;
    attention_case(14, 2, 64, None, KvDtype::F16)?;
    // More query heads per KV head than one block serves (8): the group is split.
    attention_case(16, 1, 128, None, KvDtype::Bf16)?;
    // Heads narrower than a warp, as in the tiny test models.
    attention_case(4, 2, 16, None, KvDtype::F32)?;
    Ok(())
}

#[test]
fn paged_attention_honours_the_sliding_window() -> Result<()> {
    attention_case(8, 2, 64, Some(20), KvDtype::Bf16)
}

#[test]
fn paged_attention_takes_the_largest_head() -> Result<()> {
    attention_case(2, 1, 256, None, KvDtype::Bf16)
}

#[test]
fn add_rms_norm_matches_f32_reference() -> Result<()> {
    let dev = gpu()?;
    let mut rng = SmallRng::seed_from_u64(3);
    let (rows, cols, eps) = (19, 896, 1e-6f32);
    let x = random_bf16(&mut rng, rows * cols, 3.0);
    let a = random_bf16(&mut rng, rows * cols, 3.0);
    let w = random_bf16(&mut rng, cols, 1.5);
    let wt = Tensor::from_slice(&w, cols, &Device::Cpu)?
        .to_dtype(DType::BF16)?
        .to_device(&dev)?;
    let (res, out) = kernels::add_rms_norm(
        &to_gpu_bf16(&x, (rows, cols), &dev)?,
        Some(&to_gpu_bf16(&a, (rows, cols), &dev)?),
        &wt,
        eps,
    )?;
    let (_, plain) = kernels::add_rms_norm(&to_gpu_bf16(&x, (rows, cols), &dev)?, None, &wt, eps)?;
    let mut want_res = Vec::new();
    let (mut want, mut want_plain) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let sum: Vec<f32> = (0..cols)
            .map(|c| bf16::from_f32(x[r * cols + c] + a[r * cols + c]).to_f32())
            .collect();
        let norm = |v: &[f32]| {
            let inv = 1.0 / (v.iter().map(|e| e * e).sum::<f32>() / cols as f32 + eps).sqrt();
            v.iter()
                .zip(&w)
                .map(|(e, w)| e * inv * w)
                .collect::<Vec<_>>()
        };
        want.extend(norm(&sum));
        want_plain.extend(norm(&x[r * cols..(r + 1) * cols]));
        want_res.extend(sum);
    }
    assert_eq!(
        host_f32(&res)?,
        want_res,
        "the residual sum is rounded like the residual stream"
    );
    assert_close(&host_f32(&out)?, &want, 2.0, "add + rms_norm");
    assert_close(&host_f32(&plain)?, &want_plain, 2.0, "rms_norm");
    Ok(())
}

#[test]
fn rotary_matches_the_rotate_half_reference() -> Result<()> {
    let dev = gpu()?;
    let mut rng = SmallRng::seed_from_u64(4);
    let (rows, heads, hd) = (11, 3, 64);
    let half = hd / 2;
    let x = random_bf16(&mut rng, rows * heads * hd * 2, 2.0);
    // Read through a row stride: the left half of wider rows.
    let wide = to_gpu_bf16(&x, (rows, 2 * heads * hd), &dev)?;
    let positions: Vec<f32> = (0..rows).map(|r| (r * 37 % 500) as f32).collect();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in &positions {
        for j in 0..half {
            let angle = p * 10_000f32.powf(-((2 * j) as f32) / hd as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let (ct, st) = (
        Tensor::from_slice(&cos, (rows, half), &dev)?,
        Tensor::from_slice(&sin, (rows, half), &dev)?,
    );
    let got = host_f32(&kernels::rotary(
        &wide.narrow(1, 0, heads * hd)?,
        &ct,
        &st,
        heads,
    )?)?;
    let mut want = Vec::new();
    for r in 0..rows {
        for h in 0..heads {
            let e = &x[r * 2 * heads * hd + h * hd..][..hd];
            let (c, s) = (&cos[r * half..][..half], &sin[r * half..][..half]);
            want.extend((0..half).map(|j| e[j] * c[j] - e[j + half] * s[j]));
            want.extend((0..half).map(|j| e[j + half] * c[j] + e[j] * s[j]));
        }
    }
    assert_close(&got, &want, 2.0, "rotary");
    Ok(())
}

#[test]
fn silu_mul_matches_f32_reference() -> Result<()> {
    let dev = gpu()?;
    let mut rng = SmallRng::seed_from_u64(5);
    let (rows, inter) = (7, 4864);
    let gu = random_bf16(&mut rng, rows * 2 * inter, 6.0);
    let got = host_f32(&kernels::silu_mul(&to_gpu_bf16(
        &gu,
        (rows, 2 * inter),
        &dev,
    )?)?)?;
    let want: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let g = &gu[r * 2 * inter..][..inter];
            let u = &gu[r * 2 * inter + inter..][..inter];
            g.iter()
                .zip(u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close(&got, &want, 2.0, "silu_mul");
    Ok(())
}

#[test]
fn block_copies_land_in_every_layer_on_the_gpu() -> Result<()> {
    let dev = gpu()?;
    let spec = KvCacheSpec {
        num_layers: 2,
        ..spec(2, 64, 16, 4, KvDtype::Bf16)
    };
    let mut cache = enclave::model::KvCache::new_on(spec, &dev)?;
    let row = 2 * 64;
    let mut rng = SmallRng::seed_from_u64(6);
    let k = random_bf16(&mut rng, 16 * row, 1.0);
    let slots: Vec<u32> = (16..32).collect(); // block 1
    for layer in 0..2 {
        let enclave::model::kv_cache::LayerKv::Cuda(kv) = cache.layer_mut(layer) else {
            panic!("a CUDA cache must live on the GPU");
        };
        let t = to_gpu_bf16(&k, (16, row), &dev)?;
        let slot_t = Tensor::from_slice(&slots, 16, &dev)?;
        // SAFETY: slots 16..32 are block 1 of 4.
        unsafe { kernels::reshape_and_cache(&t, &t, &slot_t, kv) }?;
    }
    cache.copy_block(1, 3)?;
    for layer in 0..2 {
        let enclave::model::kv_cache::LayerKv::Cuda(kv) = cache.layer_mut(layer) else {
            unreachable!()
        };
        let (gk, gv) = kv.to_host_f32()?;
        let len = 16 * row;
        assert_eq!(
            &gk[3 * len..4 * len],
            &k[..],
            "layer {layer}: keys of the copy"
        );
        assert_eq!(
            &gv[3 * len..4 * len],
            &gk[len..2 * len],
            "layer {layer}: values of the copy"
        );
    }
    Ok(())
}
