//! Causal self-attention with rotary embeddings and grouped-query KV heads,
//! as llama.cpp's `build_attn` for Llama: project, rotate, store in the
//! cache, attend, project out.

use super::{Ctx, Linear};
use crate::ModelError;
use edgellama_backend::{AttnJob, AttnShape, KvSeq};
use edgellama_gguf::names::TensorKind as T;
use edgellama_kernels::ops::{self, RopeParams};

/// Head layout of an attention block.
#[derive(Debug, Clone, Copy)]
pub struct HeadDims {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl HeadDims {
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_width(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// A run of consecutive tokens of one sequence inside a batch.
pub struct Segment<'a> {
    pub kv: &'a mut KvSeq,
    pub pos0: usize,
    pub n: usize,
}

/// Buffers one micro-batch of `n` tokens needs, reused by every layer.
pub struct AttnScratch {
    q: Vec<f32>,    // [n][n_head * head_dim]
    k: Vec<f32>,    // [n][n_head_kv * head_dim]
    v: Vec<f32>,    // [n][n_head_kv * head_dim]
    attn: Vec<f32>, // [n][n_head * head_dim]
    rope_cache: Vec<f32>,
}

impl AttnScratch {
    pub fn new(n: usize, dims: HeadDims, n_rot: usize) -> AttnScratch {
        AttnScratch {
            q: vec![0.0; n * dims.q_width()],
            k: vec![0.0; n * dims.kv_width()],
            v: vec![0.0; n * dims.kv_width()],
            attn: vec![0.0; n * dims.q_width()],
            rope_cache: vec![0.0; n_rot],
        }
    }
}

pub struct SelfAttention {
    pub wq: Linear, // blk.{i}.attn_q.weight      [n_embd, n_head * head_dim]
    pub wk: Linear, // blk.{i}.attn_k.weight      [n_embd, n_head_kv * head_dim]
    pub wv: Linear, // blk.{i}.attn_v.weight      [n_embd, n_head_kv * head_dim]
    pub wo: Linear, // blk.{i}.attn_output.weight [n_head * head_dim, n_embd]
    pub dims: HeadDims,
    /// Leading dimensions of each head that rotate.
    pub n_rot: usize,
}

impl SelfAttention {
    pub fn load(
        ctx: Ctx<'_>,
        bid: usize,
        n_embd: usize,
        dims: HeadDims,
        n_rot: usize,
    ) -> Result<SelfAttention, ModelError> {
        let f = ctx.file;
        Ok(SelfAttention {
            wq: Linear::load(f, &T::AttnQ.weight(bid), n_embd, dims.q_width())?,
            wk: Linear::load(f, &T::AttnK.weight(bid), n_embd, dims.kv_width())?,
            wv: Linear::load(f, &T::AttnV.weight(bid), n_embd, dims.kv_width())?,
            wo: Linear::load(f, &T::AttnOutput.weight(bid), dims.q_width(), n_embd)?,
            dims,
            n_rot,
        })
    }

    /// Attention of the normalised rows `xn` (the concatenation of `segs`,
    /// `positions[t]` being row `t`'s position in its sequence), storing
    /// their keys and values at layer `kv_layer` of each segment's cache and
    /// writing the projected output into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ctx: Ctx<'_>,
        rope: &RopeParams,
        kv_layer: usize,
        segs: &mut [Segment<'_>],
        positions: &[usize],
        xn: &[f32],
        s: &mut AttnScratch,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let (f, be) = (ctx.file, ctx.backend);
        let n = positions.len();
        let hd = self.dims.head_dim;
        let (dq, dkv) = (self.dims.q_width(), self.dims.kv_width());
        let (q, k, v) = (&mut s.q[..n * dq], &mut s.k[..n * dkv], &mut s.v[..n * dkv]);
        be.matmul_group(
            &[self.wq.matrix(f), self.wk.matrix(f), self.wv.matrix(f)],
            xn,
            n,
            &mut [&mut *q, &mut *k, &mut *v],
        )?;
        for (t, &pos) in positions.iter().enumerate() {
            rope.cache(pos, &mut s.rope_cache);
            for head in q[t * dq..(t + 1) * dq].chunks_exact_mut(hd) {
                ops::rope_normal(&mut head[..self.n_rot], &s.rope_cache);
            }
            for head in k[t * dkv..(t + 1) * dkv].chunks_exact_mut(hd) {
                ops::rope_normal(&mut head[..self.n_rot], &s.rope_cache);
            }
        }
        // A quantized cache stores rotated rows, as llama.cpp's does: keys
        // with the queries (scores unchanged), values undone on the output.
        let mut t0 = 0;
        for seg in segs.iter() {
            let t1 = t0 + seg.n;
            if let Some(r) = seg.kv.pool().rotation_k() {
                ops::hadamard_rows(&mut q[t0 * dq..t1 * dq], r);
                ops::hadamard_rows(&mut k[t0 * dkv..t1 * dkv], r);
            }
            if let Some(r) = seg.kv.pool().rotation_v() {
                ops::hadamard_rows(&mut v[t0 * dkv..t1 * dkv], r);
            }
            t0 = t1;
        }
        let mut t0 = 0;
        for seg in segs.iter_mut() {
            let t1 = t0 + seg.n;
            seg.kv.store(
                kv_layer,
                seg.pos0,
                &k[t0 * dkv..t1 * dkv],
                &v[t0 * dkv..t1 * dkv],
            )?;
            t0 = t1;
        }
        // Every sequence's attention in one backend call.
        let attn = &mut s.attn[..n * dq];
        let mut jobs = Vec::with_capacity(segs.len());
        let (mut rest_q, mut rest_out) = (&q[..], &mut attn[..]);
        for seg in segs.iter() {
            let (sq, tq) = rest_q.split_at(seg.n * dq);
            let (so, to) = std::mem::take(&mut rest_out).split_at_mut(seg.n * dq);
            (rest_q, rest_out) = (tq, to);
            jobs.push(AttnJob {
                q: sq,
                kv: &*seg.kv,
                shape: AttnShape {
                    n_head: self.dims.n_head,
                    n_head_kv: self.dims.n_head_kv,
                    head_dim: hd,
                    pos0: seg.pos0,
                    n_tokens: seg.n,
                    scale: 1.0 / (hd as f32).sqrt(),
                },
                out: so,
            });
        }
        be.attention_many(kv_layer, &mut jobs)?;
        drop(jobs);
        let mut t0 = 0;
        for seg in segs.iter() {
            let t1 = t0 + seg.n;
            if let Some(r) = seg.kv.pool().rotation_v() {
                ops::hadamard_rows(&mut attn[t0 * dq..t1 * dq], r);
            }
            t0 = t1;
        }
        self.wo.forward(f, be, attn, n, out)
    }
}
