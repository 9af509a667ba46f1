//! End to end: the coordinator, the agent and a mock Ollama as separate
//! processes on loopback, killed and restarted the way real fleets are.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::{Proc, binary, eventually};
use tokio::net::{TcpListener, TcpStream};

fn coordinator(data_dir: &Path, agent_timeout: u64) -> Proc {
    let mut command = Command::new(binary("llm-router"));
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("AGENT_TIMEOUT", agent_timeout.to_string())
        .env("HEALTH_CHECK_INTERVAL", "1");
    Proc::spawn("coordinator", command)
}

fn mock_node(models: &str) -> (Proc, SocketAddr) {
    let mut command = Command::new(binary("llm-router-mock-node"));
    command.args(["--host", "127.0.0.1", "--port", "0", "--models", models]);
    let node = Proc::spawn("mock node", command);
    let addr = node.listening_addr();
    (node, addr)
}

fn agent(coordinator_url: &str, ollama: SocketAddr, machine_name: &str) -> Proc {
    let mut command = Command::new(binary("llm-router-agent"));
    command
        .env("COORDINATOR_URL", coordinator_url)
        .env("OLLAMA_API_BASE", format!("http://{ollama}"))
        .env("OLLAMA_AGENT_MACHINE_NAME", machine_name)
        .env("AGENT_HEARTBEAT_INTERVAL_SECS", "1")
        .env("COORDINATOR_REGISTER_RETRY_SECS", "1")
        .env(
            "LLM_ROUTER_DATA_DIR",
            std::env::temp_dir().join("llm-router-agent-tests-unused"),
        )
        .env(
            "LLM_ROUTER_AGENT_IDENTITY_FILE",
            identity_file(coordinator_url, machine_name),
        );
    Proc::spawn(&format!("agent {machine_name}"), command)
}

/// Where the agent for `machine_name` keeps its node's credential: one file per machine
/// and coordinator, since tests run side by side and an agent restarted in a test must
/// find its own node's credential.
fn identity_file(coordinator_url: &str, machine_name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "llm-router-agent-tests-{}-{machine_name}-{}.json",
        std::process::id(),
        coordinator_url.rsplit(':').next().unwrap_or("")
    ))
}

async fn nodes(coordinator: SocketAddr) -> Option<Vec<Value>> {
    let response = reqwest::get(format!("http://{coordinator}/api/agents"))
        .await
        .ok()?;
    response.json::<Vec<Value>>().await.ok()
}

async fn node_named(coordinator: SocketAddr, name: &str) -> Option<Value> {
    nodes(coordinator)
        .await?
        .into_iter()
        .find(|n| n["machine_name"] == name)
}

/// Waits until the node called `name` has `status`; returns the node.
async fn wait_status(
    coordinator: SocketAddr,
    name: &str,
    status: &str,
    deadline: Duration,
) -> Value {
    eventually(&format!("node {name} {status}"), deadline, || async {
        node_named(coordinator, name)
            .await
            .filter(|n| n["status"] == status)
    })
    .await
}

/// A TCP front that stays bound while coordinators come and go behind it:
/// connections arriving while no coordinator is set are closed at once.
struct Front {
    addr: SocketAddr,
    backend: Arc<Mutex<Option<SocketAddr>>>,
    turned_away: Arc<AtomicUsize>,
}

impl Front {
    async fn start() -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let turned_away = Arc::new(AtomicUsize::new(0));
        let (b, t) = (Arc::clone(&backend), Arc::clone(&turned_away));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *b.lock().unwrap();
                let Some(target) = target else {
                    t.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Front {
            addr,
            backend,
            turned_away,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn route_to(&self, backend: Option<SocketAddr>) {
        *self.backend.lock().unwrap() = backend;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_its_node_with_name_address_version_and_models() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator(dir.path(), 30);
    let addr = coordinator.listening_addr();
    let (_ollama, ollama_addr) = mock_node("llama3.2,qwen2.5:7b");
    let _agent = agent(&format!("http://{addr}"), ollama_addr, "workstation-7");

    let node = wait_status(addr, "workstation-7", "online", Duration::from_secs(20)).await;
    assert_eq!(node["ip_address"], "127.0.0.1");
    assert!(
        node["ollama_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{node}"
    );
    let models: Vec<&str> = node["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(models.contains(&"llama3.2:latest"), "{models:?}");
    assert!(models.contains(&"qwen2.5:7b"), "{models:?}");
    // Heartbeats bring machine metrics.
    eventually(
        "metrics in a heartbeat",
        Duration::from_secs(10),
        || async {
            node_named(addr, "workstation-7")
                .await
                .filter(|n| n["metrics"]["memory_total_bytes"].as_u64() > Some(0))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_started_ten_seconds_before_the_coordinator_registers_without_help() {
    let dir = tempfile::tempdir().unwrap();
    let front = Front::start().await;
    let (_ollama, ollama_addr) = mock_node("llama3.2");
    let started = Instant::now();
    let agent = agent(&front.url(), ollama_addr, "early-bird");
    // The agent keeps trying while no coordinator answers.
    eventually(
        "three refused registration attempts",
        Duration::from_secs(30),
        || async { (front.turned_away.load(Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;

    let coordinator = coordinator(dir.path(), 30);
    let addr = coordinator.listening_addr();
    front.route_to(Some(addr));
    wait_status(addr, "early-bird", "online", Duration::from_secs(90)).await;
    assert!(
        agent.output().to_lowercase().contains("regist"),
        "agent did not log its registration attempts:\n{}",
        agent.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_goes_offline_within_the_timeout_and_returns_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let (timeout, check) = (3, 1);
    let coordinator = coordinator(dir.path(), timeout);
    let addr = coordinator.listening_addr();
    let (_ollama, ollama_addr) = mock_node("llama3.2");
    let first = agent(&format!("http://{addr}"), ollama_addr, "crashy");
    let before = wait_status(addr, "crashy", "online", Duration::from_secs(20)).await;
    // The node is online as soon as the coordinator took the registration, a moment
    // before the agent has the answer and saves its credential: kill it only after that.
    let identity = identity_file(&format!("http://{addr}"), "crashy");
    eventually(
        "the agent saved its credential",
        Duration::from_secs(20),
        || std::future::ready(identity.exists().then_some(())),
    )
    .await;

    first.signal("KILL");
    let killed_at = Instant::now();
    // Generous slack over timeout + check interval: this machine is small and shared.
    let offline = wait_status(
        addr,
        "crashy",
        "offline",
        Duration::from_secs(timeout + check + 5),
    )
    .await;
    eprintln!(
        "offline {:?} after SIGKILL (timeout {timeout}s + check {check}s)",
        killed_at.elapsed()
    );
    assert_eq!(
        offline["status_reason"],
        "no heartbeat within the agent timeout"
    );

    let _second = agent(&format!("http://{addr}"), ollama_addr, "crashy");
    let after = wait_status(addr, "crashy", "online", Duration::from_secs(20)).await;
    assert_eq!(after["id"], before["id"]);
    assert_eq!(nodes(addr).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stopped_with_sigterm_takes_its_node_offline_at_once_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // A long timeout: only the agent's goodbye can take the node offline in time.
    let coordinator = coordinator(dir.path(), 600);
    let addr = coordinator.listening_addr();
    let (_ollama, ollama_addr) = mock_node("llama3.2");
    let mut agent = agent(&format!("http://{addr}"), ollama_addr, "polite");
    wait_status(addr, "polite", "online", Duration::from_secs(20)).await;

    agent.signal("TERM");
    let node = wait_status(addr, "polite", "offline", Duration::from_secs(10)).await;
    assert_eq!(node["status_reason"], "agent shut down");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_coordinator_keeps_its_nodes_and_heartbeats_continue_on_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let front = Front::start().await;
    let mut first = coordinator(dir.path(), 30);
    let first_addr = first.listening_addr();
    front.route_to(Some(first_addr));
    let (_ollama, ollama_addr) = mock_node("llama3.2");
    let agent = agent(&front.url(), ollama_addr, "steady");
    let before = wait_status(first_addr, "steady", "online", Duration::from_secs(20)).await;

    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));
    front.route_to(None);
    let second = coordinator(dir.path(), 30);
    let second_addr = second.listening_addr();
    // Straight from agents.json, before any agent has spoken to this process.
    let restored = node_named(second_addr, "steady")
        .await
        .expect("node not restored");
    assert_eq!(restored["id"], before["id"]);
    front.route_to(Some(second_addr));

    let seen_before = restored["last_seen"].as_str().unwrap().to_owned();
    let node = eventually(
        "a heartbeat after the restart",
        Duration::from_secs(20),
        || async {
            node_named(second_addr, "steady").await.filter(|n| {
                n["last_seen"].as_str() > Some(seen_before.as_str()) && n["status"] == "online"
            })
        },
    )
    .await;
    assert_eq!(node["id"], before["id"]);
    assert_eq!(nodes(second_addr).await.unwrap().len(), 1);
    // The agent kept its id: it never had to register again.
    assert!(
        !second.output().contains("node registered again"),
        "agent re-registered instead of continuing its heartbeats:\n{}",
        agent.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_during_a_registration_storm_keeps_every_acknowledged_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut coordinator = coordinator(dir.path(), 30);
    let addr = coordinator.listening_addr();
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for agent_no in 0..50u16 {
        let (client, acknowledged) = (client.clone(), Arc::clone(&acknowledged));
        tasks.push(tokio::spawn(async move {
            // Each fake agent registers, then heartbeats as fast as it can.
            for round in 0.. {
                let body = serde_json::json!({
                    "machine_name": format!("storm-{agent_no}-{round}"),
                    "ip_address": "127.0.0.1",
                    "ollama_port": 10000 + agent_no,
                    "models": [{"name": "llama3.2:latest"}],
                });
                let Ok(response) = client
                    .post(format!("http://{addr}/api/agents/register"))
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                if !response.status().is_success() {
                    return;
                }
                let Ok(answer) = response.json::<Value>().await else {
                    return;
                };
                let id = answer["node_id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push(id.clone());
                for _ in 0..5 {
                    if client
                        .post(format!("http://{addr}/api/agents/{id}/heartbeat"))
                        .json(&serde_json::json!({"metrics": {"cpu_percent": 50.0}}))
                        .send()
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }));
    }
    eventually(
        "200 acknowledged registrations",
        Duration::from_secs(60),
        || async { (acknowledged.lock().unwrap().len() >= 200).then_some(()) },
    )
    .await;
    coordinator.signal("KILL");
    coordinator.wait_exit(Duration::from_secs(10));
    for task in tasks {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let saved = support::registry_on_disk(dir.path());
    let saved_ids: std::collections::HashSet<&str> = saved["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !saved_ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged nodes lost: {missing:?}",
        missing.len(),
        acknowledged.len()
    );

    let restarted = self::coordinator(dir.path(), 30);
    let addr = restarted.listening_addr();
    assert!(nodes(addr).await.unwrap().len() >= acknowledged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_registry_file_is_kept_aside_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agents.json"),
        b"{\"version\":1,\"nodes\":[{\"id\":\"trunc",
    )
    .unwrap();
    let coordinator = coordinator(dir.path(), 30);
    let addr = coordinator.listening_addr();
    assert_eq!(nodes(addr).await.unwrap().len(), 0);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("agents.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let log = coordinator.output();
    assert!(
        log.contains("corrupt") && log.contains(&aside[0]),
        "log does not say where the file went:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_brings_up_a_working_fleet_and_stops_cleanly() {
    let mut command = Command::new(binary("llm-router"));
    command.args(["--demo", "2", "--host", "127.0.0.1", "--port", "0"]);
    let mut demo = Proc::spawn("llm-router --demo", command);
    let addr = demo.listening_addr();
    let online = eventually("two demo nodes online", Duration::from_secs(30), || async {
        nodes(addr)
            .await
            .filter(|n| n.len() == 2 && n.iter().all(|n| n["status"] == "online"))
    })
    .await;
    assert!(online.iter().any(|n| n["machine_name"] == "demo-gpu-1"));
    let answer: Value = reqwest::Client::new()
        .post(format!("http://{addr}/api/chat"))
        .body(
            r#"{"model":"llama3.2","messages":[{"role":"user","content":"Hello"}],"stream":false}"#,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["done"], true, "{answer}");
    assert!(
        demo.output().contains("curl"),
        "no banner:\n{}",
        demo.output()
    );

    demo.signal("TERM");
    assert_eq!(
        demo.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        demo.output()
    );
    assert!(
        demo.output().contains("agent shut down"),
        "agents did not say goodbye:\n{}",
        demo.output()
    );
}

/// The coordinator bound to every interface, with an admin token for the test's own reads.
fn coordinator_on_all_interfaces(data_dir: &Path) -> Proc {
    let mut command = Command::new(binary("llm-router"));
    command
        .args(["--host", "0.0.0.0", "--port", "0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("LLM_ROUTER_ADMIN_TOKEN", "test-admin-token")
        .env("HEALTH_CHECK_INTERVAL", "1");
    Proc::spawn("coordinator on 0.0.0.0", command)
}

/// The node token and port from the agent command line the coordinator prints.
fn printed_agent_command(coordinator: &Proc) -> (String, u16) {
    coordinator.wait_for_line("the agent command line", Duration::from_secs(30), |line| {
        let token = line
            .split("LLM_ROUTER_NODE_TOKEN=")
            .nth(1)?
            .split(' ')
            .next()?;
        let url = line.split("--coordinator-url ").nth(1)?.trim();
        let port = url.rsplit(':').next()?.parse().ok()?;
        Some((token.to_owned(), port))
    })
}

async fn nodes_as_admin(port: u16) -> Option<Vec<Value>> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/agents"))
        .bearer_auth("test-admin-token")
        .send()
        .await
        .ok()?;
    response.json::<Vec<Value>>().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_on_all_interfaces_requires_the_node_token_it_made_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = coordinator_on_all_interfaces(dir.path());
    let (token, port) = printed_agent_command(&first);
    let stored = std::fs::read_to_string(dir.path().join("node-token")).unwrap();
    assert_eq!(stored.trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("node-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let front = Front::start().await;
    front.route_to(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    let (_ollama, ollama_addr) = mock_node("llama3.2");

    // Without the token: refused, nothing added, and the agent stops saying why.
    let mut refused = agent(&front.url(), ollama_addr, "tokenless");
    assert_eq!(refused.wait_exit(Duration::from_secs(20)), Some(1));
    assert!(
        refused.output().contains("LLM_ROUTER_NODE_TOKEN"),
        "{}",
        refused.output()
    );
    assert_eq!(nodes_as_admin(port).await.unwrap(), Vec::<Value>::new());
    let anonymous = reqwest::get(format!("http://127.0.0.1:{port}/api/agents"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the node list needs a login");

    // With it, the node joins.
    let mut command = Command::new(binary("llm-router-agent"));
    command
        .env("COORDINATOR_URL", front.url())
        .env("OLLAMA_API_BASE", format!("http://{ollama_addr}"))
        .env("OLLAMA_AGENT_MACHINE_NAME", "trusted")
        .env("AGENT_HEARTBEAT_INTERVAL_SECS", "1")
        .env("COORDINATOR_REGISTER_RETRY_SECS", "1")
        .env("LLM_ROUTER_NODE_TOKEN", &token)
        .env("LLM_ROUTER_DATA_DIR", dir.path().join("agent"));
    let _trusted = Proc::spawn("agent trusted", command);
    let joined = eventually("the node online", Duration::from_secs(20), || async {
        nodes_as_admin(port)
            .await?
            .into_iter()
            .find(|n| n["machine_name"] == "trusted" && n["status"] == "online")
    })
    .await;

    // A restarted coordinator keeps the token and the node's credential: heartbeats go on.
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(20)), Some(0));
    let second = coordinator_on_all_interfaces(dir.path());
    let (again, port) = printed_agent_command(&second);
    assert_eq!(again, token);
    front.route_to(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    let seen_before = joined["last_seen"].as_str().unwrap().to_owned();
    eventually(
        "a heartbeat to the restarted coordinator",
        Duration::from_secs(20),
        || async {
            nodes_as_admin(port).await?.into_iter().find(|n| {
                n["id"] == joined["id"]
                    && n["status"] == "online"
                    && n["last_seen"]
                        .as_str()
                        .is_some_and(|t| t > seen_before.as_str())
            })
        },
    )
    .await;
    assert_eq!(nodes_as_admin(port).await.unwrap().len(), 1);
}
