//! Wiring: a loaded [`EmbeddingModel`] is the knowledge base's [`Embedder`], and a loaded
//! cross-encoder [`Reranker`] its [`Rerank`].
//!
//! Lives outside both modules so that `knowledge` never depends on a concrete model and
//! `embedding` never on the knowledge base.

use crate::embedding::{EmbeddingModel, Reranker};
use crate::knowledge::{Embedder, Rerank};

impl Rerank for Reranker {
    fn model_id(&self) -> &str {
        self.id()
    }

    fn rerank(&self, query: &str, passages: &[String]) -> Result<Vec<f32>, String> {
        self.score(query, passages).map_err(|e| e.to_string())
    }
}

impl Embedder for EmbeddingModel {
    fn model_id(&self) -> &str {
        self.id()
    }

    fn dimension(&self) -> usize {
        EmbeddingModel::dimension(self)
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_len()
    }

    fn count_tokens(&self, text: &str) -> usize {
        // A text the tokenizer rejects is embedded the same way, so the estimate may err.
        EmbeddingModel::count_tokens(self, text).unwrap_or_else(|_| text.len().div_ceil(4))
    }

    fn special_tokens(&self) -> usize {
        EmbeddingModel::special_tokens(self)
    }

    fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        let prompt = ["document", "passage"]
            .into_iter()
            .find(|p| self.prompt(p).is_some());
        self.embed_texts(texts, prompt).map_err(|e| e.to_string())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut v = self
            .embed_texts(&[text.to_string()], Some("query"))
            .map_err(|e| e.to_string())?;
        v.pop().ok_or_else(|| "no vector returned".to_string())
    }

    fn embed_queries(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.embed_texts(texts, Some("query"))
            .map_err(|e| e.to_string())
    }
}
