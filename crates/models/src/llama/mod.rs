//! The Llama architecture (Llama 2/3/3.1/3.2, SmolLM, and other files whose
//! `general.architecture` is `llama`), following llama.cpp's graph in
//! `src/models/llama.cpp`: pre-norm attention with rotary embeddings and
//! grouped-query KV heads, then a SwiGLU feed-forward block.

mod config;

pub use config::LlamaConfig;

use crate::layers::rope::rope_params;
use crate::layers::{Linear, NormWeight};
use crate::{BatchItem, CausalLm, Logits, ModelError, ModelInfo, SeqState};
use edgellama_backend::{AttnJob, AttnShape, Backend, KvCache};
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
    /// hidden states in `x`. The batch is the concatenation of `segs`, each
    /// a run of consecutive tokens of one sequence with its own cache.
    fn layers(
        &self,
        segs: &mut [Segment<'_>],
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
        // Each token's position in its own sequence.
        let positions: Vec<usize> = segs.iter().flat_map(|s| s.pos0..s.pos0 + s.n).collect();

        for (il, b) in self.blocks.iter().enumerate() {
            // Attention.
            b.attn_norm.rms_norm(be, x, c.rms_eps, &mut xn)?;
            be.matmul_group(
                &[b.wq.matrix(f), b.wk.matrix(f), b.wv.matrix(f)],
                &xn,
                n,
                &mut [&mut q, &mut k, &mut v],
            )?;
            for (t, &pos) in positions.iter().enumerate() {
                self.rope.cache(pos, &mut rope_cache);
                for head in q[t * dq..(t + 1) * dq].chunks_exact_mut(hd) {
                    ops::rope_normal(&mut head[..c.n_rot], &rope_cache);
                }
                for head in k[t * dkv..(t + 1) * dkv].chunks_exact_mut(hd) {
                    ops::rope_normal(&mut head[..c.n_rot], &rope_cache);
                }
            }
            let mut t0 = 0;
            for seg in segs.iter_mut() {
                let t1 = t0 + seg.n;
                seg.kv
                    .store(il, seg.pos0, &k[t0 * dkv..t1 * dkv], &v[t0 * dkv..t1 * dkv]);
                t0 = t1;
            }
            // Every sequence's attention in one backend call.
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
                        n_head: c.n_head,
                        n_head_kv: c.n_head_kv,
                        head_dim: hd,
                        pos0: seg.pos0,
                        n_tokens: seg.n,
                        scale: 1.0 / (hd as f32).sqrt(),
                    },
                    out: so,
                });
            }
            be.attention_many(il, &mut jobs)?;
            drop(jobs);
            b.wo.forward(f, be, &attn, n, &mut o)?;
            ops::add_inplace(x, &o);

            // Feed-forward.
            b.ffn_norm.rms_norm(be, x, c.rms_eps, &mut xn)?;
            be.matmul_group(
                &[b.w_gate.matrix(f), b.w_up.matrix(f)],
                &xn,
                n,
                &mut [&mut gate, &mut up],
            )?;
            be.swiglu(&mut gate, &up, c.n_ff)?;
            b.w_down.forward(f, be, &gate, n, &mut o)?;
            ops::add_inplace(x, &o);
        }
        Ok(())
    }

    /// Final norm and output projection of the hidden-state rows `rows`.
    fn head(&self, rows: &[f32], logits: &mut Vec<f32>) -> Result<(), ModelError> {
        let c = &self.cfg;
        let m = rows.len() / c.n_embd;
        let mut xn = vec![0f32; rows.len()];
        self.output_norm
            .rms_norm(&*self.backend, rows, c.rms_eps, &mut xn)?;
        let start = logits.len();
        logits.resize(start + m * c.n_vocab, 0.0);
        self.output
            .forward(&self.file, &*self.backend, &xn, m, &mut logits[start..])
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<(), ModelError> {
        let n_vocab = self.cfg.n_vocab;
        match tokens.iter().find(|&&id| id as usize >= n_vocab) {
            Some(&id) => Err(ModelError::TokenOutOfRange { id, n_vocab }),
            None => Ok(()),
        }
    }
}

/// A run of consecutive tokens of one sequence inside a batch.
struct Segment<'a> {
    kv: &'a mut KvCache,
    pos0: usize,
    n: usize,
}

fn first_logit_row(which: Logits, n: usize) -> usize {
    match which {
        Logits::All => 0,
        Logits::Last => n.saturating_sub(1),
        Logits::From(i) => i.min(n),
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
        self.check_tokens(tokens)?;
        if state.n_past + tokens.len() > state.n_ctx() {
            return Err(ModelError::ContextFull {
                n_past: state.n_past,
                n_new: tokens.len(),
                n_ctx: state.n_ctx(),
            });
        }
        let d = self.cfg.n_embd;
        let first_out = first_logit_row(which, tokens.len());
        let mut logits = Vec::new();
        for (ci, chunk) in tokens.chunks(UBATCH).enumerate() {
            let n = chunk.len();
            let mut x = vec![0f32; n * d];
            let mut seg = [Segment {
                kv: &mut state.kv,
                pos0: state.n_past,
                n,
            }];
            self.layers(&mut seg, chunk, &mut x)?;
            state.n_past += n;
            // Rows of this micro-batch at or after `first_out` produce logits.
            let skip = first_out.saturating_sub(ci * UBATCH).min(n);
            if skip < n {
                self.head(&x[skip * d..], &mut logits)?;
            }
        }
        Ok(logits)
    }

    fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let d = self.cfg.n_embd;
        let mut tokens = Vec::new();
        for it in items.iter() {
            self.check_tokens(it.tokens)?;
            if it.state.n_past + it.tokens.len() > it.state.n_ctx() {
                return Err(ModelError::ContextFull {
                    n_past: it.state.n_past,
                    n_new: it.tokens.len(),
                    n_ctx: it.state.n_ctx(),
                });
            }
            tokens.extend_from_slice(it.tokens);
        }
        let mut segs: Vec<Segment<'_>> = items
            .iter_mut()
            .filter(|it| !it.tokens.is_empty())
            .map(|it| Segment {
                pos0: it.state.n_past,
                n: it.tokens.len(),
                kv: &mut it.state.kv,
            })
            .collect();
        let mut x = vec![0f32; tokens.len() * d];
        self.layers(&mut segs, &tokens, &mut x)?;
        drop(segs);
        let mut out = Vec::with_capacity(items.len());
        let mut t0 = 0;
        for it in items.iter_mut() {
            let n = it.tokens.len();
            it.state.n_past += n;
            let first = first_logit_row(it.logits, n);
            let mut logits = Vec::new();
            if first < n {
                self.head(&x[(t0 + first) * d..(t0 + n) * d], &mut logits)?;
            }
            out.push(logits);
            t0 += n;
        }
        Ok(out)
    }
}
