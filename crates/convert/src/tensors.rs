//! Tensor data: the converter's output-type rules, and each tensor's rows
//! re-encoded (and for Q/K, permuted) on several threads.

use edgellama_gguf::formats::{Dtype, TensorView};
use edgellama_gguf::GgmlType;
use edgellama_kernels::convert::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use edgellama_kernels::QuantizeFn;

use crate::llama::permuted_row;
use crate::{ConvertError, OutType};

/// The type the converter writes a tensor in (`ModelBase.prepare_tensors`):
/// 1-D tensors, norms and anything not named `.weight` stay F32; the rest
/// take the output type, except that Q8_0 falls back to F16 for rows that
/// are not whole 32-element blocks.
pub fn target_type(gguf_name: &str, n_dims: usize, row_len: u64, outtype: OutType) -> GgmlType {
    if n_dims <= 1 || gguf_name.ends_with("_norm.weight") || !gguf_name.ends_with(".weight") {
        return GgmlType::F32;
    }
    match outtype.weight_type() {
        Some(GgmlType::Q8_0) if !row_len.is_multiple_of(GgmlType::Q8_0.block_size() as u64) => {
            GgmlType::F16
        }
        Some(t) => t,
        // Resolved before planning; F16 is what "auto" means without a hint.
        None => GgmlType::F16,
    }
}

/// How one tensor's rows are laid out: `n_rows` rows of `row_len` elements;
/// output row `r` comes from source row `perm(r)`.
#[derive(Debug, Clone, Copy)]
pub struct RowPlan {
    pub n_rows: usize,
    pub row_len: usize,
    /// Heads of the Q/K permutation (`None`: rows stay in place).
    pub permute_heads: Option<usize>,
}

impl RowPlan {
    fn source_row(&self, r: usize) -> usize {
        match self.permute_heads {
            Some(h) => permuted_row(r, self.n_rows, h),
            None => r,
        }
    }
}

/// Re-encodes a checkpoint tensor as `target`. `threads` workers each take a
/// contiguous run of output rows.
pub fn encode(
    src: &TensorView<'_>,
    rows: RowPlan,
    target: GgmlType,
    gguf_name: &str,
    threads: usize,
) -> Result<Vec<u8>, ConvertError> {
    let kernel_err = |source| ConvertError::Kernel {
        tensor: gguf_name.to_owned(),
        ty: target,
        source,
    };
    let out_row = target
        .row_size(rows.row_len as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ConvertError::Internal {
            what: format!("{gguf_name}: rows of {} cannot be {target}", rows.row_len),
        })?;
    let in_row = rows.row_len * src.dtype.size();
    if src.data.len() != in_row * rows.n_rows {
        return Err(ConvertError::Internal {
            what: format!(
                "{gguf_name}: source holds {} bytes, not {} rows of {in_row}",
                src.data.len(),
                rows.n_rows
            ),
        });
    }
    let quantize = match target {
        GgmlType::Q8_0 => Some(
            edgellama_kernels::scalar::kernels()
                .quantize(GgmlType::Q8_0)
                .ok_or_else(|| {
                    kernel_err(edgellama_kernels::KernelError::Unsupported {
                        ty: target,
                        op: "quantize",
                    })
                })?,
        ),
        _ => None,
    };
    let mut out = vec![0u8; out_row * rows.n_rows];
    if out.is_empty() {
        return Ok(out);
    }
    let threads = threads.clamp(1, rows.n_rows);
    let per = rows.n_rows.div_ceil(threads);
    let result = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * out_row)
            .enumerate()
            .map(|(ci, dst)| {
                let first = ci * per;
                s.spawn(move || {
                    let mut scratch = vec![0f32; rows.row_len];
                    for (k, dst_row) in dst.chunks_exact_mut(out_row).enumerate() {
                        let sr = rows.source_row(first + k);
                        let src_row = &src.data[sr * in_row..(sr + 1) * in_row];
                        encode_row(src.dtype, src_row, target, quantize, &mut scratch, dst_row);
                    }
                })
            })
            .collect();
        handles.into_iter().all(|h| h.join().is_ok())
    });
    if !result {
        return Err(ConvertError::WorkerPanicked {
            tensor: gguf_name.to_owned(),
        });
    }
    Ok(out)
}

fn decode_row(dtype: Dtype, src: &[u8], dst: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        Dtype::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        Dtype::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        // Refused when the conversion is planned.
        _ => dst.fill(0.0),
    }
}

fn encode_row(
    dtype: Dtype,
    src: &[u8],
    target: GgmlType,
    quantize: Option<QuantizeFn>,
    scratch: &mut [f32],
    dst: &mut [u8],
) {
    // numpy's astype to the same type is a copy: these are bit-exact.
    if (dtype == Dtype::F16 && target == GgmlType::F16)
        || (dtype == Dtype::F32 && target == GgmlType::F32)
    {
        dst.copy_from_slice(src);
        return;
    }
    decode_row(dtype, src, scratch);
    match target {
        GgmlType::F32 => {
            for (d, x) in dst.chunks_exact_mut(4).zip(scratch.iter()) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(scratch.iter()) {
                d.copy_from_slice(&f32_to_f16(x).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, &x) in dst.chunks_exact_mut(2).zip(scratch.iter()) {
                d.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
            }
        }
        _ => {
            if let Some(q) = quantize {
                q(scratch, dst);
            }
        }
    }
}

/// Every value of a checkpoint tensor as f32 (exact from F16 and BF16).
pub fn decode(src: &TensorView<'_>) -> Vec<f32> {
    let mut out = vec![0f32; src.data.len() / src.dtype.size().max(1)];
    decode_row(src.dtype, src.data, &mut out);
    out
}

/// F32 values as little-endian bytes (generated tensors).
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_types_follow_the_converter() {
        use GgmlType as T;
        assert_eq!(
            target_type("token_embd.weight", 2, 64, OutType::Q8_0),
            T::Q8_0
        );
        assert_eq!(
            target_type("blk.0.attn_norm.weight", 1, 64, OutType::F16),
            T::F32
        );
        assert_eq!(
            target_type("output_norm.weight", 2, 64, OutType::Bf16),
            T::F32
        );
        assert_eq!(
            target_type("blk.0.attn_q.bias", 2, 64, OutType::F16),
            T::F32
        );
        assert_eq!(
            target_type("rope_freqs.weight", 1, 8, OutType::Q8_0),
            T::F32
        );
        assert_eq!(
            target_type("blk.0.ffn_down.weight", 2, 48, OutType::Q8_0),
            T::F16
        );
        assert_eq!(
            target_type("blk.0.ffn_down.weight", 2, 48, OutType::Bf16),
            T::BF16
        );
    }

    fn view<'a>(dtype: Dtype, shape: &'a [u64], data: &'a [u8]) -> TensorView<'a> {
        TensorView {
            name: "t",
            dtype,
            shape,
            data,
        }
    }

    #[test]
    fn rows_are_permuted_and_converted_exactly() {
        // 4 rows of 2 (one head): rows [0,1,2,3] -> [0,2,1,3].
        let vals: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 - 1.0).collect();
        let data = f32_bytes(&vals);
        let shape = [4u64, 2];
        let rows = RowPlan {
            n_rows: 4,
            row_len: 2,
            permute_heads: Some(1),
        };
        for threads in [1, 3, 8] {
            let out = encode(
                &view(Dtype::F32, &shape, &data),
                rows,
                GgmlType::F32,
                "t",
                threads,
            )
            .unwrap();
            let got: Vec<f32> = out
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(got, [-1.0, -0.5, 1.0, 1.5, 0.0, 0.5, 2.0, 2.5]);
        }
        // bf16 -> f16 goes through f32: 1.5 and -2.0 are exact in both.
        let bf: Vec<u8> = [0x3fc0u16, 0xc000]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let rows = RowPlan {
            n_rows: 1,
            row_len: 2,
            permute_heads: None,
        };
        let out = encode(&view(Dtype::BF16, &[2], &bf), rows, GgmlType::F16, "t", 2).unwrap();
        assert_eq!(out, [0x00, 0x3e, 0x00, 0xc0]);
    }
}
