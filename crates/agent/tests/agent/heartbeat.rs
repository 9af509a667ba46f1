//! Heartbeats: what they carry, failures that do not stop them, and a 404 that means "register again".

use crate::support::{FakeCoordinator, FakeOllama, RunningAgent, test_config};

#[tokio::test]
async fn a_heartbeat_404_makes_the_agent_register_again_with_the_same_node_id() {
    let coordinator = FakeCoordinator::start(vec![], vec![404]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));

    let seen = coordinator
        .wait_for("a heartbeat after re-registering", |seen| {
            seen.registrations.len() >= 2 && seen.accepted_heartbeats() >= 1
        })
        .await;
    assert_eq!(seen.registrations[0].node_id, None);
    assert_eq!(seen.registrations[1].node_id, Some(coordinator.node_id));
    assert_eq!(seen.heartbeats[0].2, axum::http::StatusCode::NOT_FOUND);
    assert_eq!(seen.registrations.len(), 2);
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn failing_heartbeats_neither_stop_the_agent_nor_re_register_it() {
    let coordinator = FakeCoordinator::start(vec![], vec![500, 503, 502]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));

    let seen = coordinator
        .wait_for("a heartbeat accepted after three failures", |seen| {
            seen.accepted_heartbeats() >= 1
        })
        .await;
    assert_eq!(seen.heartbeats.len(), 4);
    assert_eq!(seen.registrations.len(), 1);
    assert!(!agent.task.is_finished());
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn heartbeats_carry_machine_metrics_and_ollamas_models() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));

    let seen = coordinator
        .wait_for("a heartbeat", |seen| seen.accepted_heartbeats() >= 1)
        .await;
    let (id, heartbeat, _) = &seen.heartbeats[0];
    assert_eq!(*id, coordinator.node_id);
    assert!(heartbeat.metrics.memory_total_bytes > 0);
    assert!(heartbeat.metrics.memory_used_bytes <= heartbeat.metrics.memory_total_bytes);
    assert!((0.0..=100.0).contains(&heartbeat.metrics.cpu_percent));
    assert!(heartbeat.ollama_available);
    assert_eq!(
        heartbeat.ollama_version.as_deref(),
        Some(FakeOllama::VERSION)
    );
    let models: Vec<&str> = heartbeat
        .models
        .as_ref()
        .expect("models are reported while Ollama answers")
        .iter()
        .map(|model| model.name.as_str())
        .collect();
    assert_eq!(models, ["llama3.2:latest", "qwen2.5:7b"]);
    assert_eq!(heartbeat.loaded_models.as_ref().map(Vec::len), Some(1));
    agent.shut_down().await.unwrap();
}
