//! Perplexity against llama.cpp's `llama-perplexity` on the same model and
//! text (golden and the script that made it: crates/models/tests/golden/
//! perplexity.json, scripts/golden/make_perplexity_goldens.sh).
//!
//! Shared by two test binaries: one on this CPU's default kernels, compared
//! with llama.cpp's default build; one on the scalar kernels, compared with
//! llama.cpp's portable build.

#![allow(dead_code)]

use edgellama_backend::{CpuBackend, KvType};
use edgellama_gguf::GgufFile;
use edgellama_tokenizer::Tokenizer;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Deserialize)]
struct Golden {
    model: String,
    file: String,
    text_n_tokens: usize,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    settings: String,
    command: String,
    c: usize,
    chunks: usize,
    running_ppl: Vec<f64>,
    ppl: f64,
}

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

/// A model with a text tokenized as llama-perplexity tokenizes it (BOS
/// only if the model adds it, special tokens not parsed), ready to score.
pub struct Scorer {
    pub tokens: Vec<u32>,
    model: Box<dyn edgellama_models::CausalLm>,
    bos: Option<u32>,
}

impl Scorer {
    /// `file` on the CPU backend with 2 threads, and test text `text`.
    pub fn new(file: Arc<GgufFile>, text: &str) -> Scorer {
        let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
        let text = std::fs::read_to_string(testdata(text)).expect("text");
        let tokens = tok.encode(&text, tok.adds_bos(), false);
        let model =
            edgellama_models::load_model(file, Arc::new(CpuBackend::new(2).expect("backend")))
                .expect("load");
        let bos = if tok.adds_bos() { tok.bos_id() } else { None };
        Scorer { tokens, model, bos }
    }

    /// llama-perplexity's estimate over `chunks` chunks of `c` tokens with
    /// an F16 cache.
    pub fn score(&self, c: usize, chunks: usize) -> edgellama_engine::PerplexityResult {
        self.score_cached(c, chunks, (KvType::F16, KvType::F16))
    }

    /// [`Scorer::score`] with the cache types `cache` (`-ctk`, `-ctv`).
    pub fn score_cached(
        &self,
        c: usize,
        chunks: usize,
        cache: (KvType, KvType),
    ) -> edgellama_engine::PerplexityResult {
        edgellama_engine::perplexity(
            &*self.model,
            &self.tokens,
            c,
            cache,
            Some(chunks),
            self.bos,
            |_, _| {},
        )
        .expect("perplexity")
    }
}

/// Scores the text at every (context, chunks) pair the golden has runs for
/// with `settings`, and checks the final estimate (and, with
/// `check_running`, every running one) is within `rel_tol` (relative) or
/// `abs_tol` (absolute) of llama.cpp's.
pub fn check(settings: &str, rel_tol: f64, abs_tol: f64, check_running: bool) {
    let golden_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/golden/perplexity.json");
    let g: Golden = serde_json::from_str(&std::fs::read_to_string(golden_path).expect("golden"))
        .expect("parse golden");
    let file = Arc::new(GgufFile::open(testdata(&g.model)).expect("model"));
    let scorer = Scorer::new(file, &g.file);
    assert_eq!(
        scorer.tokens.len(),
        g.text_n_tokens,
        "tokenization differs from llama.cpp's"
    );
    let runs: Vec<&Run> = g.runs.iter().filter(|r| r.settings == settings).collect();
    assert!(!runs.is_empty(), "the golden has no '{settings}' runs");
    // The cache types are the run's `-ctk`/`-ctv` flags.
    let flag = |cmd: &str, f: &str| -> KvType {
        cmd.split_whitespace()
            .skip_while(|w| *w != f)
            .nth(1)
            .map_or(KvType::F16, |t| t.parse().expect("a cache type"))
    };
    for run in runs {
        let cache = (flag(&run.command, "-ctk"), flag(&run.command, "-ctv"));
        let r = scorer.score_cached(run.c, run.chunks, cache);
        assert_eq!(r.n_chunks, run.chunks);
        let rel = |a: f64, b: f64| (a - b).abs() / b;
        eprintln!(
            "{settings} c={} chunks={}: ours {:.4} (running {:?}), llama.cpp {:.4} (running {:?}), {:.3}% apart",
            run.c,
            run.chunks,
            r.ppl,
            r.running.iter().map(|v| (v * 1e4).round() / 1e4).collect::<Vec<_>>(),
            run.ppl,
            run.running_ppl,
            rel(r.ppl, run.ppl) * 100.0
        );
        let close = |a: f64, b: f64| (a - b).abs() <= abs_tol || rel(a, b) <= rel_tol;
        assert!(
            close(r.ppl, run.ppl),
            "c={}: {} vs llama.cpp {}",
            run.c,
            r.ppl,
            run.ppl
        );
        for (ours, theirs) in r
            .running
            .iter()
            .zip(&run.running_ppl)
            .filter(|_| check_running)
        {
            assert!(
                close(*ours, *theirs),
                "c={}: running {ours} vs {theirs}",
                run.c
            );
        }
    }
}
