//! Checkpoints that cannot be converted are refused with the error that
//! names the problem, before anything is written.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use edgellama_convert::{ConvertError, Converter, OutType};
use edgellama_gguf::formats::FormatError;
use serde_json::{json, Value};

/// A small structural checkpoint (no tokenizer: the checks before the
/// vocabulary fail first).
type Tensor = (String, Dt, Vec<u64>, Vec<u8>);

fn small(dir: &Path, edit: impl FnOnce(&mut Value, &mut Vec<Tensor>)) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut config = json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1,
        "vocab_size": 8, "tie_word_embeddings": true
    });
    let t = |name: &str, shape: Vec<u64>| {
        let n: u64 = shape.iter().product();
        (
            name.to_string(),
            Dt::F32,
            shape,
            encode(&vec![0.5; n as usize], Dt::F32),
        )
    };
    let mut tensors = vec![
        t("model.embed_tokens.weight", vec![8, 32]),
        t("model.norm.weight", vec![32]),
        t("model.layers.0.input_layernorm.weight", vec![32]),
        t("model.layers.0.post_attention_layernorm.weight", vec![32]),
        t("model.layers.0.self_attn.q_proj.weight", vec![32, 32]),
        t("model.layers.0.self_attn.k_proj.weight", vec![16, 32]),
        t("model.layers.0.self_attn.v_proj.weight", vec![16, 32]),
        t("model.layers.0.self_attn.o_proj.weight", vec![32, 32]),
        t("model.layers.0.mlp.gate_proj.weight", vec![64, 32]),
        t("model.layers.0.mlp.up_proj.weight", vec![64, 32]),
        t("model.layers.0.mlp.down_proj.weight", vec![32, 64]),
    ];
    edit(&mut config, &mut tensors);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&tensors)).unwrap();
}

fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("convert-errors")
        .join(name)
}

fn open_err(dir: &Path) -> ConvertError {
    match Converter::open(dir, OutType::Auto) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn structural_problems_are_named() {
    let d = scratch("structure");
    type Edit = Box<dyn Fn(&mut Value, &mut Vec<Tensor>)>;
    type Check = fn(&ConvertError) -> bool;
    let cases: Vec<(&str, Edit, Check)> = vec![
        (
            "no tokenizer (the structure itself is fine)",
            Box::new(|_, _| {}),
            |e| matches!(e, ConvertError::MissingFile { path } if path.ends_with("tokenizer.json")),
        ),
        (
            "another architecture",
            Box::new(|c, _| c["architectures"] = json!(["MistralForCausalLM"])),
            |e| matches!(e, ConvertError::UnsupportedArchitecture { found: Some(a) } if a == "MistralForCausalLM"),
        ),
        (
            "gelu",
            Box::new(|c, _| c["hidden_act"] = json!("gelu")),
            |e| matches!(e, ConvertError::UnsupportedActivation { .. }),
        ),
        (
            "longrope",
            Box::new(|c, _| c["rope_scaling"] = json!({"rope_type": "longrope"})),
            |e| matches!(e, ConvertError::UnsupportedRopeScaling { .. }),
        ),
        (
            "a missing layer tensor",
            Box::new(|_, t| t.retain(|x| !x.0.ends_with("up_proj.weight"))),
            |e| matches!(e, ConvertError::MissingTensor { tensor } if tensor == "blk.0.ffn_up.weight"),
        ),
        (
            "a wrong shape",
            Box::new(|_, t| {
                let k = t
                    .iter_mut()
                    .find(|x| x.0.ends_with("k_proj.weight"))
                    .unwrap();
                k.2 = vec![32, 32];
                k.3 = encode(&[0.0; 1024], Dt::F32);
            }),
            |e| matches!(e, ConvertError::ShapeMismatch { expected, .. } if expected == &[16, 32]),
        ),
        (
            "an unknown tensor",
            Box::new(|_, t| {
                t.push((
                    "model.layers.0.extra.weight".into(),
                    Dt::F32,
                    vec![2],
                    encode(&[1.0, 2.0], Dt::F32),
                ))
            }),
            |e| matches!(e, ConvertError::UnknownTensor { .. }),
        ),
        (
            "a layer beyond num_hidden_layers",
            Box::new(|_, t| {
                t.push((
                    "model.layers.1.input_layernorm.weight".into(),
                    Dt::F32,
                    vec![32],
                    encode(&[1.0; 32], Dt::F32),
                ))
            }),
            |e| matches!(e, ConvertError::UnknownTensor { .. }),
        ),
        (
            "a config that is not an object",
            Box::new(|c, _| *c = json!([1, 2])),
            |e| matches!(e, ConvertError::Format(FormatError::BadConfig { .. })),
        ),
        (
            "heads that do not divide",
            Box::new(|c, _| c["num_key_value_heads"] = json!(3)),
            |e| matches!(e, ConvertError::BadConfig { .. }),
        ),
        (
            "a huge layer count (regression: must not allocate per layer)",
            Box::new(|c, _| c["num_hidden_layers"] = json!(1u64 << 60)),
            |e| matches!(e, ConvertError::MissingTensor { tensor } if tensor == "blk.1.attn_norm.weight"),
        ),
        (
            "a huge head_dim with llama3 RoPE (regression: rope_freqs must not be sized from it)",
            Box::new(|c, _| {
                c["head_dim"] = json!(1u64 << 40);
                c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0});
            }),
            |e| matches!(e, ConvertError::ShapeMismatch { .. }),
        ),
        (
            "heads times head_dim overflowing 64 bits",
            Box::new(|c, _| {
                c["num_attention_heads"] = json!(1u64 << 40);
                c["num_key_value_heads"] = json!(1u64 << 40);
                c["head_dim"] = json!(1u64 << 40);
            }),
            |e| matches!(e, ConvertError::ShapeMismatch { .. }),
        ),
        (
            "a vocab_size beyond 32 bits",
            Box::new(|c, t| {
                c["vocab_size"] = json!(1u64 << 33);
                t.retain(|x| x.0 != "model.embed_tokens.weight");
            }),
            |e| {
                matches!(
                    e,
                    ConvertError::MissingTensor { .. } | ConvertError::TooLarge { .. }
                )
            },
        ),
    ];
    for (what, edit, want) in cases {
        small(&d, |c, t| edit(c, t));
        let e = open_err(&d);
        assert!(want(&e), "{what}: unexpected error {e}");
    }
}

#[test]
fn unsupported_dtypes_are_refused() {
    let d = scratch("dtype");
    // Rewrite the norm as I32 by hand: the test writer only knows floats.
    let mut tensors: Vec<Tensor> = Vec::new();
    small(&d, |_, t| tensors = t.clone());
    let mut bytes = safetensors_bytes(&tensors);
    let text = String::from_utf8_lossy(&bytes[8..]).into_owned();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = &text[..header_len];
    let patched = header.replacen(
        r#""model.norm.weight":{"dtype":"F32""#,
        r#""model.norm.weight":{"dtype":"I32""#,
        1,
    );
    assert_ne!(patched, header, "header layout changed");
    bytes.splice(8..8 + header_len, patched.bytes());
    std::fs::write(d.join("model.safetensors"), bytes).unwrap();
    assert!(matches!(
        open_err(&d),
        ConvertError::UnsupportedDtype { tensor, .. } if tensor == "model.norm.weight"
    ));
}

#[test]
fn broken_shard_indexes_are_refused() {
    let d = scratch("index");
    small(&d, |_, _| {});
    std::fs::rename(
        d.join("model.safetensors"),
        d.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let write_index = |map: Value| {
        std::fs::write(
            d.join("model.safetensors.index.json"),
            json!({"metadata": {}, "weight_map": map}).to_string(),
        )
        .unwrap()
    };
    let f = "model-00001-of-00001.safetensors";
    let all: Vec<&str> = vec![
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ];
    let map = |extra: Option<(&str, &str)>, skip: Option<&str>| {
        let mut m = serde_json::Map::new();
        for n in &all {
            if Some(*n) != skip {
                m.insert(n.to_string(), json!(f));
            }
        }
        if let Some((k, v)) = extra {
            m.insert(k.into(), json!(v));
        }
        Value::Object(m)
    };
    // A complete index passes the weight checks (and stops at the tokenizer).
    write_index(map(None, None));
    assert!(matches!(open_err(&d), ConvertError::MissingFile { .. }));

    write_index(map(Some(("model.layers.0.extra", f)), None));
    assert!(matches!(
        open_err(&d),
        ConvertError::Format(FormatError::MissingFromShard { tensor, .. }) if tensor == "model.layers.0.extra"
    ));
    write_index(map(None, Some("model.norm.weight")));
    assert!(matches!(
        open_err(&d),
        ConvertError::Format(FormatError::NotInIndex { tensor, .. }) if tensor == "model.norm.weight"
    ));
    write_index(map(
        Some(("x", "../model-00001-of-00001.safetensors")),
        None,
    ));
    assert!(matches!(
        open_err(&d),
        ConvertError::Format(FormatError::BadShardName { .. })
    ));
    write_index(map(Some(("x", "model-00002-of-00002.safetensors")), None));
    assert!(matches!(
        open_err(&d),
        ConvertError::Format(FormatError::Io { .. })
    ));
    write_index(json!(["not", "a", "map"]));
    assert!(matches!(
        open_err(&d),
        ConvertError::Format(FormatError::BadJson { .. })
    ));
}

#[test]
fn missing_directory_and_weights() {
    let d = scratch("nothing");
    let _ = std::fs::remove_dir_all(&d);
    assert!(matches!(open_err(&d), ConvertError::NotADirectory { .. }));
    std::fs::create_dir_all(&d).unwrap();
    assert!(matches!(open_err(&d), ConvertError::MissingFile { .. }));
    std::fs::write(
        d.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    assert!(matches!(
        open_err(&d),
        ConvertError::Format(FormatError::NoWeights { .. })
    ));
    assert!(matches!(
        "q4_k".parse::<OutType>(),
        Err(ConvertError::UnknownOutType { .. })
    ));
}

/// The real tiny checkpoint with its weights hard-linked and one tokenizer
/// file replaced.
fn with_tokenizer_files(name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let src = tiny_checkpoints().join("tiny-llama32-tied-f32");
    let d = scratch(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let to = d.join(p.file_name().unwrap());
        if std::fs::hard_link(&p, &to).is_err() {
            std::fs::copy(&p, &to).unwrap();
        }
    }
    edit(&d);
    d
}

fn rewrite_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v = read_json(path);
    f(&mut v);
    let _ = std::fs::remove_file(path); // hard-linked: do not write through
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn vocabulary_problems_are_named() {
    let d = with_tokenizer_files("vocab-small", |d| {
        rewrite_json(&d.join("config.json"), |c| c["vocab_size"] = json!(128000));
    });
    // The embedding no longer matches either: shapes are checked first.
    assert!(matches!(open_err(&d), ConvertError::ShapeMismatch { .. }));

    let d = with_tokenizer_files("vocab-id", |d| {
        rewrite_json(&d.join("tokenizer.json"), |t| {
            t["added_tokens"][0]["id"] = json!(130000);
        });
    });
    assert!(matches!(
        open_err(&d),
        ConvertError::VocabTooSmall { id: 130000, .. }
    ));

    let d = with_tokenizer_files("sentencepiece", |d| {
        std::fs::write(d.join("tokenizer.model"), b"\x0a\x00").unwrap();
    });
    assert!(matches!(
        open_err(&d),
        ConvertError::UnsupportedTokenizer { .. }
    ));

    // GPT-2's splitter on Llama 3's vocabulary: a pre-tokenizer llama.cpp has no hash for.
    let d = with_tokenizer_files("pre", |d| {
        rewrite_json(&d.join("tokenizer.json"), |t| {
            t["pre_tokenizer"] = json!({"type": "ByteLevel", "add_prefix_space": false,
                                        "trim_offsets": true, "use_regex": true});
        });
    });
    assert!(matches!(
        open_err(&d),
        ConvertError::UnknownPreTokenizer { .. }
    ));

    let d = with_tokenizer_files("normalizer", |d| {
        rewrite_json(&d.join("tokenizer.json"), |t| {
            t["normalizer"] = json!({"type": "NFC"})
        });
    });
    assert!(matches!(open_err(&d), ConvertError::Tokenizer { .. }));
}
