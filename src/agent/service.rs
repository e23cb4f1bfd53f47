//! [`AgentService`]: the agents a server runs, their conversations and the handoff queue.
//!
//! Owns the life of a conversation: start it, take a customer turn (policy, answer or handoff,
//! all recorded in one transaction), let a human claim, reply and resolve, and take CSAT. The
//! human side is in `humans` and turns whose client carries the history in `stateless`, both
//! further `impl AgentService` blocks.
//! Blocking by design (SQLite, embeddings, the engine's blocking stream): async callers run it
//! on a blocking thread. Depends on the other agent modules, the `Generator` trait and
//! `knowledge`; never on the API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{json, Value};

use super::analytics::{self, AgentAnalytics};
use super::clock::Clock;
use super::definition::DefinitionError;
use super::generator::{GenerationRequest, Generator};
use super::handoff::{self, PacketParts};
use super::memory::Memory;
use super::metrics::AgentMetrics;
use super::policy::{Decision, HandoffReason};
use super::prompt::summary_prompt;
use super::registry::{BuildContext, ServerCatalog};
use super::store::{
    Citation, ConversationRecord, ConversationStatus, DecisionRecord, HandoffRecord, MessageRecord,
    NewMessage, StoreError, SupportStore, TurnWrite,
};
use super::turn::{run_turn, AgentRuntime, TurnError, TurnInput};
use crate::knowledge::random_id;

/// The longest customer message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// "Resolved" means no return with the same intent within this window, by default.
pub const DEFAULT_RESOLUTION_WINDOW_MS: i64 = 7 * 24 * 3_600_000;
/// A conversation idle this long without an answer or a handoff counts as abandoned.
pub const ABANDON_AFTER_MS: i64 = 30 * 60_000;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no agent `{0}`")]
    NoAgent(String),
    #[error("conversation `{conversation}` belongs to agent `{agent}`, not `{asked}`")]
    WrongAgent {
        conversation: String,
        agent: String,
        asked: String,
    },
    #[error("{0}")]
    InvalidMessage(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Turn(#[from] TurnError),
    #[error("{0}")]
    Io(String),
}

/// A message as the customer's client receives it.
#[derive(Debug, Clone, Serialize)]
pub struct OutMessage {
    pub id: i64,
    pub role: &'static str,
    pub kind: String,
    pub text: String,
    pub citations: Vec<Citation>,
}

/// What one customer turn produced.
#[derive(Debug, Clone, Serialize)]
pub struct TurnReport {
    pub conversation_id: String,
    pub status: ConversationStatus,
    pub messages: Vec<OutMessage>,
    pub handoff: Option<HandoffRecord>,
    pub decisions: Vec<DecisionRecord>,
    pub intent: Option<Value>,
}

impl TurnReport {
    /// A turn the agent answered itself (no handoff).
    pub(super) fn reply(
        conversation_id: &str,
        message_id: i64,
        reply: super::turn::Reply,
        decisions: Vec<DecisionRecord>,
        intent: Option<Value>,
    ) -> Self {
        Self {
            conversation_id: conversation_id.to_string(),
            status: ConversationStatus::Open,
            messages: vec![OutMessage {
                id: message_id,
                role: "agent",
                kind: reply.kind.to_string(),
                text: reply.text,
                citations: reply.citations,
            }],
            handoff: None,
            decisions,
            intent,
        }
    }
}

/// A conversation with everything recorded about it.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    #[serde(flatten)]
    pub conversation: ConversationRecord,
    pub messages: Vec<MessageRecord>,
    pub decisions: Vec<DecisionRecord>,
    pub handoff: Option<HandoffRecord>,
    pub csat: Option<super::store::CsatRecord>,
}

pub struct AgentService {
    agents: RwLock<BTreeMap<String, Arc<AgentRuntime>>>,
    pub store: SupportStore,
    pub(super) generator: Arc<dyn Generator>,
    clock: Arc<dyn Clock>,
    pub metrics: AgentMetrics,
    /// Where definitions are written by the admin API; `None`: read-only.
    pub agents_dir: Option<PathBuf>,
    pub resolution_window_ms: i64,
    /// What agents defined at run time are built with.
    pub build_context: BuildContext,
    /// The chat models agents may name.
    pub model_names: Vec<String>,
}

impl AgentService {
    pub fn new(
        store: SupportStore,
        generator: Arc<dyn Generator>,
        clock: Arc<dyn Clock>,
        agents_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            agents: RwLock::new(BTreeMap::new()),
            store,
            generator,
            clock,
            metrics: AgentMetrics::default(),
            agents_dir,
            resolution_window_ms: DEFAULT_RESOLUTION_WINDOW_MS,
            build_context: BuildContext::default(),
            model_names: Vec::new(),
        }
    }

    /// What a definition may name now: the knowledge base's collections and the models.
    pub fn catalog(&self) -> ServerCatalog {
        let collections = self
            .build_context
            .kb
            .as_ref()
            .and_then(|kb| kb.store().collections().ok())
            .map(|cs| cs.into_iter().map(|c| c.name).collect())
            .unwrap_or_default();
        ServerCatalog {
            collections,
            models: self.model_names.clone(),
        }
    }

    /// Rebuilds agent `name` (after new examples, say) from its current definition.
    pub fn rebuild(&self, name: &str) -> Result<(), AgentError> {
        let rt = self.agent(name)?;
        let rebuilt = super::registry::build(
            rt.def.clone(),
            rt.source.clone(),
            &self.build_context,
            &self.store,
            rt.retriever.clone(),
        )?;
        self.install(rebuilt);
        Ok(())
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn install(&self, rt: AgentRuntime) {
        let name = rt.def.name().to_string();
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, Arc::new(rt));
    }

    pub fn remove(&self, name: &str) -> bool {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }

    pub fn agent(&self, name: &str) -> Result<Arc<AgentRuntime>, AgentError> {
        self.agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| AgentError::NoAgent(name.to_string()))
    }

    pub fn agents(&self) -> Vec<Arc<AgentRuntime>> {
        self.agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Opens a conversation; the agent's greeting is its first message.
    pub fn start(
        &self,
        agent: &str,
        contact_id: Option<&str>,
        metadata: &Value,
    ) -> Result<(ConversationRecord, Vec<MessageRecord>), AgentError> {
        let rt = self.agent(agent)?;
        if let Some(c) = contact_id {
            if c.is_empty() || c.len() > 200 {
                return Err(AgentError::InvalidArgument(
                    "contact_id must be 1 to 200 characters".into(),
                ));
            }
        }
        let id = random_id("conv_");
        let now = self.now();
        self.store
            .create_conversation(&id, agent, contact_id, metadata, now)?;
        if !rt.def.greeting.is_empty() {
            self.store.append_message(
                &id,
                &NewMessage {
                    role: "agent",
                    kind: "greeting",
                    author: Some(agent),
                    text: &rt.def.greeting,
                    intent: None,
                    citations: &[],
                },
                now,
            )?;
        }
        self.metrics.conversation_started(agent);
        Ok((self.store.conversation(&id)?, self.store.messages(&id)?))
    }

    pub fn conversation_of(&self, agent: &str, id: &str) -> Result<ConversationRecord, AgentError> {
        let c = self.store.conversation(id)?;
        if c.agent != agent {
            return Err(AgentError::WrongAgent {
                conversation: id.to_string(),
                agent: c.agent,
                asked: agent.to_string(),
            });
        }
        Ok(c)
    }

    pub fn transcript(&self, agent: &str, id: &str) -> Result<Transcript, AgentError> {
        let conversation = self.conversation_of(agent, id)?;
        Ok(Transcript {
            messages: self.store.messages(id)?,
            decisions: self.store.decisions(id)?,
            handoff: self.store.handoff_for(id)?,
            csat: self.store.csat(id)?,
            conversation,
        })
    }

    /// Checks a customer message before anything is stored.
    pub fn check_message(text: &str) -> Result<&str, AgentError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(AgentError::InvalidMessage(
                "the message is empty; send the customer's text in `content`".into(),
            ));
        }
        let n = t.chars().count();
        if n > MAX_MESSAGE_CHARS {
            return Err(AgentError::InvalidMessage(format!(
                "the message is {n} characters; the most an agent takes is {MAX_MESSAGE_CHARS}"
            )));
        }
        Ok(t)
    }

    /// Runs the agent's turn loop on one message.
    pub(super) fn run(
        &self,
        rt: &AgentRuntime,
        message: &str,
        history: &[MessageRecord],
        memory: Memory,
        now: i64,
    ) -> Result<super::turn::TurnResult, AgentError> {
        Ok(run_turn(
            rt,
            self.generator.as_ref(),
            TurnInput {
                message,
                history,
                memory,
                now,
            },
        )?)
    }

    /// Takes one customer message and returns what the customer sees next.
    pub fn post_message(
        &self,
        agent: &str,
        id: &str,
        text: &str,
    ) -> Result<TurnReport, AgentError> {
        let text = Self::check_message(text)?;
        let rt = self.agent(agent)?;
        let conv = self.conversation_of(agent, id)?;
        let history = self.store.messages(id)?;
        let now = self.now();
        self.metrics.customer_message(agent);
        if matches!(
            conv.status,
            ConversationStatus::HandedOff | ConversationStatus::Claimed
        ) {
            return self.while_with_humans(&conv, text, now);
        }
        let memory = Memory::from_json(&conv.memory);
        let result = self.run(&rt, text, &history, memory, now)?;
        let intent_name = result.intent.as_ref().and_then(|m| {
            m.in_scope(*rt.def.thresholds.intent_floor.get_ref())
                .map(str::to_string)
        });
        let intent_json = result.intent.as_ref().map(|m| json!(m));
        let mut decisions: Vec<DecisionRecord> = result.decisions.iter().map(record).collect();
        for d in &result.decisions {
            self.metrics.decision(agent, d);
        }
        let customer = NewMessage {
            role: "customer",
            kind: "customer",
            author: None,
            text,
            intent: intent_name.as_deref(),
            citations: &[],
        };
        let mut memory = result.memory;
        let unanswered = result.unanswered.map(|u| (agent, u));
        if let Some((reason, decision)) = result.handoff {
            decisions.push(record(&decision));
            return self.hand_off(HandoffTurn {
                rt: &rt,
                conv: &conv,
                history,
                customer,
                memory: &mut memory,
                decisions,
                reason,
                decision,
                unanswered,
                now,
            });
        }
        let Some(reply) = result.reply else {
            return Err(AgentError::Io("the turn produced no reply".into()));
        };
        let memory_json = memory.to_json();
        let ids = self.store.commit_turn(&TurnWrite {
            conversation_id: id,
            now,
            customer: Some(customer),
            replies: vec![NewMessage {
                role: "agent",
                kind: reply.kind,
                author: Some(agent),
                text: &reply.text,
                intent: intent_name.as_deref(),
                citations: &reply.citations,
            }],
            decisions: decisions.clone(),
            status: ConversationStatus::Open,
            handoff_reason: None,
            primary_intent: memory.primary_intent.as_deref(),
            confirmed: memory.confirmed,
            memory: &memory_json,
            unanswered,
            handoff: None,
        })?;
        Ok(TurnReport::reply(
            id,
            ids.first().copied().unwrap_or_default(),
            reply,
            decisions,
            intent_json,
        ))
    }

    fn summary(
        &self,
        rt: &AgentRuntime,
        transcript: &[MessageRecord],
        memory: &Memory,
        reason: &str,
    ) -> (String, &'static str) {
        let request = GenerationRequest {
            model: rt
                .def
                .model_for(memory.last_intent.as_ref().map(|i| i.0.as_str()))
                .map(str::to_string),
            messages: summary_prompt(transcript, reason),
            max_tokens: 160,
        };
        match self.generator.generate(&request) {
            Ok(g) if g.text.trim().chars().filter(|c| c.is_alphabetic()).count() >= 20 => {
                (g.text.trim().to_string(), "model")
            }
            _ => (
                handoff::extractive_summary(transcript, memory, reason),
                "extractive",
            ),
        }
    }

    pub(super) fn hand_off(&self, h: HandoffTurn<'_>) -> Result<TurnReport, AgentError> {
        let HandoffTurn {
            rt,
            conv,
            mut history,
            customer,
            memory,
            decisions,
            reason,
            decision,
            unanswered,
            now,
        } = h;
        let label = reason.label();
        let queue = rt.def.handoff.queue.get_ref().clone();
        let waiting = self.store.waiting_in_queue(&queue)?;
        let wait = handoff::estimate_wait(&rt.def.handoff, waiting, now);
        let reply_text = handoff::customer_message(&wait);
        history.push(MessageRecord {
            id: 0,
            role: "customer".into(),
            kind: "customer".into(),
            author: None,
            text: customer.text.to_string(),
            created_at: now,
            intent: customer.intent.map(str::to_string),
            citations: Vec::new(),
        });
        let (summary, summary_source) = self.summary(rt, &history, memory, &decision.reason);
        let previous = match &conv.contact_id {
            Some(c) => self
                .store
                .contact_history(&conv.agent, c, conv.created_at, 10)?,
            None => Vec::new(),
        };
        let packet = handoff::packet(&PacketParts {
            previous: &previous,
            conversation: conv,
            transcript: &history,
            memory,
            decision: &decision,
            reason_label: &label,
            summary,
            summary_source,
            queue: &queue,
            wait: &wait,
        });
        let record = HandoffRecord {
            id: random_id("ho_"),
            conversation_id: conv.id.clone(),
            agent: conv.agent.clone(),
            queue,
            status: "waiting".into(),
            reason: label.clone(),
            packet,
            wait_minutes: Some(wait.minutes as i64),
            created_at: now,
            claimed_by: None,
            claimed_at: None,
            resolved_at: None,
            webhook: rt
                .def
                .handoff
                .webhook
                .as_ref()
                .map(|_| "pending".to_string()),
        };
        memory.agent_replies += 1;
        let memory_json = memory.to_json();
        let ids = self.store.commit_turn(&TurnWrite {
            conversation_id: &conv.id,
            now,
            customer: Some(customer),
            replies: vec![NewMessage {
                role: "agent",
                kind: "handoff",
                author: Some(&conv.agent),
                text: &reply_text,
                intent: None,
                citations: &[],
            }],
            decisions: decisions.clone(),
            status: ConversationStatus::HandedOff,
            handoff_reason: Some(&label),
            primary_intent: memory.primary_intent.as_deref(),
            confirmed: memory.confirmed,
            memory: &memory_json,
            unanswered,
            handoff: Some(&record),
        })?;
        self.metrics.handoff(&conv.agent, &reason);
        self.metrics.decision(&conv.agent, &decision);
        if let Some(url) = rt.def.handoff.webhook.as_ref().map(|w| w.get_ref().clone()) {
            self.deliver_webhook(url, record.clone());
        }
        Ok(TurnReport {
            conversation_id: conv.id.clone(),
            status: ConversationStatus::HandedOff,
            messages: vec![OutMessage {
                id: ids.first().copied().unwrap_or_default(),
                role: "agent",
                kind: "handoff".into(),
                text: reply_text,
                citations: Vec::new(),
            }],
            handoff: Some(record),
            decisions,
            intent: None,
        })
    }

    fn deliver_webhook(&self, url: String, record: HandoffRecord) {
        // The store is not shared across threads by reference, so the outcome is written
        // through a second connection to the same file.
        let path = self.store.path().map(PathBuf::from);
        std::thread::spawn(move || {
            let body = json!({ "handoff_id": record.id, "packet": record.packet });
            let status = handoff::deliver(&url, &body);
            if let Some(p) = path {
                if let Ok(s) = SupportStore::open(&p) {
                    let _ = s.set_webhook_status(&record.id, &status);
                }
            }
            tracing::info!(handoff = %record.id, %status, "handoff webhook");
        });
    }

    pub fn analytics(&self, agent: &str, from: i64, to: i64) -> Result<AgentAnalytics, AgentError> {
        self.agent(agent)?;
        if from >= to {
            return Err(AgentError::InvalidArgument(
                "`from` must be before `to`".into(),
            ));
        }
        Ok(analytics::compute(
            &self.store,
            agent,
            from,
            to,
            self.now(),
            self.resolution_window_ms,
        )?)
    }
}

pub(super) struct HandoffTurn<'a> {
    pub(super) rt: &'a AgentRuntime,
    pub(super) conv: &'a ConversationRecord,
    pub(super) history: Vec<MessageRecord>,
    pub(super) customer: NewMessage<'a>,
    pub(super) memory: &'a mut Memory,
    pub(super) decisions: Vec<DecisionRecord>,
    pub(super) reason: HandoffReason,
    pub(super) decision: Decision,
    pub(super) unanswered: Option<(&'a str, super::store::UnansweredRecord)>,
    pub(super) now: i64,
}

pub(super) fn record(d: &Decision) -> DecisionRecord {
    let action = serde_json::to_value(&d.action).unwrap_or(Value::Null);
    DecisionRecord {
        action: action["action"].as_str().unwrap_or("unknown").to_string(),
        reason: d.reason.clone(),
        detail: json!({ "action": action, "detail": d.detail }),
        created_at: 0,
        message_id: None,
    }
}
