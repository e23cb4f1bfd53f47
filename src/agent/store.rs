//! The support store: conversations, their messages and recorded decisions, the handoff queue,
//! CSAT, imported intent examples and unanswered questions, in one SQLite file (WAL).
//!
//! Owns the schema, the record types and the SQL about conversations and their turns (the
//! statements about the handoff queue, CSAT, examples and unanswered questions are in `queue`).
//! Each write that must be atomic (a customer turn with its reply and decisions, a handoff with
//! its conversation state) is one transaction. Depends on `rusqlite` and serde only; it knows
//! nothing of policy.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the support store at {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the support store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the support store holds malformed JSON in {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("no conversation `{0}`")]
    NoConversation(String),
    #[error("no handoff `{0}`")]
    NoHandoff(String),
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    contact_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    handoff_reason TEXT,
    primary_intent TEXT,
    confirmed INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    memory TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS conversations_agent ON conversations(agent, created_at);
CREATE INDEX IF NOT EXISTS conversations_contact ON conversations(agent, contact_id, created_at);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    author TEXT,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    intent TEXT,
    citations TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    message_id INTEGER,
    created_at INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS decisions_conversation ON decisions(conversation_id, id);
CREATE TABLE IF NOT EXISTS handoffs (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    agent TEXT NOT NULL,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    packet TEXT NOT NULL,
    wait_minutes INTEGER,
    created_at INTEGER NOT NULL,
    claimed_by TEXT,
    claimed_at INTEGER,
    resolved_at INTEGER,
    webhook TEXT
);
CREATE INDEX IF NOT EXISTS handoffs_queue ON handoffs(queue, status, created_at);
CREATE TABLE IF NOT EXISTS csat (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
    score INTEGER NOT NULL,
    comment TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS intent_examples (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    intent TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    UNIQUE (agent, intent, text)
);
CREATE TABLE IF NOT EXISTS unanswered (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    text TEXT NOT NULL,
    nearest_intent TEXT,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS unanswered_agent ON unanswered(agent, created_at);
";

/// Where a conversation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// The agent is handling it.
    Open,
    /// Waiting in the handoff queue.
    HandedOff,
    /// A human has claimed it.
    Claimed,
    /// A human resolved it.
    Resolved,
}

impl ConversationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::HandedOff => "handed_off",
            Self::Claimed => "claimed",
            Self::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "handed_off" => Self::HandedOff,
            "claimed" => Self::Claimed,
            "resolved" => Self::Resolved,
            _ => Self::Open,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationRecord {
    pub id: String,
    pub agent: String,
    pub contact_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: ConversationStatus,
    pub handoff_reason: Option<String>,
    pub primary_intent: Option<String>,
    pub confirmed: bool,
    pub metadata: Value,
    #[serde(skip)]
    pub memory: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Citation {
    pub index: usize,
    pub title: String,
    pub source: String,
    pub heading: Option<String>,
    pub span: Option<(usize, usize)>,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: i64,
    /// `customer`, `agent` or `human`.
    pub role: String,
    /// What the message is: `customer`, `greeting`, `answer`, `clarify`, `collect`,
    /// `handoff`, `notice` or `reply`.
    pub kind: String,
    pub author: Option<String>,
    pub text: String,
    pub created_at: i64,
    pub intent: Option<String>,
    pub citations: Vec<Citation>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub role: &'a str,
    pub kind: &'a str,
    pub author: Option<&'a str>,
    pub text: &'a str,
    pub intent: Option<&'a str>,
    pub citations: &'a [Citation],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub action: String,
    pub reason: String,
    pub detail: Value,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub message_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HandoffRecord {
    pub id: String,
    pub conversation_id: String,
    pub agent: String,
    pub queue: String,
    /// `waiting`, `claimed` or `resolved`.
    pub status: String,
    pub reason: String,
    pub packet: Value,
    pub wait_minutes: Option<i64>,
    pub created_at: i64,
    pub claimed_by: Option<String>,
    pub claimed_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// How delivery to the webhook went, when one is configured.
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CsatRecord {
    pub score: u8,
    pub comment: Option<String>,
    pub created_at: i64,
}

/// An unanswered or out-of-scope question, kept for coverage-gap reports.
#[derive(Debug, Clone)]
pub struct UnansweredRecord {
    pub text: String,
    pub nearest_intent: Option<String>,
    pub reason: String,
    pub created_at: i64,
    pub vector: Option<Vec<f32>>,
}

/// One customer turn's writes, committed together.
pub struct TurnWrite<'a> {
    pub conversation_id: &'a str,
    pub now: i64,
    pub customer: Option<NewMessage<'a>>,
    pub replies: Vec<NewMessage<'a>>,
    pub decisions: Vec<DecisionRecord>,
    pub status: ConversationStatus,
    pub handoff_reason: Option<&'a str>,
    pub primary_intent: Option<&'a str>,
    pub confirmed: bool,
    pub memory: &'a Value,
    pub unanswered: Option<(&'a str, UnansweredRecord)>,
    /// A handoff queued in the same transaction.
    pub handoff: Option<&'a HandoffRecord>,
}

pub struct SupportStore {
    conn: Mutex<Connection>,
    path: Option<std::path::PathBuf>,
}

pub(super) fn json_text(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(what: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StoreError::Json { what, source })
}

impl SupportStore {
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: Some(path.to_path_buf()),
        })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: None,
        })
    }

    /// The file behind the store; `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    pub fn create_conversation(
        &self,
        id: &str,
        agent: &str,
        contact_id: Option<&str>,
        metadata: &Value,
        now: i64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO conversations (id, agent, contact_id, created_at, updated_at, \
                 status, metadata) VALUES (?1, ?2, ?3, ?4, ?4, 'open', ?5)",
                params![id, agent, contact_id, now, json_text(metadata)],
            )?;
            Ok(())
        })
    }

    pub fn conversation(&self, id: &str) -> Result<ConversationRecord> {
        self.with(|c| {
            c.query_row(
                "SELECT id, agent, contact_id, created_at, updated_at, status, handoff_reason, \
                 primary_intent, confirmed, metadata, memory FROM conversations WHERE id = ?1",
                [id],
                conversation_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::NoConversation(id.to_string()))?
        })
    }

    /// Conversations of `agent` created in `[from, to)`, oldest first.
    pub fn conversations_between(
        &self,
        agent: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<ConversationRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, agent, contact_id, created_at, updated_at, status, handoff_reason, \
                 primary_intent, confirmed, metadata, memory FROM conversations \
                 WHERE agent = ?1 AND created_at >= ?2 AND created_at < ?3 ORDER BY created_at",
            )?;
            let rows = stmt.query_map(params![agent, from, to], conversation_row)?;
            rows.map(|r| r?).collect()
        })
    }

    /// Whether `contact` opened another conversation with `agent` whose first intent was
    /// `intent`, in `(after, until]`.
    pub fn contact_returned(
        &self,
        agent: &str,
        contact: &str,
        intent: &str,
        after: i64,
        until: i64,
    ) -> Result<bool> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM conversations WHERE agent = ?1 AND contact_id = ?2 \
                 AND primary_intent = ?3 AND created_at > ?4 AND created_at <= ?5)",
                params![agent, contact, intent, after, until],
                |r| r.get(0),
            )?)
        })
    }

    /// The contact's earlier conversations with `agent`, newest first.
    pub fn contact_history(
        &self,
        agent: &str,
        contact: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, agent, contact_id, created_at, updated_at, status, handoff_reason, \
                 primary_intent, confirmed, metadata, memory FROM conversations \
                 WHERE agent = ?1 AND contact_id = ?2 AND created_at < ?3 \
                 ORDER BY created_at DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![agent, contact, before, limit as i64],
                conversation_row,
            )?;
            rows.map(|r| r?).collect()
        })
    }

    pub fn messages(&self, conversation: &str) -> Result<Vec<MessageRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, role, kind, author, text, created_at, intent, citations \
                 FROM messages WHERE conversation_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([conversation], message_row)?;
            rows.map(|r| r?).collect()
        })
    }

    pub fn decisions(&self, conversation: &str) -> Result<Vec<DecisionRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT action, reason, detail, created_at, message_id FROM decisions \
                 WHERE conversation_id = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([conversation], |r| {
                let detail: String = r.get(2)?;
                Ok(DecisionRecord {
                    action: r.get(0)?,
                    reason: r.get(1)?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                    created_at: r.get(3)?,
                    message_id: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
    }

    /// Commits one turn: the customer's message, the replies, the decisions and the
    /// conversation's new state. Returns the ids of the replies.
    pub fn commit_turn(&self, w: &TurnWrite<'_>) -> Result<Vec<i64>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut customer_id = None;
            if let Some(m) = &w.customer {
                customer_id = Some(insert_message(&tx, w.conversation_id, m, w.now)?);
            }
            let mut ids = Vec::new();
            for m in &w.replies {
                ids.push(insert_message(&tx, w.conversation_id, m, w.now)?);
            }
            for d in &w.decisions {
                tx.execute(
                    "INSERT INTO decisions (conversation_id, message_id, created_at, action, \
                     reason, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        w.conversation_id,
                        customer_id,
                        w.now,
                        d.action,
                        d.reason,
                        json_text(&d.detail)
                    ],
                )?;
            }
            let changed = tx.execute(
                "UPDATE conversations SET updated_at = ?2, status = ?3, \
                 handoff_reason = COALESCE(?4, handoff_reason), \
                 primary_intent = COALESCE(primary_intent, ?5), confirmed = ?6, memory = ?7 \
                 WHERE id = ?1",
                params![
                    w.conversation_id,
                    w.now,
                    w.status.as_str(),
                    w.handoff_reason,
                    w.primary_intent,
                    w.confirmed,
                    json_text(w.memory)
                ],
            )?;
            if changed == 0 {
                return Err(StoreError::NoConversation(w.conversation_id.to_string()));
            }
            if let Some((agent, u)) = &w.unanswered {
                super::queue::insert_unanswered(&tx, agent, w.conversation_id, u)?;
            }
            if let Some(h) = w.handoff {
                super::queue::insert_handoff(&tx, h)?;
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Appends a message outside a customer turn (a human's reply).
    pub fn append_message(&self, conversation: &str, m: &NewMessage<'_>, now: i64) -> Result<i64> {
        self.with(|c| {
            let tx = c.transaction()?;
            let id = insert_message(&tx, conversation, m, now)?;
            tx.execute(
                "UPDATE conversations SET updated_at = ?2 WHERE id = ?1",
                params![conversation, now],
            )?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Counts of messages per conversation, for analytics.
    pub fn message_count(&self, conversation: &str) -> Result<usize> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ?1",
                [conversation],
                |r| r.get(0),
            )?;
            Ok(n as usize)
        })
    }
}

fn insert_message(c: &Connection, conversation: &str, m: &NewMessage<'_>, now: i64) -> Result<i64> {
    c.execute(
        "INSERT INTO messages (conversation_id, role, kind, author, text, created_at, intent, \
         citations) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            conversation,
            m.role,
            m.kind,
            m.author,
            m.text,
            now,
            m.intent,
            json_text(&m.citations)
        ],
    )?;
    Ok(c.last_insert_rowid())
}

fn conversation_row(r: &Row<'_>) -> rusqlite::Result<Result<ConversationRecord>> {
    let status: String = r.get(5)?;
    let metadata: String = r.get(9)?;
    let memory: String = r.get(10)?;
    let base = ConversationRecord {
        id: r.get(0)?,
        agent: r.get(1)?,
        contact_id: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        status: ConversationStatus::parse(&status),
        handoff_reason: r.get(6)?,
        primary_intent: r.get(7)?,
        confirmed: r.get(8)?,
        metadata: Value::Null,
        memory: Value::Null,
    };
    Ok((|| {
        Ok(ConversationRecord {
            metadata: parse_json("a conversation's metadata", &metadata)?,
            memory: parse_json("a conversation's memory", &memory)?,
            ..base
        })
    })())
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Result<MessageRecord>> {
    let citations: String = r.get(7)?;
    let base = MessageRecord {
        id: r.get(0)?,
        role: r.get(1)?,
        kind: r.get(2)?,
        author: r.get(3)?,
        text: r.get(4)?,
        created_at: r.get(5)?,
        intent: r.get(6)?,
        citations: Vec::new(),
    };
    Ok(parse_json("a message's citations", &citations)
        .map(|citations| MessageRecord { citations, ..base }))
}
