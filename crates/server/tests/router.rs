//! The HTTP surface with the real SmolLM2 test model: OpenAI shapes,
//! streaming, errors, limits, constrained output, and greedy text against
//! the solo generation loop (tests/portable.rs compares with llama.cpp).

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;
use edgellama_engine::batch::EngineConfig;
use edgellama_server::ServerConfig;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    send_with(app, method, uri, body, &[]).await
}

async fn send_with(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(body.map_or_else(Body::empty, |s| Body::from(s.to_string())))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, bytes.to_vec())
}

async fn post_json(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, b) = send(app, "POST", uri, Some(&body.to_string())).await;
    let v =
        serde_json::from_slice(&b).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&b)}));
    (s, v)
}

fn assert_openai_error(v: &Value, kind: &str) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(e["type"], kind, "{v}");
}

fn chat(content: &str, extra: Value) -> Value {
    let mut v = json!({
        "model": "test",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 16,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

/// `data:` payloads of an SSE body.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_and_page() {
    let app = app();
    let (s, _, b) = send(&app, "GET", "/health", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap()["status"], "ok");
    let (s, _, b) = send(&app, "GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["meta"]["n_ctx"], 512);
    let (s, h, b) = send(&app, "GET", "/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8_lossy(&b).contains("/v1/chat/completions"));
    let (s, _, b) = send(&app, "GET", "/v1/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_openai_error(
        &serde_json::from_slice(&b).unwrap(),
        "invalid_request_error",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reply_equals_solo_generation_and_streams_the_same_text() {
    let l = loaded();
    let app = app();
    let question = "What is the capital of France?";
    let (s, v) = post_json(
        &app,
        "/v1/chat/completions",
        chat(question, json!({"max_tokens": 20})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");

    // The same prompt through the solo loop.
    let req =
        edgellama_tokenizer::RenderRequest::new(vec![edgellama_tokenizer::ChatMessage::user(
            question,
        )])
        .with_generation_prompt(true);
    let prompt = l
        .tokenizer
        .encode(&l.template.render(&req).unwrap(), false, true);
    let mut state = l.model.new_state(512).unwrap();
    let params = edgellama_engine::GenerateParams {
        max_tokens: Some(20),
        sampling: edgellama_sampler::SamplingParams::greedy(),
        ..Default::default()
    };
    let solo = edgellama_engine::generate(
        &*l.model,
        &mut state,
        &l.tokenizer,
        &prompt,
        &params,
        |_| true,
    )
    .unwrap();
    assert_eq!(content, solo.text);
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
    assert_eq!(v["usage"]["completion_tokens"], solo.n_generated);
    assert_eq!(
        v["choices"][0]["finish_reason"],
        if solo.n_generated == 20 {
            "length"
        } else {
            "stop"
        }
    );

    // The same question as a list of text parts gets the same reply.
    let parts = json!([{"type": "text", "text": "What is the capital"}, {"type": "text", "text": " of France?"}]);
    let mut req = chat(question, json!({"max_tokens": 20}));
    req["messages"][0]["content"] = parts;
    let (s, v) = post_json(&app, "/v1/chat/completions", req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], solo.text);

    // Streamed: the deltas add up to the same text, usage comes last.
    let body = chat(
        question,
        json!({"max_tokens": 20, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let (s, h, b) = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&b);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, solo.text);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], solo.n_generated);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_logprobs_seed_and_n() {
    let app = app();
    let base = chat(
        "Count from one to ten, in words, separated by commas.",
        json!({"max_tokens": 40}),
    );
    let (_, full) = post_json(&app, "/v1/chat/completions", base.clone()).await;
    let text = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.len() > 10, "{text}");
    // Stop at the first comma: the stop string is never shown.
    if let Some(at) = text.find(',') {
        let mut req = base.clone();
        req["stop"] = json!([","]);
        let (_, v) = post_json(&app, "/v1/chat/completions", req).await;
        assert_eq!(v["choices"][0]["message"]["content"], text[..at]);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    // Log-probabilities: the chosen greedy token is the most likely one.
    let mut req = base.clone();
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(3);
    req["max_tokens"] = json!(5);
    let (s, v) = post_json(&app, "/v1/chat/completions", req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs");
    assert_eq!(content.len(), 5);
    for t in content {
        let lp = t["logprob"].as_f64().unwrap();
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert!(lp <= 0.0);
        assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-6);
        assert_eq!(top[0]["token"], t["token"]);
        assert!(top
            .windows(2)
            .all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
    }
    // Sampling with a seed repeats; n gives that many choices.
    let mut req = base.clone();
    req["temperature"] = json!(1.0);
    req["seed"] = json!(1234);
    req["n"] = json!(3);
    let (_, a) = post_json(&app, "/v1/chat/completions", req.clone()).await;
    let (_, b) = post_json(&app, "/v1/chat/completions", req).await;
    assert_eq!(a["choices"].as_array().unwrap().len(), 3);
    assert_eq!(a["choices"], b["choices"]);
    let texts: Vec<&Value> = a["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["message"]["content"])
        .collect();
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "three seeds, one text: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_output_parses_and_validates() {
    let app = app();
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer"},
            "city": {"enum": ["Paris", "London", "Tokyo"]},
            "pets": {"type": "array", "items": {"type": "string"}, "maxItems": 3}
        },
        "required": ["name", "age", "city", "pets"],
        "additionalProperties": false
    });
    for temperature in [0.0, 1.0] {
        let req = chat(
            "Describe a person as JSON.",
            json!({"max_tokens": 120, "temperature": temperature, "seed": 7,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}}),
        );
        let (s, v) = post_json(&app, "/v1/chat/completions", req).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
        let out: Value =
            serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap())
                .expect("the reply parses as JSON");
        let o = out.as_object().expect("an object");
        assert_eq!(o.len(), 4, "{out}");
        assert!(o["name"].as_str().is_some_and(|n| n.chars().count() <= 20));
        assert!(o["age"].is_i64() || o["age"].is_u64());
        assert!(["Paris", "London", "Tokyo"].contains(&o["city"].as_str().unwrap()));
        assert!(o["pets"]
            .as_array()
            .is_some_and(|p| p.len() <= 3 && p.iter().all(Value::is_string)));
    }
    // json_object: any object.
    let req = chat(
        "Reply with a JSON object.",
        json!({"max_tokens": 60, "response_format": {"type": "json_object"}}),
    );
    let (_, v) = post_json(&app, "/v1/chat/completions", req).await;
    let c = v["choices"][0]["message"]["content"].as_str().unwrap();
    if v["choices"][0]["finish_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(c).unwrap().is_object(), "{c}");
    } else {
        assert!(c.starts_with('{'), "{c}");
    }
    // A schema keyword that cannot be enforced is refused, not ignored.
    for (schema, keyword) in [
        (json!({"type": "string", "pattern": "(?=a)b"}), "pattern"),
        (json!({"type": "number", "multipleOf": 0.1}), "multipleOf"),
        (json!({"type": "array", "uniqueItems": true}), "uniqueItems"),
    ] {
        let req = chat(
            "x",
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}),
        );
        let (s, v) = post_json(&app, "/v1/chat/completions", req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_openai_error(&v, "invalid_request_error");
        assert_eq!(v["error"]["param"], "response_format");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(keyword),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_patterns_and_bounds_hold() {
    let app = app();
    let schema = json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
            "count": {"type": "integer", "minimum": 3, "maximum": 17},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.25},
            "step": {"type": "integer", "multipleOf": 4, "exclusiveMaximum": 30}
        },
        "required": ["code", "count", "ratio", "step"],
        "additionalProperties": false
    });
    for (temperature, seed) in [(0.0, 1), (1.0, 2), (1.0, 3)] {
        let req = chat(
            "Describe a product as JSON.",
            json!({"max_tokens": 200, "temperature": temperature, "seed": seed,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}}),
        );
        let (s, v) = post_json(&app, "/v1/chat/completions", req).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
        let out: Value =
            serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap())
                .expect("the reply parses as JSON");
        let code: Vec<char> = out["code"].as_str().unwrap().chars().collect();
        assert!(
            code.len() == 6
                && code[..2].iter().all(char::is_ascii_uppercase)
                && code[2] == '-'
                && code[3..].iter().all(char::is_ascii_digit),
            "{out}"
        );
        let count = out["count"].as_i64().expect("an integer");
        assert!((3..=17).contains(&count), "{out}");
        let ratio = out["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio <= 0.25, "{out}");
        let step = out["step"].as_i64().expect("an integer");
        assert!(step % 4 == 0 && step < 30, "{out}");
    }
}

fn completion(prompt: Value, extra: Value) -> Value {
    let mut v = json!({"prompt": prompt, "max_tokens": 4, "temperature": 0});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_take_prompt_lists_token_ids_and_echo() {
    let app = app();
    let prompts = ["The capital of France is", "Water is made of"];
    let mut solo = Vec::new();
    for p in prompts {
        let (s, v) = post_json(&app, "/v1/completions", completion(json!(p), json!({}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        solo.push(v);
    }
    let text = |v: &Value, i: usize| v["choices"][i]["text"].as_str().unwrap().to_string();
    let usage = |v: &Value, k: &str| v["usage"][k].as_u64().unwrap();
    // A list of texts: one choice per prompt, in order, usage summed.
    let (s, v) = post_json(
        &app,
        "/v1/completions",
        completion(json!(prompts), json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2, "{v}");
    for i in 0..2 {
        assert_eq!(v["choices"][i]["index"], i);
        assert_eq!(text(&v, i), text(&solo[i], 0));
    }
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage(&v, k), usage(&solo[0], k) + usage(&solo[1], k), "{k}");
    }
    // With n = 2: the first prompt's two choices, then the second's.
    let (_, v) = post_json(
        &app,
        "/v1/completions",
        completion(json!(prompts), json!({"n": 2})),
    )
    .await;
    let texts: Vec<String> = (0..4).map(|i| text(&v, i)).collect();
    assert_eq!(
        texts,
        [
            text(&solo[0], 0),
            text(&solo[0], 0),
            text(&solo[1], 0),
            text(&solo[1], 0)
        ]
    );
    assert_eq!(
        usage(&v, "prompt_tokens"),
        usage(&solo[0], "prompt_tokens") + usage(&solo[1], "prompt_tokens")
    );
    // Token ids, one list or several.
    let tok = &loaded().tokenizer;
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| tok.encode(p, tok.adds_bos(), true))
        .collect();
    let (s, v) = post_json(
        &app,
        "/v1/completions",
        completion(json!(ids[0]), json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(text(&v, 0), text(&solo[0], 0));
    let (_, v) = post_json(&app, "/v1/completions", completion(json!(ids), json!({}))).await;
    assert_eq!(
        (text(&v, 0), text(&v, 1)),
        (text(&solo[0], 0), text(&solo[1], 0))
    );
    assert_eq!(
        usage(&v, "prompt_tokens"),
        usage(&solo[0], "prompt_tokens") + usage(&solo[1], "prompt_tokens")
    );
    // echo: the prompt, then the completion; whole and streamed alike.
    let (_, v) = post_json(
        &app,
        "/v1/completions",
        completion(json!(prompts), json!({"echo": true})),
    )
    .await;
    for i in 0..2 {
        assert_eq!(text(&v, i), format!("{}{}", prompts[i], text(&solo[i], 0)));
    }
    let (_, v) = post_json(
        &app,
        "/v1/completions",
        completion(json!(ids[1]), json!({"echo": true})),
    )
    .await;
    assert_eq!(text(&v, 0), format!("{}{}", prompts[1], text(&solo[1], 0)));
    let req = completion(json!(prompts), json!({"echo": true, "stream": true}));
    let (s, _, b) = send(&app, "POST", "/v1/completions", Some(&req.to_string())).await;
    assert_eq!(s, StatusCode::OK);
    let mut streamed = [String::new(), String::new()];
    for d in sse_data(&b).iter().filter(|d| *d != "[DONE]") {
        let c: Value = serde_json::from_str(d).unwrap();
        for ch in c["choices"].as_array().unwrap() {
            streamed[ch["index"].as_u64().unwrap() as usize] += ch["text"].as_str().unwrap();
        }
    }
    for i in 0..2 {
        assert_eq!(streamed[i], format!("{}{}", prompts[i], text(&solo[i], 0)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_refuse_what_they_cannot_do() {
    let app = app();
    for (extra, prompt, needle) in [
        (json!({"suffix": "return x"}), json!("def f():"), "suffix"),
        (json!({"echo": true, "logprobs": 1}), json!("Hi"), "echo"),
        (json!({}), json!([]), "prompt"),
        (json!({}), json!([[]]), "prompt"),
        (json!({}), json!([[1, 2], [99999999]]), "99999999"),
        (json!({}), json!(["a", ""]), "prompt"),
    ] {
        let (s, v) = post_json(
            &app,
            "/v1/completions",
            completion(prompt.clone(), extra.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{extra} {prompt}: {v}");
        assert_openai_error(&v, "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // An empty suffix asks for nothing.
    let (s, v) = post_json(
        &app,
        "/v1/completions",
        completion(json!("Hi"), json!({"suffix": ""})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tool_calls() {
    let app = app();
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let req = chat(
            "What is the weather in Paris?",
            json!({"max_tokens": 60, "tools": tools, "tool_choice": choice}),
        );
        let (s, v) = post_json(&app, "/v1/chat/completions", req).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{v}");
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(args["city"].is_string(), "{args}");
    }
    // Streamed, the call arrives as a tool_calls delta.
    let req = chat(
        "Weather in Tokyo?",
        json!({"max_tokens": 60, "tools": tools, "tool_choice": "required", "stream": true}),
    );
    let (_, _, b) = send(&app, "POST", "/v1/chat/completions", Some(&req.to_string())).await;
    let data = sse_data(&b);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    // Unknown forced tool: 400.
    let req = chat(
        "x",
        json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
    );
    assert_eq!(
        post_json(&app, "/v1/chat/completions", req).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_openai_shaped_with_the_right_status() {
    let (app, _) = app_with(
        small_config(2),
        ServerConfig {
            max_body_bytes: 64 * 1024,
            ..Default::default()
        },
    );
    let cases: Vec<(&str, String, StatusCode)> = vec![
        (
            "malformed JSON",
            "{\"messages\": [".into(),
            StatusCode::BAD_REQUEST,
        ),
        ("not JSON", "hello".into(), StatusCode::BAD_REQUEST),
        (
            "wrong type",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"})
                .to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type",
            json!({"messages": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing messages",
            json!({"model": "x"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty messages",
            json!({"messages": []}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad temperature",
            chat("hi", json!({"temperature": -1})).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad n",
            chat("hi", json!({"n": 0})).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad logit_bias",
            chat("hi", json!({"logit_bias": {"999999": 1}})).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "image part",
            json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
            .to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "body too large",
            chat(&"a".repeat(70 * 1024), json!({})).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, body, want) in cases {
        let (s, _, b) = send(&app, "POST", "/v1/chat/completions", Some(&body)).await;
        assert_eq!(s, want, "{what}: {}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap_or_else(|_| panic!("{what}: not JSON"));
        assert_openai_error(&v, "invalid_request_error");
    }
    let (_, _, b) = send(&app, "POST", "/v1/chat/completions", Some(&json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).to_string())).await;
    assert!(String::from_utf8_lossy(&b).contains("image"));

    // A prompt longer than the context: 400 with both numbers.
    let long = "word ".repeat(2000);
    let (s, v) = post_json(&app, "/v1/chat/completions", chat(&long, json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("512") && msg.contains("tokens"), "{msg}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let (s, _) = post_json(&app, "/v1/completions", json!({"prompt": long})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_when_set() {
    let (app, _) = app_with(
        small_config(1),
        ServerConfig {
            api_key: Some("sk-test".into()),
            ..Default::default()
        },
    );
    let body = chat("hi", json!({"max_tokens": 2})).to_string();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "sk-test")],
    ] {
        let (s, _, b) =
            send_with(&app, "POST", "/v1/chat/completions", Some(&body), &headers).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_openai_error(&serde_json::from_slice(&b).unwrap(), "authentication_error");
    }
    let (s, _, _) = send_with(&app, "GET", "/v1/models", None, &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = send_with(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&body),
        &[("authorization", "Bearer sk-test")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // The page and the health check stay open.
    assert_eq!(send(&app, "GET", "/health", None).await.0, StatusCode::OK);
    assert_eq!(send(&app, "GET", "/", None).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let config = EngineConfig {
        max_queue: 0,
        ..small_config(1)
    };
    let (app, state) = app_with(config, ServerConfig::default());
    // A free slot takes the request even with no waiting room.
    let (s, _) = post_json(
        &app,
        "/v1/chat/completions",
        chat("hi", json!({"max_tokens": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Hold the only slot with a stream that cannot end by itself.
    let l = loaded();
    let bias: serde_json::Map<String, Value> = l
        .tokenizer
        .eog_ids()
        .iter()
        .map(|id| (id.to_string(), json!(-100)))
        .collect();
    let body = chat(
        "Tell me a story.",
        json!({"stream": true, "max_tokens": null, "logit_bias": bias}),
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    let mut held = app.clone().oneshot(req).await.unwrap().into_body();
    held.frame().await.expect("a frame").expect("frame ok");
    let (s, h, b) = send(
        &app,
        "POST",
        "/v1/chat/completions",
        Some(&chat("hi", json!({})).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h[header::RETRY_AFTER], "1");
    assert_openai_error(&serde_json::from_slice(&b).unwrap(), "server_error");
    let m = state.main().engine.metrics();
    assert_eq!(
        m.requests_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_slot() {
    let (app, state) = app_with(small_config(1), ServerConfig::default());
    let l = loaded();
    let bias: serde_json::Map<String, Value> = l
        .tokenizer
        .eog_ids()
        .iter()
        .map(|id| (id.to_string(), json!(-100)))
        .collect();
    // Would run to the end of the context: only the disconnect ends it.
    let body = chat(
        "Tell me a story.",
        json!({"stream": true, "max_tokens": null, "logit_bias": bias}),
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    for _ in 0..3 {
        body.frame().await.expect("a frame").expect("frame ok");
    }
    drop(body);
    let t0 = std::time::Instant::now();
    while state.main().engine.metrics().snapshot().active > 0 {
        assert!(t0.elapsed().as_secs() < 10, "the slot was not freed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The only slot serves the next request.
    let (s, _) = post_json(
        &app,
        "/v1/chat/completions",
        chat("hi", json!({"max_tokens": 3})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, m) = send(&app, "GET", "/metrics", None).await;
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains("edgellama_requests_cancelled_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_apply_template_and_completions() {
    let app = app();
    let (s, v) = post_json(
        &app,
        "/v1/completions",
        json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(
        v["choices"][0]["text"].as_str().unwrap().contains("Paris"),
        "{v}"
    );
    let (s, v) = post_json(
        &app,
        "/apply-template",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let l = loaded();
    let want = l
        .template
        .render(
            &edgellama_tokenizer::RenderRequest::new(vec![edgellama_tokenizer::ChatMessage::user(
                "hi",
            )])
            .with_generation_prompt(true),
        )
        .unwrap();
    assert_eq!(v["prompt"], want);
    let (s, h, b) = send(&app, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = String::from_utf8_lossy(&b);
    for name in [
        "edgellama_requests_total 1",
        "edgellama_generated_tokens_total 4",
        "edgellama_queue_depth 0",
        "edgellama_kv_cache_usage_ratio",
        "edgellama_time_to_first_token_seconds_bucket{le=\"+Inf\"} 1",
        "edgellama_inter_token_latency_seconds_count 3",
        "edgellama_prompt_tokens_total",
        "edgellama_kv_block_size 64",
        "edgellama_kv_blocks_total 32",
        "vllm:num_requests_waiting 0",
        // The gauges of running requests are set after the step that sent
        // the reply: present, whatever their value at this moment.
        "vllm:num_requests_running ",
        "vllm:kv_cache_usage_perc ",
        "vllm:gpu_cache_usage_perc ",
        "vllm:cache_config_info{block_size=\"64\",num_gpu_blocks=\"32\",cache_dtype=\"f16\"",
    ] {
        assert!(m.contains(name), "{name} missing from\n{m}");
    }
    // Every sample line is `name{labels} number`.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
}

/// Random request bodies built from the fields the server knows, with
/// values of every JSON type: each gets a 200 or an OpenAI-shaped 4xx,
/// and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_400s_not_crashes() {
    let config = EngineConfig {
        n_ctx: 4 * 96,
        ..small_config(4)
    };
    let (app, _) = app_with(config, ServerConfig::default());
    let fields = [
        "messages",
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "response_format",
        "prompt",
        "repeat_last_n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let value = |depth: u32, rnd: &mut dyn FnMut(u64) -> u64| -> Value {
        match rnd(if depth > 1 { 6 } else { 9 }) {
            0 => Value::Null,
            1 => json!(rnd(2) == 0),
            2 => json!(rnd(5) as i64 - 2),
            3 => json!([-1e30, 1e30, 0.5, -0.0, 1e-40][rnd(5) as usize]),
            4 => json!(
                [
                    "",
                    "auto",
                    "none",
                    "required",
                    "json_object",
                    "text",
                    "\u{0}"
                ][rnd(7) as usize]
            ),
            5 => json!(u64::MAX),
            6 => json!([{"role": "user", "content": "hi"}]),
            7 => {
                let kind = ["json_schema", "json_object", "function"][rnd(3) as usize];
                let ty = ["object", "array", "string", "integer"][rnd(4) as usize];
                json!({"type": kind, "json_schema": {"schema": {"type": ty}},
                       "function": {"name": "f"}, "include_usage": true})
            }
            _ => {
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}, 3, "x"])
            }
        }
    };
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        let mut body = serde_json::Map::new();
        body.insert(
            "messages".into(),
            json!([{"role": "user", "content": "Hello"}]),
        );
        body.insert("max_tokens".into(), json!(4));
        for _ in 0..1 + rnd(4) {
            let f = fields[rnd(fields.len() as u64) as usize];
            body.insert(f.into(), value(0, &mut rnd));
        }
        let uri = if i % 3 == 0 {
            "/v1/completions"
        } else {
            "/v1/chat/completions"
        };
        let text = Value::Object(body).to_string();
        let (s, _, b) = send(&app, "POST", uri, Some(&text)).await;
        *statuses.entry(s.as_u16()).or_insert(0) += 1;
        assert!(
            s == StatusCode::OK || s.is_client_error(),
            "{s} for {text}: {}",
            String::from_utf8_lossy(&b)
        );
        if s != StatusCode::OK {
            assert_openai_error(
                &serde_json::from_slice(&b).expect("JSON error"),
                "invalid_request_error",
            );
        }
    }
    assert!(statuses.len() >= 2, "{statuses:?}");
    let (s, _) = post_json(
        &app,
        "/v1/chat/completions",
        chat("hi", json!({"max_tokens": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}
