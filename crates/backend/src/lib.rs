//! The compute backend: what the model code asks of the hardware.
//!
//! [`Backend`] is the seam between model definitions and the machine: a CUDA
//! backend later implements the same trait. [`CpuBackend`] runs the kernels
//! crate's routines on a pool of `n_threads` worker threads.

mod cpu;
pub mod kv;
mod pool;
mod threads;

pub use cpu::{CpuBackend, FA_TILE_Q, SPLIT_KV_MIN_KEYS};
pub use kv::{Kind, KvConfig, KvError, KvLayout, KvPool, KvSeq, KvType, Rows, DEFAULT_BLOCK_SIZE};
pub use threads::default_threads;

use edgellama_gguf::GgmlType;
pub use edgellama_kernels::dense_attn::{DenseProducts, DenseShape, KvSegment};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("kernel error: {0}")]
    Kernel(#[from] edgellama_kernels::KernelError),
    #[error("tensor type {0} is not supported by the {1} backend")]
    Unsupported(GgmlType, &'static str),
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("could not start the thread pool: {0}")]
    ThreadPool(String),
}

/// A weight matrix as stored in the file: `n_out` rows of `n_in` elements of
/// type `ty`, row-major (GGUF dims `[n_in, n_out]`).
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub data: &'a [u8],
}

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Position of the first query token; query `t` sees keys `0..=pos0 + t`.
    pub pos0: usize,
    pub n_tokens: usize,
    pub scale: f32,
}

/// One sequence's part of a batched attention call: its queries, its cache
/// and where its output goes.
pub struct AttnJob<'a> {
    pub q: &'a [f32],
    pub kv: &'a KvSeq,
    pub shape: AttnShape,
    pub out: &'a mut [f32],
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn n_threads(&self) -> usize;

    /// `y[t][r] = dot(w.row(r), x[t])` for `n_tokens` input rows of `w.n_in`
    /// floats; `y` holds `n_tokens * w.n_out` floats.
    fn matmul(
        &self,
        w: &QMatrix<'_>,
        x: &[f32],
        n_tokens: usize,
        y: &mut [f32],
    ) -> Result<(), BackendError>;

    /// [`Backend::matmul`] of several matrices with the same input (the
    /// query, key and value projections; gate and up), which a backend can
    /// run as one step sharing the input's conversion. `ys[i]` receives
    /// `ws[i]`'s product. All matrices have the same `n_in`.
    fn matmul_group(
        &self,
        ws: &[QMatrix<'_>],
        x: &[f32],
        n_tokens: usize,
        ys: &mut [&mut [f32]],
    ) -> Result<(), BackendError> {
        if ws.len() != ys.len() {
            return Err(BackendError::Shape {
                op: "matmul",
                detail: format!("{} matrices for {} outputs", ws.len(), ys.len()),
            });
        }
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            self.matmul(w, x, n_tokens, y)?;
        }
        Ok(())
    }

    /// Causal multi-head attention of `q` (`[n_tokens][n_head * head_dim]`)
    /// over layer `layer` of the cache, whose keys and values for all
    /// positions up to `pos0 + n_tokens` are already stored. Writes
    /// `[n_tokens][n_head * head_dim]` into `out`.
    fn attention(
        &self,
        q: &[f32],
        kv: &KvSeq,
        layer: usize,
        shape: AttnShape,
        out: &mut [f32],
    ) -> Result<(), BackendError>;

    /// RMS-normalises each `w.len()`-float row of `x` into `out`, times the
    /// weight `w` ([`edgellama_kernels::ops::rms_norm`] row by row).
    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32])
        -> Result<(), BackendError>;

    /// `gate[i] = silu(gate[i]) * up[i]` by the kernel table's `swiglu`, a
    /// row of `n` at a time (as llama.cpp: a row's last `n % 8` take the
    /// scalar `exp`).
    fn swiglu(&self, gate: &mut [f32], up: &[f32], n: usize) -> Result<(), BackendError>;

    /// Attention of the query rows `q` (`[n][n_head * head_dim]`) over every
    /// key of `segs`, f32 rows held outside the cache (the vision tower's
    /// attention, cross-attention to image features), as
    /// [`edgellama_kernels::dense_attn::attention_segments`]. Rows are
    /// independent: any split over threads gives the same bits.
    fn attention_segments(
        &self,
        q: &[f32],
        segs: &[KvSegment<'_>],
        shape: DenseShape,
        out: &mut [f32],
    ) -> Result<(), BackendError>;

    /// [`Backend::attention`] of several sequences over the same layer (a
    /// continuous-batching step), which a backend can run as one step.
    fn attention_many(&self, layer: usize, jobs: &mut [AttnJob<'_>]) -> Result<(), BackendError> {
        for j in jobs.iter_mut() {
            self.attention(j.q, j.kv, layer, j.shape, j.out)?;
        }
        Ok(())
    }
}
