//! The decoder's last steps, shared by the architectures: the final norm
//! and output projection, and the micro-batch loop that drives a prompt
//! through the layer stack.

use super::{Ctx, Linear, RmsNorm};
use crate::{Logits, ModelError};

/// Tokens processed per pass of the layer stack; longer inputs are split so
/// scratch memory stays bounded.
pub const UBATCH: usize = 512;

pub struct OutputHead {
    pub norm: RmsNorm,  // output_norm.weight [n_embd]
    pub output: Linear, // output.weight      [n_embd, n_vocab] (or the tied embedding)
}

impl OutputHead {
    /// Appends the logits of the hidden-state rows `rows` to `logits`.
    pub fn forward(
        &self,
        ctx: Ctx<'_>,
        rows: &[f32],
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let n_embd = self.output.n_in;
        let m = rows.len() / n_embd;
        let mut xn = vec![0f32; rows.len()];
        self.norm.forward(ctx.backend, rows, &mut xn)?;
        let start = logits.len();
        logits.resize(start + m * self.output.n_out, 0.0);
        self.output
            .forward(ctx.file, ctx.backend, &xn, m, &mut logits[start..])
    }
}

/// Runs `tokens` through `layers` in micro-batches of [`UBATCH`] (each call
/// gets a chunk and its `[n][n_embd]` hidden states to fill) and returns the
/// logits `which` asks for.
pub fn forward_ubatches(
    ctx: Ctx<'_>,
    head: &OutputHead,
    tokens: &[u32],
    which: Logits,
    mut layers: impl FnMut(&[u32], &mut [f32]) -> Result<(), ModelError>,
) -> Result<Vec<f32>, ModelError> {
    let d = head.output.n_in;
    let first_out = which.first_row(tokens.len());
    let mut logits = Vec::new();
    for (ci, chunk) in tokens.chunks(UBATCH).enumerate() {
        let n = chunk.len();
        let mut x = vec![0f32; n * d];
        layers(chunk, &mut x)?;
        // Rows of this micro-batch at or after `first_out` produce logits.
        let skip = first_out.saturating_sub(ci * UBATCH).min(n);
        if skip < n {
            head.forward(ctx, &x[skip * d..], &mut logits)?;
        }
    }
    Ok(logits)
}
