//! The Ollama API, served for the whole fleet.

use axum::{
    Json, Router,
    extract::State,
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use llm_router_common::NodeStatus;
use serde_json::json;

use super::{AppState, inference, models};
use crate::proxy::error::ProxyError;
use llm_router_common::ApiKind;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root).head(root))
        .route("/api/chat", post(inference::ollama))
        .route("/api/generate", post(inference::ollama))
        .route("/api/embed", post(inference::ollama))
        .route("/api/embeddings", post(inference::ollama))
        .route("/api/show", post(inference::ollama))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/version", get(version))
        .route("/api/push", any(unsupported))
        .route("/api/blobs/{digest}", any(unsupported))
}

/// `GET /` and `HEAD /`: what Ollama answers, so tools that probe for Ollama find one.
async fn root(method: Method) -> Response {
    if method == Method::HEAD {
        return StatusCode::OK.into_response();
    }
    "Ollama is running".into_response()
}

async fn tags(State(state): State<AppState>) -> Json<serde_json::Value> {
    let models: Vec<_> =
        models::fleet_models(&state.registry, false, &state.proxy.settings().aliases)
            .iter()
            .map(models::ollama_tag)
            .collect();
    Json(json!({ "models": models }))
}

async fn ps(State(state): State<AppState>) -> Json<serde_json::Value> {
    let models: Vec<_> =
        models::fleet_models(&state.registry, true, &state.proxy.settings().aliases)
            .iter()
            .map(models::ollama_running)
            .collect();
    Json(json!({ "models": models }))
}

/// The oldest Ollama version among online nodes: a client checking for a
/// feature must not be told a version some node lacks. Without nodes, the
/// router's own version.
async fn version(State(state): State<AppState>) -> Json<serde_json::Value> {
    let oldest = state
        .registry
        .list()
        .into_iter()
        .filter(|n| n.status == NodeStatus::Online)
        .filter_map(|n| n.facts.ollama_version)
        .min_by(|a, b| version_key(a).cmp(&version_key(b)));
    Json(json!({ "version": oldest.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()) }))
}

/// Numeric parts of a version string, for ordering (`0.12.10` after `0.12.9`).
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap_or(u64::MAX))
        .collect()
}

async fn unsupported(uri: Uri) -> Response {
    let what = match uri.path() {
        "/api/push" => {
            "/api/push (pushing a model to a registry: run `ollama push` on a node that holds it)"
                .to_owned()
        }
        path if path.starts_with("/api/blobs/") => {
            format!("{path} (uploading blobs for /api/create)")
        }
        path => path.to_owned(),
    };
    ProxyError::Unsupported(what)
        .with(ApiKind::Ollama)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("0.12.10") > version_key("0.12.9"));
        assert!(version_key("0.3.0-rc1") < version_key("0.4.0"));
    }
}
