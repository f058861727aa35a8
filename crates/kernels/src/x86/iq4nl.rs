//! AVX2 dot product of iq4_nl weights (or KV-cache rows) with q8_0
//! activations: llama.cpp's AVX2 `ggml_vec_dot_iq4_nl_q8_0`, the same
//! instructions in the same order, so it gives the bits of llama.cpp's x86
//! builds. Its scalar twin is [`crate::scalar::iq4nl::vec_dot_iq4_nl_q8_0_x86`]
//! (bit-identical); it differs from the generic scalar kernel by float
//! roundings only (both bounded in `tests/iq4_nl.rs`).

use std::arch::x86_64::*;

use super::simd::{hsum_ps, load_i8x32, nibbles};
use crate::blocks::{as_blocks, BlockQ8_0, QK};
use crate::scalar::iq4nl::{BlockIQ4NL, KVALUES_IQ4NL};

/// The 32 levels of a block, `[elements 0..16 | elements 16..32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn levels(values: __m256i, x: &BlockIQ4NL) -> __m256i {
    _mm256_shuffle_epi8(values, nibbles(&x.qs))
}

/// `mul_add_epi8`: `|q| * sign(y, q)` in pairs to `i16`, then to 8 lanes of
/// `i32`, lane `k` the products of elements `4k..4k + 4`. Exact: a level is
/// never 0 and at most 127 in magnitude, so a pair stays inside `i16`; only
/// an activation of -128 against a negative level counts as -128, as on
/// llama.cpp's CPU path.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_dot(q: __m256i, y: &BlockQ8_0) -> __m256i {
    let p16 = _mm256_maddubs_epi16(
        _mm256_sign_epi8(q, q),
        _mm256_sign_epi8(load_i8x32(&y.qs), q),
    );
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// # Safety
///
/// The CPU must have AVX2, FMA and F16C (see the module note of `x86`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[BlockIQ4NL] = as_blocks(w);
    let y: &[BlockQ8_0] = as_blocks(a);
    let nb = (n / QK).min(x.len()).min(y.len());
    // SAFETY: `KVALUES_IQ4NL` is 16 readable bytes.
    let values = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()));
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let mut ib = 0;
    while ib + 1 < nb {
        let (x1, x2) = (&x[ib], &x[ib + 1]);
        let (y1, y2) = (&y[ib], &y[ib + 1]);
        let p1 = block_dot(levels(values, x1), y1);
        let p2 = block_dot(levels(values, x2), y2);
        let d1 = _mm256_set1_ps(y1.d.to_f32() * x1.d.to_f32());
        let d2 = _mm256_set1_ps(y2.d.to_f32() * x2.d.to_f32());
        acc1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(p1), acc1);
        acc2 = _mm256_fmadd_ps(d2, _mm256_cvtepi32_ps(p2), acc2);
        ib += 2;
    }
    let mut sumf = hsum_ps(_mm256_add_ps(acc1, acc2));
    for (xb, yb) in x.iter().zip(y).take(nb).skip(ib) {
        // The generic code's tail, `sumf += d * (sumi1 + sumi2)`, rounded
        // twice as in llama.cpp's build (see the scalar twin).
        let d = yb.d.to_f32() * xb.d.to_f32();
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += yb.qs[j] as i32 * KVALUES_IQ4NL[(xb.qs[j] & 0x0f) as usize] as i32;
            sumi += yb.qs[j + QK / 2] as i32 * KVALUES_IQ4NL[(xb.qs[j] >> 4) as usize] as i32;
        }
        sumf += d * sumi as f32;
    }
    sumf
}
