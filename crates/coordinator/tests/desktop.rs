//! The agent's desktop side against real processes: the status the tray
//! menu is built from, Pause and Resume (with the node's own credential),
//! Quit (a goodbye that takes the node offline at once), and the
//! supervision of Ollama with a fake `ollama` on the PATH.

mod support;

use std::process::Command;
use std::time::Duration;

use llm_router_agent::desktop::{self, Effect, PAUSE, QUIT, RESUME};
use llm_router_agent::status::{self, AgentStatus, Link};
use llm_router_agent::{AgentConfig, run_controlled};
use llm_router_desktop::IconState;
use serde_json::Value;
use support::fleet::Fleet;
use support::process::{Proc, binary, eventually};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

async fn node_field(fleet: &Fleet, field: &str) -> Option<Value> {
    Some(fleet.agents().await.first()?[field].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_quit_from_the_tray_act_on_the_coordinator() {
    let fleet = Fleet::empty_with(|_| {}).await;
    let base = fleet.url("");
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
        // Pause needs the node's id too, which the status may carry a moment later.
        watched.wait_for(|s| {
            s.link == Link::Connected && s.ollama_up == Some(true) && s.node_id.is_some()
        }),
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
    eventually("the node draining", DEADLINE, || async {
        (node_field(&fleet, "draining").await? == true).then_some(())
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
        (node_field(&fleet, "draining").await? == false).then_some(())
    })
    .await;

    // The drain endpoint is the node's own: another credential is refused.
    let id = connected.node_id.unwrap();
    let refused = reqwest::Client::new()
        .post(fleet.url(&format!("/api/agents/{id}/drain")))
        .bearer_auth("llmr_nc_not-this-node")
        .json(&serde_json::json!({"draining": true}))
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert_eq!(node_field(&fleet, "draining").await, Some(false.into()));

    // Quit: the goodbye takes the node offline, and the agent ends cleanly.
    assert_eq!(desktop::effect(QUIT, &connected, None), Some(Effect::Quit));
    quit.cancel();
    agent_task.await.unwrap().unwrap();
    assert_eq!(node_field(&fleet, "status").await, Some("offline".into()));
    fleet.stop().await;
}

/// An agent process supervising Ollama at `ollama`, with a fake `ollama` on
/// its PATH that serves a mock node and appends its pid to `marker`.
#[cfg(unix)]
fn supervising_agent(
    dir: &std::path::Path,
    ollama: &str,
    marker: &std::path::Path,
    coordinator: &str,
) -> Proc {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("ollama");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = serve ] || exit 2\necho \"$$ $OLLAMA_HOST\" >> \"$FAKE_OLLAMA_MARKER\"\n\
         exec \"$FAKE_OLLAMA_MOCK\" --host 127.0.0.1 --port 0 --name fake-ollama\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut command = Command::new(binary("llm-router-agent"));
    command
        .args(["--manage-ollama", "on"])
        .env("PATH", path)
        .env("FAKE_OLLAMA_MARKER", marker)
        .env("FAKE_OLLAMA_MOCK", binary("llm-router-mock-node"))
        .env("OLLAMA_API_BASE", ollama)
        .env("OLLAMA_AGENT_MACHINE_NAME", "supervisor")
        .env("COORDINATOR_URL", coordinator)
        .env("AGENT_HEARTBEAT_INTERVAL_SECS", "1")
        .env("LLM_ROUTER_DATA_DIR", dir.join("agent"));
    Proc::spawn("agent", command)
}

/// The pids the fake `ollama` recorded, in order.
#[cfg(unix)]
fn started_pids(marker: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

#[cfg(unix)]
fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ollama_is_started_restarted_after_sigkill_and_stopped_with_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // Accepts connections and never answers: Ollama is "not reachable".
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ollama = format!("http://{}", silent.local_addr().unwrap());
    let fleet = Fleet::empty_with(|_| {}).await;
    let mut agent = supervising_agent(dir.path(), &ollama, &marker, &fleet.url(""));

    let first = eventually("ollama serve started", DEADLINE, || async {
        started_pids(&marker).first().copied()
    })
    .await;
    // The heartbeats say so, for the dashboard.
    let said = eventually("the supervision in a heartbeat", DEADLINE, || async {
        let said = node_field(&fleet, "ollama_supervision").await?;
        said.as_str()?
            .contains("started by the agent")
            .then_some(said)
    })
    .await;
    assert!(
        said.as_str().unwrap().contains(&first.to_string()),
        "{said}"
    );
    let host = std::fs::read_to_string(&marker).unwrap();
    assert!(
        host.contains(ollama.trim_start_matches("http://")),
        "OLLAMA_HOST is the agent's Ollama address: {host}"
    );
    assert!(alive(first));

    let killed = Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let second = eventually("ollama serve started again", DEADLINE, || async {
        started_pids(&marker).get(1).copied()
    })
    .await;
    assert_ne!(first, second);

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    eventually(
        "the started ollama stopped with the agent",
        DEADLINE,
        || async { (!alive(second)).then_some(()) },
    )
    .await;
    drop(silent);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ollama_that_answers_already_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let ollama =
        llm_router_mock_node::MockNode::start(llm_router_mock_node::MockConfig::named("running"))
            .await
            .unwrap();
    // Nothing listens there: registration retries, supervision goes on.
    let mut agent = supervising_agent(dir.path(), &ollama.url(), &marker, "http://127.0.0.1:1");
    agent.wait_for_line("the agent leaving Ollama alone", DEADLINE, |line| {
        line.contains("left alone").then_some(())
    });
    assert!(started_pids(&marker).is_empty(), "ollama serve was started");
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    assert!(started_pids(&marker).is_empty(), "ollama serve was started");
}
