//! What the proxy reports about every request once it is over: the input of
//! request history, per-node statistics, Prometheus metrics and the
//! latency-aware balancer.
//!
//! Sinks are called on the request path (when the response body ends), so
//! they must only enqueue or update counters, never block.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use llm_router_common::NodeId;

use llm_router_common::ApiKind;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node's answer reached the client in full (whatever its status).
    Completed,
    /// The router answered an error without a node's answer (no node, bad input, all failed).
    Rejected,
    /// The node's answer broke off after it started (node died, idle timeout),
    /// or the node answered an error status (its message is the error).
    Failed,
    /// The client went away before the answer ended.
    Cancelled,
    /// The coordinator was stopping and the grace for running requests ran out.
    Cut,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Cut => "cut",
        }
    }
}

/// Token counts and generation time, from Ollama's final counters or OpenAI's `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Time the node spent generating the completion tokens (Ollama's `eval_duration`).
    pub generation_time: Option<Duration>,
}

impl Usage {
    /// Completion tokens per second, when the node said how long generation took.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let tokens = self.completion_tokens? as f64;
        let secs = self.generation_time?.as_secs_f64();
        (secs > 0.0 && tokens > 0.0).then(|| tokens / secs)
    }
}

/// A node a request was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriedNode {
    pub id: NodeId,
    /// Its machine name when it was tried (names need not be unique).
    pub name: String,
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub request_id: String,
    pub started_at: DateTime<Utc>,
    pub client_ip: Option<IpAddr>,
    /// Name of the client's API key, when it sent a valid one.
    pub api_key: Option<std::sync::Arc<str>>,
    pub flavor: ApiKind,
    pub method: axum::http::Method,
    /// Path called, e.g. `/api/chat`.
    pub endpoint: String,
    /// Model as the client named it (empty when the body had none).
    pub model: String,
    pub stream: bool,
    /// The node that answered (or last failed).
    pub node_id: Option<NodeId>,
    pub node_name: Option<String>,
    /// Every node tried, in order, including the one that answered.
    pub nodes_tried: Vec<TriedNode>,
    /// HTTP status sent to the client.
    pub status: u16,
    pub outcome: Outcome,
    /// From arrival to the last byte (or the failure).
    pub duration: Duration,
    /// From arrival to the first body byte from the node.
    pub time_to_first_byte: Option<Duration>,
    pub usage: Usage,
    pub request_body: Bytes,
    /// The response as sent, up to the capture limit.
    pub response_body: Bytes,
    /// Bytes of the response beyond the capture limit (0 when complete).
    pub response_bytes_dropped: u64,
    pub error: Option<String>,
}

/// Logs one line per finished request at info, with target
/// `llm_router::request`: its id, method, path, model, node, status, outcome,
/// duration, time to first byte, tokens and error. Never a body, a header or
/// a key (the key's name is in the history, not here).
#[derive(Debug, Default)]
pub struct RequestLog;

impl RequestSink for RequestLog {
    fn record(&self, r: &RequestRecord) {
        let millis = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "llm_router::request",
            request_id = r.request_id.as_str(),
            method = r.method.as_str(),
            path = r.endpoint.as_str(),
            model = r.model.as_str(),
            node = r.node_name.as_deref(),
            status = r.status,
            outcome = r.outcome.as_str(),
            duration_ms = millis(r.duration),
            ttft_ms = r.time_to_first_byte.map(millis),
            prompt_tokens = r.usage.prompt_tokens,
            completion_tokens = r.usage.completion_tokens,
            error = r.error.as_deref().map(loggable_error),
            "request finished"
        );
    }
}

/// Most characters of an error in the request log: a node's error answer
/// may echo its input (validation errors of some servers quote the prompt).
const LOGGED_ERROR_CHARS: usize = 160;

fn loggable_error(error: &str) -> &str {
    match error.char_indices().nth(LOGGED_ERROR_CHARS) {
        Some((end, _)) => &error[..end],
        None => error,
    }
}

/// Receives every finished request. Must not block.
pub trait RequestSink: Send + Sync + std::fmt::Debug {
    fn record(&self, record: &RequestRecord);
}

/// The sinks a proxy reports to.
#[derive(Debug, Clone, Default)]
pub struct RequestSinks {
    sinks: Vec<Arc<dyn RequestSink>>,
}

impl RequestSinks {
    pub fn add(&mut self, sink: Arc<dyn RequestSink>) {
        self.sinks.push(sink);
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn record(&self, record: &RequestRecord) {
        for sink in &self.sinks {
            sink.record(record);
        }
    }
}
