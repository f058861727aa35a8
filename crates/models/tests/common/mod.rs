//! Shared by the model tests: locating test data and reading goldens.
#![allow(dead_code)]

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

pub fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

pub fn sha256_file(p: &std::path::Path) -> String {
    let mut f = std::fs::File::open(p).expect("open");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("read");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
pub struct ForwardGolden {
    pub model: String,
    pub model_sha256: String,
    pub n_ctx: usize,
    pub cases: Vec<ForwardCase>,
}

#[derive(Deserialize)]
pub struct ForwardCase {
    pub prompt: String,
    pub prompt_tokens: Vec<u32>,
    pub last_logits_top: Vec<(u32, f32)>,
    pub last_logits_sample: Vec<(u32, f32)>,
    pub greedy_tokens: Vec<u32>,
    pub greedy_top2_margins: Vec<f32>,
    pub greedy_text: String,
}

pub fn load_forward_golden(name: &str) -> ForwardGolden {
    let p = golden(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
