//! A model ready to generate: its weights, its own tokenizer and chat template, and the
//! defaults and stop tokens from its config files.
//!
//! Depends on `model` and `tokenizer`, and checks that the two agree (the tokenizer never emits
//! an id the model cannot embed). Loading never touches the network.

use std::path::PathBuf;

use candle_core::Device;

use crate::builtin_model::{write_model_dir, BuiltinModelError, BuiltinShape, BUILTIN_MODEL_NAME};
use crate::config::PathsConfig;
use crate::ids::TokenId;
use crate::model::source::ModelSource;
use crate::model::{load_causal_lm_with, CausalLm, GenerationDefaults, ModelConfig, ModelError};
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Builtin(#[from] BuiltinModelError),
    #[error(
        "{tokenizer}: the tokenizer produces ids up to {tokenizer_vocab}, but `vocab_size` in {config} is {vocab_size}; the tokenizer does not belong to this model"
    )]
    VocabMismatch {
        tokenizer: PathBuf,
        tokenizer_vocab: usize,
        config: PathBuf,
        vocab_size: usize,
    },
}

pub struct ModelBundle {
    pub source: ModelSource,
    pub model: Box<dyn CausalLm>,
    pub tokenizer: Tokenizer,
    pub generation: GenerationDefaults,
    /// Every id that ends a generation: generation_config.json, config.json and the
    /// tokenizer's EOS token, merged.
    pub stop_token_ids: Vec<TokenId>,
}

impl ModelBundle {
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self, BundleError> {
        let dir = &source.dir;
        let tokenizer = Tokenizer::from_dir(dir)?;
        // Checked before the weights load, so that a mismatched tokenizer is reported as such
        // rather than as whatever tensor shape it happens to break first.
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let vocab_size = config.vocab_size;
        if tokenizer.vocab_size() > vocab_size {
            return Err(BundleError::VocabMismatch {
                tokenizer: dir.join("tokenizer.json"),
                tokenizer_vocab: tokenizer.vocab_size(),
                config: dir.join("config.json"),
                vocab_size,
            });
        }
        let model = load_causal_lm_with(&config, dir, device)?;
        let generation = GenerationDefaults::from_file(&dir.join("generation_config.json"))?;
        let mut stop: Vec<u32> = generation.eos_token_ids.clone();
        stop.extend(&config.eos_token_ids);
        if let Some(id) = tokenizer.special_tokens().eos().and_then(|t| t.id) {
            stop.push(id.0);
        }
        stop.sort_unstable();
        stop.dedup();
        Ok(Self {
            source: source.clone(),
            model,
            tokenizer,
            generation,
            stop_token_ids: stop.into_iter().map(TokenId).collect(),
        })
    }

    pub fn is_builtin(&self) -> bool {
        self.source.name == BUILTIN_MODEL_NAME
    }
}

/// The built-in test model's folder, written on first use.
pub fn ensure_builtin_model(paths: &PathsConfig) -> Result<ModelSource, BundleError> {
    let dir = paths.builtin_model_dir();
    if !dir.join("model.safetensors").is_file() || !dir.join("tokenizer.json").is_file() {
        write_model_dir(&dir, &BuiltinShape::tiny(), 0x5eed)?;
    }
    Ok(ModelSource {
        name: BUILTIN_MODEL_NAME.to_string(),
        dir,
    })
}

/// `spec` as `--model` takes it; `None`, or the built-in's name, gives the built-in model.
pub fn resolve_model(paths: &PathsConfig, spec: Option<&str>) -> Result<ModelSource, BundleError> {
    match spec {
        None | Some(BUILTIN_MODEL_NAME) => ensure_builtin_model(paths),
        Some(s) => Ok(paths.locator().resolve(s)?),
    }
}
