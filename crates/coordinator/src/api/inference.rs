//! Shared handler for the inference endpoints of both APIs: check the body,
//! read what routing needs, hand the request to the proxy.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::BodyExt as _;

use super::AppState;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::uri::PathAndQuery;
use bytes::Bytes;
use tokio::time::Instant;

use crate::admission::{Admission, Gate, GateHold};
use crate::placement::{PRELOAD_KEEP_ALIVE, Placer};
use crate::proxy::error::ProxyError;
use crate::proxy::peek::{RequestFacts, peek, with_keep_alive};
use crate::proxy::{InferenceRequest, RequestMeta};
use crate::serve::BodyTooSlow;
use llm_router_common::{ApiKind, canonical_model_name};

/// Proxies `request` to a node, answering errors in `flavor`'s format.
/// `stream_default` is the API's default for an absent `stream` field.
pub async fn proxy(
    state: &AppState,
    flavor: ApiKind,
    stream_default: bool,
    request: Request,
) -> Response {
    let limit = state.proxy.settings().max_request_bytes;
    let (parts, body) = request.into_parts();
    let meta = RequestMeta {
        request_id: parts
            .headers
            .get(super::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        client_ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        api_key: parts
            .extensions
            .get::<super::access::ClientKeyName>()
            .map(|k| std::sync::Arc::clone(&k.0)),
        method: parts.method.clone(),
        started: Instant::now(),
        started_at: chrono::Utc::now(),
    };
    let reject = |error: ProxyError, facts: Option<&RequestFacts>, body: Bytes| {
        let sinks = state.proxy.sinks();
        if !sinks.is_empty() {
            sinks.record(&meta.rejected(flavor, parts.uri.path(), facts, body, &error, Vec::new()));
        }
        error.with(flavor).into_response()
    };
    // A stopping coordinator takes no new work; the client can retry elsewhere.
    if state.proxy.cutoff().is_stopping() {
        return reject(ProxyError::ShuttingDown, None, Bytes::new());
    }
    let caps = state.proxy.settings().admission;
    let Some(in_flight) = state.proxy.in_flight_gate().take(1, caps.wait).await else {
        let error = ProxyError::Overloaded(format!(
            "{} inference requests are in flight (LLM_ROUTER_MAX_IN_FLIGHT)",
            caps.max_in_flight
        ));
        return reject(error, None, Bytes::new());
    };
    let (body, hold) = match read_body(body, limit, state.proxy.buffer_gate(), caps.wait).await {
        Ok(read) => read,
        Err(error) => return reject(error, None, Bytes::new()),
    };
    let admission = Admission {
        in_flight: Some(in_flight),
    };
    let facts = match peek(&body, stream_default) {
        Ok(facts) => facts,
        Err(e) => return reject(e, None, held(body, hold)),
    };
    let model = canonical_model_name(&facts.model);
    // Demand counts at arrival: a queue that grows is demand the plan must
    // see now. A metadata read or an unload is no demand for the model.
    let longer = state.placer.as_ref().and_then(|placer| {
        if facts.runs_model(parts.uri.path()) {
            placer.arrived(&model);
        }
        keep_warm(placer, &model, flavor, parts.uri.path(), &facts, &body)
    });
    let body = match longer {
        Some(longer) => held(Bytes::from(longer), hold),
        None => held(body, hold),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let request = InferenceRequest {
        flavor,
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
        facts,
        model,
        meta: meta.clone(),
    };
    match state.proxy.forward(request, admission).await {
        Ok(response) => response,
        Err(e) => e.with(flavor).into_response(),
    }
}

/// A body in one frame up to this size is copied out of the connection's buffer.
const COPIED_FRAME: usize = 64 * 1024;

/// Reads a request body into memory under the cap on buffered bytes (`gate`):
/// its announced length is reserved at once, a body of unknown length reserves
/// as it grows, and each reservation waits at most `wait` for room. One large
/// frame is kept as it came; more are copied once into a buffer of the final size.
async fn read_body(
    mut body: Body,
    limit: usize,
    gate: &Arc<Gate>,
    wait: Duration,
) -> Result<(Bytes, GateHold), ProxyError> {
    let too_large = || ProxyError::PayloadTooLarge { limit };
    let no_room = || {
        ProxyError::Overloaded(format!(
            "request bodies fill the {} MiB buffer (LLM_ROUTER_REQUEST_BUFFER_MB)",
            gate.capacity() / (1024 * 1024)
        ))
    };
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(too_large());
    }
    let announced = hint.exact().map_or(0, |n| n as usize);
    let mut hold = gate.take(announced, wait).await.ok_or_else(no_room)?;
    let mut first: Option<Bytes> = None;
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(body_read_error)?.into_data() else {
            continue; // trailers
        };
        let Some(previous) = first.as_ref() else {
            if data.len() > limit {
                return Err(too_large());
            }
            if data.len() > hold.amount() && !hold.grow(data.len() - hold.amount(), wait).await {
                return Err(no_room());
            }
            first = Some(data);
            continue;
        };
        let len = previous.len() + buffer.len() + data.len();
        if len > limit {
            return Err(too_large());
        }
        if len > buffer.capacity() {
            // Room for the whole announced body, else double (unknown length).
            let capacity = announced.max(len).max(buffer.capacity() * 2).min(limit);
            if capacity > hold.amount() && !hold.grow(capacity - hold.amount(), wait).await {
                return Err(no_room());
            }
            buffer.reserve_exact(capacity - buffer.len());
        }
        if buffer.is_empty() {
            buffer.extend_from_slice(previous);
        }
        buffer.extend_from_slice(&data);
    }
    let bytes = match first {
        // A small frame is a slice of the connection's read buffer, which it
        // would keep alive (8 KiB or more) for as long as the request lasts:
        // a long stream, and the body is kept for a retry on another node.
        Some(only) if buffer.is_empty() && only.len() <= COPIED_FRAME => {
            Bytes::copy_from_slice(&only)
        }
        Some(only) if buffer.is_empty() => only,
        _ => Bytes::from(buffer),
    };
    Ok((bytes, hold))
}

/// `bytes` holding its share of the buffer cap for as long as it lives.
fn held(bytes: Bytes, hold: GateHold) -> Bytes {
    Bytes::from_owner(HeldBody { bytes, _hold: hold })
}

/// Bodies up to this size get `keep_alive` added: the splice copies the
/// body, and a copy of a larger one would take memory the buffer cap does
/// not count. Larger ones are forwarded untouched.
const KEEP_ALIVE_MAX_BODY: usize = 1024 * 1024;
/// The Ollama paths whose requests say how long the model stays in memory.
const KEEP_ALIVE_PATHS: [&str; 4] = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
];

/// The body with Ollama's `keep_alive` set to the placement's, when the
/// plan covers the request's model and the client did not set one: the
/// planned nodes keep it in memory through a pause in its demand.
fn keep_warm(
    placer: &Placer,
    model: &str,
    flavor: ApiKind,
    path: &str,
    facts: &RequestFacts,
    body: &[u8],
) -> Option<Vec<u8>> {
    if flavor != ApiKind::Ollama
        || facts.keep_alive
        || body.len() > KEEP_ALIVE_MAX_BODY
        || !KEEP_ALIVE_PATHS.contains(&path)
    {
        return None;
    }
    if !placer.route_plan().load().by_model.contains_key(model) {
        return None;
    }
    with_keep_alive(body, PRELOAD_KEEP_ALIVE)
}

/// A request body with its share of the buffer cap. The share is given back
/// when the last copy of the body is dropped, not when the request's handler
/// ends: an upstream connection still writing it, or the history queue
/// recording its prompt, keeps the bytes alive, and so the share.
struct HeldBody {
    bytes: Bytes,
    _hold: GateHold,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The error for a body that could not be read, by its cause.
fn body_read_error(error: axum::Error) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(slow) = e.downcast_ref::<BodyTooSlow>() {
            return ProxyError::BodyTimeout(slow.to_string());
        }
        cause = e.source();
    }
    ProxyError::BadRequest(format!("could not read request body: {error}"))
}

/// An axum handler proxying with Ollama's conventions (`stream` defaults to true).
pub async fn ollama(State(state): State<AppState>, request: Request) -> Response {
    proxy(&state, ApiKind::Ollama, true, request).await
}

/// An axum handler proxying with OpenAI's conventions (`stream` defaults to false).
pub async fn openai(State(state): State<AppState>, request: Request) -> Response {
    proxy(&state, ApiKind::OpenAi, false, request).await
}
