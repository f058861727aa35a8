//! The scheduler against the solo generation loop: a request's greedy
//! output is the same alone, beside fifteen others, and after its prefix
//! was cached by earlier requests, token for token.

mod common;

use common::*;
use edgellama_engine::batch::{EngineConfig, Event, FinishReason, Request};
use edgellama_engine::{generate, GenerateParams};
use edgellama_sampler::SamplingParams;
use edgellama_tokenizer::{ChatMessage, RenderRequest};
use tokio::sync::mpsc::UnboundedReceiver;

const MAX_TOKENS: usize = 24;

/// Sixteen chat prompts: short and long ones (both attention routes),
/// all sharing the template's system prefix, some sharing much more.
fn prompts() -> Vec<Vec<u32>> {
    let l = loaded();
    let story = "It was the best of times, it was the worst of times, it was the age of \
                 wisdom, it was the age of foolishness, it was the epoch of belief. ";
    let questions = [
        "What is the capital of France?",
        "Name three primary colors.",
        "Write a haiku about the sea.",
        "How many legs does a spider have?",
        "Explain photosynthesis in one sentence.",
        "What is 12 times 12?",
        "Translate 'good morning' into Spanish.",
        "Give me a tip for learning to code.",
    ];
    let mut out = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        for long in [false, true] {
            let text = if long {
                format!(
                    "{}\nSummarize the text above. Then: {q}",
                    story.repeat(2 + 2 * (i % 3))
                )
            } else {
                q.to_string()
            };
            let req =
                RenderRequest::new(vec![ChatMessage::user(text)]).with_generation_prompt(true);
            let rendered = l.template.render(&req).expect("render");
            out.push(l.tokenizer.encode(&rendered, false, true));
        }
    }
    assert!(out.iter().any(|p| p.len() < 64) && out.iter().any(|p| p.len() >= 200));
    out
}

fn request(prompt: &[u32]) -> Request {
    Request {
        max_tokens: Some(MAX_TOKENS),
        ..Request::new(prompt.to_vec(), SamplingParams::greedy())
    }
}

fn drain(rx: &mut UnboundedReceiver<Event>) -> (Vec<u32>, String, FinishReason, usize) {
    let mut ids = Vec::new();
    let mut text = String::new();
    loop {
        match rx.blocking_recv().expect("engine ended the stream early") {
            Event::Token(t) => {
                ids.push(t.id);
                text.push_str(&t.text);
            }
            Event::Done(d) => {
                text.push_str(&d.tail);
                return (ids, text, d.finish, d.usage.cached_tokens);
            }
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
}

#[test]
fn greedy_output_is_the_same_alone_beside_fifteen_others_and_from_the_cache() {
    let l = loaded();
    let prompts = prompts();

    // Reference: the solo generation loop on a fresh state.
    let solo: Vec<String> = prompts
        .iter()
        .map(|p| {
            let mut state = l.model.new_state(1024).expect("state");
            let params = GenerateParams {
                max_tokens: Some(MAX_TOKENS),
                sampling: SamplingParams::greedy(),
                ..Default::default()
            };
            generate(&*l.model, &mut state, &l.tokenizer, p, &params, |_| true)
                .expect("generate")
                .text
        })
        .collect();

    let engine = engine(EngineConfig {
        n_parallel: 16,
        n_ctx: 16 * 1024,
        max_queue: 64,
        batch_tokens: 512,
        ..EngineConfig::default()
    });
    // One at a time: later requests reuse the prefixes earlier ones left.
    let mut cached_any = 0;
    for (i, p) in prompts.iter().enumerate() {
        let mut rx = engine.submit(request(p)).expect("submit");
        let (_, text, _, cached) = drain(&mut rx);
        cached_any += cached;
        assert_eq!(text, solo[i], "prompt {i} alone");
    }
    assert!(cached_any > 0, "no prefix was reused");
    // All sixteen at once, twice (the second time from a warm cache).
    for round in 0..2 {
        let mut rxs: Vec<_> = prompts
            .iter()
            .map(|p| engine.submit(request(p)).expect("submit"))
            .collect();
        for (i, rx) in rxs.iter_mut().enumerate() {
            let (ids, text, finish, _) = drain(rx);
            assert_eq!(text, solo[i], "prompt {i} beside 15 others, round {round}");
            assert!(ids.len() <= MAX_TOKENS);
            assert!(matches!(
                finish,
                FinishReason::MaxTokens | FinishReason::EndOfGeneration
            ));
        }
    }
    // The scheduler updates its gauges after sending a request's last event,
    // so give it a moment to retire the final slot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut m = engine.metrics().snapshot();
    while m.active != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        m = engine.metrics().snapshot();
    }
    assert_eq!(m.requests_total, 48);
    assert_eq!(m.active, 0);
}

#[test]
fn a_long_prompt_does_not_stall_decoding() {
    // While a long prompt is read in chunks, a request already decoding
    // keeps getting tokens at every step.
    let l = loaded();
    let engine = engine(EngineConfig {
        n_parallel: 2,
        n_ctx: 2 * 2048,
        max_queue: 8,
        batch_tokens: 128,
        ..EngineConfig::default()
    });
    let short = l.tokenizer.encode("Once upon a time", false, true);
    let long: Vec<u32> = l.tokenizer.encode(
        &"The quick brown fox jumps over the lazy dog. ".repeat(150),
        false,
        true,
    );
    assert!(long.len() > 1000);
    let mut a = engine
        .submit(Request {
            max_tokens: Some(40),
            ..Request::new(short, SamplingParams::greedy())
        })
        .expect("submit");
    // Let the first one start decoding.
    assert!(matches!(a.blocking_recv(), Some(Event::Token(_))));
    let steps0 = engine
        .metrics()
        .steps_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut b = engine
        .submit(Request {
            max_tokens: Some(1),
            ..Request::new(long.clone(), SamplingParams::greedy())
        })
        .expect("submit");
    let (a_ids, _, _, _) = drain(&mut a);
    let (_, _, _, _) = drain(&mut b);
    let steps = engine
        .metrics()
        .steps_total
        .load(std::sync::atomic::Ordering::Relaxed)
        - steps0;
    // The long prompt needs at least len/128 steps; the short request's
    // 39 remaining tokens took one step each, alongside.
    assert_eq!(a_ids.len(), 39);
    assert!(steps as usize >= long.len() / 128, "{steps} steps");
    assert!(
        (steps as usize) < long.len() / 128 + 40 + 4,
        "decoding waited for the prompt: {steps} steps"
    );
}

#[test]
fn dropped_receivers_free_their_slots() {
    let l = loaded();
    let engine = engine(small_config(2));
    let prompt = l.tokenizer.encode("Tell me a long story.", false, true);
    // End-of-generation banned: only cancellation can end these early.
    let endless = SamplingParams {
        logit_bias: l
            .tokenizer
            .eog_ids()
            .iter()
            .map(|&id| (id, f32::NEG_INFINITY))
            .collect(),
        ..SamplingParams::greedy()
    };
    for _ in 0..4 {
        let mut rx = engine
            .submit(Request::new(prompt.clone(), endless.clone()))
            .expect("submit");
        let first = rx.blocking_recv();
        assert!(matches!(first, Some(Event::Token(_))), "{first:?}");
        drop(rx);
    }
    // Both slots come free without the requests finishing on their own
    // (no max_tokens: they would run to the end of the context).
    let t0 = std::time::Instant::now();
    while engine.metrics().snapshot().active > 0 {
        assert!(t0.elapsed().as_secs() < 10, "slots were not freed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let cancelled = engine
        .metrics()
        .requests_cancelled
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(cancelled, 4);
    // And the engine still serves.
    let mut rx = engine
        .submit(Request {
            max_tokens: Some(3),
            ..Request::new(prompt, endless)
        })
        .expect("submit");
    assert_eq!(drain(&mut rx).0.len(), 3);
}

#[test]
fn banning_every_token_is_an_error_not_a_token() {
    let l = loaded();
    let engine = engine(small_config(1));
    let n_vocab = l.model.info().n_vocab as u32;
    let sampling = SamplingParams {
        logit_bias: (0..n_vocab).map(|id| (id, f32::NEG_INFINITY)).collect(),
        ..SamplingParams::greedy()
    };
    let prompt = l.tokenizer.encode("Hello", false, true);
    let mut rx = engine
        .submit(Request::new(prompt, sampling))
        .expect("submit");
    match rx.blocking_recv() {
        Some(Event::Error(e)) => assert!(e.contains("excluded"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Regression: the slot was released only after the final event was sent,
/// so a client that sent its next request on seeing the end could find the
/// only slot still taken and be refused.
#[test]
fn a_finished_request_frees_its_slot_before_its_last_event() {
    let l = loaded();
    let engine = engine(EngineConfig {
        max_queue: 0,
        ..small_config(1)
    });
    let prompt = l.tokenizer.encode("Hi", false, true);
    for _ in 0..30 {
        let mut rx = engine
            .submit(Request {
                max_tokens: Some(1),
                ..Request::new(prompt.clone(), SamplingParams::greedy())
            })
            .expect("the only slot is free");
        drain(&mut rx);
    }
}

#[test]
fn a_cold_slot_copies_a_busy_slots_prefix_and_answers_the_same() {
    let l = loaded();
    let story = "It was the best of times, it was the worst of times, it was the age of wisdom. ";
    let render = |q: &str| {
        let text = format!("{}\n{q}", story.repeat(6));
        let req = RenderRequest::new(vec![ChatMessage::user(text)]).with_generation_prompt(true);
        l.tokenizer
            .encode(&l.template.render(&req).expect("render"), false, true)
    };
    let (long, short) = (render("Summarize it."), render("Who wrote it?"));
    assert!(long.len() > 128 && short.len() > 128);
    // Alone, on a fresh engine.
    let solo = engine(small_config(2));
    let (want, _, _, cached) = drain(&mut solo.submit(request(&short)).expect("submit"));
    assert_eq!(cached, 0);
    // The same request while another one holds the shared story in slot 0:
    // it lands in the cold slot 1 and copies the prefix.
    let e = engine(small_config(2));
    let mut busy = e
        .submit(Request {
            max_tokens: Some(200),
            ..Request::new(long.clone(), SamplingParams::greedy())
        })
        .expect("submit");
    // Wait until the long prompt is in its cache.
    match busy.blocking_recv().expect("event") {
        Event::Token(_) => {}
        other => panic!("{other:?}"),
    }
    let (got, _, _, cached) = drain(&mut e.submit(request(&short)).expect("submit"));
    let common = long.iter().zip(&short).take_while(|(a, b)| a == b).count();
    assert!(
        cached > 64 && cached <= common,
        "cached {cached} of {common}"
    );
    assert_eq!(got, want, "a copied prefix changed the output");
    assert_eq!(
        e.metrics()
            .prefix_copies_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(busy);
}

/// The first event that ends `rx`'s stream: done (with the tokens) or an
/// engine error.
fn outcome(rx: &mut UnboundedReceiver<Event>) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    loop {
        match rx.blocking_recv().expect("engine ended the stream early") {
            Event::Token(t) => ids.push(t.id),
            Event::Done(_) => return Ok(ids),
            Event::Error(e) => return Err(e),
        }
    }
}

#[test]
fn a_short_pool_makes_prompts_wait_and_ends_what_cannot_grow() {
    let l = loaded();
    let prompt = |q: &str, n: usize| {
        let mut p = l.tokenizer.encode(q, false, true);
        p.resize(n, p[p.len() - 1]);
        p
    };
    // Three blocks of 64 shared by two sequences that may each fill all.
    let config = EngineConfig {
        n_parallel: 2,
        n_ctx: 192,
        kv_unified: true,
        ..small_config(2)
    };
    let (a, b) = (
        prompt("Once upon a time", 100),
        prompt("The sea was calm", 100),
    );
    let solo = |p: &[u32]| outcome(&mut engine(small_config(1)).submit(request(p)).unwrap());
    let (want_a, want_b) = (solo(&a).unwrap(), solo(&b).unwrap());
    // Both prompts need two blocks: the second waits until the first is
    // done, then takes the blocks the first one's idle slot gives up.
    let e = engine(config.clone());
    let (mut ra, mut rb) = (
        e.submit(request(&a)).unwrap(),
        e.submit(request(&b)).unwrap(),
    );
    assert_eq!(outcome(&mut ra), Ok(want_a));
    assert_eq!(outcome(&mut rb), Ok(want_b));
    let m = e.metrics();
    assert_eq!(
        m.kv_full_total.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Two prompts of one block each run together; both outgrow it at
    // position 64 and only one third block exists: one ends with the
    // pool's error, the other finishes as it would alone.
    let (c, d) = (
        prompt("Once upon a time", 50),
        prompt("The sea was calm", 50),
    );
    let long = |p: &[u32]| Request {
        max_tokens: Some(40),
        ..Request::new(p.to_vec(), SamplingParams::greedy())
    };
    let want_c = outcome(&mut engine(small_config(1)).submit(long(&c)).unwrap()).unwrap();
    let want_d = outcome(&mut engine(small_config(1)).submit(long(&d)).unwrap()).unwrap();
    let e = engine(config);
    let (mut rc, mut rd) = (e.submit(long(&c)).unwrap(), e.submit(long(&d)).unwrap());
    let (oc, od) = (outcome(&mut rc), outcome(&mut rd));
    let (ok, err) = match (&oc, &od) {
        (Ok(got), Err(msg)) => ((got, &want_c), msg),
        (Err(msg), Ok(got)) => ((got, &want_d), msg),
        _ => panic!("expected one error and one reply: {oc:?} {od:?}"),
    };
    assert_eq!(ok.0, ok.1);
    assert!(err.contains("KV cache is full"), "{err}");
    assert_eq!(
        e.metrics()
            .kv_full_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
