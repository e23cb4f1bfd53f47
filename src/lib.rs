//! Enclave: an on-prem, air-gapped inference and support-agent server.
//!
//! Layers, from the edge inwards (an arrow is "may use"):
//!
//! ```text
//! main ─► server ─► api ─┬─► agent ─┬─► Generator trait (agent_engine: the engines)
//!                        │          └─► knowledge ─► Embedder trait (kb_embedder)
//!                        └─► engine, knowledge, embedding, tokenizer
//! main ─► bundle (model + tokenizer + defaults) ─► engine ─► model ─► model::cpu kernels
//!                                              └─► tokenizer
//! config, ids ◄── used by all (data only)
//! ```
//!
//! `model` is pure compute: logits for a packed batch of ragged sequences against a paged KV
//! cache. It never sees a request or a sequence. `tokenizer` never sees tensors. `engine` turns
//! logits into tokens. `agent` decides support conversations in code and reaches models only
//! through a trait, so it never depends on the engine's internals or on `api`. Only `config`
//! reads the environment.

pub mod agent;
pub mod agent_engine;
pub mod api;
pub mod bench;
pub mod builtin_model;
pub mod bundle;
pub mod config;
pub mod embedding;
pub mod engine;
pub mod ids;
pub mod kb_embedder;
pub mod knowledge;
pub mod model;
pub mod server;
pub mod text_stream;
pub mod tls;
pub mod tokenizer;
