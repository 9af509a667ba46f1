//! An unreachable Ollama: the agent still registers and beats, reporting the node unavailable.

use crate::support::{FakeCoordinator, RunningAgent, closed_port_url, test_config};

#[tokio::test]
async fn ollama_down_registers_with_ollama_available_false_and_beats_without_models() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let (ollama_url, _refusing) = closed_port_url();
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama_url));

    let seen = coordinator
        .wait_for("two heartbeats", |seen| seen.accepted_heartbeats() >= 2)
        .await;
    let registration = &seen.registrations[0];
    assert!(!registration.ollama_available);
    assert!(registration.models.is_empty());
    assert_eq!(registration.ollama_version, None);
    for (_, heartbeat, _) in &seen.heartbeats {
        assert!(!heartbeat.ollama_available);
        // None, not an empty list: the coordinator keeps the models it knew.
        assert_eq!(heartbeat.models, None);
        assert_eq!(heartbeat.loaded_models, None);
        assert!(heartbeat.metrics.memory_total_bytes > 0);
    }
    assert!(!agent.task.is_finished());
    agent.shut_down().await.unwrap();
}
