//! Tensor kernels: the quantized block formats of ggml, their (de)quantization
//! and dot products, and the float operations of the transformer block.
//!
//! Quantized formats match llama.cpp bit for bit: [`quantize_row`] writes the
//! same blocks as `quantize_row_*_ref` (for `iq4_nl`, whose reference
//! quantizer differs from llama-quantize's, those of `quantize_iq4_nl`; see
//! [`scalar::iq4nl`]), [`dequantize_row`] the same floats as
//! `dequantize_row_*`, and [`vec_dot`] follows the operation order of the
//! scalar `ggml_vec_dot_*_generic`, with the activations quantized to
//! [`vec_dot_type`] as llama.cpp does.
//!
//! The functions here validate lengths and go through [`kernels()`], the table
//! picked once for this CPU; hot loops can fetch the table's function pointers
//! once and skip the checks.

pub mod blocks;
pub mod convert;
pub mod dense_attn;
mod dispatch;
mod error;
pub mod ops;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use dispatch::{
    kernels, tables, AttendBlockBf16Fn, AttendBlockFn, AxpyF16Fn, DequantizeFn, DotF16Fn,
    DotF32F16Fn, ExpSumFn, F16ToF32Fn, F32ToF16Fn, Kernels, MadF16Fn, PvTileFn, QkTileFn,
    QuantizeFn, ScaleF16Fn, SwigluFn, TransposeFn, TypeKernels, VecDotBatchFn, VecDotFn,
    VecDotTileFn,
};
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
        T::Q4_0 | T::Q5_0 | T::Q8_0 | T::IQ4_NL => T::Q8_0,
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
    if !n.is_multiple_of(block) {
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

/// Quantizes a row of activations to `t` (a [`vec_dot_type`]) as this CPU's
/// table does before a dot product (see [`TypeKernels::quantize_act`]).
pub fn quantize_activations(t: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    let f = kernels()
        .get(t)
        .map(|k| k.quantize_act)
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

/// Dot products of one weight row `w` (`n` elements of type `t`) with the
/// `out.len()` activation rows stored back to back in `a`, each quantized to
/// [`vec_dot_type`]`(t)`: `out[c]` is [`vec_dot`] of row `c`, to the bit.
pub fn vec_dot_batch(
    t: GgmlType,
    n: usize,
    w: &[u8],
    a: &[u8],
    out: &mut [f32],
) -> Result<(), KernelError> {
    let k = kernels();
    let e = k.get(t).ok_or_else(|| unsupported(t, "dot-product"))?;
    let f = e.vec_dot.ok_or_else(|| unsupported(t, "dot-product"))?;
    check_len(t, "weight row", n, w.len())?;
    let row = row_bytes(e.vec_dot_type, n)?;
    let total = out.len().checked_mul(n).ok_or(KernelError::Overflow {
        ty: e.vec_dot_type,
        n,
    })?;
    check_len(e.vec_dot_type, "activation rows", total, a.len())?;
    match k.vec_dot_batch(t) {
        Some(batch) => batch(n, w, a, out),
        None if row == 0 => out.fill(0.0),
        None => {
            for (o, r) in out.iter_mut().zip(a.chunks_exact(row)) {
                *o = f(n, w, r);
            }
        }
    }
    Ok(())
}

/// Refuses an f16 row whose length differs from the `n` elements of its
/// `f32` partner (lengths in the error are in bytes, as for the other rows).
fn check_f16_len(what: &'static str, n: usize, got: usize) -> Result<(), KernelError> {
    if got != n {
        return Err(KernelError::LengthMismatch {
            ty: GgmlType::F16,
            what,
            n,
            expected: n.saturating_mul(2),
            got: got.saturating_mul(2),
        });
    }
    Ok(())
}

/// Widens `src`, f16 bits, into `dst` of the same length.
pub fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) -> Result<(), KernelError> {
    check_f16_len("source", dst.len(), src.len())?;
    (kernels().f16_to_f32_row())(src, dst);
    Ok(())
}

/// Narrows `src` into `dst`, f16 bits of the same length, rounding as
/// [`convert::f32_to_f16`].
pub fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) -> Result<(), KernelError> {
    check_f16_len("destination", src.len(), dst.len())?;
    (kernels().f32_to_f16_row())(src, dst);
    Ok(())
}

/// `sum(a[i] * b[i])` for a query row `a` and a key row `b` of f16 bits.
pub fn dot_f32_f16(a: &[f32], b: &[u16]) -> Result<f32, KernelError> {
    check_f16_len("key row", a.len(), b.len())?;
    Ok((kernels().dot_f32_f16())(a, b))
}

/// `y[i] += alpha * x[i]` for a value row `x` of f16 bits.
pub fn axpy_f16(y: &mut [f32], alpha: f32, x: &[u16]) -> Result<(), KernelError> {
    check_f16_len("value row", y.len(), x.len())?;
    (kernels().axpy_f16())(y, alpha, x);
    Ok(())
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
        assert!(
            ["scalar", "x86-avx2", "x86-avx512vnni"].contains(&k.name()),
            "{}",
            k.name()
        );
    }

    #[test]
    fn vec_dot_batch_checks_lengths_and_serves_every_weight_type() {
        let n = 256;
        for t in GgmlType::ALL.into_iter().filter(|&t| supports(t)) {
            let at = vec_dot_type(t);
            let w = vec![0u8; row_bytes(t, n).unwrap()];
            let a = vec![0u8; 3 * row_bytes(at, n).unwrap()];
            let mut out = [f32::NAN; 3];
            vec_dot_batch(t, n, &w, &a, &mut out).unwrap();
            assert_eq!(out, [0.0; 3], "{t}");
            assert!(matches!(
                vec_dot_batch(t, n, &w, &a, &mut [0.0; 2]),
                Err(KernelError::LengthMismatch {
                    what: "activation rows",
                    ..
                })
            ));
            assert!(matches!(
                vec_dot_batch(t, n, &w[1..], &a, &mut out),
                Err(KernelError::LengthMismatch {
                    what: "weight row",
                    ..
                })
            ));
        }
        assert!(matches!(
            vec_dot_batch(GgmlType::Q8_K, 256, &[0; 292], &[0; 292], &mut [0.0]),
            Err(KernelError::Unsupported { .. })
        ));
    }

    #[test]
    fn f16_rows_refuse_mismatched_lengths() {
        let err = dot_f32_f16(&[1.0; 4], &[0; 3]).unwrap_err();
        assert_eq!(
            err,
            KernelError::LengthMismatch {
                ty: GgmlType::F16,
                what: "key row",
                n: 4,
                expected: 8,
                got: 6
            }
        );
        assert!(axpy_f16(&mut [0.0; 2], 1.0, &[0; 3]).is_err());
        assert!(f16_to_f32_row(&[0; 2], &mut [0.0; 3]).is_err());
        assert!(f32_to_f16_row(&[0.0; 2], &mut [0; 1]).is_err());
        let mut y = [1.0f32; 2];
        axpy_f16(&mut y, 2.0, &[0x3c00, 0xbc00]).unwrap();
        assert_eq!(y, [3.0, -1.0]);
    }

    #[test]
    fn supports_weight_types_only() {
        for t in GgmlType::ALL {
            let activation_only = matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K);
            assert_eq!(supports(t), !activation_only, "{t}");
        }
    }
}
