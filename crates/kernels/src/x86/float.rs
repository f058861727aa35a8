//! AVX2/F16C kernels on rows of f32, f16 and bf16: the weight dot products,
//! the f16 row conversions and the attention kernels on f16 rows.
//!
//! The dot products keep 64 running sums in eight `f32` vectors (fused
//! multiply-adds) where the scalar twins sum rounded products in `f64`; the
//! difference is bounded in `tests/simd_vs_scalar.rs`. The conversions and
//! [`axpy_f16`] give the scalar twins' bits exactly.

use std::arch::x86_64::*;

use zerocopy::little_endian::{F32 as LeF32, U16 as LeU16};
use zerocopy::IntoBytes;

use super::simd::hsum_ps;
use crate::blocks::{as_blocks, as_blocks_mut, Half};
use crate::convert::{bf16_to_f32, f16_to_f32, f32_to_f16};

/// Eight `f32` from `p`.
///
/// # Safety
/// `p` must be valid for reading 32 bytes (any alignment).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f32(p: *const u8) -> __m256 {
    _mm256_loadu_ps(p.cast())
}

/// Eight f16 from `p`, widened (exactly).
///
/// # Safety
/// `p` must be valid for reading 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// Eight bf16 from `p`, widened (exactly: a bf16 is the top half of an f32).
///
/// # Safety
/// `p` must be valid for reading 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16(p: *const u8) -> __m256 {
    let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
}

/// The body of a dot product of two rows whose elements are `$xs`/`$ys`
/// bytes wide, loaded eight at a time by `$ldx`/`$ldy`; the last `n % 8`
/// products are added one by one with `$tail(i)`.
macro_rules! dot_rows {
    ($n:expr, $x:expr, $xs:expr, $ldx:ident, $y:expr, $ys:expr, $ldy:ident, $tail:expr) => {{
        let n: usize = $n;
        let (px, py): (*const u8, *const u8) = ($x, $y);
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        while i + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                // SAFETY: j + 8 <= n, and both rows hold n elements.
                let (xv, yv) = ($ldx(px.add(j * $xs)), $ldy(py.add(j * $ys)));
                *a = _mm256_fmadd_ps(xv, yv, *a);
            }
            i += 64;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, and both rows hold n elements.
            let (xv, yv) = ($ldx(px.add(i * $xs)), $ldy(py.add(i * $ys)));
            acc[0] = _mm256_fmadd_ps(xv, yv, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])),
            _mm256_add_ps(_mm256_add_ps(acc[4], acc[5]), _mm256_add_ps(acc[6], acc[7])),
        );
        let mut sum = hsum_ps(s);
        for j in i..n {
            sum += $tail(j);
        }
        sum
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[LeF32] = as_blocks(w);
    let y: &[LeF32] = as_blocks(a);
    let n = n.min(x.len()).min(y.len());
    let tail = |j: usize| x[j].get() * y[j].get();
    dot_rows!(
        n,
        x.as_ptr().cast(),
        4,
        load_f32,
        y.as_ptr().cast(),
        4,
        load_f32,
        tail
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[Half] = as_blocks(w);
    let y: &[Half] = as_blocks(a);
    let n = n.min(x.len()).min(y.len());
    let tail = |j: usize| x[j].to_f32() * y[j].to_f32();
    dot_rows!(
        n,
        x.as_ptr().cast(),
        2,
        load_f16,
        y.as_ptr().cast(),
        2,
        load_f16,
        tail
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vec_dot_bf16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let x: &[LeU16] = as_blocks(w);
    let y: &[LeU16] = as_blocks(a);
    let n = n.min(x.len()).min(y.len());
    let tail = |j: usize| bf16_to_f32(x[j].get()) * bf16_to_f32(y[j].get());
    dot_rows!(
        n,
        x.as_ptr().cast(),
        2,
        load_bf16,
        y.as_ptr().cast(),
        2,
        load_bf16,
        tail
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32_f16(a: &[f32], b: &[u16]) -> f32 {
    let n = a.len().min(b.len());
    let tail = |j: usize| a[j] * f16_to_f32(b[j]);
    dot_rows!(
        n,
        a.as_ptr().cast(),
        4,
        load_f32,
        b.as_ptr().cast(),
        2,
        load_f16,
        tail
    )
}

/// `y += alpha * x` with the multiply and the add rounded separately, as the
/// scalar twin does, so the two agree to the bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f16(y: &mut [f32], alpha: f32, x: &[u16]) {
    let n = y.len().min(x.len());
    let (y, x) = (&mut y[..n], &x[..n]);
    let av = _mm256_set1_ps(alpha);
    let mut yc = y.chunks_exact_mut(8);
    let mut xc = x.chunks_exact(8);
    for (yo, xi) in (&mut yc).zip(&mut xc) {
        // SAFETY: both chunks hold 8 elements: 32 bytes of `yo`, 16 of `xi`.
        let xv = load_f16(xi.as_ptr().cast());
        let yv = _mm256_loadu_ps(yo.as_ptr());
        _mm256_storeu_ps(yo.as_mut_ptr(), _mm256_add_ps(yv, _mm256_mul_ps(av, xv)));
    }
    for (o, &h) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *o += alpha * f16_to_f32(h);
    }
}

/// Widens f16 to f32. F16C's conversion is exact, like the scalar one, and
/// quiets signalling NaNs the same way.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_to_f32_halves(src: &[Half], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let mut sc = src.chunks_exact(8);
    let mut dc = dst.chunks_exact_mut(8);
    for (s, d) in (&mut sc).zip(&mut dc) {
        // SAFETY: 8 halves are 16 readable bytes; 8 floats 32 writable ones.
        _mm256_storeu_ps(d.as_mut_ptr(), load_f16(s.as_ptr().cast()));
    }
    for (o, h) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        *o = h.to_f32();
    }
}

/// Narrows f32 to f16, rounding to nearest-even as the scalar code does.
/// F16C keeps a NaN's payload where ggml's conversion makes it `0x7e00`, so
/// eight values holding a NaN take the scalar path.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_to_f16_halves(src: &[f32], dst: &mut [Half]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let mut sc = src.chunks_exact(8);
    let mut dc = dst.chunks_exact_mut(8);
    for (s, d) in (&mut sc).zip(&mut dc) {
        // SAFETY: 8 floats are 32 readable bytes.
        let v = _mm256_loadu_ps(s.as_ptr());
        if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0 {
            for (o, &f) in d.iter_mut().zip(s) {
                *o = Half::from_bits(f32_to_f16(f));
            }
            continue;
        }
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        // SAFETY: 8 halves are 16 writable bytes.
        _mm_storeu_si128(d.as_mut_ptr().cast(), h);
    }
    for (o, &f) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        *o = Half::from_bits(f32_to_f16(f));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    f16_to_f32_halves(as_blocks(src), dst)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    f32_to_f16_halves(src, as_blocks_mut(dst))
}

// `u16` rows are the same bytes as `Half` rows on little-endian x86.

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    f16_to_f32_halves(as_blocks(src.as_bytes()), dst)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) {
    f32_to_f16_halves(src, as_blocks_mut(dst.as_mut_bytes()))
}

/// `ggml_vec_dot_f16` of llama.cpp's AVX2 build: four 8-lane FMA
/// accumulators over steps of 32, reduced pairwise, the leftovers added in
/// `f64` one product at a time. Scalar reference: `ops::dot_f16_ggml`
/// (the portable build's order), within rounding of this.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16(x: &[u16], y: &[u16]) -> f32 {
    let n = x.len().min(y.len());
    let np = n - n % 32;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i < np {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= np <= n: 16 bytes inside both rows.
            let xv = load_f16(x.as_ptr().add(i + 8 * j).cast());
            let yv = load_f16(y.as_ptr().add(i + 8 * j).cast());
            *a = _mm256_fmadd_ps(xv, yv, *a);
        }
        i += 32;
    }
    let mut sumf = 0f64;
    if np > 0 {
        let s02 = _mm256_add_ps(acc[0], acc[2]);
        let s13 = _mm256_add_ps(acc[1], acc[3]);
        let v = _mm256_add_ps(s02, s13);
        let t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let t1 = _mm_hadd_ps(t0, t0);
        sumf = _mm_cvtss_f32(_mm_hadd_ps(t1, t1)) as f64;
    }
    for k in np..n {
        sumf += (f16_to_f32(x[k]) * f16_to_f32(y[k])) as f64;
    }
    sumf as f32
}

/// `ggml_vec_mad_f16` of llama.cpp's AVX2 build: `y = f16(fma(x, v, y))` in
/// steps of 32, leftovers with a separate multiply and add.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f16(y: &mut [u16], x: &[u16], v: f32) {
    let n = y.len().min(x.len());
    let np = n - n % 32;
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i < np {
        for j in 0..4 {
            let k = i + 8 * j;
            // SAFETY: k + 8 <= np <= n: 16 bytes inside both rows.
            let xv = load_f16(x.as_ptr().add(k).cast());
            let yv = load_f16(y.as_ptr().add(k).cast());
            let r = _mm256_fmadd_ps(xv, vv, yv);
            _mm_storeu_si128(
                y.as_mut_ptr().add(k).cast(),
                _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(r),
            );
        }
        i += 32;
    }
    for k in np..n {
        y[k] = f32_to_f16(f16_to_f32(y[k]) + f16_to_f32(x[k]) * v);
    }
}

/// `ggml_vec_scale_f16` of llama.cpp's AVX2 build.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_f16(y: &mut [u16], v: f32) {
    let n = y.len();
    let np = n - n % 32;
    let vv = _mm256_set1_ps(v);
    let mut k = 0;
    while k < np {
        // SAFETY: k + 8 <= np <= n: 16 bytes inside the row.
        let yv = load_f16(y.as_ptr().add(k).cast());
        _mm_storeu_si128(
            y.as_mut_ptr().add(k).cast(),
            _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_mul_ps(yv, vv)),
        );
        k += 8;
    }
    for h in y[np..].iter_mut() {
        *h = f32_to_f16(f16_to_f32(*h) * v);
    }
}

/// `exp` of eight lanes as llama.cpp's AVX2+FMA `ggml_v_expf`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expf8(x: __m256) -> __m256 {
    let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000));
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(f32::from_bits(0x35bf_be8e)),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let c = _mm256_cmp_ps::<_CMP_GT_OQ>(absn, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_set1_ps(f32::from_bits(0x3c07_2010)),
                b,
                _mm256_set1_ps(f32::from_bits(0x3d2b_9f17)),
            ),
            u,
            _mm256_fmadd_ps(
                _mm256_set1_ps(f32::from_bits(0x3e2a_af33)),
                b,
                _mm256_set1_ps(f32::from_bits(0x3eff_fedb)),
            ),
        ),
        u,
        _mm256_mul_ps(_mm256_set1_ps(f32::from_bits(0x3f7f_fff6)), b),
    );
    if _mm256_movemask_ps(c) == 0 {
        return _mm256_fmadd_ps(j, k, k);
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let d = _mm256_cmp_ps::<_CMP_GT_OQ>(absn, _mm256_set1_ps(192.0));
    _mm256_or_ps(
        _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(
            d,
            _mm256_or_ps(
                _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
            ),
        ),
    )
}

/// SwiGLU as llama.cpp's AVX2 `ggml_vec_swiglu_f32`: eight lanes of
/// `x / (1 + expf8(-x)) * g`, leftovers with the scalar `expf`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let n8 = n - n % 8;
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n8 <= n: 32 bytes inside both rows.
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let g = _mm256_loadu_ps(up.as_ptr().add(i));
        let e = expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, g));
        i += 8;
    }
    for k in n8..n {
        let x = gate[k];
        gate[k] = x / (1.0 + (-x).exp()) * up[k];
    }
}

/// Softmax numerators as llama.cpp's AVX2 `ggml_vec_soft_max_f32`: eight
/// lanes of `expf8(x - max)`, each group's sum added to an `f64` total,
/// leftovers with the scalar `expf`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn exp_sum(x: &mut [f32], max: f32) -> f64 {
    let n = x.len();
    let n8 = n - n % 8;
    let m = _mm256_set1_ps(max);
    let mut sum = 0f64;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n8 <= n: 32 bytes inside the row.
        let v = expf8(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), m));
        _mm256_storeu_ps(x.as_mut_ptr().add(i), v);
        let h = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_movehdup_ps(h));
        sum += _mm_cvtss_f32(h) as f64;
        i += 8;
    }
    for v in x[n8..].iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

/// [`crate::ops::transpose`] in blocks of 8x8 floats moved through registers
/// (the edges one by one).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn transpose(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]) {
    let (rows, cols) = crate::ops::transpose_extent(src.len(), ld, rows, cols, dst.len());
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            // SAFETY: rows r0..r0 + 8 and columns c0..c0 + 8 lie inside the
            // extent both slices hold.
            macro_rules! row {
                ($i:expr) => {
                    _mm256_loadu_ps(ps.add((r0 + $i) * ld + c0))
                };
            }
            let (a0, a1, a2, a3) = (row!(0), row!(1), row!(2), row!(3));
            let (a4, a5, a6, a7) = (row!(4), row!(5), row!(6), row!(7));
            let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
            let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
            macro_rules! out {
                ($k:expr, $v:expr) => {
                    _mm256_storeu_ps(pd.add((c0 + $k) * rows + r0), $v)
                };
            }
            out!(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
            out!(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
            out!(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
            out!(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
            out!(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
            out!(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
            out!(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
            out!(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
        for r in r0..r0 + 8 {
            for c in c8..cols {
                dst[c * rows + r] = src[r * ld + c];
            }
        }
    }
    for r in r8..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * ld + c];
        }
    }
}
