//! How one chat choice's generated text becomes content and tool calls, by tool mode: plain
//! text; calls in the model family's own syntax (`auto`); or, under a forced `tool_choice`,
//! JSON that constrained decoding already shaped as the call (`named`: the arguments object;
//! `required`: an array of `{"name", "parameters"}`). Streaming and whole responses run the
//! same parser, so the two always agree.

use serde_json::Value;

use crate::tokenizer::tool_calls::{ToolCallDelta, ToolCallFormat, ToolCallStreamParser};

#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// No tools, or `tool_choice: "none"`.
    Off,
    Auto(ToolCallFormat),
    Named(String),
    Required,
}

pub struct OutputParser {
    mode: ToolMode,
    auto: Option<ToolCallStreamParser>,
    /// Forced modes hold the JSON until it is complete.
    buffer: String,
    num_calls: usize,
}

impl OutputParser {
    pub fn new(mode: ToolMode) -> Self {
        let auto = match &mode {
            ToolMode::Auto(format) => Some(ToolCallStreamParser::new(*format)),
            _ => None,
        };
        Self {
            mode,
            auto,
            buffer: String::new(),
            num_calls: 0,
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<ToolCallDelta> {
        match (&self.mode, &mut self.auto) {
            (ToolMode::Off, _) => plain(text),
            (ToolMode::Auto(_), Some(p)) => p.push(text),
            _ => {
                self.buffer.push_str(text);
                Vec::new()
            }
        }
    }

    pub fn finish(&mut self) -> Vec<ToolCallDelta> {
        let out = match (&self.mode, &mut self.auto) {
            (ToolMode::Off, _) => Vec::new(),
            (ToolMode::Auto(_), Some(p)) => p.finish(),
            (ToolMode::Named(name), _) => named_call(name, std::mem::take(&mut self.buffer)),
            _ => required_calls(std::mem::take(&mut self.buffer)),
        };
        self.num_calls += out
            .iter()
            .filter(|d| matches!(d, ToolCallDelta::Start { .. }))
            .count();
        out
    }

    /// True once any call was produced; the choice then finishes with `tool_calls`.
    pub fn saw_tool_call(&self) -> bool {
        self.num_calls > 0 || self.auto.as_ref().is_some_and(|p| p.saw_tool_call())
    }
}

fn plain(text: &str) -> Vec<ToolCallDelta> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![ToolCallDelta::Content(text.to_string())]
    }
}

/// The arguments object for a named function. Output cut short (by `max_tokens`) is still the
/// call the client forced, with the arguments as far as they got.
fn named_call(name: &str, text: String) -> Vec<ToolCallDelta> {
    let arguments = match serde_json::from_str::<Value>(&text) {
        Ok(v) => v.to_string(),
        Err(_) => text,
    };
    vec![
        ToolCallDelta::Start {
            index: 0,
            name: name.to_string(),
        },
        ToolCallDelta::Arguments {
            index: 0,
            text: arguments,
        },
    ]
}

/// `[{"name": .., "parameters": {..}}, ..]`; anything else stays content.
fn required_calls(text: String) -> Vec<ToolCallDelta> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) else {
        return plain(&text);
    };
    let mut out = Vec::new();
    for item in items {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            return plain(&text);
        };
        let args = item
            .get("parameters")
            .or_else(|| item.get("arguments"))
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        let index = out.len() / 2;
        out.push(ToolCallDelta::Start {
            index,
            name: name.to_string(),
        });
        out.push(ToolCallDelta::Arguments {
            index,
            text: args.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: ToolMode, pieces: &[&str]) -> (Vec<ToolCallDelta>, bool) {
        let mut p = OutputParser::new(mode);
        let mut out: Vec<_> = pieces.iter().flat_map(|t| p.push(t)).collect();
        out.extend(p.finish());
        (out, p.saw_tool_call())
    }

    #[test]
    fn named_choice_wraps_the_arguments_object() {
        let (out, saw) = run(
            ToolMode::Named("get_weather".into()),
            &["{\"city\": ", "\"Paris\"}"],
        );
        assert!(saw);
        assert_eq!(
            out,
            vec![
                ToolCallDelta::Start {
                    index: 0,
                    name: "get_weather".into()
                },
                ToolCallDelta::Arguments {
                    index: 0,
                    text: r#"{"city":"Paris"}"#.into()
                },
            ]
        );
    }

    #[test]
    fn required_choice_gives_every_call_in_the_array() {
        let (out, saw) = run(
            ToolMode::Required,
            &[r#"[{"name":"a","parameters":{"x":1}},{"name":"b","parameters":{}}]"#],
        );
        assert!(saw);
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[2],
            ToolCallDelta::Start {
                index: 1,
                name: "b".into()
            }
        );
    }

    #[test]
    fn required_output_that_is_not_calls_stays_content() {
        let (out, saw) = run(ToolMode::Required, &["[{\"nam"]);
        assert!(!saw);
        assert_eq!(out, vec![ToolCallDelta::Content("[{\"nam".into())]);
    }

    #[test]
    fn without_tools_text_passes_through() {
        let (out, saw) = run(ToolMode::Off, &["a", "", "b"]);
        assert!(!saw);
        assert_eq!(
            out,
            vec![
                ToolCallDelta::Content("a".into()),
                ToolCallDelta::Content("b".into())
            ]
        );
    }
}
