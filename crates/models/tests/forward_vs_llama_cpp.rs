//! The forward pass against llama.cpp on the same files: next-token logits at
//! the end of each prompt, and 32 greedy tokens. Goldens and the script that
//! made them: tests/golden/ and scripts/golden/.

mod common;

use common::*;
use edgellama_backend::CpuBackend;
use edgellama_gguf::GgufFile;
use edgellama_models::{load_model, CausalLm, Logits};
use std::sync::Arc;

/// Largest absolute difference allowed between our logits and llama.cpp's.
/// Both quantize activations the same way, so what is left is summation
/// order and the attention's precision (llama.cpp may accumulate values in
/// F16): a few thousandths on logits of magnitude ~10-30.
const LOGIT_TOL: f32 = 0.05;

/// First index of the largest value, llama.cpp's tie rule.
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn check_model(golden_name: &str) {
    let g = load_forward_golden(golden_name);
    let path = testdata(&g.model);
    assert_eq!(
        sha256_file(&path),
        g.model_sha256,
        "{} differs from the file the golden was made from",
        g.model
    );
    let file = Arc::new(GgufFile::open(&path).expect("open model"));
    let model = load_model(file, Arc::new(CpuBackend::new(2).expect("backend"))).expect("load");
    let n_vocab = model.info().n_vocab;
    let mut worst = 0f32;
    let mut greedy_mismatch = Vec::new();
    for (ci, case) in g.cases.iter().enumerate() {
        let mut state = model.new_state(g.n_ctx).expect("state");
        let logits = model
            .forward(&mut state, &case.prompt_tokens, Logits::Last)
            .expect("forward");
        assert_eq!(logits.len(), n_vocab);

        // Same top 5, in the same order.
        let mut order: Vec<u32> = (0..n_vocab as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let ref_top5: Vec<u32> = case.last_logits_top.iter().take(5).map(|x| x.0).collect();
        assert_eq!(
            &order[..5],
            &ref_top5[..],
            "case {ci} {:?}: top 5 differ",
            case.prompt
        );

        for &(id, want) in case.last_logits_top.iter().chain(&case.last_logits_sample) {
            let d = (logits[id as usize] - want).abs();
            worst = worst.max(d);
            assert!(
                d <= LOGIT_TOL,
                "case {ci} {:?}: logit of {id} is {} vs llama.cpp {want}",
                case.prompt,
                logits[id as usize]
            );
        }

        // Greedy continuation, token for token.
        let mut got = Vec::new();
        let mut next = argmax(&logits);
        for _ in 0..case.greedy_tokens.len() {
            got.push(next);
            let l = model
                .forward(&mut state, &[next], Logits::Last)
                .expect("step");
            next = argmax(&l);
        }
        if got != case.greedy_tokens {
            greedy_mismatch.push((ci, case.prompt.clone(), got, case.greedy_tokens.clone()));
        }
    }
    eprintln!("{golden_name}: largest logit difference {worst}");
    assert!(
        greedy_mismatch.is_empty(),
        "greedy continuations differ: {greedy_mismatch:?}"
    );
}

#[test]
fn smollm2_q4_1_matches_llama_cpp() {
    check_model("smollm2-135m-q4_1.json");
}

#[test]
fn tiny_llama32_f32_matches_llama_cpp() {
    check_model("tiny-llama32-f32.json");
}

#[test]
fn tiny_llama32_q8_0_matches_llama_cpp() {
    check_model("tiny-llama32-q8_0.json");
}

#[test]
fn tiny_llama32_q4_k_matches_llama_cpp() {
    check_model("tiny-llama32-q4_k.json");
}
