//! AVX-512 tiled product of f16 weights with f16 activations.
//!
//! It gives the bits of the AVX2 `vec_dot_f16` (`float.rs`) pair by pair:
//! that kernel keeps eight 8-lane `f32` accumulators, each lane a chain of
//! fused multiply-adds over the elements `64i + 8k + lane`, then adds them
//! in a fixed tree. A 512-bit accumulator here is two of those 8-lane ones
//! side by side, and lane-wise fused multiply-adds are the same operations
//! whatever the vector width, so each chain sees the same steps; the
//! 8-element remainder, the tree and the scalar tail follow the AVX2 code.
//!
//! Both operands are widened to `f32` once per call (exactly): the weight
//! rows all at once, the activation rows a chunk at a time so that they stay
//! in L1 while every weight row passes. Tiles of 3 x 4 pairs run one 16-lane
//! slice of the 64-element steps at a time, so their 12 accumulators and 7
//! operands fit in registers.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::float::f16_to_f32_halves;
use super::simd::hsum_ps;
use crate::blocks::{as_blocks, Half};

/// Widens `src` into the start of `buf`, resized to hold it, and returns
/// the floats. The buffer is made of 64-byte vectors so that rows whose
/// length is a multiple of 16 start on cache lines (a 512-bit load that
/// splits a line costs two).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn widen<'a>(src: &[Half], buf: &'a mut Vec<__m512>) -> &'a mut [f32] {
    let n = src.len();
    buf.clear();
    buf.resize(n.div_ceil(16), _mm512_setzero_ps());
    // SAFETY: `buf` holds at least `n` floats, any bit pattern is a float,
    // and the view borrows `buf` mutably for its lifetime.
    let dst = std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<f32>(), n);
    f16_to_f32_halves(src, dst);
    dst
}

/// `R x C` pairs of `n`-element rows: weight rows `w[r]`, activation rows
/// `y[c]`; writes `out[r * stride + c]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
// Indexing by tile position keeps the accumulators in registers.
#[allow(clippy::needless_range_loop)]
unsafe fn micro<const R: usize, const C: usize>(
    n: usize,
    w: [&[f32]; R],
    y: [&[f32]; C],
    out: &mut [f32],
    stride: usize,
) {
    // The four 16-lane slices of each 64-element step are independent
    // chains, so each is run over the whole row on its own: R x C
    // accumulators at a time instead of 4 R x C, which lets the tile be
    // large enough that loads stay below the multiply-adds.
    let mut acc = [[[_mm512_setzero_ps(); 4]; C]; R];
    let n64 = n / 64 * 64;
    for k in 0..4 {
        let mut a = [[_mm512_setzero_ps(); C]; R];
        let mut i = 0;
        while i < n64 {
            // SAFETY: i + 64 <= n, and every row holds n floats.
            let wv: [__m512; R] =
                std::array::from_fn(|r| _mm512_loadu_ps(w[r].as_ptr().add(i + 16 * k)));
            let yv: [__m512; C] =
                std::array::from_fn(|c| _mm512_loadu_ps(y[c].as_ptr().add(i + 16 * k)));
            for r in 0..R {
                for c in 0..C {
                    a[r][c] = _mm512_fmadd_ps(wv[r], yv[c], a[r][c]);
                }
            }
            i += 64;
        }
        for r in 0..R {
            for c in 0..C {
                acc[r][c][k] = a[r][c];
            }
        }
    }
    let i = n64;
    for r in 0..R {
        for c in 0..C {
            // The AVX2 kernel's eight accumulators.
            let mut a: [__m256; 8] = std::array::from_fn(|k| {
                let z = acc[r][c][k / 2];
                if k % 2 == 0 {
                    _mm512_castps512_ps256(z)
                } else {
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(z)))
                }
            });
            let mut j = i;
            while j + 8 <= n {
                // SAFETY: j + 8 <= n.
                let (xv, yv) = (
                    _mm256_loadu_ps(w[r].as_ptr().add(j)),
                    _mm256_loadu_ps(y[c].as_ptr().add(j)),
                );
                a[0] = _mm256_fmadd_ps(xv, yv, a[0]);
                j += 8;
            }
            let s = _mm256_add_ps(
                _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
                _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7])),
            );
            let mut sum = hsum_ps(s);
            for t in j..n {
                sum += w[r][t] * y[c][t];
            }
            out[r * stride + c] = sum;
        }
    }
}

const TR: usize = 3;
const TC: usize = 4;
/// Activation rows widened at a time (up to 48 KiB of floats for rows of
/// 768 elements).
const COL_CHUNK: usize = 16;
/// Below this many activation rows the AVX2 `vec_dot_f16` (the same bits)
/// does each pair.
const FEW_COLS: usize = 3;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn micro_any(n: usize, w: &[&[f32]], y: &[&[f32]], out: &mut [f32], stride: usize) {
    macro_rules! arms {
        ($($r:literal, $c:literal);*) => {
            match (w.len(), y.len()) {
                $(($r, $c) => micro::<$r, $c>(
                    n,
                    std::array::from_fn(|k| w[k]),
                    std::array::from_fn(|k| y[k]),
                    out,
                    stride,
                ),)*
                _ => {}
            }
        };
    }
    arms!(3, 4; 3, 3; 3, 2; 3, 1; 2, 4; 2, 3; 2, 2; 2, 1; 1, 4; 1, 3; 1, 2; 1, 1);
}

thread_local! {
    static SCRATCH: RefCell<(Vec<__m512>, Vec<__m512>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The `vec_dot_tile` contract for f16 weights and activations.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
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
    if cols < FEW_COLS {
        // Widening a weight row costs more than a few products with it.
        for r in 0..rows {
            let wr = &w[2 * r * n..2 * (r + 1) * n];
            for c in 0..cols {
                out[r * cols + c] =
                    super::float::vec_dot_f16(n, wr, &a[2 * c * n..2 * (c + 1) * n]);
            }
        }
        return;
    }
    SCRATCH.with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            return;
        };
        let (ybuf, wbuf) = &mut *guard;
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
                let wr: [&[f32]; TR] = std::array::from_fn(|k| &wa[(r + k.min(rr - 1)) * n..][..n]);
                let mut c = c0;
                while c < c1 {
                    let cc = (c1 - c).min(TC);
                    let yc: [&[f32]; TC] =
                        std::array::from_fn(|j| &ya[(c - c0 + j.min(cc - 1)) * n..][..n]);
                    micro_any(n, &wr[..rr], &yc[..cc], &mut out[r * cols + c..], cols);
                    c += cc;
                }
                r += rr;
            }
            c0 = c1;
        }
    });
}
