//! Float operations of the transformer block: normalisation, rotary position
//! embedding, softmax and the gated activation.
//!
//! Reductions accumulate in `f64` where llama.cpp's CPU backend accumulates in
//! `ggml_float` (double), so our activations track the reference closely
//! enough for greedy decoding to agree token for token.

use crate::convert::{f16_to_f32, f32_to_f16};

/// RMS normalisation followed by an element-wise weight:
/// `out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]`.
///
/// One version for every CPU: llama.cpp sums the squares as a single chain
/// of `f64` additions in element order, and a vector sum in any other order
/// changes the bits the forward passes are compared on. The chain is about
/// 1% of a forward pass (SmolLM2 Q4_1, one thread: 1.4% of prompt
/// processing, 0.7% of generation).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), out.len());
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &xv), &wv) in out.iter_mut().zip(x).zip(w) {
        *o = (xv * scale) * wv;
    }
}

/// Numerically stable softmax in place; returns nothing, leaves a
/// probability distribution. `-inf` entries (masked) become exactly 0.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Everything masked: there is no distribution to speak of.
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        let e = (*v - max).exp();
        *v = e;
        sum += e as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `x[i] = exp(x[i] - max)` with [`expf_ggml`], returning the sum, as
/// ggml's `ggml_vec_soft_max_f32` does on x86-64 without AVX: lanes of four
/// summed pairwise, each group added to an `f64` total, the leftover
/// elements with `expf`.
pub fn exp_sum_ggml(x: &mut [f32], max: f32) -> f64 {
    let n4 = x.len() - x.len() % 4;
    let mut sum = 0f64;
    for g in x[..n4].chunks_exact_mut(4) {
        for v in g.iter_mut() {
            *v = expf_ggml(*v - max);
        }
        sum += ((g[0] + g[1]) + (g[2] + g[3])) as f64;
    }
    for v in x[n4..].iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

/// `log(softmax(x))[idx]`, computed without materialising the distribution.
pub fn log_softmax_at(x: &[f32], idx: usize) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (x[idx] - max) as f64 - sum.ln()
}

/// `exp(x)` as ggml's vector `ggml_v_expf` computes it on x86 without FMA
/// (the SSE2 form every x86-64 CPU runs): a range reduction to `2^n * e^b`
/// and a degree-5 polynomial, within 1.5 ulp of `expf`. llama.cpp uses it
/// for SiLU and softmax, and agreeing with it to the bit keeps whole
/// forward passes comparable.
pub fn expf_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x * f32::from_bits(0x3fb8_aa3b) + r; // log2(e)
    let n = z - r;
    let b = x - n * f32::from_bits(0x3f31_7200); // ln2 hi
    let b = b - n * f32::from_bits(0x35bf_be8e); // ln2 lo
    let e = z.to_bits().wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let p0 = f32::from_bits(0x3c07_2010) * b + f32::from_bits(0x3d2b_9f17);
    let p1 = f32::from_bits(0x3e2a_af33) * b + f32::from_bits(0x3efffedb);
    let j = (p0 * u + p1) * u + f32::from_bits(0x3f7f_fff6) * b;
    let an = n.abs();
    // A NaN input takes this branch too, as the vector compare does.
    if an.partial_cmp(&126.0) != Some(std::cmp::Ordering::Greater) {
        return j * k + k;
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if an > 192.0 {
        s1 * s1
    } else {
        (s2 * j + s2) * s1
    }
}

/// SiLU, `x / (1 + e^-x)`, with [`expf_ggml`] as ggml's vector form.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + expf_ggml(0.0 - x))
}

/// SwiGLU: `gate[i] = silu(gate[i]) * up[i]`, written into `gate`.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    let n4 = gate.len() - gate.len() % 4;
    for (g, &u) in gate[..n4].iter_mut().zip(&up[..n4]) {
        *g = silu(*g) * u;
    }
    // ggml's leftovers use the scalar `expf`.
    for (g, &u) in gate[n4..].iter_mut().zip(&up[n4..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Layer normalisation of one row in place: `x = (x - mean) / sqrt(var +
/// eps) * w + b`, with the biased variance as PyTorch's `LayerNorm`. Mean and
/// variance accumulate in `f64` (two passes), so the result is within a few
/// ulps of any careful f32 implementation whatever its summation order.
pub fn layer_norm_inplace(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    debug_assert_eq!(x.len(), w.len());
    debug_assert_eq!(x.len(), b.len());
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    for ((v, &wv), &bv) in x.iter_mut().zip(w).zip(b) {
        *v = (((*v as f64 - mean) * inv) as f32) * wv + bv;
    }
}

/// GELU with the error function, `x / 2 * (1 + erf(x / sqrt 2))`
/// (PyTorch's default `gelu`, which CLIP-style vision towers use), with
/// [`erf_fast`]: within 1.5e-7 of the exact value of `erf`, below the
/// rounding of the f32 result for the inputs a tower sees, at one `exp`.
#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf_fast(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// The error function by Abramowitz & Stegun 7.1.26 (absolute error below
/// 1.5e-7): a polynomial in `1 / (1 + p|x|)` times `exp(-x^2)`.
#[inline]
pub fn erf_fast(x: f64) -> f64 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let r = 1.0 - poly * (-a * a).exp();
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// [`gelu_erf`] of every element.
pub fn gelu_erf_inplace(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = gelu_erf(*v));
}

/// `x[t][i] += b[i]` for every row `t` of `b.len()` floats.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        add_inplace(row, b);
    }
}

/// `acc[i] += g * x[i]`: a gated residual (the gate already passed through
/// its `tanh`).
pub fn add_scaled(acc: &mut [f32], g: f32, x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += g * v;
    }
}

/// Each `n`-long chunk of `x` times the orthonormal Walsh-Hadamard matrix
/// (`H[i][j] = (-1)^popcount(i & j) / sqrt(n)`, its own inverse), as
/// ggml's `fwht`: the chunk scaled by `1 / sqrt(n)` first, then butterflies
/// `(u + v, u - v)` over spans 1, 2, 4, ... `n` is a power of two; a tail
/// shorter than `n` is left as it is.
pub fn hadamard_rows(x: &mut [f32], n: usize) {
    debug_assert!(n.is_power_of_two());
    let scale = 1.0f32 / (n as f32).sqrt();
    for row in x.chunks_exact_mut(n) {
        row.iter_mut().for_each(|v| *v *= scale);
        let mut len = 1;
        while len < n {
            for pair in row.chunks_exact_mut(2 * len) {
                let (a, b) = pair.split_at_mut(len);
                for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                    let (x, y) = (*u, *v);
                    *u = x + y;
                    *v = x - y;
                }
            }
            len <<= 1;
        }
    }
}

/// `acc[i] += x[i]`.
pub fn add_inplace(acc: &mut [f32], x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// Transposes a `rows x cols` block of `src` (rows `ld` floats apart) into
/// `dst`, `cols` rows of `rows` floats: `dst[c * rows + r] = src[r * ld + c]`.
/// Only whole rows and columns present in both slices are moved.
pub fn transpose(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]) {
    let (rows, cols) = transpose_extent(src.len(), ld, rows, cols, dst.len());
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * ld + c];
        }
    }
}

/// The part of a [`transpose`] request that both slices hold.
pub(crate) fn transpose_extent(
    src_len: usize,
    ld: usize,
    rows: usize,
    cols: usize,
    dst_len: usize,
) -> (usize, usize) {
    let cols = cols.min(ld);
    if rows == 0 || cols == 0 {
        return (0, 0);
    }
    // Row r reads src[r * ld .. r * ld + cols].
    let rows = rows.min((src_len + ld - cols) / ld);
    if rows == 0 {
        return (0, 0);
    }
    let cols = cols.min(dst_len / rows);
    (rows, cols)
}

/// Rotary embedding parameters shared by every head of a model.
#[derive(Debug, Clone)]
pub struct RopeParams {
    /// Number of leading dimensions of each head that rotate (even).
    pub n_dims: usize,
    pub freq_base: f32,
    /// Linear position interpolation (1.0 = none).
    pub freq_scale: f32,
    /// Per-frequency divisors (Llama 3's `rope_freqs.weight`), `n_dims / 2` long.
    pub freq_factors: Option<Vec<f32>>,
}

impl RopeParams {
    /// Fills `cache` (`n_dims` floats) with interleaved `cos, sin` for each
    /// rotating pair at position `pos`.
    ///
    /// The angle is advanced by repeated multiplication in `f32`, the way
    /// ggml does, rather than by `powf` per pair: the two differ in the last
    /// bits, and matching the reference keeps long contexts comparable.
    pub fn cache(&self, pos: usize, cache: &mut [f32]) {
        debug_assert_eq!(cache.len(), self.n_dims);
        let theta_scale = self.freq_base.powf(-2.0 / self.n_dims as f32);
        let mut theta = pos as f32;
        for (i, cs) in cache.chunks_exact_mut(2).enumerate() {
            let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            let t = self.freq_scale * (theta / ff);
            cs[0] = t.cos();
            cs[1] = t.sin();
            theta *= theta_scale;
        }
    }
}

/// Rotates adjacent pairs `(x[2i], x[2i+1])` of one head (llama.cpp's
/// "normal" rope mode, used by the `llama` architecture).
pub fn rope_normal(x: &mut [f32], cache: &[f32]) {
    for (pair, cs) in x.chunks_exact_mut(2).zip(cache.chunks_exact(2)) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * cs[0] - x1 * cs[1];
        pair[1] = x0 * cs[1] + x1 * cs[0];
    }
}

/// Rotates pairs `(x[i], x[i + n_dims/2])` of one head (the "neox" mode).
pub fn rope_neox(x: &mut [f32], cache: &[f32]) {
    let half = cache.len() / 2;
    for (i, cs) in cache.chunks_exact(2).enumerate() {
        let (x0, x1) = (x[i], x[i + half]);
        x[i] = x0 * cs[0] - x1 * cs[1];
        x[i + half] = x0 * cs[1] + x1 * cs[0];
    }
}

/// Llama 3's frequency factors (`rope_freqs.weight`), computed the way
/// Meta's reference and Hugging Face's `_compute_llama3_parameters` do, for
/// files that carry the scaling parameters but not the tensor.
pub fn llama3_rope_freq_factors(
    n_dims: usize,
    freq_base: f32,
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_context: f32,
) -> Vec<f32> {
    let low_freq_wavelen = original_context / low_freq_factor;
    let high_freq_wavelen = original_context / high_freq_factor;
    (0..n_dims / 2)
        .map(|i| {
            let freq = 1.0 / (freq_base as f64).powf(2.0 * i as f64 / n_dims as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_freq_wavelen as f64 {
                1.0
            } else if wavelen > low_freq_wavelen as f64 {
                factor
            } else {
                let smooth = (original_context as f64 / wavelen - low_freq_factor as f64)
                    / (high_freq_factor - low_freq_factor) as f64;
                (1.0 / ((1.0 - smooth) / factor as f64 + smooth)) as f32
            }
        })
        .collect()
}

/// Dot product of two F16 rows as ggml's portable `ggml_vec_dot_f16` computes
/// it: each product in `f32`, summed in order in `f64`. Attention scores
/// computed this way agree with llama.cpp's portable build to the bit, which
/// is what lets greedy decoding on numerically fragile models agree token
/// for token.
pub fn dot_f16_ggml(x: &[u16], y: &[u16]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0f64;
    for (&a, &b) in x.iter().zip(y) {
        sumf += (f16_to_f32(a) * f16_to_f32(b)) as f64;
    }
    sumf as f32
}

/// `y = y * s` on an F16 row, rounding back to F16 (`ggml_vec_scale_f16`).
pub fn scale_f16(y: &mut [u16], s: f32) {
    for v in y.iter_mut() {
        *v = f32_to_f16(f16_to_f32(*v) * s);
    }
}

/// `y = y + x * s` on F16 rows with an F16 accumulator, as ggml's portable
/// `ggml_vec_mad_f16`: multiply and add in `f32`, round the sum to F16.
pub fn mad_f16(y: &mut [u16], x: &[u16], s: f32) {
    debug_assert_eq!(x.len(), y.len());
    for (a, &b) in y.iter_mut().zip(x) {
        *a = f32_to_f16(f16_to_f32(*a) + f16_to_f32(b) * s);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hadamard_rows_is_the_sylvester_matrix_and_its_own_inverse() {
        for n in [64usize, 128] {
            let x: Vec<f32> = (0..2 * n + 5)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let mut y = x.clone();
            hadamard_rows(&mut y, n);
            for (r, row) in x.chunks_exact(n).enumerate() {
                for i in 0..n {
                    let want: f64 = (0..n)
                        .map(|j| {
                            let sign = if (i & j).count_ones() % 2 == 0 {
                                1.0
                            } else {
                                -1.0
                            };
                            sign * row[j] as f64
                        })
                        .sum::<f64>()
                        / (n as f64).sqrt();
                    assert!(
                        (y[r * n + i] as f64 - want).abs() < 1e-4,
                        "n {n} row {r} {i}"
                    );
                }
            }
            // The tail past the last whole chunk is left alone.
            assert_eq!(y[2 * n..], x[2 * n..]);
            hadamard_rows(&mut y, n);
            for (a, b) in y.iter().zip(&x) {
                assert!((a - b).abs() < 1e-4);
            }
        }
    }

    use super::*;

    /// The error function to about 1e-16 relative error (the reference
    /// [`erf_fast`] is tested against): its Maclaurin series
    /// for small arguments, the continued fraction of `erfc` beyond. `f64`
    /// carries far more precision than the `f32` results need.
    fn erf(x: f64) -> f64 {
        if x.is_nan() {
            return x;
        }
        let a = x.abs();
        let r = if a < 2.5 {
            // erf(a) = 2/sqrt(pi) * sum (-1)^n a^(2n+1) / (n! (2n+1))
            let a2 = a * a;
            // At a = 2.5 the terms fall below 1e-17 of the sum by n = 60.
            let (mut term, mut sum) = (a, a);
            for n in 1..80 {
                let n = n as f64;
                term *= -a2 / n;
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() <= 1e-17 * sum.abs() {
                    break;
                }
            }
            sum * std::f64::consts::FRAC_2_SQRT_PI
        } else if a < 27.0 {
            // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
        } else {
            1.0
        };
        if x < 0.0 {
            -r
        } else {
            r
        }
    }

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.37).collect();
        let w = vec![1.0; 64];
        let mut out = vec![0.0; 64];
        rms_norm(&x, &w, 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 64.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5, "rms {rms}");
    }

    #[test]
    fn softmax_matches_hand_computed() {
        let mut x = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        softmax(&mut x);
        let e: [f64; 3] = [(-2.0f64).exp(), (-1.0f64).exp(), 1.0];
        let s: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((x[i] as f64 - e[i] / s).abs() < 1e-7);
        }
        assert_eq!(x[3], 0.0);
        let lp = log_softmax_at(&[1.0, 2.0, 3.0], 2);
        assert!((lp - (1.0 / s).ln()).abs() < 1e-6);
    }

    #[test]
    fn rope_rotation_preserves_norm_and_matches_angle() {
        let p = RopeParams {
            n_dims: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
            freq_factors: None,
        };
        let mut cache = vec![0.0; 8];
        p.cache(3, &mut cache);
        // Pair 1 rotates by 3 * 10000^(-2/8) radians.
        let angle = 3.0f64 * 10000f64.powf(-0.25);
        assert!((cache[2] as f64 - angle.cos()).abs() < 1e-6);
        assert!((cache[3] as f64 - angle.sin()).abs() < 1e-6);
        let mut x = [1.0f32, 2.0, -0.5, 0.25, 3.0, -1.0, 0.0, 1.0];
        let norm0: f32 = x.iter().map(|v| v * v).sum();
        rope_normal(&mut x, &cache);
        let norm1: f32 = x.iter().map(|v| v * v).sum();
        assert!((norm0 - norm1).abs() < 1e-4);
    }

    #[test]
    fn llama3_freq_factors_have_the_three_bands() {
        // Llama 3.2 1B: head_dim 64, theta 500000, factor 32, low 1, high 4, original 8192.
        // High frequencies stay, the lowest are divided by the full factor, the band
        // between is smoothed. Exact values are checked against a converted file's
        // `rope_freqs.weight` in the model tests.
        let f = llama3_rope_freq_factors(64, 500000.0, 32.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        let mid: Vec<_> = f.iter().filter(|v| **v > 1.0 && **v < 32.0).collect();
        assert!(!mid.is_empty());
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn f16_helpers_match_plain_arithmetic() {
        let xs: Vec<u16> = (0..70)
            .map(|i| f32_to_f16((i as f32 - 35.0) * 0.125))
            .collect();
        let ys: Vec<u16> = (0..70)
            .map(|i| f32_to_f16(1.0 - i as f32 * 0.03125))
            .collect();
        let exact: f64 = xs
            .iter()
            .zip(&ys)
            .map(|(&a, &b)| f16_to_f32(a) as f64 * f16_to_f32(b) as f64)
            .sum();
        assert!((dot_f16_ggml(&xs, &ys) as f64 - exact).abs() < 1e-3);
        // Values exactly representable in F16 stay exact through mad and scale.
        let mut acc = vec![f32_to_f16(1.0); 4];
        mad_f16(&mut acc, &[f32_to_f16(2.0); 4], 0.5);
        assert!(acc.iter().all(|&v| f16_to_f32(v) == 2.0));
        scale_f16(&mut acc, 0.25);
        assert!(acc.iter().all(|&v| f16_to_f32(v) == 0.5));
        // An F16 accumulator loses what F16 cannot hold: 2048 + 1 rounds to 2048.
        let mut big = vec![f32_to_f16(2048.0)];
        mad_f16(&mut big, &[f32_to_f16(1.0)], 1.0);
        assert_eq!(f16_to_f32(big[0]), 2048.0);
    }

    #[test]
    fn expf_ggml_is_within_two_ulp_of_expf() {
        let mut x = -103.0f32;
        while x < 88.0 {
            let (a, b) = (expf_ggml(x), x.exp());
            let ulp = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(ulp <= 2, "x = {x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(expf_ggml(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf_ggml(0.0), 1.0);
        assert!(expf_ggml(100.0).is_infinite());
    }

    #[test]
    fn exp_sum_matches_plain_sum() {
        let mut x: Vec<f32> = (0..67).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let want: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let got = exp_sum_ggml(&mut x, max);
        assert!((got - want).abs() / want < 1e-6);
    }

    #[test]
    fn erf_matches_published_values() {
        // Abramowitz & Stegun table 7.1 and known values to 1e-15.
        let table = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.5, 0.999_593_047_982_555),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
        ];
        for (x, want) in table {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-14);
        }
        assert_eq!(erf(40.0), 1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn fast_erf_is_within_its_bound_of_the_exact_one() {
        let mut worst = 0f64;
        for i in -8000..=8000 {
            let x = i as f64 / 1000.0;
            worst = worst.max((erf_fast(x) - erf(x)).abs());
        }
        assert!(worst < 1.5e-7, "largest error {worst:e}");
        assert!(erf_fast(f64::NAN).is_nan());
    }

    #[test]
    fn gelu_known_points() {
        assert_eq!(gelu_erf(0.0), 0.0);
        // gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.841344746...
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-7);
        assert!((gelu_erf(-1.0) + 0.158_655_3).abs() < 1e-7);
        assert!((gelu_erf(-10.0)).abs() < 1e-20);
    }

    #[test]
    fn layer_norm_zero_mean_unit_variance() {
        let mut x: Vec<f32> = (0..37)
            .map(|i| (i as f32 * 0.7).sin() * 3.0 + 1.5)
            .collect();
        let w = vec![1.0; 37];
        let b = vec![0.0; 37];
        layer_norm_inplace(&mut x, &w, &b, 0.0);
        let mean: f64 = x.iter().map(|&v| v as f64).sum::<f64>() / 37.0;
        let var: f64 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 37.0;
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-5, "var {var}");
    }
}
