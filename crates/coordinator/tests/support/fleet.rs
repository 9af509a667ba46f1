//! A coordinator served on a real socket in this process, with mock nodes
//! registered through the HTTP API.

use std::net::SocketAddr;
use std::time::Duration;

use llm_router_coordinator::config::Config;
use llm_router_mock_node::{MockConfig, MockNode};
use tokio_util::sync::CancellationToken;

pub struct Fleet {
    pub addr: SocketAddr,
    /// The credential issued to each node registered through [`Fleet::add_node`], by id.
    pub credentials: std::collections::HashMap<String, String>,
    pub client: reqwest::Client,
    pub nodes: Vec<MockNode>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data_dir: tempfile::TempDir,
}

impl Fleet {
    /// A coordinator with `adjust` applied to the test configuration, and no nodes.
    pub async fn empty_with(adjust: impl FnOnce(&mut Config)) -> Fleet {
        Self::empty_in(tempfile::tempdir().unwrap(), adjust).await
    }

    /// A coordinator with one registered mock node per config.
    pub async fn start(nodes: Vec<MockConfig>) -> Fleet {
        Self::start_with(nodes, |_| {}).await
    }

    pub async fn start_with(nodes: Vec<MockConfig>, adjust: impl FnOnce(&mut Config)) -> Fleet {
        let mut fleet = Self::empty_with(adjust).await;
        for config in nodes {
            fleet.add_node(config).await;
        }
        fleet
    }

    /// Starts a mock node and registers it; returns its node id.
    pub async fn add_node(&mut self, config: MockConfig) -> String {
        let node = MockNode::start(config).await.unwrap();
        let models: Vec<_> = node
            .models()
            .held()
            .iter()
            .map(|m| serde_json::json!({ "name": m.name }))
            .collect();
        let answer: serde_json::Value = self
            .client
            .post(self.url("/api/agents/register"))
            .json(&serde_json::json!({
                "machine_name": node.name(),
                "ip_address": "127.0.0.1",
                "ollama_port": node.addr().port(),
                "ollama_version": "0.12.0",
                "models": models,
                "loaded_models": node
                    .models()
                    .loaded_names()
                    .iter()
                    .map(|m| serde_json::json!({ "name": m }))
                    .collect::<Vec<_>>(),
            }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        self.nodes.push(node);
        let id = answer["node_id"].as_str().unwrap().to_owned();
        if let Some(credential) = answer["node_credential"].as_str() {
            self.credentials.insert(id.clone(), credential.to_owned());
        }
        id
    }

    /// Sends a heartbeat for node `id` with this CPU load and these loaded models.
    pub async fn heartbeat(&self, id: &str, cpu_percent: f32, loaded: &[&str]) {
        let loaded: Vec<_> = loaded
            .iter()
            .map(|m| serde_json::json!({ "name": m }))
            .collect();
        let response = self
            .client
            .post(self.url(&format!("/api/agents/{id}/heartbeat")))
            .bearer_auth(self.credentials.get(id).map_or("", String::as_str))
            .json(&serde_json::json!({
                "metrics": {"cpu_percent": cpu_percent, "memory_percent": 30.0},
                "loaded_models": loaded,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn node(&self, name: &str) -> &MockNode {
        self.nodes.iter().find(|n| n.name() == name).unwrap()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `llm-router-agent --backend openai` in front of the server at `api_base`,
    /// registering with this coordinator as `name`, its files in `data`.
    pub fn openai_agent(
        &self,
        api_base: &str,
        name: &str,
        data: &std::path::Path,
    ) -> super::process::Proc {
        let mut command = std::process::Command::new(super::process::binary("llm-router-agent"));
        command
            .args(["--backend", "openai", "--api-base", api_base])
            .args(["--coordinator-url", &self.url(""), "--machine-name", name])
            .env("LLM_ROUTER_DATA_DIR", data)
            .env_remove("OLLAMA_API_BASE")
            .env_remove("LLM_ROUTER_BACKEND");
        super::process::Proc::spawn(&format!("agent of {name}"), command)
    }

    /// The node that served a response, from the router's header.
    pub fn served_by(response: &reqwest::Response) -> String {
        response.headers()["x-llm-router-node"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The coordinator's view of every node.
    pub async fn agents(&self) -> Vec<serde_json::Value> {
        self.get_json("/api/agents").await
    }

    /// Node `id` as `GET /api/agents` shows it, if it is there.
    pub async fn agent(&self, id: &str) -> Option<serde_json::Value> {
        self.agents().await.into_iter().find(|n| n["id"] == id)
    }

    /// Node `id` once `GET /api/agents` shows it with `status` (panics
    /// after 10 s).
    pub async fn wait_for_status(&self, id: &str, status: &str) -> serde_json::Value {
        super::process::eventually(
            &format!("node {id} {status}"),
            Duration::from_secs(10),
            || async { self.agent(id).await.filter(|n| n["status"] == status) },
        )
        .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// The body of `GET path`, parsed as JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.get(path).await.json().await.unwrap()
    }

    /// The body of `GET path` as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    /// The status of `GET path` and its body, which must be JSON.
    pub async fn get_status_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text}"));
        (status, json)
    }

    /// Posts `body` as JSON; returns the status and the answer parsed as JSON.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }

    /// A coordinator on `data_dir` (which may hold files from an earlier
    /// run, or files a test prepared), with `adjust` applied and no nodes.
    pub async fn empty_in(data_dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> Fleet {
        let mut config = super::config(data_dir.path());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(llm_router_coordinator::run(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));
        Fleet {
            addr,
            credentials: Default::default(),
            client: reqwest::Client::new(),
            nodes: Vec::new(),
            stop,
            server,
            _data_dir: data_dir,
        }
    }

    /// Stops the coordinator and starts a new one on the same data folder
    /// (with `adjust` applied); the mock nodes keep running and stay in the
    /// fleet, known to the new coordinator through its registry file.
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> Fleet {
        self.stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the coordinator did not stop within 10 s");
        ended.unwrap().unwrap();
        let mut fleet = Self::empty_in(self._data_dir, adjust).await;
        fleet.nodes = self.nodes;
        fleet.credentials = self.credentials;
        fleet
    }

    /// The coordinator's data folder.
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }
}
