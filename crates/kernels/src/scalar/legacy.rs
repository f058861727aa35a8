//! The 32-element formats: q4_0, q4_1, q5_0, q5_1, q8_0 and the q8_1
//! activations. Ports of `quantize_row_*_ref` / `dequantize_row_*` in
//! llama.cpp's `ggml-quants.c` and `ggml_vec_dot_*_generic` in
//! `ggml-cpu/quants.c`, keeping their order of float operations so that
//! results are bit-identical.
//!
//! Contract of the `&[u8]` functions (the dispatch table's entries): the
//! slices hold exactly the blocks for the element count (`dst.len()`,
//! `src.len()` or `n`). Only whole blocks present in both inputs are
//! processed; the checked entry points in the crate root guarantee that.

use crate::blocks::{
    as_blocks, as_blocks_mut, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    Half, QK,
};

/// C's float-to-integer conversion as llama.cpp's x86-64 builds execute it
/// (`cvttss2si`): truncation toward zero, with NaN and out-of-range values
/// giving `i32::MIN`. Callers then narrow with `as i8`/`as u8`, which keeps
/// the low bits as C's integer conversion does. Rust's saturating `as` would
/// differ only for such degenerate inputs (e.g. a block whose scale is a
/// subnormal, so that `1/d` overflows).
#[inline]
fn c_float_to_int(v: f32) -> i32 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    }
}

/// `(int)roundf(v)` (round half away from zero, then C's conversion as in
/// [`c_float_to_int`]) without calling libm's `roundf`: the fraction left by
/// truncation is exact, so comparing it with one half decides the rounding.
#[inline]
fn c_round_to_int(v: f32) -> i32 {
    if !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        return i32::MIN;
    }
    let t = v as i32;
    let frac = v - t as f32;
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// The `(value, |value|)` of largest magnitude, first one on ties.
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline]
fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

// ---- q4_0 -------------------------------------------------------------------

pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ4_0] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse_or_zero(d);
        b.d = Half::from_f32(d);
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[QK / 2 + j] * id;
            let xi0 = (c_float_to_int(x0 + 8.5) as i8).min(15) as u8;
            let xi1 = (c_float_to_int(x1 + 8.5) as i8).min(15) as u8;
            b.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

pub fn dequantize_row_q4_0(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ4_0] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            let x0 = (b.qs[j] & 0x0f) as i32 - 8;
            let x1 = (b.qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

pub fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockQ4_0] = as_blocks(w);
    let y: &[BlockQ8_0] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y).take(n / QK) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let v0 = (xb.qs[j] & 0x0f) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            sumi0 += v0 * yb.qs[j] as i32;
            sumi1 += v1 * yb.qs[j + QK / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += sumi as f32 * xb.d.to_f32() * yb.d.to_f32();
    }
    sumf
}

// ---- q4_1 -------------------------------------------------------------------

pub fn quantize_row_q4_1(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ4_1] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        b.d = Half::from_f32(d);
        b.m = Half::from_f32(min);
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[QK / 2 + j] - min) * id;
            let xi0 = (c_float_to_int(x0 + 0.5) as i8).min(15) as u8;
            let xi1 = (c_float_to_int(x1 + 0.5) as i8).min(15) as u8;
            b.qs[j] = xi0 | (xi1 << 4);
        }
    }
}

pub fn dequantize_row_q4_1(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ4_1] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for j in 0..QK / 2 {
            let x0 = (b.qs[j] & 0x0f) as i32;
            let x1 = (b.qs[j] >> 4) as i32;
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

pub fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockQ4_1] = as_blocks(w);
    let y: &[BlockQ8_1] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y).take(n / QK) {
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let v0 = (xb.qs[j] & 0x0f) as i32;
            let v1 = (xb.qs[j] >> 4) as i32;
            sumi0 += v0 * yb.qs[j] as i32;
            sumi1 += v1 * yb.qs[j + QK / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

// ---- q5_0 -------------------------------------------------------------------

pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ5_0] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse_or_zero(d);
        b.d = Half::from_f32(d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[QK / 2 + j] * id;
            let xi0 = (c_float_to_int(x0 + 16.5) as i8).min(31) as u8;
            let xi1 = (c_float_to_int(x1 + 16.5) as i8).min(31) as u8;
            b.qs[j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

/// Element `j` and `j + 16` of a 5-bit block: low nibbles plus the fifth bit
/// from `qh`, before any offset.
#[inline]
fn q5_pair(qs: u8, qh: u32, j: usize) -> (i32, i32) {
    let xh0 = (((qh >> j) << 4) & 0x10) as u8;
    let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
    (((qs & 0x0f) | xh0) as i32, ((qs >> 4) | xh1) as i32)
}

pub fn dequantize_row_q5_0(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ5_0] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let (x0, x1) = q5_pair(b.qs[j], qh, j);
            y[j] = (x0 - 16) as f32 * d;
            y[j + QK / 2] = (x1 - 16) as f32 * d;
        }
    }
}

pub fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockQ5_0] = as_blocks(w);
    let y: &[BlockQ8_0] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y).take(n / QK) {
        let qh = u32::from_le_bytes(xb.qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let (x0, x1) = q5_pair(xb.qs[j], qh, j);
            sumi0 += (x0 - 16) * yb.qs[j] as i32;
            sumi1 += (x1 - 16) * yb.qs[j + QK / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32;
    }
    sumf
}

// ---- q5_1 -------------------------------------------------------------------

pub fn quantize_row_q5_1(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ5_1] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        b.d = Half::from_f32(d);
        b.m = Half::from_f32(min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[QK / 2 + j] - min) * id;
            let xi0 = c_float_to_int(x0 + 0.5) as u8;
            let xi1 = c_float_to_int(x1 + 0.5) as u8;
            b.qs[j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
    }
}

pub fn dequantize_row_q5_1(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ5_1] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK / 2 {
            let (x0, x1) = q5_pair(b.qs[j], qh, j);
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

pub fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockQ5_1] = as_blocks(w);
    let y: &[BlockQ8_1] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y).take(n / QK) {
        let qh = u32::from_le_bytes(xb.qh);
        let mut sumi0 = 0i32;
        let mut sumi1 = 0i32;
        for j in 0..QK / 2 {
            let (x0, x1) = q5_pair(xb.qs[j], qh, j);
            sumi0 += x0 * yb.qs[j] as i32;
            sumi1 += x1 * yb.qs[j + QK / 2] as i32;
        }
        let sumi = sumi0 + sumi1;
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
    }
    sumf
}

// ---- q8_0 -------------------------------------------------------------------

/// `amax / 127` and its inverse (0 for an all-zero block).
#[inline]
fn q8_scale(x: &[f32]) -> (f32, f32) {
    // `MAX(amax, fabsf(v))` as the C macro spells it, NaN propagation included.
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
    let d = amax / 127.0;
    (d, inverse_or_zero(d))
}

pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_0] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let (d, id) = q8_scale(x);
        b.d = Half::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = c_round_to_int(v * id) as i8;
        }
    }
}

pub fn dequantize_row_q8_0(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ8_0] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

pub fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockQ8_0] = as_blocks(w);
    let y: &[BlockQ8_0] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (xb, yb) in x.iter().zip(y).take(n / QK) {
        let sumi: i32 = xb
            .qs
            .iter()
            .zip(&yb.qs)
            .map(|(&p, &q)| p as i32 * q as i32)
            .sum();
        sumf += sumi as f32 * (xb.d.to_f32() * yb.d.to_f32());
    }
    sumf
}

/// `q8_0` as llama.cpp's x86 SIMD `quantize_row_q8_0` computes it for
/// activations: `id = 127 / amax`, products rounded half to even. The scalar
/// twin of the AVX2 activation quantizer.
pub fn quantize_row_q8_0_x86(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_0] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let (d, id) = q8_scale_x86(x);
        b.d = Half::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = round_even_to_i8(v * id);
        }
    }
}

/// `q8_1` as llama.cpp's x86 SIMD `quantize_row_q8_1` computes it:
/// as [`quantize_row_q8_0_x86`], with `s = d * sum(q)`.
pub fn quantize_row_q8_1_x86(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_1] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let (d, id) = q8_scale_x86(x);
        b.d = Half::from_f32(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = round_even_to_i8(v * id);
            sum += *q as i32;
        }
        b.s = Half::from_f32(d * sum as f32);
    }
}

/// `amax / 127` and `127 / amax` (0 for an all-zero block).
#[inline]
fn q8_scale_x86(x: &[f32]) -> (f32, f32) {
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (amax / 127.0, id)
}

/// Round half to even, then keep the low byte of the `i32` conversion as
/// `_mm256_cvtps_epi32` + the packs would for in-range values; NaN and
/// out-of-range values give `i32::MIN`'s low byte, 0, as the x86 conversion.
#[inline]
fn round_even_to_i8(v: f32) -> i8 {
    let r = v.round_ties_even();
    if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
        r as i32 as i8
    } else {
        0
    }
}

// ---- q8_1 (activations of q4_1 / q5_1) -------------------------------------

pub fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_1] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let (d, id) = q8_scale(x);
        b.d = Half::from_f32(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = c_round_to_int(v * id) as i8;
            sum += *q as i32;
        }
        b.s = Half::from_f32(sum as f32 * d);
    }
}

/// llama.cpp has no `dequantize_row_q8_1`; this is the format's definition,
/// `x = d * q`, like `q8_0`.
pub fn dequantize_row_q8_1(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ8_1] = as_blocks(src);
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_activation_rounding_is_127_over_amax_ties_to_even() {
        // amax 127 makes id exactly 1, so the products are the inputs.
        let mut x = [0f32; QK];
        x[..6].copy_from_slice(&[127.0, 2.5, -2.5, 3.5, 0.5, -1.5]);
        let mut out = [0u8; 36];
        quantize_row_q8_1_x86(&x, &mut out);
        let b: &[BlockQ8_1] = as_blocks(&out);
        assert_eq!(&b[0].qs[..6], &[127, 2, -2, 4, 0, -2]);
        assert_eq!(b[0].d.to_f32(), 1.0);
        assert_eq!(b[0].s.to_f32(), 129.0);
        // The reference rounds the same ties away from zero.
        let mut r = [0u8; 36];
        quantize_row_q8_1(&x, &mut r);
        let rb: &[BlockQ8_1] = as_blocks(&r);
        assert_eq!(&rb[0].qs[..6], &[127, 3, -3, 4, 1, -2]);
    }

    #[test]
    fn c_float_to_int_matches_x86_for_out_of_range() {
        assert_eq!(c_float_to_int(16.9), 16);
        assert_eq!(c_float_to_int(-3.7), -3);
        assert_eq!(c_float_to_int(f32::INFINITY), i32::MIN);
        assert_eq!(c_float_to_int(f32::NEG_INFINITY), i32::MIN);
        assert_eq!(c_float_to_int(f32::NAN), i32::MIN);
        assert_eq!(c_float_to_int(3e9), i32::MIN);
        assert_eq!(c_float_to_int(-2_147_483_648.0), i32::MIN);
    }

    #[test]
    fn c_round_to_int_is_roundf_then_convert() {
        let mut cases = vec![
            0.5f32,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            126.5,
            -127.5,
        ];
        cases.extend([
            8_388_607.5,
            8_388_608.0,
            16_777_217.0,
            2_147_483_520.0,
            -2_147_483_648.0,
        ]);
        cases.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3e9,
            -3e9,
            1e-40,
            -0.0,
        ]);
        let mut s = 1u32;
        for _ in 0..100_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            cases.push(f32::from_bits(s));
            cases.push((s >> 8) as f32 / 65536.0 - 128.0);
        }
        for v in cases {
            assert_eq!(
                c_round_to_int(v),
                c_float_to_int(v.round()),
                "{v:e} ({:#010x})",
                v.to_bits()
            );
        }
    }

    #[test]
    fn q8_0_ties_round_away_from_zero_like_roundf() {
        // 2.5 * (127 / 127) rounds to 3, -2.5 to -3 (not banker's rounding).
        let mut x = [0.0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        let mut q = [0u8; 34];
        quantize_row_q8_0(&x, &mut q);
        let b: &[BlockQ8_0] = as_blocks(&q);
        assert_eq!(&b[0].qs[..3], &[127, 3, -3]);
    }
}
