//! The safetensors reader on a file written by the reference implementation
//! (safetensors 0.7.0, scripts/golden/convert/make_reference_safetensors.py):
//! names, dtypes, shapes, bytes and metadata as the library reads them back.

mod common;

use common::{golden_dir, read_json, sha256_hex};
use edgellama_gguf::formats::SafetensorsFile;

#[test]
fn reads_what_the_reference_library_wrote() {
    let dir = golden_dir().join("goldens");
    let f = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
    let want = read_json(&dir.join("reference_safetensors.json"));
    let tensors = want["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    // safe_open lists the tensors sorted by name, as we do.
    for (t, w) in f.tensors().iter().zip(tensors) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(t.dtype.name(), w["dtype"].as_str().unwrap(), "{}", t.name);
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        assert_eq!(
            sha256_hex(f.view(t).data),
            w["sha256"].as_str().unwrap(),
            "{}",
            t.name
        );
    }
    let meta: Vec<(String, String)> = want["metadata"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let mut ours = f.metadata().to_vec();
    ours.sort();
    assert_eq!(ours, meta);
    // Spot values: F32 arange and the scalar I64.
    let w = f.view(f.tensor("model.layers.0.weight").unwrap());
    assert_eq!(&w.data[4..8], &1.0f32.to_le_bytes());
    let s = f.view(f.tensor("step").unwrap());
    assert_eq!(s.data, &7i64.to_le_bytes());
}

#[test]
fn truncated_copies_of_the_reference_file_are_errors() {
    let bytes = std::fs::read(golden_dir().join("goldens/reference.safetensors")).unwrap();
    for len in 0..bytes.len() {
        let r = SafetensorsFile::from_bytes(bytes[..len].to_vec(), "cut.safetensors");
        assert!(
            r.is_err(),
            "accepted a copy cut at {len} of {} bytes",
            bytes.len()
        );
    }
}
