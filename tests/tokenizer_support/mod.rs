//! Shared helpers for the tokenizer tests: where the shared data and the fixtures are, and
//! loading a real tokenizer by its folder name.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use enclave::tokenizer::Tokenizer;

#[path = "../common/paths.rs"]
mod paths;
pub use paths::shared_data;

pub fn tokenizer_dir(name: &str) -> PathBuf {
    shared_data().join("tokenizers").join(name)
}

pub fn load(name: &str) -> Tokenizer {
    let dir = tokenizer_dir(name);
    Tokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

pub fn fixtures_dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
}

/// Every `*.json` under `dir`, sorted; fails if there are none (a missing fixture is a bug).
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate the fixtures with tests/make_fixtures.py",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A JSON list of ids as `u32`s.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a list of ids, got {value}"))
        .iter()
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("bad id {v}")) as u32)
        .collect()
}
