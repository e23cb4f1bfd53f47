//! Paged attention on the CPU: writing new keys and values into their cache slots, and causal
//! attention of packed queries over each sequence's blocks.
//!
//! Layout of one layer's cache: `[num_blocks, block_size, num_kv_heads, head_dim]`; position
//! `p` of a sequence lives at slot `block_table[p / block_size] * block_size + p % block_size`.
//! Knows nothing of tensors or sequences beyond the per-sequence slice description below.

use rayon::prelude::*;

use super::simd::Element;

/// One sequence's share of a packed batch.
#[derive(Debug, Clone)]
pub struct SeqAttention<'a> {
    /// First row of this sequence in the packed queries.
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens in the cache once this step's keys are written; the queries are the last
    /// `query_len` of them.
    pub context_len: usize,
    pub block_table: &'a [u32],
}

#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
    /// Attend to the last `window` positions only (the query's own included).
    pub sliding_window: Option<usize>,
}

/// Copies `src` (`[tokens, num_kv_heads * head_dim]`, f32) into `cache` at `slot_mapping`.
pub fn write_slots<T: Element>(cache: &mut [T], src: &[f32], slot_mapping: &[u32], row: usize) {
    for (t, &slot) in slot_mapping.iter().enumerate() {
        let dst = &mut cache[slot as usize * row..(slot as usize + 1) * row];
        for (d, s) in dst.iter_mut().zip(&src[t * row..(t + 1) * row]) {
            *d = T::from_f32(*s);
        }
    }
}

/// `out` is `[tokens, num_heads * head_dim]`, laid out like `q`.
///
/// Invariant: batch invariance. A query row's output does not depend on how its sequence was
/// split into chunks or on what else is in the batch, so every query length takes the same
/// path: matrix products per key/value head with AVX-512, row by row without.
pub fn paged_attention<T: Element>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    seqs: &[SeqAttention<'_>],
    shape: AttentionShape,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::gemm::available_f32() {
        return blocked::attend(q, k_cache, v_cache, seqs, shape, out);
    }
    rowwise(q, k_cache, v_cache, seqs, shape, out)
}

/// One (row, head) at a time: scores, softmax and the weighted sum of values.
fn rowwise<T: Element>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    seqs: &[SeqAttention<'_>],
    shape: AttentionShape,
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let group = shape.num_heads / shape.num_kv_heads;
    let kv_row = shape.num_kv_heads * hd;
    // Row r of the packed batch belongs to the sequence whose query range holds it.
    let mut owner = vec![None; out.len() / (shape.num_heads * hd)];
    for (s, seq) in seqs.iter().enumerate() {
        owner[seq.query_start..seq.query_start + seq.query_len].fill(Some(s));
    }
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (row, head) = (idx / shape.num_heads, idx % shape.num_heads);
        // Rows of sequences handled elsewhere are left alone.
        let Some(s) = owner[row] else { return };
        let seq = &seqs[s];
        let pos = seq.context_len - seq.query_len + (row - seq.query_start);
        let first = shape
            .sliding_window
            .map_or(0, |w| (pos + 1).saturating_sub(w));
        let qv = &q[(row * shape.num_heads + head) * hd..][..hd];
        let kv_off = (head / group) * hd;
        let slot = |p: usize| {
            let block = seq.block_table[p / shape.block_size] as usize;
            (block * shape.block_size + p % shape.block_size) * kv_row + kv_off
        };
        let mut scores: Vec<f32> = (first..=pos)
            .map(|p| T::dot(qv, &k_cache[slot(p)..slot(p) + hd]) * shape.scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (p, s) in (first..=pos).zip(&scores) {
            T::axpy(o, s / sum, &v_cache[slot(p)..slot(p) + hd]);
        }
    });
}

/// The matrix-product path: per (sequence, key/value head), gather that head's keys and
/// values out of their blocks once, then for blocks of query rows (every query head of the
/// group together) `scores = Q·Kᵀ` and `out = P·V` with the f32 tile kernel, masking positions
/// after each query and outside the sliding window.
///
/// Why this is batch-invariant: the tile kernel's value for an element depends only on its own
/// operands; masked positions contribute exact zeros; and the gathered range starts at a
/// multiple of the kernel's `k` chunk, so every position meets the same accumulator lane and
/// chunk whatever the chunking of the sequence.
#[cfg(target_arch = "x86_64")]
mod blocked {
    use rayon::prelude::*;

    use super::{AttentionShape, Element, SeqAttention};
    use crate::model::cpu::attention_rows::{attend_row, HeadView};
    use crate::model::cpu::gemm::{gemm_f32_serial, KC};
    use crate::model::cpu::softmax::softmax_visible;

    /// Query rows up to which a sequence reads the cache in place rather than gathering its
    /// whole context (the same bits either way; see `attention_rows`).
    const IN_PLACE_MAX_ROWS: usize = 4;

    /// Query rows per task: bounds the score matrix while keeping the products large.
    const ROW_BLOCK: usize = 64;

    /// One (sequence, key/value head) pair's output rows: `[query_len, group, head_dim]`.
    struct HeadOutput {
        seq: usize,
        kv_head: usize,
        rows: Vec<f32>,
    }

    pub(super) fn attend<T: Element>(
        q: &[f32],
        k_cache: &[T],
        v_cache: &[T],
        seqs: &[SeqAttention<'_>],
        shape: AttentionShape,
        out: &mut [f32],
    ) {
        let tasks: Vec<(usize, usize)> = (0..seqs.len())
            .flat_map(|s| (0..shape.num_kv_heads).map(move |g| (s, g)))
            .collect();
        let results: Vec<HeadOutput> = tasks
            .into_par_iter()
            .map(|(s, g)| HeadOutput {
                seq: s,
                kv_head: g,
                rows: attend_head(q, (k_cache, v_cache), &seqs[s], g, shape),
            })
            .collect();
        let (hd, heads) = (shape.head_dim, shape.num_heads);
        let group = heads / shape.num_kv_heads;
        for r in results {
            let seq = &seqs[r.seq];
            for (row, chunk) in r.rows.chunks_exact(group * hd).enumerate() {
                let dst = ((seq.query_start + row) * heads + r.kv_head * group) * hd;
                out[dst..dst + group * hd].copy_from_slice(chunk);
            }
        }
    }

    fn attend_head<T: Element>(
        q: &[f32],
        (k_cache, v_cache): (&[T], &[T]),
        seq: &SeqAttention<'_>,
        kv_head: usize,
        shape: AttentionShape,
    ) -> Vec<f32> {
        let (hd, heads) = (shape.head_dim, shape.num_heads);
        let group = heads / shape.num_kv_heads;
        let (rows, ctx) = (seq.query_len, seq.context_len);
        let first_pos = ctx - rows;
        let lowest = |pos: usize| {
            shape
                .sliding_window
                .map_or(0, |w| (pos + 1).saturating_sub(w))
        };
        let start = lowest(first_pos) / KC * KC;
        let span = ctx - start;
        let kv_off = kv_head * hd;
        let kv_row = shape.num_kv_heads * hd;
        if rows <= IN_PLACE_MAX_ROWS && hd <= KC {
            let view = HeadView {
                k_cache,
                v_cache,
                block_table: seq.block_table,
                block_size: shape.block_size,
                kv_row,
                kv_off,
                head_dim: hd,
            };
            let mut out = vec![0f32; rows * group * hd];
            for (r, o) in out.chunks_exact_mut(group * hd).enumerate() {
                let pos = first_pos + r;
                let qi = ((seq.query_start + r) * heads + kv_head * group) * hd;
                let bounds = (start, lowest(pos), pos);
                // SAFETY: `paged_attention` checked AVX-512F.
                unsafe { attend_row(&view, &q[qi..qi + group * hd], bounds, shape.scale, o) };
            }
            return out;
        }
        let mut keys = vec![0f32; span * hd];
        let mut values_t = vec![0f32; hd * span];
        // One cache block at a time: its rows stay in L1 while the values are turned around,
        // so every write of the transpose fills a whole line.
        let bs = shape.block_size;
        let mut i = 0;
        while i < span {
            let p = start + i;
            let run = (bs - p % bs).min(span - i);
            let slot0 = seq.block_table[p / bs] as usize * bs + p % bs;
            for j in 0..run {
                let at = (slot0 + j) * kv_row + kv_off;
                for (dst, src) in keys[(i + j) * hd..(i + j + 1) * hd]
                    .iter_mut()
                    .zip(&k_cache[at..at + hd])
                {
                    *dst = src.to_f32();
                }
            }
            for d in 0..hd {
                let row = &mut values_t[d * span + i..d * span + i + run];
                for (j, dst) in row.iter_mut().enumerate() {
                    *dst = v_cache[(slot0 + j) * kv_row + kv_off + d].to_f32();
                }
            }
            i += run;
        }
        let blocks: Vec<usize> = (0..rows).step_by(ROW_BLOCK).collect();
        let parts: Vec<Vec<f32>> = blocks
            .into_par_iter()
            .map(|r0| {
                let nr = ROW_BLOCK.min(rows - r0);
                // Columns past the block's last query are all masked: leave them out.
                let cols = first_pos + r0 + nr - start;
                let m = nr * group;
                let mut qh = vec![0f32; m * hd];
                for r in 0..nr {
                    let src = ((seq.query_start + r0 + r) * heads + kv_head * group) * hd;
                    qh[r * group * hd..(r + 1) * group * hd]
                        .copy_from_slice(&q[src..src + group * hd]);
                }
                let mut scores = vec![0f32; m * cols];
                gemm_f32_serial(&qh, m, hd, &keys, cols, &mut scores);
                for (i, row) in scores.chunks_exact_mut(cols).enumerate() {
                    let pos = first_pos + r0 + i / group;
                    // SAFETY: `paged_attention` checked AVX-512F; `lowest(pos) <= pos`, both
                    // at or after `start` and before the block's last column.
                    unsafe { softmax_visible(row, lowest(pos) - start, pos - start, shape.scale) };
                }
                let mut oh = vec![0f32; m * hd];
                gemm_f32_serial_strided(&scores, m, cols, &values_t, span, hd, &mut oh);
                oh
            })
            .collect();
        parts.concat()
    }

    /// `c = a · bᵀ` where `b`'s rows hold `k` used values out of a longer row of `ldb`.
    fn gemm_f32_serial_strided(
        a: &[f32],
        m: usize,
        k: usize,
        b: &[f32],
        ldb: usize,
        n: usize,
        c: &mut [f32],
    ) {
        if k == ldb {
            return gemm_f32_serial(a, m, k, b, n, c);
        }
        let mut packed = vec![0f32; n * k];
        for (dst, src) in packed.chunks_exact_mut(k).zip(b.chunks_exact(ldb)) {
            dst.copy_from_slice(&src[..k]);
        }
        gemm_f32_serial(a, m, k, &packed, n, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, m: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(7919).wrapping_add(m) % 97) as f32 / 48.0) - 1.0)
            .collect()
    }

    /// Key and value caches of `num_blocks` blocks holding `total` positions laid out
    /// through `table`.
    fn scattered_cache(
        total: usize,
        table: &[u32],
        num_blocks: usize,
        (bs, kv_heads, hd): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let slots: Vec<u32> = (0..total)
            .map(|p| table[p / bs] * bs as u32 + (p % bs) as u32)
            .collect();
        let mut kc = vec![0f32; num_blocks * bs * kv_heads * hd];
        let mut vc = kc.clone();
        write_slots(
            &mut kc,
            &vals(total * kv_heads * hd, 2),
            &slots,
            kv_heads * hd,
        );
        write_slots(
            &mut vc,
            &vals(total * kv_heads * hd, 3),
            &slots,
            kv_heads * hd,
        );
        (kc, vc)
    }

    /// Dense causal attention of one sequence, for comparison.
    fn dense(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        len: usize,
        heads: usize,
        kv_heads: usize,
        hd: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; len * heads * hd];
        let scale = 1.0 / (hd as f32).sqrt();
        for t in 0..len {
            for h in 0..heads {
                let kh = h / (heads / kv_heads);
                let qv = &q[(t * heads + h) * hd..][..hd];
                let s: Vec<f32> = (0..=t)
                    .map(|p| {
                        qv.iter()
                            .zip(&k[(p * kv_heads + kh) * hd..][..hd])
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            * scale
                    })
                    .collect();
                let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (p, w) in e.iter().enumerate() {
                    for d in 0..hd {
                        out[(t * heads + h) * hd + d] += w / z * v[(p * kv_heads + kh) * hd + d];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn scattered_blocks_give_dense_causal_attention() {
        let (heads, kv_heads, hd, bs, len) = (4, 2, 8, 4, 11);
        let q = vals(len * heads * hd, 1);
        let k = vals(len * kv_heads * hd, 2);
        let v = vals(len * kv_heads * hd, 3);
        let block_table = [5u32, 0, 3];
        let slots: Vec<u32> = (0..len)
            .map(|p| block_table[p / bs] * bs as u32 + (p % bs) as u32)
            .collect();
        let mut kc = vec![0f32; 6 * bs * kv_heads * hd];
        let mut vc = kc.clone();
        write_slots(&mut kc, &k, &slots, kv_heads * hd);
        write_slots(&mut vc, &v, &slots, kv_heads * hd);
        let shape = AttentionShape {
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim: hd,
            block_size: bs,
            scale: 1.0 / (hd as f32).sqrt(),
            sliding_window: None,
        };
        let seq = SeqAttention {
            query_start: 0,
            query_len: len,
            context_len: len,
            block_table: &block_table,
        };
        let mut out = vec![0f32; len * heads * hd];
        paged_attention(&q, &kc, &vc, &[seq], shape, &mut out);
        let expect = dense(&q, &k, &v, len, heads, kv_heads, hd);
        let max = out
            .iter()
            .zip(&expect)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "max diff {max}");
    }

    /// A long prefill chunk (matrix-product path) beside a decode row (row path), with and
    /// without a sliding window, equals the row path run alone for every row.
    #[test]
    fn blocked_and_rowwise_paths_agree() {
        let (heads, kv_heads, hd, bs) = (4, 2, 16, 8);
        let total = 40;
        let table: Vec<u32> = (0..5).map(|b| (b * 3) % 5).collect();
        let (kc, vc) = scattered_cache(total, &table, 5, (bs, kv_heads, hd));
        for window in [None, Some(9)] {
            let shape = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: hd,
                block_size: bs,
                scale: 0.25,
                sliding_window: window,
            };
            // Sequence A: 30 query rows ending at position 40; sequence B: one decode row at 11.
            let a = SeqAttention {
                query_start: 0,
                query_len: 30,
                context_len: total,
                block_table: &table,
            };
            let b = SeqAttention {
                query_start: 30,
                query_len: 1,
                context_len: 12,
                block_table: &table,
            };
            let q = vals(31 * heads * hd, 1);
            let mut mixed = vec![0f32; q.len()];
            paged_attention(&q, &kc, &vc, &[a.clone(), b.clone()], shape, &mut mixed);
            let mut rows = vec![0f32; q.len()];
            rowwise(&q, &kc, &vc, &[a, b], shape, &mut rows);
            let max = mixed
                .iter()
                .zip(&rows)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-5, "window {window:?}: max diff {max}");
        }
    }

    /// The same query rows give the same bits whether computed as one prefill chunk, in
    /// smaller chunks, or beside another sequence.
    #[test]
    fn a_row_gives_the_same_bits_however_its_sequence_is_chunked() {
        let (heads, kv_heads, hd, bs) = (6, 2, 16, 4);
        let total = 45;
        let table: Vec<u32> = (0..12).map(|b| (b * 5) % 12).collect();
        let (kc, vc) = scattered_cache(total, &table, 12, (bs, kv_heads, hd));
        let q = vals(total * heads * hd, 1);
        let row = heads * hd;
        for window in [None, Some(7)] {
            let shape = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: hd,
                block_size: bs,
                scale: 0.25,
                sliding_window: window,
            };
            let mut whole = vec![0f32; q.len()];
            let one = SeqAttention {
                query_start: 0,
                query_len: total,
                context_len: total,
                block_table: &table,
            };
            paged_attention(&q, &kc, &vc, &[one], shape, &mut whole);
            for (lo, hi) in [(0, 1), (1, 6), (6, 30), (30, 44), (44, 45)] {
                // The chunk rides behind an unrelated decode row of the same cache.
                let other = SeqAttention {
                    query_start: 0,
                    query_len: 1,
                    context_len: 9,
                    block_table: &table,
                };
                let chunk = SeqAttention {
                    query_start: 1,
                    query_len: hi - lo,
                    context_len: hi,
                    block_table: &table,
                };
                let mut qq = q[8 * row..9 * row].to_vec();
                qq.extend_from_slice(&q[lo * row..hi * row]);
                let mut part = vec![0f32; qq.len()];
                paged_attention(&qq, &kc, &vc, &[other, chunk], shape, &mut part);
                assert!(
                    part[row..] == whole[lo * row..hi * row],
                    "window {window:?}: rows {lo}..{hi} differ from the one-chunk result"
                );
            }
        }
    }

    /// Decode rows read the cache in place; over a context longer than one `KC` chunk, and
    /// with a window whose gather starts past 0, they still equal the gathered result, for f32
    /// and bf16 caches, head sizes that are and are not a multiple of 16, and groups of 1 to 7
    /// query heads per key/value head.
    #[test]
    fn in_place_decode_rows_equal_the_gathered_path_across_chunks() {
        for dims in [(2, 1, 16), (14, 2, 64), (6, 2, 40)] {
            decode_rows_equal_gathered::<f32>(dims);
            decode_rows_equal_gathered::<half::bf16>(dims);
        }
    }

    fn decode_rows_equal_gathered<T: Element>((heads, kv_heads, hd): (usize, usize, usize)) {
        let bs = 16;
        let total: usize = 1100;
        let num_blocks = total.div_ceil(bs);
        let table: Vec<u32> = (0..num_blocks as u32).rev().collect();
        let (kc, vc) = scattered_cache(total, &table, num_blocks, (bs, kv_heads, hd));
        let kc: Vec<T> = kc.into_iter().map(T::from_f32).collect();
        let vc: Vec<T> = vc.into_iter().map(T::from_f32).collect();
        let q = vals(total * heads * hd, 1);
        let row = heads * hd;
        let name = std::any::type_name::<T>();
        for window in [None, Some(70)] {
            let shape = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: hd,
                block_size: bs,
                scale: 0.25,
                sliding_window: window,
            };
            let whole_seq = SeqAttention {
                query_start: 0,
                query_len: total,
                context_len: total,
                block_table: &table,
            };
            let mut whole = vec![0f32; q.len()];
            paged_attention(&q, &kc, &vc, &[whole_seq], shape, &mut whole);
            for pos in [0, 5, 16, 1023, 1030, 1099] {
                let one = SeqAttention {
                    query_start: 0,
                    query_len: 1,
                    context_len: pos + 1,
                    block_table: &table,
                };
                let mut out = vec![0f32; row];
                paged_attention(
                    &q[pos * row..(pos + 1) * row],
                    &kc,
                    &vc,
                    &[one],
                    shape,
                    &mut out,
                );
                assert!(
                    out == whole[pos * row..(pos + 1) * row],
                    "{name} {heads}/{kv_heads}x{hd} window {window:?}: decode row at {pos} \
                     differs from the gathered result"
                );
            }
        }
    }
}
