//! Hugging Face `tokenizer.json` (and optionally `tokenizer_config.json`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Result, TokenizerError};
use crate::pretok::{PreTokenizer, GPT2_REGEX, LLAMA3_REGEX};
use crate::spec::{SpecToken, SpecialIds, TokenType, TokenizerSpec};
use crate::Tokenizer;

#[derive(Deserialize)]
struct TokenizerJson {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    normalizer: Option<Value>,
    #[serde(default)]
    pre_tokenizer: Option<Value>,
    #[serde(default)]
    post_processor: Option<Value>,
    model: Model,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    single_word: bool,
}

#[derive(Deserialize)]
struct Model {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    vocab: HashMap<String, u32>,
    #[serde(default)]
    merges: Vec<Merge>,
    #[serde(default)]
    ignore_merges: bool,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
}

/// Merges are stored as `"a b"` (older files) or `["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Merge {
    Joined(String),
    Pair(String, String),
}

/// Reads `src` as JSON when it looks like JSON, else as a file path.
fn read_source(src: &Path) -> Result<String> {
    if let Some(s) = src.to_str() {
        if s.trim_start().starts_with('{') {
            return Ok(s.to_string());
        }
    }
    std::fs::read_to_string(src).map_err(|source| TokenizerError::Io {
        path: src.to_path_buf(),
        source,
    })
}

fn unsupported(what: impl Into<String>) -> TokenizerError {
    TokenizerError::UnsupportedConfig(what.into())
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn is_byte_level(v: &Value) -> bool {
    get_str(v, "type") == Some("ByteLevel")
}

fn check_byte_level(v: &Value, want_regex: bool) -> Result<()> {
    if v.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("ByteLevel pre-tokenizer with add_prefix_space"));
    }
    let use_regex = v.get("use_regex").and_then(Value::as_bool).unwrap_or(true);
    if use_regex != want_regex {
        return Err(unsupported(format!(
            "ByteLevel pre-tokenizer with use_regex={use_regex} in this position"
        )));
    }
    Ok(())
}

/// Recognises the pre-tokenizer configurations this crate implements.
fn pre_tokenizer_of(v: Option<&Value>) -> Result<PreTokenizer> {
    let v = v.ok_or_else(|| unsupported("no pre_tokenizer (byte-level BPE needs one)"))?;
    if is_byte_level(v) {
        check_byte_level(v, true)?;
        return Ok(PreTokenizer::Gpt2);
    }
    if get_str(v, "type") != Some("Sequence") {
        return Err(unsupported(format!("pre_tokenizer {v}")));
    }
    let steps = v
        .get("pretokenizers")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported("pre_tokenizer Sequence without pretokenizers"))?;
    match steps.as_slice() {
        [one] if is_byte_level(one) => {
            check_byte_level(one, true)?;
            Ok(PreTokenizer::Gpt2)
        }
        [split, bl] if get_str(split, "type") == Some("Split") && is_byte_level(bl) => {
            let pattern = split.get("pattern");
            let regex = pattern.and_then(|p| get_str(p, "Regex"));
            let isolated = get_str(split, "behavior") == Some("Isolated");
            let invert = split
                .get("invert")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            check_byte_level(bl, false)?;
            match regex {
                Some(r) if isolated && !invert && r == LLAMA3_REGEX => Ok(PreTokenizer::Llama3),
                Some(r) if isolated && !invert && r == GPT2_REGEX => Ok(PreTokenizer::Gpt2),
                _ => Err(unsupported(format!("Split pre-tokenizer {split}"))),
            }
        }
        [digits, bl] if get_str(digits, "type") == Some("Digits") && is_byte_level(bl) => {
            if digits.get("individual_digits").and_then(Value::as_bool) != Some(true) {
                return Err(unsupported(
                    "Digits pre-tokenizer without individual_digits",
                ));
            }
            check_byte_level(bl, true)?;
            Ok(PreTokenizer::Smollm)
        }
        _ => Err(unsupported(format!("pre_tokenizer {v}"))),
    }
}

/// BOS / EOS that the post-processor template puts around a single sequence.
fn template_specials(post: Option<&Value>) -> (Option<String>, Option<String>) {
    let Some(post) = post else {
        return (None, None);
    };
    let template = match get_str(post, "type") {
        Some("TemplateProcessing") => Some(post),
        Some("Sequence") => post
            .get("processors")
            .and_then(Value::as_array)
            .and_then(|ps| {
                ps.iter()
                    .find(|p| get_str(p, "type") == Some("TemplateProcessing"))
            }),
        _ => None,
    };
    let Some(single) = template
        .and_then(|t| t.get("single"))
        .and_then(Value::as_array)
    else {
        return (None, None);
    };
    let special_id = |item: Option<&Value>| -> Option<String> {
        item?
            .get("SpecialToken")?
            .get("id")?
            .as_str()
            .map(str::to_string)
    };
    (
        special_id(single.first()),
        special_id(single.last()).filter(|_| single.len() > 1),
    )
}

pub(crate) fn spec_from_hf_json(json: &str) -> Result<TokenizerSpec> {
    let tj: TokenizerJson = serde_json::from_str(json)?;
    let model = tj.model;
    match model.kind.as_deref() {
        Some("BPE") | None => {}
        Some(other) => return Err(TokenizerError::UnsupportedModel(other.to_string())),
    }
    if model.byte_fallback {
        return Err(unsupported(
            "BPE byte_fallback (sentencepiece-style vocabulary)",
        ));
    }
    if model
        .continuing_subword_prefix
        .as_deref()
        .is_some_and(|s| !s.is_empty())
        || model
            .end_of_word_suffix
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported(
            "BPE continuing_subword_prefix / end_of_word_suffix",
        ));
    }
    if tj.normalizer.as_ref().is_some_and(|n| !n.is_null()) {
        return Err(unsupported("normalizer (byte-level BPE has none)"));
    }
    if let Some(t) = tj.added_tokens.iter().find(|t| t.single_word) {
        return Err(unsupported(format!(
            "single_word added token {:?}",
            t.content
        )));
    }
    let pre = pre_tokenizer_of(tj.pre_tokenizer.as_ref())?;

    let max_id = model
        .vocab
        .values()
        .chain(tj.added_tokens.iter().map(|t| &t.id))
        .copied()
        .max()
        .ok_or_else(|| TokenizerError::InvalidVocab("empty vocabulary".into()))?;
    let n = max_id as usize + 1;
    // Ids may leave a few gaps, but a wild id must not size a huge vector.
    let entries = model.vocab.len() + tj.added_tokens.len();
    if n > 2 * entries + 1024 {
        return Err(TokenizerError::InvalidVocab(format!(
            "token id {max_id} is far beyond the {entries} tokens defined"
        )));
    }
    let mut tokens = vec![SpecToken::new(String::new(), TokenType::Undefined); n];
    for (text, id) in model.vocab {
        tokens[id as usize] = SpecToken::new(text, TokenType::Normal);
    }
    for t in &tj.added_tokens {
        let kind = if t.special {
            TokenType::Control
        } else {
            TokenType::UserDefined
        };
        tokens[t.id as usize] = SpecToken {
            text: t.content.clone(),
            kind,
            lstrip: t.lstrip,
            rstrip: t.rstrip,
        };
    }

    let merges = model
        .merges
        .into_iter()
        .map(|m| match m {
            Merge::Pair(a, b) => Ok((a, b)),
            Merge::Joined(s) => split_merge(&s).ok_or_else(|| {
                TokenizerError::InvalidVocab(format!("merge without a space: {s:?}"))
            }),
        })
        .collect::<Result<Vec<_>>>()?;

    let find = |text: &str| {
        tokens
            .iter()
            .rposition(|t| t.text == text && t.kind != TokenType::Undefined)
            .map(|i| i as u32)
    };
    let (bos_text, eos_text) = template_specials(tj.post_processor.as_ref());
    let bos = bos_text.as_deref().and_then(find);
    let eos_templ = eos_text.as_deref().and_then(find);
    // tokenizer.json does not name EOS unless the template appends it: take
    // the usual end-of-text token (tokenizer_config.json can override).
    let eos = eos_templ.or_else(|| {
        ["<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"]
            .iter()
            .find_map(|t| find(t))
    });
    let unk = model.unk_token.as_deref().and_then(find);
    Ok(TokenizerSpec {
        tokens,
        merges,
        pre,
        ignore_merges: model.ignore_merges,
        special: SpecialIds {
            bos,
            eos,
            unk,
            ..SpecialIds::default()
        },
        add_bos: bos.is_some(),
        add_eos: eos_templ.is_some(),
    })
}

/// `"a b"` -> (`"a"`, `"b"`), splitting at the first space after the first
/// char (llama.cpp's rule, which keeps a leading-space token intact).
pub(crate) fn split_merge(s: &str) -> Option<(String, String)> {
    let first = s.chars().next()?.len_utf8();
    let sp = s[first..].find(' ')? + first;
    Some((s[..sp].to_string(), s[sp + 1..].to_string()))
}

/// Applies `tokenizer_config.json`: `bos_token`, `eos_token`, `pad_token`,
/// `unk_token` (a string or `{"content": ..}`), `add_bos_token`, `add_eos_token`.
fn apply_config(spec: &mut TokenizerSpec, config: &str) -> Result<()> {
    let v: Value = serde_json::from_str(config)?;
    let name = |key: &str| -> Option<String> {
        let t = v.get(key)?;
        t.as_str()
            .or_else(|| t.get("content").and_then(Value::as_str))
            .map(str::to_string)
    };
    let find = |text: &str| -> Result<u32> {
        spec.tokens
            .iter()
            .rposition(|t| t.text == text)
            .map(|i| i as u32)
            .ok_or_else(|| {
                TokenizerError::InvalidVocab(format!("config names unknown token {text:?}"))
            })
    };
    if let Some(t) = name("bos_token") {
        spec.special.bos = Some(find(&t)?);
    }
    if let Some(t) = name("eos_token") {
        spec.special.eos = Some(find(&t)?);
    }
    if let Some(t) = name("pad_token") {
        spec.special.pad = Some(find(&t)?);
    }
    if let Some(t) = name("unk_token") {
        spec.special.unk = Some(find(&t)?);
    }
    if let Some(b) = v.get("add_bos_token").and_then(Value::as_bool) {
        spec.add_bos = b;
    }
    if let Some(b) = v.get("add_eos_token").and_then(Value::as_bool) {
        spec.add_eos = b;
    }
    Ok(())
}

impl Tokenizer {
    /// Builds from a Hugging Face `tokenizer.json`, given as a path or as the
    /// JSON text itself. BOS comes from the post-processor template; EOS is
    /// the template's, else the vocabulary's end-of-text token.
    pub fn from_hf_json(path_or_json: impl AsRef<Path>) -> Result<Self> {
        let json = read_source(path_or_json.as_ref())?;
        Tokenizer::from_spec(spec_from_hf_json(&json)?)
    }

    /// Like [`Tokenizer::from_hf_json`], then applies the special tokens and
    /// `add_bos_token` / `add_eos_token` of a `tokenizer_config.json` (path or
    /// JSON text).
    pub fn from_hf_json_with_config(
        tokenizer_json: impl AsRef<Path>,
        config_json: impl AsRef<Path>,
    ) -> Result<Self> {
        let mut spec = spec_from_hf_json(&read_source(tokenizer_json.as_ref())?)?;
        apply_config(&mut spec, &read_source(config_json.as_ref())?)?;
        Tokenizer::from_spec(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_strings_split_after_first_char() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ".into(), "t".into())));
        assert_eq!(split_merge("  x"), Some((" ".into(), "x".into())));
        assert_eq!(split_merge("ab"), None);
    }

    #[test]
    fn tiny_json_builds_and_merges_by_rank() {
        // Vocabulary of single bytes plus "ab", "abc"; "bc" has a lower
        // priority than "ab", so "abc" merges (ab)c, not a(bc).
        let json = r#"{
          "added_tokens": [{"id": 7, "content": "<|eot|>", "special": true}],
          "normalizer": null,
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
          "post_processor": null,
          "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "Ġ": 6},
                    "merges": ["a b", ["b", "c"], "ab c"]}
        }"#;
        let t = Tokenizer::from_hf_json(json).unwrap();
        assert_eq!(t.encode("abc", false, false), [5]);
        assert_eq!(t.encode("bc a", false, false), [4, 6, 0]);
        assert_eq!(t.encode("a<|eot|>", false, true), [0, 7]);
        assert_eq!(t.decode(&[5, 7], false), "abc");
        assert_eq!(t.decode(&[5, 7], true), "abc<|eot|>");
        // Bytes without a token are dropped rather than failing.
        assert_eq!(t.encode("xa", false, false), [0]);
    }

    #[test]
    fn wild_token_id_is_an_error_not_an_allocation() {
        let json = r#"{"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
          "added_tokens": [{"id": 4000000000, "content": "<x>", "special": true}],
          "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}"#;
        assert!(matches!(
            Tokenizer::from_hf_json(json),
            Err(TokenizerError::InvalidVocab(_))
        ));
    }

    #[test]
    fn unsupported_settings_are_named() {
        let json = r#"{"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "ByteLevel"},
          "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}"#;
        let err = Tokenizer::from_hf_json(json).unwrap_err();
        assert!(err.to_string().contains("normalizer"), "{err}");
        let json = r#"{"pre_tokenizer": {"type": "Whitespace"},
          "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}"#;
        assert!(matches!(
            Tokenizer::from_hf_json(json),
            Err(TokenizerError::UnsupportedConfig(_))
        ));
        let json = r#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}}"#;
        assert!(matches!(
            Tokenizer::from_hf_json(json),
            Err(TokenizerError::UnsupportedModel(_))
        ));
        assert!(matches!(
            Tokenizer::from_hf_json("/nonexistent/tokenizer.json"),
            Err(TokenizerError::Io { .. })
        ));
    }
}
