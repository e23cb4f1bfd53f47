//! Turns a `ScheduleOutput` into the model's packed `ForwardBatch`.
//!
//! The one place where scheduler state meets the model's input layout: token slices and block
//! tables in, rows, positions and slots out. Depends on the scheduler's read-only view and on
//! `model::batch`; runs no model itself.

use super::scheduler::{ScheduleOutput, Scheduler};
use crate::model::{ForwardBatch, LogitsRows, SequenceChunk};

/// The batch for `out`, one sequence per scheduled entry, in order; logits come back for the
/// last row of each.
pub fn build_batch(scheduler: &Scheduler, out: &ScheduleOutput) -> ForwardBatch {
    let bm = scheduler.block_manager();
    let chunks: Vec<SequenceChunk<'_>> = out
        .seqs
        .iter()
        .filter_map(|s| {
            let seq = scheduler.sequence(s.seq_id)?;
            let end = s.num_computed_tokens + s.num_scheduled_tokens;
            Some(SequenceChunk {
                tokens: &seq.tokens()[s.num_computed_tokens..end],
                num_computed_tokens: s.num_computed_tokens,
                block_table: bm.block_table(s.seq_id),
            })
        })
        .collect();
    ForwardBatch::from_chunks(&chunks, bm.block_size(), LogitsRows::LastOfEachSequence)
}
