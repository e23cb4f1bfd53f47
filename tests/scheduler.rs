//! Scheduler traces checked step by step with a fake runner: no model, every sampled token is
//! a function of the sequence and the position it is sampled for, so a sequence that is
//! preempted and recomputed must end with the same tokens.
//!
//! Every step of every trace is also checked against a model of the KV memory (one token per
//! slot, written the way the forward writes it: block copies first, then every scheduled
//! token at its slot): what each sequence attends to must be its own tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use enclave::engine::block_manager::{BlockCopy, BlockManagerConfig};
use enclave::engine::scheduler::{
    SampleResult, ScheduleOutput, ScheduledSeq, Scheduler, SchedulerConfig,
};
use enclave::engine::sequence::{FinishReason, Sequence, SequenceLimits, SequenceStatus};
use enclave::ids::{BlockId, SeqId, TokenId};

/// The fake runner: the token sampled for `seq` at `position`.
fn fake_token(seq: SeqId, position: usize) -> TokenId {
    TokenId(((seq.0 + position as u64) % 7 + 10) as u32)
}

fn toks(ids: impl IntoIterator<Item = u32>) -> Vec<TokenId> {
    ids.into_iter().map(TokenId).collect()
}

fn s(id: u64, computed: usize, scheduled: usize, samples: bool) -> ScheduledSeq {
    ScheduledSeq {
        seq_id: SeqId(id),
        num_computed_tokens: computed,
        num_scheduled_tokens: scheduled,
        samples,
    }
}

struct Setup {
    max_num_seqs: usize,
    max_num_batched_tokens: usize,
    num_blocks: usize,
    block_size: usize,
    prefix: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            max_num_seqs: 8,
            max_num_batched_tokens: 64,
            num_blocks: 64,
            block_size: 4,
            prefix: true,
        }
    }
}

struct Finished {
    prompt_len: usize,
    output: Vec<TokenId>,
    reason: FinishReason,
}

struct Run {
    sched: Scheduler,
    block_size: usize,
    kv: Vec<Vec<Option<TokenId>>>,
    prompt_lens: HashMap<SeqId, usize>,
    outputs: HashMap<SeqId, Vec<TokenId>>,
    /// The children each sequence forks when its first token is sampled.
    fork_ids: HashMap<SeqId, Vec<SeqId>>,
    finished: BTreeMap<SeqId, Finished>,
    num_steps: usize,
}

impl Run {
    fn new(setup: Setup) -> Self {
        let sched = Scheduler::new(
            SchedulerConfig {
                max_num_seqs: setup.max_num_seqs,
                max_num_batched_tokens: setup.max_num_batched_tokens,
            },
            BlockManagerConfig {
                num_blocks: setup.num_blocks,
                block_size: setup.block_size,
                enable_prefix_caching: setup.prefix,
            },
        );
        Self {
            sched,
            block_size: setup.block_size,
            kv: vec![vec![None; setup.block_size]; setup.num_blocks],
            prompt_lens: HashMap::new(),
            outputs: HashMap::new(),
            fork_ids: HashMap::new(),
            finished: BTreeMap::new(),
            num_steps: 0,
        }
    }

    fn add(&mut self, id: u64, prompt: Vec<TokenId>, max_tokens: usize) {
        self.add_n(id, prompt, max_tokens, &[]);
    }

    /// A request with `1 + children.len()` samples: `children` are the ids of the forks.
    fn add_n(&mut self, id: u64, prompt: Vec<TokenId>, max_tokens: usize, children: &[u64]) {
        let id = SeqId(id);
        self.prompt_lens.insert(id, prompt.len());
        self.outputs.insert(id, Vec::new());
        let limits = SequenceLimits {
            max_tokens,
            stop_token_ids: Vec::new(),
        };
        let mut seq = Sequence::new(id, prompt, limits);
        seq.num_seats = 1 + children.len();
        if !children.is_empty() {
            self.fork_ids
                .insert(id, children.iter().map(|&c| SeqId(c)).collect());
        }
        self.sched.add(seq);
    }

    fn table(&self, id: u64) -> Vec<BlockId> {
        self.sched.block_manager().block_table(SeqId(id)).to_vec()
    }

    /// One engine step: schedule, check the output, run the fake model, update.
    fn step(&mut self) -> ScheduleOutput {
        let decoders: Vec<SeqId> = self
            .sched
            .running()
            .iter()
            .copied()
            .filter(|id| self.sched.sequence(*id).unwrap().num_uncomputed_tokens() == 1)
            .collect();
        let out = self.sched.schedule();
        self.num_steps += 1;
        self.check_output(&out, &decoders);
        self.forward(&out);
        let results = self.sample(&out);
        let updates = self.sched.update(&out, &results);
        for u in &updates {
            let parent = results
                .iter()
                .find(|r| r.forks.iter().any(|(c, _)| *c == u.seq_id));
            if let Some(r) = parent {
                let inherited = self.outputs[&r.seq_id].clone();
                self.outputs.insert(u.seq_id, inherited);
                self.prompt_lens
                    .insert(u.seq_id, self.prompt_lens[&r.seq_id]);
            }
            self.outputs.get_mut(&u.seq_id).unwrap().push(u.token);
            if let Some(reason) = u.finished {
                self.finish(u.seq_id, reason);
                assert!(self.sched.sequence(u.seq_id).is_none());
                assert!(!self.sched.block_manager().has_seq(u.seq_id));
            }
        }
        for &(id, reason) in &out.finished {
            self.finish(id, reason);
        }
        self.check_state();
        out
    }

    fn finish(&mut self, id: SeqId, reason: FinishReason) {
        let output = self.outputs.remove(&id).unwrap();
        let prompt_len = self.prompt_lens[&id];
        let prev = self.finished.insert(
            id,
            Finished {
                prompt_len,
                output,
                reason,
            },
        );
        assert!(prev.is_none(), "{id} finished twice");
    }

    fn running_seats(&self) -> usize {
        self.sched
            .running()
            .iter()
            .map(|id| self.sched.sequence(*id).unwrap().num_seats)
            .sum()
    }

    /// What every schedule output must satisfy, whatever the trace.
    fn check_output(&self, out: &ScheduleOutput, decoders: &[SeqId]) {
        let bs = self.block_size;
        let config = *self.sched.config();
        self.sched.check_invariants().unwrap();
        let mut seen = BTreeSet::new();
        for x in &out.seqs {
            assert!(seen.insert(x.seq_id), "{} scheduled twice", x.seq_id);
            assert!(
                !out.preempted.contains(&x.seq_id),
                "{} preempted and scheduled",
                x.seq_id
            );
            let seq = self
                .sched
                .sequence(x.seq_id)
                .expect("scheduled sequences are live");
            assert_eq!(seq.status, SequenceStatus::Running);
            assert_eq!(x.num_computed_tokens, seq.num_computed_tokens);
            assert!(x.num_scheduled_tokens >= 1);
            let end = x.num_computed_tokens + x.num_scheduled_tokens;
            assert!(
                end <= seq.num_tokens(),
                "{} scheduled past its tokens",
                x.seq_id
            );
            assert_eq!(x.samples, end == seq.num_tokens());
            let table = self.sched.block_manager().block_table(x.seq_id);
            assert!(
                table.len() * bs >= end,
                "{}'s block table is too short",
                x.seq_id
            );
            assert!(self.sched.running().contains(&x.seq_id));
        }
        let total: usize = out.seqs.iter().map(|x| x.num_scheduled_tokens).sum();
        assert_eq!(out.num_batched_tokens, total);
        assert!(total <= config.max_num_batched_tokens);
        assert!(self.running_seats() <= config.max_num_seqs);
        for id in &out.preempted {
            let seq = self
                .sched
                .sequence(*id)
                .expect("a preempted sequence stays");
            assert_eq!(seq.status, SequenceStatus::Waiting);
            assert_eq!(seq.num_computed_tokens, 0);
            assert!(!self.sched.block_manager().has_seq(*id));
            assert!(!self.sched.running().contains(id));
        }
        for (id, _) in &out.finished {
            assert!(self.sched.sequence(*id).is_none());
            assert!(!self.sched.block_manager().has_seq(*id));
        }
        // Every sequence that was decoding either advances by one token or was preempted.
        for id in decoders {
            let advanced = out
                .seqs
                .iter()
                .any(|x| x.seq_id == *id && x.num_scheduled_tokens == 1 && x.samples);
            assert!(
                advanced || out.preempted.contains(id) || out.finished.iter().any(|f| f.0 == *id),
                "decoding {id} was left out of the step"
            );
        }
    }

    /// The forward, as far as the KV memory goes: copies, then every scheduled token.
    fn forward(&mut self, out: &ScheduleOutput) {
        let bs = self.block_size;
        for c in &out.block_copies {
            self.kv[c.dst.0 as usize] = self.kv[c.src.0 as usize].clone();
        }
        for x in &out.seqs {
            let seq = self.sched.sequence(x.seq_id).unwrap();
            let table = self.sched.block_manager().block_table(x.seq_id);
            let end = x.num_computed_tokens + x.num_scheduled_tokens;
            for p in x.num_computed_tokens..end {
                self.kv[table[p / bs].0 as usize][p % bs] = Some(seq.tokens()[p]);
            }
        }
        // What each scheduled sequence attends to is its own tokens.
        for x in &out.seqs {
            self.check_kv(x.seq_id, x.num_computed_tokens + x.num_scheduled_tokens);
        }
    }

    fn check_kv(&self, id: SeqId, upto: usize) {
        let bs = self.block_size;
        let seq = self.sched.sequence(id).unwrap();
        let table = self.sched.block_manager().block_table(id);
        for p in 0..upto {
            assert_eq!(
                self.kv[table[p / bs].0 as usize][p % bs],
                Some(seq.tokens()[p]),
                "{id} reads the wrong KV at position {p}"
            );
        }
    }

    fn sample(&self, out: &ScheduleOutput) -> Vec<SampleResult> {
        out.seqs
            .iter()
            .filter(|x| x.samples)
            .map(|x| {
                let pos = x.num_computed_tokens + x.num_scheduled_tokens;
                let seq = self.sched.sequence(x.seq_id).unwrap();
                let forks = if seq.num_seats > 1 {
                    self.fork_ids[&x.seq_id]
                        .iter()
                        .map(|&c| (c, fake_token(c, pos)))
                        .collect()
                } else {
                    Vec::new()
                };
                SampleResult {
                    seq_id: x.seq_id,
                    token: fake_token(x.seq_id, pos),
                    forks,
                }
            })
            .collect()
    }

    /// After an update: invariants, and every running sequence's KV is still its own.
    fn check_state(&self) {
        self.sched.check_invariants().unwrap();
        for &id in self.sched.running() {
            let seq = self.sched.sequence(id).unwrap();
            assert_eq!(seq.status, SequenceStatus::Running);
            self.check_kv(id, seq.num_computed_tokens);
        }
        assert!(self.running_seats() <= self.sched.config().max_num_seqs);
    }

    /// Steps until nothing is left, then checks that every sequence got the fake runner's
    /// tokens and that the allocator is back to zero.
    fn run_to_end(&mut self) {
        let mut guard = 0;
        while !self.sched.is_idle() {
            self.step();
            guard += 1;
            assert!(guard < 10_000, "the scheduler does not make progress");
        }
        self.assert_drained();
    }

    fn assert_drained(&self) {
        for (id, f) in &self.finished {
            let expected: Vec<TokenId> = (0..f.output.len())
                .map(|i| fake_token(*id, f.prompt_len + i))
                .collect();
            assert_eq!(
                f.output, expected,
                "{id} got other tokens than the runner gave"
            );
        }
        assert!(self.sched.is_idle());
        assert_eq!(self.sched.num_running(), 0);
        assert_eq!(self.sched.num_waiting(), 0);
        let bm = self.sched.block_manager();
        let stats = bm.stats();
        assert_eq!(stats.num_used_blocks, 0);
        assert_eq!(stats.num_free_blocks, stats.num_blocks);
        assert_eq!(bm.num_seqs(), 0);
        for b in 0..stats.num_blocks as u32 {
            assert_eq!(bm.ref_count(BlockId(b)), 0, "block {b} is still referenced");
        }
        bm.check_invariants(&|_| None).unwrap();
    }

    /// Cancels a sequence (its client went away): its blocks are freed at once.
    fn abort(&mut self, id: u64) {
        let id = SeqId(id);
        assert!(self.sched.abort(id));
        assert!(!self.sched.block_manager().has_seq(id));
        self.outputs.remove(&id);
        self.check_state();
    }

    fn output(&self, id: u64) -> &[TokenId] {
        &self.finished[&SeqId(id)].output
    }

    fn reason(&self, id: u64) -> FinishReason {
        self.finished[&SeqId(id)].reason
    }
}

/// One step whose output must be exactly `seqs`, with nobody preempted or finished.
fn expect(r: &mut Run, seqs: &[ScheduledSeq]) -> ScheduleOutput {
    expect_preempting(r, seqs, &[])
}

fn expect_preempting(r: &mut Run, seqs: &[ScheduledSeq], preempted: &[u64]) -> ScheduleOutput {
    let step = r.num_steps + 1;
    let out = r.step();
    assert_eq!(out.seqs, seqs, "step {step}");
    let preempted: Vec<SeqId> = preempted.iter().map(|&p| SeqId(p)).collect();
    assert_eq!(out.preempted, preempted, "step {step}");
    assert!(out.finished.is_empty(), "step {step}");
    out
}

fn expected_output(id: u64, prompt_len: usize, n: usize) -> Vec<TokenId> {
    (prompt_len..prompt_len + n)
        .map(|p| fake_token(SeqId(id), p))
        .collect()
}

// ---- chunked prefill, token budget, decodes ----------------------------------------------

#[test]
fn chunked_prefill_shares_the_token_budget_with_running_decodes() {
    let mut r = Run::new(Setup {
        max_num_seqs: 4,
        max_num_batched_tokens: 8,
        ..Setup::default()
    });
    r.add(1, toks([1, 2, 3]), 8);
    r.add(2, toks([4, 5]), 8);
    let out = expect(&mut r, &[s(1, 0, 3, true), s(2, 0, 2, true)]);
    assert_eq!(out.num_batched_tokens, 5);
    // A 20-token prompt arrives: it is split into chunks of what the decodes leave.
    r.add(3, toks(30..50), 2);
    let out = expect(
        &mut r,
        &[s(1, 3, 1, true), s(2, 2, 1, true), s(3, 0, 6, false)],
    );
    assert_eq!(out.num_batched_tokens, 8);
    expect(
        &mut r,
        &[s(1, 4, 1, true), s(2, 3, 1, true), s(3, 6, 6, false)],
    );
    expect(
        &mut r,
        &[s(1, 5, 1, true), s(2, 4, 1, true), s(3, 12, 6, false)],
    );
    let out = expect(
        &mut r,
        &[s(1, 6, 1, true), s(2, 5, 1, true), s(3, 18, 2, true)],
    );
    assert_eq!(out.num_batched_tokens, 4);
    expect(
        &mut r,
        &[s(1, 7, 1, true), s(2, 6, 1, true), s(3, 20, 1, true)],
    );
    assert_eq!(r.reason(3), FinishReason::Length);
    assert_eq!(r.output(3), expected_output(3, 20, 2));
    expect(&mut r, &[s(1, 8, 1, true), s(2, 7, 1, true)]);
    r.run_to_end();
    assert_eq!(r.num_steps, 8);
    assert_eq!(r.output(1), expected_output(1, 3, 8));
    assert_eq!(r.output(2), expected_output(2, 2, 8));
}

#[test]
fn every_running_sequence_advances_in_every_decode_step() {
    // Throughput proxy: more sequences do not take more steps; one schedule serves them all.
    for concurrency in [1u64, 2, 4, 8] {
        let mut r = Run::new(Setup {
            max_num_seqs: 8,
            max_num_batched_tokens: 32,
            ..Setup::default()
        });
        for id in 1..=concurrency {
            r.add(id, toks([id as u32, 1, 2, 3]), 10);
        }
        let mut steps = 0;
        while !r.sched.is_idle() {
            let live = r.sched.num_running() + r.sched.num_waiting();
            let out = r.step();
            steps += 1;
            assert_eq!(
                out.seqs.len(),
                live,
                "concurrency {concurrency}, step {steps}"
            );
            assert!(out.seqs.iter().all(|x| x.samples));
        }
        assert_eq!(steps, 10, "concurrency {concurrency}");
        r.assert_drained();
    }

    // Decodes keep advancing while a long prompt is prefilled in chunks beside them.
    let mut r = Run::new(Setup {
        max_num_seqs: 8,
        max_num_batched_tokens: 8,
        ..Setup::default()
    });
    for id in 1..=5 {
        r.add(id, toks([id as u32]), 12);
    }
    r.step();
    r.add(6, toks(100..140), 1);
    for step in 2..=7 {
        let out = r.step();
        let decodes: Vec<ScheduledSeq> = (1..=5).map(|id| s(id, step - 1, 1, true)).collect();
        assert_eq!(out.seqs[..5], decodes[..], "step {step}");
        assert_eq!(out.seqs.len(), 6, "step {step}");
        assert_eq!(out.seqs[5].seq_id, SeqId(6));
        assert_eq!(out.seqs[5].num_scheduled_tokens, 3, "step {step}");
    }
    r.run_to_end();
}

// ---- admission --------------------------------------------------------------------------

#[test]
fn max_num_seqs_admits_first_come_first_served() {
    let mut r = Run::new(Setup {
        max_num_seqs: 2,
        max_num_batched_tokens: 16,
        ..Setup::default()
    });
    r.add(1, toks([1, 2, 3, 4]), 2);
    r.add(2, toks([5, 6, 7, 8]), 2);
    r.add(3, toks([9, 10, 11, 12]), 2);
    r.add(4, toks([13]), 1);
    expect(&mut r, &[s(1, 0, 4, true), s(2, 0, 4, true)]);
    assert_eq!(r.sched.num_waiting(), 2);
    expect(&mut r, &[s(1, 4, 1, true), s(2, 4, 1, true)]);
    expect(&mut r, &[s(3, 0, 4, true), s(4, 0, 1, true)]);
    expect(&mut r, &[s(3, 4, 1, true)]);
    assert!(r.sched.is_idle());
    r.assert_drained();
}

#[test]
fn the_head_of_the_queue_is_never_skipped_by_a_smaller_later_request() {
    // Seats: the head needs two (n = 2), one is free; the later one-seat request waits too.
    let mut r = Run::new(Setup {
        max_num_seqs: 3,
        max_num_batched_tokens: 16,
        ..Setup::default()
    });
    r.add(1, toks([1, 2]), 3);
    r.add(2, toks([3, 4]), 3);
    expect(&mut r, &[s(1, 0, 2, true), s(2, 0, 2, true)]);
    r.add_n(3, toks([5, 6]), 2, &[5]);
    r.add(4, toks([7, 8]), 2);
    expect(&mut r, &[s(1, 2, 1, true), s(2, 2, 1, true)]);
    expect(&mut r, &[s(1, 3, 1, true), s(2, 3, 1, true)]);
    expect(&mut r, &[s(3, 0, 2, true), s(4, 0, 2, true)]);
    expect(
        &mut r,
        &[s(3, 2, 1, true), s(4, 2, 1, true), s(5, 2, 1, true)],
    );
    r.assert_drained();

    // Blocks: the head needs three, one is free; the later one-block request waits too.
    let mut r = Run::new(Setup {
        num_blocks: 4,
        max_num_seqs: 4,
        max_num_batched_tokens: 32,
        ..Setup::default()
    });
    r.add(1, toks(1..9), 3);
    expect(&mut r, &[s(1, 0, 8, true)]);
    r.add(2, toks(20..32), 1);
    r.add(3, toks([40, 41]), 1);
    expect(&mut r, &[s(1, 8, 1, true)]);
    assert_eq!(r.sched.block_manager().num_free_blocks(), 1);
    assert_eq!(r.sched.num_waiting(), 2);
    expect(&mut r, &[s(1, 9, 1, true)]);
    expect(&mut r, &[s(2, 0, 12, true), s(3, 0, 2, true)]);
    r.assert_drained();
}

// ---- preemption -------------------------------------------------------------------------

#[test]
fn newest_is_preempted_first_and_not_rescheduled_in_the_same_step() {
    // 1 and 2 hold one block each and need a second one in step 5; 3, the newest, holds
    // three. After 3 is preempted one block is left, which would fit its first chunk again:
    // it must still wait for the next step.
    let mut r = Run::new(Setup {
        num_blocks: 5,
        max_num_seqs: 3,
        max_num_batched_tokens: 6,
        prefix: false,
        ..Setup::default()
    });
    r.add(1, toks([1]), 6);
    r.add(2, toks([2]), 6);
    r.add(3, toks(10..21), 3);
    expect(
        &mut r,
        &[s(1, 0, 1, true), s(2, 0, 1, true), s(3, 0, 4, false)],
    );
    expect(
        &mut r,
        &[s(1, 1, 1, true), s(2, 1, 1, true), s(3, 4, 4, false)],
    );
    expect(
        &mut r,
        &[s(1, 2, 1, true), s(2, 2, 1, true), s(3, 8, 3, true)],
    );
    expect(
        &mut r,
        &[s(1, 3, 1, true), s(2, 3, 1, true), s(3, 11, 1, true)],
    );
    assert_eq!(r.sched.block_manager().num_free_blocks(), 0);
    expect_preempting(&mut r, &[s(1, 4, 1, true), s(2, 4, 1, true)], &[3]);
    let victim = r.sched.sequence(SeqId(3)).unwrap();
    assert_eq!(victim.status, SequenceStatus::Waiting);
    assert_eq!(victim.num_computed_tokens, 0);
    assert_eq!(victim.num_preemptions, 1);
    assert_eq!(victim.output(), expected_output(3, 11, 2));
    assert_eq!(r.sched.num_waiting(), 1);
    assert_eq!(r.sched.running(), [SeqId(1), SeqId(2)]);
    assert_eq!(r.sched.block_manager().num_free_blocks(), 1);
    // The next step takes it back, and it is recomputed from scratch (no prefix cache).
    expect(
        &mut r,
        &[s(1, 5, 1, true), s(2, 5, 1, true), s(3, 0, 4, false)],
    );
    expect(&mut r, &[s(3, 4, 6, false)]);
    expect(&mut r, &[s(3, 10, 3, true)]);
    r.run_to_end();
    assert_eq!(r.output(3), expected_output(3, 11, 3));
    assert_eq!(r.output(1), expected_output(1, 1, 6));
}

#[test]
fn newest_fork_is_preempted_before_an_older_prefill() {
    // 1 samples three times (forks 11 and 12); 2, admitted in the same step, is still
    // prefilling. The forks are the newest sequences: when 12 finds no block, it is the one
    // to go, not the older 2.
    let mut r = Run::new(Setup {
        num_blocks: 4,
        max_num_seqs: 4,
        max_num_batched_tokens: 5,
        ..Setup::default()
    });
    r.add_n(1, toks([1, 2, 3, 4]), 3, &[11, 12]);
    r.add(2, toks(20..30), 2);
    expect(&mut r, &[s(1, 0, 4, true), s(2, 0, 1, false)]);
    assert_eq!(
        r.sched.running(),
        [SeqId(1), SeqId(2), SeqId(11), SeqId(12)]
    );
    expect_preempting(
        &mut r,
        &[s(1, 4, 1, true), s(11, 4, 1, true), s(2, 1, 3, false)],
        &[12],
    );
    r.run_to_end();
    assert_eq!(r.output(12), expected_output(12, 4, 3));
    assert_eq!(r.output(2), expected_output(2, 10, 2));
}

#[test]
fn sequence_that_cannot_fit_even_alone_is_finished_with_length() {
    // Grows past the whole cache (two blocks of four) while decoding.
    let mut r = Run::new(Setup {
        num_blocks: 2,
        ..Setup::default()
    });
    r.add(1, toks(1..7), 10);
    expect(&mut r, &[s(1, 0, 6, true)]);
    expect(&mut r, &[s(1, 6, 1, true)]);
    expect(&mut r, &[s(1, 7, 1, true)]);
    let out = r.step();
    assert!(out.seqs.is_empty());
    assert_eq!(out.finished, [(SeqId(1), FinishReason::Length)]);
    assert_eq!(r.reason(1), FinishReason::Length);
    assert_eq!(r.output(1), expected_output(1, 6, 3));
    r.assert_drained();

    // A prompt larger than the cache, in one piece or in chunks.
    for budget in [64, 4] {
        let mut r = Run::new(Setup {
            num_blocks: 2,
            max_num_batched_tokens: budget,
            ..Setup::default()
        });
        r.add(2, toks(1..10), 5);
        r.run_to_end();
        assert_eq!(r.reason(2), FinishReason::Length);
        assert!(r.output(2).is_empty());
        assert!(r.num_steps <= 3, "budget {budget}: {} steps", r.num_steps);
    }

    // It waits while others hold blocks, and ends once it is alone.
    let mut r = Run::new(Setup {
        num_blocks: 3,
        ..Setup::default()
    });
    r.add(1, toks([1, 2]), 3);
    r.add(2, toks(10..23), 4);
    expect(&mut r, &[s(1, 0, 2, true)]);
    assert_eq!(r.sched.num_waiting(), 1);
    expect(&mut r, &[s(1, 2, 1, true)]);
    expect(&mut r, &[s(1, 3, 1, true)]);
    let out = r.step();
    assert!(out.seqs.is_empty());
    assert_eq!(out.finished, [(SeqId(2), FinishReason::Length)]);
    r.assert_drained();
}

// ---- allocator counters -----------------------------------------------------------------

#[test]
fn counters_return_to_zero_after_a_run() {
    let mut r = Run::new(Setup {
        num_blocks: 12,
        max_num_seqs: 4,
        max_num_batched_tokens: 8,
        ..Setup::default()
    });
    let base = toks([7, 7, 7, 7, 8, 8, 8, 8]);
    for round in 0..3u64 {
        let id = |i: u64| 100 * round + i;
        let with = |tail: &[u32]| {
            base.iter()
                .copied()
                .chain(toks(tail.iter().copied()))
                .collect()
        };
        r.add(id(1), with(&[1, 2]), 6);
        r.add_n(id(2), with(&[3]), 4, &[id(20), id(21)]);
        r.add(id(3), with(&[1, 2, 3, 4, 5]), 5);
        r.add(id(4), toks(50..61), 3);
        r.add(id(5), with(&[9]), 8);
        r.add(id(6), toks(60..64), 8);
        for _ in 0..4 {
            r.step();
        }
        // A client goes away: its blocks are freed at once, waiting or running.
        let used = r.sched.block_manager().stats().num_used_blocks;
        let running = r.sched.running()[0];
        let private = r
            .sched
            .block_manager()
            .block_table(running)
            .iter()
            .filter(|b| r.sched.block_manager().ref_count(**b) == 1)
            .count();
        r.abort(running.0);
        assert_eq!(
            r.sched.block_manager().stats().num_used_blocks,
            used - private
        );
        r.abort(id(6));
        r.run_to_end();
        assert!(r.finished.len() >= 6 * (round as usize + 1));
    }
    let stats = r.sched.block_manager().stats();
    assert!(stats.prefix_hit_tokens > 0);
}

// ---- regressions for bugs in peer engines -----------------------------------------------

#[test]
fn full_prompt_prefix_hit_still_computes_the_last_token() {
    // An 8-token prompt is fully cached, yet its last token is computed again for its
    // logits; the block it sits in is recomputed whole.
    for (block_size, cached) in [(1, 7), (2, 6), (4, 4), (8, 0)] {
        let mut r = Run::new(Setup {
            block_size,
            ..Setup::default()
        });
        let prompt = toks(1..9);
        r.add(1, prompt.clone(), 3);
        expect(&mut r, &[s(1, 0, 8, true)]);
        // While the first still runs (its blocks referenced)...
        r.add(2, prompt.clone(), 1);
        expect(&mut r, &[s(1, 8, 1, true), s(2, cached, 8 - cached, true)]);
        r.step();
        // ...and once it is gone (its blocks evictable).
        r.add(3, prompt.clone(), 1);
        expect(&mut r, &[s(3, cached, 8 - cached, true)]);
        assert_eq!(r.output(2), expected_output(2, 8, 1));
        assert_eq!(r.output(3), expected_output(3, 8, 1));
        r.assert_drained();
    }
}

#[test]
fn reused_block_drops_its_stale_hash() {
    let mut r = Run::new(Setup {
        num_blocks: 4,
        ..Setup::default()
    });
    let old = toks(1..10);
    r.add(1, old.clone(), 1);
    expect(&mut r, &[s(1, 0, 9, true)]);
    assert_eq!(r.sched.block_manager().lookup_prefix(&old).num_blocks(), 2);
    // A different prompt needs every block: the cached ones are evicted and rewritten.
    let new = toks(20..35);
    r.add(2, new.clone(), 1);
    expect(&mut r, &[s(2, 0, 15, true)]);
    let bm = r.sched.block_manager();
    assert_eq!(bm.lookup_prefix(&old).num_blocks(), 0);
    assert_eq!(bm.lookup_prefix(&new).num_blocks(), 3);
    // The old prompt is computed from scratch (the KV model checks what it reads).
    r.add(3, old.clone(), 1);
    expect(&mut r, &[s(3, 0, 9, true)]);
    r.assert_drained();
}

#[test]
fn identical_prefixes_admitted_in_the_same_step_share_blocks() {
    let mut r = Run::new(Setup::default());
    let prompt = toks(1..11);
    r.add(1, prompt.clone(), 2);
    r.add(2, prompt.clone(), 2);
    let out = expect(&mut r, &[s(1, 0, 10, true), s(2, 8, 2, true)]);
    assert_eq!(out.num_batched_tokens, 12);
    let (a, b) = (r.table(1), r.table(2));
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    assert_eq!(a[..2], b[..2]);
    assert_ne!(a[2], b[2]);
    let bm = r.sched.block_manager();
    assert!(a[..2].iter().all(|blk| bm.ref_count(*blk) == 2));
    assert_eq!(bm.stats().num_used_blocks, 4);
    assert_eq!(bm.stats().prefix_hit_tokens, 8);
    assert_eq!(
        r.sched.sequence(SeqId(2)).unwrap().num_cached_tokens,
        Some(8)
    );
    r.run_to_end();
    assert_eq!(r.output(2), expected_output(2, 10, 2));
}

#[test]
fn preemption_with_prefix_hit_stays_in_bounds() {
    // 2 is preempted with two full blocks in the prefix cache (prompt and generated tokens);
    // readmitted, it starts from them and computes only the rest.
    let mut r = Run::new(Setup {
        num_blocks: 4,
        max_num_seqs: 2,
        max_num_batched_tokens: 16,
        ..Setup::default()
    });
    r.add(1, toks([1]), 5);
    r.add(2, toks(10..16), 6);
    expect(&mut r, &[s(1, 0, 1, true), s(2, 0, 6, true)]);
    expect(&mut r, &[s(1, 1, 1, true), s(2, 6, 1, true)]);
    expect(&mut r, &[s(1, 2, 1, true), s(2, 7, 1, true)]);
    expect(&mut r, &[s(1, 3, 1, true), s(2, 8, 1, true)]);
    let cached = r.table(2)[..2].to_vec();
    expect_preempting(&mut r, &[s(1, 4, 1, true)], &[2]);
    assert_eq!(r.sched.sequence(SeqId(2)).unwrap().num_tokens(), 10);
    let out = expect(&mut r, &[s(2, 8, 2, true)]);
    let x = out.seqs[0];
    assert!(x.num_computed_tokens + x.num_scheduled_tokens <= 10);
    assert_eq!(r.table(2).len(), 3);
    assert_eq!(r.table(2)[..2], cached[..]);
    r.run_to_end();
    assert_eq!(r.output(2), expected_output(2, 6, 6));
}

#[test]
fn forks_share_prompt_blocks_and_copy_on_write_the_partial_block() {
    let mut r = Run::new(Setup::default());
    r.add_n(1, toks(1..11), 3, &[11, 12]);
    expect(&mut r, &[s(1, 0, 10, true)]);
    let parent = r.table(1);
    assert_eq!(parent.len(), 3);
    for child in [11, 12] {
        assert_eq!(r.table(child), parent);
        assert_eq!(
            r.sched.sequence(SeqId(child)).unwrap().num_computed_tokens,
            10
        );
    }
    let bm = r.sched.block_manager();
    assert!(parent.iter().all(|b| bm.ref_count(*b) == 3));
    assert_eq!(bm.stats().num_used_blocks, 3);
    // Each writes its own token into the shared third block: the first two get copies.
    let out = expect(
        &mut r,
        &[s(1, 10, 1, true), s(11, 10, 1, true), s(12, 10, 1, true)],
    );
    let (t1, t11, t12) = (r.table(1), r.table(11), r.table(12));
    assert_eq!(
        out.block_copies,
        [
            BlockCopy {
                src: parent[2],
                dst: t1[2]
            },
            BlockCopy {
                src: parent[2],
                dst: t11[2]
            },
        ]
    );
    assert_eq!(t12[2], parent[2]);
    assert_ne!(t1[2], t11[2]);
    for t in [&t1, &t11, &t12] {
        assert_eq!(t[..2], parent[..2]);
    }
    let bm = r.sched.block_manager();
    assert!(parent[..2].iter().all(|b| bm.ref_count(*b) == 3));
    assert!([t1[2], t11[2], t12[2]]
        .iter()
        .all(|b| bm.ref_count(*b) == 1));
    assert_eq!(bm.stats().num_used_blocks, 5);
    r.run_to_end();
    // Each sample keeps its own tokens: the first one comes from the fork.
    for id in [1, 11, 12] {
        assert_eq!(r.output(id), expected_output(id, 10, 3));
    }
    assert_ne!(r.output(1)[0], r.output(11)[0]);
    assert_ne!(r.output(11)[0], r.output(12)[0]);
}

// ---- random workloads -------------------------------------------------------------------

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Event {
        Add {
            stem_len: usize,
            tail: Vec<u32>,
            n: usize,
            max_tokens: usize,
        },
        Step,
        Abort(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            2 => (0usize..=9, prop::collection::vec(0u32..3, 0..6), 1usize..=3, 1usize..=6)
                .prop_map(|(stem_len, tail, n, max_tokens)| {
                    Event::Add { stem_len, tail, n, max_tokens }
                }),
            4 => Just(Event::Step),
            1 => any::<usize>().prop_map(Event::Abort),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever arrives, is cancelled or runs out of blocks: every step passes the checks
        /// of `Run::step`, every sequence ends with the runner's tokens, and nothing is left
        /// allocated.
        #[test]
        fn random_workloads_finish_with_the_runners_tokens_and_release_every_block(
            block_size in 1usize..=4,
            num_blocks in 3usize..=16,
            max_num_seqs in 1usize..=4,
            extra_budget in 0usize..=8,
            prefix in prop::bool::weighted(0.8),
            events in prop::collection::vec(event(), 1..40),
        ) {
            let mut r = Run::new(Setup {
                max_num_seqs,
                max_num_batched_tokens: max_num_seqs + extra_budget,
                num_blocks,
                block_size,
                prefix,
            });
            let stem = [5u32, 6, 5, 6, 7, 5, 6, 5, 6];
            let mut next = 0u64;
            for e in events {
                match e {
                    Event::Add { stem_len, tail, n, max_tokens } => {
                        let mut prompt = toks(stem[..stem_len].iter().chain(&tail).copied());
                        if prompt.is_empty() {
                            prompt.push(TokenId(1));
                        }
                        let first = next + 1;
                        next += n.min(max_num_seqs) as u64;
                        let children: Vec<u64> = (first + 1..=next).collect();
                        r.add_n(first, prompt, max_tokens, &children);
                    }
                    Event::Step => {
                        r.step();
                    }
                    Event::Abort(pick) => {
                        let mut live: Vec<SeqId> = r.outputs.keys().copied().collect();
                        live.sort();
                        if !live.is_empty() {
                            r.abort(live[pick % live.len()].0);
                        }
                    }
                }
            }
            r.run_to_end();
            // No sequence outlives its max_tokens (at most 6 here).
            for f in r.finished.values() {
                prop_assert!(f.output.len() <= 6);
            }
        }
    }
}
