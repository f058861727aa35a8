//! Tensor kernels: the quantized block formats of ggml, their (de)quantization
//! and dot products, and the float operations of the transformer block.
//!
//! Quantized formats match llama.cpp bit for bit: [`quantize_row`] writes the
//! same blocks as `quantize_row_*_ref`, [`dequantize_row`] the same floats as
//! `dequantize_row_*`, and [`vec_dot`] follows the operation order of the
//! scalar `ggml_vec_dot_*_generic`, with the activations quantized to
//! [`vec_dot_type`] as llama.cpp does.
//!
//! The functions here validate lengths and go through [`kernels()`], the table
//! picked once for this CPU; hot loops can fetch the table's function pointers
//! once and skip the checks.

pub mod blocks;
pub mod convert;
mod dispatch;
mod error;
pub mod ops;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dispatch::{kernels, DequantizeFn, Kernels, QuantizeFn, TypeKernels, VecDotFn};
pub use edgellama_gguf::{GgmlType, QK_K};
pub use error::KernelError;

/// The format activations are quantized to before a dot product with weights
/// of type `t` (ggml-cpu's `vec_dot_type`).
pub const fn vec_dot_type(t: GgmlType) -> GgmlType {
    use GgmlType as T;
    match t {
        T::F32 => T::F32,
        T::F16 => T::F16,
        T::BF16 => T::BF16,
        T::Q4_0 | T::Q5_0 | T::Q8_0 => T::Q8_0,
        T::Q4_1 | T::Q5_1 | T::Q8_1 => T::Q8_1,
        T::Q2_K | T::Q3_K | T::Q4_K | T::Q5_K | T::Q6_K | T::Q8_K => T::Q8_K,
    }
}

/// Whether `t` can be a weight type here: it has a dequantizer, an
/// activation quantizer and a dot product. False for the activation-only
/// formats `q8_1` and `q8_K`.
pub fn supports(t: GgmlType) -> bool {
    let k = kernels();
    k.vec_dot(t).is_some() && k.quantize_activations(t).is_some()
}

/// Bytes of a row of `n` elements of `t`.
fn row_bytes(t: GgmlType, n: usize) -> Result<usize, KernelError> {
    let block = t.block_size();
    if n % block != 0 {
        return Err(KernelError::NotBlockMultiple { ty: t, n, block });
    }
    (n / block)
        .checked_mul(t.type_size())
        .ok_or(KernelError::Overflow { ty: t, n })
}

fn check_len(t: GgmlType, what: &'static str, n: usize, got: usize) -> Result<(), KernelError> {
    let expected = row_bytes(t, n)?;
    if got != expected {
        return Err(KernelError::LengthMismatch {
            ty: t,
            what,
            n,
            expected,
            got,
        });
    }
    Ok(())
}

fn unsupported(ty: GgmlType, op: &'static str) -> KernelError {
    KernelError::Unsupported { ty, op }
}

/// Dequantizes `dst.len()` elements of type `t` from `src`, which must hold
/// exactly their blocks.
pub fn dequantize_row(t: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    let f = kernels()
        .dequantize(t)
        .ok_or_else(|| unsupported(t, "dequantize"))?;
    check_len(t, "source", dst.len(), src.len())?;
    f(src, dst);
    Ok(())
}

/// Quantizes `src` to type `t` into `dst`, which must be exactly the size of
/// the resulting blocks.
pub fn quantize_row(t: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    let f = kernels()
        .quantize(t)
        .ok_or_else(|| unsupported(t, "quantize"))?;
    check_len(t, "destination", src.len(), dst.len())?;
    f(src, dst);
    Ok(())
}

/// Dot product of `n` elements: `w` a row of type `t`, `a` the activations
/// already quantized with [`quantize_row`] to [`vec_dot_type`]`(t)`.
pub fn vec_dot(t: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Result<f32, KernelError> {
    let k = kernels()
        .get(t)
        .ok_or_else(|| unsupported(t, "dot-product"))?;
    let f = k.vec_dot.ok_or_else(|| unsupported(t, "dot-product"))?;
    check_len(t, "weight row", n, w.len())?;
    check_len(k.vec_dot_type, "activation row", n, a.len())?;
    Ok(f(n, w, a))
}

/// Dequantizes a whole tensor of `n` elements of type `t`.
pub fn dequantize_tensor(t: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, KernelError> {
    let mut out = vec![0.0f32; n];
    dequantize_row(t, src, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<Kernels>();
        assert_send_sync::<TypeKernels>();
        assert_send_sync::<&'static Kernels>();
        assert_send_sync::<KernelError>();
    }

    #[test]
    fn table_covers_every_type() {
        let k = kernels();
        for t in GgmlType::ALL {
            let e = k.get(t).unwrap_or_else(|| panic!("no kernels for {t}"));
            assert_eq!(e.ty, t);
            assert_eq!(e.vec_dot_type, vec_dot_type(t));
        }
        assert_eq!(k.name(), "scalar");
    }

    #[test]
    fn supports_weight_types_only() {
        for t in GgmlType::ALL {
            let activation_only = matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K);
            assert_eq!(supports(t), !activation_only, "{t}");
        }
    }
}
