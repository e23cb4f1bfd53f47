//! Prometheus counters for support agents: conversations, customer messages, decisions by
//! action, handoffs by reason, and CSAT. Labels are agent names, actions and reason labels
//! from a fixed set, never message text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use super::policy::{Decision, HandoffReason};

#[derive(Debug, Default)]
pub struct AgentMetrics {
    conversations: Mutex<BTreeMap<String, u64>>,
    messages: Mutex<BTreeMap<String, u64>>,
    decisions: Mutex<BTreeMap<(String, String), u64>>,
    handoffs: Mutex<BTreeMap<(String, String), u64>>,
    csat: Mutex<BTreeMap<String, (u64, u64)>>,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    if let Ok(mut m) = m.lock() {
        *m.entry(k).or_default() += 1;
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl AgentMetrics {
    pub fn conversation_started(&self, agent: &str) {
        bump(&self.conversations, agent.to_string());
    }

    pub fn customer_message(&self, agent: &str) {
        bump(&self.messages, agent.to_string());
    }

    pub fn decision(&self, agent: &str, d: &Decision) {
        let action = serde_json::to_value(&d.action)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        bump(&self.decisions, (agent.to_string(), action));
    }

    pub fn handoff(&self, agent: &str, reason: &HandoffReason) {
        bump(&self.handoffs, (agent.to_string(), reason.label()));
    }

    pub fn csat(&self, agent: &str, score: u8) {
        if let Ok(mut m) = self.csat.lock() {
            let e = m.entry(agent.to_string()).or_default();
            e.0 += 1;
            e.1 += score as u64;
        }
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let single =
            |out: &mut String, name: &str, help: &str, m: &Mutex<BTreeMap<String, u64>>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                if let Ok(m) = m.lock() {
                    for (agent, n) in m.iter() {
                        let _ = writeln!(out, "{name}{{agent=\"{}\"}} {n}", esc(agent));
                    }
                }
            };
        single(
            out,
            "enclave_agent_conversations_total",
            "Conversations started.",
            &self.conversations,
        );
        single(
            out,
            "enclave_agent_customer_messages_total",
            "Customer messages received.",
            &self.messages,
        );
        let pair = |out: &mut String,
                    name: &str,
                    help: &str,
                    label: &str,
                    m: &Mutex<BTreeMap<(String, String), u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if let Ok(m) = m.lock() {
                for ((agent, l), n) in m.iter() {
                    let _ = writeln!(
                        out,
                        "{name}{{agent=\"{}\",{label}=\"{}\"}} {n}",
                        esc(agent),
                        esc(l)
                    );
                }
            }
        };
        pair(
            out,
            "enclave_agent_decisions_total",
            "Policy decisions, by action.",
            "action",
            &self.decisions,
        );
        pair(
            out,
            "enclave_agent_handoffs_total",
            "Handoffs to humans, by reason.",
            "reason",
            &self.handoffs,
        );
        let _ = writeln!(
            out,
            "# HELP enclave_agent_csat_ratings_total CSAT ratings received.\n# TYPE enclave_agent_csat_ratings_total counter"
        );
        let mut sums = String::new();
        if let Ok(m) = self.csat.lock() {
            for (agent, (n, sum)) in m.iter() {
                let _ = writeln!(
                    out,
                    "enclave_agent_csat_ratings_total{{agent=\"{}\"}} {n}",
                    esc(agent)
                );
                let _ = writeln!(
                    sums,
                    "enclave_agent_csat_score_sum{{agent=\"{}\"}} {sum}",
                    esc(agent)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP enclave_agent_csat_score_sum Sum of CSAT scores (1 to 5).\n# TYPE enclave_agent_csat_score_sum counter"
        );
        out.push_str(&sums);
    }
}
