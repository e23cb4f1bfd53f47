//! Plain-text signals the policy reads from a customer message: words, phrase matches,
//! near-duplicates, requests for a human, "that didn't help", confirmations and the script a
//! message is written in.
//!
//! Pure functions of the text, with no model and no state, so every policy decision built on
//! them is reproducible. Depends on nothing else in the crate.

use std::collections::BTreeSet;

/// Lowercased words: letters and digits, apostrophes dropped ("didn't" → "didnt").
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if c == '\'' || c == '\u{2019}' {
            continue;
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether the words of `phrase` occur, in order and adjacent, among `words`.
pub fn contains_phrase(words: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && words.windows(phrase.len()).any(|w| w == phrase)
}

/// Jaccard similarity of the two messages' word sets.
pub fn jaccard(a: &[String], b: &[String]) -> f32 {
    let a: BTreeSet<&str> = a.iter().map(String::as_str).collect();
    let b: BTreeSet<&str> = b.iter().map(String::as_str).collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(&b).count();
    let union = a.union(&b).count();
    inter as f32 / union as f32
}

fn phrases(list: &[&str]) -> Vec<Vec<String>> {
    list.iter().map(|p| words(p)).collect()
}

fn any_phrase(text_words: &[String], list: &[&str]) -> Option<String> {
    phrases(list)
        .into_iter()
        .zip(list)
        .find(|(p, _)| contains_phrase(text_words, p))
        .map(|(_, s)| s.to_string())
}

/// Ways customers ask for a person. Matched as whole-word phrases.
const HUMAN_REQUESTS: &[&str] = &[
    "human",
    "real person",
    "a person",
    "live agent",
    "live person",
    "real agent",
    "human agent",
    "speak to someone",
    "talk to someone",
    "speak with someone",
    "talk with someone",
    "speak to an agent",
    "talk to an agent",
    "speak to a representative",
    "talk to a representative",
    "customer service representative",
    "representative",
    "operator",
    "transfer me",
    "escalate this",
    "your manager",
    "supervisor",
];

/// The phrase by which the customer asks for a human, if they do.
pub fn asks_for_human(text_words: &[String]) -> Option<String> {
    any_phrase(text_words, HUMAN_REQUESTS)
}

const NOT_HELPED: &[&str] = &[
    "didnt help",
    "did not help",
    "doesnt help",
    "does not help",
    "not helpful",
    "no help",
    "didnt work",
    "did not work",
    "doesnt work",
    "does not work",
    "still not working",
    "still doesnt",
    "still broken",
    "that is not what i asked",
    "thats not what i asked",
    "not what i asked",
    "you already said",
    "you said that already",
    "useless",
    "that is wrong",
    "thats wrong",
    "not my question",
];

/// The phrase by which the customer says the last answer did not help, if they do.
pub fn says_not_helped(text_words: &[String]) -> Option<String> {
    any_phrase(text_words, NOT_HELPED)
}

const CONFIRMATIONS: &[&str] = &[
    "that worked",
    "it worked",
    "that fixed it",
    "that solved it",
    "problem solved",
    "all sorted",
    "that helped",
    "that helps",
    "thanks that works",
    "works now",
    "got it thanks",
    "perfect thanks",
    "great thanks",
];

/// Whether the customer confirms the last answer resolved their problem.
pub fn confirms_resolution(text_words: &[String]) -> bool {
    any_phrase(text_words, CONFIRMATIONS).is_some() && says_not_helped(text_words).is_none()
}

/// Common English function words: a Latin-script message with none of them, long enough to
/// tell, is taken to be in another language.
const ENGLISH_MARKERS: &[&str] = &[
    "the", "a", "an", "i", "my", "me", "you", "your", "is", "are", "was", "to", "of", "and", "or",
    "in", "on", "for", "it", "this", "that", "can", "do", "how", "what", "why", "when", "where",
    "not", "no", "yes", "hi", "hello", "hey", "please", "thanks", "thank", "with", "have", "has",
    "get", "want", "need", "help", "order", "account", "be", "at", "im", "ive", "dont", "cant",
    "will", "would", "there", "from", "about", "if", "so", "but", "its",
];

/// The language of `text`, as far as the agent can tell: `Some("en")` for English, `Some(other)`
/// with a rough label for text clearly in another script or language, `None` when too short
/// to tell.
pub fn detect_language(text: &str) -> Option<&'static str> {
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() < 4 {
        return None;
    }
    let non_latin = letters.iter().filter(|c| !is_latin(**c)).count();
    if non_latin * 2 > letters.len() {
        return Some(script_label(&letters));
    }
    // Only words of letters count: ids, emails and numbers say nothing of the language, and
    // a short reply ("its jo@example.com") is too little to tell.
    let w: Vec<String> = words(text)
        .into_iter()
        .filter(|x| x.chars().all(char::is_alphabetic) && x.len() > 1)
        .collect();
    if w.len() < 6 {
        return None;
    }
    if w.iter().any(|x| ENGLISH_MARKERS.contains(&x.as_str())) {
        Some("en")
    } else {
        Some("other-latin")
    }
}

fn is_latin(c: char) -> bool {
    c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c)
}

fn script_label(letters: &[char]) -> &'static str {
    let count = |lo: char, hi: char| letters.iter().filter(|c| (lo..=hi).contains(*c)).count();
    let scripts = [
        ("cyrillic", count('\u{0400}', '\u{04FF}')),
        ("greek", count('\u{0370}', '\u{03FF}')),
        ("arabic", count('\u{0600}', '\u{06FF}')),
        ("hebrew", count('\u{0590}', '\u{05FF}')),
        ("devanagari", count('\u{0900}', '\u{097F}')),
        ("cjk", count('\u{3040}', '\u{9FFF}')),
        ("hangul", count('\u{AC00}', '\u{D7AF}')),
        ("thai", count('\u{0E00}', '\u{0E7F}')),
    ];
    scripts
        .iter()
        .max_by_key(|s| s.1)
        .filter(|s| s.1 > 0)
        .map(|s| s.0)
        .unwrap_or("other")
}

/// The first `max` characters of `text`, cut at a word boundary, with an ellipsis if cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    let end = cut.rfind(char::is_whitespace).unwrap_or(cut.len());
    format!("{}…", cut[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_whole_words_only() {
        let w = words("Can I talk to someone? A HUMAN please");
        assert_eq!(asks_for_human(&w).as_deref(), Some("human"));
        let w = words("my humane society donation receipt");
        assert_eq!(asks_for_human(&w), None);
    }

    #[test]
    fn not_helped_reads_contractions() {
        assert!(says_not_helped(&words("That didn't help at all")).is_some());
        assert!(says_not_helped(&words("that helped, thanks")).is_none());
        assert!(confirms_resolution(&words("That helped, thanks!")));
        assert!(!confirms_resolution(&words(
            "that helped nothing, still not working"
        )));
    }

    #[test]
    fn languages_are_told_apart() {
        assert_eq!(
            detect_language("How do I reset the password on my account?"),
            Some("en")
        );
        assert_eq!(
            detect_language("Как сбросить пароль моей учётной записи?"),
            Some("cyrillic")
        );
        assert_eq!(
            detect_language("パスワードをリセットするにはどうすればいいですか"),
            Some("cjk")
        );
        assert_eq!(
            detect_language("Wie kann ich mein Passwort zurücksetzen bitte"),
            Some("other-latin")
        );
        assert_eq!(detect_language("ok"), None);
    }

    #[test]
    fn jaccard_of_reworded_repeats_is_high() {
        let a = words("how do I reset my password");
        let b = words("How do I reset my password??");
        assert!((jaccard(&a, &b) - 1.0).abs() < 1e-6);
        assert!(jaccard(&a, &words("where is my order")) < 0.3);
    }
}
