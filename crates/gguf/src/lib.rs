//! GGUF: the model file format of llama.cpp, read through a memory map and written.
//!
//! Layout (all integers little-endian): the magic `GGUF`, a `u32` version (2 and 3
//! share one layout; 1 used 32-bit counts and is refused), a `u64` tensor count and
//! a `u64` metadata count. Then the metadata entries, each a string key, a `u32`
//! value type and the value; strings are a `u64` byte length plus UTF-8 bytes,
//! arrays a `u32` element type, a `u64` count and the elements (arrays may nest).
//! Then the tensor index, each entry a string name, a `u32` dimension count, that
//! many `u64` dimensions (ggml order: the first is the contiguous row), a `u32`
//! ggml type and a `u64` offset relative to the data section. The data section
//! starts at the end of the index rounded up to `general.alignment` (default 32);
//! every tensor offset is a multiple of the alignment, and writers pad each tensor
//! with zeros to the next multiple.
//!
//! [`GgufFile`] validates every count, length, shape and offset against the file
//! before using or allocating for it, so a corrupt file yields a [`GgufError`]
//! naming what is wrong. [`GgufWriter`] writes files that read back unchanged.

mod error;
pub mod formats;
mod metadata;
pub mod names;
mod reader;
mod tensor;
pub mod types;
mod writer;

pub use error::GgufError;
pub use metadata::{ArrayValues, MetadataArray, MetadataValue, ValueType};
pub use reader::{
    GgufFile, LoadMode, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH,
};
pub use tensor::{TensorInfo, MAX_DIMS};
pub use types::{GgmlType, QK_K};
pub use writer::GgufWriter;
