//! The incremental detokenizer against whole-sequence decoding, with real tokenizers (byte-level
//! BPE and SentencePiece with byte fallback) and text whose characters span several tokens.

mod tokenizer_support;

use enclave::ids::TokenId;
use enclave::tokenizer::{IncrementalDetokenizer, Tokenizer};
use tokenizer_support::load;

const TOKENIZERS: &[&str] = &[
    "llama-3.2-instruct",
    "qwen2.5-instruct",
    "mistral-7b-instruct-v0.3-resaved",
    "phi-3-mini-4k-instruct",
];

const TEXTS: &[&str] = &[
    "Hello, world! Plain ASCII first.",
    " leading space, then  two  spaces and a tab\tand\nnew lines\n\n",
    "   three leading spaces",
    "Grüße aus Zürich — “quoted” ‘text’ … naïve café",
    "你好，世界！今天天气很好。我们去公园散步吧。",
    "こんにちは世界、カタカナとひらがな。漢字も。",
    "한국어 텍스트와 😀 이모지",
    "family: 👨‍👩‍👧‍👦 and couple 👩‍❤️‍👨 and pirate 🏴‍☠️",
    "flags 🇯🇵🇺🇸🇪🇺🏴󠁧󠁢󠁳󠁣󠁴󠁿 end",
    "skin tones 👍🏽👋🏿🤝🏻 ok",
    "combining: e\u{301} a\u{308} n\u{303} o\u{302}\u{323} and Z\u{335}\u{310}a\u{334}\u{311}",
    "math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫∂ and old italic 𐌰𐌱",
    "Привет, мир! مرحبا بالعالم שלום नमस्ते สวัสดี",
    "emoji run 🎉🎊🥳🎈🎁🎂🍰🧁",
];

fn check_stream(
    tok: &Tokenizer,
    name: &str,
    text: &str,
    ids: &[TokenId],
    skip: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    let full = match tok.decode(ids, skip) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name} {text:?}: decode: {e}")],
    };
    let mut detok = IncrementalDetokenizer::new(skip);
    let mut emitted = String::new();
    let source_has_fffd = text.contains('\u{FFFD}');
    for k in 0..ids.len() {
        let piece = match detok.push(tok, ids[k]) {
            Ok(p) => p,
            Err(e) => return vec![format!("{name} {text:?}: push: {e}")],
        };
        if !source_has_fffd && piece.contains('\u{FFFD}') {
            failures.push(format!(
                "{name} {text:?} skip={skip}: piece {k} {piece:?} has U+FFFD"
            ));
        }
        emitted.push_str(&piece);
        if !full.starts_with(&emitted) {
            failures.push(format!(
                "{name} {text:?} skip={skip}: after {} ids {emitted:?} is not a prefix of {full:?}",
                k + 1
            ));
            return failures;
        }
        let prefix = tok.decode(&ids[..=k], skip).unwrap_or_default();
        if !prefix.ends_with('\u{FFFD}') && prefix != emitted {
            failures.push(format!(
                "{name} {text:?} skip={skip}: after {} ids emitted {emitted:?}, decode gives {prefix:?}",
                k + 1
            ));
        }
    }
    match detok.finish(tok) {
        Ok(rest) => emitted.push_str(&rest),
        Err(e) => failures.push(format!("{name} {text:?}: finish: {e}")),
    }
    if emitted != full {
        failures.push(format!(
            "{name} {text:?} skip={skip}: total {emitted:?} != {full:?}"
        ));
    }
    failures
}

#[test]
fn streamed_text_matches_decode() {
    let mut failures = Vec::new();
    for name in TOKENIZERS {
        let tok = load(name);
        for text in TEXTS {
            for add_special in [false, true] {
                let ids = tok
                    .encode(text, add_special)
                    .unwrap_or_else(|e| panic!("{e}"));
                for skip in [false, true] {
                    failures.extend(check_stream(&tok, name, text, &ids, skip));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A generated conversation turn: special tokens around text, the way a model emits them.
#[test]
fn special_tokens_are_skipped_or_kept() {
    let tok = load("qwen2.5-instruct");
    let ids = tok
        .encode("<|im_start|>assistant\nBonjour 👋🏽 à tous<|im_end|>", false)
        .unwrap_or_else(|e| panic!("{e}"));
    let run = |skip: bool| {
        let mut detok = IncrementalDetokenizer::new(skip);
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&detok.push(&tok, id).unwrap_or_else(|e| panic!("{e}")));
        }
        out.push_str(&detok.finish(&tok).unwrap_or_else(|e| panic!("{e}")));
        out
    };
    assert_eq!(run(true), "assistant\nBonjour 👋🏽 à tous");
    assert_eq!(
        run(false),
        "<|im_start|>assistant\nBonjour 👋🏽 à tous<|im_end|>"
    );
    assert_eq!(run(true), tok.decode(&ids, true).unwrap_or_default());
}

/// Streams every id through a fresh detokenizer (special tokens kept); returns the text and
/// the largest window it held.
fn stream_with_window(tok: &Tokenizer, ids: &[TokenId]) -> (String, usize) {
    let mut detok = IncrementalDetokenizer::new(false);
    let mut out = String::new();
    let mut max_window = 0;
    for &id in ids {
        out.push_str(&detok.push(tok, id).unwrap_or_else(|e| panic!("{e}")));
        max_window = max_window.max(detok.num_window_tokens());
    }
    out.push_str(&detok.finish(tok).unwrap_or_else(|e| panic!("{e}")));
    (out, max_window)
}

#[test]
fn window_stays_bounded_on_long_sequences() {
    let tok = load("llama-3.2-instruct");
    let text = TEXTS.concat().repeat(20);
    let ids = tok.encode(&text, false).unwrap_or_else(|e| panic!("{e}"));
    let (out, max_window) = stream_with_window(&tok, &ids);
    assert_eq!(out, tok.decode(&ids, false).unwrap_or_default());
    assert!(ids.len() > 2000, "{} ids", ids.len());
    assert!(max_window <= 8, "window grew to {max_window} ids");
}

/// A model can emit byte tokens that never form a character; the window must not grow with
/// them, and the text must still end up as `decode` shows it.
#[test]
fn invalid_byte_runs_do_not_grow_the_window() {
    let tok = load("mistral-7b-instruct-v0.3-resaved");
    let byte = tok
        .token_to_id("<0x80>")
        .unwrap_or_else(|| panic!("no <0x80> token"));
    let hello = tok.encode("hello", false).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<TokenId> = hello
        .iter()
        .copied()
        .chain(std::iter::repeat_n(byte, 100))
        .chain(hello.iter().copied())
        .collect();
    let (out, max_window) = stream_with_window(&tok, &ids);
    assert_eq!(out, tok.decode(&ids, false).unwrap_or_default());
    assert!(max_window <= 70, "window grew to {max_window} ids");
}
