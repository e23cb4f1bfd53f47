//! Generation: turning a model's logits into tokens.
//!
//! Today this is sampling and a one-sequence driver for the CLI; the continuous-batching loop
//! over the block manager grows here. Depends on `model` (through `CausalLm` only) and `ids`;
//! never on a tokenizer or a serving layer.

pub mod error;
pub mod generate;
pub mod sampler;

pub use error::EngineError;
pub use generate::{generate, FinishReason, GenerateOutput, GenerateParams};
pub use sampler::{Sampler, SamplingParams};
