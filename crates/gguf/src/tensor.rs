//! Tensor descriptors from the GGUF tensor index.

use crate::error::GgufError;
use crate::types::GgmlType;

/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// One entry of the tensor index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements. Exact for every tensor of an opened file; saturates for
    /// hand-built descriptors whose shape overflows.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Size of the data in bytes. Exact for every tensor of an opened file (whose
    /// shape was validated); meaningless for a hand-built descriptor that fails
    /// [`TensorInfo::validate_shape`].
    pub fn n_bytes(&self) -> u64 {
        let block = self.ggml_type.block_size() as u64;
        (self.n_elements() / block).saturating_mul(self.ggml_type.type_size() as u64)
    }

    /// Elements per row (`dims[0]`; 1 for a zero-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of all dimensions but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Checks what the format requires of a shape and returns the byte size:
    /// at most four nonzero dimensions, element and byte counts that fit in
    /// `i64` (ggml stores them signed), rows made of whole blocks.
    pub fn validate_shape(&self) -> Result<u64, GgufError> {
        shape_n_bytes(&self.name, &self.dims, self.ggml_type)
    }
}

pub(crate) fn shape_n_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name.to_owned(),
            n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
            max: MAX_DIMS as u32,
        });
    }
    if let Some(index) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::ZeroDim {
            tensor: name.to_owned(),
            index,
        });
    }
    let overflow = || GgufError::ShapeOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let row_len = dims.first().copied().unwrap_or(1);
    let block_size = ty.block_size() as u64;
    if row_len % block_size != 0 {
        return Err(GgufError::RowNotBlockAligned {
            tensor: name.to_owned(),
            ggml_type: ty,
            row_len,
            block_size,
        });
    }
    (n_elements / block_size)
        .checked_mul(ty.type_size() as u64)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dims: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims: dims.to_vec(),
            ggml_type: ty,
            offset: 0,
        }
    }

    #[test]
    fn sizes_follow_ggml_block_layout() {
        // token_embd of SmolLM2-135M in Q8_0: 576 x 49152, 34 bytes per 32 elements.
        let t = info(&[576, 49152], GgmlType::Q8_0);
        assert_eq!(t.n_elements(), 576 * 49152);
        assert_eq!(t.n_bytes(), 576 / 32 * 34 * 49152);
        assert_eq!(t.validate_shape().ok(), Some(t.n_bytes()));
        assert_eq!(t.row_len(), 576);
        assert_eq!(t.n_rows(), 49152);
        let k = info(&[512, 3, 2], GgmlType::Q4_K);
        assert_eq!(k.n_bytes(), 2 * 144 * 6);
        let f = info(&[7], GgmlType::F16);
        assert_eq!(f.n_bytes(), 14);
        let scalar = info(&[], GgmlType::F32);
        assert_eq!(scalar.n_bytes(), 4);
        assert_eq!(scalar.validate_shape().ok(), Some(4));
    }

    #[test]
    fn invalid_shapes_are_rejected() {
        assert!(matches!(
            info(&[1, 1, 1, 1, 1], GgmlType::F32).validate_shape(),
            Err(GgufError::TooManyDims { n_dims: 5, .. })
        ));
        assert!(matches!(
            info(&[4, 0], GgmlType::F32).validate_shape(),
            Err(GgufError::ZeroDim { index: 1, .. })
        ));
        assert!(matches!(
            info(&[1 << 32, 1 << 32], GgmlType::F32).validate_shape(),
            Err(GgufError::ShapeOverflow { .. })
        ));
        // Elements fit in i64 but bytes do not.
        assert!(matches!(
            info(&[1 << 62], GgmlType::F32).validate_shape(),
            Err(GgufError::ShapeOverflow { .. })
        ));
        assert!(matches!(
            info(&[33], GgmlType::Q4_0).validate_shape(),
            Err(GgufError::RowNotBlockAligned {
                row_len: 33,
                block_size: 32,
                ..
            })
        ));
    }
}
