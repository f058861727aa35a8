//! JSON output constrained by a JSON schema, checked byte by byte.
//!
//! A schema is compiled into a small graph of [`Node`]s; the state of the
//! output is a set of pushdown stacks (more than one while alternatives,
//! such as `anyOf` branches or enum values, are still open). A token is
//! allowed when its bytes leave at least one stack alive, so the output
//! always parses as JSON and validates against the schema, whatever the
//! model prefers.
//!
//! Supported: `type` (one or a list), `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`, `maxItems`, `minLength`,
//! `maxLength`, `enum`, `const`, `anyOf`, `oneOf` (as `anyOf`; branches are
//! expected not to overlap), a single-schema `allOf`, and local `$ref`s
//! (`#/$defs/...`, `#/definitions/...`, recursion included). `format` is
//! an annotation in JSON Schema and is not enforced. Keywords that would
//! constrain the output in ways not enforced here (`pattern`, `minimum`,
//! `multipleOf`, ...) are rejected rather than silently ignored. Objects
//! with listed `properties` get only those keys (each at most once, in any
//! order): a subset of what the schema allows, which keeps the model from
//! wandering into keys the caller did not ask for.

use super::Constraint;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonSchemaError {
    #[error("unsupported JSON schema keyword '{keyword}' at {at}")]
    Unsupported { keyword: String, at: String },
    #[error("invalid JSON schema at {at}: {reason}")]
    Invalid { at: String, reason: String },
    #[error("JSON schema too complex: {0}")]
    TooComplex(String),
}

type NodeId = u32;

#[derive(Debug, Clone)]
enum Node {
    Any,
    Object {
        /// Property names as JSON text, quotes included, and their schemas.
        props: Vec<(Vec<u8>, NodeId)>,
        required: u128,
        /// Schema of keys not listed; `None` when no other key is allowed.
        additional: Option<NodeId>,
    },
    Array {
        items: NodeId,
        min: u32,
        max: u32,
    },
    String {
        min: u32,
        max: u32,
    },
    Number {
        integer: bool,
    },
    /// One of these exact JSON texts (enum, const, booleans, null).
    Literal(Vec<Vec<u8>>),
    AnyOf(Vec<NodeId>),
    /// A `$ref` resolved later (compilation of recursive schemas).
    Ref(NodeId),
}

const ANY: NodeId = 0;
const ANY_OBJECT: NodeId = 1;
const ANY_ARRAY: NodeId = 2;
const ANY_STRING: NodeId = 3;
const ANY_NUMBER: NodeId = 4;
const BOOLEAN: NodeId = 5;
const NULL: NodeId = 6;

/// Properties an object schema may list (tracked in a bit set).
const MAX_PROPS: usize = 128;
/// Open branches at once; more means the schema is too ambiguous.
const MAX_STACKS: usize = 512;
/// Nesting of objects and arrays in the output.
const MAX_DEPTH: usize = 64;
/// Whitespace bytes in a row: enough for pretty-printing, not for a model
/// stuck emitting blanks.
const MAX_WS: u8 = 24;
/// Nested `anyOf`/`$ref` expansions for one byte, and calls in all: a
/// schema whose alternatives refer to themselves cannot run away.
const MAX_RECURSION: u32 = 32;
const MAX_WORK: u32 = 4096;
/// Characters of one number.
const MAX_NUMBER_LEN: u8 = 32;

#[derive(Debug)]
struct Schema {
    nodes: Vec<Node>,
}

impl Schema {
    fn base() -> Schema {
        let lit = |s: &str| s.as_bytes().to_vec();
        Schema {
            nodes: vec![
                Node::Any,
                Node::Object {
                    props: Vec::new(),
                    required: 0,
                    additional: Some(ANY),
                },
                Node::Array {
                    items: ANY,
                    min: 0,
                    max: u32::MAX,
                },
                Node::String {
                    min: 0,
                    max: u32::MAX,
                },
                Node::Number { integer: false },
                Node::Literal(vec![lit("true"), lit("false")]),
                Node::Literal(vec![lit("null")]),
            ],
        }
    }

    /// Follows `Ref`s to the node they stand for.
    fn node(&self, mut id: NodeId) -> &Node {
        for _ in 0..self.nodes.len() {
            match &self.nodes[id as usize] {
                Node::Ref(t) => id = *t,
                n => return n,
            }
        }
        &Node::Any
    }
}

struct Compiler<'a> {
    root: &'a Value,
    schema: Schema,
    refs: HashMap<String, NodeId>,
}

const ENFORCED_ELSEWHERE: &[&str] = &[
    "pattern",
    "patternProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "prefixItems",
    "contains",
    "uniqueItems",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
];

impl Compiler<'_> {
    fn add(&mut self, n: Node) -> Result<NodeId, JsonSchemaError> {
        if self.schema.nodes.len() >= 1 << 16 {
            return Err(JsonSchemaError::TooComplex("too many schema nodes".into()));
        }
        self.schema.nodes.push(n);
        Ok((self.schema.nodes.len() - 1) as NodeId)
    }

    fn invalid(at: &str, reason: impl Into<String>) -> JsonSchemaError {
        JsonSchemaError::Invalid {
            at: at.to_string(),
            reason: reason.into(),
        }
    }

    fn count(v: &Value, key: &str, at: &str) -> Result<Option<u32>, JsonSchemaError> {
        match v.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|n| Some(n.min(u32::MAX as u64 - 1) as u32))
                .ok_or_else(|| Self::invalid(at, format!("{key} must be a non-negative integer"))),
        }
    }

    fn compile(&mut self, v: &Value, at: &str, depth: usize) -> Result<NodeId, JsonSchemaError> {
        if depth > 64 {
            return Err(JsonSchemaError::TooComplex(
                "schema nested too deeply".into(),
            ));
        }
        let obj = match v {
            Value::Bool(true) => return Ok(ANY),
            Value::Bool(false) => {
                return Err(Self::invalid(at, "the schema `false` matches nothing"))
            }
            Value::Object(o) => o,
            _ => return Err(Self::invalid(at, "a schema must be an object or a boolean")),
        };
        for k in ENFORCED_ELSEWHERE {
            if obj.contains_key(*k) {
                return Err(JsonSchemaError::Unsupported {
                    keyword: k.to_string(),
                    at: at.to_string(),
                });
            }
        }
        if let Some(r) = obj.get("$ref") {
            let r = r
                .as_str()
                .ok_or_else(|| Self::invalid(at, "$ref must be a string"))?;
            return self.reference(r, at, depth);
        }
        if let Some(c) = obj.get("const") {
            return self.add(Node::Literal(vec![json_text(c)]));
        }
        if let Some(e) = obj.get("enum") {
            let vals = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| Self::invalid(at, "enum must be a non-empty array"))?;
            return self.add(Node::Literal(vals.iter().map(json_text).collect()));
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            let Some(alts) = obj.get(key) else { continue };
            let alts = alts
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| Self::invalid(at, format!("{key} must be a non-empty array")))?;
            if key == "allOf" && alts.len() > 1 {
                return Err(JsonSchemaError::Unsupported {
                    keyword: "allOf with several schemas".into(),
                    at: at.to_string(),
                });
            }
            let mut ids = Vec::new();
            for (i, a) in alts.iter().enumerate() {
                ids.push(self.compile(a, &format!("{at}/{key}/{i}"), depth + 1)?);
            }
            return if ids.len() == 1 {
                Ok(ids[0])
            } else {
                self.add(Node::AnyOf(ids))
            };
        }
        let types: Vec<&str> = match obj.get("type") {
            None if obj.contains_key("properties") => vec!["object"],
            None if obj.contains_key("items") => vec!["array"],
            None => return Ok(ANY),
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| Self::invalid(at, "type must be a string or strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Self::invalid(at, "type must be a string or strings")),
        };
        let mut ids = Vec::new();
        for t in types {
            ids.push(self.typed(t, obj, at, depth)?);
        }
        match ids.len() {
            0 => Err(Self::invalid(at, "type lists nothing")),
            1 => Ok(ids[0]),
            _ => self.add(Node::AnyOf(ids)),
        }
    }

    fn typed(
        &mut self,
        t: &str,
        obj: &serde_json::Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<NodeId, JsonSchemaError> {
        let v = Value::Object(obj.clone());
        match t {
            "string" => {
                let min = Self::count(&v, "minLength", at)?.unwrap_or(0);
                let max = Self::count(&v, "maxLength", at)?.unwrap_or(u32::MAX);
                if min > max {
                    return Err(Self::invalid(at, "minLength exceeds maxLength"));
                }
                self.add(Node::String { min, max })
            }
            "number" => Ok(ANY_NUMBER),
            "integer" => self.add(Node::Number { integer: true }),
            "boolean" => Ok(BOOLEAN),
            "null" => Ok(NULL),
            "array" => {
                let items = match obj.get("items") {
                    None => ANY,
                    Some(s) => self.compile(s, &format!("{at}/items"), depth + 1)?,
                };
                let min = Self::count(&v, "minItems", at)?.unwrap_or(0);
                let max = Self::count(&v, "maxItems", at)?.unwrap_or(u32::MAX);
                if min > max {
                    return Err(Self::invalid(at, "minItems exceeds maxItems"));
                }
                self.add(Node::Array { items, min, max })
            }
            "object" => self.object(obj, at, depth),
            other => Err(Self::invalid(at, format!("unknown type '{other}'"))),
        }
    }

    fn object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<NodeId, JsonSchemaError> {
        let mut props: Vec<(String, NodeId)> = Vec::new();
        if let Some(p) = obj.get("properties") {
            let p = p
                .as_object()
                .ok_or_else(|| Self::invalid(at, "properties must be an object"))?;
            for (name, s) in p {
                let id = self.compile(s, &format!("{at}/properties/{name}"), depth + 1)?;
                props.push((name.clone(), id));
            }
        }
        let required: Vec<String> = match obj.get("required") {
            None => Vec::new(),
            Some(r) => r
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect())
                .ok_or_else(|| Self::invalid(at, "required must be an array of strings"))?,
        };
        let additional = match obj.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Some(ANY),
            Some(Value::Bool(false)) => None,
            Some(s) => Some(self.compile(s, &format!("{at}/additionalProperties"), depth + 1)?),
        };
        for r in &required {
            if !props.iter().any(|(n, _)| n == r) {
                match additional {
                    Some(a) => props.push((r.clone(), a)),
                    None => {
                        return Err(Self::invalid(
                            at,
                            format!("'{r}' is required but not allowed"),
                        ))
                    }
                }
            }
        }
        if props.len() > MAX_PROPS {
            return Err(JsonSchemaError::TooComplex(format!(
                "more than {MAX_PROPS} properties at {at}"
            )));
        }
        let mut req = 0u128;
        for (i, (n, _)) in props.iter().enumerate() {
            if required.contains(n) {
                req |= 1 << i;
            }
        }
        // With listed properties only those keys are produced (see the
        // module documentation).
        let additional = if props.is_empty() { additional } else { None };
        let props = props
            .into_iter()
            .map(|(n, id)| (json_text(&Value::String(n)), id))
            .collect();
        self.add(Node::Object {
            props,
            required: req,
            additional,
        })
    }

    fn reference(&mut self, r: &str, at: &str, depth: usize) -> Result<NodeId, JsonSchemaError> {
        if let Some(&id) = self.refs.get(r) {
            return Ok(id);
        }
        let pointer = r.strip_prefix('#').ok_or_else(|| {
            Self::invalid(at, format!("only local $refs are supported, got '{r}'"))
        })?;
        let target = self
            .root
            .pointer(pointer)
            .ok_or_else(|| Self::invalid(at, format!("$ref '{r}' points nowhere")))?;
        // A placeholder first, so a recursive schema refers back to it.
        let id = self.add(Node::Ref(ANY))?;
        self.refs.insert(r.to_string(), id);
        let real = self.compile(target, r, depth + 1)?;
        if real == id {
            return Err(Self::invalid(
                at,
                format!("$ref '{r}' refers only to itself"),
            ));
        }
        self.schema.nodes[id as usize] = Node::Ref(real);
        Ok(id)
    }
}

/// Compact JSON text of a value.
fn json_text(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjSt {
    KeyOrEnd,
    Key,
    InKey,
    Colon,
    InValue,
    CommaOrEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrSt {
    ValueOrEnd,
    Value,
    InValue,
    CommaOrEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumSt {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl NumSt {
    fn accepting(self) -> bool {
        matches!(
            self,
            NumSt::Zero | NumSt::Int | NumSt::Frac | NumSt::ExpDigits
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A value of this node is expected next.
    Value(NodeId),
    Obj {
        node: NodeId,
        st: ObjSt,
        seen: u128,
        /// Property whose value is being read (`u32::MAX`: an additional one).
        cur: u32,
    },
    Arr {
        node: NodeId,
        st: ArrSt,
        count: u32,
    },
    Str {
        min: u32,
        max: u32,
        len: u32,
        /// 0: plain; 1: after a backslash; 2..=5: hex digits of `\u` left + 1.
        esc: u8,
        /// UTF-8 continuation bytes still expected.
        utf8: u8,
    },
    Num {
        st: NumSt,
        integer: bool,
        len: u8,
    },
    /// Inside candidate `cand` of a literal node, `pos` bytes matched.
    Lit {
        node: NodeId,
        cand: u32,
        pos: u32,
    },
    /// Inside the JSON text of property `prop` of an object node.
    Key {
        node: NodeId,
        prop: u32,
        pos: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stack {
    frames: Vec<Frame>,
    ws: u8,
}

/// Takes one more whitespace byte, within [`MAX_WS`] in a row.
fn push_ws(mut s: Stack, out: &mut Vec<Stack>) {
    if s.ws < MAX_WS {
        s.ws += 1;
        out.push(s);
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Schema {
    /// Feeds one byte to `s`; pushes every way it can go on to `out`.
    fn feed(&self, mut s: Stack, b: u8, out: &mut Vec<Stack>, depth: u32, work: &mut u32) {
        *work += 1;
        if depth > MAX_RECURSION || *work > MAX_WORK {
            return;
        }
        let Some(&top) = s.frames.last() else {
            return;
        };
        let ws_ok = |s: &mut Stack| {
            if s.ws < MAX_WS {
                s.ws += 1;
                true
            } else {
                false
            }
        };
        if !is_ws(b) {
            s.ws = 0;
        }
        match top {
            Frame::Value(node) => {
                if is_ws(b) {
                    if ws_ok(&mut s) {
                        out.push(s);
                    }
                    return;
                }
                s.frames.pop();
                self.start_value(s, node, b, out, depth, work);
            }
            Frame::Obj {
                node,
                st,
                seen,
                cur,
            } => {
                let Node::Object {
                    props,
                    required,
                    additional,
                } = self.node(node)
                else {
                    return;
                };
                let set = |s: &mut Stack, st: ObjSt, seen: u128, cur: u32| {
                    if let Some(f) = s.frames.last_mut() {
                        *f = Frame::Obj {
                            node,
                            st,
                            seen,
                            cur,
                        };
                    }
                };
                let all_seen = (0..props.len()).all(|i| seen & (1 << i) != 0);
                let may_add_key = additional.is_some() || !all_seen;
                match st {
                    ObjSt::KeyOrEnd | ObjSt::Key | ObjSt::CommaOrEnd | ObjSt::Colon if is_ws(b) => {
                        push_ws(s, out)
                    }
                    ObjSt::KeyOrEnd | ObjSt::CommaOrEnd
                        if b == b'}' && seen & required == *required =>
                    {
                        s.frames.pop();
                        self.child_done(s, out);
                    }
                    ObjSt::CommaOrEnd if b == b',' && may_add_key => {
                        set(&mut s, ObjSt::Key, seen, cur);
                        out.push(s);
                    }
                    ObjSt::KeyOrEnd | ObjSt::Key if b == b'"' => {
                        for (i, (name, _)) in props.iter().enumerate() {
                            if seen & (1 << i) == 0 && name.first() == Some(&b'"') {
                                let mut t = s.clone();
                                set(&mut t, ObjSt::InKey, seen, cur);
                                t.frames.push(Frame::Key {
                                    node,
                                    prop: i as u32,
                                    pos: 1,
                                });
                                out.push(t);
                            }
                        }
                        if additional.is_some() {
                            set(&mut s, ObjSt::InKey, seen, u32::MAX);
                            s.frames.push(Frame::Str {
                                min: 0,
                                max: u32::MAX,
                                len: 0,
                                esc: 0,
                                utf8: 0,
                            });
                            out.push(s);
                        }
                    }
                    ObjSt::Colon if b == b':' => {
                        let value = if cur == u32::MAX {
                            additional.unwrap_or(ANY)
                        } else {
                            props.get(cur as usize).map_or(ANY, |p| p.1)
                        };
                        set(&mut s, ObjSt::InValue, seen, cur);
                        s.frames.push(Frame::Value(value));
                        out.push(s);
                    }
                    _ => {}
                }
            }
            Frame::Arr { node, st, count } => {
                let Node::Array { items, min, max } = self.node(node) else {
                    return;
                };
                let set = |s: &mut Stack, st: ArrSt, count: u32| {
                    if let Some(f) = s.frames.last_mut() {
                        *f = Frame::Arr { node, st, count };
                    }
                };
                match st {
                    ArrSt::ValueOrEnd | ArrSt::Value | ArrSt::CommaOrEnd if is_ws(b) => {
                        push_ws(s, out)
                    }
                    ArrSt::ValueOrEnd | ArrSt::CommaOrEnd if b == b']' && count >= *min => {
                        s.frames.pop();
                        self.child_done(s, out);
                    }
                    ArrSt::CommaOrEnd if b == b',' && count < *max => {
                        set(&mut s, ArrSt::Value, count);
                        out.push(s);
                    }
                    ArrSt::ValueOrEnd | ArrSt::Value if count < *max && b != b']' => {
                        set(&mut s, ArrSt::InValue, count + 1);
                        s.frames.push(Frame::Value(*items));
                        self.feed(s, b, out, depth + 1, work);
                    }
                    _ => {}
                }
            }
            Frame::Str {
                min,
                max,
                len,
                esc,
                utf8,
            } => {
                let next = |s: &mut Stack, len: u32, esc: u8, utf8: u8| {
                    if let Some(f) = s.frames.last_mut() {
                        *f = Frame::Str {
                            min,
                            max,
                            len,
                            esc,
                            utf8,
                        };
                    }
                };
                if utf8 > 0 {
                    if (0x80..0xC0).contains(&b) {
                        next(&mut s, len, esc, utf8 - 1);
                        out.push(s);
                    }
                    return;
                }
                match esc {
                    1 => {
                        if b"\"\\/bfnrt".contains(&b) {
                            next(&mut s, len, 0, 0);
                            out.push(s);
                        } else if b == b'u' {
                            next(&mut s, len, 5, 0);
                            out.push(s);
                        }
                        return;
                    }
                    2..=5 => {
                        if b.is_ascii_hexdigit() {
                            next(&mut s, len, if esc == 2 { 0 } else { esc - 1 }, 0);
                            out.push(s);
                        }
                        return;
                    }
                    _ => {}
                }
                match b {
                    b'"' if len >= min => {
                        s.frames.pop();
                        self.child_done(s, out);
                    }
                    b'"' => {}
                    _ if len >= max => {}
                    b'\\' => {
                        next(&mut s, len + 1, 1, 0);
                        out.push(s);
                    }
                    0x00..=0x1F | 0x7F => {}
                    0x20..=0x7E => {
                        next(&mut s, len + 1, 0, 0);
                        out.push(s);
                    }
                    0xC2..=0xDF => {
                        next(&mut s, len + 1, 0, 1);
                        out.push(s);
                    }
                    0xE0..=0xEF => {
                        next(&mut s, len + 1, 0, 2);
                        out.push(s);
                    }
                    0xF0..=0xF4 => {
                        next(&mut s, len + 1, 0, 3);
                        out.push(s);
                    }
                    _ => {}
                }
            }
            Frame::Num { st, integer, len } => {
                use NumSt::*;
                let go = match (st, b) {
                    (Start, b'-') => Some(Minus),
                    (Start | Minus, b'0') => Some(Zero),
                    (Start | Minus, b'1'..=b'9') => Some(Int),
                    (Int, b'0'..=b'9') => Some(Int),
                    (Zero | Int, b'.') if !integer => Some(Dot),
                    (Zero | Int | Frac, b'e' | b'E') if !integer => Some(Exp),
                    (Dot | Frac, b'0'..=b'9') => Some(Frac),
                    (Exp, b'+' | b'-') => Some(ExpSign),
                    (Exp | ExpSign | ExpDigits, b'0'..=b'9') => Some(ExpDigits),
                    _ => None,
                };
                match go {
                    Some(st) if len < MAX_NUMBER_LEN => {
                        if let Some(f) = s.frames.last_mut() {
                            *f = Frame::Num {
                                st,
                                integer,
                                len: len + 1,
                            };
                        }
                        out.push(s);
                    }
                    Some(_) => {}
                    None if st.accepting() => {
                        // The number ended; the byte belongs to what follows.
                        s.frames.pop();
                        let mut done = Vec::new();
                        self.child_done(s, &mut done);
                        for t in done {
                            self.feed(t, b, out, depth + 1, work);
                        }
                    }
                    None => {}
                }
            }
            Frame::Lit { node, cand, pos } => {
                let Node::Literal(cands) = self.node(node) else {
                    return;
                };
                let text = &cands[cand as usize];
                if text.get(pos as usize) == Some(&b) {
                    self.advance_literal(s, text.len(), pos + 1, out, |pos| Frame::Lit {
                        node,
                        cand,
                        pos,
                    });
                }
            }
            Frame::Key { node, prop, pos } => {
                let Node::Object { props, .. } = self.node(node) else {
                    return;
                };
                let text = &props[prop as usize].0;
                if text.get(pos as usize) == Some(&b) {
                    if pos as usize + 1 == text.len() {
                        s.frames.pop();
                        if let Some(Frame::Obj { seen, .. }) = s.frames.last_mut() {
                            *seen |= 1 << prop;
                        }
                        if let Some(Frame::Obj { cur, .. }) = s.frames.last_mut() {
                            *cur = prop;
                        }
                        self.child_done(s, out);
                    } else if let Some(f) = s.frames.last_mut() {
                        *f = Frame::Key {
                            node,
                            prop,
                            pos: pos + 1,
                        };
                        out.push(s);
                    }
                }
            }
        }
    }

    fn advance_literal(
        &self,
        mut s: Stack,
        len: usize,
        pos: u32,
        out: &mut Vec<Stack>,
        frame: impl Fn(u32) -> Frame,
    ) {
        if pos as usize >= len {
            s.frames.pop();
            self.child_done(s, out);
        } else {
            if let Some(f) = s.frames.last_mut() {
                *f = frame(pos);
            }
            out.push(s);
        }
    }

    /// A value of `node` starts with byte `b` (not whitespace).
    fn start_value(
        &self,
        mut s: Stack,
        node: NodeId,
        b: u8,
        out: &mut Vec<Stack>,
        depth: u32,
        work: &mut u32,
    ) {
        *work += 1;
        if depth > MAX_RECURSION || *work > MAX_WORK {
            return;
        }
        let deep = s.frames.len() >= MAX_DEPTH;
        match self.node(node) {
            Node::Any => {
                let n = match b {
                    b'{' => ANY_OBJECT,
                    b'[' => ANY_ARRAY,
                    b'"' => ANY_STRING,
                    b'-' | b'0'..=b'9' => ANY_NUMBER,
                    b't' | b'f' => BOOLEAN,
                    b'n' => NULL,
                    _ => return,
                };
                self.start_value(s, n, b, out, depth + 1, work);
            }
            Node::Object { .. } if b == b'{' && !deep => {
                s.frames.push(Frame::Obj {
                    node,
                    st: ObjSt::KeyOrEnd,
                    seen: 0,
                    cur: 0,
                });
                out.push(s);
            }
            Node::Array { .. } if b == b'[' && !deep => {
                s.frames.push(Frame::Arr {
                    node,
                    st: ArrSt::ValueOrEnd,
                    count: 0,
                });
                out.push(s);
            }
            Node::String { min, max } if b == b'"' => {
                s.frames.push(Frame::Str {
                    min: *min,
                    max: *max,
                    len: 0,
                    esc: 0,
                    utf8: 0,
                });
                out.push(s);
            }
            Node::Number { integer } => {
                s.frames.push(Frame::Num {
                    st: NumSt::Start,
                    integer: *integer,
                    len: 0,
                });
                self.feed(s, b, out, depth + 1, work);
            }
            Node::Literal(cands) => {
                for (i, c) in cands.iter().enumerate() {
                    if c.first() == Some(&b) {
                        let mut t = s.clone();
                        t.frames.push(Frame::Lit {
                            node,
                            cand: i as u32,
                            pos: 1,
                        });
                        self.advance_literal(t, c.len(), 1, out, |pos| Frame::Lit {
                            node,
                            cand: i as u32,
                            pos,
                        });
                    }
                }
            }
            Node::AnyOf(alts) => {
                for &a in alts {
                    self.start_value(s.clone(), a, b, out, depth + 1, work);
                }
            }
            _ => {}
        }
    }

    /// The top frame was just completed and popped: its parent moves on.
    fn child_done(&self, mut s: Stack, out: &mut Vec<Stack>) {
        match s.frames.last_mut() {
            Some(Frame::Obj { st, .. }) => {
                *st = match *st {
                    ObjSt::InKey => ObjSt::Colon,
                    _ => ObjSt::CommaOrEnd,
                };
            }
            Some(Frame::Arr { st, .. }) => *st = ArrSt::CommaOrEnd,
            _ => {}
        }
        out.push(s);
    }

    fn can_end(&self, s: &Stack) -> bool {
        match s.frames.as_slice() {
            [] => true,
            [Frame::Num { st, .. }] => st.accepting(),
            _ => false,
        }
    }
}

/// Output constrained to JSON that validates against a schema.
pub struct JsonConstraint {
    schema: std::sync::Arc<Schema>,
    stacks: Vec<Stack>,
    /// Which first bytes leave some stack alive, so most tokens are
    /// rejected without simulating them.
    first_ok: [bool; 256],
}

impl JsonConstraint {
    /// Any JSON object (OpenAI's `json_object` response format).
    pub fn object() -> JsonConstraint {
        Self::with_root(Schema::base(), ANY_OBJECT)
    }

    /// JSON that validates against `schema`.
    pub fn from_schema(schema: &Value) -> Result<JsonConstraint, JsonSchemaError> {
        let mut c = Compiler {
            root: schema,
            schema: Schema::base(),
            refs: HashMap::new(),
        };
        let root = c.compile(schema, "#", 0)?;
        Ok(Self::with_root(c.schema, root))
    }

    fn with_root(schema: Schema, root: NodeId) -> JsonConstraint {
        let mut c = JsonConstraint {
            schema: std::sync::Arc::new(schema),
            stacks: vec![Stack {
                frames: vec![Frame::Value(root)],
                ws: 0,
            }],
            first_ok: [false; 256],
        };
        c.refresh();
        c
    }

    fn run(&self, bytes: &[u8]) -> Vec<Stack> {
        let mut cur = self.stacks.clone();
        let mut next = Vec::new();
        for &b in bytes {
            for s in cur.drain(..) {
                let mut work = 0;
                self.schema.feed(s, b, &mut next, 0, &mut work);
            }
            if next.len() > 1 {
                dedup(&mut next);
                next.truncate(MAX_STACKS);
            }
            std::mem::swap(&mut cur, &mut next);
            if cur.is_empty() {
                break;
            }
        }
        cur
    }

    fn refresh(&mut self) {
        for b in 0..=255u8 {
            self.first_ok[b as usize] = !self.run(&[b]).is_empty();
        }
    }
}

/// Removes repeated stacks, keeping the first of each.
fn dedup(v: &mut Vec<Stack>) {
    let mut i = 1;
    while i < v.len() {
        if v[..i].contains(&v[i]) {
            v.remove(i);
        } else {
            i += 1;
        }
    }
}

impl Constraint for JsonConstraint {
    fn allows(&self, bytes: &[u8]) -> bool {
        // Inside a plain string most tokens are plain text: no need to
        // simulate them byte by byte.
        if let [Stack { frames, .. }] = self.stacks.as_slice() {
            if let Some(Frame::Str {
                max,
                len,
                esc: 0,
                utf8: 0,
                ..
            }) = frames.last()
            {
                if bytes
                    .iter()
                    .all(|&b| (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\')
                {
                    return !bytes.is_empty() && (*len as usize + bytes.len()) <= *max as usize;
                }
            }
        }
        match bytes.first() {
            None => false,
            Some(&b) if !self.first_ok[b as usize] => false,
            Some(_) if bytes.len() == 1 => true,
            Some(_) => !self.run(bytes).is_empty(),
        }
    }

    fn accept(&mut self, bytes: &[u8]) {
        self.stacks = self.run(bytes);
        self.refresh();
    }

    fn can_end(&self) -> bool {
        self.stacks.iter().any(|s| self.schema.can_end(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn accepts(c: &JsonConstraint, text: &str) -> bool {
        let mut c2 = JsonConstraint {
            schema: c.schema.clone(),
            stacks: c.stacks.clone(),
            first_ok: c.first_ok,
        };
        for b in text.bytes() {
            if !c2.allows(&[b]) {
                return false;
            }
            c2.accept(&[b]);
        }
        c2.can_end()
    }

    #[test]
    fn any_object() {
        let c = JsonConstraint::object();
        for ok in [
            "{}",
            r#"{"a": 1, "b": [true, null, "x\n\u00e9"], "c": {"d": -0.5e+3}}"#,
            "{ }",
            "{\"é\": \"ü😀\"}",
        ] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in [
            "[]",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":01}",
            "{,}",
            "{\"a\":1,}",
            "1",
            "{\"a\":tru}",
        ] {
            assert!(!accepts(&c, bad), "{bad}");
        }
    }

    #[test]
    fn schema_objects_enums_and_refs() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 5},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b", 10, 1]}, "maxItems": 2},
                "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}
            },
            "required": ["name", "age"],
            "additionalProperties": false
        });
        let c = JsonConstraint::from_schema(&schema).unwrap();
        for ok in [
            r#"{"name":"Bob","age":3}"#,
            r#"{"age":3,"name":"Bob","tags":["a",10,]}"#.replace(",]", "]").as_str(),
            r#"{"name":"","age":-1,"tags":[1],"next":null}"#,
            r#"{"name":"x","age":0,"next":{"name":"y","age":1}}"#,
        ] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in [
            r#"{"name":"Bob"}"#,
            r#"{"name":"Bobbyy","age":3}"#,
            r#"{"name":"Bob","age":3.5}"#,
            r#"{"name":"Bob","age":3,"x":1}"#,
            r#"{"name":"Bob","age":3,"name":"x"}"#,
            r#"{"name":"Bob","age":3,"tags":["c"]}"#,
            r#"{"name":"Bob","age":3,"tags":["a","a","a"]}"#,
        ] {
            assert!(!accepts(&c, bad), "{bad}");
        }
    }

    #[test]
    fn unsupported_keywords_are_refused() {
        let e = JsonConstraint::from_schema(&json!({"type": "string", "pattern": "^a"}));
        assert!(matches!(e, Err(JsonSchemaError::Unsupported { .. })));
        let e = JsonConstraint::from_schema(&json!({"$ref": "#/nowhere"}));
        assert!(matches!(e, Err(JsonSchemaError::Invalid { .. })));
    }

    /// Mutated JSON texts: the constraint accepts exactly those that
    /// serde_json reads as an object (within the whitespace and number
    /// limits, which the seeds stay far from).
    #[test]
    fn agrees_with_serde_json_on_mutated_objects() {
        let seeds = [
            r#"{"a": [1, -2.5e3, true, null], "b": {"c": "d\"e\u0041"}, "f": []}"#,
            r#"{"x":{"y":{"z":[[],[{}],"é😀"]}},"n":0.0,"m":-0,"k":1E+2}"#,
            "{\n  \"list\": [\n    \"one\",\n    \"two\"\n  ]\n}",
        ];
        let alphabet: Vec<char> = r#"{}[]:,"\ 0123456789-+.eEtrufalsn
xé"#
        .chars()
        .collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let c = JsonConstraint::object();
        let (mut n_ok, mut n_bad) = (0, 0);
        for _ in 0..3000 {
            let mut t: Vec<char> = seeds[rnd(seeds.len())].chars().collect();
            for _ in 0..1 + rnd(3) {
                let at = rnd(t.len() + 1);
                match rnd(3) {
                    0 if at < t.len() => {
                        t.remove(at);
                    }
                    1 => t.insert(at, alphabet[rnd(alphabet.len())]),
                    _ if at < t.len() => t[at] = alphabet[rnd(alphabet.len())],
                    _ => {}
                }
            }
            let text: String = t.into_iter().collect();
            let text = text.trim_end();
            let want = serde_json::from_str::<serde_json::Map<String, Value>>(text).is_ok();
            assert_eq!(accepts(&c, text), want, "{text:?}");
            if want {
                n_ok += 1
            } else {
                n_bad += 1
            }
        }
        assert!(n_ok > 300 && n_bad > 300, "{n_ok} valid, {n_bad} invalid");
    }

    #[test]
    fn self_referring_alternatives_stay_bounded() {
        let schema = json!({
            "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}, {"type": "null"}]}},
            "$ref": "#/$defs/a"
        });
        let c = JsonConstraint::from_schema(&schema).unwrap();
        let t0 = std::time::Instant::now();
        assert!(accepts(&c, "null"));
        assert!(!accepts(&c, "x"));
        assert!(t0.elapsed().as_secs() < 5);
    }

    #[test]
    fn whole_tokens_and_numbers_at_the_end() {
        let c = JsonConstraint::from_schema(&json!({"type": "number"})).unwrap();
        assert!(c.allows(b"-12"));
        assert!(!c.allows(b"-a"));
        let mut c = c;
        c.accept(b"12.5");
        assert!(c.can_end());
        assert!(c.allows(b"e3"));
        assert!(!c.allows(b" "));
    }
}
