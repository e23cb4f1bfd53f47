//! Every route of the API, in process, over real HTTP against the built-in tiny model: the
//! answers' shapes, OpenAI's error JSON with the right status for each failure, streaming,
//! and that a client who disconnects frees its sequence and KV blocks at once.

use std::future::IntoFuture;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use enclave::api::auth::{ApiKeys, KeyDigest};
use enclave::api::{
    router, AppState, CorsConfig, HttpLimits, Lifecycle, ModelRegistry, ServedModel,
};
use enclave::config::serve::ModelEntry;
use enclave::config::PathsConfig;
use enclave::engine::{EngineConfig, EngineHandle, KvCacheMemory};
use serde_json::{json, Value};

const MODEL: &str = "enclave-test-model";
const KEY: &str = "route-test-key";

struct TestServer {
    base: String,
    state: AppState,
    handle: EngineHandle,
    agent: ureq::Agent,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

struct Options {
    keys: bool,
    limits: HttpLimits,
    engine: EngineConfig,
    install: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            keys: false,
            limits: HttpLimits::default(),
            engine: EngineConfig {
                kv_cache_memory: KvCacheMemory::Bytes(16 << 20),
                ..EngineConfig::default()
            },
            install: true,
        }
    }
}

fn start(o: Options) -> Result<TestServer> {
    let dir = tempfile::tempdir()?;
    let paths = PathsConfig::resolve(Some(dir.path().to_path_buf()), None);
    let entry = ModelEntry {
        path: None,
        name: None,
        aliases: vec!["support".into()],
        tool_call_parser: None,
    };
    let (names, model) = enclave::server::load_model(&paths, &entry, &o.engine)?;
    serve(names, model, o, dir)
}

fn serve(
    names: Vec<String>,
    model: ServedModel,
    o: Options,
    dir: tempfile::TempDir,
) -> Result<TestServer> {
    let handle = model.handle.clone();
    let keys = if o.keys {
        ApiKeys::new(vec![KeyDigest::of(KEY)])
    } else {
        ApiKeys::default()
    };
    let state = AppState::new(keys, o.limits, Arc::new(Lifecycle::default()));
    let model: Arc<ServedModel> = Arc::new(model);
    if o.install {
        state.install_models(ModelRegistry::new(vec![(names, model)]));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = router(state.clone(), &CorsConfig::default());
    rt.spawn(axum::serve(listener, app).into_future());
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    Ok(TestServer {
        base: format!("http://{addr}"),
        state,
        handle,
        agent,
        _rt: rt,
        _dir: dir,
    })
}

impl TestServer {
    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.post_raw(path, &body.to_string(), Some(KEY))
    }

    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = req.send(body)?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string()?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {KEY}"))
            .call()?;
        Ok((resp.status().as_u16(), resp.body_mut().read_to_string()?))
    }

    fn get_json(&self, path: &str) -> Result<(u16, Value)> {
        let (status, text) = self.get(path)?;
        Ok((status, serde_json::from_str(&text)?))
    }
}

fn chat(max_tokens: u32) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hello there"}],
           "max_tokens": max_tokens, "temperature": 0})
}

/// The OpenAI error object, checked for shape; returns (type, param, code).
fn error_fields(body: &Value) -> (String, Option<String>, Option<String>) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let s = |v: &Value| v.as_str().map(str::to_string);
    (
        s(&e["type"]).unwrap_or_default(),
        s(&e["param"]),
        s(&e["code"]),
    )
}

/// `data:` payloads of an SSE body, up to and excluding `[DONE]` (which must end it).
fn sse_events(text: &str) -> Result<Vec<Value>> {
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    if data.last() != Some(&"[DONE]") {
        bail!("the stream does not end with [DONE]: {text}");
    }
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).context("a chunk is not JSON"))
        .collect()
}

#[test]
fn chat_answers_whole_and_streamed_with_the_same_text() -> Result<()> {
    let s = start(Options::default())?;
    let (status, whole) = s.post("/v1/chat/completions", &chat(12))?;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["refusal"].is_null());
    let usage = &whole["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );
    assert!(usage["prompt_tokens_details"]["cached_tokens"].is_u64());

    let mut body = chat(12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, text) = s.post("/v1/chat/completions", &body)?;
    assert_eq!(status, 200);
    let chunks = sse_events(text.as_str().unwrap_or_default())?;
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        Some(streamed.as_str()),
        choice["message"]["content"].as_str()
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().context("no chunks")?;
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );
    // The second identical prompt is served from the prefix cache.
    assert!(last["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() > Some(0));
    Ok(())
}

#[test]
fn completions_take_every_prompt_form() -> Result<()> {
    let s = start(Options::default())?;
    let base = json!({"model": MODEL, "max_tokens": 4, "temperature": 0});
    for prompt in [
        json!("abc"),
        json!(["abc", "de"]),
        json!([97, 98]),
        json!([[97], [98, 99]]),
    ] {
        let mut body = base.clone();
        body["prompt"] = prompt.clone();
        let (status, r) = s.post("/v1/completions", &body)?;
        assert_eq!(status, 200, "{prompt}: {r}");
        let want = if prompt.as_array().is_some_and(|a| !a[0].is_u64()) {
            2
        } else {
            1
        };
        assert_eq!(r["choices"].as_array().map(Vec::len), Some(want), "{r}");
        assert_eq!(r["object"], "text_completion");
    }
    let mut echo = base.clone();
    echo["prompt"] = json!("abc");
    echo["echo"] = json!(true);
    let (_, r) = s.post("/v1/completions", &echo)?;
    assert!(
        r["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("abc")),
        "{r}"
    );
    for refused in [json!({"suffix": "x"}), json!({"best_of": 3})] {
        let mut body = echo.clone();
        body.as_object_mut()
            .context("object")?
            .extend(refused.as_object().cloned().unwrap_or_default());
        let (status, r) = s.post("/v1/completions", &body)?;
        assert_eq!(status, 400, "{r}");
    }
    let mut unknown = base.clone();
    unknown["prompt"] = json!("x");
    unknown["frobnicate"] = json!(1);
    let (status, r) = s.post("/v1/completions", &unknown)?;
    assert_eq!(
        (status, error_fields(&r).1.as_deref()),
        (400, Some("frobnicate"))
    );
    Ok(())
}

#[test]
fn models_tokenize_health_metrics_and_openapi() -> Result<()> {
    let s = start(Options::default())?;
    let (status, list) = s.get_json("/v1/models")?;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, vec![MODEL, "support"]);
    let (status, alias) = s.get_json("/v1/models/support")?;
    assert_eq!((status, alias["root"].as_str()), (200, Some(MODEL)));
    let (status, missing) = s.get_json("/v1/models/nope")?;
    assert_eq!(
        (status, error_fields(&missing).2.as_deref()),
        (404, Some("model_not_found"))
    );

    let (status, t) = s.post("/v1/tokenize", &json!({"model": MODEL, "prompt": "hello"}))?;
    assert_eq!(status, 200);
    assert_eq!(t["count"], 5);
    let (_, d) = s.post(
        "/v1/detokenize",
        &json!({"model": MODEL, "tokens": t["tokens"]}),
    )?;
    assert_eq!(d["prompt"], "hello");
    let (status, _) = s.post(
        "/v1/detokenize",
        &json!({"model": MODEL, "tokens": [100000]}),
    )?;
    assert_eq!(status, 400);

    assert_eq!(s.get("/health")?.0, 200);
    assert_eq!(s.get("/ready")?.0, 200);
    s.post("/v1/chat/completions", &chat(3))?;
    let (status, metrics) = s.get("/metrics")?;
    assert_eq!(status, 200);
    for name in [
        "enclave_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
        "enclave_prompt_tokens_total{model=\"enclave-test-model\"}",
        "enclave_time_to_first_token_seconds_bucket",
        "enclave_inter_token_latency_seconds_bucket",
        "enclave_e2e_request_latency_seconds_count{model=\"enclave-test-model\"} 1",
        "enclave_num_requests_waiting",
        "enclave_kv_cache_usage_ratio",
        "enclave_prefix_cache_hit_rate",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }

    let (status, doc) = s.get_json("/openapi.json")?;
    assert_eq!(status, 200);
    let paths: Vec<&String> = doc["paths"].as_object().context("paths")?.keys().collect();
    for route in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/tokenize",
        "/v1/detokenize",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/v1/agents",
        "/v1/agents/{agent}/conversations",
        "/v1/agents/{agent}/conversations/{id}/messages",
        "/v1/agents/{agent}/analytics",
        "/admin/agents/{name}",
        "/admin/handoffs/{id}/claim",
    ] {
        assert!(
            paths.iter().any(|p| *p == route),
            "{route} is not described"
        );
    }
    Ok(())
}

/// (name, body, API key, status, error type, param)
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    u16,
    &'a str,
    Option<&'a str>,
);

#[test]
fn every_failure_is_openai_error_json_with_its_status() -> Result<()> {
    let s = start(Options {
        keys: true,
        limits: HttpLimits {
            max_body_bytes: 4096,
            max_concurrent_per_key: 0,
        },
        ..Options::default()
    })?;
    let cases: Vec<Case> = vec![
        ("bad JSON", "{\"model\": ".into(), Some(KEY), 400, "invalid_request_error", None),
        ("missing field", json!({"model": MODEL}).to_string(), Some(KEY), 400, "invalid_request_error", Some("messages")),
        ("wrong type", json!({"model": MODEL, "messages": [], "n": "two"}).to_string(), Some(KEY), 400, "invalid_request_error", Some("n")),
        ("out of range", json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_p": 3}).to_string(), Some(KEY), 400, "invalid_request_error", Some("top_p")),
        ("temperature", json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 5}).to_string(), Some(KEY), 400, "invalid_request_error", Some("temperature")),
        ("unknown model", json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).to_string(), Some(KEY), 404, "invalid_request_error", Some("model")),
        ("no key", chat(2).to_string(), None, 401, "authentication_error", None),
        ("wrong key", chat(2).to_string(), Some("wrong"), 401, "authentication_error", None),
        ("too large", json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string(), Some(KEY), 413, "invalid_request_error", None),
        ("image part", json!({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).to_string(), Some(KEY), 400, "invalid_request_error", Some("messages[0].content")),
        ("tool_choice without tools", json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}).to_string(), Some(KEY), 400, "invalid_request_error", Some("tool_choice")),
    ];
    for (name, body, key, status, kind, param) in cases {
        let (got, r) = s.post_raw("/v1/chat/completions", &body, key)?;
        assert_eq!(got, status, "{name}: {r}");
        let (t, p, _) = error_fields(&r);
        assert_eq!((t.as_str(), p.as_deref()), (kind, param), "{name}: {r}");
    }
    let mut req = s
        .agent
        .delete(format!("{}/v1/chat/completions", s.base))
        .header("authorization", format!("Bearer {KEY}"))
        .call()?;
    assert_eq!(req.status().as_u16(), 405);
    let body: Value = serde_json::from_str(&req.body_mut().read_to_string()?)?;
    assert_eq!(error_fields(&body).2.as_deref(), Some("method_not_allowed"));
    let (status, text) = s.get("/v1/nope")?;
    assert_eq!(status, 404);
    error_fields(&serde_json::from_str(&text)?);
    Ok(())
}

#[test]
fn a_prompt_over_the_context_is_context_length_exceeded_with_the_numbers() -> Result<()> {
    let s = start(Options {
        limits: HttpLimits {
            max_body_bytes: 1 << 20,
            max_concurrent_per_key: 0,
        },
        ..Options::default()
    })?;
    let long = "hello ".repeat(1000);
    let (status, r) = s.post(
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": [{"role": "user", "content": long}]}),
    )?;
    assert_eq!(status, 400, "{r}");
    assert_eq!(
        error_fields(&r).2.as_deref(),
        Some("context_length_exceeded")
    );
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("4096"), "{message}");
    Ok(())
}

#[test]
fn shutting_down_is_503_and_not_ready_until_models_load() -> Result<()> {
    let s = start(Options {
        install: false,
        ..Options::default()
    })?;
    assert_eq!(s.get("/health")?.0, 200);
    assert_eq!(s.get("/ready")?.0, 503);
    let (status, _) = s.post("/v1/chat/completions", &chat(2))?;
    assert_eq!(status, 503);
    let s = start(Options::default())?;
    s.state.inner.lifecycle.begin_shutdown();
    let (status, r) = s.post("/v1/chat/completions", &chat(2))?;
    assert_eq!(status, 503, "{r}");
    assert_eq!(s.get("/ready")?.0, 503);
    Ok(())
}

/// Waits until the engine has no running sequence and no referenced block.
fn wait_idle(handle: &EngineHandle) -> Result<()> {
    let start = Instant::now();
    loop {
        let m = handle.metrics();
        if m.num_running == 0 && m.num_waiting == 0 && m.kv_blocks_used == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the engine still holds work after the client left: {m:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_disconnects_frees_its_sequence_and_blocks() -> Result<()> {
    let s = start(Options::default())?;
    for stream in [true, false] {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "go on"}],
                          "max_tokens": 4000, "ignore_eos": true, "stream": stream})
        .to_string();
        let mut conn = TcpStream::connect(s.base.trim_start_matches("http://"))?;
        write!(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
        // Generation is under way once the engine reports a running sequence.
        let start = Instant::now();
        while s.handle.metrics().num_running == 0 {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the request never started");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if stream {
            let mut first = String::new();
            BufReader::new(&conn).read_line(&mut first)?;
            assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        }
        drop(conn);
        wait_idle(&s.handle)?;
    }
    Ok(())
}

#[test]
fn a_full_engine_queue_is_429_with_retry_after() -> Result<()> {
    let s = start(Options {
        engine: EngineConfig {
            max_num_seqs: 1,
            max_queue_len: 1,
            kv_cache_memory: KvCacheMemory::Bytes(16 << 20),
            ..EngineConfig::default()
        },
        ..Options::default()
    })?;
    let long = json!({"model": MODEL, "messages": [{"role": "user", "content": "go on"}],
                      "max_tokens": 4000, "ignore_eos": true, "stream": true})
    .to_string();
    let open = |s: &TestServer| -> Result<TcpStream> {
        let mut c = TcpStream::connect(s.base.trim_start_matches("http://"))?;
        write!(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{long}", long.len())?;
        Ok(c)
    };
    let running = open(&s)?;
    let start = Instant::now();
    while s.handle.metrics().num_running == 0 {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the first request never started");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let queued = open(&s)?;
    std::thread::sleep(Duration::from_millis(200));
    let mut resp = s
        .agent
        .post(format!("{}/v1/chat/completions", s.base))
        .header("content-type", "application/json")
        .send(chat(2).to_string())?;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let mut text = String::new();
    resp.body_mut().as_reader().read_to_string(&mut text)?;
    let body: Value = serde_json::from_str(&text)?;
    assert_eq!(error_fields(&body).0, "rate_limit_error");
    drop((running, queued));
    wait_idle(&s.handle)?;
    Ok(())
}

/// A model that writes a fixed script: the row at position `start - 1 + k` predicts
/// `script[k]`, and every other row predicts the end token. `start` is the prompt length, set
/// once a first request has reported it.
struct ScriptedLm {
    config: enclave::model::ModelConfig,
    script: Vec<u32>,
    end: u32,
    start: Arc<std::sync::atomic::AtomicUsize>,
}

impl enclave::model::CausalLm for ScriptedLm {
    fn config(&self) -> &enclave::model::ModelConfig {
        &self.config
    }

    fn weight_dtype(&self) -> enclave::model::WeightDtype {
        enclave::model::WeightDtype::F32
    }

    fn forward(
        &self,
        batch: &enclave::model::ForwardBatch,
        _kv: &mut enclave::model::KvCache,
    ) -> Result<candle_core::Tensor, enclave::model::ModelError> {
        let vocab = self.config.vocab_size;
        let start = self.start.load(std::sync::atomic::Ordering::SeqCst);
        let rows = batch.logits_indices();
        let mut logits = vec![0f32; rows.len() * vocab];
        for (r, &i) in rows.iter().enumerate() {
            let k = (batch.positions[i as usize] as usize + 1).checked_sub(start);
            let next = k
                .and_then(|k| self.script.get(k))
                .copied()
                .unwrap_or(self.end);
            logits[r * vocab + next as usize] = 10.0;
        }
        Ok(candle_core::Tensor::from_vec(
            logits,
            (rows.len(), vocab),
            &candle_core::Device::Cpu,
        )?)
    }
}

/// A server whose model answers with `script` once `start` is set to the prompt length.
fn scripted(script: &str) -> Result<(TestServer, Arc<std::sync::atomic::AtomicUsize>)> {
    let dir = tempfile::tempdir()?;
    enclave::builtin_model::write_model_dir(
        dir.path(),
        &enclave::builtin_model::BuiltinShape::tiny(),
        1,
    )?;
    let tokenizer = enclave::tokenizer::Tokenizer::from_dir(dir.path())?;
    let config = enclave::model::ModelConfig::from_file(&dir.path().join("config.json"))?;
    let end = tokenizer
        .token_to_id("<|im_end|>")
        .context("the end token")?;
    let start = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let model = ScriptedLm {
        config,
        script: tokenizer
            .encode(script, false)?
            .iter()
            .map(|t| t.0)
            .collect(),
        end: end.0,
        start: start.clone(),
    };
    let engine = EngineConfig {
        kv_cache_memory: KvCacheMemory::Bytes(16 << 20),
        ..EngineConfig::default()
    };
    let handle = enclave::engine::spawn_engine(Box::new(model), engine, vec![end])?;
    let source = tokenizer.chat_template_for(true)?.source().to_string();
    let served = ServedModel {
        id: MODEL.into(),
        handle,
        tokenizer: Arc::new(tokenizer),
        created: 0,
        tool_call_format: enclave::tokenizer::tool_calls::ToolCallFormat::detect(&source),
        defaults: Default::default(),
    };
    assert!(
        served.tool_call_format.is_some(),
        "the built-in template shows <tool_call>"
    );
    let server = serve(vec![MODEL.into()], served, Options::default(), dir)?;
    Ok((server, start))
}

fn weather_request(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "max_tokens": 200, "temperature": 0,
           "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}],
           "tools": [{"type": "function", "function": {"name": "get_weather",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
}

#[test]
fn auto_tool_calls_are_read_from_the_output_whole_and_streamed() -> Result<()> {
    let script = "Checking.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
    let (s, start) = scripted(script)?;
    let (status, probe) = s.post("/v1/chat/completions", &weather_request(false))?;
    assert_eq!(status, 200, "{probe}");
    let prompt_len = probe["usage"]["prompt_tokens"].as_u64().context("usage")? as usize;
    start.store(prompt_len, std::sync::atomic::Ordering::SeqCst);

    let (_, whole) = s.post("/v1/chat/completions", &weather_request(false))?;
    let choice = &whole["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{whole}");
    assert_eq!(choice["message"]["content"], "Checking.");
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .context("tool_calls")?;
    let args: Vec<Value> = calls
        .iter()
        .map(|c| serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("")))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        args,
        vec![json!({"city": "Paris"}), json!({"city": "Rome"})]
    );
    assert!(calls
        .iter()
        .all(|c| c["function"]["name"] == "get_weather" && c["type"] == "function"));
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    let (_, text) = s.post("/v1/chat/completions", &weather_request(true))?;
    let chunks = sse_events(text.as_str().unwrap_or_default())?;
    let mut content = String::new();
    let mut streamed: Vec<(String, String)> = Vec::new();
    for c in &chunks {
        let delta = &c["choices"][0]["delta"];
        content.push_str(delta["content"].as_str().unwrap_or(""));
        for t in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = t["index"].as_u64().context("index")? as usize;
            if i == streamed.len() {
                streamed.push((
                    t["function"]["name"]
                        .as_str()
                        .context("name first")?
                        .to_string(),
                    String::new(),
                ));
            }
            streamed[i]
                .1
                .push_str(t["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(content, "Checking.");
    let whole_calls: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap_or("").to_string(),
                c["function"]["arguments"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(streamed, whole_calls);
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));

    // Tool results go back through the chat template.
    let mut round_trip = weather_request(false);
    round_trip["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [calls[0]]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temp\": 21}"},
    ]);
    let (status, r) = s.post("/v1/chat/completions", &round_trip)?;
    assert_eq!(status, 200, "{r}");
    let (_, t) = s.post(
        "/v1/tokenize",
        &json!({"model": MODEL, "messages": round_trip["messages"]}),
    )?;
    let (_, rendered) = s.post(
        "/v1/detokenize",
        &json!({"model": MODEL, "tokens": t["tokens"]}),
    )?;
    let rendered = rendered["prompt"].as_str().unwrap_or_default();
    assert!(
        rendered.contains(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"
        ) && rendered.contains("<tool_response>\n{\"temp\": 21}\n</tool_response>"),
        "{rendered}"
    );
    Ok(())
}
