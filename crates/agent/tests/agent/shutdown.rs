//! Shutdown: the shutdown future ends `run` with `Ok`, after telling the coordinator.

use crate::support::{FakeCoordinator, FakeOllama, RunningAgent, test_config};

#[tokio::test]
async fn the_shutdown_future_makes_the_agent_send_the_shutdown_call() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));
    coordinator
        .wait_for("a heartbeat", |seen| seen.accepted_heartbeats() >= 1)
        .await;

    agent.shut_down().await.unwrap();
    assert_eq!(coordinator.seen().shutdowns, vec![coordinator.node_id]);
}

#[tokio::test]
async fn shutdown_while_still_registering_returns_ok_without_a_shutdown_call() {
    let coordinator = FakeCoordinator::start(vec![(503, "not yet"); 1000], vec![]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));
    coordinator
        .wait_for("a registration attempt", |seen| {
            !seen.registrations.is_empty()
        })
        .await;

    agent.shut_down().await.unwrap();
    assert!(coordinator.seen().shutdowns.is_empty());
}

#[tokio::test]
async fn shutdown_during_a_registration_on_the_wire_waits_for_it_and_says_goodbye() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    coordinator.hold_registrations(true);
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));
    coordinator
        .wait_for("a registration on the wire", |seen| {
            !seen.registrations.is_empty()
        })
        .await;

    // The coordinator accepts the registration only after the shutdown began.
    let shutting_down = tokio::spawn(agent.shut_down());
    tokio::task::yield_now().await;
    coordinator.hold_registrations(false);
    shutting_down.await.unwrap().unwrap();
    assert_eq!(coordinator.seen().shutdowns, vec![coordinator.node_id]);
}
