//! Normalisations: RMSNorm (the Llama decoders) and LayerNorm with bias
//! (the vision tower).

use super::linear::load_vector;
use crate::ModelError;
use edgellama_backend::Backend;
use edgellama_gguf::GgufFile;
use edgellama_kernels::ops;

/// RMS normalisation with a learned scale, dequantized to floats at load.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub name: String,
    pub w: Vec<f32>, // {name} [n]
    pub eps: f32,
}

impl RmsNorm {
    pub fn load(file: &GgufFile, name: &str, n: usize, eps: f32) -> Result<RmsNorm, ModelError> {
        Ok(RmsNorm {
            name: name.to_string(),
            w: load_vector(file, name, n)?,
            eps,
        })
    }

    /// RMS-normalises each `n`-float row of `x` into `out`.
    pub fn forward(
        &self,
        backend: &dyn Backend,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        backend.rms_norm(x, &self.w, self.eps, out)?;
        Ok(())
    }
}

/// Layer normalisation with scale and bias, row by row.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub w: Vec<f32>, // {stem}.weight [n]
    pub b: Vec<f32>, // {stem}.bias   [n]
    pub eps: f32,
}

impl LayerNorm {
    /// Loads `{stem}.weight` and `{stem}.bias`.
    pub fn load(file: &GgufFile, stem: &str, n: usize, eps: f32) -> Result<LayerNorm, ModelError> {
        Ok(LayerNorm {
            w: load_vector(file, &format!("{stem}.weight"), n)?,
            b: load_vector(file, &format!("{stem}.bias"), n)?,
            eps,
        })
    }

    /// Normalises each row of `x` in place.
    pub fn forward_inplace(&self, x: &mut [f32]) {
        let n = self.w.len();
        for row in x.chunks_exact_mut(n) {
            ops::layer_norm_inplace(row, &self.w, &self.b, self.eps);
        }
    }

    /// Normalises each row of `x` into `out`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        out.copy_from_slice(x);
        self.forward_inplace(out);
    }
}
