//! Nodes added without an agent (`POST /api/nodes`): the coordinator asks
//! their inference server itself what an agent would report, every heartbeat
//! interval, and records the answer as the node's heartbeat.
//!
//! - Ollama: `GET /api/version`, `/api/tags` (required) and `/api/ps`, at once;
//! - OpenAI-compatible: `GET /v1/models`, whose ids become the model list,
//!   and beside it the server's own load as an agent would read it
//!   ([`llm_router_common::server_load`]: llama.cpp's `/slots`, else Prometheus
//!   `/metrics`), so that the balancer sees its free slots and its queue.
//!
//! A probe that fails is recorded too (`ollama_available: false`), so the node
//! is offline with [`OfflineReason::ProbeFailed`](crate::registry::OfflineReason::ProbeFailed)
//! but never times out; it comes back with the first probe that succeeds.

use std::sync::Arc;
use std::time::Duration;

use llm_router_common::{
    ApiKind, HeartbeatRequest, LoadedModel, MAX_MODELS_PER_NODE, MAX_NAME_LEN, ModelInfo,
    ServerLoad, server_load,
};
use serde_json::Value;

use crate::proxy::UpstreamClient;
use crate::registry::{AgentlessTarget, NodeRegistry, validate};

/// How long one probe may take: the heartbeat interval, within 1 to 5 seconds.
pub fn probe_timeout(heartbeat_interval: Duration) -> Duration {
    heartbeat_interval.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Probes every agentless node every `interval` (the heartbeat interval asked
/// of agents), all at once, until `shutdown`.
pub async fn run_agentless_poller(
    registry: Arc<NodeRegistry>,
    client: UpstreamClient,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let timeout = probe_timeout(interval);
    crate::health::every(interval, shutdown, || {
        let targets = registry.agentless_targets();
        let (registry, client) = (&registry, &client);
        async move {
            let probes = targets
                .iter()
                .map(|target| probe_and_record(registry, client, target, timeout));
            futures::future::join_all(probes).await;
        }
    })
    .await;
}

/// Probes one node and records the result; logs when it stops or starts answering.
pub async fn probe_and_record(
    registry: &NodeRegistry,
    client: &UpstreamClient,
    target: &AgentlessTarget,
    timeout: Duration,
) {
    let heartbeat = match probe(client, target, timeout).await {
        Ok(heartbeat) => {
            if !target.reachable {
                tracing::info!(node_id = %target.id, machine = %target.machine_name, api_url = %target.api_url, "agentless node answers its probe");
            }
            heartbeat
        }
        Err(error) => {
            if target.reachable {
                tracing::warn!(node_id = %target.id, machine = %target.machine_name, api_url = %target.api_url, %error, "agentless node does not answer its probe");
            } else {
                tracing::debug!(node_id = %target.id, api_url = %target.api_url, %error, "agentless node still does not answer");
            }
            HeartbeatRequest {
                ollama_available: false,
                ..HeartbeatRequest::default()
            }
        }
    };
    // The node may have been deleted while the probe ran: nothing to record then.
    if let Err(error) = registry.record_probe(target.id, heartbeat) {
        tracing::debug!(node_id = %target.id, %error, "probe result not recorded");
    }
}

/// Asks the server at `api_url` what an agent would report, as a heartbeat.
/// `Err` says why the server cannot serve requests.
pub async fn probe(
    client: &UpstreamClient,
    target: &AgentlessTarget,
    timeout: Duration,
) -> Result<HeartbeatRequest, String> {
    let get = |path: &'static str| get_json(client, target, path, timeout);
    match target.kind {
        ApiKind::Ollama => {
            let (version, tags, ps) =
                tokio::join!(get("/api/version"), get("/api/tags"), get("/api/ps"));
            let models = model_entries(&tags?, "models")?
                .iter()
                .filter_map(llm_router_common::ModelInfo::from_tags_entry)
                .filter(|m| acceptable_name(&m.name))
                .take(MAX_MODELS_PER_NODE)
                .collect();
            let loaded_models = ps.ok().and_then(|body| {
                model_entries(&body, "models").ok().map(|entries| {
                    entries
                        .iter()
                        .filter_map(llm_router_common::LoadedModel::from_ps_entry)
                        .filter(|m| acceptable_name(&m.name))
                        .take(MAX_MODELS_PER_NODE)
                        .collect::<Vec<LoadedModel>>()
                })
            });
            let ollama_version = version.ok().and_then(|body| {
                body.get("version")
                    .and_then(Value::as_str)
                    .map(|v| v.chars().take(64).collect())
            });
            Ok(HeartbeatRequest {
                models: Some(models),
                loaded_models,
                ollama_available: true,
                ollama_version,
                ..HeartbeatRequest::default()
            })
        }
        ApiKind::OpenAi => {
            let (body, server_load) =
                tokio::join!(get("/v1/models"), load_of(client, target, timeout));
            let body = body?;
            let models = model_entries(&body, "data")?
                .iter()
                .filter_map(|entry| entry.get("id").and_then(Value::as_str))
                .map(str::trim)
                .filter(|id| acceptable_name(id))
                .take(MAX_MODELS_PER_NODE)
                .map(ModelInfo::named)
                .collect();
            Ok(HeartbeatRequest {
                models: Some(models),
                ollama_available: true,
                server_load,
                ..HeartbeatRequest::default()
            })
        }
    }
}

/// The server's own account of its load: llama.cpp's `/slots`, else a
/// Prometheus `/metrics` with series the balancer knows; `None` without either
/// (and then not asked again for a while: see [`server_load::LoadEndpoints`]).
async fn load_of(
    client: &UpstreamClient,
    target: &AgentlessTarget,
    timeout: Duration,
) -> Option<ServerLoad> {
    server_load::read(&target.load_endpoints, |path| async move {
        let url = format!("{}/{path}", target.api_url);
        let auth = target.authorization.as_ref();
        let (status, body) = crate::proxy::get(client, &url, auth, timeout).await.ok()?;
        Some((status.as_u16(), body))
    })
    .await
}

/// A model name the registry accepts; others are left out rather than spoil the list.
fn acceptable_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && validate::name_field("model", name).is_ok()
}

/// The list under `key`; `null` (Ollama with nothing installed or loaded) is an empty list.
fn model_entries<'a>(body: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match body.get(key) {
        Some(Value::Array(entries)) => Ok(entries),
        Some(Value::Null) => Ok(&[]),
        _ => Err(format!("the answer has no \"{key}\" list")),
    }
}

async fn get_json(
    client: &UpstreamClient,
    target: &AgentlessTarget,
    path: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let url = format!("{}{path}", target.api_url);
    let (status, bytes) = crate::proxy::get(client, &url, target.authorization.as_ref(), timeout)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("GET {url} did not answer JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_timeout_follows_the_interval_within_bounds() {
        assert_eq!(
            probe_timeout(Duration::from_millis(200)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_timeout(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(
            probe_timeout(Duration::from_secs(10)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn null_lists_are_empty_and_missing_lists_are_errors() {
        let body = serde_json::json!({"models": null, "data": [{"id": "m"}]});
        assert!(model_entries(&body, "models").unwrap().is_empty());
        assert_eq!(model_entries(&body, "data").unwrap().len(), 1);
        assert!(model_entries(&body, "other").is_err());
        assert!(acceptable_name("llama3.2:latest"));
        assert!(!acceptable_name(""));
        assert!(!acceptable_name(&"x".repeat(MAX_NAME_LEN + 1)));
    }
}
