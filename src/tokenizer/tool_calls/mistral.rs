//! Mistral: `[TOOL_CALLS]` then either a JSON array of calls
//! `[{"name": "f", "arguments": {…}, "id": "abc123xyz"}, …]` (v3 tokenizers: Mistral 7B v0.3,
//! Nemo) or `name[ARGS]{…}` (newer tokenizers; `name[CALL_ID]id[ARGS]{…}` too), the marker
//! repeated for each call. Text before the marker is content.

use super::{
    arguments_json, call_from_json, content_before, is_partial, json_space, Input, Json,
    ParsedToolCall, Step,
};
use serde_json::Value;

pub(super) const START: &str = "[TOOL_CALLS]";
const ARGS: &str = "[ARGS]";
const CALL_ID: &str = "[CALL_ID]";

pub(super) fn step(input: &mut Input) -> Step {
    if !input.text.starts_with(START) {
        return content_before(START, input.text, input.eof);
    }
    // A marker not followed by calls is content, and scanning goes on after it.
    calls(input).unwrap_or(Step::Content(START.len()))
}

/// The calls after the marker the input starts with; None if there are none.
fn calls(input: &mut Input) -> Option<Step> {
    let text = input.text;
    let at = START.len() + json_space(&text[START.len()..]);
    match text[at..].bytes().next() {
        None => (!input.eof).then_some(Step::NeedMore),
        Some(b'[' | b'{') => json_calls(input, at),
        Some(_) => named_call(input, at),
    }
}

/// `[{"name": …, "arguments": …}, …]`, or a lone object, at `at`; every element must be a call.
fn json_calls(input: &mut Input, at: usize) -> Option<Step> {
    let (len, value) = match input.json_at(at) {
        Json::Complete(len, value) => (len, value),
        Json::NeedMore => return Some(Step::NeedMore),
        Json::Invalid => return None,
    };
    let calls = match value {
        Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|item| call_from_json(item, false))
            .collect::<Option<Vec<_>>>()?,
        object @ Value::Object(_) => vec![call_from_json(object, false)?],
        _ => return None,
    };
    Some(Step::Calls(at + len, calls))
}

/// `name[ARGS]{…}` or `name[CALL_ID]id[ARGS]{…}` at `at`.
fn named_call(input: &mut Input, at: usize) -> Option<Step> {
    let text = input.text;
    let wait = (!input.eof).then_some(Step::NeedMore);
    let name_end = span_end(text, at, |c| {
        c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
    });
    if name_end == at {
        return None;
    }
    let mut end = name_end;
    if text[end..].starts_with(CALL_ID) {
        // The id is the API's business; it is read past and dropped.
        end = span_end(text, end + CALL_ID.len(), |c| c.is_ascii_alphanumeric());
    } else if is_partial(&text[end..], CALL_ID) {
        return wait;
    }
    if text[end..].starts_with(ARGS) {
        end += ARGS.len();
    } else if is_partial(&text[end..], ARGS) {
        return wait;
    } else {
        return None;
    }
    end += json_space(&text[end..]);
    match input.json_at(end) {
        Json::NeedMore => Some(Step::NeedMore),
        Json::Invalid => None,
        Json::Complete(len, arguments @ Value::Object(_)) => {
            let call = ParsedToolCall {
                name: text[at..name_end].to_string(),
                arguments: arguments_json(arguments)?,
            };
            Some(Step::Calls(end + len, vec![call]))
        }
        Json::Complete(..) => None,
    }
}

/// Where the run of chars from `start` that satisfy `accept` ends.
fn span_end(text: &str, start: usize, accept: impl Fn(char) -> bool) -> usize {
    text[start..]
        .find(|c: char| !accept(c))
        .map_or(text.len(), |len| start + len)
}
