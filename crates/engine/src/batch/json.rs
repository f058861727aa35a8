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
//! `maxLength`, `pattern` (the subset of regular expressions in
//! [`super::pattern`]), `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum` (numbers and draft 4's boolean forms), `multipleOf`
//! (whole numbers), `enum`, `const`, `anyOf`, `oneOf` (as `anyOf`; branches
//! are expected not to overlap), a single-schema `allOf`, and local `$ref`s
//! (`#/$defs/...`, `#/definitions/...`, recursion included). `format` is
//! an annotation in JSON Schema and is not enforced. Keywords that would
//! constrain the output in ways not enforced here (`patternProperties`,
//! `uniqueItems`, decimal `multipleOf`, ...) are rejected rather than
//! silently ignored. Objects with listed `properties` get only those keys
//! (each at most once, in any order): a subset of what the schema allows,
//! which keeps the model from wandering into keys the caller did not ask
//! for.
//!
//! Bounded numbers are written without an exponent, with at most
//! [`BOUNDED_INT_DIGITS`] digits before the point and
//! [`BOUNDED_FRAC_DIGITS`] after it (none for integers and `multipleOf`);
//! the digits are followed as they come, so a prefix is allowed only when
//! some way to finish it lands within the bounds. The bounds are turned into
//! such decimals by checking candidates with a correctly rounded parse, so
//! a validator that compares as `f64` (or exactly, for integers) agrees.

use super::pattern::{Pattern, PatternError, OTHER};
use super::Constraint;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonSchemaError {
    #[error("unsupported JSON schema keyword '{keyword}' at {at}")]
    Unsupported { keyword: String, at: String },
    /// A supported keyword used in a way that is not.
    #[error("unsupported use of JSON schema keyword '{keyword}' at {at}: {reason}")]
    UnsupportedUse {
        keyword: String,
        at: String,
        reason: String,
    },
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
        /// Index into [`Schema::patterns`].
        pattern: Option<u32>,
    },
    Number {
        integer: bool,
        bounds: Option<NumBounds>,
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
/// Digits before the point of a bounded number: below 2^53, so a validator
/// reading an integer as `f64` reads it exactly.
const BOUNDED_INT_DIGITS: u32 = 15;
/// Digits after the point of a bounded `number`.
const BOUNDED_FRAC_DIGITS: u8 = 8;
/// `Frame::Str::pattern` of a string without a pattern.
const NO_PATTERN: u32 = u32::MAX;

fn pow10(k: u32) -> i128 {
    10i128.pow(k)
}

/// The bounds of a number in units of `10^-frac`: `lo..=hi`, multiples of
/// `mult`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NumBounds {
    lo: i128,
    hi: i128,
    mult: i128,
    frac: u8,
}

impl NumBounds {
    /// The largest magnitude written.
    fn limit(frac: u8) -> i128 {
        pow10(BOUNDED_INT_DIGITS + frac as u32) - 1
    }

    /// Whether the magnitudes `a..=b`, negated when `neg`, hold an allowed
    /// value.
    fn holds(&self, neg: bool, a: i128, b: i128) -> bool {
        let (a, b) = if neg { (-b, -a) } else { (a, b) };
        let (a, b) = (a.max(self.lo), b.min(self.hi));
        a <= b && b.div_euclid(self.mult) * self.mult >= a
    }

    /// Whether a number read this far (`acc`: its digits so far, `nint`
    /// of them before the point, `nfrac` after) can still end in bounds.
    fn feasible(&self, st: NumSt, neg: bool, acc: i128, nint: u8, nfrac: u8) -> bool {
        let f = self.frac as u32;
        let all = Self::limit(self.frac);
        match st {
            NumSt::Start => self.holds(false, 0, all) || self.holds(true, 0, all),
            NumSt::Minus => self.holds(true, 0, all),
            NumSt::Zero => self.holds(neg, 0, pow10(f) - 1),
            NumSt::Int => (0..=BOUNDED_INT_DIGITS.saturating_sub(nint as u32))
                .any(|k| self.holds(neg, acc * pow10(k + f), (acc + 1) * pow10(k + f) - 1)),
            NumSt::Dot | NumSt::Frac => {
                let r = f.saturating_sub(nfrac as u32);
                self.holds(neg, acc * pow10(r), (acc + 1) * pow10(r) - 1)
            }
            _ => false,
        }
    }

    /// Whether the number may end here.
    fn ends(&self, st: NumSt, neg: bool, acc: i128, nfrac: u8) -> bool {
        let v = acc * pow10((self.frac as u32).saturating_sub(nfrac as u32));
        matches!(st, NumSt::Zero | NumSt::Int | NumSt::Frac) && self.holds(neg, v, v)
    }
}

/// The scaled value `s / 10^frac` as decimal text.
fn decimal(s: i128, frac: u8) -> String {
    if frac == 0 {
        return s.to_string();
    }
    let scale = pow10(frac as u32);
    let sign = if s < 0 { "-" } else { "" };
    let a = s.unsigned_abs();
    format!(
        "{sign}{}.{:0>w$}",
        a / scale as u128,
        a % scale as u128,
        w = frac as usize
    )
}

/// The least scaled value whose decimal text reads (correctly rounded, as
/// validators parse it) as at least `bound`, or above it when `exclusive`.
fn scaled_min(bound: f64, exclusive: bool, frac: u8) -> i128 {
    let lim = NumBounds::limit(frac);
    if bound > 1e16 {
        return lim + 1;
    }
    if bound < -1e16 {
        return -lim;
    }
    let ok = |s: i128| {
        let v: f64 = decimal(s, frac).parse().unwrap_or(f64::NAN);
        if exclusive {
            v > bound
        } else {
            v >= bound
        }
    };
    // Within a few units of the answer; step up to it.
    let mut s = (bound * 10f64.powi(frac as i32)).floor() as i128 - 2;
    for _ in 0..64 {
        if ok(s) {
            break;
        }
        s += 1;
    }
    s
}

#[derive(Debug)]
struct Schema {
    nodes: Vec<Node>,
    patterns: Vec<Pattern>,
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
                    pattern: None,
                },
                Node::Number {
                    integer: false,
                    bounds: None,
                },
                Node::Literal(vec![lit("true"), lit("false")]),
                Node::Literal(vec![lit("null")]),
            ],
            patterns: Vec::new(),
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

/// Keywords that apply to values of one type only.
const TYPE_KEYWORDS: &[&str] = &[
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
];

const ENFORCED_ELSEWHERE: &[&str] = &[
    "patternProperties",
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
            // Keywords of one type leave the others free.
            None if TYPE_KEYWORDS.iter().any(|k| obj.contains_key(*k)) => {
                vec!["object", "array", "string", "number", "boolean", "null"]
            }
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
                let pattern = match obj.get("pattern") {
                    None => None,
                    Some(p) => {
                        let p = p
                            .as_str()
                            .ok_or_else(|| Self::invalid(at, "pattern must be a string"))?;
                        Some(self.pattern(p, min, max, at)?)
                    }
                };
                self.add(Node::String { min, max, pattern })
            }
            "number" | "integer" => {
                let integer = t == "integer";
                match Self::number_bounds(obj, integer, at)? {
                    None if !integer => Ok(ANY_NUMBER),
                    bounds => self.add(Node::Number { integer, bounds }),
                }
            }
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

    fn pattern(&mut self, src: &str, min: u32, max: u32, at: &str) -> Result<u32, JsonSchemaError> {
        let p = Pattern::new(src, min, max).map_err(|e| match e {
            PatternError::Unsupported(what) => JsonSchemaError::UnsupportedUse {
                keyword: "pattern".into(),
                at: at.to_string(),
                reason: format!(
                    "{what} in {src:?}; supported: ASCII literals, [...] classes, \\d \\w \\s, ., \
                     (...) groups with |, quantifiers ? * + {{m,n}}, ^ and $ at the ends"
                ),
            },
            PatternError::Invalid(why) => Self::invalid(at, format!("pattern {src:?}: {why}")),
            PatternError::TooComplex(why) => {
                JsonSchemaError::TooComplex(format!("pattern at {at}: {why}"))
            }
        })?;
        if self.schema.patterns.len() >= 1024 {
            return Err(JsonSchemaError::TooComplex("too many patterns".into()));
        }
        self.schema.patterns.push(p);
        Ok(self.schema.patterns.len() as u32 - 1)
    }

    /// `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` and
    /// `multipleOf` of a number; `None` when there are none.
    fn number_bounds(
        obj: &serde_json::Map<String, Value>,
        integer: bool,
        at: &str,
    ) -> Result<Option<NumBounds>, JsonSchemaError> {
        let num = |k: &str| -> Result<Option<f64>, JsonSchemaError> {
            match obj.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| Self::invalid(at, format!("{k} must be a number"))),
            }
        };
        // Draft 4 writes `exclusiveMinimum: true` beside `minimum`.
        let flag = |k: &str| matches!(obj.get(k), Some(Value::Bool(true)));
        let excl = |k: &str| match obj.get(k) {
            Some(Value::Bool(_)) => Ok(None),
            _ => num(k),
        };
        let (min, max) = (num("minimum")?, num("maximum")?);
        let (xmin, xmax) = (excl("exclusiveMinimum")?, excl("exclusiveMaximum")?);
        let mult = match num("multipleOf")? {
            None => None,
            Some(m) if m <= 0.0 => return Err(Self::invalid(at, "multipleOf must be positive")),
            Some(m) if m.fract() != 0.0 || m > 1e15 => {
                return Err(JsonSchemaError::UnsupportedUse {
                    keyword: "multipleOf".into(),
                    at: at.to_string(),
                    reason: format!(
                        "only whole numbers up to 1e15 are supported, got {m} (validators \
                         check decimal multiples in floating point, inexactly)"
                    ),
                })
            }
            Some(m) => Some(m as i128),
        };
        if min.is_none() && max.is_none() && xmin.is_none() && xmax.is_none() && mult.is_none() {
            return Ok(None);
        }
        let frac = if integer || mult.is_some() {
            0
        } else {
            BOUNDED_FRAC_DIGITS
        };
        let lim = NumBounds::limit(frac);
        let mut lo = -lim;
        let mut hi = lim;
        if let Some(m) = min {
            lo = lo.max(scaled_min(m, flag("exclusiveMinimum"), frac));
        }
        if let Some(m) = xmin {
            lo = lo.max(scaled_min(m, true, frac));
        }
        // Upper bounds mirror lower ones: -x <= -bound.
        if let Some(m) = max {
            hi = hi.min(-scaled_min(-m, flag("exclusiveMaximum"), frac));
        }
        if let Some(m) = xmax {
            hi = hi.min(-scaled_min(-m, true, frac));
        }
        let b = NumBounds {
            lo,
            hi,
            mult: mult.unwrap_or(1),
            frac,
        };
        if !b.holds(false, lo, hi) {
            return Err(Self::invalid(
                at,
                format!(
                    "no number with at most {BOUNDED_INT_DIGITS} digits before the point \
                     satisfies minimum/maximum/multipleOf"
                ),
            ));
        }
        Ok(Some(b))
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
        /// Index into [`Schema::patterns`], or [`NO_PATTERN`].
        pattern: u32,
        /// State of the pattern's DFA.
        q: u32,
        /// The bytes of the UTF-8 character being read, or the code of the
        /// `\u` escape.
        cp: u32,
    },
    Num {
        st: NumSt,
        integer: bool,
        len: u8,
        node: NodeId,
        neg: bool,
        /// Digits so far, when the node has bounds.
        acc: i128,
        nint: u8,
        nfrac: u8,
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
                                pattern: NO_PATTERN,
                                q: 0,
                                cp: 0,
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
            Frame::Str { .. } => self.feed_str(s, top, b, out),
            Frame::Num { .. } => self.feed_num(s, top, b, out, depth, work),
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

    /// One byte of a string's text.
    fn feed_str(&self, mut s: Stack, top: Frame, b: u8, out: &mut Vec<Stack>) {
        let Frame::Str {
            min,
            max,
            len,
            esc,
            utf8,
            pattern,
            q,
            cp,
        } = top
        else {
            return;
        };
        let pat = self.patterns.get(pattern as usize);
        let set = |s: &mut Stack, len: u32, esc: u8, utf8: u8, q: u32, cp: u32| {
            if let Some(f) = s.frames.last_mut() {
                *f = Frame::Str {
                    min,
                    max,
                    len,
                    esc,
                    utf8,
                    pattern,
                    q,
                    cp,
                };
            }
        };
        // Whether a `\u` escape may still write a code in `lo..=hi`:
        // never a surrogate (a lone one is not valid JSON text to every
        // reader), and for a pattern only what keeps it alive.
        let escapable = |lo: u32, hi: u32| match pat {
            Some(p) => p.any_in(q, len, lo, hi),
            None => lo < 0xD800 || hi > 0xDFFF,
        };
        if utf8 > 0 {
            if !(0x80..0xC0).contains(&b) {
                return;
            }
            // The second byte rules out overlong forms, surrogates and
            // codes past U+10FFFF.
            let ok = match cp {
                0xE0 => b >= 0xA0,
                0xED => b < 0xA0,
                0xF0 => b >= 0x90,
                0xF4 => b < 0x90,
                _ => true,
            };
            let cp = (cp << 8) | b as u32;
            // U+2028 and U+2029 are not in a pattern's `OTHER`.
            let separator = pat.is_some() && utf8 == 1 && matches!(cp, 0xE2_80A8 | 0xE2_80A9);
            if ok && !separator {
                set(&mut s, len, 0, utf8 - 1, q, cp);
                out.push(s);
            }
            return;
        }
        match esc {
            1 => {
                let c = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0C,
                    b'n' => 0x0A,
                    b'r' => 0x0D,
                    b't' => 0x09,
                    b'u' if escapable(0, 0xFFFF) => {
                        set(&mut s, len, 5, 0, q, 0);
                        out.push(s);
                        return;
                    }
                    _ => return,
                };
                let q = match pat {
                    None => Some(q),
                    Some(p) => p.step(q, len, c as usize),
                };
                if let Some(q) = q {
                    set(&mut s, len, 0, 0, q, 0);
                    out.push(s);
                }
                return;
            }
            2..=5 => {
                let Some(h) = (b as char).to_digit(16) else {
                    return;
                };
                let cp = cp * 16 + h;
                // Hex digits after this one.
                let left = 4 * (esc as u32 - 2);
                let q = match pat {
                    _ if left > 0 => escapable(cp << left, ((cp + 1) << left) - 1).then_some(q),
                    None => escapable(cp, cp).then_some(q),
                    Some(_) if !escapable(cp, cp) => None,
                    Some(p) => p.step(q, len, if cp < 0x80 { cp as usize } else { OTHER }),
                };
                if let Some(q) = q {
                    set(&mut s, len, if esc == 2 { 0 } else { esc - 1 }, 0, q, cp);
                    out.push(s);
                }
                return;
            }
            _ => {}
        }
        let step = |sym: usize| match pat {
            None => Some(q),
            Some(p) => p.step(q, len + 1, sym),
        };
        let (q, utf8) = match b {
            b'"' if len >= min && pat.is_none_or(|p| p.can_close(q, len)) => {
                s.frames.pop();
                self.child_done(s, out);
                return;
            }
            b'"' => return,
            _ if len >= max => return,
            b'\\' => {
                let ok = pat.is_none_or(|p| p.any_in(q, len + 1, 0, 0xFFFF));
                if ok {
                    set(&mut s, len + 1, 1, 0, q, 0);
                    out.push(s);
                }
                return;
            }
            0x20..=0x7E => (step(b as usize), 0),
            0xC2..=0xDF => (step(OTHER), 1),
            0xE0..=0xEF => (step(OTHER), 2),
            0xF0..=0xF4 => (step(OTHER), 3),
            _ => return,
        };
        if let Some(q) = q {
            set(&mut s, len + 1, 0, utf8, q, b as u32);
            out.push(s);
        }
    }

    fn num_bounds(&self, node: NodeId) -> Option<NumBounds> {
        match self.node(node) {
            Node::Number { bounds, .. } => *bounds,
            _ => None,
        }
    }

    /// One byte of a number, or the byte after it.
    fn feed_num(
        &self,
        mut s: Stack,
        top: Frame,
        b: u8,
        out: &mut Vec<Stack>,
        depth: u32,
        work: &mut u32,
    ) {
        use NumSt::*;
        let Frame::Num {
            st,
            integer,
            len,
            node,
            neg,
            acc,
            nint,
            nfrac,
        } = top
        else {
            return;
        };
        let bounds = self.num_bounds(node);
        let go = match bounds {
            None => match (st, b) {
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
            },
            // Bounded: no exponent, a limited number of digits.
            Some(bd) => match (st, b) {
                (Start, b'-') => Some(Minus),
                (Start | Minus, b'0') => Some(Zero),
                (Start | Minus, b'1'..=b'9') => Some(Int),
                (Int, b'0'..=b'9') if (nint as u32) < BOUNDED_INT_DIGITS => Some(Int),
                (Zero | Int, b'.') if bd.frac > 0 => Some(Dot),
                (Dot | Frac, b'0'..=b'9') if nfrac < bd.frac => Some(Frac),
                _ => None,
            },
        };
        match go {
            Some(next) if len < MAX_NUMBER_LEN => {
                let (mut neg, mut acc, mut nint, mut nfrac) = (neg, acc, nint, nfrac);
                if let Some(bd) = bounds {
                    let d = b.wrapping_sub(b'0') as i128;
                    match next {
                        Minus => neg = true,
                        Zero => nint = 1,
                        Int => {
                            acc = acc * 10 + d;
                            nint += 1;
                        }
                        Frac => {
                            acc = acc * 10 + d;
                            nfrac += 1;
                        }
                        _ => {}
                    }
                    if !bd.feasible(next, neg, acc, nint, nfrac) {
                        return;
                    }
                }
                if let Some(f) = s.frames.last_mut() {
                    *f = Frame::Num {
                        st: next,
                        integer,
                        len: len + 1,
                        node,
                        neg,
                        acc,
                        nint,
                        nfrac,
                    };
                }
                out.push(s);
            }
            Some(_) => {}
            None if st.accepting() && bounds.is_none_or(|bd| bd.ends(st, neg, acc, nfrac)) => {
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
            Node::String { min, max, pattern } if b == b'"' => {
                s.frames.push(Frame::Str {
                    min: *min,
                    max: *max,
                    len: 0,
                    esc: 0,
                    utf8: 0,
                    pattern: pattern.unwrap_or(NO_PATTERN),
                    q: 0,
                    cp: 0,
                });
                out.push(s);
            }
            Node::Number { integer, .. } => {
                s.frames.push(Frame::Num {
                    st: NumSt::Start,
                    integer: *integer,
                    len: 0,
                    node,
                    neg: false,
                    acc: 0,
                    nint: 0,
                    nfrac: 0,
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
            [Frame::Num {
                st,
                node,
                neg,
                acc,
                nfrac,
                ..
            }] => {
                st.accepting()
                    && self
                        .num_bounds(*node)
                        .is_none_or(|b| b.ends(*st, *neg, *acc, *nfrac))
            }
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
                pattern: NO_PATTERN,
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
        let keyword = |schema: Value| match JsonConstraint::from_schema(&schema) {
            Err(JsonSchemaError::Unsupported { keyword, .. })
            | Err(JsonSchemaError::UnsupportedUse { keyword, .. }) => keyword,
            other => panic!("{schema}: {:?}", other.map(|_| ())),
        };
        assert_eq!(
            keyword(json!({"type": "array", "uniqueItems": true})),
            "uniqueItems"
        );
        assert_eq!(
            keyword(json!({"type": "string", "pattern": "(?=a)b"})),
            "pattern"
        );
        assert_eq!(
            keyword(json!({"type": "string", "pattern": r"\bx"})),
            "pattern"
        );
        assert_eq!(
            keyword(json!({"type": "number", "multipleOf": 0.01})),
            "multipleOf"
        );
        assert_eq!(keyword(json!({"multipleOf": 2.5})), "multipleOf");
        let e = JsonConstraint::from_schema(&json!({"type": "string", "pattern": "(a"}));
        assert!(matches!(e, Err(JsonSchemaError::Invalid { .. })));
        let e = JsonConstraint::from_schema(&json!({"$ref": "#/nowhere"}));
        assert!(matches!(e, Err(JsonSchemaError::Invalid { .. })));
        for empty in [
            json!({"type": "integer", "minimum": 3, "maximum": 2}),
            json!({"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 3}),
            json!({"type": "integer", "minimum": 1, "maximum": 4, "multipleOf": 5}),
            json!({"type": "number", "minimum": 1e300}),
            json!({"type": "string", "pattern": "^a{4}$", "maxLength": 3}),
        ] {
            let e = JsonConstraint::from_schema(&empty);
            assert!(matches!(e, Err(JsonSchemaError::Invalid { .. })), "{empty}");
        }
        assert!(JsonConstraint::from_schema(&json!({"type": "number", "multipleOf": 2})).is_ok());
    }

    #[test]
    fn patterns_hold_byte_by_byte() {
        let c = JsonConstraint::from_schema(&json!({
            "type": "string", "pattern": r"^[A-Z]{2}-\d{2,4}$"
        }))
        .unwrap();
        for ok in [r#""AB-12""#, r#""ZZ-0000""#, r#""\u0041B-12""#] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in [
            r#""AB-1""#,
            r#""ab-12""#,
            r#""AB-12345""#,
            r#""AB-12 ""#,
            "\"AB\"",
        ] {
            assert!(!accepts(&c, bad), "{bad}");
        }
        let mut c2 = JsonConstraint::from_schema(&json!({
            "type": "string", "pattern": r"^[A-Z]{2}-\d{2,4}$"
        }))
        .unwrap();
        c2.accept(b"\"AB-1");
        assert!(c2.allows(b"2") && !c2.allows(b"\"") && !c2.allows(b"x"));
        // Escapes that cannot lead anywhere are refused at their first
        // byte: no digit can be written as \u0030 here... but it can.
        assert!(c2.allows(b"\\u003"));
        assert!(!c2.allows(b"\\u004"));
        assert!(!c2.allows(b"\\n"));

        // `.` takes non-ASCII text and escapes, but not line breaks.
        let c = JsonConstraint::from_schema(&json!({
            "type": "string", "pattern": "^.{1,3}$"
        }))
        .unwrap();
        for ok in ["\"é\"", "\"a😀b\"", r#""\t\"x""#, r#""\u00e9""#] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in [
            "\"\"",
            "\"abcd\"",
            r#""a\nb""#,
            "\"\u{2028}\"",
            r#""\ud83d\ude00""#,
        ] {
            assert!(!accepts(&c, bad), "{bad}");
        }
        // Unanchored, with a length bound.
        let c = JsonConstraint::from_schema(&json!({
            "type": "string", "pattern": "(foo|ba+r)", "maxLength": 6
        }))
        .unwrap();
        for ok in [r#""foo""#, r#""xbaaar""#, r#""barxyz""#] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in [r#""fo""#, r#""xyzfoo1""#, r#""xyzbaaar""#] {
            assert!(!accepts(&c, bad), "{bad}");
        }
        // The pattern applies to strings only.
        let c = JsonConstraint::from_schema(&json!({"pattern": "^a"})).unwrap();
        for ok in [r#""abc""#, "12", "null", "[\"x\"]"] {
            assert!(accepts(&c, ok), "{ok}");
        }
        assert!(!accepts(&c, r#""ba""#));
    }

    #[test]
    fn lone_surrogates_and_bad_utf8_are_refused() {
        let c = JsonConstraint::object();
        assert!(accepts(
            &c,
            r#"{"a": "\ud83d\ude00 \u00e9"}"#.replace("\\ud83d\\ude00", "x").as_str()
        ));
        assert!(!accepts(&c, r#"{"a": "\ud83d"}"#));
        let mut c = JsonConstraint::object();
        c.accept(b"{\"a\": \"");
        assert!(!c.allows(b"\\uD8"));
        assert!(c.allows(b"\\uD7"));
        assert!(!c.allows(&[0xE0, 0x80]));
        assert!(!c.allows(&[0xED, 0xA0]));
        assert!(c.allows(&[0xE2, 0x80, 0xA8]));
    }

    #[test]
    fn integer_bounds_hold_digit_by_digit() {
        let c = JsonConstraint::from_schema(&json!({
            "type": "integer", "minimum": -5, "maximum": 120
        }))
        .unwrap();
        for ok in ["0", "-5", "120", "7", "99", "-1"] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in ["121", "-6", "1000", "01", "1.0", "1e2", "-"] {
            assert!(!accepts(&c, bad), "{bad}");
        }
        let mut c = c;
        c.accept(b"13");
        assert!(!c.allows(b"0") && c.can_end());
        let c = JsonConstraint::from_schema(&json!({
            "type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10.5
        }))
        .unwrap();
        assert!(accepts(&c, "1") && accepts(&c, "10"));
        assert!(!accepts(&c, "0") && !accepts(&c, "11") && !accepts(&c, "-1"));
        // Draft 4's boolean form.
        let c = JsonConstraint::from_schema(&json!({
            "type": "integer", "minimum": 2, "exclusiveMinimum": true
        }))
        .unwrap();
        assert!(accepts(&c, "3") && !accepts(&c, "2"));
        // Multiples: a digit is allowed only if some multiple still fits.
        let c = JsonConstraint::from_schema(&json!({
            "type": "integer", "minimum": 3, "maximum": 27, "multipleOf": 5
        }))
        .unwrap();
        for ok in ["5", "25", "10", "20"] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in ["3", "0", "30", "12", "-5"] {
            assert!(!accepts(&c, bad), "{bad}");
        }
        let mut c = c;
        assert!(!c.allows(b"3") && c.allows(b"2"));
        c.accept(b"2");
        assert!(!c.can_end() && c.allows(b"5") && c.allows(b"0") && !c.allows(b"1"));
        // Top level, inside objects and arrays alike.
        let c = JsonConstraint::from_schema(&json!({
            "type": "array", "items": {"type": "integer", "maximum": 9}
        }))
        .unwrap();
        assert!(accepts(&c, "[1, 9,-3]") && !accepts(&c, "[10]"));
    }

    #[test]
    fn number_bounds_hold_digit_by_digit() {
        let c = JsonConstraint::from_schema(&json!({
            "type": "number", "minimum": 0.5, "maximum": 1
        }))
        .unwrap();
        for ok in ["0.5", "1", "0.75", "1.00000000", "0.99999999"] {
            assert!(accepts(&c, ok), "{ok}");
        }
        for bad in [
            "0.49999999",
            "1.00000001",
            "1e0",
            "2",
            "0.4",
            "0.123456789",
            "-0.5",
        ] {
            assert!(!accepts(&c, bad), "{bad}");
        }
        let c = JsonConstraint::from_schema(&json!({
            "type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.3
        }))
        .unwrap();
        assert!(accepts(&c, "0.10000001") && accepts(&c, "0.29999999"));
        assert!(!accepts(&c, "0.1") && !accepts(&c, "0.3") && !accepts(&c, "0.30000000"));
        let c = JsonConstraint::from_schema(&json!({
            "type": "number", "minimum": -40.5, "maximum": -0.25
        }))
        .unwrap();
        assert!(accepts(&c, "-40.5") && accepts(&c, "-0.25") && accepts(&c, "-7"));
        assert!(!accepts(&c, "-40.51") && !accepts(&c, "-0.2") && !accepts(&c, "0"));
        // A whole multipleOf keeps a number whole.
        let c = JsonConstraint::from_schema(&json!({"type": "number", "multipleOf": 3})).unwrap();
        assert!(accepts(&c, "-9") && !accepts(&c, "4") && !accepts(&c, "3.0"));
    }

    #[test]
    fn bounds_agree_with_f64_comparisons_at_their_edges() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let bound = (rnd() % 2_000_000) as f64 / 1000.0 - 1000.0
                + [0.0, 1e-9, -1e-9, 0.1, 1.0 / 3.0][(rnd() % 5) as usize];
            for excl in [false, true] {
                let s = scaled_min(bound, excl, BOUNDED_FRAC_DIGITS);
                let read = |s: i128| -> f64 { decimal(s, BOUNDED_FRAC_DIGITS).parse().unwrap() };
                let ok = |v: f64| if excl { v > bound } else { v >= bound };
                assert!(ok(read(s)) && !ok(read(s - 1)), "{bound} {excl} {s}");
            }
        }
    }

    /// A JSON schema validator written apart from the constraint, for the
    /// keywords the tests use, with a backtracking regular-expression
    /// matcher (ECMA-262 reading of the supported subset).
    mod validator {
        use serde_json::Value;

        pub fn valid(root: &Value, schema: &Value, v: &Value) -> bool {
            let Some(o) = schema.as_object() else {
                return schema.as_bool().unwrap_or(false);
            };
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                let target = root.pointer(r.trim_start_matches('#')).unwrap();
                return valid(root, target, v);
            }
            let all = |k: &str, f: &dyn Fn(&Value) -> bool| o.get(k).is_none_or(f);
            let num = |k: &str| o.get(k).and_then(Value::as_f64);
            let type_ok = |t: &str| match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "number" => v.is_number(),
                "integer" => {
                    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0)
                }
                "boolean" => v.is_boolean(),
                "null" => v.is_null(),
                _ => false,
            };
            all("type", &|t| match t {
                Value::String(t) => type_ok(t),
                Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap())),
                _ => false,
            }) && all("enum", &|e| e.as_array().unwrap().contains(v))
                && all("const", &|c| c == v)
                && all("anyOf", &|a| {
                    a.as_array().unwrap().iter().any(|s| valid(root, s, v))
                })
                && all("oneOf", &|a| {
                    a.as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| valid(root, s, v))
                        .count()
                        == 1
                })
                && match v {
                    Value::Object(m) => {
                        let props = o.get("properties").and_then(Value::as_object);
                        all("required", &|r| {
                            r.as_array()
                                .unwrap()
                                .iter()
                                .all(|k| m.contains_key(k.as_str().unwrap()))
                        }) && m.iter().all(|(k, x)| match props.and_then(|p| p.get(k)) {
                            Some(s) => valid(root, s, x),
                            None => all("additionalProperties", &|a| valid(root, a, x)),
                        })
                    }
                    Value::Array(a) => {
                        all("items", &|s| a.iter().all(|x| valid(root, s, x)))
                            && num("minItems").is_none_or(|n| a.len() as f64 >= n)
                            && num("maxItems").is_none_or(|n| a.len() as f64 <= n)
                    }
                    Value::String(s) => {
                        let n = s.chars().count() as f64;
                        num("minLength").is_none_or(|m| n >= m)
                            && num("maxLength").is_none_or(|m| n <= m)
                            && all("pattern", &|p| search(p.as_str().unwrap(), s))
                    }
                    Value::Number(x) => {
                        let x = x.as_f64().unwrap();
                        num("minimum").is_none_or(|m| x >= m)
                            && num("maximum").is_none_or(|m| x <= m)
                            && num("exclusiveMinimum").is_none_or(|m| x > m)
                            && num("exclusiveMaximum").is_none_or(|m| x < m)
                            && num("multipleOf").is_none_or(|m| (x / m).fract() == 0.0)
                    }
                    _ => true,
                }
        }

        enum Re {
            Char(Box<dyn Fn(char) -> bool>),
            Seq(Vec<Re>),
            Alt(Vec<Re>),
            Rep(Box<Re>, usize, usize),
            Start,
            End,
        }

        fn class_escape(c: char) -> Box<dyn Fn(char) -> bool> {
            let word = |x: char| x.is_ascii_alphanumeric() || x == '_';
            let space = |x: char| x.is_whitespace() || x == '\u{feff}';
            match c {
                'd' => Box::new(|x: char| x.is_ascii_digit()),
                'D' => Box::new(|x: char| !x.is_ascii_digit()),
                'w' => Box::new(word),
                'W' => Box::new(move |x| !word(x)),
                's' => Box::new(space),
                'S' => Box::new(move |x| !space(x)),
                'n' => Box::new(|x| x == '\n'),
                't' => Box::new(|x| x == '\t'),
                'r' => Box::new(|x| x == '\r'),
                c => Box::new(move |x| x == c),
            }
        }

        fn alt(p: &[char], i: &mut usize) -> Re {
            let mut alts = vec![seq(p, i)];
            while p.get(*i) == Some(&'|') {
                *i += 1;
                alts.push(seq(p, i));
            }
            Re::Alt(alts)
        }

        fn seq(p: &[char], i: &mut usize) -> Re {
            let mut items = Vec::new();
            while let Some(&c) = p.get(*i) {
                if c == '|' || c == ')' {
                    break;
                }
                *i += 1;
                let atom = match c {
                    '^' => Re::Start,
                    '$' => Re::End,
                    '.' => Re::Char(Box::new(|x| !"\n\r\u{2028}\u{2029}".contains(x))),
                    '(' => {
                        if p.get(*i) == Some(&'?') {
                            *i += 2;
                        }
                        let r = alt(p, i);
                        *i += 1;
                        r
                    }
                    '\\' => {
                        *i += 1;
                        Re::Char(class_escape(p[*i - 1]))
                    }
                    '[' => {
                        let neg = p.get(*i) == Some(&'^');
                        if neg {
                            *i += 1;
                        }
                        let mut fs: Vec<Box<dyn Fn(char) -> bool>> = Vec::new();
                        while p[*i] != ']' {
                            let c = p[*i];
                            *i += 1;
                            if c == '\\' {
                                *i += 1;
                                fs.push(class_escape(p[*i - 1]));
                            } else if p[*i] == '-' && p[*i + 1] != ']' {
                                let hi = p[*i + 1];
                                *i += 2;
                                fs.push(Box::new(move |x| (c..=hi).contains(&x)));
                            } else {
                                fs.push(Box::new(move |x| x == c));
                            }
                        }
                        *i += 1;
                        Re::Char(Box::new(move |x| fs.iter().any(|f| f(x)) != neg))
                    }
                    c => Re::Char(Box::new(move |x| x == c)),
                };
                let (min, max) = match p.get(*i) {
                    Some('*') => (0, usize::MAX),
                    Some('+') => (1, usize::MAX),
                    Some('?') => (0, 1),
                    Some('{') => {
                        let end = *i + p[*i..].iter().position(|&c| c == '}').unwrap();
                        let body: String = p[*i + 1..end].iter().collect();
                        *i = end;
                        match body.split_once(',') {
                            None => (body.parse().unwrap(), body.parse().unwrap()),
                            Some((a, "")) => (a.parse().unwrap(), usize::MAX),
                            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        }
                    }
                    _ => {
                        items.push(atom);
                        continue;
                    }
                };
                *i += 1;
                if p.get(*i) == Some(&'?') {
                    *i += 1;
                }
                items.push(Re::Rep(Box::new(atom), min, max));
            }
            Re::Seq(items)
        }

        fn m(re: &Re, s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
            match re {
                Re::Char(f) => i < s.len() && f(s[i]) && k(i + 1),
                Re::Seq(v) => seq_m(v, s, i, k),
                Re::Alt(v) => v.iter().any(|r| m(r, s, i, &mut *k)),
                Re::Rep(r, min, max) => rep_m(r, *min, *max, s, i, k),
                Re::Start => i == 0 && k(i),
                Re::End => i == s.len() && k(i),
            }
        }

        fn seq_m(v: &[Re], s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
            match v.split_first() {
                None => k(i),
                Some((h, t)) => m(h, s, i, &mut |j| seq_m(t, s, j, &mut *k)),
            }
        }

        fn rep_m(
            r: &Re,
            min: usize,
            max: usize,
            s: &[char],
            i: usize,
            k: &mut dyn FnMut(usize) -> bool,
        ) -> bool {
            (min == 0 && k(i))
                || (max > 0
                    && m(r, s, i, &mut |j| {
                        (j > i || min > 0)
                            && rep_m(r, min.saturating_sub(1), max - 1, s, j, &mut *k)
                    }))
        }

        /// Whether `pattern` matches somewhere in `text`.
        pub fn search(pattern: &str, text: &str) -> bool {
            let p: Vec<char> = pattern.chars().collect();
            let re = alt(&p, &mut 0);
            let s: Vec<char> = text.chars().collect();
            (0..=s.len()).any(|i| m(&re, &s, i, &mut |_| true))
        }

        #[test]
        fn the_matcher_itself() {
            assert!(search(r"^[A-Z]{2}-\d{2,4}$", "AB-123"));
            assert!(!search(r"^[A-Z]{2}-\d{2,4}$", "AB-12345"));
            assert!(search(r"(foo|ba+r)", "xxbaar"));
            assert!(!search(r"^(foo|ba+r)$", "xxbaar"));
            assert!(search(r"^[^\s@]+@x\.(com|org)$", "é@x.org"));
            assert!(!search(r"^.$", "\n"));
        }
    }

    /// Random walks under the constraint: at every step some piece (a
    /// tokenizer's vocabulary has every byte) is allowed or the output may
    /// end, and every finished output validates against the schema.
    #[test]
    fn random_walks_always_validate() {
        let schemas = [
            json!({
                "type": "object",
                "properties": {
                    "code": {"type": "string", "pattern": r"^[A-Z]{2}-\d{2,4}$"},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "step": {"type": "integer", "multipleOf": 5, "minimum": -20, "exclusiveMaximum": 50},
                    "tag": {"type": "string", "pattern": "(foo|ba+r)", "maxLength": 8},
                    "mail": {"type": "string", "pattern": r"^[^@\s]+@[a-z]+\.(com|org)$"},
                    "temp": {"type": "number", "minimum": -40.5, "maximum": 40.25},
                    "word": {"type": "string", "pattern": r"^\w+\s\S\W?\D*$", "maxLength": 12}
                },
                "required": ["code", "age", "score", "step", "tag", "mail", "temp", "word"],
                "additionalProperties": false
            }),
            json!({
                "type": "array",
                "items": {"type": "string", "pattern": "^.{2,3}$"},
                "minItems": 1,
                "maxItems": 3
            }),
            json!({"type": "integer", "minimum": 1000, "maximum": 1005}),
            json!({"type": "number", "exclusiveMaximum": -0.5, "minimum": -3}),
            json!({"pattern": "^x", "minimum": 3, "maxLength": 4}),
            json!({
                "$defs": {"id": {"type": "string", "pattern": "^(?:[a-f0-9]{4}-)+[a-f0-9]{2}$", "maxLength": 16}},
                "type": "object",
                "properties": {"ids": {"type": "array", "items": {"$ref": "#/$defs/id"}}},
                "required": ["ids"]
            }),
        ];
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for piece in [
            "\"", "\": ", "\", \"", "}", "]", ", ", "12", "-", ".5", "0.", "abc", "AB-", "é", "😀",
            "\\n", "\\u00", "\\\"", "e+", "true", "null", "foo", "bar", "@ex", ".com", " ",
        ] {
            vocab.push(piece.as_bytes().to_vec());
        }
        let closing: Vec<usize> = (0..vocab.len())
            .filter(|&i| matches!(vocab[i].as_slice(), b"\"" | b"}" | b"]" | b","))
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for schema in &schemas {
            let (mut finished, mut walks) = (0, 0);
            for _ in 0..60 {
                walks += 1;
                let mut c = JsonConstraint::from_schema(schema).unwrap();
                let mut out = Vec::new();
                for _ in 0..400 {
                    let allowed: Vec<usize> =
                        (0..vocab.len()).filter(|&i| c.allows(&vocab[i])).collect();
                    if c.can_end() && (allowed.is_empty() || rnd(8) == 0) {
                        finished += 1;
                        let v: Value = serde_json::from_slice(&out)
                            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
                        assert!(validator::valid(schema, schema, &v), "{schema}\n{v}");
                        break;
                    }
                    assert!(
                        !allowed.is_empty(),
                        "stuck at {}",
                        String::from_utf8_lossy(&out)
                    );
                    let close: Vec<usize> = closing
                        .iter()
                        .copied()
                        .filter(|i| allowed.contains(i))
                        .collect();
                    let pick = if !close.is_empty() && rnd(3) == 0 {
                        close[rnd(close.len())]
                    } else {
                        allowed[rnd(allowed.len())]
                    };
                    c.accept(&vocab[pick]);
                    out.extend_from_slice(&vocab[pick]);
                }
            }
            assert!(
                finished * 2 >= walks,
                "{schema}: {finished} of {walks} finished"
            );
        }
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
