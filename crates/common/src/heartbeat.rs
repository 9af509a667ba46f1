//! `POST /api/agents/{id}/heartbeat`: the periodic report from a node.

use serde::{Deserialize, Serialize};

use crate::{LoadedModel, ModelInfo};

/// One heartbeat. Model lists are optional so that an agent that could not
/// ask its inference server this time does not wipe what the coordinator knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub metrics: NodeMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// False when the agent could not reach its inference server: the node is then not routable.
    #[serde(default = "default_true")]
    pub ollama_available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_version: Option<String>,
    /// Requests the inference server runs at once (Ollama's `OLLAMA_NUM_PARALLEL`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Models the inference server keeps in memory at once (Ollama's
    /// `OLLAMA_MAX_LOADED_MODELS`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loaded_models: Option<u32>,
    /// What the agent does about its inference server under `--manage-ollama`
    /// ("Ollama started by the agent (pid 4242)"), when it does something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_supervision: Option<String>,
    /// What the inference server says of its own load (llama.cpp's `/slots`, the
    /// Prometheus `/metrics` of llama.cpp, vLLM or SGLang), when it says anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_load: Option<ServerLoad>,
}

/// An inference server's own account of its load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerLoad {
    /// Requests it can run at once (its slots), when it tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots_total: Option<u32>,
    /// Requests running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_running: Option<u32>,
    /// Requests queued, waiting for a slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_waiting: Option<u32>,
    /// Share of the KV cache in use, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage: Option<f32>,
    /// Where it was read: `/slots` or `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl ServerLoad {
    /// Requests running and waiting: the server's load in requests.
    pub fn busy(&self) -> Option<u64> {
        match (self.requests_running, self.requests_waiting) {
            (None, None) => None,
            (running, waiting) => {
                Some(u64::from(running.unwrap_or(0)) + u64::from(waiting.unwrap_or(0)))
            }
        }
    }
}

fn default_true() -> bool {
    true
}

/// Machine load at the time of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    #[serde(default)]
    pub cpu_percent: f32,
    #[serde(default)]
    pub memory_percent: f32,
    #[serde(default)]
    pub memory_used_bytes: u64,
    #[serde(default)]
    pub memory_total_bytes: u64,
    #[serde(default)]
    pub gpus: Vec<GpuMetrics>,
    /// Free space on the disk that holds the inference server's models
    /// (Ollama's `OLLAMA_MODELS` folder), so a pull can skip a node without room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_disk_free_bytes: Option<u64>,
    /// Size of that disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_disk_total_bytes: Option<u64>,
}

/// Load of one GPU; every reading is optional because not every tool reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuMetrics {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub name: String,
    /// Who made the GPU ("NVIDIA", "AMD", "Apple", ...); `index` counts within one vendor's tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_celsius: Option<f32>,
}
