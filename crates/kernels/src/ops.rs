//! Float operations of the transformer block: normalisation, rotary position
//! embedding, softmax and the gated activation.
//!
//! Reductions accumulate in `f64` where llama.cpp's CPU backend accumulates in
//! `ggml_float` (double), so our activations track the reference closely
//! enough for greedy decoding to agree token for token.

/// RMS normalisation followed by an element-wise weight:
/// `out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]`.
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

/// `log(softmax(x))[idx]`, computed without materialising the distribution.
pub fn log_softmax_at(x: &[f32], idx: usize) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (x[idx] - max) as f64 - sum.ln()
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// SwiGLU: `gate[i] = silu(gate[i]) * up[i]`, written into `gate`.
pub fn swiglu_inplace(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `acc[i] += x[i]`.
pub fn add_inplace(acc: &mut [f32], x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
