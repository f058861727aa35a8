//! Speculative decoding in the scheduler: greedy replies with drafts are
//! the solo loop's replies without, whether drafts come from a lookup or a
//! draft model, one request at a time or several together; a request can
//! opt out; the counters say what was drafted and kept.

mod common;

use common::*;
use edgellama_engine::batch::{EngineConfig, Event, Request, SpecConfig};
use edgellama_engine::spec::NgramSimple;
use edgellama_engine::{generate, GenerateParams};
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::{ChatMessage, RenderRequest};
use std::sync::atomic::Ordering;

const MAX_TOKENS: usize = 40;

/// Requests to repeat a text: replies that copy their prompt.
fn prompts() -> Vec<Vec<u32>> {
    let l = loaded();
    [
        "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
        "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.",
        "Roses are red, violets are blue, sugar is sweet, and so are you.",
        "To be or not to be, that is the question, whether it is nobler in the mind.",
    ]
    .iter()
    .map(|t| {
        let req = RenderRequest::new(vec![ChatMessage::user(format!(
            "Repeat this sentence exactly: {t}"
        ))])
        .with_generation_prompt(true);
        let text = l.template.render(&req).expect("render");
        l.tokenizer.encode(&text, false, true)
    })
    .collect()
}

fn solo(prompt: &[u32]) -> Vec<u32> {
    let l = loaded();
    let mut state = l.model.new_state(1024).expect("state");
    let params = GenerateParams {
        max_tokens: Some(MAX_TOKENS),
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    generate(&*l.model, &mut state, &l.tokenizer, prompt, &params, |_| {
        true
    })
    .expect("generate")
    .tokens
}

fn request(prompt: &[u32], speculative: bool) -> Request {
    Request {
        max_tokens: Some(MAX_TOKENS),
        speculative,
        ..Request::new(prompt.to_vec(), SamplingParams::greedy())
    }
}

fn drain(mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<u32> {
    let mut ids = Vec::new();
    loop {
        match rx.blocking_recv().expect("engine ended the stream early") {
            Event::Token(t) => ids.push(t.id),
            Event::Done(_) => return ids,
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
}

fn config(spec: SpecConfig) -> EngineConfig {
    EngineConfig {
        n_parallel: 4,
        n_ctx: 4 * 1024,
        spec: Some(spec),
        ..EngineConfig::default()
    }
}

fn lookup() -> SpecConfig {
    SpecConfig {
        ngram: Some(NgramSimple::new(3, 16)),
        draft: None,
        n_min: 0,
        max_rows: 32,
    }
}

#[test]
fn lookup_drafts_leave_every_reply_as_it_was() {
    let prompts = prompts();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| solo(p)).collect();
    let engine = engine(config(lookup()));
    let m = engine.metrics();
    // One at a time, then all together.
    for (p, w) in prompts.iter().zip(&want) {
        assert_eq!(&drain(engine.submit(request(p, true)).unwrap()), w);
    }
    let accepted_alone = m.spec_accepted_total.load(Ordering::Relaxed);
    assert!(accepted_alone >= 20, "{accepted_alone} drafts kept");
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit(request(p, true)).unwrap())
        .collect();
    for (rx, w) in rxs.into_iter().zip(&want) {
        assert_eq!(&drain(rx), w);
    }
    let drafted = m.spec_drafted_total.load(Ordering::Relaxed);
    let accepted = m.spec_accepted_total.load(Ordering::Relaxed);
    assert!(accepted > accepted_alone && accepted <= drafted);
    assert!(m.spec_checks_total.load(Ordering::Relaxed) > 0);

    // A request that opts out drafts nothing.
    let before = m.spec_drafted_total.load(Ordering::Relaxed);
    assert_eq!(
        &drain(engine.submit(request(&prompts[0], false)).unwrap()),
        &want[0]
    );
    assert_eq!(m.spec_drafted_total.load(Ordering::Relaxed), before);
}

#[test]
fn a_draft_model_leaves_every_reply_as_it_was() {
    // The model drafts for itself (from the end of the prompt only, its
    // catch-up window), so most drafts are kept.
    let l = loaded();
    let prompts = prompts();
    let want: Vec<Vec<u32>> = prompts.iter().take(2).map(|p| solo(p)).collect();
    let engine = engine(config(SpecConfig {
        ngram: None,
        draft: Some((l.model.clone(), 4, 0.0)),
        n_min: 0,
        max_rows: 16,
    }));
    let rxs: Vec<_> = prompts
        .iter()
        .take(2)
        .map(|p| engine.submit(request(p, true)).unwrap())
        .collect();
    for (rx, w) in rxs.into_iter().zip(&want) {
        assert_eq!(&drain(rx), w);
    }
    let m = engine.metrics();
    let drafted = m.spec_drafted_total.load(Ordering::Relaxed);
    let accepted = m.spec_accepted_total.load(Ordering::Relaxed);
    assert!(
        drafted > 20 && accepted * 10 >= drafted * 7,
        "{accepted}/{drafted}"
    );
}

#[test]
fn no_drafts_when_the_step_is_full() {
    // A row budget of 4 with four sequences decoding leaves no room.
    let prompts = prompts();
    let engine = engine(config(SpecConfig {
        max_rows: 4,
        ..lookup()
    }));
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| engine.submit(request(p, true)).unwrap())
        .collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| solo(p)).collect();
    for (rx, w) in rxs.into_iter().zip(&want) {
        assert_eq!(&drain(rx), w);
    }
    // Drafts only where fewer than four were decoding (one finished early,
    // or one still read its prompt), never more rows than the budget.
    let m = engine.metrics();
    let checks = m.spec_checks_total.load(Ordering::Relaxed);
    let steps = m.steps_total.load(Ordering::Relaxed);
    assert!(checks < steps, "{checks} checks in {steps} steps");
}
