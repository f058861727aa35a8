//! Rows of IEEE f16 as the KV cache holds them (`u16` bits, native order):
//! conversions to and from `f32`, and the two products attention needs on
//! them. These are the reference the SIMD versions are tested against.
//!
//! Each function processes the `min` of its slices' lengths; the checked
//! wrappers in the crate root refuse mismatched lengths.

use crate::convert::{f16_to_f32, f32_to_f16};

/// `dst[i] = src[i]` widened exactly.
pub fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    for (o, &h) in dst.iter_mut().zip(src) {
        *o = f16_to_f32(h);
    }
}

/// `dst[i] = src[i]` rounded to nearest-even, NaNs as [`f32_to_f16`] makes them.
pub fn f32_to_f16_row(src: &[f32], dst: &mut [u16]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = f32_to_f16(v);
    }
}

/// `sum(a[i] * b[i])`: a query row against an f16 key row.
pub fn dot_f32_f16(a: &[f32], b: &[u16]) -> f32 {
    // In order, in `f32`: the scalar form of ggml's flash-attention tile
    // product (`simd_gemm` without SIMD), which the portable goldens hold us to.
    let mut sum = 0.0f32;
    for (&x, &h) in a.iter().zip(b) {
        sum += x * f16_to_f32(h);
    }
    sum
}

/// `y[i] += alpha * x[i]`: adds a weighted f16 value row into the output.
/// The multiply and the add are rounded separately (no fused multiply-add),
/// which the SIMD versions reproduce bit for bit.
pub fn axpy_f16(y: &mut [f32], alpha: f32, x: &[u16]) {
    for (o, &h) in y.iter_mut().zip(x) {
        *o += alpha * f16_to_f32(h);
    }
}

/// [`axpy_f16`] on a value row already widened.
fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

/// [`axpy_f32`] with each row `j` of `x` weighted by `alphas[j]`, in turn.
fn axpy_rows_f32(y: &mut [f32], alphas: &[f32], x: &[f32]) {
    let n = y.len();
    if n == 0 {
        return;
    }
    for (&a, row) in alphas.iter().zip(x.chunks_exact(n)) {
        axpy_f32(y, a, row);
    }
}

/// Scores of a block of queries against a tile of keys:
/// `s[i * nk + j] = scale * (q row i . key j)`, with `q` rows of `hd`
/// floats and `kt` the keys transposed (`hd` rows of `nk` floats). Each
/// score is [`dot_f32_f16`]'s sum in its order (rounded products added in
/// turn), then scaled.
pub fn qk_tile(q: &[f32], hd: usize, kt: &[f32], nk: usize, scale: f32, s: &mut [f32]) {
    if hd == 0 || nk == 0 {
        return;
    }
    let nq = (q.len() / hd).min(s.len() / nk);
    if kt.len() < hd * nk {
        return;
    }
    for i in 0..nq {
        let qi = &q[i * hd..(i + 1) * hd];
        for j in 0..nk {
            let mut sum = 0.0f32;
            for (d, &x) in qi.iter().enumerate() {
                sum += x * kt[d * nk + j];
            }
            s[i * nk + j] = sum * scale;
        }
    }
}

/// Weighted values of a block of queries: `out` row `i` (of `hd` floats)
/// plus `p[i * nk + j] * v row j` for each of the `nk` rows of `v` in turn,
/// as [`axpy_rows_f32`] adds them.
pub fn pv_tile(p: &[f32], nk: usize, v: &[f32], hd: usize, out: &mut [f32]) {
    if hd == 0 || nk == 0 || v.len() < nk * hd {
        return;
    }
    let nq = (p.len() / nk).min(out.len() / hd);
    for i in 0..nq {
        axpy_rows_f32(
            &mut out[i * hd..(i + 1) * hd],
            &p[i * nk..(i + 1) * nk],
            &v[..nk * hd],
        );
    }
}

/// The query rows an attention block call computes: `None` when it has
/// nothing to do (no head width; no keys, the rows then set to 0 here; or
/// key and value buffers too short for `n_keys`, checked by `fits` only
/// when there are keys, and nothing written).
pub(crate) fn block_rows(
    q_len: usize,
    hd: usize,
    n_keys: usize,
    fits: impl FnOnce() -> bool,
    out: &mut [f32],
) -> Option<usize> {
    if hd == 0 {
        return None;
    }
    let nq = (q_len / hd).min(out.len() / hd);
    if n_keys == 0 {
        out[..nq * hd].iter_mut().for_each(|o| *o = 0.0);
        return None;
    }
    fits().then_some(nq)
}

/// Keys per tile in the layout [`attend_block`] reads.
pub const ATTEND_KEY_TILE: usize = 96;

/// Where the tile holding key `j` starts in [`attend_block`]'s key layout,
/// and that tile's length: keys go in tiles of [`ATTEND_KEY_TILE`], each
/// tile `hd` rows of its own length (the keys transposed), tile after tile.
pub fn attend_key_tile(j: usize, n_keys: usize, hd: usize) -> (usize, usize) {
    let t0 = j / ATTEND_KEY_TILE * ATTEND_KEY_TILE;
    (t0 * hd, ATTEND_KEY_TILE.min(n_keys - t0))
}

/// One head's softmax attention for a block of query rows:
/// `out[i] = sum_j softmax_j(scale * q_i . k_j) v_j` over `n_keys` keys,
/// with `q` and `out` rows of `hd` floats, the keys in
/// [`attend_key_tile`]'s layout and value row `j` at `v[j * v_stride..][..hd]`.
/// Plain and exact in order: each row's scores, their maximum, the
/// exponentials and their sum in `f64`, then the weighted rows in turn.
/// The SIMD versions run an online softmax tile by tile and agree to a few
/// ulp of the output's magnitude. No keys gives rows of 0.
#[allow(clippy::too_many_arguments)]
pub fn attend_block(
    q: &[f32],
    hd: usize,
    kt: &[f32],
    v: &[f32],
    v_stride: usize,
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
) {
    let fits = || kt.len() >= n_keys * hd && v.len() >= (n_keys - 1) * v_stride + hd;
    let Some(nq) = block_rows(q.len(), hd, n_keys, fits, out) else {
        return;
    };
    let score = |qi: &[f32], j: usize| {
        let (base, n) = attend_key_tile(j, n_keys, hd);
        let c = j % ATTEND_KEY_TILE;
        let mut sum = 0.0f32;
        for (d, &x) in qi.iter().enumerate() {
            sum += x * kt[base + d * n + c];
        }
        sum * scale
    };
    let value = |j: usize, d: usize| v[j * v_stride + d];
    attend_rows(&q[..nq * hd], hd, n_keys, score, |p| p, value, out);
}

/// The rows of the scalar attention blocks, in order: each row's scores
/// (`score(q row, key)`), their maximum, the weights `round(exp(s - max))`
/// and their sum in `f64`, then `out[d] = sum_j weight_j * value(j, d)`
/// key by key, divided by the sum.
fn attend_rows(
    q: &[f32],
    hd: usize,
    n_keys: usize,
    score: impl Fn(&[f32], usize) -> f32,
    round: impl Fn(f32) -> f32,
    value: impl Fn(usize, usize) -> f32,
    out: &mut [f32],
) {
    let mut s = vec![0f32; n_keys];
    for (qi, oi) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        oi.iter_mut().for_each(|o| *o = 0.0);
        if n_keys == 0 {
            continue;
        }
        for (j, sj) in s.iter_mut().enumerate() {
            *sj = score(qi, j);
        }
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f64;
        for sj in s.iter_mut() {
            *sj = round((*sj - max).exp());
            total += *sj as f64;
        }
        for (j, &p) in s.iter().enumerate() {
            for (d, o) in oi.iter_mut().enumerate() {
                *o += p * value(j, d);
            }
        }
        let inv = (1.0 / total) as f32;
        oi.iter_mut().for_each(|o| *o *= inv);
    }
}

/// `x` rounded to bfloat16 (nearest, ties to even), as bits; NaNs stay
/// NaNs (quieted). Branch-free, so loops over rows vectorize.
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    (if nan { (b >> 16) | 0x40 } else { rounded }) as u16
}

/// The value of bfloat16 bits.
pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// The length of both buffers [`attend_block_bf16`] reads for `n_keys`
/// keys of `hd` dimensions (each padded to an even count).
pub fn attend_bf16_len(n_keys: usize, hd: usize) -> usize {
    n_keys.next_multiple_of(2) * hd.next_multiple_of(2)
}

/// Where dimension `d` of key `j` goes in [`attend_block_bf16`]'s keys:
/// tile by tile (tiles of [`ATTEND_KEY_TILE`] keys), each tile pairs of
/// dimensions (`d / 2`) by key by the pair's two halves, so that one 32-bit
/// lane holds two dimensions of one key. Odd `hd` leaves a last half 0.
pub fn attend_bf16_key_index(j: usize, d: usize, n_keys: usize, hd: usize) -> usize {
    let t0 = j / ATTEND_KEY_TILE * ATTEND_KEY_TILE;
    let n = ATTEND_KEY_TILE.min(n_keys - t0);
    t0 * hd.next_multiple_of(2) + ((d / 2) * n + (j - t0)) * 2 + d % 2
}

/// Where dimension `d` of value `j` goes in [`attend_block_bf16`]'s values:
/// tile by tile, each tile pairs of keys (`j / 2`) by dimension by the
/// pair's two halves, so that one 32-bit lane holds one dimension of two
/// keys. An odd tile leaves its last half 0.
pub fn attend_bf16_value_index(j: usize, d: usize, hd: usize) -> usize {
    let t0 = j / ATTEND_KEY_TILE * ATTEND_KEY_TILE;
    t0 * hd.next_multiple_of(2) + (((j - t0) / 2) * hd + d) * 2 + (j - t0) % 2
}

/// [`attend_block`] with bfloat16 products: queries, keys, values and the
/// softmax weights rounded to bfloat16, products summed in `f32` (as CPUs
/// that multiply bfloat16 pairs into `f32` lanes do), the weights' sum
/// taken over the rounded weights. Keys and values (bfloat16 bits) in the
/// layouts of [`attend_bf16_key_index`] and [`attend_bf16_value_index`],
/// both [`attend_bf16_len`] long. Plain and in order; the SIMD versions
/// agree to a few ulp of the output's magnitude.
#[allow(clippy::too_many_arguments)]
pub fn attend_block_bf16(
    q: &[f32],
    hd: usize,
    kp: &[u16],
    vp: &[u16],
    n_keys: usize,
    scale: f32,
    out: &mut [f32],
) {
    let len = attend_bf16_len(n_keys, hd);
    let Some(nq) = block_rows(
        q.len(),
        hd,
        n_keys,
        || kp.len() >= len && vp.len() >= len,
        out,
    ) else {
        return;
    };
    let r = |x: f32| bf16_value(bf16_bits(x));
    let score = |qi: &[f32], j: usize| {
        let mut sum = 0.0f32;
        for (d, &x) in qi.iter().enumerate() {
            sum += r(x) * bf16_value(kp[attend_bf16_key_index(j, d, n_keys, hd)]);
        }
        sum * scale
    };
    let value = |j: usize, d: usize| bf16_value(vp[attend_bf16_value_index(j, d, hd)]);
    attend_rows(&q[..nq * hd], hd, n_keys, score, r, value, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_on_exact_values() {
        // 1.5, -2.0, 0.25 in f16.
        let h = [0x3e00u16, 0xc000, 0x3400];
        assert_eq!(dot_f32_f16(&[2.0, 1.0, 4.0], &h), 3.0 - 2.0 + 1.0);
        let mut y = [1.0f32, 1.0, 1.0];
        axpy_f16(&mut y, 2.0, &h);
        assert_eq!(y, [4.0, -3.0, 1.5]);
    }

    #[test]
    fn shorter_slice_bounds_the_work() {
        let mut y = [0.0f32; 2];
        axpy_f16(&mut y, 1.0, &[0x3c00; 5]);
        assert_eq!(y, [1.0, 1.0]);
        assert_eq!(dot_f32_f16(&[1.0; 4], &[0x3c00; 3]), 3.0);
        let mut out = [9.0f32; 3];
        f16_to_f32_row(&[0x3c00], &mut out);
        assert_eq!(out, [1.0, 9.0, 9.0]);
    }
}
