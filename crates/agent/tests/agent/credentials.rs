//! The node token and the node's credential: what the agent presents, keeps between
//! runs, and does when the coordinator refuses them.

use std::process::Stdio;

use llm_router_agent::config::Secret;
use llm_router_agent::node_file::{self, NODE_FILE_NAME};
use tokio::process::Command;

use crate::support::{
    DEADLINE, FakeCoordinator, FakeOllama, ISSUED_CREDENTIAL, RunningAgent, test_config,
};

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[tokio::test]
async fn the_node_token_goes_with_registration_and_the_credential_with_heartbeats_and_goodbye() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let mut config = test_config(&coordinator.url, &ollama.url);
    config.node_token = Some(Secret("fleet-token".to_owned()));
    let agent = RunningAgent::spawn(config);
    coordinator
        .wait_for("a heartbeat", |seen| seen.accepted_heartbeats() >= 1)
        .await;
    agent.shut_down().await.unwrap();

    let seen = coordinator.seen();
    assert_eq!(seen.authorizations[0], ("register", bearer("fleet-token")));
    let later: Vec<_> = seen.authorizations[1..].to_vec();
    assert!(!later.is_empty());
    for (call, authorization) in later {
        assert_eq!(authorization, bearer(ISSUED_CREDENTIAL), "{call}");
    }
    assert_eq!(seen.shutdowns, [coordinator.node_id]);
}

#[tokio::test]
async fn the_identity_survives_a_restart_of_the_agent_in_an_owner_only_file() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NODE_FILE_NAME);
    let mut config = test_config(&coordinator.url, &ollama.url);
    config.identity_file = Some(path.clone());

    let first = RunningAgent::spawn(config.clone());
    coordinator
        .wait_for("a heartbeat", |seen| seen.accepted_heartbeats() >= 1)
        .await;
    first.shut_down().await.unwrap();
    let stored =
        node_file::load(&path, &coordinator.url, "test-box").expect("the identity was saved");
    assert_eq!(stored.node_id, coordinator.node_id);
    assert_eq!(stored.node_credential, ISSUED_CREDENTIAL);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let second = RunningAgent::spawn(config);
    let seen = coordinator
        .wait_for("the second registration", |seen| {
            seen.registrations.len() >= 2
        })
        .await;
    second.shut_down().await.unwrap();
    let again = &seen.registrations[1];
    assert_eq!(again.node_id, Some(coordinator.node_id));
    assert_eq!(again.node_credential.as_deref(), Some(ISSUED_CREDENTIAL));
}

#[tokio::test]
async fn a_corrupt_identity_file_does_not_stop_the_agent() {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(NODE_FILE_NAME);
    std::fs::write(&path, b"{ not json").unwrap();
    let mut config = test_config(&coordinator.url, &ollama.url);
    config.identity_file = Some(path.clone());
    let agent = RunningAgent::spawn(config);
    let seen = coordinator
        .wait_for("a heartbeat", |seen| seen.accepted_heartbeats() >= 1)
        .await;
    agent.shut_down().await.unwrap();
    assert_eq!(seen.registrations[0].node_id, None);
    assert!(
        node_file::load(&path, &coordinator.url, "test-box").is_some(),
        "replaced by a good one"
    );
}

#[tokio::test]
async fn a_refused_heartbeat_credential_makes_the_agent_register_again() {
    let coordinator = FakeCoordinator::start(vec![], vec![401]).await;
    let ollama = FakeOllama::start().await;
    let agent = RunningAgent::spawn(test_config(&coordinator.url, &ollama.url));
    coordinator
        .wait_for("a second registration", |seen| {
            seen.registrations.len() >= 2
        })
        .await;
    agent.shut_down().await.unwrap();
}

const BINARY: &str = env!("CARGO_BIN_EXE_llm-router-agent");

#[tokio::test]
async fn a_wrong_node_token_stops_the_binary_with_a_message_saying_what_to_set() {
    let coordinator = FakeCoordinator::start(
        vec![(401, "the node token is not valid for this coordinator")],
        vec![],
    )
    .await;
    let ollama = FakeOllama::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("LLM_ROUTER_DATA_DIR", data_dir.path())
        .env("COORDINATOR_URL", coordinator.url.as_str())
        .env("OLLAMA_API_BASE", ollama.url.as_str())
        .env("LLM_ROUTER_NODE_TOKEN", "wrong-token-value")
        .env("COORDINATOR_REGISTER_RETRY_SECS", "60")
        .env("NO_COLOR", "1")
        .arg("--machine-name=token-test")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the agent did not stop")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the node token is not valid"), "{stderr}");
    assert!(stderr.contains("LLM_ROUTER_NODE_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains("wrong-token-value"),
        "the token is never logged: {stderr}"
    );
    assert_eq!(coordinator.seen().registrations.len(), 1, "no retry");
}

#[tokio::test]
async fn print_config_never_shows_a_secret() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = Command::new(BINARY)
        .env_clear()
        .env("LLM_ROUTER_DATA_DIR", data_dir.path())
        .env("LLM_ROUTER_NODE_TOKEN", "token-secret-value")
        .env("LLM_ROUTER_NODE_API_KEY", "key-secret-value")
        .args(["--machine-name=x", "--print-config"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("node_token = (set)"), "{stdout}");
    assert!(stdout.contains("node_api_key = (set)"), "{stdout}");
    assert!(!stdout.contains("secret-value"), "{stdout}");
    let help = Command::new(BINARY)
        .env_clear()
        .env("LLM_ROUTER_NODE_TOKEN", "token-secret-value")
        .arg("--help")
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("secret-value"));
}
