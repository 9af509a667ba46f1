//! The demo fleet (`llm-router --demo`) against a coordinator running in-process.

mod support;

use std::time::Duration;

use llm_router_coordinator::demo::{DemoFleet, MAX_DEMO_NODES, banner};
use llm_router_mock_node::normalize_model_name;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

struct Coordinator {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_coordinator() -> Coordinator {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(llm_router_coordinator::run(
        listener,
        support::config(dir.path()),
        stop.clone().cancelled_owned(),
    ));
    Coordinator {
        url,
        stop,
        task,
        _dir: dir,
    }
}

impl Coordinator {
    async fn agents(&self) -> Vec<Value> {
        reqwest::get(format!("{}/api/agents", self.url))
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `/api/agents` until `done` holds, panicking with the last answer at the deadline.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        support::process::eventually_showing(what, DEADLINE, || async {
            let agents = self.agents().await;
            if done(&agents) {
                Ok(agents)
            } else {
                Err(format!("/api/agents says {agents:#?}"))
            }
        })
        .await
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn names(agents: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = agents
        .iter()
        .map(|a| a["machine_name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn demo_nodes_register_through_their_agents_and_go_offline_on_stop() {
    let coordinator = start_coordinator().await;
    let fleet = DemoFleet::start(&coordinator.url, 3).await.unwrap();
    let nodes = fleet.nodes().to_vec();
    let expected: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(expected, ["demo-gpu-1", "demo-mac-2", "demo-cpu-3"]);
    assert_eq!(
        nodes.iter().map(|n| n.tokens_per_sec).collect::<Vec<_>>(),
        [120.0, 45.0, 12.0]
    );

    let agents = coordinator
        // A heartbeat (due 2 s after registration, the demo's interval, though the
        // coordinator asks for 10 s) shows the agent knows it is registered: only then does
        // it say goodbye when stopped.
        .wait_for("3 demo nodes online and beating", |agents| {
            agents.len() == 3
                && agents
                    .iter()
                    .all(|a| a["status"] == "online" && a["last_seen"] != a["registered_at"])
        })
        .await;
    assert_eq!(names(&agents), ["demo-cpu-3", "demo-gpu-1", "demo-mac-2"]);
    for node in &nodes {
        let agent = agents
            .iter()
            .find(|a| a["machine_name"] == node.name.as_str())
            .unwrap();
        assert_eq!(agent["api_url"], node.url.as_str(), "{agent:#}");
        assert_eq!(agent["ip_address"], "127.0.0.1");
        let mut registered: Vec<String> = agent["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        registered.sort();
        let mut wanted: Vec<String> = node
            .models
            .iter()
            .map(|m| normalize_model_name(m))
            .collect();
        wanted.sort();
        assert_eq!(registered, wanted, "models of {}", node.name);
        assert!(wanted.contains(&"llama3.2:latest".to_owned()));
    }

    fleet.stop().await;
    coordinator
        .wait_for("every demo node offline", |agents| {
            agents.len() == 3 && agents.iter().all(|a| a["status"] == "offline")
        })
        .await;
    coordinator.stop().await;
}

#[tokio::test]
async fn a_demo_run_again_on_a_kept_folder_takes_over_its_nodes_instead_of_adding_more() {
    let coordinator = start_coordinator().await;
    let kept = tempfile::tempdir().unwrap();
    let beating = |agents: &[Value]| {
        agents.len() == 2
            && agents
                .iter()
                .all(|a| a["status"] == "online" && a["last_seen"] != a["registered_at"])
    };
    let first = DemoFleet::start_with_token(&coordinator.url, 2, None, Some(kept.path()))
        .await
        .unwrap();
    assert!(banner(&coordinator.url, &first).contains(&kept.path().display().to_string()));
    let before = coordinator.wait_for("2 demo nodes beating", beating).await;
    first.stop().await;
    coordinator
        .wait_for("both offline", |agents| {
            agents.iter().all(|a| a["status"] == "offline")
        })
        .await;

    // New ports, same nodes: the agents kept their ids and credentials.
    let second = DemoFleet::start_with_token(&coordinator.url, 2, None, Some(kept.path()))
        .await
        .unwrap();
    let after = coordinator
        .wait_for("the same 2 nodes back online", beating)
        .await;
    let ids = |agents: &[Value]| {
        let mut ids: Vec<String> = agents.iter().map(|a| a["id"].to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before));
    second.stop().await;
    coordinator.stop().await;
}

#[tokio::test]
async fn the_banner_shows_the_url_the_nodes_and_requests_to_try() {
    // No coordinator needed: the agents keep retrying in the background until stopped.
    let url = "http://127.0.0.1:9";
    let fleet = DemoFleet::start(url, 4).await.unwrap();
    let text = banner(url, &fleet);
    for node in fleet.nodes() {
        assert!(text.contains(&node.name), "{text}");
        assert!(text.contains(&node.url), "{text}");
    }
    for needle in [
        "curl http://127.0.0.1:9/api/agents",
        r#"curl http://127.0.0.1:9/api/chat -d '{"model":"llama3.2","messages":[{"role":"user","content":"Hello"}]}'"#,
        "http://127.0.0.1:9/v1/chat/completions",
        "OLLAMA_HOST=http://127.0.0.1:9 ollama run llama3.2",
        "temporary folder",
        "Dashboard: http://127.0.0.1:9/dashboard",
        "120 tok/s",
        "12 tok/s",
        "qwen2.5:7b",
        "nomic-embed-text",
        "mistral",
    ] {
        assert!(text.contains(needle), "banner lacks {needle}:\n{text}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn fleet_sizes_outside_one_to_sixteen_are_rejected() {
    for n in [0, MAX_DEMO_NODES + 1] {
        let error = DemoFleet::start("http://127.0.0.1:9", n)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("1 to 16"), "{error}");
        assert!(error.contains(&n.to_string()), "{error}");
    }
    let error = DemoFleet::start("not a url", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a url"), "{error}");
}
