//! The arithmetic on one row of logits: argmax, log-softmax, the top entries, and drawing from
//! the temperature-scaled distribution cut by top-k, top-p and min-p.
//!
//! Plain functions over slices; they know nothing of sequences, penalties or validation.
//!
//! Invariant: every result is a pure function of the row, the settings and the uniform draw
//! passed in, and every tie goes to the lower token id, so a seeded run repeats exactly. Work is
//! linear in the vocabulary: truncation finds a cutoff by selection, never by sorting the row.

use super::lanes::{exp_nonpositive, max, sum_f64};
use crate::ids::TokenId;

/// What survives truncation, applied in this order: top-k, then top-p over the top-k mass, then
/// min-p.
#[derive(Debug, Clone, Copy)]
pub(super) struct Truncation {
    pub top_k: Option<usize>,
    pub top_p: f32,
    pub min_p: f32,
}

/// The highest logit; the lowest id wins a tie, and NaN never wins.
pub fn argmax(logits: &[f32]) -> TokenId {
    // Block maxima vectorize; only the first block holding the maximum is searched.
    const BLOCK: usize = 256;
    let mut best = (f32::NEG_INFINITY, 0);
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        let m = max(block);
        if m > best.0 {
            best = (m, b);
        }
    }
    let start = best.1 * BLOCK;
    let block = &logits[start.min(logits.len())..(start + BLOCK).min(logits.len())];
    let at = block.iter().position(|&x| x == best.0).unwrap_or(0);
    TokenId((start + at) as u32)
}

/// `ln Σ exp(x)` over the row; `None` when no entry is finite (the softmax is undefined).
pub(super) fn log_sum_exp(row: &[f32]) -> Option<f64> {
    let m = max(row);
    m.is_finite()
        .then(|| f64::from(m) + sum_f64(row, |x| exp_nonpositive(x - m)).ln())
}

/// The `n` largest entries (NaN-free), largest first, ties by lower id.
pub(super) fn top_n(row: &[f32], n: usize) -> Vec<(TokenId, f32)> {
    let mut keys = highest(row, n);
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys.into_iter()
        .map(|k| (TokenId(key_id(k)), key_value(k)))
        .collect()
}

/// `softmax(row / temperature)` before normalization, with the largest entry exactly 1.
#[derive(Debug)]
pub(super) struct Scaled {
    probs: Vec<f32>,
    /// The largest entry of the row.
    max: f32,
}

impl Scaled {
    /// `None` when the row (NaN-free) has no finite entry, so no distribution. `temperature`
    /// must be positive with a finite reciprocal.
    pub fn new(row: &[f32], temperature: f32) -> Option<Self> {
        let m = max(row);
        if !m.is_finite() {
            return None;
        }
        let inv_t = temperature.recip();
        // Scaling `x - m` (never positive) rather than `x` keeps the largest entry at exactly
        // 1 and can only underflow, never overflow, however small the temperature.
        let probs = row
            .iter()
            .map(|&x| exp_nonpositive((x - m) * inv_t))
            .collect();
        Some(Self { probs, max: m })
    }

    /// `ln Σ exp(x)` of the row, valid only at temperature 1, where it saves a second pass of
    /// `exp` over the row.
    pub fn log_sum_exp_at_temperature_one(&self) -> f64 {
        f64::from(self.max) + sum_f64(&self.probs, |p| p).ln()
    }

    /// Draws a token from the distribution cut by `cut`, going through the kept tokens in id
    /// order and stopping where their running mass passes `unit` (in [0, 1)) of the total.
    pub fn draw(mut self, cut: &Truncation, unit: f64) -> TokenId {
        let cutoff = cutoff(&self.probs, cut);
        if cutoff != 0 {
            let (last_p, last_id) = (key_value(cutoff), key_id(cutoff));
            for (i, p) in self.probs.iter_mut().enumerate() {
                let kept = *p > last_p || (*p == last_p && i as u32 <= last_id);
                *p = if kept { *p } else { 0.0 };
            }
        }
        pick(&self.probs, unit)
    }
}

/// Block size of the draw: blocks are summed with SIMD, and only the block the draw lands in
/// is walked one token at a time.
const PICK_BLOCK: usize = 1024;

/// The first token (in id order) where the running sum of `probs` passes `unit` of the total.
fn pick(probs: &[f32], unit: f64) -> TokenId {
    let block_sums: Vec<f64> = probs
        .chunks(PICK_BLOCK)
        .map(|b| sum_f64(b, |p| p))
        .collect();
    let target = unit * block_sums.iter().sum::<f64>();
    let mut acc = 0.0;
    for (b, (&sum, block)) in block_sums.iter().zip(probs.chunks(PICK_BLOCK)).enumerate() {
        if sum > 0.0 && target < acc + sum {
            let mut running = acc;
            for (i, &p) in block.iter().enumerate() {
                running += f64::from(p);
                if p > 0.0 && target < running {
                    return TokenId((b * PICK_BLOCK + i) as u32);
                }
            }
        }
        acc += sum;
    }
    // Only rounding between the block sums and the walk can get here.
    let last = probs.iter().rposition(|&p| p > 0.0).unwrap_or(0);
    TokenId(last as u32)
}

/// The smallest rank key that survives truncation (0 keeps everything). Each of top-k, top-p
/// and min-p keeps a prefix of the tokens in rank order, so together they keep the shortest of
/// those prefixes, and one key describes it.
pub(super) fn cutoff(probs: &[f32], cut: &Truncation) -> u64 {
    let mut cutoff = 0;
    match cut.top_k.filter(|&k| k < probs.len()) {
        Some(k) => {
            let keys = highest(probs, k);
            cutoff = keys.iter().copied().min().unwrap_or(0);
            if cut.top_p < 1.0 && !keys.is_empty() {
                cutoff = cutoff.max(nucleus_cutoff(keys, f64::from(cut.top_p)));
            }
        }
        None if cut.top_p < 1.0 => cutoff = nucleus_cutoff_of_row(probs, f64::from(cut.top_p)),
        None => {}
    }
    if cut.min_p > 0.0 {
        // The largest probability is exactly 1 (see `Scaled::new`), so min-p is a plain
        // threshold.
        cutoff = cutoff.max(u64::from(ordered_bits(cut.min_p)) << 32);
    }
    cutoff
}

/// Tokens per block in searches: block maxima (which vectorize) let whole blocks be skipped.
const BLOCK: usize = 64;

/// The keys of the `n` largest entries of `values` (NaN-free), in no particular order.
///
/// Linear, and on a real row touches few keys: the n-th largest block maximum is a lower bound
/// for the n-th largest entry (n blocks reach it), so only entries at or above it are
/// candidates for the final selection.
fn highest(values: &[f32], n: usize) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let block_max: Vec<f32> = values.chunks(BLOCK).map(max).collect();
    let floor = if n < block_max.len() {
        let mut order = block_max.clone();
        order.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
        order[n - 1]
    } else {
        f32::NEG_INFINITY
    };
    let mut keys = keys_at_least(values, &block_max, floor, usize::MAX).unwrap_or_default();
    if n < keys.len() {
        keys.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        keys.truncate(n);
    }
    keys
}

/// The keys of the entries at or above `floor`, visiting only the blocks whose maximum
/// reaches it; `None` as soon as there are more than `limit`.
fn keys_at_least(values: &[f32], block_max: &[f32], floor: f32, limit: usize) -> Option<Vec<u64>> {
    let mut keys = Vec::new();
    for (b, block) in values.chunks(BLOCK).enumerate() {
        if block_max[b] < floor {
            continue;
        }
        let start = b * BLOCK;
        for (i, &x) in block.iter().enumerate() {
            if x >= floor {
                keys.push(rank_key(x, start + i));
            }
        }
        if keys.len() > limit {
            return None;
        }
    }
    Some(keys)
}

/// Above this many candidates for the nucleus of a whole row, bucketing by mass beats
/// selecting among them.
const MAX_NUCLEUS_CANDIDATES: usize = 4096;

/// `nucleus_cutoff` for a whole row without sorting or selecting over all of it. On a real
/// model's row the floor of `nucleus_cutoff` leaves a few candidates; on a flat one, the mass
/// per probability bucket finds the one bucket that holds the boundary.
fn nucleus_cutoff_of_row(probs: &[f32], top_p: f64) -> u64 {
    let total = sum_f64(probs, |p| p);
    let target = top_p * total;
    let exact_floor = (1.0 - top_p) * total / probs.len() as f64;
    // Rounded down: a few extra candidates are harmless, a missing one is not. Positive, so
    // no zero-probability token becomes a candidate.
    let mut floor = (exact_floor as f32).max(f32::MIN_POSITIVE);
    if f64::from(floor) > exact_floor {
        floor = floor.next_down();
    }
    let block_max: Vec<f32> = probs.chunks(BLOCK).map(max).collect();
    match keys_at_least(probs, &block_max, floor, MAX_NUCLEUS_CANDIDATES) {
        Some(keys) => last_of_nucleus(keys, target),
        None => nucleus_cutoff_by_buckets(probs, target),
    }
}

/// Probability buckets: the top bits of the float (exponent and two mantissa bits), so each
/// bucket spans a factor of 2^(1/4) and bucket order is value order. Probabilities are at most
/// 1 (`0x3f80_0000`), which lands in bucket 508.
const BUCKET_SHIFT: u32 = 21;
const NUM_BUCKETS: usize = 512;

fn nucleus_cutoff_by_buckets(probs: &[f32], target: f64) -> u64 {
    let mut mass = [0f64; NUM_BUCKETS];
    for &p in probs {
        mass[(p.to_bits() >> BUCKET_SHIFT) as usize] += f64::from(p);
    }
    let mut above = 0.0;
    let mut boundary = 0;
    for b in (1..NUM_BUCKETS).rev() {
        if mass[b] > 0.0 {
            boundary = b;
            if above + mass[b] >= target {
                break;
            }
            above += mass[b];
        }
    }
    let keys: Vec<u64> = probs
        .iter()
        .enumerate()
        .filter(|&(_, &p)| (p.to_bits() >> BUCKET_SHIFT) as usize == boundary && p > 0.0)
        .map(|(i, &p)| rank_key(p, i))
        .collect();
    last_of_nucleus(keys, target - above)
}

/// The key of the last token of the nucleus: the shortest run of top-ranked `keys` whose mass
/// reaches `top_p` of theirs.
fn nucleus_cutoff(mut keys: Vec<u64>, top_p: f64) -> u64 {
    let total: f64 = keys.iter().map(|&k| f64::from(key_value(k))).sum();
    let target = top_p * total;
    // Tokens below `floor` hold less than `(1 - top_p) * total` together, so the nucleus lies
    // among the others; on a peaked row this leaves a handful of candidates.
    let floor = (1.0 - top_p) * total / keys.len() as f64;
    keys.retain(|&k| f64::from(key_value(k)) >= floor);
    last_of_nucleus(keys, target)
}

/// The key of the lowest-ranked token that the top of `keys` needs to reach `target`.
fn last_of_nucleus(mut keys: Vec<u64>, target: f64) -> u64 {
    let n = nucleus_len(&mut keys, target);
    keys.get(n.max(1) - 1).copied().unwrap_or(0)
}

/// Reorders `keys` so that the first `n` are the `n` highest, for the smallest `n` whose mass
/// reaches `target`, and returns `n` (all of them when rounding leaves the mass short).
///
/// A weighted quickselect: each round partitions the undecided ranks at their middle and goes
/// on in the half that holds the boundary, so the work is linear, not a sort.
fn nucleus_len(keys: &mut [u64], target: f64) -> usize {
    // Invariant: `keys[..lo]` are the `lo` highest and hold `target - need` < `target`;
    // `keys[lo..hi]` are the ranks `lo..hi` in some order; the answer is in `lo + 1..=hi`.
    let (mut lo, mut hi) = (0, keys.len());
    let mut need = target;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        keys[lo..hi].select_nth_unstable_by(mid - lo, |a, b| b.cmp(a));
        let mass: f64 = keys[lo..mid].iter().map(|&k| f64::from(key_value(k))).sum();
        if mass >= need {
            hi = mid;
        } else {
            need -= mass;
            lo = mid;
        }
    }
    hi
}

/// Orders tokens by value, then lower id first, as one integer: every comparison in selection
/// is then a single `u64` compare, which is most of the cost on a large row.
fn rank_key(value: f32, id: usize) -> u64 {
    (u64::from(ordered_bits(value)) << 32) | u64::from(u32::MAX - id as u32)
}

fn key_id(key: u64) -> u32 {
    u32::MAX - key as u32
}

fn key_value(key: u64) -> f32 {
    let bits = (key >> 32) as u32;
    f32::from_bits(if bits >> 31 == 1 {
        bits & 0x7fff_ffff
    } else {
        !bits
    })
}

/// The bits of a float, mapped so that unsigned order is numeric order (NaN-free input).
fn ordered_bits(x: f32) -> u32 {
    // `+ 0.0` turns -0 into +0, so the two zeros tie and fall back to the id.
    let bits = (x + 0.0).to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// The kept set the slow, obvious way: sort by probability (then id), cut top-k, then the
    /// shortest prefix reaching top-p of the remaining mass, then min-p.
    fn kept_by_sorting(probs: &[f32], cut: &Truncation) -> Vec<usize> {
        let mut order: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > 0.0).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        if let Some(k) = cut.top_k {
            order.truncate(k);
        }
        let total: f64 = order.iter().map(|&i| f64::from(probs[i])).sum();
        let mut acc = 0.0;
        let n = order
            .iter()
            .position(|&i| {
                acc += f64::from(probs[i]);
                acc >= f64::from(cut.top_p) * total
            })
            .map_or(order.len(), |p| p + 1);
        order.truncate(n);
        order.retain(|&i| probs[i] >= cut.min_p);
        order.sort_unstable();
        order
    }

    #[test]
    fn selection_cutoff_keeps_the_same_tokens_as_a_full_sort() {
        let mut rng = SmallRng::seed_from_u64(11);
        for round in 0..300 {
            let len = rng.random_range(1..400);
            // Few distinct values, so ties at the boundary are common.
            let levels = rng.random_range(1..12);
            let mut probs: Vec<f32> = (0..len)
                .map(|_| rng.random_range(0..levels) as f32 / levels as f32)
                .collect();
            probs[rng.random_range(0..len)] = 1.0;
            let cut = Truncation {
                top_k: (round % 3 == 0).then(|| rng.random_range(1..len + 2)),
                top_p: if round % 2 == 0 {
                    rng.random_range(0.05..1.0)
                } else {
                    1.0
                },
                min_p: if round % 5 == 0 {
                    rng.random_range(0.0..1.0)
                } else {
                    0.0
                },
            };
            let c = cutoff(&probs, &cut);
            let fast: Vec<usize> = (0..len)
                .filter(|&i| probs[i] > 0.0 && rank_key(probs[i], i) >= c)
                .collect();
            assert_eq!(
                fast,
                kept_by_sorting(&probs, &cut),
                "round {round}: {cut:?}"
            );
            if cut.top_k.is_none() && cut.min_p == 0.0 && cut.top_p < 1.0 {
                // The path that flat rows of a large vocabulary take.
                let total: f64 = probs.iter().map(|&p| f64::from(p)).sum();
                let by_buckets = nucleus_cutoff_by_buckets(&probs, f64::from(cut.top_p) * total);
                assert_eq!(by_buckets, c, "round {round}: {cut:?}");
            }
        }
    }

    fn draw(row: &[f32], temperature: f32, cut: &Truncation, unit: f64) -> TokenId {
        Scaled::new(row, temperature).map_or_else(|| argmax(row), |s| s.draw(cut, unit))
    }

    #[test]
    fn highest_finds_the_same_entries_as_a_sort() {
        let mut rng = SmallRng::seed_from_u64(12);
        for round in 0..50 {
            let len = rng.random_range(1..5000);
            let values: Vec<f32> = (0..len)
                .map(|_| match rng.random_range(0..4) {
                    0 => f32::NEG_INFINITY,
                    1 => 1.0,
                    _ => rng.random_range(-5.0..5.0),
                })
                .collect();
            let n = rng.random_range(0..len.min(200) + 1);
            let mut want: Vec<usize> = (0..len).collect();
            want.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
            want.truncate(n);
            let got: Vec<usize> = top_n(&values, n)
                .iter()
                .map(|(t, _)| t.0 as usize)
                .collect();
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn draw_walks_kept_tokens_in_id_order() {
        let off = Truncation {
            top_k: None,
            top_p: 1.0,
            min_p: 0.0,
        };
        // Equal logits: probabilities 1/4 each.
        let row = [0.0; 4];
        assert_eq!(draw(&row, 1.0, &off, 0.0), TokenId(0));
        assert_eq!(draw(&row, 1.0, &off, 0.3), TokenId(1));
        assert_eq!(draw(&row, 1.0, &off, 0.99), TokenId(3));
        let top2 = Truncation {
            top_k: Some(2),
            ..off
        };
        assert_eq!(draw(&[0.0, 1.0, 3.0, 2.0], 1.0, &top2, 0.99), TokenId(3));
        assert_eq!(
            draw(&[f32::NEG_INFINITY; 3], 1.0, &off, 0.5),
            TokenId(0),
            "no distribution falls back to the argmax"
        );
    }

    #[test]
    fn rank_keys_order_by_value_then_lower_id() {
        let values = [-f32::MAX, -1.5, -0.0, 0.0, 1e-40, 2.0, f32::MAX];
        for w in values.windows(2) {
            assert!(rank_key(w[0], 0) <= rank_key(w[1], 0), "{w:?}");
            assert_eq!(key_value(rank_key(w[1], 7)), w[1]);
        }
        assert!(rank_key(1.0, 3) > rank_key(1.0, 4));
        assert_eq!(key_id(rank_key(1.0, 123_456)), 123_456);
        assert_eq!(key_value(rank_key(f32::NEG_INFINITY, 0)), f32::NEG_INFINITY);
    }
}
