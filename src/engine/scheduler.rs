//! The scheduler: which sequences compute how many tokens in the next step.
//!
//! Owns the sequences (waiting and running) and the `BlockManager`. Plain CPU data: no model,
//! no sampling, no channels; the engine loop feeds it sampled tokens. Must not depend on
//! `model` beyond ids.
//!
//! One step shares one token budget (`max_num_batched_tokens`) between decodes and prefill
//! chunks (chunked prefill):
//! 1. running sequences with one token to compute (decodes), oldest first: every one advances,
//!    so a long prompt never stalls the sequences already generating;
//! 2. running sequences with a prompt still to compute, oldest first, a chunk each;
//! 3. waiting sequences in arrival order (first come, first served: the head is never
//!    skipped, so nobody starves), each starting from its prefix-cache hit, while seats
//!    (`max_num_seqs`) and budget last, and only if nobody was preempted in this step.
//!
//! When blocks run out, the newest running sequence not yet scheduled in this step is
//! preempted, even when that is the sequence asking (a decode is scheduled before an older
//! prefill, and must not push it out): its blocks are freed and it waits at the head of the
//! queue to be recomputed, not in the same step. A sequence that cannot get a block even alone
//! is finished (`Length`).

use std::collections::{HashMap, HashSet, VecDeque};

use super::block_manager::{BlockCopy, BlockManager, BlockManagerConfig, PrefixHit};
use super::sequence::{FinishReason, Sequence, SequenceStatus};
use crate::ids::{SeqId, TokenId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub seq_id: SeqId,
    /// Tokens already in the cache: this step computes the next `num_scheduled_tokens`.
    pub num_computed_tokens: usize,
    pub num_scheduled_tokens: usize,
    /// The chunk reaches the sequence's last token, so its logits are sampled.
    pub samples: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleOutput {
    /// In batch order.
    pub seqs: Vec<ScheduledSeq>,
    pub preempted: Vec<SeqId>,
    /// Sequences ended because the KV cache cannot hold them even alone.
    pub finished: Vec<(SeqId, FinishReason)>,
    /// KV copies to carry out before the forward (copy-on-write after a fork).
    pub block_copies: Vec<BlockCopy>,
    pub num_batched_tokens: usize,
}

/// The token sampled for a scheduled sequence, and for each extra sample of its prompt (its
/// first token only) a new sequence id with that sample's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleResult {
    pub seq_id: SeqId,
    pub token: TokenId,
    pub forks: Vec<(SeqId, TokenId)>,
}

/// What a step did to one sequence: its new token, and whether it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqUpdate {
    pub seq_id: SeqId,
    pub token: TokenId,
    pub finished: Option<FinishReason>,
}

pub struct Scheduler {
    config: SchedulerConfig,
    block_manager: BlockManager,
    seqs: HashMap<SeqId, Sequence>,
    waiting: VecDeque<SeqId>,
    /// In admission order: the newest is last.
    running: Vec<SeqId>,
}

enum Phase {
    Decode,
    Prefill,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, block_manager: BlockManagerConfig) -> Self {
        Self {
            config,
            block_manager: BlockManager::new(block_manager),
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn block_manager(&self) -> &BlockManager {
        &self.block_manager
    }

    pub fn block_manager_mut(&mut self) -> &mut BlockManager {
        &mut self.block_manager
    }

    pub fn sequence(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn running(&self) -> &[SeqId] {
        &self.running
    }

    /// Queues a new sequence behind every waiting one.
    pub fn add(&mut self, seq: Sequence) {
        self.waiting.push_back(seq.id);
        self.seqs.insert(seq.id, seq);
    }

    /// Removes a sequence wherever it is and frees its blocks at once.
    pub fn abort(&mut self, id: SeqId) -> bool {
        self.waiting.retain(|s| *s != id);
        self.running.retain(|s| *s != id);
        self.block_manager.free(id);
        self.seqs.remove(&id).is_some()
    }

    pub fn schedule(&mut self) -> ScheduleOutput {
        let mut out = ScheduleOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        let mut scheduled = HashSet::new();
        for phase in [Phase::Decode, Phase::Prefill] {
            self.schedule_running(&phase, &mut budget, &mut scheduled, &mut out);
        }
        if out.preempted.is_empty() {
            self.admit_waiting(&mut budget, &mut out);
        }
        out.block_copies = self.block_manager.take_copies();
        out.num_batched_tokens = out.seqs.iter().map(|s| s.num_scheduled_tokens).sum();
        out
    }

    fn schedule_running(
        &mut self,
        phase: &Phase,
        budget: &mut usize,
        scheduled: &mut HashSet<SeqId>,
        out: &mut ScheduleOutput,
    ) {
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let remaining = seq.num_uncomputed_tokens();
            let wanted = match phase {
                Phase::Decode => remaining == 1,
                Phase::Prefill => remaining > 1,
            };
            if !wanted || scheduled.contains(&id) {
                i += 1;
                continue;
            }
            let num_new = remaining.min(*budget);
            let computed = seq.num_computed_tokens;
            loop {
                let seq = &self.seqs[&id];
                let ok = self
                    .block_manager
                    .allocate(id, seq.tokens(), (computed, num_new), None)
                    .is_ok();
                if ok {
                    scheduled.insert(id);
                    *budget -= num_new;
                    out.seqs.push(ScheduledSeq {
                        seq_id: id,
                        num_computed_tokens: computed,
                        num_scheduled_tokens: num_new,
                        samples: computed + num_new == seq.num_tokens(),
                    });
                    // A victim taken from before `i` shifted the list.
                    i = self.position(id).map_or(i, |p| p + 1);
                    break;
                }
                // The newest sequence not yet scheduled goes first, even when it is this one.
                if let Some(victim) = self.newest_unscheduled(scheduled).filter(|v| *v != id) {
                    self.preempt(victim, out);
                    continue;
                }
                // This one is the newest left: step aside, or end if alone.
                if let Some(p) = self.position(id) {
                    self.running.remove(p);
                    i = p;
                }
                if self.running.is_empty() {
                    self.finish_for_capacity(id, out);
                } else {
                    self.preempt_removed(id, out);
                }
                break;
            }
        }
    }

    fn position(&self, id: SeqId) -> Option<usize> {
        self.running.iter().position(|s| *s == id)
    }

    fn newest_unscheduled(&self, scheduled: &HashSet<SeqId>) -> Option<SeqId> {
        self.running
            .iter()
            .rev()
            .find(|s| !scheduled.contains(s))
            .copied()
    }

    fn preempt(&mut self, victim: SeqId, out: &mut ScheduleOutput) {
        self.running.retain(|s| *s != victim);
        self.preempt_removed(victim, out);
    }

    fn preempt_removed(&mut self, victim: SeqId, out: &mut ScheduleOutput) {
        self.block_manager.free(victim);
        if let Some(seq) = self.seqs.get_mut(&victim) {
            seq.preempt();
        }
        // Victims go newest first, each to the head: the queue keeps their arrival order.
        self.waiting.push_front(victim);
        out.preempted.push(victim);
    }

    fn finish_for_capacity(&mut self, id: SeqId, out: &mut ScheduleOutput) {
        self.block_manager.free(id);
        self.seqs.remove(&id);
        out.finished.push((id, FinishReason::Length));
    }

    fn admit_waiting(&mut self, budget: &mut usize, out: &mut ScheduleOutput) {
        while *budget > 0 {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let seats: usize = self.running.iter().map(|s| self.seqs[s].num_seats).sum();
            let seq = &self.seqs[&id];
            if seats + seq.num_seats > self.config.max_num_seqs {
                break;
            }
            let hit: PrefixHit = self.block_manager.lookup_prefix(seq.tokens());
            let computed = hit.num_blocks() * self.block_manager.block_size();
            let num_new = (seq.num_tokens() - computed).min(*budget);
            let allocated =
                self.block_manager
                    .allocate(id, seq.tokens(), (computed, num_new), Some(&hit));
            if allocated.is_err() {
                if self.running.is_empty() {
                    // Everything is free and it still does not fit.
                    self.waiting.pop_front();
                    self.finish_for_capacity(id, out);
                    continue;
                }
                break;
            }
            self.waiting.pop_front();
            let Some(seq) = self.seqs.get_mut(&id) else {
                continue;
            };
            seq.num_computed_tokens = computed;
            seq.status = SequenceStatus::Running;
            seq.num_cached_tokens.get_or_insert(computed);
            self.running.push(id);
            *budget -= num_new;
            out.seqs.push(ScheduledSeq {
                seq_id: id,
                num_computed_tokens: computed,
                num_scheduled_tokens: num_new,
                samples: computed + num_new == seq.num_tokens(),
            });
        }
    }

    /// Applies a finished step: advances every scheduled sequence, appends the sampled
    /// tokens, forks the extra samples of a prompt, and frees the finished sequences.
    pub fn update(&mut self, out: &ScheduleOutput, results: &[SampleResult]) -> Vec<SeqUpdate> {
        for s in &out.seqs {
            if let Some(seq) = self.seqs.get_mut(&s.seq_id) {
                seq.num_computed_tokens = s.num_computed_tokens + s.num_scheduled_tokens;
            }
        }
        let mut updates = Vec::with_capacity(results.len());
        for r in results {
            let Some(seq) = self.seqs.get(&r.seq_id) else {
                continue;
            };
            let children: Vec<Sequence> = r.forks.iter().map(|(id, _)| seq.fork(*id)).collect();
            for (mut child, &(child_id, token)) in children.into_iter().zip(&r.forks) {
                self.block_manager.fork(r.seq_id, child_id);
                let finished = child.append(token);
                self.seqs.insert(child_id, child);
                self.running.push(child_id);
                updates.push(self.after_append(child_id, token, finished));
            }
            let finished = self.seqs.get_mut(&r.seq_id).and_then(|seq| {
                seq.num_seats = 1;
                seq.append(r.token)
            });
            updates.push(self.after_append(r.seq_id, r.token, finished));
        }
        updates
    }

    fn after_append(
        &mut self,
        id: SeqId,
        token: TokenId,
        finished: Option<FinishReason>,
    ) -> SeqUpdate {
        if finished.is_some() {
            self.abort(id);
        }
        SeqUpdate {
            seq_id: id,
            token,
            finished,
        }
    }

    /// Checks the block manager's invariants against the live sequences' tokens, and that no
    /// sequence holds blocks it should not.
    pub fn check_invariants(&self) -> Result<(), String> {
        let tokens_of = |id: SeqId| self.seqs.get(&id).map(|s| s.tokens().to_vec());
        self.block_manager.check_invariants(&tokens_of)?;
        for id in &self.waiting {
            if self.block_manager.has_seq(*id) {
                return Err(format!("waiting {id} holds blocks"));
            }
        }
        if self.block_manager.num_seqs() > self.running.len() {
            return Err("a sequence that is not running holds blocks".into());
        }
        Ok(())
    }
}
