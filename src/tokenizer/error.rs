//! The one error type of the `tokenizer` module.
//!
//! Owns `TokenizerError`. Depends on nothing but `std`, `serde_json` and `thiserror`; it must not
//! depend on the rest of the module, so that every file can return it.
//!
//! Invariant: every variant that comes from a file names that file, and every variant that
//! comes from a chat template names the template's origin, so that a message alone tells the
//! operator what to fix and where.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer, encoding, decoding or rendering a
/// chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file that must exist is missing.
    #[error("{what} not found at {path}: place the model's {what} there (it is required)")]
    MissingFile { path: PathBuf, what: &'static str },

    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file is not valid JSON.
    #[error("{path} is not valid JSON ({source}); fix or re-download the file")]
    InvalidJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// `tokenizer.json` is valid JSON but not a tokenizer the `tokenizers` crate understands.
    #[error(
        "{path} is not a valid Hugging Face tokenizer.json: {message}; \
         re-export it with a recent `tokenizers` or `transformers`"
    )]
    InvalidTokenizerJson { path: PathBuf, message: String },

    /// A field of a configuration file has the wrong type or an unusable value.
    #[error("{path}: field `{field}` {problem}")]
    InvalidField {
        path: PathBuf,
        field: String,
        problem: String,
    },

    /// The underlying tokenizer refused to encode.
    #[error("cannot encode text: {message}")]
    Encode { message: String },

    /// The underlying tokenizer refused to decode.
    #[error("cannot decode token ids: {message}")]
    Decode { message: String },

    /// The tokenizer has no chat template but one was asked for.
    #[error(
        "this tokenizer has no chat template: add `chat_template` to tokenizer_config.json \
         or a chat_template.jinja file beside it"
    )]
    NoChatTemplate,

    /// The configuration lists several named chat templates but none fits.
    #[error(
        "{origin} lists named chat templates {available:?} but none is named `{wanted}`; \
         add a template named `{wanted}` or pick one of those names"
    )]
    NamedTemplateMissing {
        origin: String,
        wanted: String,
        available: Vec<String>,
    },

    /// A chat template does not parse.
    #[error("chat template from {origin} has a syntax error: {message}")]
    TemplateSyntax { origin: String, message: String },

    /// A chat template parsed but failed while rendering.
    #[error("chat template from {origin} failed to render: {message}")]
    TemplateRender { origin: String, message: String },

    /// A chat template called `raise_exception(message)`: the template itself rejects the
    /// input (for example, roles that do not alternate). `message` is the template's own text.
    #[error("chat template from {origin} rejected the conversation: {message}")]
    TemplateRaised { origin: String, message: String },

    /// The conversation handed to a chat template is unusable before any rendering.
    #[error("invalid chat input: {message}")]
    InvalidChatInput { message: String },
}
