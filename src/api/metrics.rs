//! `/metrics`: the server's counters in Prometheus text format. The HTTP layer counts requests
//! by route and status and times whole requests; each engine contributes its own token counts,
//! latency histograms, queue depth, running sequences, KV usage and prefix-cache hit rate.
//!
//! Labels carry route templates and model ids only, never request content.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::state::AppState;
use crate::engine::metrics::Histogram;

#[derive(Debug, Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// End-to-end time of generation requests, by model.
    e2e: Mutex<BTreeMap<String, Histogram>>,
}

impl ApiMetrics {
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    pub fn observe_e2e(&self, model: &str, d: Duration) {
        if let Ok(mut m) = self.e2e.lock() {
            m.entry(model.to_string())
                .or_insert_with(Histogram::latency)
                .observe(d.as_secs_f64());
        }
    }
}

/// Label values are model ids and route templates, but escape anyway so that no id can break
/// the format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header_lines(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c;
        let le = h
            .bounds
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// A per-model metric: name, type, help, and how to read it from a snapshot.
type Scalar = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::engine::MetricsSnapshot) -> f64,
);

/// The whole exposition.
pub fn render(state: &AppState) -> String {
    let inner = &state.inner;
    let mut out = String::new();
    header_lines(
        &mut out,
        "enclave_requests_total",
        "counter",
        "HTTP requests by route and status code.",
    );
    if let Ok(m) = inner.metrics.requests.lock() {
        for ((route, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "enclave_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
    }
    let models = state
        .registry()
        .map(|r| r.list.as_slice())
        .unwrap_or_default();
    let snapshots: Vec<_> = models
        .iter()
        .map(|m| (format!("model=\"{}\"", label(&m.id)), m.handle.metrics()))
        .collect();
    let scalars: [Scalar; 9] = [
        (
            "enclave_prompt_tokens_total",
            "counter",
            "Prompt tokens computed (prefix-cache hits excluded).",
            |s| s.prompt_tokens_total as f64,
        ),
        (
            "enclave_generation_tokens_total",
            "counter",
            "Tokens generated.",
            |s| s.generation_tokens_total as f64,
        ),
        (
            "enclave_requests_finished_total",
            "counter",
            "Generation requests finished by the engine.",
            |s| s.requests_finished_total as f64,
        ),
        (
            "enclave_preemptions_total",
            "counter",
            "Sequences preempted for lack of KV cache blocks.",
            |s| s.preemptions_total as f64,
        ),
        (
            "enclave_num_requests_waiting",
            "gauge",
            "Sequences waiting for admission (queue depth).",
            |s| s.num_waiting as f64,
        ),
        (
            "enclave_num_requests_running",
            "gauge",
            "Sequences running.",
            |s| s.num_running as f64,
        ),
        (
            "enclave_kv_cache_usage_ratio",
            "gauge",
            "Share of KV cache blocks in use.",
            |s| {
                if s.kv_blocks_total == 0 {
                    0.0
                } else {
                    s.kv_blocks_used as f64 / s.kv_blocks_total as f64
                }
            },
        ),
        (
            "enclave_prefix_cache_hit_rate",
            "gauge",
            "Share of queried prompt tokens served by the prefix cache.",
            |s| s.prefix_cache_hit_rate(),
        ),
        (
            "enclave_generation_tokens_per_second",
            "gauge",
            "Tokens generated per second over the last seconds.",
            |s| s.generation_tokens_per_sec,
        ),
    ];
    for (name, kind, help, value) in scalars {
        header_lines(&mut out, name, kind, help);
        for (labels, s) in &snapshots {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(s));
        }
    }
    header_lines(
        &mut out,
        "enclave_time_to_first_token_seconds",
        "histogram",
        "Time from admission request to the first generated token.",
    );
    for (labels, s) in &snapshots {
        histogram(
            &mut out,
            "enclave_time_to_first_token_seconds",
            labels,
            &s.time_to_first_token,
        );
    }
    header_lines(
        &mut out,
        "enclave_inter_token_latency_seconds",
        "histogram",
        "Time between consecutive generated tokens of a sequence.",
    );
    for (labels, s) in &snapshots {
        histogram(
            &mut out,
            "enclave_inter_token_latency_seconds",
            labels,
            &s.inter_token_latency,
        );
    }
    header_lines(
        &mut out,
        "enclave_e2e_request_latency_seconds",
        "histogram",
        "Whole generation requests, from arrival to the last byte sent.",
    );
    if let Ok(m) = inner.metrics.e2e.lock() {
        for (model, h) in m.iter() {
            let labels = format!("model=\"{}\"", label(model));
            histogram(&mut out, "enclave_e2e_request_latency_seconds", &labels, h);
        }
    }
    if let Some(agents) = state.agents_if_any() {
        agents.metrics.render(&mut out);
    }
    out
}

pub async fn metrics_route(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&state),
    )
}
