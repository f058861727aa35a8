//! Greedy replies through the server, all requests at once, against
//! llama.cpp's portable build (plain C kernels) on the same file: with our
//! scalar kernels the forward pass matches it bit for bit, so batching,
//! chunked prefill and the prefix cache must leave every continuation
//! token for token what llama.cpp produced. Golden: the model tests'
//! `smollm2-135m-q4_1.portable.json` (made by scripts/golden/).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use edgellama_engine::batch::EngineConfig;
use edgellama_server::ServerConfig;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_greedy_completions_match_llama_cpp_portable() {
    // Read by the first kernel call, which is in this test: the binary
    // holds no other.
    std::env::set_var("EDGELLAMA_KERNELS", "scalar");
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models/tests/golden/smollm2-135m-q4_1.portable.json"),
        )
        .expect("golden from the models crate"),
    )
    .expect("golden JSON");
    let l = loaded();
    let (app, _) = app_with(
        EngineConfig {
            n_parallel: 16,
            n_ctx: 16 * 512,
            max_queue: 64,
            batch_tokens: 256,
            ..EngineConfig::default()
        },
        ServerConfig::default(),
    );
    let cases = golden["cases"].as_array().expect("cases");
    let mut tasks = Vec::new();
    // Every case twice: the second copy may find the first one's prefix
    // in the cache.
    for case in cases.iter().chain(cases.iter()) {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_tokens"].clone()).unwrap();
        let greedy: Vec<u32> = serde_json::from_value(case["greedy_tokens"].clone()).unwrap();
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"prompt": prompt, "max_tokens": greedy.len(), "temperature": 0});
            let req = Request::builder()
                .method("POST")
                .uri("/v1/completions")
                .body(Body::from(body.to_string()))
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&b).unwrap();
            (greedy, v)
        }));
    }
    let mut tokens_compared = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (greedy, v) = t.await.unwrap();
        // llama.cpp's run went on past end-of-generation tokens; ours stops.
        let end = greedy
            .iter()
            .position(|&id| l.tokenizer.is_eog(id))
            .unwrap_or(greedy.len());
        let want = l.tokenizer.decode(&greedy[..end], false);
        assert_eq!(
            v["choices"][0]["text"],
            want,
            "case {}: {:?}",
            i % cases.len(),
            cases[i % cases.len()]["prompt"]
        );
        assert_eq!(v["usage"]["completion_tokens"], end);
        tokens_compared += end;
    }
    assert!(tokens_compared > 200, "{tokens_compared}");
}
