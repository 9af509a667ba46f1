//! Test doubles: a fake coordinator and a fake Ollama (tiny axum servers on 127.0.0.1:0),
//! and a helper that runs the agent against them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use llm_router_agent::{AgentConfig, AgentError};
use llm_router_common::{
    ErrorBody, HeartbeatRequest, NodeId, RegisterRequest, RegisterResponse, RegistrationStatus,
};
use reqwest::Url;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(10);

async fn serve(router: Router) -> (Url, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (Url::parse(&format!("http://{addr}")).unwrap(), server)
}

/// What the fake coordinator saw, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub registrations: Vec<RegisterRequest>,
    /// Each heartbeat with the status it was answered with.
    pub heartbeats: Vec<(NodeId, HeartbeatRequest, StatusCode)>,
    pub shutdowns: Vec<NodeId>,
    /// The `Authorization` header of every call: ("register" | "heartbeat" | "shutdown", value).
    pub authorizations: Vec<(&'static str, Option<String>)>,
}

/// The credential the fake coordinator issues to a new node.
pub const ISSUED_CREDENTIAL: &str = "llmr_nc_issued-by-the-fake";

fn authorization(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

impl Seen {
    pub fn accepted_heartbeats(&self) -> usize {
        self.heartbeats
            .iter()
            .filter(|(_, _, status)| status.is_success())
            .count()
    }
}

struct CoordinatorState {
    node_id: NodeId,
    /// Answers for the next registrations (status, error message); once empty, success.
    register_failures: Mutex<VecDeque<(StatusCode, &'static str)>>,
    /// Answers for the next heartbeats; once empty, 204.
    heartbeat_answers: Mutex<VecDeque<StatusCode>>,
    seen: watch::Sender<Seen>,
    /// While true, registrations are recorded but not answered.
    hold_registrations: watch::Sender<bool>,
}

/// A coordinator that answers from a script and records every call.
pub struct FakeCoordinator {
    pub url: Url,
    pub node_id: NodeId,
    state: Arc<CoordinatorState>,
    server: JoinHandle<()>,
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeCoordinator {
    /// Fails the first registrations with `register_failures`, and answers the first
    /// heartbeats with `heartbeat_answers`; everything after that succeeds.
    pub async fn start(
        register_failures: Vec<(u16, &'static str)>,
        heartbeat_answers: Vec<u16>,
    ) -> Self {
        let state = Arc::new(CoordinatorState {
            node_id: uuid::Uuid::new_v4(),
            register_failures: Mutex::new(
                register_failures
                    .into_iter()
                    .map(|(status, message)| (StatusCode::from_u16(status).unwrap(), message))
                    .collect(),
            ),
            heartbeat_answers: Mutex::new(
                heartbeat_answers
                    .into_iter()
                    .map(|status| StatusCode::from_u16(status).unwrap())
                    .collect(),
            ),
            seen: watch::Sender::new(Seen::default()),
            hold_registrations: watch::Sender::new(false),
        });
        let router = Router::new()
            .route("/api/agents/register", post(register))
            .route("/api/agents/{id}/heartbeat", post(heartbeat))
            .route("/api/agents/{id}/shutdown", post(shutdown))
            .with_state(Arc::clone(&state));
        let (url, server) = serve(router).await;
        Self {
            url,
            node_id: state.node_id,
            state,
            server,
        }
    }

    pub fn seen(&self) -> Seen {
        self.state.seen.borrow().clone()
    }

    /// Registrations are recorded but left unanswered while `hold` is true.
    pub fn hold_registrations(&self, hold: bool) {
        self.state.hold_registrations.send_replace(hold);
    }

    /// Waits until what the coordinator saw satisfies `condition`, or panics at [`DEADLINE`].
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Seen) -> bool) -> Seen {
        let mut seen = self.state.seen.subscribe();
        let result = tokio::time::timeout(DEADLINE, seen.wait_for(|seen| condition(seen))).await;
        match result {
            Ok(Ok(seen)) => seen.clone(),
            _ => panic!("timed out waiting for {what}; seen: {:#?}", self.seen()),
        }
    }
}

async fn register(
    State(state): State<Arc<CoordinatorState>>,
    headers: axum::http::HeaderMap,
    Json(request): Json<RegisterRequest>,
) -> Response {
    let known = request.node_id == Some(state.node_id);
    state.seen.send_modify(|seen| {
        seen.registrations.push(request);
        seen.authorizations
            .push(("register", authorization(&headers)));
    });
    let _ = state
        .hold_registrations
        .subscribe()
        .wait_for(|hold| !*hold)
        .await;
    let failure = state.register_failures.lock().unwrap().pop_front();
    if let Some((status, message)) = failure {
        return (status, Json(ErrorBody::new(message))).into_response();
    }
    let response = RegisterResponse {
        node_id: state.node_id,
        status: if known {
            RegistrationStatus::Updated
        } else {
            RegistrationStatus::Registered
        },
        // 0: no preference, so the agent's own (test-sized) interval applies.
        heartbeat_interval_secs: 0,
        node_credential: (!known).then(|| ISSUED_CREDENTIAL.to_owned()),
    };
    (StatusCode::OK, Json(response)).into_response()
}

async fn heartbeat(
    State(state): State<Arc<CoordinatorState>>,
    Path(id): Path<NodeId>,
    headers: axum::http::HeaderMap,
    Json(request): Json<HeartbeatRequest>,
) -> Response {
    state.seen.send_modify(|seen| {
        seen.authorizations
            .push(("heartbeat", authorization(&headers)))
    });
    let status = state
        .heartbeat_answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(StatusCode::NO_CONTENT);
    state
        .seen
        .send_modify(|seen| seen.heartbeats.push((id, request, status)));
    if status.is_success() {
        status.into_response()
    } else {
        (status, Json(ErrorBody::new(format!("scripted {status}")))).into_response()
    }
}

async fn shutdown(
    State(state): State<Arc<CoordinatorState>>,
    Path(id): Path<NodeId>,
    headers: axum::http::HeaderMap,
) -> StatusCode {
    state.seen.send_modify(|seen| {
        seen.shutdowns.push(id);
        seen.authorizations
            .push(("shutdown", authorization(&headers)));
    });
    StatusCode::NO_CONTENT
}

/// An Ollama that knows two models and has one loaded.
pub struct FakeOllama {
    pub url: Url,
    server: JoinHandle<()>,
}

impl Drop for FakeOllama {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOllama {
    pub const VERSION: &str = "0.5.7";

    pub async fn start() -> Self {
        let router = Router::new()
            .route("/api/version", get(|| async { Json(json!({"version": FakeOllama::VERSION})) }))
            .route(
                "/api/tags",
                get(|| async {
                    Json(json!({"models": [
                        {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189u64,
                         "digest": "a80c4f17acd5", "modified_at": "2025-01-01T00:00:00Z",
                         "details": {"family": "llama"}, "a_field_from_the_future": true},
                        {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 4683087332u64}
                    ]}))
                }),
            )
            .route(
                "/api/ps",
                get(|| async {
                    Json(json!({"models": [
                        {"name": "llama3.2:latest", "size": 3000000000u64, "size_vram": 3000000000u64,
                         "expires_at": "2030-01-01T00:00:00Z"}
                    ]}))
                }),
            );
        let (url, server) = serve(router).await;
        Self { url, server }
    }
}

/// A loopback URL where nothing listens, and the socket that keeps it so: bound but
/// never listening, it refuses connections and no other test can take its port.
pub fn closed_port_url() -> (Url, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = socket.local_addr().unwrap();
    (Url::parse(&format!("http://{addr}")).unwrap(), socket)
}

/// Test-sized settings: retries after 10 ms, heartbeats every 50 ms.
pub fn test_config(coordinator: &Url, ollama: &Url) -> AgentConfig {
    let mut config = AgentConfig::new(coordinator.clone(), ollama.clone(), "test-box");
    config.register_retry = Duration::from_millis(10);
    config.heartbeat_interval = Duration::from_millis(50);
    config
}

/// The agent running in a task, with the trigger of its shutdown future.
pub struct RunningAgent {
    pub task: JoinHandle<Result<(), AgentError>>,
    stop: Option<oneshot::Sender<()>>,
}

impl RunningAgent {
    pub fn spawn(config: AgentConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        Self {
            task: tokio::spawn(llm_router_agent::run(config, shutdown)),
            stop: Some(stop),
        }
    }

    /// Fires the shutdown future and waits for `run` to return.
    pub async fn shut_down(mut self) -> Result<(), AgentError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        finish(&mut self.task).await
    }

    /// Waits for `run` to return on its own.
    pub async fn finished(mut self) -> Result<(), AgentError> {
        finish(&mut self.task).await
    }
}

async fn finish(task: &mut JoinHandle<Result<(), AgentError>>) -> Result<(), AgentError> {
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the agent did not stop in time")
        .expect("the agent task panicked")
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
