//! An OpenAI-compatible HTTP server over the batching engine:
//! `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`,
//! `/apply-template`, `/metrics` (Prometheus text) and a chat page at `/`.
//!
//! [`router`] builds the axum [`Router`] from an [`AppState`]; requests are
//! parsed, then validated into a generation plan, then submitted to the
//! engine, whose events become a JSON reply or a server-sent event stream.
//! Every failure leaves through [`ApiError`].

mod error;
mod generate;
mod handlers;
mod images;
mod metrics;
pub mod types;

pub use error::{ApiError, RETRY_AFTER_SECS};
pub use images::ImageSupport;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use edgellama_engine::batch::EngineHandle;
use edgellama_tokenizer::{ChatTemplate, Tokenizer};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name `/v1/models` lists and replies carry.
    pub model_id: String,
    /// When set, every endpoint but `/` and `/health` needs
    /// `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Set for a vision model: image parts are accepted.
    pub images: Option<ImageSupport>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_id: "edgellama".into(),
            api_key: None,
            max_body_bytes: 4 << 20,
            images: None,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    pub config: ServerConfig,
    /// Unix time the server started (`created` of the model).
    pub started: u64,
    pub(crate) next_id: AtomicU64,
    pub(crate) http: metrics::HttpCounters,
}

impl AppState {
    pub fn new(
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        template: Arc<ChatTemplate>,
        config: ServerConfig,
    ) -> AppState {
        AppState {
            engine,
            tokenizer,
            template,
            config,
            started: unix_now(),
            next_id: AtomicU64::new(1),
            http: metrics::HttpCounters::default(),
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/completions", post(handlers::completions))
        .route("/v1/models", get(handlers::models))
        .route("/models", get(handlers::models))
        .route("/apply-template", post(handlers::apply_template))
        .route("/metrics", get(handlers::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            handlers::require_key,
        ));
    let public = Router::new()
        .route("/", get(handlers::page))
        .route("/health", get(handlers::health))
        .route("/v1/health", get(handlers::health));
    protected
        .merge(public)
        .fallback(handlers::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            handlers::count_requests,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}
