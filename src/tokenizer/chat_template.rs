//! Chat templates: the Jinja programs that turn a conversation into a prompt.
//!
//! Owns `ChatTemplate` (one compiled template) and `ChatInput` (what it renders). Depends on
//! minijinja, `jinja_compat`, `jinja_filters`, `template_source` and `config::SpecialTokens`;
//! it must not depend on the `tokenizers` crate: rendering produces text, encoding is the
//! caller's job.
//!
//! Invariant: `render` produces exactly the text transformers' `apply_chat_template(...,
//! tokenize=False)` produces for the same input (Jinja2 with trim_blocks, lstrip_blocks, loop
//! controls, transformers' `tojson`, `raise_exception` and `strftime_now`, and its
//! normalisation of the messages), or returns an error naming the template's origin.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};
use serde_json::Map;

use super::config::SpecialTokens;
use super::error::TokenizerError;
use super::jinja_compat::{self, OrderedMap};
use super::jinja_filters;
use super::template_source::prepare_source;

/// The name the template is compiled under; minijinja errors end with `(in chat_template:LINE)`.
const TEMPLATE_NAME: &str = "chat_template";
/// The render-time variable through which `strftime_now` learns the frozen clock.
const NOW_VARIABLE: &str = "__enclave_strftime_now";
const NOW_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.f";
/// Names transformers' `apply_chat_template` reserves; a template variable cannot use them.
const RESERVED_KWARGS: [&str; 3] = ["messages", "tools", "add_generation_prompt"];
/// Where a message's reasoning may be, in transformers' order of preference.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// Everything a chat template renders: the conversation and the switches around it.
#[derive(Debug, Clone, Default)]
pub struct ChatInput {
    /// OpenAI-style messages: objects with `role`, `content` and optionally `tool_calls`,
    /// `tool_call_id`, `name`, `reasoning_content`...
    pub messages: Vec<serde_json::Value>,
    /// JSON schemas of the tools the model may call; `None` renders as `tools = none`.
    pub tools: Option<Vec<serde_json::Value>>,
    pub add_generation_prompt: bool,
    /// Extra template variables (`enable_thinking`, `documents`, `date_string`...); they
    /// override the special-token variables of the same name.
    pub kwargs: Map<String, serde_json::Value>,
    /// The clock `strftime_now` reads; `None` means the local time now.
    pub now: Option<chrono::NaiveDateTime>,
}

/// The message a template raised with `raise_exception`, carried through minijinja's error
/// chain so that it can be told apart from the template's own bugs.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// One compiled chat template.
pub struct ChatTemplate {
    source: String,
    origin: String,
    env: Environment<'static>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `origin` says where it came from (a file, a configuration field)
    /// and is named in every error about it.
    pub fn new(source: String, origin: String) -> Result<Self, TokenizerError> {
        let mut env = jinja2_environment();
        env.add_template_owned(TEMPLATE_NAME, prepare_source(&source))
            .map_err(|e| TokenizerError::TemplateSyntax {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        Ok(ChatTemplate {
            source,
            origin,
            env,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders the conversation, with the special tokens as variables (`bos_token`...).
    pub fn render(
        &self,
        input: &ChatInput,
        special: &SpecialTokens,
    ) -> Result<String, TokenizerError> {
        let context = self.context(input, special)?;
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| self.render_error(e))?;
        template.render(context).map_err(|e| self.render_error(e))
    }

    /// The variables transformers hands to the template, in its precedence order.
    fn context(
        &self,
        input: &ChatInput,
        special: &SpecialTokens,
    ) -> Result<BTreeMap<String, Value>, TokenizerError> {
        if input.messages.is_empty() {
            return Err(TokenizerError::InvalidChatInput {
                message: "cannot apply a chat template to an empty conversation; \
                          provide at least one message"
                    .to_string(),
            });
        }
        let mut vars = BTreeMap::new();
        for (name, content) in special.template_variables() {
            vars.insert(name.to_string(), Value::from(content));
        }
        vars.insert("documents".to_string(), Value::from(()));
        for (key, value) in &input.kwargs {
            if RESERVED_KWARGS.contains(&key.as_str()) {
                return Err(TokenizerError::InvalidChatInput {
                    message: format!(
                        "template variable `{key}` is reserved; set it through ChatInput's \
                         own field instead of kwargs"
                    ),
                });
            }
            vars.insert(key.clone(), jinja_compat::json_to_value(value));
        }
        let messages = normalize_messages(&input.messages)?;
        vars.insert("messages".to_string(), Value::from(messages));
        let tools = match &input.tools {
            Some(tools) => tools.iter().map(jinja_compat::json_to_value).collect(),
            None => Value::from(()),
        };
        vars.insert("tools".to_string(), tools);
        vars.insert(
            "add_generation_prompt".to_string(),
            Value::from(input.add_generation_prompt),
        );
        let now = input
            .now
            .unwrap_or_else(|| chrono::Local::now().naive_local());
        vars.insert(
            NOW_VARIABLE.to_string(),
            Value::from(now.format(NOW_FORMAT).to_string()),
        );
        Ok(vars)
    }

    fn render_error(&self, err: Error) -> TokenizerError {
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(&err);
        while let Some(e) = source {
            if let Some(raised) = e.downcast_ref::<RaisedException>() {
                return TokenizerError::TemplateRaised {
                    origin: self.origin.clone(),
                    message: raised.0.clone(),
                };
            }
            source = e.source();
        }
        let mut message = err.to_string();
        if let Some(python) = err.detail().and_then(jinja_filters::python_error_text) {
            message = format!("{message}; under Python: {python}");
        }
        TokenizerError::TemplateRender {
            origin: self.origin.clone(),
            message,
        }
    }
}

/// An environment that behaves like transformers' `ImmutableSandboxedEnvironment`.
fn jinja2_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // minijinja keeps the detail that names an undefined variable only in debug mode, which
    // defaults to on in debug builds alone; template errors must read the same in release.
    env.set_debug(true);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(false)
        .build();
    if let Ok(syntax) = syntax {
        env.set_syntax(syntax);
    }
    // Jinja2's default `Undefined`: prints empty, iterates empty, fails on attribute access.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, _state, value| {
        let mut text = String::new();
        jinja_compat::py_str(value, &mut text)?;
        out.write_str(&text)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write template output"))
    });
    jinja_filters::install(&mut env);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

fn raise_exception(message: Value) -> Result<Value, Error> {
    let mut text = String::new();
    jinja_compat::py_str(&message, &mut text)?;
    Err(Error::new(ErrorKind::InvalidOperation, text.clone()).with_source(RaisedException(text)))
}

fn strftime_now(state: &State, format: &str) -> Result<String, Error> {
    let now = state
        .lookup(NOW_VARIABLE)
        .and_then(|v| v.as_str().map(str::to_string))
        .and_then(|s| chrono::NaiveDateTime::parse_from_str(&s, NOW_FORMAT).ok())
        .unwrap_or_else(|| chrono::Local::now().naive_local());
    jinja_filters::strftime(&now, format)
}

/// transformers' normalisation: every message must be an object, keys whose value is null
/// are dropped, and reasoning found under any of its names is offered as both `thinking`
/// and `reasoning_content`.
fn normalize_messages(messages: &[serde_json::Value]) -> Result<Vec<Value>, TokenizerError> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let serde_json::Value::Object(fields) = message else {
            return Err(TokenizerError::InvalidChatInput {
                message: format!(
                    "message {i} must be an object with `role` and `content`, found {message}"
                ),
            });
        };
        let mut entries: Vec<(String, Value)> = fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), jinja_compat::json_to_value(v)))
            .collect();
        alias_reasoning(&mut entries);
        let entries = entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect();
        out.push(Value::from_object(OrderedMap::new(entries)));
    }
    Ok(out)
}

/// Python's `{"thinking": r, **message, "reasoning_content": r}`: `thinking` comes first
/// unless the message has it, and `reasoning_content` keeps its place or goes last.
fn alias_reasoning(entries: &mut Vec<(String, Value)>) {
    let reasoning = REASONING_FIELDS
        .iter()
        .find_map(|name| entries.iter().find(|(k, _)| k == name))
        .map(|(_, v)| v.clone());
    let Some(reasoning) = reasoning else {
        return;
    };
    if !entries.iter().any(|(k, _)| k == "thinking") {
        entries.insert(0, ("thinking".to_string(), reasoning.clone()));
    }
    match entries.iter_mut().find(|(k, _)| k == "reasoning_content") {
        Some(entry) => entry.1 = reasoning,
        None => entries.push(("reasoning_content".to_string(), reasoning)),
    }
}

/// Keeps `ChatTemplate` shareable across engine and API threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ChatTemplate>();
    check::<Arc<ChatTemplate>>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, input: &ChatInput) -> Result<String, TokenizerError> {
        let t = ChatTemplate::new(source.to_string(), "test".to_string())?;
        t.render(input, &SpecialTokens::default())
    }

    fn one_message() -> ChatInput {
        ChatInput {
            messages: vec![json!({"role": "user", "content": "hi", "x": null})],
            ..ChatInput::default()
        }
    }

    #[test]
    fn raise_exception_keeps_its_message() {
        let err = render(
            "{{ raise_exception('roles must alternate') }}",
            &one_message(),
        );
        match err {
            Err(TokenizerError::TemplateRaised { origin, message }) => {
                assert_eq!(origin, "test");
                assert_eq!(message, "roles must alternate");
            }
            other => panic!("expected TemplateRaised, got {other:?}"),
        }
    }

    #[test]
    fn syntax_error_names_origin() {
        let err = ChatTemplate::new("{% if %}".to_string(), "my/origin.jinja".to_string());
        match err {
            Err(e @ TokenizerError::TemplateSyntax { .. }) => {
                assert!(e.to_string().contains("my/origin.jinja"), "{e}")
            }
            other => panic!("expected TemplateSyntax, got {other:?}"),
        }
    }

    #[test]
    fn python_printing_and_null_keys() {
        let out = render(
            "{{ messages[0] }}|{{ true }}|{{ none }}|{{ messages[0].x is defined }}|{{ 1.0 }}",
            &one_message(),
        )
        .unwrap();
        assert_eq!(out, "{'role': 'user', 'content': 'hi'}|True|None|False|1.0");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let mut input = one_message();
        input
            .kwargs
            .insert("v".into(), json!({"b": [1, 2.5, "<é>"], "a": {}}));
        let out = render("{{ v|tojson }}\n{{ v|tojson(indent=2) }}", &input).unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, \"<é>\"], \"a\": {}}\n{\n  \"b\": [\n    1,\n    2.5,\n    \"<é>\"\n  ],\n  \"a\": {}\n}"
        );
    }

    #[test]
    fn generation_tags_are_plain_blocks() {
        let out = render("a{% generation %}b{%- endgeneration %}c", &one_message()).unwrap();
        assert_eq!(out, "abc");
    }

    #[test]
    fn strftime_now_uses_frozen_clock() {
        let mut input = one_message();
        input.now =
            chrono::NaiveDate::from_ymd_opt(2024, 7, 26).and_then(|d| d.and_hms_opt(12, 0, 0));
        let out = render("{{ strftime_now('%d %b %Y') }}", &input).unwrap();
        assert_eq!(out, "26 Jul 2024");
    }
}
