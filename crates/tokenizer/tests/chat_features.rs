//! The jinja2 and Python behaviour Hugging Face templates rely on, one
//! small template at a time, against jinja2 3.1.6 in transformers'
//! environment (`tests/golden/chat/make_chat_golden.py`, `features.json`).

use std::path::Path;

use edgellama_tokenizer::chat::{
    ChatMessage, ChatTemplate, ChatTemplateError, Clock, DateTime, RenderRequest,
};
use serde_json::Value;

#[test]
fn features_match_jinja2() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/chat/features.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let messages: Vec<ChatMessage> = serde_json::from_value(g["messages"].clone()).unwrap();
    let req = RenderRequest::new(messages)
        .with_tools(g["tools"].as_array().unwrap().clone())
        .with_generation_prompt(true)
        .with_clock(Clock::Fixed(
            DateTime::new(2024, 7, 26, 10, 20, 30).unwrap(),
        ));
    let mut failures = Vec::new();
    let features = g["features"].as_array().unwrap();
    for f in features {
        let name = f["name"].as_str().unwrap();
        let src = f["template"].as_str().unwrap();
        let got = ChatTemplate::new(src).and_then(|t| {
            t.with_special_tokens(
                g["bos_token"].as_str().unwrap(),
                g["eos_token"].as_str().unwrap(),
            )
            .render(&req)
        });
        let expected = &f["expected"];
        match (expected.get("text").and_then(Value::as_str), &got) {
            (Some(want), Ok(text)) if want == text => {}
            (None, Err(e)) => {
                let want = expected["error"].as_str().unwrap();
                if let Some(msg) = want.strip_prefix("TemplateError: ") {
                    if !matches!(e, ChatTemplateError::Raised(m) if m == msg) {
                        failures.push(format!("{name}: want Raised({msg:?}), got {e:?}"));
                    }
                }
            }
            _ => failures.push(format!("{name}: want {expected}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(features.len() >= 25);
}
