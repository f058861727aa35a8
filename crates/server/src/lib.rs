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
mod moderation;
pub mod types;

pub use error::{ApiError, RETRY_AFTER_SECS};
pub use images::ImageSupport;
pub use moderation::{Shield, ShieldSettings};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use edgellama_engine::batch::EngineHandle;
use edgellama_engine::guard::Guard;
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

/// One model the server answers for: its engine, tokenizer and template.
pub struct ServedModel {
    /// The name `/v1/models` lists and requests pick it by.
    pub id: String,
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    /// Set for a vision model: image parts are accepted.
    pub images: Option<ImageSupport>,
}

/// Everything the handlers share.
pub struct AppState {
    /// The models served; the first answers requests that name none.
    pub models: Vec<Arc<ServedModel>>,
    /// The guard model's checks: `/v1/moderations` and the shields.
    pub shield: Option<Shield>,
    pub config: ServerConfig,
    /// Unix time the server started (`created` of the model).
    pub started: u64,
    pub(crate) next_id: AtomicU64,
    pub(crate) http: metrics::HttpCounters,
}

impl AppState {
    /// A server for one model, named and shaped by `config`.
    pub fn new(
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        template: Arc<ChatTemplate>,
        config: ServerConfig,
    ) -> AppState {
        let main = ServedModel {
            id: config.model_id.clone(),
            engine,
            tokenizer,
            template,
            images: config.images.clone(),
        };
        AppState {
            models: vec![Arc::new(main)],
            shield: None,
            config,
            started: unix_now(),
            next_id: AtomicU64::new(1),
            http: metrics::HttpCounters::default(),
        }
    }

    /// Adds a guard model: listed and usable as a model, answering
    /// `/v1/moderations`, and shielding the main model as `shield` says.
    pub fn with_guard(
        mut self,
        model: ServedModel,
        guard: Guard,
        settings: ShieldSettings,
    ) -> Self {
        let model = Arc::new(model);
        self.models.push(model.clone());
        self.shield = Some(Shield::new(model, guard, settings));
        self
    }

    /// The main model.
    pub fn main(&self) -> &Arc<ServedModel> {
        &self.models[0]
    }

    /// The model a request names. With one model served any name is
    /// accepted (clients often send a fixed one, and llama-server ignores
    /// it); with several, an unknown name is OpenAI's 404 `model_not_found`.
    pub fn model(&self, name: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(self.main().clone());
        };
        if let Some(m) = self.models.iter().find(|m| m.id == name) {
            return Ok(m.clone());
        }
        if self.models.len() == 1 {
            return Ok(self.main().clone());
        }
        Err(ApiError::ModelNotFound(name.to_string()))
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
        .route("/v1/moderations", post(moderation::moderations))
        .route("/moderations", post(moderation::moderations))
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
