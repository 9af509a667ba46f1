//! `/api/agents`: registration, heartbeats and node management; `POST /api/nodes`:
//! nodes added by URL, without an agent.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use llm_router_common::{
    AddNodeRequest, HeartbeatRequest, Node, NodeId, NodePatch, RegisterRequest, RegistrationStatus,
};

use super::{ApiJson, ApiPath, AppState};
use crate::error::ApiError;
use crate::registry::{AgentlessTarget, OfflineReason, validate};

/// What only an agent calls, each with its own token: register (the fleet's node
/// token), heartbeat and goodbye (the node's credential).
pub fn agent_routes() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/check-token", post(check_token))
        .route("/{id}/heartbeat", post(heartbeat))
        .route("/{id}/shutdown", post(shutdown))
        .route("/{id}/drain", post(drain))
}

/// What operators use to see and manage nodes.
pub fn operator_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/{id}", get(show).patch(patch).delete(remove))
        .route("/{id}/disconnect", post(disconnect))
}

/// The bearer token of a request.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(crate::auth::secret::bearer)
}

/// Longest a request waits for its change to reach the disk.
const DURABILITY_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until change `generation` is on disk; the caller answers only then.
async fn durable(state: &AppState, generation: u64) -> Result<(), ApiError> {
    let queue = state.registry.persist_queue();
    match tokio::time::timeout(DURABILITY_TIMEOUT, queue.durable(generation)).await {
        Ok(result) => result
            .map_err(|e| ApiError::Unavailable(format!("the registry could not be saved: {e}"))),
        Err(_) => Err(ApiError::Unavailable(
            "timed out waiting for the registry file to be written".into(),
        )),
    }
}

/// `POST /api/agents/check-token`: whether this coordinator would accept the
/// node token presented (204) or not (401), without registering anything; the
/// agent's settings panel tests a connection with it.
async fn check_token(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = bearer_token(&headers);
    if state.access.node_tokens.accepts(token) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Unauthorized(
            refused_token_message(token.is_some()).into(),
        ))
    }
}

/// Why a node token was refused, for the agent's operator.
fn refused_token_message(token_sent: bool) -> &'static str {
    if token_sent {
        "the node token is not valid for this coordinator"
    } else {
        "this coordinator requires a node token: start the agent with --node-token (or LLM_ROUTER_NODE_TOKEN)"
    }
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let token = bearer_token(&headers);
    if !state.access.node_tokens.accepts(token) {
        tracing::warn!(machine = %req.machine_name, token_sent = token.is_some(), "registration refused: wrong or missing node token");
        return Err(ApiError::Unauthorized(
            refused_token_message(token.is_some()).into(),
        ));
    }
    let (answer, generation) = state.registry.register(req)?;
    durable(&state, generation).await?;
    let status = match answer.status {
        RegistrationStatus::Registered => StatusCode::CREATED,
        RegistrationStatus::Updated => StatusCode::OK,
    };
    Ok((status, Json(answer)).into_response())
}

/// `POST /api/nodes`: adds a node that no agent reports for, probes it once so
/// that the answer shows its models, and answers 201 with the node (200 with
/// the known node when the URL is already registered).
pub(super) async fn add_node(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<AddNodeRequest>,
) -> Result<Response, ApiError> {
    let node = validate::agentless(&req)?;
    let ip_address = resolve(&node.host, node.port).await;
    let restricted = state.access.own_addr.is_some() || !state.access.node_networks.is_empty();
    if restricted && ip_address.is_unspecified() && node.host.parse::<std::net::IpAddr>().is_err() {
        return Err(ApiError::Unprocessable(format!(
            "api_url's host {:?} does not resolve; give an address or a name this coordinator can resolve",
            crate::registry::validate::shown(&node.host)
        )));
    }
    state
        .access
        .check_node_address(ip_address, node.port)
        .map_err(|reason| ApiError::Unprocessable(format!("api_url refused: {reason}")))?;
    let (added, status, generation) = state.registry.add_agentless(node, ip_address)?;
    // Deleted meanwhile: nothing to probe.
    if let Some(known) = added
        .facts
        .agentless
        .then(|| state.registry.agentless_target(added.facts.id))
        .flatten()
    {
        let target = AgentlessTarget {
            reachable: status == RegistrationStatus::Updated
                && added.status != llm_router_common::NodeStatus::Offline,
            ..known
        };
        let timeout = crate::agentless::probe_timeout(state.registry.settings().heartbeat_interval);
        crate::agentless::probe_and_record(&state.registry, state.proxy.client(), &target, timeout)
            .await;
    }
    durable(&state, generation).await?;
    // Deleted meanwhile: answer what was added.
    let mut node = state.registry.get(added.facts.id).unwrap_or(added);
    state.stats.annotate(&mut node);
    let code = match status {
        RegistrationStatus::Registered => StatusCode::CREATED,
        RegistrationStatus::Updated => StatusCode::OK,
    };
    Ok((code, Json(node)).into_response())
}

/// Longest wait for a host name to resolve; the address is only shown.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The address of `host` for the node's `ip_address`; unspecified when it does not resolve.
async fn resolve(host: &str, port: u16) -> std::net::IpAddr {
    if let Ok(ip) = host.parse() {
        return ip;
    }
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()),
        _ => None,
    }
    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

async fn list(State(state): State<AppState>) -> Json<Vec<Node>> {
    let mut nodes = state.registry.list();
    state.stats.annotate_all(&mut nodes);
    Json(nodes)
}

async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Node>, ApiError> {
    let mut node = state.registry.get(id).ok_or(ApiError::UnknownNode(id))?;
    state.stats.annotate(&mut node);
    Ok(Json(node))
}

async fn heartbeat(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
    headers: HeaderMap,
    ApiJson(hb): ApiJson<HeartbeatRequest>,
) -> Result<StatusCode, ApiError> {
    state.registry.heartbeat(id, hb, bearer_token(&headers))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn shutdown(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .check_credential(id, bearer_token(&headers))?;
    state.registry.mark_offline(id, OfflineReason::ShutDown)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/agents/{id}/drain {"draining": bool}`: the node's own agent
/// pauses it (no new requests; those running finish) or resumes it, with
/// the node's credential.
async fn drain(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DrainRequest>,
) -> Result<Json<Node>, ApiError> {
    state
        .registry
        .check_credential(id, bearer_token(&headers))?;
    let patch = NodePatch {
        draining: Some(body.draining),
        ..NodePatch::default()
    };
    let (node, generation) = state.registry.patch(id, patch)?;
    durable(&state, generation).await?;
    tracing::info!(node = %node.facts.machine_name, draining = body.draining, "the node's agent changed draining");
    Ok(Json(node))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    draining: bool,
}

async fn disconnect(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<Node>, ApiError> {
    state
        .registry
        .mark_offline(id, OfflineReason::Disconnected)
        .map(Json)
        .map_err(ApiError::from)
}

async fn patch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
    ApiJson(patch): ApiJson<NodePatch>,
) -> Result<Json<Node>, ApiError> {
    let (node, generation) = state.registry.patch(id, patch)?;
    durable(&state, generation).await?;
    Ok(Json(node))
}

async fn remove(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<StatusCode, ApiError> {
    let generation = state.registry.remove(id)?;
    durable(&state, generation).await?;
    Ok(StatusCode::NO_CONTENT)
}
