//! Shared by the integration tests: the tiny Llama-3.2-shaped checkpoints of
//! scripts/golden/convert/make_tiny_hf.py rebuilt in Rust (same values, same
//! files apart from JSON formatting), the goldens, and hashing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use edgellama_gguf::{ArrayValues, GgufFile, MetadataArray, MetadataValue};
use edgellama_kernels::convert::{f32_to_bf16, f32_to_f16};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn golden_dir() -> PathBuf {
    root().join("scripts/golden/convert")
}

/// A file from the test data directory; fails loudly when it is missing.
pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/testdata"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test data file {} is missing: run scripts/fetch-testdata.sh",
        path.display()
    );
    path
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

/// What convert_hf_to_gguf.py wrote (scripts/golden/convert/make_goldens.py).
pub fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| read_json(&golden_dir().join("goldens/convert.json")))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- make_tiny_hf.py, ported ------------------------------------------------

pub const SEED: u64 = 0x3D5A_11A3;
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
pub const N_VOCAB: u64 = 128256;
pub const N_EMBD: u64 = 64;
pub const N_HEAD: u64 = 4;
pub const N_HEAD_KV: u64 = 2;
pub const HEAD_DIM: u64 = 16;
pub const N_FF: u64 = 192;
pub const N_LAYER: u64 = 2;
const IMAGE_TOKEN_ID: u64 = 128256;

/// (name, shape, scale, offset), in make_tiny_hf.py's TENSORS order.
pub fn tensor_specs() -> Vec<(String, Vec<u64>, f32, f32)> {
    let mut t = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![N_VOCAB, N_EMBD],
        0.05f32,
        0.0f32,
    )];
    for i in 0..N_LAYER {
        let p = format!("model.layers.{i}.");
        let q = N_HEAD * HEAD_DIM;
        let kv = N_HEAD_KV * HEAD_DIM;
        for (n, s, sc, off) in [
            ("input_layernorm.weight", vec![N_EMBD], 0.1, 1.0),
            ("self_attn.q_proj.weight", vec![q, N_EMBD], 0.25, 0.0),
            ("self_attn.k_proj.weight", vec![kv, N_EMBD], 0.25, 0.0),
            ("self_attn.v_proj.weight", vec![kv, N_EMBD], 0.2, 0.0),
            ("self_attn.o_proj.weight", vec![N_EMBD, q], 0.2, 0.0),
            ("post_attention_layernorm.weight", vec![N_EMBD], 0.1, 1.0),
            ("mlp.gate_proj.weight", vec![N_FF, N_EMBD], 0.2, 0.0),
            ("mlp.up_proj.weight", vec![N_FF, N_EMBD], 0.2, 0.0),
            ("mlp.down_proj.weight", vec![N_EMBD, N_FF], 0.15, 0.0),
        ] {
            t.push((format!("{p}{n}"), s, sc, off));
        }
    }
    t.push(("model.norm.weight".into(), vec![N_EMBD], 2.0, 20.0));
    t.push(("lm_head.weight".into(), vec![N_VOCAB, N_EMBD], 0.05, 0.0));
    t
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Element j of tensor number `index`: make_tiny_hf.py's counter-based hash.
pub fn tensor_values(index: u64, n: u64, scale: f32, offset: f32) -> Vec<f32> {
    let base = SEED.wrapping_add(index << 32);
    (1..=n)
        .map(|j| {
            let z = mix64(base.wrapping_add(j.wrapping_mul(GAMMA)));
            let u = (z >> 40) as f32 * (1.0 / 16_777_216.0);
            (u * 2.0 - 1.0) * scale + offset
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dt {
    F32,
    F16,
    BF16,
}

impl Dt {
    pub fn name(self) -> &'static str {
        match self {
            Dt::F32 => "F32",
            Dt::F16 => "F16",
            Dt::BF16 => "BF16",
        }
    }
}

pub fn encode(values: &[f32], dt: Dt) -> Vec<u8> {
    match dt {
        Dt::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dt::F16 => values
            .iter()
            .flat_map(|&x| f32_to_f16(x).to_le_bytes())
            .collect(),
        Dt::BF16 => values
            .iter()
            .flat_map(|&x| f32_to_bf16(x).to_le_bytes())
            .collect(),
    }
}

/// (name, dtype, tied, shards, generation config), as VARIANTS.
pub const VARIANTS: [(&str, Dt, bool, usize, bool); 3] = [
    ("tiny-llama32-tied-bf16", Dt::BF16, true, 1, true),
    ("tiny-llama32-untied-f16", Dt::F16, false, 2, false),
    ("tiny-llama32-tied-f32", Dt::F32, true, 1, false),
];

/// A safetensors file: header of sorted tensors padded to 8 bytes, data in
/// header order (the layout the reference writer uses for one dtype).
pub fn safetensors_bytes(tensors: &[(String, Dt, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for (name, dt, shape, data) in &sorted {
        let end = offset + data.len() as u64;
        header.insert(
            name.clone(),
            json!({"dtype": dt.name(), "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&Value::Object(header)).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    for (_, _, _, data) in sorted {
        out.extend_from_slice(data);
    }
    out
}

fn config(tied: bool, dt: Dt) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009],
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": N_EMBD,
        "initializer_range": 0.02,
        "intermediate_size": N_FF,
        "max_position_embeddings": 131072,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": N_HEAD,
        "num_hidden_layers": N_LAYER,
        "num_key_value_heads": N_HEAD_KV,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0,
        "tie_word_embeddings": tied,
        "torch_dtype": match dt { Dt::BF16 => "bfloat16", Dt::F16 => "float16", Dt::F32 => "float32" },
        "transformers_version": "4.45.0.dev0",
        "use_cache": true,
        "vocab_size": N_VOCAB,
    })
}

/// tokenizer.json without `<|image|>`, tokenizer_config.json with the Llama
/// 3.2 chat template when it has none.
fn tokenizer_files() -> (String, String) {
    let mut tok = read_json(&testdata("llama3.2-tokenizer.json"));
    if let Some(added) = tok.get_mut("added_tokens").and_then(Value::as_array_mut) {
        added.retain(|t| t["id"].as_u64() != Some(IMAGE_TOKEN_ID));
    }
    if let Some(vocab) = tok
        .pointer_mut("/model/vocab")
        .and_then(Value::as_object_mut)
    {
        vocab.retain(|_, v| v.as_u64() != Some(IMAGE_TOKEN_ID));
    }
    let mut cfg = read_json(&testdata("llama3.2-tokenizer_config.json"));
    if let Some(dec) = cfg
        .get_mut("added_tokens_decoder")
        .and_then(Value::as_object_mut)
    {
        dec.remove(&IMAGE_TOKEN_ID.to_string());
    }
    if cfg.get("chat_template").is_none() {
        let template = std::fs::read_to_string(golden_dir().join("llama3.2-chat-template.jinja"))
            .expect("llama3.2-chat-template.jinja beside make_tiny_hf.py");
        cfg["chat_template"] = Value::String(template);
    }
    (
        serde_json::to_string_pretty(&tok).unwrap(),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
}

/// The records of make_tiny_hf.py's `<name>.tensors.json`: name, dtype, shape, sha256.
pub type SourceRecord = (String, String, Vec<u64>, String);

/// Writes one variant under `out/<name>` and returns its tensor records.
pub fn write_variant(out: &Path, name: &str) -> Vec<SourceRecord> {
    let &(_, dt, tied, shards, gen) = VARIANTS
        .iter()
        .find(|v| v.0 == name)
        .unwrap_or_else(|| panic!("no variant {name}"));
    let d = out.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let w = |f: &str, text: String| std::fs::write(d.join(f), text).unwrap();
    w(
        "config.json",
        serde_json::to_string_pretty(&config(tied, dt)).unwrap(),
    );
    if gen {
        w(
            "generation_config.json",
            serde_json::to_string_pretty(&json!({
                "bos_token_id": 128000, "do_sample": true,
                "eos_token_id": [128001, 128008, 128009],
                "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"
            }))
            .unwrap(),
        );
    }
    let (tok, tok_cfg) = tokenizer_files();
    w("tokenizer.json", tok);
    w("tokenizer_config.json", tok_cfg);

    let mut tensors = Vec::new();
    let mut records = Vec::new();
    for (index, (tname, shape, scale, offset)) in tensor_specs().into_iter().enumerate() {
        if tied && tname == "lm_head.weight" {
            continue;
        }
        let n = shape.iter().product();
        let data = encode(&tensor_values(index as u64, n, scale, offset), dt);
        records.push((
            tname.clone(),
            dt.name().to_string(),
            shape.clone(),
            sha256_hex(&data),
        ));
        tensors.push((tname, dt, shape, data));
    }
    if shards == 1 {
        std::fs::write(d.join("model.safetensors"), safetensors_bytes(&tensors)).unwrap();
    } else {
        let files = [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ];
        let first = |n: &str| n == "model.embed_tokens.weight" || n.starts_with("model.layers.0.");
        let (a, b): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|t| first(&t.0));
        let mut weight_map = serde_json::Map::new();
        let mut total = 0;
        for (file, part) in files.iter().zip([&a, &b]) {
            for t in part.iter() {
                weight_map.insert(t.0.clone(), json!(file));
                total += t.3.len();
            }
            std::fs::write(d.join(file), safetensors_bytes(part)).unwrap();
        }
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        w(
            "model.safetensors.index.json",
            serde_json::to_string_pretty(&index).unwrap(),
        );
    }
    records
}

/// The three checkpoints, generated once into the target directory and
/// reused (a `.complete` marker is written after their tensors were checked
/// against make_tiny_hf.py's records). Bump the version when the generator
/// changes.
pub fn tiny_checkpoints() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    DIR.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("convert-tiny-hf-v1");
        if dir.join(".complete").is_file() {
            return dir;
        }
        let work = tmp.join(format!("convert-tiny-hf-v1.{}", std::process::id()));
        for (name, ..) in VARIANTS {
            let records = write_variant(&work, name);
            let expected = &golden()["checkpoints"][name]["source_tensors"];
            check_source_records(name, &records, expected);
        }
        std::fs::write(work.join(".complete"), b"").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&work, &dir).is_err() {
            // Another test process finished first: use its copy.
            let _ = std::fs::remove_dir_all(&work);
        }
        dir
    })
}

/// The regenerated tensors must be make_tiny_hf.py's, byte for byte.
fn check_source_records(name: &str, got: &[SourceRecord], expected: &Value) {
    let expected = expected
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no source_tensors"));
    assert_eq!(got.len(), expected.len(), "{name}: tensor count");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g.0, e["name"].as_str().unwrap(), "{name}");
        assert_eq!(g.1, e["dtype"].as_str().unwrap(), "{name} {}", g.0);
        let shape: Vec<u64> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(g.2, shape, "{name} {}", g.0);
        assert_eq!(
            g.3,
            e["sha256"].as_str().unwrap(),
            "{name} {}: values differ from make_tiny_hf.py",
            g.0
        );
    }
}

// ---- comparing with the goldens ----------------------------------------------

/// The elements of an array as GGUF stores them (make_goldens.py hashes these).
pub fn array_encoding(a: &MetadataArray) -> Vec<u8> {
    let mut out = Vec::new();
    match a.values() {
        ArrayValues::String(v) => {
            for s in v {
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        ArrayValues::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        ArrayValues::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        ArrayValues::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        ArrayValues::Bool(v) => v.iter().for_each(|&x| out.push(u8::from(x))),
        other => panic!("array type not used by the converter: {other:?}"),
    }
    out
}

/// One metadata entry in the golden's form, for comparison.
pub fn metadata_json(key: &str, v: &MetadataValue) -> Value {
    match v {
        MetadataValue::Array(a) => json!({
            "key": key, "type": "ARRAY", "element_type": a.element_type().name(),
            "len": a.len(), "sha256": sha256_hex(&array_encoding(a)),
        }),
        MetadataValue::String(s) => json!({"key": key, "type": "STRING", "value": s}),
        MetadataValue::U32(x) => json!({"key": key, "type": "UINT32", "value": x}),
        MetadataValue::I32(x) => json!({"key": key, "type": "INT32", "value": x}),
        MetadataValue::Bool(x) => json!({"key": key, "type": "BOOL", "value": x}),
        // Compared as the f32 the golden's float64 rounds back to.
        MetadataValue::F32(x) => json!({"key": key, "type": "FLOAT32", "value": x}),
        other => panic!("{key}: value type not used by the converter: {other:?}"),
    }
}

/// Our file, in the golden's form.
pub fn describe(file: &GgufFile, bytes: &[u8]) -> Value {
    let metadata: Vec<Value> = file
        .metadata()
        .iter()
        .map(|(k, v)| metadata_json(k, v))
        .collect();
    let tensors: Vec<Value> = file
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "shape": t.dims, "type": t.ggml_type.name().to_uppercase(),
                "offset": t.offset, "sha256": sha256_hex(file.tensor_data(t)),
            })
        })
        .collect();
    json!({
        "file_sha256": sha256_hex(bytes),
        "file_size": bytes.len(),
        "metadata": metadata,
        "tensors": tensors,
    })
}
