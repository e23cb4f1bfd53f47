use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use super::*;
use crate::tokenizer::token_bytes::token_bytes;

const QWEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/tokenizers/qwen2.5-instruct/tokenizer.json"
);
const MISTRAL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/tokenizers/mistral-7b-instruct-v0.3-resaved/tokenizer.json"
);

/// A tokenizer with its grammar vocabulary, as the engine would hold them for one model.
struct Model {
    tok: Tokenizer,
    vocab: Arc<GrammarVocab>,
    bytes: Vec<Vec<u8>>,
    eos: Vec<u32>,
    /// Length of the model's logits row: Qwen2.5's embedding is padded past its tokenizer.
    logits_len: usize,
    /// Tokens that can close a string, object or array, and EOS: the biased sampler's
    /// favourites, so that random walks through free text end within the budget.
    closers: Vec<bool>,
}

fn load(path: &str, eos_names: &[&str], logits_len: usize) -> Model {
    let tok = Tokenizer::from_file(path).expect("test tokenizer");
    let eos: Vec<u32> = eos_names
        .iter()
        .map(|n| tok.token_to_id(n).expect("eos token"))
        .collect();
    let (bytes, special) = token_bytes(&tok);
    let closers = bytes
        .iter()
        .zip(&special)
        .enumerate()
        .map(|(id, (b, &s))| {
            eos.contains(&(id as u32)) || (!s && b.iter().any(|c| matches!(c, b'"' | b'}' | b']')))
        })
        .collect();
    let vocab = Arc::new(GrammarVocab::new(bytes.clone(), special, eos.clone()).expect("vocab"));
    let logits_len = logits_len.max(bytes.len());
    Model {
        tok,
        vocab,
        bytes,
        eos,
        logits_len,
        closers,
    }
}

fn qwen() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(QWEN, &["<|im_end|>", "<|endoftext|>"], 151_936))
}

fn mistral() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(MISTRAL, &["</s>"], 32_768))
}

struct Run {
    text: String,
    ended: bool,
}

/// Drives a matcher like a random-weight model: fresh seeded random logits each step, masked,
/// then the best remaining token. With `closer_bias`, half of the steps favour closing
/// tokens, since uniformly random text inside a JSON string would rarely close it in time.
fn drive(m: &Model, spec: &GrammarSpec, seed: u64, closer_bias: bool, budget: usize) -> Run {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut matcher = GrammarMatcher::new(&m.vocab, spec).expect("compile");
    let mut logits = vec![0f32; m.logits_len];
    let mut ids = Vec::new();
    let mut ended = false;
    for _ in 0..budget {
        let boost = closer_bias && rng.random_bool(0.5);
        for (i, l) in logits.iter_mut().enumerate() {
            *l = rng.random::<f32>()
                + if boost && m.closers.get(i) == Some(&true) {
                    2.0
                } else {
                    0.0
                };
        }
        matcher.mask_logits(&mut logits).expect("mask");
        let (token, best) =
            logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (i, &l)| if l > acc.1 { (i, l) } else { acc },
                );
        assert!(best.is_finite(), "mask allowed nothing after {ids:?}");
        let token = token as u32;
        matcher.consume(token).expect("consume an allowed token");
        if m.eos.contains(&token) {
            ended = true;
            break;
        }
        ids.push(token);
    }
    if ended {
        assert!(matcher.is_accepting());
    }
    let text = m.tok.decode(&ids, false).expect("decode");
    // The grammar saw our token bytes; the tokenizer's own decoder must agree with them.
    let ours: Vec<u8> = ids
        .iter()
        .flat_map(|&t| m.bytes[t as usize].clone())
        .collect();
    assert_eq!(
        text.as_bytes(),
        &ours[..],
        "token_bytes disagree with the tokenizer's decoder"
    );
    Run { text, ended }
}

fn enum_bool_int_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "color": { "type": "string", "enum": ["red", "green", "blue"] },
            "urgent": { "type": "boolean" },
            "priority": { "type": "integer", "minimum": 0, "maximum": 100 }
        },
        "required": ["color", "urgent", "priority"],
        "additionalProperties": false
    })
}

fn check_enum_bool_int(v: &Value) {
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 3, "exactly the three properties: {v}");
    assert!(
        ["red", "green", "blue"].contains(&obj["color"].as_str().expect("color is a string")),
        "{v}"
    );
    assert!(obj["urgent"].is_boolean(), "{v}");
    let p = obj["priority"].as_i64().expect("priority is an integer");
    assert!((0..=100).contains(&p), "{v}");
}

fn assert_valid_runs(m: &Model, spec: &GrammarSpec, closer_bias: bool, check: impl Fn(&Value)) {
    for seed in 0..4 {
        let run = drive(m, spec, seed, closer_bias, 300);
        assert!(
            run.ended,
            "seed {seed}: no EOS within 300 tokens: {:?}",
            run.text
        );
        let v: Value = serde_json::from_str(&run.text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}: {:?}", run.text));
        check(&v);
    }
}

#[test]
fn random_sampling_matches_enum_bool_int_schema() {
    let spec = GrammarSpec::JsonSchema(enum_bool_int_schema());
    for m in [qwen(), mistral()] {
        assert_valid_runs(m, &spec, false, check_enum_bool_int);
    }
}

#[test]
fn random_sampling_gives_a_json_object() {
    for m in [qwen(), mistral()] {
        assert_valid_runs(m, &GrammarSpec::JsonObject, true, |v| {
            assert!(v.is_object(), "{v}")
        });
    }
}

fn weather_params() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": { "type": "string" },
            "unit": { "$ref": "#/$defs/Unit" }
        },
        "required": ["city", "unit"],
        "additionalProperties": false,
        "$defs": { "Unit": { "type": "string", "enum": ["celsius", "fahrenheit"] } }
    })
}

fn alarm_params() -> Value {
    json!({
        "type": "object",
        "properties": {
            "hour": { "type": "integer", "minimum": 0, "maximum": 23 },
            "enabled": { "type": "boolean" }
        },
        "required": ["hour", "enabled"],
        "additionalProperties": false
    })
}

fn check_tool_calls(v: &Value) {
    let calls = v.as_array().expect("an array");
    assert!(!calls.is_empty(), "at least one call");
    for call in calls {
        let call = call.as_object().expect("a call is an object");
        assert_eq!(call.len(), 2, "name and parameters only: {v}");
        let params = call["parameters"]
            .as_object()
            .expect("parameters is an object");
        match call["name"].as_str() {
            Some("get_weather") => {
                assert_eq!(params.len(), 2, "{v}");
                assert!(params["city"].is_string(), "{v}");
                assert!(
                    ["celsius", "fahrenheit"].contains(&params["unit"].as_str().expect("unit")),
                    "{v}"
                );
            }
            Some("set_alarm") => {
                assert_eq!(params.len(), 2, "{v}");
                assert!(
                    (0..=23).contains(&params["hour"].as_i64().expect("hour")),
                    "{v}"
                );
                assert!(params["enabled"].is_boolean(), "{v}");
            }
            other => panic!("unknown tool {other:?} in {v}"),
        }
    }
}

#[test]
fn random_sampling_gives_required_tool_calls() {
    let (weather, alarm) = (weather_params(), alarm_params());
    let schema = required_tool_calls_schema(&[("get_weather", &weather), ("set_alarm", &alarm)])
        .expect("schema");
    let spec = GrammarSpec::JsonSchema(schema);
    for m in [qwen(), mistral()] {
        assert_valid_runs(m, &spec, true, check_tool_calls);
    }
}

#[test]
fn named_tool_choice_is_the_parameters_schema() {
    assert_valid_runs(
        qwen(),
        &GrammarSpec::JsonSchema(alarm_params()),
        false,
        |v| check_tool_calls(&json!([{ "name": "set_alarm", "parameters": v }])),
    );
}

#[test]
fn required_tool_calls_schema_rebases_refs_and_needs_a_tool() {
    assert!(matches!(
        required_tool_calls_schema(&[]),
        Err(GrammarError::InvalidSchema(_))
    ));
    let params = json!({
        "properties": {
            "enum": { "$ref": "#/$defs/A" },
            "b": { "const": { "$ref": "#/not/a/ref" } },
            "c": { "anyOf": [{ "$ref": "#" }, { "$ref": "other.json#/x" }] }
        }
    });
    let s = required_tool_calls_schema(&[("f", &params)]).expect("schema");
    let p = &s["$defs"]["tool_0"]["properties"];
    assert_eq!(p["enum"]["$ref"], "#/$defs/tool_0/$defs/A");
    assert_eq!(p["b"]["const"]["$ref"], "#/not/a/ref");
    assert_eq!(p["c"]["anyOf"][0]["$ref"], "#/$defs/tool_0");
    assert_eq!(p["c"]["anyOf"][1]["$ref"], "other.json#/x");
    assert_eq!(s["items"]["anyOf"][0]["properties"]["name"]["const"], "f");
}

#[test]
fn invalid_schemas_are_rejected() {
    let m = qwen();
    for schema in [
        json!({ "type": "nosuchtype" }),
        json!({ "type": "string", "format": "nosuchformat" }),
        json!({ "type": "integer", "minimum": 5, "maximum": 1 }),
        json!(false),
        json!(42),
    ] {
        match GrammarMatcher::new(&m.vocab, &GrammarSpec::JsonSchema(schema.clone())) {
            Err(GrammarError::InvalidSchema(msg)) => assert!(!msg.is_empty()),
            Err(e) => panic!("{schema}: wrong error {e}"),
            Ok(_) => panic!("{schema}: accepted"),
        }
    }
    assert!(GrammarMatcher::new(&m.vocab, &GrammarSpec::JsonSchema(json!(true))).is_ok());
}

fn encode(m: &Model, text: &str) -> Vec<u32> {
    m.tok
        .encode(text, false)
        .expect("encode")
        .get_ids()
        .to_vec()
}

fn feed(matcher: &mut GrammarMatcher, tokens: &[u32]) {
    for &t in tokens {
        matcher.consume(t).expect("allowed token");
    }
}

fn allowed(matcher: &mut GrammarMatcher, len: usize) -> Vec<u32> {
    let mut logits = vec![0f32; len];
    matcher.mask_logits(&mut logits).expect("mask");
    (0..len as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect()
}

#[test]
fn disallowed_tokens_are_errors_and_leave_the_matcher_usable() {
    let m = qwen();
    let mut matcher =
        GrammarMatcher::new(&m.vocab, &GrammarSpec::JsonSchema(enum_bool_int_schema()))
            .expect("compile");
    let hello = encode(m, "hello")[0];
    // Checked both without a mask (validated by the parser) and with one (read from the mask).
    assert!(matches!(
        matcher.consume(hello),
        Err(GrammarError::Matcher(_))
    ));
    allowed(&mut matcher, m.logits_len);
    assert!(matches!(
        matcher.consume(hello),
        Err(GrammarError::Matcher(_))
    ));
    assert!(
        matcher.consume(m.eos[0]).is_err(),
        "EOS before the document is complete"
    );
    assert!(
        matcher.consume(m.vocab.n_tokens() as u32).is_err(),
        "id past the tokenizer"
    );
    feed(
        &mut matcher,
        &encode(m, r#"{"color":"red","urgent":true,"priority":100}"#),
    );
    assert!(matcher.is_accepting());
    // Complete: only EOS may follow, and ids past the tokenizer never.
    assert_eq!(allowed(&mut matcher, m.logits_len + 64), {
        let mut e = m.eos.clone();
        e.sort();
        e
    });
    matcher.consume(m.eos[1]).expect("EOS once complete");
    assert!(matcher.consume(hello).is_err(), "nothing after EOS");
    assert_eq!(allowed(&mut matcher, m.logits_len).len(), m.eos.len());
}

#[test]
fn fork_gives_independent_matchers() {
    let m = qwen();
    let spec = GrammarSpec::JsonSchema(enum_bool_int_schema());
    let mut a = GrammarMatcher::new(&m.vocab, &spec).expect("compile");
    let prefix = encode(m, r#"{"color":""#);
    feed(&mut a, &prefix);
    let at_fork = allowed(&mut a, m.logits_len);
    let mut b = a.fork().expect("fork");
    feed(&mut a, &encode(m, r#"red","urgent":true,"priority":7}"#));
    assert!(a.is_accepting());
    assert!(
        !b.is_accepting(),
        "the fork did not see the parent's tokens"
    );
    assert_eq!(allowed(&mut b, m.logits_len), at_fork);
    feed(&mut b, &encode(m, "blue"));
    let mut c = b.fork().expect("fork of a fork");
    feed(&mut b, &encode(m, r#"","urgent":false,"priority":99}"#));
    assert!(b.is_accepting());
    assert!(!c.is_accepting());
    assert!(
        c.consume(encode(m, "}")[0]).is_err(),
        "still inside the string"
    );
    feed(&mut c, &encode(m, r#"","urgent":false,"priority":1}"#));
    assert!(c.is_accepting());
}

#[test]
fn whitespace_is_bounded_even_if_the_client_asks_otherwise() {
    let m = qwen();
    let schema = json!({ "type": "object", "x-guidance": { "whitespace_flexible": true } });
    let mut matcher =
        GrammarMatcher::new(&m.vocab, &GrammarSpec::JsonSchema(schema)).expect("compile");
    let space = m.tok.token_to_id("Ġ").expect("byte-level space");
    assert_eq!(m.bytes[space as usize], b" ");
    feed(&mut matcher, &encode(m, "{"));
    matcher.consume(space).expect("one space in a gap");
    assert!(matcher.consume(space).is_err(), "a second space in one gap");
    let newline = m.tok.token_to_id("Ċ").expect("byte-level newline");
    assert!(matcher.consume(newline).is_err(), "a newline in a gap");
    feed(&mut matcher, &encode(m, "}"));
    assert!(matcher.is_accepting());
    assert!(
        matcher.consume(space).is_err(),
        "no whitespace after the document"
    );
}

/// A one-byte-per-token vocabulary makes masks exact and readable.
fn byte_vocab() -> Arc<GrammarVocab> {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    tokens.push(b"<eos>".to_vec());
    let mut special = vec![false; 256];
    special.push(true);
    Arc::new(GrammarVocab::new(tokens, special, vec![256]).expect("vocab"))
}

#[test]
fn masks_are_exact_on_a_byte_vocabulary() {
    let vocab = byte_vocab();
    let mut m = GrammarMatcher::new(
        &vocab,
        &GrammarSpec::JsonSchema(json!({ "type": "boolean" })),
    )
    .expect("compile");
    assert_eq!(allowed(&mut m, 300), vec![b'f' as u32, b't' as u32]);
    feed(&mut m, b"true".map(u32::from).as_slice());
    assert_eq!(allowed(&mut m, 300), vec![256]);
    let mut m = GrammarMatcher::new(&vocab, &GrammarSpec::JsonObject).expect("compile");
    assert_eq!(allowed(&mut m, 257), vec![b'{' as u32]);
}

#[test]
fn bad_vocabularies_are_rejected() {
    let tokens = || vec![b"a".to_vec(), b"b".to_vec()];
    for r in [
        GrammarVocab::new(tokens(), vec![false], vec![1]),
        GrammarVocab::new(tokens(), vec![false; 2], vec![]),
        GrammarVocab::new(tokens(), vec![false; 2], vec![2]),
        GrammarVocab::new(vec![], vec![], vec![0]),
        GrammarVocab::new(
            vec![vec![b' '; 2000], b"e".to_vec()],
            vec![false; 2],
            vec![1],
        ),
    ] {
        assert!(matches!(r, Err(GrammarError::Vocab(_))), "{r:?}");
    }
}

#[test]
fn shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<GrammarVocab>();
    send::<GrammarMatcher>();
}

/// Mask + consume cost per token on Qwen2.5's 151k vocabulary, and the one-off costs.
/// Run alone with `--nocapture` to see the numbers undisturbed by the other tests.
#[test]
fn mask_and_consume_time_on_qwen() {
    let tok = Tokenizer::from_file(QWEN).expect("tokenizer");
    let t = Instant::now();
    let (bytes, special) = token_bytes(&tok);
    let t_bytes = t.elapsed();
    let t = Instant::now();
    let vocab = Arc::new(GrammarVocab::new(bytes, special, qwen().eos.clone()).expect("vocab"));
    let t_vocab = t.elapsed();
    let m = qwen();
    let spec = GrammarSpec::JsonSchema(json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "age": { "type": "integer", "minimum": 0, "maximum": 150 },
            "email": { "type": "string" },
            "tags": { "type": "array", "items": { "type": "string", "enum": ["a", "b", "c"] } },
            "active": { "type": "boolean" }
        },
        "required": ["name", "age", "email", "tags", "active"],
        "additionalProperties": false
    }));
    let t = Instant::now();
    let compiles = 10;
    for _ in 0..compiles {
        GrammarMatcher::new(&vocab, &spec).expect("compile");
    }
    let t_compile = t.elapsed() / compiles;
    let (mut mask_t, mut consume_t) = (Vec::new(), Vec::new());
    let mut logits = vec![0f32; m.logits_len];
    for seed in 0..8 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut matcher = GrammarMatcher::new(&vocab, &spec).expect("compile");
        for _ in 0..300 {
            // Few boosts, so that most steps are spent inside free-text strings (the widest masks).
            let boost = rng.random_bool(0.05);
            for (i, l) in logits.iter_mut().enumerate() {
                *l = rng.random::<f32>()
                    + if boost && m.closers.get(i) == Some(&true) {
                        2.0
                    } else {
                        0.0
                    };
            }
            let t = Instant::now();
            matcher.mask_logits(&mut logits).expect("mask");
            mask_t.push(t.elapsed());
            let token = logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (i, &l)| if l > acc.1 { (i, l) } else { acc },
                )
                .0 as u32;
            let t = Instant::now();
            matcher.consume(token).expect("consume");
            consume_t.push(t.elapsed());
            if m.eos.contains(&token) {
                break;
            }
        }
    }
    let total: Vec<Duration> = mask_t
        .iter()
        .zip(&consume_t)
        .map(|(a, b)| *a + *b)
        .collect();
    let stats = |v: &[Duration]| {
        let mut s = v.to_vec();
        s.sort();
        let mean = s.iter().sum::<Duration>() / s.len() as u32;
        format!(
            "mean {mean:?} p50 {:?} p99 {:?} max {:?}",
            s[s.len() / 2],
            s[s.len() * 99 / 100],
            s[s.len() - 1]
        )
    };
    eprintln!(
        "qwen2.5, {} tokens: token_bytes {t_bytes:?}, GrammarVocab::new {t_vocab:?}, compile {t_compile:?}\n  \
         {} steps: mask {}\n  consume {}\n  mask+consume {}",
        vocab.n_tokens(),
        total.len(),
        stats(&mask_t),
        stats(&consume_t),
        stats(&total)
    );
    let mean = total.iter().sum::<Duration>() / total.len() as u32;
    assert!(
        mean < Duration::from_millis(100),
        "mask+consume {mean:?} per token"
    );
}
