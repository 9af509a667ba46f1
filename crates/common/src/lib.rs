//! Wire types shared by the coordinator and the agent, and what both do
//! the same way at start-up.
//!
//! Layout:
//! - [`registration`]: what an agent sends to join the fleet and what it gets back;
//! - [`heartbeat`]: the periodic report of machine metrics and models;
//! - [`server_load`]: an OpenAI-compatible server's own account of its load
//!   (`/slots`, Prometheus `/metrics`), read by the agent and by the coordinator's probe;
//! - [`node`]: what lasts about a node, and the coordinator's view of it (`GET /api/agents`);
//! - [`model`]: model names and the model lists Ollama reports;
//! - [`error`]: the JSON error body every management endpoint answers with;
//! - [`cli`]: log output (`--log-format`) and the effective settings `--check-config` prints.

pub mod cli;
pub mod error;
pub mod heartbeat;
pub mod model;
pub mod node;
pub mod registration;
pub mod server_load;

pub use error::ErrorBody;
pub use heartbeat::{GpuMetrics, HeartbeatRequest, NodeMetrics, ServerLoad};
pub use model::{LoadedModel, ModelInfo, canonical_model_name};
pub use node::{ApiKind, Node, NodeFacts, NodePatch, NodeStatus};
pub use registration::{
    AddNodeRequest, GpuInfo, RegisterRequest, RegisterResponse, RegistrationStatus, SystemInfo,
};

/// Identifier the coordinator gives a node; stable across re-registrations.
pub type NodeId = uuid::Uuid;

/// Default port of the coordinator (`COORDINATOR_PORT`).
pub const DEFAULT_COORDINATOR_PORT: u16 = 8080;
/// Default port of a local Ollama (`OLLAMA_PORT`).
pub const DEFAULT_OLLAMA_PORT: u16 = 11434;
/// Default seconds between heartbeats (`AGENT_HEARTBEAT_INTERVAL_SECS`).
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 10;

/// Longest machine name, display name, tag or version string accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most models one node may report.
pub const MAX_MODELS_PER_NODE: usize = 4096;
/// Most tags one node may carry.
pub const MAX_TAGS: usize = 64;
/// Longest operator note.
pub const MAX_NOTES_LEN: usize = 16 * 1024;
