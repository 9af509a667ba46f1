//! Shared handler for the inference endpoints of both APIs: check the body,
//! read what routing needs, hand the request to the proxy.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::AppState;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use tokio::time::Instant;

use crate::proxy::error::{ApiFlavor, ProxyError};
use crate::proxy::peek::{RequestFacts, peek};
use crate::proxy::{InferenceRequest, RequestMeta};

/// Proxies `request` to a node, answering errors in `flavor`'s format.
/// `stream_default` is the API's default for an absent `stream` field.
pub async fn proxy(
    state: &AppState,
    flavor: ApiFlavor,
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
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let error = if too_large {
                ProxyError::PayloadTooLarge { limit }
            } else {
                ProxyError::BadRequest(format!("could not read request body: {e}"))
            };
            return reject(error, None, Bytes::new());
        }
    };
    let facts = match peek(&body, stream_default) {
        Ok(facts) => facts,
        Err(e) => return reject(e, None, body),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let request = InferenceRequest {
        flavor,
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
        facts,
        meta: meta.clone(),
    };
    match state.proxy.forward(request).await {
        Ok(response) => response,
        Err(e) => e.with(flavor).into_response(),
    }
}

/// An axum handler proxying with Ollama's conventions (`stream` defaults to true).
pub async fn ollama(State(state): State<AppState>, request: Request) -> Response {
    proxy(&state, ApiFlavor::Ollama, true, request).await
}

/// An axum handler proxying with OpenAI's conventions (`stream` defaults to false).
pub async fn openai(State(state): State<AppState>, request: Request) -> Response {
    proxy(&state, ApiFlavor::OpenAi, false, request).await
}
