//! One error type for the management API (agents, nodes, keys, history,
//! logins), mapped to an HTTP answer in one place.
//!
//! Clients get a status code and a JSON body that says what was wrong with
//! *their* request; internal details (I/O errors, paths) go to the log only.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use llm_router_common::{ErrorBody, NodeId};

/// Largest body a management endpoint accepts (a registration lists models, so this is generous).
pub const MAX_MANAGEMENT_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Everything a management endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: bad JSON syntax, a path parameter that is not an id.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed JSON whose content is not acceptable (missing field, wrong type, empty name…).
    #[error("{0}")]
    Unprocessable(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
    /// Nothing there: the message names what was looked for.
    #[error("{0}")]
    NotFound(String),
    /// No credential, or not one that allows this.
    #[error("{0}")]
    Unauthorized(String),
    /// A credential was presented but does not allow this, or the request is of a
    /// kind refused outright (a foreign origin, an unknown host).
    #[error("{0}")]
    Forbidden(String),
    /// The request contradicts what the registry holds (another node's URL).
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    /// Something the answer needs is not there now: a change applied in
    /// memory that could not be made durable, a store that is off or failing.
    #[error("{0}")]
    Unavailable(String),
    /// Nodes the request was passed to failed it (a pull that failed on some nodes).
    #[error("{0}")]
    BadGateway(String),
    /// A fault of ours: the client learns `what` failed, the log also why.
    #[error("{what}")]
    Internal { what: &'static str, detail: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownNode(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::registry::error::RegistryError> for ApiError {
    fn from(error: crate::registry::error::RegistryError) -> Self {
        use crate::registry::error::RegistryError;
        match error {
            RegistryError::UnknownNode(id) => ApiError::UnknownNode(id),
            RegistryError::Invalid(message) => ApiError::Unprocessable(message),
            RegistryError::Unauthenticated(message) => ApiError::Unauthorized(message),
            RegistryError::WrongCredential(message) => ApiError::Forbidden(message),
            RegistryError::Conflict(message) => ApiError::Conflict(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal { what, detail } = &self {
            tracing::error!(error = %detail, "{what}");
        } else if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request rejected");
        }
        let mut response = (status, Json(ErrorBody::new(self.to_string()))).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::TooManyRequests { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    crate::proxy::error::retry_after_value(retry_after),
                );
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"llm-router\""),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable(format!(
                "invalid request body: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text())
            )),
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!(
                "malformed JSON: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_else(|| e.body_text())
            )),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: MAX_MANAGEMENT_BODY_BYTES,
                    }
                } else {
                    ApiError::BadRequest(format!("could not read request body: {}", e.body_text()))
                }
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path parameter: {}", rejection.body_text()))
    }
}
