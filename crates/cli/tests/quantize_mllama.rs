//! `edgellama quantize` on a Llama 3.2 Vision model: `--vision-type` is
//! checked before anything is read, and a quantized file answers about an
//! image.

use std::path::PathBuf;
use std::process::{Command, Output};

fn edgellama(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgellama"))
        .args(args)
        .output()
        .expect("run edgellama")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quantize-mllama-cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn bad_vision_types_are_refused_before_reading_the_model() {
    let missing = scratch("no-such-model.gguf");
    let out = scratch("never-written.gguf");
    for bad in ["q4_0", "Q4_K_M", "f8"] {
        let o = edgellama(&[
            "quantize",
            missing.to_str().unwrap(),
            out.to_str().unwrap(),
            "Q4_K_M",
            "--vision-type",
            bad,
        ]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains(&format!("--vision-type: unknown vision type '{bad}'"))
                && err.contains("f32, f16, bf16, q8_0"),
            "{err}"
        );
        assert!(
            !err.contains("no-such-model"),
            "read the model first: {err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn q8_0_vision_model_runs_on_an_image() {
    let checkpoint = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"))
        .join("tiny-mllama");
    assert!(
        checkpoint.join("config.json").is_file(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        checkpoint.display()
    );
    let image = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/golden/mllama/img-a-40x30.png");
    let f32_model = scratch("tiny-mllama-f32.gguf");
    let q8_model = scratch("tiny-mllama-q8_0.gguf");

    let o = edgellama(&[
        "convert",
        checkpoint.to_str().unwrap(),
        "-o",
        f32_model.to_str().unwrap(),
        "--outtype",
        "f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = edgellama(&[
        "quantize",
        f32_model.to_str().unwrap(),
        q8_model.to_str().unwrap(),
        "q8_0",
        "--vision-type",
        "q8_0",
        "-t",
        "2",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("v.patch_embd.weight: rows of 14 cannot hold q8_0 blocks: used f16"),
        "the patch embedding's fallback is not reported: {err}"
    );
    assert!(err.contains("1 fell back"), "{err}");

    let o = edgellama(&[
        "run",
        "-m",
        q8_model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "-p",
        "Describe this.",
        "-n",
        "8",
        "--temp",
        "0",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("generation: 8 tokens"), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).trim().is_empty());
}
