//! Python's `str()`, `repr()` and `json.dumps()` for template values.
//!
//! Hugging Face renders chat templates with jinja2, so whatever a template
//! prints goes through Python: `{{ none }}` is `None`, a list prints as
//! `['a', 1]`, a float as `1e+16`, and `tojson` is `json.dumps`. Prompts must
//! match byte for byte, so these follow CPython's rules, not minijinja's.

use std::fmt::Write;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};
use unicode_general_category::{get_general_category, GeneralCategory};

/// CPython's `float.__repr__`: the shortest digits that round-trip, in
/// positional notation when the decimal exponent is in `-4..16`, otherwise
/// scientific with a signed two-digit-minimum exponent.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as CPython's
    // repr (both are correctly rounded shortest representations).
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mant = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

/// CPython's `str.isprintable` for one character.
fn is_printable(c: char) -> bool {
    use GeneralCategory as G;
    if c == ' ' {
        return true;
    }
    !matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::SpaceSeparator
    )
}

/// CPython's `repr(str)`.
pub fn str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let n = c as u32;
                let _ = if n < 0x100 {
                    write!(out, "\\x{n:02x}")
                } else if n < 0x10000 {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
        }
    }
    out.push(quote);
}

fn number_str(v: &Value, out: &mut String) {
    if v.is_integer() {
        match i128::try_from(v.clone()) {
            Ok(i) => {
                let _ = write!(out, "{i}");
            }
            Err(_) => {
                let _ = write!(out, "{v}");
            }
        }
    } else {
        match f64::try_from(v.clone()) {
            Ok(f) => out.push_str(&float_repr(f)),
            Err(_) => {
                let _ = write!(out, "{v}");
            }
        }
    }
}

/// Python's `repr()` of a template value (how items inside a printed list
/// or dict appear).
pub fn py_repr(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::String => str_repr(v.as_str().unwrap_or_default(), out),
        _ => py_str(v, out),
    }
}

/// Python's `str()` of a template value, as jinja2 prints it.
pub fn py_str(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => number_str(v, out),
        ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            let tuple = v.is_tuple();
            out.push(if tuple { '(' } else { '[' });
            let mut n = 0;
            if let Ok(items) = v.try_iter() {
                for item in items {
                    if n > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                    n += 1;
                }
            }
            if tuple && n == 1 {
                out.push(',');
            }
            out.push(if tuple { ')' } else { ']' });
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = v.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&key, out);
                    out.push_str(": ");
                    py_repr(&v.get_item(&key).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{v}");
        }
    }
}

/// A template value of anything serializable.
pub fn to_value<T: serde::Serialize>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

pub fn py_string(v: &Value) -> String {
    let mut s = String::new();
    py_str(v, &mut s);
    s
}

/// The options of Python's `json.dumps` that templates pass to `tojson`.
#[derive(Debug, Clone)]
pub struct JsonOptions {
    pub ensure_ascii: bool,
    /// `None`: one line; `Some(s)`: one item per line, nested levels
    /// prefixed with `s` repeated.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            ensure_ascii: false,
            indent: None,
            item_separator: ", ".into(),
            key_separator: ": ".into(),
            sort_keys: false,
        }
    }
}

// Python's json encoder nests no deeper than the interpreter's recursion
// limit; a template value is a finite tree, but a bound keeps the stack safe.
const MAX_JSON_DEPTH: usize = 512;

fn json_str(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.push_str(&float_repr(f));
    }
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers,
/// booleans and None converted to their JSON text.
fn json_key(k: &Value) -> Result<String, Error> {
    match k.kind() {
        ValueKind::String => Ok(k.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if k.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number => {
            let mut s = String::new();
            if k.is_integer() {
                number_str(k, &mut s);
            } else {
                json_float(f64::try_from(k.clone())?, &mut s);
            }
            Ok(s)
        }
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {other}"),
        )),
    }
}

fn json_value(v: &Value, opts: &JsonOptions, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &opts.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                number_str(v, out);
            } else {
                json_float(f64::try_from(v.clone())?, out);
            }
        }
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_separator);
                }
                newline(out, depth + 1);
                json_value(item, opts, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in v.try_iter()? {
                let value = v.get_item(&key)?;
                entries.push((json_key(&key)?, value));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_separator);
                }
                newline(out, depth + 1);
                json_str(key, opts.ensure_ascii, out);
                out.push_str(&opts.key_separator);
                json_value(value, opts, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of type {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Python's `json.dumps(v, ...)`.
pub fn json_dumps(v: &Value, opts: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    json_value(v, opts, 0, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_cpython() {
        // Expected strings are CPython 3.11 `repr(float)`.
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (-3e-7, "-3e-07"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e20, "1e+20"),
            (1e100, "1e+100"),
            (-0.0, "-0.0"),
            (21.0, "21.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn string_repr_like_cpython() {
        let cases = [
            ("abc", "'abc'"),
            ("it's", "\"it's\""),
            ("it's \"x\"", "'it\\'s \"x\"'"),
            ("a\nb\t\\", "'a\\nb\\t\\\\'"),
            ("\u{7}\u{7f}\u{a0}", "'\\x07\\x7f\\xa0'"),
            ("é東🌍", "'é東🌍'"),
            ("\u{200b}\u{2028}", "'\\u200b\\u2028'"),
        ];
        for (s, want) in cases {
            let mut out = String::new();
            str_repr(s, &mut out);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn json_dumps_matches_python() {
        let v = to_value(&serde_json::json!({
            "b": [1, 2.0, null, true],
            "a": {"x": "é\u{1}\"", "e": {}, "l": []}
        }));
        let compact = json_dumps(&v, &JsonOptions::default()).unwrap();
        // json.dumps(..., ensure_ascii=False)
        assert_eq!(
            compact,
            r#"{"b": [1, 2.0, null, true], "a": {"x": "é\u0001\"", "e": {}, "l": []}}"#
        );
        let opts = JsonOptions {
            indent: Some("  ".into()),
            item_separator: ",".into(),
            ensure_ascii: true,
            sort_keys: true,
            ..JsonOptions::default()
        };
        // json.dumps(..., indent=2, ensure_ascii=True, sort_keys=True)
        assert_eq!(
            json_dumps(&v, &opts).unwrap(),
            "{\n  \"a\": {\n    \"e\": {},\n    \"l\": [],\n    \"x\": \"\\u00e9\\u0001\\\"\"\n  },\n  \"b\": [\n    1,\n    2.0,\n    null,\n    true\n  ]\n}"
        );
        let astral = Value::from("🌍");
        let opts = JsonOptions {
            ensure_ascii: true,
            ..JsonOptions::default()
        };
        assert_eq!(json_dumps(&astral, &opts).unwrap(), r#""\ud83c\udf0d""#);
    }

    #[test]
    fn python_str_of_containers() {
        let v = to_value(&serde_json::json!([{"type": "text", "text": "it's"}, null, false, 1.5]));
        assert_eq!(
            py_string(&v),
            "[{'type': 'text', 'text': \"it's\"}, None, False, 1.5]"
        );
    }
}
