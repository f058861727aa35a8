//! AVX-512 products of f16 weights with f16 activations: this table's F16
//! `vec_dot` and tile.
//!
//! Their arithmetic, the same for every pair whatever path computes it:
//! sixteen `f32` lanes, lane `j` a chain of fused multiply-adds over
//! elements `j, j + 16, j + 32, ...` from zero (a last partial step runs
//! with the missing elements as zeros), then the fixed tree of [`reduce`].
//! ggml's AVX2 kernel keeps 64 lanes instead; one vector per pair lets a
//! tile hold 4 x 4 pairs in registers in one pass over the rows, and
//! decoding run four rows side by side.
//!
//! Tiles widen both operands to `f32` once per call (exactly): the weight
//! rows all at once, the activation rows a chunk at a time so that they stay
//! in L1 while every weight row passes. Decoding widens weights in
//! registers on the way.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::float::f16_to_f32_halves;
use super::simd::{prefetch_ahead, RowQuads};
use crate::blocks::{as_blocks, Half};

/// The sum of a pair's 16 lanes: `j + (j + 8)`, then `+ 4`, `+ 2`, `+ 1`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn reduce(v: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
}

/// Lanes `0..rest` set.
fn tail_mask(rest: usize) -> __mmask16 {
    ((1u32 << rest.min(16)) - 1) as __mmask16
}

/// Widens `src` into the start of `buf`, resized to hold it, and returns
/// the floats. The buffer is made of 64-byte vectors so that rows whose
/// length is a multiple of 16 start on cache lines (a 512-bit load that
/// splits a line costs two).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn widen<'a>(src: &[Half], buf: &'a mut Vec<__m512>) -> &'a mut [f32] {
    let n = src.len();
    // Grown, never cleared: every float the view shows is written below,
    // so zeroing the buffer each call would be wasted stores.
    if buf.len() < n.div_ceil(16) {
        buf.resize(n.div_ceil(16), _mm512_setzero_ps());
    }
    // SAFETY: `buf` holds at least `n` floats, any bit pattern is a float,
    // and the view borrows `buf` mutably for its lifetime.
    let dst = std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<f32>(), n);
    f16_to_f32_halves(src, dst);
    dst
}

/// `R x C` pairs of `n`-element widened rows: weight rows `w[r]`,
/// activation rows `y[c]` (`r < R`, `c < C`; the rest of the arrays is
/// not read); writes `out[r * stride + c]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
// Indexing by tile position keeps the accumulators in registers; loops
// rather than `array::from_fn`, whose closures would not inline intrinsics.
#[allow(clippy::needless_range_loop)]
unsafe fn micro<const R: usize, const C: usize>(
    n: usize,
    w: &[&[f32]; TR],
    y: &[&[f32]; TC],
    out: &mut [f32],
    stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut wv = [_mm512_setzero_ps(); R];
    let mut i = 0;
    while i + 16 <= n {
        for r in 0..R {
            // SAFETY: i + 16 <= n, and every row holds n floats.
            wv[r] = _mm512_loadu_ps(w[r].as_ptr().add(i));
        }
        for c in 0..C {
            // SAFETY: as above.
            let yv = _mm512_loadu_ps(y[c].as_ptr().add(i));
            for r in 0..R {
                acc[r][c] = _mm512_fmadd_ps(wv[r], yv, acc[r][c]);
            }
        }
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        for r in 0..R {
            // SAFETY: the masked lanes i..n are inside the rows.
            wv[r] = _mm512_maskz_loadu_ps(m, w[r].as_ptr().add(i));
        }
        for c in 0..C {
            // SAFETY: as above.
            let yv = _mm512_maskz_loadu_ps(m, y[c].as_ptr().add(i));
            for r in 0..R {
                acc[r][c] = _mm512_fmadd_ps(wv[r], yv, acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r * stride + c] = reduce(acc[r][c]);
        }
    }
}

/// Four f16 weight rows of `n` elements at `w[r]` against `C` widened
/// activation rows, for decoding: the weights are widened in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
#[allow(clippy::needless_range_loop)]
unsafe fn rows4<const C: usize>(n: usize, w: [&[Half]; 4], y: [&[f32]; C]) -> [[f32; 4]; C] {
    let mut acc = [[_mm512_setzero_ps(); 4]; C];
    let mut wv = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 16 <= n {
        for r in 0..4 {
            let p: *const u8 = w[r].as_ptr().add(i).cast();
            prefetch_ahead::<1>(p);
            // SAFETY: i + 16 <= n, and every row holds n halves.
            wv[r] = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
        }
        for c in 0..C {
            // SAFETY: as above.
            let yv = _mm512_loadu_ps(y[c].as_ptr().add(i));
            for r in 0..4 {
                acc[c][r] = _mm512_fmadd_ps(wv[r], yv, acc[c][r]);
            }
        }
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        for r in 0..4 {
            // SAFETY: the masked lanes i..n are inside the rows.
            let h = _mm256_maskz_loadu_epi16(m, w[r].as_ptr().add(i).cast());
            wv[r] = _mm512_cvtph_ps(h);
        }
        for c in 0..C {
            // SAFETY: as above.
            let yv = _mm512_maskz_loadu_ps(m, y[c].as_ptr().add(i));
            for r in 0..4 {
                acc[c][r] = _mm512_fmadd_ps(wv[r], yv, acc[c][r]);
            }
        }
    }
    let mut out = [[0f32; 4]; C];
    for c in 0..C {
        for r in 0..4 {
            out[c][r] = reduce(acc[c][r]);
        }
    }
    out
}

const TR: usize = 4;
const TC: usize = 4;
/// Activation rows widened at a time, so that they stay in L1 while every
/// weight row passes (8 measured faster than 4, 12, 16 or 32, and than a
/// chunk sized in bytes, on SmolLM2's 576- and 1536-element rows).
const COL_CHUNK: usize = 8;
/// Below this many activation rows, weights are widened in registers on
/// the way, four rows against up to four activation rows at a time:
/// decoding, and the short batches that check speculative drafts. Widening
/// the weights into memory first pays only for longer batches (on SmolLM2,
/// 3 to 8 rows cost what 1 does this way and twice that widened; the two
/// are even at about 48 rows).
const FEW_COLS: usize = 33;

/// [`micro`] on the first `rr` rows of `w` and `cc` of `y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_any(
    n: usize,
    rr: usize,
    cc: usize,
    w: &[&[f32]; TR],
    y: &[&[f32]; TC],
    out: &mut [f32],
    stride: usize,
) {
    // The arrays are passed whole: building smaller ones here went through
    // `array::from_fn` closures that were not inlined (5% of F16 prompts).
    macro_rules! arms {
        ($($r:literal, $c:literal);*) => {
            match (rr, cc) {
                $(($r, $c) => micro::<$r, $c>(n, w, y, out, stride),)*
                _ => {}
            }
        };
    }
    arms!(4, 4; 4, 3; 4, 2; 4, 1; 3, 4; 3, 3; 3, 2; 3, 1; 2, 4; 2, 3; 2, 2; 2, 1; 1, 4; 1, 3; 1, 2; 1, 1);
}

thread_local! {
    static SCRATCH: RefCell<(Vec<__m512>, Vec<__m512>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The `vec_dot_tile` contract for f16 weights and activations.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
pub unsafe fn vec_dot_tile_f16(n: usize, w: &[u8], a: &[u8], out: &mut [f32]) {
    if n == 0 {
        out.fill(0.0);
        return;
    }
    let x: &[Half] = as_blocks(w);
    let y: &[Half] = as_blocks(a);
    let cols = y.len() / n;
    if cols == 0 {
        return;
    }
    let rows = (x.len() / n).min(out.len() / cols);
    if rows == 0 {
        return;
    }
    SCRATCH.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return;
        };
        let (ybuf, wbuf) = &mut *guard;
        if cols < FEW_COLS {
            let ya = widen(&y[..cols * n], ybuf);
            let quads = RowQuads::new(rows);
            for k in 0..quads.count() {
                let [a, b, c, d] = quads.rows(k);
                let row = |r: usize| &x[r * n..][..n];
                let xr: [&[Half]; 4] = [row(a), row(b), row(c), row(d)];
                let mut put = |c0: usize, v: &[[f32; 4]]| {
                    for (c, col) in v.iter().enumerate() {
                        for (l, &o) in col.iter().enumerate() {
                            if let Some(r) = quads.lane(k, l) {
                                out[r * cols + c0 + c] = o;
                            }
                        }
                    }
                };
                // Column groups of four while the quad of weight rows is in
                // L1: registers hold four rows by four columns.
                let col = |c: usize| &ya[c * n..(c + 1) * n];
                let mut c0 = 0;
                while c0 < cols {
                    let v: &[[f32; 4]] = match cols - c0 {
                        1 => &rows4::<1>(n, xr, [col(c0)]),
                        2 => &rows4::<2>(n, xr, [col(c0), col(c0 + 1)]),
                        3 => &rows4::<3>(n, xr, [col(c0), col(c0 + 1), col(c0 + 2)]),
                        _ => &rows4::<4>(n, xr, [col(c0), col(c0 + 1), col(c0 + 2), col(c0 + 3)]),
                    };
                    put(c0, v);
                    c0 += v.len();
                }
            }
            return;
        }
        let wa = widen(&x[..rows * n], wbuf);
        let mut c0 = 0;
        while c0 < cols {
            // Activation rows a chunk at a time, so that they stay in L1
            // while every weight row passes.
            let c1 = (c0 + COL_CHUNK).min(cols);
            let ya = widen(&y[c0 * n..c1 * n], ybuf);
            let mut r = 0;
            while r < rows {
                let rr = (rows - r).min(TR);
                let wrow = |k: usize| &wa[(r + k.min(rr - 1)) * n..][..n];
                let wr: [&[f32]; TR] = [wrow(0), wrow(1), wrow(2), wrow(3)];
                let mut c = c0;
                while c < c1 {
                    let cc = (c1 - c).min(TC);
                    let yrow = |j: usize| &ya[(c - c0 + j.min(cc - 1)) * n..][..n];
                    let yc: [&[f32]; TC] = [yrow(0), yrow(1), yrow(2), yrow(3)];
                    micro_any(n, rr, cc, &wr, &yc, &mut out[r * cols + c..], cols);
                    c += cc;
                }
                r += rr;
            }
            c0 = c1;
        }
    });
}

/// One pair, in the tile's arithmetic: the table's F16 `vec_dot` (`w` and
/// `a` may be shorter than `n` elements: the shorter length counts).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
pub unsafe fn vec_dot_f16(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let n = n.min(w.len() / 2).min(a.len() / 2);
    let mut out = [0f32];
    vec_dot_tile_f16(n, &w[..2 * n], &a[..2 * n], &mut out);
    out[0]
}
