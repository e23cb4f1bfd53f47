//! Customer details the agent collects for a triage handoff (email, phone, order id, …):
//! recognising each in free text and checking an answer to a question about one.
//!
//! Pure text functions with fixed rules, so the same message always yields the same details.
//! Depends on `text` only.

use super::text::words;

/// The question that asks for `detail`.
pub fn question(detail: &str) -> String {
    match detail {
        "full_name" => "Could you tell me your full name, first and last?".into(),
        "account_id" => "What is your account ID?".into(),
        "username" => "What is the username on your account?".into(),
        "email" => "What email address is on your account?".into(),
        "phone" => "What phone number is on your account?".into(),
        "order_id" => "What is the order ID? You'll find it in your confirmation email.".into(),
        "zip_code" => "What is the ZIP code on your account?".into(),
        "pin_number" => "What is your account PIN?".into(),
        other => format!("Could you tell me your {}?", other.replace('_', " ")),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn find_email(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '(' | ')'))
        .map(|t| t.trim_matches(|c: char| c == '.' || c == '"' || c == '\''))
        .find(|t| {
            let Some((user, domain)) = t.split_once('@') else {
                return false;
            };
            !user.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        .map(str::to_lowercase)
}

/// Runs of characters that may be an identifier: letters and digits with at least `min`
/// digits among them.
fn find_code(text: &str, min_digits: usize, max_len: usize) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .map(|t| t.trim_matches('-'))
        .find(|t| {
            let d = t.chars().filter(char::is_ascii_digit).count();
            d >= min_digits && t.len() <= max_len && !t.contains('@')
        })
        .map(str::to_string)
}

fn find_phone(text: &str) -> Option<String> {
    let d = digits(text);
    (10..=15).contains(&d.len()).then_some(d)
}

/// The value of `detail` in `answer`, a reply to the question for it; `None` when the reply
/// does not hold one.
pub fn parse(detail: &str, answer: &str) -> Option<String> {
    let answer = answer.trim();
    match detail {
        "email" => find_email(answer),
        "phone" => find_phone(answer),
        "order_id" | "account_id" => find_code(answer, 3, 32),
        "zip_code" => {
            let d = digits(answer);
            (d.len() == 5 || d.len() == 9).then_some(d)
        }
        "pin_number" => {
            let d = digits(answer);
            (4..=8).contains(&d.len()).then_some(d)
        }
        "full_name" => {
            let lowered = answer.to_lowercase();
            let name = ["my name is", "name is", "i am", "i'm", "it's", "this is"]
                .iter()
                .find_map(|p| lowered.find(p).map(|i| &answer[i + p.len()..]))
                .unwrap_or(answer);
            let w: Vec<&str> = name
                .split_whitespace()
                .map(|w| w.trim_matches(|c: char| !c.is_alphabetic()))
                .filter(|w| !w.is_empty())
                .collect();
            (2..=5).contains(&w.len()).then(|| w.join(" "))
        }
        "username" => answer
            .split_whitespace()
            .map(|t| t.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')))
            .rfind(|t| !t.is_empty() && !t.contains('@'))
            .map(str::to_string),
        _ => (!words(answer).is_empty()).then(|| answer.chars().take(200).collect()),
    }
}

/// Details recognisable anywhere in a message without being asked: email, phone, order id.
pub fn scan(text: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(e) = find_email(text) {
        out.push(("email", e));
    }
    let lowered = text.to_lowercase();
    if lowered.contains("order") {
        if let Some(id) = find_code(text, 6, 32) {
            out.push(("order_id", id));
        }
    }
    if lowered.contains("phone") || lowered.contains("number") {
        if let Some(p) = find_phone(text) {
            out.push(("phone", p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_for_the_detail_asked() {
        assert_eq!(
            parse("email", "sure, it's Jo.Smith@example.com.").as_deref(),
            Some("jo.smith@example.com")
        );
        assert_eq!(parse("email", "I don't remember"), None);
        assert_eq!(
            parse("order_id", "Order ID: 3348917502").as_deref(),
            Some("3348917502")
        );
        assert_eq!(
            parse("full_name", "my name is Crystal Minh").as_deref(),
            Some("Crystal Minh")
        );
        assert_eq!(
            parse("phone", "(977) 625-2661").as_deref(),
            Some("9776252661")
        );
        assert_eq!(parse("zip_code", "75227").as_deref(), Some("75227"));
        assert_eq!(
            scan("my order 3348917502 never came, email a@b.co"),
            vec![
                ("email", "a@b.co".to_string()),
                ("order_id", "3348917502".to_string())
            ]
        );
    }
}
