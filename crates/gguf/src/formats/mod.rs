//! Formats that models arrive in before they become GGUF: safetensors files and
//! the Hugging Face checkpoint layout around them (`config.json`, sharded weights
//! with `model.safetensors.index.json`).
//!
//! Like the GGUF reader, everything here validates offsets, lengths and shapes
//! against the file before using or allocating for them, and reports problems as
//! a [`FormatError`].

pub mod hf;
pub mod safetensors;

use std::path::PathBuf;

pub use hf::{read_json, Checkpoint, LlamaConfig, RopeScaling, INDEX_FILE};
pub use safetensors::{Dtype, SafetensorsFile, TensorEntry, TensorView, MAX_HEADER_LEN};

/// Everything that can be wrong with a safetensors file or a checkpoint directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file of {len} bytes is too short for a safetensors header (8-byte length, then JSON)")]
    TooShort { path: PathBuf, len: u64 },
    #[error("{path}: header length {header_len} runs past the end of the {file_len}-byte file")]
    HeaderPastEnd {
        path: PathBuf,
        header_len: u64,
        file_len: u64,
    },
    #[error("{path}: header length {header_len} is above the {max}-byte limit")]
    HeaderTooLarge {
        path: PathBuf,
        header_len: u64,
        max: u64,
    },
    #[error("{path}: bad header JSON: {message}")]
    BadHeader { path: PathBuf, message: String },
    #[error("{path}: tensor '{tensor}' appears twice in the header")]
    DuplicateTensor { path: PathBuf, tensor: String },
    #[error("{path}: tensor '{tensor}' has unknown dtype '{dtype}'")]
    UnknownDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: tensor '{tensor}' with shape {shape:?} overflows its element or byte count")]
    ShapeOverflow {
        path: PathBuf,
        tensor: String,
        shape: Vec<u64>,
    },
    #[error("{path}: tensor '{tensor}' has data offsets [{begin}, {end}) for {expected} bytes of {dtype} {shape:?}")]
    SizeMismatch {
        path: PathBuf,
        tensor: String,
        dtype: Dtype,
        shape: Vec<u64>,
        begin: u64,
        end: u64,
        expected: u64,
    },
    #[error("{path}: tensor '{tensor}' ends at data offset {end}, past the {data_len}-byte data section")]
    OutOfBounds {
        path: PathBuf,
        tensor: String,
        end: u64,
        data_len: u64,
    },
    #[error("{path}: tensors '{first}' and '{second}' overlap in the data section")]
    Overlap {
        path: PathBuf,
        first: String,
        second: String,
    },

    #[error("{path}: {message}")]
    BadJson { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("{dir}: no model.safetensors, model-*.safetensors or {INDEX_FILE} found")]
    NoWeights { dir: PathBuf },
    #[error("{index}: shard name '{name}' is not a plain file name in the checkpoint directory")]
    BadShardName { index: PathBuf, name: String },
    #[error("{index}: tensor '{tensor}' is listed for {listed} but not found there")]
    MissingFromShard {
        index: PathBuf,
        tensor: String,
        listed: String,
    },
    #[error("{index}: tensor '{tensor}' is in {found} but the index does not list it there")]
    NotInIndex {
        index: PathBuf,
        tensor: String,
        found: String,
    },
    #[error("tensor '{tensor}' is in both {first} and {second}")]
    DuplicateAcrossShards {
        tensor: String,
        first: PathBuf,
        second: PathBuf,
    },
}
