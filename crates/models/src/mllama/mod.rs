//! Llama 3.2 Vision (mllama): the Llama 3.1 text decoder with gated
//! cross-attention layers at the configured depths, reading the projected
//! output of a vision tower. Laid out as ollama's unified mllama GGUF.
//!
//! Where transformers and Meta's reference differ, this follows Meta: text
//! rows before the first image pass a cross-attention layer unchanged (Meta
//! zeroes both of its branches there; transformers zeroes only the MLP, its
//! issue #39379), and the intermediate vision layers are those layers'
//! inputs.

pub mod config;
pub mod preprocess;
pub mod vision;

pub use config::{MllamaConfig, VisionConfig};

use crate::layers::linear::load_vector;
use crate::layers::rope::rope_params;
use crate::layers::{
    forward_ubatches, BlockScratch, Ctx, DecoderBlock, Embedding, Linear, OutputHead, RmsNorm,
    Segment, SwiGlu,
};
use crate::{
    AttachedImage, CausalLm, ImageKv, Logits, ModelError, ModelInfo, PreparedImage, SeqState,
};
use edgellama_backend::{Backend, DenseProducts, DenseShape, KvLayout, KvSegment};
use edgellama_gguf::names::TensorKind as T;
use edgellama_gguf::GgufFile;
use edgellama_kernels::ops::{self, RopeParams};
use std::sync::{Arc, Mutex};
use vision::VisionTower;

/// Encoded images kept for reuse by later requests showing the same bytes.
const IMAGE_CACHE: usize = 4;

/// `LlamaModel.permute`'s row order within one head: the converter moves
/// row `permuted_row(r)` of Hugging Face's rotate-half layout to row `r`.
fn permuted_row(r: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    (r % 2) * half + r / 2
}

/// Cross-attention to an image's projected features: per-head RMS-normed
/// queries and keys, no rotary embedding.
struct CrossAttention {
    wq: Linear,      // blk.{i}.cross_attn_q_proj.weight [n_embd, n_head * head_dim]
    wk: Linear,      // blk.{i}.cross_attn_k_proj.weight [n_embd, n_head_kv * head_dim]
    wv: Linear,      // blk.{i}.cross_attn_v_proj.weight [n_embd, n_head_kv * head_dim]
    wo: Linear,      // blk.{i}.cross_attn_o_proj.weight [n_head * head_dim, n_embd]
    q_norm: RmsNorm, // blk.{i}.cross_attn_q_norm.weight [head_dim]
    k_norm: RmsNorm, // blk.{i}.cross_attn_k_norm.weight [head_dim]
}

impl CrossAttention {
    fn load(f: &GgufFile, bid: usize, c: &MllamaConfig) -> Result<CrossAttention, ModelError> {
        let t = &c.text;
        let dims = t.head_dims();
        let (d, hd) = (t.n_embd, t.head_dim);
        // The converter permutes the rows of q_proj and k_proj within each
        // head (as for RoPE) but leaves the norms alone: give the norm
        // weights the rows' order, so q.k is the checkpoint's.
        let norm = |k: T| -> Result<RmsNorm, ModelError> {
            let mut n = RmsNorm::load(f, &k.weight(bid), hd, t.rms_eps)?;
            let w = n.w.clone();
            for (r, v) in n.w.iter_mut().enumerate() {
                *v = w[permuted_row(r, hd)];
            }
            Ok(n)
        };
        Ok(CrossAttention {
            wq: Linear::load(f, &T::CrossAttnQ.weight(bid), d, dims.q_width())?,
            wk: Linear::load(f, &T::CrossAttnK.weight(bid), d, dims.kv_width())?,
            wv: Linear::load(f, &T::CrossAttnV.weight(bid), d, dims.kv_width())?,
            wo: Linear::load(f, &T::CrossAttnO.weight(bid), dims.q_width(), d)?,
            q_norm: norm(T::CrossAttnQNorm)?,
            k_norm: norm(T::CrossAttnKNorm)?,
        })
    }
}

/// A cross-attention layer: pre-norm cross-attention and pre-norm SwiGLU,
/// each gated by the `tanh` of its gate before joining the residual.
struct CrossBlock {
    attn_norm: RmsNorm, // blk.{i}.attn_norm.weight [n_embd]
    attn: CrossAttention,
    ffn_norm: RmsNorm, // blk.{i}.ffn_norm.weight [n_embd]
    ffn: SwiGlu,       // blk.{i}.ffn_{gate,up,down}.weight
    /// Its index among the cross-attention layers (in an image's K/V).
    index: usize,
    attn_gate: f32, // tanh(blk.{i}.cross_attn_attn_gate), raw in the file
    mlp_gate: f32,  // tanh(blk.{i}.cross_attn_mlp_gate), raw in the file
}

enum Block {
    /// A Llama decoder block and its layer in the KV cache.
    SelfAttn {
        block: DecoderBlock,
        kv_layer: usize,
    },
    Cross(CrossBlock),
}

pub struct Mllama {
    cfg: MllamaConfig,
    info: ModelInfo,
    file: Arc<GgufFile>,
    backend: Arc<dyn Backend>,
    rope: RopeParams,
    tok_embd: Embedding, // token_embd.weight  [n_embd, n_vocab + 8]
    head: OutputHead,    // output_norm.weight [n_embd], output.weight [n_embd, n_vocab]
    blocks: Vec<Block>,
    n_self: usize,
    vision: VisionTower,
    encoded: Mutex<Vec<Arc<ImageKv>>>,
}

impl Mllama {
    pub fn load(file: Arc<GgufFile>, backend: Arc<dyn Backend>) -> Result<Mllama, ModelError> {
        let cfg = MllamaConfig::from_gguf(&file)?;
        let t = &cfg.text;
        let d = t.n_embd;
        let f = &*file;
        let ctx = Ctx {
            file: f,
            backend: &*backend,
        };
        let tok_embd = Embedding::load(f, &T::TokenEmbd.weight(0), d, cfg.n_embd_rows)?;
        let output = Linear::load(f, &T::Output.weight(0), d, t.n_vocab)?;
        let (mut blocks, mut n_self, mut n_cross) = (Vec::new(), 0, 0);
        for i in 0..t.n_layer {
            blocks.push(if cfg.is_cross(i) {
                let gate = |k: T| -> Result<f32, ModelError> {
                    Ok(load_vector(f, &k.name(i, ""), 1)?[0].tanh())
                };
                n_cross += 1;
                Block::Cross(CrossBlock {
                    attn_norm: RmsNorm::load(f, &T::AttnNorm.weight(i), d, t.rms_eps)?,
                    attn: CrossAttention::load(f, i, &cfg)?,
                    ffn_norm: RmsNorm::load(f, &T::FfnNorm.weight(i), d, t.rms_eps)?,
                    ffn: SwiGlu::load(ctx, i, d, t.n_ff)?,
                    index: n_cross - 1,
                    attn_gate: gate(T::CrossAttnAttnGate)?,
                    mlp_gate: gate(T::CrossAttnMlpGate)?,
                })
            } else {
                n_self += 1;
                Block::SelfAttn {
                    block: DecoderBlock::load(ctx, i, t.block_dims())?,
                    kv_layer: n_self - 1,
                }
            });
        }
        let rope = rope_params(f, &t.arch, t.n_rot)?;
        let head = OutputHead {
            norm: RmsNorm::load(f, &T::OutputNorm.weight(0), d, t.rms_eps)?,
            output,
        };
        let vision = VisionTower::load(f, &cfg.vision, d)?;
        let info = ModelInfo {
            image_token: Some(cfg.image_token),
            preprocess: Some(cfg.vision.preprocess()),
            ..t.model_info(f)
        };
        Ok(Mllama {
            cfg,
            info,
            file,
            backend,
            rope,
            tok_embd,
            head,
            blocks,
            n_self,
            vision,
            encoded: Mutex::new(Vec::new()),
        })
    }

    pub fn config(&self) -> &MllamaConfig {
        &self.cfg
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            file: &self.file,
            backend: &*self.backend,
        }
    }

    /// The vision tower's output for `img` (before and after the projector).
    pub fn encode_image(&self, img: &PreparedImage) -> Result<vision::VisionOutput, ModelError> {
        self.vision.encode(self.ctx(), img)
    }

    /// Keys and values of every cross-attention layer for `img`, from the
    /// cache of recent encodings when the same image was seen before.
    pub fn image_kv(&self, img: &PreparedImage) -> Result<Arc<ImageKv>, ModelError> {
        if let Some(kv) = self.cached(&img.hash) {
            return Ok(kv);
        }
        let out = self.encode_image(img)?;
        let t = &self.cfg.text;
        let d = t.n_embd;
        let dims = t.head_dims();
        let n = out.projected.len() / d;
        let (f, be) = (&*self.file, &*self.backend);
        let mut layers = Vec::new();
        for b in &self.blocks {
            if let Block::Cross(CrossBlock { attn, .. }) = b {
                let mut k = vec![0f32; n * dims.kv_width()];
                let mut v = vec![0f32; n * dims.kv_width()];
                be.matmul_group(
                    &[attn.wk.matrix(f), attn.wv.matrix(f)],
                    &out.projected,
                    n,
                    &mut [&mut k, &mut v],
                )?;
                let kn = k.clone();
                attn.k_norm.forward(be, &kn, &mut k)?;
                layers.push((k, v));
            }
        }
        let kv = Arc::new(ImageKv {
            hash: img.hash,
            n_tokens: n,
            layers,
        });
        let mut cache = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(0, kv.clone());
        cache.truncate(IMAGE_CACHE);
        Ok(kv)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Arc<ImageKv>> {
        let mut cache = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
        let i = cache.iter().position(|kv| &kv.hash == hash)?;
        let kv = cache.remove(i);
        cache.insert(0, kv.clone());
        Some(kv)
    }

    fn check_tokens(&self, state: &mut SeqState, tokens: &[u32]) -> Result<(), ModelError> {
        crate::check_ids(tokens, self.cfg.n_embd_rows)?;
        let n_img = tokens
            .iter()
            .filter(|&&id| id == self.cfg.image_token)
            .count();
        if n_img > state.cross.pending.len() {
            return Err(ModelError::ImageCount {
                images: state.cross.pending.len(),
                tokens: n_img,
            });
        }
        state.reserve(tokens.len())
    }

    /// One micro-batch of one sequence through the layer stack.
    fn layers(
        &self,
        state: &mut SeqState,
        tokens: &[u32],
        x: &mut [f32],
    ) -> Result<(), ModelError> {
        let t = &self.cfg.text;
        let ctx = self.ctx();
        let be = ctx.backend;
        let (n, d) = (tokens.len(), t.n_embd);
        let pos0 = state.n_past;
        // Bind waiting images to their tokens before any row reads them.
        for (i, &id) in tokens.iter().enumerate() {
            if id == self.cfg.image_token {
                let kv = state.cross.pending.remove(0);
                state.cross.images.push(AttachedImage { pos: pos0 + i, kv });
            }
        }
        // Runs of rows that see the same images; rows that see none skip
        // the cross-attention layers.
        let mut runs: Vec<(std::ops::Range<usize>, Vec<Arc<ImageKv>>)> = Vec::new();
        for i in 0..n {
            let seen: Vec<Arc<ImageKv>> = state
                .cross
                .visible_at(pos0 + i)
                .iter()
                .map(|im| im.kv.clone())
                .collect();
            match runs.last_mut() {
                Some((r, s)) if same_images(s, &seen) => r.end = i + 1,
                _ => runs.push((i..i + 1, seen)),
            }
        }
        runs.retain(|(_, s)| !s.is_empty());

        self.tok_embd.lookup(ctx.file, tokens, x)?;
        let mut scratch = BlockScratch::new(n, t.block_dims());
        let positions: Vec<usize> = (pos0..pos0 + n).collect();
        let dims = t.head_dims();
        let mut q = vec![0f32; n * dims.q_width()];
        let mut a = vec![0f32; n * dims.q_width()];
        for b in &self.blocks {
            let cb = match b {
                Block::SelfAttn { block, kv_layer } => {
                    let mut seg = [Segment {
                        kv: &mut state.kv,
                        pos0,
                        n,
                    }];
                    block.forward(
                        ctx,
                        &self.rope,
                        *kv_layer,
                        &mut seg,
                        &positions,
                        x,
                        &mut scratch,
                    )?;
                    continue;
                }
                Block::Cross(cb) => cb,
            };
            if runs.is_empty() {
                continue;
            }
            let (xn, o) = (&mut scratch.xn, &mut scratch.o);
            cb.attn_norm.forward(be, x, xn)?;
            cb.attn.wq.forward(ctx.file, be, xn, n, &mut q)?;
            let qc = q.clone();
            cb.attn.q_norm.forward(be, &qc, &mut q)?;
            a.iter_mut().for_each(|v| *v = 0.0);
            let shape = DenseShape {
                n_head: dims.n_head,
                n_head_kv: dims.n_head_kv,
                head_dim: dims.head_dim,
                scale: 1.0 / (dims.head_dim as f32).sqrt(),
                products: DenseProducts::F32,
            };
            let w = dims.q_width();
            for (rows, imgs) in &runs {
                let segs: Vec<KvSegment<'_>> = imgs
                    .iter()
                    .map(|kv| KvSegment {
                        k: &kv.layers[cb.index].0,
                        v: &kv.layers[cb.index].1,
                    })
                    .collect();
                let r = rows.start * w..rows.end * w;
                be.attention_segments(&q[r.clone()], &segs, shape, &mut a[r])?;
            }
            cb.attn.wo.forward(ctx.file, be, &a, n, o)?;
            // Rows that see no image pass unchanged (Meta's rule).
            for (rows, _) in &runs {
                let r = rows.start * d..rows.end * d;
                ops::add_scaled(&mut x[r.clone()], cb.attn_gate, &o[r]);
            }
            cb.ffn_norm.forward(be, x, xn)?;
            cb.ffn.forward(ctx, xn, n, &mut scratch.ffn, o)?;
            for (rows, _) in &runs {
                let r = rows.start * d..rows.end * d;
                ops::add_scaled(&mut x[r.clone()], cb.mlp_gate, &o[r]);
            }
        }
        Ok(())
    }
}

/// The vision settings `inspect` prints; an error line for settings that do
/// not load.
pub fn describe(file: &GgufFile) -> Vec<String> {
    let c = match MllamaConfig::from_gguf(file) {
        Ok(c) => c,
        Err(e) => return vec![format!("vision: cannot be read: {e}")],
    };
    let v = &c.vision;
    let (n, bytes) = file
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("v.") || t.name.starts_with("mm."))
        .fold((0u64, 0u64), |(n, b), t| {
            (n + t.n_elements(), b + t.n_bytes())
        });
    vec![
        format!(
            "vision: up to {} tiles of {} px in patches of {} px ({} tokens per tile), {} local + {} global layers of width {}, {} heads",
            v.max_num_tiles,
            v.image_size,
            v.patch_size,
            v.n_tile_tokens(),
            v.n_layer,
            v.n_global,
            v.n_embd,
            v.n_head
        ),
        format!(
            "vision: intermediate layers {:?} -> output width {}; image mean {:?}, std {:?}",
            v.intermediate_layers,
            v.output_dim(),
            v.image_mean,
            v.image_std
        ),
        format!(
            "text: cross-attention at layers {:?} of {}; image token {}",
            c.cross_layers, c.text.n_layer, c.image_token
        ),
        format!(
            "vision tower and projector: {n} parameters, {:.2} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        ),
    ]
}

fn same_images(a: &[Arc<ImageKv>], b: &[Arc<ImageKv>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

impl CausalLm for Mllama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn kv_layout(&self) -> KvLayout {
        let t = &self.cfg.text;
        KvLayout {
            n_layer: self.n_self.max(1),
            n_head_kv: t.n_head_kv,
            head_dim: t.head_dim,
        }
    }

    fn attach_image(&self, state: &mut SeqState, image: &PreparedImage) -> Result<(), ModelError> {
        let kv = self.image_kv(image)?;
        state.cross.pending.push(kv);
        Ok(())
    }

    fn forward(
        &self,
        state: &mut SeqState,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        self.check_tokens(state, tokens)?;
        forward_ubatches(self.ctx(), &self.head, tokens, which, |chunk, x| {
            self.layers(state, chunk, x)?;
            state.n_past += chunk.len();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::permuted_row;

    #[test]
    fn permutation_interleaves_the_halves() {
        // Rows [x0 x1 x2 x3 y0 y1 y2 y3] become [x0 y0 x1 y1 x2 y2 x3 y3].
        let got: Vec<usize> = (0..8).map(|r| permuted_row(r, 8)).collect();
        assert_eq!(got, [0, 4, 1, 5, 2, 6, 3, 7]);
    }
}
