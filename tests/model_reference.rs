//! Every architecture against Hugging Face transformers' logits (fixtures made by
//! tests/make_fixtures.py): the prefill at every position, then teacher-forced decode steps.

mod common;

use anyhow::Result;
use candle_core::Device;
use common::{max_abs_diff, run_alone, Reference, VARIANTS};
use enclave::model::load_causal_lm;

/// f32 against f32: only summation order differs.
const TOLERANCE: f32 = 1e-4;

fn check_variant(variant: &str, block_size: usize) -> Result<f32> {
    let model = load_causal_lm(&common::fixture_model(variant), &Device::Cpu)?;
    let reference = Reference::load(variant)?;
    assert!(
        reference.num_prompts >= 3,
        "{variant}: fixture has {} prompts",
        reference.num_prompts
    );
    let mut worst = 0f32;
    for i in 0..reference.num_prompts {
        let prompt = reference.ids(&format!("p{i}.input_ids"))?;
        let decode = reference.ids(&format!("p{i}.decode_ids"))?;
        let (prefill, steps) = run_alone(model.as_ref(), &prompt, &decode, block_size)?;
        let d = max_abs_diff(
            &prefill,
            &reference.logits(&format!("p{i}.prefill_logits"))?,
        )?;
        assert!(d <= TOLERANCE, "{variant} prompt {i}: prefill max diff {d}");
        worst = worst.max(d);
        let expected = reference.logits(&format!("p{i}.decode_logits"))?;
        for (j, step) in steps.iter().enumerate() {
            let d = max_abs_diff(step, &expected.get(j)?)?;
            assert!(
                d <= TOLERANCE,
                "{variant} prompt {i} decode step {j}: max diff {d}"
            );
            worst = worst.max(d);
        }
    }
    Ok(worst)
}

#[test]
fn every_architecture_matches_the_reference_logits() -> Result<()> {
    for variant in VARIANTS {
        let worst = check_variant(variant, 16)?;
        println!("{variant}: max |logit diff| = {worst:.3e}");
    }
    Ok(())
}

/// Block size only changes where tokens live, never what is computed.
#[test]
fn small_blocks_give_the_same_logits() -> Result<()> {
    check_variant("llama3_scaled", 4)?;
    check_variant("mistral_swa", 3)?;
    Ok(())
}
