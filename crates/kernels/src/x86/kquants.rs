//! AVX2 kernels of the K-quants: the dot products of q2_K .. q6_K weights
//! with q8_K activations, and the q8_K activation quantizer.
//!
//! Each super-block's integer sums are exact (every `maddubs` pair stays
//! inside `i16`; the bounds are noted where they are tight). The float part
//! differs from the scalar twins, which keep llama.cpp's generic order: here
//! each super-block adds `d * sumi` to eight lanes with one fused
//! multiply-add, and the min corrections go to a second accumulator.
//!
//! q4_K, q5_K and q6_K are written for `C` activation rows at once (the
//! batched entries), unpacking each weight super-block once; `vec_dot` is
//! the one-row case of the same code.

use std::arch::x86_64::*;

use edgellama_gguf::QK_K;
use zerocopy::little_endian::{F32 as LeF32, I16 as LeI16};

use super::simd::{hsum_ps, load_u8x32};
use crate::blocks::{
    as_blocks, as_blocks_mut, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, Half,
};

/// 32 bytes at `p`.
///
/// # Safety
/// `p` must be valid for reading 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32<T>(p: *const T) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// The whole super-blocks of `n` elements present in both rows.
#[inline]
fn pair<'a, X>(n: usize, w: &'a [u8], a: &'a [u8]) -> (&'a [X], &'a [BlockQ8K])
where
    X: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + zerocopy::Unaligned,
{
    let x: &[X] = as_blocks(w);
    let y: &[BlockQ8K] = as_blocks(a);
    let nb = (n / QK_K).min(x.len()).min(y.len());
    (&x[..nb], &y[..nb])
}

/// Shuffle control that broadcasts the `i16` at index `k` of each 128-bit
/// lane to the whole lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bcast16(k: i16) -> __m256i {
    _mm256_set1_epi16((2 * k) | ((2 * k + 1) << 8))
}

/// Shuffle control that broadcasts `i16` number `lo` of each lane to the low
/// lane and number `hi` to the high lane: one scale for each 16 elements of a
/// 32-element vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bcast16_pair(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(
        _mm_set1_epi16((2 * hi) | ((2 * hi + 1) << 8)),
        _mm_set1_epi16((2 * lo) | ((2 * lo + 1) << 8)),
    )
}

/// Two f16 (`a` in lane 0, `b` in lane 1) widened by F16C and multiplied
/// by `y`: the super-block scales times the activations' scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_pair_times(a: Half, b: Half, y: f32) -> __m128 {
    let bits = a.to_bits() as i32 | (b.to_bits() as i32) << 16;
    _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)), _mm_set1_ps(y))
}

/// `a * y`, `a` widened by F16C, broadcast to 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_times(a: Half, y: f32) -> __m256 {
    _mm256_broadcastss_ps(f16_pair_times(a, Half::ZERO, y))
}

/// Sum of the 4 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_ps128(v: __m128) -> f32 {
    let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
}

// ---- q2_K -------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q2_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = pair::<BlockQ2K>(n, w, a);
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in xs.iter().zip(ys) {
        let dd = f16_pair_times(x.d, x.dmin, y.d.get());
        let (d, dmin) = (
            _mm256_broadcastss_ps(dd),
            _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
        );

        // SAFETY: `scales` is 16 readable bytes, `bsums` 32.
        let packed = _mm_loadu_si128(x.scales.as_ptr().cast());
        let bsums = load32(y.bsums.as_ptr());
        let mins = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
        let prod = _mm256_madd_epi16(mins, bsums);
        acc = _mm256_fnmadd_ps(dmin, _mm256_cvtepi32_ps(prod), acc);

        let all = _mm256_cvtepi8_epi16(_mm_and_si128(packed, m4));
        let sc = [
            _mm256_permute2x128_si256::<0x00>(all, all),
            _mm256_permute2x128_si256::<0x11>(all, all),
        ];
        let mut sumi = _mm256_setzero_si256();
        for ((q2, q8), sc) in x.qs.chunks_exact(32).zip(y.qs.chunks_exact(128)).zip(sc) {
            // SAFETY: `q2` is 32 readable bytes.
            let bits = load32(q2.as_ptr());
            let q = [
                _mm256_and_si256(bits, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
            ];
            for (s, (q, q8)) in q.into_iter().zip(q8.chunks_exact(32)).enumerate() {
                // SAFETY: `q8` is 32 readable bytes.
                let p = _mm256_maddubs_epi16(q, load32(q8.as_ptr()));
                let scale = _mm256_shuffle_epi8(sc, bcast16_pair(2 * s as i16, 2 * s as i16 + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---- q3_K -------------------------------------------------------------------

/// The 16 six-bit scales of a q3_K block, minus 32, as `i8` (see the scalar
/// `q3k_scale`: low nibbles in bytes 0..8, top bits in bytes 8..12).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales(s: &[u8; 12]) -> __m128i {
    const LOW: u32 = 0x0f0f_0f0f;
    const TOP: u32 = 0x0303_0303;
    let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let a2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let v = _mm_set_epi32(
        (((a1 >> 4) & LOW) | (((a2 >> 6) & TOP) << 4)) as i32,
        (((a0 >> 4) & LOW) | (((a2 >> 4) & TOP) << 4)) as i32,
        ((a1 & LOW) | (((a2 >> 2) & TOP) << 4)) as i32,
        ((a0 & LOW) | ((a2 & TOP) << 4)) as i32,
    );
    _mm_sub_epi8(v, _mm_set1_epi8(32))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_q3_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (xs, ys) = pair::<BlockQ3K>(n, w, a);
    let m3 = _mm256_set1_epi8(3);
    let four = _mm256_set1_epi8(4);
    let mut acc = _mm256_setzero_ps();
    for (x, y) in xs.iter().zip(ys) {
        let d = f16_times(x.d, y.d.get());
        let all = _mm256_cvtepi8_epi16(q3k_scales(&x.scales));
        let sc = [
            _mm256_permute2x128_si256::<0x00>(all, all),
            _mm256_permute2x128_si256::<0x11>(all, all),
        ];
        // The quants are stored as `low + 4 * high - 4`: the dot product
        // uses the unsigned `low + 4 * high` and takes `4 * scale * q8` off
        // at the end, from the activations' 16-element sums.
        // SAFETY: `bsums` is 32 readable bytes.
        let bsums = load32(y.bsums.as_ptr());
        let offset = _mm256_slli_epi32::<2>(_mm256_madd_epi16(bsums, all));
        let hbits = load_u8x32(&x.hmask);
        let mut bit = 1u8;
        let mut sumi = _mm256_setzero_si256();
        for ((q3, q8), sc) in x.qs.chunks_exact(32).zip(y.qs.chunks_exact(128)).zip(sc) {
            // SAFETY: `q3` is 32 readable bytes.
            let bits = load32(q3.as_ptr());
            let q = [
                _mm256_and_si256(bits, m3),
                _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
            ];
            for (s, (q, q8)) in q.into_iter().zip(q8.chunks_exact(32)).enumerate() {
                let m = _mm256_set1_epi8(bit as i8);
                bit = bit.wrapping_shl(1);
                let h = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, m), m), four);
                // SAFETY: `q8` is 32 readable bytes.
                let p = _mm256_maddubs_epi16(_mm256_or_si256(q, h), load32(q8.as_ptr()));
                let scale = _mm256_shuffle_epi8(sc, bcast16_pair(2 * s as i16, 2 * s as i16 + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        let sumi = _mm256_sub_epi32(sumi, offset);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

// ---- q4_K / q5_K ------------------------------------------------------------

/// The 8 scales (`i16` lanes 0..8) and 8 mins (lanes 8..16) of a q4_K/q5_K
/// block, unpacked from the 12 bytes that `get_scale_min_k4` reads.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k4_scales_mins(s: &[u8; 12]) -> __m256i {
    const SIX: u32 = 0x3f3f_3f3f;
    const LOW: u32 = 0x0f0f_0f0f;
    const TOP: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let u2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let scales_lo = u0 & SIX;
    let scales_hi = (u2 & LOW) | (((u0 >> 6) & TOP) << 4);
    let mins_lo = u1 & SIX;
    let mins_hi = ((u2 >> 4) & LOW) | (((u1 >> 6) & TOP) << 4);
    _mm256_cvtepu8_epi16(_mm_set_epi32(
        mins_hi as i32,
        mins_lo as i32,
        scales_hi as i32,
        scales_lo as i32,
    ))
}

/// `sum(bsums[j] * min[j / 2])` as four `i32` lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_min_products(scales_mins: __m256i, bsums: &[LeI16; QK_K / 16]) -> __m128i {
    // SAFETY: `bsums` is 32 readable bytes.
    let b = load32(bsums.as_ptr());
    // Pairs of 16-element sums make the 32-element sums the mins apply to
    // (each below 32 * 128 in magnitude).
    let b32 = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
    _mm_madd_epi16(_mm256_extracti128_si256::<1>(scales_mins), b32)
}

/// The q4_K/q5_K dot products of one weight row with `C` activation rows of
/// the same length; `|x, j| quants` gives the two vectors of 32 unsigned
/// quants of sub-blocks `2j` and `2j + 1` of super-block `x`, unpacked once
/// for all columns. Each column sees the same operations whatever `C` is.
macro_rules! k4_dot {
    ($name:ident, $Block:ty, |$x:ident, $j:ident| $quants:expr) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const C: usize>(xs: &[$Block], ys: [&[BlockQ8K]; C]) -> [f32; C] {
            let mut acc = [_mm256_setzero_ps(); C];
            let mut acc_m = [_mm_setzero_ps(); C];
            for (i, $x) in xs.iter().enumerate() {
                let sm = k4_scales_mins(&$x.scales);
                let sc = _mm256_permute2x128_si256::<0x00>(sm, sm);
                let mut sumi = [_mm256_setzero_si256(); C];
                for $j in 0..QK_K / 64 {
                    let (ql, qh) = $quants;
                    let scale_l = _mm256_shuffle_epi8(sc, bcast16(2 * $j as i16));
                    let scale_h = _mm256_shuffle_epi8(sc, bcast16(2 * $j as i16 + 1));
                    for (s, yc) in sumi.iter_mut().zip(ys) {
                        let q8 = &yc[i].qs[64 * $j..64 * $j + 64];
                        // SAFETY: `q8` is 64 readable bytes.
                        let (yl, yh) = (load32(q8.as_ptr()), load32(q8.as_ptr().add(32)));
                        // Scales are below 64 and each pair below 2 * 31 * 128.
                        let pl = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(ql, yl));
                        let ph = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(qh, yh));
                        *s = _mm256_add_epi32(*s, _mm256_add_epi32(pl, ph));
                    }
                }
                for (((a, am), s), yc) in acc.iter_mut().zip(acc_m.iter_mut()).zip(sumi).zip(ys) {
                    let y = &yc[i];
                    let dd = f16_pair_times($x.d, $x.dmin, y.d.get());
                    let mins = k4_min_products(sm, &y.bsums);
                    let dmin = _mm_permute_ps::<0b0101_0101>(dd);
                    *am = _mm_fnmadd_ps(dmin, _mm_cvtepi32_ps(mins), *am);
                    *a = _mm256_fmadd_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(s), *a);
                }
            }
            let mut out = [0.0; C];
            for ((o, a), am) in out.iter_mut().zip(acc).zip(acc_m) {
                *o = hsum_ps(a) + hsum_ps128(am);
            }
            out
        }
    };
}

k4_dot!(dot_q4_k, BlockQ4K, |x, j| {
    let m4 = _mm256_set1_epi8(0x0f);
    // SAFETY: j < 4, so bytes 32j..32j + 32 of the 128 `qs`.
    let bits = load32(x.qs.as_ptr().add(32 * j));
    (
        _mm256_and_si256(bits, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
    )
});

k4_dot!(dot_q5_k, BlockQ5K, |x, j| {
    let m4 = _mm256_set1_epi8(0x0f);
    let sixteen = _mm256_set1_epi8(16);
    // SAFETY: j < 4, so bytes 32j..32j + 32 of the 128 `qs`.
    let bits = load32(x.qs.as_ptr().add(32 * j));
    let hbits = load_u8x32(&x.qh);
    // Bit 2j of `qh[l]` is the fifth bit of element 64j + l, bit 2j + 1
    // that of element 64j + 32 + l.
    let m0 = _mm256_set1_epi8((1u8 << (2 * j)) as i8);
    let m1 = _mm256_set1_epi8((2u8 << (2 * j)) as i8);
    let h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, m0), m0), sixteen);
    let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hbits, m1), m1), sixteen);
    (
        _mm256_or_si256(_mm256_and_si256(bits, m4), h0),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4), h1),
    )
});

// ---- q6_K -------------------------------------------------------------------

/// The q6_K dot products of one weight row with `C` activation rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k<const C: usize>(xs: &[BlockQ6K], ys: [&[BlockQ8K]; C]) -> [f32; C] {
    let m15 = _mm256_set1_epi8(15);
    let mut acc = [_mm256_setzero_ps(); C];
    for (i, x) in xs.iter().enumerate() {
        // SAFETY: `scales` is 16 readable bytes.
        let scales = _mm_loadu_si128(x.scales.as_ptr().cast());
        let all = _mm256_cvtepi8_epi16(scales);
        let sc = [
            _mm256_permute2x128_si256::<0x00>(all, all),
            _mm256_permute2x128_si256::<0x11>(all, all),
        ];
        let mut sumi = [_mm256_setzero_si256(); C];
        for (half, (ql, qh)) in x.ql.chunks_exact(64).zip(x.qh.chunks_exact(32)).enumerate() {
            // SAFETY: `ql` is 64 readable bytes, `qh` 32.
            let (l0, l1, h) = (
                load32(ql.as_ptr()),
                load32(ql.as_ptr().add(32)),
                load32(qh.as_ptr()),
            );
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(l0, m15),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(h, _mm256_set1_epi8(0x03))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(l1, m15),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(0x0c))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m15),
                    _mm256_and_si256(h, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m15),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(h, _mm256_set1_epi8(0xc0u8 as i8))),
                ),
            ];
            for (s, q) in q.into_iter().enumerate() {
                let scale =
                    _mm256_shuffle_epi8(sc[half], bcast16_pair(2 * s as i16, 2 * s as i16 + 1));
                for (acc_i, yc) in sumi.iter_mut().zip(ys) {
                    let q8 = &yc[i].qs[128 * half + 32 * s..128 * half + 32 * s + 32];
                    // SAFETY: `q8` is 32 readable bytes. Pairs stay below
                    // 2 * 63 * 128, and the scales are `i8`.
                    let p = _mm256_maddubs_epi16(q, load32(q8.as_ptr()));
                    *acc_i = _mm256_add_epi32(*acc_i, _mm256_madd_epi16(scale, p));
                }
            }
        }
        for ((a, s), yc) in acc.iter_mut().zip(sumi).zip(ys) {
            let y = &yc[i];
            // The quants are stored plus 32: `sum(32 * scale * q8)` comes off
            // here, from the activations' 16-element sums.
            let bsums = load32(y.bsums.as_ptr());
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, all));
            let s = _mm256_sub_epi32(s, offset);
            *a = _mm256_fmadd_ps(f16_times(x.d, y.d.get()), _mm256_cvtepi32_ps(s), *a);
        }
    }
    let mut out = [0.0; C];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = hsum_ps(a);
    }
    out
}

/// The table entries: `vec_dot` and `vec_dot_batch` (see the legacy ones).
macro_rules! k_entries {
    ($one:ident, $batch:ident, $core:ident, $Block:ty) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (x, y) = pair::<$Block>(n, w, a);
            $core::<1>(x, [y])[0]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $batch(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let x: &[$Block] = as_blocks(w);
            let nb = (n / QK_K).min(x.len());
            let x = &x[..nb];
            let y: &[BlockQ8K] = as_blocks(a);
            let Some(per_row) = std::num::NonZeroUsize::new(n / QK_K) else {
                out.fill(0.0);
                return;
            };
            // The whole activation rows present, one output each.
            let present = (y.len() / per_row.get()).min(out.len());
            let mut rows = y.chunks_exact(per_row.get());
            let mut outs = out[..present].chunks_exact_mut(4);
            for o in &mut outs {
                let (Some(y0), Some(y1), Some(y2), Some(y3)) =
                    (rows.next(), rows.next(), rows.next(), rows.next())
                else {
                    return;
                };
                let r = $core::<4>(x, [&y0[..nb], &y1[..nb], &y2[..nb], &y3[..nb]]);
                o.copy_from_slice(&r);
            }
            for (o, yr) in outs.into_remainder().iter_mut().zip(rows) {
                *o = $core::<1>(x, [&yr[..nb]])[0];
            }
        }
    };
}

k_entries!(
    vec_dot_q4_k_q8_k,
    vec_dot_batch_q4_k_q8_k,
    dot_q4_k,
    BlockQ4K
);
k_entries!(
    vec_dot_q5_k_q8_k,
    vec_dot_batch_q5_k_q8_k,
    dot_q5_k,
    BlockQ5K
);
k_entries!(
    vec_dot_q6_k_q8_k,
    vec_dot_batch_q6_k_q8_k,
    dot_q6_k,
    BlockQ6K
);

// ---- q8_K activations ---------------------------------------------------------

/// The largest of 8 floats (none of them NaN).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn reduce_max(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// The value of largest magnitude in a super-block, first one on ties, and
/// that magnitude, as the scalar `signed_absmax` finds them (NaNs never win).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let sign = _mm256_set1_ps(-0.0);
    let mut amax = _mm256_setzero_ps();
    let mut hi = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut lo = _mm256_set1_ps(f32::INFINITY);
    for c in x.chunks_exact(8) {
        // SAFETY: `c` holds 8 floats.
        let v = _mm256_loadu_ps(c.as_ptr());
        // `max(a, b)` returns `b` when `a` is NaN: NaNs are skipped.
        amax = _mm256_max_ps(_mm256_andnot_ps(sign, v), amax);
        hi = _mm256_max_ps(v, hi);
        lo = _mm256_min_ps(v, lo);
    }
    let amax = reduce_max(amax);
    let hi = reduce_max(hi);
    let lo = -reduce_max(_mm256_xor_ps(lo, sign));
    if hi == amax && lo != -amax {
        (amax, amax)
    } else if lo == -amax && hi != amax {
        (-amax, amax)
    } else {
        // Both signs reach the magnitude (or it is 0): the first one wins.
        let first = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        (first, amax)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8K] = as_blocks_mut(dst);
    let magic = _mm256_set1_ps(12_582_912.0);
    let mantissa = _mm256_set1_epi32(0x007f_ffff);
    let bias = _mm256_set1_epi32(0x0040_0000);
    let max_q = _mm256_set1_epi32(127);
    let lowbyte = _mm256_set1_epi32(0xff);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let (max, amax) = signed_absmax(x);
        if amax == 0.0 {
            y.d = LeF32::new(0.0);
            y.qs = [0; QK_K];
            y.bsums = [LeI16::new(0); QK_K / 16];
            continue;
        }
        let iscale = -127.0 / max;
        let iv = _mm256_set1_ps(iscale);
        // Per 16-element group: its 8 lanes of partial sums.
        let mut group = [_mm256_setzero_si256(); QK_K / 16];
        for ((c, q), g) in x
            .chunks_exact(16)
            .zip(y.qs.chunks_exact_mut(16))
            .zip(group.iter_mut())
        {
            let mut qi = [_mm256_setzero_si256(); 2];
            for (k, v) in qi.iter_mut().enumerate() {
                // SAFETY: `c` holds 16 floats; this reads 8k..8k + 8.
                let t = _mm256_mul_ps(iv, _mm256_loadu_ps(c.as_ptr().add(8 * k)));
                // nearest_int: the integer sits in the mantissa of t + 1.5 * 2^23.
                let r = _mm256_castps_si256(_mm256_add_ps(t, magic));
                let i =
                    _mm256_min_epi32(_mm256_sub_epi32(_mm256_and_si256(r, mantissa), bias), max_q);
                *v = _mm256_and_si256(i, lowbyte);
            }
            // The low bytes, sign-extended, are the stored quants.
            *g = _mm256_add_epi32(
                _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(qi[0])),
                _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(qi[1])),
            );
            let w = _mm256_packus_epi32(qi[0], qi[1]);
            let b = _mm256_packus_epi16(w, w);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));
            // SAFETY: `q` is 16 writable bytes.
            _mm_storeu_si128(q.as_mut_ptr().cast(), _mm256_castsi256_si128(b));
        }
        // Four groups at a time: [g0 g1 g2 g3 | g0' g1' g2' g3'] then the
        // two lanes added; each sum is at most 16 * 128 in magnitude.
        let mut sums = [_mm_setzero_si128(); 4];
        for (s, g) in sums.iter_mut().zip(group.chunks_exact(4)) {
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(g[0], g[1]), _mm256_hadd_epi32(g[2], g[3]));
            *s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
        }
        // SAFETY: `bsums` is 32 writable bytes.
        let out = y.bsums.as_mut_ptr().cast::<__m128i>();
        _mm_storeu_si128(out, _mm_packs_epi32(sums[0], sums[1]));
        _mm_storeu_si128(out.add(1), _mm_packs_epi32(sums[2], sums[3]));
        y.d = LeF32::new(1.0 / iscale);
    }
}
