//! Our reader and writer against gguf-py (see tests/golden/make_golden.py).

mod common;

use common::{golden_dir, golden_json, hex, testdata, typed_from_json, unhex, value_type};
use edgellama_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue, ValueType};
use serde_json::Value;

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

fn dims_of(v: &Value) -> Vec<u64> {
    v.as_array().expect("dims").iter().map(u64_of).collect()
}

/// Bitwise comparison so that -0.0 vs 0.0 or a changed NaN payload is caught.
fn same_value(a: &MetadataValue, b: &MetadataValue) -> bool {
    match (a, b) {
        (MetadataValue::F32(x), MetadataValue::F32(y)) => x.to_bits() == y.to_bits(),
        (MetadataValue::F64(x), MetadataValue::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

#[test]
fn smollm2_reader_matches_gguf_py() {
    let g = golden_json("smollm2_q4_1.json");
    let f = GgufFile::open(testdata(g["file"].as_str().expect("file"))).expect("open");

    assert_eq!(f.file_len(), u64_of(&g["file_len"]));
    assert_eq!(u64::from(f.version()), u64_of(&g["version"]));
    assert_eq!(f.alignment(), u64_of(&g["alignment"]));
    assert_eq!(f.data_offset(), u64_of(&g["data_offset"]));
    assert_eq!(f.tensors().len() as u64, u64_of(&g["tensor_count"]));
    assert_eq!(f.metadata().len() as u64, u64_of(&g["kv_count"]));
    assert_eq!(f.architecture().expect("arch"), "llama");

    let meta = g["metadata"].as_array().expect("metadata");
    assert_eq!(f.metadata().len(), meta.len());
    for ((key, value), want) in f.metadata().iter().zip(meta) {
        assert_eq!(key, want["key"].as_str().expect("key"));
        let ty = value_type(want["type"].as_str().expect("type"));
        assert_eq!(value.value_type(), ty, "{key}");
        if ty != ValueType::Array {
            let expected = common::scalar_from_json(ty, &want["value"]);
            assert!(
                same_value(value, &expected),
                "{key}: {value:?} != {expected:?}"
            );
            continue;
        }
        let arr = value.as_array().expect("array");
        let elem = value_type(want["element_type"].as_str().expect("element_type"));
        assert_eq!(arr.element_type(), elem, "{key}");
        assert_eq!(arr.len() as u64, u64_of(&want["len"]), "{key}");
        for (i, x) in want["head"].as_array().expect("head").iter().enumerate() {
            let got = arr.get(i).expect("element");
            let expected = common::scalar_from_json(elem, x);
            assert!(
                same_value(&got, &expected),
                "{key}[{i}]: {got:?} != {expected:?}"
            );
        }
        let last = arr.get(arr.len() - 1).expect("last");
        let expected = common::scalar_from_json(elem, &want["last"]);
        assert!(same_value(&last, &expected), "{key}[last]");
    }

    let tensors = g["tensors"].as_array().expect("tensors");
    assert_eq!(f.tensors().len(), tensors.len());
    for (t, want) in f.tensors().iter().zip(tensors) {
        let name = want["name"].as_str().expect("name");
        assert_eq!(t.name, name);
        assert_eq!(t.dims, dims_of(&want["dims"]), "{name}");
        assert_eq!(
            u64::from(t.ggml_type as u32),
            u64_of(&want["type"]),
            "{name}"
        );
        assert_eq!(t.offset, u64_of(&want["offset"]), "{name}");
        assert_eq!(t.n_elements(), u64_of(&want["n_elements"]), "{name}");
        assert_eq!(t.n_bytes(), u64_of(&want["n_bytes"]), "{name}");
        let (info, data) = f.tensor_bytes(name).expect("tensor");
        assert_eq!(info, t);
        assert_eq!(data.len() as u64, t.n_bytes());
        assert_eq!(
            hex(&data[..8]),
            want["head_hex"].as_str().expect("head"),
            "{name}"
        );
        assert_eq!(
            hex(&data[data.len() - 8..]),
            want["tail_hex"].as_str().expect("tail")
        );
        let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, u64_of(&want["byte_sum"]), "{name}");
    }
    // The two quantization types this model mixes.
    assert_eq!(
        f.tensor("token_embd.weight").map(|t| t.ggml_type),
        Some(GgmlType::Q8_0)
    );
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").map(|t| t.ggml_type),
        Some(GgmlType::Q4_1)
    );
}

#[test]
fn smollm2_typed_getters() {
    let f = GgufFile::open(testdata("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("open");
    assert_eq!(f.get_u32("llama.block_count").expect("block_count"), 30);
    assert_eq!(f.get_u32("llama.embedding_length").expect("n_embd"), 576);
    assert_eq!(f.get_u64("llama.context_length").expect("ctx"), 8192);
    assert_eq!(f.get_f32("llama.rope.freq_base").expect("rope"), 100000.0);
    assert!(!f.get_bool("tokenizer.ggml.add_space_prefix").expect("bool"));
    assert_eq!(f.get_str("tokenizer.ggml.pre").expect("pre"), "smollm");
    let tokens = f.get_array("tokenizer.ggml.tokens").expect("tokens");
    assert_eq!(tokens.strings().map(<[String]>::len), Some(49152));
    let types = f.get_array("tokenizer.ggml.token_type").expect("types");
    assert_eq!(types.as_i32_vec().map(|v| v.len()), Some(49152));
    assert_eq!(f.get_u32_opt("llama.expert_count"), None);
    assert_eq!(f.get_u32_opt("llama.block_count"), Some(30));
    assert_eq!(f.get_u32_or("llama.expert_count", 7).expect("default"), 7);
    assert!(matches!(
        f.get_u32("llama.expert_count"),
        Err(edgellama_gguf::GgufError::MissingKey { key }) if key == "llama.expert_count"
    ));
    assert!(matches!(
        f.get_u32("general.name"),
        Err(edgellama_gguf::GgufError::WrongType { key, found: ValueType::String, .. })
            if key == "general.name"
    ));
    assert!(f.get_u32_or("general.name", 1).is_err());
    assert!(matches!(
        f.tensor_bytes("no.such.tensor"),
        Err(edgellama_gguf::GgufError::MissingTensor { name }) if name == "no.such.tensor"
    ));
}

fn all_types_bytes() -> Vec<u8> {
    let path = golden_dir().join("all_types.gguf");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn all_types_reader_matches_gguf_py_writer_input() {
    let g = golden_json("all_types.json");
    let bytes = all_types_bytes();
    assert_eq!(bytes.len() as u64, u64_of(&g["file_len"]));
    let f = GgufFile::from_bytes(bytes).expect("parse");
    assert_eq!(u64::from(f.version()), u64_of(&g["version"]));
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.alignment(), u64_of(&g["alignment"]));
    assert_eq!(f.data_offset(), u64_of(&g["data_offset"]));

    let meta = g["metadata"].as_array().expect("metadata");
    assert_eq!(f.metadata().len(), meta.len());
    for ((key, value), want) in f.metadata().iter().zip(meta) {
        assert_eq!(key, want["key"].as_str().expect("key"));
        let expected = typed_from_json(want);
        assert!(
            same_value(value, &expected),
            "{key}: {value:?} != {expected:?}"
        );
    }
    // Spot checks written out by hand, so a bug shared by the JSON decoding above
    // and the reader would still show.
    assert_eq!(f.get("test.i64"), Some(&MetadataValue::I64(i64::MIN)));
    assert_eq!(f.get("test.u64"), Some(&MetadataValue::U64(u64::MAX)));
    assert_eq!(
        f.get_str("test.string").expect("s"),
        "h\u{e9}llo w\u{f6}rld \u{2713} \u{1f999}"
    );
    assert_eq!(f.get_str("test.string_empty").expect("s"), "");
    let nested = f.get_array("test.nested.three_levels").expect("nested");
    assert_eq!(nested.element_type(), ValueType::Array);
    let outer = nested.arrays().expect("arrays");
    assert_eq!(outer.len(), 2);
    let inner = outer[0].arrays().expect("inner");
    assert_eq!(inner[1].as_i32_vec(), Some(vec![2, 3]));
    assert_eq!(inner[1].element_type(), ValueType::I32);

    let tensors = g["tensors"].as_array().expect("tensors");
    assert_eq!(f.tensors().len(), tensors.len());
    for (t, want) in f.tensors().iter().zip(tensors) {
        let name = want["name"].as_str().expect("name");
        assert_eq!(t.name, name);
        assert_eq!(t.dims, dims_of(&want["dims"]), "{name}");
        assert_eq!(
            u64::from(t.ggml_type as u32),
            u64_of(&want["type"]),
            "{name}"
        );
        assert_eq!(
            t.ggml_type.name().to_uppercase(),
            want["type_name"].as_str().expect("type")
        );
        assert_eq!(t.offset, u64_of(&want["offset"]), "{name}");
        assert_eq!(t.n_bytes(), u64_of(&want["n_bytes"]), "{name}");
        assert_eq!(
            f.tensor_data(t),
            unhex(want["data_hex"].as_str().expect("data")),
            "{name}"
        );
    }
}

#[test]
fn all_types_writer_reproduces_gguf_py_file_byte_for_byte() {
    let g = golden_json("all_types.json");
    let mut w = GgufWriter::new();
    w.set_version(u64_of(&g["version"]) as u32)
        .expect("version");
    for m in g["metadata"].as_array().expect("metadata") {
        w.set(m["key"].as_str().expect("key"), typed_from_json(m))
            .expect("metadata");
    }
    let types: Vec<GgmlType> = GgmlType::ALL.to_vec();
    for t in g["tensors"].as_array().expect("tensors") {
        let id = u64_of(&t["type"]) as u32;
        let ty = *types.iter().find(|x| **x as u32 == id).expect("type");
        w.add_tensor(
            t["name"].as_str().expect("name"),
            dims_of(&t["dims"]),
            ty,
            unhex(t["data_hex"].as_str().expect("data")),
        )
        .expect("tensor");
    }
    let written = w.to_bytes().expect("write");
    let reference = all_types_bytes();
    assert_eq!(written.len(), reference.len());
    let first_diff = written.iter().zip(&reference).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "first differing byte");
}

#[test]
fn all_types_open_maps_the_same_content_as_from_bytes() {
    let mapped = GgufFile::open(golden_dir().join("all_types.gguf")).expect("open");
    let owned = GgufFile::from_bytes(all_types_bytes()).expect("parse");
    assert_eq!(mapped.tensors(), owned.tensors());
    assert_eq!(mapped.metadata().len(), owned.metadata().len());
    for t in mapped.tensors() {
        assert_eq!(mapped.tensor_data(t), owned.tensor_data(t));
        // Mapped data sits at file offsets that are multiples of the alignment.
        let addr = mapped.tensor_data(t).as_ptr() as usize;
        assert_eq!(addr % mapped.alignment() as usize, 0, "{}", t.name);
    }
}
