//! Registration: retries on 5xx, stops on a permanent 4xx, gives up after the configured attempts.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use llm_router_agent::AgentError;
use llm_router_agent::registration::RegistrationFailure;

use crate::support::{FakeCoordinator, FakeOllama, RunningAgent, test_config};

#[tokio::test]
async fn two_503s_then_200_registers_on_the_third_attempt() {
    let coordinator =
        FakeCoordinator::start(vec![(503, "starting up"), (503, "starting up")], vec![]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));

    // A heartbeat under the coordinator's id proves the registration went through.
    let seen = coordinator
        .wait_for("a heartbeat after registering", |seen| {
            seen.accepted_heartbeats() >= 1
        })
        .await;
    assert_eq!(seen.registrations.len(), 3);
    assert_eq!(seen.heartbeats[0].0, coordinator.node_id);
    assert!(
        seen.registrations
            .iter()
            .all(|request| request.node_id.is_none())
    );
    assert!(!agent.task.is_finished());
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn a_400_makes_run_return_the_coordinators_error_without_retrying() {
    let coordinator =
        FakeCoordinator::start(vec![(400, "machine_name must not be empty")], vec![]).await;
    let ollama = FakeOllama::start().await;
    let mut config = test_config(&coordinator.url, &ollama.url);
    // A retry would take a minute and miss the deadline `finished` allows.
    config.register_retry = Duration::from_secs(60);
    let error = RunningAgent::spawn(config).finished().await.unwrap_err();

    assert!(
        matches!(
            error,
            AgentError::Registration(RegistrationFailure::Refused(_))
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("400"), "{message}");
    assert!(
        message.contains("machine_name must not be empty"),
        "{message}"
    );
    assert_eq!(coordinator.seen().registrations.len(), 1);
}

#[tokio::test]
async fn max_retries_makes_run_give_up_after_that_many_attempts() {
    let coordinator = FakeCoordinator::start(vec![(503, "down for maintenance"); 10], vec![]).await;
    let ollama = FakeOllama::start().await;
    let mut config = test_config(&coordinator.url, &ollama.url);
    config.register_max_retries = 3;
    let error = RunningAgent::spawn(config).finished().await.unwrap_err();

    assert!(
        matches!(
            error,
            AgentError::Registration(RegistrationFailure::GaveUp { attempts: 3, .. })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("down for maintenance"),
        "{error}"
    );
    assert_eq!(coordinator.seen().registrations.len(), 3);
}

#[tokio::test]
async fn registration_carries_name_route_address_port_ollama_and_system_facts() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));

    let seen = coordinator
        .wait_for("a registration", |seen| !seen.registrations.is_empty())
        .await;
    let request = &seen.registrations[0];
    assert_eq!(request.machine_name, "test-box");
    // The coordinator is on loopback, so the route to it starts at loopback.
    assert_eq!(request.ip_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(Some(request.ollama_port), ollama.url.port());
    assert_eq!(request.api_url, None);
    assert!(request.ollama_available);
    assert_eq!(request.ollama_version.as_deref(), Some(FakeOllama::VERSION));
    let models: Vec<&str> = request
        .models
        .iter()
        .map(|model| model.name.as_str())
        .collect();
    assert_eq!(models, ["llama3.2:latest", "qwen2.5:7b"]);
    assert_eq!(request.models[0].size, Some(2019393189));
    assert_eq!(request.loaded_models.len(), 1);
    assert_eq!(request.loaded_models[0].size_vram, Some(3000000000));
    assert_eq!(
        request.agent_version.as_deref(),
        Some(llm_router_agent::AGENT_VERSION)
    );
    assert!(request.system_info.cpu_cores > 0);
    assert!(request.system_info.total_memory_bytes > 0);
    agent.shut_down().await.unwrap();
}

#[tokio::test]
async fn overrides_replace_the_detected_address_and_advertise_the_api_url() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let mut config = test_config(&coordinator.url, &ollama.url);
    config.advertise_ip = Some("10.20.30.40".parse().unwrap());
    config.api_url = Some("https://gpu-7.example.net/ollama".parse().unwrap());
    let agent = RunningAgent::spawn(config);

    let seen = coordinator
        .wait_for("a registration", |seen| !seen.registrations.is_empty())
        .await;
    let request = &seen.registrations[0];
    assert_eq!(request.ip_address, "10.20.30.40".parse::<IpAddr>().unwrap());
    assert_eq!(
        request.api_url.as_deref(),
        Some("https://gpu-7.example.net/ollama")
    );
    agent.shut_down().await.unwrap();
}
