//! Helpers shared by the coordinator's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use llm_router_coordinator::api::{AppState, app};
use llm_router_coordinator::config::Config;
use llm_router_coordinator::registry::NodeRegistry;
use llm_router_coordinator::registry::persist::run_writer;
use llm_router_coordinator::server::load_registry;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub fn config(data_dir: &Path) -> Config {
    Config {
        ..Config::with_data_dir(data_dir)
    }
}

/// A registry on `data_dir` with its writer running, stopped when the returned token is cancelled.
pub struct TestCoordinator {
    pub registry: Arc<NodeRegistry>,
    pub stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    /// Credentials the coordinator issued, by node id and by machine name, presented
    /// again as an agent would (see [`TestCoordinator::call`]).
    credentials: Mutex<HashMap<String, String>>,
}

impl TestCoordinator {
    pub fn start(data_dir: &Path) -> Self {
        let (registry, store) = load_registry(&config(data_dir)).unwrap();
        let stop = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            Arc::clone(&registry),
            store,
            stop.clone().cancelled_owned(),
        ));
        Self {
            registry,
            stop,
            writer,
            credentials: Mutex::default(),
        }
    }

    pub fn app(&self) -> axum::Router {
        app(AppState::new(Arc::clone(&self.registry), Default::default()).unwrap())
    }

    /// Sends one request through the router; returns the status and the body parsed as JSON
    /// (`Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let credential = agent_call_node(uri).and_then(|id| self.credential(id));
        let body = body.map(|b| self.with_known_credential(uri, b));
        self.call_as(method, uri, body.as_deref(), credential.as_deref())
            .await
    }

    /// The credential issued to node `id_or_name` (an id or a machine name).
    pub fn credential(&self, id_or_name: &str) -> Option<String> {
        self.credentials.lock().unwrap().get(id_or_name).cloned()
    }

    /// A registration presents the credential of the machine it names, as its agent would.
    fn with_known_credential(&self, uri: &str, body: &str) -> String {
        let Ok(mut json) = serde_json::from_str::<serde_json::Value>(body) else {
            return body.to_owned();
        };
        if uri != "/api/agents/register" || json.get("node_credential").is_some() {
            return body.to_owned();
        }
        let known = ["node_id", "machine_name"]
            .iter()
            .filter_map(|field| json[*field].as_str())
            .find_map(|key| self.credential(key));
        if let Some(credential) = known {
            json["node_credential"] = serde_json::json!(credential);
        }
        json.to_string()
    }

    /// Sends one request with `bearer` (if any) as its `Authorization`, and nothing else added.
    pub async fn call_as(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
        bearer: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut builder = Request::builder().method(method).uri(uri);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        } else {
            // What the dashboard sends with body-less changes (disconnect, delete).
            builder = builder.header("x-requested-with", "test");
        }
        if let Some(bearer) = bearer {
            builder = builder.header("authorization", format!("Bearer {bearer}"));
        }
        let request = builder
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = self.app().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{uri} answered non-JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        if let (Some(id), Some(credential)) =
            (json["node_id"].as_str(), json["node_credential"].as_str())
        {
            let mut known = self.credentials.lock().unwrap();
            known.insert(id.to_owned(), credential.to_owned());
            if let Some(name) = body
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .and_then(|b| b["machine_name"].as_str().map(str::to_owned))
            {
                known.insert(name, credential.to_owned());
            }
        }
        (status, json)
    }

    /// Registers a node through the API (see [`registration`]); returns the status and answer.
    pub async fn register(&self, name: &str, port: u16) -> (StatusCode, serde_json::Value) {
        self.call(
            Method::POST,
            "/api/agents/register",
            Some(&registration(name, port)),
        )
        .await
    }

    /// Registers a node through the API; returns its id.
    pub async fn register_id(&self, name: &str, port: u16) -> String {
        let (_, body) = self.register(name, port).await;
        body["node_id"].as_str().unwrap().to_owned()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.writer.await.unwrap();
    }
}

/// The node id of an agent's own call (`/api/agents/{id}/heartbeat` or `/shutdown`).
fn agent_call_node(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("/api/agents/")?;
    let (id, action) = rest.split_once('/')?;
    matches!(action, "heartbeat" | "shutdown").then_some(id)
}

pub fn registration(name: &str, port: u16) -> String {
    serde_json::json!({
        "machine_name": name,
        "ip_address": "127.0.0.1",
        "ollama_port": port,
        "ollama_version": "0.12.0",
        "system_info": {"os": "linux", "cpu_cores": 8, "total_memory_bytes": 17179869184u64},
        "models": [{"name": "llama3.2:latest", "size": 2019393189u64}]
    })
    .to_string()
}

/// A one-message chat request for `model`.
pub fn chat(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

pub mod fleet;
pub mod process;
pub mod python;

/// The registry on disk in `dir`, read as a starting coordinator reads it
/// (`agents.json` with its journal replayed), as JSON.
pub fn registry_on_disk(dir: &Path) -> serde_json::Value {
    use llm_router_coordinator::registry::store::{Loaded, RegistryStore};
    let nodes = match RegistryStore::in_dir(dir).load().unwrap() {
        Loaded::Missing => Vec::new(),
        Loaded::Nodes(nodes) => nodes,
        Loaded::Corrupt { reason, .. } => panic!("the registry on disk is corrupt: {reason}"),
    };
    serde_json::json!({ "nodes": nodes })
}
