//! Single-sequence prefill and decode throughput on a Qwen2.5-0.5B-shaped random-weight model,
//! with the memory-bandwidth ceiling for decode measured in the same run.
//!
//! `cargo bench --bench forward -- [--dtype f32|bf16|all] [--prefill 512] [--decode 64] [--reps 3]`
//!
//! The ceiling is the median 2-thread read bandwidth of `../shared/tools/membw.c` divided by
//! the bytes of weights one decode step reads (a tied embedding counted once, as the LM head).
//! Models are written once under `target/bench-models/` (about 1 GB in bf16, 2 GB in f32).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use enclave::builtin_model::{write_model_dir, BuiltinShape};
use enclave::ids::{BlockId, TokenId};
use enclave::model::{
    load_causal_lm, CausalLm, ForwardBatch, KvCache, KvDtype, LogitsRows, SequenceChunk,
    WeightDtype, Weights,
};

struct Opts {
    dtypes: Vec<WeightDtype>,
    prefill: usize,
    decode: usize,
    reps: usize,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        dtypes: vec![WeightDtype::F32, WeightDtype::Bf16],
        prefill: 512,
        decode: 64,
        reps: 3,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dtype" => {
                o.dtypes = match val()?.as_str() {
                    "f32" => vec![WeightDtype::F32],
                    "bf16" => vec![WeightDtype::Bf16],
                    "f16" => vec![WeightDtype::F16],
                    "all" => vec![WeightDtype::F32, WeightDtype::Bf16],
                    other => bail!("--dtype {other}: use f32, bf16, f16 or all"),
                }
            }
            "--prefill" => o.prefill = val()?.parse()?,
            "--decode" => o.decode = val()?.parse()?,
            "--reps" => o.reps = val()?.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median 2-thread read bandwidth in GB/s, from the shared probe (built on first use).
fn read_bandwidth_gbs(root: &Path) -> Option<f64> {
    let src = root.join("../shared/tools/membw.c");
    let bin = root.join("target/membw");
    if !bin.exists() {
        let ok = Command::new("cc")
            .args(["-O3", "-march=native", "-fopenmp", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
    }
    let out = Command::new(&bin)
        .args(["1024", "10"])
        .env("OMP_NUM_THREADS", "2")
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["read_gbs_median"].as_f64()
}

/// Bytes one decode step reads: every matrix and vector, the embedding once (as the LM head
/// when tied; its one looked-up row is negligible otherwise).
fn weight_bytes_per_token(dir: &Path, tied: bool) -> Result<u64> {
    let weights = Weights::open_dir(dir)?;
    let mut total = 0u64;
    for name in weights.tensor_names() {
        if name != "model.embed_tokens.weight" || tied {
            total += weights.get(name)?.bytes().len() as u64;
        }
    }
    Ok(total)
}

fn pseudo_tokens(n: usize, vocab: usize) -> Vec<TokenId> {
    (0..n)
        .map(|i| TokenId(((i * 7919 + 13) % vocab) as u32))
        .collect()
}

/// One sequence of `len` pseudo-random tokens with its own cache and block table.
struct Sequence {
    cache: KvCache,
    table: Vec<BlockId>,
    tokens: Vec<TokenId>,
}

const BLOCK_SIZE: usize = 16;

impl Sequence {
    fn new(model: &dyn CausalLm, len: usize) -> Result<Self> {
        let blocks = len.div_ceil(BLOCK_SIZE);
        Ok(Self {
            cache: KvCache::new(model.kv_cache_spec(blocks, BLOCK_SIZE, KvDtype::F32))?,
            table: (0..blocks as u32).map(BlockId).collect(),
            tokens: pseudo_tokens(len, model.config().vocab_size),
        })
    }

    /// Runs tokens `from..to` through the model, the ones before already in the cache.
    fn forward(&mut self, model: &dyn CausalLm, from: usize, to: usize) -> Result<()> {
        let chunk = SequenceChunk {
            tokens: &self.tokens[from..to],
            num_computed_tokens: from,
            block_table: &self.table,
        };
        let batch = ForwardBatch::from_chunks(&[chunk], BLOCK_SIZE, LogitsRows::LastOfEachSequence);
        std::hint::black_box(model.forward(&batch, &mut self.cache)?);
        Ok(())
    }
}

fn time_prefill(model: &dyn CausalLm, n: usize) -> Result<f64> {
    let mut seq = Sequence::new(model, n)?;
    let t = Instant::now();
    seq.forward(model, 0, n)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn time_decode(model: &dyn CausalLm, prompt: usize, steps: usize) -> Result<f64> {
    let mut seq = Sequence::new(model, prompt + steps)?;
    seq.forward(model, 0, prompt)?;
    let t = Instant::now();
    for i in prompt..prompt + steps {
        seq.forward(model, i, i + 1)?;
    }
    Ok(steps as f64 / t.elapsed().as_secs_f64())
}

fn model_dir(root: &Path, dtype: WeightDtype) -> Result<PathBuf> {
    let dir = root
        .join("target/bench-models")
        .join(format!("qwen2.5-0.5b-random-{}", dtype.name()));
    if !dir.join("model.safetensors").is_file() {
        eprintln!("writing {} (once)", dir.display());
        write_model_dir(&dir, &BuiltinShape::qwen2_5_0_5b(dtype), 1)?;
    }
    Ok(dir)
}

fn main() -> Result<()> {
    let opts = parse_opts()?;
    enclave::model::cpu::tuning::apply();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    println!(
        "threads: {} (RAYON_NUM_THREADS)",
        rayon::current_num_threads()
    );
    for dtype in &opts.dtypes {
        let dir = model_dir(&root, *dtype)?;
        // Resets VmHWM so each dtype reports its own peak (Linux; harmless elsewhere).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss_before = status_kib("VmRSS:");
        let model = load_causal_lm(&dir, &Device::Cpu)?;
        let rss_loaded = status_kib("VmRSS:");
        let bytes = weight_bytes_per_token(&dir, model.config().tie_word_embeddings)?;
        let mut prefill = Vec::new();
        let mut decode = Vec::new();
        let mut bw = Vec::new();
        // Alternate bandwidth probes with the timed runs: the machine's bandwidth drifts.
        for _ in 0..opts.reps {
            bw.extend(read_bandwidth_gbs(&root));
            prefill.push(time_prefill(model.as_ref(), opts.prefill)?);
            decode.push(time_decode(model.as_ref(), 16, opts.decode)?);
        }
        let d = median(decode);
        println!(
            "== Qwen2.5-0.5B shape, {} weights ({:.0} MB read per decode token)",
            dtype.name(),
            bytes as f64 / 1e6
        );
        println!(
            "prefill {} tokens: {:.1} tok/s (median of {})",
            opts.prefill,
            median(prefill),
            opts.reps
        );
        println!(
            "decode {} tokens:  {:.2} tok/s (median of {})",
            opts.decode, d, opts.reps
        );
        if bw.is_empty() {
            println!(
                "ceiling: membw unavailable (needs cc with OpenMP and ../shared/tools/membw.c)"
            );
        } else {
            let gbs = median(bw);
            let ceiling = gbs * 1e9 / bytes as f64;
            println!("ceiling: {gbs:.2} GB/s read (median) / {:.0} MB = {ceiling:.2} tok/s; decode at {:.0}% of it", bytes as f64 / 1e6, 100.0 * d / ceiling);
        }
        println!(
            "RSS: {:.0} MB before load, {:.0} MB after load, peak {:.0} MB (weights file {:.0} MB)",
            rss_before as f64 / 1024.0,
            rss_loaded as f64 / 1024.0,
            status_kib("VmHWM:") as f64 / 1024.0,
            bytes as f64 / 1e6
        );
    }
    Ok(())
}
