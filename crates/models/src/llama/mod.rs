//! The Llama architecture (Llama 2/3/3.1/3.2, SmolLM, and other files whose
//! `general.architecture` is `llama`), following llama.cpp's graph in
//! `src/models/llama.cpp`: pre-norm attention with rotary embeddings and
//! grouped-query KV heads, then a SwiGLU feed-forward block.

mod config;

pub use config::LlamaConfig;

use crate::layers::rope::rope_params;
use crate::layers::{
    forward_ubatches, BlockScratch, Ctx, DecoderBlock, Embedding, Linear, OutputHead, RmsNorm,
    Segment,
};
use crate::{BatchItem, CausalLm, Logits, ModelError, ModelInfo, SeqState};
use edgellama_backend::{Backend, KvLayout};
use edgellama_gguf::names::TensorKind as T;
use edgellama_gguf::GgufFile;
use edgellama_kernels::ops::RopeParams;
use std::sync::Arc;

pub struct Llama {
    cfg: LlamaConfig,
    info: ModelInfo,
    file: Arc<GgufFile>,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    tok_embd: Embedding, // token_embd.weight  [n_embd, n_vocab]
    head: OutputHead,    // output_norm, and output or token_embd when tied
    blocks: Vec<DecoderBlock>,
}

impl Llama {
    pub fn load(file: Arc<GgufFile>, backend: Arc<dyn Backend>) -> Result<Llama, ModelError> {
        let cfg = LlamaConfig::from_gguf(&file)?;
        let d = cfg.n_embd;
        let f = &*file;
        let ctx = Ctx {
            file: f,
            backend: &*backend,
        };
        let tok_embd = Embedding::load(f, &T::TokenEmbd.weight(0), d, cfg.n_vocab)?;
        let output = if f.tensor(&T::Output.weight(0)).is_some() {
            Linear::load(f, &T::Output.weight(0), d, cfg.n_vocab)?
        } else {
            tok_embd.table.clone()
        };
        let blocks = (0..cfg.n_layer)
            .map(|i| DecoderBlock::load(ctx, i, cfg.block_dims()))
            .collect::<Result<Vec<_>, _>>()?;
        let rope = rope_params(f, &cfg.arch, cfg.n_rot)?;
        let head = OutputHead {
            norm: RmsNorm::load(f, &T::OutputNorm.weight(0), d, cfg.rms_eps)?,
            output,
        };
        let info = cfg.model_info(f);
        Ok(Llama {
            cfg,
            info,
            file,
            backend,
            rope,
            tok_embd,
            head,
            blocks,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            file: &self.file,
            backend: &*self.backend,
        }
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
        let ctx = self.ctx();
        let n = tokens.len();
        self.tok_embd.lookup(ctx.file, tokens, x)?;
        let mut scratch = BlockScratch::new(n, c.block_dims());
        // Each token's position in its own sequence.
        let positions: Vec<usize> = segs.iter().flat_map(|s| s.pos0..s.pos0 + s.n).collect();
        for (il, b) in self.blocks.iter().enumerate() {
            b.forward(ctx, &self.rope, il, segs, &positions, x, &mut scratch)?;
        }
        Ok(())
    }
}

impl CausalLm for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn kv_layout(&self) -> KvLayout {
        KvLayout {
            n_layer: self.cfg.n_layer,
            n_head_kv: self.cfg.n_head_kv,
            head_dim: self.cfg.head_dim,
        }
    }

    fn forward(
        &self,
        state: &mut SeqState,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        crate::check_ids(tokens, self.cfg.n_vocab)?;
        state.reserve(tokens.len())?;
        let ctx = self.ctx();
        forward_ubatches(ctx, &self.head, tokens, which, |chunk, x| {
            let n = chunk.len();
            let mut seg = [Segment {
                kv: &mut state.kv,
                pos0: state.n_past,
                n,
            }];
            self.layers(&mut seg, chunk, x)?;
            state.n_past += n;
            Ok(())
        })
    }

    fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let d = self.cfg.n_embd;
        let mut tokens = Vec::new();
        for it in items.iter_mut() {
            crate::check_ids(it.tokens, self.cfg.n_vocab)?;
            it.state.reserve(it.tokens.len())?;
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
            let first = it.logits.first_row(n);
            let mut logits = Vec::new();
            if first < n {
                let rows = &x[(t0 + first) * d..(t0 + n) * d];
                self.head.forward(self.ctx(), rows, &mut logits)?;
            }
            out.push(logits);
            t0 += n;
        }
        Ok(out)
    }
}
