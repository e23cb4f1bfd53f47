//! Tool (function) calls in generated text.
//!
//! Owns `ToolCallFormat` and the parsers that split a model's output into content and tool
//! calls, in the syntax each model family was trained to emit: Hermes / Qwen
//! (`<tool_call>{…}</tool_call>`), Llama 3.x JSON (`{"name": …, "parameters": {…}}`, perhaps
//! after `<|python_tag|>`) and Mistral (`[TOOL_CALLS]` then a JSON array, or `name[ARGS]{…}`).
//! Works on decoded text alone: it depends on serde_json and std only, never on a tokenizer,
//! the engine or tensors. It neither makes call ids nor checks names against the request's
//! tools; the API does both. The markers must be in the text it is given, so special tokens
//! such as `[TOOL_CALLS]` have to be decoded, not skipped.
//!
//! Invariant: the result never depends on how the output was split into deltas. For any
//! split, what `ToolCallStreamParser` emits (content concatenated, calls reassembled) equals
//! `parse_tool_calls` on the whole text, which is itself that parser fed the text in one piece.
//! Nothing is lost: text leaves the content only if it belongs to a recognised call (its
//! markers and JSON) or is whitespace touching one; an output without a recognised call is
//! content, unchanged. Malformed calls are content, never errors or panics.

mod hermes;
mod llama3;
mod mistral;
#[cfg(test)]
mod tests;

use serde_json::Value;

/// A model family's tool-call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCallFormat {
    /// Hermes 2 Pro / 3, Qwen 2.5 / 3: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`,
    /// one block per call.
    Hermes,
    /// Llama 3.1 to 3.3: the output is a JSON object `{"name": …, "parameters": {…}}`, perhaps
    /// after `<|python_tag|>`; several are joined by `;`.
    Llama3Json,
    /// Mistral: `[TOOL_CALLS]` then a JSON array of calls (v3 tokenizers, Nemo), or
    /// `[TOOL_CALLS]name[ARGS]{…}` (newer tokenizers), repeated for parallel calls.
    Mistral,
}

impl ToolCallFormat {
    /// Picks the family from a chat template's source text (e.g. contains `<tool_call>` →
    /// Hermes, `[TOOL_CALLS]` → Mistral, `<|python_tag|>` or (`ipython` and `parameters`) →
    /// Llama3Json); None if it shows no tool-call syntax.
    pub fn detect(chat_template_source: &str) -> Option<Self> {
        let src = chat_template_source;
        if src.contains(hermes::START) {
            return Some(Self::Hermes);
        }
        if src.contains(mistral::START) {
            return Some(Self::Mistral);
        }
        // Functionary v3.1 is Llama 3.1 with `ipython` and `<|python_tag|>`, but it calls
        // functions as `<function=name>{…}</function>`: read as Llama JSON, every call would
        // be lost in the content.
        if src.contains("<function=") {
            return None;
        }
        if src.contains(llama3::PYTHON_TAG)
            || (src.contains("ipython") && src.contains("parameters"))
        {
            return Some(Self::Llama3Json);
        }
        None
    }

    /// "hermes", "llama3_json", "mistral" (for config files).
    pub fn parse_name(s: &str) -> Option<Self> {
        match s {
            "hermes" => Some(Self::Hermes),
            "llama3_json" => Some(Self::Llama3Json),
            "mistral" => Some(Self::Mistral),
            _ => None,
        }
    }
}

/// One tool call, as the API sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedToolCall {
    pub name: String,
    /// the arguments as a JSON text (compact serialization of the object) as OpenAI sends them
    pub arguments: String,
}

/// A whole output, split into content and calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    pub content: String,
    pub tool_calls: Vec<ParsedToolCall>,
}

/// Non-streaming: whole output text → content + calls. Text that looks like a call but does
/// not parse as JSON stays in content (never lost, never an error).
pub fn parse_tool_calls(format: ToolCallFormat, text: &str) -> ParsedOutput {
    // One code path for both modes is what makes streaming agree with this.
    let mut parser = ToolCallStreamParser::new(format);
    let mut deltas = parser.push(text);
    deltas.extend(parser.finish());
    assemble(deltas)
}

/// What a streamed output amounts to: content concatenated, each call's pieces joined.
fn assemble(deltas: impl IntoIterator<Item = ToolCallDelta>) -> ParsedOutput {
    let mut out = ParsedOutput {
        content: String::new(),
        tool_calls: Vec::new(),
    };
    for delta in deltas {
        match delta {
            ToolCallDelta::Content(text) => out.content.push_str(&text),
            ToolCallDelta::Start { name, .. } => out.tool_calls.push(ParsedToolCall {
                name,
                arguments: String::new(),
            }),
            ToolCallDelta::Arguments { index, text } => {
                if let Some(call) = out.tool_calls.get_mut(index) {
                    call.arguments.push_str(&text);
                }
            }
        }
    }
    out
}

/// One piece of streamed output, in the shape of OpenAI's streaming deltas.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCallDelta {
    Content(String),
    /// First chunk of call number `index` (0-based among this output's calls): its name;
    /// arguments start empty.
    Start {
        index: usize,
        name: String,
    },
    /// More argument text of call `index`.
    Arguments {
        index: usize,
        text: String,
    },
}

/// Streaming: fed text deltas as they are generated; emits content deltas and tool-call
/// deltas in OpenAI's streaming shape.
///
/// Content is emitted as soon as it cannot be part of a call; what is held back is a tail
/// that may start a marker, a call whose JSON is not complete yet, and trailing whitespace
/// (dropped if a call comes next). Each call is emitted whole, once its JSON is complete, as
/// a `Start` and one `Arguments`.
#[derive(Debug, Clone)]
pub struct ToolCallStreamParser {
    scanner: Scanner,
    /// The scan of a JSON value still open at the end of `pending`.
    open_json: Option<JsonScan>,
    /// Text received and not yet consumed by the scanner.
    pending: String,
    /// Trailing whitespace of the content so far, held back: it is dropped if a call follows.
    held_space: String,
    /// The last thing consumed was a call, so whitespace is dropped until content resumes.
    after_call: bool,
    calls: usize,
    finished: bool,
}

impl ToolCallStreamParser {
    pub fn new(format: ToolCallFormat) -> Self {
        let scanner = match format {
            ToolCallFormat::Hermes => Scanner::Hermes,
            ToolCallFormat::Llama3Json => Scanner::Llama3(llama3::State::Start),
            ToolCallFormat::Mistral => Scanner::Mistral,
        };
        Self {
            scanner,
            open_json: None,
            pending: String::new(),
            held_space: String::new(),
            after_call: false,
            calls: 0,
            finished: false,
        }
    }

    /// Takes the next piece of generated text. After `finish`, pieces are ignored.
    pub fn push(&mut self, delta: &str) -> Vec<ToolCallDelta> {
        if self.finished {
            return Vec::new();
        }
        self.pending.push_str(delta);
        self.advance(false)
    }

    /// End of generation: flushes anything held back (e.g. a partial "<tool_c" that never
    /// became a tag is content; an unterminated call whose JSON is complete is still a call).
    pub fn finish(&mut self) -> Vec<ToolCallDelta> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let mut out = self.advance(true);
        let space = std::mem::take(&mut self.held_space);
        push_content(&mut out, &space);
        out
    }

    /// True once at least one call was emitted (the API sets finish_reason "tool_calls").
    pub fn saw_tool_call(&self) -> bool {
        self.calls > 0
    }

    fn advance(&mut self, eof: bool) -> Vec<ToolCallDelta> {
        let pending = std::mem::take(&mut self.pending);
        let mut rest = pending.as_str();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (len, calls) = match self.scanner.step(rest, eof, &mut self.open_json) {
                Step::NeedMore if !eof => break,
                Step::NeedMore => (0, None),
                Step::Content(len) => (len, None),
                Step::Calls(len, calls) => (len, Some(calls)),
            };
            // The scanners always consume a non-empty, char-aligned prefix (and never wait at
            // the end); if one ever did not, the rest becomes content rather than a panic, a
            // hang or lost text.
            let consumed = match rest.get(..len) {
                Some(consumed) if len > 0 => consumed,
                _ => {
                    debug_assert!(false, "scanner took {len} of {:?}", rest);
                    self.scanner = Scanner::Spent;
                    rest
                }
            };
            self.open_json = None;
            match calls {
                None => self.content(consumed, &mut out),
                Some(calls) => self.emit_calls(calls, &mut out),
            }
            rest = &rest[consumed.len()..];
        }
        self.pending = rest.to_string();
        out
    }

    fn content(&mut self, text: &str, out: &mut Vec<ToolCallDelta>) {
        let text = if self.after_call {
            text.trim_start()
        } else {
            text
        };
        if text.is_empty() {
            return;
        }
        self.after_call = false;
        let body = text.trim_end();
        if !body.is_empty() {
            let space = std::mem::take(&mut self.held_space);
            push_content(out, &space);
            push_content(out, body);
        }
        self.held_space.push_str(&text[body.len()..]);
    }

    fn emit_calls(&mut self, calls: Vec<ParsedToolCall>, out: &mut Vec<ToolCallDelta>) {
        self.held_space.clear();
        self.after_call = true;
        for call in calls {
            let index = self.calls;
            self.calls += 1;
            out.push(ToolCallDelta::Start {
                index,
                name: call.name,
            });
            out.push(ToolCallDelta::Arguments {
                index,
                text: call.arguments,
            });
        }
    }
}

/// Appends content, merged into the previous delta where that is content too.
fn push_content(out: &mut Vec<ToolCallDelta>, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(ToolCallDelta::Content(last)) => last.push_str(text),
        _ => out.push(ToolCallDelta::Content(text.to_string())),
    }
}

/// A family's reading of the unconsumed text. Scanner state changes only when a step
/// consumes text, so each decision rests on text already seen and no later piece can
/// overturn it: this is what keeps streaming equal to parsing the whole.
#[derive(Debug, Clone)]
enum Scanner {
    Hermes,
    Llama3(llama3::State),
    Mistral,
    /// After a scanner fault: everything is content.
    Spent,
}

impl Scanner {
    fn step(&mut self, text: &str, eof: bool, open_json: &mut Option<JsonScan>) -> Step {
        let mut input = Input {
            text,
            eof,
            open_json,
        };
        match self {
            Scanner::Hermes => hermes::step(&mut input),
            Scanner::Llama3(state) => llama3::step(state, &mut input),
            Scanner::Mistral => mistral::step(&mut input),
            Scanner::Spent => Step::Content(text.len()),
        }
    }
}

/// What the front of the unconsumed text is.
#[derive(Debug)]
enum Step {
    /// Undecided until more text arrives; never the answer at the end of generation.
    NeedMore,
    /// The first `n` bytes are content.
    Content(usize),
    /// The first `n` bytes are these calls, with their markers and the whitespace between.
    Calls(usize, Vec<ParsedToolCall>),
}

/// Content up to the next `marker` (which `text` does not start with), keeping back a tail
/// that may turn out to be the marker's beginning.
fn content_before(marker: &str, text: &str, eof: bool) -> Step {
    let end = match text.find(marker) {
        Some(at) => at,
        None if eof => text.len(),
        None => text.len() - partial_tail(text, marker),
    };
    if end == 0 {
        Step::NeedMore
    } else {
        Step::Content(end)
    }
}

/// The length of the longest end of `text` that is a proper beginning of `marker`. Markers
/// are ASCII, so the cut is always at a char boundary.
fn partial_tail(text: &str, marker: &str) -> usize {
    (1..marker.len())
        .rev()
        .find(|&len| marker.get(..len).is_some_and(|head| text.ends_with(head)))
        .unwrap_or(0)
}

/// `text` is shorter than `tag` and may still grow into it (the empty text included).
fn is_partial(text: &str, tag: &str) -> bool {
    text.len() < tag.len() && tag.starts_with(text)
}

/// The length of the JSON whitespace `text` starts with.
fn json_space(text: &str) -> usize {
    text.len() - text.trim_start_matches([' ', '\t', '\n', '\r']).len()
}

/// What `Input::json_at` found.
enum Json {
    /// Its length and value.
    Complete(usize, Value),
    NeedMore,
    /// Not JSON, or not an object or array.
    Invalid,
}

/// The unconsumed text as a scanner sees it in one step: the text, whether generation has
/// ended, and where the last step left off in a JSON value still open at its end.
struct Input<'a> {
    text: &'a str,
    eof: bool,
    open_json: &'a mut Option<JsonScan>,
}

/// How far the scan of an unfinished JSON value got, so that the next piece resumes it
/// instead of starting over: otherwise a long call would cost time quadratic in its length.
/// Valid until text is consumed, as the text from `start` then only grows at the end.
#[derive(Debug, Clone, Copy)]
struct JsonScan {
    start: usize,
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Input<'_> {
    /// Reads the JSON object or array at byte `start`. Its end is found by bracket depth
    /// outside strings; a byte no JSON text could have outside a string (such as the `<` of
    /// a closing tag after a missing brace) rules it out early instead of holding the stream
    /// to the end of generation. serde_json then checks the found text.
    fn json_at(&mut self, start: usize) -> Json {
        let Some(value_text) = self.text.get(start..) else {
            return Json::Invalid;
        };
        let bytes = value_text.as_bytes();
        let mut scan = match *self.open_json {
            Some(scan) if scan.start == start => scan,
            _ => JsonScan {
                start,
                scanned: 0,
                depth: 0,
                in_string: false,
                escaped: false,
            },
        };
        if scan.scanned == 0 && !matches!(bytes.first(), None | Some(b'{' | b'[')) {
            return Json::Invalid;
        }
        for (i, &byte) in bytes.iter().enumerate().skip(scan.scanned) {
            if scan.in_string {
                // UTF-8 continuation bytes are never `"` or `\`, so bytes are safe to walk.
                if scan.escaped {
                    scan.escaped = false;
                } else if byte == b'\\' {
                    scan.escaped = true;
                } else if byte == b'"' {
                    scan.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => scan.in_string = true,
                b'{' | b'[' => scan.depth += 1,
                b'}' | b']' => {
                    // Unreachable (the scan ends when depth returns to 0), but a closer too
                    // many must not wrap.
                    let Some(depth) = scan.depth.checked_sub(1) else {
                        return Json::Invalid;
                    };
                    scan.depth = depth;
                    if depth == 0 {
                        let end = i + 1;
                        return match value_text.get(..end).map(serde_json::from_str::<Value>) {
                            Some(Ok(value)) => Json::Complete(end, value),
                            _ => Json::Invalid,
                        };
                    }
                }
                b' ' | b'\t' | b'\n' | b'\r' | b':' | b',' | b'-' | b'+' | b'.' | b'0'..=b'9' => {}
                // The letters of true, false, null and exponents.
                b'a' | b'e' | b'E' | b'f' | b'l' | b'n' | b'r' | b's' | b't' | b'u' => {}
                _ => return Json::Invalid,
            }
        }
        if self.eof {
            return Json::Invalid;
        }
        scan.scanned = bytes.len();
        *self.open_json = Some(scan);
        Json::NeedMore
    }
}

/// Reads a call from `{"name": …, "arguments": {…}}`, where "parameters" may stand for
/// "arguments". Without `arguments_required`, a call without either takes `{}`.
fn call_from_json(value: Value, arguments_required: bool) -> Option<ParsedToolCall> {
    let Value::Object(mut object) = value else {
        return None;
    };
    // Some models echo OpenAI's own shape: {"type": "function", "function": {…}}.
    if !object.contains_key("name") {
        if let Some(inner @ Value::Object(_)) = object.remove("function") {
            return call_from_json(inner, arguments_required);
        }
    }
    let name = match object.remove("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        _ => return None,
    };
    let arguments = match object
        .remove("arguments")
        .or_else(|| object.remove("parameters"))
    {
        Some(arguments) => arguments_json(arguments)?,
        None if arguments_required => return None,
        None => "{}".to_string(),
    };
    Some(ParsedToolCall { name, arguments })
}

/// The arguments as OpenAI sends them: the compact JSON text of an object. Some models send
/// that text as a JSON string instead of the object; `null` means no arguments.
fn arguments_json(arguments: Value) -> Option<String> {
    let object = match arguments {
        Value::Object(_) => arguments,
        Value::Null => Value::Object(serde_json::Map::new()),
        Value::String(text) => match serde_json::from_str::<Value>(&text).ok()? {
            object @ Value::Object(_) => object,
            _ => return None,
        },
        _ => return None,
    };
    serde_json::to_string(&object).ok()
}
