//! A vision model behind the engine and the router: image-aware prefix
//! reuse (the same text with another image never shares cached state; the
//! same image again does), greedy output equal to the solo generation loop,
//! image_url parts and their errors. The tiny random Llama 3.2 Vision
//! checkpoint, converted in memory.

use axum::body::Body;
use base64::Engine as _;
use edgellama_backend::CpuBackend;
use edgellama_convert::{Converter, OutType};
use edgellama_engine::batch::{Engine, EngineConfig, Event, Request};
use edgellama_engine::{generate, GenerateParams};
use edgellama_models::mllama::preprocess::{self, ImageLimits};
use edgellama_models::{CausalLm, PreparedImage};
use edgellama_sampler::SamplingParams;
use edgellama_server::{router, AppState, ImageSupport, ServerConfig};
use edgellama_tokenizer::{ChatTemplate, Tokenizer};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("EDGELLAMA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/testdata"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "missing test data {}: run scripts/fetch-testdata.sh",
        p.display()
    );
    p
}

fn image_bytes(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/golden/mllama")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Loaded {
    model: Arc<dyn CausalLm>,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
}

fn loaded() -> &'static Loaded {
    static L: OnceLock<Loaded> = OnceLock::new();
    L.get_or_init(|| {
        let file = Converter::open(testdata("tiny-mllama"), OutType::F32)
            .expect("plan")
            .to_gguf()
            .expect("convert");
        let file = Arc::new(file);
        let tokenizer = Arc::new(Tokenizer::from_gguf(&file).expect("tokenizer"));
        let template = Arc::new(ChatTemplate::from_gguf(&file).expect("template"));
        let backend = Arc::new(CpuBackend::new(2).expect("backend"));
        let model: Arc<dyn CausalLm> =
            Arc::from(edgellama_models::load_model(file, backend).expect("model"));
        Loaded {
            model,
            tokenizer,
            template,
        }
    })
}

fn prepared(name: &str) -> Arc<PreparedImage> {
    let cfg = loaded()
        .model
        .info()
        .preprocess
        .clone()
        .expect("vision model");
    Arc::new(
        preprocess::prepare(&image_bytes(name), &ImageLimits::default(), &cfg).expect("prepare"),
    )
}

const PROMPT: &str = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>Describe this.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
const N: usize = 12;

/// The solo generation loop's greedy tokens for the prompt with `img`.
fn solo(img: &PreparedImage) -> Vec<u32> {
    let l = loaded();
    let prompt = l.tokenizer.encode(PROMPT, false, true);
    let mut state = l.model.new_state(256).expect("state");
    l.model.attach_image(&mut state, img).expect("attach");
    let params = GenerateParams {
        max_tokens: Some(N),
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        special: false,
        prompt_progress: None,
    };
    generate(
        &*l.model,
        &mut state,
        &l.tokenizer,
        &prompt,
        &params,
        |_| true,
    )
    .expect("generate")
    .tokens
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> (Vec<u32>, usize) {
    let mut ids = Vec::new();
    loop {
        match rx.blocking_recv().expect("stream ended early") {
            Event::Token(t) => ids.push(t.id),
            Event::Done(d) => return (ids, d.usage.cached_tokens),
            Event::Error(e) => panic!("engine error: {e}"),
        }
    }
}

#[test]
fn prefix_cache_keys_on_images() {
    let l = loaded();
    let prompt = l.tokenizer.encode(PROMPT, false, true);
    let image_at = prompt
        .iter()
        .position(|&t| Some(t) == l.model.info().image_token)
        .expect("an image token");
    let (a, b) = (prepared("img-a-40x30.png"), prepared("img-c2-50x150.png"));
    let (want_a, want_b) = (solo(&a), solo(&b));
    assert_ne!(
        want_a, want_b,
        "the two images must lead to different replies"
    );
    // One slot: every request lands on the same cache.
    let engine = Engine::start(
        l.model.clone(),
        l.tokenizer.clone(),
        EngineConfig {
            n_parallel: 1,
            n_ctx: 256,
            max_queue: 8,
            batch_tokens: 256,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let run = |img: &Arc<PreparedImage>| {
        let req = Request {
            max_tokens: Some(N),
            images: vec![img.clone()],
            ..Request::new(prompt.clone(), SamplingParams::greedy())
        };
        drain(&mut engine.submit(req).expect("submit"))
    };
    let (got, cached) = run(&a);
    assert_eq!((got, cached), (want_a.clone(), 0));
    // Same text, other image: nothing from the image token on is reused.
    let (got, cached) = run(&b);
    assert_eq!(got, want_b);
    assert_eq!(cached, image_at, "reuse stops at the image token");
    // The first image again: its whole prompt but the last token is reused.
    let (got, cached) = run(&b);
    assert_eq!((got, cached), (want_b, prompt.len() - 1));
    let (got, _) = run(&a);
    assert_eq!(got, want_a);
}

#[test]
fn image_counts_are_checked_at_submit() {
    let l = loaded();
    let engine = Engine::start(
        l.model.clone(),
        l.tokenizer.clone(),
        EngineConfig {
            n_parallel: 1,
            n_ctx: 64,
            max_queue: 8,
            batch_tokens: 256,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let prompt = l.tokenizer.encode(PROMPT, false, true);
    let err = engine
        .submit(Request::new(prompt, SamplingParams::greedy()))
        .expect_err("an image token without an image");
    assert!(
        err.to_string().contains("1 image tokens for 0 images"),
        "{err}"
    );
}

fn app(allow_urls: bool) -> axum::Router {
    let l = loaded();
    let info = l.model.info();
    let engine = Engine::start(
        l.model.clone(),
        l.tokenizer.clone(),
        EngineConfig {
            n_parallel: 2,
            n_ctx: 2 * 256,
            max_queue: 8,
            batch_tokens: 256,
            ..EngineConfig::default()
        },
    )
    .expect("engine");
    let token = info.image_token.expect("vision model");
    let images = ImageSupport {
        token,
        token_text: l.tokenizer.decode(&[token], true),
        preprocess: info.preprocess.clone().expect("vision model"),
        limits: ImageLimits::default(),
        allow_dir: None,
        allow_urls,
    };
    router(Arc::new(AppState::new(
        engine,
        l.tokenizer.clone(),
        l.template.clone(),
        ServerConfig {
            images: Some(images),
            ..ServerConfig::default()
        },
    )))
}

async fn post(app: &axum::Router, body: Value) -> (u16, Value) {
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn image_message(url: &str, text: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": text},
        ]}],
        "temperature": 0,
        "max_tokens": N,
    })
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_parts_reply_as_the_solo_loop_and_bad_images_are_400s() {
    let app = app(false);
    let l = loaded();
    let want = tokio::task::spawn_blocking(|| solo(&prepared("img-a-40x30.png")))
        .await
        .expect("solo");
    let want_text = l.tokenizer.decode(&want, false);
    let (s, v) = post(
        &app,
        image_message(&data_url(&image_bytes("img-a-40x30.png")), "Describe this."),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        want_text.as_str(),
        "{v}"
    );

    let bad = [
        ("data:image/png;base64,%%%not base64%%%", "not valid base64"),
        (
            &data_url(b"plain text, not an image") as &str,
            "cannot be used",
        ),
        ("https://example.com/cat.png", "not fetched"),
        ("/etc/passwd", "refused"),
    ];
    for (url, needle) in bad {
        let (s, v) = post(&app, image_message(url, "Hi")).await;
        assert_eq!(s, 400, "{url}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{url}: {msg}");
        assert_eq!(v["error"]["param"], "messages[0].content[0]", "{v}");
    }
    // An image token typed as text has no image.
    let (s, v) = post(
        &app,
        json!({"messages": [{"role": "user", "content": "<|image|>Hi"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // Text alone still works, and the server kept serving throughout.
    let (s, v) = post(
        &app,
        json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

/// Serves `body` once to one HTTP GET on a local port; returns its URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}/cat.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_image_urls_only_when_allowed() {
    let img = image_bytes("img-a-40x30.png");
    let (s, v) = post(
        &app(false),
        image_message(&serve_once(img.clone()), "Describe this."),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("--allow-image-urls"));
    let app = app(true);
    let (s, v) = post(
        &app,
        image_message(&serve_once(img.clone()), "Describe this."),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The same reply as the same image sent inline.
    let (s2, v2) = post(&app, image_message(&data_url(&img), "Describe this.")).await;
    assert_eq!(s2, 200, "{v2}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        v2["choices"][0]["message"]["content"]
    );
    // A server that is not there: a 400, not a hang.
    let (s, v) = post(&app, image_message("http://127.0.0.1:9/none.png", "Hi")).await;
    assert_eq!(s, 400, "{v}");
}
