//! Wire types shared by the chat and text completion endpoints: usage, stop, stream options.

use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

/// OpenAI caps `stop` at four sequences; more would only slow the matcher.
pub const MAX_STOP_STRINGS: usize = 4;

impl StopSpec {
    pub fn into_vec(spec: Option<Self>) -> Result<Vec<String>, ApiError> {
        let v = match spec {
            None => Vec::new(),
            Some(Self::One(s)) => vec![s],
            Some(Self::Many(v)) => v,
        };
        if v.len() > MAX_STOP_STRINGS {
            return Err(ApiError::invalid(
                format!(
                    "stop takes at most {MAX_STOP_STRINGS} strings, got {}",
                    v.len()
                ),
                "stop",
            ));
        }
        if v.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop strings must not be empty", "stop"));
        }
        Ok(v)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// Accepted for compatibility; usage is already sent only in the final chunk.
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

/// OpenAI's `seed` is any 64-bit integer; negative ones map onto the same bits.
pub fn seed_bits(seed: Option<i64>) -> Option<u64> {
    seed.map(|s| s as u64)
}
