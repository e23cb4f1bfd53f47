//! The engine's tokens as text: stop strings end a sample early, across token boundaries, and
//! are left out of the text.

use anyhow::{bail, Result};
use candle_core::Device;
use enclave::builtin_model::{write_model_dir, BuiltinShape};
use enclave::engine::{
    spawn_engine, EngineConfig, FinishReason, GenerateRequest, KvCacheMemory, SamplingParams,
};
use enclave::model::{load_causal_lm, KvDtype};
use enclave::text_stream::{TextEvent, TextStream};
use enclave::tokenizer::Tokenizer;

/// Each sample's text, tokens and finish reason.
fn run(
    stream: &mut TextStream<'_>,
    n: usize,
) -> Result<Vec<(String, usize, Option<FinishReason>)>> {
    let mut out = vec![(String::new(), 0, None); n];
    while let Some(event) = stream.blocking_next() {
        match event? {
            TextEvent::Delta { index, text, .. } => {
                out[index].0.push_str(&text);
                out[index].1 += 1;
            }
            TextEvent::Finished {
                index,
                text,
                reason,
            } => {
                out[index].0.push_str(&text);
                out[index].2 = Some(reason);
            }
            TextEvent::Admitted { .. } => {}
            TextEvent::Failed(m) => bail!("failed: {m}"),
        }
    }
    Ok(out)
}

#[test]
fn a_stop_string_ends_the_sample_and_is_left_out() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_model_dir(dir.path(), &BuiltinShape::tiny(), 7)?;
    let tokenizer = Tokenizer::from_dir(dir.path())?;
    let handle = spawn_engine(
        load_causal_lm(dir.path(), &Device::Cpu)?,
        EngineConfig {
            kv_cache_memory: KvCacheMemory::Bytes(4 << 20),
            kv_dtype: KvDtype::F32,
            ..EngineConfig::default()
        },
        vec![],
    )?;
    let prompt = tokenizer.encode("Tell me a story about the sea.", false)?;
    // A seeded draw gives varied text, the same each run.
    let request = GenerateRequest {
        max_tokens: Some(80),
        ..GenerateRequest::new(
            prompt,
            SamplingParams {
                seed: Some(3),
                ..SamplingParams::default()
            },
        )
    };
    let mut free = TextStream::new(handle.generate(request.clone())?, &tokenizer, 1, &[], true);
    let full = run(&mut free, 1)?.remove(0);
    assert_eq!(full.2, Some(FinishReason::Length));
    // A stop string cut from the middle of the output, a few characters long: it spans
    // several byte-level tokens.
    let chars: Vec<char> = full.0.chars().collect();
    if chars.len() < 16 {
        bail!(
            "the output is too short to cut a stop string from: {:?}",
            full.0
        );
    }
    let stop: String = chars[8..12].iter().collect();
    let expect = &full.0[..full.0.find(&stop).unwrap_or(0)];
    let mut stopped = TextStream::new(
        handle.generate(request)?,
        &tokenizer,
        1,
        std::slice::from_ref(&stop),
        true,
    );
    let got = run(&mut stopped, 1)?.remove(0);
    assert_eq!(got.0, expect, "the text before the stop string, without it");
    assert_eq!(got.2, Some(FinishReason::Stop));
    assert!(
        got.1 < full.1,
        "generation ended early ({} of {} tokens)",
        got.1,
        full.1
    );
    // The engine let go of the stopped sample.
    let start = std::time::Instant::now();
    while handle.metrics().kv_blocks_used > 0 {
        if start.elapsed().as_secs() > 10 {
            bail!("blocks still held after the stop string");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}
