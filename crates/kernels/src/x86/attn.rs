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

/// The rows a product `c = a . b` covers (`a` rows of `kd`, `b` `kd` rows
/// of `n`, `c` rows of `n`), or `None` for an empty or out-of-contract call.
#[inline(always)]
fn extent(a_len: usize, kd: usize, b_len: usize, n: usize, c_len: usize) -> Option<usize> {
    if kd == 0 || n == 0 || b_len < kd * n {
        return None;
    }
    let m = (a_len / kd).min(c_len / n);
    (m > 0).then_some(m)
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

/// Both tiles are `c = a . b` on row-major blocks: `a` rows of `kd`
/// floats, `b` `kd` rows of `n`, `c` rows of `n`, each element a fused
/// chain over `k` from zero (`Some(scale)`, then times the scale: scores)
/// or from its old value (`None`: outputs). Rows past the shorter of `a`
/// and `c` are left alone.
///
/// Four rows x 16 columns in registers.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_avx2(a: &[f32], kd: usize, b: &[f32], n: usize, c: &mut [f32], scale: Option<f32>) {
    let Some(m) = extent(a.len(), kd, b.len(), n, c.len()) else {
        return;
    };
    for i0 in (0..m).step_by(QB) {
        let rows = block_rows(i0, m);
        for j0 in (0..n).step_by(16) {
            let rest = n - j0;
            let mut acc = [[_mm256_setzero_ps(); 2]; QB];
            if scale.is_none() {
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: row rows[r] < m of `c` holds n floats; lanes
                    // past n are masked.
                    let cp = c.as_ptr().add(rows[r] * n + j0);
                    acc[0] = load8(cp, rest);
                    acc[1] = load8(cp.wrapping_add(8), rest.saturating_sub(8));
                }
            }
            for k in 0..kd {
                // SAFETY: row k of `b` holds n floats (b.len() >= kd * n);
                // lanes past n are masked.
                let bp = b.as_ptr().add(k * n + j0);
                let b0 = load8(bp, rest);
                let b1 = load8(bp.wrapping_add(8), rest.saturating_sub(8));
                for r in 0..QB {
                    // SAFETY: rows[r] < m, whose row of `a` holds kd floats.
                    let ab = _mm256_broadcast_ss(&*a.as_ptr().add(rows[r] * kd + k));
                    acc[r][0] = _mm256_fmadd_ps(ab, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(ab, b1, acc[r][1]);
                }
            }
            let sc = _mm256_set1_ps(scale.unwrap_or(1.0));
            for (r, acc) in acc.iter().enumerate().take(m - i0) {
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if scale.is_some() {
                    (v0, v1) = (_mm256_mul_ps(v0, sc), _mm256_mul_ps(v1, sc));
                }
                // SAFETY: as the loads above, for the real row i0 + r.
                let cp = c.as_mut_ptr().add((i0 + r) * n + j0);
                store8(cp, rest, v0);
                store8(cp.wrapping_add(8), rest.saturating_sub(8), v1);
            }
        }
    }
}

/// [`crate::dispatch::QkTileFn`]: scores, four queries x 16 keys at a time.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn qk_tile_avx2(q: &[f32], hd: usize, kt: &[f32], nk: usize, scale: f32, s: &mut [f32]) {
    gemm_avx2(q, hd, kt, nk, s, Some(scale))
}

/// [`crate::dispatch::PvTileFn`]: outputs, four x 16 dimensions at a time.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pv_tile_avx2(p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    gemm_avx2(p, nk, v, hd, out, None)
}

/// Lanes `0..rest` of sixteen set, for each of four vectors in turn.
#[inline(always)]
fn masks64(rest: usize) -> [__mmask16; 4] {
    let one = |r: usize| ((1u32 << r.min(16)) - 1) as __mmask16;
    [
        one(rest),
        one(rest.saturating_sub(16)),
        one(rest.saturating_sub(32)),
        one(rest.saturating_sub(48)),
    ]
}

/// [`gemm_avx2`] with four rows x 64 columns in registers.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn gemm_avx512(
    a: &[f32],
    kd: usize,
    b: &[f32],
    n: usize,
    c: &mut [f32],
    scale: Option<f32>,
) {
    let Some(m) = extent(a.len(), kd, b.len(), n, c.len()) else {
        return;
    };
    for i0 in (0..m).step_by(QB) {
        let rows = block_rows(i0, m);
        for j0 in (0..n).step_by(64) {
            let mask = masks64(n - j0);
            let mut acc = [[_mm512_setzero_ps(); 4]; QB];
            if scale.is_none() {
                for r in 0..QB {
                    let cp = c.as_ptr().add(rows[r] * n + j0);
                    for v in 0..4 {
                        // SAFETY: row rows[r] < m of `c` holds n floats;
                        // masked lanes (past n) are not read.
                        acc[r][v] = _mm512_maskz_loadu_ps(mask[v], cp.wrapping_add(16 * v));
                    }
                }
            }
            for k in 0..kd {
                let bp = b.as_ptr().add(k * n + j0);
                let mut bv = [_mm512_setzero_ps(); 4];
                for v in 0..4 {
                    // SAFETY: row k of `b` holds n floats; masked lanes are
                    // not read.
                    bv[v] = _mm512_maskz_loadu_ps(mask[v], bp.wrapping_add(16 * v));
                }
                for r in 0..QB {
                    // SAFETY: rows[r] < m, whose row of `a` holds kd floats.
                    let ab = _mm512_set1_ps(*a.as_ptr().add(rows[r] * kd + k));
                    for v in 0..4 {
                        acc[r][v] = _mm512_fmadd_ps(ab, bv[v], acc[r][v]);
                    }
                }
            }
            let sc = _mm512_set1_ps(scale.unwrap_or(1.0));
            for (r, acc) in acc.iter().enumerate().take(m - i0) {
                let cp = c.as_mut_ptr().add((i0 + r) * n + j0);
                for v in 0..4 {
                    let x = if scale.is_some() {
                        _mm512_mul_ps(acc[v], sc)
                    } else {
                        acc[v]
                    };
                    // SAFETY: as the loads above, for the real row i0 + r;
                    // masked lanes are not written.
                    _mm512_mask_storeu_ps(cp.wrapping_add(16 * v), mask[v], x);
                }
            }
        }
    }
}

/// [`crate::dispatch::QkTileFn`]: scores, four queries x 64 keys at a time.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
pub unsafe fn qk_tile_avx512(
    q: &[f32],
    hd: usize,
    kt: &[f32],
    nk: usize,
    scale: f32,
    s: &mut [f32],
) {
    gemm_avx512(q, hd, kt, nk, s, Some(scale))
}

/// [`crate::dispatch::PvTileFn`]: outputs, four x 64 dimensions at a time.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
pub unsafe fn pv_tile_avx512(p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    gemm_avx512(p, nk, v, hd, out, None)
}

/// [`crate::dispatch::AttendBlockFn`] on 256-bit vectors: per block of 32
/// query rows and tile of keys, the scores through [`gemm_avx2`], an online
/// softmax (each row's earlier outputs rescaled when its maximum grows),
/// and the weighted values through [`gemm_avx2`] again, the tile's value
/// rows copied together first when they lie apart.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_block_avx2(
    q: &[f32],
    hd: usize,
    kt: &[f32],
    v: &[f32],
    vs: usize,
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
) {
    use crate::scalar::attn::ATTEND_KEY_TILE as TILE;
    const BLOCK: usize = 32;
    let fits = || kt.len() >= n_keys * hd && v.len() >= (n_keys - 1) * vs + hd;
    let Some(nq) = crate::scalar::attn::block_rows(q.len(), hd, n_keys, fits, out) else {
        return;
    };
    let mut s = vec![0f32; BLOCK * TILE];
    let mut vt = vec![0f32; TILE * hd];
    for i0 in (0..nq).step_by(BLOCK) {
        let m = BLOCK.min(nq - i0);
        let (qb, ob) = (&q[i0 * hd..(i0 + m) * hd], &mut out[i0 * hd..(i0 + m) * hd]);
        ob.iter_mut().for_each(|o| *o = 0.0);
        let (mut max, mut sum) = ([f32::NEG_INFINITY; BLOCK], [0f32; BLOCK]);
        for t0 in (0..n_keys).step_by(TILE) {
            let n = TILE.min(n_keys - t0);
            gemm_avx2(
                qb,
                hd,
                &kt[t0 * hd..(t0 + n) * hd],
                n,
                &mut s[..m * n],
                Some(scale),
            );
            for r in 0..m {
                let row = &mut s[r * n..(r + 1) * n];
                let new_max = row.iter().copied().fold(max[r], f32::max);
                let alpha = (max[r] - new_max).exp();
                max[r] = new_max;
                sum[r] = sum[r] * alpha + super::float::exp_sum(row, new_max) as f32;
                if alpha != 1.0 {
                    ob[r * hd..(r + 1) * hd]
                        .iter_mut()
                        .for_each(|o| *o *= alpha);
                }
            }
            let vrows = if vs == hd {
                &v[t0 * hd..(t0 + n) * hd]
            } else {
                for j in 0..n {
                    let src = (t0 + j) * vs;
                    vt[j * hd..(j + 1) * hd].copy_from_slice(&v[src..src + hd]);
                }
                &vt[..n * hd]
            };
            gemm_avx2(&s[..m * n], n, vrows, hd, ob, None);
        }
        for (r, o) in ob.chunks_exact_mut(hd).enumerate() {
            let inv = 1.0 / sum[r];
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
}
