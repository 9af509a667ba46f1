//! `GET /api/placement`: the placement plan, the demand and capacity it was
//! computed from, and its last change with the reason.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::placement::Plan;

pub async fn show(State(state): State<AppState>) -> Response {
    match &state.placer {
        Some(placer) => Json(Plan::clone(&placer.current())).into_response(),
        None => Json(Plan {
            reason: "placement is off (--placement off): the balancer alone decides".to_owned(),
            ..Plan::default()
        })
        .into_response(),
    }
}
