//! Pre-tokenizers: split text into the words that BPE merges within.
//!
//! Each splitter is a hand-written state machine equivalent to the regex the
//! model was trained with (as Hugging Face runs it through Oniguruma), so there
//! is no backtracking and `\s+(?!\S)` needs no look-ahead support.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

use crate::error::TokenizerError;

/// Llama 3's split regex, as in Meta's tokenizer.json.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split regex, used by Hugging Face's ByteLevel pre-tokenizer with `use_regex`.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// How text is cut into words before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// Llama 3 (`llama-bpe`): [`LLAMA3_REGEX`].
    Llama3,
    /// GPT-2 (`gpt-2`): [`GPT2_REGEX`].
    Gpt2,
    /// SmolLM / StarCoder: every `\p{N}` char on its own, then [`GPT2_REGEX`]
    /// on the rest (Hugging Face `Digits(individual_digits)` + `ByteLevel`).
    Smollm,
    /// llama.cpp's fallback for BPE vocabularies without a known pre-tokenizer:
    /// runs of `[\p{P}$+<=>^~|]`, then [`GPT2_REGEX`], then `\p{N}+`, then
    /// `[0-9]{3}`, each applied to the pieces of the one before.
    Default,
}

impl PreTokenizer {
    /// Maps a GGUF `tokenizer.ggml.pre` name, as llama.cpp's
    /// `llama-vocab.cpp` does for the names that share these splitters.
    pub fn from_gguf_name(name: &str) -> Result<Self, TokenizerError> {
        Ok(match name {
            "llama-bpe" | "llama3" | "llama-v3" => PreTokenizer::Llama3,
            "smollm" | "starcoder" => PreTokenizer::Smollm,
            "gpt-2" | "gpt2" => PreTokenizer::Gpt2,
            "default" | "" => PreTokenizer::Default,
            other => return Err(TokenizerError::UnknownPreTokenizer(other.to_string())),
        })
    }

    /// Splits `text` into words; concatenated they give `text` back.
    pub fn split<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        self.split_into(text, &mut out);
        out
    }

    /// Like [`PreTokenizer::split`], appending to `out`.
    pub fn split_into<'a>(&self, text: &'a str, out: &mut Vec<&'a str>) {
        if text.is_empty() {
            return;
        }
        match self {
            PreTokenizer::Llama3 => with_chars(text, |t| split_llama3(t, out)),
            PreTokenizer::Gpt2 => with_chars(text, |t| split_gpt2(t, out)),
            PreTokenizer::Smollm => {
                // Digits are isolated before the regex runs, so " 12" is " ", "1", "2".
                isolate(
                    text,
                    |c| class_of(c) == Class::Number,
                    true,
                    |piece, is_digit| {
                        if is_digit {
                            out.push(piece);
                        } else {
                            with_chars(piece, |t| split_gpt2(t, out));
                        }
                    },
                );
            }
            PreTokenizer::Default => split_default(text, out),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class_of(c: char) -> Class {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Class::Letter,
            '0'..='9' => Class::Number,
            '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ' => Class::Space,
            _ => Class::Other,
        };
    }
    // `\s` in Oniguruma is the White_Space property, which is also Rust's.
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        Gc::UppercaseLetter
        | Gc::LowercaseLetter
        | Gc::TitlecaseLetter
        | Gc::ModifierLetter
        | Gc::OtherLetter => Class::Letter,
        Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// `\p{P}`; among ASCII this is all punctuation except the symbols `$+<=>^`|~`.
fn is_punct(c: char) -> bool {
    matches!(
        get_general_category(c),
        Gc::ConnectorPunctuation
            | Gc::DashPunctuation
            | Gc::OpenPunctuation
            | Gc::ClosePunctuation
            | Gc::InitialPunctuation
            | Gc::FinalPunctuation
            | Gc::OtherPunctuation
    )
}

/// A text segment decoded into chars, with their classes and byte offsets.
struct Chars<'a> {
    text: &'a str,
    chars: Vec<char>,
    class: Vec<Class>,
    /// Byte offset of each char, plus `text.len()` at the end.
    offs: Vec<usize>,
}

impl<'a> Chars<'a> {
    fn len(&self) -> usize {
        self.chars.len()
    }
    fn slice(&self, from: usize, to: usize) -> &'a str {
        &self.text[self.offs[from]..self.offs[to]]
    }
    fn class_at(&self, i: usize) -> Option<Class> {
        self.class.get(i).copied()
    }
}

fn with_chars<'a>(text: &'a str, f: impl FnOnce(&Chars<'a>)) {
    let n = text.len();
    let mut chars = Vec::with_capacity(n);
    let mut class = Vec::with_capacity(n);
    let mut offs = Vec::with_capacity(n + 1);
    for (i, c) in text.char_indices() {
        chars.push(c);
        class.push(class_of(c));
        offs.push(i);
    }
    offs.push(n);
    f(&Chars {
        text,
        chars,
        class,
        offs,
    });
}

/// Case-insensitive `'s|'t|'re|'ve|'m|'ll|'d` (or case-sensitive) at `pos`;
/// returns the match length in chars.
fn contraction(t: &Chars, pos: usize, fold: bool) -> Option<usize> {
    if t.chars[pos] != '\'' {
        return None;
    }
    let low = |i: usize| -> Option<char> {
        let c = *t.chars.get(i)?;
        if !fold {
            return Some(c);
        }
        // Oniguruma matches by Unicode case folding, under which the long s
        // (U+017F) folds to 's'; no other char folds onto these letters.
        Some(match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            '\u{17f}' => 's',
            _ => c,
        })
    };
    match low(pos + 1)? {
        's' | 't' | 'm' | 'd' => Some(2),
        a @ ('r' | 'v' | 'l') => {
            let b = low(pos + 2)?;
            let ok = matches!((a, b), ('r', 'e') | ('v', 'e') | ('l', 'l'));
            ok.then_some(3)
        }
        _ => None,
    }
}

fn run_end(t: &Chars, mut i: usize, class: Class) -> usize {
    while t.class_at(i) == Some(class) {
        i += 1;
    }
    i
}

/// Length of `\s+(?!\S)|\s+` at `pos`, where the run of whitespace starting
/// there is `run` chars long: the last whitespace char before a non-space is
/// left to start the next word.
fn trailing_space(t: &Chars, pos: usize, run: usize) -> usize {
    if run > 1 && pos + run < t.len() {
        run - 1
    } else {
        run
    }
}

fn split_llama3<'a>(t: &Chars<'a>, out: &mut Vec<&'a str>) {
    let n = t.len();
    let mut pos = 0;
    while pos < n {
        let c = t.chars[pos];
        let cl = t.class[pos];
        let end = 'm: {
            if let Some(len) = contraction(t, pos, true) {
                break 'm pos + len;
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if cl == Class::Letter {
                break 'm run_end(t, pos + 1, Class::Letter);
            }
            if c != '\r'
                && c != '\n'
                && cl != Class::Number
                && t.class_at(pos + 1) == Some(Class::Letter)
            {
                break 'm run_end(t, pos + 2, Class::Letter);
            }
            // \p{N}{1,3}
            if cl == Class::Number {
                let mut e = pos + 1;
                while e < pos + 3 && t.class_at(e) == Some(Class::Number) {
                    e += 1;
                }
                break 'm e;
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            let p = if c == ' ' { pos + 1 } else { pos };
            if t.class_at(p) == Some(Class::Other) {
                let mut e = run_end(t, p, Class::Other);
                while e < n && matches!(t.chars[e], '\r' | '\n') {
                    e += 1;
                }
                break 'm e;
            }
            // Only whitespace is left here.
            let run = run_end(t, pos, Class::Space) - pos;
            // \s*[\r\n]+ : up to the last line break of the run.
            if let Some(last) = (pos..pos + run)
                .rev()
                .find(|&i| matches!(t.chars[i], '\r' | '\n'))
            {
                break 'm last + 1;
            }
            pos + trailing_space(t, pos, run.max(1))
        };
        out.push(t.slice(pos, end));
        pos = end;
    }
}

fn split_gpt2<'a>(t: &Chars<'a>, out: &mut Vec<&'a str>) {
    let n = t.len();
    let mut pos = 0;
    while pos < n {
        let c = t.chars[pos];
        let end = 'm: {
            if let Some(len) = contraction(t, pos, false) {
                break 'm pos + len;
            }
            // ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+'
            let p = if c == ' ' { pos + 1 } else { pos };
            if let Some(k @ (Class::Letter | Class::Number | Class::Other)) = t.class_at(p) {
                break 'm run_end(t, p, k);
            }
            let run = run_end(t, pos, Class::Space) - pos;
            pos + trailing_space(t, pos, run.max(1))
        };
        out.push(t.slice(pos, end));
        pos = end;
    }
}

/// Calls `f` on the maximal runs of chars for which `pred` holds (`true`) and
/// on the text between them (`false`), in order. With `single`, each matching
/// char is its own run.
fn isolate<'a>(
    text: &'a str,
    pred: impl Fn(char) -> bool,
    single: bool,
    mut f: impl FnMut(&'a str, bool),
) {
    let mut start = 0;
    let mut in_match = false;
    for (i, c) in text.char_indices() {
        let m = pred(c);
        if i > start && (m != in_match || (m && single)) {
            f(&text[start..i], in_match);
            start = i;
        }
        in_match = m;
    }
    if start < text.len() {
        f(&text[start..], in_match);
    }
}

fn split_default<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let mut words = Vec::new();
    isolate(
        text,
        |c| is_punct(c) || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|'),
        false,
        |piece, _| with_chars(piece, |t| split_gpt2(t, &mut words)),
    );
    for w in words {
        isolate(
            w,
            |c| class_of(c) == Class::Number,
            false,
            |piece, is_num| {
                if !is_num {
                    out.push(piece);
                    return;
                }
                // [0-9][0-9][0-9] : leftmost ASCII digit triples; the text
                // between them stays whole, as llama.cpp keeps unmatched text.
                let b = piece.as_bytes();
                let mut cur = 0;
                let mut i = 0;
                while i + 3 <= b.len() {
                    if b[i..i + 3].iter().all(u8::is_ascii_digit) {
                        if i > cur {
                            out.push(&piece[cur..i]);
                        }
                        out.push(&piece[i..i + 3]);
                        i += 3;
                        cur = i;
                    } else {
                        i += 1;
                    }
                }
                if cur < b.len() {
                    out.push(&piece[cur..]);
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_whitespace_rules() {
        let p = PreTokenizer::Llama3;
        assert_eq!(p.split("a   b"), ["a", "  ", " b"]);
        assert_eq!(p.split("a   "), ["a", "   "]);
        assert_eq!(p.split("a \n\n b"), ["a", " \n\n", " b"]);
        assert_eq!(p.split("12345"), ["123", "45"]);
        assert_eq!(p.split("DON'T it'S"), ["DON", "'T", " it", "'S"]);
        assert_eq!(p.split("x?!\n\ny"), ["x", "?!\n\n", "y"]);
        assert_eq!(p.split("\tfoo"), ["\tfoo"]);
        assert_eq!(p.split("a  1"), ["a", " ", " ", "1"]);
    }

    #[test]
    fn gpt2_and_smollm() {
        assert_eq!(
            PreTokenizer::Gpt2.split("Hi  there 123"),
            ["Hi", " ", " there", " 123"]
        );
        assert_eq!(PreTokenizer::Gpt2.split("DON'T"), ["DON", "'", "T"]);
        assert_eq!(
            PreTokenizer::Smollm.split("a 123"),
            ["a", " ", "1", "2", "3"]
        );
    }

    #[test]
    fn default_splits_punct_and_digit_triples() {
        assert_eq!(
            PreTokenizer::Default.split("x=12345"),
            ["x", "=", "123", "45"]
        );
    }
}
