//! Feed-forward blocks: SwiGLU (the Llama decoders) and a two-layer GELU
//! MLP with biases (the vision tower).

use super::{Affine, Ctx, Linear};
use crate::ModelError;
use edgellama_gguf::names::TensorKind as T;
use edgellama_kernels::ops;

pub struct SwiGlu {
    pub gate: Linear, // blk.{i}.ffn_gate.weight [n_embd, n_ff]
    pub up: Linear,   // blk.{i}.ffn_up.weight   [n_embd, n_ff]
    pub down: Linear, // blk.{i}.ffn_down.weight [n_ff, n_embd]
}

/// Buffers of a SwiGLU block for `n` rows.
pub struct FfnScratch {
    gate: Vec<f32>, // [n][n_ff]
    up: Vec<f32>,   // [n][n_ff]
}

impl FfnScratch {
    pub fn new(n: usize, n_ff: usize) -> FfnScratch {
        FfnScratch {
            gate: vec![0.0; n * n_ff],
            up: vec![0.0; n * n_ff],
        }
    }
}

impl SwiGlu {
    pub fn load(
        ctx: Ctx<'_>,
        bid: usize,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<SwiGlu, ModelError> {
        let f = ctx.file;
        Ok(SwiGlu {
            gate: Linear::load(f, &T::FfnGate.weight(bid), n_embd, n_ff)?,
            up: Linear::load(f, &T::FfnUp.weight(bid), n_embd, n_ff)?,
            down: Linear::load(f, &T::FfnDown.weight(bid), n_ff, n_embd)?,
        })
    }

    pub fn n_ff(&self) -> usize {
        self.gate.n_out
    }

    /// `out = down(silu(gate(xn)) * up(xn))` for `n` rows.
    pub fn forward(
        &self,
        ctx: Ctx<'_>,
        xn: &[f32],
        n: usize,
        s: &mut FfnScratch,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let (f, be) = (ctx.file, ctx.backend);
        let n_ff = self.n_ff();
        let (gate, up) = (&mut s.gate[..n * n_ff], &mut s.up[..n * n_ff]);
        be.matmul_group(
            &[self.gate.matrix(f), self.up.matrix(f)],
            xn,
            n,
            &mut [&mut *gate, &mut *up],
        )?;
        be.swiglu(gate, up, n_ff)?;
        self.down.forward(f, be, gate, n, out)
    }
}

/// `fc2(gelu(fc1 x + b1)) + b2`.
pub struct GeluMlp {
    pub fc1: Affine, // [n_embd, n_ff] + [n_ff]
    pub fc2: Affine, // [n_ff, n_embd] + [n_embd]
}

impl GeluMlp {
    /// `out = fc2(gelu(fc1(x)))` for `n` rows, `hidden` holding `n * n_ff`.
    pub fn forward(
        &self,
        ctx: Ctx<'_>,
        x: &[f32],
        n: usize,
        hidden: &mut [f32],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        self.fc1.forward(ctx, x, n, hidden)?;
        ops::gelu_erf_inplace(hidden);
        self.fc2.forward(ctx, hidden, n, out)
    }
}
