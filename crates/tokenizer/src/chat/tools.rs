//! Reading tool calls out of a Llama 3.x reply.
//!
//! Llama 3.1/3.2 call tools in several ways, all handled here:
//!
//! - JSON, as the chat template asks: `{"name": "f", "parameters": {...}}`
//!   (some replies say `"arguments"`), several of them separated by `;` or
//!   newlines, or a JSON list of them;
//! - pythonic, as in Meta's Llama 3.2 prompt guide:
//!   `[get_weather(city='Paris'), get_time(tz="UTC")]`, arguments being
//!   Python literals;
//! - after `<|python_tag|>`: a built-in tool call `brave_search.call(query="...")`,
//!   a JSON call, or code for the `code_interpreter`, up to `<|eom_id|>` or
//!   `<|eot_id|>`.
//!
//! Text that does not parse as a call stays in [`ParsedReply::content`];
//! nothing the model wrote is dropped except the end-of-turn markers.
//! [`streamable_prefix_len`] tells a streaming server how much of a partial
//! reply is certainly text and may be sent before the reply ends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

pub const PYTHON_TAG: &str = "<|python_tag|>";
pub const EOM: &str = "<|eom_id|>";
pub const EOT: &str = "<|eot_id|>";

/// The tool `<|python_tag|>` followed by plain code is a call to.
pub const CODE_INTERPRETER: &str = "code_interpreter";

/// Literals nested deeper than this are not taken as a call (keeps the
/// recursive parsers' stack bounded on hostile input).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    /// The arguments object (`{}` when the call had none).
    pub arguments: Value,
}

/// A reply split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ParsedReply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolCallError {
    #[error("not a tool call (byte {at}): {reason}")]
    Syntax { at: usize, reason: &'static str },
    #[error("not a tool call (byte {at}): nested deeper than {MAX_DEPTH} levels")]
    TooDeep { at: usize },
    #[error("unknown tool '{0}'")]
    UnknownTool(String),
}

/// How strictly replies are read.
#[derive(Debug, Clone, Default)]
pub struct ToolParseOptions {
    /// When set, calls to other names are not calls but text, which avoids
    /// taking a JSON example in prose for a call.
    pub known_tools: Option<Vec<String>>,
}

impl ToolParseOptions {
    fn check(&self, call: &ToolCall) -> Result<(), ToolCallError> {
        match &self.known_tools {
            Some(names) if call.name != CODE_INTERPRETER && !names.contains(&call.name) => {
                Err(ToolCallError::UnknownTool(call.name.clone()))
            }
            _ => Ok(()),
        }
    }
}

/// [`parse_reply_with`] accepting any tool name.
pub fn parse_reply(reply: &str) -> ParsedReply {
    parse_reply_with(reply, &ToolParseOptions::default())
}

fn strip_end_markers(s: &str) -> &str {
    let mut s = s;
    loop {
        let t = s.trim_end();
        if let Some(rest) = t.strip_suffix(EOT).or_else(|| t.strip_suffix(EOM)) {
            s = rest;
        } else {
            return s;
        }
    }
}

fn join_text(before: &str, after: &str) -> String {
    let (b, a) = (before.trim(), after.trim());
    match (b.is_empty(), a.is_empty()) {
        (true, _) => a.to_string(),
        (_, true) => b.to_string(),
        _ => format!("{b}\n{a}"),
    }
}

/// Splits a complete reply into text and tool calls.
pub fn parse_reply_with(reply: &str, opts: &ToolParseOptions) -> ParsedReply {
    if let Some(tag) = reply.find(PYTHON_TAG) {
        let before = &reply[..tag];
        let rest = &reply[tag + PYTHON_TAG.len()..];
        let end = [rest.find(EOM), rest.find(EOT)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        let code = &rest[..end];
        let after = strip_end_markers(rest[end..].trim_start_matches(EOM).trim_start_matches(EOT));
        if let Some(calls) = python_tag_calls(code, opts) {
            return ParsedReply {
                content: join_text(before, after),
                tool_calls: calls,
            };
        }
        return ParsedReply {
            content: strip_end_markers(reply).to_string(),
            tool_calls: Vec::new(),
        };
    }
    let text = strip_end_markers(reply);
    match find_calls(text, opts) {
        Some((start, end, calls)) => ParsedReply {
            content: join_text(&text[..start], &text[end..]),
            tool_calls: calls,
        },
        None => ParsedReply {
            content: text.to_string(),
            tool_calls: Vec::new(),
        },
    }
}

/// What follows `<|python_tag|>`: JSON calls, `tool.call(...)`, or code.
fn python_tag_calls(code: &str, opts: &ToolParseOptions) -> Option<Vec<ToolCall>> {
    let trimmed = code.trim();
    if trimmed.is_empty() {
        return None;
    }
    if let Ok((calls, end)) = json_calls_at(trimmed, opts) {
        if trimmed[end..].trim().is_empty() {
            return Some(calls);
        }
    }
    let mut p = Py::new(trimmed);
    if let Ok(mut call) = p.call() {
        p.ws();
        if p.at_end() {
            if let Some(base) = call.name.strip_suffix(".call") {
                call.name = base.to_string();
            }
            if opts.check(&call).is_ok() {
                return Some(vec![call]);
            }
        }
    }
    let call = ToolCall {
        name: CODE_INTERPRETER.into(),
        arguments: Value::Object(Map::from_iter([(
            "code".to_string(),
            Value::String(code.trim().to_string()),
        )])),
    };
    Some(vec![call])
}

/// Whether a parse failed only because the input ended too soon.
fn unfinished(e: &ToolCallError, len: usize) -> bool {
    matches!(e, ToolCallError::Syntax { at, .. } if *at >= len)
}

/// The first place in `text` where tool calls begin, with where they end.
/// Scanning stops at a call that breaks off unfinished: what follows is
/// inside it, and all of it is text.
fn find_calls(text: &str, opts: &ToolParseOptions) -> Option<(usize, usize, Vec<ToolCall>)> {
    let lead = text.len() - text.trim_start().len();
    for (i, c) in text.char_indices() {
        let s = &text[i..];
        let attempts = match c {
            '{' => vec![json_calls_at(s, opts)],
            '[' => vec![json_calls_at(s, opts), pythonic_calls_at(s, opts)],
            // An unbracketed pythonic call is only believed when it is the
            // whole reply: `f(x=1)` inside a sentence is prose.
            c if i == lead && (c.is_alphabetic() || c == '_') => {
                vec![pythonic_calls_at(s, opts).and_then(|(calls, end)| {
                    if s[end..].trim().is_empty() {
                        Ok((calls, end))
                    } else {
                        Err(ToolCallError::Syntax {
                            at: end,
                            reason: "text after a bare call",
                        })
                    }
                })]
            }
            _ => continue,
        };
        let mut cut_off = false;
        for attempt in attempts {
            match attempt {
                Ok((calls, end)) => return Some((i, i + end, calls)),
                Err(e) => cut_off |= unfinished(&e, s.len()),
            }
        }
        if cut_off {
            return None;
        }
    }
    None
}

/// A JSON object as a call, if it has the shape of one.
fn object_to_call(v: &Value) -> Option<ToolCall> {
    let obj = v.as_object()?;
    // OpenAI's nesting: {"type": "function", "function": {...}}
    if let Some(inner) = obj.get("function").filter(|f| f.is_object()) {
        if obj
            .keys()
            .all(|k| matches!(k.as_str(), "function" | "type" | "id"))
        {
            return object_to_call(inner);
        }
        return None;
    }
    if !obj.keys().all(|k| {
        matches!(
            k.as_str(),
            "name" | "parameters" | "arguments" | "type" | "id"
        )
    }) {
        return None;
    }
    if obj.get("type").is_some_and(|t| t != "function") {
        return None;
    }
    let name = obj.get("name")?.as_str()?.trim();
    if name.is_empty() {
        return None;
    }
    // The arguments key is required: Llama writes it even when empty, and
    // without it any object with a "name" would pass for a call.
    let args = match (obj.get("parameters"), obj.get("arguments")) {
        (Some(a), None) | (None, Some(a)) => a,
        _ => return None,
    };
    let arguments = match args {
        Value::Null => Value::Object(Map::new()),
        Value::Object(_) => args.clone(),
        // Arguments given as a JSON-encoded string, as OpenAI sends them.
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => return None,
        },
        _ => return None,
    };
    Some(ToolCall {
        name: name.to_string(),
        arguments,
    })
}

/// One JSON value at the start of `s` and the byte offset after it; the
/// error says whether the input merely ended too soon.
fn json_value_at(s: &str) -> Result<(Value, usize), bool> {
    let mut stream = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => Ok((v, stream.byte_offset())),
        Some(Err(e)) => Err(e.is_eof()),
        None => Err(true),
    }
}

/// JSON calls at the start of `s`: one object, a list of objects, or
/// objects separated by `;` or white space. Returns them and the offset
/// after the last one.
fn json_calls_at(
    s: &str,
    opts: &ToolParseOptions,
) -> Result<(Vec<ToolCall>, usize), ToolCallError> {
    let syntax = |at, reason| ToolCallError::Syntax { at, reason };
    let (first, mut end) = json_value_at(s).map_err(|eof| {
        if eof {
            syntax(s.len(), "unfinished JSON")
        } else {
            syntax(0, "not JSON")
        }
    })?;
    if let Value::Array(items) = &first {
        if items.is_empty() {
            return Err(syntax(0, "empty list"));
        }
        let calls = items
            .iter()
            .map(|v| object_to_call(v).ok_or(syntax(0, "list item is not a call")))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &calls {
            opts.check(c)?;
        }
        return Ok((calls, end));
    }
    let call = object_to_call(&first).ok_or(syntax(0, "object is not a call"))?;
    opts.check(&call)?;
    let mut calls = vec![call];
    loop {
        let rest = &s[end..];
        let skipped = rest.trim_start();
        let skipped = skipped.strip_prefix(';').unwrap_or(skipped).trim_start();
        if !skipped.starts_with('{') {
            break;
        }
        let at = s.len() - skipped.len();
        match json_value_at(skipped)
            .ok()
            .and_then(|(v, n)| object_to_call(&v).map(|c| (c, n)))
        {
            Some((c, n)) if opts.check(&c).is_ok() => {
                calls.push(c);
                end = at + n;
            }
            _ => break,
        }
    }
    Ok((calls, end))
}

/// Parses JSON tool calls (one object, a list, or several separated by
/// `;` or newlines) that make up all of `s`.
pub fn parse_json_calls(s: &str) -> Result<Vec<ToolCall>, ToolCallError> {
    let t = s.trim();
    let lead = s.len() - s.trim_start().len();
    let (calls, end) =
        json_calls_at(t, &ToolParseOptions::default()).map_err(|e| shift(e, lead))?;
    if !t[end..].trim().is_empty() {
        return Err(ToolCallError::Syntax {
            at: lead + end,
            reason: "text after the calls",
        });
    }
    Ok(calls)
}

fn shift(e: ToolCallError, by: usize) -> ToolCallError {
    match e {
        ToolCallError::Syntax { at, reason } => ToolCallError::Syntax {
            at: at + by,
            reason,
        },
        ToolCallError::TooDeep { at } => ToolCallError::TooDeep { at: at + by },
        other => other,
    }
}

/// Pythonic calls at the start of `s`: `[f(a=1), g()]` or one bare `f(a=1)`.
fn pythonic_calls_at(
    s: &str,
    opts: &ToolParseOptions,
) -> Result<(Vec<ToolCall>, usize), ToolCallError> {
    let mut p = Py::new(s);
    let calls = p.call_list()?;
    for c in &calls {
        opts.check(c)?;
    }
    Ok((calls, p.pos))
}

/// Parses pythonic tool calls that make up all of `s`:
/// `[get_weather(city='Paris'), get_time(tz="UTC")]`.
pub fn parse_pythonic_calls(s: &str) -> Result<Vec<ToolCall>, ToolCallError> {
    let lead = s.len() - s.trim_start().len();
    let t = s.trim();
    let mut p = Py::new(t);
    let calls = p.call_list().map_err(|e| shift(e, lead))?;
    p.ws();
    if !p.at_end() {
        return Err(ToolCallError::Syntax {
            at: lead + p.pos,
            reason: "text after the calls",
        });
    }
    Ok(calls)
}

/// A recursive-descent reader of the Python subset Llama writes in calls.
struct Py<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Py<'a> {
    fn new(s: &'a str) -> Self {
        Py {
            s,
            pos: 0,
            depth: 0,
        }
    }

    fn err(&self, reason: &'static str) -> ToolCallError {
        ToolCallError::Syntax {
            at: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, reason: &'static str) -> Result<(), ToolCallError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(reason))
        }
    }

    fn ident(&mut self) -> Option<&'a str> {
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_alphabetic() || c == '_' => {
                self.bump();
            }
            _ => return None,
        }
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        Some(&self.s[start..self.pos])
    }

    fn enter(&mut self) -> Result<(), ToolCallError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ToolCallError::TooDeep { at: self.pos })
        } else {
            Ok(())
        }
    }

    /// `[call, call, ...]` or a single bare call.
    fn call_list(&mut self) -> Result<Vec<ToolCall>, ToolCallError> {
        if !self.eat('[') {
            return Ok(vec![self.call()?]);
        }
        let mut calls = Vec::new();
        loop {
            self.ws();
            if self.eat(']') {
                break;
            }
            calls.push(self.call()?);
            self.ws();
            if self.eat(',') {
                continue;
            }
            self.expect(']', "expected ',' or ']' after a call")?;
            break;
        }
        if calls.is_empty() {
            return Err(self.err("empty call list"));
        }
        Ok(calls)
    }

    /// `name(.name)*(kw=literal, ...)`
    fn call(&mut self) -> Result<ToolCall, ToolCallError> {
        let start = self.pos;
        self.ident()
            .ok_or_else(|| self.err("expected a function name"))?;
        while self.peek() == Some('.') {
            self.bump();
            self.ident()
                .ok_or_else(|| self.err("expected a name after '.'"))?;
        }
        let name = self.s[start..self.pos].to_string();
        self.ws();
        self.expect('(', "expected '(' after the function name")?;
        let mut args = Map::new();
        loop {
            self.ws();
            if self.eat(')') {
                break;
            }
            let key = self
                .ident()
                .ok_or_else(|| self.err("expected a keyword argument"))?
                .to_string();
            self.ws();
            self.expect('=', "arguments must be keyword arguments (name=value)")?;
            self.ws();
            let value = self.literal()?;
            if args.insert(key, value).is_some() {
                return Err(self.err("repeated keyword argument"));
            }
            self.ws();
            if self.eat(',') {
                continue;
            }
            self.expect(')', "expected ',' or ')' in the argument list")?;
            break;
        }
        Ok(ToolCall {
            name,
            arguments: Value::Object(args),
        })
    }

    fn literal(&mut self) -> Result<Value, ToolCallError> {
        self.enter()?;
        let v = self.literal_inner();
        self.depth -= 1;
        v
    }

    fn literal_inner(&mut self) -> Result<Value, ToolCallError> {
        match self.peek() {
            Some('\'' | '"') => self.strings(),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => self.number(),
            Some('[') => {
                self.bump();
                self.sequence(']').map(Value::Array)
            }
            Some('(') => {
                self.bump();
                self.sequence(')').map(Value::Array)
            }
            Some('{') => {
                self.bump();
                self.dict()
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let save = self.pos;
                // String prefixes: r'..', u'..', b'..' and combinations.
                let word = self.ident().unwrap_or_default();
                if matches!(self.peek(), Some('\'' | '"'))
                    && word.len() <= 2
                    && word
                        .chars()
                        .all(|c| matches!(c.to_ascii_lowercase(), 'r' | 'u' | 'b'))
                {
                    self.pos = save;
                    return self.strings();
                }
                match word {
                    "True" | "true" => Ok(Value::Bool(true)),
                    "False" | "false" => Ok(Value::Bool(false)),
                    "None" | "null" => Ok(Value::Null),
                    _ => {
                        self.pos = save;
                        Err(self.err("expected a literal value"))
                    }
                }
            }
            _ => Err(self.err("expected a literal value")),
        }
    }

    fn sequence(&mut self, close: char) -> Result<Vec<Value>, ToolCallError> {
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.eat(close) {
                return Ok(items);
            }
            items.push(self.literal()?);
            self.ws();
            if self.eat(',') {
                continue;
            }
            self.expect(close, "expected ',' or a closing bracket")?;
            return Ok(items);
        }
    }

    fn dict(&mut self) -> Result<Value, ToolCallError> {
        let mut map = Map::new();
        loop {
            self.ws();
            if self.eat('}') {
                return Ok(Value::Object(map));
            }
            let key = match self.literal()? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if b { "true" } else { "false" }.to_string(),
                Value::Null => "null".to_string(),
                _ => return Err(self.err("dict keys must be strings or numbers")),
            };
            self.ws();
            self.expect(':', "expected ':' in a dict")?;
            self.ws();
            let value = self.literal()?;
            map.insert(key, value);
            self.ws();
            if self.eat(',') {
                continue;
            }
            self.expect('}', "expected ',' or '}' in a dict")?;
            return Ok(Value::Object(map));
        }
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Result<Value, ToolCallError> {
        let mut out = self.string()?;
        loop {
            let save = self.pos;
            self.ws();
            let is_str = match self.peek() {
                Some('\'' | '"') => true,
                Some('r' | 'R' | 'u' | 'U' | 'b' | 'B') => {
                    let rest = &self.s[self.pos..];
                    let prefix = rest
                        .chars()
                        .take_while(|c| matches!(c.to_ascii_lowercase(), 'r' | 'u' | 'b'))
                        .count();
                    prefix <= 2 && matches!(rest[prefix..].chars().next(), Some('\'' | '"'))
                }
                _ => false,
            };
            if !is_str {
                self.pos = save;
                return Ok(Value::String(out));
            }
            out.push_str(&self.string()?);
        }
    }

    fn string(&mut self) -> Result<String, ToolCallError> {
        let mut raw = false;
        while let Some(c) = self.peek() {
            match c.to_ascii_lowercase() {
                'r' => raw = true,
                'u' | 'b' => {}
                _ => break,
            }
            self.bump();
        }
        let quote = self.bump().ok_or_else(|| self.err("expected a string"))?;
        let triple = self.s[self.pos..].starts_with(&format!("{quote}{quote}"));
        if triple {
            self.pos += 2 * quote.len_utf8();
        }
        let mut out = String::new();
        loop {
            let c = self.bump().ok_or_else(|| self.err("unterminated string"))?;
            if c == quote {
                if !triple {
                    return Ok(out);
                }
                let q2 = format!("{quote}{quote}");
                if self.s[self.pos..].starts_with(&q2) {
                    self.pos += q2.len();
                    return Ok(out);
                }
                out.push(c);
                continue;
            }
            if c == '\n' && !triple {
                return Err(self.err("newline in a string"));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.bump().ok_or_else(|| self.err("unterminated string"))?;
            if raw {
                out.push('\\');
                out.push(e);
                continue;
            }
            match e {
                '\n' => {}
                '\\' | '\'' | '"' => out.push(e),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '0'..='7' => {
                    let mut n = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match self.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                n = n * 8 + d;
                                self.bump();
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(n).ok_or_else(|| self.err("bad octal escape"))?);
                }
                'x' | 'u' | 'U' => {
                    let len = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex = self
                        .s
                        .get(self.pos..self.pos + len)
                        .ok_or_else(|| self.err("short escape"))?;
                    let n = u32::from_str_radix(hex, 16).map_err(|_| self.err("bad hex escape"))?;
                    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(self.err("bad hex escape"));
                    }
                    self.pos += len;
                    out.push(
                        char::from_u32(n).ok_or_else(|| self.err("escape is not a character"))?,
                    );
                }
                // Python keeps unknown escapes as written.
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, ToolCallError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.bump();
        }
        let body_start = self.pos;
        let mut is_float = false;
        while let Some(c) = self.peek() {
            match c {
                '0'..='9' | '_' => {}
                '.' => is_float = true,
                'e' | 'E' => {
                    is_float = true;
                    self.bump();
                    if matches!(self.peek(), Some('-' | '+')) {
                        self.bump();
                    }
                    continue;
                }
                _ => break,
            }
            self.bump();
        }
        if self.pos == body_start {
            // `-inf`? Not a literal Python writes; `float('inf')` is a call.
            return Err(self.err("expected a number"));
        }
        let text: String = self.s[start..self.pos]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        let text = text.strip_prefix('+').unwrap_or(&text);
        if !is_float {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Value::Number(i.into()));
            }
            if let Ok(u) = text.parse::<u64>() {
                return Ok(Value::Number(u.into()));
            }
        }
        let f: f64 = text.parse().map_err(|_| ToolCallError::Syntax {
            at: start,
            reason: "malformed number",
        })?;
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or(ToolCallError::Syntax {
                at: start,
                reason: "number out of range",
            })
    }
}

const CALL_KEYS: [&str; 3] = ["\"name\"", "\"type\"", "\"function\""];

/// Whether `s` (starting at a `{`) may still grow into a JSON call.
fn json_object_may_be_call(s: &str) -> bool {
    let after = s[1..].trim_start();
    if after.is_empty() {
        return true;
    }
    if !after.starts_with('"') {
        return false;
    }
    // The first key: a call starts with "name", "type" or "function".
    let key_end = after[1..].find('"').map(|i| i + 2);
    let key = &after[..key_end.unwrap_or(after.len())];
    let plausible = match key_end {
        Some(_) => CALL_KEYS.contains(&key),
        None => CALL_KEYS.iter().any(|k| k.starts_with(key)),
    };
    if !plausible {
        return false;
    }
    // Once the object is complete it either is a call or it is text.
    match json_value_at(s) {
        Ok((v, _)) => object_to_call(&v).is_some(),
        Err(eof) => eof,
    }
}

/// Whether `s` (starting at `[` or a name) may still grow into pythonic
/// calls or a JSON list of calls.
fn list_or_pythonic_may_be_call(s: &str) -> bool {
    let body = match s.strip_prefix('[') {
        Some(rest) => {
            let rest = rest.trim_start();
            if rest.is_empty() {
                return true;
            }
            if rest.starts_with('{') {
                return match json_value_at(s) {
                    Ok((Value::Array(items), _)) => {
                        !items.is_empty() && items.iter().all(|v| object_to_call(v).is_some())
                    }
                    Ok(_) => false,
                    Err(eof) => eof && json_object_may_be_call(rest),
                };
            }
            rest
        }
        None => s,
    };
    // A name, maybe dotted, then '('.
    let name_len = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .map_or(body.len(), |(i, _)| i);
    if name_len == 0 || !body.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        return false;
    }
    let after = body[name_len..].trim_start();
    if after.is_empty() {
        return true;
    }
    if !after.starts_with('(') {
        return false;
    }
    // Complete calls that fail to parse are text; unfinished ones may grow.
    let mut p = Py::new(s);
    match p.call_list() {
        Ok(_) => true,
        Err(ToolCallError::Syntax { at, .. }) => at >= s.len(),
        Err(_) => false,
    }
}

/// How many bytes at the start of a partial reply are certainly text, so a
/// streaming server may send them now. The rest may be (the start of) a
/// tool call or of `<|python_tag|>` and should be held back until the reply
/// ends or the text can no longer become a call. Runs in time linear in the
/// candidate positions; meant to be called as text arrives.
pub fn streamable_prefix_len(text: &str) -> usize {
    let lead = text.len() - text.trim_start().len();
    if let Some(tag) = text.find(PYTHON_TAG) {
        return tag;
    }
    for (i, c) in text.char_indices() {
        let s = &text[i..];
        let maybe = match c {
            '{' => json_object_may_be_call(s),
            '[' => list_or_pythonic_may_be_call(s),
            '<' => PYTHON_TAG.starts_with(s),
            c if i == lead && (c.is_alphabetic() || c == '_') => list_or_pythonic_may_be_call(s),
            _ => false,
        };
        if maybe {
            return i;
        }
    }
    text.len()
}

/// Whether a partial reply may still turn out to hold a tool call.
pub fn may_be_tool_call(text: &str) -> bool {
    streamable_prefix_len(text) < text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn number_literals() {
        let v =
            parse_pythonic_calls("f(a=1, b=-2.5, c=1e3, d=1_000, e=18446744073709551615, g=+3)")
                .unwrap();
        assert_eq!(
            v[0].arguments,
            json!({"a": 1, "b": -2.5, "c": 1000.0, "d": 1000, "e": 18446744073709551615u64, "g": 3})
        );
    }
}
