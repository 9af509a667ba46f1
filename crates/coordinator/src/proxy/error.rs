//! Errors of the inference endpoints, answered in the format of the API the
//! client called: Ollama's `{"error": "..."}` or OpenAI's
//! `{"error": {"message", "type", "code"}}`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use llm_router_common::ApiKind;
use serde_json::json;

/// Why an inference request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "this request already passed through an llm-router (it carries {header}): a node points back at a router, which would loop"
    )]
    Loop { header: &'static str },
    #[error("the request body must be JSON (Content-Type: application/json), not {0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body came too slowly; the message says how slowly.
    #[error("{0}")]
    BodyTimeout(String),
    /// A cap is full and stayed full for the short wait; the message names it.
    #[error("the router is at capacity: {0}; retry shortly")]
    Overloaded(String),
    #[error("model \"{}\" not found on any online node", crate::registry::validate::shown(.0))]
    ModelNotFound(String),
    /// An Ollama request for a model that only servers speaking OpenAI's API hold.
    #[error(
        "model \"{}\" is served only by nodes that speak OpenAI's API, which cannot answer Ollama's; \
         call it through /v1/chat/completions (or /v1/embeddings), or put it on an Ollama node",
        crate::registry::validate::shown(.0)
    )]
    OnlyOnOpenAiNodes(String),
    #[error("no node is available: {0}")]
    NoNodeAvailable(&'static str),
    /// The model is on nodes that take no requests now (offline, draining).
    #[error(
        "model \"{}\" is held only by nodes that take no requests now: {}; retry when one is back",
        crate::registry::validate::shown(.model),
        .holders
    )]
    ModelUnavailable { model: String, holders: String },
    /// Every node tried failed; the message says how.
    #[error("{0}")]
    NodesFailed(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0} is not supported through llm-router; call the node directly")]
    Unsupported(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("too many requests for this API key ({limit}); retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        limit: &'static str,
        retry_after: std::time::Duration,
    },
    /// The coordinator is stopping: new requests are refused; running ones
    /// still waiting for a node when the grace ends are cut.
    #[error(
        "the router is shutting down; retry shortly (on another instance, or after the restart)"
    )]
    ShuttingDown,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Loop { .. } => StatusCode::LOOP_DETECTED,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ModelNotFound(_) | ProxyError::OnlyOnOpenAiNodes(_) => {
                StatusCode::NOT_FOUND
            }
            ProxyError::NoNodeAvailable(_) | ProxyError::ModelUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::NodesFailed(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's `type` and `code` for this error.
    fn openai_kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ProxyError::BadRequest(_) | ProxyError::UnsupportedMediaType(_) => {
                ("invalid_request_error", None)
            }
            ProxyError::PayloadTooLarge { .. } => {
                ("invalid_request_error", Some("request_too_large"))
            }
            ProxyError::BodyTimeout(_) => ("invalid_request_error", Some("request_timeout")),
            ProxyError::Overloaded(_) => ("server_error", Some("overloaded")),
            ProxyError::ModelNotFound(_) | ProxyError::OnlyOnOpenAiNodes(_) => {
                ("invalid_request_error", Some("model_not_found"))
            }
            ProxyError::NoNodeAvailable(_) | ProxyError::ModelUnavailable { .. } => {
                ("server_error", Some("no_available_node"))
            }
            ProxyError::Loop { .. } => ("server_error", Some("routing_loop")),
            ProxyError::NodesFailed(_) => ("server_error", Some("upstream_error")),
            ProxyError::Timeout(_) => ("server_error", Some("upstream_timeout")),
            ProxyError::Unsupported(_) => ("invalid_request_error", Some("unsupported_endpoint")),
            ProxyError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            ProxyError::RateLimited { .. } => ("requests", Some("rate_limit_exceeded")),
            ProxyError::ShuttingDown => ("server_error", Some("shutting_down")),
        }
    }

    pub fn with(self, flavor: ApiKind) -> FlavoredError {
        FlavoredError {
            flavor,
            error: self,
        }
    }
}

/// A [`ProxyError`] that knows which format to answer in.
#[derive(Debug)]
pub struct FlavoredError {
    pub flavor: ApiKind,
    pub error: ProxyError,
}

impl IntoResponse for FlavoredError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        let message = self.error.to_string();
        if status.is_server_error() {
            tracing::warn!(%status, error = %message, "inference request failed");
        }
        let body = match self.flavor {
            ApiKind::Ollama => json!({ "error": message }),
            ApiKind::OpenAi => {
                let (kind, code) = self.error.openai_kind();
                json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
            }
        };
        let mut response = (status, Json(body)).into_response();
        match self.error {
            ProxyError::RateLimited { retry_after, .. } => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    retry_after_value(retry_after),
                );
            }
            ProxyError::Overloaded(_) => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    retry_after_value(OVERLOADED_RETRY_AFTER),
                );
            }
            ProxyError::ShuttingDown => {
                let headers = response.headers_mut();
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    retry_after_value(SHUTTING_DOWN_RETRY_AFTER),
                );
                headers.insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            ProxyError::Unauthorized(_) => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"llm-router\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// When a client refused by a stopping coordinator is told to come back.
const SHUTTING_DOWN_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// When a client refused for a full cap is told to come back.
const OVERLOADED_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The last chunk of a stream that failed after it started, in the stream's own format.
pub fn stream_error_chunk(flavor: ApiKind, message: &str) -> Bytes {
    match flavor {
        ApiKind::Ollama => {
            let mut line = serde_json::to_vec(&json!({ "error": message }))
                .expect("a JSON object always serialises");
            line.push(b'\n');
            Bytes::from(line)
        }
        ApiKind::OpenAi => {
            let event = json!({ "error": { "message": message, "type": "server_error", "param": null, "code": "upstream_error" } });
            Bytes::from(format!("data: {event}\n\n"))
        }
    }
}

/// `Retry-After` in whole seconds, rounded up (a client retrying early is refused again).
pub fn retry_after_value(wait: std::time::Duration) -> axum::http::HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    axum::http::HeaderValue::from(secs.max(1))
}
