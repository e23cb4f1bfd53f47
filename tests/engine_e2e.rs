//! The engine end to end on a tiny random model: continuous batching gives exactly what
//! sequential runs give, prefix-cache hits change nothing, cancellation frees every block, and
//! bad requests fail at once.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use candle_core::Device;
use enclave::builtin_model::{write_model_dir, BuiltinShape};
use enclave::engine::{
    spawn_engine, EngineConfig, EngineError, EngineEvent, EngineHandle, FinishReason,
    GenerateRequest, KvCacheMemory, SamplingParams, TokenStream,
};
use enclave::ids::TokenId;
use enclave::model::{load_causal_lm, KvDtype, WeightDtype};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const VOCAB: u32 = 272;
/// Bytes per KV block of the tiny model in f32 (2 layers, 2 kv heads, head_dim 16, 16 tokens).
const BLOCK_BYTES: u64 = 2 * 2 * 2 * 16 * 4 * 16;

struct Engine {
    handle: EngineHandle,
    _dir: tempfile::TempDir,
}

fn engine(config: EngineConfig, eos: Vec<TokenId>) -> Result<Engine> {
    engine_with(WeightDtype::F32, config, eos)
}

fn engine_with(dtype: WeightDtype, config: EngineConfig, eos: Vec<TokenId>) -> Result<Engine> {
    let dir = tempfile::tempdir()?;
    let shape = BuiltinShape {
        dtype,
        ..BuiltinShape::tiny()
    };
    write_model_dir(dir.path(), &shape, 7)?;
    let model = load_causal_lm(dir.path(), &Device::Cpu)?;
    let handle = spawn_engine(model, config, eos)?;
    Ok(Engine { handle, _dir: dir })
}

fn config(num_blocks: u64) -> EngineConfig {
    EngineConfig {
        max_num_seqs: 64,
        max_num_batched_tokens: 256,
        kv_cache_memory: KvCacheMemory::Bytes(num_blocks * BLOCK_BYTES),
        kv_dtype: KvDtype::F32,
        ..EngineConfig::default()
    }
}

/// Every sample's tokens and finish reason, and the prompt tokens the prefix cache served.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    samples: Vec<(Vec<TokenId>, Option<FinishReason>)>,
    num_cached_tokens: usize,
}

fn collect(mut stream: TokenStream, n: usize) -> Result<Outcome> {
    let mut out = Outcome {
        samples: vec![(Vec::new(), None); n],
        num_cached_tokens: 0,
    };
    while let Some(e) = stream.blocking_next() {
        match e {
            EngineEvent::Admitted { num_cached_tokens } => {
                out.num_cached_tokens = num_cached_tokens
            }
            EngineEvent::Token(t) => out.samples[t.index].0.push(t.token),
            EngineEvent::Finished { index, reason } => out.samples[index].1 = Some(reason),
            EngineEvent::Failed(m) => bail!("request failed: {m}"),
        }
    }
    Ok(out)
}

fn random_requests(count: usize, seeded: bool) -> Vec<GenerateRequest> {
    let mut rng = SmallRng::seed_from_u64(11);
    (0..count)
        .map(|i| {
            let len = rng.random_range(1..180);
            let prompt = (0..len)
                .map(|_| TokenId(rng.random_range(0..VOCAB)))
                .collect();
            let sampling = if seeded {
                SamplingParams {
                    temperature: 0.9,
                    top_p: 0.95,
                    seed: Some(i as u64),
                    ..SamplingParams::default()
                }
            } else {
                SamplingParams::greedy()
            };
            GenerateRequest {
                max_tokens: Some(rng.random_range(1..24)),
                ..GenerateRequest::new(prompt, sampling)
            }
        })
        .collect()
}

fn sequential(handle: &EngineHandle, requests: &[GenerateRequest]) -> Result<Vec<Outcome>> {
    requests
        .iter()
        .map(|r| collect(handle.generate(r.clone())?, r.n))
        .collect()
}

fn concurrent(handle: &EngineHandle, requests: &[GenerateRequest]) -> Result<Vec<Outcome>> {
    let streams: Vec<TokenStream> = requests
        .iter()
        .map(|r| handle.generate(r.clone()))
        .collect::<Result<_, _>>()?;
    let threads: Vec<_> = streams
        .into_iter()
        .zip(requests)
        .map(|(s, r)| {
            let n = r.n;
            std::thread::spawn(move || collect(s, n))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| anyhow::anyhow!("collector panicked"))?
        })
        .collect()
}

fn tokens_only(o: &[Outcome]) -> Vec<Vec<(Vec<TokenId>, Option<FinishReason>)>> {
    o.iter().map(|x| x.samples.clone()).collect()
}

/// Waits until the engine reports no sequence and no used block.
fn wait_until_idle(handle: &EngineHandle) -> Result<()> {
    let start = Instant::now();
    loop {
        let m = handle.metrics();
        if m.kv_blocks_used == 0 && m.num_running == 0 && m.num_waiting == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the engine never went idle: {m:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sixty_four_concurrent_requests_equal_sequential_runs() -> Result<()> {
    // bf16 weights run the panel kernel on CPUs with AVX-512 BF16, f32 the tile kernel: each
    // must give a row the same bits in any batch.
    for (dtype, seeded) in [
        (WeightDtype::F32, false),
        (WeightDtype::F32, true),
        (WeightDtype::Bf16, false),
        (WeightDtype::Bf16, true),
    ] {
        let requests = random_requests(64, seeded);
        let alone = engine_with(
            dtype,
            EngineConfig {
                enable_prefix_caching: false,
                ..config(4096)
            },
            vec![],
        )?;
        let expect = sequential(&alone.handle, &requests)?;
        // A small budget forces chunked prefill beside decodes; a small cache forces
        // preemption; the prefix cache is on.
        let batched = engine_with(
            dtype,
            EngineConfig {
                max_num_batched_tokens: 128,
                ..config(30)
            },
            vec![],
        )?;
        let got = concurrent(&batched.handle, &requests)?;
        assert_eq!(
            tokens_only(&got),
            tokens_only(&expect),
            "{dtype:?} seeded {seeded}: batched tokens differ from one request at a time"
        );
        for o in &got {
            assert_eq!(o.samples[0].1, Some(FinishReason::Length));
        }
        let m = batched.handle.metrics();
        assert!(
            m.preemptions_total > 0,
            "the small cache was meant to preempt"
        );
        wait_until_idle(&batched.handle)?;
    }
    Ok(())
}

#[test]
fn a_prefix_cache_hit_gives_exactly_the_uncached_output() -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(5);
    let shared: Vec<TokenId> = (0..100)
        .map(|_| TokenId(rng.random_range(0..VOCAB)))
        .collect();
    let mut second = shared.clone();
    second.extend([TokenId(1), TokenId(2), TokenId(3)]);
    let request = |p: Vec<TokenId>| GenerateRequest {
        max_tokens: Some(12),
        ..GenerateRequest::new(p, SamplingParams::greedy())
    };
    let cold = engine(
        EngineConfig {
            enable_prefix_caching: false,
            ..config(256)
        },
        vec![],
    )?;
    let warm = engine(config(256), vec![]);
    let warm = warm?;
    for prompt in [shared.clone(), second.clone(), shared.clone()] {
        let expect = collect(cold.handle.generate(request(prompt.clone()))?, 1)?;
        let got = collect(warm.handle.generate(request(prompt))?, 1)?;
        assert_eq!(got.samples, expect.samples);
    }
    // The second prompt reused the first's 6 full blocks; the repeated first prompt reused
    // all it could while still computing its last token.
    let m = warm.handle.metrics();
    assert_eq!(m.prefix_hit_tokens, 96 + 96);
    let again = collect(warm.handle.generate(request(second))?, 1)?;
    assert_eq!(again.num_cached_tokens, 96);
    Ok(())
}

#[test]
fn cancelling_half_the_requests_frees_every_block() -> Result<()> {
    let e = engine(config(1024), vec![])?;
    let mut streams = Vec::new();
    for i in 0..16u32 {
        let prompt = (0..40 + i).map(|t| TokenId((t * 7 + i) % VOCAB)).collect();
        streams.push(e.handle.generate(GenerateRequest {
            max_tokens: Some(60),
            ..GenerateRequest::new(prompt, SamplingParams::greedy())
        })?);
    }
    // Read a few tokens from every stream, then drop every other one mid-generation.
    for s in &mut streams {
        let mut seen = 0;
        while seen < 3 {
            match s.blocking_next() {
                Some(EngineEvent::Token(_)) => seen += 1,
                Some(_) => {}
                None => bail!("a stream ended early"),
            }
        }
    }
    let mut kept = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        if i % 2 == 0 {
            kept.push(s);
        }
    }
    for s in kept {
        let o = collect(s, 1)?;
        assert_eq!(o.samples[0].0.len(), 60 - 3);
    }
    wait_until_idle(&e.handle)?;
    let m = e.handle.metrics();
    assert_eq!(m.kv_blocks_used, 0);
    assert_eq!(m.kv_blocks_free, m.kv_blocks_total);
    Ok(())
}

#[test]
fn bad_requests_fail_at_once_with_both_numbers() -> Result<()> {
    let e = engine(config(8), vec![])?;
    let prompt = |n: usize| {
        (0..n)
            .map(|i| TokenId(i as u32 % VOCAB))
            .collect::<Vec<_>>()
    };
    let start = Instant::now();
    match e
        .handle
        .generate(GenerateRequest::new(prompt(200), SamplingParams::greedy()))
    {
        Err(EngineError::PromptExceedsKvCache {
            prompt_len,
            capacity,
        }) => {
            assert_eq!((prompt_len, capacity), (200, 128));
        }
        other => bail!("expected PromptExceedsKvCache, got {:?}", other.err()),
    }
    match e
        .handle
        .generate(GenerateRequest::new(prompt(5000), SamplingParams::greedy()))
    {
        Err(EngineError::PromptTooLong {
            prompt_len,
            max_context,
        }) => {
            assert_eq!((prompt_len, max_context), (5000, 4096));
        }
        other => bail!("expected PromptTooLong, got {:?}", other.err()),
    }
    let over = GenerateRequest {
        max_tokens: Some(4090),
        ..GenerateRequest::new(prompt(10), SamplingParams::greedy())
    };
    let msg = match e.handle.generate(over) {
        Err(err @ EngineError::ContextExceeded { .. }) => err.to_string(),
        other => bail!("expected ContextExceeded, got {:?}", other.err()),
    };
    assert!(
        msg.contains("10") && msg.contains("4090") && msg.contains("4096"),
        "{msg}"
    );
    let too_many = GenerateRequest {
        n: 65,
        ..GenerateRequest::new(prompt(3), SamplingParams::greedy())
    };
    assert!(matches!(
        e.handle.generate(too_many),
        Err(EngineError::InvalidRequest(_))
    ));
    let bad_token = GenerateRequest::new(vec![TokenId(VOCAB)], SamplingParams::greedy());
    assert!(matches!(
        e.handle.generate(bad_token),
        Err(EngineError::InvalidRequest(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[test]
fn a_full_queue_answers_overloaded_at_once() -> Result<()> {
    let e = engine(
        EngineConfig {
            max_num_seqs: 1,
            max_num_batched_tokens: 16,
            max_queue_len: 2,
            ..config(256)
        },
        vec![],
    )?;
    let long = GenerateRequest {
        max_tokens: Some(2000),
        ..GenerateRequest::new(vec![TokenId(1); 8], SamplingParams::greedy())
    };
    let mut streams = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let start = Instant::now();
        match e.handle.generate(long.clone()) {
            Ok(s) => streams.push(s),
            Err(err) => {
                refused = Some((err, start.elapsed()));
                break;
            }
        }
    }
    match refused {
        Some((EngineError::Overloaded { queue_len }, took)) => {
            assert_eq!(queue_len, 2);
            assert!(took < Duration::from_secs(1));
        }
        other => bail!("expected Overloaded, got {other:?}"),
    }
    drop(streams);
    wait_until_idle(&e.handle)?;
    Ok(())
}

#[test]
fn n_samples_share_one_prefill_and_reproduce_with_a_seed() -> Result<()> {
    let e = engine(config(256), vec![])?;
    let prompt: Vec<TokenId> = (0..37).map(|i| TokenId(i * 5 % VOCAB)).collect();
    let request = |n: usize| GenerateRequest {
        max_tokens: Some(10),
        n,
        ..GenerateRequest::new(
            prompt.clone(),
            SamplingParams {
                temperature: 1.0,
                seed: Some(42),
                ..SamplingParams::default()
            },
        )
    };
    let three = collect(e.handle.generate(request(3))?, 3)?;
    let again = collect(e.handle.generate(request(3))?, 3)?;
    assert_eq!(
        three.samples, again.samples,
        "a seed must reproduce all n samples"
    );
    let distinct: std::collections::HashSet<_> = three.samples.iter().map(|s| &s.0).collect();
    assert_eq!(
        distinct.len(),
        3,
        "the n samples must be drawn independently"
    );
    let one = collect(e.handle.generate(request(1))?, 1)?;
    assert_eq!(
        one.samples[0], three.samples[0],
        "sample 0 is the n = 1 stream"
    );
    wait_until_idle(&e.handle)?;
    Ok(())
}

#[test]
fn stop_tokens_end_a_sample_unless_eos_is_ignored() -> Result<()> {
    let prompt: Vec<TokenId> = (0..20).map(|i| TokenId(i * 3 % VOCAB)).collect();
    let free = engine(config(256), vec![])?;
    let request = GenerateRequest {
        max_tokens: Some(16),
        ..GenerateRequest::new(prompt, SamplingParams::greedy())
    };
    let full = collect(free.handle.generate(request.clone())?, 1)?.samples[0]
        .0
        .clone();
    let eos = full[4];
    let stop_at = full.iter().position(|t| *t == eos).unwrap_or(4);
    let with_eos = engine(config(256), vec![eos])?;
    let stopped = collect(with_eos.handle.generate(request.clone())?, 1)?;
    assert_eq!(stopped.samples[0].0, full[..=stop_at].to_vec());
    assert_eq!(stopped.samples[0].1, Some(FinishReason::Stop));
    let ignored = collect(
        with_eos.handle.generate(GenerateRequest {
            ignore_eos: true,
            grammar: None,
            ..request.clone()
        })?,
        1,
    )?;
    assert_eq!(ignored.samples[0].0, full);
    let by_request = collect(
        free.handle.generate(GenerateRequest {
            stop_token_ids: vec![eos],
            ignore_eos: true,
            grammar: None,
            ..request
        })?,
        1,
    )?;
    assert_eq!(by_request.samples[0].0, full[..=stop_at].to_vec());
    Ok(())
}

#[test]
fn logprobs_come_with_each_token() -> Result<()> {
    let e = engine(config(64), vec![])?;
    let mut stream = e.handle.generate(GenerateRequest {
        max_tokens: Some(3),
        ..GenerateRequest::new(
            vec![TokenId(5); 9],
            SamplingParams {
                logprobs: Some(4),
                ..SamplingParams::greedy()
            },
        )
    })?;
    let mut seen = 0;
    while let Some(ev) = stream.blocking_next() {
        if let EngineEvent::Token(t) = ev {
            seen += 1;
            let lp = t.logprob.expect("logprob requested");
            assert_eq!(t.top_logprobs.len(), 4);
            // Greedy picks the most likely token, so its logprob tops the list.
            assert_eq!(t.top_logprobs[0], (t.token, lp));
            assert!(lp <= 0.0);
        }
    }
    assert_eq!(seen, 3);
    Ok(())
}
