//! Models across the fleet: pull, create, copy and delete a model on many nodes
//! at once, from the Ollama API (`/api/pull`…), the management API
//! (`/api/models/pull`, `/api/tasks`), the dashboard and the CLI.
//!
//! Each operation is a [`Task`] with one part per node ([`targets`] picks them),
//! run concurrently ([`node`]); a node that fails, goes offline or stalls fails
//! its part and the others go on. Progress is kept per node and layer and read by
//! followers when they wake ([`progress`] turns it into Ollama's own lines):
//! the work per node is one parsed line per line the node sends, never per byte.
//! Finished tasks stay listed for [`KEEP_FINISHED`].

pub mod node;
pub mod progress;
pub mod targets;
pub mod task;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use llm_router_common::{MAX_NAME_LEN, canonical_model_name};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::proxy::UpstreamClient;
use crate::registry::NodeRegistry;
use node::{NodeCall, PartRun};
pub use targets::{BadNodeName, NodeChoice, PullTargets};
pub use task::{PartState, Task, TaskKind, TaskState, TaskView};

/// How long a finished task stays in `GET /api/tasks`.
pub const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// The most tasks kept; the oldest finished ones go first.
pub const MAX_TASKS: usize = 500;

/// What to do, and to which model.
#[derive(Debug, Clone)]
pub enum Operation {
    Pull {
        model: String,
        insecure: bool,
    },
    /// Ollama's `/api/create`, with the client's request as it came.
    Create {
        model: String,
        request: Bytes,
    },
    Copy {
        source: String,
        destination: String,
    },
    Delete {
        model: String,
    },
}

impl Operation {
    fn kind(&self) -> TaskKind {
        match self {
            Operation::Pull { .. } => TaskKind::Pull,
            Operation::Create { .. } => TaskKind::Create,
            Operation::Copy { .. } => TaskKind::Copy,
            Operation::Delete { .. } => TaskKind::Delete,
        }
    }

    fn model(&self) -> &str {
        match self {
            Operation::Pull { model, .. }
            | Operation::Create { model, .. }
            | Operation::Delete { model } => model,
            Operation::Copy { source, .. } => source,
        }
    }

    fn call(&self) -> NodeCall {
        match self {
            Operation::Pull { model, insecure } => NodeCall::Stream {
                path: "/api/pull",
                body: json_body(&json!({ "model": model, "stream": true, "insecure": insecure })),
            },
            Operation::Create { request, .. } => NodeCall::Stream {
                path: "/api/create",
                body: request.clone(),
            },
            Operation::Copy {
                source,
                destination,
            } => NodeCall::Once {
                method: Method::POST,
                path: "/api/copy",
                body: json_body(&json!({ "source": source, "destination": destination })),
            },
            Operation::Delete { model } => NodeCall::Once {
                method: Method::DELETE,
                path: "/api/delete",
                body: json_body(&json!({ "model": model })),
            },
        }
    }
}

fn json_body(value: &serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// Why a task could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    BadNodeName(#[from] BadNodeName),
    /// No node holds the model (copy, delete).
    #[error("model {0:?} is not on any node")]
    NotHeld(String),
    /// Every possible node was skipped; the text lists them and why.
    #[error("no node can take it: {0}")]
    NoTargets(String),
    #[error("{MAX_TASKS} tasks are running already; wait for some to end or cancel them")]
    Busy,
}

/// The tasks of this coordinator.
#[derive(Debug)]
pub struct Distributor {
    registry: Arc<NodeRegistry>,
    client: UpstreamClient,
    policy: PullTargets,
    tasks: Mutex<VecDeque<Arc<Task>>>,
    changes: Arc<watch::Sender<u64>>,
}

impl Distributor {
    pub fn new(registry: Arc<NodeRegistry>, client: UpstreamClient, policy: PullTargets) -> Self {
        Self {
            registry,
            client,
            policy,
            tasks: Mutex::new(VecDeque::new()),
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Starts `operation` on the nodes `choice` names; the task runs on its own.
    pub fn start(
        self: &Arc<Self>,
        operation: Operation,
        choice: &NodeChoice,
    ) -> Result<Arc<Task>, StartError> {
        let model = operation.model().trim();
        check_name(model)?;
        if let Operation::Copy { destination, .. } = &operation {
            check_name(destination)?;
        }
        let nodes = self.registry.list();
        let plans = match &operation {
            Operation::Pull { .. } | Operation::Create { .. } => {
                targets::for_new_model(&nodes, model, choice, self.policy)?
            }
            Operation::Copy { .. } | Operation::Delete { .. } => {
                let plans = targets::holders(&nodes, model, choice)?;
                if plans.is_empty() {
                    return Err(StartError::NotHeld(model.to_owned()));
                }
                plans
            }
        };
        if plans.iter().all(|p| p.skipped.is_some()) {
            let why: Vec<String> = plans
                .iter()
                .map(|p| format!("{}: {}", p.name, p.skipped.as_deref().unwrap_or("")))
                .collect();
            return Err(StartError::NoTargets(if why.is_empty() {
                "the fleet has no Ollama node".into()
            } else {
                why.join("; ")
            }));
        }
        let destination = match &operation {
            Operation::Copy { destination, .. } => Some(destination.clone()),
            _ => None,
        };
        let task = Arc::new(Task::new(
            operation.kind(),
            model.to_owned(),
            destination,
            plans,
            Arc::clone(&self.changes),
        ));
        tracing::info!(
            task = %task.id,
            kind = task.kind.as_str(),
            model = %task.model,
            nodes = %task.parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
            "task started"
        );
        self.keep(Arc::clone(&task))?;
        tokio::spawn(Arc::clone(self).run(Arc::clone(&task), operation));
        Ok(task)
    }

    async fn run(self: Arc<Self>, task: Arc<Task>, operation: Operation) {
        let call = operation.call();
        let running =
            (0..task.parts.len()).filter(|&i| task.part_state(i) == Some(PartState::Running));
        let parts = running.map(|index| {
            let node_id = task.parts[index].node_id;
            let (task, call, operation, this) = (&task, &call, &operation, &self);
            async move {
                let Some(server) = this.registry.server_of(node_id) else {
                    task.end_part(
                        index,
                        PartState::Failed,
                        Some("the node was removed from the fleet".into()),
                    );
                    return;
                };
                let run = PartRun {
                    registry: &this.registry,
                    client: &this.client,
                    server: server.clone(),
                    call,
                    cancel: task.cancel_token(),
                };
                node::run_part(task, index, run).await;
                if task.part_state(index) != Some(PartState::Succeeded) {
                    return;
                }
                if let Operation::Delete { model } = operation {
                    // Routing stops sending the model there now, not at the next heartbeat.
                    let gone = canonical_model_name(model);
                    let _ = this.registry.update_models(server.id, None, Some(&gone));
                } else {
                    node::refresh_models(&this.registry, &this.client, &server).await;
                }
            }
        });
        futures::future::join_all(parts).await;
        task.mark_finished();
        let view = task.view();
        tracing::info!(task = %task.id, kind = task.kind.as_str(), model = %task.model, state = ?view.state, secs = view.elapsed_secs, "task ended");
    }

    fn keep(&self, task: Arc<Task>) -> Result<(), StartError> {
        let mut tasks = self.tasks.lock();
        prune(&mut tasks);
        if tasks.len() >= MAX_TASKS {
            return Err(StartError::Busy);
        }
        tasks.push_back(task);
        drop(tasks);
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<Task>> {
        self.tasks.lock().iter().find(|t| t.id == id).cloned()
    }

    /// Every task kept, newest first.
    pub fn list(&self) -> Vec<Arc<Task>> {
        let mut tasks = self.tasks.lock();
        prune(&mut tasks);
        tasks.iter().rev().cloned().collect()
    }

    /// A version number that grows with every change of any task.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Drops tasks finished more than [`KEEP_FINISHED`] ago, and the oldest finished
/// ones beyond [`MAX_TASKS`].
fn prune(tasks: &mut VecDeque<Arc<Task>>) {
    let now = tokio::time::Instant::now();
    tasks.retain(|t| {
        t.finished_at()
            .is_none_or(|at| now.duration_since(at) < KEEP_FINISHED)
    });
    while tasks.len() >= MAX_TASKS {
        match tasks.iter().position(|t| t.is_finished()) {
            Some(oldest) => {
                tasks.remove(oldest);
            }
            None => break,
        }
    }
}

fn check_name(name: &str) -> Result<(), StartError> {
    if name.is_empty() {
        return Err(StartError::BadRequest("model is required".into()));
    }
    if name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(StartError::BadRequest(format!(
            "{name:?} is not a model name (at most {MAX_NAME_LEN} bytes, no spaces)"
        )));
    }
    Ok(())
}
