//! Support agents: each has a written job (the intents it owns, those it triages, the topics
//! it always escalates), answers from its knowledge with citations, hands off to humans with
//! a summary, catches loops and measures its outcomes.
//!
//! The agent is a client of the engine (through the [`generator::Generator`] trait, which the
//! server implements over its engines) and of the knowledge base; policy is code in `policy`,
//! never prompt text. Must not depend on the API or on the engine's internals.

pub mod analytics;
pub mod clock;
pub mod definition;
pub mod demo;
pub mod details;
pub mod escalation;
pub mod generator;
pub mod handoff;
mod humans;
pub mod import;
pub mod intent;
pub mod lexical;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod prompt;
mod queue;
pub mod registry;
pub mod replay;
pub mod retrieval;
pub mod service;
mod stateless;
pub mod store;
pub mod text;
pub mod turn;
mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use definition::{Catalog, Definition, DefinitionError};
pub use generator::{Generation, GenerationError, GenerationRequest, Generator, PromptMessage};
pub use service::{AgentError, AgentService, OutMessage, Transcript, TurnReport};
pub use store::SupportStore;
pub use turn::AgentRuntime;
