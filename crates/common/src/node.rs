//! The coordinator's view of a node (`GET /api/agents`) and operator edits to it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{LoadedModel, ModelInfo, NodeId, NodeMetrics, SystemInfo};

/// Routing status of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Heartbeats arrive and the inference server answers: receives traffic.
    Online,
    /// No heartbeat within the timeout, shut down, disconnected, or inference server down.
    Offline,
    /// Alive, but an operator took it out of rotation: no new requests.
    Draining,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Draining => "draining",
        }
    }
}

/// What lasts about a node: who it is, where its inference server answers,
/// what it holds and what operators said of it. The coordinator keeps one per
/// node, stores it in `agents.json` and shows it in [`Node`]; the agent's
/// [`RegisterRequest`](crate::RegisterRequest) and heartbeats fill it in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub id: NodeId,
    pub machine_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub ip_address: IpAddr,
    /// Base URL the coordinator sends inference requests to.
    pub api_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Taken out of rotation by an operator: no new requests.
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub system_info: SystemInfo,
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    #[serde(default)]
    pub loaded_models: Vec<LoadedModel>,
    /// True for a node added by URL (`POST /api/nodes`): no agent reports for it,
    /// the coordinator probes its inference server itself.
    #[serde(default)]
    pub agentless: bool,
    /// Which API the node's inference server speaks.
    #[serde(default)]
    pub api_kind: ApiKind,
}

impl NodeFacts {
    /// A node known by its name and address only, first seen at `at`.
    pub fn new(
        id: NodeId,
        machine_name: String,
        ip_address: IpAddr,
        api_url: String,
        api_kind: ApiKind,
        at: DateTime<Utc>,
    ) -> Self {
        NodeFacts {
            id,
            machine_name,
            display_name: None,
            ip_address,
            api_url,
            ollama_version: None,
            agent_version: None,
            registered_at: at,
            last_seen: at,
            draining: false,
            tags: Vec::new(),
            notes: String::new(),
            system_info: SystemInfo::default(),
            models: Vec::new(),
            loaded_models: Vec::new(),
            agentless: false,
            api_kind,
        }
    }

    /// The name operators see: the display name they gave, else the machine's.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.machine_name)
    }
}

/// A node as `GET /api/agents` shows it: its [`NodeFacts`] and what the
/// coordinator sees of it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    #[serde(flatten)]
    pub facts: NodeFacts,
    pub status: NodeStatus,
    /// Why the node is offline, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Seconds since the node last came online (0 while offline).
    pub uptime_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<NodeMetrics>,
    /// Requests being proxied to the node right now.
    pub in_flight: u64,
    /// What the node's agent does about its inference server (it started
    /// Ollama itself, restarts it…), from the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_supervision: Option<String>,
    /// What the node's server said of its own load (slots, queue) in the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_load: Option<crate::ServerLoad>,
    /// What the proxy measured of the node's requests since the coordinator started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<NodeRequestStats>,
}

/// The API an inference server speaks, which decides how an agentless node is probed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKind {
    /// Ollama: models from `/api/tags`, loaded models from `/api/ps`, version from `/api/version`.
    #[default]
    Ollama,
    /// An OpenAI-compatible server: models from `/v1/models`.
    #[serde(rename = "openai")]
    OpenAi,
}

impl ApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::Ollama => "ollama",
            ApiKind::OpenAi => "openai",
        }
    }
}

/// Request statistics of a node, or of one model on it, since the coordinator started.
///
/// A request is ok when the node's answer reached the client in full with a
/// 2xx status; every other request the node took part in is failed (error
/// status, broken stream, client gone, or an attempt that was retried on
/// another node). Timings are of ok requests only; `None` until there is one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    pub requests_total: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Mean time from arrival to the last byte, in milliseconds.
    #[serde(default)]
    pub avg_latency_ms: Option<f64>,
    /// The same, weighted towards the last few requests (exponential moving average).
    #[serde(default)]
    pub recent_latency_ms: Option<f64>,
    /// Mean time from arrival to the first streamed byte (streamed requests only).
    #[serde(default)]
    pub avg_ttft_ms: Option<f64>,
    /// Completion tokens over the time spent generating them, across requests.
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
}

/// [`RequestStats`] of a node in total and per model (canonical names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRequestStats {
    #[serde(flatten)]
    pub totals: RequestStats,
    #[serde(default)]
    pub models: BTreeMap<String, RequestStats>,
}

/// `PATCH /api/agents/{id}`: operator edits; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePatch {
    /// A new display name; an empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Drain on (no new requests) or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<bool>,
}
