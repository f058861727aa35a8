//! The one error type of this crate.

use std::path::PathBuf;

use crate::metadata::ValueType;
use crate::types::GgmlType;

/// Everything that can be wrong with a GGUF file, or with a file we are asked to write.
///
/// Offsets are absolute byte positions in the file unless the field says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing GGUF data failed: {0}")]
    Write(#[source] std::io::Error),

    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version} (supported: 2 and 3)")]
    UnsupportedVersion { version: u32 },
    #[error("GGUF file is big-endian (version {version} byte-swapped); only little-endian files are supported")]
    BigEndian { version: u32 },
    #[error("file truncated while reading {what} at offset {offset}: need {needed} bytes, {available} left")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("tensor count {count} cannot fit in the {remaining} bytes left after the header")]
    TooManyTensors { count: u64, remaining: u64 },
    #[error("metadata count {count} cannot fit in the {remaining} bytes left after the header")]
    TooManyKeys { count: u64, remaining: u64 },
    #[error("{what} at offset {offset} claims {len} bytes but only {remaining} are left")]
    StringTooLong {
        what: String,
        offset: u64,
        len: u64,
        remaining: u64,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },

    #[error("metadata key #{index} at offset {offset} is empty")]
    EmptyKey { index: u64, offset: u64 },
    #[error("metadata keys must not be empty")]
    EmptyKeyNotAllowed,
    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },
    #[error("metadata key '{key}' has unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("metadata key '{key}': array of {count} {element_type} elements at offset {offset} cannot fit in the {remaining} bytes left")]
    ArrayTooLarge {
        key: String,
        element_type: ValueType,
        count: u64,
        offset: u64,
        remaining: u64,
    },
    #[error("metadata key '{key}': bool at offset {offset} has value {value}, expected 0 or 1")]
    InvalidBool { key: String, value: u8, offset: u64 },
    #[error("metadata key '{key}': arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: u32 },
    #[error("general.alignment is {value}, must be a nonzero power of two")]
    InvalidAlignment { value: u64 },

    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: ValueType,
    },

    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
    #[error("tensor '{tensor}' has {n_dims} dimensions, at most {max} are supported")]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        max: u32,
    },
    #[error("tensor '{tensor}' has dimension {index} equal to 0")]
    ZeroDim { tensor: String, index: usize },
    #[error("tensor '{tensor}' with dims {dims:?} overflows its element or byte count")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },
    #[error("tensor '{tensor}' has unknown or unsupported ggml type {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },
    #[error("tensor '{tensor}' of type {ggml_type} has rows of {row_len} elements, not a multiple of the block size {block_size}")]
    RowNotBlockAligned {
        tensor: String,
        ggml_type: GgmlType,
        row_len: u64,
        block_size: u64,
    },
    #[error("tensor '{tensor}' offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor '{tensor}' at data offset {offset} with {n_bytes} bytes runs past the {data_len}-byte data section")]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        n_bytes: u64,
        data_len: u64,
    },
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    OverlappingTensors { first: String, second: String },
    #[error("tensor '{name}' not found")]
    MissingTensor { name: String },

    #[error("tensor '{tensor}' has {actual} bytes of data, its shape and type need {expected}")]
    TensorSizeMismatch {
        tensor: String,
        expected: u64,
        actual: u64,
    },
    #[error("file layout does not fit in 64-bit offsets")]
    LayoutOverflow,
    #[error(
        "requested file length {requested} is shorter than the {needed} bytes the content needs"
    )]
    FileLenTooSmall { requested: u64, needed: u64 },
}
