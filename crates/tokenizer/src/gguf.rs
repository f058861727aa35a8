//! Reading the vocabulary from GGUF metadata (`tokenizer.ggml.*`).

use edgellama_gguf::{GgufFile, MetadataValue};

use crate::error::{Result, TokenizerError};
use crate::hf::split_merge;
use crate::pretok::PreTokenizer;
use crate::spec::{SpecToken, SpecialIds, TokenType, TokenizerSpec};
use crate::Tokenizer;

const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const MERGES: &str = "tokenizer.ggml.merges";
const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";

fn strings<'a>(
    get: &impl Fn(&str) -> Option<&'a MetadataValue>,
    key: &'static str,
) -> Result<&'a [String]> {
    get(key)
        .ok_or(TokenizerError::MissingKey(key))?
        .as_array()
        .and_then(|a| a.strings())
        .ok_or(TokenizerError::WrongType {
            key,
            expected: "array of strings",
        })
}

fn opt_bool<'a>(
    get: &impl Fn(&str) -> Option<&'a MetadataValue>,
    key: &'static str,
) -> Result<Option<bool>> {
    match get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or(TokenizerError::WrongType {
            key,
            expected: "bool",
        }),
    }
}

/// Fills a [`TokenizerSpec`] from metadata looked up through `get`.
pub(crate) fn spec_from_metadata<'a>(
    get: impl Fn(&str) -> Option<&'a MetadataValue>,
) -> Result<TokenizerSpec> {
    let model = get(MODEL)
        .ok_or(TokenizerError::MissingKey(MODEL))?
        .as_str()
        .ok_or(TokenizerError::WrongType {
            key: MODEL,
            expected: "string",
        })?;
    if model != "gpt2" {
        return Err(TokenizerError::UnsupportedModel(model.to_string()));
    }
    let pre_name = match get(PRE) {
        None => "default",
        Some(v) => v.as_str().ok_or(TokenizerError::WrongType {
            key: PRE,
            expected: "string",
        })?,
    };
    let pre = PreTokenizer::from_gguf_name(pre_name)?;

    let texts = strings(&get, TOKENS)?;
    let n = texts.len();
    let types = match get(TOKEN_TYPE) {
        None => None,
        Some(v) => {
            let t = v
                .as_array()
                .and_then(|a| a.as_i32_vec())
                .ok_or(TokenizerError::WrongType {
                    key: TOKEN_TYPE,
                    expected: "array of i32",
                })?;
            if t.len() < n {
                return Err(TokenizerError::InvalidVocab(format!(
                    "{TOKEN_TYPE} has {} entries for {n} tokens",
                    t.len()
                )));
            }
            Some(t)
        }
    };
    let tokens = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let kind = types
                .as_ref()
                .map_or(TokenType::Normal, |t| TokenType::from_gguf(t[i]));
            // An empty string could never be matched or merged; llama.cpp renames it so.
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.clone()
            };
            SpecToken::new(text, kind)
        })
        .collect();

    let merges = strings(&get, MERGES)?
        .iter()
        .map(|m| {
            split_merge(m).ok_or_else(|| {
                TokenizerError::InvalidVocab(format!("merge without a space: {m:?}"))
            })
        })
        .collect::<Result<Vec<_>>>()?;

    // An id outside the vocabulary is ignored, as llama.cpp does with a warning.
    let id = |key: &str| {
        get(key)
            .and_then(MetadataValue::as_u32)
            .filter(|&i| (i as usize) < n)
    };
    let special = SpecialIds {
        bos: id("tokenizer.ggml.bos_token_id"),
        eos: id("tokenizer.ggml.eos_token_id"),
        eot: id("tokenizer.ggml.eot_token_id"),
        eom: id("tokenizer.ggml.eom_token_id"),
        pad: id("tokenizer.ggml.padding_token_id"),
        unk: id("tokenizer.ggml.unknown_token_id"),
    };
    // llama.cpp: Llama 3 skips merging for words that are tokens, and adds
    // BOS unless the file says otherwise.
    let llama3 = pre == PreTokenizer::Llama3;
    Ok(TokenizerSpec {
        tokens,
        merges,
        pre,
        ignore_merges: llama3,
        special,
        add_bos: opt_bool(&get, ADD_BOS)?.unwrap_or(llama3),
        add_eos: opt_bool(&get, ADD_EOS)?.unwrap_or(false),
    })
}

impl Tokenizer {
    /// Builds from the `tokenizer.ggml.*` metadata of a GGUF file
    /// (`tokenizer.ggml.model` must be `gpt2`).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Tokenizer::from_spec(spec_from_metadata(|k| file.get(k))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellama_gguf::MetadataArray;
    use std::collections::HashMap;

    fn meta(pre: &str) -> HashMap<String, MetadataValue> {
        let mut m = HashMap::new();
        m.insert(MODEL.into(), MetadataValue::from("gpt2"));
        m.insert(PRE.into(), MetadataValue::from(pre));
        let toks = vec!["a", "b", "ab", "<|eot_id|>", ""];
        m.insert(
            TOKENS.into(),
            MetadataValue::Array(MetadataArray::from(toks)),
        );
        m.insert(
            TOKEN_TYPE.into(),
            MetadataValue::Array(MetadataArray::from(vec![1i32, 1, 1, 3, 1])),
        );
        m.insert(
            MERGES.into(),
            MetadataValue::Array(MetadataArray::from(vec!["a b"])),
        );
        m.insert(
            "tokenizer.ggml.eos_token_id".into(),
            MetadataValue::from(3u32),
        );
        m.insert(
            "tokenizer.ggml.bos_token_id".into(),
            MetadataValue::from(99u32),
        );
        m
    }

    #[test]
    fn unknown_pre_tokenizer_is_a_clear_error() {
        let m = meta("qwen2");
        let err = spec_from_metadata(|k| m.get(k)).unwrap_err();
        assert!(matches!(err, TokenizerError::UnknownPreTokenizer(ref p) if p == "qwen2"));
        assert!(err.to_string().contains("qwen2"));
    }

    #[test]
    fn small_vocab_from_metadata() {
        let m = meta("gpt-2");
        let t = Tokenizer::from_spec(spec_from_metadata(|k| m.get(k)).unwrap()).unwrap();
        assert_eq!(t.encode("ab<|eot_id|>", true, true), [2, 3]);
        assert_eq!(t.bos_id(), None, "out-of-range bos is ignored");
        assert_eq!(t.eos_id(), Some(3));
        assert_eq!(t.eog_ids(), [3]);
        assert_eq!(t.token_text(4), Some("[EMPTY_4]"));
    }

    #[test]
    fn wrong_model_and_missing_keys() {
        let mut m = meta("gpt-2");
        m.insert(MODEL.into(), MetadataValue::from("llama"));
        assert!(matches!(
            spec_from_metadata(|k| m.get(k)),
            Err(TokenizerError::UnsupportedModel(_))
        ));
        let mut m = meta("gpt-2");
        m.remove(MERGES);
        assert!(matches!(
            spec_from_metadata(|k| m.get(k)),
            Err(TokenizerError::MissingKey(MERGES))
        ));
        let mut m = meta("gpt-2");
        m.insert(TOKENS.into(), MetadataValue::from(3u32));
        assert!(matches!(
            spec_from_metadata(|k| m.get(k)),
            Err(TokenizerError::WrongType { key: TOKENS, .. })
        ));
    }
}
