//! Finding and loading models: every weight dtype, sharded files, the local Hugging Face cache
//! by repo id, folders under the models directory, and one clear error for each bad file.

mod common;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use common::{fixture_model, max_abs_diff, run_alone, Reference};
use enclave::model::source::{ModelInfo, ModelLocator};
use enclave::model::{load_causal_lm, ModelError, WeightDtype, Weights};

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

/// The fixture re-saved with every tensor in `dtype`.
fn converted(variant: &str, dtype: DType, dir: &Path) -> Result<()> {
    let src = fixture_model(variant);
    std::fs::copy(src.join("config.json"), dir.join("config.json"))?;
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)?;
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(dtype)?)))
        .collect::<Result<_>>()?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

fn prefill_diff(dir: &Path, variant: &str) -> Result<f32> {
    let model = load_causal_lm(dir, &Device::Cpu)?;
    let r = Reference::load(variant)?;
    let (prefill, _) = run_alone(model.as_ref(), &r.ids("p1.input_ids")?, &[], 16)?;
    max_abs_diff(&prefill, &r.logits("p1.prefill_logits")?)
}

#[test]
fn bf16_and_f16_weights_load_and_stay_close_to_f32() -> Result<()> {
    // The reference is f32; 16-bit weights carry a relative error of 2^-8 (bf16) or 2^-11
    // (f16) per element, which stays well under these bounds for logits of size ~8.
    for (dtype, wd, bound) in [
        (DType::BF16, WeightDtype::Bf16, 0.25),
        (DType::F16, WeightDtype::F16, 0.05),
    ] {
        let tmp = tempfile::tempdir()?;
        converted("qwen3_qknorm", dtype, tmp.path())?;
        assert_eq!(Weights::open_dir(tmp.path())?.dominant_dtype(), Some(wd));
        let d = prefill_diff(tmp.path(), "qwen3_qknorm")?;
        assert!(d < bound, "{dtype:?}: max diff {d} over {bound}");
        assert!(
            d > 1e-6,
            "{dtype:?}: suspiciously exact ({d}); were the weights really converted?"
        );
    }
    Ok(())
}

/// bf16 weights read in place run the row-major tile kernel; resident ones are repacked for the
/// panel kernel (where the CPU has it). The two sum in different orders, and activations are
/// rounded to bf16 before every product, so a last-bit difference can flip a rounding: they
/// agree to a small fraction of bf16's distance from the f32 reference (0.22 here; 0.01 apart).
#[test]
fn bf16_panel_and_tile_kernels_agree() -> Result<()> {
    use enclave::model::config::ModelConfig;
    use enclave::model::WeightResidency;
    let tmp = tempfile::tempdir()?;
    converted("llama3_scaled", DType::BF16, tmp.path())?;
    let cfg = ModelConfig::from_file(&tmp.path().join("config.json"))?;
    let r = Reference::load("llama3_scaled")?;
    let prompt = r.ids("p2.input_ids")?;
    let mut logits = Vec::new();
    for residency in [WeightResidency::Mapped, WeightResidency::HugePages] {
        let weights = Weights::open_dir_with(tmp.path(), residency)?;
        let model = enclave::model::arch::load(&cfg, &weights, &Device::Cpu)?;
        let (prefill, _) = run_alone(model.as_ref(), &prompt, &[], 16)?;
        let d = max_abs_diff(&prefill, &r.logits("p2.prefill_logits")?)?;
        assert!(d < 0.25, "{residency:?}: {d} from the f32 reference");
        logits.push(prefill);
    }
    let d = max_abs_diff(&logits[0], &logits[1])?;
    assert!(d < 0.05, "tile and panel kernels differ by {d}");
    Ok(())
}

/// Both residencies (in place in the mapping, or copied into huge pages) read the same bytes.
#[test]
fn mapped_and_resident_weights_give_the_same_logits() -> Result<()> {
    use enclave::model::config::ModelConfig;
    use enclave::model::WeightResidency;
    let dir = fixture_model("llama3_scaled");
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let r = Reference::load("llama3_scaled")?;
    let prompt = r.ids("p2.input_ids")?;
    let mut logits = Vec::new();
    for residency in [WeightResidency::Mapped, WeightResidency::HugePages] {
        let model = enclave::model::arch::load(
            &cfg,
            &Weights::open_dir_with(&dir, residency)?,
            &Device::Cpu,
        )?;
        let (prefill, _) = run_alone(model.as_ref(), &prompt, &[], 16)?;
        assert!(
            max_abs_diff(&prefill, &r.logits("p2.prefill_logits")?)? < 1e-4,
            "{residency:?}"
        );
        logits.push(prefill);
    }
    assert_eq!(max_abs_diff(&logits[0], &logits[1])?, 0.0);
    Ok(())
}

#[test]
fn sharded_weights_are_found_through_the_index() -> Result<()> {
    let dir = fixture_model("qwen2_bias_tied");
    assert!(
        dir.join("model.safetensors.index.json").is_file()
            && !dir.join("model.safetensors").exists()
    );
    assert!(prefill_diff(&dir, "qwen2_bias_tied")? < 1e-4);
    Ok(())
}

#[test]
fn a_repo_id_resolves_from_the_local_hugging_face_cache() -> Result<()> {
    let hub = tempfile::tempdir()?;
    let repo = hub.path().join("models--acme--tiny-llama");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    copy_dir(
        &fixture_model("llama3_scaled"),
        &repo.join("snapshots").join(commit),
    )?;
    std::fs::create_dir_all(repo.join("refs"))?;
    std::fs::write(repo.join("refs/main"), commit)?;
    let locator = ModelLocator {
        models_dir: hub.path().join("no-models-here"),
        hf_hub_cache: Some(hub.path().to_path_buf()),
    };
    let source = locator.resolve("acme/tiny-llama")?;
    assert_eq!(source.name, "acme/tiny-llama");
    assert!(source.dir.ends_with(Path::new("snapshots").join(commit)));
    assert!(prefill_diff(&source.dir, "llama3_scaled")? < 1e-4);

    let err = locator.resolve("acme/absent").expect_err("absent repo");
    let msg = err.to_string();
    assert!(
        msg.contains("acme/absent") && msg.contains(&hub.path().display().to_string()),
        "{msg}"
    );
    Ok(())
}

#[test]
fn every_model_folder_under_models_is_discovered_by_name() -> Result<()> {
    let models = tempfile::tempdir()?;
    copy_dir(
        &fixture_model("qwen3_qknorm"),
        &models.path().join("qwen-small"),
    )?;
    copy_dir(
        &fixture_model("llama2_untied_mha"),
        &models.path().join("llama-small"),
    )?;
    std::fs::create_dir_all(models.path().join("notes"))?;
    let locator = ModelLocator {
        models_dir: models.path().to_path_buf(),
        hf_hub_cache: None,
    };
    let found: Vec<String> = locator.discover().into_iter().map(|m| m.name).collect();
    assert_eq!(found, ["llama-small", "qwen-small"]);
    let info = ModelInfo::read(&locator.resolve("qwen-small")?)?;
    assert_eq!(
        (
            info.architecture.as_str(),
            info.dtype.as_str(),
            info.max_position_embeddings
        ),
        ("qwen3", "f32", 256)
    );
    // 256*64 embed + 256*64 head + 2 layers * (attn 64*128*2 + 64*64*2 + norms 2*32 + mlp 3*64*128 + 2*64) + 64
    assert_eq!(
        info.num_parameters,
        16384 * 2 + 2 * (16384 + 8192 + 64 + 24576 + 128) + 64
    );
    Ok(())
}

fn load_err(dir: &Path) -> String {
    match load_causal_lm(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded, but should not have", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_model_files_give_one_clear_error_each() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("m");
    let fresh = || -> Result<()> {
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&fixture_model("llama2_untied_mha"), &dir)
    };

    fresh()?;
    std::fs::remove_file(dir.join("config.json"))?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("cannot read"),
        "{msg}"
    );

    fresh()?;
    let cfg = std::fs::read_to_string(dir.join("config.json"))?.replace("\"llama\"", "\"llamax\"");
    std::fs::write(dir.join("config.json"), cfg)?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("model_type `llamax`") && msg.contains("qwen3"),
        "{msg}"
    );

    fresh()?;
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"llama\", ")?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("config.json") && msg.contains("invalid JSON"),
        "{msg}"
    );

    fresh()?;
    let cfg = std::fs::read_to_string(dir.join("config.json"))?
        .replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3");
    std::fs::write(dir.join("config.json"), cfg)?;
    let msg = load_err(&dir);
    assert!(msg.contains("num_key_value_heads"), "{msg}");

    fresh()?;
    let bytes = std::fs::read(dir.join("model.safetensors"))?;
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2])?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );

    fresh()?;
    std::fs::write(dir.join("model.safetensors"), b"garbage")?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("model.safetensors") && msg.contains("not a valid safetensors"),
        "{msg}"
    );

    fresh()?;
    let mut t = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    t.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((100, 64), DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("model.layers.1.mlp.up_proj.weight")
            && msg.contains("[100, 64]")
            && msg.contains("[128, 64]"),
        "{msg}"
    );

    fresh()?;
    t.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    let msg = load_err(&dir);
    assert!(
        msg.contains("model.layers.1.mlp.up_proj.weight") && msg.contains("missing"),
        "{msg}"
    );

    fresh()?;
    std::fs::remove_file(dir.join("model.safetensors"))?;
    std::fs::remove_file(dir.join("reference.safetensors"))?;
    let msg = load_err(&dir);
    assert!(msg.contains("no model weights found"), "{msg}");
    Ok(())
}

#[test]
fn a_batch_that_contradicts_its_block_table_is_refused() -> Result<()> {
    use enclave::ids::{BlockId, TokenId};
    use enclave::model::{ForwardBatch, KvCache, KvDtype, LogitsRows, SequenceChunk};
    let model = load_causal_lm(&fixture_model("qwen3_qknorm"), &Device::Cpu)?;
    let mut cache = KvCache::new(model.kv_cache_spec(4, 16, KvDtype::F32))?;
    let table = [BlockId(0)];
    let batch = |tokens: &[TokenId]| {
        let chunk = SequenceChunk {
            tokens,
            num_computed_tokens: 0,
            block_table: &table,
        };
        ForwardBatch::from_chunks(&[chunk], 16, LogitsRows::All)
    };
    let err = model
        .forward(&batch(&[TokenId(5); 20]), &mut cache)
        .expect_err("20 tokens in one 16-token block");
    assert!(matches!(err, ModelError::Batch(_)), "{err}");
    let err = model
        .forward(&batch(&[TokenId(9999)]), &mut cache)
        .expect_err("id outside the vocabulary");
    assert!(err.to_string().contains("9999"), "{err}");
    Ok(())
}
