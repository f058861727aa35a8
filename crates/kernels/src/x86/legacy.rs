//! AVX2 kernels of the 32-element formats: the dot products of q4_0, q4_1,
//! q5_0, q5_1 and q8_0 weights with q8_0/q8_1 activations, and the q8_0/q8_1
//! activation quantizers.
//!
//! Dot products: each block's integer sum is exact, as in the scalar code;
//! what differs is the float part. The scalar twin adds one rounded term per
//! block to a single `f32`; here four blocks' sums are reduced together
//! ([`hsum4_epi32`]), converted once and folded into eight lanes with one
//! fused multiply-add, so results differ from the scalar ones by a few
//! roundings per block (bounded in `tests/simd_vs_scalar.rs`). Every
//! format is written for `C` activation rows at once (the batched entries);
//! `vec_dot` is the one-row case of the same code.
//!
//! Quantizers: byte-identical to the scalar ones, rounding included.

use std::arch::x86_64::*;

use super::simd::{
    dot_u8x32, dot_u8x32_offset_i16, f16x8, fifth_bits, hsum4_epi32, hsum_ps, load_i8x32, nibbles,
    pack4,
};
use crate::blocks::{
    as_blocks, as_blocks_mut, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
    Half, QK,
};

// ---- weight blocks unpacked once, then multiplied with activation blocks ----
//
// Each format has an `unpack` (weight bytes to the vectors its products
// need) and a `dot` (8 lanes of exact `i32` partial sums with one activation
// block). A batched product unpacks each weight block once for all its
// activation rows.

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q4(x: &BlockQ4_0) -> [__m256i; 2] {
    [nibbles(&x.qs), _mm256_setzero_si256()]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q4_1(x: &BlockQ4_1) -> [__m256i; 2] {
    [nibbles(&x.qs), _mm256_setzero_si256()]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q5_0(x: &BlockQ5_0) -> [__m256i; 2] {
    let q = _mm256_or_si256(nibbles(&x.qs), fifth_bits(x.qh));
    [q, _mm256_setzero_si256()]
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q5_1(x: &BlockQ5_1) -> [__m256i; 2] {
    let q = _mm256_or_si256(nibbles(&x.qs), fifth_bits(x.qh));
    [q, _mm256_setzero_si256()]
}

/// `[|q|, q]`: the magnitudes for the unsigned side of `maddubs` and the
/// quants whose signs go onto the activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q8_0(x: &BlockQ8_0) -> [__m256i; 2] {
    let q = load_i8x32(&x.qs);
    [_mm256_sign_epi8(q, q), q]
}

/// `(q - 8) · y` for 4-bit `q`, as 16 `i16` sums of two products (each at
/// most `2 * 8 * 128` in magnitude).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_off8(w: &[__m256i; 2], y: &BlockQ8_0) -> __m256i {
    dot_u8x32_offset_i16::<8>(w[0], load_i8x32(&y.qs))
}

/// `(q - 16) · y` for 5-bit `q`, as 16 `i16` sums of two products (each at
/// most `2 * 16 * 128` in magnitude).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_off16(w: &[__m256i; 2], y: &BlockQ8_0) -> __m256i {
    dot_u8x32_offset_i16::<16>(w[0], load_i8x32(&y.qs))
}

/// `q · y` for unsigned `q` below 32, as 16 `i16` sums of two products
/// (each at most `2 * 31 * 128` in magnitude).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_unsigned(w: &[__m256i; 2], y: &BlockQ8_1) -> __m256i {
    _mm256_maddubs_epi16(w[0], load_i8x32(&y.qs))
}

/// Four blocks' `i16` pair sums (from the `dot` functions of the formats
/// below 6 bits) reduced to [`hsum4_epi32`]'s layout. The integer sums are
/// exact either way, so this gives the same lanes as widening each block
/// first, with one widening multiply instead of four: no partial sum of up
/// to eight products (at most `8 * 31 * 128` in magnitude) leaves `i16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum4_epi16(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    let quads = _mm256_hadd_epi16(_mm256_hadd_epi16(a, b), _mm256_hadd_epi16(c, d));
    _mm256_madd_epi16(quads, _mm256_set1_epi16(1))
}

/// `q · y` for signed 8-bit `q`: `|q| · (y * sign(q))` through `maddubs`.
/// Exact unless both of a pair's `q` and `y` are -128 (negating `y = -128`
/// wraps, and `2 * 128 * 128` overflows the `i16` pair sum); the activation
/// quantizers never produce -128, so only hand-made activations can hit it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_signed(w: &[__m256i; 2], y: &BlockQ8_0) -> __m256i {
    let p = _mm256_maddubs_epi16(w[0], _mm256_sign_epi8(load_i8x32(&y.qs), w[1]));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Four f16 values packed in a `u64`, lowest first.
#[inline]
pub(super) fn pair2(a: Half, b: Half, c: Half, d: Half) -> u64 {
    pack4([a.to_bits(), b.to_bits(), c.to_bits(), d.to_bits()])
}

/// Lanes 0, 2, 4, 6 of `p`, twice: `[p0, p2, p4, p6 | p0, p2, p4, p6]`, the
/// layout of [`hsum4_epi32`]'s sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn even_lanes(p: __m256) -> __m256 {
    _mm256_permutevar8x32_ps(p, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6))
}

/// The odd lanes of `v` summed (where the offset formats keep `m * s`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_odd_ps(v: __m256) -> f32 {
    hsum_ps(_mm256_castsi256_ps(_mm256_srli_epi64::<32>(
        _mm256_castps_si256(v),
    )))
}

/// Four f16 scales packed in a `u64` (lowest first) as `f32`, in both
/// 128-bit lanes: `[s0, s1, s2, s3 | s0, s1, s2, s3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16x4_twice(h: u64) -> __m256 {
    let v = _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64));
    _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(v), v)
}

/// The dot products of `R` weight rows `x` with `C` activation rows `y`,
/// all holding the same number of blocks (the caller slices them):
/// `out[r][c]` pairs row `r` with column `c`.
///
/// Four blocks at a time: their sums are reduced together ([`hsum4_epi32`],
/// or [`hsum4_epi16`] for the formats below 6 bits),
/// converted once and folded into an 8-lane accumulator with one fused
/// multiply-add; the last one to three blocks are padded with zero sums and
/// scales. Every pair sees the same float operations in the same order
/// whatever `R` and `C` are, so a tile of products gives the bits of single
/// ones; a tile only shares work between pairs: each weight block is
/// unpacked once per tile row and each activation block's scales are
/// widened once per tile column. (Products of scales are commutative in
/// IEEE arithmetic, so widening each side apart gives the same bits as
/// widening them together.)
///
/// `x = d * q` formats (`sym`) scale by `d_x * d_y`; `x = d * q + m` formats
/// (`offset`) add `m * s` per block, with the activations' `s = d_y * sum(q_y)`.
macro_rules! legacy_dot {
    (sym $name:ident, $Block:ty, $unpack:ident, $dot:ident, $reduce:ident) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const C: usize>(
            x: [&[$Block]; R],
            y: [&[BlockQ8_0]; C],
        ) -> [[f32; C]; R] {
            let nb = x.iter().map(|r| r.len()).chain(y.iter().map(|c| c.len())).min().unwrap_or(0);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            // One group of `$len` (up to four) blocks starting at block `$i`.
            macro_rules! group {
                ($i:expr, $len:expr) => {{
                    let (i, len): (usize, usize) = ($i, $len);
                    let mut sy = [_mm256_setzero_ps(); C];
                    for (s, yc) in sy.iter_mut().zip(y) {
                        let mut h = [0u16; 4];
                        for (hb, yb) in h.iter_mut().zip(&yc[i..i + len]) {
                            *hb = yb.d.to_bits();
                        }
                        *s = f16x4_twice(pack4(h));
                    }
                    for (accr, xr) in acc.iter_mut().zip(x) {
                        let mut w = [[_mm256_setzero_si256(); 2]; 4];
                        let mut h = [0u16; 4];
                        for ((wb, hb), xb) in w.iter_mut().zip(h.iter_mut()).zip(&xr[i..i + len]) {
                            *wb = $unpack(xb);
                            *hb = xb.d.to_bits();
                        }
                        let sx = f16x4_twice(pack4(h));
                        for ((a, yc), s) in accr.iter_mut().zip(y).zip(sy) {
                            let mut p = [_mm256_setzero_si256(); 4];
                            for ((pb, wb), yb) in p.iter_mut().zip(&w).zip(&yc[i..i + len]) {
                                *pb = $dot(wb, yb);
                            }
                            let sums = $reduce(p[0], p[1], p[2], p[3]);
                            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(sx, s), *a);
                        }
                    }
                }};
            }
            let full = nb / 4 * 4;
            let mut i = 0;
            // Whole groups, written out block by block so that the tile's
            // accumulators stay in registers.
            while i < full {
                let mut sy = [_mm256_setzero_ps(); C];
                for c in 0..C {
                    let yb = &y[c][i..i + 4];
                    let h = [yb[0].d, yb[1].d, yb[2].d, yb[3].d].map(|h| h.to_bits());
                    sy[c] = f16x4_twice(pack4(h));
                }
                for r in 0..R {
                    let xb = &x[r][i..i + 4];
                    let w = [$unpack(&xb[0]), $unpack(&xb[1]), $unpack(&xb[2]), $unpack(&xb[3])];
                    let h = [xb[0].d, xb[1].d, xb[2].d, xb[3].d].map(|h| h.to_bits());
                    let sx = f16x4_twice(pack4(h));
                    for c in 0..C {
                        let yb = &y[c][i..i + 4];
                        let sums = $reduce(
                            $dot(&w[0], &yb[0]),
                            $dot(&w[1], &yb[1]),
                            $dot(&w[2], &yb[2]),
                            $dot(&w[3], &yb[3]),
                        );
                        acc[r][c] =
                            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(sx, sy[c]), acc[r][c]);
                    }
                }
                i += 4;
            }
            if full < nb {
                group!(full, nb - full);
            }
            let mut out = [[0.0; C]; R];
            for (or, ar) in out.iter_mut().zip(acc) {
                for (o, a) in or.iter_mut().zip(ar) {
                    *o = hsum_ps(a);
                }
            }
            out
        }
    };
    (offset $name:ident, $Block:ty, $unpack:ident, $dot:ident, $reduce:ident) => {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const C: usize>(
            x: [&[$Block]; R],
            y: [&[BlockQ8_1]; C],
        ) -> [[f32; C]; R] {
            let nb = x.iter().map(|r| r.len()).chain(y.iter().map(|c| c.len())).min().unwrap_or(0);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            // Odd lanes: the `m * s` terms.
            let mut acc_m = [[_mm256_setzero_ps(); C]; R];
            macro_rules! group {
                ($i:expr, $len:expr) => {{
                    let (i, len): (usize, usize) = ($i, $len);
                    // [d, s] of each activation block, in block order.
                    let mut sy = [_mm256_setzero_ps(); C];
                    for (s, yc) in sy.iter_mut().zip(y) {
                        let mut h = [Half::ZERO; 8];
                        for (b, yb) in yc[i..i + len].iter().enumerate() {
                            h[2 * b] = yb.d;
                            h[2 * b + 1] = yb.s;
                        }
                        *s = f16x8(pair2(h[0], h[1], h[2], h[3]), pair2(h[4], h[5], h[6], h[7]));
                    }
                    for ((accr, accr_m), xr) in acc.iter_mut().zip(acc_m.iter_mut()).zip(x) {
                        let mut w = [[_mm256_setzero_si256(); 2]; 4];
                        let mut h = [Half::ZERO; 8];
                        for (b, (wb, xb)) in w.iter_mut().zip(&xr[i..i + len]).enumerate() {
                            *wb = $unpack(xb);
                            h[2 * b] = xb.d;
                            h[2 * b + 1] = xb.m;
                        }
                        let sx =
                            f16x8(pair2(h[0], h[1], h[2], h[3]), pair2(h[4], h[5], h[6], h[7]));
                        for (((a, am), yc), s) in
                            accr.iter_mut().zip(accr_m.iter_mut()).zip(y).zip(sy)
                        {
                            let mut p = [_mm256_setzero_si256(); 4];
                            for ((pb, wb), yb) in p.iter_mut().zip(&w).zip(&yc[i..i + len]) {
                                *pb = $dot(wb, yb);
                            }
                            let sums = $reduce(p[0], p[1], p[2], p[3]);
                            // [d_x * d_y, m * s] for each block, in block order.
                            let ds = _mm256_mul_ps(sx, s);
                            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), even_lanes(ds), *a);
                            *am = _mm256_add_ps(*am, ds);
                        }
                    }
                }};
            }
            let full = nb / 4 * 4;
            let mut i = 0;
            // Whole groups, written out block by block so that the tile's
            // accumulators stay in registers.
            while i < full {
                let mut sy = [_mm256_setzero_ps(); C];
                for c in 0..C {
                    let yb = &y[c][i..i + 4];
                    sy[c] = f16x8(
                        pair2(yb[0].d, yb[0].s, yb[1].d, yb[1].s),
                        pair2(yb[2].d, yb[2].s, yb[3].d, yb[3].s),
                    );
                }
                for r in 0..R {
                    let xb = &x[r][i..i + 4];
                    let w = [$unpack(&xb[0]), $unpack(&xb[1]), $unpack(&xb[2]), $unpack(&xb[3])];
                    let sx = f16x8(
                        pair2(xb[0].d, xb[0].m, xb[1].d, xb[1].m),
                        pair2(xb[2].d, xb[2].m, xb[3].d, xb[3].m),
                    );
                    for c in 0..C {
                        let yb = &y[c][i..i + 4];
                        let sums = $reduce(
                            $dot(&w[0], &yb[0]),
                            $dot(&w[1], &yb[1]),
                            $dot(&w[2], &yb[2]),
                            $dot(&w[3], &yb[3]),
                        );
                        let ds = _mm256_mul_ps(sx, sy[c]);
                        acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), even_lanes(ds), acc[r][c]);
                        acc_m[r][c] = _mm256_add_ps(acc_m[r][c], ds);
                    }
                }
                i += 4;
            }
            if full < nb {
                group!(full, nb - full);
            }
            let mut out = [[0.0; C]; R];
            for ((or, ar), amr) in out.iter_mut().zip(acc).zip(acc_m) {
                for ((o, a), am) in or.iter_mut().zip(ar).zip(amr) {
                    *o = hsum_ps(a) + hsum_odd_ps(am);
                }
            }
            out
        }
    };
}

legacy_dot!(sym dot_q4_0, BlockQ4_0, unpack_q4, dot_off8, hsum4_epi16);
legacy_dot!(sym dot_q5_0, BlockQ5_0, unpack_q5_0, dot_off16, hsum4_epi16);
legacy_dot!(sym dot_q8_0, BlockQ8_0, unpack_q8_0, dot_signed, hsum4_epi32);
legacy_dot!(offset dot_q4_1, BlockQ4_1, unpack_q4_1, dot_unsigned, hsum4_epi16);
legacy_dot!(offset dot_q5_1, BlockQ5_1, unpack_q5_1, dot_unsigned, hsum4_epi16);

/// The table entries: `vec_dot` (one activation row), `vec_dot_batch`
/// (`out.len()` activation rows back to back in `a`) and `vec_dot_tile`
/// (the weight rows of `w` against the activation rows of `a`), all over the
/// whole blocks of `n` elements present in the slices.
macro_rules! legacy_entries {
    ($one:ident, $batch:ident, $tile:ident, $core:ident, $Block:ty, $Act:ty, $tr:literal x $tc:literal) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let x: &[$Block] = as_blocks(w);
            let y: &[$Act] = as_blocks(a);
            let nb = (n / QK).min(x.len()).min(y.len());
            $core::<1, 1>([&x[..nb]], [&y[..nb]])[0][0]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $batch(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let x: &[$Block] = as_blocks(w);
            let nb = (n / QK).min(x.len());
            let x = &x[..nb];
            let y: &[$Act] = as_blocks(a);
            let Some(per_row) = std::num::NonZeroUsize::new(n / QK) else {
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
                let r = $core::<1, 4>([x], [&y0[..nb], &y1[..nb], &y2[..nb], &y3[..nb]]);
                o.copy_from_slice(&r[0]);
            }
            for (o, yr) in outs.into_remainder().iter_mut().zip(rows) {
                *o = $core::<1, 1>([x], [&yr[..nb]])[0][0];
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $tile(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
            let x: &[$Block] = as_blocks(w);
            let y: &[$Act] = as_blocks(a);
            tile_loop!($core, n / QK, x, y, out, $tr x $tc);
        }
    };
}

/// `[f(base), f(base + 1), ..]`: `array::from_fn`'s closure calls are not
/// inlined into the target-feature kernels; this loop is.
#[inline(always)]
fn rows_from<'a, T: ?Sized, const N: usize>(f: impl Fn(usize) -> &'a T, base: usize) -> [&'a T; N] {
    let mut out = [f(base); N];
    for (k, o) in out.iter_mut().enumerate().skip(1) {
        *o = f(base + k);
    }
    out
}

/// The body of a `vec_dot_tile` entry: `$x` holds weight rows and `$y`
/// activation rows of `$per_row` blocks each; `$out[r * cols + c]` gets the
/// product of weight row `r` with activation row `c`, for the whole rows
/// present (and the rows of `$out` it has room for). Tiles of `$tr x $tc`
/// pairs go through `$core`; the edges through its narrower forms.
macro_rules! tile_loop {
    ($core:ident, $per_row:expr, $x:expr, $y:expr, $out:expr, $tr:literal x $tc:literal) => {{
        let per_row: usize = $per_row;
        let (x, y, out) = ($x, $y, $out);
        if per_row == 0 {
            out.fill(0.0);
            return;
        }
        let cols = y.len() / per_row;
        if cols == 0 {
            return;
        }
        let rows = (x.len() / per_row).min(out.len() / cols);
        let xr = |r: usize| &x[r * per_row..(r + 1) * per_row];
        let yr = |c: usize| &y[c * per_row..(c + 1) * per_row];
        // Weight rows in bands that stay in L1 while the activations of a
        // tile column are reused against each of them.
        let band = (TILE_BAND_BYTES / (per_row * size_of_val(&x[0])) / $tr * $tr).max($tr);
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + band).min(rows);
            let mut c = 0;
            while c < cols {
                let cn = (cols - c).min($tc);
                let mut r = r0;
                while r + $tr <= r1 {
                    if cn == $tc {
                        let t = $core::<$tr, $tc>(rows_from(xr, r), rows_from(yr, c));
                        for (k, tr) in t.iter().enumerate() {
                            out[(r + k) * cols + c..][..$tc].copy_from_slice(tr);
                        }
                    } else {
                        for j in c..c + cn {
                            let t = $core::<$tr, 1>(rows_from(xr, r), [yr(j)]);
                            for (k, tr) in t.iter().enumerate() {
                                out[(r + k) * cols + j] = tr[0];
                            }
                        }
                    }
                    r += $tr;
                }
                for r in r..r1 {
                    if cn == $tc {
                        let t = $core::<1, $tc>([xr(r)], rows_from(yr, c));
                        out[r * cols + c..][..$tc].copy_from_slice(&t[0]);
                    } else {
                        for j in c..c + cn {
                            out[r * cols + j] = $core::<1, 1>([xr(r)], [yr(j)])[0][0];
                        }
                    }
                }
                c += cn;
            }
            r0 = r1;
        }
    }};
}

/// Bytes of weight rows a tiled product keeps hot in L1 at a time.
const TILE_BAND_BYTES: usize = 16 * 1024;

legacy_entries!(
    vec_dot_q4_0_q8_0,
    vec_dot_batch_q4_0_q8_0,
    vec_dot_tile_q4_0_q8_0,
    dot_q4_0,
    BlockQ4_0,
    BlockQ8_0,
    2 x 4
);
legacy_entries!(
    vec_dot_q5_0_q8_0,
    vec_dot_batch_q5_0_q8_0,
    vec_dot_tile_q5_0_q8_0,
    dot_q5_0,
    BlockQ5_0,
    BlockQ8_0,
    2 x 4
);
legacy_entries!(
    vec_dot_q8_0_q8_0,
    vec_dot_batch_q8_0_q8_0,
    vec_dot_tile_q8_0_q8_0,
    dot_q8_0,
    BlockQ8_0,
    BlockQ8_0,
    2 x 4
);
legacy_entries!(
    vec_dot_q4_1_q8_1,
    vec_dot_batch_q4_1_q8_1,
    vec_dot_tile_q4_1_q8_1,
    dot_q4_1,
    BlockQ4_1,
    BlockQ8_1,
    2 x 4
);
legacy_entries!(
    vec_dot_q5_1_q8_1,
    vec_dot_batch_q5_1_q8_1,
    vec_dot_tile_q5_1_q8_1,
    dot_q5_1,
    BlockQ5_1,
    BlockQ8_1,
    2 x 4
);

// ---- q8_0 / q8_1 activation quantizers -------------------------------------

/// The 32 floats of a block and their largest magnitude, or `None` when the
/// block holds an infinity or a NaN (whose handling the scalar code defines).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_q8_block(x: &[f32]) -> Option<([__m256; 4], f32)> {
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
    Some((v, _mm_cvtss_f32(m)))
}

/// The low bytes of four vectors of `i32` quants, in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_quants(q: [__m256i; 4]) -> __m256i {
    let q01 = _mm256_packus_epi32(q[0], q[1]);
    let q23 = _mm256_packus_epi32(q[2], q[3]);
    // The packs work per 128-bit lane; this restores element order.
    _mm256_permutevar8x32_epi32(
        _mm256_packus_epi16(q01, q23),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    )
}

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
    let (v, amax) = load_q8_block(x)?;

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
    Some((d, pack_quants(q)))
}

/// `q8_0` rows with ggml's reference rounding (byte-identical to the scalar
/// `quantize_row_q8_0`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    quantize_q8_0_rows::<false>(src, dst)
}

/// `q8_1` rows with ggml's reference rounding.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    quantize_q8_1_rows::<false>(src, dst)
}

/// `q8_0` rows, each block by [`q8_block_x86`] when `X86` (llama.cpp's SIMD
/// rounding) or [`q8_block`] (the reference), falling back to the matching
/// scalar twin for blocks with infinities or NaNs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_rows<const X86: bool>(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_0] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let block = if X86 { q8_block_x86(x) } else { q8_block(x) };
        match block {
            Some((d, q)) => {
                b.d = Half::from_f32(d);
                // SAFETY: `qs` is 32 writable bytes.
                _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q);
            }
            None => {
                let out = zerocopy::IntoBytes::as_mut_bytes(b);
                if X86 {
                    crate::scalar::legacy::quantize_row_q8_0_x86(x, out)
                } else {
                    crate::scalar::legacy::quantize_row_q8_0(x, out)
                }
            }
        }
    }
}

/// `q8_1` rows as [`quantize_q8_0_rows`], with `s = d * sum(q)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_rows<const X86: bool>(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8_1] = as_blocks_mut(dst);
    for (b, x) in blocks.iter_mut().zip(src.chunks_exact(QK)) {
        let block = if X86 { q8_block_x86(x) } else { q8_block(x) };
        match block {
            Some((d, q)) => {
                b.d = Half::from_f32(d);
                // SAFETY: `qs` is 32 writable bytes.
                _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q);
                let sum = super::simd::hsum_epi32(dot_u8x32_ones(q));
                // The reference multiplies `sum * d`, the x86 path `d * sum`:
                // the same product either way.
                b.s = Half::from_f32(sum as f32 * d);
            }
            None => {
                let out = zerocopy::IntoBytes::as_mut_bytes(b);
                if X86 {
                    crate::scalar::legacy::quantize_row_q8_1_x86(x, out)
                } else {
                    crate::scalar::legacy::quantize_row_q8_1(x, out)
                }
            }
        }
    }
}

/// One block as llama.cpp's AVX2 `quantize_row_q8_0` quantizes activations:
/// `id = 127 / amax`, `q = cvtps(round_nearest_even(x * id))`. `None` for a
/// block with an infinity or a NaN (the caller then uses the scalar twin).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block_x86(x: &[f32]) -> Option<(f32, __m256i)> {
    let (v, amax) = load_q8_block(x)?;
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let lowbyte = _mm256_set1_epi32(0xff);
    let mut q = [_mm256_setzero_si256(); 4];
    for (qi, e) in q.iter_mut().zip(v) {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(e, idv),
        );
        *qi = _mm256_and_si256(_mm256_cvtps_epi32(r), lowbyte);
    }
    Some((d, pack_quants(q)))
}

/// Activations to `q8_0` as llama.cpp's AVX2 path; scalar twin
/// `scalar::legacy::quantize_row_q8_0_x86`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_0_x86(src: &[f32], dst: &mut [u8]) {
    quantize_q8_0_rows::<true>(src, dst)
}

/// Activations to `q8_1` as llama.cpp's AVX2 path; scalar twin
/// `scalar::legacy::quantize_row_q8_1_x86`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row_q8_1_x86(src: &[f32], dst: &mut [u8]) {
    quantize_q8_1_rows::<true>(src, dst)
}

/// The signed bytes of `q` summed in fours to `i32`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8x32_ones(q: __m256i) -> __m256i {
    dot_u8x32(_mm256_set1_epi8(1), q)
}
