//! Parses a Hugging Face `config.json` into a validated [`ModelConfig`].
//!
//! Owns the mapping from each `model_type` to the architecture features it implies (qkv bias,
//! q/k norm, sliding window). Depends on nothing but serde; never touches weights.
//! Invariant: a `ModelConfig` that exists is internally consistent (heads divide evenly, sizes
//! are non-zero), so the forward code never re-checks it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::{ModelError, Result};

/// The decoder families written in-house. Each one is a variant of the same pre-norm decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Architecture {
    pub const SUPPORTED: &'static str = "llama, mistral, qwen2, qwen3";

    fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// How rotary frequencies are rescaled for contexts longer than the pre-training one.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1's three-band scheme: high frequencies kept, low ones divided by `factor`,
    /// and a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Positions divided by `factor` (equivalently, every frequency divided by it).
    Linear { factor: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q_proj, k_proj and v_proj (Qwen2, or Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj as well (Llama's `attention_bias` covers it too).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm of queries and keys before rotary (Qwen3).
    pub qk_norm: bool,
    /// Per layer: `Some(window)` when that layer attends to the last `window` positions only.
    pub sliding_windows: Vec<Option<usize>>,
    /// `torch_dtype` as written, for listing; weights carry their own dtype.
    pub torch_dtype: Option<String>,
    /// `eos_token_id` as written (an id or a list); generation_config.json may add more.
    pub eos_token_ids: Vec<u32>,
}

/// Reads fields of one JSON object and turns every problem into an error naming the field.
struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> ModelError {
        ModelError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn usize(&self, field: &str) -> Result<usize> {
        let n = self
            .opt_usize(field)?
            .ok_or_else(|| self.err(field, "missing"))?;
        if n == 0 {
            return Err(self.err(field, "must be greater than 0"));
        }
        Ok(n)
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a number, found {v}"))),
        }
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected true or false, found {v}"))),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&str>> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a string, found {v}"))),
        }
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// `path` is only used to name the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value = parse_json(text, path)?;
        let map = value.as_object().ok_or_else(|| ModelError::Field {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            problem: "expected a JSON object".into(),
        })?;
        Self::from_fields(&Fields { path, map })
    }

    fn from_fields(f: &Fields<'_>) -> Result<Self> {
        let model_type = f
            .opt_str("model_type")?
            .ok_or_else(|| f.err("model_type", "missing"))?;
        let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
            ModelError::UnknownModelType {
                path: f.path.to_path_buf(),
                model_type: model_type.to_string(),
                supported: Architecture::SUPPORTED.to_string(),
            }
        })?;
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) if d > 0 => d,
            _ if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            _ => {
                return Err(f.err(
                    "head_dim",
                    "missing, and hidden_size is not a multiple of num_attention_heads",
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.err(
                "head_dim",
                format!("{head_dim} is odd; rotary needs an even size"),
            ));
        }
        let num_hidden_layers = f.usize("num_hidden_layers")?;
        let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let sliding_windows = sliding_windows(f, architecture, num_hidden_layers)?;
        let default_theta = match architecture {
            Architecture::Qwen2 | Architecture::Qwen3 => 1_000_000.0,
            _ => 10_000.0,
        };
        Ok(Self {
            architecture,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: match f.opt_f64("rope_theta")? {
                Some(t) => t,
                None => rope_parameters(f)?
                    .map(|p| p.opt_f64("rope_theta"))
                    .transpose()?
                    .flatten()
                    .unwrap_or(default_theta),
            },
            rope_scaling: rope_scaling(f)?,
            max_position_embeddings: f.usize("max_position_embeddings")?,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
            qk_norm: architecture == Architecture::Qwen3,
            sliding_windows,
            torch_dtype: f
                .opt_str("torch_dtype")?
                .or(f.opt_str("dtype")?)
                .map(str::to_string),
            eos_token_ids: token_id_list(f, "eos_token_id")?,
        })
    }

    /// Parameters as a checkpoint stores them (a tied embedding counted once).
    pub fn num_parameters(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let v = self.vocab_size as u64;
        let mut attn = h * q + 2 * h * kv + q * h;
        if self.qkv_bias {
            attn += q + 2 * kv;
        }
        if self.o_bias {
            attn += h;
        }
        if self.qk_norm {
            attn += 2 * self.head_dim as u64;
        }
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attn + mlp + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers as u64 * layer + h + head
    }
}

/// Transformers 5 writes `rope_parameters` (theta and scaling together) where older versions
/// wrote `rope_theta` and `rope_scaling`.
fn rope_parameters<'a>(f: &Fields<'a>) -> Result<Option<Fields<'a>>> {
    match f.map.get("rope_parameters") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(Fields { path: f.path, map })),
        Some(v) => Err(f.err("rope_parameters", format!("expected an object, found {v}"))),
    }
}

fn rope_scaling(f: &Fields<'_>) -> Result<Option<RopeScaling>> {
    let (field, sub) = match f.map.get("rope_scaling") {
        None | Some(Value::Null) => match rope_parameters(f)? {
            Some(p) => ("rope_parameters", p),
            None => return Ok(None),
        },
        Some(Value::Object(map)) => ("rope_scaling", Fields { path: f.path, map }),
        Some(v) => return Err(f.err("rope_scaling", format!("expected an object, found {v}"))),
    };
    let kind = sub
        .opt_str("rope_type")?
        .or(sub.opt_str("type")?)
        .unwrap_or("default");
    if kind == "default" {
        return Ok(None);
    }
    let factor = sub
        .opt_f64("factor")?
        .ok_or_else(|| f.err(&format!("{field}.factor"), "missing"))?;
    if factor <= 0.0 {
        return Err(f.err(&format!("{field}.factor"), "must be positive"));
    }
    match kind {
        "linear" => Ok(Some(RopeScaling::Linear { factor })),
        "llama3" => {
            let need = |name: &str| -> Result<f64> {
                sub.opt_f64(name)?
                    .ok_or_else(|| f.err(&format!("{field}.{name}"), "missing"))
            };
            let low_freq_factor = need("low_freq_factor")?;
            let high_freq_factor = need("high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(f.err(
                    &format!("{field}.high_freq_factor"),
                    "must be greater than low_freq_factor",
                ));
            }
            Ok(Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: sub
                    .opt_usize("original_max_position_embeddings")?
                    .ok_or_else(|| {
                        f.err(
                            &format!("{field}.original_max_position_embeddings"),
                            "missing",
                        )
                    })?,
            }))
        }
        other => Err(f.err(
            &format!("{field}.rope_type"),
            format!("`{other}` is not supported; supported: default, linear, llama3"),
        )),
    }
}

/// Mistral windows every layer; Qwen2 only when `use_sliding_window` is set, and then only the
/// layers from `max_window_layers` on. An explicit `layer_types` list wins over both.
fn sliding_windows(
    f: &Fields<'_>,
    arch: Architecture,
    num_layers: usize,
) -> Result<Vec<Option<usize>>> {
    let window = f.opt_usize("sliding_window")?;
    if let Some(Value::Array(types)) = f.map.get("layer_types") {
        if types.len() != num_layers {
            return Err(f.err(
                "layer_types",
                format!("has {} entries for {num_layers} layers", types.len()),
            ));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => window
                    .map(Some)
                    .ok_or_else(|| f.err("sliding_window", "missing, but layer_types uses it")),
                _ => Err(f.err("layer_types", format!("unknown layer type {t}"))),
            })
            .collect();
    }
    let windowed = |from: usize| {
        (0..num_layers)
            .map(|i| window.filter(|_| i >= from))
            .collect()
    };
    Ok(match arch {
        Architecture::Mistral => windowed(0),
        Architecture::Qwen2 | Architecture::Qwen3 => {
            if f.opt_bool("use_sliding_window")?.unwrap_or(false) {
                windowed(f.opt_usize("max_window_layers")?.unwrap_or(0))
            } else {
                vec![None; num_layers]
            }
        }
        Architecture::Llama => vec![None; num_layers],
    })
}

/// `generation_config.json`: end-of-sequence ids and default sampling, all optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub do_sample: Option<bool>,
    pub repetition_penalty: Option<f64>,
}

impl GenerationDefaults {
    /// A missing file means "no defaults"; a malformed one is an error.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ModelError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let value = parse_json(&text, path)?;
        let empty = Map::new();
        let f = Fields {
            path,
            map: value.as_object().unwrap_or(&empty),
        };
        Ok(Self {
            bos_token_id: f.opt_usize("bos_token_id")?.map(|v| v as u32),
            eos_token_ids: token_id_list(&f, "eos_token_id")?,
            temperature: f.opt_f64("temperature")?,
            top_p: f.opt_f64("top_p")?,
            top_k: f.opt_usize("top_k")?,
            do_sample: f.opt_bool("do_sample")?,
            repetition_penalty: f.opt_f64("repetition_penalty")?,
        })
    }
}

/// `path` is only used to name the file in errors.
fn parse_json(text: &str, path: &Path) -> Result<Value> {
    serde_json::from_str(text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// `eos_token_id` is an integer or a list of them in both config files.
fn token_id_list(f: &Fields<'_>, field: &str) -> Result<Vec<u32>> {
    match f.map.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|n| n as u32)
                    .ok_or_else(|| f.err(field, format!("expected token ids, found {v}")))
            })
            .collect(),
        Some(v) => v
            .as_u64()
            .map(|n| vec![n as u32])
            .ok_or_else(|| f.err(field, format!("expected a token id, found {v}"))),
    }
}

/// Where a config came from, for messages.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<ModelConfig> {
        let text = format!(
            r#"{{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64 {extra}}}"#
        );
        ModelConfig::from_json_str(&text, Path::new("config.json"))
    }

    #[test]
    fn transformers_5_rope_parameters_are_read_like_rope_scaling() {
        let cfg = parse(
            r#", "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
        )
        .expect("valid");
        assert_eq!(cfg.rope_theta, 500000.0);
        assert_eq!(
            cfg.rope_scaling,
            Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192
            })
        );
        let plain = parse(r#", "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0}"#)
            .expect("valid");
        assert_eq!((plain.rope_theta, plain.rope_scaling), (1000.0, None));
    }

    #[test]
    fn eos_token_id_is_read_as_one_id_or_a_list() {
        assert_eq!(
            parse(r#", "eos_token_id": 7"#)
                .expect("valid")
                .eos_token_ids,
            [7]
        );
        assert_eq!(
            parse(r#", "eos_token_id": [1, 2]"#)
                .expect("valid")
                .eos_token_ids,
            [1, 2]
        );
        assert!(parse("").expect("valid").eos_token_ids.is_empty());
        let e = parse(r#", "eos_token_id": "x""#).expect_err("string");
        assert!(e.to_string().contains("eos_token_id"), "{e}");
    }

    #[test]
    fn unsupported_rope_types_and_missing_fields_are_named() {
        let e =
            parse(r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#).expect_err("yarn");
        assert!(
            e.to_string().contains("rope_scaling.rope_type") && e.to_string().contains("yarn"),
            "{e}"
        );
        let e = parse(r#", "rope_scaling": {"rope_type": "llama3", "factor": 4.0}"#)
            .expect_err("incomplete");
        assert!(
            e.to_string().contains("rope_scaling.low_freq_factor"),
            "{e}"
        );
        let e =
            ModelConfig::from_json_str(r#"{"model_type": "llama"}"#, Path::new("x/config.json"))
                .expect_err("empty");
        assert!(
            e.to_string().contains("x/config.json") && e.to_string().contains("hidden_size"),
            "{e}"
        );
    }
}
