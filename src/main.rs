//! The `enclave` command line. The only place that uses `anyhow` and chooses exit codes: every
//! failure is printed as one line naming the problem and the fix.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod kb_command;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use enclave::bench::{self, BenchReport, EngineBackend, HttpBackend, PromptShape, WorkloadConfig};
use enclave::builtin_model::{write_model_dir, BuiltinShape, NOTICE};
use enclave::bundle::{resolve_model, ModelBundle};
use enclave::config::serve::{EngineOptions, LogFormat, ModelEntry, ServeOptions};
use enclave::config::PathsConfig;
use enclave::engine::{generate, spawn_engine, GenerateParams, SamplingParams};
use enclave::model::source::ModelInfo;
use enclave::model::{KvDtype, WeightDtype};
use enclave::tokenizer::{ChatInput, IncrementalDetokenizer};

#[derive(Parser)]
#[command(
    name = "enclave",
    version,
    about = "On-prem, air-gapped inference and support-agent server"
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct PathArgs {
    /// Runtime data: databases, indexes, agents and the built-in test model [default: $XDG_DATA_HOME/enclave or ~/.local/share/enclave]
    #[arg(long, global = true, env = "ENCLAVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Folder whose subfolders are models, each served under its folder name
    #[arg(
        long,
        global = true,
        env = "ENCLAVE_MODELS_DIR",
        default_value = "models"
    )]
    models_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API (chat, completions, models, tokenize, metrics)
    Serve(ServeArgs),
    /// Read an API key on stdin and print the hash that --api-key-hash takes
    HashApiKey,
    /// Generate text from a prompt and stream it to stdout (tokens/s on stderr)
    Generate(GenerateArgs),
    /// List every model found: in the models folder, plus the built-in test model
    Models,
    /// Write a random-weight test model (output is noise) in Hugging Face layout
    WriteTestModel(WriteTestModelArgs),
    /// The knowledge base: collections of documents and tickets, embedded locally and searched
    Kb(kb_command::KbArgs),
    /// Offline throughput benchmark: a seeded workload through this process's engine (or an OpenAI-compatible server with --url); prints tokens/s, TTFT and ITL percentiles and RSS
    Bench(BenchArgs),
}

/// How the engine batches and caches; shared by every command that runs one.
#[derive(Args, Default)]
struct EngineArgs {
    /// Most sequences running at once [default: 64]
    #[arg(long)]
    max_num_seqs: Option<usize>,
    /// Token budget of one step, shared by prefill chunks and decodes [default: 512]
    #[arg(long)]
    max_num_batched_tokens: Option<usize>,
    /// KV cache size: bytes (4GiB, 512MiB, 1000000) or a share of free memory (0.2) [default: 0.2]
    #[arg(long)]
    kv_cache_memory: Option<String>,
    /// Element type of the KV cache: f32, bf16 or f16 [default: bf16]
    #[arg(long = "kv-cache-dtype")]
    kv_dtype: Option<String>,
    /// Tokens per KV cache block [default: 16]
    #[arg(long)]
    block_size: Option<usize>,
    /// Turn off prefix caching (reusing the KV of prompts that start alike)
    #[arg(long)]
    no_prefix_caching: bool,
    /// Requests that may wait for a slot before new ones are refused as overloaded [default: 1024]
    #[arg(long)]
    max_queue_len: Option<usize>,
    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a build with --features cuda) [default: cpu]
    #[arg(long)]
    device: Option<String>,
    /// On a GPU, the share of its memory to fill with weights, activations and the KV cache [default: 0.9]
    #[arg(long)]
    gpu_memory_utilization: Option<f64>,
}

impl EngineArgs {
    fn options(&self) -> EngineOptions {
        EngineOptions {
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            kv_cache_memory: self.kv_cache_memory.clone(),
            kv_cache_dtype: self.kv_dtype.clone(),
            block_size: self.block_size,
            enable_prefix_caching: self.no_prefix_caching.then_some(false),
            max_queue_len: self.max_queue_len,
            device: self.device.clone(),
            gpu_memory_utilization: self.gpu_memory_utilization,
        }
    }
}

/// Settings come from these flags, then the --config file, then ENCLAVE_* environment
/// variables (ENCLAVE_HOST, ENCLAVE_PORT, ENCLAVE_MODELS, ENCLAVE_API_KEY_HASHES,
/// ENCLAVE_MAX_CONCURRENT_PER_KEY, ENCLAVE_CORS_ORIGINS, ENCLAVE_MAX_BODY_BYTES,
/// ENCLAVE_SHUTDOWN_TIMEOUT_SECS, ENCLAVE_LOG_FORMAT, ENCLAVE_MAX_NUM_SEQS,
/// ENCLAVE_MAX_NUM_BATCHED_TOKENS, ENCLAVE_KV_CACHE_MEMORY, ENCLAVE_KV_CACHE_DTYPE,
/// ENCLAVE_BLOCK_SIZE, ENCLAVE_ENABLE_PREFIX_CACHING, ENCLAVE_MAX_QUEUE_LEN, ENCLAVE_DEVICE,
/// ENCLAVE_GPU_MEMORY_UTILIZATION,
/// ENCLAVE_TLS_CERT, ENCLAVE_TLS_KEY, ENCLAVE_AGENTS_DIR, ENCLAVE_DEMO_AGENT,
/// ENCLAVE_RESOLUTION_WINDOW_DAYS; lists
/// comma-separated), then the defaults. The config file takes the same names in TOML, with
/// models as [[models]] tables (path, name, aliases, tool_call_parser) and engine settings
/// under [engine]; see README.md.
#[derive(Args)]
struct ServeArgs {
    /// A model to serve, repeatable: a folder, a folder name under --models-dir, or a repo id in the local Hugging Face cache; NAME=SPEC serves it as NAME [default: the built-in random test model]
    #[arg(long = "model")]
    models: Vec<String>,
    /// An embedding model to serve at /v1/embeddings, repeatable: a sentence-transformers folder (modules.json, pooling config); NAME=FOLDER serves it as NAME. With only embedding models, no chat model is loaded
    #[arg(long = "embedding-model")]
    embedding_models: Vec<String>,
    /// A cross-encoder folder ([NAME=]FOLDER) that reorders the best knowledge-base search hits (vector-store and admin search)
    #[arg(long)]
    reranker: Option<String>,
    /// Folder of support-agent definitions, one TOML file per agent [default: agents in the data directory]
    #[arg(long)]
    agents_dir: Option<PathBuf>,
    /// Do not serve the built-in demo-retail agent
    #[arg(long)]
    no_demo_agent: bool,
    /// An agent's answer counts as resolved when the same contact does not come back with the same intent within this many days [default: 7]
    #[arg(long)]
    resolution_window_days: Option<u32>,
    /// Address to listen on; 0.0.0.0 exposes the server to the network [default: 127.0.0.1]
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one (printed at start) [default: 8080]
    #[arg(long)]
    port: Option<u16>,
    /// A TOML config file
    #[arg(long, env = "ENCLAVE_CONFIG")]
    config: Option<PathBuf>,
    /// Accept this API key, given as its hash (from `enclave hash-api-key`); repeatable. Without any, no key is needed
    #[arg(long = "api-key-hash")]
    api_key_hashes: Vec<String>,
    /// Requests one API key may have in flight before more get 429; 0 is no limit [default: 0]
    #[arg(long)]
    max_concurrent_per_key: Option<usize>,
    /// Allow browsers on this origin to call the API (CORS), repeatable; * allows any [default: none, CORS off]
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes [default: 8388608]
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// On SIGTERM, seconds to let in-flight requests finish before exiting [default: 30]
    #[arg(long)]
    shutdown_timeout_secs: Option<u64>,
    /// Log lines as text or json [default: text]
    #[arg(long)]
    log_format: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long)]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

impl ServeArgs {
    fn options(&self) -> ServeOptions {
        ServeOptions {
            models: self
                .models
                .iter()
                .map(|m| ModelEntry::from_flag(m))
                .collect(),
            embedding_models: self
                .embedding_models
                .iter()
                .map(|m| ModelEntry::from_flag(m))
                .collect(),
            reranker: self.reranker.clone(),
            agents_dir: self.agents_dir.clone(),
            demo_agent: self.no_demo_agent.then_some(false),
            resolution_window_days: self.resolution_window_days,
            host: self.host.clone(),
            port: self.port,
            api_key_hashes: self.api_key_hashes.clone(),
            max_concurrent_per_key: self.max_concurrent_per_key,
            cors_origins: self.cors_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            shutdown_timeout_secs: self.shutdown_timeout_secs,
            log_format: self.log_format.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            engine: self.engine.options(),
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Model to load (as for `generate`) [default: the built-in random test model]
    #[arg(long)]
    model: Option<String>,
    /// Benchmark an OpenAI-compatible server at this base URL instead of loading a model
    #[arg(long)]
    url: Option<String>,
    /// The model name sent to --url
    #[arg(long, default_value = "default")]
    served_model_name: String,
    /// With --url: the server's process id, to report its resident memory
    #[arg(long)]
    server_pid: Option<u32>,
    /// Requests in the measured run
    #[arg(long, default_value_t = 64)]
    num_requests: usize,
    /// Requests in flight at once; 0 submits them all at once
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Prompt length in tokens, MIN:MAX or N (random token ids)
    #[arg(long, default_value = "100:1024", value_parser = parse_range)]
    input_len: (usize, usize),
    /// Send chat prompts of this many random words instead of random token ids
    #[arg(long)]
    prompt_words: Option<usize>,
    /// With --prompt-words: a system message of this many words that every request shares
    #[arg(long, default_value_t = 0)]
    shared_prefix_words: usize,
    /// Output length in tokens, MIN:MAX or N
    #[arg(long, default_value = "16:256", value_parser = parse_range)]
    output_len: (usize, usize),
    /// Stop at end-of-sequence tokens instead of always generating the full output length
    #[arg(long)]
    respect_eos: bool,
    /// Requests run once before measuring (not counted)
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Run the measured workload this many times, a report each, to watch memory settle
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not a length: give N or MIN:MAX");
    let (a, b) = s.split_once(':').unwrap_or((s, s));
    let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

#[derive(Args)]
struct GenerateArgs {
    /// A model folder, a folder name under --models-dir, or a repo id in the local Hugging Face cache [default: the built-in random test model]
    #[arg(long)]
    model: Option<String>,
    /// Complete the text as given (with the tokenizer's own special tokens, such as BOS) instead of formatting it as a user message with the chat template
    #[arg(long)]
    raw: bool,
    /// A system message to put before the prompt (chat mode only)
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate [default: the rest of the context]
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy [default: the model's generation_config.json, else 0]
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this total probability [default: the model's, else 1]
    #[arg(long)]
    top_p: Option<f32>,
    /// Keep only the k most likely tokens [default: the model's, else all]
    #[arg(long)]
    top_k: Option<usize>,
    /// Drop tokens less likely than this fraction of the most likely one (0 keeps all)
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Divide the positive logits of tokens already in the prompt or output by this (and multiply the negative ones); 1 is off [default: the model's, else 1]
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Seed for sampling: the same seed and prompt give the same text
    #[arg(long)]
    seed: Option<u64>,
    /// Element type of the KV cache: f32, bf16 or f16
    #[arg(long, default_value = "f32", value_parser = parse_kv_dtype)]
    kv_cache_dtype: KvDtype,
    /// Where the model runs: cpu, cuda or cuda:N (CUDA needs a build with --features cuda)
    #[arg(long, default_value = "cpu")]
    device: enclave::model::DeviceSpec,
    /// The prompt
    prompt: String,
}

#[derive(Args)]
struct WriteTestModelArgs {
    /// Folder to write (created if missing)
    dir: PathBuf,
    /// `tiny` (the built-in default), `qwen2.5-0.5b` or `llama-3.1-8b` (real models' shapes, for benchmarks)
    #[arg(long, default_value = "tiny")]
    shape: String,
    /// f32, bf16 or f16
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

fn parse_kv_dtype(s: &str) -> Result<KvDtype, String> {
    KvDtype::parse(s).ok_or_else(|| format!("`{s}` is not a KV cache dtype; use f32, bf16 or f16"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENCLAVE_LOG")
        .unwrap_or_else(|_| "warn,enclave=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Activation buffers reused layer after layer, one thread pool; see the tuning module.
    enclave::model::cpu::tuning::apply();
    let paths = PathsConfig::resolve(cli.paths.data_dir, Some(cli.paths.models_dir));
    let result = match cli.command {
        Command::Serve(args) => run_serve(paths, args),
        Command::HashApiKey => run_hash_api_key(),
        Command::Generate(args) => {
            init_logging(LogFormat::Text);
            run_generate(&paths, args)
        }
        Command::Models => run_models(&paths),
        Command::Kb(args) => {
            init_logging(LogFormat::Text);
            kb_command::run(&paths, args)
        }
        Command::WriteTestModel(args) => run_write_test_model(args),
        Command::Bench(args) => {
            init_logging(LogFormat::Text);
            run_bench(&paths, args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(paths: PathsConfig, args: ServeArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => ServeOptions::from_file(path)?,
        None => ServeOptions::default(),
    };
    let config = args
        .options()
        .or(file)
        .or(ServeOptions::from_env()?)
        .resolve()?;
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    runtime.block_on(enclave::server::run(config, paths, |addr| {
        // One plain line on stdout, whatever the log format: scripts wait for it.
        println!("listening on {scheme}://{addr}");
        let _ = std::io::stdout().flush();
    }))?;
    Ok(())
}

fn run_hash_api_key() -> Result<()> {
    let mut key = String::new();
    std::io::stdin()
        .read_line(&mut key)
        .context("reading the API key from stdin")?;
    let key = key.trim();
    if key.is_empty() {
        bail!("no API key on stdin: run `echo -n \"$KEY\" | enclave hash-api-key`");
    }
    println!("{}", enclave::api::auth::KeyDigest::of(key));
    Ok(())
}

fn run_generate(paths: &PathsConfig, args: GenerateArgs) -> Result<()> {
    let source = resolve_model(paths, args.model.as_deref())?;
    let bundle = ModelBundle::load(&source, &args.device.open()?)?;
    if bundle.is_builtin() {
        eprintln!("note: {NOTICE}");
    }
    let tok = &bundle.tokenizer;
    let prompt = if args.raw {
        tok.encode(&args.prompt, true)?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(serde_json::json!({"role": "system", "content": system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": args.prompt}));
        let input = ChatInput {
            messages,
            tools: None,
            add_generation_prompt: true,
            kwargs: Default::default(),
            now: None,
        };
        tok.encode_chat(&input).with_context(|| {
            format!(
                "formatting the prompt with the chat template of {} (or pass --raw to complete plain text)",
                source.dir.display()
            )
        })?
    };
    let g = &bundle.generation;
    let sampled = g.do_sample != Some(false);
    let sampling = SamplingParams {
        temperature: args
            .temperature
            .or(g.temperature.filter(|_| sampled).map(|t| t as f32))
            .unwrap_or(0.0),
        top_p: args
            .top_p
            .or(g.top_p.filter(|_| sampled).map(|p| p as f32))
            .unwrap_or(1.0),
        top_k: args.top_k.or(g.top_k.filter(|_| sampled)),
        min_p: args.min_p,
        // Hugging Face applies the model's repetition penalty whether or not it samples.
        repetition_penalty: args
            .repetition_penalty
            .or(g.repetition_penalty.map(|r| r as f32))
            .unwrap_or(1.0),
        seed: args.seed,
        ..SamplingParams::default()
    };
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling,
        stop_token_ids: bundle.stop_token_ids.clone(),
        block_size: 16,
        kv_dtype: args.kv_cache_dtype,
    };
    let mut detok = IncrementalDetokenizer::new(true);
    let mut stdout = std::io::stdout().lock();
    let for_terminal = stdout.is_terminal();
    let out = generate(bundle.model.as_ref(), &prompt, &params, &mut |id| {
        let mut piece = detok.push(tok, id).map_err(|e| e.to_string())?;
        if for_terminal {
            piece = escape_controls(&piece);
        }
        stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| e.to_string())
    })?;
    let mut tail = detok.finish(tok)?;
    if for_terminal {
        tail = escape_controls(&tail);
    }
    writeln!(stdout, "{tail}").context("writing to stdout")?;
    let n = out.tokens.len();
    let decode_rate = if n > 1 && out.decode_secs > 0.0 {
        (n - 1) as f64 / out.decode_secs
    } else {
        0.0
    };
    eprintln!(
        "{n} tokens ({:?}); prefill {} tokens at {:.1} tok/s; decode {:.1} tok/s",
        out.finish_reason,
        out.prompt_len,
        out.prompt_len as f64 / out.prefill_secs.max(1e-9),
        decode_rate
    );
    Ok(())
}

/// Model text shown on a terminal: control characters other than newline and tab become
/// visible escapes, so generated bytes (an ESC sequence, say) can never drive the terminal.
/// Piped output is left exactly as generated.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn run_models(paths: &PathsConfig) -> Result<()> {
    let mut sources = vec![resolve_model(paths, None)?];
    sources.extend(paths.locator().discover());
    println!(
        "{:<28} {:<8} {:>10} {:<6} {:>8}  PATH",
        "NAME", "ARCH", "PARAMS", "DTYPE", "CONTEXT"
    );
    for s in sources {
        match ModelInfo::read(&s) {
            Ok(i) => println!(
                "{:<28} {:<8} {:>10} {:<6} {:>8}  {}",
                i.source.name,
                i.architecture,
                human_count(i.num_parameters),
                i.dtype,
                i.max_position_embeddings,
                i.source.dir.display()
            ),
            Err(e) => println!("{:<28} unreadable: {e}", s.name),
        }
    }
    Ok(())
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn run_write_test_model(args: WriteTestModelArgs) -> Result<()> {
    let dtype = match args.dtype.as_str() {
        "f32" => WeightDtype::F32,
        "bf16" => WeightDtype::Bf16,
        "f16" => WeightDtype::F16,
        other => bail!("`--dtype {other}` is not supported; use f32, bf16 or f16"),
    };
    let shape = match args.shape.as_str() {
        "tiny" => BuiltinShape {
            dtype,
            ..BuiltinShape::tiny()
        },
        "qwen2.5-0.5b" => BuiltinShape::qwen2_5_0_5b(dtype),
        "llama-3.1-8b" => BuiltinShape::llama_3_1_8b(dtype),
        other => bail!("`--shape {other}` is not known; use tiny, qwen2.5-0.5b or llama-3.1-8b"),
    };
    write_model_dir(&args.dir, &shape, args.seed)?;
    eprintln!("wrote {} ({NOTICE})", args.dir.display());
    Ok(())
}

fn run_bench(paths: &PathsConfig, args: BenchArgs) -> Result<()> {
    // The prompt shape; `measure` sets the request counts and seeds.
    let workload = |vocab_size: usize| WorkloadConfig {
        num_requests: 0,
        shape: match args.prompt_words {
            Some(words) => PromptShape::ChatWords {
                words,
                shared_words: args.shared_prefix_words,
            },
            None => PromptShape::Tokens {
                min: args.input_len.0,
                max: args.input_len.1,
                vocab_size: vocab_size as u32,
            },
        },
        output_len: args.output_len,
        seed: 0,
    };
    let ignore_eos = !args.respect_eos;
    if let Some(url) = &args.url {
        if args.prompt_words.is_none() {
            bail!("--url needs --prompt-words: another server's vocabulary is unknown here, so send it text");
        }
        let backend = HttpBackend {
            base_url: url.clone(),
            model: args.served_model_name.clone(),
            ignore_eos,
        };
        return measure(&backend, &args, &workload(0), || {
            bench::rss(args.server_pid)
        });
    }
    let source = resolve_model(paths, args.model.as_deref())?;
    let engine = enclave::server::engine_config(&args.engine.options())?;
    let bundle = ModelBundle::load(&source, &engine.device.open()?)?;
    if bundle.is_builtin() {
        eprintln!("note: {NOTICE}");
    }
    let vocab = bundle.model.config().vocab_size;
    let handle = spawn_engine(bundle.model, engine, bundle.stop_token_ids.clone())?;
    let backend = EngineBackend {
        handle: &handle,
        tokenizer: &bundle.tokenizer,
        ignore_eos,
    };
    measure(&backend, &args, &workload(vocab), || {
        // Memory is read once the engine is idle (it releases free heap memory then).
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(5) {
            let m = handle.metrics();
            if m.num_running == 0 && m.num_waiting == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        bench::rss(None)
    })
}

/// Warms up, then runs the measured workload and prints its report with memory before and
/// after. `template` carries the prompt shape; counts and seeds are set here.
fn measure(
    backend: &dyn bench::Backend,
    args: &BenchArgs,
    template: &WorkloadConfig,
    memory: impl Fn() -> Option<bench::Rss>,
) -> Result<()> {
    if args.warmup > 0 {
        let warm = bench::generate(&WorkloadConfig {
            num_requests: args.warmup,
            seed: args.seed.wrapping_add(1_000_003),
            ..template.clone()
        });
        bench::run(backend, &warm, 0).context("warm-up run")?;
    }
    let requests = bench::generate(&WorkloadConfig {
        num_requests: args.num_requests,
        seed: args.seed,
        ..template.clone()
    });
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("# round {round} of {}", args.rounds);
        }
        let before = memory();
        let out = bench::run(backend, &requests, args.concurrency)?;
        let mut report = BenchReport::new(&out, args.concurrency);
        report.rss_before = before;
        report.rss_after = memory();
        print!("{report}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn terminal_output_escapes_control_characters_but_keeps_layout() {
        assert_eq!(
            escape_controls("a\u{1b}[2Jb\n\tc\u{7}é🙂"),
            "a\\u{1b}[2Jb\n\tc\\u{7}é🙂"
        );
    }
}
