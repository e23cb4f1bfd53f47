//! The tokenizer of one model: `tokenizer.json` plus what the configuration files change.
//!
//! Owns `Tokenizer`. Depends on the `tokenizers` crate, `config` and `chat_template`; it must
//! not depend on the engine, the model or tensors.
//!
//! Invariant: `encode` and `decode` give exactly the ids and text of transformers' fast
//! tokenizer loaded from the same directory (`tokenizer.encode(text,
//! add_special_tokens=...)`, `tokenizer.decode(ids, skip_special_tokens=...)`), and a
//! `Tokenizer` never changes after it is built, so it can be shared freely.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use tokenizers::models::ModelWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessorWrapper};

use super::chat_template::{ChatInput, ChatTemplate};
use super::config::{SpecialTokens, TokenizerConfig};
use super::error::TokenizerError;
use crate::ids::TokenId;

/// transformers' `clean_up_tokenization`: these replacements, in this order.
const CLEAN_UP_PATTERNS: [(&str, &str); 10] = [
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
];

/// A loaded tokenizer with its special tokens and chat templates.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    config: TokenizerConfig,
    special: SpecialTokens,
    /// The unnamed template, or the named ones; see `chat_template_for`.
    templates: Vec<(Option<String>, ChatTemplate)>,
    /// Whether `decode` applies transformers' clean-up (configured, and allowed for the model).
    clean_up: bool,
    vocab_size: usize,
    special_ids: HashSet<u32>,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (required), `tokenizer_config.json` and
    /// `special_tokens_map.json` (optional), and the chat templates: `chat_template.jinja`
    /// beside them (and `additional_chat_templates/*.jinja`) if present, else the
    /// `chat_template` field of `tokenizer_config.json` (a string, or a list of
    /// `{name, template}`), else none. Every template is compiled here, so a broken one is
    /// reported at load time.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TokenizerError::MissingFile {
                    path,
                    what: "tokenizer.json",
                })
            }
            Err(source) => return Err(TokenizerError::Io { path, source }),
        };
        let inner: tokenizers::Tokenizer = match serde_json::from_slice(&bytes) {
            Ok(inner) => inner,
            // A syntax error means a truncated or corrupt file; a data error means valid JSON
            // that is not a tokenizer this version of `tokenizers` understands.
            Err(source) if source.is_syntax() || source.is_eof() => {
                return Err(TokenizerError::InvalidJson { path, source })
            }
            Err(e) => {
                return Err(TokenizerError::InvalidTokenizerJson {
                    path,
                    message: e.to_string(),
                })
            }
        };
        let config = TokenizerConfig::from_dir(dir)?;
        Self::build(inner, config)
    }

    /// Wraps a tokenizer built in code (the built-in test model). A chat template of
    /// `config` that does not compile is left out and logged; use `try_from_parts` to get
    /// the error instead.
    pub fn from_parts(inner: tokenizers::Tokenizer, config: TokenizerConfig) -> Self {
        let mut tokenizer = Self::build_unchecked(inner, config);
        for t in &tokenizer.config.chat_templates {
            match ChatTemplate::new(t.source.clone(), t.origin.clone()) {
                Ok(compiled) => tokenizer.templates.push((t.name.clone(), compiled)),
                Err(e) => tracing::error!("leaving out a chat template that does not compile: {e}"),
            }
        }
        tokenizer
    }

    /// Like `from_parts`, but a chat template that does not compile is an error.
    pub fn try_from_parts(
        inner: tokenizers::Tokenizer,
        config: TokenizerConfig,
    ) -> Result<Self, TokenizerError> {
        Self::build(inner, config)
    }

    fn build(
        inner: tokenizers::Tokenizer,
        config: TokenizerConfig,
    ) -> Result<Self, TokenizerError> {
        let mut tokenizer = Self::build_unchecked(inner, config);
        for t in &tokenizer.config.chat_templates {
            let compiled = ChatTemplate::new(t.source.clone(), t.origin.clone())?;
            tokenizer.templates.push((t.name.clone(), compiled));
        }
        Ok(tokenizer)
    }

    /// Everything but the chat templates, which it leaves empty.
    fn build_unchecked(mut inner: tokenizers::Tokenizer, config: TokenizerConfig) -> Self {
        // transformers encodes without padding or truncation unless asked per call; BERT
        // exports carry both in tokenizer.json.
        inner.with_padding(None);
        let _ = inner.with_truncation(None);
        add_missing_special_tokens(&mut inner, &config.special_tokens);
        let mut special = config.special_tokens.clone();
        special.resolve_ids(|t| inner.token_to_id(t).map(TokenId));
        if config.add_bos_token.is_some() || config.add_eos_token.is_some() {
            rebuild_post_processor(&mut inner, &config, &special);
        }
        let is_bpe = matches!(inner.get_model(), ModelWrapper::BPE(_));
        let clean_up = config.clean_up_tokenization_spaces && (!is_bpe || config.clean_up_for_bpe);
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&max| max as usize + 1);
        let special_ids = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        Tokenizer {
            inner,
            config,
            special,
            templates: Vec::new(),
            clean_up,
            vocab_size,
            special_ids,
        }
    }

    /// Token ids of `text`; with `add_special_tokens`, the post-processor's BOS/EOS/CLS...
    pub fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<TokenId>, TokenizerError> {
        let encoding =
            self.inner
                .encode(text, add_special_tokens)
                .map_err(|e| TokenizerError::Encode {
                    message: e.to_string(),
                })?;
        Ok(encoding.get_ids().iter().map(|&id| TokenId(id)).collect())
    }

    /// Text of `ids`, as transformers' `decode` gives it (ids outside the vocabulary are
    /// skipped, as there).
    pub fn decode(
        &self,
        ids: &[TokenId],
        skip_special_tokens: bool,
    ) -> Result<String, TokenizerError> {
        let raw: Vec<u32> = ids.iter().map(|id| id.0).collect();
        let text =
            self.inner
                .decode(&raw, skip_special_tokens)
                .map_err(|e| TokenizerError::Decode {
                    message: e.to_string(),
                })?;
        Ok(if self.clean_up {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// The highest id the tokenizer can produce, plus one (added tokens included).
    /// The bytes each token id stands for, and which ids are special (for constrained
    /// decoding, which must know what text every token would add).
    pub fn token_bytes(&self) -> (Vec<Vec<u8>>, Vec<bool>) {
        super::token_bytes::token_bytes(&self.inner)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn token_to_id(&self, token: &str) -> Option<TokenId> {
        self.inner.token_to_id(token).map(TokenId)
    }

    pub fn id_to_token(&self, id: TokenId) -> Option<String> {
        self.inner.id_to_token(id.0)
    }

    /// Whether `id` is an added token marked special (what `skip_special_tokens` drops).
    pub fn is_special(&self, id: TokenId) -> bool {
        self.special_ids.contains(&id.0)
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// Whether `decode` applies transformers' `clean_up_tokenization`.
    pub fn cleans_up_spaces(&self) -> bool {
        self.clean_up
    }

    /// The model's default chat template: the unnamed one, or the one named `default`.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.named_template(None)
            .or_else(|| self.named_template(Some("default")))
    }

    /// The chat template of that name (`None`: the unnamed one).
    pub fn named_template(&self, name: Option<&str>) -> Option<&ChatTemplate> {
        self.templates
            .iter()
            .find(|(n, _)| n.as_deref() == name)
            .map(|(_, t)| t)
    }

    /// The template transformers picks: with tools, `tool_use` if the model names one;
    /// otherwise the default.
    pub fn chat_template_for(&self, with_tools: bool) -> Result<&ChatTemplate, TokenizerError> {
        if self.templates.is_empty() {
            return Err(TokenizerError::NoChatTemplate);
        }
        if with_tools {
            if let Some(t) = self.named_template(Some("tool_use")) {
                return Ok(t);
            }
        }
        self.chat_template()
            .ok_or_else(|| TokenizerError::NamedTemplateMissing {
                origin: self.templates[0].1.origin().to_string(),
                wanted: "default".to_string(),
                available: self
                    .templates
                    .iter()
                    .filter_map(|(n, _)| n.clone())
                    .collect(),
            })
    }

    /// Renders the conversation with the model's template (text only).
    pub fn apply_chat_template(&self, input: &ChatInput) -> Result<String, TokenizerError> {
        self.chat_template_for(input.tools.is_some())?
            .render(input, &self.special)
    }

    /// Renders, then encodes without adding special tokens (the template writes them), as
    /// transformers' `apply_chat_template(tokenize=True)` does.
    pub fn encode_chat(&self, input: &ChatInput) -> Result<Vec<TokenId>, TokenizerError> {
        let text = self.apply_chat_template(input)?;
        self.encode(&text, false)
    }
}

/// transformers adds every configured special token that the tokenizer does not already
/// have as an added token, so that it is matched whole and skipped by `skip_special_tokens`.
fn add_missing_special_tokens(inner: &mut tokenizers::Tokenizer, special: &SpecialTokens) {
    let existing: HashSet<String> = inner
        .get_added_tokens_decoder()
        .into_values()
        .map(|t| t.content)
        .collect();
    let named = special.all_named().map(|(_, t)| t);
    let missing: Vec<AddedToken> = named
        .chain(special.additional.iter())
        .filter(|t| !existing.contains(&t.content))
        .map(|t| AddedToken::from(t.content.clone(), true))
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Err(e) = inner.add_special_tokens(missing) {
        tracing::warn!("cannot add the configured special tokens to the tokenizer: {e}");
    }
}

/// transformers' `update_post_processor`: when the configuration says `add_bos_token` or
/// `add_eos_token`, those decide which tokens `add_special_tokens=True` adds.
fn rebuild_post_processor(
    inner: &mut tokenizers::Tokenizer,
    config: &TokenizerConfig,
    special: &SpecialTokens,
) {
    let resolved =
        |wanted: Option<bool>, token: Option<&super::config::SpecialToken>| match (wanted, token) {
            (Some(true), Some(t)) => t.id.map(|id| (t.content.clone(), id.0)),
            _ => None,
        };
    let bos = resolved(config.add_bos_token, special.bos());
    let eos = resolved(config.add_eos_token, special.eos());
    let piece = |t: &Option<(String, u32)>, seq: u8| {
        t.as_ref().map(|(content, _)| format!("{content}:{seq}"))
    };
    let single: Vec<String> = [piece(&bos, 0), Some("$A:0".to_string()), piece(&eos, 0)]
        .into_iter()
        .flatten()
        .collect();
    let pair: Vec<String> = [piece(&bos, 1), Some("$B:1".to_string()), piece(&eos, 1)]
        .into_iter()
        .flatten()
        .collect();
    let single = single.join(" ");
    let pair = format!("{single} {}", pair.join(" "));
    let specials: Vec<(String, u32)> = bos.into_iter().chain(eos).collect();
    let built = TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(pair.as_str()))
        .map(|b| b.special_tokens(specials).build());
    match built {
        Ok(Ok(processor)) => {
            inner.with_post_processor(Some(PostProcessorWrapper::Template(processor)));
        }
        // A token whose text cannot be written in a template (it contains a space or a
        // colon) keeps tokenizer.json's own post-processor.
        _ => tracing::warn!(
            "cannot rebuild the post-processor from add_bos_token/add_eos_token; \
             keeping the one in tokenizer.json"
        ),
    }
}

/// transformers' `clean_up_tokenization`.
pub(crate) fn clean_up_tokenization(text: &str) -> String {
    let mut out = text.to_string();
    for (from, to) in CLEAN_UP_PATTERNS {
        if out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out
}

/// Whether `text` ends with the beginning of a clean-up pattern, which a later token could
/// complete and so change text already produced.
pub(crate) fn ends_with_clean_up_prefix(text: &str) -> bool {
    CLEAN_UP_PATTERNS.iter().any(|(pattern, _)| {
        (1..pattern.len()).any(|n| pattern.is_char_boundary(n) && text.ends_with(&pattern[..n]))
    })
}

/// A `Tokenizer` is loaded once and shared by every request thread.
#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}
