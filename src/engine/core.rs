//! The engine thread: one per loaded model, sole owner of the model, its KV cache, the
//! scheduler and every sequence's sampler.
//!
//! Each iteration: take new commands (submissions, cancellations) → `schedule()` → copy shared
//! blocks that are about to be written → one `model.forward` for the whole step → sample every
//! sequence whose chunk reached its end → `update` → one event per token to its request. A
//! request whose receiver is gone is aborted and its blocks freed at once. Talks to the outside
//! only through the channels in `handle`; must not depend on any serving layer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use rayon::prelude::*;
use tokio::sync::mpsc as events;

use super::block_manager::BlockManagerConfig;
use super::error::EngineError;
use super::handle::{
    Cancel, EngineEvent, EngineHandle, EngineLimits, RequestId, Submission, TokenOutput,
};
use super::kv_budget::{self, KvCacheMemory};
use super::metrics::{EngineMetrics, StepReport};
use super::runner::build_batch;
use super::sampler::{SampledToken, Sampler};
use super::scheduler::{SampleResult, ScheduleOutput, Scheduler, SchedulerConfig, SeqUpdate};
use super::sequence::{FinishReason, Sequence, SequenceLimits};
use crate::ids::{SeqId, TokenId};
use crate::model::{CausalLm, DeviceSpec, KvCache, KvDtype};

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub max_num_seqs: usize,
    /// The token budget of one step, shared by prefill chunks and decodes.
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub kv_cache_memory: KvCacheMemory,
    /// Where the model is loaded and run.
    pub device: DeviceSpec,
    /// On a GPU, the share of its memory the engine may fill (weights, activations and KV).
    pub gpu_memory_utilization: f64,
    pub kv_dtype: KvDtype,
    pub enable_prefix_caching: bool,
    /// Requests allowed to wait for admission before new ones get `Overloaded`.
    pub max_queue_len: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 64,
            max_num_batched_tokens: 512,
            block_size: 16,
            kv_cache_memory: KvCacheMemory::default(),
            device: DeviceSpec::Cpu,
            gpu_memory_utilization: 0.9,
            kv_dtype: KvDtype::Bf16,
            enable_prefix_caching: true,
            max_queue_len: 1024,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::Config(m));
        if self.block_size == 0 || self.max_num_seqs == 0 || self.max_queue_len == 0 {
            return bad("block_size, max_num_seqs and max_queue_len must be positive".into());
        }
        if !(self.gpu_memory_utilization > 0.0 && self.gpu_memory_utilization <= 1.0) {
            return bad(format!(
                "--gpu-memory-utilization must be in (0, 1], got {}",
                self.gpu_memory_utilization
            ));
        }
        if self.max_num_batched_tokens < self.max_num_seqs {
            return bad(format!(
                "max_num_batched_tokens ({}) must be at least max_num_seqs ({}), so every running sequence can decode in every step",
                self.max_num_batched_tokens, self.max_num_seqs
            ));
        }
        Ok(())
    }
}

/// GPU bytes one step's activations may need at most, kept out of the KV cache: the widest
/// intermediates of a full token budget (bf16, a few alive at once), the logits of every
/// running sequence (bf16 and f32), and cuBLAS's workspace.
fn activation_reserve(mc: &crate::model::ModelConfig, config: &EngineConfig) -> u64 {
    let qkv = (mc.num_attention_heads + 2 * mc.num_key_value_heads) * mc.head_dim;
    let per_token = 2 * (6 * mc.hidden_size + 2 * qkv + 3 * mc.intermediate_size);
    let logits = config.max_num_seqs * mc.vocab_size * (2 + 4);
    const WORKSPACE: usize = 256 << 20;
    (config.max_num_batched_tokens * per_token + logits + WORKSPACE) as u64
}

/// Starts the engine thread for `model` and returns its handle. `eos_token_ids` end a sequence
/// unless its request ignores them.
pub fn spawn_engine(
    model: Box<dyn CausalLm>,
    config: EngineConfig,
    eos_token_ids: Vec<TokenId>,
) -> Result<EngineHandle, EngineError> {
    config.validate()?;
    let mc = model.config().clone();
    let bytes_per_block = model
        .kv_cache_spec(1, config.block_size, config.kv_dtype)
        .bytes_per_block();
    let max_useful = (config.max_num_seqs * mc.max_position_embeddings).div_ceil(config.block_size);
    let device = model.device();
    let memory = match crate::model::device::free_and_total(&device)? {
        Some((free, total)) => {
            let gpu = kv_budget::GpuMemory { total, free };
            let reserve = activation_reserve(&mc, &config);
            KvCacheMemory::Bytes(kv_budget::gpu_kv_bytes(
                config.kv_cache_memory,
                gpu,
                config.gpu_memory_utilization,
                reserve,
            )?)
        }
        None => config.kv_cache_memory,
    };
    let num_blocks = kv_budget::num_blocks(
        memory,
        bytes_per_block,
        kv_budget::available_memory(),
        max_useful,
    )?;
    let mut kv = KvCache::new_on(
        model.kv_cache_spec(num_blocks, config.block_size, config.kv_dtype),
        &device,
    )?;
    kv.commit();
    let capacity = num_blocks * config.block_size;
    tracing::info!(
        num_blocks,
        capacity_tokens = capacity,
        bytes = num_blocks * bytes_per_block,
        full_context_seqs = format!("{:.1}", capacity as f64 / mc.max_position_embeddings as f64),
        "KV cache ready"
    );
    let scheduler = Scheduler::new(
        SchedulerConfig {
            max_num_seqs: config.max_num_seqs,
            max_num_batched_tokens: config.max_num_batched_tokens,
        },
        BlockManagerConfig {
            num_blocks,
            block_size: config.block_size,
            enable_prefix_caching: config.enable_prefix_caching,
        },
    );
    let (submit_tx, submit_rx) = mpsc::sync_channel(config.max_queue_len);
    let (cancel_tx, cancel_rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(EngineMetrics::default());
    let limits = EngineLimits {
        max_context: mc.max_position_embeddings,
        vocab_size: mc.vocab_size,
        kv_capacity_tokens: capacity,
        max_queue_len: config.max_queue_len,
        max_num_seqs: config.max_num_seqs,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("engine-worker-{i}"))
        .build()
        .map_err(|e| EngineError::Config(format!("cannot start the engine's threads: {e}")))?;
    let core = EngineCore {
        pool: Arc::new(pool),
        model,
        kv,
        scheduler,
        eos_token_ids,
        vocab_size: mc.vocab_size,
        requests: HashMap::new(),
        seqs: HashMap::new(),
        next_seq: 0,
        queued: queued.clone(),
        metrics: metrics.clone(),
        submit_rx,
        cancel_rx,
    };
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || core.run())
        .map_err(|e| EngineError::Config(format!("cannot start the engine thread: {e}")))?;
    Ok(EngineHandle::new(
        submit_tx, cancel_tx, queued, limits, metrics,
    ))
}

struct RequestState {
    events: events::UnboundedSender<EngineEvent>,
    /// The sequence of each sample, once it exists and until it finishes.
    samples: Vec<Option<SeqId>>,
    /// Samples not yet finished or cancelled.
    open: Vec<bool>,
    arrived: Instant,
    admitted: bool,
    first_token: bool,
}

struct SeqState {
    request: RequestId,
    index: usize,
    /// Taken out while the step samples in parallel.
    sampler: Option<Sampler>,
    last_token_at: Option<Instant>,
}

struct EngineCore {
    /// Every step runs inside this pool: the serial parts of a step then run on one of its
    /// workers, instead of on a third thread that competes with idle workers still spinning.
    pool: Arc<rayon::ThreadPool>,
    model: Box<dyn CausalLm>,
    kv: KvCache,
    scheduler: Scheduler,
    eos_token_ids: Vec<TokenId>,
    vocab_size: usize,
    requests: HashMap<RequestId, RequestState>,
    seqs: HashMap<SeqId, SeqState>,
    next_seq: u64,
    queued: Arc<AtomicUsize>,
    metrics: Arc<EngineMetrics>,
    submit_rx: mpsc::Receiver<Submission>,
    cancel_rx: mpsc::Receiver<Cancel>,
}

/// One sequence's sampling work in a step: its logits row, its sampler, and the samplers of
/// the extra samples it forks into.
struct SampleJob {
    row: usize,
    seq: SeqId,
    sampler: Sampler,
    forks: Vec<(SeqId, Sampler)>,
    out: Vec<SampledToken>,
}

impl EngineCore {
    fn run(mut self) {
        while self.take_commands() {
            if !self.scheduler.is_idle() {
                let pool = self.pool.clone();
                pool.install(|| self.step());
                if self.scheduler.is_idle() {
                    crate::model::cpu::tuning::release_free_memory();
                }
            }
        }
        tracing::debug!("engine stopped: every handle is gone");
    }

    /// Takes every pending command; blocks while there is nothing to do. False once every
    /// handle is gone and the work is done.
    fn take_commands(&mut self) -> bool {
        loop {
            let mut cancelled = false;
            while let Ok(c) = self.cancel_rx.try_recv() {
                self.cancel(c);
                cancelled = true;
            }
            if cancelled {
                self.publish_gauges();
            }
            let next = if self.scheduler.is_idle() {
                match self.submit_rx.recv() {
                    Ok(s) => s,
                    Err(_) => return false,
                }
            } else {
                match self.submit_rx.try_recv() {
                    Ok(s) => s,
                    Err(_) => return true,
                }
            };
            self.submit(next);
        }
    }

    fn new_seq_id(&mut self) -> SeqId {
        self.next_seq += 1;
        SeqId(self.next_seq)
    }

    fn submit(&mut self, s: Submission) {
        let r = s.request;
        let sampler = match Sampler::new(r.sampling.clone(), &r.prompt, 0, self.vocab_size) {
            Ok(x) => x.with_grammar(s.grammar),
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                let _ = s.events.send(EngineEvent::Failed(e.to_string()));
                return;
            }
        };
        let mut stop_token_ids = r.stop_token_ids.clone();
        if !r.ignore_eos {
            stop_token_ids.extend(&self.eos_token_ids);
        }
        let id = self.new_seq_id();
        let mut seq = Sequence::new(
            id,
            r.prompt,
            SequenceLimits {
                max_tokens: s.max_tokens,
                stop_token_ids,
            },
        );
        seq.num_seats = r.n;
        let mut samples = vec![None; r.n];
        samples[0] = Some(id);
        self.requests.insert(
            s.id,
            RequestState {
                events: s.events,
                samples,
                open: vec![true; r.n],
                arrived: Instant::now(),
                admitted: false,
                first_token: false,
            },
        );
        self.seqs.insert(
            id,
            SeqState {
                request: s.id,
                index: 0,
                sampler: Some(sampler),
                last_token_at: None,
            },
        );
        self.scheduler.add(seq);
    }

    fn cancel(&mut self, c: Cancel) {
        let (request, only) = match c {
            Cancel::Request(r) => (r, None),
            Cancel::Sample(r, i) => (r, Some(i)),
        };
        let Some(state) = self.requests.get_mut(&request) else {
            return;
        };
        let mut ended = Vec::new();
        for (i, (slot, open)) in state.samples.iter_mut().zip(&mut state.open).enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            // A sample that has not forked yet is closed too: it will never be created.
            *open = false;
            if let Some(seq) = slot.take() {
                ended.push(seq);
            }
        }
        let whole = !state.open.iter().any(|o| *o);
        for seq in ended {
            self.scheduler.abort(seq);
            self.seqs.remove(&seq);
        }
        if whole {
            self.end_request(request);
        }
    }

    /// Forgets a request whose samples are all done or cancelled, including any sequence
    /// still running for it.
    fn end_request(&mut self, request: RequestId) {
        let Some(state) = self.requests.remove(&request) else {
            return;
        };
        if !state.admitted {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        for seq in state.samples.into_iter().flatten() {
            self.scheduler.abort(seq);
            self.seqs.remove(&seq);
        }
        self.metrics.request_finished();
    }

    fn step(&mut self) {
        let out = self.scheduler.schedule();
        for &(seq, reason) in &out.finished {
            tracing::warn!(%seq, "the KV cache cannot hold this sequence even alone; ending it");
            self.finish_sample(seq, reason);
        }
        self.note_admissions(&out);
        if out.seqs.is_empty() {
            self.report(&out, 0);
            return;
        }
        match self.forward(&out) {
            Ok(logits) => {
                let results = self.sample(&out, &logits);
                let generated = results.iter().map(|(r, _)| 1 + r.forks.len()).sum();
                let plain: Vec<SampleResult> = results.iter().map(|(r, _)| r.clone()).collect();
                let updates = self.scheduler.update(&out, &plain);
                let tokens: HashMap<SeqId, SampledToken> =
                    results.into_iter().flat_map(|(_, t)| t).collect();
                self.emit(&updates, tokens);
                self.report(&out, generated);
            }
            Err(e) => self.fail_step(&out, &e),
        }
    }

    fn note_admissions(&mut self, out: &ScheduleOutput) {
        for s in &out.seqs {
            let Some(st) = self.seqs.get(&s.seq_id) else {
                continue;
            };
            let Some(req) = self.requests.get_mut(&st.request) else {
                continue;
            };
            if !req.admitted {
                req.admitted = true;
                self.queued.fetch_sub(1, Ordering::SeqCst);
                let cached = self
                    .scheduler
                    .sequence(s.seq_id)
                    .and_then(|q| q.num_cached_tokens)
                    .unwrap_or(0);
                let _ = req.events.send(EngineEvent::Admitted {
                    num_cached_tokens: cached,
                });
            }
        }
    }

    /// Copies shared blocks about to be written, then runs the model: one row of logits per
    /// scheduled sequence, flattened.
    fn forward(&mut self, out: &ScheduleOutput) -> Result<Vec<f32>, EngineError> {
        for c in &out.block_copies {
            self.kv.copy_block(c.src.0 as usize, c.dst.0 as usize)?;
        }
        let batch = build_batch(&self.scheduler, out);
        let logits = self.model.forward(&batch, &mut self.kv)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Samples every sequence whose chunk reached its end, in parallel; a prompt with n
    /// samples forks n - 1 more sequences from the same logits.
    fn sample(
        &mut self,
        out: &ScheduleOutput,
        logits: &[f32],
    ) -> Vec<(SampleResult, Vec<(SeqId, SampledToken)>)> {
        let vocab = logits.len() / out.seqs.len().max(1);
        let mut jobs = Vec::new();
        for (row, s) in out.seqs.iter().enumerate().filter(|(_, s)| s.samples) {
            let seats = self.scheduler.sequence(s.seq_id).map_or(1, |q| q.num_seats);
            let Some(sampler) = self
                .seqs
                .get_mut(&s.seq_id)
                .and_then(|st| st.sampler.take())
            else {
                continue;
            };
            let forks = (1..seats)
                .map(|i| (self.new_seq_id(), sampler.fork(i as u64)))
                .collect();
            jobs.push(SampleJob {
                row,
                seq: s.seq_id,
                sampler,
                forks,
                out: Vec::new(),
            });
        }
        jobs.par_iter_mut().for_each(|j| {
            let row = &logits[j.row * vocab..(j.row + 1) * vocab];
            j.out.push(j.sampler.sample(row));
            for (_, f) in &mut j.forks {
                j.out.push(f.sample(row));
            }
        });
        jobs.into_iter().map(|j| self.adopt_samplers(j)).collect()
    }

    /// Puts a job's samplers back in their sequences' state (creating it for new forks).
    fn adopt_samplers(&mut self, j: SampleJob) -> (SampleResult, Vec<(SeqId, SampledToken)>) {
        let mut tokens = j.out.into_iter();
        let first = tokens.next();
        let request = self.seqs.get(&j.seq).map(|st| st.request);
        if let Some(st) = self.seqs.get_mut(&j.seq) {
            st.sampler = Some(j.sampler);
        }
        let mut result = SampleResult {
            seq_id: j.seq,
            token: first.as_ref().map_or(TokenId(0), |t| t.token),
            forks: Vec::new(),
        };
        let mut sampled = Vec::new();
        if let Some(t) = first {
            sampled.push((j.seq, t));
        }
        for (i, ((child, sampler), t)) in j.forks.into_iter().zip(tokens).enumerate() {
            let Some(request) = request else { break };
            let index = i + 1;
            let Some(req) = self.requests.get_mut(&request) else {
                break;
            };
            // A sample cancelled before it existed is never created.
            if !req.open.get(index).copied().unwrap_or(false) {
                continue;
            }
            req.samples[index] = Some(child);
            self.seqs.insert(
                child,
                SeqState {
                    request,
                    index,
                    sampler: Some(sampler),
                    last_token_at: None,
                },
            );
            result.forks.push((child, t.token));
            sampled.push((child, t));
        }
        (result, sampled)
    }

    fn emit(&mut self, updates: &[SeqUpdate], mut tokens: HashMap<SeqId, SampledToken>) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for u in updates {
            let Some(st) = self.seqs.get_mut(&u.seq_id) else {
                continue;
            };
            let Some(req) = self.requests.get_mut(&st.request) else {
                continue;
            };
            if !req.first_token {
                req.first_token = true;
                self.metrics.observe_ttft(now.duration_since(req.arrived));
            }
            if let Some(prev) = st.last_token_at.replace(now) {
                self.metrics.observe_itl(now.duration_since(prev));
            }
            let t = tokens.remove(&u.seq_id);
            let event = EngineEvent::Token(TokenOutput {
                index: st.index,
                token: u.token,
                logprob: t.as_ref().and_then(|t| t.logprob),
                top_logprobs: t.map(|t| t.top_logprobs).unwrap_or_default(),
            });
            if req.events.send(event).is_err() {
                gone.push(st.request);
                continue;
            }
            if let Some(reason) = u.finished {
                self.finish_sample(u.seq_id, reason);
            }
        }
        for r in gone {
            self.end_request(r);
        }
    }

    /// Sends the end of one sample; the scheduler has already let go of the sequence.
    fn finish_sample(&mut self, seq: SeqId, reason: FinishReason) {
        self.scheduler.abort(seq);
        let Some(st) = self.seqs.remove(&seq) else {
            return;
        };
        let Some(req) = self.requests.get_mut(&st.request) else {
            return;
        };
        if let Some(slot) = req.samples.get_mut(st.index) {
            *slot = None;
        }
        if let Some(open) = req.open.get_mut(st.index) {
            *open = false;
        }
        let _ = req.events.send(EngineEvent::Finished {
            index: st.index,
            reason,
        });
        if !req.open.iter().any(|o| *o) {
            self.end_request(st.request);
        }
    }

    /// A failed forward leaves the step's KV writes unknown: every request in it fails, and
    /// the prefix cache (which may point at those blocks) is forgotten.
    fn fail_step(&mut self, out: &ScheduleOutput, e: &EngineError) {
        tracing::error!(error = %e, "forward failed");
        let requests: Vec<RequestId> = out
            .seqs
            .iter()
            .filter_map(|s| self.seqs.get(&s.seq_id).map(|st| st.request))
            .collect();
        for r in requests {
            if let Some(req) = self.requests.get(&r) {
                let _ = req.events.send(EngineEvent::Failed(e.to_string()));
            }
            self.end_request(r);
        }
        self.scheduler.block_manager_mut().reset_prefix_cache();
    }

    /// The scheduler's and block manager's current state, with no step counted.
    fn state_report(&self) -> StepReport {
        let stats = self.scheduler.block_manager().stats();
        StepReport {
            num_waiting: self.scheduler.num_waiting(),
            num_running: self.scheduler.num_running(),
            kv_blocks_total: stats.num_blocks,
            kv_blocks_used: stats.num_used_blocks,
            prefix_queried_tokens: stats.prefix_queried_tokens,
            prefix_hit_tokens: stats.prefix_hit_tokens,
            ..Default::default()
        }
    }

    fn publish_gauges(&self) {
        self.metrics.record_gauges(&self.state_report());
    }

    fn report(&self, out: &ScheduleOutput, generated: usize) {
        let decode_rows = out
            .seqs
            .iter()
            .filter(|s| {
                s.num_scheduled_tokens == 1
                    && self
                        .scheduler
                        .sequence(s.seq_id)
                        .is_none_or(|q| s.num_computed_tokens >= q.prompt_len())
            })
            .count();
        self.metrics.record_step(&StepReport {
            prompt_tokens: out.num_batched_tokens.saturating_sub(decode_rows),
            generation_tokens: generated,
            num_preempted: out.preempted.len(),
            ..self.state_report()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activation_reserve_grows_with_the_token_budget_and_the_batch() {
        let text = r#"{"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "max_position_embeddings": 131072}"#;
        let mc =
            crate::model::ModelConfig::from_json_str(text, std::path::Path::new("config.json"))
                .expect("a Llama-3.1-8B config");
        let base = EngineConfig {
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            ..EngineConfig::default()
        };
        let reserve = activation_reserve(&mc, &base);
        // 8192 tokens of the widest intermediates (bf16) plus 256 rows of logits.
        let per_token = 2 * (6 * 4096 + 2 * 6144 + 3 * 14336);
        let logits = 256 * 128_256 * 6;
        assert_eq!(reserve, (8192 * per_token + logits + (256 << 20)) as u64);
        assert!(
            reserve < 4 << 30,
            "a reserve of {reserve} bytes would starve the cache"
        );
        let smaller = EngineConfig {
            max_num_batched_tokens: 512,
            max_num_seqs: 16,
            ..base
        };
        assert!(activation_reserve(&mc, &smaller) < reserve);
    }
}
