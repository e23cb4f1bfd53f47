use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

fn sampler(params: SamplingParams, prompt: &[u32], vocab_size: usize) -> Sampler {
    let prompt: Vec<TokenId> = prompt.iter().copied().map(TokenId).collect();
    Sampler::new(params, &prompt, 0, vocab_size).expect("valid parameters")
}

fn tokens(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    (0..n).map(|_| s.sample(logits).token.0).collect()
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        seed: Some(seed),
        ..Default::default()
    }
}

/// Logits of a flat-ish row, so that sampled sequences vary a lot between streams.
fn spread_logits(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 37) % 11) as f32 / 3.0).collect()
}

#[test]
fn greedy_takes_the_largest_logit_and_the_lowest_id_on_ties() {
    let mut s = sampler(SamplingParams::greedy(), &[], 4);
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]).token, TokenId(1));
    assert_eq!(
        s.sample(&[f32::NAN, -1.0, f32::NAN, -2.0]).token,
        TokenId(1)
    );
}

#[test]
fn same_seed_and_stream_repeat_while_other_streams_and_seeds_differ() {
    let logits = spread_logits(64);
    let run = |seed: u64, stream: u64| {
        let mut s = Sampler::new(seeded(seed), &[], stream, logits.len()).expect("valid");
        tokens(&mut s, &logits, 30)
    };
    assert_eq!(run(7, 0), run(7, 0));
    assert_eq!(run(7, 3), run(7, 3));
    assert_ne!(run(7, 0), run(7, 1));
    assert_ne!(run(7, 0), run(8, 0));
}

#[test]
fn temperature_scales_the_distribution() {
    // Scaled by 1/2, the logits become [0, ln 3]: probabilities 1/4 and 3/4.
    let logits = [0.0, 2.0 * 3f32.ln()];
    let mut s = sampler(
        SamplingParams {
            temperature: 2.0,
            ..seeded(1)
        },
        &[],
        2,
    );
    let ones = tokens(&mut s, &logits, 4000)
        .iter()
        .filter(|&&t| t == 1)
        .count();
    let share = ones as f64 / 4000.0;
    assert!(
        (share - 0.75).abs() < 0.03,
        "token 1 drawn {share} of the time"
    );
}

#[test]
fn top_k_one_is_greedy() {
    let logits = spread_logits(50);
    let mut s = sampler(
        SamplingParams {
            top_k: Some(1),
            ..seeded(1)
        },
        &[],
        50,
    );
    let want = argmax(&logits).0;
    assert!(tokens(&mut s, &logits, 50).iter().all(|&t| t == want));
}

#[test]
fn top_p_keeps_only_the_nucleus() {
    // Probabilities about 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps tokens 0 and 1 only.
    let logits = [3.0, 2.0, 1.0, 0.0];
    let mut s = sampler(
        SamplingParams {
            top_p: 0.8,
            ..seeded(3)
        },
        &[],
        4,
    );
    let drawn = tokens(&mut s, &logits, 400);
    assert!(drawn.iter().all(|&t| t < 2), "{drawn:?}");
    assert!(drawn.contains(&1), "the second token is inside the nucleus");
}

#[test]
fn min_p_drops_tokens_far_below_the_most_likely() {
    // Relative to token 0: token 1 has e^-0.5 ~ 0.61, token 2 e^-3 ~ 0.05.
    let logits = [3.0, 2.5, 0.0];
    let mut s = sampler(
        SamplingParams {
            min_p: 0.1,
            ..seeded(4)
        },
        &[],
        3,
    );
    let drawn = tokens(&mut s, &logits, 1000);
    assert!(!drawn.contains(&2), "token 2 is below min_p");
    assert!(drawn.contains(&1));
    let mut unfiltered = sampler(seeded(4), &[], 3);
    assert!(tokens(&mut unfiltered, &logits, 1000).contains(&2));
}

#[test]
fn repetition_penalty_demotes_prompt_tokens_both_signs() {
    let params = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::greedy()
    };
    // Positive logit divided: 3 / 2 = 1.5 < 2.
    let mut s = sampler(params.clone(), &[0], 2);
    assert_eq!(s.sample(&[3.0, 2.0]).token, TokenId(1));
    // Negative logit multiplied: -1 * 2 = -2 < -1.5.
    let mut s = sampler(params, &[0], 2);
    assert_eq!(s.sample(&[-1.0, -1.5]).token, TokenId(1));
    let mut off = sampler(SamplingParams::greedy(), &[0], 2);
    assert_eq!(off.sample(&[3.0, 2.0]).token, TokenId(0));
}

#[test]
fn repetition_penalty_counts_generated_tokens_once() {
    let mut s = sampler(
        SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        },
        &[],
        2,
    );
    // 4 -> 2 after the first pick, and stays 2 however often it repeats.
    assert_eq!(tokens(&mut s, &[4.0, 1.5], 4), [0, 0, 0, 0]);
}

#[test]
fn presence_penalty_subtracts_once_per_generated_token() {
    let params = SamplingParams {
        presence_penalty: 0.7,
        ..SamplingParams::greedy()
    };
    // 2.0 - 0.7 = 1.3 < 1.5 after the first pick; the prompt does not count.
    assert_eq!(
        tokens(&mut sampler(params, &[1], 2), &[2.0, 1.5], 3),
        [0, 1, 0]
    );
}

#[test]
fn frequency_penalty_grows_with_each_repeat() {
    let params = SamplingParams {
        frequency_penalty: 0.5,
        ..SamplingParams::greedy()
    };
    // Token 0 falls to 1.5, then 1.0 < 1.2.
    assert_eq!(
        tokens(&mut sampler(params, &[], 2), &[2.0, 1.2], 3),
        [0, 0, 1]
    );
}

#[test]
fn logit_bias_overrides_the_argmax() {
    let logits = [1.0, 5.0, 2.0];
    let mut s = sampler(
        SamplingParams {
            logit_bias: vec![(TokenId(1), -100.0)],
            ..SamplingParams::greedy()
        },
        &[],
        3,
    );
    assert_eq!(s.sample(&logits).token, TokenId(2));
    let mut s = sampler(
        SamplingParams {
            logit_bias: vec![(TokenId(0), 4.5)],
            ..SamplingParams::greedy()
        },
        &[],
        3,
    );
    assert_eq!(s.sample(&logits).token, TokenId(0));
}

#[test]
fn logprobs_are_the_log_softmax_after_bias_before_temperature() {
    let mut s = sampler(
        SamplingParams {
            temperature: 0.5,
            top_k: Some(1),
            logit_bias: vec![(TokenId(0), 1.0)],
            logprobs: Some(2),
            ..seeded(9)
        },
        &[],
        3,
    );
    // After the bias the row is [2, 2, 3]; top_k 1 forces token 2.
    let out = s.sample(&[1.0, 2.0, 3.0]);
    let lse = (2f64.exp() * 2.0 + 3f64.exp()).ln();
    let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-6;
    assert_eq!(out.token, TokenId(2));
    assert!(close(out.logprob.expect("asked for"), 3.0 - lse));
    assert_eq!(out.top_logprobs.len(), 2);
    assert_eq!(out.top_logprobs[0].0, TokenId(2));
    assert!(close(out.top_logprobs[0].1, 3.0 - lse));
    assert_eq!(
        out.top_logprobs[1].0,
        TokenId(0),
        "a tie goes to the lower id"
    );
    assert!(close(out.top_logprobs[1].1, 2.0 - lse));
}

#[test]
fn top_logprobs_are_sorted_and_counted_and_the_chosen_one_always_reported() {
    let logits = [1.0, 3.0, 3.0, 0.0, 2.0];
    let with = |logprobs| {
        let params = SamplingParams {
            logprobs,
            ..SamplingParams::greedy()
        };
        sampler(params, &[], 5).sample(&logits)
    };
    let three = with(Some(3));
    let ids: Vec<u32> = three.top_logprobs.iter().map(|(t, _)| t.0).collect();
    assert_eq!(ids, [1, 2, 4]);
    assert!(three.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
    let none_on_top = with(Some(0));
    assert!(none_on_top.logprob.is_some() && none_on_top.top_logprobs.is_empty());
    let off = with(None);
    assert!(off.logprob.is_none() && off.top_logprobs.is_empty());
    assert_eq!(
        with(Some(20)).top_logprobs.len(),
        5,
        "no more than the vocabulary"
    );
}

#[test]
fn fork_keeps_penalty_state_and_draws_its_own_stream() {
    let params = SamplingParams {
        presence_penalty: 0.7,
        ..SamplingParams::greedy()
    };
    let mut parent = sampler(params, &[], 2);
    assert_eq!(parent.sample(&[2.0, 1.5]).token, TokenId(0));
    let mut child = parent.fork(1);
    assert_eq!(
        child.sample(&[2.0, 1.5]).token,
        TokenId(1),
        "the penalty came along"
    );

    let logits = spread_logits(64);
    let mut parent = sampler(seeded(5), &[], logits.len());
    let mut child = parent.fork(1);
    let mut fresh = Sampler::new(seeded(5), &[], 1, logits.len()).expect("valid");
    let child_tokens = tokens(&mut child, &logits, 30);
    assert_ne!(tokens(&mut parent, &logits, 30), child_tokens);
    assert_eq!(
        child_tokens,
        tokens(&mut fresh, &logits, 30),
        "seeded from (seed, index)"
    );
}

#[test]
fn full_vocabulary_rows_sample_only_kept_tokens() {
    const VOCAB: usize = 152_064;
    let mut rng = SmallRng::seed_from_u64(2);
    let logits: Vec<f32> = (0..VOCAB).map(|_| rng.random_range(-8.0..8.0)).collect();
    let mut by_logit: Vec<u32> = (0..VOCAB as u32).collect();
    by_logit.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    let top40 = &by_logit[..40];
    let params = SamplingParams {
        top_k: Some(40),
        top_p: 0.5,
        logprobs: Some(5),
        ..seeded(6)
    };
    let mut s = sampler(params, &[], VOCAB);
    for _ in 0..20 {
        let out = s.sample(&logits);
        assert!(top40.contains(&out.token.0));
        let ids: Vec<u32> = out.top_logprobs.iter().map(|(t, _)| t.0).collect();
        assert_eq!(ids, by_logit[..5]);
    }
    let mut plain = sampler(seeded(6), &[], VOCAB);
    let drawn = tokens(&mut plain, &logits, 20);
    assert!(drawn.iter().any(|t| !top40.contains(t)), "no truncation");

    // Top-p alone, on a flat row (many candidates) and a peaked one (a few).
    let peaked: Vec<f32> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % 7919 == 0 { x + 12.0 } else { x })
        .collect();
    for row in [&logits, &peaked] {
        let mut order: Vec<usize> = (0..VOCAB).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let weights: Vec<f64> = order.iter().map(|&i| f64::from(row[i]).exp()).collect();
        let total: f64 = weights.iter().sum();
        // A hair over 0.5, so rounding at the boundary cannot fail the test.
        let mut acc = 0.0;
        let len = 1 + weights
            .iter()
            .position(|w| {
                acc += w;
                acc >= 0.500_001 * total
            })
            .unwrap_or(VOCAB);
        let mut nucleus = order[..len].to_vec();
        nucleus.sort_unstable();
        let params = SamplingParams {
            top_p: 0.5,
            ..seeded(7)
        };
        let mut s = sampler(params, &[], VOCAB);
        for t in tokens(&mut s, row, 20) {
            assert!(nucleus.binary_search(&(t as usize)).is_ok(), "{t} of {len}");
        }
    }
}

#[test]
fn validate_rejects_each_bad_value() {
    let bad: Vec<(SamplingParams, &str)> = vec![
        (
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_k: Some(0),
                ..Default::default()
            },
            "top_k",
        ),
        (
            SamplingParams {
                min_p: -0.1,
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplingParams {
                min_p: 1.5,
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                repetition_penalty: f32::INFINITY,
                ..Default::default()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                presence_penalty: 2.5,
                ..Default::default()
            },
            "presence_penalty",
        ),
        (
            SamplingParams {
                frequency_penalty: -3.0,
                ..Default::default()
            },
            "frequency_penalty",
        ),
        (
            SamplingParams {
                frequency_penalty: f32::NAN,
                ..Default::default()
            },
            "frequency_penalty",
        ),
        (
            SamplingParams {
                logit_bias: vec![(TokenId(1), 101.0)],
                ..Default::default()
            },
            "logit_bias",
        ),
        (
            SamplingParams {
                logit_bias: vec![(TokenId(10), 1.0)],
                ..Default::default()
            },
            "token 10",
        ),
        (
            SamplingParams {
                logit_bias: vec![(TokenId(1), 1.0), (TokenId(1), 2.0)],
                ..Default::default()
            },
            "more than once",
        ),
        (
            SamplingParams {
                logprobs: Some(21),
                ..Default::default()
            },
            "logprobs",
        ),
    ];
    for (params, names) in bad {
        let err = Sampler::new(params.clone(), &[], 0, 10).expect_err("invalid");
        let message = err.to_string();
        assert!(matches!(err, EngineError::Sampling(_)));
        assert!(message.contains(names), "{params:?}: {message}");
    }
    let edges = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: Some(1),
        min_p: 1.0,
        repetition_penalty: 0.01,
        presence_penalty: -2.0,
        frequency_penalty: 2.0,
        logit_bias: vec![(TokenId(9), -100.0), (TokenId(0), 100.0)],
        seed: Some(0),
        logprobs: Some(20),
    };
    assert!(edges.validate(10).is_ok());
}

#[test]
fn validate_messages_give_the_value_and_the_range() {
    let err = SamplingParams {
        top_p: 1.5,
        ..Default::default()
    }
    .validate(10)
    .expect_err("invalid");
    assert!(err.to_string().contains("(0, 1]") && err.to_string().contains("1.5"));
}

#[test]
fn logprobs_are_the_same_whether_greedy_or_drawn_at_temperature_one() {
    // At temperature 1 the draw's own softmax gives the normalizer; it must agree.
    let logits = [1.0, 2.0, 3.0, -1.0];
    let lse = [1f64, 2.0, 3.0, -1.0]
        .iter()
        .map(|x| x.exp())
        .sum::<f64>()
        .ln();
    for params in [
        SamplingParams::greedy(),
        SamplingParams {
            top_k: Some(1),
            ..seeded(1)
        },
    ] {
        let params = SamplingParams {
            logprobs: Some(1),
            ..params
        };
        let out = sampler(params, &[], 4).sample(&logits);
        assert_eq!(out.token, TokenId(2));
        let logprob = f64::from(out.logprob.expect("asked for"));
        assert!((logprob - (3.0 - lse)).abs() < 1e-6, "{logprob}");
    }
}
