//! The built-in demo agent end to end, over HTTP, with the tiny random model and the real
//! all-MiniLM-L6-v2: a fraud message hands off before any answer, with the packet filled; an
//! out-of-scope question gets a clarifying question, then a handoff; a repeated question is a
//! loop; a human claims and replies; the password reset is answered citing its guideline and,
//! on an injected clock, counts as resolved after seven days without a return and as not
//! resolved when the contact comes back on day three; analytics and metrics show each outcome.
//!
//! The tiny model writes random text with a low likelihood, so the confidence floor is set
//! for it here; every other threshold is the demo's own.

mod common;

use std::future::IntoFuture;
use std::sync::Arc;

use anyhow::{Context, Result};
use enclave::agent::demo;
use enclave::agent::registry::{self, BuildContext};
use enclave::agent::{AgentService, ManualClock, SupportStore};
use enclave::api::{
    router, AppState, CorsConfig, HttpLimits, Lifecycle, ModelRegistry, ServedEmbedder,
};
use enclave::config::serve::ModelEntry;
use enclave::config::PathsConfig;
use enclave::engine::{EngineConfig, KvCacheMemory};
use enclave::knowledge::{Embedder, KnowledgeBase, OpenMode};
use serde_json::{json, Value};

const AGENT: &str = "/v1/agents/demo-retail";
const DAY_MS: i64 = 24 * 3_600_000;
/// A Tuesday, 15:00 UTC (10:00 at the demo's UTC-5): inside its business hours.
const T0: i64 = 1_795_532_400_000;

struct Server {
    base: String,
    http: ureq::Agent,
    clock: Arc<ManualClock>,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn start() -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let paths = PathsConfig::resolve(Some(dir.path().to_path_buf()), None);
    let engine = EngineConfig {
        kv_cache_memory: KvCacheMemory::Bytes(64 << 20),
        ..EngineConfig::default()
    };
    let entry = ModelEntry::from_flag("enclave-test-model");
    let entry = ModelEntry {
        path: None,
        ..entry
    };
    let (names, model) = enclave::server::load_model(&paths, &entry, &engine)?;
    let minilm = common::minilm_dir();
    let (enames, emodel) = enclave::server::load_embedding_model(&ModelEntry::from_flag(
        &format!("all-minilm-l6-v2={}", minilm.display()),
    ))?;
    let emodel = Arc::new(emodel);
    let registry = ModelRegistry::new(vec![(names, Arc::new(model))]).with_embedders(vec![(
        enames,
        Arc::new(ServedEmbedder {
            model: emodel.clone(),
            created: 0,
        }),
    )]);
    let embedder: Arc<dyn Embedder> = emodel.clone();
    let kb = Arc::new(KnowledgeBase::open(
        &paths.knowledge_dir(),
        vec![embedder.clone()],
        OpenMode::ReadWrite,
    )?);
    let clock = Arc::new(ManualClock::new(T0));
    let mut service = AgentService::new(
        SupportStore::open(&paths.support_db())?,
        Arc::new(enclave::server::engine_generator(&registry)),
        clock.clone(),
        Some(paths.agents_dir()),
    );
    service.build_context = BuildContext {
        embedder: Some(embedder.clone()),
        kb: Some(kb.clone()),
    };
    service.model_names = registry.by_name.keys().cloned().collect();
    let (mut def, text) = demo::definition(&service.catalog())?;
    def.thresholds.confidence_floor = toml::Spanned::new(0..0, 0.1);
    let retriever = demo::retriever(Some(&kb), Some(embedder.model_id()))?;
    // The knowledge base sizes full-context knowledge in SQL exactly as the loaded text would.
    let loaded = enclave::agent::retrieval::estimated_tokens(&retriever.full_text()?);
    assert_eq!(retriever.full_text_tokens()?, loaded);
    assert!(loaded > 10_000, "{loaded}");
    let rt = registry::build(
        def,
        text,
        &service.build_context,
        &service.store,
        Some(retriever),
    )?;
    service.install(rt);
    let state = AppState::new(
        Default::default(),
        HttpLimits::default(),
        Arc::new(Lifecycle::default()),
    );
    state.install_knowledge(kb);
    state.install_agents(Arc::new(service));
    state.install_models(registry);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(axum::serve(listener, router(state, &CorsConfig::default())).into_future());
    Ok(Server {
        base: format!("http://{addr}"),
        http: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
        clock,
        _rt: rt,
        _dir: dir,
    })
}

impl Server {
    fn send(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut resp = match (method, body) {
            ("GET", _) => self.http.get(&url).call()?,
            ("PUT", Some(b)) => self
                .http
                .put(&url)
                .header("content-type", "application/toml")
                .send(b)?,
            (_, Some(b)) => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .send(b)?,
            _ => self.http.post(&url).send_empty()?,
        };
        Ok((resp.status().as_u16(), resp.body_mut().read_to_string()?))
    }

    fn json(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let (status, text) = self.send(method, path, body.map(|b| b.to_string()).as_deref())?;
        Ok((
            status,
            serde_json::from_str(&text).with_context(|| text.clone())?,
        ))
    }

    fn conversation(&self, contact: Option<&str>) -> Result<String> {
        let body = contact
            .map(|c| json!({ "contact_id": c }))
            .unwrap_or(json!({}));
        let (status, v) = self.json("POST", &format!("{AGENT}/conversations"), Some(body))?;
        assert_eq!(status, 200, "{v}");
        Ok(v["id"].as_str().context("id")?.to_string())
    }

    /// One turn, as JSON.
    fn say(&self, conv: &str, text: &str) -> Result<Value> {
        let (status, v) = self.json(
            "POST",
            &format!("{AGENT}/conversations/{conv}/messages"),
            Some(json!({ "content": text, "stream": false })),
        )?;
        assert_eq!(status, 200, "{v}");
        Ok(v)
    }
}

fn kind(turn: &Value) -> &str {
    turn["messages"][0]["kind"].as_str().unwrap_or("")
}

fn reason(turn: &Value) -> &str {
    turn["handoff"]["reason"].as_str().unwrap_or("")
}

/// SSE events as (name, data).
fn sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

#[test]
fn demo_retail_end_to_end() -> Result<()> {
    let s = start()?;

    // A fraud message: handed off before any answer, over SSE, with the packet filled.
    let c = s.conversation(Some("carol"))?;
    let (status, body) = s.send(
        "POST",
        &format!("{AGENT}/conversations/{c}/messages"),
        Some(&json!({ "content": "Someone used my credit card without my permission to buy jackets" }).to_string()),
    )?;
    assert_eq!(status, 200);
    let events = sse(&body);
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert!(
        names.contains(&"message.delta") && names.contains(&"handoff"),
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"done"));
    let handoff = &events
        .iter()
        .find(|e| e.0 == "handoff")
        .context("handoff")?
        .1;
    assert_eq!(handoff["reason"], "hard_escalation:fraud");
    let (_, h) = s.json(
        "GET",
        &format!("/admin/handoffs/{}", handoff["id"].as_str().unwrap()),
        None,
    )?;
    let p = &h["packet"];
    assert!(p["summary"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
    assert_eq!(p["customer"]["contact_id"], "carol");
    assert!(p["reason"]["explanation"]
        .as_str()
        .unwrap()
        .contains("fraud"));
    assert_eq!(
        p["transcript"].as_array().map(Vec::len),
        Some(2),
        "greeting and message"
    );
    let (_, t) = s.json("GET", &format!("{AGENT}/conversations/{c}"), None)?;
    let actions: Vec<&str> = t["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["action"].as_str())
        .collect();
    assert_eq!(actions, ["handoff"], "no answer path was taken: {t}");

    // Out of scope: one clarifying question, then a handoff.
    let c = s.conversation(None)?;
    let r = s.say(
        &c,
        "Can you recommend a good pizza place near the train station?",
    )?;
    assert_eq!(kind(&r), "clarify", "{r}");
    let r = s.say(
        &c,
        "What will the weather be like in Lisbon tomorrow afternoon?",
    )?;
    assert_eq!(reason(&r), "out_of_scope", "{r}");

    // A repeated question: a loop handoff.
    let c = s.conversation(None)?;
    s.say(
        &c,
        "the promo code I got by email says it is invalid at checkout",
    )?;
    let r = s.say(
        &c,
        "The promo code I got by email says it is invalid at checkout!",
    )?;
    assert_eq!(reason(&r), "loop", "{r}");

    // A request for a human; a human claims it and replies into the same conversation.
    let c = s.conversation(Some("dave"))?;
    let r = s.say(&c, "I'd like to talk to a real person please")?;
    assert_eq!(reason(&r), "customer_request");
    let id = r["handoff"]["id"]
        .as_str()
        .context("handoff id")?
        .to_string();
    let (status, list) = s.json("GET", "/admin/handoffs?status=waiting", None)?;
    assert_eq!(status, 200);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["id"] == id.as_str()));
    let (status, claimed) = s.json(
        "POST",
        &format!("/admin/handoffs/{id}/claim"),
        Some(json!({ "by": "sam" })),
    )?;
    assert_eq!((status, claimed["status"].as_str()), (200, Some("claimed")));
    let (status, _) = s.json(
        "POST",
        &format!("/admin/handoffs/{id}/claim"),
        Some(json!({ "by": "alex" })),
    )?;
    assert_eq!(status, 409);
    let (status, _) = s.json(
        "POST",
        &format!("/admin/handoffs/{id}/reply"),
        Some(json!({ "by": "sam", "content": "Hi, I'm Sam. How can I help?" })),
    )?;
    assert_eq!(status, 200);
    let (_, t) = s.json("GET", &format!("{AGENT}/conversations/{c}"), None)?;
    let last = t["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["role"].as_str(), last["author"].as_str()),
        (Some("human"), Some("sam"))
    );
    assert_eq!(t["status"], "claimed");

    // The password reset: answered with the right guideline cited, no handoff.
    let question = "I forgot my password and can't log in, how do I get a new one?";
    let alice = s.conversation(Some("alice"))?;
    let r = s.say(&alice, question)?;
    assert_eq!(kind(&r), "answer", "{r}");
    assert!(r["handoff"].is_null());
    assert_eq!(r["intent"]["intent"], "recover_password", "{r}");
    let titles: Vec<&str> = r["messages"][0]["citations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["title"].as_str())
        .collect();
    assert_eq!(titles, ["Recover Password"], "{r}");
    let bob = s.conversation(Some("bob"))?;
    assert_eq!(kind(&s.say(&bob, question)?), "answer");
    s.clock.advance_ms(3 * DAY_MS);
    let bob2 = s.conversation(Some("bob"))?;
    assert_eq!(
        kind(&s.say(
            &bob2,
            "I still can't remember my password, can you help me reset it"
        )?),
        "answer"
    );
    s.clock.advance_ms(8 * DAY_MS);

    // Bad input.
    let (status, e) = s.json(
        "POST",
        &format!("{AGENT}/conversations/{alice}/messages"),
        Some(json!({ "content": "  " })),
    )?;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("content"))
    );
    let (status, _) = s.json(
        "POST",
        &format!("{AGENT}/conversations/{alice}/messages"),
        Some(json!({ "content": "a".repeat(100_000) })),
    )?;
    assert_eq!(status, 400);
    let (status, _) = s.json("POST", "/v1/agents/nobody/conversations", Some(json!({})))?;
    assert_eq!(status, 404);
    let c = s.conversation(None)?;
    let r = s.say(&c, "Как мне сбросить пароль от моей учётной записи?")?;
    assert_eq!(kind(&r), "notice");
    let (status, e) = s.send(
        "PUT",
        "/admin/agents/shop",
        Some("name = \"shop\"\n\n[thresholds]\nconfidence_flor = 0.3\n"),
    )?;
    assert_eq!(status, 400, "{e}");
    assert!(
        e.contains("shop.toml:4") && e.contains("confidence_flor"),
        "{e}"
    );

    // Analytics reflect every outcome.
    let (status, a) = s.json("GET", &format!("{AGENT}/analytics"), None)?;
    assert_eq!(status, 200, "{a}");
    let o = &a["totals"]["outcomes"];
    assert_eq!(
        o["resolved"], 2,
        "alice, and bob's second conversation: {a}"
    );
    assert_eq!(o["returned"], 1, "bob came back on day 3: {a}");
    assert_eq!(o["handed_off"], 4, "{a}");
    let reasons = &a["totals"]["handoff_reasons"];
    for r in [
        "hard_escalation:fraud",
        "out_of_scope",
        "loop",
        "customer_request",
    ] {
        assert_eq!(reasons[r], 1, "{r}: {a}");
    }
    assert_eq!(a["intents"]["recover_password"]["conversations"], 3);
    assert!(!a["coverage_gaps"].as_array().unwrap().is_empty(), "{a}");
    let (_, m) = s.send("GET", "/metrics", None)?;
    assert!(m.contains("enclave_agent_handoffs_total{agent=\"demo-retail\",reason=\"hard_escalation:fraud\"} 1"), "{m}");

    // An OpenAI client talks to the agent through chat completions, carrying the history.
    let (status, r) = s.json(
        "POST",
        "/v1/chat/completions",
        Some(json!({ "model": "agent:demo-retail", "messages": [{ "role": "user", "content": question }] })),
    )?;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["agent"]["kind"], "answer");
    assert!(r["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Sources:\n[1] Recover Password"));
    let (_, r) = s.json(
        "POST",
        "/v1/chat/completions",
        Some(json!({ "model": "agent:demo-retail", "messages": [
            { "role": "user", "content": "Can you recommend a good pizza place?" },
            { "role": "assistant", "content": "I want to be sure I help with the right thing. Could you tell me a little more about what you need?" },
            { "role": "user", "content": "Which pizza toppings are the best ones?" }
        ] })),
    )?;
    assert_eq!(
        r["agent"]["handoff"]["reason"], "out_of_scope",
        "the clarification in the history counts: {r}"
    );
    Ok(())
}
