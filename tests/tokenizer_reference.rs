//! Encode/decode reference cases written by transformers (tests/make_fixtures.py): ids with and
//! without special tokens, decodes with and without skipping them, and decodes of every
//! prefix of texts whose characters span several tokens.

mod tokenizer_support;

use enclave::ids::TokenId;
use enclave::tokenizer::Tokenizer;
use serde_json::Value;
use tokenizer_support::{fixtures_dir, ids, json_files, load, read_json};

fn token_ids(raw: &[u32]) -> Vec<TokenId> {
    raw.iter().map(|&id| TokenId(id)).collect()
}

fn encode(tok: &Tokenizer, text: &str, special: bool) -> Result<Vec<u32>, String> {
    tok.encode(text, special)
        .map(|ids| ids.into_iter().map(|id| id.0).collect())
        .map_err(|e| e.to_string())
}

fn check_case(tok: &Tokenizer, case: &Value, failures: &mut Vec<String>) {
    let text = case["text"].as_str().unwrap_or_default();
    for (field, special) in [("ids", false), ("ids_special", true)] {
        let want = ids(&case[field]);
        match encode(tok, text, special) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{text:?} {field}: got {got:?}, want {want:?}")),
            Err(e) => failures.push(format!("{text:?} {field}: {e}")),
        }
    }
    let ids_special = token_ids(&ids(&case["ids_special"]));
    for (field, skip) in [("decoded", false), ("decoded_skip", true)] {
        let want = case[field].as_str().unwrap_or_default();
        match tok.decode(&ids_special, skip) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{text:?} {field}: got {got:?}, want {want:?}")),
            Err(e) => failures.push(format!("{text:?} {field}: {e}")),
        }
    }
}

#[test]
fn tokenizers_match_transformers() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in json_files(&fixtures_dir("tokenizers")) {
        let fixture = read_json(&path);
        let name = fixture["tokenizer"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let tok = load(&name);
        let mut local = Vec::new();
        // The fixture records whether decode() really cleans up (transformers 5 ignores the
        // flag for BPE models).
        let want_clean_up = fixture["clean_up_tokenization_spaces"].as_bool();
        if want_clean_up != Some(tok.cleans_up_spaces()) {
            local.push(format!(
                "clean_up_tokenization_spaces: we apply {}, transformers {want_clean_up:?}",
                tok.cleans_up_spaces()
            ));
        }
        for case in fixture["cases"].as_array().into_iter().flatten() {
            checked += 1;
            check_case(&tok, case, &mut local);
        }
        for case in fixture["partial_decode"].as_array().into_iter().flatten() {
            checked += 1;
            let ids = token_ids(&ids(&case["ids"]));
            let want = case["decoded"].as_str().unwrap_or_default();
            match tok.decode(&ids, false) {
                Ok(got) if got == want => {}
                Ok(got) => local.push(format!("partial {ids:?}: got {got:?}, want {want:?}")),
                Err(e) => local.push(format!("partial {ids:?}: {e}")),
            }
        }
        failures.extend(local.into_iter().map(|f| format!("{name}: {f}")));
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} reference cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
