//! The engine: continuous batching of many sequences over one model and its paged KV cache.
//!
//! One engine thread per model (`core`) owns the model, the KV cache, the `Scheduler` (with its
//! `BlockManager`) and every sampler; the rest of the program holds an `EngineHandle`. The
//! scheduler, block manager and sampler are plain CPU data structures, tested without weights.
//! Depends on `model` (through `CausalLm` and `ForwardBatch`) and `ids`; never on a tokenizer
//! or a serving layer.

pub mod block_manager;
pub mod core;
pub mod error;
pub mod generate;
pub mod grammar;
pub mod handle;
pub mod kv_budget;
pub mod metrics;
pub mod runner;
pub mod sampler;
pub mod scheduler;
pub mod sequence;

pub use self::core::{spawn_engine, EngineConfig};
pub use error::EngineError;
pub use generate::{generate, GenerateOutput, GenerateParams};
pub use handle::{EngineEvent, EngineHandle, GenerateRequest, RequestId, TokenOutput, TokenStream};
pub use kv_budget::KvCacheMemory;
pub use metrics::MetricsSnapshot;
pub use sampler::{SampledToken, Sampler, SamplingParams};
pub use sequence::FinishReason;
