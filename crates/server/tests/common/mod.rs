//! Shared by the server tests: the SmolLM2 test model, an engine over it,
//! and a router to send requests to.
#![allow(dead_code)]

use edgellama_backend::CpuBackend;
use edgellama_engine::batch::{Engine, EngineConfig, EngineHandle};
use edgellama_gguf::GgufFile;
use edgellama_models::CausalLm;
use edgellama_server::{router, AppState, ServerConfig};
use edgellama_tokenizer::{ChatTemplate, Tokenizer};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

pub fn testdata(name: &str) -> PathBuf {
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

pub struct Loaded {
    pub model: Arc<dyn CausalLm>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
}

/// The model, loaded once per test binary (the file is mapped, the
/// weights shared).
pub fn loaded() -> &'static Loaded {
    static L: OnceLock<Loaded> = OnceLock::new();
    L.get_or_init(|| {
        let file = Arc::new(GgufFile::open(testdata(MODEL)).expect("open model"));
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

pub fn engine(config: EngineConfig) -> EngineHandle {
    let l = loaded();
    Engine::start(l.model.clone(), l.tokenizer.clone(), config).expect("engine")
}

pub fn app_with(config: EngineConfig, server: ServerConfig) -> (axum::Router, Arc<AppState>) {
    let l = loaded();
    let state = Arc::new(AppState::new(
        engine(config),
        l.tokenizer.clone(),
        l.template.clone(),
        server,
    ));
    (router(state.clone()), state)
}

pub fn small_config(n_parallel: usize) -> EngineConfig {
    EngineConfig {
        n_parallel,
        n_ctx: n_parallel * 512,
        max_queue: 64,
        batch_tokens: 256,
        ..EngineConfig::default()
    }
}

pub fn app() -> axum::Router {
    app_with(small_config(4), ServerConfig::default()).0
}
