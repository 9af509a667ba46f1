//! `/api/keys`: client API keys for operators: list, create (the key is in the
//! answer, once), revoke.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
};
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, ApiPath, AppState};
use crate::auth::keys::{KeyInfo, KeyLimits, KeyStoreError};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(create))
        .route("/{name}", delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(flatten)]
    limits: KeyLimits,
}

impl From<KeyStoreError> for ApiError {
    fn from(error: KeyStoreError) -> Self {
        match error {
            KeyStoreError::InvalidName(_) | KeyStoreError::ZeroLimit => {
                ApiError::Unprocessable(error.to_string())
            }
            KeyStoreError::Exists(_) => ApiError::Conflict(error.to_string()),
            KeyStoreError::Unknown(_) => ApiError::NotFound(error.to_string()),
            KeyStoreError::Io { .. } | KeyStoreError::Corrupt { .. } => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}

async fn list(State(state): State<AppState>) -> Json<Vec<KeyInfo>> {
    Json(state.access.keys.list())
}

/// `POST /api/keys {"name", "requests_per_minute"?, "max_concurrent"?}` → 201 with the key.
async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let keys = std::sync::Arc::clone(&state.access.keys);
    let (key, info) = tokio::task::spawn_blocking(move || keys.create(&req.name, req.limits))
        .await
        .map_err(|e| ApiError::Internal {
            what: "the key store failed",
            detail: e.to_string(),
        })??;
    let mut body = serde_json::to_value(&info).unwrap_or_default();
    body["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let keys = std::sync::Arc::clone(&state.access.keys);
    tokio::task::spawn_blocking(move || keys.revoke(&name))
        .await
        .map_err(|e| ApiError::Internal {
            what: "the key store failed",
            detail: e.to_string(),
        })??;
    Ok(StatusCode::NO_CONTENT)
}
