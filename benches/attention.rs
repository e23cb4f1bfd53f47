//! CPU paged attention for one decode row over a long context: the part of a decode step that
//! grows with the conversation.
//!
//! - `attention/decode_row_2100_tokens`: one query row (14 heads, 2 key/value heads, head size
//!   64, bf16 cache in 16-token blocks scattered through the cache) attending to 2,100 cached
//!   positions, in each of 24 layers' caches in turn: the attention of one decode step of the
//!   Qwen2.5-0.5B-shaped model with a 2,000-token shared prefix. Each layer has its own cache,
//!   so the step reads its keys and values from memory, as the engine does.
//!
//! `cargo bench --bench attention`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use enclave::model::cpu::attention::{paged_attention, AttentionShape, SeqAttention};
use half::bf16;

const LAYERS: usize = 24;

/// Deterministic values in [-1, 1]; attention's cost does not depend on them.
fn values(n: usize, seed: u32) -> Vec<bf16> {
    (0..n)
        .map(|i| bf16::from_f32((i as f32 * 0.618 + seed as f32 * 1.7).sin()))
        .collect()
}

fn decode_row(c: &mut Criterion) {
    let (heads, kv_heads, hd, bs, context) = (14, 2, 64, 16, 2100usize);
    // Twice the blocks the sequence needs, visited in a scattered order.
    let blocks = context.div_ceil(bs) * 2;
    let table: Vec<u32> = (0..blocks as u32)
        .map(|b| (b * 37) % blocks as u32)
        .take(context.div_ceil(bs))
        .collect();
    let layer_len = blocks * bs * kv_heads * hd;
    let caches: Vec<(Vec<bf16>, Vec<bf16>)> = (0..LAYERS as u32)
        .map(|l| (values(layer_len, 2 * l), values(layer_len, 2 * l + 1)))
        .collect();
    let q: Vec<f32> = values(heads * hd, 99).iter().map(|v| v.to_f32()).collect();
    let shape = AttentionShape {
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: hd,
        block_size: bs,
        scale: 0.125,
        sliding_window: None,
    };
    let seq = SeqAttention {
        query_start: 0,
        query_len: 1,
        context_len: context,
        block_table: &table,
    };
    let mut out = vec![0f32; heads * hd];
    c.bench_function("attention/decode_row_2100_tokens", |b| {
        b.iter(|| {
            for (k, v) in &caches {
                paged_attention(&q, k, v, std::slice::from_ref(&seq), shape, &mut out);
            }
            black_box(&out);
        })
    });
}

criterion_group!(benches, decode_row);
criterion_main!(benches);
