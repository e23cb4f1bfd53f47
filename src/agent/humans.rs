//! The human side of a handed-off conversation: claim, reply, resolve, CSAT, and what the
//! customer hears while a human has the conversation.
//!
//! Split from `service` for size: an `impl AgentService` block that goes through the service's
//! store and metrics like the rest. Never decides anything for the agent; policy stays in
//! `policy` and `turn`, and it must not depend on the API.

use serde_json::json;

use super::service::{AgentError, AgentService, OutMessage, TurnReport};
use super::store::{
    ConversationRecord, ConversationStatus, DecisionRecord, HandoffRecord, MessageRecord,
    NewMessage, StoreError, TurnWrite,
};

impl AgentService {
    pub fn claim(&self, handoff: &str, who: &str) -> Result<HandoffRecord, AgentError> {
        if who.trim().is_empty() || who.len() > 200 {
            return Err(AgentError::InvalidArgument(
                "`by` must name who claims, in 1 to 200 characters".into(),
            ));
        }
        Ok(self.store.claim_handoff(handoff, who.trim(), self.now())?)
    }

    /// A human's reply, into the same conversation.
    pub fn human_reply(
        &self,
        handoff: &str,
        who: &str,
        text: &str,
    ) -> Result<MessageRecord, AgentError> {
        let text = Self::check_message(text)?;
        let h = self.store.handoff(handoff)?;
        if h.status != "claimed" {
            return Err(AgentError::Store(StoreError::Conflict(format!(
                "handoff `{handoff}` is {}; claim it before replying",
                h.status
            ))));
        }
        let now = self.now();
        let id = self.store.append_message(
            &h.conversation_id,
            &NewMessage {
                role: "human",
                kind: "reply",
                author: Some(who),
                text,
                intent: None,
                citations: &[],
            },
            now,
        )?;
        self.store
            .messages(&h.conversation_id)?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| AgentError::Io("the reply was not stored".into()))
    }

    pub fn resolve(&self, handoff: &str) -> Result<HandoffRecord, AgentError> {
        Ok(self.store.resolve_handoff(handoff, self.now())?)
    }

    /// CSAT 1 to 5 with an optional comment; `resolved` records the customer's own verdict.
    pub fn rate(
        &self,
        agent: &str,
        id: &str,
        score: i64,
        comment: Option<&str>,
        resolved: Option<bool>,
    ) -> Result<(), AgentError> {
        self.conversation_of(agent, id)?;
        if !(1..=5).contains(&score) {
            return Err(AgentError::InvalidArgument(format!(
                "score must be 1 to 5, got {score}"
            )));
        }
        if comment.is_some_and(|c| c.chars().count() > 2000) {
            return Err(AgentError::InvalidArgument(
                "comment is longer than 2000 characters".into(),
            ));
        }
        self.store.set_csat(id, score as u8, comment, self.now())?;
        if let Some(r) = resolved {
            self.store.set_confirmed(id, r)?;
        }
        self.metrics.csat(agent, score as u8);
        Ok(())
    }

    /// A customer message while a human has (or is about to have) the conversation: stored for
    /// them, and answered only with where things stand.
    pub(super) fn while_with_humans(
        &self,
        conv: &ConversationRecord,
        text: &str,
        now: i64,
    ) -> Result<TurnReport, AgentError> {
        let waiting = conv.status == ConversationStatus::HandedOff;
        let notice = "Thanks, I've added that to your conversation. A colleague will be with you \
                      shortly.";
        let d = DecisionRecord {
            action: "hold".into(),
            reason: format!(
                "the conversation is {}; a human answers",
                conv.status.as_str()
            ),
            detail: json!({}),
            created_at: now,
            message_id: None,
        };
        let memory = conv.memory.clone();
        let replies = if waiting {
            vec![NewMessage {
                role: "agent",
                kind: "notice",
                author: Some(&conv.agent),
                text: notice,
                intent: None,
                citations: &[],
            }]
        } else {
            Vec::new()
        };
        let ids = self.store.commit_turn(&TurnWrite {
            conversation_id: &conv.id,
            now,
            customer: Some(NewMessage {
                role: "customer",
                kind: "customer",
                author: None,
                text,
                intent: None,
                citations: &[],
            }),
            replies,
            decisions: vec![d.clone()],
            status: conv.status,
            handoff_reason: None,
            primary_intent: None,
            confirmed: conv.confirmed,
            memory: &memory,
            unanswered: None,
            handoff: None,
        })?;
        Ok(TurnReport {
            conversation_id: conv.id.clone(),
            status: conv.status,
            messages: ids
                .into_iter()
                .map(|id| OutMessage {
                    id,
                    role: "agent",
                    kind: "notice".into(),
                    text: notice.into(),
                    citations: Vec::new(),
                })
                .collect(),
            handoff: self.store.handoff_for(&conv.id)?,
            decisions: vec![d],
            intent: None,
        })
    }
}
