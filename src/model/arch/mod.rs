//! Architecture dispatch: from a parsed config and mapped weights to a `CausalLm`.
//!
//! One file per block shape; today every supported family shares `decoder`.

pub mod decoder;

use candle_core::Device;

use super::config::ModelConfig;
use super::error::Result;
use super::weights::Weights;
use super::CausalLm;

pub fn load(cfg: &ModelConfig, weights: &Weights, device: &Device) -> Result<Box<dyn CausalLm>> {
    Ok(Box::new(decoder::DecoderLm::load(cfg, weights, device)?))
}
