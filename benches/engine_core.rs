//! CPU cost of the engine's bookkeeping, without a model: one scheduler step and the block
//! manager's hot paths.
//!
//! - `schedule/256_running_decode`: one `Scheduler::schedule()` plus `update()` (with a fake
//!   sampler's results built in between) while 256 sequences with 100-1000 token prompts all
//!   decode; every step appends one token to each.
//! - `schedule/256_mixed`: the same step with 192 sequences decoding and 64 long prompts (a
//!   512-token shared system prompt plus 1500-3500 tokens of their own) queued behind them:
//!   the rest of the 2048-token budget goes to chunked prefill of the oldest one or two, and
//!   the queue's head is looked up in the prefix cache whenever budget is left. A prompt ends
//!   on its first token and a new one joins the queue, so the mix stays the same.
//! - `block_manager/churn`: one request's life on a 4096-block cache: prefix lookup and
//!   allocation of a prompt (8 shared system prompts, so there are hits, and unique suffixes
//!   that fill the cache, so there are evictions), 16 appended tokens, a fork with copy-on-write
//!   every 4th request, and freeing the oldest live requests beyond 24.
//! - `block_manager/lookup_prefix_2000_tokens`: `lookup_prefix` of a fully cached 2000-token
//!   prompt (124 blocks).
//!
//! The scheduler benches keep their state between iterations and rebuild it, untimed, every
//! `STEPS_PER_STATE` steps so sequences do not grow without bound.
//!
//! `cargo bench --bench engine_core` (all of them, about a minute), or
//! `cargo bench --bench engine_core -- schedule/` for a subset.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use enclave::engine::block_manager::{BlockManager, BlockManagerConfig};
use enclave::engine::scheduler::{
    SampleResult, ScheduleOutput, Scheduler, SchedulerConfig, SeqUpdate,
};
use enclave::engine::sequence::{Sequence, SequenceLimits};
use enclave::ids::{SeqId, TokenId};

const BLOCK_SIZE: usize = 16;
const VOCAB: u64 = 32_000;
/// Measured steps before the scheduler state is rebuilt (untimed).
const STEPS_PER_STATE: u64 = 256;
/// Never reached while measuring: decoding sequences outlive every state.
const LONG_MAX_TOKENS: usize = 1 << 20;

/// SplitMix64: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn token(&mut self) -> TokenId {
        TokenId(1 + (self.next() % (VOCAB - 1)) as u32)
    }

    fn tokens(&mut self, n: usize) -> Vec<TokenId> {
        (0..n).map(|_| self.token()).collect()
    }
}

fn limits(max_tokens: usize) -> SequenceLimits {
    SequenceLimits {
        max_tokens,
        stop_token_ids: Vec::new(),
    }
}

/// A scheduler and the fake sampler that drives it.
struct SchedState {
    sched: Scheduler,
    rng: Rng,
    next_id: u64,
    /// Long prompts still to arrive (`256_mixed` only), taken from the back.
    arrivals: Vec<Vec<TokenId>>,
}

impl SchedState {
    fn new(num_blocks: usize, seed: u64) -> Self {
        let sched = Scheduler::new(
            SchedulerConfig {
                max_num_seqs: 256,
                max_num_batched_tokens: 2048,
            },
            BlockManagerConfig {
                num_blocks,
                block_size: BLOCK_SIZE,
                enable_prefix_caching: true,
            },
        );
        Self {
            sched,
            rng: Rng(seed),
            next_id: 0,
            arrivals: Vec::new(),
        }
    }

    fn add(&mut self, prompt: Vec<TokenId>, max_tokens: usize) {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.sched
            .add(Sequence::new(id, prompt, limits(max_tokens)));
    }

    /// One engine step with a fake sampler; replaces every finished sequence with the next
    /// arrival, if any.
    fn step(&mut self) -> (ScheduleOutput, Vec<SeqUpdate>) {
        let out = self.sched.schedule();
        let results: Vec<SampleResult> = out
            .seqs
            .iter()
            .filter(|s| s.samples)
            .map(|s| SampleResult {
                seq_id: s.seq_id,
                token: self.rng.token(),
                forks: Vec::new(),
            })
            .collect();
        let updates = self.sched.update(&out, &results);
        for u in &updates {
            if u.finished.is_some() {
                if let Some(prompt) = self.arrivals.pop() {
                    self.add(prompt, 1);
                }
            }
        }
        (out, updates)
    }

    /// Adds `n` prompts of 100-1000 tokens that never finish, and steps until every sequence
    /// is decoding.
    fn admit_decoders(&mut self, n: usize) {
        for _ in 0..n {
            let len = self.rng.range(100, 1000);
            let prompt = self.rng.tokens(len);
            self.add(prompt, LONG_MAX_TOKENS);
        }
        loop {
            let (out, _) = self.step();
            assert!(out.preempted.is_empty() && out.finished.is_empty());
            let all_decode = out.seqs.iter().all(|s| s.num_scheduled_tokens == 1);
            if all_decode && self.sched.num_waiting() == 0 && self.sched.num_running() == n {
                break;
            }
        }
    }
}

/// 256 sequences, all decoding.
fn decode_state() -> SchedState {
    // Longest prompt plus every token a state can generate, for all 256 at once.
    let per_seq = (1000 + STEPS_PER_STATE as usize + 1).div_ceil(BLOCK_SIZE) + 1;
    let mut st = SchedState::new(256 * per_seq, 1);
    st.admit_decoders(256);
    st
}

/// 192 sequences decoding, 64 long prompts in chunked prefill or queued for it, and enough
/// arrivals to replace every prompt that ends while measuring.
fn mixed_state() -> SchedState {
    let per_decoder = (1000 + STEPS_PER_STATE as usize + 1).div_ceil(BLOCK_SIZE) + 1;
    let per_prompt = 4100usize.div_ceil(BLOCK_SIZE);
    let mut st = SchedState::new(192 * per_decoder + 64 * per_prompt + 2048, 2);
    st.admit_decoders(192);
    let system = st.rng.tokens(512);
    let long_prompt = |rng: &mut Rng| {
        let mut p = system.clone();
        let own = rng.range(1500, 3500);
        p.extend((0..own).map(|_| rng.token()));
        p
    };
    // About 0.75 prompts end per step: 1856 tokens of budget are left beside the decodes.
    st.arrivals = (0..STEPS_PER_STATE + 64)
        .map(|_| long_prompt(&mut st.rng))
        .collect();
    for _ in 0..64 {
        let p = long_prompt(&mut st.rng);
        st.add(p, 1);
    }
    // Into the steady state: chunks in flight, prompts ending and arriving.
    for _ in 0..8 {
        st.step();
    }
    st
}

/// Measures `iters` steps, rebuilding the state (untimed) every `STEPS_PER_STATE` steps.
fn time_steps(iters: u64, build: fn() -> SchedState, check: fn(&SchedState)) -> Duration {
    let mut total = Duration::ZERO;
    let mut remaining = iters;
    while remaining > 0 {
        let mut st = build();
        let n = remaining.min(STEPS_PER_STATE);
        let start = Instant::now();
        for _ in 0..n {
            black_box(st.step());
        }
        total += start.elapsed();
        check(&st);
        remaining -= n;
    }
    total
}

fn bench_schedule(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule");
    g.bench_function("256_running_decode", |b| {
        b.iter_custom(|iters| {
            time_steps(iters, decode_state, |st| {
                assert_eq!(
                    st.sched.num_running(),
                    256,
                    "nothing may end or be preempted"
                );
            })
        })
    });
    g.bench_function("256_mixed", |b| {
        b.iter_custom(|iters| {
            time_steps(iters, mixed_state, |st| {
                assert!(!st.arrivals.is_empty(), "more arrivals needed");
                let decoding = st.sched.running()[..192].iter().all(|id| {
                    st.sched
                        .sequence(*id)
                        .is_some_and(|s| s.num_uncomputed_tokens() == 1)
                });
                assert!(decoding, "the 192 decoders must stay");
            })
        })
    });
    g.finish();
}

/// Requests for the churn bench: 8 system prompts of 128-1024 tokens, each request one of them
/// plus 16-256 tokens of its own.
fn churn_prompts(rng: &mut Rng) -> Vec<Vec<TokenId>> {
    let systems: Vec<Vec<TokenId>> = (0..8)
        .map(|_| {
            let len = rng.range(128, 1024);
            rng.tokens(len)
        })
        .collect();
    (0..512)
        .map(|_| {
            let mut p = systems[rng.range(0, systems.len() - 1)].clone();
            let own = rng.range(16, 256);
            p.extend((0..own).map(|_| rng.token()));
            p
        })
        .collect()
}

struct Churn {
    bm: BlockManager,
    prompts: Vec<Vec<TokenId>>,
    rng: Rng,
    /// Oldest first: a request and its forked child, if any.
    live: VecDeque<(SeqId, Option<SeqId>)>,
    next_id: u64,
    cycle: usize,
}

impl Churn {
    const LIVE: usize = 24;
    const DECODE: usize = 16;

    fn new() -> Self {
        let mut rng = Rng(3);
        let prompts = churn_prompts(&mut rng);
        let bm = BlockManager::new(BlockManagerConfig {
            num_blocks: 4096,
            block_size: BLOCK_SIZE,
            enable_prefix_caching: true,
        });
        Self {
            bm,
            prompts,
            rng,
            live: VecDeque::new(),
            next_id: 0,
            cycle: 0,
        }
    }

    fn free_oldest(&mut self) {
        let (seq, child) = self.live.pop_front().expect("a request alone always fits");
        self.bm.free(seq);
        if let Some(child) = child {
            self.bm.free(child);
        }
    }

    /// Computes `tokens[computed..]` for `seq`, freeing the oldest requests until it fits.
    fn allocate(&mut self, seq: SeqId, tokens: &[TokenId], computed: usize) {
        while self
            .bm
            .allocate(seq, tokens, (computed, tokens.len() - computed), None)
            .is_err()
        {
            self.free_oldest();
        }
    }

    fn id(&mut self) -> SeqId {
        self.next_id += 1;
        SeqId(self.next_id)
    }

    fn cycle(&mut self) {
        let seq = self.id();
        let mut tokens = self.prompts[self.cycle % self.prompts.len()].clone();
        self.cycle += 1;
        loop {
            let hit = self.bm.lookup_prefix(&tokens);
            let computed = hit.num_blocks() * BLOCK_SIZE;
            let num_new = tokens.len() - computed;
            if self
                .bm
                .allocate(seq, &tokens, (computed, num_new), Some(&hit))
                .is_ok()
            {
                break;
            }
            self.free_oldest();
        }
        let mut child = None;
        if self.cycle.is_multiple_of(4) {
            // n = 2: the second sample shares the prompt's blocks and copies the last one.
            let c = self.id();
            self.bm.fork(seq, c);
            let mut child_tokens = tokens.clone();
            child_tokens.push(self.rng.token());
            self.allocate(c, &child_tokens, child_tokens.len() - 1);
            child = Some(c);
        }
        for _ in 0..Self::DECODE {
            tokens.push(self.rng.token());
            self.allocate(seq, &tokens, tokens.len() - 1);
        }
        black_box(self.bm.take_copies());
        self.live.push_back((seq, child));
        while self.live.len() > Self::LIVE {
            self.free_oldest();
        }
    }
}

fn bench_block_manager(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_manager");

    let mut churn = Churn::new();
    // Past the first fill of the cache, so evictions happen from the first measured cycle.
    for _ in 0..2000 {
        churn.cycle();
    }
    let stats = churn.bm.stats();
    let plain_free = stats.num_free_blocks - stats.num_evictable_blocks;
    assert!(stats.prefix_hit_tokens > 0, "prefix hits expected");
    assert!(plain_free < 64, "new blocks must evict cached ones");
    churn.bm.check_invariants(&|_| None).expect("invariants");
    g.bench_function("churn", |b| b.iter(|| churn.cycle()));

    let mut bm = BlockManager::new(BlockManagerConfig {
        num_blocks: 256,
        block_size: BLOCK_SIZE,
        enable_prefix_caching: true,
    });
    let tokens = Rng(4).tokens(2000);
    bm.allocate(SeqId(0), &tokens, (0, tokens.len()), None)
        .expect("fits");
    assert_eq!(bm.lookup_prefix(&tokens).num_blocks(), 1999 / BLOCK_SIZE);
    g.bench_function("lookup_prefix_2000_tokens", |b| {
        b.iter(|| bm.lookup_prefix(black_box(&tokens)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_schedule, bench_block_manager
}
criterion_main!(benches);
