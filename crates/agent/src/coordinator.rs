//! HTTP client for the coordinator's agent API: register, heartbeat, shutdown.

use std::time::Duration;

use llm_router_common::{ErrorBody, HeartbeatRequest, NodeId, RegisterRequest, RegisterResponse};
use reqwest::{StatusCode, Url};

use crate::http::{describe_transport_error, directory_url};

/// A coordinator that takes longer than this to accept a connection is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request limit for registration and heartbeats (a registration may list thousands of models).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The shutdown notice is best effort: it must not hold up the process exiting.
pub const SHUTDOWN_NOTICE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of an unexpected error body goes into the log.
const MAX_ERROR_MESSAGE_CHARS: usize = 300;

/// Why a call to the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// No HTTP answer at all: connection refused, DNS failure, timeout…
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Unreachable { url: Url, reason: String },
    /// An HTTP answer other than success, with the coordinator's own error message.
    #[error("the coordinator answered {status} to {url}: {message}")]
    Rejected {
        url: Url,
        status: StatusCode,
        message: String,
    },
    /// A success status with a body that is not what the API promises.
    #[error("the coordinator at {url} sent an unexpected answer: {reason}")]
    InvalidResponse { url: Url, reason: String },
}

impl CoordinatorError {
    /// Whether trying again later can succeed: network trouble, 5xx, 404 (a coordinator
    /// still starting behind a proxy), 408 and 429. Any other 4xx (bad request, wrong
    /// token) will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordinatorError::Unreachable { .. } | CoordinatorError::InvalidResponse { .. } => true,
            CoordinatorError::Rejected { status, .. } => {
                !status.is_client_error()
                    || matches!(
                        *status,
                        StatusCode::NOT_FOUND
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    )
            }
        }
    }

    /// A 404: for a heartbeat, the coordinator no longer knows this node.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CoordinatorError::Rejected { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// A 401 or 403: the token or credential presented is not accepted.
    pub fn is_refused_credential(&self) -> bool {
        matches!(
            self,
            CoordinatorError::Rejected { status, .. }
                if matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        )
    }
}

/// Why the client for the coordinator could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the coordinator CA file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the coordinator CA file {path} holds no usable PEM certificate: {source}")]
    CaPem {
        path: std::path::PathBuf,
        source: reqwest::Error,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// One reused HTTP client for the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: Url,
}

impl CoordinatorClient {
    /// A client for the coordinator at `base`; an https coordinator must present a
    /// certificate from the system's authorities or from `ca_file` (PEM).
    pub fn new(base: &Url, ca_file: Option<&std::path::Path>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("llm-router-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.to_owned(),
                source,
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                ClientError::CaPem {
                    path: path.to_owned(),
                    source,
                }
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Self {
            http: builder.build()?,
            base: directory_url(base),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `POST /api/agents/register`, presenting the fleet's `node_token` if there is one.
    pub async fn register(
        &self,
        request: &RegisterRequest,
        node_token: Option<&str>,
    ) -> Result<RegisterResponse, CoordinatorError> {
        let url = self.endpoint("api/agents/register");
        let response = self
            .send(
                with_bearer(self.http.post(url.clone()).json(request), node_token),
                &url,
            )
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|error| CoordinatorError::Unreachable {
                url: url.clone(),
                reason: describe_transport_error(&error),
            })?;
        serde_json::from_slice(&bytes).map_err(|error| CoordinatorError::InvalidResponse {
            url,
            reason: error.to_string(),
        })
    }

    /// `POST /api/agents/{id}/heartbeat`, with the node's credential.
    pub async fn heartbeat(
        &self,
        node_id: NodeId,
        request: &HeartbeatRequest,
        credential: Option<&str>,
    ) -> Result<(), CoordinatorError> {
        let url = self.endpoint(&format!("api/agents/{node_id}/heartbeat"));
        self.send(
            with_bearer(self.http.post(url.clone()).json(request), credential),
            &url,
        )
        .await
        .map(drop)
    }

    /// `POST /api/agents/check-token`: whether the coordinator answers and would
    /// accept `node_token`, without registering (the settings panel's test).
    pub async fn check_token(&self, node_token: Option<&str>) -> Result<(), CoordinatorError> {
        let url = self.endpoint("api/agents/check-token");
        self.send(with_bearer(self.http.post(url.clone()), node_token), &url)
            .await
            .map(drop)
    }

    /// `POST /api/agents/{id}/shutdown`: this node is going away on purpose.
    pub async fn shutdown(
        &self,
        node_id: NodeId,
        credential: Option<&str>,
    ) -> Result<(), CoordinatorError> {
        let url = self.endpoint(&format!("api/agents/{node_id}/shutdown"));
        let request = self.http.post(url.clone()).timeout(SHUTDOWN_NOTICE_TIMEOUT);
        self.send(with_bearer(request, credential), &url)
            .await
            .map(drop)
    }

    /// `POST /api/agents/{id}/drain`: no new requests for this node
    /// (`draining`), or take them again.
    pub async fn set_draining(
        &self,
        node_id: NodeId,
        draining: bool,
        credential: Option<&str>,
    ) -> Result<(), CoordinatorError> {
        let url = self.endpoint(&format!("api/agents/{node_id}/drain"));
        let request = self
            .http
            .post(url.clone())
            .json(&serde_json::json!({ "draining": draining }));
        self.send(with_bearer(request, credential), &url)
            .await
            .map(drop)
    }

    fn endpoint(&self, path: &str) -> Url {
        // `base` ends in '/', and `path` is relative and fixed, so joining cannot fail.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<reqwest::Response, CoordinatorError> {
        let response = request
            .send()
            .await
            .map_err(|error| CoordinatorError::Unreachable {
                url: url.clone(),
                reason: describe_transport_error(&error),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(CoordinatorError::Rejected {
            url: url.clone(),
            status,
            message: error_message(status, &body),
        })
    }
}

/// `request` with `Authorization: Bearer <token>` when there is a token.
fn with_bearer(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// The coordinator's `{"error": "..."}` message, or the start of whatever else it sent.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        text.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16) -> CoordinatorError {
        CoordinatorError::Rejected {
            url: Url::parse("http://c/api/agents/register").unwrap(),
            status: StatusCode::from_u16(status).unwrap(),
            message: "m".to_owned(),
        }
    }

    #[test]
    fn server_errors_and_transient_client_errors_are_retryable() {
        for status in [500, 502, 503, 504, 404, 408, 429] {
            assert!(rejected(status).is_retryable(), "{status}");
        }
        let unreachable = CoordinatorError::Unreachable {
            url: Url::parse("http://c/").unwrap(),
            reason: "connection refused".to_owned(),
        };
        assert!(unreachable.is_retryable());
    }

    #[test]
    fn permanent_client_errors_are_not_retryable() {
        for status in [400, 401, 403, 405, 409, 413, 422] {
            assert!(!rejected(status).is_retryable(), "{status}");
        }
    }

    #[test]
    fn only_404_means_not_found() {
        assert!(rejected(404).is_not_found());
        assert!(!rejected(410).is_not_found());
        assert!(!rejected(500).is_not_found());
    }

    #[test]
    fn error_message_prefers_the_coordinators_json_error() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(
            error_message(status, br#"{"error":"machine_name is empty"}"#),
            "machine_name is empty"
        );
        assert_eq!(error_message(status, b"  plain text \n"), "plain text");
        assert_eq!(error_message(status, b""), "Bad Request");
        let long = "y".repeat(1000);
        assert_eq!(
            error_message(status, long.as_bytes()).len(),
            MAX_ERROR_MESSAGE_CHARS
        );
    }
}
