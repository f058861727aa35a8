//! The one error type of this crate.

use std::path::PathBuf;

use edgellama_gguf::{GgmlType, GgufError};
use edgellama_kernels::KernelError;

/// Why a model could not be planned or quantized. Everything about the input is
/// checked before the output file is created, except non-finite results,
/// which show only while quantizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    #[error("unknown quantization type '{name}'; valid types: {valid}")]
    UnknownFileType { name: String, valid: String },

    #[error("unknown vision type '{name}'; valid types: {valid}")]
    UnknownVisionType { name: String, valid: String },

    /// The input is a GGUF file but not a model this tool can quantize.
    #[error("not a model file: {reason}")]
    NotAModel { reason: String },

    #[error(
        "split GGUF files are not supported (this is part {part} of {count}); merge them first"
    )]
    SplitModel { part: u32, count: u32 },

    /// Mixture-of-experts tensors must name their layer (`blk.N.`).
    #[error(
        "tensor '{tensor}': cannot determine its layer (expected 'blk.N.' with 0 <= N < {n_layer})"
    )]
    BadLayer { tensor: String, n_layer: u32 },

    #[error("tensor '{tensor}' is already quantized ({from}); converting it to {to} loses precision twice, pass --allow-requantize to do it anyway")]
    RequantizeDisabled {
        tensor: String,
        from: GgmlType,
        to: GgmlType,
    },

    /// The target type has no smaller-block type to fall back to for a row
    /// length that is not a multiple of its block size.
    #[error("tensor '{tensor}': no fallback type is defined for {ty}")]
    NoFallback { tensor: String, ty: GgmlType },

    /// The tensor holds NaN or infinite values, so its quantized scales are
    /// not finite (llama-quantize refuses such data too).
    #[error("tensor '{tensor}': quantizing to {ty} gave non-finite values (the input holds NaN or infinity)")]
    NonFinite { tensor: String, ty: GgmlType },

    #[error("tensor '{tensor}'")]
    Kernel {
        tensor: String,
        #[source]
        source: KernelError,
    },

    #[error(transparent)]
    Gguf(#[from] GgufError),

    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("a worker thread failed while quantizing tensor '{tensor}'")]
    WorkerPanicked { tensor: String },

    /// The streamed layout disagrees with the header; a bug, never the input's fault.
    #[error("internal error: {what}")]
    Internal { what: String },
}
