//! The `enclave` command line. The only place that uses `anyhow` and chooses exit codes: every
//! failure is printed as one line naming the problem and the fix.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};

use enclave::builtin_model::{write_model_dir, BuiltinShape, NOTICE};
use enclave::bundle::{resolve_model, ModelBundle};
use enclave::config::PathsConfig;
use enclave::engine::{generate, GenerateParams, SamplingParams};
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
    /// Generate text from a prompt and stream it to stdout (tokens/s on stderr)
    Generate(GenerateArgs),
    /// List every model found: in the models folder, plus the built-in test model
    Models,
    /// Write a random-weight test model (output is noise) in Hugging Face layout
    WriteTestModel(WriteTestModelArgs),
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
    /// Seed for sampling: the same seed and prompt give the same text
    #[arg(long)]
    seed: Option<u64>,
    /// Element type of the KV cache: f32, bf16 or f16
    #[arg(long, default_value = "f32", value_parser = parse_kv_dtype)]
    kv_cache_dtype: KvDtype,
    /// The prompt
    prompt: String,
}

#[derive(Args)]
struct WriteTestModelArgs {
    /// Folder to write (created if missing)
    dir: PathBuf,
    /// `tiny` (the built-in default) or `qwen2.5-0.5b` (the real model's shape, for benchmarks)
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Activation buffers are reused layer after layer; see the allocator module.
    enclave::model::cpu::allocator::keep_freed_buffers(256 << 20);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENCLAVE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let paths = PathsConfig::resolve(cli.paths.data_dir, Some(cli.paths.models_dir));
    let result = match cli.command {
        Command::Generate(args) => run_generate(&paths, args),
        Command::Models => run_models(&paths),
        Command::WriteTestModel(args) => run_write_test_model(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_generate(paths: &PathsConfig, args: GenerateArgs) -> Result<()> {
    let source = resolve_model(paths, args.model.as_deref())?;
    let bundle = ModelBundle::load(&source, &Device::Cpu)?;
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
        seed: args.seed,
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
        other => bail!("`--shape {other}` is not known; use tiny or qwen2.5-0.5b"),
    };
    write_model_dir(&args.dir, &shape, args.seed)?;
    eprintln!("wrote {} ({NOTICE})", args.dir.display());
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
