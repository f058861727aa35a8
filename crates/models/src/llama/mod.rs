//! The Llama architecture (Llama 2/3/3.1/3.2, SmolLM, and other files whose
//! `general.architecture` is `llama`), following llama.cpp's graph in
//! `src/models/llama.cpp`: pre-norm attention with rotary embeddings and
//! grouped-query KV heads, then a SwiGLU feed-forward block.

mod config;

pub use config::LlamaConfig;

use crate::layers::rope::rope_params;
use crate::layers::{Linear, NormWeight};
use crate::{CausalLm, Logits, ModelError, ModelInfo, SeqState};
use edgellama_backend::{AttnShape, Backend, KvCache};
use edgellama_gguf::GgufFile;
use edgellama_kernels::ops::{self, RopeParams};
use std::sync::Arc;

/// Tokens processed per pass of the layer stack; longer inputs are split so
/// scratch memory stays bounded.
const UBATCH: usize = 512;

struct Block {
    attn_norm: NormWeight, // blk.{i}.attn_norm.weight  [n_embd]
    wq: Linear,            // blk.{i}.attn_q.weight      [n_embd, n_head * head_dim]
    wk: Linear,            // blk.{i}.attn_k.weight      [n_embd, n_head_kv * head_dim]
    wv: Linear,            // blk.{i}.attn_v.weight      [n_embd, n_head_kv * head_dim]
    wo: Linear,            // blk.{i}.attn_output.weight [n_head * head_dim, n_embd]
    ffn_norm: NormWeight,  // blk.{i}.ffn_norm.weight    [n_embd]
    w_gate: Linear,        // blk.{i}.ffn_gate.weight    [n_embd, n_ff]
    w_up: Linear,          // blk.{i}.ffn_up.weight      [n_embd, n_ff]
    w_down: Linear,        // blk.{i}.ffn_down.weight    [n_ff, n_embd]
}

pub struct Llama {
    cfg: LlamaConfig,
    info: ModelInfo,
    file: Arc<GgufFile>,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    tok_embd: Linear,        // token_embd.weight  [n_embd, n_vocab]
    output_norm: NormWeight, // output_norm.weight [n_embd]
    output: Linear,          // output.weight      [n_embd, n_vocab], or token_embd when tied
    blocks: Vec<Block>,
}

impl Llama {
    pub fn load(file: Arc<GgufFile>, backend: Arc<dyn Backend>) -> Result<Llama, ModelError> {
        let cfg = LlamaConfig::from_gguf(&file)?;
        let (d, hd) = (cfg.n_embd, cfg.head_dim);
        let f = &*file;
        let tok_embd = Linear::load(f, "token_embd.weight", d, cfg.n_vocab)?;
        let output = if f.tensor("output.weight").is_some() {
            Linear::load(f, "output.weight", d, cfg.n_vocab)?
        } else {
            tok_embd.clone()
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: NormWeight::load(f, &n("attn_norm"), d)?,
                wq: Linear::load(f, &n("attn_q"), d, cfg.n_head * hd)?,
                wk: Linear::load(f, &n("attn_k"), d, cfg.n_head_kv * hd)?,
                wv: Linear::load(f, &n("attn_v"), d, cfg.n_head_kv * hd)?,
                wo: Linear::load(f, &n("attn_output"), cfg.n_head * hd, d)?,
                ffn_norm: NormWeight::load(f, &n("ffn_norm"), d)?,
                w_gate: Linear::load(f, &n("ffn_gate"), d, cfg.n_ff)?,
                w_up: Linear::load(f, &n("ffn_up"), d, cfg.n_ff)?,
                w_down: Linear::load(f, &n("ffn_down"), cfg.n_ff, d)?,
            });
        }
        let rope = rope_params(f, &cfg.arch, cfg.n_rot)?;
        let output_norm = NormWeight::load(f, "output_norm.weight", d)?;
        let (mut n_params, mut weight_bytes) = (0u64, 0u64);
        for t in f.tensors() {
            n_params += t.n_elements();
            weight_bytes += t.n_bytes();
        }
        let info = ModelInfo {
            architecture: cfg.arch.clone(),
            n_vocab: cfg.n_vocab,
            n_ctx_train: cfg.n_ctx_train,
            n_embd: d,
            n_layer: cfg.n_layer,
            n_params,
            weight_bytes,
        };
        Ok(Llama {
            cfg,
            info,
            file,
            backend,
            rope,
            tok_embd,
            output_norm,
            output,
            blocks,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Runs one micro-batch through the layer stack, leaving the final
    /// hidden states in `x`.
    fn layers(
        &self,
        kv: &mut KvCache,
        pos0: usize,
        tokens: &[u32],
        x: &mut [f32],
    ) -> Result<(), ModelError> {
        let c = &self.cfg;
        let f = &*self.file;
        let be = &*self.backend;
        let n = tokens.len();
        let (d, hd) = (c.n_embd, c.head_dim);
        let (dq, dkv) = (c.n_head * hd, c.n_head_kv * hd);

        for (t, &id) in tokens.iter().enumerate() {
            self.tok_embd
                .row(f, id as usize, &mut x[t * d..(t + 1) * d])?;
        }
        let mut xn = vec![0f32; n * d];
        let mut q = vec![0f32; n * dq];
        let mut k = vec![0f32; n * dkv];
        let mut v = vec![0f32; n * dkv];
        let mut attn = vec![0f32; n * dq];
        let mut o = vec![0f32; n * d];
        let mut gate = vec![0f32; n * c.n_ff];
        let mut up = vec![0f32; n * c.n_ff];
        let mut rope_cache = vec![0f32; c.n_rot];
        let shape = AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
            pos0,
            n_tokens: n,
            scale: 1.0 / (hd as f32).sqrt(),
        };

        for (il, b) in self.blocks.iter().enumerate() {
            // Attention.
            b.attn_norm.rms_norm(x, c.rms_eps, &mut xn);
            b.wq.forward(f, be, &xn, n, &mut q)?;
            b.wk.forward(f, be, &xn, n, &mut k)?;
            b.wv.forward(f, be, &xn, n, &mut v)?;
            for t in 0..n {
                self.rope.cache(pos0 + t, &mut rope_cache);
                for head in q[t * dq..(t + 1) * dq].chunks_exact_mut(hd) {
                    ops::rope_normal(&mut head[..c.n_rot], &rope_cache);
                }
                for head in k[t * dkv..(t + 1) * dkv].chunks_exact_mut(hd) {
                    ops::rope_normal(&mut head[..c.n_rot], &rope_cache);
                }
            }
            kv.store(il, pos0, &k, &v);
            be.attention(&q, kv, il, shape, &mut attn)?;
            b.wo.forward(f, be, &attn, n, &mut o)?;
            ops::add_inplace(x, &o);

            // Feed-forward.
            b.ffn_norm.rms_norm(x, c.rms_eps, &mut xn);
            b.w_gate.forward(f, be, &xn, n, &mut gate)?;
            b.w_up.forward(f, be, &xn, n, &mut up)?;
            ops::swiglu_inplace(&mut gate, &up);
            b.w_down.forward(f, be, &gate, n, &mut o)?;
            ops::add_inplace(x, &o);
        }
        Ok(())
    }
}

impl CausalLm for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn new_state(&self, n_ctx: usize) -> Result<SeqState, ModelError> {
        if n_ctx == 0 {
            return Err(ModelError::Config("context size must be at least 1".into()));
        }
        Ok(SeqState {
            kv: KvCache::new(
                self.cfg.n_layer,
                n_ctx,
                self.cfg.n_head_kv * self.cfg.head_dim,
            ),
            n_past: 0,
        })
    }

    fn forward(
        &self,
        state: &mut SeqState,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.cfg;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                id,
                n_vocab: c.n_vocab,
            });
        }
        if state.n_past + tokens.len() > state.n_ctx() {
            return Err(ModelError::ContextFull {
                n_past: state.n_past,
                n_new: tokens.len(),
                n_ctx: state.n_ctx(),
            });
        }
        let d = c.n_embd;
        let first_out = match which {
            Logits::All => 0,
            Logits::Last => tokens.len().saturating_sub(1),
            Logits::From(i) => i.min(tokens.len()),
        };
        let mut logits = Vec::new();
        for (ci, chunk) in tokens.chunks(UBATCH).enumerate() {
            let n = chunk.len();
            let mut x = vec![0f32; n * d];
            self.layers(&mut state.kv, state.n_past, chunk, &mut x)?;
            state.n_past += n;
            // Rows of this micro-batch at or after `first_out` produce logits.
            let skip = first_out.saturating_sub(ci * UBATCH).min(n);
            let rows = &x[skip * d..];
            if rows.is_empty() {
                continue;
            }
            let m = rows.len() / d;
            let mut xn = vec![0f32; rows.len()];
            self.output_norm.rms_norm(rows, c.rms_eps, &mut xn);
            let start = logits.len();
            logits.resize(start + m * c.n_vocab, 0.0);
            self.output
                .forward(&self.file, &*self.backend, &xn, m, &mut logits[start..])?;
        }
        Ok(logits)
    }
}
