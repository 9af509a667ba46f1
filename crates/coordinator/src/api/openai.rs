//! The OpenAI API (`/v1/...`), served for the whole fleet.

use axum::{
    Json, Router,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use llm_router_common::canonical_model_name;
use serde_json::json;

use super::{AppState, inference, models};
use crate::proxy::error::ProxyError;
use llm_router_common::ApiKind;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(inference::openai))
        .route("/v1/completions", post(inference::openai))
        .route("/v1/embeddings", post(inference::openai))
        .route("/v1/models", get(list))
        .route("/v1/models/{*model}", get(show))
}

async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let data: Vec<_> =
        models::fleet_models(&state.registry, false, &state.proxy.settings().aliases)
            .iter()
            .map(models::openai_model)
            .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn show(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    let wanted = canonical_model_name(&model);
    match models::fleet_models(&state.registry, false, &state.proxy.settings().aliases)
        .iter()
        .find(|m| m.name == wanted)
    {
        Some(found) => Json(models::openai_model(found)).into_response(),
        None => ProxyError::ModelNotFound(model)
            .with(ApiKind::OpenAi)
            .into_response(),
    }
}
