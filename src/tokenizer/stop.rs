//! Stop strings over streamed text.
//!
//! Owns `StopStrings`, which sits after the incremental detokenizer: it takes each new piece of
//! text, emits what is certain to come before any stop string, and holds back the rest. Works
//! on text alone; it depends on nothing, not even a tokenizer, and never sees token ids.
//!
//! Invariant: for any split of a text into pieces, the emitted pieces (with the text of
//! `Stopped`, or of `finish`) concatenate to the text before the earliest occurrence of any
//! stop string, by start position, where a tie between stops starting at the same position goes
//! to the one listed first; and `stop_index` names that stop. So the result never depends on
//! where token boundaries fall. To keep this, a completed stop string is reported only once no
//! stop that would win over it can still complete: with stops `["answer", "</answer>"]` and
//! text `</answer`, the match of `answer` waits for one more character. What is held back is
//! never longer than the longest stop string plus the last piece.

/// Matches stop strings in streamed text, across token boundaries, and keeps them out of the
/// output.
#[derive(Debug, Clone)]
pub struct StopStrings {
    /// The non-empty stop strings, each with its index in the list given to `new`.
    stops: Vec<(usize, String)>,
    max_stop_len: usize,
    /// Text received and not yet emitted.
    pending: String,
    /// A stop matched (or `finish` ran): nothing more is emitted.
    done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutput {
    /// Text that is safe to emit now (may be empty).
    Text(String),
    /// A stop string matched: the text before it that was not yet emitted, and which stop
    /// matched (its index in the list given to `StopStrings::new`).
    Stopped { text: String, stop_index: usize },
}

/// A stop that occurs in the pending text or may still start there: its start (a byte offset
/// into the pending text) and its index in the caller's list. Ordering these tuples is the
/// rule for which stop wins.
type Occurrence = (usize, usize);

impl StopStrings {
    /// Empty strings are ignored; `stop_index` still counts them, so it indexes `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<(usize, String)> = stops
            .into_iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .collect();
        let max_stop_len = stops.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        Self {
            stops,
            max_stop_len,
            pending: String::new(),
            done: false,
        }
    }

    /// True when there are no (non-empty) stop strings, so every piece passes straight through.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Takes the next piece of text. Holds back the longest suffix that could still start a
    /// stop string (and, while a found stop waits on one that would win over it, the text from
    /// that one's start). After `Stopped`, every piece is ignored.
    pub fn push(&mut self, delta: &str) -> StopOutput {
        if self.done {
            return StopOutput::Text(String::new());
        }
        if self.stops.is_empty() {
            return StopOutput::Text(delta.to_string());
        }
        self.pending.push_str(delta);
        let found = self.earliest_complete();
        let open = self.earliest_open();
        match (found, open) {
            (Some(found), open) if open.is_none_or(|open| found < open) => self.stop(found),
            _ => {
                let safe = found.into_iter().chain(open).map(|(start, _)| start).min();
                let safe = safe.unwrap_or(self.pending.len());
                let rest = self.pending.split_off(safe);
                StopOutput::Text(std::mem::replace(&mut self.pending, rest))
            }
        }
    }

    /// The end of generation: the held-back text, cut at a stop string that was found but
    /// was still waiting on a longer or higher-priority one that can no longer complete.
    pub fn finish(&mut self) -> StopOutput {
        if self.done {
            return StopOutput::Text(String::new());
        }
        self.done = true;
        match self.earliest_complete() {
            Some(found) => self.stop(found),
            None => StopOutput::Text(std::mem::take(&mut self.pending)),
        }
    }

    fn stop(&mut self, (start, stop_index): Occurrence) -> StopOutput {
        self.done = true;
        self.pending.truncate(start);
        StopOutput::Stopped {
            text: std::mem::take(&mut self.pending),
            stop_index,
        }
    }

    /// The winning stop among those wholly inside the pending text.
    fn earliest_complete(&self) -> Option<Occurrence> {
        self.stops
            .iter()
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|start| (start, *i)))
            .min()
    }

    /// The winning stop among those that the pending text ends partway into: they may still
    /// complete with the next piece.
    fn earliest_open(&self) -> Option<Occurrence> {
        let len = self.pending.len();
        // A stop can be open only where fewer than `max_stop_len` bytes remain; only char
        // boundaries can start one, so no character is ever split.
        let first = (len + 1).saturating_sub(self.max_stop_len);
        (first..len)
            .filter(|&start| self.pending.is_char_boundary(start))
            .find_map(|start| {
                let tail = &self.pending[start..];
                self.stops
                    .iter()
                    .find(|(_, s)| s.len() > tail.len() && s.starts_with(tail))
                    .map(|(i, _)| (start, *i))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stops(list: &[&str]) -> StopStrings {
        StopStrings::new(list.iter().map(|s| s.to_string()).collect())
    }

    fn text(s: &str) -> StopOutput {
        StopOutput::Text(s.to_string())
    }

    fn stopped(s: &str, stop_index: usize) -> StopOutput {
        StopOutput::Stopped {
            text: s.to_string(),
            stop_index,
        }
    }

    #[test]
    fn a_stop_split_across_pieces_is_matched_and_left_out() {
        let mut s = stops(&["</s>"]);
        assert_eq!(s.push("abc<"), text("abc"));
        assert_eq!(s.push("/"), text(""));
        assert_eq!(s.push("s>tail"), stopped("", 0));
        assert_eq!(s.push("more"), text(""), "nothing after a stop");
        assert_eq!(s.finish(), text(""));
    }

    #[test]
    fn held_back_text_is_released_when_the_stop_fails_to_complete() {
        let mut s = stops(&["Hello!"]);
        assert_eq!(s.push("Hel"), text(""));
        assert_eq!(s.push("lp"), text("Hellp"));
        assert_eq!(s.push("Hello"), text(""));
        assert_eq!(s.finish(), text("Hello"));
    }

    #[test]
    fn the_stop_starting_first_wins_even_if_it_completes_later() {
        let mut s = stops(&["bc", "abcd"]);
        assert_eq!(s.push("xab"), text("x"));
        assert_eq!(s.push("c"), text(""), "`bc` waits: `abcd` started earlier");
        assert_eq!(s.push("d"), stopped("", 1));

        let mut s = stops(&["bc", "abcd"]);
        s.push("xabc");
        assert_eq!(s.push("e"), stopped("a", 0), "`abcd` failed, `bc` stands");
    }

    #[test]
    fn at_the_same_start_the_stop_listed_first_wins() {
        let mut s = stops(&["abc", "ab"]);
        assert_eq!(s.push("ab"), text(""));
        assert_eq!(s.push("c"), stopped("", 0));
        let mut s = stops(&["ab", "abc"]);
        assert_eq!(
            s.push("ab"),
            stopped("", 0),
            "nothing can beat it, so no wait"
        );
    }

    #[test]
    fn finish_reports_a_stop_that_was_still_waiting() {
        let mut s = stops(&["bc", "abcd"]);
        assert_eq!(s.push("abc"), text(""));
        assert_eq!(s.finish(), stopped("a", 0));
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let mut s = stops(&["🙂!"]);
        assert_eq!(s.push("hi 🙂"), text("hi "));
        assert_eq!(s.push("?"), text("🙂?"));
        let mut s = stops(&["é!"]);
        assert_eq!(s.push("aé"), text("a"));
        assert_eq!(s.push("!b"), stopped("", 0));
    }

    #[test]
    fn empty_stops_are_ignored_but_keep_their_place_in_the_list() {
        let mut s = stops(&["", "b"]);
        assert!(!s.is_empty());
        assert_eq!(s.push("abc"), stopped("a", 1));
        let mut none = stops(&[""]);
        assert!(none.is_empty());
        assert_eq!(none.push("abc"), text("abc"));
        assert_eq!(none.finish(), text(""));
    }

    /// The whole text at once: cut before the earliest stop, ties to the first listed.
    fn naive(text: &str, stops: &[String]) -> (String, Option<usize>) {
        let found = stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| text.find(s.as_str()).map(|start| (start, i)))
            .min();
        match found {
            Some((start, i)) => (text[..start].to_string(), Some(i)),
            None => (text.to_string(), None),
        }
    }

    fn small_text(max_chars: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!['a', 'b', 'é', '🙂']),
            0..max_chars,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// A text, stop strings (half of them cut from the text, so that they occur, overlap and
    /// nest often) and cut points for splitting the text into pieces.
    fn case() -> impl Strategy<Value = (String, Vec<String>, Vec<prop::sample::Index>)> {
        small_text(24).prop_flat_map(|text| {
            let chars: Vec<char> = text.chars().collect();
            let from_text = (any::<prop::sample::Index>(), 1..5usize).prop_map(move |(at, len)| {
                if chars.is_empty() {
                    return String::new();
                }
                let start = at.index(chars.len());
                chars[start..(start + len).min(chars.len())]
                    .iter()
                    .collect()
            });
            let stop = prop_oneof![small_text(5), from_text];
            (
                Just(text),
                prop::collection::vec(stop, 0..4),
                prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn streamed_pieces_equal_a_search_of_the_whole_text(
            (text, stop_list, cuts) in case()
        ) {
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let mut cuts: Vec<usize> = cuts
                .iter()
                .filter(|_| !boundaries.is_empty())
                .map(|c| boundaries[c.index(boundaries.len())])
                .collect();
            cuts.push(0);
            cuts.push(text.len());
            cuts.sort_unstable();
            let mut s = StopStrings::new(stop_list.clone());
            let mut emitted = String::new();
            let mut matched = None;
            for piece in cuts.windows(2).map(|w| &text[w[0]..w[1]]) {
                match s.push(piece) {
                    StopOutput::Text(t) => emitted.push_str(&t),
                    StopOutput::Stopped { text, stop_index } => {
                        emitted.push_str(&text);
                        matched = Some(stop_index);
                        break;
                    }
                }
            }
            if matched.is_none() {
                match s.finish() {
                    StopOutput::Text(t) => emitted.push_str(&t),
                    StopOutput::Stopped { text, stop_index } => {
                        emitted.push_str(&text);
                        matched = Some(stop_index);
                    }
                }
            }
            prop_assert_eq!((emitted, matched), naive(&text, &stop_list));
        }
    }
}
