//! `edgellama bench --image` through the built binary, on the tiny random
//! Llama 3.2 Vision checkpoint (run as a directory, converted in memory):
//! its JSON, the features it dumps against transformers' golden values, and
//! its errors.

use edgellama_gguf::formats::safetensors::SafetensorsFile;
use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/golden/mllama")
        .join(name)
}

fn edgellama(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellama"))
        .args(args)
        .output()
        .expect("run edgellama")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A .npy file of little-endian f32 (as `--dump-features` writes it): its
/// shape and values.
fn read_npy_f32(path: &PathBuf) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).expect("read npy");
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00", "npy magic and version");
    let len = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + len]).expect("npy header");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    assert_eq!((10 + len) % 64, 0, "npy data is 64-byte aligned");
    let shape = header
        .split_once("'shape': (")
        .and_then(|(_, r)| r.split_once(')'))
        .expect("npy shape")
        .0;
    let shape: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("npy dim"))
        .collect();
    let values: Vec<f32> = b[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(values.len(), shape.iter().product::<usize>());
    (shape, values)
}

#[test]
fn bench_image_times_the_tower_and_dumps_the_features_transformers_gives() {
    let dump =
        std::env::temp_dir().join(format!("edgellama-bench-image-{}.npy", std::process::id()));
    let model = testdata("tiny-mllama");
    let img = golden("img-a-40x30.png");
    let o = edgellama(&[
        "bench",
        "-m",
        model.to_str().expect("utf-8 path"),
        "--image",
        img.to_str().expect("utf-8 path"),
        "-r",
        "2",
        "-t",
        "1",
        "-o",
        "json",
        "--dump-features",
        dump.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bench JSON");
    let r = &v[0];
    assert_eq!(r["test"], "image");
    assert_eq!(r["n_threads"], 1);
    assert_eq!(r["n_tiles"], 1);
    assert_eq!(r["n_image_tokens"], 17);
    assert_eq!(
        (r["image_width"].as_u64(), r["image_height"].as_u64()),
        (Some(40), Some(30))
    );
    assert_eq!(r["samples_ns"].as_array().map(Vec::len), Some(2));
    assert!(r["avg_ns"].as_u64().is_some_and(|n| n > 0));

    // Case a of the goldens: one image of one tile; transformers' projected
    // features are [1 image][4 tile slots][17][32], of which the first tile
    // is real. The checkpoint's BF16 weights go to F16 here (the in-memory
    // conversion's default for the tower), hence a looser bound than the
    // F32 comparison of the model tests.
    let (shape, got) = read_npy_f32(&dump);
    std::fs::remove_file(&dump).ok();
    assert_eq!(shape, [1, 17, 32]);
    let expected = SafetensorsFile::open(golden("expected.safetensors")).expect("goldens");
    let t = expected.tensor("a.projected").expect("a.projected");
    let want: Vec<f32> = expected
        .view(t)
        .data
        .chunks_exact(4)
        .take(got.len())
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff / scale < 1e-3,
        "projected features differ by {}",
        diff / scale
    );
}

#[test]
fn bench_image_refuses_a_text_model_and_text_flags() {
    let img = golden("img-a-40x30.png");
    let img = img.to_str().expect("utf-8 path");
    let text = testdata("tiny-llama32-f32.gguf");
    let o = edgellama(&[
        "bench",
        "-m",
        text.to_str().expect("utf-8 path"),
        "--image",
        img,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("this model (llama) takes no images"),
        "{}",
        stderr(&o)
    );
    let vision = testdata("tiny-mllama");
    let vision = vision.to_str().expect("utf-8 path");
    let o = edgellama(&["bench", "-m", vision, "--image", img, "-p", "16"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let o = edgellama(&["bench", "-m", vision, "--image", "/nonexistent.png"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read the image /nonexistent.png"),
        "{}",
        stderr(&o)
    );
}
