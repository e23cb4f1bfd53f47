//! `enclave bench`: an offline throughput benchmark. Generates a seeded workload, runs it
//! through this process's engine or through any OpenAI-compatible server, and reports total
//! and output tokens per second, time-to-first-token and inter-token latency percentiles, and
//! resident memory.
//!
//! A client of the engine like any other: uses `EngineHandle` only. Must not depend on a
//! serving layer.

pub mod report;
pub mod run;
pub mod workload;

pub use report::{rss, BenchReport, Rss};
pub use run::{run, Backend, EngineBackend, HttpBackend, RequestTiming, RunOutput};
pub use workload::{generate, BenchPrompt, BenchRequest, PromptShape, WorkloadConfig};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("a request failed: {0}")]
    Request(String),
    #[error("HTTP: {0}")]
    Http(String),
}
