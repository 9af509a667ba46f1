//! Helpers shared by the coordinator's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
        persist_delay: Duration::from_millis(50),
        ..Config::with_data_dir(data_dir)
    }
}

/// A registry on `data_dir` with its writer running, stopped when the returned token is cancelled.
pub struct TestCoordinator {
    pub registry: Arc<NodeRegistry>,
    pub stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
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
        let mut builder = Request::builder().method(method).uri(uri);
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
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
