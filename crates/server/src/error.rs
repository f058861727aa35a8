//! The one mapping from failures to HTTP responses, in OpenAI's error
//! shape: `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgellama_engine::batch::SubmitError;
use edgellama_engine::guard::GuardError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a field of the wrong type or value.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("the prompt has {n_prompt} tokens but the context holds only {n_ctx}")]
    ContextLength { n_prompt: usize, n_ctx: usize },
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid API key")]
    Unauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    /// A request named a model this server does not serve.
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The queue is full; the client should retry after a while.
    #[error("the server is busy ({waiting} requests waiting); retry later")]
    Busy { waiting: usize },
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn bad_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::ContextLength { .. }
            | ApiError::Unsupported(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::BadRequest { .. } => ("invalid_request_error", None),
            ApiError::ContextLength { .. } => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            ApiError::Unsupported(_) => ("invalid_request_error", Some("unsupported")),
            ApiError::Unauthorized => ("authentication_error", Some("invalid_api_key")),
            ApiError::NotFound(_) => ("invalid_request_error", Some("not_found")),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::TooLarge(_) => ("invalid_request_error", Some("request_too_large")),
            ApiError::Busy { .. } => ("server_error", Some("server_busy")),
            ApiError::Internal(_) => ("server_error", None),
        }
    }

    /// The JSON body, also sent as an SSE event when a stream fails.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            ApiError::BadRequest { param, .. } => param.clone(),
            ApiError::ContextLength { .. } => Some("messages".into()),
            ApiError::ModelNotFound(_) => Some("model".into()),
            _ => None,
        };
        json!({"error": {
            "message": self.to_string(),
            "type": kind,
            "param": param,
            "code": code,
        }})
    }
}

/// The one mapping of the engine's refusals: a full queue is 503 with
/// `Retry-After`, a prompt past the context a 400 naming both sizes, a
/// stopped engine a 500, anything else about the request a 400.
impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::QueueFull(waiting) => ApiError::Busy { waiting },
            SubmitError::PromptTooLong { n_prompt, n_ctx } => {
                ApiError::ContextLength { n_prompt, n_ctx }
            }
            SubmitError::ShutDown => ApiError::Internal(e.to_string()),
            e => ApiError::bad(e.to_string()),
        }
    }
}

/// The guard's failures: its prompt's (the conversation's) are the
/// request's, its engine's as above, the rest the server's.
impl From<GuardError> for ApiError {
    fn from(e: GuardError) -> ApiError {
        match e {
            GuardError::Prompt(p) => ApiError::bad_param("messages", p.to_string()),
            GuardError::Submit(s) => s.into(),
            GuardError::Threshold(_) => ApiError::bad(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// Seconds a client is told to wait when the queue is full.
pub const RETRY_AFTER_SECS: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Busy { .. }) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if matches!(self, ApiError::Unauthorized) {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}
