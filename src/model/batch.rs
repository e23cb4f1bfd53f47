//! `ForwardBatch`: the packed input of one model step, ragged sequences side by side.
//!
//! Owns the layout contract between whoever schedules (the engine, a test) and the model:
//! every row of `input_ids` has its position and cache slot, and each sequence has its query
//! range (`cu_seqlens`), its context length and its block table. Knows nothing of requests.
//! Invariant (checked by `validate`): the last `query_len` positions of each sequence are its
//! rows, in order, and each row's slot is the one its block table gives for its position.

use crate::ids::{BlockId, TokenId};

use super::error::{ModelError, Result};

/// Which rows the model turns into logits. The LM head is the largest matmul of a decode step,
/// so only the rows a caller will sample from are computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogitsRows {
    /// The last row of every sequence (what sampling needs).
    LastOfEachSequence,
    /// Every row (prompt logprobs, reference tests).
    All,
}

#[derive(Debug, Clone)]
pub struct ForwardBatch {
    pub input_ids: Vec<TokenId>,
    pub positions: Vec<u32>,
    pub slot_mapping: Vec<u32>,
    /// Sequence `i` owns rows `cu_seqlens[i]..cu_seqlens[i + 1]`.
    pub cu_seqlens: Vec<u32>,
    /// Tokens in the cache for each sequence once this step is written.
    pub context_lens: Vec<u32>,
    pub block_tables: Vec<Vec<BlockId>>,
    pub logits_rows: LogitsRows,
}

/// One sequence's part of a step: the tokens to compute now, after `num_computed_tokens`
/// already in the cache.
#[derive(Debug, Clone)]
pub struct SequenceChunk<'a> {
    pub tokens: &'a [TokenId],
    pub num_computed_tokens: usize,
    pub block_table: &'a [BlockId],
}

impl ForwardBatch {
    /// Packs the chunks in order. A token at position `p` goes to slot
    /// `block_table[p / block_size] * block_size + p % block_size`:
    ///
    /// ```
    /// use enclave::ids::{BlockId, TokenId};
    /// use enclave::model::{ForwardBatch, LogitsRows, SequenceChunk};
    ///
    /// let (a, b) = ([TokenId(7); 3], [TokenId(9)]);
    /// let (table_a, table_b) = ([BlockId(5)], [BlockId(2), BlockId(0)]);
    /// let batch = ForwardBatch::from_chunks(
    ///     &[
    ///         SequenceChunk { tokens: &a, num_computed_tokens: 0, block_table: &table_a },
    ///         // One decode token at position 4: the second block, offset 0.
    ///         SequenceChunk { tokens: &b, num_computed_tokens: 4, block_table: &table_b },
    ///     ],
    ///     4,
    ///     LogitsRows::LastOfEachSequence,
    /// );
    /// assert_eq!(batch.positions, [0, 1, 2, 4]);
    /// assert_eq!(batch.slot_mapping, [20, 21, 22, 0]);
    /// assert_eq!(batch.cu_seqlens, [0, 3, 4]);
    /// assert_eq!(batch.context_lens, [3, 5]);
    /// assert_eq!(batch.logits_indices(), [2, 3]);
    /// ```
    pub fn from_chunks(
        chunks: &[SequenceChunk<'_>],
        block_size: usize,
        logits_rows: LogitsRows,
    ) -> Self {
        let mut b = Self {
            input_ids: Vec::new(),
            positions: Vec::new(),
            slot_mapping: Vec::new(),
            cu_seqlens: vec![0],
            context_lens: Vec::new(),
            block_tables: Vec::new(),
            logits_rows,
        };
        for c in chunks {
            for (i, &tok) in c.tokens.iter().enumerate() {
                let pos = c.num_computed_tokens + i;
                b.input_ids.push(tok);
                b.positions.push(pos as u32);
                let slot = c.block_table.get(pos / block_size).map_or(u32::MAX, |blk| {
                    blk.0 * block_size as u32 + (pos % block_size) as u32
                });
                b.slot_mapping.push(slot);
            }
            b.cu_seqlens.push(b.input_ids.len() as u32);
            b.context_lens
                .push((c.num_computed_tokens + c.tokens.len()) as u32);
            b.block_tables.push(c.block_table.to_vec());
        }
        b
    }

    pub fn num_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    /// The rows whose logits are returned, in output order.
    pub fn logits_indices(&self) -> Vec<u32> {
        match self.logits_rows {
            LogitsRows::All => (0..self.num_tokens() as u32).collect(),
            LogitsRows::LastOfEachSequence => self.cu_seqlens[1..].iter().map(|e| e - 1).collect(),
        }
    }

    /// The sequence each row belongs to, in row order (what a kernel that sees only rows needs).
    pub fn row_sequences(&self) -> Vec<u32> {
        let mut rows = Vec::with_capacity(self.num_tokens());
        for s in 0..self.num_seqs() {
            let n = self.cu_seqlens[s + 1] - self.cu_seqlens[s];
            rows.extend(std::iter::repeat_n(s as u32, n as usize));
        }
        rows
    }

    /// The block tables as one row-major `[num_seqs, width]` matrix, each padded with block 0
    /// (never read: positions stop at the context length), and `width` (at least 1).
    pub fn padded_block_tables(&self) -> (Vec<u32>, usize) {
        let width = self
            .block_tables
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut flat = vec![0u32; self.num_seqs() * width];
        for (row, table) in flat.chunks_exact_mut(width).zip(&self.block_tables) {
            for (slot, b) in row.iter_mut().zip(table) {
                *slot = b.0;
            }
        }
        (flat, width)
    }

    pub fn validate(&self, block_size: usize, num_blocks: usize, vocab_size: usize) -> Result<()> {
        let bad = |m: String| Err(ModelError::Batch(m));
        let n = self.num_tokens();
        if n == 0 {
            return bad("the batch has no tokens".into());
        }
        if self.positions.len() != n || self.slot_mapping.len() != n {
            return bad("input_ids, positions and slot_mapping differ in length".into());
        }
        if self.cu_seqlens.len() != self.num_seqs() + 1
            || self.block_tables.len() != self.num_seqs()
        {
            return bad(
                "cu_seqlens, context_lens and block_tables disagree on the number of sequences"
                    .into(),
            );
        }
        if self.cu_seqlens.first() != Some(&0) || self.cu_seqlens.last() != Some(&(n as u32)) {
            return bad("cu_seqlens must start at 0 and end at the number of tokens".into());
        }
        for (i, tok) in self.input_ids.iter().enumerate() {
            if tok.0 as usize >= vocab_size {
                return bad(format!(
                    "token id {} at row {i} is outside the vocabulary of {vocab_size}",
                    tok.0
                ));
            }
        }
        for s in 0..self.num_seqs() {
            let (start, end) = (self.cu_seqlens[s] as usize, self.cu_seqlens[s + 1] as usize);
            let ctx = self.context_lens[s] as usize;
            if end <= start || end - start > ctx {
                return bad(format!(
                    "sequence {s}: {} query rows for a context of {ctx}",
                    end.saturating_sub(start)
                ));
            }
            let table = &self.block_tables[s];
            if table.len() * block_size < ctx {
                return bad(format!(
                    "sequence {s}: {} blocks cannot hold {ctx} tokens",
                    table.len()
                ));
            }
            if let Some(b) = table.iter().find(|b| b.0 as usize >= num_blocks) {
                return bad(format!(
                    "sequence {s}: {b} is outside the cache of {num_blocks} blocks"
                ));
            }
            for (r, row) in (start..end).enumerate() {
                let pos = ctx - (end - start) + r;
                let expect = table[pos / block_size].0 as usize * block_size + pos % block_size;
                if self.positions[row] as usize != pos || self.slot_mapping[row] as usize != expect
                {
                    return bad(format!(
                        "sequence {s}, row {row}: position or slot disagrees with its block table"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_know_their_sequence_and_tables_pad_to_one_width() {
        let (a, b, c) = ([TokenId(1); 5], [TokenId(2)], [TokenId(3); 2]);
        let tables = [
            vec![BlockId(4), BlockId(9)],
            vec![BlockId(7)],
            vec![BlockId(1), BlockId(2), BlockId(3)],
        ];
        let batch = ForwardBatch::from_chunks(
            &[
                SequenceChunk {
                    tokens: &a,
                    num_computed_tokens: 0,
                    block_table: &tables[0],
                },
                SequenceChunk {
                    tokens: &b,
                    num_computed_tokens: 3,
                    block_table: &tables[1],
                },
                SequenceChunk {
                    tokens: &c,
                    num_computed_tokens: 9,
                    block_table: &tables[2],
                },
            ],
            4,
            LogitsRows::All,
        );
        assert_eq!(batch.row_sequences(), [0, 0, 0, 0, 0, 1, 2, 2]);
        let (flat, width) = batch.padded_block_tables();
        assert_eq!(width, 3);
        assert_eq!(flat, [4, 9, 0, 7, 0, 0, 1, 2, 3]);
        let single = ForwardBatch::from_chunks(
            &[SequenceChunk {
                tokens: &b,
                num_computed_tokens: 0,
                block_table: &[],
            }],
            4,
            LogitsRows::All,
        );
        assert_eq!(single.padded_block_tables(), (vec![0], 1));
    }
}
