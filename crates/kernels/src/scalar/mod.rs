//! Portable kernels for every type, always compiled. They are the reference
//! the SIMD tables are tested against, and the fallback for every entry a
//! SIMD table does not override.
//!
//! Each function here takes slices already validated by the crate's checked
//! entry points (see [`crate::Kernels`] for the contract); given shorter or
//! longer slices they process only the whole blocks present in all of them.

pub mod attn;
pub mod float;
pub mod iq4nl;
pub mod kquants;
pub mod legacy;

use edgellama_gguf::GgmlType;

use crate::dispatch::{Kernels, TypeKernels};
use crate::vec_dot_type;

fn entry(
    ty: GgmlType,
    dequantize: crate::DequantizeFn,
    quantize: crate::QuantizeFn,
    vec_dot: Option<crate::VecDotFn>,
) -> TypeKernels {
    TypeKernels {
        ty,
        vec_dot_type: vec_dot_type(ty),
        dequantize,
        quantize,
        quantize_act: quantize,
        vec_dot,
    }
}

/// The scalar table.
pub fn kernels() -> Kernels {
    use GgmlType as T;
    Kernels::new(
        "scalar",
        &[
            entry(
                T::F32,
                float::dequantize_row_f32,
                float::quantize_row_f32,
                Some(float::vec_dot_f32),
            ),
            entry(
                T::F16,
                float::dequantize_row_f16,
                float::quantize_row_f16,
                Some(float::vec_dot_f16),
            ),
            entry(
                T::BF16,
                float::dequantize_row_bf16,
                float::quantize_row_bf16,
                Some(float::vec_dot_bf16),
            ),
            entry(
                T::Q4_0,
                legacy::dequantize_row_q4_0,
                legacy::quantize_row_q4_0,
                Some(legacy::vec_dot_q4_0_q8_0),
            ),
            entry(
                T::Q4_1,
                legacy::dequantize_row_q4_1,
                legacy::quantize_row_q4_1,
                Some(legacy::vec_dot_q4_1_q8_1),
            ),
            entry(
                T::Q5_0,
                legacy::dequantize_row_q5_0,
                legacy::quantize_row_q5_0,
                Some(legacy::vec_dot_q5_0_q8_0),
            ),
            entry(
                T::Q5_1,
                legacy::dequantize_row_q5_1,
                legacy::quantize_row_q5_1,
                Some(legacy::vec_dot_q5_1_q8_1),
            ),
            entry(
                T::Q8_0,
                legacy::dequantize_row_q8_0,
                legacy::quantize_row_q8_0,
                Some(legacy::vec_dot_q8_0_q8_0),
            ),
            entry(
                T::Q8_1,
                legacy::dequantize_row_q8_1,
                legacy::quantize_row_q8_1,
                None,
            ),
            entry(
                T::Q2_K,
                kquants::dequantize_row_q2_k,
                kquants::quantize_row_q2_k,
                Some(kquants::vec_dot_q2_k_q8_k),
            ),
            entry(
                T::Q3_K,
                kquants::dequantize_row_q3_k,
                kquants::quantize_row_q3_k,
                Some(kquants::vec_dot_q3_k_q8_k),
            ),
            entry(
                T::Q4_K,
                kquants::dequantize_row_q4_k,
                kquants::quantize_row_q4_k,
                Some(kquants::vec_dot_q4_k_q8_k),
            ),
            entry(
                T::Q5_K,
                kquants::dequantize_row_q5_k,
                kquants::quantize_row_q5_k,
                Some(kquants::vec_dot_q5_k_q8_k),
            ),
            entry(
                T::Q6_K,
                kquants::dequantize_row_q6_k,
                kquants::quantize_row_q6_k,
                Some(kquants::vec_dot_q6_k_q8_k),
            ),
            entry(
                T::Q8_K,
                kquants::dequantize_row_q8_k,
                kquants::quantize_row_q8_k,
                None,
            ),
            TypeKernels {
                // Weights as llama-quantize writes them; the KV cache as
                // ggml-cpu's `from_float` (see `iq4nl`).
                quantize_act: iq4nl::quantize_row_iq4_nl,
                ..entry(
                    T::IQ4_NL,
                    iq4nl::dequantize_row_iq4_nl,
                    iq4nl::quantize_iq4_nl,
                    Some(iq4nl::vec_dot_iq4_nl_q8_0),
                )
            },
        ],
    )
}
