//! Chat templates rendered by transformers (tests/make_fixtures.py) against ours: the same
//! text for every case, the same error where the template fails, and, where the fixture names
//! a tokenizer, the same ids from `encode_chat`.

mod tokenizer_support;

use enclave::tokenizer::{
    ChatInput, ChatTemplate, SpecialTokenKind, SpecialTokens, Tokenizer, TokenizerConfig,
};
use serde_json::Value;
use tokenizer_support::{fixtures_dir, ids, json_files, load, read_json, shared_data};

/// Cases whose difference is understood and cannot be removed with minijinja, each with the
/// exact way our text relates to transformers' (checked, so that any other change still fails).
///
/// functionary-v3.1 writes `"..."|safe + description`: in Jinja2 `|safe` makes a markupsafe
/// `Markup`, and `Markup + str` HTML-escapes the plain operand, so transformers' prompt holds
/// `&#34;Zürich&#34;` and an escaped JSON schema. minijinja's `+` never escapes (its safe strings
/// only matter to auto-escaping, which chat templates do not use), and it offers no hook into
/// operators. Our text must equal transformers' with markupsafe's five entities unescaped.
/// How our text must relate to transformers' for a known difference.
type Relation = fn(&str) -> String;

const KNOWN_DIFFERENCES: &[(&str, &str, Relation)] = &[
    ("meetkai-functionary-medium-v3.1", "tools", html_unescape),
    (
        "meetkai-functionary-medium-v3.1",
        "tool_call_roundtrip_string_args",
        html_unescape,
    ),
];

/// Undoes markupsafe's `escape`.
fn html_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Python dicts keep insertion order, and templates print tool schemas with `tojson`: without
/// serde_json's `preserve_order` feature, every tool schema would come out with sorted keys.
#[test]
fn json_objects_keep_their_key_order() {
    let value: Value = serde_json::from_str(r#"{"type": "function", "function": {}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&String> = value
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .collect();
    assert_eq!(
        keys,
        ["type", "function"],
        "serde_json is built without its `preserve_order` feature: add \
         `serde_json = {{ version = \"1\", features = [\"preserve_order\"] }}` to Cargo.toml"
    );
}

/// The template text a fixture names: a `.jinja` file, or the `chat_template` of a
/// tokenizer_config.json (the named one when it is a list).
fn template_source(fixture: &Value) -> (String, String) {
    let rel = fixture["template_source"].as_str().unwrap_or_default();
    let path = shared_data().join(rel);
    let origin = path.display().to_string();
    if rel.ends_with(".jinja") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{origin}: {e}"));
        return (text, origin);
    }
    let config = read_json(&path);
    let text = match (&config["chat_template"], fixture["template_key"].as_str()) {
        (Value::String(s), _) => s.clone(),
        (Value::Array(list), Some(key)) => list
            .iter()
            .find(|t| t["name"] == key)
            .and_then(|t| t["template"].as_str())
            .unwrap_or_else(|| panic!("{origin}: no template named {key}"))
            .to_string(),
        other => panic!("{origin}: unexpected chat_template {other:?}"),
    };
    (text, origin)
}

/// The named special tokens, the standard ones and the model-specific ones (Gemma 3's
/// `boi_token`...), which transformers passes as template variables.
fn special_tokens(fixture: &Value) -> SpecialTokens {
    let mut special = SpecialTokens::default();
    for (key, value) in fixture["special_tokens"].as_object().into_iter().flatten() {
        let Some(text) = value.as_str() else { continue };
        match SpecialTokenKind::ALL.iter().find(|k| k.attribute() == key) {
            Some(&kind) => special.set_content(kind, Some(text.to_string())),
            None => special.set_model_specific(key, text.to_string()),
        }
    }
    special
}

fn chat_input(case: &Value, now: chrono::NaiveDateTime) -> ChatInput {
    ChatInput {
        messages: case["messages"].as_array().cloned().unwrap_or_default(),
        tools: case["tools"].as_array().cloned(),
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
        kwargs: case["kwargs"].as_object().cloned().unwrap_or_default(),
        now: Some(now),
    }
}

struct Subject<'a> {
    template: &'a ChatTemplate,
    special: &'a SpecialTokens,
    tokenizer: Option<&'a Tokenizer>,
    /// Whether the template is the tokenizer's own, so that the tokenizer's own path
    /// (`apply_chat_template`, `encode_chat`) is the one under test.
    own: bool,
}

fn check_case(
    subject: &Subject<'_>,
    case: &Value,
    input: &ChatInput,
    known: Option<Relation>,
) -> Option<String> {
    let rendered = match (subject.own, subject.tokenizer) {
        (true, Some(tok)) => tok.apply_chat_template(input),
        _ => subject.template.render(input, subject.special),
    };
    match (
        &rendered,
        case["expected_text"].as_str(),
        case["expected_error"].as_str(),
    ) {
        (Ok(got), Some(want), _) if known.is_none() && got == want => {}
        (Ok(got), Some(want), _) if known.is_some_and(|f| got == &f(want) && got != want) => {
            return None
        }
        (Ok(got), Some(want), _) => {
            return Some(format!(
                "text differs:\n--- got\n{got}\n--- want\n{want}\n---"
            ))
        }
        (Err(e), _, Some(want)) if e.to_string().contains(want) => return None,
        (Err(e), _, want) => return Some(format!("error {e} (want {want:?})")),
        (Ok(got), None, want) => return Some(format!("rendered {got:?}, want error {want:?}")),
    }
    let (Some(tok), Some(want)) = (subject.tokenizer, case["expected_ids"].as_array()) else {
        return None;
    };
    let want = ids(&Value::Array(want.clone()));
    let got = match (subject.own, &rendered) {
        (true, _) => tok.encode_chat(input),
        (false, Ok(text)) => tok.encode(text, false),
        (false, Err(_)) => return None,
    };
    match got {
        Ok(got) => {
            let got: Vec<u32> = got.into_iter().map(|id| id.0).collect();
            (got != want).then(|| format!("ids differ: got {got:?}, want {want:?}"))
        }
        Err(e) => Some(format!("encode_chat: {e}")),
    }
}

#[test]
fn chat_templates_render_like_transformers() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in json_files(&fixtures_dir("chat_templates")) {
        let fixture = read_json(&path);
        let name = fixture["name"].as_str().unwrap_or_default().to_string();
        let (source, origin) = template_source(&fixture);
        let template = match ChatTemplate::new(source.clone(), origin) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let special = special_tokens(&fixture);
        let now_text = fixture["now"].as_str().unwrap_or_default();
        let now = chrono::NaiveDateTime::parse_from_str(now_text, "%Y-%m-%dT%H:%M:%S")
            .unwrap_or_else(|e| panic!("{name}: bad now {now_text:?}: {e}"));
        let tokenizer = fixture["tokenizer"].as_str().map(load);
        // Where the fixture's special tokens come from a real tokenizer folder, ours must
        // read the same from it (with no tokenizer.json, from its configuration alone).
        let config_dir = fixture["template_source"]
            .as_str()
            .filter(|s| s.starts_with("tokenizers/"))
            .and_then(|s| shared_data().join(s).parent().map(|p| p.to_path_buf()));
        let ours = match (&tokenizer, &config_dir) {
            (Some(tok), _) => Some(tok.special_tokens().clone()),
            (None, Some(dir)) => TokenizerConfig::from_dir(dir)
                .map(|c| c.special_tokens)
                .map_err(|e| failures.push(format!("{name}: {e}")))
                .ok(),
            (None, None) => None,
        };
        if let Some(ours) = ours {
            let ours: Vec<_> = ours.template_variables().collect();
            let theirs: Vec<_> = special.template_variables().collect();
            if ours != theirs {
                failures.push(format!("{name}: special tokens {ours:?}, want {theirs:?}"));
            }
        }
        for case in fixture["cases"].as_array().into_iter().flatten() {
            checked += 1;
            let input = chat_input(case, now);
            let own = tokenizer.as_ref().is_some_and(|tok| {
                tok.chat_template_for(input.tools.is_some())
                    .is_ok_and(|t| t.source() == source)
            });
            let subject = Subject {
                template: &template,
                special: &special,
                tokenizer: tokenizer.as_ref(),
                own,
            };
            let case_name = case["name"].as_str().unwrap_or_default();
            let known = KNOWN_DIFFERENCES
                .iter()
                .find(|(n, c, _)| *n == name && *c == case_name)
                .map(|(_, _, f)| *f);
            if let Some(problem) = check_case(&subject, case, &input, known) {
                failures.push(format!("{name} / {case_name}: {problem}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} chat template cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
