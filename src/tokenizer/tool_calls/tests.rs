use super::*;
use ToolCallFormat::{Hermes, Llama3Json, Mistral};

fn call(name: &str, arguments: &str) -> ParsedToolCall {
    ParsedToolCall {
        name: name.to_string(),
        arguments: arguments.to_string(),
    }
}

fn output(content: &str, tool_calls: Vec<ParsedToolCall>) -> ParsedOutput {
    ParsedOutput {
        content: content.to_string(),
        tool_calls,
    }
}

/// Streams `pieces` and reassembles the result, checking the deltas' shape on the way: calls
/// are numbered in order, each `Start` before its arguments, and content deltas are never
/// empty.
fn stream(format: ToolCallFormat, pieces: &[&str]) -> ParsedOutput {
    let mut parser = ToolCallStreamParser::new(format);
    let mut deltas = Vec::new();
    for piece in pieces {
        deltas.extend(parser.push(piece));
    }
    deltas.extend(parser.finish());
    let mut started = 0;
    for delta in &deltas {
        match delta {
            ToolCallDelta::Content(text) => assert!(!text.is_empty(), "empty content delta"),
            ToolCallDelta::Start { index, .. } => {
                assert_eq!(*index, started, "calls numbered in order");
                started += 1;
            }
            ToolCallDelta::Arguments { index, .. } => assert!(*index < started),
        }
    }
    assert_eq!(parser.saw_tool_call(), started > 0);
    assemble(deltas)
}

/// Small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn char_boundaries(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

/// Splits `text` at the given byte offsets (sorted, at char boundaries).
fn split_at<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        pieces.push(&text[start..cut]);
        start = cut;
    }
    pieces.push(&text[start..]);
    pieces
}

fn random_cuts(text: &str, rng: &mut Rng) -> Vec<usize> {
    let bounds = char_boundaries(text);
    let count = rng.below(8) + 1;
    let mut cuts: Vec<usize> = (0..count)
        .map(|_| bounds[rng.below(bounds.len())])
        .collect();
    cuts.sort_unstable();
    cuts
}

/// The key property: however the text is cut into deltas, streaming gives what
/// `parse_tool_calls` gives for the whole text. Tries every single cut, one char at a time,
/// and random cuts.
fn assert_split_invariant(format: ToolCallFormat, text: &str) {
    let whole = parse_tool_calls(format, text);
    for cut in char_boundaries(text) {
        let pieces = split_at(text, &[cut]);
        assert_eq!(stream(format, &pieces), whole, "{format:?} {pieces:?}");
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(
        stream(format, &chars),
        whole,
        "{format:?} char by char: {text:?}"
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ text.len() as u64);
    for _ in 0..200 {
        let pieces = split_at(text, &random_cuts(text, &mut rng));
        assert_eq!(stream(format, &pieces), whole, "{format:?} {pieces:?}");
    }
}

/// Parses `text` whole, checks the result, and checks streaming agrees for every split.
fn check(format: ToolCallFormat, text: &str, expected: ParsedOutput) {
    assert_eq!(
        parse_tool_calls(format, text),
        expected,
        "{format:?} {text:?}"
    );
    assert_split_invariant(format, text);
}

fn plain(format: ToolCallFormat, text: &str) {
    check(format, text, output(text, vec![]));
}

// ---- Hermes ----

#[test]
fn hermes_without_calls_is_content_unchanged() {
    plain(Hermes, "The answer is 42.\n");
    plain(Hermes, "a < b and {\"json\": true} but no tag <tool_c");
    plain(Hermes, "ends with the closing tag only </tool_call>");
    plain(Hermes, "");
}

#[test]
fn hermes_single_call_as_qwen_renders_it() {
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \"unit\": \"celsius\"}}\n</tool_call>",
        output(
            "",
            vec![call(
                "get_current_temperature",
                r#"{"location":"San Francisco, CA, USA","unit":"celsius"}"#,
            )],
        ),
    );
}

#[test]
fn hermes_parallel_calls_with_text_before() {
    check(
        Hermes,
        "Let me check both.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>\n",
        output(
            "Let me check both.",
            vec![call("a", r#"{"x":1}"#), call("b", "{}")],
        ),
    );
}

#[test]
fn hermes_text_after_calls_is_content() {
    check(
        Hermes,
        "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n\nWaiting for the result.",
        output("Waiting for the result.", vec![call("a", "{}")]),
    );
}

#[test]
fn hermes_nested_json_with_braces_and_escaped_quotes_in_strings() {
    check(
        Hermes,
        r#"<tool_call>
{"name": "run", "arguments": {"code": "fn main() { println!(\"}}{{\\\"\"); }", "opts": {"deep": [{"a": {"b": null}}], "s": "</tool_call>"}}}
</tool_call>"#,
        output(
            "",
            vec![call(
                "run",
                r#"{"code":"fn main() { println!(\"}}{{\\\"\"); }","opts":{"deep":[{"a":{"b":null}}],"s":"</tool_call>"}}"#,
            )],
        ),
    );
}

#[test]
fn hermes_unicode_in_text_and_arguments() {
    check(
        Hermes,
        "Voilà — 天気を調べます 🌦\n<tool_call>\n{\"name\": \"météo\", \"arguments\": {\"ville\": \"Zürich\", \"emoji\": \"🌦\", \"esc\": \"\\u00e9\"}}\n</tool_call>",
        output(
            "Voilà — 天気を調べます 🌦",
            vec![call("météo", r#"{"ville":"Zürich","emoji":"🌦","esc":"é"}"#)],
        ),
    );
}

#[test]
fn hermes_missing_closing_tag_at_the_end_still_calls() {
    let expected = || output("", vec![call("f", r#"{"a":1}"#)]);
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
        expected(),
    );
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n",
        expected(),
    );
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_",
        expected(),
    );
}

#[test]
fn hermes_missing_closing_tag_before_the_next_block() {
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>",
        output("", vec![call("a", "{}"), call("b", "{}")]),
    );
}

#[test]
fn hermes_accepts_parameters_string_arguments_and_several_objects_per_block() {
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"a\", \"parameters\": {\"k\": [1, 2.5, true]}}\n</tool_call>",
        output("", vec![call("a", r#"{"k":[1,2.5,true]}"#)]),
    );
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"a\", \"arguments\": \"{\\\"k\\\": 1}\"}\n</tool_call>",
        output("", vec![call("a", r#"{"k":1}"#)]),
    );
    check(
        Hermes,
        "<tool_call>\n{\"name\": \"a\"}\n{\"name\": \"b\", \"arguments\": {\"z\": 0, \"a\": 1}}\n</tool_call>",
        output("", vec![call("a", "{}"), call("b", r#"{"z":0,"a":1}"#)]),
    );
}

#[test]
fn hermes_invalid_json_stays_content() {
    plain(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}\n</tool_call>",
    );
    plain(
        Hermes,
        "<tool_call>\n{'name': 'f', 'arguments': {}}\n</tool_call>",
    );
    plain(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": tru}}\n</tool_call>",
    );
    plain(Hermes, "<tool_call>\n{\"arguments\": {}}\n</tool_call>");
    plain(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": [1]}\n</tool_call>",
    );
    plain(
        Hermes,
        "<tool_call>\n<function=f>{}</function>\n</tool_call>",
    );
    plain(Hermes, "Text then <tool_call>\n{\"name\": \"f\", \"argu");
    plain(
        Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"s\": \"unterminated}}\n</tool_call>",
    );
}

#[test]
fn hermes_invalid_block_does_not_hide_a_later_call() {
    check(
        Hermes,
        "<tool_call>\n{oops}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
        output("<tool_call>\n{oops}\n</tool_call>", vec![call("f", "{}")]),
    );
}

#[test]
fn hermes_openai_shaped_call_is_read() {
    check(
        Hermes,
        "<tool_call>\n{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"q\": \"x\"}}}\n</tool_call>",
        output("", vec![call("f", r#"{"q":"x"}"#)]),
    );
}

#[test]
fn qwen3_thinking_stays_content() {
    check(
        Hermes,
        "<think>\nI need the weather.\n</think>\n\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": \"Oslo\"}}\n</tool_call>",
        output(
            "<think>\nI need the weather.\n</think>",
            vec![call("w", r#"{"c":"Oslo"}"#)],
        ),
    );
}

// ---- Llama 3 JSON ----

#[test]
fn llama3_without_calls_is_content_unchanged() {
    plain(
        Llama3Json,
        "The capital of France is Paris. {not: json}; {\"name\": \"x\", \"parameters\": {}}",
    );
    plain(Llama3Json, "  \nHello");
    plain(Llama3Json, "");
    plain(Llama3Json, "<|python");
    plain(Llama3Json, "<|eot_id|>");
}

#[test]
fn llama3_json_content_that_is_not_a_call_stays_content() {
    plain(Llama3Json, "{\"name\": \"Ada Lovelace\", \"born\": 1815}");
    plain(Llama3Json, "[{\"name\": \"f\", \"parameters\": {}}]");
    plain(Llama3Json, "{\"answer\": 42}\nDone.");
}

#[test]
fn llama3_single_call_as_the_template_renders_it() {
    check(
        Llama3Json,
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 3}}",
        output(
            "",
            vec![call("get_weather", r#"{"city":"Paris","days":3}"#)],
        ),
    );
    check(
        Llama3Json,
        "\n\n{\"name\": \"f\", \"arguments\": {}}\n",
        output("", vec![call("f", "{}")]),
    );
}

#[test]
fn llama3_call_after_python_tag() {
    check(
        Llama3Json,
        "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        output("", vec![call("get_weather", r#"{"city":"Paris"}"#)]),
    );
}

#[test]
fn llama3_parallel_calls_joined_by_semicolons() {
    check(
        Llama3Json,
        "{\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"parameters\": {\"y\": \"z\"}}",
        output("", vec![call("a", r#"{"x":1}"#), call("b", r#"{"y":"z"}"#)]),
    );
    check(
        Llama3Json,
        "<|python_tag|>{\"name\": \"a\", \"parameters\": {}};<|python_tag|>{\"name\": \"b\", \"parameters\": {}}\n{\"name\": \"c\", \"parameters\": {}}",
        output("", vec![call("a", "{}"), call("b", "{}"), call("c", "{}")]),
    );
}

#[test]
fn llama3_text_before_a_call_makes_it_all_content() {
    plain(
        Llama3Json,
        "Sure, calling it: {\"name\": \"f\", \"parameters\": {}}",
    );
}

#[test]
fn llama3_text_after_a_call_is_content() {
    check(
        Llama3Json,
        "{\"name\": \"f\", \"parameters\": {}}; and then some words {\"name\": \"g\", \"parameters\": {}}",
        output(
            "; and then some words {\"name\": \"g\", \"parameters\": {}}",
            vec![call("f", "{}")],
        ),
    );
}

#[test]
fn llama3_nested_json_escapes_and_unicode() {
    check(
        Llama3Json,
        r#"{"name": "sql", "parameters": {"query": "SELECT '{\"a\"}' FROM t WHERE x = \"}\"", "meta": {"tags": ["日本", "é"], "n": -1.5e3}}}"#,
        output(
            "",
            vec![call(
                "sql",
                r#"{"query":"SELECT '{\"a\"}' FROM t WHERE x = \"}\"","meta":{"tags":["日本","é"],"n":-1500.0}}"#,
            )],
        ),
    );
}

#[test]
fn llama3_invalid_json_stays_content() {
    plain(Llama3Json, "{\"name\": \"f\", \"parameters\": {\"a\": 1}");
    plain(
        Llama3Json,
        "<|python_tag|>brave_search.call(query=\"weather\")",
    );
    plain(Llama3Json, "{\"name\": \"f\", \"parameters\": {\"a\": 01}}");
    check(
        Llama3Json,
        "{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"parameters\": {",
        output(
            "; {\"name\": \"g\", \"parameters\": {",
            vec![call("f", "{}")],
        ),
    );
}

// ---- Mistral ----

#[test]
fn mistral_without_calls_is_content_unchanged() {
    plain(Mistral, "Paris is the capital. [1] [TOOL");
    plain(Mistral, "");
}

#[test]
fn mistral_array_form_as_nemo_renders_it() {
    check(
        Mistral,
        "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abc123xyz\"}]",
        output("", vec![call("get_weather", r#"{"city":"Paris"}"#)]),
    );
}

#[test]
fn mistral_array_form_parallel_with_text_before() {
    check(
        Mistral,
        "I'll look both up. [TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": \"}\"}]}}, {\"name\": \"b\", \"arguments\": {}}]",
        output(
            "I'll look both up.",
            vec![call("a", r#"{"x":[1,{"y":"}"}]}"#), call("b", "{}")],
        ),
    );
}

#[test]
fn mistral_named_form_single_and_repeated() {
    check(
        Mistral,
        "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Zürich\", \"q\": \"say \\\"hi\\\"\"}",
        output(
            "",
            vec![call("get_weather", r#"{"city":"Zürich","q":"say \"hi\""}"#)],
        ),
    );
    check(
        Mistral,
        "Checking.[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b.c-d_e[ARGS] {\"n\": {\"m\": []}}",
        output(
            "Checking.",
            vec![call("a", "{}"), call("b.c-d_e", r#"{"n":{"m":[]}}"#)],
        ),
    );
}

#[test]
fn mistral_named_form_with_call_id() {
    check(
        Mistral,
        "[TOOL_CALLS]f[CALL_ID]a1B2c3D4e[ARGS]{\"k\": 1}",
        output("", vec![call("f", r#"{"k":1}"#)]),
    );
}

#[test]
fn mistral_invalid_calls_stay_content() {
    plain(Mistral, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}]");
    plain(
        Mistral,
        "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}, {\"oops\": 1}]",
    );
    plain(Mistral, "[TOOL_CALLS][]");
    plain(Mistral, "[TOOL_CALLS]");
    plain(Mistral, "[TOOL_CALLS] get weather[ARGS]{}");
    plain(Mistral, "[TOOL_CALLS]f[ARGS][1]");
    plain(Mistral, "[TOOL_CALLS]f[ARGS]{\"a\": ");
    plain(Mistral, "[TOOL_CALLS]f[ARG");
    check(
        Mistral,
        "[TOOL_CALLS]f[ARGS]{bad}[TOOL_CALLS]g[ARGS]{}",
        output("[TOOL_CALLS]f[ARGS]{bad}", vec![call("g", "{}")]),
    );
}

// ---- Streaming ----

#[test]
fn content_is_emitted_at_once_and_only_a_possible_marker_is_held() {
    let mut parser = ToolCallStreamParser::new(Hermes);
    assert_eq!(
        parser.push("Hello"),
        vec![ToolCallDelta::Content("Hello".into())]
    );
    assert_eq!(
        parser.push(", wor"),
        vec![ToolCallDelta::Content(", wor".into())]
    );
    assert_eq!(
        parser.push("ld <tool"),
        vec![ToolCallDelta::Content("ld".into())]
    );
    assert_eq!(
        parser.push("s>"),
        vec![ToolCallDelta::Content(" <tools>".into())]
    );
    assert_eq!(parser.push(" <tool_c"), vec![]);
    assert_eq!(
        parser.finish(),
        vec![ToolCallDelta::Content(" <tool_c".into())]
    );
    assert!(!parser.saw_tool_call());
    assert_eq!(parser.push("more"), vec![], "nothing after finish");
    assert_eq!(parser.finish(), vec![]);
}

#[test]
fn a_call_streams_as_start_then_arguments() {
    let mut parser = ToolCallStreamParser::new(Hermes);
    assert_eq!(
        parser.push("Sure.\n<tool_"),
        vec![ToolCallDelta::Content("Sure.".into())]
    );
    assert_eq!(parser.push("call>\n{\"name\": \"f\", "), vec![]);
    assert_eq!(parser.push("\"arguments\": {\"a\": 1}}"), vec![]);
    assert!(!parser.saw_tool_call());
    assert_eq!(
        parser.push("\n</tool_call>\n"),
        vec![
            ToolCallDelta::Start {
                index: 0,
                name: "f".into()
            },
            ToolCallDelta::Arguments {
                index: 0,
                text: r#"{"a":1}"#.into()
            },
        ]
    );
    assert!(parser.saw_tool_call());
    let second = parser.push("<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>");
    assert_eq!(
        second,
        vec![
            ToolCallDelta::Start {
                index: 1,
                name: "g".into()
            },
            ToolCallDelta::Arguments {
                index: 1,
                text: "{}".into()
            },
        ]
    );
    assert_eq!(parser.finish(), vec![]);
}

#[test]
fn an_unterminated_call_is_emitted_at_finish() {
    let mut parser = ToolCallStreamParser::new(Hermes);
    assert_eq!(
        parser.push("<tool_call>{\"name\": \"f\", \"arguments\": {}}\n"),
        vec![]
    );
    assert_eq!(
        parser.finish(),
        vec![
            ToolCallDelta::Start {
                index: 0,
                name: "f".into()
            },
            ToolCallDelta::Arguments {
                index: 0,
                text: "{}".into()
            },
        ]
    );
}

#[test]
fn llama3_plain_text_streams_at_once() {
    let mut parser = ToolCallStreamParser::new(Llama3Json);
    assert_eq!(parser.push("  "), vec![]);
    assert_eq!(
        parser.push("Hi"),
        vec![ToolCallDelta::Content("  Hi".into())]
    );
    assert_eq!(
        parser.push(" {\"name\""),
        vec![ToolCallDelta::Content(" {\"name\"".into())]
    );
}

#[test]
fn realistic_outputs_survive_every_split() {
    let samples: [(ToolCallFormat, &str); 6] = [
        (Hermes, "Let me look.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"rust \\\"serde\\\" {x}\", \"n\": 5}}\n</tool_call>\n<tool_call>\n{\"name\": \"open\", \"arguments\": {\"url\": \"https://例え.jp/?a=1&b={2}\"}}\n</tool_call>"),
        (Hermes, "no calls here, but <tool_ and </tool_call> and { \" \\"),
        (Llama3Json, "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"s\": \"x;y}\"}}; {\"name\": \"b\", \"parameters\": {\"t\": [\"é\", 2]}}"),
        (Llama3Json, " {\"name\": \"f\", \"parameters\": {}} trailing words"),
        (Mistral, "Sure! [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": \"[TOOL_CALLS]\"}, \"id\": \"abc123xyz\"}, {\"name\": \"b\", \"arguments\": {}, \"id\": \"def456uvw\"}]"),
        (Mistral, "[TOOL_CALLS]f[ARGS]{\"x\": \"🦀\"}[TOOL_CALLS]g[CALL_ID]q1[ARGS]{}"),
    ];
    for (format, text) in samples {
        assert_split_invariant(format, text);
    }
}

#[test]
fn a_long_call_streamed_in_small_pieces() {
    let value: String = (0..2000)
        .map(|i| format!("{i}: {{\\\"x\\\"}} é\\n"))
        .collect();
    let text = format!("<tool_call>\n{{\"name\": \"write\", \"arguments\": {{\"text\": \"{value}\"}}}}\n</tool_call>");
    let whole = parse_tool_calls(Hermes, &text);
    assert_eq!(whole.tool_calls.len(), 1);
    let bounds = char_boundaries(&text);
    let cuts: Vec<usize> = bounds.iter().copied().step_by(3).skip(1).collect();
    assert_eq!(stream(Hermes, &split_at(&text, &cuts)), whole);
}

/// Random texts built from the pieces the parsers react to: whatever comes out, no panic,
/// streaming agrees with the whole, and with no call found the content is the text itself.
#[test]
fn random_texts_never_panic_and_survive_random_splits() {
    const PIECES: &[&str] = &[
        "<tool_call>",
        "</tool_call>",
        "<tool_",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "<|python_tag|>",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
        ":",
        ",",
        ";",
        " ",
        "\n",
        "\"name\"",
        "\"arguments\"",
        "\"parameters\"",
        "\"f\"",
        "{}",
        "1",
        "true",
        "é",
        "日本",
        "🦀",
        "abc",
        "{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
        "{\"name\": \"g\", \"parameters\": {}}",
        "[{\"name\": \"h\", \"arguments\": {}}]",
        "f",
        "<",
        "[TOOL",
        "{\"name\": \"k\", \"arguments\": {",
        "}}",
        "\"s\": \"",
        "\\\"",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..3000 {
        let count = rng.below(12) + 1;
        let text: String = (0..count)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect();
        for format in [Hermes, Llama3Json, Mistral] {
            let whole = parse_tool_calls(format, &text);
            if whole.tool_calls.is_empty() {
                assert_eq!(whole.content, text, "{format:?} round {round}");
            }
            for _ in 0..4 {
                let pieces = split_at(&text, &random_cuts(&text, &mut rng));
                assert_eq!(stream(format, &pieces), whole, "{format:?} {pieces:?}");
            }
        }
    }
}

// ---- Format detection ----

fn template(name: &str) -> String {
    let path = format!(
        "{}/{name}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/chat-templates")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn detects_the_family_from_real_chat_templates() {
    let cases = [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", Some(Hermes)),
        (
            "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
            Some(Hermes),
        ),
        (
            "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
            Some(Hermes),
        ),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", Some(Llama3Json)),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", Some(Llama3Json)),
        ("meta-llama-Llama-3.3-70B-Instruct.jinja", Some(Llama3Json)),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", Some(Mistral)),
        ("google-gemma-2-2b-it.jinja", None),
        ("microsoft-Phi-3.5-mini-instruct.jinja", None),
        ("meetkai-functionary-medium-v3.1.jinja", None),
        ("CohereForAI-c4ai-command-r-plus-tool_use.jinja", None),
    ];
    for (name, expected) in cases {
        assert_eq!(ToolCallFormat::detect(&template(name)), expected, "{name}");
    }
}

#[test]
fn parses_format_names() {
    assert_eq!(ToolCallFormat::parse_name("hermes"), Some(Hermes));
    assert_eq!(ToolCallFormat::parse_name("llama3_json"), Some(Llama3Json));
    assert_eq!(ToolCallFormat::parse_name("mistral"), Some(Mistral));
    assert_eq!(ToolCallFormat::parse_name("Hermes "), None);
    assert_eq!(ToolCallFormat::parse_name(""), None);
}
