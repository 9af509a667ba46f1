//! The fleet's model lists: `/api/tags`, `/api/ps`, `/v1/models` answer the
//! union over online nodes, one entry per model, from what heartbeats reported.
//! Both APIs list every node's models (Ollama requests for a model only
//! OpenAI-compatible servers hold are translated), and a model known under
//! aliases (`--model-alias`) is listed once, under its logical name.

use std::collections::BTreeMap;

use llm_router_common::{ApiKind, NodeStatus, canonical_model_name};
use serde_json::{Value, json};

use crate::aliases::ModelAliases;
use crate::registry::NodeRegistry;

/// One model of the union, with the nodes that hold it.
#[derive(Debug, Clone)]
pub struct FleetModel {
    /// Canonical name (`name:tag`).
    pub name: String,
    /// The name as a server speaking OpenAI's API lists it (`tiny`, not
    /// `tiny:latest`), when one holds the model: what OpenAI clients are shown.
    pub served_as: Option<String>,
    pub size: Option<u64>,
    pub digest: Option<String>,
    pub modified_at: Option<String>,
    pub details: Option<Value>,
    pub size_vram: Option<u64>,
    pub expires_at: Option<String>,
    pub context_length: Option<u64>,
    pub nodes: Vec<String>,
}

/// Models held (or, with `loaded`, loaded in memory) by online nodes, sorted by name.
pub fn fleet_models(
    registry: &NodeRegistry,
    loaded: bool,
    aliases: &ModelAliases,
) -> Vec<FleetModel> {
    let mut union: BTreeMap<String, FleetModel> = BTreeMap::new();
    for node in registry.list() {
        if node.status != NodeStatus::Online {
            continue;
        }
        let openai_node = node.facts.api_kind == ApiKind::OpenAi;
        let name_of = |name: &str| aliases.logical(&canonical_model_name(name)).to_owned();
        // An alias is listed under its logical name in both APIs.
        let as_served = |name: &str| {
            (openai_node
                && aliases.logical(&canonical_model_name(name)) == canonical_model_name(name))
            .then(|| name.trim().to_owned())
        };
        let entries: Vec<FleetModel> = if loaded {
            node.facts
                .loaded_models
                .iter()
                .map(|m| FleetModel {
                    name: name_of(&m.name),
                    served_as: as_served(&m.name),
                    size: m.size,
                    digest: m.digest.clone(),
                    modified_at: None,
                    details: m.details.clone(),
                    size_vram: m.size_vram,
                    expires_at: m.expires_at.clone(),
                    context_length: m.context_length,
                    nodes: Vec::new(),
                })
                .collect()
        } else {
            node.facts
                .models
                .iter()
                .map(|m| FleetModel {
                    name: name_of(&m.name),
                    served_as: as_served(&m.name),
                    size: m.size,
                    digest: m.digest.clone(),
                    modified_at: m.modified_at.clone(),
                    details: m.details.clone(),
                    size_vram: None,
                    expires_at: None,
                    context_length: None,
                    nodes: Vec::new(),
                })
                .collect()
        };
        for entry in entries {
            let merged = union
                .entry(entry.name.clone())
                .or_insert_with(|| FleetModel {
                    nodes: Vec::new(),
                    ..entry.clone()
                });
            // What one node leaves out, another may know.
            merged.served_as = merged.served_as.take().or(entry.served_as);
            merged.size = merged.size.or(entry.size);
            merged.digest = merged.digest.take().or(entry.digest);
            merged.modified_at = merged.modified_at.take().or(entry.modified_at);
            merged.details = merged.details.take().or(entry.details);
            merged.size_vram = merged.size_vram.or(entry.size_vram);
            merged.expires_at = merged.expires_at.take().or(entry.expires_at);
            merged.context_length = merged.context_length.or(entry.context_length);
            merged.nodes.push(node.facts.machine_name.clone());
        }
    }
    union.into_values().collect()
}

const EMPTY_DETAILS: fn() -> Value = || {
    json!({
        "parent_model": "", "format": "", "family": "", "families": null,
        "parameter_size": "", "quantization_level": ""
    })
};

/// Ollama's `/api/tags` entry.
pub fn ollama_tag(model: &FleetModel) -> Value {
    json!({
        "name": model.name,
        "model": model.name,
        "modified_at": model.modified_at.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
        "size": model.size.unwrap_or(0),
        "digest": model.digest.clone().unwrap_or_default(),
        "details": model.details.clone().unwrap_or_else(EMPTY_DETAILS),
    })
}

/// Ollama's `/api/ps` entry.
pub fn ollama_running(model: &FleetModel) -> Value {
    json!({
        "name": model.name,
        "model": model.name,
        "size": model.size.unwrap_or(0),
        "digest": model.digest.clone().unwrap_or_default(),
        "details": model.details.clone().unwrap_or_else(EMPTY_DETAILS),
        "expires_at": model.expires_at.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
        "size_vram": model.size_vram.unwrap_or(0),
        "context_length": model.context_length.unwrap_or(0),
    })
}

/// OpenAI's model object.
pub fn openai_model(model: &FleetModel) -> Value {
    let created = model
        .modified_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp());
    let id = model.served_as.as_deref().unwrap_or(&model.name);
    json!({ "id": id, "object": "model", "created": created, "owned_by": "library" })
}
