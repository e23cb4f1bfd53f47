//! The filters, tests and functions a Hugging Face chat template expects, with Jinja2's
//! behaviour where minijinja's own differ, and `install`, which puts them all into an
//! environment.
//!
//! Owns the registration of every non-default filter, test and global function. Depends on
//! minijinja, minijinja-contrib, chrono and `jinja_compat`; it must not depend on the
//! tokenizer or on how templates are loaded.
//!
//! Invariant: every name registered here behaves as the same name does in transformers'
//! Jinja2 environment (including how it fails, with Python's error text where a template
//! author could see it).

use std::borrow::Cow;
use std::fmt::Write as _;

use minijinja::value::{from_args, Kwargs, Rest, Value, ValueKind, ValueOrKwargs};
use minijinja::{filters, Environment, Error, ErrorKind, State};

use super::jinja_compat::{self, py_str, py_type_name, Generator};
use super::template_source::PY_ITERABLE_FILTER;

/// Registers transformers' additions and the Jinja2 versions of minijinja's look-alikes.
/// `raise_exception` and `strftime_now` are the caller's (they need per-render state).
pub(crate) fn install(env: &mut Environment<'static>) {
    env.set_unknown_method_callback(unknown_method);
    env.add_filter(
        "tojson",
        |value: &Value, args: Rest<Value>, kwargs: Kwargs| {
            jinja_compat::tojson(value, &args, kwargs)
        },
    );
    env.add_filter(
        "indent",
        |value: &Value, args: Rest<Value>, kwargs: Kwargs| indent(value, &args, kwargs),
    );
    env.add_filter("length", length);
    env.add_filter("count", length);
    env.add_filter("string", string);
    env.add_filter(PY_ITERABLE_FILTER, py_iterable);
    env.add_filter("map", map);
    env.add_filter("select", select);
    env.add_filter("reject", reject);
    env.add_filter("selectattr", selectattr);
    env.add_filter("rejectattr", rejectattr);
    env.add_filter("unique", unique);
    env.add_test("sequence", is_sequence);
}

/// Python's `str` methods: minijinja-contrib's pycompat, plus the few it lacks.
fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "rsplit" => {
                let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
                let maxsplit = maxsplit.and_then(|m| usize::try_from(m).ok());
                return Ok(Value::from(py_rsplit(s, sep, maxsplit)));
            }
            "removeprefix" => {
                let (prefix,): (&str,) = from_args(args)?;
                return Ok(Value::from(s.strip_prefix(prefix).unwrap_or(s)));
            }
            "removesuffix" => {
                let (suffix,): (&str,) = from_args(args)?;
                return Ok(Value::from(s.strip_suffix(suffix).unwrap_or(s)));
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Python's `str.rsplit(sep=None, maxsplit=-1)`.
fn py_rsplit(s: &str, sep: Option<&str>, maxsplit: Option<usize>) -> Vec<String> {
    if let Some(sep) = sep.filter(|sep| !sep.is_empty()) {
        let mut parts: Vec<String> = match maxsplit {
            Some(m) => s.rsplitn(m + 1, sep).map(str::to_string).collect(),
            None => s.rsplit(sep).map(str::to_string).collect(),
        };
        parts.reverse();
        return parts;
    }
    // Without a separator, runs of whitespace split and outer whitespace goes, except the
    // leading whitespace of a remainder left whole by `maxsplit`.
    let mut parts = Vec::new();
    let mut rest = s.trim_end();
    while !rest.is_empty() {
        if maxsplit.is_some_and(|m| parts.len() >= m) {
            parts.push(rest.to_string());
            break;
        }
        match rest.rfind(char::is_whitespace) {
            Some(i) => {
                let ws_len = rest[i..].chars().next().map_or(1, char::len_utf8);
                parts.push(rest[i + ws_len..].to_string());
                rest = rest[..i].trim_end();
            }
            None => {
                parts.push(rest.to_string());
                break;
            }
        }
    }
    parts.reverse();
    parts
}

fn generator(items: Vec<Value>) -> Value {
    Value::from_object(Generator(items))
}

fn map(state: &mut State, value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    filters::map(state, value, args).map(generator)
}

fn select(
    state: &mut State,
    value: Value,
    test: Option<Cow<'_, str>>,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    filters::select(state, value, test, args).map(generator)
}

fn reject(
    state: &mut State,
    value: Value,
    test: Option<Cow<'_, str>>,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    filters::reject(state, value, test, args).map(generator)
}

fn selectattr(
    state: &mut State,
    value: Value,
    attr: Cow<'_, str>,
    test: Option<Cow<'_, str>>,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    filters::selectattr(state, value, attr, test, args).map(generator)
}

fn rejectattr(
    state: &mut State,
    value: Value,
    attr: Cow<'_, str>,
    test: Option<Cow<'_, str>>,
    args: Rest<ValueOrKwargs>,
) -> Result<Value, Error> {
    filters::rejectattr(state, value, attr, test, args).map(generator)
}

fn unique(state: &State, value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let items = filters::unique(state, value, kwargs)?;
    Ok(generator(items.try_iter()?.collect()))
}

/// What a rewritten `for` loop iterates: the value itself, unless Python could not iterate it.
fn py_iterable(value: Value) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "TypeError: '{}' object is not iterable",
                py_type_name(&value)
            ),
        )),
        _ => Ok(value),
    }
}

/// Jinja2's `length`/`count` is Python's `len()`; Jinja2's undefined has length 0.
fn length(value: &Value) -> Result<usize, Error> {
    if value.is_undefined() {
        return Ok(0);
    }
    let len = if jinja_compat::is_generator(value) {
        None
    } else {
        value.len()
    };
    len.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "TypeError: object of type '{}' has no len()",
                py_type_name(value)
            ),
        )
    })
}

/// Jinja2's `string` filter is Python's `str()`.
fn string(value: &Value) -> Result<String, Error> {
    let mut out = String::new();
    py_str(value, &mut out)?;
    Ok(out)
}

/// Jinja2's `sequence` test: anything with a length and item access, strings and dicts
/// included (and, as in Jinja2, undefined).
fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::Undefined | ValueKind::String | ValueKind::Seq | ValueKind::Map
    )
}

/// Rewrites a minijinja operator error into the `TypeError` Python raises for the same
/// expression, so that a failure reads the same as under transformers.
pub(crate) fn python_error_text(detail: &str) -> Option<String> {
    if let Some(name) = detail
        .strip_prefix('`')
        .and_then(|d| d.strip_suffix("` is undefined"))
    {
        return Some(format!("UndefinedError: '{name}' is undefined"));
    }
    let rest = detail.strip_prefix("tried to use + operator on unsupported types ")?;
    let (lhs, rhs) = rest.split_once(" and ")?;
    let py = |kind: &str| {
        match kind {
            "string" => "str",
            "map" => "dict",
            "seq" => "list",
            "none" => "NoneType",
            "number" => "int",
            "bool" => "bool",
            other => other,
        }
        .to_string()
    };
    let (lhs, rhs) = (py(lhs), py(rhs.trim()));
    Some(match lhs.as_str() {
        "str" | "list" => format!("TypeError: can only concatenate {lhs} (not \"{rhs}\") to {lhs}"),
        _ => format!("TypeError: unsupported operand type(s) for +: '{lhs}' and '{rhs}'"),
    })
}

/// Jinja2's `indent(width=4, first=False, blank=False)`; `width` may also be a string.
pub(crate) fn indent(value: &Value, args: &[Value], kwargs: Kwargs) -> Result<String, Error> {
    let mut text = String::new();
    py_str(value, &mut text)?;
    let width = match args.first() {
        Some(v) => Some(v.clone()),
        None => kwargs.get::<Option<Value>>("width")?,
    };
    let prefix = match width {
        None => "    ".to_string(),
        Some(w) => match w.as_str() {
            Some(s) => s.to_string(),
            None => " ".repeat(w.as_i64().unwrap_or(4).max(0) as usize),
        },
    };
    let first = match args.get(1) {
        Some(v) => v.is_true(),
        None => kwargs.get::<Option<bool>>("first")?.unwrap_or(false),
    };
    let blank = match args.get(2) {
        Some(v) => v.is_true(),
        None => kwargs.get::<Option<bool>>("blank")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    // Jinja2 appends a newline before `splitlines()` so that a trailing newline survives.
    text.push('\n');
    let lines = py_splitlines(&text);
    let mut rv = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            rv.push('\n');
            if blank || !line.is_empty() {
                rv.push_str(&prefix);
            }
        }
        rv.push_str(line);
    }
    if first {
        rv.insert_str(0, &prefix);
    }
    Ok(rv)
}

/// Python's `str.splitlines()`: splits on every Unicode line boundary, drops the separators,
/// and yields no empty last item for a trailing separator.
fn py_splitlines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{b}'
                | '\u{c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !is_break {
            continue;
        }
        lines.push(&s[start..i]);
        start = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(j, '\n')) = chars.peek() {
                start = j + 1;
                chars.next();
            }
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// Python's `datetime.strftime`; an unknown directive is an error instead of a panic.
pub(crate) fn strftime(now: &chrono::NaiveDateTime, format: &str) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: unsupported format {format:?}"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", now.format_with_items(items.into_iter())).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot format the date with {format:?}"),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_matches_python() {
        assert_eq!(py_splitlines("a\nb\r\nc\n"), vec!["a", "b", "c"]);
        assert_eq!(py_splitlines("a\n\nb"), vec!["a", "", "b"]);
        assert!(py_splitlines("").is_empty());
    }

    #[test]
    fn rsplit_matches_python() {
        let v = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(py_rsplit("a-b-c", Some("-"), Some(1)), v(&["a-b", "c"]));
        assert_eq!(py_rsplit("a-b-c", Some("-"), None), v(&["a", "b", "c"]));
        assert_eq!(py_rsplit("  a b ", None, Some(1)), v(&["  a", "b"]));
        assert_eq!(py_rsplit("  a  b ", None, None), v(&["a", "b"]));
        assert!(py_rsplit("   ", None, None).is_empty());
    }

    #[test]
    fn concatenation_errors_read_like_python() {
        assert_eq!(
            python_error_text("tried to use + operator on unsupported types string and map")
                .as_deref(),
            Some("TypeError: can only concatenate str (not \"dict\") to str")
        );
    }
}
