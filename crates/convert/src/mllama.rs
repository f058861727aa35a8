//! Llama 3.2 Vision (`MllamaForConditionalGeneration`) in the layout of
//! ollama's unified mllama GGUF: one file holding the text model (Llama
//! self-attention layers and gated cross-attention layers), the vision tower
//! (`v.*`) and the projector (`mm.0`), so that files ollama publishes and the
//! ones written here read alike.
//!
//! Checkpoint names are accepted in Meta's hub layout (`language_model.model.*`,
//! `language_model.lm_head`, `vision_model.*`, `multi_modal_projector.*`) and
//! in the one transformers 5.x keeps in memory (`model.language_model.*`,
//! `lm_head`, `model.vision_model.*`, `model.multi_modal_projector.*`);
//! config.json in the style of either (`rope_scaling` + `rope_theta` or
//! `rope_parameters`).
//!
//! What a reader of the file must know beyond the names (see
//! `edgellama_gguf::names::TensorKind`):
//! - Q/K rows of the self-attention, cross-attention and vision layers are
//!   permuted per head as the Llama path permutes them (`LlamaModel.permute`);
//!   the cross-attention's q_norm/k_norm (`[head_dim]`) are not, so a reader
//!   applies the same permutation to them (or undoes it on the rows). The
//!   vision tower has no RoPE, so its permutation changes nothing.
//! - Vision gates are stored activated (tanh, and 1 - tanh for the positional
//!   embedding); the text cross-attention gates are stored raw.
//! - `token_embd` has `vocab_size + 8` rows, `output` `vocab_size`; the token
//!   list runs to the tokenizer's highest id (`<|image|>` = `vocab_size`).
//! - The four positional tables are F32; other `v.*`/`mm.*` matrices are F16
//!   where the text ones are BF16.

use std::path::Path;

use edgellama_gguf::formats::{read_json, LlamaConfig, RopeScaling};
use edgellama_gguf::names::TensorKind;
use edgellama_gguf::{GgmlType, MetadataValue};
use serde_json::{json, Map, Value};

use crate::arch::{Architecture, Extra, GateFn, Mapped, Target, Transform, VocabLen};
use crate::llama::{self, u32_field};
use crate::{tensors, ConvertError, OutType};

pub const ARCH: &str = "mllama";

/// Rows of `embed_tokens` past `vocab_size`: the learnable embeddings of
/// Meta's checkpoint, `<|image|>` among them (transformers'
/// `MllamaTextModel`: `vocab_size + 8`).
const EXTRA_EMBEDDINGS: u64 = 8;

/// CLIP's normalisation (transformers' `OPENAI_CLIP_MEAN` / `_STD`), what
/// the Llama 3.2 Vision processor uses and what readers assume when the file
/// does not say. Written as transformers spells them, rounded to f32 as a
/// preprocessor_config.json holding them would be.
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Far above any released model (4). Bounds the aspect-ratio table a config
/// can ask for.
const MAX_TILES: u64 = 64;

/// `MllamaTextConfig`'s defaults, for fields a config.json leaves out.
fn text_defaults() -> Value {
    json!({
        "vocab_size": 128256, "hidden_size": 4096, "hidden_act": "silu",
        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
        "intermediate_size": 14336, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072, "tie_word_embeddings": false,
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
    })
}

/// The vision tower's hyperparameters (`MllamaVisionConfig`).
#[derive(Debug, Clone, PartialEq)]
struct Vision {
    hidden: u64,
    intermediate: u64,
    /// Local (ungated) layers.
    layers: u64,
    global_layers: u64,
    heads: u64,
    channels: u64,
    image_size: u64,
    patch_size: u64,
    max_tiles: u64,
    eps: f64,
    /// Local layers whose input joins the projector's input.
    intermediate_layers: Vec<u64>,
    /// Aspect ratios of `max_tiles` tiles (`supported_aspect_ratios`).
    n_aspect_ratios: u64,
}

impl Vision {
    /// Patches of one tile plus the class token.
    fn n_tokens(&self) -> u64 {
        let side = self.image_size / self.patch_size;
        side.saturating_mul(side).saturating_add(1)
    }

    /// The projector's input: the last hidden state and the intermediate ones.
    fn output_dim(&self) -> u64 {
        self.hidden
            .saturating_mul(self.intermediate_layers.len() as u64 + 1)
    }
}

/// `MllamaForConditionalGeneration`.
#[derive(Debug)]
pub struct Mllama {
    text: LlamaConfig,
    cross_layers: Vec<u64>,
    vision: Vision,
    image_token_id: u64,
    image_mean: [f32; 3],
    image_std: [f32; 3],
}

/// Reads config.json (and preprocessor_config.json beside it, when present)
/// and checks what the writer relies on.
pub fn open(config: &Value, path: &Path) -> Result<Box<dyn Architecture>, ConvertError> {
    Ok(Box::new(Mllama::from_json(config, path)?))
}

/// The `(rows, columns)` tile grids of at most `max_tiles` tiles, in
/// transformers' order (`get_all_supported_aspect_ratios`).
fn aspect_ratios(max_tiles: u64) -> Vec<[u64; 2]> {
    (1..=max_tiles)
        .flat_map(|w| (1..=max_tiles).map(move |h| [w, h]))
        .filter(|[w, h]| w * h <= max_tiles)
        .collect()
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    /// `"vision_config"`, for messages.
    section: &'a str,
    path: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, message: String) -> ConvertError {
        ConvertError::BadConfig {
            path: self.path.to_owned(),
            message,
        }
    }

    fn get(&self, k: &str) -> Option<&Value> {
        self.obj.get(k).filter(|v| !v.is_null())
    }

    fn uint(&self, k: &str, default: u64) -> Result<u64, ConvertError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                self.bad(format!(
                    "{}.{k} must be a non-negative integer, got {v}",
                    self.section
                ))
            }),
        }
    }

    fn float(&self, k: &str, default: f64) -> Result<f64, ConvertError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.bad(format!("{}.{k} must be a number, got {v}", self.section))),
        }
    }

    fn uints(&self, k: &str, default: &[u64]) -> Result<Vec<u64>, ConvertError> {
        match self.get(k) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_u64).collect())
                .ok_or_else(|| {
                    self.bad(format!(
                        "{}.{k} must be a list of non-negative integers, got {v}",
                        self.section
                    ))
                }),
        }
    }

    fn floats(&self, k: &str) -> Result<Option<Vec<f64>>, ConvertError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect())
                .map(Some)
                .ok_or_else(|| {
                    self.bad(format!(
                        "{}.{k} must be a list of numbers, got {v}",
                        self.section
                    ))
                }),
        }
    }
}

fn section<'a>(
    config: &'a Value,
    key: &str,
    path: &Path,
) -> Result<&'a Map<String, Value>, ConvertError> {
    config
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| ConvertError::BadConfig {
            path: path.to_owned(),
            message: format!(
                "no \"{key}\" object: MllamaForConditionalGeneration needs text_config and vision_config"
            ),
        })
}

fn read_vision(f: &Fields<'_>) -> Result<Vision, ConvertError> {
    let act = f
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    if act != "gelu" {
        return Err(f.bad(format!(
            "vision_config.hidden_act '{act}' is not supported: the Llama 3.2 Vision tower uses gelu"
        )));
    }
    let hidden = f.uint("hidden_size", 1280)?;
    let layers = f.uint("num_hidden_layers", 32)?;
    let max_tiles = f.uint("max_num_tiles", 4)?;
    let mut v = Vision {
        hidden,
        intermediate: f.uint("intermediate_size", 5120)?,
        layers,
        global_layers: f.uint("num_global_layers", 8)?,
        heads: f.uint("attention_heads", 16)?,
        channels: f.uint("num_channels", 3)?,
        image_size: f.uint("image_size", 448)?,
        patch_size: f.uint("patch_size", 14)?,
        max_tiles,
        eps: f.float("norm_eps", 1e-5)?,
        intermediate_layers: f.uints("intermediate_layers_indices", &[3, 7, 15, 23, 30])?,
        n_aspect_ratios: 0,
    };
    for (what, x) in [
        ("hidden_size", v.hidden),
        ("intermediate_size", v.intermediate),
        ("attention_heads", v.heads),
        ("image_size", v.image_size),
        ("patch_size", v.patch_size),
        ("max_num_tiles", v.max_tiles),
    ] {
        if x == 0 {
            return Err(f.bad(format!("vision_config.{what} is 0")));
        }
    }
    if v.channels != 3 {
        return Err(f.bad(format!(
            "vision_config.num_channels is {}: images are RGB",
            v.channels
        )));
    }
    if !v.hidden.is_multiple_of(v.heads) || !(v.hidden / v.heads).is_multiple_of(2) {
        return Err(f.bad(format!(
            "vision_config.hidden_size {} is not an even head size times {} heads",
            v.hidden, v.heads
        )));
    }
    if !v.image_size.is_multiple_of(v.patch_size) {
        return Err(f.bad(format!(
            "vision_config.image_size {} is not a whole number of {}-pixel patches",
            v.image_size, v.patch_size
        )));
    }
    if v.max_tiles > MAX_TILES {
        return Err(f.bad(format!(
            "vision_config.max_num_tiles {} is beyond {MAX_TILES}",
            v.max_tiles
        )));
    }
    if let Some(&i) = v.intermediate_layers.iter().find(|&&i| i >= v.layers) {
        return Err(f.bad(format!(
            "vision_config.intermediate_layers_indices names layer {i} of {}",
            v.layers
        )));
    }
    let out = f.uint("vision_output_dim", v.output_dim())?;
    if out != v.output_dim() {
        return Err(f.bad(format!(
            "vision_config.vision_output_dim is {out}, but {} intermediate layers of {} make {}",
            v.intermediate_layers.len(),
            v.hidden,
            v.output_dim()
        )));
    }
    let ratios = aspect_ratios(v.max_tiles);
    if let Some(listed) = f.get("supported_aspect_ratios") {
        // Readers rebuild this table from max_num_tiles: it is not stored.
        if *listed != json!(ratios) {
            return Err(f.bad(format!(
                "vision_config.supported_aspect_ratios {listed} is not the table of {} tiles",
                v.max_tiles
            )));
        }
    }
    // Id 0 of the tile embeddings is "no image".
    v.n_aspect_ratios = ratios.len() as u64 + 1;
    Ok(v)
}

/// preprocessor_config.json: the normalisation, and checks that the rest is
/// what readers assume (the file has no keys for them).
fn read_preprocessor(dir: &Path, vision: &Vision) -> Result<([f32; 3], [f32; 3]), ConvertError> {
    let path = dir.join("preprocessor_config.json");
    if !path.is_file() {
        return Ok((CLIP_MEAN.map(|x| x as f32), CLIP_STD.map(|x| x as f32)));
    }
    let v = read_json(&path)?;
    let obj = v.as_object().ok_or_else(|| ConvertError::BadConfig {
        path: path.clone(),
        message: "not a JSON object".into(),
    })?;
    let f = Fields {
        obj,
        section: "preprocessor",
        path: &path,
    };
    let triple = |k: &str, default: [f64; 3], positive: bool| -> Result<[f32; 3], ConvertError> {
        let Some(list) = f.floats(k)? else {
            return Ok(default.map(|x| x as f32));
        };
        let vals: Vec<f32> = list.iter().map(|&x| x as f32).collect();
        match <[f32; 3]>::try_from(vals) {
            Ok(t) if t.iter().all(|x| x.is_finite() && (!positive || *x > 0.0)) => Ok(t),
            _ => Err(f.bad(format!(
                "{k} must be 3 finite numbers{}, got {list:?}",
                if positive { " above 0" } else { "" }
            ))),
        }
    };
    let mut mean = triple("image_mean", CLIP_MEAN, false)?;
    let mut std = triple("image_std", CLIP_STD, true)?;
    if f.get("do_normalize").and_then(Value::as_bool) == Some(false) {
        (mean, std) = ([0.0; 3], [1.0; 3]);
    }
    let rescale = if f.get("do_rescale").and_then(Value::as_bool) == Some(false) {
        1.0
    } else {
        f.float("rescale_factor", 1.0 / 255.0)?
    };
    if (rescale * 255.0 - 1.0).abs() > 1e-6 {
        return Err(f.bad(format!(
            "pixels are scaled by {rescale}: readers scale by 1/255"
        )));
    }
    if let Some(size) = f.get("size") {
        let side = |k: &str| size.get(k).and_then(Value::as_u64);
        if side("height") != Some(vision.image_size) || side("width") != Some(vision.image_size) {
            return Err(f.bad(format!(
                "size {size} is not the tower's {0}x{0} tiles",
                vision.image_size
            )));
        }
    }
    let tiles = f.uint("max_image_tiles", vision.max_tiles)?;
    if tiles != vision.max_tiles {
        return Err(f.bad(format!(
            "max_image_tiles {tiles} differs from vision_config.max_num_tiles {}: readers use the latter",
            vision.max_tiles
        )));
    }
    Ok((mean, std))
}

impl Mllama {
    fn from_json(config: &Value, path: &Path) -> Result<Mllama, ConvertError> {
        let bad = |message: String| ConvertError::BadConfig {
            path: path.to_owned(),
            message,
        };
        let top = config
            .as_object()
            .ok_or_else(|| bad("config is not a JSON object".into()))?;
        let text_json = section(config, "text_config", path)?;
        let vision_json = section(config, "vision_config", path)?;

        let mut merged = text_defaults();
        if let Some(m) = merged.as_object_mut() {
            for (k, v) in text_json {
                m.insert(k.clone(), v.clone());
            }
        }
        let text = LlamaConfig::from_json(&merged, path)?;
        llama::check_config(&text, path)?;
        match &text.rope_scaling {
            None | Some(RopeScaling::Llama3 { .. }) => {}
            Some(other) => {
                return Err(bad(format!(
                    "text RoPE scaling {other:?} is not supported: Llama 3.2 Vision uses llama3"
                )))
            }
        }
        if text.tie_word_embeddings {
            return Err(bad(
                "tie_word_embeddings: the embeddings have 8 rows more than the output".into(),
            ));
        }
        let text_fields = Fields {
            obj: merged.as_object().unwrap_or(text_json),
            section: "text_config",
            path,
        };
        let cross_layers = text_fields.uints("cross_attention_layers", &[])?;
        for (i, &l) in cross_layers.iter().enumerate() {
            if l >= text.num_hidden_layers || cross_layers[..i].contains(&l) {
                return Err(bad(format!(
                    "text_config.cross_attention_layers {cross_layers:?}: layer {l} is repeated or not below {}",
                    text.num_hidden_layers
                )));
            }
        }

        let vision = read_vision(&Fields {
            obj: vision_json,
            section: "vision_config",
            path,
        })?;
        let image_token_id = Fields {
            obj: top,
            section: "config",
            path,
        }
        .uint("image_token_index", 128256)?;
        if image_token_id >= text.vocab_size.saturating_add(EXTRA_EMBEDDINGS) {
            return Err(bad(format!(
                "image_token_index {image_token_id} has no embedding row"
            )));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let (image_mean, image_std) = read_preprocessor(dir, &vision)?;
        Ok(Mllama {
            text,
            cross_layers,
            vision,
            image_token_id,
            image_mean,
            image_std,
        })
    }

    fn is_cross(&self, layer: u64) -> bool {
        self.cross_layers.contains(&layer)
    }
}

/// Where a checkpoint name belongs, in either layout.
enum Part<'a> {
    /// Below `model.` of the text model (`layers.3.mlp.up_proj.weight`).
    Text(&'a str),
    LmHead(&'a str),
    Vision(&'a str),
    Projector(&'a str),
}

fn part(name: &str) -> Option<Part<'_>> {
    let strip = |prefixes: [&str; 2]| prefixes.iter().find_map(|p| name.strip_prefix(p));
    if let Some(r) = strip(["language_model.model.", "model.language_model."]) {
        return Some(Part::Text(r));
    }
    if let Some(r) = strip(["language_model.lm_head.", "lm_head."]) {
        return Some(Part::LmHead(r));
    }
    if let Some(r) = strip(["vision_model.", "model.vision_model."]) {
        return Some(Part::Vision(r));
    }
    if let Some(r) = strip(["multi_modal_projector.", "model.multi_modal_projector."]) {
        return Some(Part::Projector(r));
    }
    None
}

/// `weight` or `bias` at the end of `s`: (stem, suffix).
fn split_suffix(s: &str) -> Option<(&str, &'static str)> {
    if let Some(stem) = s.strip_suffix(".weight") {
        return Some((stem, "weight"));
    }
    s.strip_suffix(".bias").map(|stem| (stem, "bias"))
}

/// `N.rest` with N below `n`.
fn block(s: &str, n: u64) -> Option<(u64, &str)> {
    let (bid, rest) = s.split_once('.')?;
    let bid: u64 = bid.parse().ok().filter(|&b| b < n)?;
    Some((bid, rest))
}

fn bid(b: u64) -> usize {
    usize::try_from(b).unwrap_or(usize::MAX)
}

impl Mllama {
    fn map_text(&self, rest: &str) -> Option<Mapped> {
        use TensorKind as K;
        match rest {
            "embed_tokens.weight" => return Some(Mapped::one(K::TokenEmbd.weight(0), None)),
            "norm.weight" => return Some(Mapped::one(K::OutputNorm.weight(0), None)),
            _ => {}
        }
        let (b, part) = block(rest.strip_prefix("layers.")?, self.text.num_hidden_layers)?;
        let (n_head, n_kv) = (self.text.num_attention_heads, self.text.num_key_value_heads);
        let (kind, permute) = match (self.is_cross(b), part) {
            (_, "input_layernorm.weight") => (K::AttnNorm, None),
            (_, "post_attention_layernorm.weight") => (K::FfnNorm, None),
            (_, "mlp.gate_proj.weight") => (K::FfnGate, None),
            (_, "mlp.up_proj.weight") => (K::FfnUp, None),
            (_, "mlp.down_proj.weight") => (K::FfnDown, None),
            (false, "self_attn.q_proj.weight") => (K::AttnQ, Some(n_head)),
            (false, "self_attn.k_proj.weight") => (K::AttnK, Some(n_kv)),
            (false, "self_attn.v_proj.weight") => (K::AttnV, None),
            (false, "self_attn.o_proj.weight") => (K::AttnOutput, None),
            // Permuted as the self-attention's (ollama's converter matches
            // both by suffix); cross-attention applies no RoPE, so it is
            // harmless as long as q_norm/k_norm follow (see the module doc).
            (true, "cross_attn.q_proj.weight") => (K::CrossAttnQ, Some(n_head)),
            (true, "cross_attn.k_proj.weight") => (K::CrossAttnK, Some(n_kv)),
            (true, "cross_attn.v_proj.weight") => (K::CrossAttnV, None),
            (true, "cross_attn.o_proj.weight") => (K::CrossAttnO, None),
            (true, "cross_attn.q_norm.weight") => (K::CrossAttnQNorm, None),
            (true, "cross_attn.k_norm.weight") => (K::CrossAttnKNorm, None),
            (true, "cross_attn_attn_gate") => {
                return Some(Mapped::one(K::CrossAttnAttnGate.name(bid(b), ""), None))
            }
            (true, "cross_attn_mlp_gate") => {
                return Some(Mapped::one(K::CrossAttnMlpGate.name(bid(b), ""), None))
            }
            _ => return None,
        };
        Some(Mapped::one(kind.weight(bid(b)), permute))
    }

    fn map_vision(&self, rest: &str) -> Option<Mapped> {
        use TensorKind as K;
        let gate = |kind: K, f: GateFn| Target {
            name: kind.name(0, "gate"),
            transform: Transform::Gate(f),
        };
        let fixed = match rest {
            "patch_embedding.weight" => Some(K::VisPatchEmbd.weight(0)),
            "class_embedding" => Some(K::VisClassEmbd.name(0, "")),
            "gated_positional_embedding.embedding" => Some(K::VisPositionEmbd.weight(0)),
            "gated_positional_embedding.tile_embedding.weight" => {
                Some(K::VisTilePositionEmbd.weight(0))
            }
            "pre_tile_positional_embedding.embedding.weight" => {
                Some(K::VisPreTilePositionEmbd.weight(0))
            }
            "post_tile_positional_embedding.embedding.weight" => {
                Some(K::VisPostTilePositionEmbd.weight(0))
            }
            _ => None,
        };
        if let Some(name) = fixed {
            return Some(Mapped::one(name, None));
        }
        match rest {
            // One gate weighs both embeddings: (1 - tanh g) the positional
            // one, tanh g the tile one.
            "gated_positional_embedding.gate" => {
                return Some(Mapped::To(vec![
                    gate(K::VisPositionEmbd, GateFn::OneMinusTanh),
                    gate(K::VisTilePositionEmbd, GateFn::Tanh),
                ]))
            }
            "pre_tile_positional_embedding.gate" => {
                return Some(Mapped::To(vec![gate(
                    K::VisPreTilePositionEmbd,
                    GateFn::Tanh,
                )]))
            }
            "post_tile_positional_embedding.gate" => {
                return Some(Mapped::To(vec![gate(
                    K::VisPostTilePositionEmbd,
                    GateFn::Tanh,
                )]))
            }
            _ => {}
        }
        let (stem, suffix) = match split_suffix(rest) {
            Some(s) => s,
            None => (rest, ""),
        };
        match stem {
            "layernorm_pre" if !suffix.is_empty() => {
                return Some(Mapped::one(K::VisPreLn.name(0, suffix), None))
            }
            "layernorm_post" if !suffix.is_empty() => {
                return Some(Mapped::one(K::VisPostLn.name(0, suffix), None))
            }
            _ => {}
        }
        let v = &self.vision;
        let (global, b, part) = if let Some(r) = stem.strip_prefix("transformer.layers.") {
            let (b, p) = block(r, v.layers)?;
            (false, b, p)
        } else {
            let r = stem.strip_prefix("global_transformer.layers.")?;
            let (b, p) = block(r, v.global_layers)?;
            (true, b, p)
        };
        let pick = |local: K, global_kind: K| if global { global_kind } else { local };
        let (kind, permute, suffixes): (K, Option<u64>, &[&str]) = match part {
            "input_layernorm" => (
                pick(K::VisBlkAttnNorm, K::VisGlobalBlkAttnNorm),
                None,
                &["weight", "bias"],
            ),
            "self_attn.q_proj" => (
                pick(K::VisBlkAttnQ, K::VisGlobalBlkAttnQ),
                Some(v.heads),
                &["weight"],
            ),
            "self_attn.k_proj" => (
                pick(K::VisBlkAttnK, K::VisGlobalBlkAttnK),
                Some(v.heads),
                &["weight"],
            ),
            "self_attn.v_proj" => (
                pick(K::VisBlkAttnV, K::VisGlobalBlkAttnV),
                None,
                &["weight"],
            ),
            "self_attn.o_proj" => (
                pick(K::VisBlkAttnOutput, K::VisGlobalBlkAttnOutput),
                None,
                &["weight"],
            ),
            "post_attention_layernorm" => (
                pick(K::VisBlkFfnNorm, K::VisGlobalBlkFfnNorm),
                None,
                &["weight", "bias"],
            ),
            "mlp.fc1" => (
                pick(K::VisBlkFfnUp, K::VisGlobalBlkFfnUp),
                None,
                &["weight", "bias"],
            ),
            "mlp.fc2" => (
                pick(K::VisBlkFfnDown, K::VisGlobalBlkFfnDown),
                None,
                &["weight", "bias"],
            ),
            "gate_attn" if global => (K::VisGlobalBlkAttnGate, None, &[""]),
            "gate_ffn" if global => (K::VisGlobalBlkFfnGate, None, &[""]),
            _ => return None,
        };
        if !suffixes.contains(&suffix) {
            return None;
        }
        let name = kind.name(bid(b), suffix);
        Some(match kind {
            K::VisGlobalBlkAttnGate | K::VisGlobalBlkFfnGate => Mapped::To(vec![Target {
                name,
                transform: Transform::Gate(GateFn::Tanh),
            }]),
            _ => Mapped::one(name, permute),
        })
    }
}

impl Architecture for Mllama {
    fn name(&self) -> &'static str {
        ARCH
    }

    fn hparams_metadata(
        &self,
        file_type: u32,
    ) -> Result<Vec<(String, MetadataValue)>, ConvertError> {
        let k = |s: &str| format!("{ARCH}.{s}");
        let t = &self.text;
        let v = &self.vision;
        let i32s = |what: &str, list: &[u64]| -> Result<MetadataValue, ConvertError> {
            list.iter()
                .map(|&x| {
                    i32::try_from(x).map_err(|_| ConvertError::TooLarge {
                        what: what.to_owned(),
                        value: x,
                    })
                })
                .collect::<Result<Vec<i32>, _>>()
                .map(Into::into)
        };
        Ok(vec![
            ("general.file_type".into(), file_type.into()),
            (k("vocab_size"), u32_field("vocab_size", t.vocab_size)?),
            (
                k("block_count"),
                u32_field("num_hidden_layers", t.num_hidden_layers)?,
            ),
            (
                k("context_length"),
                u32_field("max_position_embeddings", t.max_position_embeddings)?,
            ),
            (
                k("embedding_length"),
                u32_field("hidden_size", t.hidden_size)?,
            ),
            (
                k("feed_forward_length"),
                u32_field("intermediate_size", t.intermediate_size)?,
            ),
            (
                k("attention.head_count"),
                u32_field("num_attention_heads", t.num_attention_heads)?,
            ),
            (
                k("attention.head_count_kv"),
                u32_field("num_key_value_heads", t.num_key_value_heads)?,
            ),
            (
                k("rope.dimension_count"),
                u32_field("head_dim", t.head_dim)?,
            ),
            (k("rope.freq_base"), (t.rope_theta as f32).into()),
            (
                k("attention.layer_norm_rms_epsilon"),
                (t.rms_norm_eps as f32).into(),
            ),
            (
                k("attention.cross_attention_layers"),
                i32s("cross_attention_layers", &self.cross_layers)?,
            ),
            (
                k("vision.block_count"),
                u32_field("vision num_hidden_layers", v.layers)?,
            ),
            (
                k("vision.global.block_count"),
                u32_field("num_global_layers", v.global_layers)?,
            ),
            (
                k("vision.embedding_length"),
                u32_field("vision hidden_size", v.hidden)?,
            ),
            (
                k("vision.feed_forward_length"),
                u32_field("vision intermediate_size", v.intermediate)?,
            ),
            (
                k("vision.attention.head_count"),
                u32_field("attention_heads", v.heads)?,
            ),
            (
                k("vision.image_size"),
                u32_field("image_size", v.image_size)?,
            ),
            (
                k("vision.patch_size"),
                u32_field("patch_size", v.patch_size)?,
            ),
            (
                k("vision.max_num_tiles"),
                u32_field("max_num_tiles", v.max_tiles)?,
            ),
            (
                k("vision.num_channels"),
                u32_field("num_channels", v.channels)?,
            ),
            (
                k("vision.intermediate_layers_indices"),
                i32s("intermediate_layers_indices", &v.intermediate_layers)?,
            ),
            (
                k("vision.attention.layer_norm_epsilon"),
                (v.eps as f32).into(),
            ),
            // Not in ollama's files (it hard-codes them); readers fall back
            // to CLIP's values without them.
            (k("vision.image_mean"), self.image_mean.to_vec().into()),
            (k("vision.image_std"), self.image_std.to_vec().into()),
            (
                k("image_token_id"),
                u32_field("image_token_index", self.image_token_id)?,
            ),
        ])
    }

    fn map_name(&self, hf_name: &str) -> Result<Mapped, ConvertError> {
        if hf_name.ends_with("rotary_emb.inv_freq") {
            return Ok(Mapped::Skip);
        }
        let mapped = match part(hf_name) {
            Some(Part::Text(r)) => self.map_text(r),
            Some(Part::LmHead("weight")) => Some(Mapped::one(TensorKind::Output.weight(0), None)),
            Some(Part::Vision(r)) => self.map_vision(r),
            Some(Part::Projector(s @ ("weight" | "bias"))) => {
                Some(Mapped::one(TensorKind::Projector.name(0, s), None))
            }
            _ => None,
        };
        mapped.ok_or_else(|| ConvertError::UnknownTensor {
            tensor: hf_name.to_owned(),
        })
    }

    fn expected_shape(&self, gguf_name: &str) -> Option<Vec<u64>> {
        use TensorKind as K;
        let (kind, _, suffix) = K::parse(gguf_name)?;
        let t = &self.text;
        let v = &self.vision;
        // Saturating: a hostile config must not overflow; it just matches nothing.
        let e = t.hidden_size;
        let q = t.num_attention_heads.saturating_mul(t.head_dim);
        let kv = t.num_key_value_heads.saturating_mul(t.head_dim);
        let ff = t.intermediate_size;
        let d = v.hidden;
        let n_tok = v.n_tokens();
        let tiles = v.max_tiles;
        let one = vec![1];
        let gated = |table: Vec<u64>| if suffix == "gate" { vec![1] } else { table };
        let weight = match kind {
            K::TokenEmbd => vec![t.vocab_size.saturating_add(EXTRA_EMBEDDINGS), e],
            K::Output => vec![t.vocab_size, e],
            K::OutputNorm | K::AttnNorm | K::FfnNorm => vec![e],
            K::AttnQ | K::CrossAttnQ => vec![q, e],
            K::AttnK | K::AttnV | K::CrossAttnK | K::CrossAttnV => vec![kv, e],
            K::AttnOutput | K::CrossAttnO => vec![e, q],
            K::FfnGate | K::FfnUp => vec![ff, e],
            K::FfnDown => vec![e, ff],
            K::CrossAttnQNorm | K::CrossAttnKNorm => vec![t.head_dim],
            K::CrossAttnAttnGate | K::CrossAttnMlpGate => one,
            K::VisPatchEmbd => vec![d, v.channels, v.patch_size, v.patch_size],
            K::VisClassEmbd => vec![d],
            K::VisPositionEmbd => gated(vec![n_tok, d]),
            K::VisTilePositionEmbd => gated(vec![
                v.n_aspect_ratios,
                tiles.saturating_mul(n_tok).saturating_mul(d),
            ]),
            K::VisPreTilePositionEmbd | K::VisPostTilePositionEmbd => {
                gated(vec![v.n_aspect_ratios, tiles.saturating_mul(d)])
            }
            K::VisPreLn
            | K::VisPostLn
            | K::VisBlkAttnNorm
            | K::VisBlkFfnNorm
            | K::VisGlobalBlkAttnNorm
            | K::VisGlobalBlkFfnNorm => vec![d],
            K::VisBlkAttnQ
            | K::VisBlkAttnK
            | K::VisBlkAttnV
            | K::VisBlkAttnOutput
            | K::VisGlobalBlkAttnQ
            | K::VisGlobalBlkAttnK
            | K::VisGlobalBlkAttnV
            | K::VisGlobalBlkAttnOutput => vec![d, d],
            K::VisBlkFfnUp | K::VisGlobalBlkFfnUp => vec![v.intermediate, d],
            K::VisBlkFfnDown | K::VisGlobalBlkFfnDown => vec![d, v.intermediate],
            K::VisGlobalBlkAttnGate | K::VisGlobalBlkFfnGate => one,
            K::Projector => vec![e, v.output_dim()],
            _ => return None,
        };
        Some(if suffix == "bias" {
            weight[..1].to_vec()
        } else {
            weight
        })
    }

    fn first_missing(&self, n_tensors: usize, present: &dyn Fn(&str) -> bool) -> Option<String> {
        use TensorKind as K;
        let cap = n_tensors as u64 + 1;
        let mut required: Vec<String> = vec![
            K::TokenEmbd.weight(0),
            K::OutputNorm.weight(0),
            K::Output.weight(0),
        ];
        let missing = |names: &mut Vec<String>| {
            let found = names.iter().find(|n| !present(n)).cloned();
            names.clear();
            found
        };
        if let Some(m) = missing(&mut required) {
            return Some(m);
        }
        for l in 0..self.text.num_hidden_layers.min(cap) {
            let b = bid(l);
            let attn: &[K] = if self.is_cross(l) {
                &[
                    K::CrossAttnQ,
                    K::CrossAttnK,
                    K::CrossAttnV,
                    K::CrossAttnO,
                    K::CrossAttnQNorm,
                    K::CrossAttnKNorm,
                ]
            } else {
                &[K::AttnQ, K::AttnK, K::AttnV, K::AttnOutput]
            };
            let kinds = [K::AttnNorm].iter().chain(attn).chain(&[
                K::FfnNorm,
                K::FfnGate,
                K::FfnUp,
                K::FfnDown,
            ]);
            required.extend(kinds.map(|k| k.weight(b)));
            if self.is_cross(l) {
                required.push(K::CrossAttnAttnGate.name(b, ""));
                required.push(K::CrossAttnMlpGate.name(b, ""));
            }
            if let Some(m) = missing(&mut required) {
                return Some(m);
            }
        }
        required.extend([
            K::VisPatchEmbd.weight(0),
            K::VisClassEmbd.name(0, ""),
            K::VisPositionEmbd.weight(0),
            K::VisPositionEmbd.name(0, "gate"),
            K::VisTilePositionEmbd.weight(0),
            K::VisTilePositionEmbd.name(0, "gate"),
            K::VisPreTilePositionEmbd.weight(0),
            K::VisPreTilePositionEmbd.name(0, "gate"),
            K::VisPostTilePositionEmbd.weight(0),
            K::VisPostTilePositionEmbd.name(0, "gate"),
            K::VisPreLn.weight(0),
            K::VisPreLn.name(0, "bias"),
            K::VisPostLn.weight(0),
            K::VisPostLn.name(0, "bias"),
        ]);
        if let Some(m) = missing(&mut required) {
            return Some(m);
        }
        let layer = |kinds: [K; 8], b: usize, out: &mut Vec<String>| {
            let [norm, q, k, v, o, ffn_norm, up, down] = kinds;
            for kind in [q, k, v, o] {
                out.push(kind.weight(b));
            }
            for kind in [norm, ffn_norm, up, down] {
                out.push(kind.weight(b));
                out.push(kind.name(b, "bias"));
            }
        };
        let local = [
            K::VisBlkAttnNorm,
            K::VisBlkAttnQ,
            K::VisBlkAttnK,
            K::VisBlkAttnV,
            K::VisBlkAttnOutput,
            K::VisBlkFfnNorm,
            K::VisBlkFfnUp,
            K::VisBlkFfnDown,
        ];
        for l in 0..self.vision.layers.min(cap) {
            layer(local, bid(l), &mut required);
            if let Some(m) = missing(&mut required) {
                return Some(m);
            }
        }
        let global = [
            K::VisGlobalBlkAttnNorm,
            K::VisGlobalBlkAttnQ,
            K::VisGlobalBlkAttnK,
            K::VisGlobalBlkAttnV,
            K::VisGlobalBlkAttnOutput,
            K::VisGlobalBlkFfnNorm,
            K::VisGlobalBlkFfnUp,
            K::VisGlobalBlkFfnDown,
        ];
        for l in 0..self.vision.global_layers.min(cap) {
            layer(global, bid(l), &mut required);
            required.push(K::VisGlobalBlkAttnGate.name(bid(l), ""));
            required.push(K::VisGlobalBlkFfnGate.name(bid(l), ""));
            if let Some(m) = missing(&mut required) {
                return Some(m);
            }
        }
        required.extend([K::Projector.weight(0), K::Projector.name(0, "bias")]);
        missing(&mut required)
    }

    fn extra_tensors(&self) -> Vec<Extra> {
        llama::rope_freqs(&self.text)
            .map(|values| Extra {
                name: TensorKind::RopeFreqs.weight(0),
                values,
            })
            .into_iter()
            .collect()
    }

    fn tensor_type(
        &self,
        gguf_name: &str,
        n_dims: usize,
        row_len: u64,
        outtype: OutType,
    ) -> GgmlType {
        use TensorKind as K;
        let kind = K::parse(gguf_name).map(|(k, _, _)| k);
        // The positional tables are added to activations, not multiplied:
        // kept exact, as ollama keeps them.
        if matches!(
            kind,
            Some(
                K::VisPositionEmbd
                    | K::VisTilePositionEmbd
                    | K::VisPreTilePositionEmbd
                    | K::VisPostTilePositionEmbd
            )
        ) {
            return GgmlType::F32;
        }
        let t = tensors::target_type(gguf_name, n_dims, row_len, outtype);
        let vision = gguf_name.starts_with("v.") || gguf_name.starts_with("mm.");
        if vision && t == GgmlType::BF16 {
            // ollama writes the tower and projector in F16.
            GgmlType::F16
        } else {
            t
        }
    }

    fn vocab_len(&self) -> VocabLen {
        VocabLen {
            vocab_size: self.text.vocab_size,
            id_limit: Some(self.text.vocab_size.saturating_add(EXTRA_EMBEDDINGS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aspect_ratios_are_transformers_table() {
        // get_all_supported_aspect_ratios(4) of transformers' processor.
        assert_eq!(
            aspect_ratios(4),
            [
                [1, 1],
                [1, 2],
                [1, 3],
                [1, 4],
                [2, 1],
                [2, 2],
                [3, 1],
                [4, 1]
            ]
        );
        assert_eq!(aspect_ratios(1), [[1, 1]]);
    }

    #[test]
    fn both_layouts_map_alike() {
        let cfg = json!({
            "architectures": ["MllamaForConditionalGeneration"],
            "text_config": {"num_hidden_layers": 4, "cross_attention_layers": [1]},
            "vision_config": {"num_hidden_layers": 2, "num_global_layers": 1,
                              "intermediate_layers_indices": [0]},
        });
        let m = Mllama::from_json(&cfg, Path::new("/nonexistent/config.json")).unwrap();
        let pairs = [
            (
                "language_model.model.layers.1.cross_attn.q_proj.weight",
                "model.language_model.layers.1.cross_attn.q_proj.weight",
            ),
            ("language_model.lm_head.weight", "lm_head.weight"),
            (
                "vision_model.global_transformer.layers.0.gate_ffn",
                "model.vision_model.global_transformer.layers.0.gate_ffn",
            ),
            (
                "multi_modal_projector.bias",
                "model.multi_modal_projector.bias",
            ),
        ];
        for (hub, mem) in pairs {
            let a = m.map_name(hub).unwrap();
            assert_eq!(a, m.map_name(mem).unwrap(), "{hub}");
        }
        assert_eq!(
            m.map_name("language_model.model.layers.1.cross_attn.q_proj.weight")
                .unwrap(),
            Mapped::one("blk.1.cross_attn_q_proj.weight".into(), Some(32))
        );
        // Self-attention names in a cross layer, and the reverse, are unknown.
        for bad in [
            "language_model.model.layers.1.self_attn.q_proj.weight",
            "language_model.model.layers.0.cross_attn.q_proj.weight",
            "language_model.model.layers.4.mlp.up_proj.weight",
            "vision_model.transformer.layers.0.gate_attn",
            "vision_model.transformer.layers.2.mlp.fc1.weight",
            "vision_model.transformer.layers.0.self_attn.q_proj.bias",
            "vision_model.layernorm_pre",
            "multi_modal_projector.scale",
            "model.embed_tokens.weight",
        ] {
            assert!(
                matches!(m.map_name(bad), Err(ConvertError::UnknownTensor { .. })),
                "{bad}"
            );
        }
    }
}
