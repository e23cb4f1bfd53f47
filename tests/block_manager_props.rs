//! Property tests of `BlockManager`: random sequences of allocations (with prefix-cache hits
//! and chunked prefill), appends, forks (copy-on-write), frees and preemptions keep every
//! allocator invariant, and the KV memory each sequence reads holds exactly its own tokens.
//!
//! The test keeps its own model: each live sequence's tokens and how many of them are computed,
//! and a model of the KV memory (one token per slot) written the way the forward would write
//! it: requested copies first, then the step's tokens at the slots of the block table.

use std::collections::BTreeMap;

use enclave::engine::block_manager::{
    BlockCopy, BlockManager, BlockManagerConfig, BlockManagerStats, NoFreeBlocks,
};
use enclave::ids::{BlockId, SeqId, TokenId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Prompt openings shared between sequences, so prefix-cache hits are common.
const STEMS: [&[u32]; 3] = [
    &[0, 1, 2, 0, 1, 2, 0, 1],
    &[1, 1, 1, 1, 1, 1, 1, 1],
    &[2, 0, 2, 0, 1],
];

#[derive(Debug, Clone)]
enum Op {
    /// A new sequence: a stem's opening plus a tail, admitted from its prefix hit with at most
    /// `chunk` new tokens.
    Add {
        stem: usize,
        stem_len: usize,
        tail: Vec<u32>,
        chunk: Option<usize>,
    },
    /// A fully computed sequence appends one token and computes it.
    Append {
        pick: usize,
        token: u32,
    },
    /// A sequence with a prompt still to compute computes its next chunk.
    Continue {
        pick: usize,
        chunk: usize,
    },
    /// A fully computed sequence forks; the child appends `token`, then the parent (if
    /// `parent_too`) appends another token.
    Fork {
        pick: usize,
        token: u32,
        parent_too: bool,
    },
    Free {
        pick: usize,
    },
    /// Freed and remembered, to be re-added later with a prefix lookup.
    Preempt {
        pick: usize,
    },
    Readmit {
        pick: usize,
        chunk: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let chunk = prop::option::weighted(0.3, 1usize..6);
    prop_oneof![
        3 => (0..STEMS.len(), 0usize..=8, prop::collection::vec(0u32..3, 0..5), chunk.clone())
            .prop_map(|(stem, stem_len, tail, chunk)| Op::Add { stem, stem_len, tail, chunk }),
        4 => (any::<usize>(), 0u32..3).prop_map(|(pick, token)| Op::Append { pick, token }),
        2 => (any::<usize>(), 1usize..6).prop_map(|(pick, chunk)| Op::Continue { pick, chunk }),
        2 => (any::<usize>(), 0u32..3, any::<bool>())
            .prop_map(|(pick, token, parent_too)| Op::Fork { pick, token, parent_too }),
        1 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Preempt { pick }),
        1 => (any::<usize>(), chunk).prop_map(|(pick, chunk)| Op::Readmit { pick, chunk }),
    ]
}

fn case() -> impl Strategy<Value = (BlockManagerConfig, Vec<Op>)> {
    (
        2usize..=4,
        3usize..=24,
        prop::bool::weighted(0.85),
        prop::collection::vec(op(), 1..60),
    )
        .prop_map(|(block_size, num_blocks, enable_prefix_caching, ops)| {
            let config = BlockManagerConfig {
                num_blocks,
                block_size,
                enable_prefix_caching,
            };
            (config, ops)
        })
}

#[derive(Debug, Clone)]
struct Live {
    tokens: Vec<TokenId>,
    /// Tokens whose KV is in the cache (allocated for and written).
    computed: usize,
}

/// How often each interesting path was taken over all cases, to prove they were exercised.
#[derive(Debug, Default)]
struct Coverage {
    prefix_hits: usize,
    copies: usize,
    alloc_failures: usize,
    readmit_hits: usize,
    chunked: usize,
}

/// Everything an allocation failure must leave untouched.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: BlockManagerStats,
    tables: Vec<(SeqId, Vec<BlockId>)>,
    refs: Vec<u32>,
    num_seqs: usize,
}

struct Harness {
    bm: BlockManager,
    live: BTreeMap<SeqId, Live>,
    preempted: Vec<Vec<TokenId>>,
    next_seq: u64,
    /// The model of the KV memory: the token written at each slot of each block.
    kv: Vec<Vec<Option<TokenId>>>,
    coverage: Coverage,
}

type Check = Result<(), TestCaseError>;

impl Harness {
    fn new(config: BlockManagerConfig) -> Self {
        Self {
            bm: BlockManager::new(config),
            live: BTreeMap::new(),
            preempted: Vec::new(),
            next_seq: 0,
            kv: vec![vec![None; config.block_size]; config.num_blocks],
            coverage: Coverage::default(),
        }
    }

    fn bs(&self) -> usize {
        self.bm.block_size()
    }

    fn num_blocks(&self) -> usize {
        self.bm.config().num_blocks
    }

    fn new_seq(&mut self) -> SeqId {
        self.next_seq += 1;
        SeqId(self.next_seq)
    }

    fn refs(&self) -> Vec<u32> {
        (0..self.num_blocks() as u32)
            .map(|b| self.bm.ref_count(BlockId(b)))
            .collect()
    }

    fn snapshot(&self, extra: SeqId) -> Snapshot {
        let tables = self
            .live
            .keys()
            .chain(std::iter::once(&extra))
            .map(|&s| (s, self.bm.block_table(s).to_vec()))
            .collect();
        Snapshot {
            stats: self.bm.stats(),
            tables,
            refs: self.refs(),
            num_seqs: self.bm.num_seqs(),
        }
    }

    /// The `pick`-th live sequence (modulo) that satisfies `eligible`.
    fn pick(&self, pick: usize, eligible: impl Fn(&Live) -> bool) -> Option<SeqId> {
        let ids: Vec<SeqId> = self
            .live
            .iter()
            .filter(|(_, l)| eligible(l))
            .map(|(s, _)| *s)
            .collect();
        (!ids.is_empty()).then(|| ids[pick % ids.len()])
    }

    fn apply(&mut self, op: &Op) -> Check {
        match op {
            Op::Add {
                stem,
                stem_len,
                tail,
                chunk,
            } => {
                let stem = STEMS[*stem];
                let mut tokens: Vec<TokenId> = stem[..(*stem_len).min(stem.len())]
                    .iter()
                    .chain(tail)
                    .map(|&t| TokenId(t))
                    .collect();
                if tokens.is_empty() {
                    tokens.push(TokenId(0));
                }
                self.add(tokens, *chunk, false)
            }
            Op::Append { pick, token } => {
                let Some(seq) = self.pick(*pick, |l| l.computed == l.tokens.len()) else {
                    return Ok(());
                };
                self.append(seq, TokenId(*token))
            }
            Op::Continue { pick, chunk } => {
                let Some(seq) = self.pick(*pick, |l| l.computed < l.tokens.len()) else {
                    return Ok(());
                };
                let l = &self.live[&seq];
                let num_new = (*chunk).min(l.tokens.len() - l.computed);
                self.extend(seq, num_new)?;
                Ok(())
            }
            Op::Fork {
                pick,
                token,
                parent_too,
            } => {
                let Some(parent) = self.pick(*pick, |l| l.computed == l.tokens.len()) else {
                    return Ok(());
                };
                self.fork(parent, TokenId(*token), *parent_too)
            }
            Op::Free { pick } => {
                let Some(seq) = self.pick(*pick, |_| true) else {
                    return Ok(());
                };
                self.free(seq)?;
                Ok(())
            }
            Op::Preempt { pick } => {
                let Some(seq) = self.pick(*pick, |_| true) else {
                    return Ok(());
                };
                let tokens = self.free(seq)?;
                self.preempted.push(tokens);
                Ok(())
            }
            Op::Readmit { pick, chunk } => {
                if self.preempted.is_empty() {
                    return Ok(());
                }
                let tokens = self.preempted.remove(pick % self.preempted.len());
                self.add(tokens, *chunk, true)
            }
        }
    }

    /// A new sequence: prefix lookup, then `allocate` from the hit.
    fn add(&mut self, tokens: Vec<TokenId>, chunk: Option<usize>, readmit: bool) -> Check {
        let bs = self.bs();
        let seq = self.new_seq();
        let hit = self.bm.lookup_prefix(&tokens);
        let hit_tokens = hit.num_blocks() * bs;
        prop_assert!(
            hit_tokens < tokens.len(),
            "a hit of {} tokens leaves nothing to compute of {}",
            hit_tokens,
            tokens.len()
        );
        if !self.bm.config().enable_prefix_caching {
            prop_assert_eq!(hit.num_blocks(), 0);
        }
        let rest = tokens.len() - hit_tokens;
        let num_new = chunk.map_or(rest, |c| c.min(rest));
        let before = self.snapshot(seq);
        let result = self
            .bm
            .allocate(seq, &tokens, (hit_tokens, num_new), Some(&hit));
        let needed = (hit_tokens + num_new).div_ceil(bs) - hit.num_blocks();
        match result {
            Err(e) => {
                self.coverage.alloc_failures += 1;
                prop_assert_eq!(e.needed, needed);
                self.check_failure_changed_nothing(&before, seq, e)
            }
            Ok(()) => {
                let table = self.bm.block_table(seq).to_vec();
                prop_assert_eq!(table.len(), (hit_tokens + num_new).div_ceil(bs));
                // Hit blocks that were free (evictable) stop being free; the rest are new.
                let revived = table[..hit.num_blocks()]
                    .iter()
                    .filter(|b| before.refs[b.0 as usize] == 0)
                    .count();
                prop_assert_eq!(
                    self.bm.num_free_blocks(),
                    before.stats.num_free_blocks - needed - revived
                );
                for b in &table[hit.num_blocks()..] {
                    prop_assert_eq!(before.refs[b.0 as usize], 0, "{} was not free", b);
                }
                prop_assert!(
                    self.bm.take_copies().is_empty(),
                    "a new sequence copies nothing"
                );
                if hit.num_blocks() > 0 {
                    self.coverage.prefix_hits += 1;
                    if readmit {
                        self.coverage.readmit_hits += 1;
                    }
                }
                if num_new < rest {
                    self.coverage.chunked += 1;
                }
                self.live.insert(
                    seq,
                    Live {
                        tokens,
                        computed: hit_tokens,
                    },
                );
                self.write(seq, hit_tokens + num_new, &[])
            }
        }
    }

    /// Appends one token to a fully computed sequence and computes it; on failure the token
    /// is dropped again.
    fn append(&mut self, seq: SeqId, token: TokenId) -> Check {
        if let Some(l) = self.live.get_mut(&seq) {
            l.tokens.push(token);
        }
        let ok = self.extend(seq, 1)?;
        if !ok {
            if let Some(l) = self.live.get_mut(&seq) {
                l.tokens.pop();
            }
        }
        Ok(())
    }

    /// `allocate` for an existing sequence's next `num_new` tokens, checked against the
    /// expected number of blocks and copy-on-write. Returns whether it succeeded.
    fn extend(&mut self, seq: SeqId, num_new: usize) -> Result<bool, TestCaseError> {
        let bs = self.bs();
        let l = self.live[&seq].clone();
        let old_table = self.bm.block_table(seq).to_vec();
        let c = l.computed;
        let shared = old_table.get(c / bs).copied();
        let cow = num_new > 0
            && !c.is_multiple_of(bs)
            && shared.is_some_and(|b| self.bm.ref_count(b) > 1);
        let needed = (c + num_new).div_ceil(bs).saturating_sub(old_table.len()) + usize::from(cow);
        let before = self.snapshot(seq);
        let result = self.bm.allocate(seq, &l.tokens, (c, num_new), None);
        match result {
            Err(e) => {
                self.coverage.alloc_failures += 1;
                prop_assert!(needed > before.stats.num_free_blocks, "spurious failure");
                prop_assert_eq!(e.needed, needed);
                self.check_failure_changed_nothing(&before, seq, e)?;
                Ok(false)
            }
            Ok(()) => {
                prop_assert!(
                    needed <= before.stats.num_free_blocks,
                    "allocated without blocks"
                );
                prop_assert_eq!(
                    self.bm.num_free_blocks(),
                    before.stats.num_free_blocks - needed
                );
                let table = self.bm.block_table(seq).to_vec();
                prop_assert_eq!(table.len(), old_table.len().max((c + num_new).div_ceil(bs)));
                let copies = self.bm.take_copies();
                if cow {
                    self.coverage.copies += 1;
                    let i = c / bs;
                    prop_assert_eq!(
                        &copies,
                        &vec![BlockCopy {
                            src: old_table[i],
                            dst: table[i]
                        }]
                    );
                    prop_assert_ne!(old_table[i], table[i]);
                    // The copy now belongs to the writer alone; the original stays with the
                    // other sharers.
                    prop_assert_eq!(self.bm.ref_count(table[i]), 1);
                    prop_assert!(self.bm.ref_count(old_table[i]) >= 1);
                    prop_assert_eq!(&table[..i], &old_table[..i]);
                    prop_assert_eq!(&table[i + 1..old_table.len()], &old_table[i + 1..]);
                } else {
                    prop_assert!(copies.is_empty(), "unexpected copies {:?}", copies);
                    prop_assert_eq!(&table[..old_table.len()], &old_table[..]);
                }
                self.write(seq, c + num_new, &copies)?;
                Ok(true)
            }
        }
    }

    fn fork(&mut self, parent: SeqId, token: TokenId, parent_too: bool) -> Check {
        let child = self.new_seq();
        let before = self.refs();
        let free_before = self.bm.num_free_blocks();
        self.bm.fork(parent, child);
        let table = self.bm.block_table(parent).to_vec();
        prop_assert_eq!(self.bm.block_table(child), &table[..]);
        prop_assert_eq!(self.bm.num_free_blocks(), free_before);
        let mut expected = before;
        for b in &table {
            expected[b.0 as usize] += 1;
        }
        prop_assert_eq!(self.refs(), expected);
        let l = self.live[&parent].clone();
        self.live.insert(child, l);
        self.check()?;
        self.append(child, token)?;
        self.check()?;
        if parent_too {
            self.append(parent, TokenId((token.0 + 1) % 3))?;
        }
        Ok(())
    }

    /// Frees a sequence and returns its tokens.
    fn free(&mut self, seq: SeqId) -> Result<Vec<TokenId>, TestCaseError> {
        let table = self.bm.block_table(seq).to_vec();
        let mut expected = self.refs();
        for b in &table {
            expected[b.0 as usize] -= 1;
        }
        let released = {
            let mut r: Vec<BlockId> = table
                .iter()
                .copied()
                .filter(|b| expected[b.0 as usize] == 0)
                .collect();
            r.sort();
            r.dedup();
            r.len()
        };
        let free_before = self.bm.num_free_blocks();
        self.bm.free(seq);
        prop_assert!(!self.bm.has_seq(seq));
        prop_assert_eq!(self.refs(), expected);
        prop_assert_eq!(self.bm.num_free_blocks(), free_before + released);
        Ok(self.live.remove(&seq).map(|l| l.tokens).unwrap_or_default())
    }

    fn check_failure_changed_nothing(
        &mut self,
        before: &Snapshot,
        seq: SeqId,
        e: NoFreeBlocks,
    ) -> Check {
        prop_assert!(e.needed > e.free, "{:?}", e);
        prop_assert!(e.free <= before.stats.num_free_blocks);
        prop_assert_eq!(
            &self.snapshot(seq),
            before,
            "a failed allocation changed state"
        );
        prop_assert!(self.bm.take_copies().is_empty());
        Ok(())
    }

    /// The forward of one step: the requested copies, then `seq`'s tokens up to `to` written
    /// at its slots. Nobody else may hold a block that is written.
    fn write(&mut self, seq: SeqId, to: usize, copies: &[BlockCopy]) -> Check {
        let bs = self.bs();
        for c in copies {
            self.kv[c.dst.0 as usize] = self.kv[c.src.0 as usize].clone();
        }
        let table = self.bm.block_table(seq).to_vec();
        let l = self.live.get_mut(&seq).expect("live");
        for p in l.computed..to {
            let b = table[p / bs];
            prop_assert_eq!(
                self.bm.ref_count(b),
                1,
                "{} writes position {} into shared {}",
                seq,
                p,
                b
            );
            self.kv[b.0 as usize][p % bs] = Some(l.tokens[p]);
        }
        l.computed = to;
        Ok(())
    }

    /// Every invariant, checked after every operation.
    fn check(&self) -> Check {
        let bs = self.bs();
        let n = self.num_blocks();
        let tokens_of = |s: SeqId| self.live.get(&s).map(|l| l.tokens.clone());
        if let Err(e) = self.bm.check_invariants(&tokens_of) {
            return Err(TestCaseError::fail(e));
        }
        let stats = self.bm.stats();
        prop_assert_eq!(stats.num_blocks, n);
        prop_assert_eq!(stats.num_free_blocks + stats.num_used_blocks, n);
        prop_assert!(stats.num_evictable_blocks <= stats.num_free_blocks);
        if !self.bm.config().enable_prefix_caching {
            prop_assert_eq!(stats.num_evictable_blocks, 0);
        }
        prop_assert_eq!(self.bm.num_seqs(), self.live.len());
        // Reference counts are the number of tables holding each block.
        let mut holders = vec![0u32; n];
        for (seq, l) in &self.live {
            let table = self.bm.block_table(*seq);
            prop_assert_eq!(table.len(), l.computed.div_ceil(bs), "{} table length", seq);
            for b in table {
                holders[b.0 as usize] += 1;
            }
        }
        prop_assert_eq!(self.refs(), holders.clone());
        // A block is free exactly when nobody references it.
        let referenced = holders.iter().filter(|&&h| h > 0).count();
        prop_assert_eq!(stats.num_used_blocks, referenced);
        // What each sequence would attend to is its own tokens (prefix hits and copies
        // included).
        for (seq, l) in &self.live {
            let table = self.bm.block_table(*seq);
            for p in 0..l.computed {
                let slot = self.kv[table[p / bs].0 as usize][p % bs];
                prop_assert_eq!(
                    slot,
                    Some(l.tokens[p]),
                    "{} reads the wrong KV at position {}",
                    seq,
                    p
                );
            }
        }
        Ok(())
    }

    /// Frees everything: nothing stays referenced and every block is free again.
    fn drain(&mut self) -> Check {
        let seqs: Vec<SeqId> = self.live.keys().copied().collect();
        for seq in seqs {
            self.free(seq)?;
            self.check()?;
        }
        prop_assert!(self.refs().iter().all(|&r| r == 0));
        let stats = self.bm.stats();
        prop_assert_eq!(stats.num_used_blocks, 0);
        prop_assert_eq!(stats.num_free_blocks, self.num_blocks());
        prop_assert_eq!(self.bm.num_free_blocks(), self.num_blocks());
        prop_assert_eq!(self.bm.num_seqs(), 0);
        prop_assert!(self.bm.take_copies().is_empty());
        Ok(())
    }
}

#[test]
fn block_manager_invariants_hold_under_random_operations() {
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    let total = std::cell::RefCell::new(Coverage::default());
    let result = runner.run(&case(), |(config, ops)| {
        let mut h = Harness::new(config);
        for op in &ops {
            h.apply(op)?;
            h.check()?;
        }
        h.drain()?;
        let mut t = total.borrow_mut();
        t.prefix_hits += h.coverage.prefix_hits;
        t.copies += h.coverage.copies;
        t.alloc_failures += h.coverage.alloc_failures;
        t.readmit_hits += h.coverage.readmit_hits;
        t.chunked += h.coverage.chunked;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The interesting paths were all taken, many times.
    let t = total.into_inner();
    assert!(t.prefix_hits > 100, "{t:?}");
    assert!(t.copies > 50, "{t:?}");
    assert!(t.alloc_failures > 50, "{t:?}");
    assert!(t.readmit_hits > 10, "{t:?}");
    assert!(t.chunked > 50, "{t:?}");
}
