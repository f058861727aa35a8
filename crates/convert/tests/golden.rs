//! Our conversions of the tiny Llama-3.2-shaped checkpoints against what
//! llama.cpp's convert_hf_to_gguf.py wrote for them
//! (scripts/golden/convert/goldens/convert.json): every metadata key with its
//! type and value (arrays by hash), every tensor's name, shape, type, offset
//! and data hash, and the whole file.

mod common;

use common::*;
use edgellama_convert::{Converter, OutType};
use edgellama_gguf::GgufFile;
use serde_json::Value;

fn compare(name: &str, outtype: OutType) {
    let dir = tiny_checkpoints().join(name);
    let mut conv = Converter::open(&dir, outtype).unwrap_or_else(|e| panic!("{name}: {e}"));
    conv.set_threads(2);
    let bytes = conv.to_bytes().unwrap();
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    let ours = describe(&file, &bytes);
    let golden = &golden()["checkpoints"][name]["conversions"][outtype.name()];
    assert!(golden.is_object(), "no golden for {name} {outtype}");
    let what = format!("{name} --outtype {outtype}");

    let gm = golden["metadata"].as_array().unwrap();
    let om = ours["metadata"].as_array().unwrap();
    let keys = |m: &[Value]| -> Vec<String> {
        m.iter()
            .map(|e| e["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(om), keys(gm), "{what}: metadata keys and their order");
    for (o, g) in om.iter().zip(gm) {
        let key = g["key"].as_str().unwrap();
        assert_eq!(o["type"], g["type"], "{what}: type of {key}");
        if g["type"] == "FLOAT32" {
            // The golden holds the f32 widened to a double.
            let want = g["value"].as_f64().unwrap() as f32;
            let got = o["value"].as_f64().unwrap() as f32;
            assert_eq!(got.to_bits(), want.to_bits(), "{what}: {key}");
        } else {
            assert_eq!(o, g, "{what}: {key}");
        }
    }

    let gt = golden["tensors"].as_array().unwrap();
    let ot = ours["tensors"].as_array().unwrap();
    let names = |t: &[Value]| -> Vec<String> {
        t.iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(ot), names(gt), "{what}: tensor names and order");
    for (o, g) in ot.iter().zip(gt) {
        let t = g["name"].as_str().unwrap();
        for field in ["shape", "type", "offset", "sha256"] {
            assert_eq!(o[field], g[field], "{what}: {field} of {t}");
        }
    }
    assert_eq!(ours["file_size"], golden["file_size"], "{what}: file size");
    assert_eq!(
        ours["file_sha256"], golden["file_sha256"],
        "{what}: the files differ although every field matched"
    );
}

#[test]
fn tied_bf16_checkpoint_matches_convert_hf_to_gguf() {
    for t in OutType::ALL {
        compare("tiny-llama32-tied-bf16", t);
    }
}

#[test]
fn untied_sharded_f16_checkpoint_matches_convert_hf_to_gguf() {
    for t in OutType::ALL {
        compare("tiny-llama32-untied-f16", t);
    }
}

#[test]
fn tied_f32_checkpoint_matches_convert_hf_to_gguf() {
    for t in OutType::ALL {
        compare("tiny-llama32-tied-f32", t);
    }
}
