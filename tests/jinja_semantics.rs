//! Small templates that pin one Jinja2/Python behaviour each (printing, tojson, string methods,
//! filters, tests, loop controls, whitespace control, errors), rendered by transformers'
//! chat-template environment (tests/make_jinja_semantics.py) and by ours.

mod tokenizer_support;

use enclave::tokenizer::{ChatInput, ChatTemplate, SpecialTokens};
use serde_json::Value;
use tokenizer_support::{fixtures_dir, read_json};

#[test]
fn templates_behave_like_jinja2() {
    let path = fixtures_dir("jinja_semantics.json");
    let fixture = read_json(&path);
    let now_text = fixture["now"].as_str().unwrap_or_default();
    let now = chrono::NaiveDateTime::parse_from_str(now_text, "%Y-%m-%dT%H:%M:%S")
        .unwrap_or_else(|e| panic!("bad now {now_text:?}: {e}"));
    let mut failures = Vec::new();
    let cases = fixture["cases"].as_array().cloned().unwrap_or_default();
    assert!(!cases.is_empty(), "no cases in {}", path.display());
    for case in &cases {
        let source = case["template"].as_str().unwrap_or_default();
        let mut kwargs = case["vars"].as_object().cloned().unwrap_or_default();
        let messages = kwargs
            .remove("messages")
            .and_then(|m| m.as_array().cloned());
        let input = ChatInput {
            messages: messages.unwrap_or_default(),
            kwargs,
            now: Some(now),
            ..ChatInput::default()
        };
        let rendered = ChatTemplate::new(source.to_string(), "semantics".to_string())
            .and_then(|t| t.render(&input, &SpecialTokens::default()));
        let want_text = case["expected_text"].as_str();
        let want_error = case["expected_error"].as_str();
        match (&rendered, want_text, want_error) {
            (Ok(got), Some(want), _) if got == want => {}
            (Err(e), None, Some(want)) if e.to_string().contains(want) => {}
            (got, _, _) => failures.push(format!(
                "{source:?}:\n    got  {got:?}\n    want {:?}",
                want_text
                    .map(Value::from)
                    .or(want_error.map(|e| Value::from(format!("error {e}"))))
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
