//! Engine metrics: gauges and counters the engine thread updates each step, and latency
//! histograms, read by anyone holding the handle (the API publishes them).
//!
//! Plain data behind atomics and short-held locks; depends on nothing in the crate. The engine
//! thread is the only writer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds in seconds, from interactive to badly overloaded.
const LATENCY_BOUNDS: [f64; 16] = [
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];
/// Throughput is averaged over this much recent time.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A cumulative histogram with fixed bounds (one count past the last bound).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// `counts[i]` observations fell in `(bounds[i - 1], bounds[i]]`; the last is above all.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn latency() -> Self {
        Self {
            bounds: LATENCY_BOUNDS.to_vec(),
            counts: vec![0; LATENCY_BOUNDS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// The bucket bound at or under which a `q` share of observations fall (an upper estimate).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let target = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }
}

/// A copy of every metric at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub num_waiting: u64,
    pub num_running: u64,
    pub kv_blocks_total: u64,
    pub kv_blocks_used: u64,
    pub kv_blocks_free: u64,
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub requests_finished_total: u64,
    pub preemptions_total: u64,
    pub steps_total: u64,
    /// Tokens computed (prompt and generated) per second over the last few seconds.
    pub tokens_per_sec: f64,
    pub generation_tokens_per_sec: f64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
}

impl MetricsSnapshot {
    /// Hits over lookups, in tokens; 0 before any lookup.
    pub fn prefix_cache_hit_rate(&self) -> f64 {
        if self.prefix_queried_tokens == 0 {
            0.0
        } else {
            self.prefix_hit_tokens as f64 / self.prefix_queried_tokens as f64
        }
    }
}

/// What one step did, as the engine reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepReport {
    pub num_waiting: usize,
    pub num_running: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_used: usize,
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prompt_tokens: usize,
    pub generation_tokens: usize,
    pub num_preempted: usize,
}

#[derive(Debug, Default)]
pub struct EngineMetrics {
    num_waiting: AtomicU64,
    num_running: AtomicU64,
    kv_blocks_total: AtomicU64,
    kv_blocks_used: AtomicU64,
    prefix_queried_tokens: AtomicU64,
    prefix_hit_tokens: AtomicU64,
    prompt_tokens_total: AtomicU64,
    generation_tokens_total: AtomicU64,
    requests_finished_total: AtomicU64,
    preemptions_total: AtomicU64,
    steps_total: AtomicU64,
    latency: Mutex<Latency>,
}

#[derive(Debug)]
struct Latency {
    ttft: Histogram,
    itl: Histogram,
    /// (when, tokens computed, tokens generated) per recent step.
    recent: VecDeque<(Instant, u64, u64)>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            ttft: Histogram::latency(),
            itl: Histogram::latency(),
            recent: VecDeque::new(),
        }
    }
}

impl EngineMetrics {
    /// Publishes the gauges alone (after cancellations, which run no step).
    pub fn record_gauges(&self, r: &StepReport) {
        let set = |a: &AtomicU64, v: usize| a.store(v as u64, Ordering::Relaxed);
        set(&self.num_waiting, r.num_waiting);
        set(&self.num_running, r.num_running);
        set(&self.kv_blocks_total, r.kv_blocks_total);
        set(&self.kv_blocks_used, r.kv_blocks_used);
    }

    pub fn record_step(&self, r: &StepReport) {
        self.record_gauges(r);
        self.prefix_queried_tokens
            .store(r.prefix_queried_tokens, Ordering::Relaxed);
        self.prefix_hit_tokens
            .store(r.prefix_hit_tokens, Ordering::Relaxed);
        let add = |a: &AtomicU64, v: usize| a.fetch_add(v as u64, Ordering::Relaxed);
        add(&self.prompt_tokens_total, r.prompt_tokens);
        add(&self.generation_tokens_total, r.generation_tokens);
        add(&self.preemptions_total, r.num_preempted);
        add(&self.steps_total, 1);
        let now = Instant::now();
        let mut l = self.lock();
        l.recent.push_back((
            now,
            (r.prompt_tokens + r.generation_tokens) as u64,
            r.generation_tokens as u64,
        ));
        while l
            .recent
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            l.recent.pop_front();
        }
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.lock().ttft.observe(d.as_secs_f64());
    }

    pub fn observe_itl(&self, d: Duration) {
        self.lock().itl.observe(d.as_secs_f64());
    }

    pub fn request_finished(&self) {
        self.requests_finished_total.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Latency> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let l = self.lock();
        let (tokens, generated) = l
            .recent
            .iter()
            .fold((0, 0), |(a, b), (_, t, g)| (a + t, b + g));
        let span = match (l.recent.front(), l.recent.back()) {
            (Some(first), Some(_)) => Instant::now().duration_since(first.0).as_secs_f64(),
            _ => 0.0,
        };
        let rate = |n: u64| if span > 0.0 { n as f64 / span } else { 0.0 };
        let total = get(&self.kv_blocks_total);
        let used = get(&self.kv_blocks_used);
        MetricsSnapshot {
            num_waiting: get(&self.num_waiting),
            num_running: get(&self.num_running),
            kv_blocks_total: total,
            kv_blocks_used: used,
            kv_blocks_free: total.saturating_sub(used),
            prefix_queried_tokens: get(&self.prefix_queried_tokens),
            prefix_hit_tokens: get(&self.prefix_hit_tokens),
            prompt_tokens_total: get(&self.prompt_tokens_total),
            generation_tokens_total: get(&self.generation_tokens_total),
            requests_finished_total: get(&self.requests_finished_total),
            preemptions_total: get(&self.preemptions_total),
            steps_total: get(&self.steps_total),
            tokens_per_sec: rate(tokens),
            generation_tokens_per_sec: rate(generated),
            time_to_first_token: l.ttft.clone(),
            inter_token_latency: l.itl.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = Histogram::latency();
        for v in [0.001, 0.05, 0.05, 0.07, 50.0] {
            h.observe(v);
        }
        assert_eq!(h.count, 5);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[4], 2, "0.05 falls in (0.04, 0.06]");
        assert_eq!(h.quantile(0.5), Some(0.06));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
        assert!((h.sum - 50.171).abs() < 1e-9);
    }

    #[test]
    fn steps_add_up_and_hit_rate_divides() {
        let m = EngineMetrics::default();
        for _ in 0..3 {
            m.record_step(&StepReport {
                kv_blocks_total: 10,
                kv_blocks_used: 4,
                prefix_queried_tokens: 100,
                prefix_hit_tokens: 25,
                prompt_tokens: 7,
                generation_tokens: 2,
                ..Default::default()
            });
        }
        let s = m.snapshot();
        assert_eq!(s.prompt_tokens_total, 21);
        assert_eq!(s.generation_tokens_total, 6);
        assert_eq!(s.kv_blocks_free, 6);
        assert_eq!(s.steps_total, 3);
        assert!((s.prefix_cache_hit_rate() - 0.25).abs() < 1e-12);
    }
}
