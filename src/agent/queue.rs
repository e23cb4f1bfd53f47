//! The handoff queue, CSAT, imported intent examples and unanswered questions: the
//! [`SupportStore`] statements about what happens around a conversation rather than in it.
//!
//! Split from `store` for size only: the schema, the record types and the connection stay
//! there, so every table is still defined in one place. Depends on `store` and `rusqlite`; it
//! knows nothing of policy.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::store::{
    json_text, parse_json, CsatRecord, HandoffRecord, Result, StoreError, SupportStore,
    UnansweredRecord,
};

impl SupportStore {
    pub fn set_webhook_status(&self, handoff: &str, status: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE handoffs SET webhook = ?2 WHERE id = ?1",
                params![handoff, status],
            )?;
            Ok(())
        })
    }

    /// Conversations waiting in `queue` ahead of a new one.
    pub fn waiting_in_queue(&self, queue: &str) -> Result<usize> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM handoffs WHERE queue = ?1 AND status = 'waiting'",
                [queue],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
    }

    pub fn handoff(&self, id: &str) -> Result<HandoffRecord> {
        self.with(|c| {
            c.query_row(
                &format!("{HANDOFF_SELECT} WHERE id = ?1"),
                [id],
                handoff_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NoHandoff(id.to_string()))?
        })
    }

    /// The conversation's latest handoff, if it has one.
    pub fn handoff_for(&self, conversation: &str) -> Result<Option<HandoffRecord>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "{HANDOFF_SELECT} WHERE conversation_id = ?1 ORDER BY created_at DESC LIMIT 1"
                ),
                [conversation],
                handoff_row,
            )
            .optional()?
            .transpose()
        })
    }

    /// Handoffs, oldest first, optionally of one queue and status.
    pub fn handoffs(
        &self,
        queue: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HandoffRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{HANDOFF_SELECT} WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR status = ?2) \
                 ORDER BY created_at, id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![queue, status, limit as i64], handoff_row)?;
            rows.map(|r| r?).collect()
        })
    }

    /// Claims a waiting handoff for `who`; a second claim is a conflict.
    pub fn claim_handoff(&self, id: &str, who: &str, now: i64) -> Result<HandoffRecord> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (status, conv) = handoff_state(&tx, id)?;
            if status != "waiting" {
                return Err(StoreError::Conflict(format!(
                    "handoff `{id}` is {status}, not waiting; only a waiting handoff can be \
                     claimed"
                )));
            }
            tx.execute(
                "UPDATE handoffs SET status = 'claimed', claimed_by = ?2, claimed_at = ?3 \
                 WHERE id = ?1",
                params![id, who, now],
            )?;
            tx.execute(
                "UPDATE conversations SET status = 'claimed', updated_at = ?2 WHERE id = ?1",
                params![conv, now],
            )?;
            tx.commit()?;
            Ok(())
        })?;
        self.handoff(id)
    }

    /// Resolves a claimed (or waiting) handoff and its conversation.
    pub fn resolve_handoff(&self, id: &str, now: i64) -> Result<HandoffRecord> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (status, conv) = handoff_state(&tx, id)?;
            if status == "resolved" {
                return Err(StoreError::Conflict(format!(
                    "handoff `{id}` is already resolved"
                )));
            }
            tx.execute(
                "UPDATE handoffs SET status = 'resolved', resolved_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            tx.execute(
                "UPDATE conversations SET status = 'resolved', updated_at = ?2 WHERE id = ?1",
                params![conv, now],
            )?;
            tx.commit()?;
            Ok(())
        })?;
        self.handoff(id)
    }

    pub fn set_csat(
        &self,
        conversation: &str,
        score: u8,
        comment: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO csat (conversation_id, score, comment, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(conversation_id) DO UPDATE SET score = ?2, comment = ?3, created_at = ?4",
                params![conversation, score, comment, now],
            )?;
            Ok(())
        })
    }

    pub fn set_confirmed(&self, conversation: &str, confirmed: bool) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE conversations SET confirmed = ?2 WHERE id = ?1",
                params![conversation, confirmed],
            )?;
            Ok(())
        })
    }

    pub fn csat(&self, conversation: &str) -> Result<Option<CsatRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT score, comment, created_at FROM csat WHERE conversation_id = ?1",
                [conversation],
                |r| {
                    Ok(CsatRecord {
                        score: r.get(0)?,
                        comment: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
    }

    /// Adds labelled examples for `agent`; duplicates are skipped. Returns how many were new.
    pub fn add_examples(
        &self,
        agent: &str,
        source: &str,
        examples: &[(String, String)],
    ) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut added = 0;
            for (intent, text) in examples {
                added += tx.execute(
                    "INSERT OR IGNORE INTO intent_examples (agent, intent, text, source) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![agent, intent, text, source],
                )?;
            }
            tx.commit()?;
            Ok(added)
        })
    }

    pub fn examples(&self, agent: &str) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT intent, text FROM intent_examples WHERE agent = ?1 ORDER BY id")?;
            let rows = stmt.query_map([agent], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
    }

    pub fn unanswered_between(
        &self,
        agent: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UnansweredRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT text, nearest_intent, reason, created_at, vector FROM unanswered \
                 WHERE agent = ?1 AND created_at >= ?2 AND created_at < ?3 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![agent, from, to], |r| {
                let blob: Option<Vec<u8>> = r.get(4)?;
                Ok(UnansweredRecord {
                    text: r.get(0)?,
                    nearest_intent: r.get(1)?,
                    reason: r.get(2)?,
                    created_at: r.get(3)?,
                    vector: blob.as_deref().map(blob_vector),
                })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
    }
}

/// Queues `h`; `commit_turn` calls it inside the turn's transaction.
/// A handoff's status and conversation, read inside the caller's transaction.
fn handoff_state(c: &Connection, id: &str) -> Result<(String, String)> {
    c.query_row(
        "SELECT status, conversation_id FROM handoffs WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NoHandoff(id.to_string()))
}

pub(super) fn insert_handoff(c: &Connection, h: &HandoffRecord) -> Result<()> {
    c.execute(
        "INSERT INTO handoffs (id, conversation_id, agent, queue, status, reason, packet, \
         wait_minutes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            h.id,
            h.conversation_id,
            h.agent,
            h.queue,
            h.status,
            h.reason,
            json_text(&h.packet),
            h.wait_minutes,
            h.created_at
        ],
    )?;
    Ok(())
}

/// Records an unanswered question; `commit_turn` calls it inside the turn's transaction.
pub(super) fn insert_unanswered(
    c: &Connection,
    agent: &str,
    conversation: &str,
    u: &UnansweredRecord,
) -> Result<()> {
    c.execute(
        "INSERT INTO unanswered (agent, conversation_id, text, nearest_intent, \
         reason, created_at, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            agent,
            conversation,
            u.text,
            u.nearest_intent,
            u.reason,
            u.created_at,
            u.vector.as_deref().map(vector_blob)
        ],
    )?;
    Ok(())
}

const HANDOFF_SELECT: &str = "SELECT id, conversation_id, agent, queue, status, reason, packet, \
     wait_minutes, created_at, claimed_by, claimed_at, resolved_at, webhook FROM handoffs";

fn handoff_row(r: &Row<'_>) -> rusqlite::Result<Result<HandoffRecord>> {
    let packet: String = r.get(6)?;
    let base = HandoffRecord {
        id: r.get(0)?,
        conversation_id: r.get(1)?,
        agent: r.get(2)?,
        queue: r.get(3)?,
        status: r.get(4)?,
        reason: r.get(5)?,
        packet: Value::Null,
        wait_minutes: r.get(7)?,
        created_at: r.get(8)?,
        claimed_by: r.get(9)?,
        claimed_at: r.get(10)?,
        resolved_at: r.get(11)?,
        webhook: r.get(12)?,
    };
    Ok(parse_json("a handoff packet", &packet).map(|packet| HandoffRecord { packet, ..base }))
}

fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
