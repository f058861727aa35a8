//! The forward pass on our scalar kernels against llama.cpp built without
//! SIMD (its plain C kernels), on the same files. Our scalar kernels follow
//! that arithmetic operation for operation, so logits agree to rounding
//! noise and greedy continuations token for token, even on SmolLM2, whose
//! outlier activations turn any rounding difference into visible drift.
//! Goldens: tests/golden/*.portable.json, made by scripts/golden/.

mod common;

use common::*;
use edgellama_models::Logits;

/// Largest |our logit - llama.cpp's| allowed: none. Every operation rounds
/// as llama.cpp's portable build rounds it, and rows never depend on how
/// threads split the work, so the logits agree to the bit.
const LOGIT_TOL: f32 = 0.0;

fn check(golden_name: &str) {
    // Every test in this binary asks for the portable table before the
    // first kernel call picks one.
    std::env::set_var("EDGELLAMA_KERNELS", "scalar");
    assert_eq!(edgellama_kernels::kernels().name(), "scalar");
    let g = load_forward_golden(golden_name);
    let model = load_model_for(&g);
    let mut worst = 0f32;
    for (ci, case) in g.cases.iter().enumerate() {
        let mut state = model.new_state(g.n_ctx).expect("state");
        let logits = model
            .forward(&mut state, &case.prompt_tokens, Logits::Last)
            .expect("forward");
        let d = logit_diffs(case, &logits)
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        worst = worst.max(d);
        assert!(
            d <= LOGIT_TOL,
            "case {ci} {:?}: logits differ by {d}",
            case.prompt
        );
        let want_top5: Vec<u32> = case.last_logits_top.iter().take(5).map(|x| x.0).collect();
        assert_eq!(
            top_ids(&logits, 5),
            want_top5,
            "case {ci} {:?}: top 5",
            case.prompt
        );

        let mut got = Vec::with_capacity(case.greedy_tokens.len());
        let mut next = argmax(&logits);
        for _ in 0..case.greedy_tokens.len() {
            got.push(next);
            let l = model
                .forward(&mut state, &[next], Logits::Last)
                .expect("step");
            next = argmax(&l);
        }
        assert_eq!(
            got, case.greedy_tokens,
            "case {ci} {:?}: greedy tokens",
            case.prompt
        );
    }
    eprintln!(
        "{golden_name}: {} cases, largest logit difference {worst:e}",
        g.cases.len()
    );
}

#[test]
fn smollm2_q4_1() {
    check("smollm2-135m-q4_1.portable.json");
}

#[test]
fn tiny_llama32_f32() {
    check("tiny-llama32-f32.portable.json");
}

#[test]
fn tiny_llama32_q8_0() {
    check("tiny-llama32-q8_0.portable.json");
}

#[test]
fn tiny_llama32_q4_k() {
    check("tiny-llama32-q4_k.portable.json");
}
