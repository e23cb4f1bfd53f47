//! Reads a sentence-transformers model folder: `modules.json` (which modules, where),
//! the pooling config, `sentence_bert_config.json` (max length, lowercasing) and
//! `config_sentence_transformers.json` (named prompts).
//!
//! Owns the rule that a folder is refused, with the reason, rather than half-understood: an
//! unknown module (a Dense projection, say) would silently give different vectors. Depends on
//! serde only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{EmbeddingError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's state (BGE).
    Cls,
    /// The mean over the text's tokens (MiniLM, E5).
    Mean,
    /// The element-wise maximum over the text's tokens.
    Max,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
            Self::Max => "max",
        }
    }
}

/// What the folder says about how to turn text into one vector.
#[derive(Debug, Clone)]
pub struct FolderLayout {
    /// Where `config.json`, the weights and `tokenizer.json` are.
    pub transformer_dir: PathBuf,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
    /// Named prefixes (`query`, `passage`, `document`) the model was trained with.
    pub prompts: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbeddingError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| EmbeddingError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    if path.is_file() {
        read_json(path)
    } else {
        Ok(T::default())
    }
}

impl FolderLayout {
    pub fn read(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Err(EmbeddingError::Layout {
                dir: dir.to_path_buf(),
                problem: "modules.json is missing (give the folder a sentence-transformers \
                          model was saved to, with modules.json and 1_Pooling/config.json)"
                    .into(),
            });
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        let mut transformer_dir = None;
        let mut pooling = None;
        let mut normalize = false;
        for m in &modules {
            let kind = m.kind.rsplit('.').next().unwrap_or(&m.kind);
            let path = dir.join(&m.path);
            match kind {
                "Transformer" => transformer_dir = Some(path),
                "Pooling" => pooling = Some(read_pooling(&path.join("config.json"))?),
                "Normalize" => normalize = true,
                other => {
                    return Err(EmbeddingError::Unsupported {
                        path: modules_path,
                        problem: format!(
                            "module `{other}` is not supported (supported: Transformer, \
                             Pooling, Normalize)"
                        ),
                    })
                }
            }
        }
        let layout_error = |problem: &str| EmbeddingError::Layout {
            dir: dir.to_path_buf(),
            problem: problem.into(),
        };
        let transformer_dir =
            transformer_dir.ok_or_else(|| layout_error("modules.json lists no Transformer"))?;
        let pooling = pooling.ok_or_else(|| layout_error("modules.json lists no Pooling"))?;
        let sbert: SentenceBertConfig =
            read_optional_json(&transformer_dir.join("sentence_bert_config.json"))?;
        let st: StConfig = read_optional_json(&dir.join("config_sentence_transformers.json"))?;
        Ok(Self {
            transformer_dir,
            pooling,
            normalize,
            max_seq_length: sbert.max_seq_length,
            do_lower_case: sbert.do_lower_case,
            prompts: st
                .prompts
                .into_iter()
                .filter(|(_, p)| !p.is_empty())
                .collect(),
        })
    }
}

fn read_pooling(path: &Path) -> Result<Pooling> {
    let c: PoolingConfig = read_json(path)?;
    let unsupported = |what: &str| EmbeddingError::Unsupported {
        path: path.to_path_buf(),
        problem: format!("{what} pooling is not supported (supported: cls, mean, max)"),
    };
    if c.pooling_mode_mean_sqrt_len_tokens {
        return Err(unsupported("mean_sqrt_len"));
    }
    if c.pooling_mode_weightedmean_tokens {
        return Err(unsupported("weighted-mean"));
    }
    if c.pooling_mode_lasttoken {
        return Err(unsupported("last-token"));
    }
    match (
        c.pooling_mode_cls_token,
        c.pooling_mode_mean_tokens,
        c.pooling_mode_max_tokens,
    ) {
        (true, false, false) => Ok(Pooling::Cls),
        (false, true, false) => Ok(Pooling::Mean),
        (false, false, true) => Ok(Pooling::Max),
        (false, false, false) => Err(unsupported("no")),
        _ => Err(unsupported("concatenated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;

    #[test]
    fn reads_pooling_normalization_length_and_prompts() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "modules.json", MODULES);
        write(
            dir.path(),
            "1_Pooling/config.json",
            r#"{"pooling_mode_cls_token": true}"#,
        );
        write(
            dir.path(),
            "sentence_bert_config.json",
            r#"{"max_seq_length": 512, "do_lower_case": true}"#,
        );
        write(
            dir.path(),
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: ", "document": ""}}"#,
        );
        let l = FolderLayout::read(dir.path()).unwrap();
        assert_eq!(l.pooling, Pooling::Cls);
        assert!(l.normalize && l.do_lower_case);
        assert_eq!(l.max_seq_length, Some(512));
        assert_eq!(l.prompts.get("query").map(String::as_str), Some("query: "));
        assert!(
            !l.prompts.contains_key("document"),
            "empty prompts are dropped"
        );
    }

    #[test]
    fn a_dense_module_is_refused_rather_than_ignored() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "modules.json",
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
        );
        let err = FolderLayout::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("`Dense` is not supported"), "{err}");
    }

    #[test]
    fn a_plain_model_folder_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = FolderLayout::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("modules.json is missing"), "{err}");
    }
}
