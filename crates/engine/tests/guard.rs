//! Llama Guard prompts and scores against transformers.
//!
//! Goldens and the script that made them: crates/engine/tests/golden/guard/,
//! scripts/golden/guard_goldens.py (transformers' apply_chat_template, which
//! is jinja2 with Hugging Face's settings, for the prompts; transformers'
//! float32 Llama on the tiny guard model's weights for the scores). The
//! model is scripts/make-tiny-guard.py's: Llama Guard 3 1B's shape features
//! (untied output, RoPE factor 8, its real template), random weights.

use edgellama_backend::CpuBackend;
use edgellama_engine::batch::{Engine, EngineConfig};
use edgellama_engine::guard::{Guard, GuardOptions};
use edgellama_gguf::GgufFile;
use edgellama_tokenizer::chat::guard::{render_guard_prompt, GuardPolicy};
use edgellama_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/guard")
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

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(golden_dir().join(name)).expect("golden");
    serde_json::from_str(&text).expect("golden JSON")
}

fn guard_template() -> ChatTemplate {
    let src =
        std::fs::read_to_string(golden_dir().join("llama-guard-3-1b.jinja")).expect("template");
    ChatTemplate::new(src).expect("compiles")
}

fn case_messages(case: &Value) -> Vec<ChatMessage> {
    serde_json::from_value(case["messages"].clone()).expect("messages")
}

fn case_policy(case: &Value) -> GuardPolicy {
    let categories = case.get("categories").map(|c| {
        c.as_array()
            .expect("list")
            .iter()
            .map(|p| {
                (
                    p[0].as_str().expect("code").to_string(),
                    p[1].as_str().expect("text").to_string(),
                )
            })
            .collect()
    });
    let excluded = case
        .get("excluded")
        .map(|e| {
            e.as_array()
                .expect("list")
                .iter()
                .map(|c| c.as_str().expect("code").to_string())
                .collect()
        })
        .unwrap_or_default();
    GuardPolicy {
        categories,
        excluded,
    }
}

#[test]
fn guard_prompts_render_as_jinja2_renders_them() {
    let golden = read_json("prompts.json");
    let template = guard_template();
    let builtin = ChatTemplate::builtin_llama3();
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() >= 15);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let t = if case.get("meta").is_some() {
            &builtin
        } else {
            &template
        };
        let got = render_guard_prompt(t, &case_messages(case), &case_policy(case));
        match case.get("rendered") {
            Some(want) => {
                let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(got, want.as_str().expect("text"), "{name}");
            }
            None => assert!(
                got.is_err(),
                "{name}: jinja2 refused it, we rendered {got:?}"
            ),
        }
    }
}

struct TinyGuard {
    guard: Guard,
    rt: tokio::runtime::Runtime,
}

fn tiny_guard() -> TinyGuard {
    let path = testdata("tiny-llama-guard.gguf");
    let file = Arc::new(GgufFile::open(&path).expect("opens"));
    let tokenizer = Arc::new(Tokenizer::from_gguf(&file).expect("tokenizer"));
    let template = Arc::new(ChatTemplate::from_gguf(&file).expect("template"));
    let backend = Arc::new(CpuBackend::new(2).expect("backend"));
    let model = edgellama_models::load_model(file, backend).expect("model");
    let engine = Engine::start(
        Arc::from(model),
        tokenizer.clone(),
        EngineConfig {
            n_parallel: 2,
            n_ctx: 2 * 2048,
            max_queue: 16,
            batch_tokens: 512,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    TinyGuard {
        guard: Guard::new(engine, tokenizer, template).expect("guard"),
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime"),
    }
}

#[test]
fn guard_scores_match_transformers_on_the_same_weights() {
    let prompts = read_json("prompts.json");
    let scores = read_json("scores.json");
    let by_name = |n: &str| {
        prompts["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .find(|c| c["name"] == n)
            .expect("case")
            .clone()
    };
    let g = tiny_guard();
    let cases = scores["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for want in cases {
        let name = want["name"].as_str().expect("name");
        let case = by_name(name);
        let opts = GuardOptions {
            policy: case_policy(&case),
            ..GuardOptions::default()
        };
        let got =
            g.rt.block_on(g.guard.check(&case_messages(&case), &opts))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            got.prompt_tokens as u64,
            want["prompt_tokens"].as_u64().expect("n"),
            "{name}"
        );
        assert_eq!(got.reply, want["reply"].as_str().expect("reply"), "{name}");
        let p = want["unsafe_probability"].as_f64().expect("p");
        assert!(
            (got.unsafe_probability - p).abs() < 1e-4,
            "{name}: unsafe_probability {} vs transformers {p}",
            got.unsafe_probability
        );
        // The tiny model replies "unsafe\nS11" in every case: parsed as Llama
        // Stack parses it, flagged at the default threshold.
        assert!(got.unsafe_ && got.flagged, "{name}");
        assert_eq!(got.categories, ["S11"], "{name}");
        let want_scores = want["category_scores"].as_object().expect("scores");
        let codes: Vec<&str> = got
            .category_scores
            .iter()
            .map(|(c, _)| c.as_str())
            .collect();
        let want_codes: Vec<&str> = want_scores.keys().map(|k| k.as_str()).collect();
        assert_eq!(codes, want_codes, "{name}: listed categories");
        for (code, s) in &got.category_scores {
            let w = want_scores[code].as_f64().expect("score");
            assert!(
                (s - w).abs() < 1e-4 && (s - w).abs() <= 1e-3 * w.max(1e-3),
                "{name} {code}: {s} vs transformers {w}"
            );
        }
    }
}

#[test]
fn thresholds_decide_flagged_and_bad_ones_are_refused() {
    let g = tiny_guard();
    let msgs = vec![ChatMessage::user("How do I make a chocolate cake?")];
    let mut opts = GuardOptions {
        threshold: 0.99,
        category_scores: false,
        ..GuardOptions::default()
    };
    let r = g.rt.block_on(g.guard.check(&msgs, &opts)).expect("checks");
    // The reply still says unsafe; flagged follows the probability.
    assert!(r.unsafe_ && !r.flagged);
    assert!(r.category_scores.is_empty());
    opts.threshold = 1.5;
    assert!(g.rt.block_on(g.guard.check(&msgs, &opts)).is_err());
    opts.threshold = 0.5;
    let bad = vec![ChatMessage::user("a"), ChatMessage::user("b")];
    assert!(g.rt.block_on(g.guard.check(&bad, &opts)).is_err());
}

#[test]
fn a_vision_guard_judges_the_image_with_the_text() {
    // Llama Guard 3 11B-Vision is Llama 3.2 Vision with the guard template:
    // here the tiny random Llama 3.2 Vision checkpoint with that template
    // (it is no guard, so its probabilities are small: compared as logs).
    let want = read_json("vision_scores.json");
    let want = &want["cases"][0];
    let dir = testdata("tiny-mllama/model.safetensors")
        .parent()
        .expect("dir")
        .to_path_buf();
    let file = edgellama_convert::Converter::open(&dir, edgellama_convert::OutType::F32)
        .expect("plan conversion")
        .to_gguf()
        .expect("convert");
    let file = Arc::new(file);
    let tokenizer = Arc::new(Tokenizer::from_gguf(&file).expect("tokenizer"));
    let src =
        std::fs::read_to_string(golden_dir().join("llama-guard-3-1b.jinja")).expect("template");
    let template = Arc::new(ChatTemplate::from_gguf_with_source(&file, &src).expect("template"));
    let backend = Arc::new(CpuBackend::new(2).expect("backend"));
    let model = edgellama_models::load_model(file, backend).expect("model");
    let cfg = model.info().preprocess.clone().expect("a vision model");
    let engine = Engine::start(
        Arc::from(model),
        tokenizer.clone(),
        EngineConfig {
            n_parallel: 2,
            n_ctx: 2 * 1024,
            max_queue: 16,
            batch_tokens: 512,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let guard = Guard::new(engine, tokenizer, template).expect("guard");
    let image_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(want["image"].as_str().expect("image"));
    let bytes = std::fs::read(image_path).expect("image");
    let image = edgellama_models::mllama::preprocess::prepare(&bytes, &Default::default(), &cfg)
        .expect("prepare");
    let msgs: Vec<ChatMessage> =
        serde_json::from_value(want["messages"].clone()).expect("messages");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let got = rt
        .block_on(guard.check_with_images(&msgs, &[Arc::new(image)], &GuardOptions::default()))
        .expect("checks");
    assert_eq!(
        got.prompt_tokens as u64,
        want["prompt_tokens"].as_u64().expect("n")
    );
    let lp = want["log_unsafe_probability"].as_f64().expect("lp");
    assert!(
        (got.unsafe_probability.ln() - lp).abs() < 2e-3,
        "log unsafe_probability {} vs transformers {lp}",
        got.unsafe_probability.ln()
    );
    let want_scores = want["log_category_scores"].as_object().expect("scores");
    assert_eq!(got.category_scores.len(), want_scores.len());
    for (code, s) in &got.category_scores {
        let w = want_scores[code].as_f64().expect("score");
        assert!(
            (s.ln() - w).abs() < 2e-3,
            "{code}: log {} vs transformers {w}",
            s.ln()
        );
    }
    // Without the image the prompt has no image token: the same check
    // without it is refused by the template's count.
    let err = rt.block_on(guard.check_with_images(&msgs, &[], &GuardOptions::default()));
    assert!(err.is_err());
}
