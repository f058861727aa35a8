//! A minijinja environment that behaves like the jinja2 environment of
//! Hugging Face's `apply_chat_template`: `trim_blocks`, `lstrip_blocks`,
//! loop controls, Python string methods, `raise_exception`, and Python's
//! own printing and `json.dumps` for `{{ ... }}` and `tojson`.

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

use super::pyfmt::{json_dumps, py_str, py_string, JsonOptions};

pub(crate) const TEMPLATE_NAME: &str = "chat_template";

/// Carries the message of a template's `raise_exception(...)` through
/// minijinja's error, so it comes out as [`super::ChatTemplateError::Raised`].
#[derive(Debug)]
pub(crate) struct Raised(pub String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: Option<Value>) -> Result<Value, Error> {
    let message = message.map(|m| py_string(&m)).unwrap_or_default();
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, the signature transformers gives its override.
fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > NAMES.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let mut params: [Value; 4] = Default::default();
    for (slot, v) in params.iter_mut().zip(args.iter()) {
        *slot = v.clone();
    }
    for (i, name) in NAMES.iter().enumerate() {
        if kwargs.has(name) {
            if !params[i].is_undefined() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson got multiple values for argument '{name}'"),
                ));
            }
            params[i] = kwargs.get::<Value>(name)?;
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = params;
    let indent = match indent.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::Number => {
            let n = i64::try_from(indent.clone())?;
            Some(" ".repeat(n.clamp(0, 64) as usize))
        }
        ValueKind::String => Some(indent.as_str().unwrap_or_default().to_string()),
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: indent must be an int or a string, not {other}"),
            ))
        }
    };
    let (item_separator, key_separator) = match separators.kind() {
        ValueKind::Undefined | ValueKind::None => {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_string(), ": ".to_string())
        }
        _ => {
            let parts: Vec<Value> = separators.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_string(),
                    b.as_str().unwrap_or_default().to_string(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ))
                }
            }
        }
    };
    let opts = JsonOptions {
        ensure_ascii: ensure_ascii.is_true(),
        indent,
        item_separator,
        key_separator,
        sort_keys: sort_keys.is_true(),
    };
    Ok(Value::from(json_dumps(value, &opts)?))
}

/// jinja2's `trim`: `str(value).strip(chars)`.
fn trim(value: &Value, chars: Option<String>) -> String {
    let s = py_string(value);
    match chars {
        None => s.trim_matches(py_isspace).to_string(),
        Some(set) => s.trim_matches(|c| set.contains(c)).to_string(),
    }
}

/// Python's `str.isspace` for one character: Unicode white space plus the
/// four ASCII separators U+001C..U+001F.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// jinja2's `string` filter: Python's `str()`.
fn string(value: &Value) -> String {
    py_string(value)
}

/// jinja2's `sequence` test is true for anything with a length and
/// indexing, strings and dicts included.
fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::Undefined | ValueKind::String | ValueKind::Seq | ValueKind::Map
    )
}

/// Python's `str.isprintable`/`str.strip` etc. come from minijinja-contrib;
/// this adds a `strftime_now` that reads the render's clock.
pub(crate) fn strftime_function(clock: super::Clock) -> Value {
    Value::from_function(move |fmt: String| clock.now().strftime(&fmt))
}

pub(crate) fn environment(
    source: String,
    fuel: Option<u64>,
) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()?,
    );
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out: &mut Output, _state: &mut State, value: &Value| {
        let mut s = String::new();
        py_str(value, &mut s);
        out.write_str(&s)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write the output"))
    });
    env.set_fuel(fuel);
    env.set_recursion_limit(200);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env.add_filter("trim", trim);
    env.add_filter("string", string);
    env.add_test("sequence", is_sequence);
    env.add_template_owned(TEMPLATE_NAME, source)?;
    Ok(env)
}
