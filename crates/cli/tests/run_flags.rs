//! `edgellama run` with tools, stop strings and logit biases, and the
//! sampling flags' errors, through the built binary with the real SmolLM2
//! model and greedy decoding.

mod common;

use common::*;

use serde_json::Value;
use std::path::PathBuf;

fn smol() -> String {
    testdata("SmolLM2-135M-Instruct.Q4_1.gguf")
        .to_str()
        .unwrap()
        .to_string()
}

/// Meta's Llama 3.2 chat template, as committed with the template goldens.
fn llama32_template() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tokenizer/tests/golden/chat/llama3.2.jinja")
        .to_str()
        .unwrap()
        .to_string()
}

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather",
  "description": "Current weather in a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                 "required": ["city"]}}}]"#;

#[test]
fn tools_render_into_the_prompt_and_the_reply_prints_as_json() {
    let dir = scratch("tools");
    let tools = dir.join("tools.json");
    std::fs::write(&tools, TOOLS).unwrap();
    let model = smol();
    let template = llama32_template();
    let o = edgellama(&[
        "run",
        "-m",
        &model,
        "--tools",
        tools.to_str().unwrap(),
        "--chat-template-file",
        &template,
        "-p",
        "What is the weather in Paris?",
        "--temp",
        "0",
        "-n",
        "48",
        "--verbose-prompt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The Llama 3.2 template puts the tools, as JSON, in the user turn.
    let err = stderr(&o);
    assert!(
        err.contains("<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions"),
        "{err}"
    );
    assert!(err.contains("\"name\": \"get_weather\""), "{err}");
    assert!(
        err.contains("What is the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
        "{err}"
    );
    // One JSON object with exactly the two fields.
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 2, "{out}");
    assert!(obj["content"].is_string(), "{out}");
    for call in obj["tool_calls"].as_array().unwrap() {
        assert_eq!(call["name"], "get_weather");
        assert!(call["arguments"].is_object());
    }

    // The model's own template (SmolLM2's ignores tools) works the same way.
    let o = edgellama(&[
        "run",
        "-m",
        &model,
        "--tools",
        tools.to_str().unwrap(),
        "-p",
        "What is the weather in Paris?",
        "--temp",
        "0",
        "-n",
        "16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["content"].is_string() && v["tool_calls"].is_array());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn stop_strings_and_logit_bias() {
    let model = smol();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-m",
            &model,
            "-p",
            "The capital of France is",
            "-n",
            "16",
            "--temp",
            "0",
        ];
        args.extend_from_slice(extra);
        let o = edgellama(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // Greedy says " Paris." (see cli.rs); the stop string ends it before
    // the period, which is not printed.
    assert!(run(&[]).starts_with(" Paris."));
    assert_eq!(run(&["--stop", "."]), " Paris\n");
    assert_eq!(run(&["--stop", "is.", "--stop", "Par"]), " \n");
    // Banning " Paris" (token 7042) changes the answer.
    let banned = run(&["-l", "7042-inf"]);
    assert!(!banned.contains("Paris"), "{banned:?}");
    // A positive bias can force a token.
    let forced = run(&["--logit-bias", "7042+100"]);
    assert_eq!(forced, format!("{}\n", " Paris".repeat(16)));
}

#[test]
fn bad_sampling_and_tool_flags_are_clear_errors() {
    let dir = scratch("bad");
    let model = smol();
    let base = ["run", "-m", "/nonexistent.gguf", "-p", "x"];
    for (extra, needle) in [
        (vec!["--typical", "0"], "typical-p"),
        (vec!["--repeat-penalty", "0"], "repeat penalty"),
        (vec!["--repeat-last-n", "-2"], "--repeat-last-n"),
        (vec!["-l", "abc"], "--logit-bias"),
        (vec!["-l", "5+nan"], "--logit-bias"),
        (vec!["--stop", ""], "--stop"),
        (vec!["--frequency-penalty", "inf"], "frequency penalty"),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra);
        assert_clean_failure(&edgellama(&args), needle);
    }
    let not_json = dir.join("t.json");
    std::fs::write(&not_json, "[{").unwrap();
    let mut args = base.to_vec();
    args.extend(["--tools", not_json.to_str().unwrap()]);
    assert_clean_failure(&edgellama(&args), "not valid JSON");
    let object = dir.join("o.json");
    std::fs::write(&object, "{\"name\": \"f\"}").unwrap();
    let mut args = base.to_vec();
    args.extend(["--tools", object.to_str().unwrap()]);
    assert_clean_failure(&edgellama(&args), "JSON list");
    let o = edgellama(&[
        "run",
        "-m",
        &model,
        "-p",
        "x",
        "--chat-template-file",
        "t.jinja",
    ]);
    assert_clean_failure(&o, "--tools");
    // Token ids are checked against the vocabulary once it is loaded.
    let o = edgellama(&["run", "-m", &model, "-p", "x", "-l", "49152+1"]);
    assert_clean_failure(&o, "outside the vocabulary of 49152");
    // chat checks the same flags before loading anything.
    let o = edgellama(&["chat", "-m", "/nonexistent.gguf", "--top-p", "2"]);
    assert_clean_failure(&o, "top-p");
    let o = edgellama(&["chat", "-m", "/nonexistent.gguf"]);
    assert_clean_failure(&o, "/nonexistent.gguf");
    std::fs::remove_dir_all(&dir).ok();
}

/// Speculative decoding through the binary: the reply is the plain one,
/// the closing line counts the drafts, and a draft of another vocabulary
/// or contradictory flags are clear errors, on every command that decodes.
#[test]
fn speculative_flags() {
    let model = smol();
    let prompt = "Repeat: red green blue, red green blue, red green blue, red green blue";
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-m", &model, "-p", prompt, "-n", "24", "--temp", "0"];
        args.extend_from_slice(extra);
        let o = edgellama(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        (stdout(&o), stderr(&o))
    };
    let (plain, _) = run(&[]);
    for extra in [
        &["--spec-type", "ngram-simple", "--spec-always"][..],
        &["-md", &model, "--draft-max", "4", "--spec-always"],
        &["-md", &model, "--spec-type", "draft-simple,ngram-simple"],
    ] {
        let (text, err) = run(extra);
        assert_eq!(text, plain, "{extra:?}");
        assert!(err.contains("speculative: "), "{extra:?}: {err}");
    }
    let (_, err) = run(&["--spec-type", "ngram-simple", "--spec-always"]);
    let line = err.lines().find(|l| l.starts_with("speculative:")).unwrap();
    assert!(!line.starts_with("speculative: 0 drafted"), "{line}");

    // bench: a text test without drafts and one with them.
    let o = edgellama(&[
        "bench",
        "-m",
        &model,
        "-p",
        "0",
        "-n",
        "24",
        "-r",
        "1",
        "-o",
        "json",
        "--spec-type",
        "ngram-simple",
        "--spec-always",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = serde_json::from_str(&stdout(&o)).unwrap();
    let tests: Vec<&str> = rows
        .iter()
        .map(|r| r["test"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(tests, ["", "text", "text+spec"]);
    assert!(rows[2]["spec_drafted"].as_u64().unwrap() > 0, "{}", rows[2]);
    assert_eq!(rows[1]["spec_drafted"].as_u64(), Some(0));

    let llama = testdata("tiny-llama32-f32.gguf");
    let llama = llama.to_str().unwrap();
    for cmd in ["run", "serve"] {
        let mut args = vec![cmd, "-m", llama, "-md", &model];
        if cmd == "run" {
            args.extend(["-p", "x"]);
        }
        assert_clean_failure(
            &edgellama(&args),
            "49152 tokens in the draft, 128256 in the target",
        );
    }
    for (extra, needle) in [
        (&["--spec-type", "draft-simple"][..], "needs a draft model"),
        (
            &["--spec-type", "medusa"],
            "known: none, draft-simple, ngram-simple",
        ),
        (&["-md", "d.gguf", "--draft-max", "0"], "at least 1"),
    ] {
        for cmd in ["run", "chat", "serve"] {
            let mut args = vec![cmd, "-m", "/nonexistent.gguf"];
            if cmd == "run" {
                args.extend(["-p", "x"]);
            }
            args.extend_from_slice(extra);
            assert_clean_failure(&edgellama(&args), needle);
        }
    }
}
