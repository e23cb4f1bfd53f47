//! Llama 3.1 to 3.3 JSON tool calling: the whole output is a call object
//! `{"name": "f", "parameters": {…}}` ("arguments" also accepted), perhaps after
//! `<|python_tag|>`; parallel calls are joined by `;`. Output that starts otherwise is content.

use super::{call_from_json, is_partial, json_space, Input, Json, ParsedToolCall, Step};

pub(super) const PYTHON_TAG: &str = "<|python_tag|>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Nothing consumed yet: the output may open with a call.
    Start,
    /// Right after a call: another may follow, after a `;`.
    AfterCall,
    /// The output turned out to be text: everything else is content.
    Content,
}

enum Found {
    Call(usize, ParsedToolCall),
    NotCall,
    NeedMore,
}

pub(super) fn step(state: &mut State, input: &mut Input) -> Step {
    if *state == State::Content {
        return Step::Content(input.text.len());
    }
    match call(input, *state == State::AfterCall) {
        Found::NeedMore => Step::NeedMore,
        Found::Call(len, call) => {
            *state = State::AfterCall;
            Step::Calls(len, vec![call])
        }
        // Plain text may well contain `{` and `;` later; only the opening decides.
        Found::NotCall => {
            *state = State::Content;
            Step::Content(input.text.len())
        }
    }
}

/// The call the input starts with, after whitespace (and, after a call, an optional `;`).
fn call(input: &mut Input, after_call: bool) -> Found {
    let text = input.text;
    let wait = if input.eof {
        Found::NotCall
    } else {
        Found::NeedMore
    };
    let mut at = json_space(text);
    if after_call && text[at..].starts_with(';') {
        at += 1;
        at += json_space(&text[at..]);
    }
    if text[at..].starts_with(PYTHON_TAG) {
        at += PYTHON_TAG.len();
        at += json_space(&text[at..]);
    } else if is_partial(&text[at..], PYTHON_TAG) {
        return wait;
    }
    match input.json_at(at) {
        Json::NeedMore => wait,
        Json::Invalid => Found::NotCall,
        // The arguments key is required: without it, `{"name": "Ada", "age": 36}` from a
        // model asked for JSON would pass for a call.
        Json::Complete(len, value) => match call_from_json(value, true) {
            Some(call) => Found::Call(at + len, call),
            None => Found::NotCall,
        },
    }
}
