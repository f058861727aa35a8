//! Chat templates against Hugging Face's `apply_chat_template` (jinja2
//! 3.1.6 in transformers' environment): Llama 3.2's, Llama 3.1's and
//! SmolLM2's templates on the conversations of
//! `tests/golden/chat/make_chat_golden.py`, byte for byte, errors included.
//! The built-in Llama 3.x format is checked against the same goldens.

mod common;

use std::path::{Path, PathBuf};

use edgellama_gguf::GgufFile;
use edgellama_tokenizer::chat::{
    ChatMessage, ChatTemplate, ChatTemplateError, Clock, DateTime, RenderRequest,
};
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat")
}

fn read(name: &str) -> String {
    let p = golden_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn cases() -> Value {
    serde_json::from_str(&read("chat_cases.json")).expect("chat_cases.json")
}

/// The golden script's fixed clock.
fn clock() -> Clock {
    Clock::Fixed(DateTime::new(2024, 7, 26, 10, 20, 30).unwrap())
}

fn request(case: &Value) -> RenderRequest {
    let messages: Vec<ChatMessage> =
        serde_json::from_value(case["messages"].clone()).expect("messages");
    let mut req = RenderRequest::new(messages)
        .with_generation_prompt(case["add_generation_prompt"].as_bool().unwrap())
        .with_clock(clock());
    if let Some(tools) = case.get("tools") {
        req = req.with_tools(tools.as_array().unwrap().clone());
    }
    if let Some(kwargs) = case.get("kwargs") {
        for (k, v) in kwargs.as_object().unwrap() {
            req = req.with_kwarg(k.clone(), v.clone());
        }
    }
    req
}

fn special(golden: &Value, key: &str) -> (String, String) {
    let s = &golden["special_tokens"][key];
    (
        s["bos_token"].as_str().unwrap().to_string(),
        s["eos_token"].as_str().unwrap().to_string(),
    )
}

/// Renders every case with `template` and compares with the goldens under
/// `key`; returns the number of cases compared.
fn check_all(template: &ChatTemplate, key: &str) -> usize {
    let golden = cases();
    let mut failures = Vec::new();
    let mut n = 0;
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let expected = &case["expected"][key];
        let got = template.render(&request(case));
        n += 1;
        match (expected.get("text"), got) {
            (Some(want), Ok(text)) => {
                if want.as_str().unwrap() != text {
                    failures.push(format!(
                        "{name}: rendered text differs\n--- want\n{}\n--- got\n{text}",
                        want.as_str().unwrap()
                    ));
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{name}: unexpected error {e}")),
            (None, Ok(text)) => failures.push(format!(
                "{name}: jinja2 failed with {} but we rendered {text:?}",
                expected["error"]
            )),
            (None, Err(e)) => {
                let want = expected["error"].as_str().unwrap();
                // A template's own raise_exception must come through with its message.
                if let Some(msg) = want.strip_prefix("TemplateError: ") {
                    match &e {
                        ChatTemplateError::Raised(m) if m == msg => {}
                        other => {
                            failures.push(format!("{name}: want Raised({msg:?}), got {other:?}"))
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    n
}

#[test]
fn llama32_template_matches_hugging_face() {
    let g = cases();
    let (bos, eos) = special(&g, "llama3.2");
    let t = ChatTemplate::new(read("llama3.2.jinja"))
        .unwrap()
        .with_special_tokens(bos, eos);
    assert!(check_all(&t, "llama3.2") >= 30);
}

#[test]
fn llama31_template_matches_hugging_face() {
    let g = cases();
    let (bos, eos) = special(&g, "llama3.1");
    let t = ChatTemplate::new(read("llama3.1.jinja"))
        .unwrap()
        .with_special_tokens(bos, eos);
    assert!(check_all(&t, "llama3.1") >= 30);
}

#[test]
fn smollm2_template_from_gguf_matches_hugging_face() {
    let file = GgufFile::open(common::testdata("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert!(!t.is_builtin());
    let g = cases();
    let (bos, eos) = special(&g, "smollm2");
    assert_eq!((t.bos_token(), t.eos_token()), (bos.as_str(), eos.as_str()));
    assert!(check_all(&t, "smollm2") >= 30);
}

/// The built-in format equals Llama 3.1's template wherever that template
/// accepts the conversation (3.1 and 3.2 agree without `builtin_tools`),
/// except for content given as a list of parts, which jinja2 prints as a
/// Python list and the built-in format joins as text.
#[test]
fn builtin_format_equals_llama_templates() {
    let t = ChatTemplate::builtin_llama3();
    let golden = cases();
    let mut compared = 0;
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if name == "content_parts" {
            continue;
        }
        let req = request(case);
        let got = t.render(&req);
        for key in ["llama3.1", "llama3.2"] {
            let expected = &case["expected"][key];
            let Some(want) = expected.get("text").and_then(Value::as_str) else {
                continue;
            };
            // The 3.2 template has no built-in tools.
            if key == "llama3.2" && case["kwargs"].get("builtin_tools").is_some() {
                continue;
            }
            match &got {
                Ok(text) => assert_eq!(text, want, "{name} vs {key}"),
                Err(e) => panic!("{name}: {e}"),
            }
            compared += 1;
        }
    }
    assert!(compared >= 60, "compared {compared}");
}

#[test]
fn builtin_format_joins_content_parts() {
    let golden = cases();
    let case = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "content_parts")
        .unwrap();
    let plain = RenderRequest {
        messages: vec![ChatMessage::user("Describe this.")],
        ..request(case)
    };
    let t = ChatTemplate::builtin_llama3();
    assert_eq!(t.render(&request(case)).unwrap(), t.render(&plain).unwrap());
}

/// A vocabulary-only file without a template falls back to the built-in
/// format, with the vocabulary's BOS text.
#[test]
fn gguf_without_template_uses_builtin_format() {
    let file = GgufFile::open(common::testdata("ggml-vocab-llama-bpe.gguf")).unwrap();
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert!(t.is_builtin());
    assert_eq!(t.bos_token(), "<|begin_of_text|>");
    let req = RenderRequest::new(vec![ChatMessage::user("Hi")])
        .with_generation_prompt(true)
        .with_clock(clock());
    let golden = cases();
    let want = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "user_only_gen")
        .unwrap()["expected"]["llama3.2"]["text"]
        .as_str()
        .unwrap()
        .replace("Hello!", "Hi");
    assert_eq!(t.render(&req).unwrap(), want);
}

#[test]
fn strftime_matches_python() {
    let rows: Value = serde_json::from_str(&read("strftime.json")).unwrap();
    let mut n = 0;
    for row in rows.as_array().unwrap() {
        let instant = row["instant"].as_str().unwrap();
        let num = |a: usize, b: usize| instant[a..b].parse::<u32>().unwrap();
        let t = DateTime::new(
            num(0, 4) as i32,
            num(5, 7),
            num(8, 10),
            num(11, 13),
            num(14, 16),
            num(17, 19),
        )
        .unwrap();
        for (fmt, want) in row["results"].as_object().unwrap() {
            assert_eq!(t.strftime(fmt), want.as_str().unwrap(), "{instant} {fmt}");
            // Through a template, with the clock injected.
            let tmpl = ChatTemplate::new(format!("{{{{ strftime_now({fmt:?}) }}}}")).unwrap();
            let req = RenderRequest::new(vec![]).with_clock(Clock::Fixed(t));
            assert_eq!(tmpl.render(&req).unwrap(), want.as_str().unwrap());
            n += 1;
        }
    }
    assert!(n >= 30);
}
