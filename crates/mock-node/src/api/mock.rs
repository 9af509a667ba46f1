//! The mock's own routes: Ollama's liveness answers, a health check, and
//! the runtime control, stats and recorded-request endpoints under
//! `/mock/`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, Dialect};
use super::json_response;
use crate::control::{ControlSnapshot, ControlUpdate};
use crate::state::MockState;
use crate::stats::{Endpoint, StatsSnapshot};

/// `GET /` and `HEAD /`, as Ollama answers them.
pub(super) async fn root(State(node): State<Arc<MockState>>) -> &'static str {
    node.stats().count_request(Endpoint::Root);
    "Ollama is running"
}

/// `GET /health`.
pub(super) async fn health(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::Health);
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /slots`, as llama.cpp's server answers it: one entry per generation
/// slot, the first ones `is_processing` while generations hold them.
pub(super) async fn slots(State(node): State<Arc<MockState>>) -> Response {
    let busy = node.stats().active();
    let slots: Vec<serde_json::Value> = (0..node.parallel())
        .map(|id| serde_json::json!({ "id": id, "is_processing": u64::from(id) < busy }))
        .collect();
    json_response(StatusCode::OK, &slots)
}

/// Anything else: Ollama's (gin's) plain 404.
pub(super) async fn not_found(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::Unknown);
    (StatusCode::NOT_FOUND, "404 page not found").into_response()
}

#[derive(Serialize)]
struct ConfigView {
    name: String,
    #[serde(flatten)]
    knobs: ControlSnapshot,
    models: Vec<String>,
    loaded_models: Vec<String>,
}

fn config_view(node: &MockState) -> ConfigView {
    ConfigView {
        name: node.name().to_owned(),
        knobs: node.control().snapshot(),
        models: node
            .models()
            .held()
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        loaded_models: node.models().loaded_names(),
    }
}

/// `GET /mock/config`: the knobs as they are.
pub(super) async fn get_config(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::MockConfig);
    json_response(StatusCode::OK, &config_view(&node))
}

/// `POST /mock/config`: change some knobs (a partial config), answer with
/// all of them.
pub(super) async fn set_config(State(node): State<Arc<MockState>>, request: Request) -> Response {
    let body = match node.receive(Endpoint::MockConfig, request).await {
        Ok(body) => body,
        Err(message) => return ApiError::bad_request(Dialect::Ollama, message).into_response(),
    };
    let update: ControlUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => return ApiError::bad_request(Dialect::Ollama, e.to_string()).into_response(),
    };
    if let Err(invalid) = node.control().apply(&update) {
        return invalid.into_response();
    }
    if let Some(models) = &update.models {
        node.models().set_held(models.iter().map(String::as_str));
    }
    json_response(StatusCode::OK, &config_view(&node))
}

#[derive(Serialize)]
struct StatsView {
    name: String,
    #[serde(flatten)]
    stats: StatsSnapshot,
    loaded_models: Vec<String>,
}

/// `GET /mock/stats`: the counters.
pub(super) async fn stats(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::MockStats);
    json_response(
        StatusCode::OK,
        &StatsView {
            name: node.name().to_owned(),
            stats: node.stats().snapshot(),
            loaded_models: node.models().loaded_names(),
        },
    )
}

#[derive(Serialize)]
struct RecordedView<'a> {
    endpoint: &'static str,
    method: &'a str,
    path: &'a str,
    headers: BTreeMap<&'a str, &'a str>,
    /// The body as text (invalid UTF-8 replaced); the exact bytes are
    /// available through the library's `MockStats::recorded`.
    body: Cow<'a, str>,
}

/// `GET /mock/requests`: the remembered requests, oldest first, for tests
/// that run the node as a separate process.
pub(super) async fn requests(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::MockRequests);
    let recorded = node.stats().recorded();
    let views: Vec<RecordedView<'_>> = recorded
        .iter()
        .map(|r| RecordedView {
            endpoint: r.endpoint.as_str(),
            method: r.method.as_str(),
            path: r.path(),
            headers: r
                .headers
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
                .collect(),
            body: String::from_utf8_lossy(&r.body),
        })
        .collect();
    json_response(StatusCode::OK, &views)
}
