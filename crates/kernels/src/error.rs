//! Errors of the length-checked entry points.

use edgellama_gguf::GgmlType;

/// Why a kernel call was refused. Every variant is raised before any output
/// is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The element count does not fill whole blocks of the type.
    #[error("{ty}: {n} elements is not a whole number of {block}-element blocks")]
    NotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block: usize,
    },

    /// A buffer does not have the size that `n` elements of `ty` occupy.
    #[error("{ty}: {what} holds {got} bytes, but {n} elements take {expected}")]
    LengthMismatch {
        ty: GgmlType,
        what: &'static str,
        n: usize,
        expected: usize,
        got: usize,
    },

    /// The size of the row does not fit in `usize`.
    #[error("{ty}: a row of {n} elements does not fit in memory")]
    Overflow { ty: GgmlType, n: usize },

    /// The type has no kernel for the requested operation (for example a dot
    /// product with an activation-only format such as `q8_K`).
    #[error("{ty} has no {op} kernel")]
    Unsupported { ty: GgmlType, op: &'static str },
}
