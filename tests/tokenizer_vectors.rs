//! llama.cpp's tokenizer test vectors (46 strings per vocabulary, with the ids Hugging Face's
//! tokenizer produced) against the real tokenizers in shared/data that use the same vocabulary.

mod tokenizer_support;

use tokenizer_support::{load, shared_data};

/// (llama.cpp vocabulary, tokenizer folders that must reproduce its vectors).
const PAIRS: &[(&str, &[&str])] = &[
    ("llama-bpe", &["llama-3.2-instruct"]),
    ("qwen2", &["qwen3", "qwen2.5-instruct"]),
    ("phi-3", &["phi-3-mini-4k-instruct"]),
    ("bert-bge", &["bge-small-en-v1.5", "all-minilm-l6-v2"]),
];

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

fn vectors(vocab: &str) -> Vec<(String, Vec<u32>)> {
    let dir = shared_data().join("tokenizer-vectors");
    let inp_path = dir.join(format!("ggml-vocab-{vocab}.gguf.inp"));
    let out_path = dir.join(format!("ggml-vocab-{vocab}.gguf.out"));
    let inp = std::fs::read_to_string(&inp_path)
        .unwrap_or_else(|e| panic!("{}: {e}", inp_path.display()));
    let out = std::fs::read_to_string(&out_path)
        .unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
    let mut texts: Vec<&str> = inp.split(SEPARATOR).collect();
    // The file ends with a separator, which leaves one empty piece behind it.
    assert_eq!(
        texts.pop(),
        Some(""),
        "{} must end with a separator",
        inp_path.display()
    );
    let expected: Vec<Vec<u32>> = out
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|id| id.parse().unwrap_or_else(|e| panic!("bad id {id:?}: {e}")))
                .collect()
        })
        .collect();
    assert_eq!(texts.len(), 46, "{}", inp_path.display());
    assert_eq!(
        texts.len(),
        expected.len(),
        "{} vs {}",
        inp_path.display(),
        out_path.display()
    );
    texts
        .into_iter()
        .map(str::to_string)
        .zip(expected)
        .collect()
}

#[test]
fn llama_cpp_vectors_encode_exactly() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (vocab, folders) in PAIRS {
        let cases = vectors(vocab);
        for folder in *folders {
            let tok = load(folder);
            for (i, (text, want)) in cases.iter().enumerate() {
                checked += 1;
                let got: Vec<u32> = match tok.encode(text, false) {
                    Ok(ids) => ids.into_iter().map(|id| id.0).collect(),
                    Err(e) => {
                        failures.push(format!("{vocab}/{folder} #{i} {text:?}: {e}"));
                        continue;
                    }
                };
                if &got != want {
                    failures.push(format!(
                        "{vocab}/{folder} #{i} {text:?}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
