//! The `enclave` binary as a user runs it: the built-in model out of the box, reproducible
//! seeds, the model list, and one-line errors with a non-zero exit for every bad input.

use std::path::Path;
use std::process::{Command, Output};

fn enclave(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enclave"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("the enclave binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One line on stderr, starting with "error:".
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {}", lines[0]);
    }
}

#[test]
fn generate_runs_the_built_in_model_and_reports_speed() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = enclave(
        data.path(),
        &[
            "generate",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "Hello",
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("RANDOM TEST MODEL"), "{err}");
    assert!(err.contains("12 tokens") && err.contains("tok/s"), "{err}");
    assert!(!out.stdout.is_empty());
    assert!(data
        .path()
        .join("models/enclave-test-model/model.safetensors")
        .is_file());
}

#[test]
fn the_same_seed_gives_the_same_text_and_another_seed_does_not() {
    let data = tempfile::tempdir().expect("tempdir");
    let run = |seed: &str| {
        enclave(
            data.path(),
            &[
                "generate",
                "--max-tokens",
                "24",
                "--temperature",
                "1",
                "--seed",
                seed,
                "--raw",
                "abc",
            ],
        )
        .stdout
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"));
}

#[test]
fn models_lists_the_built_in_and_every_folder() {
    let data = tempfile::tempdir().expect("tempdir");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let out = enclave(
        data.path(),
        &[
            "--models-dir",
            models.to_str().expect("utf-8 path"),
            "models",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (name, arch) in [
        ("enclave-test-model", "qwen2"),
        ("llama3_scaled", "llama"),
        ("mistral_swa", "mistral"),
        ("qwen3_qknorm", "qwen3"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{stdout}"));
        assert!(
            line.contains(arch) && line.contains("f32") && line.contains("K "),
            "{line}"
        );
    }
}

#[test]
fn bad_requests_fail_with_one_line_naming_the_problem() {
    let data = tempfile::tempdir().expect("tempdir");
    assert_one_line_error(
        &enclave(data.path(), &["generate", "--model", "no-such-model", "hi"]),
        &["no-such-model", "models"],
    );
    // The built-in model's context is 4096 tokens.
    assert_one_line_error(
        &enclave(data.path(), &["generate", "--max-tokens", "5000", "hi"]),
        &["5000", "4096"],
    );
    assert_one_line_error(
        &enclave(data.path(), &["generate", "--top-p", "0", "hi"]),
        &["top_p"],
    );
}

#[test]
fn a_device_this_build_cannot_use_is_refused_in_one_line() {
    let data = tempfile::tempdir().expect("tempdir");
    assert_one_line_error(
        &enclave(data.path(), &["generate", "--device", "tpu", "hi"]),
        &["tpu", "cpu, cuda or cuda:N"],
    );
    assert_one_line_error(
        &enclave(
            data.path(),
            &[
                "bench",
                "--gpu-memory-utilization",
                "1.5",
                "--num-requests",
                "1",
            ],
        ),
        &["--gpu-memory-utilization", "1.5"],
    );
    if cfg!(feature = "cuda") {
        return;
    }
    assert_one_line_error(
        &enclave(data.path(), &["generate", "--device", "cuda", "hi"]),
        &["no CUDA support", "build-cuda.sh", "--device cpu"],
    );
    assert_one_line_error(
        &enclave(
            data.path(),
            &["bench", "--device", "cuda:1", "--num-requests", "1"],
        ),
        &["no CUDA support", "cuda:1"],
    );
}

#[test]
fn a_broken_tokenizer_or_template_is_named_in_the_error() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("m");
    let write = |d: &Path| {
        assert!(enclave(
            data.path(),
            &["write-test-model", d.to_str().expect("utf-8")]
        )
        .status
        .success())
    };
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            dir.to_str().expect("utf-8"),
            "--max-tokens",
            "2",
        ];
        args.extend_from_slice(extra);
        args.push("hi");
        enclave(data.path(), &args)
    };

    write(&dir);
    std::fs::remove_file(dir.join("tokenizer.json")).expect("rm");
    assert_one_line_error(&gen(&[]), &["tokenizer.json"]);

    write(&dir);
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .expect("read")
        .replace("\"vocab_size\": 272", "\"vocab_size\": 100");
    std::fs::write(dir.join("config.json"), cfg).expect("write");
    assert_one_line_error(&gen(&[]), &["tokenizer.json", "vocab_size", "100"]);

    write(&dir);
    let tc = std::fs::read_to_string(dir.join("tokenizer_config.json")).expect("read");
    let mut tc: serde_json::Value = serde_json::from_str(&tc).expect("json");
    tc["chat_template"] = serde_json::json!("{{ raise_exception('this template refuses') }}");
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).expect("write");
    assert_one_line_error(&gen(&[]), &["this template refuses"]);
    // --raw does not need the template.
    assert!(gen(&["--raw"]).status.success());
}
