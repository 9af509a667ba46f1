//! What the agent is doing, as the tray and the settings panel show it, and
//! the commands they can give the running agent.
//!
//! [`crate::lifecycle::run_controlled`] publishes an [`AgentStatus`] on a
//! `watch` channel as registration, heartbeats and Ollama checks succeed or
//! fail, and takes [`Command`]s from an `mpsc` channel.

use std::sync::Arc;

use llm_router_common::NodeId;
use tokio::sync::{mpsc, watch};

/// The agent's link with its coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not registered yet, no failure seen.
    Starting,
    /// Registered, and the last heartbeat was accepted.
    Connected,
    /// Registration or the last heartbeat failed; retrying.
    Retrying { reason: String },
}

/// Everything the desktop shows of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// The coordinator's base URL.
    pub coordinator: String,
    pub machine_name: String,
    pub node_id: Option<NodeId>,
    pub link: Link,
    /// Whether Ollama answered the last look; `None` before the first.
    pub ollama_up: Option<bool>,
    /// Whether the node is draining (paused from the tray).
    pub draining: bool,
    /// What the agent does about Ollama under `--manage-ollama`, when it
    /// does something (see [`crate::supervise::Supervision::describe`]).
    pub supervision: Option<String>,
}

impl AgentStatus {
    pub fn starting(coordinator: impl Into<String>, machine_name: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            machine_name: machine_name.into(),
            node_id: None,
            link: Link::Starting,
            ollama_up: None,
            draining: false,
            supervision: None,
        }
    }

    /// The coordinator's dashboard.
    pub fn dashboard_url(&self) -> String {
        format!("{}/dashboard", self.coordinator.trim_end_matches('/'))
    }
}

/// What the desktop can ask of the running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Drain the node (`true`: no new requests) or take requests again.
    Drain(bool),
}

/// The agent's side of the channels.
#[derive(Debug)]
pub struct Reporter {
    pub status: Arc<watch::Sender<AgentStatus>>,
    pub commands: mpsc::Receiver<Command>,
}

/// The desktop's side of the channels.
#[derive(Debug, Clone)]
pub struct Controls {
    pub status: watch::Receiver<AgentStatus>,
    pub commands: mpsc::Sender<Command>,
}

/// Channels between one agent and its desktop, starting from `initial`.
pub fn channels(initial: AgentStatus) -> (Reporter, Controls) {
    let (status, watched) = watch::channel(initial);
    let (commands_in, commands) = mpsc::channel(16);
    (
        Reporter {
            status: Arc::new(status),
            commands,
        },
        Controls {
            status: watched,
            commands: commands_in,
        },
    )
}
