//! Stateless turns: the client carries the history (as `chat.completions` does), so the
//! agent replays it into memory, takes the turn and stores nothing unless it hands off.
//!
//! Split from `service` for size: an `impl AgentService` block sharing the service's turn and
//! handoff path, so a stateless turn decides exactly as a stored one. Must not depend on the
//! API.

use serde_json::json;

use super::service::{record, AgentError, AgentService, HandoffTurn, TurnReport};
use super::store::{DecisionRecord, MessageRecord, NewMessage};
use super::turn::TurnError;
use crate::knowledge::random_id;

impl AgentService {
    /// A turn whose history the client carries (`(customer, agent reply)` pairs, oldest
    /// first): nothing is stored unless it hands off, when the conversation is stored whole so
    /// the human who picks it up sees it.
    pub fn stateless_turn(
        &self,
        agent: &str,
        turns: &[(String, String)],
        text: &str,
    ) -> Result<TurnReport, AgentError> {
        let text = Self::check_message(text)?;
        let rt = self.agent(agent)?;
        let memory = super::replay::memory_from(&rt, turns).map_err(TurnError::from)?;
        let now = self.now();
        let history: Vec<MessageRecord> = turns
            .iter()
            .flat_map(|(c, a)| [("customer", c), ("agent", a)])
            .map(|(role, t)| MessageRecord {
                id: 0,
                role: role.into(),
                kind: role.into(),
                author: None,
                text: t.clone(),
                created_at: now,
                intent: None,
                citations: Vec::new(),
            })
            .collect();
        self.metrics.customer_message(agent);
        let result = self.run(&rt, text, &history, memory, now)?;
        let mut decisions: Vec<DecisionRecord> = result.decisions.iter().map(record).collect();
        for d in &result.decisions {
            self.metrics.decision(agent, d);
        }
        let intent_json = result.intent.as_ref().map(|m| json!(m));
        if let Some((reason, decision)) = result.handoff {
            decisions.push(record(&decision));
            let id = random_id("conv_");
            self.store.create_conversation(
                &id,
                agent,
                None,
                &json!({ "channel": "chat.completions" }),
                now,
            )?;
            for m in &history {
                self.store.append_message(
                    &id,
                    &NewMessage {
                        role: if m.role == "customer" {
                            "customer"
                        } else {
                            "agent"
                        },
                        kind: if m.role == "customer" {
                            "customer"
                        } else {
                            "answer"
                        },
                        author: None,
                        text: &m.text,
                        intent: None,
                        citations: &[],
                    },
                    now,
                )?;
            }
            let conv = self.store.conversation(&id)?;
            let mut memory = result.memory;
            let intent_name = memory.last_intent.as_ref().map(|i| i.0.clone());
            let mut report = self.hand_off(HandoffTurn {
                rt: &rt,
                conv: &conv,
                history,
                customer: NewMessage {
                    role: "customer",
                    kind: "customer",
                    author: None,
                    text,
                    intent: intent_name.as_deref(),
                    citations: &[],
                },
                memory: &mut memory,
                decisions,
                reason,
                decision,
                unanswered: result.unanswered.map(|u| (agent, u)),
                now,
            })?;
            report.intent = intent_json;
            return Ok(report);
        }
        let reply = result
            .reply
            .ok_or_else(|| AgentError::Io("the turn produced no reply".into()))?;
        Ok(TurnReport::reply("", 0, reply, decisions, intent_json))
    }
}
