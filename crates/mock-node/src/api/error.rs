//! One error type for every route, answered in the format of the API that
//! was called: Ollama's `{"error": "..."}` or OpenAI's
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::json_response;

/// Which API's error format to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Ollama,
    OpenAi,
}

/// A request the node refuses, with the status and message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    dialect: Dialect,
    status: StatusCode,
    message: String,
    /// OpenAI's machine-readable `code`.
    code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(dialect: Dialect, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            dialect,
            status,
            message: message.into(),
            code: None,
        }
    }

    pub(crate) fn bad_request(dialect: Dialect, message: impl Into<String>) -> Self {
        Self::new(dialect, StatusCode::BAD_REQUEST, message)
    }

    /// A model the node does not hold, in Ollama's words.
    pub(crate) fn model_not_found(dialect: Dialect, name: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            ..Self::new(
                dialect,
                StatusCode::NOT_FOUND,
                format!("model \"{name}\" not found, try pulling it first"),
            )
        }
    }

    /// The failure `fail_rate` asks for.
    pub(crate) fn injected(dialect: Dialect) -> Self {
        Self::new(
            dialect,
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected failure",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.dialect {
            Dialect::Ollama => json_response(self.status, &json!({ "error": self.message })),
            Dialect::OpenAi => {
                // The `type` follows the status the way Ollama's OpenAI layer sets it.
                let kind = match self.status {
                    StatusCode::BAD_REQUEST => "invalid_request_error",
                    StatusCode::NOT_FOUND => "not_found_error",
                    _ => "api_error",
                };
                json_response(
                    self.status,
                    &json!({
                        "error": {
                            "message": self.message,
                            "type": kind,
                            "param": null,
                            "code": self.code,
                        }
                    }),
                )
            }
        }
    }
}
