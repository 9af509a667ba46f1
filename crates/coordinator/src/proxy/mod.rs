//! The inference proxy: picks a node that holds the requested model, sends
//! the client's body to it unchanged, and streams the answer back.
//!
//! - [`peek`]: reads `model` and `stream` without re-serialising the body;
//! - [`balancer`]: the policy seam that picks among candidates;
//! - [`body`]: the streamed response with its in-flight guard;
//! - [`error`]: errors in the Ollama or OpenAI format.
//!
//! Failover: a node that refuses the connection, times out before its first
//! byte, or answers 5xx (or 404 for the model) before anything reached the
//! client is skipped and the request goes to another candidate, up to
//! `max_attempts` nodes. A node that cannot be reached is kept out of
//! rotation for `failure_cooldown` (tried only when nothing else is left).

pub mod balancer;
pub mod body;
pub mod error;
pub mod peek;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::time::Instant;

use crate::config::ProxySettings;
use crate::registry::{NodeRegistry, RoutableNode};
use balancer::{Balancer, RoundRobin};
use body::{FailureReport, ProxiedBody, error_chain};
use error::{ApiFlavor, ProxyError};
use peek::RequestFacts;

/// Response header naming the node that served a request.
pub const NODE_HEADER: &str = "x-llm-router-node";

/// Request headers not forwarded to nodes: connection-level, or set anew by the client library.
const SKIPPED_REQUEST_HEADERS: [HeaderName; 9] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::ACCEPT_ENCODING,
];

/// Response headers not passed back: connection-level.
const SKIPPED_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// Sends inference requests to nodes. One per coordinator; cheap to share.
#[derive(Debug)]
pub struct Proxy {
    registry: Arc<NodeRegistry>,
    /// One pooled client for all upstream traffic (HTTP/1.1 keep-alive).
    client: reqwest::Client,
    settings: ProxySettings,
    balancer: Box<dyn Balancer>,
}

/// One inference request as the handlers hand it over.
#[derive(Debug)]
pub struct InferenceRequest {
    pub flavor: ApiFlavor,
    pub method: Method,
    /// Path and query to call on the node, e.g. `/api/chat`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub facts: RequestFacts,
}

/// Why one attempt on one node failed, and whether that says the node is unreachable.
struct AttemptFailure {
    message: String,
    unreachable: bool,
    timed_out: bool,
}

impl Proxy {
    pub fn new(registry: Arc<NodeRegistry>, settings: ProxySettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            // Nodes are on the local network: never send their traffic through a system proxy.
            .no_proxy()
            .build()?;
        Ok(Self {
            registry,
            client,
            settings,
            balancer: Box::new(RoundRobin::default()),
        })
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// Serves one inference request, failing over between candidates.
    pub async fn forward(&self, request: InferenceRequest) -> Result<Response, ProxyError> {
        let snapshot = self.registry.snapshot();
        if snapshot.is_empty() {
            return Err(ProxyError::NoNodeAvailable(if self.registry.is_empty() {
                "no node has registered yet; start llm-router-agent beside Ollama on a machine"
            } else {
                "every registered node is offline or draining"
            }));
        }
        let now = Instant::now();
        let (mut pool, mut reserve): (Vec<Arc<RoutableNode>>, Vec<Arc<RoutableNode>>) = snapshot
            .candidates_for(&request.facts.model)
            .cloned()
            .partition(|node| !node.live.is_cooling(now));
        if pool.is_empty() && reserve.is_empty() {
            return Err(ProxyError::ModelNotFound(request.facts.model));
        }

        let max_attempts = self.settings.max_attempts.max(1) as usize;
        let mut failures: Vec<String> = Vec::new();
        let mut all_timed_out = true;
        while failures.len() < max_attempts {
            if pool.is_empty() {
                // Nodes that failed recently are the last resort, not excluded.
                std::mem::swap(&mut pool, &mut reserve);
                if pool.is_empty() {
                    break;
                }
            }
            let index = self.balancer.select(&pool, &request.facts);
            let node = pool.swap_remove(index);
            match self.attempt(&node, &request).await {
                Ok(response) => return Ok(response),
                Err(failure) => {
                    if failure.unreachable
                        && node
                            .live
                            .mark_unreachable(Instant::now(), self.settings.failure_cooldown)
                    {
                        tracing::warn!(node = %node.machine_name, url = %node.api_url, cooldown_secs = self.settings.failure_cooldown.as_secs(), "node unreachable; taken out of rotation");
                    }
                    tracing::warn!(node = %node.machine_name, model = %request.facts.model, error = %failure.message, "attempt failed; trying another node");
                    all_timed_out &= failure.timed_out;
                    failures.push(failure.message);
                }
            }
        }
        let summary = format!(
            "{} node(s) tried for model \"{}\", all failed: {}",
            failures.len(),
            request.facts.model,
            failures.join("; ")
        );
        Err(if all_timed_out {
            ProxyError::Timeout(summary)
        } else {
            ProxyError::NodesFailed(summary)
        })
    }

    /// One try on one node: the response if its head arrived and is worth passing on.
    async fn attempt(
        &self,
        node: &Arc<RoutableNode>,
        request: &InferenceRequest,
    ) -> Result<Response, AttemptFailure> {
        let guard = node.live.start_request();
        let url = format!("{}{}", node.api_url, request.path_and_query);
        let mut upstream = self
            .client
            .request(request.method.clone(), url)
            .body(request.body.clone());
        for (name, value) in &request.headers {
            if !SKIPPED_REQUEST_HEADERS.contains(name) {
                upstream = upstream.header(name, value);
            }
        }
        let sent = tokio::time::timeout(self.settings.first_byte_timeout, upstream.send()).await;
        let response = match sent {
            Err(_) => {
                return Err(AttemptFailure {
                    message: format!(
                        "{}: no answer within {} s",
                        node.machine_name,
                        self.settings.first_byte_timeout.as_secs()
                    ),
                    unreachable: false,
                    timed_out: true,
                });
            }
            Ok(Err(e)) => {
                return Err(AttemptFailure {
                    message: format!("{}: {}", node.machine_name, error_chain(&e)),
                    unreachable: e.is_connect(),
                    timed_out: e.is_timeout(),
                });
            }
            Ok(Ok(response)) => response,
        };
        if node.live.mark_reachable() {
            tracing::info!(node = %node.machine_name, "node reachable again; back in rotation");
        }
        let status = response.status();
        if status.is_server_error() || status == StatusCode::NOT_FOUND {
            let text = response.text().await.unwrap_or_default();
            return Err(AttemptFailure {
                message: format!(
                    "{} answered {}: {}",
                    node.machine_name,
                    status.as_u16(),
                    node_error_message(&text)
                ),
                unreachable: false,
                timed_out: false,
            });
        }
        tracing::debug!(node = %node.machine_name, model = %request.facts.model, %status, "proxying");

        let streamed = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.starts_with("application/x-ndjson") || ct.starts_with("text/event-stream")
            });
        let failure = if streamed {
            FailureReport::ErrorChunk(request.flavor)
        } else {
            FailureReport::Abort
        };
        let mut builder = Response::builder().status(status);
        if let Some(headers) = builder.headers_mut() {
            for (name, value) in response.headers() {
                if !SKIPPED_RESPONSE_HEADERS.contains(name) {
                    headers.append(name, value.clone());
                }
            }
            if let Ok(value) = HeaderValue::from_str(&node.machine_name) {
                headers.insert(HeaderName::from_static(NODE_HEADER), value);
            }
        }
        let body = ProxiedBody::new(
            Box::pin(response.bytes_stream()),
            self.settings.stream_idle_timeout,
            failure,
            node.machine_name.clone(),
            guard,
        );
        builder
            .body(Body::from_stream(body))
            .map_err(|e| AttemptFailure {
                message: format!("{}: unusable response head: {e}", node.machine_name),
                unreachable: false,
                timed_out: false,
            })
    }
}

/// The `error` text of a node's JSON error body (either API's format), else the body itself, shortened.
fn node_error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]
            .as_str()
            .or_else(|| v["error"]["message"].as_str())
            .map(str::to_owned)
    });
    let mut text = message.unwrap_or_else(|| body.trim().to_owned());
    if text.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}
