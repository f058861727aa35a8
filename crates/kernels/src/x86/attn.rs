//! The f32 attention route's tiles, AVX2 and AVX-512: scores of four
//! queries against a tile of keys held transposed, and weighted value rows
//! added into four outputs.
//!
//! Their arithmetic, the same on both and for every query whatever block
//! it comes in: a score is a chain of fused multiply-adds over the head's
//! dimensions from zero, then one multiply by the scale; an output element
//! is a chain of fused multiply-adds over the keys, from its old value.
//! (The scalar table's twins round each product; the fused chains differ
//! from them by a few ulp, bounded in `tests/simd_vs_scalar.rs`.) Keys and
//! values are read once per four queries, and no score needs a horizontal
//! sum: each vector lane holds a key (scores) or a dimension (outputs).
//!
//! A ragged block of queries repeats its last one in the spare registers
//! and stores only the real rows.

use std::arch::x86_64::*;

/// Queries per block.
const QB: usize = 4;

/// The rows of a block starting at `i0` of `nq`, the last repeated.
#[inline(always)]
fn block_rows(i0: usize, nq: usize) -> [usize; QB] {
    let mut r = [0; QB];
    for (k, v) in r.iter_mut().enumerate() {
        *v = (i0 + k).min(nq - 1);
    }
    r
}

/// The query and score rows a call covers, or `None` for an empty or
/// out-of-contract call.
#[inline(always)]
fn extent(q_len: usize, hd: usize, k_len: usize, nk: usize, s_len: usize) -> Option<usize> {
    if hd == 0 || nk == 0 || k_len < hd * nk {
        return None;
    }
    let nq = (q_len / hd).min(s_len / nk);
    (nq > 0).then_some(nq)
}

/// Lanes `0..rest` of eight set, as `maskload`/`maskstore` take them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mask8(rest: usize) -> __m256i {
    let r = _mm256_set1_epi32(rest.min(8) as i32);
    _mm256_cmpgt_epi32(r, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// Eight floats from `p`, the lanes from `rest` on as zeros.
///
/// # Safety
/// `p` must be valid for reading `min(rest, 8)` floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(p: *const f32, rest: usize) -> __m256 {
    if rest >= 8 {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, mask8(rest))
    }
}

/// Stores the first `min(rest, 8)` lanes of `v` at `p`.
///
/// # Safety
/// `p` must be valid for writing `min(rest, 8)` floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store8(p: *mut f32, rest: usize, v: __m256) {
    if rest >= 8 {
        _mm256_storeu_ps(p, v)
    } else {
        _mm256_maskstore_ps(p, mask8(rest), v)
    }
}

/// [`crate::dispatch::QkTileFn`] with four queries x 16 keys in registers.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn qk_tile_avx2(q: &[f32], hd: usize, kt: &[f32], nk: usize, scale: f32, s: &mut [f32]) {
    let Some(nq) = extent(q.len(), hd, kt.len(), nk, s.len()) else {
        return;
    };
    let sc = _mm256_set1_ps(scale);
    for i0 in (0..nq).step_by(QB) {
        let rows = block_rows(i0, nq);
        for j0 in (0..nk).step_by(16) {
            let rest = nk - j0;
            let mut acc = [[_mm256_setzero_ps(); 2]; QB];
            for d in 0..hd {
                // SAFETY: key row d holds nk floats from d * nk, and
                // kt.len() >= hd * nk; lanes past nk are masked.
                let kp = kt.as_ptr().add(d * nk + j0);
                let k0 = load8(kp, rest);
                let k1 = load8(kp.wrapping_add(8), rest.saturating_sub(8));
                for r in 0..QB {
                    // SAFETY: rows[r] < nq, whose row holds hd floats.
                    let qb = _mm256_broadcast_ss(&*q.as_ptr().add(rows[r] * hd + d));
                    acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
                }
            }
            for (r, acc) in acc.iter().enumerate().take(nq - i0) {
                // SAFETY: score row i0 + r < nq holds nk floats; lanes past
                // nk are masked.
                let sp = s.as_mut_ptr().add((i0 + r) * nk + j0);
                store8(sp, rest, _mm256_mul_ps(acc[0], sc));
                store8(
                    sp.wrapping_add(8),
                    rest.saturating_sub(8),
                    _mm256_mul_ps(acc[1], sc),
                );
            }
        }
    }
}

/// [`crate::dispatch::PvTileFn`] with four outputs x 16 dimensions in registers.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pv_tile_avx2(p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    let Some(nq) = extent(out.len(), hd, v.len(), nk, p.len()) else {
        return;
    };
    for i0 in (0..nq).step_by(QB) {
        let rows = block_rows(i0, nq);
        for d0 in (0..hd).step_by(16) {
            let rest = hd - d0;
            let mut acc = [[_mm256_setzero_ps(); 2]; QB];
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: output row rows[r] < nq holds hd floats; lanes past
                // hd are masked.
                let op = out.as_ptr().add(rows[r] * hd + d0);
                acc[0] = load8(op, rest);
                acc[1] = load8(op.wrapping_add(8), rest.saturating_sub(8));
            }
            for j in 0..nk {
                // SAFETY: value row j < nk holds hd floats (v.len() >= nk * hd).
                let vp = v.as_ptr().add(j * hd + d0);
                let v0 = load8(vp, rest);
                let v1 = load8(vp.wrapping_add(8), rest.saturating_sub(8));
                for r in 0..QB {
                    // SAFETY: weight row rows[r] < nq holds nk floats.
                    let pb = _mm256_broadcast_ss(&*p.as_ptr().add(rows[r] * nk + j));
                    acc[r][0] = _mm256_fmadd_ps(pb, v0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(pb, v1, acc[r][1]);
                }
            }
            for (r, acc) in acc.iter().enumerate().take(nq - i0) {
                // SAFETY: as the loads above, for the real row i0 + r.
                let op = out.as_mut_ptr().add((i0 + r) * hd + d0);
                store8(op, rest, acc[0]);
                store8(op.wrapping_add(8), rest.saturating_sub(8), acc[1]);
            }
        }
    }
}

/// Lanes `0..rest` of sixteen set.
#[inline(always)]
fn mask16(rest: usize) -> __mmask16 {
    ((1u32 << rest.min(16)) - 1) as __mmask16
}

/// [`crate::dispatch::QkTileFn`] with four queries x 64 keys in registers.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
pub unsafe fn qk_tile_avx512(
    q: &[f32],
    hd: usize,
    kt: &[f32],
    nk: usize,
    scale: f32,
    s: &mut [f32],
) {
    let Some(nq) = extent(q.len(), hd, kt.len(), nk, s.len()) else {
        return;
    };
    let sc = _mm512_set1_ps(scale);
    for i0 in (0..nq).step_by(QB) {
        let rows = block_rows(i0, nq);
        for j0 in (0..nk).step_by(64) {
            let rest = nk - j0;
            let m: [__mmask16; 4] = [
                mask16(rest),
                mask16(rest.saturating_sub(16)),
                mask16(rest.saturating_sub(32)),
                mask16(rest.saturating_sub(48)),
            ];
            let mut acc = [[_mm512_setzero_ps(); 4]; QB];
            for d in 0..hd {
                // SAFETY: key row d holds nk floats from d * nk; masked
                // lanes (past nk) are not read.
                let kp = kt.as_ptr().add(d * nk + j0);
                let mut k = [_mm512_setzero_ps(); 4];
                for c in 0..4 {
                    k[c] = _mm512_maskz_loadu_ps(m[c], kp.wrapping_add(16 * c));
                }
                for r in 0..QB {
                    // SAFETY: rows[r] < nq, whose row holds hd floats.
                    let qb = _mm512_set1_ps(*q.as_ptr().add(rows[r] * hd + d));
                    for c in 0..4 {
                        acc[r][c] = _mm512_fmadd_ps(qb, k[c], acc[r][c]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(nq - i0) {
                let sp = s.as_mut_ptr().add((i0 + r) * nk + j0);
                for c in 0..4 {
                    // SAFETY: score row i0 + r < nq holds nk floats; masked
                    // lanes are not written.
                    _mm512_mask_storeu_ps(sp.wrapping_add(16 * c), m[c], _mm512_mul_ps(acc[c], sc));
                }
            }
        }
    }
}

/// [`crate::dispatch::PvTileFn`] with four outputs x 64 dimensions in registers.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
pub unsafe fn pv_tile_avx512(p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    let Some(nq) = extent(out.len(), hd, v.len(), nk, p.len()) else {
        return;
    };
    for i0 in (0..nq).step_by(QB) {
        let rows = block_rows(i0, nq);
        for d0 in (0..hd).step_by(64) {
            let rest = hd - d0;
            let m: [__mmask16; 4] = [
                mask16(rest),
                mask16(rest.saturating_sub(16)),
                mask16(rest.saturating_sub(32)),
                mask16(rest.saturating_sub(48)),
            ];
            let mut acc = [[_mm512_setzero_ps(); 4]; QB];
            for r in 0..QB {
                let op = out.as_ptr().add(rows[r] * hd + d0);
                for c in 0..4 {
                    // SAFETY: output row rows[r] < nq holds hd floats;
                    // masked lanes (past hd) are not read.
                    acc[r][c] = _mm512_maskz_loadu_ps(m[c], op.wrapping_add(16 * c));
                }
            }
            for j in 0..nk {
                let vp = v.as_ptr().add(j * hd + d0);
                let mut vv = [_mm512_setzero_ps(); 4];
                for c in 0..4 {
                    // SAFETY: value row j < nk holds hd floats; masked lanes
                    // are not read.
                    vv[c] = _mm512_maskz_loadu_ps(m[c], vp.wrapping_add(16 * c));
                }
                for r in 0..QB {
                    // SAFETY: weight row rows[r] < nq holds nk floats.
                    let pb = _mm512_set1_ps(*p.as_ptr().add(rows[r] * nk + j));
                    for c in 0..4 {
                        acc[r][c] = _mm512_fmadd_ps(pb, vv[c], acc[r][c]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(nq - i0) {
                let op = out.as_mut_ptr().add((i0 + r) * hd + d0);
                for c in 0..4 {
                    // SAFETY: as the loads above, for the real row i0 + r.
                    _mm512_mask_storeu_ps(op.wrapping_add(16 * c), m[c], acc[c]);
                }
            }
        }
    }
}
