//! JSON schema `pattern`: a practical subset of regular expressions,
//! compiled to a DFA over characters so that a string can be held to it
//! character by character.
//!
//! Supported: literal ASCII characters (metacharacters escaped with `\`),
//! `.`, classes `[...]` and `[^...]` with ranges, `\d \w \s \D \W \S`,
//! `\t \n \r \f \v`, `\xHH` and `\uHHHH` below U+0080, groups `(...)` and
//! `(?:...)`, alternation `|`, the quantifiers `? * + {n} {n,} {n,m}` (lazy
//! forms too: laziness does not change what matches), and `^` / `$` at the
//! start and end of the pattern or of one of its top-level alternatives.
//! Without them the pattern may match anywhere in the string, as JSON
//! schema's `pattern` does. Anything else (lookaround, backreferences,
//! `\b`, Unicode classes, non-ASCII literals, ...) is refused.
//!
//! The characters a string may hold are the ASCII ones and [`OTHER`]: every
//! character above U+007F except the line separators U+2028 and U+2029.
//! Validators read patterns in different dialects (ECMA-262; Python's `re`,
//! whose `\d`, `\w` and `\s` know Unicode), so a class matches [`OTHER`]
//! only where every dialect agrees that every such character matches: `.`
//! and negated classes made only of literal characters and ranges. Output
//! held to the DFA therefore matches the pattern in all of them.

/// Symbols of the DFA: ASCII characters by their code, then [`OTHER`].
pub const SYMBOLS: usize = 129;
/// Any character above U+007F except U+2028 and U+2029.
pub const OTHER: usize = 128;
const DEAD: u32 = u32::MAX;

/// NFA states at most (repetitions are unrolled).
const MAX_NFA: usize = 20_000;
/// DFA states at most.
const MAX_DFA: usize = 4096;
/// Cells of the (state, length) table at most, when a length bound
/// applies too.
const MAX_CELLS: usize = 1 << 22;
/// Largest count in `{n,m}`.
const MAX_REPEAT: u32 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum PatternError {
    /// Valid in some dialect, but outside the supported subset.
    Unsupported(String),
    Invalid(String),
    TooComplex(String),
}

type Set = [u64; 3];

fn set_has(s: &Set, sym: usize) -> bool {
    s[sym / 64] & (1 << (sym % 64)) != 0
}

fn set_add(s: &mut Set, sym: usize) {
    s[sym / 64] |= 1 << (sym % 64);
}

fn set_of(f: impl Fn(usize) -> bool) -> Set {
    let mut s = [0; 3];
    for sym in 0..SYMBOLS {
        if f(sym) {
            set_add(&mut s, sym);
        }
    }
    s
}

/// Whitespace in every dialect (ECMA-262 and Python agree on these).
fn is_space(c: usize) -> bool {
    matches!(c, 0x09..=0x0D | 0x20)
}

/// What no dialect's `\s` matches: Python's `\s` also takes 0x1C..=0x1F.
fn is_not_space(c: usize) -> bool {
    c < 128 && !is_space(c) && !(0x1C..=0x1F).contains(&c)
}

fn is_word(c: usize) -> bool {
    c < 128 && (c as u8).is_ascii_alphanumeric() || c == b'_' as usize
}

#[derive(Debug, Clone)]
enum Ast {
    Set(Set),
    Cat(Vec<Ast>),
    Alt(Vec<Ast>),
    Rep(Box<Ast>, u32, Option<u32>),
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

fn unsupported(what: impl Into<String>) -> PatternError {
    PatternError::Unsupported(what.into())
}

fn invalid(what: impl Into<String>) -> PatternError {
    PatternError::Invalid(what.into())
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// Alternatives inside a group, up to (not including) `)` or the end.
    fn alternatives(&mut self, depth: usize) -> Result<Ast, PatternError> {
        let mut alts = vec![self.sequence(depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.sequence(depth)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Ast::Cat(Vec::new()))
        } else {
            Ast::Alt(alts)
        })
    }

    /// A top-level alternative: whether it starts with `^`, its body,
    /// whether it ends with `$`.
    fn branch(&mut self) -> Result<(bool, Ast, bool), PatternError> {
        let start = self.peek() == Some('^');
        if start {
            self.pos += 1;
        }
        let mut items = Vec::new();
        let mut end = false;
        while let Some(c) = self.peek() {
            if c == '|' {
                break;
            }
            if c == '$' && matches!(self.peek2(), None | Some('|')) {
                self.pos += 1;
                end = true;
                break;
            }
            items.push(self.quantified(0)?);
        }
        Ok((start, Ast::Cat(items), end))
    }

    fn sequence(&mut self, depth: usize) -> Result<Ast, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            items.push(self.quantified(depth)?);
        }
        Ok(Ast::Cat(items))
    }

    fn quantified(&mut self, depth: usize) -> Result<Ast, PatternError> {
        let atom = self.atom(depth)?;
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.pos += 1;
                self.counts()?
            }
            _ => return Ok(atom),
        };
        self.pos += 1;
        if self.peek() == Some('?') {
            // Lazy: the same strings match.
            self.pos += 1;
        }
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return Err(unsupported("a quantifier right after a quantifier"));
        }
        Ok(Ast::Rep(Box::new(atom), min, max))
    }

    /// `n}`, `n,}` or `n,m}` after a `{`; leaves the position on the `}`.
    fn counts(&mut self) -> Result<(u32, Option<u32>), PatternError> {
        let number = |p: &mut Parser| -> Option<u32> {
            let from = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            let s: String = p.chars[from..p.pos].iter().collect();
            if s.is_empty() {
                None
            } else {
                Some(s.parse().unwrap_or(u32::MAX))
            }
        };
        let bad = || unsupported("'{' that is not a quantifier {n}, {n,} or {n,m} (write \\{)");
        let min = number(self).ok_or_else(bad)?;
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            number(self)
        } else {
            Some(min)
        };
        if self.peek() != Some('}') {
            return Err(bad());
        }
        if max.is_some_and(|m| m < min) {
            return Err(invalid(format!(
                "{{{min},{}}} counts down",
                max.unwrap_or(0)
            )));
        }
        if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
            return Err(PatternError::TooComplex(format!(
                "repetition counts above {MAX_REPEAT}"
            )));
        }
        Ok((min, max))
    }

    fn atom(&mut self, depth: usize) -> Result<Ast, PatternError> {
        if depth > 32 {
            return Err(PatternError::TooComplex("groups nested too deeply".into()));
        }
        let Some(c) = self.next() else {
            return Err(invalid("unexpected end"));
        };
        match c {
            '(' => {
                if self.peek() == Some('?') {
                    if self.peek2() == Some(':') {
                        self.pos += 2;
                    } else {
                        return Err(unsupported(
                            "group extensions other than (?:...) (lookaround, named groups, flags)",
                        ));
                    }
                }
                let inner = self.alternatives(depth + 1)?;
                if self.next() != Some(')') {
                    return Err(invalid("unclosed '('"));
                }
                Ok(inner)
            }
            ')' => Err(invalid("unmatched ')'")),
            '[' => self.class(),
            '.' => Ok(Ast::Set(set_of(|s| s != 0x0A && s != 0x0D))),
            '\\' => self.escape(false).map(|e| Ast::Set(e.set())),
            '*' | '+' | '?' => Err(invalid(format!("'{c}' with nothing to repeat"))),
            '{' => Err(unsupported("'{' that is not a quantifier (write \\{)")),
            '^' | '$' => Err(unsupported(
                "'^' and '$' other than at the start and end of the pattern or of a top-level alternative",
            )),
            c if c.is_ascii() => Ok(Ast::Set(set_of(|s| s == c as usize))),
            _ => Err(unsupported("non-ASCII characters")),
        }
    }

    fn escape(&mut self, in_class: bool) -> Result<Escaped, PatternError> {
        let Some(c) = self.next() else {
            return Err(invalid("'\\' at the end"));
        };
        let class = |s: Set| Ok(Escaped::Class(s));
        match c {
            'd' => class(set_of(|s| (0x30..=0x39).contains(&s))),
            'D' => class(set_of(|s| s < 128 && !(0x30..=0x39).contains(&s))),
            'w' => class(set_of(is_word)),
            'W' => class(set_of(|s| s < 128 && !is_word(s))),
            's' => class(set_of(is_space)),
            'S' => class(set_of(is_not_space)),
            't' => Ok(Escaped::Char(0x09)),
            'n' => Ok(Escaped::Char(0x0A)),
            'v' => Ok(Escaped::Char(0x0B)),
            'f' => Ok(Escaped::Char(0x0C)),
            'r' => Ok(Escaped::Char(0x0D)),
            'b' if in_class => Ok(Escaped::Char(0x08)),
            'x' | 'u' => {
                let n = if c == 'x' { 2 } else { 4 };
                let mut v = 0u32;
                for _ in 0..n {
                    let d = self
                        .next()
                        .and_then(|h| h.to_digit(16))
                        .ok_or_else(|| invalid(format!("\\{c} needs {n} hex digits")))?;
                    v = v * 16 + d;
                }
                if v >= 0x80 {
                    return Err(unsupported("non-ASCII characters"));
                }
                Ok(Escaped::Char(v as usize))
            }
            c if c.is_ascii_punctuation() => Ok(Escaped::Char(c as usize)),
            c => Err(unsupported(format!(
                "the escape \\{c} (word boundaries, backreferences, Unicode classes, ...)"
            ))),
        }
    }

    fn class(&mut self) -> Result<Ast, PatternError> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        if self.peek() == Some(']') {
            return Err(unsupported(
                "']' first in a class (dialects differ; write \\])",
            ));
        }
        let mut set = [0u64; 3];
        let mut only_chars = true;
        loop {
            let c = self.next().ok_or_else(|| invalid("unclosed '['"))?;
            let item = match c {
                ']' => break,
                '\\' => self.escape(true)?,
                '[' => return Err(unsupported("'[' inside a class (write \\[)")),
                c if c.is_ascii() => Escaped::Char(c as usize),
                _ => return Err(unsupported("non-ASCII characters")),
            };
            match item {
                Escaped::Class(s) => {
                    only_chars = false;
                    for (a, b) in set.iter_mut().zip(s) {
                        *a |= b;
                    }
                }
                Escaped::Char(lo) => {
                    let range = self.peek() == Some('-') && !matches!(self.peek2(), Some(']'));
                    if !range {
                        set_add(&mut set, lo);
                        continue;
                    }
                    self.pos += 1;
                    let hi = match self.next() {
                        Some('\\') => match self.escape(true)? {
                            Escaped::Char(h) => h,
                            Escaped::Class(_) => {
                                return Err(invalid("a class escape as a range end"))
                            }
                        },
                        Some(h) if h.is_ascii() && h != '[' => h as usize,
                        Some('[') => return Err(unsupported("'[' inside a class (write \\[)")),
                        Some(_) => return Err(unsupported("non-ASCII characters")),
                        None => return Err(invalid("unclosed '['")),
                    };
                    if hi < lo {
                        return Err(invalid("a class range out of order"));
                    }
                    for s in lo..=hi {
                        set_add(&mut set, s);
                    }
                }
            }
        }
        if negated {
            let mut neg = set_of(|s| s < 128 && !set_has(&set, s));
            if only_chars {
                set_add(&mut neg, OTHER);
            }
            set = neg;
        }
        Ok(Ast::Set(set))
    }
}

enum Escaped {
    Char(usize),
    Class(Set),
}

impl Escaped {
    fn set(self) -> Set {
        match self {
            Escaped::Char(c) => set_of(|s| s == c),
            Escaped::Class(s) => s,
        }
    }
}

/// Thompson NFA: each state has epsilon edges (`None`) and symbol edges.
struct Nfa {
    edges: Vec<Vec<(Option<Set>, u32)>>,
}

impl Nfa {
    fn state(&mut self) -> Result<u32, PatternError> {
        if self.edges.len() >= MAX_NFA {
            return Err(PatternError::TooComplex(
                "the pattern unrolls too far".into(),
            ));
        }
        self.edges.push(Vec::new());
        Ok(self.edges.len() as u32 - 1)
    }

    fn eps(&mut self, from: u32, to: u32) {
        self.edges[from as usize].push((None, to));
    }

    /// Adds `ast` starting at `from`; returns where it ends.
    fn emit(&mut self, ast: &Ast, from: u32) -> Result<u32, PatternError> {
        match ast {
            Ast::Set(s) => {
                let to = self.state()?;
                self.edges[from as usize].push((Some(*s), to));
                Ok(to)
            }
            Ast::Cat(v) => {
                let mut at = from;
                for a in v {
                    at = self.emit(a, at)?;
                }
                Ok(at)
            }
            Ast::Alt(v) => {
                let to = self.state()?;
                for a in v {
                    let s = self.state()?;
                    self.eps(from, s);
                    let e = self.emit(a, s)?;
                    self.eps(e, to);
                }
                Ok(to)
            }
            Ast::Rep(a, min, max) => {
                let mut at = from;
                for _ in 0..*min {
                    at = self.emit(a, at)?;
                }
                let to = self.state()?;
                match max {
                    None => {
                        let lp = self.state()?;
                        self.eps(at, lp);
                        let e = self.emit(a, lp)?;
                        self.eps(e, lp);
                        self.eps(lp, to);
                    }
                    Some(max) => {
                        self.eps(at, to);
                        for _ in *min..*max {
                            at = self.emit(a, at)?;
                            self.eps(at, to);
                        }
                    }
                }
                Ok(to)
            }
        }
    }

    fn closure(&self, states: &mut Vec<u32>) {
        let mut seen = vec![false; self.edges.len()];
        let mut stack = std::mem::take(states);
        while let Some(s) = stack.pop() {
            if std::mem::replace(&mut seen[s as usize], true) {
                continue;
            }
            states.push(s);
            for &(sym, to) in &self.edges[s as usize] {
                if sym.is_none() && !seen[to as usize] {
                    stack.push(to);
                }
            }
        }
        states.sort_unstable();
    }
}

/// A pattern together with a string's length bounds (in characters).
#[derive(Debug)]
pub struct Pattern {
    /// `[state * SYMBOLS + symbol]`: the next state or `DEAD`.
    trans: Vec<u32>,
    accept: Vec<bool>,
    /// `[state * (cap + 1) + length]`: whether a string that reached
    /// `state` with `length` characters can still end within the bounds.
    alive: Vec<bool>,
    min: u32,
    max: u32,
    /// Lengths tracked; without a maximum, lengths past `min` are alike.
    cap: u32,
}

impl Pattern {
    pub fn new(src: &str, min: u32, max: u32) -> Result<Pattern, PatternError> {
        let mut p = Parser {
            chars: src.chars().collect(),
            pos: 0,
        };
        let mut branches = vec![p.branch()?];
        while p.peek() == Some('|') {
            p.pos += 1;
            branches.push(p.branch()?);
        }
        if p.pos < p.chars.len() {
            return Err(invalid("unmatched ')'"));
        }
        // Unanchored ends match anything: the pattern is searched for.
        let all = set_of(|_| true);
        let mut nfa = Nfa { edges: Vec::new() };
        let start = nfa.state()?;
        let accept = nfa.state()?;
        for (anchored_start, ast, anchored_end) in &branches {
            let b = nfa.state()?;
            nfa.eps(start, b);
            let mut at = b;
            if !anchored_start {
                at = nfa.state()?;
                nfa.eps(b, at);
                nfa.edges[at as usize].push((Some(all), at));
            }
            at = nfa.emit(ast, at)?;
            if !anchored_end {
                let tail = nfa.state()?;
                nfa.eps(at, tail);
                nfa.edges[tail as usize].push((Some(all), tail));
                at = tail;
            }
            nfa.eps(at, accept);
        }
        let (trans, accepting) = determinize(&nfa, start, accept)?;
        let n = accepting.len();
        let cap = if max == u32::MAX { min } else { max };
        if n.saturating_mul(cap as usize + 1) > MAX_CELLS {
            return Err(PatternError::TooComplex(
                "the pattern with these length bounds".into(),
            ));
        }
        let w = cap as usize + 1;
        let mut alive = vec![false; n * w];
        // Lengths at `cap` without a maximum loop onto themselves: a fixed
        // point there, then the lower lengths from the higher ones.
        if max == u32::MAX {
            let l = cap as usize;
            let mut changed = true;
            for q in 0..n {
                alive[q * w + l] = accepting[q];
            }
            while changed {
                changed = false;
                for q in 0..n {
                    if !alive[q * w + l]
                        && (0..SYMBOLS).any(|s| {
                            let t = trans[q * SYMBOLS + s];
                            t != DEAD && alive[t as usize * w + l]
                        })
                    {
                        alive[q * w + l] = true;
                        changed = true;
                    }
                }
            }
        }
        let top = if max == u32::MAX {
            cap as usize
        } else {
            cap as usize + 1
        };
        for l in (0..top).rev() {
            for q in 0..n {
                let here = accepting[q] && l as u32 >= min;
                let on = (l as u32) < max
                    && (0..SYMBOLS).any(|s| {
                        let t = trans[q * SYMBOLS + s];
                        t != DEAD && alive[t as usize * w + (l + 1).min(cap as usize)]
                    });
                alive[q * w + l] = here || on;
            }
        }
        if !alive[0] {
            return Err(invalid(
                "no string within minLength/maxLength matches the pattern",
            ));
        }
        Ok(Pattern {
            trans,
            accept: accepting,
            alive,
            min,
            max,
            cap,
        })
    }

    fn is_alive(&self, q: u32, len: u32) -> bool {
        len <= self.max
            && self.alive[q as usize * (self.cap as usize + 1) + len.min(self.cap) as usize]
    }

    /// The state after one more character `sym`, the string then holding
    /// `len` characters, if the string can still end well.
    pub fn step(&self, q: u32, len: u32, sym: usize) -> Option<u32> {
        let t = self.trans[q as usize * SYMBOLS + sym];
        (t != DEAD && self.is_alive(t, len)).then_some(t)
    }

    /// Whether some character with a code in `lo..=hi` may come next.
    pub fn any_in(&self, q: u32, len: u32, lo: u32, hi: u32) -> bool {
        let ascii = (lo..=hi.min(127)).any(|c| self.step(q, len, c as usize).is_some());
        ascii || (other_in(lo, hi) && self.step(q, len, OTHER).is_some())
    }

    /// Whether the string may end here.
    pub fn can_close(&self, q: u32, len: u32) -> bool {
        self.accept[q as usize] && len >= self.min
    }
}

/// Whether `lo..=hi` holds a character of [`OTHER`] that a `\u` escape can
/// write on its own (surrogates cannot).
fn other_in(lo: u32, hi: u32) -> bool {
    let lo = lo.max(0x80);
    if lo > hi {
        return false;
    }
    let overlap = |a: u32, b: u32| {
        let (x, y) = (lo.max(a), hi.min(b));
        if x > y {
            0
        } else {
            y - x + 1
        }
    };
    hi - lo + 1 > overlap(0xD800, 0xDFFF) + overlap(0x2028, 0x2029)
}

fn determinize(nfa: &Nfa, start: u32, accept: u32) -> Result<(Vec<u32>, Vec<bool>), PatternError> {
    use std::collections::HashMap;
    let mut first = vec![start];
    nfa.closure(&mut first);
    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut sets = vec![first.clone()];
    ids.insert(first, 0);
    let mut trans = Vec::new();
    let mut accepting = Vec::new();
    let mut i = 0;
    while i < sets.len() {
        let cur = sets[i].clone();
        accepting.push(cur.contains(&accept));
        for sym in 0..SYMBOLS {
            let mut next: Vec<u32> = Vec::new();
            for &s in &cur {
                for (set, to) in &nfa.edges[s as usize] {
                    if set.is_some_and(|set| set_has(&set, sym)) {
                        next.push(*to);
                    }
                }
            }
            if next.is_empty() {
                trans.push(DEAD);
                continue;
            }
            nfa.closure(&mut next);
            let id = match ids.get(&next) {
                Some(&id) => id,
                None => {
                    if sets.len() >= MAX_DFA {
                        return Err(PatternError::TooComplex(format!(
                            "the pattern needs more than {MAX_DFA} states"
                        )));
                    }
                    let id = sets.len() as u32;
                    ids.insert(next.clone(), id);
                    sets.push(next);
                    id
                }
            };
            trans.push(id);
        }
        i += 1;
    }
    Ok((trans, accepting))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the whole of `text` is accepted, walking the DFA.
    fn matches(p: &Pattern, text: &str) -> bool {
        let mut q = 0;
        let mut len = 0;
        for c in text.chars() {
            let sym = if (c as u32) < 128 { c as usize } else { OTHER };
            len += 1;
            match p.step(q, len, sym) {
                Some(t) => q = t,
                None => return false,
            }
        }
        p.can_close(q, len)
    }

    #[test]
    fn anchors_classes_and_quantifiers() {
        let p = Pattern::new(r"^[A-Z]{2}-\d{3,4}(x|yz)?$", 0, u32::MAX).unwrap();
        for ok in ["AB-123", "ZZ-0000x", "QQ-999yz"] {
            assert!(matches(&p, ok), "{ok}");
        }
        for bad in ["", "AB-12", "ab-123", "AB-12345", "AB-123y", "AB-123 "] {
            assert!(!matches(&p, bad), "{bad}");
        }
        // Unanchored: anywhere in the string.
        let p = Pattern::new(r"\d+", 0, u32::MAX).unwrap();
        assert!(matches(&p, "abc 42 é"));
        assert!(!matches(&p, "abc"));
        let p = Pattern::new(r"^a|b$", 0, u32::MAX).unwrap();
        assert!(matches(&p, "ax") && matches(&p, "xb") && !matches(&p, "xa"));
        let p = Pattern::new(r"^[^\s@]+@[^\s@.]+\.[a-z]{2,}$", 0, u32::MAX).unwrap();
        assert!(matches(&p, "bob@example.org") && !matches(&p, "bob@ex ample.org"));
        let p = Pattern::new(r"^[^ab]*$", 0, u32::MAX).unwrap();
        assert!(matches(&p, "xyzé") && !matches(&p, "xaz"));
        let p = Pattern::new(r"^.+$", 0, u32::MAX).unwrap();
        assert!(matches(&p, "é\t") && !matches(&p, "a\nb"));
    }

    #[test]
    fn length_bounds_combine_with_the_pattern() {
        let p = Pattern::new(r"^(ab)+$", 3, 6).unwrap();
        assert!(!matches(&p, "ab"));
        assert!(matches(&p, "abab") && matches(&p, "ababab"));
        // After "ababab" nothing more fits; after "a" only "b".
        assert!(p.step(0, 1, b'b' as usize).is_none());
        assert!(matches!(
            Pattern::new(r"^a{5}$", 0, 3),
            Err(PatternError::Invalid(_))
        ));
    }

    #[test]
    fn outside_the_subset_is_refused() {
        for (pat, unsupported) in [
            (r"(?=a)", true),
            (r"(a)\1", true),
            (r"\bword", true),
            (r"\p{L}", true),
            ("é", true),
            (r"a{2", true),
            (r"a^b", true),
            (r"[]a]", true),
            (r"(a", false),
            (r"*a", false),
            (r"[z-a]", false),
        ] {
            match Pattern::new(pat, 0, u32::MAX) {
                Err(PatternError::Unsupported(_)) if unsupported => {}
                Err(PatternError::Invalid(_)) if !unsupported => {}
                other => panic!("{pat}: {other:?}"),
            }
        }
        assert!(matches!(
            Pattern::new(r"a{1000}{2}", 0, u32::MAX),
            Err(PatternError::Unsupported(_))
        ));
        assert!(matches!(
            Pattern::new(r"(a{1000}){1000}", 0, u32::MAX),
            Err(PatternError::TooComplex(_))
        ));
    }
}
