//! The built-in test model: a random-weight decoder and a byte-level tokenizer, written to a
//! folder in Hugging Face layout with nothing fetched from anywhere.
//!
//! It exists so that a fresh machine runs end to end, and so that tests and benchmarks have a
//! model of any shape. Its output is noise, and every file it writes says so. Depends on
//! `model` for dtypes only; it writes files and never loads them.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::WeightDtype;

/// The name the built-in model is listed and requested under.
pub const BUILTIN_MODEL_NAME: &str = "enclave-test-model";

pub const NOTICE: &str = "RANDOM TEST MODEL: random weights, its output is noise. \
Add a real model by copying its Hugging Face folder into models/ (see models/README.md).";

const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML with Hermes-style tools: the signatures in the system turn, calls as
/// `<tool_call>` JSON, results as `<tool_response>` in a user turn.
const CHAT_TEMPLATE: &str = r#"{%- if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}

{% endif %}# Tools

You may call functions. Their signatures:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>

Write each call as a JSON object inside tags:
<tool_call>
{"name": <function name>, "arguments": <arguments object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message['role'] == 'system' and loop.first and tools %}
{%- elif message['role'] == 'tool' %}<|im_start|>user
<tool_response>
{{ message['content'] }}
</tool_response><|im_end|>
{% elif message['role'] == 'assistant' and message['tool_calls'] %}<|im_start|>assistant
{{ message['content'] or '' }}
{%- for call in message['tool_calls'] %}<tool_call>
{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

#[derive(Debug, thiserror::Error)]
pub enum BuiltinModelError {
    #[error("{path}: cannot write: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the test tokenizer: {0}")]
    Tokenizer(String),
}

type Result<T> = std::result::Result<T, BuiltinModelError>;

/// The shape of a random model: a Llama-family decoder described by its `config.json` fields.
#[derive(Debug, Clone)]
pub struct BuiltinShape {
    pub model_type: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub dtype: WeightDtype,
}

impl BuiltinShape {
    /// The default: small enough to write and run in a blink.
    pub fn tiny() -> Self {
        Self {
            model_type: "qwen2",
            hidden_size: 64,
            intermediate_size: 176,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            vocab_size: 272,
            max_position_embeddings: 4096,
            tie_word_embeddings: true,
            dtype: WeightDtype::F32,
        }
    }

    /// Qwen2.5-0.5B-Instruct's exact shape, the benchmark reference.
    pub fn qwen2_5_0_5b(dtype: WeightDtype) -> Self {
        Self {
            model_type: "qwen2",
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            vocab_size: 151_936,
            max_position_embeddings: 32_768,
            tie_word_embeddings: true,
            dtype,
        }
    }

    /// Llama-3.1-8B's shape, the GPU benchmark reference.
    pub fn llama_3_1_8b(dtype: WeightDtype) -> Self {
        Self {
            model_type: "llama",
            hidden_size: 4096,
            intermediate_size: 14_336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            vocab_size: 128_256,
            max_position_embeddings: 131_072,
            tie_word_embeddings: false,
            dtype,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Tensor names and shapes in file order.
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let mut t = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            t.push((format!("{p}.input_layernorm.weight"), vec![h]));
            t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            for (name, out, inp) in [
                ("q_proj", q, h),
                ("k_proj", kv, h),
                ("v_proj", kv, h),
                ("o_proj", h, q),
            ] {
                t.push((format!("{p}.self_attn.{name}.weight"), vec![out, inp]));
            }
            if self.model_type == "qwen2" {
                for (name, n) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                    t.push((format!("{p}.self_attn.{name}.bias"), vec![n]));
                }
            }
            for (name, out, inp) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
                t.push((format!("{p}.mlp.{name}.weight"), vec![out, inp]));
            }
        }
        t.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            t.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        t
    }

    fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": [if self.model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": match self.dtype { WeightDtype::F32 => "float32", WeightDtype::F16 => "float16", WeightDtype::Bf16 => "bfloat16" },
            "bos_token_id": 256,
            "eos_token_id": 258,
            "_comment": NOTICE,
        })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuiltinModelError + '_ {
    move |source| BuiltinModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(io_err(path))
}

/// Writes the whole model folder. Existing files are replaced.
pub fn write_model_dir(dir: &Path, shape: &BuiltinShape, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_json(&dir.join("config.json"), &shape.config_json())?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": 256, "eos_token_id": [258, 256], "temperature": 0.7, "top_p": 0.8}),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "bos_token": null,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": false,
            "model_max_length": shape.max_position_embeddings,
        }),
    )?;
    write_tokenizer(&dir.join("tokenizer.json"))?;
    let readme = dir.join("README.md");
    std::fs::write(&readme, format!("# {BUILTIN_MODEL_NAME}\n\n{NOTICE}\n"))
        .map_err(io_err(&readme))?;
    write_random_safetensors(&dir.join("model.safetensors"), shape, seed)
}

/// A byte-level BPE over the 256 byte symbols with no merges: every byte is a token, so any
/// text round-trips, and the three special tokens of the chat template follow.
fn write_tokenizer(path: &Path) -> Result<()> {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let vocab: Vocab = alphabet
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .map_err(|e| BuiltinModelError::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| BuiltinModelError::Tokenizer(e.to_string()))?;
    tok.save(path, true)
        .map_err(|e| BuiltinModelError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Streams random weights to disk so that writing a multi-gigabyte model needs no more memory
/// than one buffer. Norm weights are near 1 and matrices scaled by fan-in, so activations stay
/// in a realistic range at any depth.
fn write_random_safetensors(path: &Path, shape: &BuiltinShape, seed: u64) -> Result<()> {
    let esz = shape.dtype.size_in_bytes();
    let tensors = shape.tensors();
    let dtype = match shape.dtype {
        WeightDtype::F32 => "F32",
        WeightDtype::F16 => "F16",
        WeightDtype::Bf16 => "BF16",
    };
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        json!({"format": "pt", "notice": NOTICE}),
    );
    let mut offset = 0usize;
    for (name, dims) in &tensors {
        let bytes = dims.iter().product::<usize>() * esz;
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": dims, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_string(&header)
        .unwrap_or_default()
        .into_bytes();
    // Padding the header to 8 bytes keeps every tensor aligned for in-place reads.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io_err(path))?;
    out.write_all(&header).map_err(io_err(path))?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = Vec::with_capacity(1 << 16);
    for (name, dims) in &tensors {
        let is_norm = dims.len() == 1 && name.ends_with("norm.weight");
        let scale = if dims.len() == 2 {
            (3.0 / dims[1] as f32).sqrt()
        } else {
            0.02
        };
        let mut left = dims.iter().product::<usize>();
        while left > 0 {
            let n = left.min(8192);
            buf.clear();
            for _ in 0..n {
                let u: f32 = rng.random::<f32>() * 2.0 - 1.0;
                let v = if is_norm { 1.0 + 0.1 * u } else { scale * u };
                match shape.dtype {
                    WeightDtype::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                    WeightDtype::F16 => buf.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                    WeightDtype::Bf16 => buf.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
                }
            }
            out.write_all(&buf).map_err(io_err(path))?;
            left -= n;
        }
    }
    out.flush().map_err(io_err(path))
}
