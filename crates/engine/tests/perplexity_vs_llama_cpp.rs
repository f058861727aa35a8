//! Perplexity against llama.cpp's `llama-perplexity` on the same model and
//! text (golden and the script that made it: crates/models/tests/golden/
//! perplexity.json, scripts/golden/make_perplexity_goldens.sh).

use edgellama_backend::CpuBackend;
use edgellama_gguf::GgufFile;
use edgellama_tokenizer::Tokenizer;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The bound: within 0.5% of llama-perplexity.
const REL_TOL: f64 = 0.005;

#[derive(Deserialize)]
struct Golden {
    model: String,
    file: String,
    text_n_tokens: usize,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    c: usize,
    chunks: usize,
    running_ppl: Vec<f64>,
    ppl: f64,
}

fn testdata(name: &str) -> PathBuf {
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

#[test]
fn smollm2_hamlet_within_half_a_percent_of_llama_cpp() {
    let golden_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/golden/perplexity.json");
    let g: Golden = serde_json::from_str(&std::fs::read_to_string(golden_path).expect("golden"))
        .expect("parse golden");
    let file = Arc::new(GgufFile::open(testdata(&g.model)).expect("model"));
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let text = std::fs::read_to_string(testdata(&g.file)).expect("text");
    let tokens = tok.encode(&text, tok.adds_bos(), false);
    assert_eq!(
        tokens.len(),
        g.text_n_tokens,
        "tokenization differs from llama.cpp's"
    );
    let model = edgellama_models::load_model(file, Arc::new(CpuBackend::new(2).expect("backend")))
        .expect("load");
    let bos = if tok.adds_bos() { tok.bos_id() } else { None };
    for run in &g.runs {
        let r =
            edgellama_engine::perplexity(&*model, &tokens, run.c, Some(run.chunks), bos, |_, _| {})
                .expect("perplexity");
        assert_eq!(r.n_chunks, run.chunks);
        let rel = (r.ppl - run.ppl).abs() / run.ppl;
        eprintln!(
            "c={} chunks={}: ours {:.4} (running {:?}), llama.cpp {:.4} (running {:?}), {:.3}% apart",
            run.c,
            run.chunks,
            r.ppl,
            r.running.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>(),
            run.ppl,
            run.running_ppl,
            rel * 100.0
        );
        assert!(
            rel <= REL_TOL,
            "c={}: {} vs llama.cpp {}",
            run.c,
            r.ppl,
            run.ppl
        );
    }
}
