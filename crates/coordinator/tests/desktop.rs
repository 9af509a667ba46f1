//! The agent's tray actions against a real coordinator: the status the menu
//! is built from, Pause and Resume (with the node's own credential), and
//! Quit (a goodbye that takes the node offline at once).

mod support;

use std::time::Duration;

use llm_router_agent::desktop::{self, Effect, PAUSE, QUIT, RESUME};
use llm_router_agent::status::{self, AgentStatus, Link};
use llm_router_agent::{AgentConfig, run_controlled};
use llm_router_desktop::IconState;
use serde_json::Value;
use support::process::{eventually, list_nodes};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

async fn node_field(client: &reqwest::Client, base: &str, field: &str) -> Option<Value> {
    Some(list_nodes(client, base).await?.first()?[field].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_quit_from_the_tray_act_on_the_coordinator() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = llm_router_coordinator::Config::with_data_dir(data_dir.path());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", tcp.local_addr().unwrap());
    let stop = CancellationToken::new();
    let coordinator = tokio::spawn(llm_router_coordinator::run(
        tcp,
        config,
        stop.clone().cancelled_owned(),
    ));
    let ollama =
        llm_router_mock_node::MockNode::start(llm_router_mock_node::MockConfig::named("desk"))
            .await
            .unwrap();

    let mut agent = AgentConfig::new(base.parse().unwrap(), ollama.url().parse().unwrap(), "desk");
    agent.heartbeat_interval = Duration::from_millis(100);
    agent.register_retry = Duration::from_millis(50);
    let (mut reporter, controls) = status::channels(AgentStatus::starting(&base, "desk"));
    let quit = CancellationToken::new();
    let agent_task = tokio::spawn({
        let quit = quit.clone();
        async move { run_controlled(agent, quit.cancelled_owned(), &mut reporter).await }
    });

    let mut watched = controls.status.clone();
    let connected = tokio::time::timeout(
        DEADLINE,
        watched.wait_for(|s| s.link == Link::Connected && s.ollama_up == Some(true)),
    )
    .await
    .expect("the agent did not connect")
    .unwrap()
    .clone();
    let menu = desktop::menu(&connected, None);
    assert_eq!(menu.icon, IconState::Ok);
    assert_eq!(
        menu.labels()[0],
        format!("Connected to {base}/ as desk"),
        "{:?}",
        menu.labels()
    );

    // Pause: the coordinator drains the node, and the menu offers Resume.
    let Some(Effect::Agent(command)) = desktop::effect(PAUSE, &connected, None) else {
        panic!("Pause is not offered to a connected agent");
    };
    controls.commands.send(command).await.unwrap();
    let client = reqwest::Client::new();
    eventually("the node draining", DEADLINE, || async {
        (node_field(&client, &base, "draining").await? == true).then_some(())
    })
    .await;
    let paused = tokio::time::timeout(DEADLINE, watched.wait_for(|s| s.draining))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(desktop::menu(&paused, None).allows(RESUME));

    let Some(Effect::Agent(command)) = desktop::effect(RESUME, &paused, None) else {
        panic!("Resume is not offered to a paused agent");
    };
    controls.commands.send(command).await.unwrap();
    eventually("the node taking requests again", DEADLINE, || async {
        (node_field(&client, &base, "draining").await? == false).then_some(())
    })
    .await;

    // The drain endpoint is the node's own: another credential is refused.
    let id = connected.node_id.unwrap();
    let refused = client
        .post(format!("{base}/api/agents/{id}/drain"))
        .bearer_auth("llmr_nc_not-this-node")
        .json(&serde_json::json!({"draining": true}))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert_eq!(
        node_field(&client, &base, "draining").await,
        Some(false.into())
    );

    // Quit: the goodbye takes the node offline, and the agent ends cleanly.
    assert_eq!(desktop::effect(QUIT, &connected, None), Some(Effect::Quit));
    quit.cancel();
    agent_task.await.unwrap().unwrap();
    assert_eq!(
        node_field(&client, &base, "status").await,
        Some("offline".into())
    );
    stop.cancel();
    coordinator.await.unwrap().unwrap();
}
