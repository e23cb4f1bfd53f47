//! A packed batch of ragged sequences gives the same logits as each sequence run alone:
//! together in one prefill, together in decode, and mixed (one sequence decoding while another
//! prefills in chunks).

mod common;

use anyhow::Result;
use candle_core::{Device, Tensor};
use common::{max_abs_diff, run_alone, Pager, Reference, VARIANTS};
use enclave::ids::TokenId;
use enclave::model::{load_causal_lm, ForwardBatch, KvDtype, LogitsRows, SequenceChunk};

const TOLERANCE: f32 = 1e-5;
const BLOCK: usize = 16;

#[test]
fn packed_prefill_and_decode_equal_one_sequence_at_a_time() -> Result<()> {
    for variant in VARIANTS {
        let model = load_causal_lm(&common::fixture_model(variant), &Device::Cpu)?;
        let r = Reference::load(variant)?;
        let prompts: Vec<Vec<TokenId>> = (0..r.num_prompts)
            .map(|i| r.ids(&format!("p{i}.input_ids")))
            .collect::<Result<_>>()?;
        let decodes: Vec<Vec<TokenId>> = (0..r.num_prompts)
            .map(|i| r.ids(&format!("p{i}.decode_ids")))
            .collect::<Result<_>>()?;
        let alone: Vec<(Tensor, Vec<Tensor>)> = prompts
            .iter()
            .zip(&decodes)
            .map(|(p, d)| run_alone(model.as_ref(), p, d, BLOCK))
            .collect::<Result<_>>()?;

        let mut pager = Pager::new(model.as_ref(), BLOCK, 64, KvDtype::F32)?;
        let tables: Vec<_> = prompts
            .iter()
            .zip(&decodes)
            .map(|(p, d)| pager.table((p.len() + d.len()).div_ceil(BLOCK)))
            .collect();
        let chunks = common::prefill_chunks(&prompts, &tables);
        let packed = model.forward(
            &ForwardBatch::from_chunks(&chunks, BLOCK, LogitsRows::All),
            &mut pager.cache,
        )?;
        let mut row = 0;
        for (i, p) in prompts.iter().enumerate() {
            let d = max_abs_diff(&packed.narrow(0, row, p.len())?, &alone[i].0)?;
            assert!(
                d <= TOLERANCE,
                "{variant}: prompt {i} prefill differs by {d} when packed"
            );
            row += p.len();
        }
        for j in 0..decodes[0].len() {
            let chunks: Vec<SequenceChunk> = prompts
                .iter()
                .zip(&decodes)
                .zip(&tables)
                .map(|((p, d), t)| SequenceChunk {
                    tokens: std::slice::from_ref(&d[j]),
                    num_computed_tokens: p.len() + j,
                    block_table: t,
                })
                .collect();
            let out = model.forward(
                &ForwardBatch::from_chunks(&chunks, BLOCK, LogitsRows::LastOfEachSequence),
                &mut pager.cache,
            )?;
            for (i, (_, steps)) in alone.iter().enumerate() {
                let d = max_abs_diff(&out.get(i)?, &steps[j])?;
                assert!(
                    d <= TOLERANCE,
                    "{variant}: prompt {i} decode step {j} differs by {d} when batched"
                );
            }
        }
    }
    Ok(())
}

/// Chunked prefill beside a decoding sequence: the chunks' logits equal the one-shot prefill.
#[test]
fn chunked_prefill_mixed_with_decode_matches() -> Result<()> {
    let variant = "qwen3_qknorm";
    let model = load_causal_lm(&common::fixture_model(variant), &Device::Cpu)?;
    let r = Reference::load(variant)?;
    let (short, long) = (r.ids("p0.input_ids")?, r.ids("p2.input_ids")?);
    let short_decode = r.ids("p0.decode_ids")?;
    let (long_alone, _) = run_alone(model.as_ref(), &long, &[], BLOCK)?;
    let (_, short_steps) = run_alone(model.as_ref(), &short, &short_decode, BLOCK)?;

    let mut pager = Pager::new(model.as_ref(), BLOCK, 64, KvDtype::F32)?;
    let t_short = pager.table((short.len() + short_decode.len()).div_ceil(BLOCK));
    let t_long = pager.table(long.len().div_ceil(BLOCK));
    let prefill = SequenceChunk {
        tokens: &short,
        num_computed_tokens: 0,
        block_table: &t_short,
    };
    model.forward(
        &ForwardBatch::from_chunks(&[prefill], BLOCK, LogitsRows::LastOfEachSequence),
        &mut pager.cache,
    )?;

    // Chunks of 17 tokens (not a multiple of the block size) beside one decode token each.
    let mut done = 0;
    let mut step = 0;
    while done < long.len() {
        let n = 17.min(long.len() - done);
        let chunks = [
            SequenceChunk {
                tokens: std::slice::from_ref(&short_decode[step]),
                num_computed_tokens: short.len() + step,
                block_table: &t_short,
            },
            SequenceChunk {
                tokens: &long[done..done + n],
                num_computed_tokens: done,
                block_table: &t_long,
            },
        ];
        let out = model.forward(
            &ForwardBatch::from_chunks(&chunks, BLOCK, LogitsRows::All),
            &mut pager.cache,
        )?;
        let d = max_abs_diff(&out.get(0)?, &short_steps[step])?;
        assert!(
            d <= TOLERANCE,
            "decode step {step} beside a prefill chunk differs by {d}"
        );
        let d = max_abs_diff(&out.narrow(0, 1, n)?, &long_alone.narrow(0, done, n)?)?;
        assert!(d <= TOLERANCE, "prefill chunk at {done} differs by {d}");
        done += n;
        step += 1;
    }
    Ok(())
}
