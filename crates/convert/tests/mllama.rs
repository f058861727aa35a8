//! Llama 3.2 Vision checkpoints (the tiny random ones of
//! scripts/make-tiny-mllama.py) converted to ollama's unified mllama layout.
//! The expectations are written out here from the layout's description and
//! the checkpoint's own values (read back with the safetensors reader), not
//! from the converter's tables: names and shapes, metadata, the activated
//! gates, where the permutation puts each Q/K row, the output types.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use edgellama_convert::{ConvertError, Converter, OutType};
use edgellama_gguf::formats::{Dtype, SafetensorsFile};
use edgellama_gguf::{GgmlType, GgufFile};
use edgellama_kernels::convert::bf16_to_f32;
use serde_json::{json, Value};

fn tiny(name: &str) -> PathBuf {
    testdata(&format!("{name}/config.json"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn convert_dir(dir: &Path, outtype: OutType) -> (Vec<u8>, GgufFile) {
    let mut conv =
        Converter::open(dir, outtype).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    conv.set_threads(2);
    let bytes = conv.to_bytes().unwrap();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    (bytes, file)
}

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("convert-mllama")
        .join(name)
}

/// `dir` is a copy of `src` (files hard-linked) under the name `leaf`.
fn linked_copy(src: &Path, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dir.join(p.file_name().unwrap());
        if std::fs::hard_link(&p, &to).is_err() {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

/// Every value of a checkpoint tensor (BF16 in these files) as f32.
fn source_values(dir: &Path, name: &str) -> (Vec<u64>, Vec<f32>) {
    let f = SafetensorsFile::open(dir.join("model.safetensors")).unwrap();
    let t = f
        .tensor(name)
        .unwrap_or_else(|| panic!("no {name} in the checkpoint"));
    assert_eq!(t.dtype, Dtype::BF16, "{name}");
    let v = f.view(t);
    let vals = v
        .data
        .chunks_exact(2)
        .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    (t.shape.clone(), vals)
}

fn f32_data(file: &GgufFile, name: &str) -> Vec<f32> {
    let (info, data) = file
        .tensor_bytes(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(info.ggml_type, GgmlType::F32, "{name}");
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The model's dimensions, as make-tiny-mllama.py sets them.
struct Dims {
    layers: u64,
    cross: Vec<u64>,
}

const VOCAB: u64 = 128256;
const E: u64 = 32;
const N_HEAD: u64 = 4;
const N_KV: u64 = 2;
const HD: u64 = 8;
const FF: u64 = 64;
const VD: u64 = 32;
const V_HEADS: u64 = 4;
const VFF: u64 = 64;
const V_LAYERS: u64 = 4;
const V_GLOBAL: u64 = 2;
const PATCH: u64 = 14;
/// 4x4 patches of a 56-pixel tile, plus the class token.
const N_TOK: u64 = 17;
const TILES: u64 = 4;
/// Aspect ratios of up to 4 tiles (8), plus id 0.
const N_AR: u64 = 9;

/// Every tensor of the file with its GGUF dims (HF shape reversed), from
/// the layout's description.
fn expected_tensors(d: &Dims) -> BTreeMap<String, Vec<u64>> {
    let mut t = BTreeMap::new();
    let mut put = |n: String, dims: &[u64]| {
        assert!(t.insert(n, dims.to_vec()).is_none());
    };
    put("token_embd.weight".into(), &[E, VOCAB + 8]);
    put("output.weight".into(), &[E, VOCAB]);
    put("output_norm.weight".into(), &[E]);
    put("rope_freqs.weight".into(), &[HD / 2]);
    for i in 0..d.layers {
        let b = format!("blk.{i}.");
        put(format!("{b}attn_norm.weight"), &[E]);
        put(format!("{b}ffn_norm.weight"), &[E]);
        put(format!("{b}ffn_gate.weight"), &[E, FF]);
        put(format!("{b}ffn_up.weight"), &[E, FF]);
        put(format!("{b}ffn_down.weight"), &[FF, E]);
        if d.cross.contains(&i) {
            put(format!("{b}cross_attn_q_proj.weight"), &[E, N_HEAD * HD]);
            put(format!("{b}cross_attn_k_proj.weight"), &[E, N_KV * HD]);
            put(format!("{b}cross_attn_v_proj.weight"), &[E, N_KV * HD]);
            put(format!("{b}cross_attn_o_proj.weight"), &[N_HEAD * HD, E]);
            put(format!("{b}cross_attn_q_norm.weight"), &[HD]);
            put(format!("{b}cross_attn_k_norm.weight"), &[HD]);
            put(format!("{b}cross_attn_attn_gate"), &[1]);
            put(format!("{b}cross_attn_mlp_gate"), &[1]);
        } else {
            put(format!("{b}attn_q.weight"), &[E, N_HEAD * HD]);
            put(format!("{b}attn_k.weight"), &[E, N_KV * HD]);
            put(format!("{b}attn_v.weight"), &[E, N_KV * HD]);
            put(format!("{b}attn_output.weight"), &[N_HEAD * HD, E]);
        }
    }
    put("v.patch_embd.weight".into(), &[PATCH, PATCH, 3, VD]);
    put("v.class_embd".into(), &[VD]);
    put("v.position_embd.weight".into(), &[VD, N_TOK]);
    put("v.position_embd.gate".into(), &[1]);
    put(
        "v.tile_position_embd.weight".into(),
        &[TILES * N_TOK * VD, N_AR],
    );
    put("v.tile_position_embd.gate".into(), &[1]);
    for p in ["pre", "post"] {
        put(
            format!("v.{p}_tile_position_embd.weight"),
            &[TILES * VD, N_AR],
        );
        put(format!("v.{p}_tile_position_embd.gate"), &[1]);
        put(format!("v.{p}_ln.weight"), &[VD]);
        put(format!("v.{p}_ln.bias"), &[VD]);
    }
    let blocks = (0..V_LAYERS)
        .map(|i| (format!("v.blk.{i}."), false))
        .chain((0..V_GLOBAL).map(|i| (format!("v.global.blk.{i}."), true)));
    for (b, global) in blocks {
        for n in ["attn_norm", "ffn_norm"] {
            put(format!("{b}{n}.weight"), &[VD]);
            put(format!("{b}{n}.bias"), &[VD]);
        }
        for n in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            put(format!("{b}{n}.weight"), &[VD, VD]);
        }
        put(format!("{b}ffn_up.weight"), &[VD, VFF]);
        put(format!("{b}ffn_up.bias"), &[VFF]);
        put(format!("{b}ffn_down.weight"), &[VFF, VD]);
        put(format!("{b}ffn_down.bias"), &[VD]);
        if global {
            put(format!("{b}attn_gate"), &[1]);
            put(format!("{b}ffn_gate"), &[1]);
        }
    }
    put("mm.0.weight".into(), &[VD * 3, E]);
    put("mm.0.bias".into(), &[E]);
    t
}

fn tensor_map(file: &GgufFile) -> BTreeMap<String, Vec<u64>> {
    let mut m = BTreeMap::new();
    for t in file.tensors() {
        assert!(
            m.insert(t.name.clone(), t.dims.clone()).is_none(),
            "{} twice",
            t.name
        );
    }
    m
}

fn check_layout(name: &str, d: &Dims) {
    let (_, file) = convert_dir(&tiny(name), OutType::F32);
    let want = expected_tensors(d);
    let got = tensor_map(&file);
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: missing {missing:?}, unexpected {extra:?}"
    );
    assert_eq!(got, want, "{name}: dims");
    assert_eq!(file.tensors().len(), want.len());
    for t in file.tensors() {
        assert_eq!(
            t.ggml_type,
            GgmlType::F32,
            "{name}: {} with --outtype f32",
            t.name
        );
    }
    // Generated first, as the Llama path writes it.
    assert_eq!(file.tensors()[0].name, "rope_freqs.weight");

    let u32_of = |k: &str| {
        file.get_u32(k)
            .unwrap_or_else(|e| panic!("{name}: {k}: {e}"))
    };
    let f32_of = |k: &str| {
        file.get_f32(k)
            .unwrap_or_else(|e| panic!("{name}: {k}: {e}"))
    };
    let arr = |k: &str| {
        file.get_array(k)
            .unwrap_or_else(|e| panic!("{name}: {k}: {e}"))
            .clone()
    };
    assert_eq!(file.architecture().unwrap(), "mllama");
    for (k, v) in [
        ("mllama.vocab_size", VOCAB),
        ("mllama.block_count", d.layers),
        ("mllama.context_length", 131072),
        ("mllama.embedding_length", E),
        ("mllama.feed_forward_length", FF),
        ("mllama.attention.head_count", N_HEAD),
        ("mllama.attention.head_count_kv", N_KV),
        ("mllama.rope.dimension_count", HD),
        ("mllama.vision.block_count", V_LAYERS),
        ("mllama.vision.global.block_count", V_GLOBAL),
        ("mllama.vision.embedding_length", VD),
        ("mllama.vision.feed_forward_length", VFF),
        ("mllama.vision.attention.head_count", V_HEADS),
        ("mllama.vision.image_size", 56),
        ("mllama.vision.patch_size", PATCH),
        ("mllama.vision.max_num_tiles", TILES),
        ("mllama.vision.num_channels", 3),
        ("mllama.image_token_id", 128256),
        ("general.file_type", 0),
    ] {
        assert_eq!(u64::from(u32_of(k)), v, "{name}: {k}");
    }
    assert_eq!(f32_of("mllama.rope.freq_base"), 500000.0);
    assert_eq!(f32_of("mllama.attention.layer_norm_rms_epsilon"), 1e-5f32);
    assert_eq!(
        f32_of("mllama.vision.attention.layer_norm_epsilon"),
        1e-5f32
    );
    let cross: Vec<i32> = d.cross.iter().map(|&c| c as i32).collect();
    assert_eq!(
        arr("mllama.attention.cross_attention_layers").i32s(),
        Some(&cross[..])
    );
    assert_eq!(
        arr("mllama.vision.intermediate_layers_indices").i32s(),
        Some(&[0, 2][..])
    );
    // preprocessor_config.json's (CLIP's) values, as f32.
    let mean = [0.48145466f64, 0.4578275, 0.40821073].map(|x| x as f32);
    let std = [0.26862954f64, 0.26130258, 0.27577711].map(|x| x as f32);
    assert_eq!(arr("mllama.vision.image_mean").f32s(), Some(&mean[..]));
    assert_eq!(arr("mllama.vision.image_std").f32s(), Some(&std[..]));
    for k in file.metadata().iter().map(|(k, _)| k) {
        assert!(
            !k.contains("rope.scaling"),
            "{name}: {k}: llama3 scaling is rope_freqs"
        );
    }

    // The vocabulary runs to <|image|>; the embedding has 8 rows more than
    // the output.
    let tokens = arr("tokenizer.ggml.tokens");
    assert_eq!(tokens.len(), 128257, "{name}");
    assert_eq!(tokens.strings().unwrap()[128256], "<|image|>");
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "llama-bpe");
    assert_eq!(u32_of("tokenizer.ggml.bos_token_id"), 128000);
    let template = file.get_str("tokenizer.chat_template").unwrap();
    assert!(template.contains("<|image|>"), "{name}: chat template");
    assert_eq!(
        file.tensor("token_embd.weight").unwrap().dims,
        [E, VOCAB + 8]
    );
}

#[test]
fn names_shapes_and_metadata_of_the_11b_pattern() {
    check_layout(
        "tiny-mllama",
        &Dims {
            layers: 5,
            cross: vec![1, 3],
        },
    );
}

#[test]
fn names_shapes_and_metadata_of_the_90b_pattern() {
    check_layout(
        "tiny-mllama-90b-pattern",
        &Dims {
            layers: 10,
            cross: vec![3, 8],
        },
    );
}

#[test]
fn hub_and_in_memory_layouts_give_the_same_file() {
    // Under the same directory name: general.name comes from it.
    let mem = scratch("inmemory").join("tiny-mllama");
    linked_copy(&tiny("tiny-mllama-inmemory"), &mem);
    let (hub_bytes, _) = convert_dir(&tiny("tiny-mllama"), OutType::F32);
    let (mem_bytes, _) = convert_dir(&mem, OutType::F32);
    assert!(
        hub_bytes == mem_bytes,
        "the two layouts convert differently"
    );
}

/// `LlamaModel.permute`, written as the reshape it is: rows of each head
/// `(2, head_dim / 2)` transposed to `(head_dim / 2, 2)`.
fn permute_rows(src: &[f32], row_len: usize, n_head: usize) -> Vec<f32> {
    let rows = src.len() / row_len;
    let hd = rows / n_head;
    let mut out = vec![0f32; src.len()];
    for h in 0..n_head {
        for half in 0..2 {
            for i in 0..hd / 2 {
                let from = h * hd + half * (hd / 2) + i;
                let to = h * hd + i * 2 + half;
                out[to * row_len..(to + 1) * row_len]
                    .copy_from_slice(&src[from * row_len..(from + 1) * row_len]);
            }
        }
    }
    out
}

#[test]
fn values_gates_and_permuted_rows() {
    let dir = tiny("tiny-mllama");
    let (_, file) = convert_dir(&dir, OutType::F32);
    let t = "language_model.model.layers.";
    let v = "vision_model.";

    // Q/K rows where the Llama permutation puts them, with the head count
    // of each.
    for (gguf, hf, heads) in [
        (
            "blk.0.attn_q.weight",
            format!("{t}0.self_attn.q_proj.weight"),
            N_HEAD,
        ),
        (
            "blk.0.attn_k.weight",
            format!("{t}0.self_attn.k_proj.weight"),
            N_KV,
        ),
        (
            "blk.1.cross_attn_q_proj.weight",
            format!("{t}1.cross_attn.q_proj.weight"),
            N_HEAD,
        ),
        (
            "blk.3.cross_attn_k_proj.weight",
            format!("{t}3.cross_attn.k_proj.weight"),
            N_KV,
        ),
        (
            "v.blk.2.attn_q.weight",
            format!("{v}transformer.layers.2.self_attn.q_proj.weight"),
            V_HEADS,
        ),
        (
            "v.global.blk.1.attn_k.weight",
            format!("{v}global_transformer.layers.1.self_attn.k_proj.weight"),
            V_HEADS,
        ),
    ] {
        let (shape, src) = source_values(&dir, &hf);
        let want = permute_rows(&src, shape[1] as usize, heads as usize);
        assert_ne!(want, src, "{gguf}: the permutation moves rows");
        assert_eq!(f32_data(&file, gguf), want, "{gguf}");
    }

    // Unpermuted tensors hold the checkpoint's values in its order.
    for (gguf, hf) in [
        (
            "blk.1.cross_attn_q_norm.weight",
            format!("{t}1.cross_attn.q_norm.weight"),
        ),
        (
            "blk.1.cross_attn_k_norm.weight",
            format!("{t}1.cross_attn.k_norm.weight"),
        ),
        (
            "blk.1.cross_attn_v_proj.weight",
            format!("{t}1.cross_attn.v_proj.weight"),
        ),
        (
            "blk.0.attn_v.weight",
            format!("{t}0.self_attn.v_proj.weight"),
        ),
        (
            "token_embd.weight",
            "language_model.model.embed_tokens.weight".into(),
        ),
        ("output.weight", "language_model.lm_head.weight".into()),
        ("v.patch_embd.weight", format!("{v}patch_embedding.weight")),
        ("v.class_embd", format!("{v}class_embedding")),
        (
            "v.position_embd.weight",
            format!("{v}gated_positional_embedding.embedding"),
        ),
        (
            "v.tile_position_embd.weight",
            format!("{v}gated_positional_embedding.tile_embedding.weight"),
        ),
        (
            "v.pre_tile_position_embd.weight",
            format!("{v}pre_tile_positional_embedding.embedding.weight"),
        ),
        (
            "v.blk.0.attn_v.weight",
            format!("{v}transformer.layers.0.self_attn.v_proj.weight"),
        ),
        (
            "v.blk.3.ffn_up.bias",
            format!("{v}transformer.layers.3.mlp.fc1.bias"),
        ),
        (
            "v.global.blk.0.ffn_down.weight",
            format!("{v}global_transformer.layers.0.mlp.fc2.weight"),
        ),
        ("mm.0.weight", "multi_modal_projector.weight".into()),
        ("mm.0.bias", "multi_modal_projector.bias".into()),
    ] {
        assert_eq!(f32_data(&file, gguf), source_values(&dir, &hf).1, "{gguf}");
    }

    // Gates: the text ones raw, the vision ones activated in f32.
    let gate = |hf: &str| {
        let (shape, vals) = source_values(&dir, hf);
        assert_eq!(shape, [1], "{hf}");
        assert!(vals[0].abs() >= 0.29, "{hf}: the tiny gates are nonzero");
        vals[0]
    };
    let tanh = |x: f32| x.tanh();
    let cases: Vec<(&str, f32)> = vec![
        (
            "blk.1.cross_attn_attn_gate",
            gate(&format!("{t}1.cross_attn_attn_gate")),
        ),
        (
            "blk.3.cross_attn_mlp_gate",
            gate(&format!("{t}3.cross_attn_mlp_gate")),
        ),
        (
            "v.position_embd.gate",
            1.0 - tanh(gate(&format!("{v}gated_positional_embedding.gate"))),
        ),
        (
            "v.tile_position_embd.gate",
            tanh(gate(&format!("{v}gated_positional_embedding.gate"))),
        ),
        (
            "v.pre_tile_position_embd.gate",
            tanh(gate(&format!("{v}pre_tile_positional_embedding.gate"))),
        ),
        (
            "v.post_tile_position_embd.gate",
            tanh(gate(&format!("{v}post_tile_positional_embedding.gate"))),
        ),
        (
            "v.global.blk.0.attn_gate",
            tanh(gate(&format!("{v}global_transformer.layers.0.gate_attn"))),
        ),
        (
            "v.global.blk.1.ffn_gate",
            tanh(gate(&format!("{v}global_transformer.layers.1.gate_ffn"))),
        ),
    ];
    for (name, want) in cases {
        let got = f32_data(&file, name);
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(
            got[0].to_bits(),
            want.to_bits(),
            "{name}: {} != {want}",
            got[0]
        );
    }
}

#[test]
fn auto_keeps_bf16_text_and_writes_the_tower_in_f16() {
    let (_, file) = convert_dir(&tiny("tiny-mllama"), OutType::Auto);
    assert_eq!(file.get_u32("general.file_type").unwrap(), 32, "BF16");
    for t in file.tensors() {
        let n = t.name.as_str();
        let want = if t.dims.len() == 1
            || !n.ends_with(".weight")
            || n.ends_with("_norm.weight")
            || n.contains("position_embd.")
        {
            GgmlType::F32
        } else if n.starts_with("v.") || n.starts_with("mm.") {
            GgmlType::F16
        } else {
            GgmlType::BF16
        };
        assert_eq!(t.ggml_type, want, "{n}");
    }
}

// ---- errors -------------------------------------------------------------------

/// The tiny checkpoint (hard-linked) with config.json and the weights edited.
fn edited(
    name: &str,
    edit_config: impl FnOnce(&mut Value),
    edit_tensors: impl FnOnce(&mut Vec<(String, Dt, Vec<u64>, Vec<u8>)>),
) -> PathBuf {
    let src = tiny("tiny-mllama");
    let d = scratch(name);
    linked_copy(&src, &d);
    let mut config = read_json(&src.join("config.json"));
    edit_config(&mut config);
    let _ = std::fs::remove_file(d.join("config.json")); // hard-linked: do not write through
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();

    let f = SafetensorsFile::open(src.join("model.safetensors")).unwrap();
    let mut tensors: Vec<_> = f
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                Dt::BF16,
                t.shape.clone(),
                f.view(t).data.to_vec(),
            )
        })
        .collect();
    edit_tensors(&mut tensors);
    let _ = std::fs::remove_file(d.join("model.safetensors"));
    std::fs::write(d.join("model.safetensors"), safetensors_bytes(&tensors)).unwrap();
    d
}

fn open_err(dir: &Path) -> ConvertError {
    match Converter::open(dir, OutType::F32) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => e,
    }
}

fn bf16_zeros(n: u64) -> Vec<u8> {
    vec![0u8; 2 * n as usize]
}

#[test]
fn broken_checkpoints_are_named() {
    type Tensors = Vec<(String, Dt, Vec<u64>, Vec<u8>)>;
    type Check = fn(&ConvertError) -> bool;
    let keep = |_: &mut Tensors| {};
    let same = |_: &mut Value| {};
    let cases: Vec<(&str, PathBuf, Check)> = vec![
        (
            "no vision_config",
            edited(
                "no-vision-config",
                |c| {
                    c.as_object_mut().unwrap().remove("vision_config");
                },
                keep,
            ),
            |e| matches!(e, ConvertError::BadConfig { message, .. } if message.contains("vision_config")),
        ),
        (
            "a missing vision tensor",
            edited("missing-vision", same, |t| {
                t.retain(|x| x.0 != "vision_model.transformer.layers.2.self_attn.k_proj.weight")
            }),
            |e| matches!(e, ConvertError::MissingTensor { tensor } if tensor == "v.blk.2.attn_k.weight"),
        ),
        (
            "a missing global gate",
            edited("missing-gate", same, |t| {
                t.retain(|x| x.0 != "vision_model.global_transformer.layers.1.gate_ffn")
            }),
            |e| matches!(e, ConvertError::MissingTensor { tensor } if tensor == "v.global.blk.1.ffn_gate"),
        ),
        (
            "a tile embedding of the wrong shape",
            edited("wrong-shape", same, |t| {
                let x = t
                    .iter_mut()
                    .find(|x| {
                        x.0 == "vision_model.gated_positional_embedding.tile_embedding.weight"
                    })
                    .unwrap();
                x.2 = vec![N_AR - 1, TILES * N_TOK * VD];
                x.3 = bf16_zeros((N_AR - 1) * TILES * N_TOK * VD);
            }),
            |e| {
                matches!(e, ConvertError::ShapeMismatch { tensor, expected, .. }
                if tensor.ends_with("tile_embedding.weight") && expected == &[N_AR, TILES * N_TOK * VD])
            },
        ),
        (
            "an unknown tensor name",
            edited("unknown", same, |t| {
                t.push((
                    "vision_model.transformer.layers.0.self_attn.q_proj.bias".into(),
                    Dt::BF16,
                    vec![VD],
                    bf16_zeros(VD),
                ))
            }),
            |e| matches!(e, ConvertError::UnknownTensor { tensor } if tensor.ends_with("q_proj.bias")),
        ),
        (
            "self-attention weights in a cross-attention layer",
            edited("self-in-cross", same, |t| {
                t.push((
                    "language_model.model.layers.1.self_attn.q_proj.weight".into(),
                    Dt::BF16,
                    vec![N_HEAD * HD, E],
                    bf16_zeros(N_HEAD * HD * E),
                ))
            }),
            |e| matches!(e, ConvertError::UnknownTensor { .. }),
        ),
        (
            "both layouts at once",
            edited("both-layouts", same, |t| {
                let x = t
                    .iter()
                    .find(|x| x.0 == "multi_modal_projector.bias")
                    .unwrap()
                    .clone();
                t.push(("model.multi_modal_projector.bias".into(), x.1, x.2, x.3));
            }),
            |e| matches!(e, ConvertError::DuplicateTensor { gguf_name, .. } if gguf_name == "mm.0.bias"),
        ),
        (
            "a cross-attention layer past the last layer",
            edited(
                "cross-past-end",
                |c| c["text_config"]["cross_attention_layers"] = json!([1, 5]),
                keep,
            ),
            |e| matches!(e, ConvertError::BadConfig { message, .. } if message.contains("cross_attention_layers")),
        ),
        (
            "aspect ratios other than max_num_tiles'",
            edited(
                "aspect-ratios",
                |c| c["vision_config"]["supported_aspect_ratios"] = json!([[1, 1], [1, 2]]),
                keep,
            ),
            |e| matches!(e, ConvertError::BadConfig { message, .. } if message.contains("supported_aspect_ratios")),
        ),
        (
            "an unknown architecture",
            edited(
                "arch",
                |c| c["architectures"] = json!(["LlavaForConditionalGeneration"]),
                keep,
            ),
            |e| {
                matches!(e, ConvertError::UnsupportedArchitecture { found: Some(a) }
                if a == "LlavaForConditionalGeneration"
                    && e.to_string().contains("MllamaForConditionalGeneration"))
            },
        ),
    ];
    for (what, dir, want) in cases {
        let e = open_err(&dir);
        assert!(want(&e), "{what}: unexpected error {e}");
    }
}

#[test]
fn preprocessor_values_are_read_and_checked() {
    let rewrite = |d: &Path, v: Value| {
        let p = d.join("preprocessor_config.json");
        let _ = std::fs::remove_file(&p);
        std::fs::write(p, v.to_string()).unwrap();
    };
    let base = read_json(&tiny("tiny-mllama").join("preprocessor_config.json"));

    let d = edited("preprocessor-mean", |_| {}, |_| {});
    let mut p = base.clone();
    p["image_mean"] = json!([0.5, 0.25, 0.125]);
    p["image_std"] = json!([2.0, 4.0, 8.0]);
    rewrite(&d, p);
    let conv = Converter::open(&d, OutType::F32).unwrap();
    let md = |k: &str| {
        conv.metadata()
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.as_array())
            .and_then(|a| a.as_f32_vec())
            .unwrap_or_else(|| panic!("{k}"))
    };
    assert_eq!(md("mllama.vision.image_mean"), [0.5, 0.25, 0.125]);
    assert_eq!(md("mllama.vision.image_std"), [2.0, 4.0, 8.0]);

    for (what, edit) in [
        ("two means", json!({"image_mean": [0.5, 0.5]})),
        ("a zero std", json!({"image_std": [0.0, 1.0, 1.0]})),
        (
            "another tile size",
            json!({"size": {"height": 448, "width": 448}}),
        ),
        ("another rescale", json!({"rescale_factor": 0.5})),
        ("more tiles", json!({"max_image_tiles": 8})),
    ] {
        let mut p = base.clone();
        for (k, v) in edit.as_object().unwrap() {
            p[k] = v.clone();
        }
        rewrite(&d, p);
        let e = open_err(&d);
        assert!(
            matches!(&e, ConvertError::BadConfig { path, .. } if path.ends_with("preprocessor_config.json")),
            "{what}: unexpected error {e}"
        );
    }
}
