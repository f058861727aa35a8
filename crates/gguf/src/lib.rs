//! GGUF: the model file format of llama.cpp.

pub mod types;

pub use types::{GgmlType, QK_K};
