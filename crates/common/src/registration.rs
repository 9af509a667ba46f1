//! `POST /api/agents/register`: how a machine joins the fleet.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{ApiKind, LoadedModel, ModelInfo, NodeId};

/// What an agent (or an operator adding a node by hand) sends to register a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Host name of the machine, as the agent resolved it.
    pub machine_name: String,
    /// Address the coordinator should use to reach the node's inference server.
    pub ip_address: IpAddr,
    /// Port of the node's Ollama; ignored when `api_url` is given.
    #[serde(default = "default_ollama_port")]
    pub ollama_port: u16,
    /// The API the node's inference server speaks: Ollama's (the default), or
    /// OpenAI's only (llama.cpp's server, vLLM, SGLang, LM Studio).
    #[serde(default)]
    pub api_kind: crate::ApiKind,
    /// Full base URL of the node's inference API (overrides `ip_address` + `ollama_port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_version: Option<String>,
    /// Whether the agent could reach its inference server when it registered.
    #[serde(default = "default_true")]
    pub ollama_available: bool,
    #[serde(default)]
    pub system_info: SystemInfo,
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    #[serde(default)]
    pub loaded_models: Vec<LoadedModel>,
    /// The id this node had before, so that identity survives a coordinator that lost its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Requests the inference server runs at once (Ollama's `OLLAMA_NUM_PARALLEL`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Models the inference server keeps in memory at once (Ollama's
    /// `OLLAMA_MAX_LOADED_MODELS`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loaded_models: Option<u32>,
    /// The credential this node was issued at an earlier registration: required to
    /// register again over a node the coordinator knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_credential: Option<String>,
    /// Key the coordinator must send (`Authorization: Bearer`) to this node's inference
    /// server, for a server that requires one. Never shown by the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_api_key: Option<String>,
}

fn default_ollama_port() -> u16 {
    crate::DEFAULT_OLLAMA_PORT
}

fn default_true() -> bool {
    true
}

/// Static facts about the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    #[serde(default)]
    pub cpu_cores: u32,
    #[serde(default)]
    pub total_memory_bytes: u64,
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
}

/// One GPU of the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
}

/// Whether the registration created a node or refreshed a known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationStatus {
    Registered,
    Updated,
}

/// The coordinator's answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: NodeId,
    pub status: RegistrationStatus,
    /// Seconds between heartbeats the coordinator asks for.
    pub heartbeat_interval_secs: u64,
    /// A credential issued by this registration (a new node, or one that had none): the
    /// agent sends it as `Authorization: Bearer` with its heartbeats and goodbye, and in
    /// [`RegisterRequest::node_credential`] when it registers again. Absent when the
    /// credential the agent presented stays valid. The coordinator keeps only its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_credential: Option<String>,
}

/// `POST /api/nodes`: an operator adds a node that no agent reports for; the
/// coordinator then probes its inference server itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    /// Base URL of the node's inference API, e.g. `http://10.0.0.5:11434`.
    pub api_url: String,
    /// Machine name to show; default: the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which API the server speaks; default: Ollama.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ApiKind>,
    /// Key the coordinator sends (`Authorization: Bearer`) to this server, if it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}
