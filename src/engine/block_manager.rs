//! `BlockManager`: which KV cache block holds which sequence's tokens, with reference counts
//! and a prefix cache.
//!
//! Owns the block tables of every sequence, the free pools and the prefix cache (chained block
//! hashes → blocks). Knows token ids and counts only: no model, no tensors, no requests. The KV
//! memory itself is `model::KvCache`; copies this manager asks for (copy-on-write) are carried
//! out by whoever owns the cache, before the next forward.
//!
//! Invariants (checked by `check_invariants`, property-tested):
//! - every block is either referenced (`ref_count > 0`) or in exactly one free pool, never both,
//!   and free plus used is the total;
//! - a block's reference count equals the number of block tables that hold it;
//! - every prefix-cache entry points at a block that holds exactly the tokens it was hashed
//!   from, after exactly the parent it was chained to;
//! - a block in the plain free pool has no hash; a block in the evictable pool has one.
//!
//! A block is registered in the prefix cache when the step that fills it is scheduled: the
//! model writes every key and value of a step before any attention of that step reads them, so
//! a sequence admitted later in the same step may already count it as computed (two identical
//! prompts in one step share their blocks instead of computing them twice).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::ids::{BlockId, SeqId, TokenId};

/// The hash of a full block's tokens chained to the hash of the block before it, so equal
/// hashes mean equal prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(u64);

impl BlockHash {
    fn of(parent: Option<BlockHash>, tokens: &[TokenId]) -> Self {
        let mut h = DefaultHasher::new();
        parent.map(|p| p.0).hash(&mut h);
        for t in tokens {
            t.0.hash(&mut h);
        }
        Self(h.finish())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockManagerConfig {
    pub num_blocks: usize,
    pub block_size: usize,
    pub enable_prefix_caching: bool,
}

/// Not enough free blocks; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{needed} free KV cache blocks needed, {free} free")]
pub struct NoFreeBlocks {
    pub needed: usize,
    pub free: usize,
}

/// Cached blocks that a new sequence can start from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixHit {
    blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
}

impl PrefixHit {
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// A KV copy to carry out before the next forward: `src`'s slots into `dst`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    pub src: BlockId,
    pub dst: BlockId,
}

#[derive(Debug, Clone, Default)]
struct BlockMeta {
    ref_count: u32,
    /// Set while the block is in the prefix cache, with what it was hashed from.
    cached: Option<CachedContent>,
    /// The position in the evictable pool while `ref_count == 0` and cached.
    lru_tick: Option<u64>,
}

#[derive(Debug, Clone)]
struct CachedContent {
    hash: BlockHash,
    parent: Option<BlockHash>,
    tokens: Vec<TokenId>,
}

/// One sequence's blocks, and the chained hashes of its full blocks (hashes are kept even for
/// blocks that another block already represents in the cache, so the chain continues).
#[derive(Debug, Clone, Default)]
struct SeqBlocks {
    blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
}

/// Totals for metrics: prefix-cache lookups are counted in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockManagerStats {
    pub num_blocks: usize,
    pub num_used_blocks: usize,
    pub num_free_blocks: usize,
    /// Free blocks that still hold a cached prefix (evicted least-recently-used first).
    pub num_evictable_blocks: usize,
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
}

pub struct BlockManager {
    config: BlockManagerConfig,
    blocks: Vec<BlockMeta>,
    /// Free blocks without cached content, reused first.
    free_plain: Vec<BlockId>,
    /// Free blocks with cached content, by the tick at which they were freed.
    evictable: BTreeMap<u64, BlockId>,
    cache: HashMap<BlockHash, BlockId>,
    tables: HashMap<SeqId, SeqBlocks>,
    pending_copies: Vec<BlockCopy>,
    tick: u64,
    queried_tokens: u64,
    hit_tokens: u64,
}

impl BlockManager {
    pub fn new(config: BlockManagerConfig) -> Self {
        Self {
            blocks: vec![BlockMeta::default(); config.num_blocks],
            // Popped from the end: block 0 is handed out first.
            free_plain: (0..config.num_blocks as u32).rev().map(BlockId).collect(),
            evictable: BTreeMap::new(),
            cache: HashMap::new(),
            tables: HashMap::new(),
            pending_copies: Vec::new(),
            tick: 0,
            queried_tokens: 0,
            hit_tokens: 0,
            config,
        }
    }

    pub fn config(&self) -> &BlockManagerConfig {
        &self.config
    }

    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    pub fn num_free_blocks(&self) -> usize {
        self.free_plain.len() + self.evictable.len()
    }

    pub fn capacity_tokens(&self) -> usize {
        self.config.num_blocks * self.config.block_size
    }

    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.tables.get(&seq).map_or(&[], |t| &t.blocks)
    }

    pub fn has_seq(&self, seq: SeqId) -> bool {
        self.tables.contains_key(&seq)
    }

    pub fn num_seqs(&self) -> usize {
        self.tables.len()
    }

    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks[block.0 as usize].ref_count
    }

    pub fn stats(&self) -> BlockManagerStats {
        let free = self.num_free_blocks();
        BlockManagerStats {
            num_blocks: self.config.num_blocks,
            num_used_blocks: self.config.num_blocks - free,
            num_free_blocks: free,
            num_evictable_blocks: self.evictable.len(),
            prefix_queried_tokens: self.queried_tokens,
            prefix_hit_tokens: self.hit_tokens,
        }
    }

    /// The cached full blocks that `tokens` starts with, at most `len - 1` tokens' worth: the
    /// last token is always computed, since its logits are what sampling needs. Changes nothing.
    pub fn lookup_prefix(&self, tokens: &[TokenId]) -> PrefixHit {
        let mut hit = PrefixHit::default();
        if !self.config.enable_prefix_caching || tokens.is_empty() {
            return hit;
        }
        let bs = self.config.block_size;
        let mut parent = None;
        for chunk in tokens[..tokens.len() - 1].chunks_exact(bs) {
            let hash = BlockHash::of(parent, chunk);
            let Some(&block) = self.cache.get(&hash) else {
                break;
            };
            let holds_it = self.blocks[block.0 as usize]
                .cached
                .as_ref()
                .is_some_and(|c| c.parent == parent && c.tokens == chunk);
            if !holds_it {
                break;
            }
            hit.blocks.push(block);
            hit.hashes.push(hash);
            parent = Some(hash);
        }
        hit
    }

    /// Gives `seq` the blocks to compute `tokens[num_computed..num_computed + num_new]` (a new
    /// sequence starts from `hit`, which must come from `lookup_prefix` of the same tokens in
    /// this step, with `num_computed` its length), copying a shared last block before it is
    /// written, and registers in the prefix cache every block that is full once those tokens
    /// are computed. Fails with nothing changed.
    pub fn allocate(
        &mut self,
        seq: SeqId,
        tokens: &[TokenId],
        (num_computed, num_new): (usize, usize),
        hit: Option<&PrefixHit>,
    ) -> Result<(), NoFreeBlocks> {
        let bs = self.config.block_size;
        let num_tokens = num_computed + num_new;
        let is_new = !self.tables.contains_key(&seq);
        let hit_blocks: &[BlockId] = match (is_new, hit) {
            (true, Some(h)) => &h.blocks,
            _ => &[],
        };
        let have = self
            .tables
            .get(&seq)
            .map_or(hit_blocks.len(), |t| t.blocks.len());
        let cow = num_new > 0 && self.shared_block_written(seq, num_computed);
        let needed = num_tokens.div_ceil(bs).saturating_sub(have) + usize::from(cow);
        // Hit blocks waiting in the evictable pool stop being free once taken.
        let revived = hit_blocks
            .iter()
            .filter(|b| self.blocks[b.0 as usize].ref_count == 0)
            .count();
        let free = self.num_free_blocks() - revived;
        if needed > free {
            return Err(NoFreeBlocks { needed, free });
        }
        if is_new {
            let mut table = SeqBlocks::default();
            if let Some(h) = hit.filter(|_| !hit_blocks.is_empty()) {
                for &b in &h.blocks {
                    self.take_ref(b);
                }
                table.blocks = h.blocks.clone();
                table.hashes = h.hashes.clone();
                self.hit_tokens += (h.blocks.len() * bs) as u64;
            }
            if self.config.enable_prefix_caching {
                self.queried_tokens += tokens.len() as u64;
            }
            self.tables.insert(seq, table);
        }
        if cow {
            self.copy_block_at(seq, num_computed / bs);
        }
        for _ in 0..needed - usize::from(cow) {
            let b = self.pop_free();
            if let Some(t) = self.tables.get_mut(&seq) {
                t.blocks.push(b);
            }
        }
        self.register_full_blocks(seq, tokens, num_tokens);
        Ok(())
    }

    /// Whether the next write, at position `num_computed`, lands in a partly filled block that
    /// other sequences share (after a fork).
    fn shared_block_written(&self, seq: SeqId, num_computed: usize) -> bool {
        let bs = self.config.block_size;
        if num_computed.is_multiple_of(bs) {
            return false;
        }
        self.tables
            .get(&seq)
            .and_then(|t| t.blocks.get(num_computed / bs))
            .is_some_and(|b| self.blocks[b.0 as usize].ref_count > 1)
    }

    fn copy_block_at(&mut self, seq: SeqId, index: usize) {
        let dst = self.pop_free();
        let Some(slot) = self
            .tables
            .get_mut(&seq)
            .and_then(|t| t.blocks.get_mut(index))
        else {
            return;
        };
        let src = std::mem::replace(slot, dst);
        self.blocks[src.0 as usize].ref_count -= 1;
        self.pending_copies.push(BlockCopy { src, dst });
    }

    fn register_full_blocks(&mut self, seq: SeqId, tokens: &[TokenId], num_tokens: usize) {
        let bs = self.config.block_size;
        let Some(t) = self.tables.get_mut(&seq) else {
            return;
        };
        let full = (num_tokens.min(tokens.len()) / bs).min(t.blocks.len());
        while t.hashes.len() < full {
            let i = t.hashes.len();
            let parent = t.hashes.last().copied();
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let hash = BlockHash::of(parent, chunk);
            t.hashes.push(hash);
            if !self.config.enable_prefix_caching {
                continue;
            }
            let block = t.blocks[i];
            let meta = &mut self.blocks[block.0 as usize];
            if self.cache.contains_key(&hash) || meta.cached.is_some() {
                // Another block already stands for this prefix; this copy stays private.
                continue;
            }
            meta.cached = Some(CachedContent {
                hash,
                parent,
                tokens: chunk.to_vec(),
            });
            self.cache.insert(hash, block);
        }
    }

    /// Gives `child` the same blocks as `parent` (reference counts up, nothing copied); the
    /// shared last block is copied when either writes into it.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) {
        let Some(t) = self.tables.get(&parent).cloned() else {
            return;
        };
        for &b in &t.blocks {
            self.blocks[b.0 as usize].ref_count += 1;
        }
        self.tables.insert(child, t);
    }

    /// Releases every block of `seq` (finished, cancelled or preempted). Blocks still in the
    /// prefix cache become evictable, the sequence's last blocks first, so a shared prefix
    /// outlives the tails that follow it.
    pub fn free(&mut self, seq: SeqId) {
        let Some(t) = self.tables.remove(&seq) else {
            return;
        };
        for &b in t.blocks.iter().rev() {
            let meta = &mut self.blocks[b.0 as usize];
            meta.ref_count -= 1;
            if meta.ref_count > 0 {
                continue;
            }
            if meta.cached.is_some() {
                self.tick += 1;
                meta.lru_tick = Some(self.tick);
                self.evictable.insert(self.tick, b);
            } else {
                self.free_plain.push(b);
            }
        }
    }

    /// KV copies asked for since the last call, to be done before the next forward.
    pub fn take_copies(&mut self) -> Vec<BlockCopy> {
        std::mem::take(&mut self.pending_copies)
    }

    /// Forgets every cached prefix (after a failed forward, whose blocks hold no valid KV).
    pub fn reset_prefix_cache(&mut self) {
        self.cache.clear();
        for meta in &mut self.blocks {
            meta.cached = None;
            meta.lru_tick = None;
        }
        let evicted: Vec<BlockId> = std::mem::take(&mut self.evictable).into_values().collect();
        self.free_plain.extend(evicted);
    }

    fn take_ref(&mut self, b: BlockId) {
        let meta = &mut self.blocks[b.0 as usize];
        if meta.ref_count == 0 {
            if let Some(tick) = meta.lru_tick.take() {
                self.evictable.remove(&tick);
            }
        }
        meta.ref_count += 1;
    }

    /// A free block, plain ones first; reusing a cached one evicts its prefix-cache entry, so
    /// no stale hash can point at rewritten memory. Callers check that one is free.
    fn pop_free(&mut self) -> BlockId {
        let b = match self.free_plain.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self
                    .evictable
                    .pop_first()
                    .expect("callers check the number of free blocks first");
                let meta = &mut self.blocks[b.0 as usize];
                meta.lru_tick = None;
                if let Some(c) = meta.cached.take() {
                    self.cache.remove(&c.hash);
                }
                b
            }
        };
        self.blocks[b.0 as usize].ref_count = 1;
        b
    }

    /// Checks every invariant in the module doc; `tokens_of` gives a live sequence's tokens.
    pub fn check_invariants(
        &self,
        tokens_of: &dyn Fn(SeqId) -> Option<Vec<TokenId>>,
    ) -> Result<(), String> {
        let n = self.config.num_blocks;
        let mut refs = vec![0u32; n];
        for (seq, t) in &self.tables {
            for &b in &t.blocks {
                refs[b.0 as usize] += 1;
            }
            if let Some(tokens) = tokens_of(*seq) {
                self.check_table_tokens(*seq, t, &tokens)?;
            }
        }
        let mut in_pool = vec![0u8; n];
        for &b in &self.free_plain {
            in_pool[b.0 as usize] += 1;
            if self.blocks[b.0 as usize].cached.is_some() {
                return Err(format!("{b} is in the plain free pool with a hash"));
            }
        }
        for (tick, &b) in &self.evictable {
            in_pool[b.0 as usize] += 1;
            let meta = &self.blocks[b.0 as usize];
            if meta.cached.is_none() || meta.lru_tick != Some(*tick) {
                return Err(format!(
                    "{b} is evictable without a hash or with a stale tick"
                ));
            }
        }
        for (i, meta) in self.blocks.iter().enumerate() {
            if meta.ref_count != refs[i] {
                return Err(format!(
                    "block {i}: ref_count {} but {} tables hold it",
                    meta.ref_count, refs[i]
                ));
            }
            let free = in_pool[i];
            if free > 1 || (free == 1) == (meta.ref_count > 0) {
                return Err(format!(
                    "block {i}: ref_count {} and in {free} free pools",
                    meta.ref_count
                ));
            }
        }
        for (hash, &b) in &self.cache {
            let ok = self.blocks[b.0 as usize]
                .cached
                .as_ref()
                .is_some_and(|c| c.hash == *hash && BlockHash::of(c.parent, &c.tokens) == *hash);
            if !ok {
                return Err(format!("the cache entry for {b} does not match its tokens"));
            }
        }
        Ok(())
    }

    /// Every cached block in a live sequence's table holds that sequence's tokens.
    fn check_table_tokens(
        &self,
        seq: SeqId,
        t: &SeqBlocks,
        tokens: &[TokenId],
    ) -> Result<(), String> {
        let bs = self.config.block_size;
        for (i, &b) in t.blocks.iter().enumerate() {
            if let Some(c) = &self.blocks[b.0 as usize].cached {
                let own = tokens.get(i * bs..(i + 1) * bs);
                if own != Some(&c.tokens[..]) {
                    return Err(format!("{seq}: cached {b} at index {i} holds other tokens"));
                }
            }
        }
        Ok(())
    }
}
