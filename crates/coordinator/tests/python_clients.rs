//! Acceptance test with the official Python clients: `ollama` and `openai`
//! (pinned in `tests/python/requirements.txt`) drive the coordinator in front
//! of three mock nodes through `tests/python/clients_test.py`, streamed and
//! not, and must get intact, well-formed answers: once on an open coordinator,
//! once on one that requires client API keys (a key made through
//! `POST /api/keys`, refused without it, named in the history, refused at once
//! when revoked, and never passed on to the nodes). `tests/python/pull_test.py`
//! pulls a model onto the three nodes with `ollama`'s streamed `pull`.
//!
//! The packages must be installed beforehand (`.ci/run` does it):
//! `python3 -m pip install -r tests/python/requirements.txt`. The interpreter
//! is `$LLM_ROUTER_TEST_PYTHON` when set, else `python3`. A missing
//! interpreter or package fails the test; it is never skipped.

mod support;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use llm_router_coordinator::config::Config;
use llm_router_mock_node::{Endpoint, MockConfig, MockNode};
use serde_json::{Value, json};
use support::python::{python, python_command, require_modules};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long the whole script may take (it needs about two seconds).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);
const SCRIPT: &str = "tests/python/clients_test.py";
const PULL_SCRIPT: &str = "tests/python/pull_test.py";
const INSTALL_HINT: &str = "run `python3 -m pip install -r tests/python/requirements.txt` \
     from the workspace root (or point LLM_ROUTER_TEST_PYTHON at a python that has them)";
const CHAT_MODEL: &str = "llama3.2";
const EMBED_MODEL: &str = "nomic-embed-text";
const KEY_NAME: &str = "alice";

/// Fails, with the command to install them, when the client packages are missing.
async fn require_client_packages(python: &OsString) {
    require_modules(python, "httpx, ollama, openai", INSTALL_HINT).await;
}

/// A mock node that keeps both models in memory, with short vectors and
/// paced tokens so that streams arrive in several pieces. It remembers every
/// request the script leads to (about forty in all), headers included.
fn node(name: &str, models: &[&str]) -> MockConfig {
    let held = MockConfig::named(name).with_models(models.iter().copied());
    MockConfig {
        loaded_models: held.models.clone(),
        max_loaded_models: 2,
        embedding_dim: 64,
        tokens_per_sec: 500.0,
        record_capacity: 1024,
        ..held
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Registers `node` the way its agent would: the models of its `/api/tags`
/// and the loaded ones of its `/api/ps`.
async fn register(client: &reqwest::Client, coordinator: SocketAddr, node: &MockNode) -> String {
    let tags: Value = get_json(client, &format!("{}/api/tags", node.url())).await;
    let ps: Value = get_json(client, &format!("{}/api/ps", node.url())).await;
    let models: Vec<Value> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            json!({
                "name": m["name"],
                "size": m["size"],
                "digest": m["digest"],
                "modified_at": m["modified_at"],
                "details": m["details"],
            })
        })
        .collect();
    let loaded: Vec<Value> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            json!({
                "name": m["name"],
                "size": m["size"],
                "size_vram": m["size_vram"],
                "expires_at": m["expires_at"],
            })
        })
        .collect();
    let response = client
        .post(format!("http://{coordinator}/api/agents/register"))
        .json(&json!({
            "machine_name": node.name(),
            "ip_address": "127.0.0.1",
            "ollama_port": node.addr().port(),
            "ollama_version": "0.12.0",
            "models": models,
            "loaded_models": loaded,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(
        status.as_u16(),
        201,
        "registering {} answered {status}: {body}",
        node.name()
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    body["node_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no node_id in {body}"))
        .to_owned()
}

fn requests(node: &MockNode, endpoints: &[Endpoint]) -> u64 {
    endpoints.iter().map(|e| node.stats().requests(*e)).sum()
}

/// The coordinator in front of three mock nodes: node-a holds both models,
/// node-b only the chat model, node-c only the embedding model, so each
/// request must reach a node that has its model.
struct ThreeNodeFleet {
    addr: SocketAddr,
    client: reqwest::Client,
    nodes: Vec<MockNode>,
    stop: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl ThreeNodeFleet {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let mut nodes = Vec::new();
        for (name, models) in [
            ("node-a", &[CHAT_MODEL, EMBED_MODEL][..]),
            ("node-b", &[CHAT_MODEL][..]),
            ("node-c", &[EMBED_MODEL][..]),
        ] {
            nodes.push(MockNode::start(node(name, models)).await.unwrap());
        }

        let data_dir = tempfile::tempdir().unwrap();
        let mut config = support::config(data_dir.path());
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(llm_router_coordinator::run(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));

        let client = reqwest::Client::new();
        for node in &nodes {
            register(&client, addr, node).await;
        }
        Self {
            addr,
            client,
            nodes,
            stop,
            server,
            _data_dir: data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs the script against the coordinator with `extra` arguments; fails
    /// the test unless every check passed.
    async fn run_script(&self, python: &OsString, extra: &[&str]) {
        let mut args = vec![CHAT_MODEL, "--embed-model", EMBED_MODEL, "--mock"];
        args.extend_from_slice(extra);
        self.run(python, SCRIPT, &args).await;
    }

    /// Runs `script` with the coordinator's URL and `args`; fails the test unless it exits 0.
    async fn run(&self, python: &OsString, script: &str, args: &[&str]) {
        let run = python_command(python)
            .arg(script)
            .arg(format!("http://{}", self.addr))
            .args(args)
            .output();
        let output = tokio::time::timeout(SCRIPT_DEADLINE, run)
            .await
            .unwrap_or_else(|_| panic!("{script} did not finish within {SCRIPT_DEADLINE:?}"))
            .unwrap_or_else(|e| {
                panic!("could not run {:?} {script}: {e}", python.to_string_lossy())
            });
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(3) {
            panic!("{script} is missing Python packages: {INSTALL_HINT}\n{stderr}");
        }
        assert!(
            output.status.success(),
            "{script} against the router failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
            output.status
        );
        println!("{stdout}");
    }

    /// The answers came through the router from nodes that have the model.
    fn assert_each_model_reached_only_its_nodes(&self) {
        let generation = [
            Endpoint::Chat,
            Endpoint::Generate,
            Endpoint::OpenAiChat,
            Endpoint::OpenAiCompletions,
        ];
        let embedding = [
            Endpoint::Embed,
            Endpoint::Embeddings,
            Endpoint::OpenAiEmbeddings,
        ];
        let (a, b, c) = (&self.nodes[0], &self.nodes[1], &self.nodes[2]);
        assert!(
            requests(a, &generation) + requests(b, &generation) > 0,
            "no generation reached node-a or node-b"
        );
        assert!(
            requests(a, &embedding) + requests(c, &embedding) > 0,
            "no embedding request reached node-a or node-c"
        );
        assert_eq!(
            requests(b, &embedding),
            0,
            "node-b, without {EMBED_MODEL}, got embedding requests"
        );
        assert_eq!(
            requests(c, &generation),
            0,
            "node-c, without {CHAT_MODEL}, got generation requests"
        );
    }

    /// Waits until nothing is left running upstream, then stops everything.
    async fn stop(self) {
        support::process::eventually_showing(
            "no request left in flight on the nodes",
            Duration::from_secs(10),
            || {
                let in_flight: Vec<_> = self
                    .nodes
                    .iter()
                    .map(|n| (n.name().to_owned(), n.stats().in_flight()))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                std::future::ready(if in_flight.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{in_flight:?}"))
                })
            },
        )
        .await;

        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the coordinator did not stop within 10 s")
            .unwrap()
            .unwrap();
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// Creates the client API key `name` through the management API; returns the key.
async fn create_key(fleet: &ThreeNodeFleet, name: &str) -> String {
    let response = fleet
        .client
        .post(fleet.url("/api/keys"))
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(
        status.as_u16(),
        201,
        "POST /api/keys answered {status}: {body}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["name"], name, "{body}");
    body["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_clients_work_through_the_router() {
    let python = python();
    require_client_packages(&python).await;

    let fleet = ThreeNodeFleet::start(|_| {}).await;
    fleet.run_script(&python, &[]).await;
    fleet.assert_each_model_reached_only_its_nodes();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_ollama_client_pulls_onto_every_node_through_the_router() {
    const PULLED: &str = "qwen2.5:0.5b";
    const PARTLY: &str = "smollm2:135m";
    let python = python();
    require_client_packages(&python).await;

    let fleet = ThreeNodeFleet::start(|_| {}).await;
    // A pull that takes about half a second, so progress comes in many lines.
    for node in &fleet.nodes {
        node.control().set_pull_size_bytes(Some(40_000_000));
        node.control().set_pull_bytes_per_sec(80_000_000.0);
    }
    fleet.run(&python, PULL_SCRIPT, &[PULLED]).await;
    for node in &fleet.nodes {
        assert!(
            node.models().find(PULLED).is_some(),
            "{} lacks {PULLED}",
            node.name()
        );
    }

    fleet.nodes[1]
        .control()
        .set_pull_fail_after_bytes(Some(10_000_000));
    fleet
        .run(&python, PULL_SCRIPT, &[PARTLY, "--fail-node", "node-b"])
        .await;
    let holders: Vec<&str> = fleet
        .nodes
        .iter()
        .filter(|n| n.models().find(PARTLY).is_some())
        .map(|n| n.name())
        .collect();
    assert_eq!(
        holders,
        ["node-a", "node-c"],
        "the others finished their pull"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_required_keys_the_python_clients_work_with_a_key_only_and_nodes_never_see_it() {
    let python = python();
    require_client_packages(&python).await;

    let fleet = ThreeNodeFleet::start(|config| config.access.require_api_key = true).await;
    let key = create_key(&fleet, KEY_NAME).await;
    // Every check of the script with the key, the refusals without it, the
    // history, and last the revocation.
    fleet
        .run_script(&python, &["--api-key", &key, "--key-name", KEY_NAME])
        .await;
    fleet.assert_each_model_reached_only_its_nodes();

    // The nodes got none of it: the mock nodes registered without a key of
    // their own, so no request to them may carry Authorization at all. A mock
    // node records the POSTs it gets, headers included; its only GETs are the
    // two of `register`, so every request the coordinator sent is recorded.
    for node in &fleet.nodes {
        let recorded = node.stats().recorded();
        assert_eq!(
            (
                requests(node, &[Endpoint::Tags, Endpoint::Ps]),
                node.stats().total_requests()
            ),
            (2, recorded.len() as u64 + 2),
            "{} got requests it did not record: {:?}",
            node.name(),
            node.stats().snapshot().requests
        );
        for request in &recorded {
            assert!(
                !request.headers.contains_key("authorization"),
                "{} got {} {} with Authorization: {:?}",
                node.name(),
                request.method,
                request.uri,
                request.headers.get("authorization")
            );
            let leaked = request
                .headers
                .iter()
                .find(|(_, value)| value.to_str().is_ok_and(|v| v.contains(&key)));
            assert!(
                leaked.is_none(),
                "{} got the client's key in {:?} of {} {}",
                node.name(),
                leaked.map(|(name, _)| name),
                request.method,
                request.uri
            );
        }
    }
    // What was recorded is the clients' traffic, other headers passed on: the
    // missing Authorization is the proxy's doing, not the recording's.
    let agents: Vec<String> = fleet
        .nodes
        .iter()
        .flat_map(|n| n.stats().recorded())
        .filter_map(|r| {
            let agent = r.headers.get("user-agent")?;
            Some(agent.to_str().ok()?.to_owned())
        })
        .collect();
    for client in ["ollama-python/", "OpenAI/Python"] {
        assert!(
            agents.iter().any(|a| a.starts_with(client)),
            "no request from {client} reached a node; user agents seen: {agents:?}"
        );
    }

    // Every request the history holds came with the key (those without one
    // were refused before they became requests to route) and names it.
    let history = get_json(&fleet.client, &fleet.url("/api/history?limit=500")).await;
    let items = history["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {history}"));
    assert!(!items.is_empty(), "the history is empty: {history}");
    for item in items {
        assert_eq!(
            item["api_key"], KEY_NAME,
            "a request in the history does not name the key: {item}"
        );
    }

    fleet.stop().await;
}
