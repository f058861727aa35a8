use std::path::PathBuf;

/// Everything that can go wrong while building a [`crate::Tokenizer`].
///
/// Encoding and decoding never fail: bytes without a token are dropped and
/// unknown ids decode to nothing, as llama.cpp and Hugging Face do.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tokenizer JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported tokenizer model '{0}' (only byte-level BPE: gguf 'gpt2', tokenizer.json 'BPE')")]
    UnsupportedModel(String),
    #[error("unknown pre-tokenizer '{0}' (supported: llama-bpe/llama3, smollm/starcoder, gpt-2/gpt2, default)")]
    UnknownPreTokenizer(String),
    #[error("unsupported tokenizer.json setting: {0}")]
    UnsupportedConfig(String),
    #[error("missing metadata key '{0}'")]
    MissingKey(&'static str),
    #[error("metadata key '{key}' has the wrong type (expected {expected})")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;
