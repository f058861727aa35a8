//! Scalar conversions between `f32` and the 16-bit float formats, written to
//! give the same bits as ggml's reference conversions (`ggml-impl.h`):
//! round to nearest, ties to even, for both formats. NaN handling follows
//! ggml too: `f32 -> f16` gives the canonical quiet NaN `0x7e00` (sign kept),
//! `f32 -> bf16` truncates the payload and forces the quiet bit.

/// IEEE binary16 bits to `f32` (exact), as `ggml_compute_fp16_to_fp32`.
///
/// Branch-free: the exponent and mantissa are placed in an f32 whose exponent
/// is off by a constant, and one multiply rebiases it (normal numbers, and
/// infinities and NaNs, which stay saturated); subnormals come from a
/// magic-number subtraction. A signalling NaN comes back quiet, as the
/// multiply makes it, like every hardware conversion.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);

    let exp_offset = 0xe0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;

    let magic_mask = 126u32 << 23;
    let magic_bias = 0.5f32;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - magic_bias;

    let denormalized_cutoff = 1u32 << 27;
    let magnitude = if two_w < denormalized_cutoff {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | magnitude)
}

/// `f32` to IEEE binary16 bits, as `ggml_compute_fp32_to_fp16`.
///
/// The rounding is done by the FPU: adding a power of two chosen from the
/// input's exponent leaves exactly the bits a binary16 can hold, rounded to
/// nearest-even, and handles overflow to infinity and subnormals in one go.
#[inline]
pub fn f32_to_f16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xff00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    let magnitude = if shl1_w > 0xff00_0000 {
        0x7e00
    } else {
        nonsign
    };
    ((sign >> 16) | magnitude) as u16
}

/// bfloat16 bits to `f32` (exact: bf16 is the top half of an f32).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `f32` to bfloat16 bits, as `ggml_compute_fp32_to_bf16`: round to nearest
/// even; a NaN keeps its top payload bits and is made quiet.
#[inline]
pub fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_roundtrip_of_every_value_is_identity_except_nan_quieting() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert_eq!(f32_to_f16(f), 0x7e00 | (h & 0x8000), "{h:#06x}");
            } else {
                assert_eq!(f32_to_f16(f), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn bf16_roundtrip_of_every_value_is_identity_except_nan_quieting() {
        for h in 0..=u16::MAX {
            let f = bf16_to_f32(h);
            let back = f32_to_bf16(f);
            if f.is_nan() {
                assert_eq!(back, h | 64, "{h:#06x}");
            } else {
                assert_eq!(back, h, "{h:#06x}");
            }
        }
    }
}
