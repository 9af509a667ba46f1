//! The steps every Ollama and OpenAI request handler takes, in the same
//! order whichever API was called; only the error format (the [`Dialect`])
//! differs.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

use super::error::{ApiError, Dialect};
use super::{JsonText, cut_response, required_model};
use crate::generation::{Cut, Generation, Summary};
use crate::models::ModelInfo;
use crate::state::{Admission, MockState};
use crate::stats::Endpoint;

/// Fails the request when the node's failure knob says so, counting it.
pub(super) fn injected_failure(node: &MockState, dialect: Dialect) -> Result<(), ApiError> {
    if node.control().roll_failure() {
        node.stats().count_injected_failure();
        Err(ApiError::injected(dialect))
    } else {
        Ok(())
    }
}

/// Counts and records the request, then reads its body.
pub(super) async fn read_body(
    node: &MockState,
    dialect: Dialect,
    endpoint: Endpoint,
    request: Request,
) -> Result<Bytes, ApiError> {
    node.receive(endpoint, request)
        .await
        .map_err(|e| ApiError::bad_request(dialect, e))
}

/// The body as JSON; 400 when it is not.
pub(super) fn parse<'a, T: Deserialize<'a>>(
    dialect: Dialect,
    body: &'a [u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(dialect, e.to_string()))
}

/// The held model a request names: 400 without a name, 404 when not held.
pub(super) fn lookup<'a>(
    node: &MockState,
    dialect: Dialect,
    model: Option<JsonText<'a>>,
) -> Result<(JsonText<'a>, Arc<ModelInfo>), ApiError> {
    let name =
        required_model(model).ok_or_else(|| ApiError::bad_request(dialect, "model is required"))?;
    match node.models().find(name.as_str()) {
        Some(info) => Ok((name, info)),
        None => Err(ApiError::model_not_found(dialect, name.as_str())),
    }
}

/// Admits a generation, or answers with the cut connection of a node that
/// stopped while the request waited.
pub(super) async fn admit(
    node: &Arc<MockState>,
    model: &Arc<ModelInfo>,
    received: Instant,
    tokens: u64,
    prompt_tokens: u64,
) -> Result<Generation, Response> {
    match node.admit(model, received, tokens, prompt_tokens).await {
        Admission::Admitted(generation) => Ok(generation),
        Admission::Stopped => Err(cut_response(Cut::Stopped)),
    }
}

/// Admits and runs a generation that produces no tokens (a model load or
/// an embedding). The generation is handed back so that it keeps its slot
/// and stays in flight until the caller has built its answer.
pub(super) async fn run_without_tokens(
    node: &Arc<MockState>,
    model: &Arc<ModelInfo>,
    received: Instant,
    prompt_tokens: u64,
) -> Result<(Generation, Summary), Response> {
    let mut generation = admit(node, model, received, 0, prompt_tokens).await?;
    match generation.run_to_end().await {
        Ok(summary) => Ok((generation, summary)),
        Err(cut) => Err(cut_response(cut)),
    }
}
