//! HTTP surface of the coordinator: `fn app(state) -> Router`.
//!
//! Tests drive this router directly with `tower::ServiceExt::oneshot`; the
//! server in [`crate::server`] only adds the socket.

pub mod access;
mod agents;
pub mod dashboard;
mod frame;
pub(crate) mod history;
mod inference;
mod keys;
mod metrics;
pub mod models;
mod ollama;
mod openai;
mod placement;
mod tasks;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State},
    http::{Method, StatusCode, Uri},
    middleware::from_fn_with_state,
    response::{IntoResponse as _, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::config::PlacementMode;
use crate::error::ApiError;
use crate::placement::Placer;
use crate::proxy::Proxy;
use crate::proxy::record::RequestSinks;
use crate::registry::NodeRegistry;

pub use crate::error::MAX_MANAGEMENT_BODY_BYTES;

/// Header that carries the request id, the client's when it sent one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything handlers share, behind one `Arc`: every request clones it
/// (axum's `State`), and that is one reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug, Clone)]
pub struct Shared {
    pub registry: Arc<NodeRegistry>,
    pub proxy: Arc<Proxy>,
    /// The request history (`/api/history`); off unless the server starts one.
    pub history: Arc<crate::history::History>,
    /// Request statistics and Prometheus metrics, fed by the proxy.
    pub stats: Arc<crate::stats::Stats>,
    /// Fleet-level model placement, when it is on (`--placement plan`).
    pub placer: Option<Arc<Placer>>,
    /// Cancelled when the server begins a graceful shutdown, so that endless responses
    /// (the dashboard's event stream) end instead of holding the shutdown forever.
    pub shutdown: CancellationToken,
    /// Who may join, send inference and manage; everything open unless the server sets it.
    pub access: Arc<Access>,
    /// Pulls, copies and deletes of models across the fleet (`/api/tasks`).
    pub models: Arc<crate::distribute::Distributor>,
}

impl AppState {
    /// State for `registry` with a proxy using `settings`.
    pub fn new(
        registry: Arc<NodeRegistry>,
        settings: crate::config::ProxySettings,
    ) -> anyhow::Result<Self> {
        Self::with_sinks(registry, settings, RequestSinks::default())
    }

    /// Like [`AppState::new`], with a proxy that also reports every finished
    /// request to `sinks` (the request statistics are always among them).
    pub fn with_sinks(
        registry: Arc<NodeRegistry>,
        settings: crate::config::ProxySettings,
        mut sinks: RequestSinks,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(crate::stats::Stats::new(Arc::clone(&registry)));
        sinks.add(stats.clone());
        let placer = (settings.placement == PlacementMode::Plan).then(|| {
            Arc::new(Placer::new(
                settings.placement_interval,
                stats.placement_counters(),
            ))
        });
        if let Some(placer) = &placer {
            sinks.add(placer.clone());
        }
        let pull_targets = settings.pull_targets;
        let proxy = Proxy::new(Arc::clone(&registry), settings)?
            .with_sinks(sinks)
            .with_route_plan(placer.as_ref().map(|p| p.route_plan()));
        let proxy = Arc::new(proxy);
        let models = Arc::new(crate::distribute::Distributor::new(
            Arc::clone(&registry),
            proxy.client().clone(),
            pull_targets,
        ));
        Ok(Self(Arc::new(Shared {
            models,
            registry,
            proxy,
            history: Arc::new(crate::history::History::off()),
            stats,
            placer,
            shutdown: CancellationToken::new(),
            access: Arc::new(Access::open()),
        })))
    }

    /// This state with `access` in force.
    pub fn with_access(mut self, access: Arc<Access>) -> Self {
        Arc::make_mut(&mut self.0).access = access;
        self
    }

    /// This state with `history` answering `/api/history`.
    pub fn with_history(mut self, history: Arc<crate::history::History>) -> Self {
        Arc::make_mut(&mut self.0).history = history;
        self
    }
}

/// `axum::Json`, with rejections answered as our JSON errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path`, with rejections answered as our JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The whole HTTP application. Each part has its own guard ([`access`]):
/// operators' routes need a login (unless open) and a same-site request; the
/// inference API takes API keys and allows browser origins (CORS); agents'
/// own calls carry their tokens.
pub fn app(state: AppState) -> Router {
    let operator = Router::new()
        .nest("/api/agents", agents::operator_routes())
        .route("/api/nodes", post(agents::add_node))
        .route("/api/placement", get(placement::show))
        .merge(tasks::routes())
        .nest("/api/history", history::routes())
        .nest("/api/keys", keys::routes())
        .merge(dashboard::operator_routes())
        .route_layer(from_fn_with_state(
            Arc::clone(&state.access),
            access::operator_gate,
        ));
    // Ollama's own model management (`ollama pull` through the router) changes
    // every node: operators only, as the rest of the management API.
    let model_management = tasks::ollama_routes()
        .route_layer(from_fn_with_state(
            Arc::clone(&state.access),
            access::operator_gate,
        ))
        .route_layer(from_fn_with_state(
            Arc::clone(&state.access),
            access::same_site_gate,
        ));
    let same_site = operator
        .merge(access::routes())
        .merge(dashboard::login_routes())
        .route_layer(from_fn_with_state(
            Arc::clone(&state.access),
            access::same_site_gate,
        ));
    let management = Router::new()
        .nest("/api/agents", agents::agent_routes())
        .route("/api/health", get(health))
        .merge(same_site)
        .merge(model_management)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_MANAGEMENT_BODY_BYTES));
    // Inference handlers read the body themselves, with the proxy's own limit.
    // The 405 answer is set before the CORS layer, which must still see preflights.
    let inference = ollama::routes()
        .merge(openai::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(from_fn_with_state(
            Arc::clone(&state.access),
            access::client_gate,
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(access::inference_cors(&state.access));
    let metrics = metrics::routes().route_layer(from_fn_with_state(
        Arc::clone(&state.access),
        access::metrics_gate,
    ));
    management
        .merge(inference)
        .merge(dashboard::asset_routes())
        .merge(metrics)
        .fallback(not_found)
        .with_state(state)
        .layer(frame::RequestFrameLayer)
}

/// `GET /api/health`: `ok`, or `degraded` with the reason when a store fails (the
/// router still serves requests).
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let history = state.history.problem();
    let mut answer = json!({
        "status": if history.is_some() { "degraded" } else { "ok" },
        "nodes": state.registry.len(),
        "routable_nodes": state.registry.snapshot().nodes.len(),
    });
    if let Some(reason) = history {
        answer["history"] = json!(reason);
    }
    Json(answer)
}

/// A path no route has: 404, in the format of the API the path belongs to.
async fn not_found(uri: Uri) -> Response {
    let message = format!("no route for {}", uri.path());
    routing_error(uri.path(), StatusCode::NOT_FOUND, message, "unknown_url")
}

/// A route that does not take this method: 405 (axum adds `Allow`), in the
/// format of the API the path belongs to.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{} does not take {method} requests", uri.path());
    routing_error(
        uri.path(),
        StatusCode::METHOD_NOT_ALLOWED,
        message,
        "method_not_allowed",
    )
}

/// An answer about the path itself: OpenAI's error shape under `/v1`, the
/// `{"error": "..."}` of Ollama and the management API elsewhere.
fn routing_error(path: &str, status: StatusCode, message: String, code: &str) -> Response {
    tracing::debug!(%status, %message, "request not routed");
    if path == "/v1" || path.starts_with("/v1/") {
        let body = json!({
            "error": { "message": message, "type": "invalid_request_error", "param": null, "code": code }
        });
        (status, Json(body)).into_response()
    } else {
        (status, Json(llm_router_common::ErrorBody::new(message))).into_response()
    }
}
