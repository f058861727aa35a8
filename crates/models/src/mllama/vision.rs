//! The vision tower of Llama 3.2 Vision, as transformers'
//! `MllamaVisionModel` and Meta's `VisionEncoder` compute it: every tile of
//! an image is cut into patches, embedded with the class token and gated
//! tile and position embeddings, and run jointly through a local transformer
//! and a gated global one. The output is the final state beside the inputs
//! of the intermediate layers, projected to the text model's width.

use super::config::VisionConfig;
use super::preprocess::{supported_aspect_ratios, PreparedImage};
use crate::layers::linear::load_vector;
use crate::layers::{Affine, Ctx, Embedding, GeluMlp, LayerNorm, Linear};
use crate::ModelError;
use edgellama_backend::{DenseProducts, DenseShape, KvSegment};
use edgellama_gguf::names::TensorKind as T;
use edgellama_gguf::GgmlType;
use edgellama_gguf::GgufFile;
use edgellama_kernels::ops;

/// The tensor kinds of one family of vision layers (local or global).
struct LayerNames {
    attn_norm: T,
    q: T,
    k: T,
    v: T,
    o: T,
    ffn_norm: T,
    up: T,
    down: T,
    gates: Option<(T, T)>,
}

const LOCAL: LayerNames = LayerNames {
    attn_norm: T::VisBlkAttnNorm,
    q: T::VisBlkAttnQ,
    k: T::VisBlkAttnK,
    v: T::VisBlkAttnV,
    o: T::VisBlkAttnOutput,
    ffn_norm: T::VisBlkFfnNorm,
    up: T::VisBlkFfnUp,
    down: T::VisBlkFfnDown,
    gates: None,
};

const GLOBAL: LayerNames = LayerNames {
    attn_norm: T::VisGlobalBlkAttnNorm,
    q: T::VisGlobalBlkAttnQ,
    k: T::VisGlobalBlkAttnK,
    v: T::VisGlobalBlkAttnV,
    o: T::VisGlobalBlkAttnOutput,
    ffn_norm: T::VisGlobalBlkFfnNorm,
    up: T::VisGlobalBlkFfnUp,
    down: T::VisGlobalBlkFfnDown,
    gates: Some((T::VisGlobalBlkAttnGate, T::VisGlobalBlkFfnGate)),
};

/// One pre-norm encoder layer; global layers gate both branches.
struct VisionLayer {
    attn_norm: LayerNorm, // v.blk.{i}.attn_norm.{weight,bias} [n_embd]
    wq: Linear,           // v.blk.{i}.attn_q.weight      [n_embd, n_embd]
    wk: Linear,           // v.blk.{i}.attn_k.weight      [n_embd, n_embd]
    wv: Linear,           // v.blk.{i}.attn_v.weight      [n_embd, n_embd]
    wo: Linear,           // v.blk.{i}.attn_output.weight [n_embd, n_embd]
    ffn_norm: LayerNorm,  // v.blk.{i}.ffn_norm.{weight,bias} [n_embd]
    mlp: GeluMlp,         // v.blk.{i}.ffn_up [n_embd, n_ff], ffn_down [n_ff, n_embd], with biases
    /// `tanh` of the attention and MLP gates (stored so in the file).
    gates: Option<(f32, f32)>,
}

/// A scalar stored as a one-element tensor.
fn scalar(file: &GgufFile, name: &str) -> Result<f32, ModelError> {
    Ok(load_vector(file, name, 1)?[0])
}

impl VisionLayer {
    fn load(
        f: &GgufFile,
        names: &LayerNames,
        bid: usize,
        c: &VisionConfig,
    ) -> Result<Self, ModelError> {
        let (d, ff) = (c.n_embd, c.n_ff);
        let stem = |k: T| k.name(bid, "");
        Ok(VisionLayer {
            attn_norm: LayerNorm::load(f, &stem(names.attn_norm), d, c.eps)?,
            wq: Linear::load(f, &names.q.weight(bid), d, d)?,
            wk: Linear::load(f, &names.k.weight(bid), d, d)?,
            wv: Linear::load(f, &names.v.weight(bid), d, d)?,
            wo: Linear::load(f, &names.o.weight(bid), d, d)?,
            ffn_norm: LayerNorm::load(f, &stem(names.ffn_norm), d, c.eps)?,
            mlp: GeluMlp {
                fc1: Affine::load(f, &stem(names.up), d, ff)?,
                fc2: Affine::load(f, &stem(names.down), ff, d)?,
            },
            gates: match names.gates {
                Some((a, m)) => Some((scalar(f, &stem(a))?, scalar(f, &stem(m))?)),
                None => None,
            },
        })
    }

    /// One layer over the image's `h` (`[n_rows][n_embd]`), the query rows
    /// of each group attending to that group's key rows.
    fn forward(
        &self,
        ctx: Ctx<'_>,
        shape: DenseShape,
        groups: &[RowGroup],
        h: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        let (f, be) = (ctx.file, ctx.backend);
        let d = self.wq.n_in;
        let n = h.len() / d;
        self.attn_norm.forward(h, &mut s.xn);
        be.matmul_group(
            &[self.wq.matrix(f), self.wk.matrix(f), self.wv.matrix(f)],
            &s.xn,
            n,
            &mut [&mut s.q, &mut s.k, &mut s.v],
        )?;
        for g in groups {
            let segs: Vec<KvSegment<'_>> = g
                .keys
                .iter()
                .map(|r| KvSegment {
                    k: &s.k[r.start * d..r.end * d],
                    v: &s.v[r.start * d..r.end * d],
                })
                .collect();
            let rows = g.rows.start * d..g.rows.end * d;
            be.attention_segments(&s.q[rows.clone()], &segs, shape, &mut s.attn[rows])?;
        }
        self.wo.forward(f, be, &s.attn, n, &mut s.o)?;
        let (ga, gm) = self.gates.unwrap_or((1.0, 1.0));
        residual(h, ga, &s.o, self.gates.is_some());
        self.ffn_norm.forward(h, &mut s.xn);
        self.mlp.forward(ctx, &s.xn, n, &mut s.hidden, &mut s.o)?;
        residual(h, gm, &s.o, self.gates.is_some());
        Ok(())
    }
}

/// `h += g * o` for gated layers (the product rounded first, as torch's
/// `gate * x` then `+`), `h += o` otherwise.
fn residual(h: &mut [f32], g: f32, o: &[f32], gated: bool) {
    if gated {
        ops::add_scaled(h, g, o);
    } else {
        ops::add_inplace(h, o);
    }
}

/// Query rows that attend to the same key rows.
struct RowGroup {
    rows: std::ops::Range<usize>,
    keys: Vec<std::ops::Range<usize>>,
}

struct Scratch {
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    hidden: Vec<f32>,
}

/// What [`VisionTower::encode`] returns for one image.
pub struct VisionOutput {
    /// `[max_num_tiles][n_tile_tokens][output_dim]`: the tower's output
    /// before the projector, padding tiles included.
    pub features: Vec<f32>,
    /// `[n_tiles][n_tile_tokens][text n_embd]`: the projected features of
    /// the image's real tiles, the rows cross-attention reads.
    pub projected: Vec<f32>,
}

pub struct VisionTower {
    cfg: VisionConfig,
    patch_embd: Linear,       // v.patch_embd.weight [patch, patch, 3, n_embd]
    class_embd: Vec<f32>,     // v.class_embd [n_embd]
    pos_embd: Embedding,      // v.position_embd.weight [n_embd, n_tile_tokens]
    pos_gate: f32,            // v.position_embd.gate: 1 - tanh(gate)
    tile_pos_embd: Embedding, // v.tile_position_embd.weight [tiles * n_tile_tokens * n_embd, n_ratios + 1]
    tile_pos_gate: f32,       // v.tile_position_embd.gate: tanh(gate)
    pre_tile: Embedding,      // v.pre_tile_position_embd.weight [tiles * n_embd, n_ratios + 1]
    pre_tile_gate: f32,
    post_tile: Embedding, // v.post_tile_position_embd.weight [tiles * n_embd, n_ratios + 1]
    post_tile_gate: f32,
    pre_ln: LayerNorm,  // v.pre_ln.{weight,bias}
    post_ln: LayerNorm, // v.post_ln.{weight,bias}
    layers: Vec<VisionLayer>,
    global: Vec<VisionLayer>,
    projector: Affine, // mm.0.{weight,bias} [output_dim, text n_embd]
}

impl VisionTower {
    pub fn load(f: &GgufFile, cfg: &VisionConfig, text_embd: usize) -> Result<Self, ModelError> {
        let d = cfg.n_embd;
        let t = cfg.max_num_tiles;
        let n_ids = supported_aspect_ratios(t).len() + 1;
        let p1 = cfg.n_tile_tokens();
        let gate = |k: T| scalar(f, &k.name(0, "gate"));
        Ok(VisionTower {
            patch_embd: Linear::load_flat(f, &T::VisPatchEmbd.weight(0), cfg.patch_len(), d)?,
            class_embd: load_vector(f, &T::VisClassEmbd.name(0, ""), d)?,
            pos_embd: Embedding::load(f, &T::VisPositionEmbd.weight(0), d, p1)?,
            pos_gate: gate(T::VisPositionEmbd)?,
            tile_pos_embd: Embedding::load(
                f,
                &T::VisTilePositionEmbd.weight(0),
                t * p1 * d,
                n_ids,
            )?,
            tile_pos_gate: gate(T::VisTilePositionEmbd)?,
            pre_tile: Embedding::load(f, &T::VisPreTilePositionEmbd.weight(0), t * d, n_ids)?,
            pre_tile_gate: gate(T::VisPreTilePositionEmbd)?,
            post_tile: Embedding::load(f, &T::VisPostTilePositionEmbd.weight(0), t * d, n_ids)?,
            post_tile_gate: gate(T::VisPostTilePositionEmbd)?,
            pre_ln: LayerNorm::load(f, &T::VisPreLn.name(0, ""), d, cfg.eps)?,
            post_ln: LayerNorm::load(f, &T::VisPostLn.name(0, ""), d, cfg.eps)?,
            layers: (0..cfg.n_layer)
                .map(|i| VisionLayer::load(f, &LOCAL, i, cfg))
                .collect::<Result<_, _>>()?,
            global: (0..cfg.n_global)
                .map(|i| VisionLayer::load(f, &GLOBAL, i, cfg))
                .collect::<Result<_, _>>()?,
            projector: Affine::load(f, &T::Projector.name(0, ""), cfg.output_dim(), text_embd)?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// The attention products at the precision of the tower's weights: a
    /// tower stored in F32 or F16 attends in `f32`; one stored in a type of
    /// bfloat16's precision or coarser (BF16, Q8_0) rounds its attention
    /// inputs to bfloat16 too, at twice the speed where the CPU has it.
    fn attention_products(&self) -> DenseProducts {
        let ty = self
            .layers
            .first()
            .or(self.global.first())
            .map(|l| l.wq.info.ggml_type);
        match ty {
            Some(GgmlType::F32 | GgmlType::F16) | None => DenseProducts::F32,
            Some(_) => DenseProducts::Bf16,
        }
    }

    /// Runs the tower over every tile of `img` (padding tiles too: real
    /// tokens attend to them, as in the reference).
    pub fn encode(&self, ctx: Ctx<'_>, img: &PreparedImage) -> Result<VisionOutput, ModelError> {
        let c = &self.cfg;
        let (d, t_max, p) = (c.n_embd, c.max_num_tiles, c.patch_size);
        let (pps, p1, l) = (
            c.patches_per_side(),
            c.n_tile_tokens(),
            c.n_tile_tokens_padded(),
        );
        let n_patches = pps * pps;
        let side = c.image_size;
        let ratios = supported_aspect_ratios(t_max);
        let id = img.aspect_ratio_id;
        let fits = img.tile_size == side
            && img.max_num_tiles == t_max
            && img.pixels.len() == t_max * 3 * side * side
            && id >= 1
            && ratios.get(id - 1) == Some(&img.aspect_ratio)
            && img.n_tiles == img.aspect_ratio.0 * img.aspect_ratio.1;
        if !fits {
            return Err(ModelError::Config(format!(
                "image prepared as {} tiles of {} px (ratio {:?}, id {id}) for a tower of {t_max} tiles of {side} px",
                img.n_tiles, img.tile_size, img.aspect_ratio
            )));
        }
        let ctx_file = ctx.file;

        // Patches, each `[channel][ky][kx]` as the convolution kernel is laid out.
        let plen = c.patch_len();
        let mut patches = vec![0f32; t_max * n_patches * plen];
        for (ti, tile) in img.pixels.chunks_exact(3 * side * side).enumerate() {
            for py in 0..pps {
                for px in 0..pps {
                    let row = &mut patches[(ti * n_patches + py * pps + px) * plen..][..plen];
                    for ch in 0..3 {
                        for ky in 0..p {
                            let src = &tile[(ch * side + py * p + ky) * side + px * p..][..p];
                            row[(ch * p + ky) * p..][..p].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        let mut emb = vec![0f32; t_max * n_patches * d];
        self.patch_embd
            .forward(ctx_file, ctx.backend, &patches, t_max * n_patches, &mut emb)?;
        drop(patches);

        let mut row = vec![0f32; t_max * d];
        self.pre_tile.lookup(ctx_file, &[id as u32], &mut row)?;
        for (ti, tile) in emb.chunks_exact_mut(n_patches * d).enumerate() {
            let e = &row[ti * d..(ti + 1) * d];
            for r in tile.chunks_exact_mut(d) {
                ops::add_scaled(r, self.pre_tile_gate, e);
            }
        }

        // [tile][token][n_embd] with the class token first, padded to `l` tokens.
        let mut h = vec![0f32; t_max * l * d];
        let mut pos = vec![0f32; p1 * d];
        let ids: Vec<u32> = (0..p1 as u32).collect();
        self.pos_embd.lookup(ctx_file, &ids, &mut pos)?;
        let mut tile_pos = vec![0f32; t_max * p1 * d];
        self.tile_pos_embd
            .lookup(ctx_file, &[id as u32], &mut tile_pos)?;
        for ti in 0..t_max {
            let tile = &mut h[ti * l * d..][..p1 * d];
            tile[..d].copy_from_slice(&self.class_embd);
            tile[d..].copy_from_slice(&emb[ti * n_patches * d..][..n_patches * d]);
            for (i, r) in tile.chunks_exact_mut(d).enumerate() {
                ops::add_scaled(r, self.pos_gate, &pos[i * d..(i + 1) * d]);
                ops::add_scaled(r, self.tile_pos_gate, &tile_pos[(ti * p1 + i) * d..][..d]);
            }
            self.pre_ln.forward_inplace(tile);
        }
        drop(emb);

        // Padding rows (the 0..7 after each tile's tokens, and whole
        // padding tiles) do not attend to each other; every other pair does.
        let n_rows = t_max * l;
        let real: Vec<std::ops::Range<usize>> =
            (0..img.n_tiles).map(|ti| ti * l..ti * l + p1).collect();
        let mut groups = Vec::new();
        for ti in 0..t_max {
            if ti < img.n_tiles {
                groups.push(RowGroup {
                    rows: ti * l..ti * l + p1,
                    keys: std::iter::once(0..n_rows).collect(),
                });
                if p1 < l {
                    groups.push(RowGroup {
                        rows: ti * l + p1..(ti + 1) * l,
                        keys: real.clone(),
                    });
                }
            } else {
                groups.push(RowGroup {
                    rows: ti * l..(ti + 1) * l,
                    keys: real.clone(),
                });
            }
        }
        let shape = DenseShape {
            n_head: c.n_head,
            n_head_kv: c.n_head,
            head_dim: d / c.n_head,
            scale: 1.0 / ((d / c.n_head) as f32).sqrt(),
            products: self.attention_products(),
        };
        let mut s = Scratch {
            xn: vec![0.0; n_rows * d],
            q: vec![0.0; n_rows * d],
            k: vec![0.0; n_rows * d],
            v: vec![0.0; n_rows * d],
            attn: vec![0.0; n_rows * d],
            o: vec![0.0; n_rows * d],
            hidden: vec![0.0; n_rows * c.n_ff],
        };
        let mut kept: Vec<Option<Vec<f32>>> = vec![None; self.layers.len()];
        for (il, layer) in self.layers.iter().enumerate() {
            // Meta's reference (and transformers 4.45) keeps the layer's input.
            if c.intermediate_layers.contains(&il) {
                kept[il] = Some(h.clone());
            }
            layer.forward(ctx, shape, &groups, &mut h, &mut s)?;
        }
        let inter: Vec<&[f32]> = c
            .intermediate_layers
            .iter()
            .filter_map(|&k| kept[k].as_deref())
            .collect();

        self.post_ln.forward_inplace(&mut h);
        self.post_tile.lookup(ctx_file, &[id as u32], &mut row)?;
        for (ti, tile) in h.chunks_exact_mut(l * d).enumerate() {
            let e = &row[ti * d..(ti + 1) * d];
            for r in tile.chunks_exact_mut(d) {
                ops::add_scaled(r, self.post_tile_gate, e);
            }
        }
        for layer in &self.global {
            layer.forward(ctx, shape, &groups, &mut h, &mut s)?;
        }

        // [final | intermediate channels interleaved: c * n_inter + j].
        let (out_dim, n_inter) = (c.output_dim(), inter.len());
        let mut features = vec![0f32; t_max * p1 * out_dim];
        for ti in 0..t_max {
            for i in 0..p1 {
                let src = (ti * l + i) * d;
                let dst = &mut features[(ti * p1 + i) * out_dim..][..out_dim];
                dst[..d].copy_from_slice(&h[src..src + d]);
                for ch in 0..d {
                    for (j, m) in inter.iter().enumerate() {
                        dst[d + ch * n_inter + j] = m[src + ch];
                    }
                }
            }
        }
        let n_real = img.n_tiles * p1;
        let mut projected = vec![0f32; n_real * self.projector.w.n_out];
        self.projector
            .forward(ctx, &features[..n_real * out_dim], n_real, &mut projected)?;
        Ok(VisionOutput {
            features,
            projected,
        })
    }
}
