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
    pub settings_spread: SettingsSpread,
    pub cases: Vec<ForwardCase>,
}

/// How far llama.cpp's own result moves under another of its settings.
#[derive(Deserialize)]
pub struct SettingsSpread {
    pub compared_with: String,
    pub max_abs_dlogit_last: f32,
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

/// First index of the largest value: llama.cpp's greedy tie rule.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Our logits minus llama.cpp's over the ids a golden case records
/// (its top 100 and 256 ids spread over the vocabulary).
pub fn logit_diffs(case: &ForwardCase, logits: &[f32]) -> Vec<f32> {
    case.last_logits_top
        .iter()
        .chain(&case.last_logits_sample)
        .map(|&(id, want)| logits[id as usize] - want)
        .collect()
}

pub fn top_ids(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    order.truncate(k);
    order
}

pub fn load_model_for(g: &ForwardGolden) -> Box<dyn edgellama_models::CausalLm> {
    use edgellama_backend::CpuBackend;
    use edgellama_gguf::GgufFile;
    use std::sync::Arc;
    let path = testdata(&g.model);
    assert_eq!(
        sha256_file(&path),
        g.model_sha256,
        "{} differs from the file the golden was made from",
        g.model
    );
    let file = Arc::new(GgufFile::open(&path).expect("open model"));
    edgellama_models::load_model(file, Arc::new(CpuBackend::new(2).expect("backend")))
        .expect("load")
}
