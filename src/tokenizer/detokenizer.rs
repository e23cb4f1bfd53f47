//! Streaming text out of generated tokens, one token at a time.
//!
//! Owns `IncrementalDetokenizer`. Depends on `Tokenizer::decode` only; it must not depend on
//! the engine (it is fed token ids, by whoever streams them) nor keep the whole sequence.
//!
//! Invariant: the pieces returned so far, concatenated, equal `decode(ids so far)` whenever
//! that decode does not end in an unfinished character, and are always a prefix of the final
//! decode; no piece ends in a U+FFFD that a later token could still complete. The work per
//! token is bounded by the window (the last emitted chunk plus the held-back tokens), never by
//! the length of the sequence.
//!
//! How: the prefix-offset/read-offset technique. The window starts with the tokens of the last
//! emitted chunk (`window[..read_offset]`), which give the new tokens their left context (a
//! leading space that a decoder strips only at the start of the text, an unfinished byte
//! sequence). Each push decodes the window with and without the new tokens and emits the
//! difference once it is complete.

use super::error::TokenizerError;
use super::tokenizer::{ends_with_clean_up_prefix, Tokenizer};
use crate::ids::TokenId;

/// Beyond this many held-back tokens the text is released even if it still ends in U+FFFD:
/// a real character needs at most four byte tokens, so such a run is invalid bytes, which
/// `decode` also shows as U+FFFD.
const MAX_PENDING_TOKENS: usize = 32;

const REPLACEMENT: char = '\u{FFFD}';

/// Turns generated token ids into text pieces as they arrive.
#[derive(Debug, Clone)]
pub struct IncrementalDetokenizer {
    skip_special_tokens: bool,
    /// The last emitted chunk (`..read_offset`) followed by the held-back tokens.
    window: Vec<TokenId>,
    read_offset: usize,
}

impl IncrementalDetokenizer {
    pub fn new(skip_special_tokens: bool) -> Self {
        IncrementalDetokenizer {
            skip_special_tokens,
            window: Vec::new(),
            read_offset: 0,
        }
    }

    /// Appends one generated token; returns the newly completed text (may be empty).
    pub fn push(&mut self, tok: &Tokenizer, id: TokenId) -> Result<String, TokenizerError> {
        // `decode` drops special tokens before its decoder runs, so leaving them out of the
        // window changes nothing, and keeps them from crowding out real context.
        if self.skip_special_tokens && tok.is_special(id) {
            return Ok(String::new());
        }
        self.window.push(id);
        let prefix_text = tok.decode(&self.window[..self.read_offset], self.skip_special_tokens)?;
        let new_text = tok.decode(&self.window, self.skip_special_tokens)?;
        let pending = self.window.len() - self.read_offset;
        let complete = new_text.len() > prefix_text.len()
            && !new_text.ends_with(REPLACEMENT)
            && !(tok.cleans_up_spaces() && ends_with_clean_up_prefix(&new_text));
        if !complete && pending <= MAX_PENDING_TOKENS {
            return Ok(String::new());
        }
        Ok(self.advance(&prefix_text, &new_text))
    }

    /// Returns whatever is still held back (an unfinished character decodes as U+FFFD, as
    /// `decode` shows it). The detokenizer can keep going afterwards.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String, TokenizerError> {
        if self.read_offset == self.window.len() {
            return Ok(String::new());
        }
        let prefix_text = tok.decode(&self.window[..self.read_offset], self.skip_special_tokens)?;
        let new_text = tok.decode(&self.window, self.skip_special_tokens)?;
        Ok(self.advance(&prefix_text, &new_text))
    }

    /// How many ids the next `push` decodes: the last emitted chunk plus the held-back ids.
    /// Stays small however long the sequence grows.
    pub fn num_window_tokens(&self) -> usize {
        self.window.len()
    }

    /// Emits `new_text` past `prefix_text` and makes the held-back tokens the new context.
    fn advance(&mut self, prefix_text: &str, new_text: &str) -> String {
        let piece = suffix_after(prefix_text, new_text).to_string();
        self.window.drain(..self.read_offset);
        self.read_offset = self.window.len();
        piece
    }
}

/// The part of `new_text` after `prefix_text`. Decoders are concatenative over a window, so
/// `new_text` normally starts with `prefix_text`; if a decoder rewrote the boundary, the text
/// after the longest common prefix is the best continuation.
fn suffix_after<'a>(prefix_text: &str, new_text: &'a str) -> &'a str {
    if let Some(rest) = new_text.strip_prefix(prefix_text) {
        return rest;
    }
    let common = prefix_text
        .char_indices()
        .zip(new_text.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix_text.len().min(new_text.len()), |((i, _), _)| i);
    let mut start = common;
    while !new_text.is_char_boundary(start) {
        start -= 1;
    }
    &new_text[start..]
}

#[cfg(test)]
mod tests {
    use super::suffix_after;

    #[test]
    fn suffix_after_prefix() {
        assert_eq!(suffix_after("Hello", "Hello world"), " world");
        assert_eq!(suffix_after("", "x"), "x");
        assert_eq!(suffix_after("ab c", "ab. d"), ". d");
    }
}
