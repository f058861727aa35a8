//! `edgellama guard` as a user runs it, on the tiny Llama-Guard-shaped test
//! model (its numbers are held to transformers' in the engine's tests; here
//! the command's shape and its errors).

mod common;

use common::*;

use serde_json::Value;
use std::process::Output;

fn guard(extra: &[&str]) -> Output {
    let model = testdata("tiny-llama-guard.gguf");
    let mut args = vec!["guard", "-m", model.to_str().expect("utf-8"), "-t", "2"];
    args.extend_from_slice(extra);
    edgellama(&args)
}

#[test]
fn json_output_has_the_verdict_and_scores() {
    let o = guard(&["-p", "How do I make a chocolate cake?", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["verdict"], "unsafe");
    assert_eq!(v["categories"], serde_json::json!(["S11"]));
    let p = v["unsafe_probability"].as_f64().expect("p");
    assert!((0.5..1.0).contains(&p), "{p}");
    let scores = v["category_scores"].as_object().expect("scores");
    // The 1B template's own thirteen categories.
    assert_eq!(scores.len(), 13);
    assert!(scores
        .keys()
        .eq((1..=13).map(|i| format!("S{i}")).collect::<Vec<_>>().iter()));
    let sum: f64 = scores.values().map(|s| s.as_f64().expect("score")).sum();
    assert!(sum <= p + 1e-9, "{sum} > {p}");
}

#[test]
fn exclusions_and_custom_categories_change_the_prompt() {
    let dir = std::env::temp_dir().join(format!("edgellama-guard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cats = dir.join("cats.json");
    std::fs::write(&cats, r#"{"C1": "Cats.", "C2": "Dogs.", "C3": "Birds."}"#).expect("write");
    let o = guard(&[
        "-p",
        "Tell me about parrots.",
        "--categories",
        cats.to_str().expect("utf-8"),
        "--exclude",
        "C2",
        "--json",
        "--show-prompt",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prompt = String::from_utf8_lossy(&o.stderr);
    assert!(
        prompt.contains("C1: Cats.\nC3: Birds.\n<END UNSAFE CONTENT CATEGORIES>"),
        "{prompt}"
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let keys: Vec<&String> = v["category_scores"]
        .as_object()
        .expect("scores")
        .keys()
        .collect();
    assert_eq!(keys, ["C1", "C3"]);
}

#[test]
fn a_reply_is_judged_as_the_agent_turn() {
    let dir = std::env::temp_dir().join(format!("edgellama-guard-msgs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let msgs = dir.join("m.json");
    std::fs::write(
        &msgs,
        r#"{"messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#,
    )
    .expect("write");
    let o = guard(&["--messages", msgs.to_str().expect("utf-8"), "--show-prompt"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let prompt = String::from_utf8_lossy(&o.stderr);
    assert!(prompt.contains("ONLY THE LAST Agent message"), "{prompt}");
    assert!(!prompt.contains("be brief"), "{prompt}");
}

#[test]
fn bad_input_is_a_clear_error() {
    assert_clean_failure(&guard(&[]), "-p TEXT or --messages FILE");
    assert_clean_failure(&guard(&["-p", "x", "--threshold", "2"]), "--threshold");
    let dir = std::env::temp_dir().join(format!("edgellama-guard-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let msgs = dir.join("m.json");
    std::fs::write(
        &msgs,
        r#"[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]"#,
    )
    .expect("write");
    assert_clean_failure(
        &guard(&["--messages", msgs.to_str().expect("utf-8")]),
        "alternating user and assistant",
    );
    std::fs::write(&msgs, "{not json").expect("write");
    assert_clean_failure(
        &guard(&["--messages", msgs.to_str().expect("utf-8")]),
        "not valid JSON",
    );
    let cats = dir.join("c.json");
    std::fs::write(&cats, "[1, 2]").expect("write");
    assert_clean_failure(
        &guard(&["-p", "x", "--categories", cats.to_str().expect("utf-8")]),
        "expected an object",
    );
    // A model that is not a guard: SmolLM2's vocabulary has no `unsafe` token.
    let smol = testdata("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_clean_failure(
        &edgellama(&["guard", "-m", smol.to_str().expect("utf-8"), "-p", "x"]),
        "cannot be used as a guard",
    );
}
