//! Tokenizers, chat templates, incremental detokenization and stop strings.
//!
//! Owns everything between text and token ids: loading a model's tokenizer files
//! (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, chat templates),
//! encoding, decoding, rendering chat templates and streaming decoded text, cut at stop
//! strings. Depends on the `tokenizers` crate, minijinja and `ids`; it must not depend on
//! `model` or `engine` and never sees tensors.
//!
//! Invariant: every output matches what Hugging Face transformers (fast tokenizer, Jinja2 chat
//! templates) produces for the same files and input; where it cannot, it fails with a
//! `TokenizerError` instead of producing something close.

mod chat_template;
mod config;
mod detokenizer;
mod error;
mod jinja_compat;
mod jinja_filters;
mod stop;
mod template_source;
pub mod token_bytes;
#[allow(clippy::module_inception)]
mod tokenizer;
pub mod tool_calls;

pub use chat_template::{ChatInput, ChatTemplate};
pub use config::{
    ChatTemplateSource, SpecialToken, SpecialTokenKind, SpecialTokens, TokenizerConfig,
};
pub use detokenizer::IncrementalDetokenizer;
pub use error::TokenizerError;
pub use stop::{StopOutput, StopStrings};
pub use tokenizer::Tokenizer;
