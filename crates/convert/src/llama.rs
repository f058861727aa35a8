//! The Llama architecture as llama.cpp's converter writes it (`LlamaModel`):
//! hyperparameter keys, tensor names, the Q/K row permutation and the llama3
//! RoPE frequency factors.

use std::path::Path;

use edgellama_gguf::formats::{LlamaConfig, RopeScaling};
use edgellama_gguf::MetadataValue;
use serde_json::Value;

use crate::arch::{Architecture, Extra, Mapped, VocabLen};
use crate::ConvertError;

pub const ARCH: &str = "llama";

/// `LlamaForCausalLM`.
pub struct Llama {
    cfg: LlamaConfig,
}

/// Reads and checks config.json (a multimodal config's `text_config`
/// merged over it).
pub fn open(config: &Value, path: &Path) -> Result<Box<dyn Architecture>, ConvertError> {
    let cfg = LlamaConfig::from_json(config, path)?;
    check_config(&cfg, path)?;
    Ok(Box::new(Llama { cfg }))
}

impl Architecture for Llama {
    fn name(&self) -> &'static str {
        ARCH
    }

    fn hparams_metadata(
        &self,
        file_type: u32,
    ) -> Result<Vec<(String, MetadataValue)>, ConvertError> {
        hparams_metadata(&self.cfg, file_type)
    }

    fn map_name(&self, hf_name: &str) -> Result<Mapped, ConvertError> {
        map_name(hf_name, &self.cfg)
    }

    fn expected_shape(&self, gguf_name: &str) -> Option<Vec<u64>> {
        expected_shape(gguf_name, &self.cfg)
    }

    fn first_missing(&self, n_tensors: usize, present: &dyn Fn(&str) -> bool) -> Option<String> {
        first_missing(&self.cfg, n_tensors, present)
    }

    fn extra_tensors(&self) -> Vec<Extra> {
        rope_freqs(&self.cfg)
            .map(|values| Extra {
                name: "rope_freqs.weight".into(),
                values,
            })
            .into_iter()
            .collect()
    }

    fn vocab_len(&self) -> VocabLen {
        VocabLen {
            vocab_size: self.cfg.vocab_size,
            id_limit: None,
        }
    }
}

/// Checks what the writer relies on, before anything is planned (the
/// architecture itself was matched by the table in `arch`). Shared with the
/// text model of mllama.
pub fn check_config(cfg: &LlamaConfig, path: &Path) -> Result<(), ConvertError> {
    if cfg.hidden_act != "silu" {
        return Err(ConvertError::UnsupportedActivation {
            found: cfg.hidden_act.clone(),
        });
    }
    if let Some(RopeScaling::Other { rope_type }) = &cfg.rope_scaling {
        return Err(ConvertError::UnsupportedRopeScaling {
            rope_type: rope_type.clone(),
        });
    }
    let bad = |message: String| ConvertError::BadConfig {
        path: path.to_owned(),
        message,
    };
    for (what, v) in [
        ("num_hidden_layers", cfg.num_hidden_layers),
        ("hidden_size", cfg.hidden_size),
        ("num_key_value_heads", cfg.num_key_value_heads),
        ("head_dim", cfg.head_dim),
        ("vocab_size", cfg.vocab_size),
    ] {
        if v == 0 {
            return Err(bad(format!("\"{what}\" is 0")));
        }
    }
    if !cfg
        .num_attention_heads
        .is_multiple_of(cfg.num_key_value_heads)
    {
        return Err(bad(format!(
            "{} attention heads cannot share {} key/value heads",
            cfg.num_attention_heads, cfg.num_key_value_heads
        )));
    }
    if !cfg.head_dim.is_multiple_of(2) {
        return Err(bad(format!(
            "head_dim {} is odd: RoPE rotates pairs",
            cfg.head_dim
        )));
    }
    Ok(())
}

pub fn u32_field(what: &str, v: u64) -> Result<MetadataValue, ConvertError> {
    u32::try_from(v)
        .map(MetadataValue::U32)
        .map_err(|_| ConvertError::TooLarge {
            what: what.to_owned(),
            value: v,
        })
}

/// The `llama.*` keys and `general.file_type`, in the converter's order
/// (`TextModel.set_gguf_parameters`, then `LlamaModel`'s additions).
pub fn hparams_metadata(
    cfg: &LlamaConfig,
    file_type: u32,
) -> Result<Vec<(String, MetadataValue)>, ConvertError> {
    let k = |s: &str| format!("{ARCH}.{s}");
    let mut md = vec![
        (
            k("block_count"),
            u32_field("num_hidden_layers", cfg.num_hidden_layers)?,
        ),
        (
            k("context_length"),
            u32_field("max_position_embeddings", cfg.max_position_embeddings)?,
        ),
        (
            k("embedding_length"),
            u32_field("hidden_size", cfg.hidden_size)?,
        ),
        (
            k("feed_forward_length"),
            u32_field("intermediate_size", cfg.intermediate_size)?,
        ),
        (
            k("attention.head_count"),
            u32_field("num_attention_heads", cfg.num_attention_heads)?,
        ),
        (
            k("attention.head_count_kv"),
            u32_field("num_key_value_heads", cfg.num_key_value_heads)?,
        ),
    ];
    match &cfg.rope_scaling {
        Some(RopeScaling::Linear { factor }) => {
            md.push((k("rope.scaling.type"), "linear".into()));
            md.push((k("rope.scaling.factor"), (*factor as f32).into()));
        }
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            extrapolation_factor,
            attention_factor,
            beta_fast,
            beta_slow,
        }) => {
            md.push((k("rope.scaling.type"), "yarn".into()));
            md.push((k("rope.scaling.factor"), (*factor as f32).into()));
            md.push((
                k("rope.scaling.original_context_length"),
                u32_field(
                    "original_max_position_embeddings",
                    *original_max_position_embeddings,
                )?,
            ));
            for (key, v) in [
                ("rope.scaling.yarn_ext_factor", extrapolation_factor),
                ("rope.scaling.yarn_attn_factor", attention_factor),
                ("rope.scaling.yarn_beta_fast", beta_fast),
                ("rope.scaling.yarn_beta_slow", beta_slow),
            ] {
                if let Some(v) = v {
                    md.push((k(key), (*v as f32).into()));
                }
            }
        }
        // llama3 factors go into rope_freqs.weight; dynamic needs nothing.
        _ => {}
    }
    md.push((k("rope.freq_base"), (cfg.rope_theta as f32).into()));
    md.push((
        k("attention.layer_norm_rms_epsilon"),
        (cfg.rms_norm_eps as f32).into(),
    ));
    md.push((
        k("attention.key_length"),
        u32_field("head_dim", cfg.head_dim)?,
    ));
    md.push((
        k("attention.value_length"),
        u32_field("head_dim", cfg.head_dim)?,
    ));
    md.push(("general.file_type".into(), file_type.into()));
    md.push((k("vocab_size"), u32_field("vocab_size", cfg.vocab_size)?));
    md.push((
        k("rope.dimension_count"),
        u32_field("head_dim", cfg.head_dim)?,
    ));
    Ok(md)
}

/// Checkpoint tensors the converter drops by name (`TextModel.filter_tensors`
/// and `ModelBase.prepare_tensors`).
fn skipped(name: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "mlp",
        "vit.",
        "vpm.",
        "siglip2.",
        "conformer.",
        "merger.",
        "resampler.",
        "sound_encoder.",
        "sound_projection.",
        "speech_embeddings.",
    ];
    const PARTS: [&str; 19] = [
        "visual.",
        "vision.",
        "audio.",
        "talker.",
        "vision_",
        "audio_",
        "token2wav.",
        "code2wav.",
        "projector.",
        "pre_mm_projector_norm",
        "image_newline",
        "view_seperator",
        "patch_embed",
        "patch_embedding",
        "patch_merger.",
        "patch_merge_mlp.",
        "model.connector.",
        "rotary_emb.inv_freq",
        "attention.masked_bias",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || PARTS.iter().any(|p| name.contains(p))
        || name.ends_with(".attention.bias")
}

/// The GGUF name of a checkpoint tensor.
pub fn map_name(hf_name: &str, cfg: &LlamaConfig) -> Result<Mapped, ConvertError> {
    let name = hf_name
        .replace("language_model.", "")
        .replace("text_model.", "");
    if skipped(&name) {
        return Ok(Mapped::Skip);
    }
    let unknown = || ConvertError::UnknownTensor {
        tensor: hf_name.to_owned(),
    };
    let (stem, suffix) = match name.strip_suffix(".weight") {
        Some(s) => (s, "weight"),
        None => (name.strip_suffix(".bias").ok_or_else(unknown)?, "bias"),
    };
    let fixed = match stem {
        "model.embed_tokens" => Some("token_embd"),
        "model.norm" => Some("output_norm"),
        "lm_head" => Some("output"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Ok(Mapped::one(format!("{f}.{suffix}"), None));
    }
    let rest = stem.strip_prefix("model.layers.").ok_or_else(unknown)?;
    let (bid, part) = rest.split_once('.').ok_or_else(unknown)?;
    let bid: u64 = bid
        .parse()
        .ok()
        .filter(|&b| b < cfg.num_hidden_layers)
        .ok_or_else(unknown)?;
    let (gguf, permute_heads) = match part {
        "input_layernorm" => ("attn_norm", None),
        "self_attn.q_proj" => ("attn_q", Some(cfg.num_attention_heads)),
        "self_attn.k_proj" => ("attn_k", Some(cfg.num_key_value_heads)),
        "self_attn.v_proj" => ("attn_v", None),
        "self_attn.o_proj" => ("attn_output", None),
        "post_attention_layernorm" => ("ffn_norm", None),
        "mlp.gate_proj" => ("ffn_gate", None),
        "mlp.up_proj" => ("ffn_up", None),
        "mlp.down_proj" => ("ffn_down", None),
        _ => return Err(unknown()),
    };
    Ok(Mapped::one(
        format!("blk.{bid}.{gguf}.{suffix}"),
        permute_heads,
    ))
}

/// The checkpoint (row-major) shape the config implies for a GGUF tensor.
pub fn expected_shape(gguf_name: &str, cfg: &LlamaConfig) -> Option<Vec<u64>> {
    let e = cfg.hidden_size;
    // Saturating: a hostile config must not overflow; it just matches nothing.
    let q = cfg.num_attention_heads.saturating_mul(cfg.head_dim);
    let kv = cfg.num_key_value_heads.saturating_mul(cfg.head_dim);
    let ff = cfg.intermediate_size;
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    let kind = stem.rsplit('.').next()?;
    let weight = match kind {
        "token_embd" | "output" => vec![cfg.vocab_size, e],
        "output_norm" | "attn_norm" | "ffn_norm" => vec![e],
        "attn_q" => vec![q, e],
        "attn_k" | "attn_v" => vec![kv, e],
        "attn_output" => vec![e, q],
        "ffn_gate" | "ffn_up" => vec![ff, e],
        "ffn_down" => vec![e, ff],
        _ => return None,
    };
    Some(if suffix == "bias" {
        weight[..1].to_vec()
    } else {
        weight
    })
}

/// The first tensor every Llama checkpoint has (`output` is optional:
/// without it the embeddings are tied) that `present` lacks. Layers are
/// visited up to one past the number of tensors, so a hostile layer count
/// costs nothing.
pub fn first_missing(
    cfg: &LlamaConfig,
    n_tensors: usize,
    present: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let fixed = ["token_embd.weight", "output_norm.weight"];
    if let Some(f) = fixed.iter().find(|n| !present(n)) {
        return Some((*f).to_owned());
    }
    let layers = cfg.num_hidden_layers.min(n_tensors as u64 + 1);
    for i in 0..layers {
        for t in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            let name = format!("blk.{i}.{t}.weight");
            if !present(&name) {
                return Some(name);
            }
        }
    }
    None
}

/// `LlamaModel.permute`: within each head, rows `[x0..x(d/2), y0..y(d/2)]`
/// (Hugging Face's rotate-half layout) become `[x0, y0, x1, y1, ...]`
/// (GGML's interleaved pairs). Returns the source row of output row `r`;
/// `rows` must be a multiple of `2 * n_head`.
pub fn permuted_row(r: usize, rows: usize, n_head: usize) -> usize {
    let head = rows / n_head;
    let half = head / 2;
    let (h, within) = (r / head, r % head);
    let (i, j) = (within / 2, within % 2);
    h * head + j * half + i
}

/// `LlamaModel.generate_extra_tensors`: the llama3 RoPE frequency factors,
/// in f32 arithmetic as the converter's torch code does it.
pub fn rope_freqs(cfg: &LlamaConfig) -> Option<Vec<f32>> {
    let Some(RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings: old_ctx,
    }) = cfg.rope_scaling
    else {
        return None;
    };
    let dim = cfg.head_dim as usize;
    let base = cfg.rope_theta as f32;
    let low_wavelen = old_ctx / low_freq_factor;
    let high_wavelen = old_ctx / high_freq_factor;
    let two_pi = std::f64::consts::PI * 2.0;
    let out = (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
            let wavelen = (two_pi as f32) / freq;
            if wavelen < high_wavelen as f32 {
                1.0
            } else if wavelen > low_wavelen as f32 {
                factor as f32
            } else {
                let smooth = ((old_ctx as f32) / wavelen - low_freq_factor as f32)
                    / (high_freq_factor - low_freq_factor) as f32;
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_two_halves_of_each_head() {
        // 2 heads of 4 rows: [a0 a1 b0 b1 | c0 c1 d0 d1] -> [a0 b0 a1 b1 | c0 d0 c1 d1].
        let src: Vec<usize> = (0..8).map(|r| permuted_row(r, 8, 2)).collect();
        assert_eq!(src, [0, 2, 1, 3, 4, 6, 5, 7]);
        // Every source row is used once.
        let mut all: Vec<usize> = (0..64).map(|r| permuted_row(r, 64, 4)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
    }
}
