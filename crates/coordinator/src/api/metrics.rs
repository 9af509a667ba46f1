//! `GET /metrics`: request, token and node metrics in the Prometheus text format.

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

use super::AppState;
use crate::stats::prometheus::CONTENT_TYPE;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.stats.prometheus_text(),
    )
        .into_response()
}
