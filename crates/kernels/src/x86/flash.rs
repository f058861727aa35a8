//! The dense attention block on 512-bit vectors: one head, a block of query
//! rows, keys in tiles ([`crate::scalar::attn::attend_block`] has the layout
//! and the contract), with an online softmax so that scores never leave the
//! cache: per tile the scores of 32 rows (8 rows x 48 keys in registers),
//! the running maxima and sums, then the weighted values added into the
//! output rows (4 rows x up to 80 dimensions in registers), each output
//! rescaled as it is loaded.

use std::arch::x86_64::*;

use crate::scalar::attn::ATTEND_KEY_TILE as TILE;

/// Query rows per block: their scores for one tile stay in L1.
const QB: usize = 32;
/// Score rows and key vectors in the score registers.
const SR: usize = 8;
const SV: usize = 3;
/// Output rows and dimension vectors in the value registers.
const PR: usize = 4;
const PV: usize = 5;

/// Lanes `0..rest` of sixteen.
#[inline(always)]
fn mask16(rest: usize) -> __mmask16 {
    ((1u32 << rest.min(16)) - 1) as __mmask16
}

/// `exp(x)` for `x <= 0` (Cephes' `expf` polynomial, scaled by
/// `vscalefps`); below -87.3 it gives 0 or a subnormal.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn exp16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-103.0));
    let n =
        _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_2e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.166_666_65));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    let r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(p, n)
}

/// The score registers: rows `rows` (block-relative, the last repeated in
/// a ragged group) of `q` against keys `c0..c0 + 48` of the tile `kt`
/// (`hd` rows of `n`), written scaled to `s` (rows of [`TILE`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores(
    q: *const f32,
    hd: usize,
    rows: [usize; SR],
    real: usize,
    kt: *const f32,
    n: usize,
    c0: usize,
    scale: f32,
    s: *mut f32,
) {
    let mask = [
        mask16(n - c0),
        mask16((n - c0).saturating_sub(16)),
        mask16((n - c0).saturating_sub(32)),
    ];
    let mut acc = [[_mm512_setzero_ps(); SV]; SR];
    for d in 0..hd {
        let bp = kt.add(d * n + c0);
        let mut b = [_mm512_setzero_ps(); SV];
        for v in 0..SV {
            // SAFETY (caller): the tile holds `hd` rows of `n` floats;
            // masked lanes (past `n`) are not read.
            b[v] = _mm512_maskz_loadu_ps(mask[v], bp.wrapping_add(16 * v));
        }
        for r in 0..SR {
            let a = _mm512_set1_ps(*q.add(rows[r] * hd + d));
            for v in 0..SV {
                acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
            }
        }
    }
    let sc = _mm512_set1_ps(scale);
    for (r, acc) in acc.iter().enumerate().take(real) {
        let sp = s.add(rows[r] * TILE + c0);
        for v in 0..SV {
            _mm512_mask_storeu_ps(sp.wrapping_add(16 * v), mask[v], _mm512_mul_ps(acc[v], sc));
        }
    }
}

/// The value registers: output rows `rows` (block-relative, the last
/// repeated), dimensions `d0..d0 + 16 * NV` (the last vector masked to
/// `hd`), each rescaled by its row's `alpha`, plus the tile's weights `s`
/// times value rows `v` (`n` of them, `vs` apart).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn values<const NV: usize>(
    s: *const f32,
    n: usize,
    v: *const f32,
    vs: usize,
    hd: usize,
    d0: usize,
    rows: [usize; PR],
    real: usize,
    alpha: &[f32; QB],
    out: *mut f32,
) {
    let mut mask = [0 as __mmask16; NV];
    for (k, m) in mask.iter_mut().enumerate() {
        *m = mask16(hd.saturating_sub(d0 + 16 * k));
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; PR];
    for r in 0..PR {
        let op = out.add(rows[r] * hd + d0);
        let a = _mm512_set1_ps(alpha[rows[r]]);
        for k in 0..NV {
            // SAFETY (caller): output row rows[r] holds hd floats; masked
            // lanes are not read.
            acc[r][k] = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(mask[k], op.wrapping_add(16 * k)));
        }
    }
    for j in 0..n {
        let vp = v.add(j * vs + d0);
        let mut b = [_mm512_setzero_ps(); NV];
        for k in 0..NV {
            // SAFETY (caller): value row j holds hd floats.
            b[k] = _mm512_maskz_loadu_ps(mask[k], vp.wrapping_add(16 * k));
        }
        for r in 0..PR {
            let p = _mm512_set1_ps(*s.add(rows[r] * TILE + j));
            for k in 0..NV {
                acc[r][k] = _mm512_fmadd_ps(p, b[k], acc[r][k]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(real) {
        let op = out.add(rows[r] * hd + d0);
        for k in 0..NV {
            _mm512_mask_storeu_ps(op.wrapping_add(16 * k), mask[k], acc[k]);
        }
    }
}

/// `rows[k] = min(r0 + k, m - 1)`.
#[inline(always)]
fn group<const R: usize>(r0: usize, m: usize) -> [usize; R] {
    let mut rows = [0; R];
    for (k, r) in rows.iter_mut().enumerate() {
        *r = (r0 + k).min(m - 1);
    }
    rows
}

/// The running maximum of a row of scores after this tile, the factor its
/// earlier outputs and sum shrink by, and the row turned into weights
/// `exp(s - max)`; returns the row's new sum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
unsafe fn softmax_row(s: *mut f32, n: usize, max: &mut f32, alpha: &mut f32, sum: f32) -> f32 {
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in (0..n).step_by(16) {
        // SAFETY (caller): the row holds n floats; masked lanes are not read.
        let x = _mm512_mask_loadu_ps(mv, mask16(n - c), s.add(c));
        mv = _mm512_max_ps(mv, x);
    }
    let new_max = max.max(_mm512_reduce_max_ps(mv));
    *alpha = (*max - new_max).exp();
    *max = new_max;
    let m = _mm512_set1_ps(new_max);
    let mut acc = _mm512_setzero_ps();
    for c in (0..n).step_by(16) {
        let k = mask16(n - c);
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s.add(c)), m));
        let e = _mm512_maskz_mov_ps(k, e);
        _mm512_mask_storeu_ps(s.add(c), k, e);
        acc = _mm512_add_ps(acc, e);
    }
    sum * *alpha + _mm512_reduce_add_ps(acc)
}

/// [`crate::dispatch::AttendBlockFn`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_block_avx512(
    q: &[f32],
    hd: usize,
    kt: &[f32],
    v: &[f32],
    vs: usize,
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
) {
    let fits = || kt.len() >= n_keys * hd && v.len() >= (n_keys - 1) * vs + hd;
    let Some(nq) = crate::scalar::attn::block_rows(q.len(), hd, n_keys, fits, out) else {
        return;
    };
    let mut s = [0f32; QB * TILE];
    for i0 in (0..nq).step_by(QB) {
        let m = QB.min(nq - i0);
        let qb = q.as_ptr().add(i0 * hd);
        let ob = &mut out[i0 * hd..(i0 + m) * hd];
        ob.iter_mut().for_each(|o| *o = 0.0);
        let (mut max, mut sum, mut alpha) = ([f32::NEG_INFINITY; QB], [0f32; QB], [0f32; QB]);
        for t0 in (0..n_keys).step_by(TILE) {
            let n = TILE.min(n_keys - t0);
            // SAFETY: the tile at t0 * hd holds hd rows of n floats
            // (kt.len() >= n_keys * hd); query rows i0..i0 + m lie in q.
            let ktp = kt.as_ptr().add(t0 * hd);
            for r0 in (0..m).step_by(SR) {
                let rows = group::<SR>(r0, m);
                for c0 in (0..n).step_by(16 * SV) {
                    scores(qb, hd, rows, m - r0, ktp, n, c0, scale, s.as_mut_ptr());
                }
            }
            for r in 0..m {
                sum[r] = softmax_row(
                    s.as_mut_ptr().add(r * TILE),
                    n,
                    &mut max[r],
                    &mut alpha[r],
                    sum[r],
                );
            }
            // SAFETY: value rows t0..t0 + n lie in v (checked above).
            let vp = v.as_ptr().add(t0 * vs);
            for r0 in (0..m).step_by(PR) {
                let rows = group::<PR>(r0, m);
                let real = (m - r0).min(PR);
                let mut d0 = 0;
                while d0 < hd {
                    let left = (hd - d0).div_ceil(16);
                    let (sp, op) = (s.as_ptr(), ob.as_mut_ptr());
                    match left {
                        1 => values::<1>(sp, n, vp, vs, hd, d0, rows, real, &alpha, op),
                        2 => values::<2>(sp, n, vp, vs, hd, d0, rows, real, &alpha, op),
                        3 => values::<3>(sp, n, vp, vs, hd, d0, rows, real, &alpha, op),
                        4 => values::<4>(sp, n, vp, vs, hd, d0, rows, real, &alpha, op),
                        _ => values::<PV>(sp, n, vp, vs, hd, d0, rows, real, &alpha, op),
                    }
                    d0 += 16 * left.min(PV);
                }
            }
        }
        for (r, o) in ob.chunks_exact_mut(hd).enumerate() {
            let inv = 1.0 / sum[r];
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
}

/// Score registers of the bfloat16 block: as [`scores`], each step one
/// pair of dimensions (`qp`: the block's queries as bfloat16 pairs, `hd2`
/// a row; `kp`: the tile's pairs, `n` keys a row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_bf16(
    qp: *const u32,
    hd2: usize,
    rows: [usize; SR],
    real: usize,
    kp: *const u16,
    n: usize,
    c0: usize,
    scale: f32,
    s: *mut f32,
) {
    let mask = [
        mask16(n - c0),
        mask16((n - c0).saturating_sub(16)),
        mask16((n - c0).saturating_sub(32)),
    ];
    let mut acc = [[_mm512_setzero_ps(); SV]; SR];
    for p in 0..hd2 {
        let bp = kp.add((p * n + c0) * 2) as *const i32;
        let mut b = [_mm512_setzero_si512(); SV];
        for v in 0..SV {
            // SAFETY (caller): pair row p of the tile holds n keys' pairs;
            // masked lanes are not read.
            b[v] = _mm512_maskz_loadu_epi32(mask[v], bp.wrapping_add(16 * v));
        }
        for r in 0..SR {
            let a: __m512bh =
                std::mem::transmute(_mm512_set1_epi32(*qp.add(rows[r] * hd2 + p) as i32));
            for v in 0..SV {
                acc[r][v] =
                    _mm512_dpbf16_ps(acc[r][v], a, std::mem::transmute::<__m512i, __m512bh>(b[v]));
            }
        }
    }
    let sc = _mm512_set1_ps(scale);
    for (r, acc) in acc.iter().enumerate().take(real) {
        let sp = s.add(rows[r] * TILE + c0);
        for v in 0..SV {
            _mm512_mask_storeu_ps(sp.wrapping_add(16 * v), mask[v], _mm512_mul_ps(acc[v], sc));
        }
    }
}

/// Value registers of the bfloat16 block: as [`values`], each step one
/// pair of keys (`w`: the weights as bfloat16, [`TILE`] a row, an odd
/// tile's last pair completed with 0; `vp`: the tile's pairs, `hd` a row).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn values_bf16<const NV: usize>(
    w: *const u16,
    n2: usize,
    vp: *const u16,
    hd: usize,
    d0: usize,
    rows: [usize; PR],
    real: usize,
    alpha: &[f32; QB],
    out: *mut f32,
) {
    let mut mask = [0 as __mmask16; NV];
    for (k, m) in mask.iter_mut().enumerate() {
        *m = mask16(hd.saturating_sub(d0 + 16 * k));
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; PR];
    for r in 0..PR {
        let op = out.add(rows[r] * hd + d0);
        let a = _mm512_set1_ps(alpha[rows[r]]);
        for k in 0..NV {
            // SAFETY (caller): output row rows[r] holds hd floats.
            acc[r][k] = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(mask[k], op.wrapping_add(16 * k)));
        }
    }
    for jp in 0..n2 {
        let bp = vp.add((jp * hd + d0) * 2) as *const i32;
        let mut b = [_mm512_setzero_si512(); NV];
        for k in 0..NV {
            // SAFETY (caller): pair row jp of the tile holds hd pairs.
            b[k] = _mm512_maskz_loadu_epi32(mask[k], bp.wrapping_add(16 * k));
        }
        for r in 0..PR {
            let pw = (w.add(rows[r] * TILE + 2 * jp) as *const u32).read_unaligned();
            let p: __m512bh = std::mem::transmute(_mm512_set1_epi32(pw as i32));
            for k in 0..NV {
                acc[r][k] =
                    _mm512_dpbf16_ps(acc[r][k], p, std::mem::transmute::<__m512i, __m512bh>(b[k]));
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(real) {
        let op = out.add(rows[r] * hd + d0);
        for k in 0..NV {
            _mm512_mask_storeu_ps(op.wrapping_add(16 * k), mask[k], acc[k]);
        }
    }
}

/// [`softmax_row`] that also writes the weights rounded to bfloat16 into
/// `w` (the half after an odd row's end set to 0) and sums the rounded ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512bf16")]
unsafe fn softmax_row_bf16(
    s: *const f32,
    n: usize,
    w: *mut u16,
    max: &mut f32,
    alpha: &mut f32,
    sum: f32,
) -> f32 {
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in (0..n).step_by(16) {
        // SAFETY (caller): the row holds n floats; masked lanes are not read.
        mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(mv, mask16(n - c), s.add(c)));
    }
    let new_max = max.max(_mm512_reduce_max_ps(mv));
    *alpha = (*max - new_max).exp();
    *max = new_max;
    let m = _mm512_set1_ps(new_max);
    let mut acc = _mm512_setzero_ps();
    for c in (0..n).step_by(16) {
        let k = mask16(n - c);
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s.add(c)), m));
        let e = _mm512_maskz_mov_ps(k, e);
        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(e));
        // SAFETY (caller): the weight row holds TILE halves; masked lanes
        // are not written.
        _mm256_mask_storeu_epi16(w.add(c) as *mut i16, k, h);
        let back = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
        acc = _mm512_add_ps(acc, back);
    }
    if n % 2 == 1 {
        *w.add(n) = 0;
    }
    sum * *alpha + _mm512_reduce_add_ps(acc)
}

/// [`crate::dispatch::AttendBlockBf16Fn`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_block_bf16_avx512(
    q: &[f32],
    hd: usize,
    kp: &[u16],
    vp: &[u16],
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
) {
    use crate::scalar::attn::{attend_bf16_len, bf16_bits};
    let len = attend_bf16_len(n_keys, hd);
    let fits = || kp.len() >= len && vp.len() >= len;
    let Some(nq) = crate::scalar::attn::block_rows(q.len(), hd, n_keys, fits, out) else {
        return;
    };
    let hd2 = hd.div_ceil(2);
    let (hp, mut qp) = (2 * hd2, vec![0u32; QB * hd2]);
    let mut s = [0f32; QB * TILE];
    let mut w = [0u16; QB * TILE];
    for i0 in (0..nq).step_by(QB) {
        let m = QB.min(nq - i0);
        for r in 0..m {
            let row = &q[(i0 + r) * hd..(i0 + r + 1) * hd];
            for p in 0..hd2 {
                let lo = bf16_bits(row[2 * p]) as u32;
                let hi = row.get(2 * p + 1).map_or(0, |&x| bf16_bits(x) as u32);
                qp[r * hd2 + p] = lo | hi << 16;
            }
        }
        let ob = &mut out[i0 * hd..(i0 + m) * hd];
        ob.iter_mut().for_each(|o| *o = 0.0);
        let (mut max, mut sum, mut alpha) = ([f32::NEG_INFINITY; QB], [0f32; QB], [0f32; QB]);
        for t0 in (0..n_keys).step_by(TILE) {
            let n = TILE.min(n_keys - t0);
            // SAFETY: tile t0 of both buffers starts at t0 * hp and holds
            // its pairs (the lengths were checked above).
            let (ktp, vtp) = (kp.as_ptr().add(t0 * hp), vp.as_ptr().add(t0 * hp));
            for r0 in (0..m).step_by(SR) {
                let rows = group::<SR>(r0, m);
                for c0 in (0..n).step_by(16 * SV) {
                    scores_bf16(
                        qp.as_ptr(),
                        hd2,
                        rows,
                        m - r0,
                        ktp,
                        n,
                        c0,
                        scale,
                        s.as_mut_ptr(),
                    );
                }
            }
            for r in 0..m {
                let (sr, wr) = (s.as_ptr().add(r * TILE), w.as_mut_ptr().add(r * TILE));
                sum[r] = softmax_row_bf16(sr, n, wr, &mut max[r], &mut alpha[r], sum[r]);
            }
            let n2 = n.div_ceil(2);
            for r0 in (0..m).step_by(PR) {
                let rows = group::<PR>(r0, m);
                let real = (m - r0).min(PR);
                let mut d0 = 0;
                while d0 < hd {
                    let left = (hd - d0).div_ceil(16);
                    let (wp, op) = (w.as_ptr(), ob.as_mut_ptr());
                    match left {
                        1 => values_bf16::<1>(wp, n2, vtp, hd, d0, rows, real, &alpha, op),
                        2 => values_bf16::<2>(wp, n2, vtp, hd, d0, rows, real, &alpha, op),
                        3 => values_bf16::<3>(wp, n2, vtp, hd, d0, rows, real, &alpha, op),
                        4 => values_bf16::<4>(wp, n2, vtp, hd, d0, rows, real, &alpha, op),
                        _ => values_bf16::<PV>(wp, n2, vtp, hd, d0, rows, real, &alpha, op),
                    }
                    d0 += 16 * left.min(PV);
                }
            }
        }
        for (r, o) in ob.chunks_exact_mut(hd).enumerate() {
            let inv = 1.0 / sum[r];
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
}
