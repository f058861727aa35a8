//! The one error type of this crate.

use std::path::PathBuf;

use edgellama_gguf::formats::{Dtype, FormatError};
use edgellama_gguf::{GgmlType, GgufError};
use edgellama_kernels::KernelError;
use edgellama_tokenizer::TokenizerError;

/// Why a checkpoint could not be converted. Everything about the input is
/// checked when the conversion is planned, before any output is written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    #[error("unknown output type '{name}'; valid types: auto, f32, f16, bf16, q8_0")]
    UnknownOutType { name: String },

    #[error("{dir} is not a directory")]
    NotADirectory { dir: PathBuf },

    #[error("{path} is missing")]
    MissingFile { path: PathBuf },

    #[error(
        "architecture {found:?} is not supported (supported: {})",
        crate::arch::supported_architectures().collect::<Vec<_>>().join(", ")
    )]
    UnsupportedArchitecture { found: Option<String> },

    #[error("{path}: {message}")]
    BadConfig { path: PathBuf, message: String },

    #[error("rope_scaling type '{rope_type}' is not supported (supported: llama3, linear, yarn, dynamic)")]
    UnsupportedRopeScaling { rope_type: String },

    #[error("hidden_act '{found}' is not supported: Llama uses silu")]
    UnsupportedActivation { found: String },

    #[error("{what} is {value}, which does not fit the 32-bit GGUF field")]
    TooLarge { what: String, value: u64 },

    #[error(transparent)]
    Format(#[from] FormatError),

    #[error("tensor '{tensor}' cannot be mapped to a GGUF tensor name")]
    UnknownTensor { tensor: String },

    #[error(
        "tensor '{tensor}' has dtype {dtype}; only F32, F16 and BF16 checkpoints are supported"
    )]
    UnsupportedDtype { tensor: String, dtype: Dtype },

    #[error("tensor '{tensor}' has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        tensor: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },

    #[error("tensor '{tensor}' is missing from the checkpoint")]
    MissingTensor { tensor: String },

    #[error("tensors '{first}' and '{second}' both map to '{gguf_name}'")]
    DuplicateTensor {
        first: String,
        second: String,
        gguf_name: String,
    },

    #[error("{what}")]
    UnsupportedTokenizer { what: String },

    #[error("{path}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: TokenizerError,
    },

    #[error("{path}: token id {id} is not below the model's vocab_size {vocab_size}")]
    VocabTooSmall {
        path: PathBuf,
        id: u64,
        vocab_size: u64,
    },

    /// The tokenizer splits text in a way llama.cpp has no name for (it
    /// identifies pre-tokenizers by the hash of a probe text's token ids).
    #[error("the tokenizer's pre-tokenizer is not recognized (token-id hash {hash})")]
    UnknownPreTokenizer { hash: String },

    #[error("special token {kind} has the invalid id {id}")]
    BadSpecialToken { kind: String, id: i64 },

    #[error("tensor '{tensor}' as {ty}")]
    Kernel {
        tensor: String,
        ty: GgmlType,
        #[source]
        source: KernelError,
    },

    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("a worker thread failed while converting tensor '{tensor}'")]
    WorkerPanicked { tensor: String },

    /// The streamed layout disagrees with the header; a bug, never the input's fault.
    #[error("internal error: {what}")]
    Internal { what: String },
}
