//! The Llama decoder block, pre-norm attention then pre-norm SwiGLU, each
//! added back to the residual stream: what Llama stacks, and what Llama 3.2
//! Vision keeps between its cross-attention layers.

use super::{AttnScratch, Ctx, FfnScratch, HeadDims, RmsNorm, Segment, SelfAttention, SwiGlu};
use crate::ModelError;
use edgellama_gguf::names::TensorKind as T;
use edgellama_kernels::ops::{self, RopeParams};

pub struct DecoderBlock {
    pub attn_norm: RmsNorm,  // blk.{i}.attn_norm.weight  [n_embd]
    pub attn: SelfAttention, // blk.{i}.attn_{q,k,v,output}.weight
    pub ffn_norm: RmsNorm,   // blk.{i}.ffn_norm.weight    [n_embd]
    pub ffn: SwiGlu,         // blk.{i}.ffn_{gate,up,down}.weight
}

/// The sizes a decoder block is loaded with.
#[derive(Debug, Clone, Copy)]
pub struct BlockDims {
    pub n_embd: usize,
    pub heads: HeadDims,
    pub n_rot: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
}

/// Buffers of one micro-batch of `n` rows, shared by every block.
pub struct BlockScratch {
    pub xn: Vec<f32>, // [n][n_embd]: a normalised copy of the residual stream
    pub o: Vec<f32>,  // [n][n_embd]: a branch's output
    pub attn: AttnScratch,
    pub ffn: FfnScratch,
}

impl BlockScratch {
    pub fn new(n: usize, dims: BlockDims) -> BlockScratch {
        BlockScratch {
            xn: vec![0.0; n * dims.n_embd],
            o: vec![0.0; n * dims.n_embd],
            attn: AttnScratch::new(n, dims.heads, dims.n_rot),
            ffn: FfnScratch::new(n, dims.n_ff),
        }
    }
}

impl DecoderBlock {
    pub fn load(ctx: Ctx<'_>, bid: usize, dims: BlockDims) -> Result<DecoderBlock, ModelError> {
        let (f, d) = (ctx.file, dims.n_embd);
        Ok(DecoderBlock {
            attn_norm: RmsNorm::load(f, &T::AttnNorm.weight(bid), d, dims.rms_eps)?,
            attn: SelfAttention::load(ctx, bid, d, dims.heads, dims.n_rot)?,
            ffn_norm: RmsNorm::load(f, &T::FfnNorm.weight(bid), d, dims.rms_eps)?,
            ffn: SwiGlu::load(ctx, bid, d, dims.n_ff)?,
        })
    }

    /// The block over the residual stream `x` (`[n][n_embd]`, the
    /// concatenation of `segs`; row `t` at `positions[t]` of its sequence),
    /// with its keys and values at layer `kv_layer` of each cache.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ctx: Ctx<'_>,
        rope: &RopeParams,
        kv_layer: usize,
        segs: &mut [Segment<'_>],
        positions: &[usize],
        x: &mut [f32],
        s: &mut BlockScratch,
    ) -> Result<(), ModelError> {
        let n = positions.len();
        self.attn_norm.forward(ctx.backend, x, &mut s.xn)?;
        self.attn.forward(
            ctx,
            rope,
            kv_layer,
            segs,
            positions,
            &s.xn,
            &mut s.attn,
            &mut s.o,
        )?;
        ops::add_inplace(x, &s.o);
        self.ffn_norm.forward(ctx.backend, x, &mut s.xn)?;
        self.ffn.forward(ctx, &s.xn, n, &mut s.ffn, &mut s.o)?;
        ops::add_inplace(x, &s.o);
        Ok(())
    }
}
