//! Several sequences advanced in one batched pass give, each, the logits it
//! gets alone, bit for bit: batching must never change a request's output.

mod common;

use common::*;
use edgellama_models::{BatchItem, Logits};

#[test]
fn batched_sequences_match_solo_runs_bit_for_bit() {
    let g = load_forward_golden("smollm2-135m-q4_1.portable.json");
    let model = load_model_for(&g);
    let prompts: Vec<&[u32]> = g
        .cases
        .iter()
        .take(5)
        .map(|c| c.prompt_tokens.as_slice())
        .collect();
    const STEPS: usize = 6;

    // Alone: prompt, then greedy steps.
    let mut solo = Vec::new();
    for p in &prompts {
        let mut st = model.new_state(256).unwrap();
        let mut logits = vec![model.forward(&mut st, p, Logits::Last).unwrap()];
        for _ in 0..STEPS {
            let next = argmax(logits.last().unwrap());
            logits.push(model.forward(&mut st, &[next], Logits::Last).unwrap());
        }
        solo.push(logits);
    }

    // Together: all prompts in one pass, then all decode steps in one pass each.
    let mut states: Vec<_> = prompts
        .iter()
        .map(|_| model.new_state(256).unwrap())
        .collect();
    let mut items: Vec<BatchItem<'_>> = states
        .iter_mut()
        .zip(&prompts)
        .map(|(state, p)| BatchItem {
            state,
            tokens: p,
            logits: Logits::Last,
        })
        .collect();
    let mut last = model.forward_batch(&mut items).unwrap();
    drop(items);
    for (i, l) in last.iter().enumerate() {
        assert_eq!(l, &solo[i][0], "prompt {i}");
    }
    #[allow(clippy::needless_range_loop)] // `step` indexes every sequence's solo run
    for step in 1..=STEPS {
        let next: Vec<[u32; 1]> = last.iter().map(|l| [argmax(l)]).collect();
        let mut items: Vec<BatchItem<'_>> = states
            .iter_mut()
            .zip(&next)
            .map(|(state, t)| BatchItem {
                state,
                tokens: t,
                logits: Logits::Last,
            })
            .collect();
        last = model.forward_batch(&mut items).unwrap();
        for (i, l) in last.iter().enumerate() {
            assert_eq!(l, &solo[i][step], "sequence {i}, step {step}");
        }
    }
}

#[test]
fn a_full_context_in_a_batch_is_an_error_not_a_truncation() {
    let g = load_forward_golden("tiny-llama32-f32.portable.json");
    let model = load_model_for(&g);
    let mut a = model.new_state(8).unwrap();
    let mut b = model.new_state(8).unwrap();
    let long = [1u32; 9];
    let mut items = vec![
        BatchItem {
            state: &mut a,
            tokens: &[1, 2],
            logits: Logits::Last,
        },
        BatchItem {
            state: &mut b,
            tokens: &long,
            logits: Logits::Last,
        },
    ];
    let err = model.forward_batch(&mut items).unwrap_err();
    assert!(err.to_string().contains("context is full"), "{err}");
}
