//! Unit tests of the registry: identity, status, snapshot and timeouts.

use std::sync::Arc;
use std::time::Duration;

use llm_router_common::{
    HeartbeatRequest, ModelInfo, NodePatch, NodeStatus, RegisterRequest, RegisterResponse,
    RegistrationStatus,
};
use tokio::time::Instant;

use super::persist::PersistQueue;
use super::{NodeRegistry, OfflineReason, RegistrySettings};

fn settings() -> RegistrySettings {
    RegistrySettings {
        heartbeat_interval: Duration::from_secs(10),
        agent_timeout: Duration::from_secs(30),
    }
}

fn registry() -> NodeRegistry {
    NodeRegistry::new(settings(), Arc::new(PersistQueue::new()))
}

fn request(name: &str, port: u16, models: &[&str]) -> RegisterRequest {
    RegisterRequest {
        machine_name: name.into(),
        ip_address: "127.0.0.1".parse().unwrap(),
        ollama_port: port,
        api_kind: Default::default(),
        api_url: None,
        ollama_version: Some("0.12.0".into()),
        ollama_available: true,
        system_info: Default::default(),
        models: models.iter().map(|m| ModelInfo::named(*m)).collect(),
        loaded_models: vec![],
        node_id: None,
        agent_version: None,
        max_parallel: None,
        max_loaded_models: None,
        node_credential: None,
        node_api_key: None,
    }
}

/// A heartbeat from the agent of `node` that reports nothing but whether its server answers.
fn beat(registry: &NodeRegistry, node: &RegisterResponse, ollama_available: bool) {
    registry
        .heartbeat(
            node.node_id,
            HeartbeatRequest {
                ollama_available,
                ..Default::default()
            },
            node.node_credential.as_deref(),
        )
        .unwrap();
}

/// `request` as the agent of `node` sends it, with the credential it was issued.
fn again(mut request: RegisterRequest, node: &RegisterResponse) -> RegisterRequest {
    request.node_credential = node.node_credential.clone();
    request
}

#[test]
fn same_machine_registering_again_keeps_its_id() {
    let registry = registry();
    let (first, _) = registry
        .register(request("gpu-1", 11434, &["llama3.2"]))
        .unwrap();
    let (second, _) = registry
        .register(again(request("gpu-1", 11434, &["llama3.2"]), &first))
        .unwrap();
    assert_eq!(first.status, RegistrationStatus::Registered);
    assert_eq!(second.status, RegistrationStatus::Updated);
    assert_eq!(first.node_id, second.node_id);
    assert_eq!(registry.len(), 1);
}

#[test]
fn different_endpoints_are_different_nodes() {
    let registry = registry();
    let (a, _) = registry.register(request("box", 11434, &[])).unwrap();
    let (b, _) = registry.register(request("box", 11435, &[])).unwrap();
    assert_ne!(a.node_id, b.node_id);
    assert_eq!(registry.len(), 2);
}

#[test]
fn node_id_hint_keeps_identity_even_when_the_registry_forgot_the_node() {
    let registry = registry();
    let mut req = request("gpu-1", 11434, &[]);
    let old_id = llm_router_common::NodeId::new_v4();
    req.node_id = Some(old_id);
    let (answer, _) = registry.register(req).unwrap();
    assert_eq!(answer.node_id, old_id);
    assert_eq!(answer.status, RegistrationStatus::Registered);
}

#[test]
fn registration_reports_the_heartbeat_interval() {
    let (answer, _) = registry().register(request("a", 1, &[])).unwrap();
    assert_eq!(answer.heartbeat_interval_secs, 10);
}

#[test]
fn snapshot_holds_only_online_non_draining_available_nodes() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &["m"])).unwrap();
    let (b, _) = registry.register(request("b", 2, &["m"])).unwrap();
    let mut down = request("c", 3, &["m"]);
    down.ollama_available = false;
    registry.register(down).unwrap();
    assert_eq!(registry.snapshot().nodes.len(), 2);

    registry
        .patch(
            a.node_id,
            NodePatch {
                draining: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        registry.get(a.node_id).unwrap().status,
        NodeStatus::Draining
    );
    registry
        .mark_offline(b.node_id, OfflineReason::ShutDown)
        .unwrap();
    assert!(registry.snapshot().is_empty());
    let b_view = registry.get(b.node_id).unwrap();
    assert_eq!(b_view.status, NodeStatus::Offline);
    assert_eq!(
        b_view.status_reason.as_deref(),
        Some(OfflineReason::ShutDown.text())
    );

    beat(&registry, &b, true);
    assert_eq!(registry.snapshot().nodes.len(), 1);
    assert_eq!(registry.snapshot().nodes[0].id, b.node_id);
}

#[test]
fn heartbeat_model_list_updates_the_snapshot() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &["llama3.2"])).unwrap();
    assert_eq!(registry.snapshot().candidates_for("qwen2.5:7b").len(), 0);
    registry
        .heartbeat(
            a.node_id,
            HeartbeatRequest {
                ollama_available: true,
                models: Some(vec![ModelInfo::named("qwen2.5:7b")]),
                ..Default::default()
            },
            a.node_credential.as_deref(),
        )
        .unwrap();
    assert_eq!(registry.snapshot().candidates_for("qwen2.5:7b").len(), 1);
    assert_eq!(registry.snapshot().candidates_for("llama3.2").len(), 0);
}

#[test]
fn heartbeat_without_model_lists_keeps_the_known_models() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &["llama3.2"])).unwrap();
    beat(&registry, &a, false);
    let node = registry.get(a.node_id).unwrap();
    assert_eq!(node.facts.models.len(), 1);
    assert_eq!(node.status, NodeStatus::Offline);
    assert_eq!(
        node.status_reason.as_deref(),
        Some(OfflineReason::OllamaUnreachable.text())
    );
}

#[test]
fn unknown_node_heartbeat_is_an_error() {
    let err = registry()
        .heartbeat(
            llm_router_common::NodeId::new_v4(),
            HeartbeatRequest::default(),
            None,
        )
        .unwrap_err();
    assert_eq!(
        crate::error::ApiError::from(err.clone()).status(),
        axum::http::StatusCode::NOT_FOUND
    );
}

#[tokio::test(start_paused = true)]
async fn silent_node_goes_offline_after_the_timeout_and_heartbeat_brings_it_back() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &["m"])).unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(
        registry.expire_stale(Instant::now()).is_empty(),
        "expired at exactly the timeout"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(registry.expire_stale(Instant::now()), [a.node_id]);
    let node = registry.get(a.node_id).unwrap();
    assert_eq!(node.status, NodeStatus::Offline);
    assert_eq!(
        node.status_reason.as_deref(),
        Some(OfflineReason::TimedOut.text())
    );
    assert!(registry.snapshot().is_empty());

    beat(&registry, &a, true);
    assert_eq!(registry.get(a.node_id).unwrap().status, NodeStatus::Online);
    assert_eq!(registry.snapshot().nodes.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn regular_heartbeats_keep_a_node_online() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &[])).unwrap();
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(10)).await;
        beat(&registry, &a, true);
        assert!(registry.expire_stale(Instant::now()).is_empty());
    }
    assert_eq!(registry.get(a.node_id).unwrap().status, NodeStatus::Online);
}

#[tokio::test(start_paused = true)]
async fn restored_nodes_keep_their_fields_and_get_a_full_timeout_to_report() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &["m"])).unwrap();
    registry
        .patch(
            a.node_id,
            NodePatch {
                tags: Some(vec!["gpu".into()]),
                notes: Some("rack 2".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let saved = registry.persisted_nodes();

    let restored = NodeRegistry::restore(registry.settings(), Arc::new(PersistQueue::new()), saved);
    let node = restored.get(a.node_id).unwrap();
    assert_eq!(node.facts.tags, ["gpu"]);
    assert_eq!(node.facts.notes, "rack 2");
    assert_eq!(node.status, NodeStatus::Online);
    assert_eq!(restored.snapshot().nodes.len(), 1);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(restored.expire_stale(Instant::now()), [a.node_id]);
}

#[test]
fn remove_forgets_the_node() {
    let registry = registry();
    let (a, _) = registry.register(request("a", 1, &["m"])).unwrap();
    registry.remove(a.node_id).unwrap();
    assert!(registry.get(a.node_id).is_none());
    assert!(registry.snapshot().is_empty());
    assert!(registry.remove(a.node_id).is_err());
}

#[tokio::test(start_paused = true)]
async fn heartbeats_jittering_around_the_timeout_do_not_flap_the_node() {
    let registry = registry();
    let (a, _) = registry.register(request("loaded", 1, &["m"])).unwrap();
    // Late beats under load: gaps around the 30 s timeout, some beyond it.
    let gaps = [24, 31, 27, 34, 29, 33, 26, 35, 28, 32, 30, 34, 25, 33];
    let mut changes = 0;
    let mut online = true;
    for gap in gaps {
        // The health monitor checks every 5 s in between.
        for _ in 0..gap {
            tokio::time::advance(Duration::from_secs(1)).await;
            if !registry.expire_stale(Instant::now()).is_empty() {
                changes += 1;
                online = false;
            }
        }
        beat(&registry, &a, true);
        if !online {
            changes += 1;
            online = true;
        }
    }
    assert_eq!(changes, 0, "the node flapped");
    assert_eq!(registry.get(a.node_id).unwrap().status, NodeStatus::Online);

    // It still dies: silence well past its stretched timeout takes it offline.
    tokio::time::advance(Duration::from_secs(53)).await;
    assert_eq!(registry.expire_stale(Instant::now()), [a.node_id]);
}

#[tokio::test(start_paused = true)]
async fn punctual_node_still_times_out_after_exactly_the_agent_timeout() {
    let registry = registry();
    let (a, _) = registry.register(request("punctual", 1, &["m"])).unwrap();
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(10)).await;
        beat(&registry, &a, true);
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(registry.expire_stale(Instant::now()).is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(registry.expire_stale(Instant::now()), [a.node_id]);
}

fn agentless(url: &str) -> super::validate::AgentlessNode {
    super::validate::agentless(&llm_router_common::AddNodeRequest {
        api_url: url.into(),
        name: None,
        kind: None,
        api_key: None,
    })
    .unwrap()
}

fn probe_ok(models: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        models: Some(models.iter().map(|m| ModelInfo::named(*m)).collect()),
        ollama_available: true,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn agentless_node_is_offline_until_probed_and_probes_keep_it_from_timing_out() {
    let registry = registry();
    let ip = "10.0.0.5".parse().unwrap();
    let (node, status, _) = registry
        .add_agentless(agentless("http://10.0.0.5:11434"), ip)
        .unwrap();
    assert_eq!(status, RegistrationStatus::Registered);
    assert!(node.facts.agentless);
    assert_eq!(node.status, NodeStatus::Offline);
    assert_eq!(
        node.status_reason.as_deref(),
        Some(OfflineReason::NotProbed.text())
    );
    assert!(registry.snapshot().is_empty());

    for _ in 0..5 {
        assert!(
            registry
                .record_probe(node.facts.id, probe_ok(&["m"]))
                .unwrap()
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(registry.expire_stale(Instant::now()).is_empty());
    }
    let online = registry.get(node.facts.id).unwrap();
    assert_eq!(online.status, NodeStatus::Online);
    assert!(online.metrics.is_none(), "a probe measures no load");
    assert_eq!(registry.snapshot().candidates_for("m").len(), 1);

    // A failed probe: offline with the coordinator's reason, but not timed out.
    let failed = HeartbeatRequest {
        ollama_available: false,
        ..Default::default()
    };
    assert!(registry.record_probe(node.facts.id, failed).unwrap());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(registry.expire_stale(Instant::now()).is_empty());
    let offline = registry.get(node.facts.id).unwrap();
    assert_eq!(offline.status, NodeStatus::Offline);
    assert_eq!(
        offline.status_reason.as_deref(),
        Some(OfflineReason::ProbeFailed.text())
    );
    assert_eq!(offline.facts.models.len(), 1, "the last model list is kept");

    // The same URL again keeps the node.
    let (again, status, _) = registry
        .add_agentless(agentless("http://10.0.0.5:11434/"), ip)
        .unwrap();
    assert_eq!(status, RegistrationStatus::Updated);
    assert_eq!(again.facts.id, node.facts.id);
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.agentless_targets().len(), 1);
}

#[test]
fn an_agent_for_an_added_url_takes_the_node_over_and_probes_stop_counting() {
    let registry = registry();
    let (node, _, _) = registry
        .add_agentless(
            agentless("http://127.0.0.1:11434"),
            "127.0.0.1".parse().unwrap(),
        )
        .unwrap();
    let (answer, _) = registry
        .register(request("gpu-1", 11434, &["llama3.2"]))
        .unwrap();
    assert_eq!(answer.status, RegistrationStatus::Updated);
    assert_eq!(answer.node_id, node.facts.id);
    assert!(!registry.get(node.facts.id).unwrap().facts.agentless);
    assert!(registry.agentless_targets().is_empty());
    // A probe that was under way is not recorded.
    assert!(!registry.record_probe(node.facts.id, probe_ok(&[])).unwrap());
    assert_eq!(registry.get(node.facts.id).unwrap().facts.models.len(), 1);
}

#[test]
fn a_known_node_is_taken_only_with_its_credential() {
    let registry = registry();
    let (first, _) = registry.register(request("gpu-1", 11434, &["m"])).unwrap();
    let credential = first
        .node_credential
        .clone()
        .expect("a new node gets a credential");

    let by_url = registry
        .register(request("gpu-1", 11434, &["m"]))
        .unwrap_err();
    assert_eq!(
        crate::error::ApiError::from(by_url.clone()).status(),
        axum::http::StatusCode::CONFLICT
    );
    let mut by_id = request("elsewhere", 9, &["m"]);
    by_id.node_id = Some(first.node_id);
    by_id.node_credential = Some("llmr_nc_wrong".into());
    let wrong = registry.register(by_id).unwrap_err();
    assert_eq!(
        crate::error::ApiError::from(wrong.clone()).status(),
        axum::http::StatusCode::FORBIDDEN
    );
    assert_eq!(
        registry.get(first.node_id).unwrap().facts.api_url,
        "http://127.0.0.1:11434"
    );

    let hb = HeartbeatRequest::default;
    for presented in [None, Some("llmr_nc_wrong")] {
        let error = registry
            .heartbeat(first.node_id, hb(), presented)
            .unwrap_err();
        assert_eq!(
            crate::error::ApiError::from(error.clone()).status(),
            axum::http::StatusCode::UNAUTHORIZED
        );
        assert!(registry.check_credential(first.node_id, presented).is_err());
    }
    registry
        .heartbeat(first.node_id, hb(), Some(&credential))
        .unwrap();
    let (second, _) = registry
        .register(again(request("gpu-1", 11434, &["m"]), &first))
        .unwrap();
    assert_eq!(
        second.node_credential, None,
        "a valid credential stays in force"
    );
}

#[test]
fn credentials_survive_a_restart_as_digests_and_older_nodes_are_claimed_once() {
    let registry = registry();
    let (first, _) = registry.register(request("gpu-1", 11434, &["m"])).unwrap();
    let credential = first.node_credential.clone().unwrap();
    let persisted = registry.persisted_nodes();
    assert!(persisted[0].credential_sha256.is_some());
    assert!(!format!("{persisted:?}").contains(&credential));

    let restored =
        NodeRegistry::restore(settings(), Arc::new(PersistQueue::new()), persisted.clone());
    restored
        .heartbeat(
            first.node_id,
            HeartbeatRequest::default(),
            Some(&credential),
        )
        .unwrap();
    assert!(
        restored
            .heartbeat(first.node_id, HeartbeatRequest::default(), None)
            .is_err()
    );

    // A node from before credentials: the next registration claims it and gets one.
    let mut older = persisted;
    older[0].credential_sha256 = None;
    let restored = NodeRegistry::restore(settings(), Arc::new(PersistQueue::new()), older);
    let (claimed, _) = restored.register(request("gpu-1", 11434, &["m"])).unwrap();
    assert_eq!(claimed.node_id, first.node_id);
    assert!(claimed.node_credential.is_some());
    assert!(restored.register(request("gpu-1", 11434, &["m"])).is_err());
}

#[test]
fn only_lasting_changes_are_marked_for_the_disk_not_a_routine_heartbeat() {
    let registry = registry();
    let (node, _) = registry
        .register(request("gpu-1", 11434, &["llama3.2"]))
        .unwrap();
    assert_eq!(
        registry.take_changed().into_iter().collect::<Vec<_>>(),
        [node.node_id]
    );
    let routine = HeartbeatRequest {
        ollama_available: true,
        metrics: llm_router_common::NodeMetrics {
            cpu_percent: 42.0,
            ..Default::default()
        },
        ..Default::default()
    };
    registry
        .heartbeat(node.node_id, routine, node.node_credential.as_deref())
        .unwrap();
    assert!(
        registry.take_changed().is_empty(),
        "a routine heartbeat writes nothing"
    );
    let new_models = HeartbeatRequest {
        ollama_available: true,
        models: Some(vec![ModelInfo::named("qwen3:4b")]),
        ..Default::default()
    };
    registry
        .heartbeat(node.node_id, new_models, node.node_credential.as_deref())
        .unwrap();
    assert_eq!(registry.take_changed().len(), 1, "new models are kept");
    registry.remove(node.node_id).unwrap();
    assert_eq!(registry.take_changed().len(), 1, "so is a deletion");
}
