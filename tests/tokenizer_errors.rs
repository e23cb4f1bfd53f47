//! Bad tokenizer folders and bad templates: each fails with the error that names the file (or
//! the template's origin) and says what is wrong.

mod tokenizer_support;

use std::path::Path;

use enclave::tokenizer::{ChatInput, ChatTemplate, Tokenizer, TokenizerError};
use serde_json::json;
use tokenizer_support::tokenizer_dir;

/// A folder with a real tokenizer.json (a small one) and whatever else the test writes.
fn folder_with_tokenizer() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let src = tokenizer_dir("bge-small-en-v1.5").join("tokenizer.json");
    std::fs::copy(&src, dir.path().join("tokenizer.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
}

fn load_err(dir: &Path) -> TokenizerError {
    match Tokenizer::from_dir(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

fn hello() -> ChatInput {
    ChatInput {
        messages: vec![json!({"role": "user", "content": "hi"})],
        ..ChatInput::default()
    }
}

#[test]
fn missing_tokenizer_json_names_the_path() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let err = load_err(dir.path());
    assert!(matches!(err, TokenizerError::MissingFile { .. }), "{err:?}");
    let path = dir.path().join("tokenizer.json");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn malformed_tokenizer_json_is_reported() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "tokenizer.json", "{\"model\": [1, 2");
    let err = load_err(dir.path());
    assert!(matches!(err, TokenizerError::InvalidJson { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    write(
        dir.path(),
        "tokenizer.json",
        "{\"model\": {\"type\": \"NoSuchModel\"}}",
    );
    let err = load_err(dir.path());
    assert!(
        matches!(err, TokenizerError::InvalidTokenizerJson { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn invalid_tokenizer_config_names_the_file() {
    let dir = folder_with_tokenizer();
    write(
        dir.path(),
        "tokenizer_config.json",
        "{\"bos_token\": \"<s>\",}",
    );
    let err = load_err(dir.path());
    assert!(matches!(err, TokenizerError::InvalidJson { .. }), "{err:?}");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

#[test]
fn wrong_field_type_names_the_field() {
    let dir = folder_with_tokenizer();
    write(
        dir.path(),
        "tokenizer_config.json",
        "{\"chat_template\": 5}",
    );
    let err = load_err(dir.path());
    let text = err.to_string();
    assert!(
        matches!(err, TokenizerError::InvalidField { .. }),
        "{err:?}"
    );
    assert!(
        text.contains("tokenizer_config.json") && text.contains("chat_template"),
        "{text}"
    );

    write(
        dir.path(),
        "tokenizer_config.json",
        "{\"add_bos_token\": \"yes\"}",
    );
    let text = load_err(dir.path()).to_string();
    assert!(
        text.contains("add_bos_token") && text.contains("true or false"),
        "{text}"
    );
}

#[test]
fn template_syntax_error_names_the_origin() {
    let dir = folder_with_tokenizer();
    write(
        dir.path(),
        "chat_template.jinja",
        "{% for m in messages %}{{ m.content }",
    );
    let err = load_err(dir.path());
    assert!(
        matches!(err, TokenizerError::TemplateSyntax { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chat_template.jinja"), "{err}");

    let err = ChatTemplate::new("{% if %}".into(), "inline test template".into())
        .err()
        .unwrap_or_else(|| panic!("a broken template compiled"));
    assert!(err.to_string().contains("inline test template"), "{err}");
}

#[test]
fn raise_exception_surfaces_its_message() {
    let dir = folder_with_tokenizer();
    write(
        dir.path(),
        "chat_template.jinja",
        "{% if messages[0].role != 'system' %}{{ raise_exception('A system message is required!') }}{% endif %}",
    );
    let tok = Tokenizer::from_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    match tok.apply_chat_template(&hello()) {
        Err(TokenizerError::TemplateRaised { message, origin }) => {
            assert_eq!(message, "A system message is required!");
            assert!(origin.contains("chat_template.jinja"), "{origin}");
        }
        other => panic!("expected TemplateRaised, got {other:?}"),
    }
    assert!(tok.encode_chat(&hello()).is_err());
}

#[test]
fn render_errors_name_the_origin() {
    let template = ChatTemplate::new(
        "{{ messages[0].content.nope.deeper }}".into(),
        "origin-x".into(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = template
        .render(&hello(), &Default::default())
        .err()
        .unwrap_or_else(|| panic!("rendering should fail"));
    assert!(
        matches!(err, TokenizerError::TemplateRender { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("origin-x"), "{err}");
}

#[test]
fn missing_or_unusable_templates_are_errors() {
    let dir = folder_with_tokenizer();
    let tok = Tokenizer::from_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        tok.apply_chat_template(&hello()),
        Err(TokenizerError::NoChatTemplate)
    ));

    write(
        dir.path(),
        "tokenizer_config.json",
        &json!({"chat_template": [{"name": "rag", "template": "x"}]}).to_string(),
    );
    let tok = Tokenizer::from_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let err = tok.apply_chat_template(&hello()).err();
    assert!(
        matches!(err, Some(TokenizerError::NamedTemplateMissing { .. })),
        "{err:?}"
    );

    write(
        dir.path(),
        "tokenizer_config.json",
        &json!({"chat_template": [
            {"name": "default", "template": "plain"},
            {"name": "tool_use", "template": "tools"}
        ]})
        .to_string(),
    );
    let tok = Tokenizer::from_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        tok.apply_chat_template(&hello()).ok().as_deref(),
        Some("plain")
    );
    let with_tools = ChatInput {
        tools: Some(vec![]),
        ..hello()
    };
    assert_eq!(
        tok.apply_chat_template(&with_tools).ok().as_deref(),
        Some("tools")
    );

    let empty = ChatInput::default();
    assert!(matches!(
        tok.apply_chat_template(&empty),
        Err(TokenizerError::InvalidChatInput { .. })
    ));
}
