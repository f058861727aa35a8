//! AVX2 kernels of the 32-element formats: the dot products of q4_0, q4_1,
//! q5_0, q5_1 and q8_0 weights with q8_0/q8_1 activations, and the q8_0/q8_1
//! activation quantizers.
//!
//! Dot products: each block's integer sum is exact, as in the scalar code;
//! what differs is the float part. The scalar twin adds one rounded term per
//! block to a single `f32`; here four blocks' sums are reduced together
//! ([`hsum4_epi32`]), converted once and folded into eight lanes with one
//! fused multiply-add, so results differ from the scalar ones by a few
//! roundings per block (bounded in `tests/simd_vs_scalar.rs`).
//!
//! Quantizers: byte-identical to the scalar ones, rounding included.

use std::arch::x86_64::*;

use super::simd::{
    dot_i8x32, dot_u8x32, dot_u8x32_offset, f16x8, fifth_bits, hsum4_epi32, hsum_ps, load_i8x32,
    nibbles, pack4, scale4,
};
use crate::blocks::{
    as_blocks, as_blocks_mut, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    Half, QK,
};

// ---- per-block integer dot products (8 lanes of i32 partial sums) ----------

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_0(x: &BlockQ4_0, y: &BlockQ8_0) -> __m256i {
    dot_u8x32_offset::<8>(nibbles(&x.qs), load_i8x32(&y.qs))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q5_0(x: &BlockQ5_0, y: &BlockQ8_0) -> __m256i {
    let q = _mm256_or_si256(nibbles(&x.qs), fifth_bits(x.qh));
    dot_u8x32_offset::<16>(q, load_i8x32(&y.qs))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q8_0(x: &BlockQ8_0, y: &BlockQ8_0) -> __m256i {
    dot_i8x32(load_i8x32(&x.qs), load_i8x32(&y.qs))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4_1(x: &BlockQ4_1, y: &BlockQ8_1) -> __m256i {
    dot_u8x32(nibbles(&x.qs), load_i8x32(&y.qs))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q5_1(x: &BlockQ5_1, y: &BlockQ8_1) -> __m256i {
    let q = _mm256_or_si256(nibbles(&x.qs), fifth_bits(x.qh));
    dot_u8x32(q, load_i8x32(&y.qs))
}

/// `x = d * q` weights against q8_0: `sum(d_x * d_y * sumi)`.
macro_rules! symmetric_vec_dot {
    ($name:ident, $Block:ty, $block:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let x: &[$Block] = as_blocks(w);
            let y: &[BlockQ8_0] = as_blocks(a);
            let nb = (n / QK).min(x.len()).min(y.len());
            let (xq, yq) = (x[..nb].chunks_exact(4), y[..nb].chunks_exact(4));
            let (xr, yr) = (xq.remainder(), yq.remainder());
            let mut acc = _mm256_setzero_ps();
            for (xs, ys) in xq.zip(yq) {
                let ([x0, x1, x2, x3], [y0, y1, y2, y3]) = (xs, ys) else {
                    continue;
                };
                let sums = hsum4_epi32(
                    $block(x0, y0),
                    $block(x1, y1),
                    $block(x2, y2),
                    $block(x3, y3),
                );
                let d = scale4(
                    [
                        x0.d.to_bits(),
                        x1.d.to_bits(),
                        x2.d.to_bits(),
                        x3.d.to_bits(),
                    ],
                    [
                        y0.d.to_bits(),
                        y1.d.to_bits(),
                        y2.d.to_bits(),
                        y3.d.to_bits(),
                    ],
                );
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
            }
            if !xr.is_empty() {
                // The last one to three blocks, padded with zero sums and scales.
                let mut p = [_mm256_setzero_si256(); 4];
                let (mut dx, mut dy) = ([0u16; 4], [0u16; 4]);
                for (i, (xb, yb)) in xr.iter().zip(yr).enumerate() {
                    p[i] = $block(xb, yb);
                    dx[i] = xb.d.to_bits();
                    dy[i] = yb.d.to_bits();
                }
                let sums = hsum4_epi32(p[0], p[1], p[2], p[3]);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale4(dx, dy), acc);
            }
            hsum_ps(acc)
        }
    };
}

/// `x = d * q + m` weights against q8_1: `sum(d_x * d_y * sumi + m * s)`,
/// where the activations' `s = d_y * sum(q_y)` applies the offset.
macro_rules! offset_vec_dot {
    ($name:ident, $Block:ty, $block:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let x: &[$Block] = as_blocks(w);
            let y: &[BlockQ8_1] = as_blocks(a);
            let nb = (n / QK).min(x.len()).min(y.len());
            let (xq, yq) = (x[..nb].chunks_exact(4), y[..nb].chunks_exact(4));
            let (xr, yr) = (xq.remainder(), yq.remainder());
            let mut acc = _mm256_setzero_ps();
            // High half: the `m * s` terms; low half unused.
            let mut acc_m = _mm256_setzero_ps();
            for (xs, ys) in xq.zip(yq) {
                let ([x0, x1, x2, x3], [y0, y1, y2, y3]) = (xs, ys) else {
                    continue;
                };
                let sums = hsum4_epi32(
                    $block(x0, y0),
                    $block(x1, y1),
                    $block(x2, y2),
                    $block(x3, y3),
                );
                // [d_x * d_y (4) | m * s (4)]
                let p = _mm256_mul_ps(
                    f16x8(
                        pack4([
                            x0.d.to_bits(),
                            x1.d.to_bits(),
                            x2.d.to_bits(),
                            x3.d.to_bits(),
                        ]),
                        pack4([
                            x0.m.to_bits(),
                            x1.m.to_bits(),
                            x2.m.to_bits(),
                            x3.m.to_bits(),
                        ]),
                    ),
                    f16x8(
                        pack4([
                            y0.d.to_bits(),
                            y1.d.to_bits(),
                            y2.d.to_bits(),
                            y3.d.to_bits(),
                        ]),
                        pack4([
                            y0.s.to_bits(),
                            y1.s.to_bits(),
                            y2.s.to_bits(),
                            y3.s.to_bits(),
                        ]),
                    ),
                );
                let d = _mm256_permute2f128_ps::<0x00>(p, p);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
                acc_m = _mm256_add_ps(acc_m, p);
            }
            if !xr.is_empty() {
                let mut p = [_mm256_setzero_si256(); 4];
                let mut h = [[0u16; 4]; 4];
                for (i, (xb, yb)) in xr.iter().zip(yr).enumerate() {
                    p[i] = $block(xb, yb);
                    h[0][i] = xb.d.to_bits();
                    h[1][i] = xb.m.to_bits();
                    h[2][i] = yb.d.to_bits();
                    h[3][i] = yb.s.to_bits();
                }
                let sums = hsum4_epi32(p[0], p[1], p[2], p[3]);
                let p = _mm256_mul_ps(
                    f16x8(pack4(h[0]), pack4(h[1])),
                    f16x8(pack4(h[2]), pack4(h[3])),
                );
                let d = _mm256_permute2f128_ps::<0x00>(p, p);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
                acc_m = _mm256_add_ps(acc_m, p);
            }
            let m = _mm256_extractf128_ps::<1>(acc_m);
            let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_add_ss(m, _mm_movehdup_ps(m));
            hsum_ps(acc) + _mm_cvtss_f32(m)
        }
    };
}

symmetric_vec_dot!(vec_dot_q4_0_q8_0, BlockQ4_0, block_q4_0);
symmetric_vec_dot!(vec_dot_q5_0_q8_0, BlockQ5_0, block_q5_0);
symmetric_vec_dot!(vec_dot_q8_0_q8_0, BlockQ8_0, block_q8_0);
offset_vec_dot!(vec_dot_q4_1_q8_1, BlockQ4_1, block_q4_1);
offset_vec_dot!(vec_dot_q5_1_q8_1, BlockQ5_1, block_q5_1);

// ---- q8_0 / q8_1 activation quantizers -------------------------------------

/// One block quantized as the scalar `quantize_row_q8_0`/`q8_1` does it:
/// `d = amax / 127`, `q = (i8)(int)roundf(x / d)` with C's conversion
/// (out-of-range and NaN give `i32::MIN`, whose low byte is kept).
/// Returns `d` and the 32 quants, or `None` when the block holds an infinity
/// or a NaN: the scalar `amax` then depends on where they sit, and the caller
/// quantizes such a block with the scalar code.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: &[f32]) -> Option<(f32, __m256i)> {
    debug_assert_eq!(x.len(), QK);
    if x.len() < QK {
        return None;
    }
    // SAFETY: `x` holds at least 32 floats, the four loads read 0..32.
    let v = [
        _mm256_loadu_ps(x.as_ptr()),
        _mm256_loadu_ps(x.as_ptr().add(8)),
        _mm256_loadu_ps(x.as_ptr().add(16)),
        _mm256_loadu_ps(x.as_ptr().add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    // Infinity or NaN in any lane: `!(|x| <= f32::MAX)`.
    let big = _mm256_set1_ps(f32::MAX);
    let mut special = _mm256_setzero_ps();
    let mut amax = _mm256_setzero_ps();
    for e in v {
        let a = _mm256_andnot_ps(sign, e);
        special = _mm256_or_ps(special, _mm256_cmp_ps::<_CMP_NLE_UQ>(a, big));
        amax = _mm256_max_ps(amax, a);
    }
    if _mm256_movemask_ps(special) != 0 {
        return None;
    }
    let m = _mm_max_ps(
        _mm256_castps256_ps128(amax),
        _mm256_extractf128_ps::<1>(amax),
    );
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    let amax = _mm_cvtss_f32(m);

    // The scalar code's expressions, so `d` and `id` are the same floats.
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let half = _mm256_set1_ps(0.5);
    let neg_half = _mm256_set1_ps(-0.5);
    let lowbyte = _mm256_set1_epi32(0xff);
    let mut q = [_mm256_setzero_si256(); 4];
    for (qi, e) in q.iter_mut().zip(v) {
        let t = _mm256_mul_ps(e, idv);
        // roundf: truncate, then step away from zero when the (exact)
        // fraction reaches one half. `cvtt` gives i32::MIN out of range and
        // for NaN, and the comparisons are then false, as in C.
        let trunc = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(t);
        let frac = _mm256_sub_ps(t, trunc);
        let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half));
        let down = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, neg_half));
        let i = _mm256_add_epi32(_mm256_sub_epi32(_mm256_cvttps_epi32(t), up), down);
        // Keep the low byte, as `as i8` does, so the packs cannot saturate.
        *qi = _mm256_and_si256(i, lowbyte);
    }
    let q01 = _mm256_packus_epi32(q[0], q[1]);
    let q23 = _mm256_packus_epi32(q[2], q[3]);
    // The packs work per 128-bit lane; this restores element order.
    let bytes = _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(q01, q23),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    );
    Some((d, bytes))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_0] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        match q8_block(x) {
            Some((d, q)) => {
                b.d = Half::from_f32(d);
                // SAFETY: `qs` is 32 writable bytes.
                _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q);
            }
            None => {
                crate::scalar::legacy::quantize_row_q8_0(x, zerocopy::IntoBytes::as_mut_bytes(b))
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_1] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        match q8_block(x) {
            Some((d, q)) => {
                b.d = Half::from_f32(d);
                // SAFETY: `qs` is 32 writable bytes.
                _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q);
                let sum = super::simd::hsum_epi32(dot_u8x32_ones(q));
                b.s = Half::from_f32(sum as f32 * d);
            }
            None => {
                crate::scalar::legacy::quantize_row_q8_1(x, zerocopy::IntoBytes::as_mut_bytes(b))
            }
        }
    }
}

/// The signed bytes of `q` summed in fours to `i32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8x32_ones(q: __m256i) -> __m256i {
    dot_u8x32(_mm256_set1_epi8(1), q)
}
