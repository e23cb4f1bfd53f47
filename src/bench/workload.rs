//! Benchmark workloads: the prompts and output lengths of one run, generated from a seed so
//! that two servers can be driven with exactly the same requests.
//!
//! Prompts are either random token ids (input lengths in tokens) or chat messages of random
//! words (the shape real clients send), optionally after a shared system prefix. Depends only
//! on `ids` and `rand`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::ids::TokenId;

/// Common English words: prompts of them tokenize like ordinary text.
const WORDS: &[&str] = &[
    "the",
    "customer",
    "account",
    "order",
    "refund",
    "policy",
    "please",
    "help",
    "with",
    "my",
    "payment",
    "card",
    "was",
    "charged",
    "twice",
    "for",
    "same",
    "item",
    "delivery",
    "late",
    "address",
    "change",
    "password",
    "reset",
    "login",
    "error",
    "message",
    "screen",
    "shows",
    "when",
    "try",
    "open",
    "app",
    "phone",
    "number",
    "update",
    "billing",
    "invoice",
    "monthly",
    "plan",
    "upgrade",
    "cancel",
    "subscription",
    "return",
    "label",
    "package",
    "tracking",
    "store",
    "hours",
    "weekend",
    "appointment",
    "doctor",
    "clinic",
    "insurance",
    "claim",
    "form",
    "branch",
    "transfer",
    "limit",
    "daily",
    "balance",
    "statement",
    "loan",
    "rate",
    "interest",
    "mortgage",
    "size",
    "color",
    "stock",
    "available",
    "discount",
    "code",
    "coupon",
    "expired",
    "warranty",
    "repair",
    "broken",
    "screen",
    "battery",
    "charger",
    "email",
    "confirmation",
    "received",
    "never",
    "arrived",
    "yesterday",
    "today",
    "week",
    "how",
    "long",
    "does",
    "take",
    "can",
    "you",
    "tell",
    "me",
    "what",
    "is",
    "status",
    "of",
    "and",
    "also",
    "need",
    "know",
    "whether",
    "there",
    "any",
    "fee",
    "if",
    "I",
    "this",
    "that",
    "because",
    "after",
    "before",
    "should",
    "would",
    "could",
    "thanks",
    "again",
];

#[derive(Debug, Clone, PartialEq)]
pub enum PromptShape {
    /// Random token ids below `vocab_size`, `min..=max` of them.
    Tokens {
        min: usize,
        max: usize,
        vocab_size: u32,
    },
    /// A user message of `words` random words, after a system message of `shared_words`
    /// words that every request shares (none if 0).
    ChatWords { words: usize, shared_words: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    pub num_requests: usize,
    pub shape: PromptShape,
    /// Output tokens, `min..=max`, drawn per request.
    pub output_len: (usize, usize),
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BenchPrompt {
    Tokens(Vec<TokenId>),
    Chat(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchRequest {
    pub prompt: BenchPrompt,
    pub max_tokens: usize,
}

fn words(rng: &mut SmallRng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

pub fn generate(config: &WorkloadConfig) -> Vec<BenchRequest> {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let shared = match config.shape {
        PromptShape::ChatWords { shared_words, .. } if shared_words > 0 => {
            Some(words(&mut rng, shared_words))
        }
        _ => None,
    };
    (0..config.num_requests)
        .map(|_| {
            let prompt = match &config.shape {
                PromptShape::Tokens {
                    min,
                    max,
                    vocab_size,
                } => {
                    let len = rng.random_range(*min..=(*max).max(*min));
                    BenchPrompt::Tokens(
                        (0..len)
                            .map(|_| TokenId(rng.random_range(0..*vocab_size)))
                            .collect(),
                    )
                }
                PromptShape::ChatWords { words: n, .. } => {
                    let mut messages = Vec::new();
                    if let Some(s) = &shared {
                        messages.push(json!({"role": "system", "content": s}));
                    }
                    messages.push(json!({"role": "user", "content": words(&mut rng, *n)}));
                    BenchPrompt::Chat(messages)
                }
            };
            let (lo, hi) = config.output_len;
            BenchRequest {
                prompt,
                max_tokens: rng.random_range(lo..=hi.max(lo)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_requests_and_the_shapes_hold() {
        let config = WorkloadConfig {
            num_requests: 20,
            shape: PromptShape::Tokens {
                min: 100,
                max: 1024,
                vocab_size: 500,
            },
            output_len: (8, 64),
            seed: 3,
        };
        let a = generate(&config);
        assert_eq!(a, generate(&config));
        for r in &a {
            let BenchPrompt::Tokens(t) = &r.prompt else {
                panic!("token prompts expected");
            };
            assert!((100..=1024).contains(&t.len()));
            assert!(t.iter().all(|t| t.0 < 500));
            assert!((8..=64).contains(&r.max_tokens));
        }
        let chat = generate(&WorkloadConfig {
            shape: PromptShape::ChatWords {
                words: 128,
                shared_words: 10,
            },
            ..config
        });
        let system = |r: &BenchRequest| match &r.prompt {
            BenchPrompt::Chat(m) => m[0]["content"].clone(),
            BenchPrompt::Tokens(_) => Value::Null,
        };
        assert_eq!(system(&chat[0]), system(&chat[1]), "the prefix is shared");
        let BenchPrompt::Chat(m) = &chat[0].prompt else {
            panic!("chat prompts expected");
        };
        assert_eq!(
            m[1]["content"].as_str().map(|s| s.split(' ').count()),
            Some(128)
        );
    }
}
