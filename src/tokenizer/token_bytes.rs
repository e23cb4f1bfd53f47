//! The raw bytes behind each token id of a Hugging Face tokenizer, and which ids are special:
//! what constrained decoding needs to know which tokens can continue a JSON document.
//!
//! Reads the tokenizer's decoder to learn its spelling (GPT-2 byte-level, SentencePiece with
//! byte fallback, or plain text). Depends on the `tokenizers` crate only.

use serde_json::Value;

/// How a tokenizer spells bytes in its vocabulary strings, read from its decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Spelling {
    /// GPT-2 byte-to-unicode: every byte is one printable char (Qwen, Llama 3).
    ByteLevel,
    /// SentencePiece: `space` stands for ' ', and `<0xNN>` pieces are raw bytes when the
    /// decoder has byte fallback (Llama 2, Mistral).
    SentencePiece { space: char, byte_fallback: bool },
    /// Anything else: the piece is taken as its own UTF-8 text.
    Plain,
}

/// Bytes of each token id of a Hugging Face tokenizer, and which ids are special. Every
/// added token is flagged special, as are ids whose piece cannot be mapped to bytes and ids
/// the tokenizer does not define (gaps), so none of them can appear inside constrained text.
pub fn token_bytes(tok: &tokenizers::Tokenizer) -> (Vec<Vec<u8>>, Vec<bool>) {
    let spelling = tok
        .get_decoder()
        .and_then(|d| serde_json::to_value(d).ok())
        .map_or(Spelling::Plain, |d| spelling_of(&d));
    let added = tok.get_added_tokens_decoder();
    let max_added = added.keys().map(|&id| id as usize + 1).max().unwrap_or(0);
    let n = tok.get_vocab_size(true).max(max_added);
    let unicode_to_byte = gpt2_unicode_to_byte();
    let mut bytes = Vec::with_capacity(n);
    let mut special = Vec::with_capacity(n);
    for id in 0..n as u32 {
        if let Some(a) = added.get(&id) {
            bytes.push(a.content.clone().into_bytes());
            special.push(true);
            continue;
        }
        let Some(piece) = tok.id_to_token(id) else {
            bytes.push(Vec::new());
            special.push(true);
            continue;
        };
        let decoded = match spelling {
            Spelling::ByteLevel => piece
                .chars()
                .map(|c| unicode_to_byte.get(c as usize).copied().flatten())
                .collect::<Option<Vec<u8>>>(),
            Spelling::SentencePiece {
                space,
                byte_fallback,
            } => Some(
                byte_fallback
                    .then(|| sp_byte_piece(&piece))
                    .flatten()
                    .map_or_else(|| piece.replace(space, " ").into_bytes(), |b| vec![b]),
            ),
            Spelling::Plain => Some(piece.clone().into_bytes()),
        };
        match decoded {
            Some(b) => {
                bytes.push(b);
                special.push(false);
            }
            None => {
                bytes.push(piece.into_bytes());
                special.push(true);
            }
        }
    }
    (bytes, special)
}

/// The serialized decoder is walked rather than the `DecoderWrapper` enum because several
/// decoders keep their settings in private fields.
fn spelling_of(decoder: &Value) -> Spelling {
    let mut byte_level = false;
    let mut byte_fallback = false;
    let mut space = None;
    let mut stack = vec![decoder];
    while let Some(d) = stack.pop() {
        match d.get("type").and_then(Value::as_str) {
            Some("ByteLevel") => byte_level = true,
            Some("ByteFallback") => byte_fallback = true,
            Some("Metaspace") => {
                space = d
                    .get("replacement")
                    .and_then(Value::as_str)
                    .and_then(single_char)
                    .or(Some('▁'));
            }
            Some("Replace") if d.get("content").and_then(Value::as_str) == Some(" ") => {
                if let Some(c) = d
                    .pointer("/pattern/String")
                    .and_then(Value::as_str)
                    .and_then(single_char)
                {
                    space = Some(c);
                }
            }
            Some("Sequence") => {
                if let Some(Value::Array(ds)) = d.get("decoders") {
                    stack.extend(ds.iter());
                }
            }
            _ => {}
        }
    }
    if byte_level {
        Spelling::ByteLevel
    } else if byte_fallback || space.is_some() {
        Spelling::SentencePiece {
            space: space.unwrap_or('▁'),
            byte_fallback,
        }
    } else {
        Spelling::Plain
    }
}

fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// `<0x0A>` -> 0x0A.
fn sp_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The inverse of GPT-2's byte-to-unicode table, indexed by code point. Printable Latin-1
/// bytes stand for themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen) are
/// shifted, in byte order, to U+0100 and up so that every byte is a visible character.
fn gpt2_unicode_to_byte() -> Vec<Option<u8>> {
    let mut table = vec![None; 256 + 68];
    let mut shifted = 256;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if printable {
            table[b as usize] = Some(b);
        } else {
            table[shifted] = Some(b);
            shifted += 1;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use tokenizers::Tokenizer;

    use super::*;

    const QWEN: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/tokenizers/qwen2.5-instruct/tokenizer.json"
    );
    const MISTRAL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/tokenizers/mistral-7b-instruct-v0.3-resaved/tokenizer.json"
    );
    const LLAMA3: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/tokenizers/llama-3.2-instruct/tokenizer.json"
    );
    const PHI3: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/tokenizers/phi-3-mini-4k-instruct/tokenizer.json"
    );

    #[test]
    fn gpt2_table_is_a_bijection_with_known_points() {
        let t = gpt2_unicode_to_byte();
        let mut seen = [false; 256];
        for b in t.iter().flatten() {
            assert!(!seen[*b as usize]);
            seen[*b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        for (c, b) in [
            ('Ġ', b' '),
            ('Ċ', b'\n'),
            ('Ā', 0u8),
            ('Ń', 0xAD),
            ('!', b'!'),
            ('ÿ', 0xFF),
            ('ġ', 0x7F),
        ] {
            assert_eq!(t[c as usize], Some(b), "{c}");
        }
    }

    /// Each token's bytes, appended after a plain "x", must decode as the tokenizer decodes the pair.
    fn check_token_bytes(path: &str, specials: &[&str]) {
        let tok = Tokenizer::from_file(path).expect("tokenizer");
        let (bytes, special) = token_bytes(&tok);
        assert_eq!(bytes.len(), special.len());
        for name in specials {
            let id = tok.token_to_id(name).expect("special token") as usize;
            assert!(special[id], "{name} must be special");
        }
        let x = tok.token_to_id("x").expect("a plain x token");
        let mut checked = 0;
        for id in (0..bytes.len()).step_by(7) {
            let Ok(text) = std::str::from_utf8(&bytes[id]) else {
                continue;
            };
            if special[id] {
                continue;
            }
            let decoded = tok.decode(&[x, id as u32], false).expect("decode");
            assert_eq!(decoded, format!("x{text}"), "token {id}");
            checked += 1;
        }
        assert!(
            checked > bytes.len() / 10,
            "too few tokens checked: {checked}"
        );
    }

    #[test]
    fn token_bytes_match_the_decoders() {
        check_token_bytes(QWEN, &["<|im_end|>", "<tool_call>"]);
        check_token_bytes(LLAMA3, &["<|eot_id|>"]);
        check_token_bytes(MISTRAL, &["</s>", "[INST]"]);
        check_token_bytes(PHI3, &["<|end|>", "</s>"]);
        let tok = Tokenizer::from_file(MISTRAL).expect("tokenizer");
        let (bytes, _) = token_bytes(&tok);
        let id = |s: &str| tok.token_to_id(s).expect("piece") as usize;
        assert_eq!(bytes[id("<0x0A>")], b"\n");
        assert_eq!(bytes[id("<0xFF>")], [0xFF]);
        assert_eq!(bytes[id("▁the")], b" the");
    }
}
