//! What a model directory says about its tokenizer beyond `tokenizer.json`:
//! `tokenizer_config.json`, `special_tokens_map.json` and the chat template files.
//!
//! Owns `TokenizerConfig`, `SpecialTokens` and `ChatTemplateSource`. Depends only on
//! `serde_json` and this module's error; it must not depend on the `tokenizers` crate or on
//! minijinja (it reads files, it does not compile or tokenize anything).
//!
//! Invariant: these files are read once, here, and every value is checked on the way in; a
//! field of the wrong type is an error naming the file and the field, never a silent default.
//! Absent files and absent fields take transformers' defaults.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::TokenizerError;
use crate::ids::TokenId;

/// The named special tokens, in the order transformers lists them
/// (`SPECIAL_TOKENS_ATTRIBUTES`). Chat templates see each as a variable of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialTokenKind {
    Bos,
    Eos,
    Unk,
    Sep,
    Pad,
    Cls,
    Mask,
}

impl SpecialTokenKind {
    pub const ALL: [SpecialTokenKind; 7] = [
        SpecialTokenKind::Bos,
        SpecialTokenKind::Eos,
        SpecialTokenKind::Unk,
        SpecialTokenKind::Sep,
        SpecialTokenKind::Pad,
        SpecialTokenKind::Cls,
        SpecialTokenKind::Mask,
    ];

    /// The configuration key and chat-template variable name, e.g. `bos_token`.
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialTokenKind::Bos => "bos_token",
            SpecialTokenKind::Eos => "eos_token",
            SpecialTokenKind::Unk => "unk_token",
            SpecialTokenKind::Sep => "sep_token",
            SpecialTokenKind::Pad => "pad_token",
            SpecialTokenKind::Cls => "cls_token",
            SpecialTokenKind::Mask => "mask_token",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One special token: its text and, once a vocabulary is known, its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    pub content: String,
    pub id: Option<TokenId>,
}

/// The named special tokens (`bos_token`, `eos_token`, ...) plus the additional ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    named: [Option<SpecialToken>; 7],
    /// Model-specific named tokens (`image_token`, `boi_token`...): the other `*_token` string
    /// fields of tokenizer_config.json and the entries of an `extra_special_tokens` object.
    /// transformers treats them as named special tokens, chat-template variables included.
    model_specific: Vec<(String, SpecialToken)>,
    /// `additional_special_tokens` (or an `extra_special_tokens` list): special, but
    /// transformers does not pass these to chat templates.
    pub additional: Vec<SpecialToken>,
}

impl SpecialTokens {
    pub fn get(&self, kind: SpecialTokenKind) -> Option<&SpecialToken> {
        self.named[kind.index()].as_ref()
    }

    pub fn set(&mut self, kind: SpecialTokenKind, token: Option<SpecialToken>) {
        self.named[kind.index()] = token;
    }

    /// Sets a token by its text alone (no id yet).
    pub fn set_content(&mut self, kind: SpecialTokenKind, content: Option<String>) {
        self.set(
            kind,
            content.map(|content| SpecialToken { content, id: None }),
        );
    }

    /// A model-specific named token, by its variable name (`image_token`...).
    pub fn model_specific(&self, name: &str) -> Option<&SpecialToken> {
        self.model_specific
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// Sets (or replaces) a model-specific named token.
    pub fn set_model_specific(&mut self, name: &str, content: String) {
        let token = SpecialToken { content, id: None };
        match self.model_specific.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = token,
            None => self.model_specific.push((name.to_string(), token)),
        }
    }

    /// Every named token, standard ones first, then the model-specific ones.
    pub fn all_named(&self) -> impl Iterator<Item = (&str, &SpecialToken)> + '_ {
        let standard = SpecialTokenKind::ALL
            .iter()
            .filter_map(|&kind| self.get(kind).map(|t| (kind.attribute(), t)));
        let specific = self.model_specific.iter().map(|(n, t)| (n.as_str(), t));
        standard.chain(specific)
    }

    pub fn bos(&self) -> Option<&SpecialToken> {
        self.get(SpecialTokenKind::Bos)
    }

    pub fn eos(&self) -> Option<&SpecialToken> {
        self.get(SpecialTokenKind::Eos)
    }

    pub fn unk(&self) -> Option<&SpecialToken> {
        self.get(SpecialTokenKind::Unk)
    }

    pub fn pad(&self) -> Option<&SpecialToken> {
        self.get(SpecialTokenKind::Pad)
    }

    /// `(variable name, text)` for every named token that is set: exactly what transformers'
    /// `special_tokens_map` hands to a chat template.
    pub fn template_variables(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.all_named().map(|(n, t)| (n, t.content.as_str()))
    }

    /// Fills in ids with `lookup`, leaving `None` where the text is not a token.
    pub fn resolve_ids(&mut self, lookup: impl Fn(&str) -> Option<TokenId>) {
        let named = self.named.iter_mut().flatten();
        let specific = self.model_specific.iter_mut().map(|(_, t)| t);
        for token in named.chain(specific).chain(self.additional.iter_mut()) {
            token.id = lookup(&token.content);
        }
    }
}

/// The text of one chat template and where it came from (a file, plus the template's name
/// when the configuration holds several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplateSource {
    /// `None` for the single, unnamed template; otherwise the name (`default`, `tool_use`, ...).
    pub name: Option<String>,
    pub source: String,
    /// Human-readable origin used in every error about this template.
    pub origin: String,
}

/// Everything besides `tokenizer.json` that changes how a tokenizer behaves.
#[derive(Debug, Clone, Default)]
pub struct TokenizerConfig {
    /// transformers' `clean_up_tokenization_spaces` (default `false`).
    pub clean_up_tokenization_spaces: bool,
    /// transformers' `clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`:
    /// transformers skips the clean-up for BPE models unless this is set.
    pub clean_up_for_bpe: bool,
    /// `add_bos_token` / `add_eos_token` when the file sets them: transformers then rebuilds
    /// the post-processor from them, overriding the one in `tokenizer.json`.
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub special_tokens: SpecialTokens,
    /// The chat templates, unnamed or named; empty when the model has none.
    pub chat_templates: Vec<ChatTemplateSource>,
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json`, `special_tokens_map.json`, `chat_template.jinja` and
    /// `additional_chat_templates/*.jinja` from `dir`; each is optional.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let config_path = dir.join("tokenizer_config.json");
        let raw = read_json_object(&config_path)?;
        let mut config = match &raw {
            Some(fields) => Self::from_fields(&config_path, fields)?,
            None => Self::default(),
        };
        // transformers reads special_tokens_map.json only for configurations that predate
        // `added_tokens_decoder`; newer ones carry the same information themselves.
        let legacy = raw
            .as_ref()
            .is_none_or(|fields| !fields.contains_key("added_tokens_decoder"));
        if legacy {
            let map_path = dir.join("special_tokens_map.json");
            if let Some(fields) = read_json_object(&map_path)? {
                read_special_tokens(&map_path, &fields, &mut config.special_tokens, true)?;
            }
        }
        let files = read_template_files(dir)?;
        if !files.is_empty() {
            // A template file beside the configuration wins over the configuration's own
            // `chat_template`, as in transformers.
            config.chat_templates = files;
        }
        Ok(config)
    }

    /// Reads the fields of an already parsed `tokenizer_config.json` (`path` names it in errors).
    pub fn from_fields(path: &Path, fields: &Map<String, Value>) -> Result<Self, TokenizerError> {
        let mut config = TokenizerConfig {
            clean_up_tokenization_spaces: read_bool(path, fields, "clean_up_tokenization_spaces")?
                .unwrap_or(false),
            clean_up_for_bpe: read_bool(
                path,
                fields,
                "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
            )?
            .unwrap_or(false),
            add_bos_token: read_bool(path, fields, "add_bos_token")?,
            add_eos_token: read_bool(path, fields, "add_eos_token")?,
            ..TokenizerConfig::default()
        };
        read_special_tokens(path, fields, &mut config.special_tokens, false)?;
        if let Some(value) = fields.get("chat_template") {
            config.chat_templates = read_config_templates(path, value)?;
        }
        Ok(config)
    }
}

/// Reads a JSON file that must hold an object; `Ok(None)` when the file does not exist.
pub(crate) fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>, TokenizerError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|source| TokenizerError::InvalidJson {
            path: path.to_path_buf(),
            source,
        })?;
    match value {
        Value::Object(fields) => Ok(Some(fields)),
        other => Err(TokenizerError::InvalidField {
            path: path.to_path_buf(),
            field: "(top level)".to_string(),
            problem: format!(
                "must be a JSON object, found {}; fix the file",
                json_type(&other)
            ),
        }),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, TokenizerError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenizerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_bool(
    path: &Path,
    fields: &Map<String, Value>,
    field: &str,
) -> Result<Option<bool>, TokenizerError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid_field(
            path,
            field,
            format!("must be true or false, found {}", json_type(other)),
        )),
    }
}

/// Reads the named special tokens, and `additional_special_tokens`. With `override_set`, a
/// value present in this file replaces one already read (special_tokens_map.json's role).
fn read_special_tokens(
    path: &Path,
    fields: &Map<String, Value>,
    special: &mut SpecialTokens,
    override_set: bool,
) -> Result<(), TokenizerError> {
    for kind in SpecialTokenKind::ALL {
        let field = kind.attribute();
        let Some(value) = fields.get(field) else {
            continue;
        };
        let content = token_content(path, field, value)?;
        if override_set && content.is_none() {
            continue;
        }
        special.set_content(kind, content);
    }
    read_model_specific_tokens(path, fields, special)?;
    for field in ["additional_special_tokens", "extra_special_tokens"] {
        match fields.get(field) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(Value::Array(items)) => read_token_list(path, field, items, special)?,
            Some(other) => {
                return Err(invalid_field(
                    path,
                    field,
                    format!("must be a list of tokens, found {}", json_type(other)),
                ))
            }
        }
    }
    Ok(())
}

/// transformers' model-specific named tokens: any other `*_token` field holding a token, and
/// the entries of an `extra_special_tokens` object.
fn read_model_specific_tokens(
    path: &Path,
    fields: &Map<String, Value>,
    special: &mut SpecialTokens,
) -> Result<(), TokenizerError> {
    let is_named = |key: &str| SpecialTokenKind::ALL.iter().any(|k| k.attribute() == key);
    for (key, value) in fields {
        let is_token = matches!(value, Value::String(_) | Value::Object(_));
        if key.ends_with("_token") && !is_named(key) && is_token {
            if let Some(content) = token_content(path, key, value)? {
                special.set_model_specific(key, content);
            }
        }
    }
    if let Some(Value::Object(extra)) = fields.get("extra_special_tokens") {
        for (key, value) in extra {
            let field = format!("extra_special_tokens.{key}");
            if let Some(content) = token_content(path, &field, value)? {
                special.set_model_specific(key, content);
            }
        }
    }
    Ok(())
}

fn read_token_list(
    path: &Path,
    field: &str,
    items: &[Value],
    special: &mut SpecialTokens,
) -> Result<(), TokenizerError> {
    for (i, item) in items.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        if let Some(content) = token_content(path, &item_field, item)? {
            if !special.additional.iter().any(|t| t.content == content) {
                special.additional.push(SpecialToken { content, id: None });
            }
        }
    }
    Ok(())
}

/// A token is written either as a string or as an `AddedToken` object with `content`.
fn token_content(
    path: &Path,
    field: &str,
    value: &Value,
) -> Result<Option<String>, TokenizerError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(obj) => match obj.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(invalid_field(
                path,
                field,
                "is an object without a string `content`; write the token as a string or as \
                 {\"content\": \"...\"}"
                    .to_string(),
            )),
        },
        other => Err(invalid_field(
            path,
            field,
            format!(
                "must be a string or an AddedToken object, found {}",
                json_type(other)
            ),
        )),
    }
}

/// `chat_template` is a string, or a list of `{"name", "template"}` objects.
fn read_config_templates(
    path: &Path,
    value: &Value,
) -> Result<Vec<ChatTemplateSource>, TokenizerError> {
    let field = "chat_template";
    let origin = |name: Option<&str>| match name {
        None => format!("{} (field chat_template)", path.display()),
        Some(n) => format!("{} (chat_template named {n:?})", path.display()),
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(source) => Ok(vec![ChatTemplateSource {
            name: None,
            source: source.clone(),
            origin: origin(None),
        }]),
        Value::Array(items) => {
            let mut templates = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let name = item.get("name").and_then(Value::as_str);
                let source = item.get("template").and_then(Value::as_str);
                let (Some(name), Some(source)) = (name, source) else {
                    return Err(invalid_field(
                        path,
                        &format!("{field}[{i}]"),
                        "must be an object with string fields `name` and `template`".to_string(),
                    ));
                };
                templates.push(ChatTemplateSource {
                    name: Some(name.to_string()),
                    source: source.to_string(),
                    origin: origin(Some(name)),
                });
            }
            Ok(templates)
        }
        other => Err(invalid_field(
            path,
            field,
            format!(
                "must be a template string or a list of {{name, template}}, found {}",
                json_type(other)
            ),
        )),
    }
}

/// `chat_template.jinja` (the default template) and `additional_chat_templates/<name>.jinja`.
fn read_template_files(dir: &Path) -> Result<Vec<ChatTemplateSource>, TokenizerError> {
    let mut templates = Vec::new();
    let default_path = dir.join("chat_template.jinja");
    if let Some(source) = read_optional(&default_path)? {
        templates.push(ChatTemplateSource {
            name: Some("default".to_string()),
            source,
            origin: default_path.display().to_string(),
        });
    }
    let extra_dir = dir.join("additional_chat_templates");
    let entries = match fs::read_dir(&extra_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(named_or_single(templates))
        }
        Err(source) => {
            return Err(TokenizerError::Io {
                path: extra_dir,
                source,
            })
        }
    };
    let mut extra: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "jinja"))
        .collect();
    extra.sort();
    for path in extra {
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if let Some(source) = read_optional(&path)? {
            templates.push(ChatTemplateSource {
                name: Some(name),
                source,
                origin: path.display().to_string(),
            });
        }
    }
    Ok(named_or_single(templates))
}

/// A lone `default` template is the model's single template, as transformers treats it.
fn named_or_single(mut templates: Vec<ChatTemplateSource>) -> Vec<ChatTemplateSource> {
    if let [only] = templates.as_mut_slice() {
        if only.name.as_deref() == Some("default") {
            only.name = None;
        }
    }
    templates
}

fn invalid_field(path: &Path, field: &str, problem: String) -> TokenizerError {
    TokenizerError::InvalidField {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn reads_tokens_in_every_form() {
        let path = Path::new("tokenizer_config.json");
        let config = TokenizerConfig::from_fields(
            path,
            &fields(json!({
                "bos_token": {"content": "<s>", "lstrip": false},
                "eos_token": "</s>",
                "unk_token": null,
                "image_token": "<img>",
                "add_bos_token": true,
                "extra_special_tokens": {"boi_token": "<boi>"},
                "additional_special_tokens": ["<a>", {"content": "<b>"}],
                "chat_template": [{"name": "default", "template": "x"}]
            })),
        )
        .unwrap();
        let special = &config.special_tokens;
        assert_eq!(special.bos().map(|t| t.content.as_str()), Some("<s>"));
        assert_eq!(special.eos().map(|t| t.content.as_str()), Some("</s>"));
        assert!(special.unk().is_none());
        let vars: Vec<_> = special.template_variables().collect();
        assert_eq!(
            vars,
            [
                ("bos_token", "<s>"),
                ("eos_token", "</s>"),
                ("image_token", "<img>"),
                ("boi_token", "<boi>")
            ]
        );
        assert_eq!(special.additional.len(), 2);
        assert_eq!(config.add_bos_token, Some(true));
        assert_eq!(config.chat_templates[0].name.as_deref(), Some("default"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let path = Path::new("dir/tokenizer_config.json");
        let err = TokenizerConfig::from_fields(path, &fields(json!({"eos_token": 3}))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("dir/tokenizer_config.json") && text.contains("eos_token"),
            "{text}"
        );
    }
}
