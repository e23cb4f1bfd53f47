//! Choosing the next token from logits: greedy, or temperature with top-k and top-p, from a
//! seedable generator so that the same seed gives the same tokens.
//!
//! Plain CPU code over a logits slice; depends on nothing but `ids`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::error::EngineError;
use crate::ids::TokenId;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 keeps all).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (`None` keeps all).
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(EngineError::Sampling(format!(
                "temperature must be 0 or more, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::Sampling(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if self.top_k == Some(0) {
            return Err(EngineError::Sampling("top_k must be at least 1".into()));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: SmallRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, EngineError> {
        params.validate()?;
        let rng = match params.seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        Ok(Self { params, rng })
    }

    pub fn sample(&mut self, logits: &[f32]) -> TokenId {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, l * inv_t))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        // Stable order (by logit, then by id) keeps a seeded run reproducible.
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.params.top_k {
            candidates.truncate(k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|(_, l)| (l - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    acc += p;
                    acc >= self.params.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut draw = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            if draw < *p {
                return TokenId(candidates[i].0);
            }
            draw -= p;
        }
        TokenId(candidates[probs.len() - 1].0)
    }
}

/// The highest logit; the lowest id wins a tie.
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    TokenId(best as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(SamplingParams::greedy()).expect("valid");
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), TokenId(1));
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 / 3.0).collect();
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.0,
                seed: Some(seed),
                ..Default::default()
            })
            .expect("valid");
            (0..20).map(|_| s.sample(&logits).0).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut k1 = Sampler::new(SamplingParams {
            top_k: Some(1),
            seed: Some(1),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(k1.sample(&logits), argmax(&logits));
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~0.9 of the mass: top_p 0.5 must always pick it.
        let logits = [5.0, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            seed: Some(3),
            ..Default::default()
        })
        .expect("valid");
        assert!((0..100).all(|_| s.sample(&logits) == TokenId(0)));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(Sampler::new(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplingParams {
            top_k: Some(0),
            ..Default::default()
        })
        .is_err());
    }
}
