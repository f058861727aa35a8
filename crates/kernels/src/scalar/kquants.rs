//! The K-quants: q2_K .. q6_K weights and their q8_K activations, in
//! 256-element super-blocks. Ports of `quantize_row_*_ref` (with the
//! `make_qkx2_quants` / `make_q3_quants` / `make_qx_quants` searches) and
//! `dequantize_row_*` in llama.cpp's `ggml-quants.c`, and of
//! `ggml_vec_dot_*_q8_K_generic` in `ggml-cpu/quants.c`. Every float
//! expression keeps the C evaluation order, so blocks and dot products are
//! bit-identical to llama.cpp's portable build.
//!
//! Contract of the `&[u8]` functions: as in [`super::legacy`], the slices hold
//! exactly the blocks for the element count.

use edgellama_gguf::QK_K;
use zerocopy::little_endian::{F32 as LeF32, I16 as LeI16};

use crate::blocks::{
    as_blocks, as_blocks_mut, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, Half,
};

/// Below this magnitude a group is treated as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, through the float adder: adding 1.5 * 2^23
/// leaves the rounded integer in the low mantissa bits. Exact for
/// `|fval| <= 2^22`; out-of-range inputs give garbage as in C, never a panic.
#[inline]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The element of largest magnitude (first one on ties) and that magnitude.
#[inline]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    (max, amax)
}

/// `make_qx_quants` with `rmse_type == 1` and no importance weights (what
/// `quantize_row_q6_K_ref` uses): symmetric quants in `[0, 2 * nmax)`,
/// searching 19 scales around `nmax / max` for the least `x^2`-weighted
/// squared error. Returns the scale.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);

    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l_out.iter_mut().zip(x) {
        let l = quant(iscale, xi);
        *li = (l + nmax) as i8;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = quant(iscale, xi);
            let w = xi * xi;
            sumlx += w * xi * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &xi) in l_out.iter_mut().zip(x) {
                *li = (nmax + quant(iscale, xi)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants` with `do_rmse`: symmetric quants in `[0, 2 * nmax)`,
/// refined by up to five passes of coordinate descent on the `x^2`-weighted
/// error. Returns the scale.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (max, amax) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l_out.iter_mut().zip(x) {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *li = l as i8;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &xi) in l_out.iter_mut().zip(x) {
            let w = xi * xi;
            let old = *li as f32;
            let mut slx = sumlx - w * xi * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    slx += w * xi * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l_out.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The search parameters of `make_qkx2_quants`.
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
}

/// `make_qkx2_quants`: asymmetric quants `x ~ scale * l - the_min`, `l` in
/// `[0, nmax]`; tries `nstep + 1` scales and solves the weighted least squares
/// for scale and min at each. Returns `(scale, the_min)`.
fn make_qkx2_quants(
    p: &Qkx2,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    let nmax = p.nmax;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &w) in x.iter().zip(weights).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let error = |diff: f32| if p.use_mad { diff.abs() } else { diff * diff };

    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((li, &xi), &w) in l_out.iter_mut().zip(x).zip(weights) {
        let l = nearest_int(iscale * (xi - min));
        *li = l.clamp(0, nmax) as u8;
        let diff = scale * *li as f32 + min - xi;
        best_error += w * error(diff);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for ((la, &xi), &w) in laux.iter_mut().zip(x).zip(weights) {
            let l = nearest_int(iscale * (xi - min)).clamp(0, nmax);
            *la = l as u8;
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * xi;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&la, &xi), &w) in laux.iter().zip(x).zip(weights) {
                let diff = this_scale * la as f32 + this_min - xi;
                cur_error += w * error(diff);
            }
            if cur_error < best_error {
                l_out.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of
/// `q4_K`/`q5_K`: 6 bits each; sub-blocks 4..8 keep their top two bits in the
/// spare bits of bytes 0..8.
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 6-bit scale of sub-block `j` (0..16) of `q3_K`, before the `- 32`:
/// low nibbles in bytes 0..8, top two bits in bytes 8..12.
#[inline]
pub(crate) fn q3k_scale(j: usize, s: &[u8; 12]) -> i32 {
    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i32
}

/// The 8 scale/min pairs of a `q4_K`/`q5_K` block, 6 bits each, packed by
/// `get_scale_min_k4`'s layout.
fn pack_scales_mins_k4(
    scales: &[f32; 8],
    mins: &[f32; 8],
    max_scale: f32,
    max_min: f32,
) -> [u8; 12] {
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut out = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            out[j] = ls;
            out[j + 4] = lm;
        } else {
            out[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            out[j - 4] |= (ls >> 4) << 6;
            out[j] |= (lm >> 4) << 6;
        }
    }
    out
}

/// Largest value of `v`, or 0 if none is positive.
#[inline]
fn positive_max(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, &s| if s > m { s } else { m })
}

// ---- q2_K -------------------------------------------------------------------

pub fn quantize_row_q2_k(src: &[f32], dst: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let params = Qkx2 {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let blocks: &mut [BlockQ2K] = as_blocks_mut(dst);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let mut l_all = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0.0f32; 16];
        let mut scales = [0.0f32; QK_K / 16];
        let mut mins = [0.0f32; QK_K / 16];
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let ls = &mut l_all[16 * j..16 * j + 16];
            (scales[j], mins[j]) = make_qkx2_quants(&params, xs, &weights, ls, &mut laux);
        }
        let max_scale = positive_max(&scales);
        let max_min = positive_max(&mins);

        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (s, &sc) in y.scales.iter_mut().zip(&scales) {
                *s = nearest_int(iscale * sc) as u8;
            }
            y.d = Half::from_f32(max_scale / Q4SCALE);
        } else {
            y.scales = [0; QK_K / 16];
            y.d = Half::ZERO;
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (s, &m) in y.scales.iter_mut().zip(&mins) {
                *s |= (nearest_int(iscale * m) << 4) as u8;
            }
            y.dmin = Half::from_f32(max_min / Q4SCALE);
        } else {
            y.dmin = Half::ZERO;
        }

        // Requantize against the rounded scales so the stored quants fit them.
        let d_all = y.d.to_f32();
        let m_all = y.dmin.to_f32();
        for j in 0..QK_K / 16 {
            let d = d_all * (y.scales[j] & 0x0f) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = m_all * (y.scales[j] >> 4) as f32;
            for ii in 0..16 {
                let l = nearest_int((x[16 * j + ii] + dm) / d);
                l_all[16 * j + ii] = l.clamp(0, 3) as u8;
            }
        }

        for j in (0..QK_K).step_by(128) {
            for l in 0..32 {
                y.qs[j / 4 + l] = l_all[j + l]
                    | (l_all[j + l + 32] << 2)
                    | (l_all[j + l + 64] << 4)
                    | (l_all[j + l + 96] << 6);
            }
        }
    }
}

pub fn dequantize_row_q2_k(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ2K] = as_blocks(src);
    for (x, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = x.d.to_f32();
        let min = x.dmin.to_f32();
        let mut out = y.iter_mut();
        let mut is = 0;
        for q in x.qs.chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                for half in q.chunks_exact(16) {
                    let sc = x.scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for (&qv, o) in half.iter().zip(out.by_ref()) {
                        *o = dl * ((qv >> shift) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

pub fn vec_dot_q2_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[BlockQ2K] = as_blocks(w);
    let ys: &[BlockQ8K] = as_blocks(a);
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys).take(n / QK_K) {
        let summs: i32 = y
            .bsums
            .iter()
            .zip(&x.scales)
            .map(|(b, &sc)| b.get() as i32 * (sc >> 4) as i32)
            .sum();
        let yd = y.d.get();
        let dall = yd * x.d.to_f32();
        let dmin = yd * x.dmin.to_f32();

        let mut isum = 0i32;
        let mut is = 0;
        for (q2, q8_128) in x.qs.chunks_exact(32).zip(y.qs.chunks_exact(128)) {
            for (shift, q8) in [0, 2, 4, 6].into_iter().zip(q8_128.chunks_exact(32)) {
                for half in 0..2 {
                    let d = (x.scales[is] & 0x0f) as i32;
                    is += 1;
                    let range = 16 * half..16 * half + 16;
                    let isuml: i32 = q8[range.clone()]
                        .iter()
                        .zip(&q2[range])
                        .map(|(&q, &v)| q as i32 * ((v >> shift) & 3) as i32)
                        .sum();
                    isum += d * isuml;
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

// ---- q3_K -------------------------------------------------------------------

pub fn quantize_row_q3_k(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ3K] = as_blocks_mut(dst);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let mut l_all = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l_all[16 * j..16 * j + 16]);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }

        y.scales = [0; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &sc) in scales.iter().enumerate() {
                // `int8_t l = nearest_int(..)` narrows before clamping.
                let l = (nearest_int(iscale * sc) as i8 as i32).clamp(-32, 31) + 32;
                if j < 8 {
                    y.scales[j] = (l & 0x0f) as u8;
                } else {
                    y.scales[j - 8] |= ((l & 0x0f) << 4) as u8;
                }
                y.scales[j % 4 + 8] |= ((l >> 4) << (2 * (j / 4))) as u8;
            }
            y.d = Half::from_f32(1.0 / iscale);
        } else {
            y.d = Half::ZERO;
        }

        let d_all = y.d.to_f32();
        for j in 0..QK_K / 16 {
            let d = d_all * (q3k_scale(j, &y.scales) - 32) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                l_all[16 * j + ii] = (l + 4) as i8;
            }
        }

        // High bit of element j goes to bit j / 32 of hmask[j % 32].
        y.hmask = [0; QK_K / 8];
        for (j, l) in l_all.iter_mut().enumerate() {
            if *l > 3 {
                y.hmask[j % 32] |= 1 << (j / 32);
                *l -= 4;
            }
        }
        for j in (0..QK_K).step_by(128) {
            for l in 0..32 {
                y.qs[j / 4 + l] = l_all[j + l] as u8
                    | ((l_all[j + l + 32] as u8) << 2)
                    | ((l_all[j + l + 64] as u8) << 4)
                    | ((l_all[j + l + 96] as u8) << 6);
            }
        }
    }
}

/// The 256 signed 3-bit quants (`-4..=3`) of a `q3_K` block, in element order.
#[inline]
fn q3k_quants(x: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (j128, q3) in x.qs.chunks_exact(32).enumerate() {
        for s in 0..4 {
            let m = 1u8 << (4 * j128 + s);
            let out = &mut a[128 * j128 + 32 * s..128 * j128 + 32 * s + 32];
            for ((o, &q), &h) in out.iter_mut().zip(q3).zip(&x.hmask) {
                *o = ((q >> (2 * s)) & 3) as i8 - if h & m != 0 { 0 } else { 4 };
            }
        }
    }
    a
}

pub fn dequantize_row_q3_k(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ3K] = as_blocks(src);
    for (x, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d_all = x.d.to_f32();
        let q = q3k_quants(x);
        for (j, (ys, qs)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d_all * (q3k_scale(j, &x.scales) - 32) as f32;
            for (o, &v) in ys.iter_mut().zip(qs) {
                *o = dl * v as f32;
            }
        }
    }
}

/// The integer part shared by the q3_K/q4_K/q5_K/q6_K dot products: lane `l`
/// of the result is the sum over elements `k` with `k % 8 == l` of
/// `scale(k) * q8[k] * a[k]`, where the scale changes every `group` elements.
/// Integer sums are exact, so any grouping gives llama.cpp's `aux32`.
#[inline]
fn scaled_lanes(
    q8: &[i8; QK_K],
    a: &[i8; QK_K],
    group: usize,
    scale: impl Fn(usize) -> i32,
) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (g, (q8g, ag)) in q8
        .chunks_exact(group)
        .zip(a.chunks_exact(group))
        .enumerate()
    {
        let sc = scale(g);
        for (q8c, ac) in q8g.chunks_exact(8).zip(ag.chunks_exact(8)) {
            for l in 0..8 {
                aux32[l] += sc * (q8c[l] as i32 * ac[l] as i32);
            }
        }
    }
    aux32
}

pub fn vec_dot_q3_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[BlockQ3K] = as_blocks(w);
    let ys: &[BlockQ8K] = as_blocks(a);
    let mut sums = [0.0f32; 8];
    for (x, y) in xs.iter().zip(ys).take(n / QK_K) {
        let q = q3k_quants(x);
        let aux32 = scaled_lanes(&y.qs, &q, 16, |g| q3k_scale(g, &x.scales) - 32);
        let d = x.d.to_f32() * y.d.get();
        for (s, &v) in sums.iter_mut().zip(&aux32) {
            *s += d * v as f32;
        }
    }
    sums.iter().fold(0.0f32, |acc, &s| acc + s)
}

// ---- q4_K -------------------------------------------------------------------

/// Per 32-element sub-block: the weights `av_x + |x|` the q4_K/q5_K reference
/// quantizers give `make_qkx2_quants`.
#[inline]
fn rms_plus_abs_weights(xs: &[f32], weights: &mut [f32; 32]) {
    let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
    let av_x = (sum_x2 / 32.0).sqrt();
    for (w, &v) in weights.iter_mut().zip(xs) {
        *w = av_x + v.abs();
    }
}

/// Quantizes one q4_K/q5_K super-block to `nmax + 1` levels; returns the
/// packed scales, `d`, `dmin` and the quants in element order.
fn quantize_superblock_k4(x: &[f32], params: &Qkx2) -> ([u8; 12], Half, Half, [u8; QK_K]) {
    let mut l_all = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        rms_plus_abs_weights(xs, &mut weights);
        let ls = &mut l_all[32 * j..32 * j + 32];
        (scales[j], mins[j]) = make_qkx2_quants(params, xs, &weights, ls, &mut laux);
    }
    let max_scale = positive_max(&scales);
    let max_min = positive_max(&mins);
    let packed = pack_scales_mins_k4(&scales, &mins, max_scale, max_min);
    let d = Half::from_f32(max_scale / 63.0);
    let dmin = Half::from_f32(max_min / 63.0);

    let d_all = d.to_f32();
    let m_all = dmin.to_f32();
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / d);
            l_all[32 * j + ii] = l.clamp(0, params.nmax) as u8;
        }
    }
    (packed, d, dmin, l_all)
}

pub fn quantize_row_q4_k(src: &[f32], dst: &mut [u8]) {
    let params = Qkx2 {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let blocks: &mut [BlockQ4K] = as_blocks_mut(dst);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let (scales, d, dmin, l_all) = quantize_superblock_k4(x, &params);
        y.scales = scales;
        y.d = d;
        y.dmin = dmin;
        for (q, ls) in y.qs.chunks_exact_mut(32).zip(l_all.chunks_exact(64)) {
            for l in 0..32 {
                q[l] = ls[l] | (ls[l + 32] << 4);
            }
        }
    }
}

pub fn dequantize_row_q4_k(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ4K] = as_blocks(src);
    for (x, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = x.d.to_f32();
        let min = x.dmin.to_f32();
        for (j, (q, ys)) in
            x.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc1, m1) = get_scale_min_k4(2 * j, &x.scales);
            let (sc2, m2) = get_scale_min_k4(2 * j + 1, &x.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for l in 0..32 {
                ys[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                ys[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

/// `sum(bsums[j] * min(j / 2))`: the min correction of q4_K/q5_K.
#[inline]
fn k4_min_sum(x_scales: &[u8; 12], bsums: &[LeI16; QK_K / 16]) -> i32 {
    bsums
        .iter()
        .enumerate()
        .map(|(j, b)| b.get() as i32 * get_scale_min_k4(j / 2, x_scales).1 as i32)
        .sum()
}

/// Shared tail of the q4_K/q5_K dot products: the order of float operations
/// is that of `ggml_vec_dot_q4_K_q8_K_generic`.
#[inline]
fn k4_accumulate(
    sums: &mut [f32; 8],
    sumf: &mut f32,
    aux32: &[i32; 8],
    d: Half,
    dmin: Half,
    yd: &LeF32,
    sumi: i32,
) {
    let d = d.to_f32() * yd.get();
    for (s, &v) in sums.iter_mut().zip(aux32) {
        *s += d * v as f32;
    }
    let dmin = dmin.to_f32() * yd.get();
    *sumf -= dmin * sumi as f32;
}

pub fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[BlockQ4K] = as_blocks(w);
    let ys: &[BlockQ8K] = as_blocks(a);
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys).take(n / QK_K) {
        let mut q = [0i8; QK_K];
        for (qs, out) in x.qs.chunks_exact(32).zip(q.chunks_exact_mut(64)) {
            for l in 0..32 {
                out[l] = (qs[l] & 0x0f) as i8;
                out[l + 32] = (qs[l] >> 4) as i8;
            }
        }
        let aux32 = scaled_lanes(&y.qs, &q, 32, |g| get_scale_min_k4(g, &x.scales).0 as i32);
        let sumi = k4_min_sum(&x.scales, &y.bsums);
        k4_accumulate(&mut sums, &mut sumf, &aux32, x.d, x.dmin, &y.d, sumi);
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

// ---- q5_K -------------------------------------------------------------------

pub fn quantize_row_q5_k(src: &[f32], dst: &mut [u8]) {
    let params = Qkx2 {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let blocks: &mut [BlockQ5K] = as_blocks_mut(dst);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let (scales, d, dmin, l_all) = quantize_superblock_k4(x, &params);
        y.scales = scales;
        y.d = d;
        y.dmin = dmin;
        y.qh = [0; QK_K / 8];
        // Pair p (elements 64p..64p+64) keeps its fifth bits in bits 2p, 2p+1.
        for (p, (ql, ls)) in
            y.qs.chunks_exact_mut(32)
                .zip(l_all.chunks_exact(64))
                .enumerate()
        {
            let m1 = 1u8 << (2 * p);
            let m2 = 2u8 << (2 * p);
            for j in 0..32 {
                let mut l1 = ls[j];
                if l1 > 15 {
                    l1 -= 16;
                    y.qh[j] |= m1;
                }
                let mut l2 = ls[j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    y.qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
        }
    }
}

pub fn dequantize_row_q5_k(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ5K] = as_blocks(src);
    for (x, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = x.d.to_f32();
        let min = x.dmin.to_f32();
        for (j, (ql, ys)) in
            x.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc1, m1) = get_scale_min_k4(2 * j, &x.scales);
            let (sc2, m2) = get_scale_min_k4(2 * j + 1, &x.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * j);
            let u2 = 2u8 << (2 * j);
            for l in 0..32 {
                let h1 = if x.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[l] & u2 != 0 { 16 } else { 0 };
                ys[l] = d1 * ((ql[l] & 0x0f) as i32 + h1) as f32 - m1;
                ys[l + 32] = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
            }
        }
    }
}

pub fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[BlockQ5K] = as_blocks(w);
    let ys: &[BlockQ8K] = as_blocks(a);
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (x, y) in xs.iter().zip(ys).take(n / QK_K) {
        let mut q = [0i8; QK_K];
        for (p, (qs, out)) in
            x.qs.chunks_exact(32)
                .zip(q.chunks_exact_mut(64))
                .enumerate()
        {
            let m1 = 1u8 << (2 * p);
            let m2 = 2u8 << (2 * p);
            for l in 0..32 {
                let h1 = if x.qh[l] & m1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[l] & m2 != 0 { 16 } else { 0 };
                out[l] = (qs[l] & 0x0f) as i8 + h1;
                out[l + 32] = (qs[l] >> 4) as i8 + h2;
            }
        }
        let aux32 = scaled_lanes(&y.qs, &q, 32, |g| get_scale_min_k4(g, &x.scales).0 as i32);
        let sumi = k4_min_sum(&x.scales, &y.bsums);
        k4_accumulate(&mut sums, &mut sumf, &aux32, x.d, x.dmin, &y.d, sumi);
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

// ---- q6_K -------------------------------------------------------------------

pub fn quantize_row_q6_k(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ6K] = as_blocks_mut(dst);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let mut l_all = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut l_all[16 * ib..16 * ib + 16],
            );
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }

        if max_abs_scale < GROUP_MAX_EPS {
            y.ql = [0; QK_K / 2];
            y.qh = [0; QK_K / 4];
            y.scales = [0; QK_K / 16];
            y.d = Half::ZERO;
            continue;
        }

        let iscale = -128.0 / max_scale;
        y.d = Half::from_f32(1.0 / iscale);
        for (s, &sc) in y.scales.iter_mut().zip(&scales) {
            *s = nearest_int(iscale * sc).min(127) as i8;
        }

        let d_all = y.d.to_f32();
        for j in 0..QK_K / 16 {
            let d = d_all * y.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l_all[16 * j + ii] = (l + 32) as i8;
            }
        }

        let chunks = y.ql.chunks_exact_mut(64).zip(y.qh.chunks_exact_mut(32));
        for ((ql, qh), ls) in chunks.zip(l_all.chunks_exact(128)) {
            for l in 0..32 {
                let [l1, l2, l3, l4] = [ls[l], ls[l + 32], ls[l + 64], ls[l + 96]].map(|v| v as u8);
                ql[l] = (l1 & 0x0f) | ((l3 & 0x0f) << 4);
                ql[l + 32] = (l2 & 0x0f) | ((l4 & 0x0f) << 4);
                qh[l] = (l1 >> 4) | ((l2 >> 4) << 2) | ((l3 >> 4) << 4) | ((l4 >> 4) << 6);
            }
        }
    }
}

/// The 256 signed 6-bit quants (`-32..=31`) of a `q6_K` block, in element order.
#[inline]
fn q6k_quants(x: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for ((ql, qh), out) in
        x.ql.chunks_exact(64)
            .zip(x.qh.chunks_exact(32))
            .zip(a.chunks_exact_mut(128))
    {
        for l in 0..32 {
            out[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
            out[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            out[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            out[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

pub fn dequantize_row_q6_k(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ6K] = as_blocks(src);
    for (x, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = x.d.to_f32();
        let q = q6k_quants(x);
        for ((ys, qs), &sc) in y
            .chunks_exact_mut(16)
            .zip(q.chunks_exact(16))
            .zip(&x.scales)
        {
            let dl = d * sc as f32;
            for (o, &v) in ys.iter_mut().zip(qs) {
                *o = dl * v as f32;
            }
        }
    }
}

pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let xs: &[BlockQ6K] = as_blocks(w);
    let ys: &[BlockQ8K] = as_blocks(a);
    let mut sums = [0.0f32; 8];
    for (x, y) in xs.iter().zip(ys).take(n / QK_K) {
        let q = q6k_quants(x);
        let aux32 = scaled_lanes(&y.qs, &q, 16, |g| x.scales[g] as i32);
        let d = x.d.to_f32() * y.d.get();
        for (s, &v) in sums.iter_mut().zip(&aux32) {
            *s += d * v as f32;
        }
    }
    sums.iter().fold(0.0f32, |acc, &s| acc + s)
}

// ---- q8_K (activations) -------------------------------------------------------

pub fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [BlockQ8K] = as_blocks_mut(dst);
    for (y, x) in blocks.iter_mut().zip(src.chunks_exact(QK_K)) {
        let (max, amax) = signed_absmax(x);
        if amax == 0.0 {
            // llama.cpp leaves bsums as they were here; zeros are what they sum to.
            y.d = LeF32::new(0.0);
            y.qs = [0; QK_K];
            y.bsums = [LeI16::new(0); QK_K / 16];
            continue;
        }
        // -127 rather than -128 keeps every quant's negation representable.
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (b, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            let sum: i32 = qs.iter().map(|&q| q as i32).sum();
            *b = LeI16::new(sum as i16);
        }
        y.d = LeF32::new(1.0 / iscale);
    }
}

pub fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) {
    let blocks: &[BlockQ8K] = as_blocks(src);
    for (x, y) in blocks.iter().zip(dst.chunks_exact_mut(QK_K)) {
        let d = x.d.get();
        for (o, &q) in y.iter_mut().zip(&x.qs) {
            *o = d * q as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4999), -2);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
    }

    #[test]
    fn nearest_int_does_not_panic_out_of_range() {
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30] {
            let _ = nearest_int(v);
        }
    }

    #[test]
    fn k4_scale_packing_roundtrips() {
        // Every 6-bit scale/min survives pack -> get_scale_min_k4.
        let scales: [f32; 8] = [0.0, 1.0, 17.0, 31.0, 32.0, 45.0, 62.0, 63.0];
        let mins: [f32; 8] = [63.0, 5.0, 0.0, 48.0, 16.0, 33.0, 1.0, 60.0];
        let packed = pack_scales_mins_k4(&scales, &mins, 63.0, 63.0);
        for j in 0..8 {
            assert_eq!(
                get_scale_min_k4(j, &packed),
                (scales[j] as u8, mins[j] as u8),
                "sub-block {j}"
            );
        }
    }
}
