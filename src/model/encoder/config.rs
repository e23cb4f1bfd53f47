//! Parses the `config.json` of a BERT-family encoder (BERT, RoBERTa, XLM-RoBERTa) into a
//! validated [`EncoderConfig`].
//!
//! Depends on nothing but serde; never touches weights. Invariant: a config that exists has
//! non-zero sizes and heads that divide the hidden size.

use std::path::Path;

use serde::Deserialize;

use crate::model::error::{ModelError, Result};

/// How position ids are assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionScheme {
    /// BERT: positions 0, 1, 2, ….
    Absolute,
    /// RoBERTa and XLM-RoBERTa: positions start after the padding index (`pad + 1`, `pad + 2`,
    /// …), because their position table reserves rows up to it.
    OffsetByPadding { padding_idx: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// The exact erf form, as BERT and XLM-R were trained.
    Gelu,
    /// The tanh approximation.
    GeluTanh,
    Relu,
}

#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: HiddenAct,
    pub positions: PositionScheme,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "one")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn one() -> usize {
    1
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

pub const SUPPORTED_ENCODERS: &str = "bert, roberta, xlm-roberta";

impl EncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let field = |field: &str, problem: String| ModelError::Field {
            path: path.to_path_buf(),
            field: field.into(),
            problem,
        };
        let positions = match raw.model_type.as_str() {
            "bert" => PositionScheme::Absolute,
            "roberta" | "xlm-roberta" | "camembert" => PositionScheme::OffsetByPadding {
                padding_idx: raw.pad_token_id.unwrap_or(1),
            },
            other => {
                return Err(ModelError::UnknownModelType {
                    path: path.to_path_buf(),
                    model_type: other.into(),
                    supported: SUPPORTED_ENCODERS.into(),
                })
            }
        };
        if let Some(kind) = raw.position_embedding_type.as_deref() {
            if kind != "absolute" {
                return Err(field(
                    "position_embedding_type",
                    format!("`{kind}` is not supported; only `absolute`"),
                ));
            }
        }
        let hidden_act = match raw.hidden_act.as_str() {
            "gelu" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            other => {
                return Err(field(
                    "hidden_act",
                    format!("`{other}` is not supported; expected gelu, gelu_new or relu"),
                ))
            }
        };
        for (name, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("max_position_embeddings", raw.max_position_embeddings),
            ("type_vocab_size", raw.type_vocab_size),
        ] {
            if value == 0 {
                return Err(field(name, "must be greater than zero".into()));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(field(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    raw.num_attention_heads, raw.hidden_size
                ),
            ));
        }
        Ok(Self {
            model_type: raw.model_type,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            hidden_act,
            positions,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest input the position table allows.
    pub fn max_input_len(&self) -> usize {
        match self.positions {
            PositionScheme::Absolute => self.max_position_embeddings,
            PositionScheme::OffsetByPadding { padding_idx } => self
                .max_position_embeddings
                .saturating_sub(padding_idx as usize + 1),
        }
    }

    /// Position id of the token at `index` within its sequence.
    pub fn position_id(&self, index: usize) -> usize {
        match self.positions {
            PositionScheme::Absolute => index,
            PositionScheme::OffsetByPadding { padding_idx } => padding_idx as usize + 1 + index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EncoderConfig> {
        EncoderConfig::from_json_str(text, Path::new("config.json"))
    }

    const BASE: &str = r#""vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16"#;

    #[test]
    fn xlm_roberta_positions_start_after_the_padding_index() {
        let c = parse(&format!(
            r#"{{"model_type": "xlm-roberta", "pad_token_id": 1, {BASE}}}"#
        ))
        .unwrap();
        assert_eq!(c.position_id(0), 2);
        assert_eq!(c.max_input_len(), 14);
        let bert = parse(&format!(r#"{{"model_type": "bert", {BASE}}}"#)).unwrap();
        assert_eq!(bert.position_id(0), 0);
        assert_eq!(bert.max_input_len(), 16);
    }

    #[test]
    fn a_decoder_config_is_refused_with_the_supported_list() {
        let err = parse(&format!(r#"{{"model_type": "llama", {BASE}}}"#)).unwrap_err();
        assert!(err.to_string().contains("bert, roberta"), "{err}");
    }

    #[test]
    fn heads_must_divide_hidden() {
        let text = BASE.replace(r#""num_attention_heads": 2"#, r#""num_attention_heads": 3"#);
        let err = parse(&format!(r#"{{"model_type": "bert", {text}}}"#)).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
    }
}
