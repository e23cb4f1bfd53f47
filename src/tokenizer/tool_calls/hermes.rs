//! Hermes 2 Pro / 3 and Qwen 2.5 / 3: each call is a block
//! `<tool_call>\n{"name": "f", "arguments": {…}}\n</tool_call>`, the blocks in a row for
//! parallel calls, perhaps after some text.

use super::{call_from_json, content_before, is_partial, json_space, Input, Json, Step};

pub(super) const START: &str = "<tool_call>";
const END: &str = "</tool_call>";

pub(super) fn step(input: &mut Input) -> Step {
    if !input.text.starts_with(START) {
        return content_before(START, input.text, input.eof);
    }
    // A block that is not a call leaves its start tag as content and scanning goes on after
    // it, so the rest of that block comes out as content too.
    block(input).unwrap_or(Step::Content(START.len()))
}

/// The block the input starts with; None if it holds no call. Lenient where models slip: the
/// end tag may be missing (at the end of generation or before the next block), and one block
/// may hold several call objects.
fn block(input: &mut Input) -> Option<Step> {
    let (text, eof) = (input.text, input.eof);
    let mut end = START.len();
    let mut calls = Vec::new();
    loop {
        let at = end + json_space(&text[end..]);
        let rest = &text[at..];
        if !calls.is_empty() {
            if rest.starts_with(END) {
                return Some(Step::Calls(at + END.len(), calls));
            }
            if is_partial(rest, END) {
                // At the end of generation a cut-off end tag still closes the block.
                return Some(if eof {
                    Step::Calls(text.len(), calls)
                } else {
                    Step::NeedMore
                });
            }
            if !rest.starts_with('{') {
                return Some(Step::Calls(end, calls));
            }
        }
        let found = match input.json_at(at) {
            Json::NeedMore => return Some(Step::NeedMore),
            Json::Invalid => None,
            Json::Complete(len, value) => call_from_json(value, false).map(|call| (len, call)),
        };
        match found {
            Some((len, call)) => {
                calls.push(call);
                end = at + len;
            }
            None if calls.is_empty() => return None,
            None => return Some(Step::Calls(end, calls)),
        }
    }
}
